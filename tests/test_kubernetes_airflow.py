"""dockerfiles/kubernetes/airflow-values.yaml, the values for the official Airflow Helm chart,
checked without a cluster: the keys it sets have the chart's shapes, its Kubernetes fragments
(env, envFrom, volumes, mounts, resources) are valid Kubernetes objects, and it is wired to the
project's image (repository and tag, Airflow version, user, DAG folder, command contract) and
settings (real setting names, secrets only by reference, the shared data volume).

What cannot be checked here, and why: neither `helm` (not on PyPI; building it needs a Go
toolchain this machine lacks) nor the chart itself (served only from the chart repository, which
no package registry here mirrors) can be had offline, so `helm template` and the chart's own
values.schema.json are not run. CHART_SCHEMA below is the part of that schema this file relies
on, written out by hand from the chart's documented values; with a registry, run
`helm template airflow apache-airflow/airflow --version 1.22.0 -f ...` for the full check.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from data.settings import PROJECT_ROOT, Settings
from tests.test_compose import ENV_EXAMPLE
from tests.test_kubernetes import KUBERNETES_VERSION

FOLDER = PROJECT_ROOT / "dockerfiles" / "kubernetes"
VALUES_FILE = FOLDER / "airflow-values.yaml"
DOCKERFILE = PROJECT_ROOT / "dockerfiles" / "Dockerfile.airflow"
ENTRYPOINT = PROJECT_ROOT / "dockerfiles" / "airflow-entrypoint.sh"
CHART_VERSION = "1.22.0"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_K8S = {"type": "object"}  # the Kubernetes parts are validated with kubernetes-validate below
_EXTRA = {"volumes": {"type": "array", "items": _K8S},
          "mounts": {"type": "array", "items": _K8S}}  # fmt: skip
_IMAGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "repository": {"type": ["string", "null"]},
        "tag": {"type": ["string", "null"]},
        "digest": {"type": ["string", "null"]},
        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    },
}
# The chart's values.schema.json, restricted to the keys this file sets (same names, types and,
# where the chart forbids unknown keys, additionalProperties: false): a misspelt or misplaced
# key fails here as it fails `helm install`.
CHART_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "airflowVersion": {"type": "string"},
        "defaultAirflowRepository": {"type": "string"},
        "defaultAirflowTag": {"type": "string"},
        "images": {"type": "object", "properties": {"airflow": _IMAGE}},
        "uid": {"type": "integer"},
        "gid": {"type": "integer"},
        "executor": {"type": "string", "pattern": r"^(LocalExecutor|CeleryExecutor|"
                     r"KubernetesExecutor|CeleryKubernetesExecutor|LocalKubernetesExecutor)$"},
        "postgresql": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
        "data": {"type": "object", "additionalProperties": False, "properties": {
            "metadataSecretName": {"type": ["string", "null"]},
            "resultBackendSecretName": {"type": ["string", "null"]},
            "brokerUrlSecretName": {"type": ["string", "null"]},
        }},
        "fernetKeySecretName": {"type": ["string", "null"]},
        "apiSecretKeySecretName": {"type": ["string", "null"]},
        "jwtSecretName": {"type": ["string", "null"]},
        "redis": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
        "dags": {"type": "object", "properties": {
            "persistence": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
            "gitSync": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
        }},
        # airflow.cfg: section -> option -> value (the chart renders them as strings)
        "config": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": {"type": ["string", "integer", "boolean"]}}},
        "env": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "value"],
            "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}},
        "secret": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["envName", "secretName", "secretKey"],
            "properties": {"envName": {"type": "string"}, "secretName": {"type": "string"},
                           "secretKey": {"type": "string"}}}},
        "extraEnvFrom": {"type": ["string", "null"]},  # a string (the chart templates it)
        "securityContexts": {"type": "object", "properties": {
            "pod": _K8S, "containers": _K8S}},
        "apiServer": {"type": "object", "properties": {
            "replicas": {"type": "integer", "minimum": 1},
            "resources": _K8S,
            "extraVolumes": _EXTRA["volumes"], "extraVolumeMounts": _EXTRA["mounts"],
        }},
        "scheduler": {"type": "object", "properties": {"resources": _K8S}},
        "dagProcessor": {"type": "object", "properties": {"resources": _K8S}},
        "triggerer": {"type": "object", "properties": {"resources": _K8S}},
        "webserver": {"type": "object", "properties": {"defaultUser": {
            "type": "object", "properties": {"enabled": {"type": "boolean"}}}}},
        "workers": {"type": "object", "properties": {
            "celery": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
            "resources": _K8S,
            "extraVolumes": _EXTRA["volumes"], "extraVolumeMounts": _EXTRA["mounts"],
        }},
    },
}  # fmt: skip


def values() -> dict:
    return yaml.safe_load(VALUES_FILE.read_text())


def dockerfile_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", DOCKERFILE.read_text())
    assert match, f"{name} not set in {DOCKERFILE.name}"
    return match.group(1)


def test_the_values_have_the_charts_keys_and_types():
    jsonschema.validate(values(), CHART_SCHEMA)


def test_the_schema_refuses_what_the_chart_refuses():
    """The check can fail: a misspelt section and a wrong type are refused."""
    for broken in ({**values(), "worker": {"replicas": 2}}, {**values(), "uid": "50000"},
                   {**values(), "data": {"metadataSecret": "x"}}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, CHART_SCHEMA)


def _pod(component: dict, v: dict) -> dict:
    """The Kubernetes parts the chart copies into a component's pod, as one Pod to validate."""
    container = {
        "name": "airflow",
        "image": f"{v['images']['airflow']['repository']}:{v['images']['airflow']['tag']}",
        "env": [*v["env"], *({"name": s["envName"], "valueFrom": {"secretKeyRef": {
            "name": s["secretName"], "key": s["secretKey"]}}} for s in v["secret"])],
        "envFrom": yaml.safe_load(v["extraEnvFrom"]),
        "volumeMounts": component.get("extraVolumeMounts", []),
    }  # fmt: skip
    if "resources" in component:
        container["resources"] = component["resources"]
    container["securityContext"] = v["securityContexts"]["containers"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check"},
        "spec": {
            "containers": [container],
            "volumes": component.get("extraVolumes", []),
            "securityContext": v["securityContexts"]["pod"],
        },
    }


