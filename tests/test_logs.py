"""The one logging setup (data/logs.py) in real processes: the API as production runs it writing
JSON lines that follow a request from its handler to the writer thread's batch, the monitoring
pass's lines carrying their window, plain text in a terminal, and commands that stay quiet
there."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from datetime import datetime

import httpx
import pytest
from sqlalchemy import select as sql_select

from data.db import get_engine, prediction_logs
from data.settings import PROJECT_ROOT
from tools.testkit.api_server import ServerProcess
from tools.testkit.traffic import request_rows

REQUEST_ID = "follow-me-0001"
# The window of `python -m monitoring.window_checks --end WINDOW_END --hours 6`, in every line.
WINDOW_START, WINDOW_END = "2026-11-23T06:00:00Z", "2026-11-23T12:00:00Z"
CHECK_WINDOW = ["-m", "monitoring.window_checks", "--end", WINDOW_END, "--hours", "6"]
# `time LEVEL process[pid] logger: message`, the text format's line.
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"[\w-]+\[\d+\] [\w.]+: "
)


def environment(default_training, tmp_path, **values: str) -> dict[str, str]:
    """The test's settings (conftest's), the session's model store, and `values`."""
    store, _ = default_training
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "MLFLOW_TRACKING_URI": store.MLFLOW_TRACKING_URI,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'monitoring.db'}",
        **values,
    }


def json_lines(text: str) -> list[dict]:
    """Every line parsed as JSON: one that is not fails the test."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def in_terminal(args: list[str], env: dict[str, str], timeout: float = 180) -> tuple[int, str]:
    """The exit status of `python ARGS` and what it shows on a terminal: run with a
    pseudo-terminal as its stdin, stdout and stderr, as a person runs it."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        cwd=PROJECT_ROOT,
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 0.5)[0]:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        status = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        process.kill()
        os.close(primary)
    return status, output.decode().replace("\r\n", "\n")


