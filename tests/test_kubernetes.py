"""The Kubernetes files a user applies (dockerfiles/kubernetes/): valid against the Kubernetes
schemas, and wired as the API needs (probes, port, settings, labels the Service and the
ServiceMonitor select on). No cluster runs here, so this is the static check the issue asks for:
`kubernetes-validate` ships the upstream JSON schemas."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from data.settings import PROJECT_ROOT, Settings

FOLDER = PROJECT_ROOT / "dockerfiles" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
HELM_VALUES = {FOLDER / "airflow-values.yaml"}


def documents() -> list[tuple[Path, dict]]:
    found = [
        (path, doc)
        for path in sorted(FOLDER.glob("*.yaml"))
        if path not in HELM_VALUES  # values for a chart, not manifests: test_kubernetes_airflow
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert found, f"no Kubernetes files in {FOLDER}"
    return found


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in documents() if doc["apiVersion"] != "monitoring.coreos.com/v1"],
    ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}",
)
def test_every_manifest_is_valid_for_kubernetes(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_api_deployment_is_wired_as_the_api_runs():
    (deployment,) = by_kind("Deployment")
    (service,) = by_kind("Service")
    (config,) = by_kind("ConfigMap")
    spec = deployment["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["replicas"] >= 2 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = spec["template"]["spec"]["containers"]
    assert not container["image"].endswith(":latest") and ":" in container["image"]
    assert container["command"][:3] == ["python", "-m", "api.serve"]
    port = int(config["data"]["API_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    # Ready only once a model serves (/ready answers 503 before); alive while the process is.
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {ref.get("configMapRef", {}).get("name") for ref in container["envFrom"]} >= {
        config["metadata"]["name"]
    }
    # A typo in a setting's name would be ignored by the API: every key is a real setting.
    assert set(config["data"]) <= set(Settings.model_fields), set(config["data"]) - set(
        Settings.model_fields
    )
    # Secrets are referenced, never written here.
    assert "DATABASE_URL" not in config["data"] and "API_ADMIN_TOKEN" not in config["data"]
    assert config["data"]["LOG_FORMAT"] == "json"  # one JSON object per line, for the collector
    assert any("secretRef" in ref for ref in container["envFrom"])
    # The pod outlives the workers' drain of the prediction log on SIGTERM.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > 20
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_the_service_monitor_scrapes_every_api_pod_behind_the_service():
    (monitor,) = by_kind("ServiceMonitor")
    (service,) = by_kind("Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