def test_every_airflow_pod_runs_unprivileged_within_limits():
    """Not root, no capability, no privilege escalation; each component's memory and CPU
    bounded; a Celery worker's pod outlives a task in flight."""
    v = values()
    pod, container = v["securityContexts"]["pod"], v["securityContexts"]["containers"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == v["uid"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    for component in ("apiServer", "scheduler", "dagProcessor", "triggerer", "workers"):
        resources = v[component]["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], component
        assert resources["limits"]["cpu"] and resources["limits"]["memory"], component
    assert v["workers"]["terminationGracePeriodSeconds"] >= 60


def test_production_without_the_api_tokens_lets_the_tasks_start(monkeypatch):
    """The values run every task with ENVIRONMENT=production and no API_ADMIN_TOKEN or
    LABEL_TOKENS (the tasks never use them): the settings used to refuse to load there."""
    env = {item["name"]: item["value"] for item in values()["env"]}
    assert env["ENVIRONMENT"] == "production"
    assert not {"API_ADMIN_TOKEN", "LABEL_TOKENS"} & set(env)
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://mlmon:Zx9-real-pass@pg/monitoring")
    settings = Settings()
    assert settings.ENVIRONMENT == "production" and settings.API_ADMIN_TOKEN is None


@pytest.mark.parametrize("component", ["apiServer", "scheduler", "dagProcessor", "triggerer",
                                       "workers"])  # fmt: skip
def test_the_kubernetes_fragments_are_valid_kubernetes(component):
    v = values()
    kubernetes_validate.validate(_pod(v[component], v), KUBERNETES_VERSION, strict=True)


def test_it_runs_the_project_image_at_the_compose_tag_and_airflow_pin():
    v = values()
    env = dict(re.findall(r"^(MLMON_IMAGE_\w+)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.M))
    image = v["images"]["airflow"]
    assert image["repository"] == f"{env['MLMON_IMAGE_PREFIX']}-airflow"
    assert image["tag"] == env["MLMON_IMAGE_TAG"] and image["tag"] != "latest"
    # Containers the chart starts from the default image (migrations) get the same one.
    assert (v["defaultAirflowRepository"], v["defaultAirflowTag"]) == (
        image["repository"], image["tag"])  # fmt: skip
    pin = re.search(r"^apache-airflow==(\S+)$", (PROJECT_ROOT / "requirements.txt").read_text(),
                    flags=re.M).group(1)  # fmt: skip
    assert v["airflowVersion"] == pin
    uid = re.search(r"useradd[^\n]*--uid (\d+)", DOCKERFILE.read_text()).group(1)
    gid = re.search(r"groupadd[^\n]*--gid (\d+)", DOCKERFILE.read_text()).group(1)
    assert (v["uid"], v["gid"]) == (int(uid), int(gid))


def test_the_dags_come_from_the_image():
    v = values()
    folder = v["config"]["core"]["dags_folder"]
    assert folder == dockerfile_env("AIRFLOW__CORE__DAGS_FOLDER")
    assert v["dags"]["persistence"]["enabled"] is False and v["dags"]["gitSync"]["enabled"] is False
    # that folder is where the image copies airflow/dags/ to
    assert re.search(r"^COPY [^\n]*airflow/dags/ airflow/dags/$", DOCKERFILE.read_text(), re.M)
    assert folder == "/opt/project/airflow/dags" and (PROJECT_ROOT / "airflow" / "dags").is_dir()


def test_celery_with_the_charts_redis_and_the_stacks_database():
    v = values()
    assert v["executor"] == "CeleryExecutor" and v["redis"]["enabled"] is True
    assert v["postgresql"]["enabled"] is False
    # No secret the chart would generate afresh on each install: all four are the user's Secret.
    names = {v["data"]["metadataSecretName"], v["fernetKeySecretName"],
             v["apiSecretKeySecretName"], v["jwtSecretName"]}  # fmt: skip
    assert names == {"mlmon-airflow"}
    # The auth manager class exists in the pinned Airflow (the chart's default, FAB, is not
    # installed in the image).
    module, _, name = v["config"]["core"]["auth_manager"].rpartition(".")
    assert getattr(importlib.import_module(module), name)


def test_the_settings_are_real_and_secrets_only_referenced():
    v = values()
    env = {item["name"]: item["value"] for item in v["env"]}
    assert set(env) <= set(Settings.model_fields), set(env) - set(Settings.model_fields)
    secret_fields = {name for name, field in Settings.model_fields.items()
                     if "SecretStr" in repr(field.annotation)} | {"DATABASE_URL"}  # fmt: skip
    assert not set(env) & secret_fields, set(env) & secret_fields
    assert {s["envName"] for s in v["secret"]} == {"DATABASE_URL"}
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")
    assert env["LOG_FORMAT"] == "json"
    # One paging path: the tasks notify through the cluster's Alertmanager (its API port).
    assert Settings(ALERTMANAGER_URL=env["ALERTMANAGER_URL"]).ALERTMANAGER_URL.endswith(":9093")
    # Nothing in the file looks like a credential.
    assert not re.search(r"postgres(ql)?(\+\w+)?://\w+:[^@.\s]+@", VALUES_FILE.read_text())


def test_the_workers_share_the_data_volume_the_run_folders_need():
    v = values()
    env = {item["name"]: item["value"] for item in v["env"]}
    (mount,) = [m for m in v["workers"]["extraVolumeMounts"] if m["name"] == "airflow-data"]
    assert mount["mountPath"] == env["DATA_DIR"] == dockerfile_env("DATA_DIR")
    (volume,) = [x for x in v["workers"]["extraVolumes"] if x["name"] == "airflow-data"]
    (claim,) = [doc for doc in yaml.safe_load_all((FOLDER / "airflow-data.yaml").read_text())
                if doc["kind"] == "PersistentVolumeClaim"]  # fmt: skip
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # several worker pods mount it
    assert v["workers"]["celery"]["replicas"] >= 2


def test_the_api_server_mounts_the_passwords_file_the_auth_manager_reads():
    v = values()
    path = Path(v["config"]["core"]["simple_auth_manager_passwords_file"])
    (mount,) = v["apiServer"]["extraVolumeMounts"]
    assert Path(mount["mountPath"]) == path.parent and mount["readOnly"] is True
    (volume,) = [x for x in v["apiServer"]["extraVolumes"] if x["name"] == mount["name"]]
    assert [item["path"] for item in volume["secret"]["items"]] == [path.name]
    assert volume["secret"]["secretName"] == v["data"]["metadataSecretName"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["bash", "-c", "exec airflow version"], ["airflow", "version"], ["version"]],
    ids=["chart-bash-c", "chart-airflow-prefix", "compose-bare-subcommand"],
)
def test_the_image_entrypoint_keeps_the_official_command_contract(command):
    """The chart starts containers as `bash -c "exec airflow ..."` and init containers as
    `airflow db ...`; compose passes `api-server`. The entrypoint runs the real Airflow for all
    three (the venv's, as the image's is on PATH there)."""
    venv_bin = Path(importlib.import_module("sys").executable).parent
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), *command], capture_output=True, text=True, timeout=120,
        env={"PATH": f"{venv_bin}:/usr/bin:/bin", "AIRFLOW_HOME": "/tmp/airflow-entrypoint-check",
             "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == values()["airflowVersion"], done.stdout
