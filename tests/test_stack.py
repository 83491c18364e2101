"""`make stack` for real: the whole stack as local processes, started with `make stack`, used, and
stopped with SIGINT to its process group, as Ctrl-C in a terminal does.

One start for the module, on free loopback ports (several stacks and tests share this machine),
with a fresh Postgres database as DATABASE_URL and every other store in the test's folder
(`--var`, MLflow's SQLite store and artifacts, the spool, the API's metrics folder). The registry
starts empty, so the launcher trains and promotes the first model itself. Every service must
answer its health URL: the API's /ready, the exporter's /metrics, MLflow's /health (and serve the
champion), Prometheus' /-/ready with every target up, Alertmanager's /-/ready, and Airflow's
/api/v2/monitor/health with its DAGs parsed. The last test sends SIGINT and checks that every
process the stack started is gone and every port free.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from data.settings import PROJECT_ROOT, Settings
from tools.testkit.api_server import free_port, listening_sockets
from tools.testkit.databases import fresh_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

START_SECONDS = 420  # training, Airflow's migration and seven services on a shared 2-core machine
STOP_SECONDS = 60
PROJECT_DAGS = {"training_dag", "drift_check_dag", "maintenance_dag"}


@dataclass
class RunningStack:
    process: subprocess.Popen
    log: Path
    var: Path
    ports: dict[str, int]
    database_url: str

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, check: Callable[[], object], what: str, seconds: float = START_SECONDS):
        """Poll `check` until it returns something truthy; fail with the stack's output."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"`make stack` exited ({self.process.returncode}) while waiting for "
                            f"{what}\n{self.output()[-6000:]}")  # fmt: skip
            try:
                result = check()
            except httpx.HTTPError:
                result = None
            if result:
                return result
            time.sleep(1)
        pytest.fail(f"timed out after {seconds:g} s waiting for {what}\n{self.output()[-6000:]}")


