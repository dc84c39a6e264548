"""deploy/k8s: what ``kubectl apply -k`` would send, built by kustomize (``kubectl kustomize``,
offline), for both variants, against the Kubernetes schemas (kubernetes-validate, strict:
an unknown field fails), and the objects wired to each other. No cluster runs here."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
from deployfiles import (
    K8S,
    VARIANTS,
    built,
    dockerfile_uid,
    k8s_object,
    load_all,
    pod_spec,
)

#: Kubernetes releases whose schemas kubernetes-validate ships: an older one and a current one.
K8S_VERSIONS = ("1.30.0", "1.33.0")


def schema_errors(variant: str, version: str) -> list[str]:
    errors = []
    for doc in built(variant):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    return errors


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_built_objects_match_the_kubernetes_schemas(variant: str, version: str) -> None:
    assert schema_errors(variant, version) == []


def test_the_schema_check_refuses_a_misspelt_field() -> None:
    deployment = copy.deepcopy(k8s_object("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def kustomized_files() -> set[Path]:
    """Every file a kustomization names as a resource or a patch."""
    found = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        (spec,) = load_all(kustomization)
        entries = [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []))]
        found |= {(kustomization.parent / e).resolve() for e in entries}
    return {path for path in found if not path.is_dir()}


def test_every_manifest_is_built_and_every_object_labelled() -> None:
    on_disk = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert on_disk == kustomized_files()
    kinds = {doc["kind"] for doc in built("local-disk")}
    assert kinds == {
        "ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "Ingress", "PersistentVolumeClaim",
    }  # fmt: skip
    for doc in built("local-disk"):
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tileserver"


def test_redis_and_postgres_are_external_urls_not_workloads() -> None:
    kinds = {doc["kind"] for doc in built("default")}
    assert not kinds & {"StatefulSet", "PersistentVolumeClaim"}
    assert [c["image"] for c in pod_spec()["containers"]] == ["tileserver:0.1.0"]
    assert k8s_object("ConfigMap")["data"]["TILESERVER_REDIS_URL"].startswith("redis://")
    catalog = k8s_object("Secret")["stringData"]["TILESERVER_CATALOG"]
    assert catalog.startswith("postgresql://")


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
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert refs == {k8s_object("ConfigMap")["metadata"]["name"], "tileserver"}
    assert k8s_object("Secret")["metadata"]["name"] == "tileserver"


def test_api_keys_file_is_the_mounted_secret() -> None:
    (container,) = pod_spec()["containers"]
    path = Path(k8s_object("ConfigMap")["data"]["TILESERVER_API_KEYS"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert "subPath" not in mount  # a subPath mount never sees a rotated Secret
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    keys = k8s_object("Secret", volume["secret"]["secretName"])["stringData"][path.name]
    assert re.search(r"^\S+ (read|write|admin)$", keys, re.M)


def test_service_hpa_pdb_and_ingress_point_at_the_deployment() -> None:
    deployment = k8s_object("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = k8s_object("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = k8s_object("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = k8s_object("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    ingress = k8s_object("Ingress")["spec"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert ingress["tls"][0]["secretName"]
    assert ingress["tls"][0]["hosts"] == [ingress["rules"][0]["host"]]
    container_ports = {p["name"] for p in pod_spec()["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports


def test_local_disk_variant_mounts_its_claim_and_serves_it() -> None:
    spec = pod_spec("local-disk")
    (container,) = spec["containers"]
    volumes = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    claims = {v["name"]: v["persistentVolumeClaim"] for v in volumes}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert mount["readOnly"] is True
    claim = k8s_object("PersistentVolumeClaim", claims[mount["name"]]["claimName"], "local-disk")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # pods on many nodes mount it
    # The container's env wins over the ConfigMap's s3:// root (envFrom).
    assert {"name": "TILESERVER_SLIDES", "value": mount["mountPath"]} in container["env"]
