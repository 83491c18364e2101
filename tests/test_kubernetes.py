"""The Kubernetes files a user applies (dockerfiles/kubernetes/): valid against the Kubernetes
schemas, and wired as the API needs (probes, port, settings, labels the Service and the
ServiceMonitor select on). No cluster runs here, so this is the static check the issue asks for:
`kubernetes-validate` ships the upstream JSON schemas."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from api.serve import GRACEFUL_SHUTDOWN_SECONDS
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


def test_the_api_statefulset_is_wired_as_the_api_runs():
    (workload,) = by_kind("StatefulSet")
    (service,) = by_kind("Service")
    (config,) = by_kind("ConfigMap")
    spec = workload["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["replicas"] >= 2 and spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["serviceName"] == service["metadata"]["name"]
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
    assert not {"DATABASE_URL", "API_ADMIN_TOKEN", "LABEL_TOKENS"} & set(config["data"])
    assert config["data"]["LOG_FORMAT"] == "json"  # one JSON object per line, for the collector
    assert any("secretRef" in ref for ref in container["envFrom"])
    # The pod outlives the workers' drain of the prediction log on SIGTERM, and the
    # supervisor's wait for them before it kills them.
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > GRACEFUL_SHUTDOWN_SECONDS + 15
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_the_spool_is_on_a_volume_of_each_pod_that_outlives_the_pod():
    """The prediction spool and journal hold answered rows while the database is down: on an
    emptyDir, a pod deleted during an outage took them with it. Each pod gets a claim of its
    own (ReadWriteOnce: one writer), kept when the pod goes and when the set is scaled down."""
    (workload,) = by_kind("StatefulSet")
    (config,) = by_kind("ConfigMap")
    spec = workload["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = mounts[config["data"]["PREDICTION_SPOOL_DIR"]]
    assert volume not in {v["name"] for v in spec["template"]["spec"].get("volumes", [])}
    (claim,) = [c for c in spec["volumeClaimTemplates"] if c["metadata"]["name"] == volume]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain", "whenScaled": "Retain"
    }  # fmt: skip
    assert not by_kind("Deployment")  # not also a Deployment with pod-lived storage


def test_the_service_monitor_scrapes_every_api_pod_behind_the_service():
    (monitor,) = by_kind("ServiceMonitor")
    (service,) = by_kind("Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def operator_job(monitor: dict, service: dict) -> str:
    """The `job` label the Prometheus Operator gives a ServiceMonitor's series: the value of the
    Service label its `jobLabel` names, else the Service's name."""
    label = monitor["spec"].get("jobLabel")
    return service["metadata"]["labels"][label] if label else service["metadata"]["name"]


def test_the_api_series_carry_the_job_the_alert_rules_select(tmp_path):
    """One job label on every deployment path: the ServiceMonitor's series (as the Operator
    labels them), compose's and `make stack`'s scrape jobs; and with healthy replicas labelled
    so, MLApiUnavailable stays silent (promtool over the real rules)."""
    from tests.test_alert_rules import CONFIGS, RULES, load, promtool

    (monitor,) = by_kind("ServiceMonitor")
    (service,) = by_kind("Service")
    jobs = {"kubernetes": operator_job(monitor, service)}
    for config in CONFIGS:
        (api,) = [j for j in load(config)["scrape_configs"] if "api" in j["job_name"]]
        jobs[config.name] = api["job_name"]
    assert set(jobs.values()) == {"api"}, jobs
    tests = tmp_path / "job_test.yml"
    tests.write_text(yaml.safe_dump({
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f'up{{job="{job}", instance="pod-{i}:8000"}}', "values": "1x30"}
                for i, job in enumerate(jobs.values())
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "MLApiUnavailable", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "MLTargetDown", "exp_alerts": []},
            ],
        }],
    }))  # fmt: skip
    done = promtool("test", "rules", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr


def _workloads() -> list[dict]:
    """The pod-running objects (Deployment, StatefulSet, ...), whatever kind the API is."""
    return [doc for _, doc in documents() if doc["kind"] in
            {"Deployment", "StatefulSet", "DaemonSet", "Job"}]  # fmt: skip


def test_every_pod_runs_unprivileged_read_only_and_within_limits():
    """Not root, no capability, no privilege escalation, a read-only root with a volume for each
    folder the API writes, memory and CPU bounded, and a grace period above the drain."""
    from api.serve import GRACEFUL_SHUTDOWN_SECONDS

    workloads = _workloads()
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["terminationGracePeriodSeconds"] > GRACEFUL_SHUTDOWN_SECONDS + 15
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"]
            assert resources["limits"]["cpu"] and resources["limits"]["memory"]
            mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert {"/tmp", "/app/var", "/var/lib/mlmon/spool", "/var/lib/mlmon/data"} <= mounted
