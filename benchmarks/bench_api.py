"""Benchmarks of the serving hot path: scoring, /predict under load, batches, the logger.

    python -m benchmarks.bench_api [--seconds 15]      (make bench runs it)

Trains a model into a temporary MLflow store, logs to a temporary Postgres database on
127.0.0.1:5432, and reports:
  1. in-process scoring of one row (validation + features + model), p50 / p99;
  2. /predict with wrk, 2 workers and 32 connections, monitoring on and off, and their ratio;
  3. /predict/batch of 1,000 rows over HTTP, 1 and 8 batches in flight, rows/s;
  4. the prediction logger into Postgres, rows/s.
Figures go to stdout as a table; compare them as ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter

from api.logger import PredictionLogger, PredictionRecord
from api.payloads import build_models
from api.routes.predict import _plain
from data.db import get_engine, init_db
from data.schema import load_schema
from tools.testkit.api_server import ServerProcess
from tools.testkit.databases import fresh_postgres_database, store_settings
from tools.testkit.traffic import request_rows
from training.registry import Registry
from training.scoring import make_scorer
from training.train import train

ROOT = Path(__file__).resolve().parent.parent

ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
TARGET_RATE = 2_500  # requests/s the issue asks of 2 workers
REPEATS = 3  # wrk runs per configuration; the median one is reported
# Batches in flight: one client waiting for each answer, and eight, which the kernel spreads
# over both workers' sockets (with two, both land on one worker half the time).
BATCH_CLIENTS = (1, 8)
JSON_HEADERS = {"content-type": "application/json"}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local body = io.open("{body}"):read("*a")
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
local function next_id()
  counter = counter + 1
  return '"w' .. tid .. "-" .. counter .. "-" .. os.time() .. '"'
end
{pacing}
request = function()
  -- Every instance of the body gets its own request id, as real clients send.
  return wrk.format(nil, "{path}", nil, string.gsub(body, '"REQUEST_ID"', next_id))
end
"""


def scoring_one_row(schema, settings, rows) -> dict:
    registry = Registry.from_settings(settings)
    pipeline = registry.load_model("1")
    scorer = make_scorer(pipeline, schema, registry.holdout("1").head(500))
    request_adapter = TypeAdapter(build_models(schema)["PredictRequest"])
    booleans = [f.name for f in schema.boolean]
    payloads = [{"request_id": f"r{i}", "features": r} for i, r in enumerate(rows)]
    timings = []
    for i in range(20_000):
        payload = payloads[i % len(payloads)]
        start = time.perf_counter()
        request = request_adapter.validate_python(payload)
        scorer.score_one(_plain(request["features"], booleans))
        timings.append(time.perf_counter() - start)
    timings = np.array(timings[2_000:]) * 1e3
    pipeline_ms = []
    frame = registry.holdout("1")[schema.feature_names]
    for i in range(300):
        start = time.perf_counter()
        pipeline.predict_proba(frame.iloc[[i]])
        pipeline_ms.append((time.perf_counter() - start) * 1e3)
    return {
        "scorer": scorer.kind,
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
        "sklearn_pipeline_p50_ms": statistics.median(pipeline_ms),
    }


