"""What deleting a day of the prediction log costs, next to live logging.

    python -m benchmarks.bench_retention [--day-rows 1000000] [--rounds 3]   (make bench runs it)

The maintenance DAG deletes the rows older than PREDICTION_RETENTION_DAYS every night, while the
API keeps logging into the same table (`data.retention.delete_predictions_before`). A day is not
a partition: Postgres wants the partition key (`predicted_at`) in every unique key, and the
logger's exactly-once writes rest on `request_id` alone being the key. So the choice is between
batches of request ids (and which size) and one big `DELETE ... WHERE predicted_at < X`.

A fresh Postgres database (dropped at the end, also on failure) gets the project's tables and
two days of rows in the logger's own COPY format (`data.prediction_log.copy_rows`: uuid4 request
ids as the API makes them, the fraud schema's features as JSON, one day to delete, then
`--day-rows` newer ones), a label for every tenth prediction of both days and 1% more orphaned
labels in the old day. The day and its labels are kept in unlogged template tables to refill.

Each round measures every mode (batches of 5,000 / 50,000 / 200,000 request ids, and one
`DELETE` of the whole day in one transaction) the same way:

1. refill the day from the template, `VACUUM (ANALYZE)` (what autovacuum would have done) and
   `CHECKPOINT`, so every mode starts from the same table and the same WAL state;
2. live logging alone for `--alone-seconds`: `api.logger.PredictionLogger.write` in a loop,
   batches of 2,000 rows (the logger's default batch), each its own COPY and commit, as the
   logger's writer thread does when the queue is full. rows/s and the slowest batch;
3. the delete, in a process of its own (the Airflow worker is not the API), while the same
   logging runs; rows/s of both over the delete's own span, the longest transaction of the
   delete (how long it holds the row locks of its batch: a label upsert for one of those
   request ids waits that long), and the slowest logger batch;
4. `VACUUM prediction_logs, labels` timed: the other half of a delete's cost, which autovacuum
   pays later (this benchmark's server runs with autovacuum off, so it is run by hand);
5. the rows the logger wrote are deleted again (not timed), so every measurement sees the same
   table.

The logger runs flat out, so "logging during the delete" is what is left of the machine's
logging capacity (the API, its database and the delete share the cores), not a rate the API
needs. Medians over the rounds; compare the ratios, not absolute figures of different runs.

`--baseline OLD.py` measures the batches of another copy of `data/retention.py` too, each
alternating with the current one (a before/after of a change in the same run).

Postgres: BENCH_POSTGRES_ADMIN_URL (default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from api.logger import PredictionLogger
from data.db import get_engine, init_db
from data.prediction_log import COPY_CHUNK, COPY_INTO_LOGS, PredictionRecord, copy_rows
from data.schema import load_schema
from tools.testkit.databases import fresh_postgres_database
from tools.testkit.traffic import request_rows

ROOT = Path(__file__).resolve().parent.parent

ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
DAY0 = datetime(2026, 11, 1, tzinfo=UTC)  # the day to delete
CUT = DAY0 + timedelta(days=1)  # the cut-off: the newer day is [CUT, CUT + 1 day)
LIVE0 = CUT + timedelta(days=2)  # live logging writes "now", after both days
BATCH_SIZES = (5_000, 50_000, 200_000)
SINGLE = "single DELETE"
LOGGER_BATCH = 2_000  # PredictionLogger's default batch_size
POOL_ROWS = 20_000  # distinct feature rows, cycled
PIECE = 100_000  # rows per COPY while loading


def feature_pool() -> list[dict]:
    return request_rows(load_schema(ROOT / "schemas/fraud.yaml"), POOL_ROWS, seed=11)


def records(pool: list[dict], start: datetime, span: timedelta, first: int, n: int, total: int):
    """`n` rows of a span of `total` rows spread evenly over `span`, in time order."""
    rng = np.random.default_rng(first)
    scores = rng.random(n)
    step = span / total
    return [
        PredictionRecord(
            request_id=uuid.uuid4().hex,
            predicted_at=start + step * (first + i),
            model_name="fraud-detector",
            model_version="3",
            features=pool[(first + i) % POOL_ROWS],
            predicted_class=int(scores[i] > 0.9),
            score=float(scores[i]),
            latency_ms=0.2,
        )
        for i in range(n)
    ]


def load(url: str, pool: list[dict], day_rows: int) -> dict:
    """Two days of rows through the logger's COPY format, labels, the refill templates."""
    init_db(get_engine(url))
    started = time.perf_counter()
    connection = get_engine(url).raw_connection()
    try:
        with connection.cursor() as cursor:
            for start in (DAY0, CUT):
                for first in range(0, day_rows, PIECE):
                    batch = records(pool, start, timedelta(days=1), first,
                                    min(PIECE, day_rows - first), day_rows)  # fmt: skip
                    cursor.copy_expert(COPY_INTO_LOGS, io.BytesIO(copy_rows(batch)), COPY_CHUNK)
                    connection.commit()
            # A label for every tenth prediction, an hour after it; 1% orphans in the old day.
            cursor.execute(
                "INSERT INTO labels (request_id, label, labelled_at, received_at) "
                "SELECT request_id, predicted_class, predicted_at + interval '1 hour', "
                "predicted_at + interval '1 hour' FROM prediction_logs "
                "WHERE ('x' || substr(request_id, 1, 8))::bit(32)::int % 10 = 0"
            )
            cursor.execute(
                "INSERT INTO labels (request_id, label, labelled_at, received_at) "
                "SELECT md5(g::text), 0, %(t)s + g * %(step)s * interval '1 second', "
                "%(t)s + g * %(step)s * interval '1 second' FROM generate_series(1, %(k)s) g",
                {"t": DAY0, "step": 86_400 / max(day_rows // 100, 1), "k": day_rows // 100},
            )
            cursor.execute(
                "CREATE UNLOGGED TABLE day_template AS SELECT * FROM prediction_logs "
                "WHERE predicted_at < %(cut)s ORDER BY predicted_at",
                {"cut": CUT},
            )
            cursor.execute(
                "CREATE UNLOGGED TABLE labels_template AS SELECT l.* FROM labels l "
                "LEFT JOIN prediction_logs p USING (request_id) "
                "WHERE p.predicted_at < %(cut)s "
                "OR (p.request_id IS NULL AND l.received_at < %(cut)s)",
                {"cut": CUT},
            )
            connection.commit()
    finally:
        connection.close()
    return {"load_s": round(time.perf_counter() - started, 1)}


_autocommit: dict[str, Engine] = {}


def sql(url: str, *statements: str, params: dict | None = None) -> list:
    """Run statements outside a transaction (VACUUM, CHECKPOINT); the last one's rows."""
    if url not in _autocommit:
        _autocommit[url] = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with _autocommit[url].connect() as conn:
        rows: list = []
        for statement in statements:
            result = (
                conn.exec_driver_sql(statement, params)
                if params
                else conn.exec_driver_sql(statement)
            )
            rows = list(result) if result.returns_rows else []
        return rows


def counts(url: str) -> tuple[int, int, int]:
    return tuple(
        sql(
            url,
            "SELECT (SELECT count(*) FROM prediction_logs WHERE predicted_at < %(cut)s), "
            "(SELECT count(*) FROM prediction_logs WHERE predicted_at >= %(cut)s), "
            "(SELECT count(*) FROM labels)",
            params={"cut": CUT},
        )[0]
    )


def refill(url: str) -> None:
    sql(
        url,
        "INSERT INTO prediction_logs SELECT * FROM day_template",
        "INSERT INTO labels SELECT * FROM labels_template",
        "VACUUM (ANALYZE) prediction_logs, labels",
        "CHECKPOINT",
    )


class LiveLogging:
    """The logger's writer flat out in a thread: `PredictionLogger.write` of 2,000-row batches
    with fresh uuid4 request ids and the time of now; (monotonic end, rows, seconds) per batch."""

    def __init__(self, url: str, pool: list[dict], spool: Path) -> None:
        self.logger = PredictionLogger(spool, url=url, journal=False)
        self.pool = pool
        self.batches: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            now = datetime.now(UTC)
            first = self._offset
            self._offset += LOGGER_BATCH
            batch = [
                PredictionRecord(
                    uuid.uuid4().hex,
                    now,
                    "fraud-detector",
                    "3",
                    self.pool[(first + i) % POOL_ROWS],
                    0,
                    0.01,
                    0.2,
                )
                for i in range(LOGGER_BATCH)
            ]
            self.logger.write(batch)
            t1 = time.monotonic()
            self.batches.append((t1, LOGGER_BATCH, t1 - t0))

    def __enter__(self) -> LiveLogging:
        self.batches.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.logger._disconnect()

    def between(self, start: float, end: float) -> dict:
        """rows/s of the batches that finished in [start, end], and the slowest batch."""
        inside = [b for b in self.batches if start <= b[0] <= end]
        rows = sum(b[1] for b in inside)
        return {
            "rows_per_s": rows / (end - start) if end > start else 0.0,
            "worst_batch_ms": max((b[2] for b in inside), default=0.0) * 1000,
        }


def run_delete(url: str, mode: str) -> dict:
    """In a process of its own: wait for "go" on stdin, delete the day, print the figures."""
    engine = get_engine(url)
    init_db(engine)
    transactions: list[float] = []
    opened: dict[int, float] = {}
    event.listen(engine, "begin", lambda conn: opened.__setitem__(id(conn), time.monotonic()))
    event.listen(
        engine,
        "commit",
        lambda conn: transactions.append(time.monotonic() - opened.pop(id(conn), time.monotonic())),
    )
    with engine.connect() as conn:  # a pooled connection ready, as the DAG task's would be
        conn.execute(text("SELECT 1"))
    transactions.clear()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    start = time.monotonic()
    if mode == SINGLE:
        with engine.begin() as conn:
            old = "SELECT request_id FROM prediction_logs WHERE predicted_at < :cut"
            labels = conn.execute(
                text(f"DELETE FROM labels WHERE request_id IN ({old})"), {"cut": CUT}
            ).rowcount
            rows = conn.execute(
                text("DELETE FROM prediction_logs WHERE predicted_at < :cut"), {"cut": CUT}
            ).rowcount
            labels += conn.execute(
                text(
                    "DELETE FROM labels l WHERE received_at < :cut AND NOT EXISTS "
                    "(SELECT 1 FROM prediction_logs p WHERE p.request_id = l.request_id)"
                ),
                {"cut": CUT},
            ).rowcount
        result = {"deleted_predictions": rows, "deleted_labels": labels, "batches": 1}
    else:
        from data.retention import delete_predictions_before

        size, _, other = mode.partition("@")
        if other:  # --baseline: another version of data/retention.py, before/after a change
            spec = importlib.util.spec_from_file_location("retention_baseline", other)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            delete_predictions_before = module.delete_predictions_before
        result = delete_predictions_before(CUT, batch_size=int(size), url=url)
    end = time.monotonic()
    # delete_predictions_before's transactions: creating the tables, the batches, the empty
    # last look, the orphaned labels.
    batches = transactions[1 : 1 + result["batches"]] if mode != SINGLE else transactions
    result |= {
        "start": start,
        "end": end,
        "longest_tx_s": max(batches, default=0.0),
        "first_batches_s": statistics.median(batches[:3]),
        "last_batches_s": statistics.median(batches[-3:]),
        "orphans_tx_s": transactions[-1] if mode != SINGLE else 0.0,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return result


def measure(url: str, live: LiveLogging, mode: str, alone_s: float) -> dict:
    refill(url)
    with live:
        time.sleep(alone_s)
        end = time.monotonic()
    alone = live.between(end - alone_s + 0.5, end)  # the first half second warms the connection
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_retention", "--child-delete", mode, "--url", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stdin is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError("the delete process did not start")
    with live:
        time.sleep(0.5)
        child.stdin.write("go\n")
        child.stdin.flush()
        out = child.stdout.readline()
        if child.wait() != 0 or not out:
            raise RuntimeError(f"the delete process failed ({child.returncode})")
    deleted = json.loads(out)
    during = live.between(deleted["start"], deleted["end"])
    seconds = deleted["end"] - deleted["start"]
    t0 = time.perf_counter()
    sql(url, "VACUUM prediction_logs, labels")
    vacuum_s = time.perf_counter() - t0
    old, _, _ = counts(url)
    if old:
        raise RuntimeError(f"{mode}: {old} old rows left")
    sql(url, "DELETE FROM prediction_logs WHERE predicted_at >= %(t)s", params={"t": LIVE0})
    return {
        "mode": mode,
        "deleted": deleted["deleted_predictions"],
        "deleted_labels": deleted["deleted_labels"],
        "batches": deleted["batches"],
        "delete_s": seconds,
        "delete_rows_per_s": deleted["deleted_predictions"] / seconds,
        "longest_tx_s": deleted["longest_tx_s"],
        "first_batches_s": deleted["first_batches_s"],
        "last_batches_s": deleted["last_batches_s"],
        "orphans_tx_s": deleted["orphans_tx_s"],
        "logger_alone": alone["rows_per_s"],
        "logger_during": during["rows_per_s"],
        "worst_batch_ms_alone": alone["worst_batch_ms"],
        "worst_batch_ms_during": during["worst_batch_ms"],
        "vacuum_s": vacuum_s,
    }


def label(mode: str) -> str:
    if mode == SINGLE:
        return mode
    size, _, other = mode.partition("@")
    return f"batches of {int(size):,}" + (f" ({Path(other).name})" if other else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--day-rows", type=int, default=1_000_000, help="rows of each day")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each mode")
    parser.add_argument("--alone-seconds", type=float, default=5.0, help="logging alone")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--no-single", action="store_true", help="skip the one big DELETE")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another data/retention.py: its batches are measured too, alternating (before/after)",
    )
    parser.add_argument("--child-delete", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_delete:
        run_delete(args.url, args.child_delete)
        return 0

    modes = [str(size) for size in args.batch_sizes]
    if args.baseline:
        modes = [m for size in modes for m in (f"{size}@{args.baseline.resolve()}", size)]
    modes += [] if args.no_single else [SINGLE]
    work = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    scratch = contextlib.ExitStack()
    url = scratch.enter_context(fresh_postgres_database("bench_retention", ADMIN_URL))
    runs: list[dict] = []
    try:
        pool = feature_pool()
        print(f"loading 2 x {args.day_rows:,} rows ...", file=sys.stderr, flush=True)
        loaded = load(url, pool, args.day_rows)
        sql(url, "DELETE FROM prediction_logs WHERE predicted_at < %(cut)s", params={"cut": CUT})
        sql(url, "DELETE FROM labels WHERE request_id IN (SELECT request_id FROM labels_template)")
        size = sql(url, "SELECT pg_size_pretty(pg_total_relation_size('day_template'))")[0][0]
        print(f"loaded in {loaded['load_s']} s; a day is {size} with its index", file=sys.stderr)
        live = LiveLogging(url, pool, work / "spool")
        for round_ in range(args.rounds):
            for mode in modes:
                run = measure(url, live, mode, args.alone_seconds)
                runs.append(run)
                print(
                    f"round {round_ + 1}, {label(mode)}: delete {run['delete_rows_per_s']:,.0f} "
                    f"rows/s in {run['delete_s']:.1f} s, longest tx {run['longest_tx_s']:.3f} s "
                    f"(first {run['first_batches_s']:.3f}, last {run['last_batches_s']:.3f}, "
                    f"orphans {run['orphans_tx_s']:.3f}); "
                    f"logging {run['logger_alone']:,.0f} -> {run['logger_during']:,.0f} rows/s, "
                    f"worst batch {run['worst_batch_ms_alone']:.0f} -> "
                    f"{run['worst_batch_ms_during']:.0f} ms; VACUUM {run['vacuum_s']:.1f} s",
                    flush=True,
                )
        _, newer, _ = counts(url)
        if newer != args.day_rows:
            raise RuntimeError(f"the newer day has {newer} rows, expected {args.day_rows}")
    finally:
        for engine in _autocommit.values():
            engine.dispose()
        scratch.close()
        shutil.rmtree(work, ignore_errors=True)

    def median(mode: str, key: str) -> float:
        return statistics.median(run[key] for run in runs if run["mode"] == mode)

    summary = {
        mode: {
            key: median(mode, key)
            for key in runs[0]
            if key not in ("mode", "deleted", "deleted_labels", "batches")
        }
        for mode in modes
    }
    print(json.dumps({"day_rows": args.day_rows, "rounds": args.rounds, "machine":
                      f"{os.cpu_count()} cpus, {platform.processor() or platform.machine()}",
                      "summary": summary}, indent=2))  # fmt: skip
    print(
        f"\n{args.day_rows:,} rows to delete next to {args.day_rows:,} newer ones, "
        f"medians of {args.rounds}\n\n"
        "| delete | rows/s | a day takes | longest transaction (first / last batches) | "
        "logging alone | logging during the delete | during / alone | "
        "slowest logger batch, alone / during | VACUUM afterwards |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    for mode in modes:
        s = summary[mode]
        ratio = statistics.median(
            run["logger_during"] / run["logger_alone"] for run in runs if run["mode"] == mode
        )
        print(
            f"| {label(mode)} | {s['delete_rows_per_s']:,.0f} | {s['delete_s']:.1f} s | "
            f"{s['longest_tx_s'] * 1000:,.0f} ms ({s['first_batches_s'] * 1000:,.0f} / "
            f"{s['last_batches_s'] * 1000:,.0f} ms) | {s['logger_alone']:,.0f} rows/s | "
            f"{s['logger_during']:,.0f} rows/s | {ratio:.2f} | "
            f"{s['worst_batch_ms_alone']:.0f} / {s['worst_batch_ms_during']:.0f} ms | "
            f"{s['vacuum_s']:.1f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
