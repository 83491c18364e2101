"""`make stack`: the services of docker-compose.yml as plain processes on this machine.

    python -m tools.stack [--no-airflow] [--var DIR] [--mlflow-port 5000]
        [--prometheus-port 9090] [--alertmanager-port 9093] [--airflow-port 8080]

One honcho process manager runs, each with compose's command: the API (`python -m api.serve` on
API_PORT), the exporter (`python -m monitoring.prometheus_exporter` on EXPORTER_PORT), the MLflow
tracking server (`mlflow server --serve-artifacts` on the MLFLOW_TRACKING_URI database, artifacts
under var/mlartifacts), Prometheus (prometheus/alerts.yml and prometheus.loopback.yml with these
ports, `environment` from ENVIRONMENT on every alert), Alertmanager (alerting/entrypoint.sh, as
compose: alerting/ rendered with SLACK_WEBHOOK_URL, PAGERDUTY_ROUTING_KEY, DEADMANSSWITCH_URL and
RUNBOOK_BASE_URL; the project's processes get it as ALERTMANAGER_URL, so the DAG tasks'
notifications go through it, as in compose) and Airflow's api-server, scheduler, dag-processor
and triggerer (airflow/dags, metadata under var/airflow). The settings are the stack's own
(`.env`, the environment): DATABASE_URL picks the monitoring database, the machine's Postgres or
the embedded SQLite. Every service listens on 127.0.0.1. Without LABEL_TOKENS (development), the
API gets a label writer `stack` with a token made up once and kept in var/stack/label-tokens
(`export LABEL_TOKENS=$(cat var/stack/label-tokens)` before `python -m data.replay --labels`).

Before they start, as compose's one-shot steps and health conditions do: the monitoring and
MLflow databases are created or migrated, a first model is trained and promoted when the
registry has no @champion (as `make demo` does), Airflow's metadata is migrated, the API, the
exporter and Airflow's api-server wait for MLflow's /health, and Airflow's other components for
its api-server. The URLs are printed at start, and each service's health URL once it answers.
Ctrl-C (or SIGTERM) stops every process, each with SIGTERM to its process group, clients before
the servers they wait for (`stop_waves`: Airflow's scheduler, triggerer and dag-processor, then
its api-server, the API and the exporter, then MLflow, Prometheus and Alertmanager), and waits
for them (SIGKILL after KILL_WAIT_SECONDS).

    python -m tools.stack --wait-for URL            # exit 0 once URL answers 2xx
    python -m tools.stack --watch NAME=URL ...      # print each as it answers, then wait
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import yaml

from data.settings import PROJECT_ROOT, Settings, exit_on_config_error, get_settings

HOST = "127.0.0.1"
LOOPBACK_PROMETHEUS = PROJECT_ROOT / "prometheus" / "prometheus.loopback.yml"
ALERT_RULES = PROJECT_ROOT / "prometheus" / "alerts.yml"
ALERTMANAGER_ENTRYPOINT = PROJECT_ROOT / "alerting" / "entrypoint.sh"
DAGS_FOLDER = PROJECT_ROOT / "airflow" / "dags"
# honcho sends SIGTERM, then SIGKILL this many seconds after the first process stopped. Its own
# 5 s is shorter than the API's drain (api/serve.py gives in-flight requests up to 20 s).
KILL_WAIT_SECONDS = 30
# How long one wave of the ordered stop may take before the next wave is told to stop anyway.
WAVE_SECONDS = 20
WAIT_SECONDS = 300  # a first start migrates MLflow's database and loads the model on 2 cores


class StackError(RuntimeError):
    """The stack cannot start; the message says what is wrong and how to fix it."""


@dataclass
class Ports:
    api: int
    exporter: int
    mlflow: int
    prometheus: int
    alertmanager: int
    airflow: int

    def url(self, port: int) -> str:
        return f"http://{HOST}:{port}"


@dataclass
class Service:
    """One process of the stack: its shell command, extra environment and health URL."""

    name: str
    command: list[str]
    health: str
    url: str
    env: dict[str, str] = field(default_factory=dict)
    wait_for: str | None = None  # start only once this URL answers (compose's depends_on)

    def shell(self) -> str:
        command = "exec " + shlex.join(self.command)
        if self.wait_for:
            wait = shlex.join([sys.executable, "-m", "tools.stack", "--wait-for",
                               self.wait_for])  # fmt: skip
            command = f"{wait} && {command}"
        return command


# --- configuration files -------------------------------------------------------------------


def prometheus_config(ports: Ports) -> dict:
    """prometheus.loopback.yml with these ports and the project's rules by absolute path."""
    config = yaml.safe_load(LOOPBACK_PROMETHEUS.read_text())
    targets = {
        "api": ports.api,
        "exporter": ports.exporter,
        "prometheus": ports.prometheus,
        "alertmanager": ports.alertmanager,
    }
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    if jobs != set(targets):
        raise StackError(f"{LOOPBACK_PROMETHEUS} has jobs {sorted(jobs)}; this launcher knows "
                         f"{sorted(targets)}: update tools/stack.py with it")  # fmt: skip
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"{HOST}:{targets[job['job_name']]}"]}]
    config["rule_files"] = [str(ALERT_RULES)]
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"{HOST}:{ports.alertmanager}"]}]}
    ]
    return config