def wrk(
    url: str,
    body_path: Path,
    seconds: int,
    connections: int = 32,
    path: str = "/predict",
    pause_ms: float | None = None,
) -> dict:
    """One wrk run; with `pause_ms`, each connection waits that long between its requests, to
    measure latency below saturation instead of at it."""
    pacing = f"function delay() return {pause_ms:.2f} end" if pause_ms is not None else ""
    script = body_path.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.format(body=body_path, path=path, pacing=pacing))
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def latency(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        # A figure made of error answers is no figure at all.
        raise RuntimeError(f"{path}: {errors.group(1)} answers were not 2xx:\n{output}")
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def batch_rows_per_s(url: str, body_path: Path, seconds: int, connections: int) -> dict:
    """/predict/batch of 1,000 rows from wrk with `connections` batches in flight."""
    run = wrk(url, body_path, seconds, connections=connections, path="/predict/batch")
    return run | {"rows_per_s": run["requests_per_s"] * 1000}


def logger_rows_per_s(url: str, spool: Path, n: int = 200_000) -> float:
    init_db(get_engine(url))
    records = [
        PredictionRecord(
            request_id=f"bench-{i}",
            predicted_at=datetime.now(UTC),
            model_name="fraud-detector",
            model_version="1",
            features={"amount": 12.5, "merchant_category": "travel", "hour_of_day": 3.0},
            predicted_class=0,
            score=0.01,
            latency_ms=0.1,
        )
        for i in range(n)
    ]
    logger = PredictionLogger(spool, url=url, max_queue=n + 1)
    logger.submit_many(records)
    start = time.perf_counter()
    logger.start()
    assert logger.flush(timeout=600)
    elapsed = time.perf_counter() - start
    logger.close()
    return n / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    scratch = contextlib.ExitStack()
    db_url = scratch.enter_context(fresh_postgres_database("bench_api", ADMIN_URL))
    results: dict[str, object] = {}
    try:
        settings = store_settings(work / "store")
        (work / "store").mkdir()
        train(settings=settings, auto_promote=True)
        schema = load_schema(ROOT / "schemas/fraud.yaml")
        rows = request_rows(schema, 2_000, seed=77)
        results["scoring_one_row"] = scoring_one_row(schema, settings, rows)

        body_path = work / "body.json"
        body_path.write_text(json.dumps({"request_id": "REQUEST_ID", "features": rows[0]}))
        batch_path = work / "batch.json"
        instances = [{"request_id": "REQUEST_ID", "features": r} for r in rows[:1000]]
        batch_path.write_text(json.dumps({"instances": instances}))
        env = {
            "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
            "DATABASE_URL": db_url,
            "MODEL_POLL_SECONDS": "0",
            "PREDICTION_SPOOL_DIR": str(work / "spool"),
        }
        for monitoring in ("true", "false"):
            folder = work / f"server-{monitoring}"
            folder.mkdir()
            server = ServerProcess(folder, env | {"API_MONITORING": monitoring})
            try:
                server.wait_ready()
                wrk(server.url, body_path, 3)  # warm-up
                runs = [wrk(server.url, body_path, args.seconds) for _ in range(REPEATS)]
                # The run with the median throughput, so its latencies belong together.
                runs.sort(key=lambda run: run["requests_per_s"])
                results[f"predict_monitoring_{monitoring}"] = runs[len(runs) // 2] | {
                    "requests_per_s_runs": [run["requests_per_s"] for run in runs],
                    "p99_ms_runs": [run["p99_ms"] for run in runs],
                }
                if monitoring == "true":
                    # 32 connections offering TARGET_RATE: each waits between requests. Short
                    # trials measure what a request adds to its pause, so the pause can be set
                    # to offer the target rate.
                    cycle_ms = 32 * 1000 / TARGET_RATE
                    pause = cycle_ms
                    for _ in range(3):  # the overhead grows with the rate: settle it
                        trial = wrk(server.url, body_path, 3, pause_ms=pause)
                        overhead_ms = 32 * 1000 / trial["requests_per_s"] - pause
                        pause = max(cycle_ms - overhead_ms, 0.0)
                    paced = [
                        wrk(server.url, body_path, args.seconds, pause_ms=pause)
                        for _ in range(REPEATS)
                    ]
                    paced.sort(key=lambda run: run["p99_ms"])
                    results["predict_at_target_rate"] = paced[len(paced) // 2] | {
                        "p99_ms_runs": [run["p99_ms"] for run in paced]
                    }
                for clients in BATCH_CLIENTS:
                    runs = [
                        batch_rows_per_s(server.url, batch_path, args.seconds, clients)
                        for _ in range(REPEATS)
                    ]
                    runs.sort(key=lambda run: run["rows_per_s"])
                    results[f"batch_1000_{clients}_clients_monitoring_{monitoring}"] = runs[
                        len(runs) // 2
                    ] | {"rows_per_s_runs": [run["rows_per_s"] for run in runs]}
            finally:
                server.stop()
        on, off = results["predict_monitoring_true"], results["predict_monitoring_false"]
        results["monitoring_cost_ratio"] = off["requests_per_s"] / on["requests_per_s"]
        results["logger_rows_per_s"] = logger_rows_per_s(db_url, work / "logger-spool")
    finally:
        scratch.close()
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps(results, indent=2))

    paced = results["predict_at_target_rate"]

    def batch(clients: int, monitoring: str) -> str:
        key = f"batch_1000_{clients}_clients_monitoring_{monitoring}"
        return f"{results[key]['rows_per_s']:,.0f}"

    score = results["scoring_one_row"]
    on, off = results["predict_monitoring_true"], results["predict_monitoring_false"]
    print(
        "\n| benchmark | result | target |\n|---|---|---|\n"
        f"| one row in-process (validation + features + model), p50 | {score['p50_ms']:.3f} ms "
        f"(sklearn pipeline: {score['sklearn_pipeline_p50_ms']:.2f} ms) | < 0.3 ms |\n"
        f"| /predict, 2 workers, 32 connections | {on['requests_per_s']:,.0f} req/s, "
        f"p99 {on['p99_ms']:.1f} ms | ≥ 2,500 req/s, p99 < 20 ms |\n"
        f"| /predict at {paced['requests_per_s']:,.0f} req/s offered, 32 connections | "
        f"p50 {paced['p50_ms']:.1f} ms, p99 {paced['p99_ms']:.1f} ms | p99 < 20 ms |\n"
        f"| /predict with monitoring off | {off['requests_per_s']:,.0f} req/s, "
        f"p99 {off['p99_ms']:.1f} ms | (ratio off/on {results['monitoring_cost_ratio']:.2f}) |\n"
        f"| /predict/batch of 1,000 rows, 1 batch in flight | "
        f"{batch(1, 'true')} rows/s (monitoring off: {batch(1, 'false')}) | |\n"
        f"| /predict/batch of 1,000 rows, 8 batches in flight | "
        f"{batch(8, 'true')} rows/s (monitoring off: {batch(8, 'false')}) | ≥ 50,000 rows/s |\n"
        f"| prediction logger into Postgres | {results['logger_rows_per_s']:,.0f} rows/s | "
        f"≥ 20,000 rows/s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
