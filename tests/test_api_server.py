"""The API as production runs it: `python -m api.serve` with two workers, real Postgres.

Covers what only real processes show: metrics summed over workers, connections spread over
them, a dead worker replaced, the supervisor's start and stop, and a schemathesis fuzz run of the
OpenAPI schema finding no 500. What the prediction log survives (a Postgres outage, SIGTERM and
a killed worker under load) is tests/test_api_server_durability.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from prometheus_client import multiprocess
from schemathesis import GenerationMode

from data.settings import PROJECT_ROOT
from tools.testkit.api_server import (
    ServerProcess,
    metric_total,
    wait_until_logged,
)
from tools.testkit.traffic import LABELLER, TOKEN, request_rows


def predictions_per_worker(server: ServerProcess, expected_total: int) -> dict[str, float]:
    """`ml_predictions_total` of each worker, read from its own multiprocess metrics file."""
    # Workers write their counts from a background thread every 0.1 s.
    deadline = time.monotonic() + 5
    while True:
        per_worker = {}
        for path in server.metrics_dir.glob("counter_*.db"):
            merged = multiprocess.MultiProcessCollector.merge([str(path)], accumulate=False)
            per_worker[path.name] = sum(
                s.value for m in merged for s in m.samples if s.name == "ml_predictions_total"
            )
        if sum(per_worker.values()) == expected_total or time.monotonic() > deadline:
            return per_worker
        time.sleep(0.05)


def answers_over_connections(server: ServerProcess, rows: list[dict], clients: int) -> set[int]:
    """Each row predicted once on each of `clients` connections opened at once; the statuses."""
    connections = [HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(clients)]
    for connection in connections:  # all connected at once, as wrk or a connection pool does
        connection.connect()
    answers = set()
    for i, row in enumerate(rows):
        for n, connection in enumerate(connections):
            body = json.dumps({"request_id": f"c{n}-{i}-{time.time_ns()}", "features": row})
            connection.request("POST", "/predict", body, {"content-type": "application/json"})
            with connection.getresponse() as response:
                response.read()
                answers.add(response.status)
    for connection in connections:
        connection.close()
    return answers


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_count_every_prediction_of_every_worker(
    server_env, postgres_url, tmp_path, fraud_schema, workers
):
    """The real launcher with one worker (the demo's) and with two. With one, `/metrics` used
    to answer an empty body: the app ran in the launcher's process, whose prometheus_client
    had chosen in-memory values before the multiprocess folder was set."""
    server = ServerProcess(tmp_path, server_env | {"DATABASE_URL": postgres_url}, workers)
    try:
        server.wait_ready()
        rows = request_rows(fraud_schema, 20)

        def predict(i: int) -> int:
            # A new connection per request, so the kernel spreads them over both workers.
            body = {"request_id": f"m{i}", "features": rows[i % 20]}
            return httpx.post(f"{server.url}/predict", json=body, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(predict, range(400))) == {200}

        per_worker = predictions_per_worker(server, expected_total=400)
        assert len([v for v in per_worker.values() if v > 0]) == workers, per_worker
        for _ in range(5):  # whichever worker answers the scrape, it reports all of them
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert metric_total(text, "ml_predictions_total") == 400
        assert metric_total(text, "ml_model_loaded") == 1
        summary = httpx.get(f"{server.url}/metrics/summary", timeout=10).json()
        assert summary["predictions"]["total"] == 400
        assert summary["model"]["loaded_in_all_workers"] and summary["model"]["serving"]
    finally:
        server.stop()
    assert wait_until_logged(postgres_url, {f"m{i}" for i in range(400)}) == Counter(
        {f"m{i}": 1 for i in range(400)}
    )


def test_clients_that_keep_their_connection_are_spread_over_both_workers(
    server_env, postgres_url, tmp_path, fraud_schema
):
    """Sixteen clients connect at once and reuse their connection, as a batch job or a load
    balancer's pool does. With one socket shared by the workers, the first worker to wake
    accepted all of them and the other sat idle; each worker's own socket lets the kernel
    spread them."""
    server = ServerProcess(tmp_path, server_env | {"DATABASE_URL": postgres_url})
    clients = 16
    try:
        server.wait_ready()
        rows = request_rows(fraud_schema, 5)
        assert answers_over_connections(server, rows, clients) == {200}
        per_worker = predictions_per_worker(server, expected_total=clients * len(rows))
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
    finally:
        server.stop()


def test_a_worker_that_dies_is_replaced(server_env, postgres_url, tmp_path, fraud_schema):
    server = ServerProcess(tmp_path, server_env | {"DATABASE_URL": postgres_url})
    try:
        server.wait_ready()
        dead, alive = server.worker_pids()
        os.kill(dead, signal.SIGKILL)
        time.sleep(1)
        server.wait_ready()  # both workers listen again
        (replacement,) = set(server.worker_pids()) - {alive}
        assert replacement != dead
        # The replacement serves its share of the traffic.
        assert answers_over_connections(server, request_rows(fraud_schema, 5), 16) == {200}
        assert predictions_per_worker(server, expected_total=80)[f"counter_{replacement}.db"] > 0
    finally:
        assert server.sigterm() == 0


def test_a_stop_sent_to_the_whole_process_group_is_a_clean_stop(server_env, postgres_url, tmp_path):
    """SIGTERM to every process of the server at once, as systemd (KillMode=control-group),
    honcho and `kill -- -PGID` send it: the workers drain and the server exits 0. The fork
    server the workers come from used to die of it first, taking their exit statuses along, and
    the supervisor read 255 for each worker and exited 1."""
    server = ServerProcess(tmp_path, server_env | {"DATABASE_URL": postgres_url})
    try:
        server.wait_ready()
        workers = server.worker_pids()
        assert len(workers) == 2
        os.killpg(server.process.pid, signal.SIGTERM)
        assert server.process.wait(60) == 0, server.log_path.read_text()[-3000:]
        log = server.log_path.read_text()
        assert "did not stop in time" not in log and "exited with" not in log, log[-3000:]
        for pid in workers:
            assert f"Finished server process [{pid}]" in log
    finally:
        server.stop()


def test_an_app_that_cannot_start_stops_the_server(server_env, postgres_url, tmp_path):
    """A worker that fails before its app starts would fail again on every restart: the server
    exits with status 3 instead of restarting workers forever."""
    env = server_env | {"DATABASE_URL": postgres_url, "FEATURE_SCHEMA": "schemas/missing.yaml"}
    server = ServerProcess(tmp_path, env)
    try:
        assert server.process.wait(timeout=60) == 3
    finally:
        server.process.kill()
    log = server.log_path.read_text()
    assert "missing.yaml" in log and "before the app started" in log


@pytest.mark.parametrize("attempt", [1, 2])
def test_workers_starting_on_fresh_stores_do_not_race_their_migrations(tmp_path, attempt):
    """Two workers on a brand-new MLflow database and monitoring database: each used to migrate
    them on first use, at the same moment ("table ... already exists"), and the loser took the
    server down with status 3. Now the supervisor prepares both once, before any worker."""
    from tools.testkit.api_server import listening_sockets

    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'fresh-mlflow.db'}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh-monitoring.db'}",
        "PREDICTION_SPOOL_DIR": str(tmp_path / "spool"),
        "MODEL_POLL_SECONDS": "1",
    }
    server = ServerProcess(tmp_path, env)
    try:
        deadline = time.monotonic() + 90
        while listening_sockets(server.port) < 2 and time.monotonic() < deadline:
            assert server.process.poll() is None, server.log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert listening_sockets(server.port) == 2, server.log_path.read_text()[-3000:]
        time.sleep(2)  # a few model polls on the empty registry
        assert server.process.poll() is None
        answer = httpx.get(f"{server.url}/ready", timeout=5)
        assert answer.status_code == 503  # up, waiting for a champion: not dead
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert "already exists" not in log and "Traceback" not in log, log[-3000:]


def test_a_stop_signal_landing_inside_the_supervisors_wait_cannot_deadlock_it():
    """The handler runs in the main thread between two bytecodes, possibly while that thread
    holds a lock of its own wait loop. With a threading.Event, set() then blocked forever on the
    lock its own wait() held: a supervisor stuck for good on SIGTERM, its workers never told
    (seen once in a full run under load). Here every lock the supervisor owns is held when the
    signal lands, in a process of its own so that a deadlock is a timeout, not a hung suite."""
    script = (
        "import os, signal, threading\n"
        "from api.serve import Supervisor\n"
        "sup = Supervisor('127.0.0.1', 0, 1)\n"
        "sup.install_signal_handlers()\n"
        "locks = []\n"
        "for value in vars(sup).values():\n"
        "    cond = getattr(value, '_cond', None)\n"
        "    lock = cond if cond is not None else value\n"
        "    if hasattr(lock, 'acquire') and hasattr(lock, 'release'):\n"
        "        locks.append(lock)\n"
        "for lock in locks:\n"
        "    lock.acquire()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "for lock in locks:\n"
        "    lock.release()\n"
        "print('stop requested:', sup.stopping is True or sup.stopping)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
            timeout=20, env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the supervisor deadlocked in its own signal handler")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stop requested: True"


def test_a_port_in_use_is_refused_in_one_line(server_env, postgres_url, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "api.serve", "--workers", "2", "--port", str(port),
             "--host", "127.0.0.1"],
            env=os.environ | server_env | {"DATABASE_URL": postgres_url,
                                           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")},
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzing_the_openapi_schema_finds_no_500(server_env, postgres_url, tmp_path, mode):
    """Every operation, with generated valid (positive) and invalid (negative) requests."""
    server = ServerProcess(tmp_path, server_env | {"DATABASE_URL": postgres_url})
    try:
        server.wait_ready()
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        admin = {"Authorization": f"Bearer {TOKEN}"}
        tried = 0
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
            @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            def no_server_error(case) -> None:
                # The label routes with the label writer's token, so their bodies are reached.
                headers = LABELLER if case.path.startswith("/feedback") else admin
                answer = case.call(base_url=server.url, headers=headers, timeout=30)
                assert answer.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {answer.status_code}: {answer.text}"
                )

            try:
                no_server_error()
            except Unsatisfiable:
                # An operation without inputs (GET /health) has nothing to make invalid.
                assert mode == "negative", operation.label
                continue
            tried += 1
        # Every route was fuzzed; invalid inputs exist for the five that take any.
        assert tried >= (11 if mode == "positive" else 5)
    finally:
        server.stop()