def alertmanager_env(settings: Settings, run_dir: Path) -> dict[str, str]:
    """What alerting/entrypoint.sh renders alerting/ with, as compose gives it: the secrets and
    URLs from the settings, the rendered files and secrets in `run_dir`."""

    def secret(value) -> str:
        return value.get_secret_value() if value else ""

    return {
        "ALERTMANAGER_RUN_DIR": str(run_dir),
        "ALERTMANAGER_BINARY": binary("prometheus-alertmanager", "alertmanager"),
        "SLACK_WEBHOOK_URL": secret(settings.SLACK_WEBHOOK_URL),
        "PAGERDUTY_ROUTING_KEY": secret(settings.PAGERDUTY_ROUTING_KEY),
        "PAGERDUTY_EVENTS_URL": settings.PAGERDUTY_EVENTS_URL,
        "DEADMANSSWITCH_URL": secret(settings.DEADMANSSWITCH_URL),
        "RUNBOOK_BASE_URL": settings.RUNBOOK_BASE_URL,
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Written by `python -m tools.stack` at each start; edit the source.\n"
                    f"{yaml.safe_dump(data, sort_keys=False)}")  # fmt: skip
    return path


# --- the processes -------------------------------------------------------------------------


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise StackError(f"{names[0]} is not installed: `make system-tools` installs it "
                     "(Debian's prometheus and prometheus-alertmanager)")  # fmt: skip


def own_mlflow_server(settings: Settings) -> bool:
    """Whether the stack runs the tracking server: not when MLFLOW_TRACKING_URI is one."""
    return urlparse(settings.MLFLOW_TRACKING_URI).scheme not in ("http", "https")


