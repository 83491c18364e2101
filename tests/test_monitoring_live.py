"""The monitoring stack wired for real (issue 12): every alert and dashboard query is evaluated by
a real Prometheus that scraped the real API and exporter, and alerts forced for real reach a
local Slack / PagerDuty sink through the real Alertmanager.

One stack per module, all on loopback ports: a fresh Postgres database, the default model (a
session MLflow store), the API (`python -m api.serve`, 2 workers), the exporter (`python -m
monitoring.prometheus_exporter`), Alertmanager
(tools/testkit/alertmanager_run.py's copy, secrets pointing at tools/testkit/http_sink.py) and
two Prometheus servers built from prometheus/prometheus.loopback.yml with the test's ports and
1 s scrape and evaluation intervals:

- "project" reads prometheus/alerts.yml itself: the rules and dashboard queries are evaluated
  there (`/api/v1/query` at now). A query may be empty on a healthy stack (an alert's
  condition, an `offset 1d` comparison); then the series it names are what must have data. Every
  series a query names must exist, and every label a selector matches on must exist on that
  series, whatever the query returns: that is the "names a metric no service exports" check.
- "fast" reads a copy of alerts.yml whose `for:` are sixty times shorter (5m -> 5s, in the
  project's order) and sends to Alertmanager: the end-to-end alert tests use it. The copy
  differs from the project's file only in `for:`.

Traffic: synthetic transactions replayed through the API with their labels, a closed training
run, then one monitoring pass (`monitoring.window_checks`) so drift, quality and performance
reports exist for the exporter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from data.settings import PROJECT_ROOT, Settings
from tests.test_alert_rules import COMPOSE_ONLY_OWN, PROMETHEUS_OWN, metric_names
from tools.testkit.airflow_health import running_airflow_health
from tools.testkit.alertmanager_run import (
    PAGERDUTY,
    ROUTING_KEY,
    RUNBOOK_BASE_URL,
    SLACK,
    RunningAlertmanager,
    loopback_copy,
)
from tools.testkit.api_server import ServerProcess, free_port
from tools.testkit.databases import FRAUD_SCHEMA_PATH, fresh_postgres_database
from tools.testkit.http_sink import Sink, running_sink
from tools.testkit.traffic import LABEL_TOKEN, LABEL_TOKENS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RULES = PROJECT_ROOT / "prometheus" / "alerts.yml"
LOOPBACK = PROJECT_ROOT / "prometheus" / "prometheus.loopback.yml"
DASHBOARDS = PROJECT_ROOT / "grafana" / "dashboards"
TOKEN = "live-test-admin-token"
ENVIRONMENT = "development"
# Grafana's template variables, as the dashboards use them, replaced for a plain query.
DASHBOARD_VARIABLES = {"$environment": ".+", "$model": ".+", "$__rate_interval": "1m",
                       "$node": ".+", "$container": ".+", "$version": ".+",
                       "$feature": ".+"}  # fmt: skip
# Compose-only jobs have no loopback twin. node-exporter's and cAdvisor's series are all a query
# on them reads: those queries are left out (promtool's rule tests and tests/test_dashboards.py
# check them statically). postgres-exporter's (job `postgres`) sit beside this stack's own series
# (MLPostgresDown also reads the exporter's): those queries still run, and its series may be
# absent; tests/test_compose_stack.py checks them live.
HOST_ONLY_SERIES = COMPOSE_ONLY_OWN["node"] | COMPOSE_ONLY_OWN["cadvisor"]
COMPOSE_ONLY_SERIES = COMPOSE_ONLY_OWN["postgres"]
WAIT_SECONDS = 60
STARTUP_SECONDS = 240  # a server's start, as ServerProcess.wait_ready


# --- processes -------------------------------------------------------------------------------


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}"
    except OSError:
        return f"--- {path.name}: no log ---"


class Exporter:
    """`python -m monitoring.prometheus_exporter` on a free loopback port."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "exporter.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitoring.prometheus_exporter", "--port", str(self.port),
             "--host", "127.0.0.1"],
            cwd=folder, env=env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the exporter exited\n{tail(self.log_path)}")
            try:
                if httpx.get(f"{self.url}/metrics", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the exporter did not answer in {timeout:g} s\n{tail(self.log_path)}")

    def stop(self) -> None:
        stop_process(self.process)


class RunningPrometheus:
    """Debian's Prometheus with the given configuration, storage in `folder`."""

    def __init__(self, folder: Path, config: dict, port: int) -> None:
        binary = shutil.which("prometheus")
        assert binary, "Prometheus is not installed: `make system-tools` installs it"
        folder.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = folder / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = folder / "prometheus.log"
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=expand-external-labels"],
            stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
            env=os.environ | {"ENVIRONMENT": ENVIRONMENT},  # the external label's value
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Prometheus exited\n{tail(self.log_path)}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Prometheus not ready in 30 s\n{tail(self.log_path)}")

    def api(self, path: str, **params) -> dict:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        assert body.get("status") in {"success", "error"}, answer.text
        return body

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def series(self, expr: str) -> list[dict]:
        body = self.query(expr)
        return body["data"]["result"] if body["status"] == "success" else []

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_until(check: Callable[[], object], seconds: float, what: str, logs: Callable[[], str]):
    """Poll `check` until it returns something truthy; fail with `what` and the logs' tails."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds:g} s waiting for {what}\n{logs()}")


# --- configuration copies --------------------------------------------------------------------


def prometheus_config(
    rules: Path, targets: dict[str, str], alertmanager: str, api_file_sd: Path | None = None
) -> dict:
    """prometheus.loopback.yml with the test's ports, 1 s intervals and `rules`; with
    `api_file_sd`, the api job discovers its targets from that file (replicas join later)."""
    config = yaml.safe_load(LOOPBACK.read_text())
    config["global"] |= {"scrape_interval": "1s", "scrape_timeout": "1s",
                         "evaluation_interval": "1s"}  # fmt: skip
    config["rule_files"] = [str(rules)]
    (manager,) = config["alerting"]["alertmanagers"]
    manager["static_configs"] = [{"targets": [alertmanager]}]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == set(targets), f"the loopback config's jobs changed: {sorted(jobs)}"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        if job["job_name"] == "api" and api_file_sd is not None:
            write_targets(api_file_sd, [targets["api"]])
            del job["static_configs"]
            job["file_sd_configs"] = [{"files": [str(api_file_sd)], "refresh_interval": "1s"}]
    return config


def write_targets(path: Path, targets: list[str]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps([{"targets": targets}]))
    temporary.replace(path)  # atomic: Prometheus never reads half a file


FAST = 60  # the fast copy's `for:` are this many times shorter than the project's


def shortened(duration: str) -> str:
    """A Prometheus duration (`5m`, `1h`, `30s`, `0m`) FAST times shorter, in whole seconds."""
    seconds = sum(int(n) * {"s": 1, "m": 60, "h": 3600}[unit]
                  for n, unit in re.findall(r"(\d+)([smh])", duration))  # fmt: skip
    return f"{seconds // FAST}s"


def fast_rules(folder: Path) -> Path:
    """alerts.yml with every `for:` sixty times shorter (5m -> 5s, 2m -> 2s): alerts fire
    in seconds and in the order the project's would. All at 0s made a race of what the real
    durations order (MLApiUnavailable's 2m before MLTargetDown's 5m is what lets the first
    mute the second), and fired on blips no real `for:` lets through."""
    text, count = re.subn(r"(?m)^(\s+)for: (\S+)$",
                          lambda m: f"{m[1]}for: {shortened(m[2])}", RULES.read_text())  # fmt: skip
    alerts = [r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r]
    assert count == len(alerts), "every alert has exactly one `for:` line"
    original = yaml.safe_load(RULES.read_text())
    for group in original["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = shortened(rule["for"])
    assert yaml.safe_load(text) == original, "the copy differs from alerts.yml beyond `for:`"
    path = folder / "alerts.fast.yml"
    path.write_text(text)
    return path


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    folder: Path
    settings: Settings
    env: dict[str, str]
    api: ServerProcess
    exporter: Exporter
    alertmanager: RunningAlertmanager
    sink: Sink
    project: RunningPrometheus
    fast: RunningPrometheus
    api_targets: Path
    sent: int

    def logs(self) -> str:
        paths = [self.api.log_path, self.exporter.log_path, self.alertmanager.log,
                 self.project.log_path, self.fast.log_path]  # fmt: skip
        return "\n".join(tail(path) for path in paths)


def service_env(settings: Settings, folder: Path) -> dict[str, str]:
    """The environment of the stack's processes: the developer's, minus every setting."""
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env |= {
        "PYTHONPATH": str(PROJECT_ROOT),
        "ENVIRONMENT": ENVIRONMENT,
        "DATABASE_URL": settings.DATABASE_URL,
        "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
        "MLFLOW_ARTIFACT_ROOT": settings.MLFLOW_ARTIFACT_ROOT,
        "DATA_DIR": settings.DATA_DIR,
        "FEATURE_SCHEMA": str(FRAUD_SCHEMA_PATH),
        "API_ADMIN_TOKEN": TOKEN,
        "LABEL_TOKENS": LABEL_TOKENS,
        "MODEL_POLL_SECONDS": "1",
        "EXPORTER_CACHE_SECONDS": "0",
        "PREDICTION_SPOOL_DIR": str(folder / "spool"),
    }
    return env


def send_traffic(settings: Settings, url: str, frame, *, labels: bool) -> int:
    """Replay `frame` through the API and wait until the logger has written every row."""
    from sqlalchemy import func, select

    from data.db import get_engine, prediction_logs
    from data.db import labels as labels_table
    from data.replay import replay
    from data.schema import load_schema

    result = replay(frame, load_schema(FRAUD_SCHEMA_PATH), url, labels=labels, token=LABEL_TOKEN)
    ids = list(frame["transaction_id"])
    engine = get_engine(settings.DATABASE_URL)

    def written() -> bool:
        with engine.connect() as conn:
            logged = conn.execute(
                select(func.count()).where(prediction_logs.c.request_id.in_(ids))
            ).scalar()
            labelled = conn.execute(
                select(func.count()).where(labels_table.c.request_id.in_(ids))
            ).scalar()
        return logged == len(ids) and (not labels or labelled == len(ids))

    deadline = time.monotonic() + 60
    while not written():
        assert time.monotonic() < deadline, "the API's logger did not write the replayed rows"
        time.sleep(0.3)
    return result["predictions"]


@pytest.fixture(scope="module")
def stack(default_training, tmp_path_factory) -> Iterator[Stack]:
    from data.synthetic import generate_transactions
    from monitoring.window_checks import check_window
    from training.runs import finish_training_run, open_training_run

    store, trained = default_training
    folder = tmp_path_factory.mktemp("live")
    with fresh_postgres_database() as database_url, ExitStack() as cleanup:
        settings = store.model_copy(update={"DATABASE_URL": database_url,
                                            "ENVIRONMENT": ENVIRONMENT})  # fmt: skip
        env = service_env(settings, folder)
        # An Airflow health endpoint for the exporter to probe (MLAirflowUnhealthy's series).
        env["AIRFLOW_HEALTH_URL"] = cleanup.enter_context(running_airflow_health()).url
        (folder / "api").mkdir()
        api = ServerProcess(folder / "api", env, workers=2)
        cleanup.callback(api.stop)
        exporter = Exporter(folder / "exporter", env)
        cleanup.callback(exporter.stop)
        sink = cleanup.enter_context(running_sink())
        (folder / "alertmanager").mkdir()
        alertmanager = RunningAlertmanager(
            loopback_copy(folder / "alertmanager", sink.url), folder / "alertmanager"
        )
        cleanup.callback(alertmanager.stop)
        api.wait_ready()
        exporter.wait_ready()

        # Traffic with its labels, a closed training run, one monitoring pass.
        sent = send_traffic(settings, api.url, generate_transactions(3000, seed=31), labels=True)
        # Replay posts to /predict/batch; the single-row latency rule reads /predict alone.
        from data.schema import load_schema
        from tools.testkit.traffic import request_rows

        for i, row in enumerate(request_rows(load_schema(FRAUD_SCHEMA_PATH), 5)):
            body = {"request_id": f"single-{i}", "features": row}
            assert httpx.post(f"{api.url}/predict", json=body, timeout=30).status_code == 200
        from data.db import get_engine

        engine = get_engine(database_url)
        now = datetime.now(UTC)
        run_id = open_training_run(model_name=settings.MODEL_NAME, requested_at=now,
                                   trigger="manual", reason="live test", engine=engine)  # fmt: skip
        finish_training_run(run_id, "promoted", finished_at=datetime.now(UTC),
                            version=str(trained.version), engine=engine)  # fmt: skip
        check_window(settings=settings)

        targets = {
            "api": api.url.removeprefix("http://"),
            "exporter": exporter.url.removeprefix("http://"),
            "alertmanager": alertmanager.url.removeprefix("http://"),
        }
        port = free_port()
        project = RunningPrometheus(
            folder / "prometheus-project",
            prometheus_config(
                RULES, targets | {"prometheus": f"127.0.0.1:{port}"}, targets["alertmanager"]
            ),
            port,
        )
        cleanup.callback(project.stop)
        port = free_port()
        api_targets = folder / "api-targets.json"
        fast = RunningPrometheus(
            folder / "prometheus-fast",
            prometheus_config(
                fast_rules(folder),
                targets | {"prometheus": f"127.0.0.1:{port}"},
                targets["alertmanager"],
                api_file_sd=api_targets,
            ),
            port,
        )
        cleanup.callback(fast.stop)
        yield Stack(folder, settings, env, api, exporter, alertmanager, sink, project, fast,
                    api_targets, sent)  # fmt: skip


# --- what is evaluated -----------------------------------------------------------------------


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def on_this_stack(expr: str) -> bool:
    """Whether a query reads only what this stack runs: node-exporter and cAdvisor are
    compose-only (the ml-host rules and dashboard read them; promtool's rule tests and
    tests/test_dashboards.py check those statically)."""
    return not metric_names(expr) & HOST_ONLY_SERIES


def rule_queries() -> list[tuple[str, str]]:
    """(name, expression) of every alert (name and severity) and every recording rule, but
    those on node-exporter and cAdvisor."""
    named = []
    for rule in rules():
        if not on_this_stack(rule["expr"]):
            continue
        if "alert" in rule:
            named.append((f"alert {rule['alert']} ({rule['labels']['severity']})", rule["expr"]))
        else:
            named.append((f"record {rule['record']}", rule["expr"]))
    return named


def walk_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels") or [])  # a row panel's collapsed panels


def dashboard_queries(folder: Path = DASHBOARDS) -> list[tuple[str, str]]:
    """(where, query) of every Prometheus target of every dashboard JSON in `folder`, with the
    template variables replaced (`$environment`, `$model` by `.+`, `$__rate_interval` by 1m),
    but those on node-exporter and cAdvisor."""
    queries = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        dashboard = json.loads(path.read_text())
        dashboard = dashboard.get("dashboard", dashboard)  # an API export wraps it
        for panel in walk_panels(dashboard.get("panels") or []):
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if not expr:
                    continue
                for variable, value in DASHBOARD_VARIABLES.items():
                    expr = expr.replace(variable, value)
                if not on_this_stack(expr):
                    continue
                where = f"{path.name}: panel {panel.get('title')!r} [{target.get('refId', '?')}]"
                queries.append((where, expr))
    return queries


SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
POSITIVE_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"')


def selector_labels(expr: str) -> set[tuple[str, str]]:
    """(metric, label) of every label a selector requires (`=` / `=~` a non-empty value)."""
    pairs = set()
    for name, matchers in SELECTOR.findall(expr):
        for label, op, value in POSITIVE_MATCHER.findall(matchers):
            if label != "__name__" and not (op == "=~" and re.fullmatch(value, "")):
                pairs.add((name, label))
    return pairs


def problems(prometheus: RunningPrometheus, expr: str, cache: dict) -> list[str]:
    """What is wrong with `expr` on the live stack: it does not parse or evaluate, a series it
    names has no data, a label it selects on is on no series of that metric, or it returns
    nothing and names no series to look at instead."""

    def cached(query: str) -> list[dict]:
        if query not in cache:
            cache[query] = prometheus.series(query)
        return cache[query]

    answer = prometheus.query(expr)
    if answer["status"] != "success":
        return [f"does not evaluate: {answer.get('errorType')}: {answer.get('error')}"]
    found = []
    names = metric_names(expr)
    for name in sorted(names - COMPOSE_ONLY_SERIES):
        if not cached(name):
            found.append(f"{name} has no series (no service exports it, or not yet)")
    for name, label in sorted(selector_labels(expr)):
        if cached(name) and not cached(f'{name}{{{label}!=""}}'):
            found.append(f"{name} has no label {label!r}")
    if not answer["data"]["result"] and not names:
        found.append("returns nothing and names no series")
    return found


def all_problems(prometheus: RunningPrometheus, queries: list[tuple[str, str]]) -> dict:
    cache: dict = {}
    found = {}
    for where, expr in queries:
        wrong = problems(prometheus, expr, cache)
        if wrong:
            found[where] = wrong
    return found


def wait_for_clean(prometheus: RunningPrometheus, queries, stack: Stack) -> dict:
    """Poll until no query has a problem (rate windows need two scrapes, rules an evaluation),
    or the deadline; returns what is still wrong."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = all_problems(prometheus, queries)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def targets_up(prometheus: RunningPrometheus) -> dict[str, str]:
    active = prometheus.api("targets")["data"]["activeTargets"]
    return {target["labels"]["job"]: target["health"] for target in active}


# --- the tests -------------------------------------------------------------------------------


def test_the_dashboard_walker_reads_nested_panels_and_replaces_variables(tmp_path):
    dashboard = {"panels": [
        {"title": "a", "targets": [{"refId": "A", "expr": 'up{environment=~"$environment"}'}]},
        {"type": "row", "panels": [{"title": "b", "targets": [
            {"refId": "B", "expr": 'rate(x_total{model_name=~"$model"}[$__rate_interval])'},
            {"refId": "C", "datasource": "other"}]}]},
    ]}  # fmt: skip
    (tmp_path / "one.json").write_text(json.dumps(dashboard))
    assert dashboard_queries(tmp_path) == [
        ("one.json: panel 'a' [A]", 'up{environment=~".+"}'),
        ("one.json: panel 'b' [B]", 'rate(x_total{model_name=~".+"}[1m])'),
    ]
    assert dashboard_queries(tmp_path / "missing") == []
    assert selector_labels('a{x="1", y=~".*", z!="2"} + b{w=~"a|b"}') == {("a", "x"), ("b", "w")}


def test_queries_on_node_exporter_and_cadvisor_are_left_to_the_static_checks(tmp_path):
    """This stack runs neither (compose does): the host rules and panels are not evaluated
    here, their thresholds and everything else are."""
    dashboard = {"panels": [{"title": "a", "targets": [
        {"refId": "A", "expr": 'node_load1{instance=~"$node"}'},
        {"refId": "B", "expr": "ml:threshold:host_cpu_busy_ratio"}]}]}  # fmt: skip
    (tmp_path / "host.json").write_text(json.dumps(dashboard))
    assert dashboard_queries(tmp_path) == [
        ("host.json: panel 'a' [B]", "ml:threshold:host_cpu_busy_ratio")
    ]
    names = {name for name, _ in rule_queries()}
    assert "alert MLHostDiskFillingUp (critical)" not in names
    assert "alert MLOomKill (warning)" not in names
    assert "record ml:threshold:host_disk_full_within_seconds" in names
    assert "alert MLTargetDown (warning)" in names


def test_every_target_is_scraped_and_every_rule_is_loaded_and_healthy(stack):
    wait_until(lambda: set(targets_up(stack.project).values()) == {"up"}, WAIT_SECONDS,
               "every target of the project Prometheus up", stack.logs)  # fmt: skip
    assert set(targets_up(stack.project)) == {"api", "exporter", "prometheus", "alertmanager"}
    managers = stack.project.api("alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == [f"{stack.alertmanager.url}/api/v2/alerts"]

    def loaded() -> list[dict]:
        groups = stack.project.api("rules")["data"]["groups"]
        found = [rule for group in groups for rule in group["rules"]]
        return found if all(rule["health"] == "ok" for rule in found) else []

    found = wait_until(loaded, WAIT_SECONDS, "every rule evaluated", stack.logs)
    assert len(found) == len(rules())
    assert [r for r in found if r.get("lastError")] == []


def test_every_rule_query_parses_and_has_data_on_the_live_stack(stack):
    """Each alert expression and recording rule evaluates; every series it names has data (so
    an alert that is silent on a healthy stack is checked on what it reads)."""
    assert stack.sent == 3000
    found = wait_for_clean(stack.project, rule_queries(), stack)
    assert found == {}, json.dumps(found, indent=1) + "\n" + stack.logs()


def test_every_recorded_series_and_threshold_has_data(stack):
    """Prometheus evaluates every recording rule to a series, the thresholds included (a
    dashboard draws them as lines)."""
    records = [rule["record"] for rule in rules() if "record" in rule]
    assert len([r for r in records if r.startswith("ml:threshold:")]) >= 13
    found = wait_for_clean(stack.project, [(f"record {r}", r) for r in records], stack)
    missing = [r for r in records if not stack.project.series(r)]
    assert (missing, found) == ([], {}), f"recorded series without data: {missing} {found}"


def test_every_dashboard_query_parses_and_has_data_on_the_live_stack(stack):
    queries = dashboard_queries()
    assert queries, f"no dashboards found: no Prometheus query in {DASHBOARDS}/*.json"
    found = wait_for_clean(stack.project, queries, stack)
    assert found == {}, json.dumps(found, indent=1)


def test_no_query_names_a_series_outside_what_the_services_export(stack):
    """The names Prometheus holds come from the scrapes and the rules: every name a rule or a
    panel reads is among them (the static twin is test_alert_rules' exported_names check)."""
    wait_until(lambda: len(stack.project.series("up == 1")) == 4, WAIT_SECONDS,
               "a scrape of every target", stack.logs)  # fmt: skip
    wait_until(lambda: stack.project.series("ml:threshold:api_error_ratio"), WAIT_SECONDS,
               "the first rule evaluation", stack.logs)  # fmt: skip
    known = set(stack.project.api("label/__name__/values")["data"]) | PROMETHEUS_OWN
    known |= COMPOSE_ONLY_SERIES
    named = {name for _, expr in rule_queries() + dashboard_queries()
             for name in metric_names(expr)}  # fmt: skip
    assert named - known == set()


# --- alerts end to end -----------------------------------------------------------------------


def test_an_alert_on_a_series_without_environment_reaches_alertmanager_with_it(stack):
    """MLWatchdog (`vector(1)`) and the alerts on `up` have no `environment` of their own: the
    external label adds it, so Alertmanager groups and routes them like every other alert."""

    def watchdogs() -> list[dict]:
        answer = httpx.get(f"{stack.alertmanager.url}/api/v2/alerts", timeout=5).json()
        return [a for a in answer if a["labels"]["alertname"] == "MLWatchdog"]

    # Prometheus sends its first alerts about a minute after it starts (measured 60 s).
    (alert,) = wait_until(watchdogs, 180, "MLWatchdog in Alertmanager", stack.logs)
    assert alert["labels"]["environment"] == ENVIRONMENT
    (series,) = wait_until(lambda: firing(stack.fast, "MLWatchdog"), WAIT_SECONDS,
                           "MLWatchdog in Prometheus", stack.logs)  # fmt: skip
    assert "environment" not in series["metric"]  # the label is the external one


def firing(prometheus: RunningPrometheus, alertname: str) -> list[dict]:
    return prometheus.series(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')


def messages(sink: Sink, path: str, alertname: str) -> list[dict]:
    return [r.body for r in sink.at(path) if alertname in json.dumps(r.body)]


def slack_texts(bodies: list[dict]) -> list[str]:
    return [a.get("title", "") + "\n" + a.get("text", "") for b in bodies
            for a in b.get("attachments", [])]  # fmt: skip


def test_drift_written_by_the_monitoring_pass_reaches_slack_as_a_warning(stack):
    from data.drift_injector import inject_drift
    from data.schema import load_schema
    from data.synthetic import generate_transactions
    from monitoring.window_checks import check_window

    wait_until(lambda: targets_up(stack.fast).get("exporter") == "up", WAIT_SECONDS,
               "the fast Prometheus scraping the exporter", stack.logs)  # fmt: skip
    time.sleep(3)  # a few evaluations of the healthy reports
    assert firing(stack.fast, "MLFeatureDrift") == [], "drift on undrifted traffic"
    assert messages(stack.sink, SLACK, "MLFeatureDrift") == []

    # Traffic whose amounts vary more than in training: a warning, not a critical, drift.
    schema = load_schema(FRAUD_SCHEMA_PATH)
    frame = generate_transactions(3000, seed=32)
    drifted = inject_drift(frame, "variance_change", schema=schema, feature="amount",
                           intensity=0.1, seed=3)  # fmt: skip
    start = datetime.now(UTC)
    send_traffic(stack.settings, stack.api.url, drifted, labels=False)
    end = datetime.now(UTC)
    result = check_window(settings=stack.settings, end=end,
                        hours=((end - start).total_seconds() + 1) / 3600)  # fmt: skip
    assert result.rows == 3000
    counts = result.drift.to_dict()["counts_by_severity"]
    assert counts["warning"] >= 1 and counts["critical"] == 0, result.drift.summary

    slack = wait_until(lambda: messages(stack.sink, SLACK, "MLFeatureDrift"), WAIT_SECONDS,
                       "the Slack message of MLFeatureDrift", stack.logs)  # fmt: skip
    (text,) = slack_texts(slack[:1])
    assert text.startswith(f"[FIRING:1] MLFeatureDrift (warning, {ENVIRONMENT})"), text
    assert "Input features drifted from the training reference." in text
    assert (f"Features of fraud-detector in {ENVIRONMENT} with severity warning or critical in "
            f"the latest drift report: {counts['warning']}.") in text  # fmt: skip
    assert f"Runbook: {RUNBOOK_BASE_URL}docs/runbooks.md#mlfeaturedrift" in text
    time.sleep(3)  # a warning never pages, even a little later
    assert messages(stack.sink, PAGERDUTY, "MLFeatureDrift") == []


def unchampioned_store(folder: Path, settings: Settings) -> str:
    """A copy of the MLflow store whose model has no @champion any more (the alias deleted)."""
    from mlflow.tracking import MlflowClient

    source = Path(settings.MLFLOW_TRACKING_URI.removeprefix("sqlite:///"))
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "mlflow.db"
    with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)  # a consistent copy even while others read the store
    uri = f"sqlite:///{copy}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).delete_registered_model_alias(
        settings.MODEL_NAME, "champion"
    )
    return uri


def test_a_replica_without_a_champion_pages_through_slack_and_pagerduty(stack):
    """A replica that starts while the registry has no @champion serves no model for real:
    `ml_model_loaded` 0, MLNoProductionModel (critical) to Slack and PagerDuty."""
    assert firing(stack.fast, "MLNoProductionModel") == []
    folder = stack.folder / "replica"
    uri = unchampioned_store(folder / "store", stack.settings)
    env = stack.env | {"MLFLOW_TRACKING_URI": uri, "PREDICTION_SPOOL_DIR": str(folder / "spool")}
    replica = ServerProcess(folder, env, workers=1)
    try:
        # As long as ServerProcess.wait_ready gives a server: on two cores saturated by
        # `make test`, a worker's imports alone took over 60 s (CI failed on it).
        wait_until(lambda: _answers(f"{replica.url}/health"), STARTUP_SECONDS,
                   "the replica's /health", lambda: tail(replica.log_path))  # fmt: skip
        assert httpx.get(f"{replica.url}/ready", timeout=5).status_code == 503
        api = stack.api.url.removeprefix("http://")
        write_targets(stack.api_targets, [api, replica.url.removeprefix("http://")])

        def logs() -> str:
            return stack.logs() + "\n" + tail(replica.log_path)

        page = wait_until(
            lambda: messages(stack.sink, PAGERDUTY, "MLNoProductionModel"),
            WAIT_SECONDS,
            "the PagerDuty event of MLNoProductionModel",
            logs,
        )
        slack = wait_until(
            lambda: messages(stack.sink, SLACK, "MLNoProductionModel"),
            WAIT_SECONDS,
            "the Slack message of MLNoProductionModel",
            logs,
        )
    finally:
        replica.stop()
    event = page[0]
    assert event["routing_key"] == ROUTING_KEY and event["event_action"] == "trigger"
    payload = event["payload"]
    assert payload["severity"] == "critical"
    assert payload["summary"] == f"[FIRING:1] MLNoProductionModel (critical, {ENVIRONMENT})"
    details = payload["custom_details"]
    runbook = f"{RUNBOOK_BASE_URL}docs/runbooks.md#mlnoproductionmodel"
    assert details["runbook_url"] == runbook
    assert details["summary"] == "An API replica serves no model."
    instance = replica.url.removeprefix("http://")
    description = (f"{instance} in {ENVIRONMENT} has no model loaded (ml_model_loaded 0): "
                   "/predict answers 503.")  # fmt: skip
    assert description in details["description"]
    (text,) = slack_texts(slack[:1])
    assert text.startswith(f"[FIRING:1] MLNoProductionModel (critical, {ENVIRONMENT})"), text
    assert description in text and f"Runbook: {runbook}" in text


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- the worst, end to end: what reaches Slack and PagerDuty, and what must not --------------
# These change the stack for good (a receiver failing, the exporter killed, the API stopped), so
# they come last, in this order.


def resolved(sink: Sink, alertname: str) -> list[dict]:
    """Every "RESOLVED" Slack message or PagerDuty resolve event that names `alertname`."""
    slack = [
        b
        for b in messages(sink, SLACK, alertname)
        if any(a.get("title", "").startswith("[RESOLVED") for a in b.get("attachments", []))
    ]
    pages = [b for b in messages(sink, PAGERDUTY, alertname) if b["event_action"] == "resolve"]
    return slack + pages  # fmt: skip


def delivered(sink: Sink, path: str, alertname: str, **labels: str) -> list[dict]:
    """The messages at `path` about `alertname` whose text names each of `labels`' values."""
    return [b for b in messages(sink, path, alertname)
            if all(value in json.dumps(b) for value in labels.values())]  # fmt: skip


def test_a_receiver_that_fails_pages_through_the_other(stack):
    """Slack answers 500: Alertmanager's failed notifications page through PagerDuty
    (MLAlertNotificationsFailing), instead of every warning being lost without a word."""
    stack.sink.answers[SLACK] = [(500, {}, "internal_error")] * 10_000
    synthetic = {
        "labels": {"alertname": "MLLiveTestWarning", "severity": "warning",
                   "environment": ENVIRONMENT},
        "annotations": {"summary": "a warning Slack will refuse", "description": "-",
                        "runbook_url": "docs/runbooks.md#mltargetdown"},
    }  # fmt: skip
    try:
        stack.alertmanager.fire(synthetic)
        page = wait_until(
            lambda: messages(stack.sink, PAGERDUTY, "MLAlertNotificationsFailing"), 180,
            "the page of MLAlertNotificationsFailing", stack.logs,
        )  # fmt: skip
        assert page[0]["payload"]["severity"] == "critical"
        assert "slack" in json.dumps(page[0]).lower()
    finally:
        stack.sink.answers.pop(SLACK, None)
        ended = synthetic | {"endsAt": datetime.now(UTC).isoformat()}
        stack.alertmanager.fire(ended)


def test_the_exporter_dying_during_critical_drift_pages_and_resolves_nothing(stack):
    """The incident goes on while nobody can see it: MLExporterDown pages, MLFeatureDrift stays
    firing (held at its last known value, no "RESOLVED" to Slack or PagerDuty), and the
    exporter's own target-down and stale-report alerts are muted by the bigger outage."""
    from data.drift_injector import inject_drift
    from data.schema import load_schema
    from data.synthetic import generate_transactions
    from monitoring.window_checks import check_window

    schema = load_schema(FRAUD_SCHEMA_PATH)
    frame = generate_transactions(3000, seed=33)
    drifted = inject_drift(frame, "mean_shift", schema=schema, feature="amount", intensity=0.5,
                           seed=4)  # fmt: skip
    start = datetime.now(UTC)
    send_traffic(stack.settings, stack.api.url, drifted, labels=False)
    end = datetime.now(UTC)
    result = check_window(settings=stack.settings, end=end,
                          hours=((end - start).total_seconds() + 1) / 3600)  # fmt: skip
    assert result.drift.to_dict()["counts_by_severity"]["critical"] >= 1, result.drift.summary
    wait_until(lambda: delivered(stack.sink, PAGERDUTY, "MLFeatureDrift"), WAIT_SECONDS,
               "the page of critical MLFeatureDrift", stack.logs)  # fmt: skip
    slack_before = len(stack.sink.at(SLACK))

    stack.exporter.stop()
    wait_until(lambda: delivered(stack.sink, PAGERDUTY, "MLExporterDown"), 120,
               "the page of MLExporterDown", stack.logs)  # fmt: skip
    time.sleep(15)  # fifteen evaluations and notification rounds of the fast Prometheus
    assert firing(stack.fast, "MLFeatureDrift"), "the drift alert resolved with the exporter"
    assert resolved(stack.sink, "MLFeatureDrift") == []
    after = [json.dumps(r.body) for r in stack.sink.at(SLACK)[slack_before:]]
    for muted in ("MLDriftReportStale", "MLQualityReportStale", "MLExporterSourceDown"):
        assert not any(muted in text for text in after), muted
    assert not any("MLTargetDown" in t and "of job exporter" in t for t in after), after


def test_every_api_replica_down_pages_once_and_mutes_what_it_explains(stack):
    """With no replica answering, MLApiUnavailable pages; the API's target-down, latency and
    no-predictions alerts are the same news and reach nobody."""
    instance = stack.api.url.removeprefix("http://")
    write_targets(stack.api_targets, [instance])  # the earlier replica is gone for good
    slack_before = len(stack.sink.at(SLACK))
    stack.api.stop()
    page = wait_until(lambda: delivered(stack.sink, PAGERDUTY, "MLApiUnavailable"), 120,
                      "the page of MLApiUnavailable", stack.logs)  # fmt: skip
    assert page[0]["payload"]["summary"].startswith(
        f"[FIRING:1] MLApiUnavailable (critical, {ENVIRONMENT})"
    )
    wait_until(  # it fires in Prometheus, and is muted on the way to people
        lambda: [s for s in firing(stack.fast, "MLTargetDown")
                 if s["metric"].get("instance") == instance],
        WAIT_SECONDS, "MLTargetDown of the API in Prometheus", stack.logs,
    )  # fmt: skip
    time.sleep(10)
    after = [json.dumps(r.body) for r in stack.sink.at(SLACK)[slack_before:]]
    assert not any("MLTargetDown" in t and f"{instance} of job api" in t for t in after), after
    for muted in ("MLApiLatencyHigh", "MLNoPredictions", "MLNoProductionModel"):
        assert not any(muted in text for text in after), muted
    assert resolved(stack.sink, "MLApiUnavailable") == []