@pytest.mark.postgres
def test_a_request_is_followed_from_its_handler_to_the_writers_batch_in_json_lines(
    default_training, postgres_url, tmp_path, fraud_schema
):
    """`python -m api.serve` with LOG_FORMAT=json: every line of the supervisor, the workers
    and uvicorn is a JSON object, and one /predict is found by its request id in the handler's
    line, uvicorn's access line and the writer thread's line for the batch it went in."""
    store, training = default_training
    env = {
        "MLFLOW_TRACKING_URI": store.MLFLOW_TRACKING_URI,
        "DATABASE_URL": postgres_url,
        "MODEL_POLL_SECONDS": "0",
        "PREDICTION_SPOOL_DIR": str(tmp_path / "spool"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",  # the per-request lines
    }
    server = ServerProcess(tmp_path, env)
    try:
        server.wait_ready()
        body = {"request_id": REQUEST_ID, "features": request_rows(fraud_schema, 1)[0]}
        assert httpx.post(f"{server.url}/predict", json=body, timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        query = sql_select(prediction_logs.c.request_id)
        while True:
            with get_engine(postgres_url).connect() as conn:
                if conn.execute(query).scalars().all() == [REQUEST_ID]:
                    break
            assert time.monotonic() < deadline, "the prediction never reached the log"
            time.sleep(0.2)
    finally:
        server.stop()

    lines = json_lines(server.log_path.read_text())
    for line in lines:
        assert {"timestamp", "level", "logger", "process", "pid", "message"} <= line.keys()
        assert line["timestamp"].endswith("Z")
        datetime.fromisoformat(line["timestamp"])
    assert {line["process"] for line in lines} == {"api", "api-worker"}
    assert any(line["logger"] == "uvicorn.error" for line in lines)  # uvicorn's own, as JSON

    about = [line for line in lines if line.get("request_id") == REQUEST_ID]
    (handler,) = [line for line in about if line["logger"] == "api.routes.predict"]
    assert handler["level"] == "DEBUG" and handler["model_version"] == training.version
    (access,) = [line for line in about if line["logger"] == "uvicorn.access"]
    assert "POST /predict" in access["message"] and access["pid"] == handler["pid"]
    (written,) = [line for line in about if line["logger"] == "api.logger"]
    assert written["message"] == "wrote 1 rows" and written["pid"] == handler["pid"]
    assert (written["last_request_id"], written["request_count"]) == (REQUEST_ID, 1)


def test_the_monitoring_pass_writes_json_lines_carrying_its_window(default_training, tmp_path):
    _, training = default_training
    env = environment(default_training, tmp_path, LOG_FORMAT="json")
    done = subprocess.run(
        [sys.executable, *CHECK_WINDOW],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "window 2026-11-23 06:00 to 2026-11-23 12:00 UTC" in done.stdout  # its output
    lines = json_lines(done.stderr)
    (checked,) = [line for line in lines if line["logger"] == "monitoring.window_checks"]
    assert checked["process"] == "window-checks" and checked["level"] == "INFO"
    assert checked["message"].startswith("checked 0 predictions")
    assert (checked["window_start"], checked["window_end"]) == (WINDOW_START, WINDOW_END)
    assert checked["model_version"] == training.version


def test_in_a_terminal_lines_are_plain_text_and_a_command_prints_only_its_output(
    default_training, tmp_path
):
    """The default (LOG_FORMAT=text, LOG_LEVEL=INFO): the pass shows its summary and no log
    line, as before; asked for DEBUG it shows text lines with their window, no JSON."""
    _, training = default_training
    status, quiet = in_terminal(CHECK_WINDOW, environment(default_training, tmp_path))
    assert status == 0, quiet
    assert "window 2026-11-23 06:00 to 2026-11-23 12:00 UTC" in quiet
    assert not [line for line in quiet.splitlines() if TEXT_LINE.match(line)], quiet

    env = environment(default_training, tmp_path, LOG_LEVEL="DEBUG")
    status, verbose = in_terminal(CHECK_WINDOW, env)
    assert status == 0, verbose
    assert not [line for line in verbose.splitlines() if line.startswith("{")], verbose
    checked = [line for line in verbose.splitlines() if "monitoring.window_checks: checked" in line]
    assert len(checked) == 1 and TEXT_LINE.match(checked[0]), verbose
    assert " INFO window-checks[" in checked[0]
    assert checked[0].endswith(
        f"[version={training.version} window={WINDOW_START}/{WINDOW_END}]"
    ), checked[0]


def test_commands_keep_to_their_output_and_warnings_in_a_terminal(default_training, tmp_path):
    """`register_model history` shows the history and nothing else. The exporter's `--once`
    with its database down shows the scrape and the warning, in the text format, but not the
    INFO line it writes as a server; in JSON every line it logs goes to the collector."""
    _, training = default_training
    history = ["-m", "training.register_model", "history"]
    status, shown = in_terminal(history, environment(default_training, tmp_path))
    assert status == 0, shown
    assert "@champion" in shown
    assert not [line for line in shown.splitlines() if TEXT_LINE.match(line)], shown
    assert "INFO" not in shown

    down = {"DATABASE_URL": "postgresql+psycopg2://nobody@127.0.0.1:1/nothing"}
    once = ["-m", "monitoring.prometheus_exporter", "--once"]
    status, shown = in_terminal(once, environment(default_training, tmp_path, **down))
    assert status == 1, shown  # a source is down
    logged = [line for line in shown.splitlines() if TEXT_LINE.match(line)]
    assert len(logged) == 1, shown
    assert " WARNING exporter[" in logged[0] and "cannot read the report tables" in logged[0]

    done = subprocess.run(
        [sys.executable, *once],
        env=environment(default_training, tmp_path, LOG_FORMAT="json", **down),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Its one line for the person who ran it, and its log lines, all JSON.
    printed = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert printed == ["error: could not read the database"], done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (warning,) = [line for line in lines if line["level"] == "WARNING"]
    assert warning["message"].startswith("cannot read the report tables")
    (champion,) = [line for line in lines if line["message"].startswith("exporting @champion")]
    assert champion["model_version"] == training.version and champion["process"] == "exporter"