def airflow_env(settings: Settings, var: Path, ports: Ports) -> dict[str, str]:
    """`make airflow`'s settings, for each Airflow component; values already in the environment
    win, except where the stack's files are."""
    env = {
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "1",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__WORKERS": "1",
        # The LocalExecutor forks `parallelism` workers at start: Airflow's default is 32 idle
        # processes of 130 MB each, for a 2-core machine that runs a few tasks at a time.
        "AIRFLOW__CORE__PARALLELISM": "4",
        # compose's default (AIRFLOW_DAGS_PAUSED=false): the schedules run as deployed.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    }
    env = {name: os.environ.get(name, value) for name, value in env.items()}
    return env | {
        # The project on Airflow's path: the DAG files import its packages inside their tasks.
        "PYTHONPATH": str(PROJECT_ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(var / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(ports.airflow),
        # Task runners report to the api-server; its default (localhost:8080) is wrong on
        # another port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{ports.url(ports.airflow)}/execution/",
    }


def stop_waves(items: list[Service]) -> list[list[str]]:
    """The order to stop the stack in: what waits for another service before that service.

    A service that waits for another (`wait_for`) is its client: Airflow's scheduler reports
    its tasks to the api-server, which waits for MLflow. Stopped all at once, a client can be
    left waiting on a server that is already gone (the scheduler waited on its LocalExecutor
    until SIGKILL). So each wave holds the services at one depth of that chain, deepest first.
    """
    # Airflow's components all name the api-server's address; the server is listed first.
    by_address: dict[str, Service] = {}
    for service in items:
        by_address.setdefault(urlparse(service.url).netloc, service)

    def depth(service: Service) -> int:
        server = by_address.get(urlparse(service.wait_for).netloc) if service.wait_for else None
        return 0 if server is None or server is service else 1 + depth(server)

    depths = {service.name: depth(service) for service in items}
    return [
        [name for name, d in depths.items() if d == level]
        for level in sorted(set(depths.values()), reverse=True)
    ]


def ordered_manager(waves: list[list[str]], printer):
    """honcho's manager, stopping its processes wave by wave (`stop_waves`) instead of all at
    once; anything not in a wave (the ready watcher) goes with the first."""
    from honcho import manager as honcho

    class OrderedManager(honcho.Manager):
        def _killall(self, force: bool = False) -> None:
            if force:
                return super()._killall(force=True)
            named = {name for wave in waves for name in wave}
            first = [*waves[0], *(name for name in self._processes if name not in named)]
            for wave in [first, *waves[1:]]:
                running = [name for name in wave if "returncode" not in self._processes[name]]
                for name in running:
                    pid = self._processes[name]["pid"]
                    self._system_print(f"sending SIGTERM to {name} (pid {pid})\n")
                    self._procmgr.terminate(pid)
                deadline = time.monotonic() + WAVE_SECONDS
                while time.monotonic() < deadline and any(
                    _group_alive(self._processes[name]["pid"]) for name in running
                ):
                    time.sleep(0.1)

    return OrderedManager(printer)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LABEL_TOKENS_FILE = "label-tokens"


def stack_label_tokens(settings: Settings, var: Path) -> dict[str, str]:
    """LABEL_TOKENS for the API when the stack's settings have none (development only: elsewhere
    the settings refuse to start without): a `stack` source with a token made up the first time
    and kept, readable by its owner only, in var/stack/label-tokens."""
    if settings.LABEL_TOKENS is not None:
        return {}  # the stack's own, from .env or the environment, reach the API as they are
    path = var / "stack" / LABEL_TOKENS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"stack={secrets.token_hex(16)}\n")
    return {"LABEL_TOKENS": path.read_text().strip()}


def services(settings: Settings, var: Path, ports: Ports, airflow: bool) -> list[Service]:
    """The stack's processes, with compose's commands, on loopback."""
    python = sys.executable
    stack = var / "stack"
    alertmanager_url = ports.url(ports.alertmanager)
    # One paging path: the DAG tasks notify through this Alertmanager, not straight to Slack.
    common = {"PYTHONPATH": str(PROJECT_ROOT), "API_PORT": str(ports.api),
              "EXPORTER_PORT": str(ports.exporter),
              "ALERTMANAGER_URL": alertmanager_url}  # fmt: skip
    mlflow_health = None
    result = []
    if own_mlflow_server(settings):
        # Through the server, as in compose; artifacts of experiments it creates go onto its
        # folder (--serve-artifacts), no host in the URI.
        mlflow_url = ports.url(ports.mlflow)
        mlflow_health = f"{mlflow_url}/health"
        common |= {"MLFLOW_TRACKING_URI": mlflow_url,
                   "MLFLOW_ARTIFACT_ROOT": "mlflow-artifacts:/experiments"}  # fmt: skip
        store = settings.mlflow_tracking_uri
        artifacts = settings.path(settings.MLFLOW_ARTIFACT_ROOT)
        if urlparse(settings.MLFLOW_ARTIFACT_ROOT).scheme:  # a URI (s3://...): as it is
            artifacts = settings.MLFLOW_ARTIFACT_ROOT
        result.append(Service(
            "mlflow",
            [python, "-m", "mlflow", "server", f"--backend-store-uri={store}",
             "--serve-artifacts", f"--artifacts-destination={artifacts}", f"--host={HOST}",
             f"--port={ports.mlflow}",
             # SQLite takes one writer: one worker; compose's two on a server database.
             f"--workers={1 if store.startswith('sqlite') else 2}"],
            health=mlflow_health, url=mlflow_url,
            # Its job runner (seven huey consumers, about 2 GB) serves GenAI features this
            # project does not use.
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION":
                 os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")},
        ))  # fmt: skip
    api_url, exporter_url = ports.url(ports.api), ports.url(ports.exporter)
    # The exporter asks this stack's Airflow for its health (MLAirflowUnhealthy), as in compose.
    airflow_health = {"AIRFLOW_HEALTH_URL": f"{ports.url(ports.airflow)}/api/v2/monitor/health"}
    result += [
        Service("api", [python, "-m", "api.serve", f"--host={HOST}", f"--port={ports.api}"],
                health=f"{api_url}/ready", url=api_url,
                env=common | stack_label_tokens(settings, var), wait_for=mlflow_health),
        Service("exporter", [python, "-m", "monitoring.prometheus_exporter", f"--host={HOST}",
                             f"--port={ports.exporter}"],
                health=f"{exporter_url}/metrics", url=f"{exporter_url}/metrics",
                env=common | (airflow_health if airflow else {}), wait_for=mlflow_health),
    ]  # fmt: skip
    prometheus_url = ports.url(ports.prometheus)
    result += [
        Service("prometheus",
                [binary("prometheus"), f"--config.file={stack / 'prometheus.yml'}",
                 f"--storage.tsdb.path={var / 'prometheus-data'}",
                 # No --web.enable-lifecycle: anyone on this machine could POST /-/quit.
                 "--storage.tsdb.retention.time=15d",
                 f"--web.listen-address={HOST}:{ports.prometheus}",
                 f"--web.external-url={prometheus_url}",
                 "--enable-feature=expand-external-labels"],  # environment on every alert
                health=f"{prometheus_url}/-/ready", url=prometheus_url,
                env={"ENVIRONMENT": settings.ENVIRONMENT}),
        # compose's entrypoint: alerting/ rendered for this deployment, then Alertmanager.
        Service("alertmanager",
                ["sh", str(ALERTMANAGER_ENTRYPOINT),
                 f"--storage.path={var / 'alertmanager-data'}",
                 f"--web.listen-address={HOST}:{ports.alertmanager}",
                 f"--web.external-url={alertmanager_url}",
                 "--cluster.listen-address="],  # one instance: no gossip port to collide on
                health=f"{alertmanager_url}/-/ready", url=alertmanager_url,
                env=alertmanager_env(settings, stack / "alertmanager")),
    ]  # fmt: skip
    if airflow:
        env = common | airflow_env(settings, var, ports)
        airflow_url = ports.url(ports.airflow)
        result.append(Service(
            "airflow-api-server", [python, "-m", "airflow", "api-server"],
            health=f"{airflow_url}/api/v2/monitor/health", url=airflow_url, env=env,
            wait_for=mlflow_health,
        ))  # fmt: skip
        # After the api-server: their task runners report to it, and a task started before it
        # listened failed at once (connection refused) and waited out its retry delay.
        # The scheduler and triggerer serve their task logs to other machines on every
        # interface (ports 8793, 8794); on this one the api-server reads them from the files.
        commands = {
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        for component, command in commands.items():
            result.append(Service(
                f"airflow-{component}", [python, "-m", "airflow", *command],
                health=f"{airflow_url}/api/v2/monitor/health", url=airflow_url, env=env,
                wait_for=f"{airflow_url}/api/v2/version",
            ))  # fmt: skip
    return result


# --- steps before the processes ------------------------------------------------------------


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def check_ports(ports: Ports, airflow: bool) -> None:
    flags = {"api": "API_PORT", "exporter": "EXPORTER_PORT", "mlflow": "--mlflow-port",
             "prometheus": "--prometheus-port", "alertmanager": "--alertmanager-port",
             "airflow": "--airflow-port"}  # fmt: skip
    taken = [f"{name} {getattr(ports, name)} (set {flag})" for name, flag in flags.items()
             if (airflow or name != "airflow") and port_in_use(getattr(ports, name))]  # fmt: skip
    if taken:
        raise StackError("ports already in use on 127.0.0.1: " + ", ".join(taken)
                         + "; stop what holds them or choose others")  # fmt: skip
    if len(set(vars(ports).values())) != len(vars(ports)):
        raise StackError(f"two services were given the same port: {vars(ports)}")


def prepare_first_start() -> None:
    """In a child process (MLflow stays out of the long-lived launcher): reach the monitoring
    database, create its tables, migrate MLflow's, and train and promote a first model when the
    registry has no @champion yet, as `make demo` does. Exits 2 with the reason on failure."""
    from sqlalchemy.exc import SQLAlchemyError

    from data.db import get_engine, init_db
    from data.logs import configure_logging
    from training.registry import Registry

    settings = get_settings()
    configure_logging(settings, process="stack", command=True)
    try:
        init_db(get_engine(settings.database_url))
    except SQLAlchemyError as exc:
        print(f"error: cannot use the monitoring database DATABASE_URL={redact(settings)}: "
              f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    Registry.prepare_store(settings.mlflow_tracking_uri)
    if Registry.from_settings(settings).champion_version() is not None:
        return
    print(f"== no @champion of {settings.MODEL_NAME!r} yet: training and promoting a first "
          "model (python -m training.train --auto-promote)", flush=True)  # fmt: skip
    from training.train import main as train

    if train(["--auto-promote"]) != 0:
        sys.exit(2)


def redact(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


def run_step(target) -> None:
    child = multiprocessing.get_context("spawn").Process(target=target, name=target.__name__)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise StackError(f"{target.__name__} failed (exit status {child.exitcode}); see above")


def migrate_airflow(env: dict[str, str], log: Path) -> None:
    """compose's airflow-init: migrate Airflow's metadata database before its components."""
    print(f"== migrating Airflow's metadata database ({env['AIRFLOW_HOME']}; log {log})",
          flush=True)  # fmt: skip
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                              env={**os.environ, **env}, cwd=PROJECT_ROOT, stdout=out,
                              stderr=subprocess.STDOUT)  # fmt: skip
    if done.returncode != 0:
        raise StackError(f"airflow db migrate failed:\n{log.read_text()[-3000:]}")


# --- waiting for services ------------------------------------------------------------------


def answers(url: str) -> bool:
    """Whether `url` answers 2xx; Airflow's health page must also call every part healthy (it
    answers 200 while the scheduler, triggerer or dag-processor is still starting)."""
    try:
        answer = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return False
    if not answer.is_success:
        return False
    if url.endswith("/api/v2/monitor/health"):
        return all(part.get("status") == "healthy" for part in answer.json().values())
    return True


def wait_for(url: str, seconds: float = WAIT_SECONDS) -> int:
    deadline = time.monotonic() + seconds
    while not answers(url):
        if time.monotonic() > deadline:
            print(f"gave up after {seconds:g} s: {url} does not answer", file=sys.stderr)
            return 1
        time.sleep(0.5)
    return 0


def watch(pairs: list[str]) -> int:
    """Print each service as it answers, then one line for all; then wait to be stopped (the
    process manager stops the stack when any of its processes exits)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    waiting = dict(pair.split("=", 1) for pair in pairs)
    started = time.monotonic()
    last_note = started
    while waiting:
        for name, url in list(waiting.items()):
            if answers(url):
                print(f"{name} ready after {time.monotonic() - started:.0f} s: {url}", flush=True)
                del waiting[name]
        if waiting and time.monotonic() - last_note > 60:
            print(f"still waiting for {', '.join(waiting)}", flush=True)
            last_note = time.monotonic()
        time.sleep(1)
    print(f"the stack is ready ({len(pairs)} services, {time.monotonic() - started:.0f} s); "
          "Ctrl-C stops it", flush=True)  # fmt: skip
    signal.pause()
    return 0


# --- the launcher --------------------------------------------------------------------------


def banner(settings: Settings, items: list[Service], var: Path) -> str:
    seen: dict[str, str] = {}
    for service in items:
        seen.setdefault(service.name.split("-")[0], service.url)
    lines = ["", "The stack, on this machine (Ctrl-C stops every process):"]
    notes = {"api": "/docs, /ready, /metrics/summary", "prometheus": "/alerts, /targets",
             "airflow": f"user admin, password in {var}/airflow/"
                        "simple_auth_manager_passwords.json.generated"}  # fmt: skip
    for name, url in seen.items():
        note = f"   ({notes[name]})" if name in notes else ""
        lines.append(f"  {name:<13} {url}{note}")
    lines.append(f"  {'monitoring DB':<13} {redact(settings)}")
    if settings.LABEL_TOKENS is None:
        tokens = var / "stack" / LABEL_TOKENS_FILE
        lines.append(f"  {'label token':<13} {tokens} (LABEL_TOKENS of the API's label writer)")
    if not own_mlflow_server(settings):
        lines.append(f"  {'MLflow':<13} {settings.MLFLOW_TRACKING_URI} (MLFLOW_TRACKING_URI)")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from honcho import manager as honcho
    from honcho.printer import Printer

    settings = get_settings()
    var = Path(args.var).resolve() if args.var else settings.path("var")
    ports = Ports(settings.API_PORT, settings.EXPORTER_PORT, args.mlflow_port,
                  args.prometheus_port, args.alertmanager_port, args.airflow_port)  # fmt: skip
    check_ports(ports, args.airflow)
    items = services(settings, var, ports, args.airflow)
    stack = var / "stack"
    write_yaml(stack / "prometheus.yml", prometheus_config(ports))
    run_step(prepare_first_start)
    if args.airflow:
        migrate_airflow(airflow_env(settings, var, ports), stack / "airflow-init.log")

    honcho.KILL_WAIT = KILL_WAIT_SECONDS
    manager = ordered_manager(stop_waves(items), Printer(sys.stdout, colour=sys.stdout.isatty()))
    # Only the API's workers share a metrics folder, which api.serve wipes at start; any other
    # process that inherited PROMETHEUS_MULTIPROC_DIR (MLflow's server imports prometheus_client)
    # would write its metrics there and fail once the folder is wiped.
    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    for service in items:
        env = (dict(os.environ) if service.name == "api" else base) | service.env
        manager.add_process(service.name, service.shell(), env=env, cwd=str(PROJECT_ROOT))
    health = {}
    for service in items:
        health.setdefault(service.name.split("-")[0], service.health)
    manager.add_process("ready", shlex.join([sys.executable, "-m", "tools.stack",
                        "--watch", *(f"{n}={u}" for n, u in health.items())]),
                        env=base, cwd=str(PROJECT_ROOT))  # fmt: skip
    print(banner(settings, items, var), flush=True)
    manager.loop()
    return manager.returncode or 0


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stack",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--var", help="folder of the stack's state (default: var/)")
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--alertmanager-port", type=int, default=9093)
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument(
        "--no-airflow",
        dest="airflow",
        action="store_false",
        help="leave Airflow out (its four components and their workers)",
    )
    parser.add_argument("--wait-for", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--watch", nargs="+", metavar="NAME=URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.wait_for:
        return wait_for(args.wait_for)
    if args.watch:
        return watch(args.watch)
    for name in ("mlflow_port", "prometheus_port", "alertmanager_port", "airflow_port"):
        if not 0 < getattr(args, name) < 65536:
            parser.error(f"--{name.replace('_', '-')} must be a port number, 1 to 65535 "
                         f"(got {getattr(args, name)})")  # fmt: skip
    try:
        return run(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