def processes() -> dict[int, tuple[int, int, int, str]]:
    """Every live process: pid -> (parent, process group, session, command line). A zombie is
    left out: it has exited and holds nothing but its exit status until its parent (or init,
    for an orphan) reaps it."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]),
                                      command.strip())  # fmt: skip
    return found


def descendants(root: int) -> dict[int, tuple[int, int, int, str]]:
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, *_rest) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found[pid] = table[pid]
        todo += children.get(pid, [])
    return found


def stack_env(database_url: str, folder: Path, ports: dict[str, int]) -> dict[str, str]:
    """The developer's environment without any setting or Airflow variable, plus the test's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in Settings.model_fields and not k.startswith("AIRFLOW")
    }
    return env | {
        "ENVIRONMENT": "development",
        "DATABASE_URL": database_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(folder / "mlartifacts"),
        "DATA_DIR": str(folder / "data"),
        "PREDICTION_SPOOL_DIR": str(folder / "spool"),
        # Set here, so the test also checks that no process but the API inherits it.
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "api-metrics"),
        "API_PORT": str(ports["api"]),
        "EXPORTER_PORT": str(ports["exporter"]),
        "MODEL_POLL_SECONDS": "2",
        "EXPORTER_CACHE_SECONDS": "0",
        # Paused: a DAG run competing for the two cores would only slow the start down.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[RunningStack]:
    folder = tmp_path_factory.mktemp("stack")
    names = ["api", "exporter", "mlflow", "prometheus", "alertmanager", "airflow"]
    ports = {}
    while len(set(ports.values())) != len(names):
        ports = {name: free_port() for name in names}
    with fresh_postgres_database() as database_url:
        log = folder / "make-stack.log"
        command = [
            "make", "--no-print-directory", "-C", str(PROJECT_ROOT), "stack",
            f"MLFLOW_PORT={ports['mlflow']}", f"PROMETHEUS_PORT={ports['prometheus']}",
            f"ALERTMANAGER_PORT={ports['alertmanager']}", f"AIRFLOW_PORT={ports['airflow']}",
            f"STACK_ARGS=--var {folder / 'var'}",
        ]  # fmt: skip
        with log.open("w") as out:
            # Its own process group, as a shell gives a foreground job: SIGINT goes to the group.
            process = subprocess.Popen(
                command, env=stack_env(database_url, folder, ports), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        running = RunningStack(process, log, folder / "var", ports, database_url)
        try:
            yield running
        finally:
            if process.poll() is None:  # a failed test: stop it all the same
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    for pid in descendants(process.pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)


def get(url: str, **kwargs) -> httpx.Response:
    return httpx.get(url, timeout=10, **kwargs)


def test_every_service_answers_its_health_url(stack):
    started = time.monotonic()
    stack.wait(lambda: "the stack is ready" in stack.output(), "the launcher's ready line")
    checks = {
        "api": f"{stack.url('api')}/ready",
        "exporter": f"{stack.url('exporter')}/metrics",
        "mlflow": f"{stack.url('mlflow')}/health",
        "prometheus": f"{stack.url('prometheus')}/-/ready",
        "alertmanager": f"{stack.url('alertmanager')}/-/ready",
        "airflow": f"{stack.url('airflow')}/api/v2/monitor/health",
    }
    for name, url in checks.items():
        assert get(url).status_code == 200, f"{name}: {url}"
    output = stack.output()
    for name in checks:  # every URL is printed at start
        assert stack.url(name) in output, f"the {name} URL is not printed"
    print(f"ready {time.monotonic() - started:.0f} s after the first check")


def test_the_launcher_trained_a_first_champion_and_the_api_serves_it(stack):
    stack.wait(lambda: get(f"{stack.url('api')}/ready").status_code == 200, "the API")
    assert "no @champion of 'fraud-detector' yet" in stack.output()
    alias = get(f"{stack.url('mlflow')}/api/2.0/mlflow/registered-models/alias",
                params={"name": "fraud-detector", "alias": "champion"})  # fmt: skip
    assert alias.status_code == 200, alias.text
    version = alias.json()["model_version"]["version"]
    assert get(f"{stack.url('api')}/health").json()["model_version"] == str(version)


def test_predictions_reach_the_postgres_database_of_database_url(stack):
    from sqlalchemy import create_engine, func, select

    from data.db import prediction_logs
    from data.replay import replay
    from data.schema import load_schema
    from data.synthetic import generate_transactions

    stack.wait(lambda: get(f"{stack.url('api')}/ready").status_code == 200, "the API")
    frame = generate_transactions(20, seed=5)
    result = replay(frame, load_schema(PROJECT_ROOT / "schemas" / "fraud.yaml"), stack.url("api"))
    assert result["predictions"] == 20
    # Labels take the token the launcher made up for the stack's label writer, and no other.
    label = {"request_id": str(frame["transaction_id"].iloc[0]), "label": 1}
    token = (stack.var / "stack" / "label-tokens").read_text().strip().split("=", 1)[1]
    answer = httpx.post(f"{stack.url('api')}/feedback", json=label, timeout=10)
    assert answer.status_code == 401, answer.text
    answer = httpx.post(f"{stack.url('api')}/feedback", json=label, timeout=10,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    engine = create_engine(stack.database_url)
    ids = list(frame["transaction_id"])

    def logged() -> bool:
        with engine.connect() as conn:
            query = select(func.count()).where(prediction_logs.c.request_id.in_(ids))
            return conn.execute(query).scalar() == len(ids)

    try:
        stack.wait(logged, "the 20 predictions in Postgres", seconds=60)
    finally:
        engine.dispose()


def test_prometheus_scrapes_every_target_and_knows_alertmanager(stack):
    prometheus = stack.url("prometheus")

    def targets_up() -> list[dict] | None:
        active = get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
        return active if active and all(t["health"] == "up" for t in active) else None

    active = stack.wait(targets_up, "every Prometheus target up", seconds=120)
    assert {t["labels"]["job"]: t["scrapeUrl"] for t in active} == {
        "api": f"{stack.url('api')}/metrics",
        "exporter": f"{stack.url('exporter')}/metrics",
        "prometheus": f"{prometheus}/metrics",
        "alertmanager": f"{stack.url('alertmanager')}/metrics",
    }
    rules = get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    assert rules and all(group["rules"] for group in rules), "the alert rules are not loaded"
    managers = get(f"{prometheus}/api/v1/alertmanagers").json()["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == [f"{stack.url('alertmanager')}/api/v2/alerts"]


def test_alertmanager_runs_the_project_routes_with_local_secret_files(stack):
    status = get(f"{stack.url('alertmanager')}/api/v2/status").json()
    config = status["config"]["original"]
    secrets = stack.var / "stack" / "alertmanager"  # rendered by alerting/entrypoint.sh
    assert f"api_url_file: {secrets / 'slack_webhook_url'}" in config
    assert f"routing_key_file: {secrets / 'pagerduty_routing_key'}" in config
    # Nothing set: the placeholders compose writes, nothing that leaves the machine.
    assert (secrets / "slack_webhook_url").read_text().startswith("http://127.0.0.1:9/")
    assert (secrets / "slack_webhook_url").stat().st_mode & 0o077 == 0
    assert status["config"]["original"].count('receiver: "null"') >= 1  # no dead-man's URL
    prometheus = get(f"{stack.url('prometheus')}/api/v1/status/config").json()["data"]["yaml"]
    assert "environment: development" in prometheus  # ${ENVIRONMENT}, expanded


def test_airflow_is_healthy_and_has_parsed_the_project_dags(stack):
    airflow = stack.url("airflow")

    def healthy() -> dict | None:
        health = get(f"{airflow}/api/v2/monitor/health").json()
        return health if all(part["status"] == "healthy" for part in health.values()) else None

    stack.wait(healthy, "Airflow's scheduler, triggerer and dag-processor healthy")
    passwords = stack.var / "airflow" / "simple_auth_manager_passwords.json.generated"
    assert str(passwords) in stack.output(), "the banner does not say where the password is"
    password = stack.wait(lambda: passwords.exists() and passwords.read_text(), "the password")
    credentials = {"username": "admin", "password": json.loads(password)["admin"]}
    token = httpx.post(f"{airflow}/auth/token", json=credentials, timeout=10)
    assert token.status_code in (200, 201), token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def dags() -> set[str] | None:
        answer = get(f"{airflow}/api/v2/dags", headers=headers).json()
        listed = {dag["dag_id"] for dag in answer["dags"]}
        return listed if listed >= PROJECT_DAGS else None

    stack.wait(dags, f"the DAGs {sorted(PROJECT_DAGS)} parsed", seconds=180)
    errors = get(f"{airflow}/api/v2/importErrors", headers=headers).json()
    assert errors["total_entries"] == 0, errors


def test_sigint_stops_every_process_and_frees_every_port(stack):
    stack.wait(lambda: "the stack is ready" in stack.output(), "the launcher's ready line")
    started = descendants(stack.process.pid)
    groups = {pgid for _, pgid, _, _ in started.values()}
    assert len(started) > 10, f"too few processes to be the stack: {started}"

    began = time.monotonic()
    os.killpg(stack.process.pid, signal.SIGINT)
    stack.process.wait(STOP_SECONDS)
    stopped_in = time.monotonic() - began
    output = stack.output()

    assert "SIGINT received" in output
    assert "SIGKILL" not in output, f"a process had to be killed\n{output[-4000:]}"
    # What any process of the stack left behind (a grandchild reparented to init keeps its
    # process group): nothing.
    # A helper may take a moment after its parent (multiprocessing's resource tracker exits
    # when it reads the end of its pipe): a few seconds' grace, then nothing may be left.
    deadline = time.monotonic() + 10
    while True:
        left = {pid: cmd for pid, (_, pgid, _, cmd) in processes().items() if pgid in groups}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"left running after SIGINT: {left}"
    # The API's clean stop: its workers drained and exited 0.
    assert re.search(r"system\s+\| api stopped \(rc=0\)", output), output[-4000:]
    busy = {name: port for name, port in stack.ports.items() if listening_sockets(port)}
    assert not busy, f"ports still listened on: {busy}"
    print(f"stopped {len(started)} processes in {stopped_in:.1f} s")


def test_a_taken_port_stops_the_launcher_before_it_starts_anything(tmp_path):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        env = stack_env(f"sqlite:///{tmp_path / 'monitoring.db'}", tmp_path,
                        {"api": taken, "exporter": free_port()})  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "tools.stack",
             "--var", str(tmp_path / "stack-var"), "--no-airflow"],
            env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"api {taken} (set API_PORT)" in done.stderr
    assert not (tmp_path / "stack-var").exists(), "it wrote its state before checking the ports"


def test_make_airflow_on_another_port_points_its_tasks_at_that_port():
    # Airflow 3 tasks report to the execution API; its default URL names port 8080, so
    # `make airflow AIRFLOW_PORT=8181` ran tasks that could not reach their api-server.
    done = subprocess.run(
        ["make", "-n", "airflow", "AIRFLOW_PORT=8181"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "AIRFLOW__API__PORT=8181" in done.stdout
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:8181/execution/" in done.stdout


def test_clients_stop_before_the_servers_they_wait_for(tmp_path):
    """Stopped all at once, Airflow's scheduler could be left waiting on the api-server it
    reports to (its LocalExecutor held it until SIGKILL: the SIGINT test failed once in three
    CI runs). The stop goes in waves: Airflow's clients, then what they wait for, then MLflow."""
    from tools.stack import Ports, services, stop_waves

    settings = Settings(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    items = services(settings, tmp_path, Ports(8000, 9100, 5000, 9090, 9093, 8080), True)
    assert stop_waves(items) == [
        ["airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"],
        ["api", "exporter", "airflow-api-server"],
        ["mlflow", "prometheus", "alertmanager"],
    ]


def test_prometheus_runs_without_its_lifecycle_api(tmp_path):
    """As in compose: with `--web.enable-lifecycle` any local user could stop Prometheus
    (`POST /-/quit`) and with it every alert."""
    from tools.stack import Ports, services

    settings = Settings(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    ports = Ports(8000, 9100, 5000, 9090, 9093, 8080)
    (prometheus,) = [s for s in services(settings, tmp_path, ports, True)
                     if s.name == "prometheus"]  # fmt: skip
    assert prometheus.command[0].endswith("prometheus")
    assert not [arg for arg in prometheus.command if "lifecycle" in arg]


def test_the_exporter_probes_the_stacks_own_airflow(tmp_path):
    """MLAirflowUnhealthy reads the exporter's probe of Airflow's health: pointed at this
    stack's api-server port, and not set when the stack runs without Airflow."""
    from tools.stack import Ports, services

    settings = Settings(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    ports = Ports(8000, 9100, 5000, 9090, 9093, 8181)
    (exporter,) = [s for s in services(settings, tmp_path, ports, True) if s.name == "exporter"]
    assert exporter.env["AIRFLOW_HEALTH_URL"] == "http://127.0.0.1:8181/api/v2/monitor/health"
    (airflow,) = [s for s in services(settings, tmp_path, ports, True)
                  if s.name == "airflow-api-server"]  # fmt: skip
    assert airflow.health == exporter.env["AIRFLOW_HEALTH_URL"]
    (alone,) = [s for s in services(settings, tmp_path, ports, False) if s.name == "exporter"]
    assert "AIRFLOW_HEALTH_URL" not in alone.env


def test_the_api_gets_a_label_writer_of_its_own_unless_the_stack_has_label_tokens(tmp_path):
    """`make stack` in development: labels need a token there too; one is made up the first
    time, kept for the owner alone in var/stack/label-tokens, and the same at every start."""
    from tools.stack import Ports, services

    settings = Settings(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    ports = Ports(8000, 9100, 5000, 9090, 9093, 8080)

    def api_env(settings: Settings) -> dict[str, str]:
        (api,) = [s for s in services(settings, tmp_path, ports, False) if s.name == "api"]
        return api.env

    made = api_env(settings)["LABEL_TOKENS"]
    assert re.fullmatch(r"stack=[0-9a-f]{32}", made)
    kept = tmp_path / "stack" / "label-tokens"
    assert kept.read_text().strip() == made and kept.stat().st_mode & 0o077 == 0
    assert api_env(settings)["LABEL_TOKENS"] == made  # the same at the next start
    assert Settings(LABEL_TOKENS=made).label_tokens["stack"].get_secret_value() == made[6:]
    own = Settings(MLFLOW_TRACKING_URI=settings.MLFLOW_TRACKING_URI, LABEL_TOKENS="crm=abc123")
    assert "LABEL_TOKENS" not in api_env(own)  # the stack's own reach the API as they are


def test_the_project_processes_notify_through_the_stacks_alertmanager(tmp_path, monkeypatch):
    """One paging path, as in compose: the DAG tasks (Airflow's processes run them and their
    failure callbacks) get ALERTMANAGER_URL of the Alertmanager the stack starts, whatever the
    environment said."""
    from tools.stack import Ports, services

    monkeypatch.setenv("ALERTMANAGER_URL", "http://elsewhere:9093")
    settings = Settings(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    items = {s.name: s for s in services(settings, tmp_path, Ports(8000, 9100, 5000, 9090, 9193,
                                                                    8080), True)}  # fmt: skip
    assert "--web.listen-address=127.0.0.1:9193" in items["alertmanager"].command
    project = [name for name in items if name.startswith("airflow-") or name in ("api", "exporter")]
    assert len(project) == 6
    for name in project:
        assert items[name].env["ALERTMANAGER_URL"] == "http://127.0.0.1:9193", name
