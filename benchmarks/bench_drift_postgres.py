"""Benchmark: the drift check over a window larger than memory, read from Postgres in chunks.

What the Airflow drift check does on a busy day, end to end: `read_predictions(...,
chunksize=N)` streams the window out of `prediction_logs` with `COPY (...) TO STDOUT` as CSV,
parsed block by block by Arrow's CSV reader (`data.prediction_log.copy_out`; the features come
out as the `json` column's text, one per row, and are parsed per chunk by Arrow's JSON reader in
`data.prediction_log.features_frame`, called by `data.prediction_log.frame_from_log_rows`, which
types the chunk), and `DriftAccumulator` counts each chunk against the reference profile, so memory
stays bounded by the profile and one chunk, whatever the window holds.

1. A fresh database (dropped at the end, also on failure or Ctrl-C) gets the project's tables
   (`init_db`) and N prediction-log rows of the fraud schema (default 10,000,000 over a 6-hour
   window), loaded with COPY in pieces of 500,000 rows, so the loader stays bounded too. Each
   piece is `generate_transactions` with its own seed; in the last quarter of the window the
   amounts move up by 0.1 std and 2% of the transactions move to the rarest merchant category
   (`data.drift_injector`), so the window is neither a copy of the reference nor drifted beyond
   doubt. Scores are the synthetic data's own fraud probabilities. Load time is reported apart.
2. The reference profile keeps every value of 200,000 other synthetic rows (KS is exact).
3. Each timed pass (median of 3) runs in a process of its own: the profile is built, then Linux's
   peak resident memory (VmHWM) is reset and the pass (read + update every chunk + report) timed,
   in chunks of 50,000 rows (as fast as larger chunks on the reference machine, for a fraction
   of their memory). Reported: time, rows/s, the peak, the part of it above what was resident
   before the pass, how much the resident memory grew from the first tenth of the chunks to the
   end (about zero when bounded; the exit status is 1 above 64 MB), and what the same window
   would take as one typed DataFrame (measured per row on a chunk).

    python -m benchmarks.bench_drift_postgres                      # 10,000,000 rows
    python -m benchmarks.bench_drift_postgres --rows 200000
    python -m benchmarks.bench_drift_postgres --chunksize 20000 100000   # compare chunk sizes
    python -m benchmarks.bench_drift_postgres --breakdown          # where the time goes

`--breakdown` splits the time of the last pass: `read_predictions` into typing the frames
(`frame_from_log_rows`, timed where it is called, and within it parsing the features JSON,
`features_frame`) and the rest (the COPY stream and Arrow's CSV parsing, which overlap in
threads of their own), and the drift counting; and adds, in the same
database, `read_predictions`' own query (`data.prediction_log.window_query`) run by the database
alone (a cursor, `MOVE FORWARD ALL`: every row computed, none sent) and by COPY alone (every row
written as CSV and sent, nothing parsed); and the same window read the way `read_predictions` did
before COPY, through a server-side cursor (psycopg2 tuples, `DataFrame.from_records`,
`frame_from_log_rows`), whose drift report is checked to be identical.

Postgres: BENCH_POSTGRES_ADMIN_URL (default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres),
a role that may create databases.

One file of about 650 lines on purpose: the load, the timed child process and the breakdown are
one measurement, read and rerun together when BENCHMARKS.md's figures are questioned.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
from sqlalchemy.engine import make_url

import data.prediction_log as prediction_log
from data.db import dispose_engines, get_engine, init_db
from data.drift_injector import inject_drift
from data.ingest import coerce_frame
from data.prediction_log import frame_from_log_rows, read_predictions, window_query
from data.schema import FeatureSchema, load_schema
from data.synthetic import fraud_probability, generate_transactions
from monitoring.drift_report import (
    DriftAccumulator,
    DriftThresholds,
    profile_from_frame,
)
from tools.testkit.databases import fresh_postgres_database

ROOT = Path(__file__).resolve().parent.parent

ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
SCHEMA_PATH = ROOT / "schemas" / "fraud.yaml"
WINDOW_START = datetime(2026, 3, 1, tzinfo=UTC)
WINDOW = timedelta(hours=6)  # DRIFT_WINDOW_HOURS
PIECE_ROWS = 500_000
SHIFTED_SHARE = 0.25  # the last quarter of the window is mildly shifted
SHIFTED_FEATURES = ("amount", "merchant_category")
REFERENCE_SEED = 1
CURRENT_SEED = 1_000  # piece k uses CURRENT_SEED + k
COPY_COLUMNS = (
    "request_id, predicted_at, model_name, model_version, features, predicted_class, score, "
    "latency_ms"
)
_TEXT = np.dtypes.StringDType()


# ---------------------------------------------------------------------------------------------
# memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


# ---------------------------------------------------------------------------------------------
# the database and the load


def _dsn(url: str) -> str:
    """A libpq connection string for a SQLAlchemy URL."""
    u = make_url(url)
    parts = {
        "host": u.host,
        "port": u.port,
        "dbname": u.database,
        "user": u.username,
        "password": u.password,
    }
    return " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)


def _numbers(values: np.ndarray) -> np.ndarray:
    """Shortest round-trip text of each float (numpy's repr), `null` for NaN (JSON)."""
    as_text = values.astype(_TEXT)
    missing = np.isnan(values)
    return np.where(missing, "null", as_text).astype(_TEXT) if missing.any() else as_text


def piece_text(
    schema: FeatureSchema, first_row: int, rows: int, total: int, span: timedelta = WINDOW
) -> str:
    """`rows` prediction-log rows as COPY text: one transaction block of its own seed, the
    `total` rows spread evenly over `span` from WINDOW_START (default: the 6-hour window)."""
    piece = first_row // PIECE_ROWS
    frame = generate_transactions(rows, seed=CURRENT_SEED + piece)
    # Rows from `cut` on are in the shifted last part of the window.
    cut = min(rows, max(0, round(total * (1 - SHIFTED_SHARE)) - first_row))
    if rows - cut >= 2:
        tail = frame.iloc[cut:].reset_index(drop=True)
        tail = inject_drift(tail, "mean_shift", schema=schema, feature=SHIFTED_FEATURES[0],
                            intensity=0.05, seed=piece)  # fmt: skip
        tail = inject_drift(tail, "category_frequency_shift", schema=schema,
                            feature=SHIFTED_FEATURES[1], intensity=0.02, seed=piece)  # fmt: skip
        frame = pd.concat([frame.iloc[:cut], tail], ignore_index=True)
    score = fraud_probability(frame)
    # The features as the API logs them: one JSON object, booleans as 0.0 / 1.0, missing as null.
    add = np.strings.add
    features = None
    for i, feature in enumerate(schema.features):
        column = frame[feature.name]
        if feature.is_categorical:
            value = add(add('"', column.to_numpy().astype(_TEXT)), '"')
        else:
            value = _numbers(column.to_numpy(dtype=np.float64))
        pair = add(('{"' if i == 0 else ',"') + feature.name + '":', value)
        features = pair if features is None else add(features, pair)
    # predicted_at spreads the N rows evenly over the span, in order.
    step_us = span / timedelta(microseconds=1) / total
    offsets = np.round((first_row + np.arange(rows)) * step_us).astype("timedelta64[us]")
    stamps = np.datetime64(WINDOW_START.replace(tzinfo=None), "us") + offsets
    latency = np.round(np.random.default_rng(CURRENT_SEED + piece).gamma(2.0, 0.4, rows), 3)
    ids = add("bench-", (first_row + np.arange(rows)).astype(_TEXT))
    line = add(ids, "\t")
    line = add(line, np.datetime_as_string(stamps, timezone="UTC").astype(_TEXT))
    line = add(add(line, "\tfraud-detector\t3\t"), add(features, "}\t"))
    line = add(add(line, (score >= 0.5).astype(np.int8).astype(_TEXT)), "\t")
    line = add(add(line, score.astype(_TEXT)), "\t")
    line = add(line, latency.astype(_TEXT))
    payload = "\n".join(line.tolist()) + "\n"
    # COPY's text format gives backslashes a meaning; none of these values has one.
    assert "\\" not in payload
    return payload


def _pieces(
    schema: FeatureSchema,
    rows: int,
    ready: queue.Queue,
    stop: threading.Event,
    span: timedelta = WINDOW,
) -> None:
    """Generate the COPY payloads one piece ahead of the loader (a thread of its own)."""

    def hand(item: object) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ready.put(item, timeout=1)
                return

    try:
        for first in range(0, rows, PIECE_ROWS):
            t0 = time.perf_counter()
            payload = piece_text(schema, first, min(PIECE_ROWS, rows - first), rows, span).encode()
            hand((first, payload, time.perf_counter() - t0))
            del payload
        hand(None)
    except BaseException as exc:  # handed to the loader
        hand(exc)


def load(url: str, schema: FeatureSchema, rows: int, span: timedelta = WINDOW) -> dict[str, float]:
    """COPY `rows` rows in pieces, spread over `span` from WINDOW_START; the next piece is
    generated while the database takes one."""
    init_db(get_engine(url))
    dispose_engines()
    generate_s = copy_s = 0.0
    started = time.perf_counter()
    ready: queue.Queue = queue.Queue(maxsize=1)  # at most two pieces in memory, plus one copying
    stop = threading.Event()
    generator = threading.Thread(
        target=_pieces, args=(schema, rows, ready, stop, span), daemon=True
    )
    generator.start()
    connection = psycopg2.connect(_dsn(url))
    try:
        with connection.cursor() as cursor:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                first, payload, seconds = item
                del item
                generate_s += seconds
                t0 = time.perf_counter()
                cursor.copy_expert(
                    f"COPY prediction_logs ({COPY_COLUMNS}) FROM STDIN",
                    io.BytesIO(payload),
                    size=1 << 20,
                )
                connection.commit()
                del payload
                copy_s += time.perf_counter() - t0
                print(f"  loaded {min(first + PIECE_ROWS, rows):>12,} rows", file=sys.stderr)
        connection.autocommit = True
        t0 = time.perf_counter()
        with connection.cursor() as cursor:
            # What autovacuum would have done on a table written over hours: statistics for the
            # planner, hint bits and the visibility map set, so the timed reads only read.
            cursor.execute("VACUUM (ANALYZE) prediction_logs")
            vacuum_s = time.perf_counter() - t0
            cursor.execute(
                "SELECT pg_total_relation_size('prediction_logs'), "
                "pg_relation_size('prediction_logs'), count(*) FROM prediction_logs"
            )
            total_bytes, heap_bytes, count = cursor.fetchone()
    finally:
        stop.set()
        connection.close()
        generator.join(timeout=60)
    if count != rows:
        raise RuntimeError(f"loaded {count} rows, expected {rows}")
    return {
        "load_s": time.perf_counter() - started,
        "generate_s": generate_s,
        "copy_s": copy_s,
        "vacuum_analyze_s": vacuum_s,
        "table_mb": total_bytes / 2**20,
        "heap_mb": heap_bytes / 2**20,
        "loader_peak_mb": _status_kib("VmHWM") / 1024,
    }


# ---------------------------------------------------------------------------------------------
# the timed pass (in a child process)


def reference_profile(schema: FeatureSchema, rows: int):
    raw = generate_transactions(rows, seed=REFERENCE_SEED)
    frame = coerce_frame(raw, schema)
    score = fraud_probability(raw)
    frame["prediction"] = (score >= 0.5).astype(np.int64)
    frame["score"] = score
    return profile_from_frame(frame, schema)


class _Timer:
    """Times `data.prediction_log.<name>` where `read_predictions` calls it (`frame_from_log_rows`,
    and
    `features_frame` within it), per chunk."""

    def __init__(self, name: str) -> None:
        self.seconds = 0.0
        self._original = getattr(prediction_log, name)
        setattr(prediction_log, name, self)

    def __call__(self, *args, **kwargs) -> pd.DataFrame:
        started = time.perf_counter()
        try:
            return self._original(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def _report_fingerprint(report) -> str:
    raw = report.to_dict()
    raw.pop("created_at")
    return json.dumps(raw, sort_keys=True)


def drift_pass(
    schema: FeatureSchema,
    profile,
    chunks: Iterator[pd.DataFrame],
    rows_expected: int,
    chunksize: int,
) -> dict:
    """Feed `chunks` to a DriftAccumulator; time the reading and the counting apart."""
    early_chunks = max(1, -(-rows_expected // chunksize) // 10)  # the first tenth of the window
    read_s = update_s = 0.0
    rows = n_chunks = 0
    early_rss = later_rss = 0
    frame_bytes_per_row = None
    gc.collect()
    baseline = _status_kib("VmRSS")
    _reset_peak()
    started, cpu_started = time.perf_counter(), time.process_time()
    accumulator = DriftAccumulator(
        profile, schema, thresholds=DriftThresholds(), window=(WINDOW_START, WINDOW_START + WINDOW)
    )
    while True:
        t0 = time.perf_counter()
        chunk = next(chunks, None)
        t1 = time.perf_counter()
        read_s += t1 - t0
        if chunk is None:
            break
        accumulator.update(chunk)
        update_s += time.perf_counter() - t1
        rows += len(chunk)
        n_chunks += 1
        if frame_bytes_per_row is None:  # measured once, outside the timed parts
            pause = time.perf_counter()
            frame_bytes_per_row = chunk.memory_usage(deep=True, index=True).sum() / len(chunk)
            started += time.perf_counter() - pause
        del chunk
        rss = _status_kib("VmRSS")
        if n_chunks <= early_chunks:
            early_rss = max(early_rss, rss)
        else:
            later_rss = max(later_rss, rss)
    t0 = time.perf_counter()
    report = accumulator.report()
    report_s = time.perf_counter() - t0
    total_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    peak = _status_kib("VmHWM")
    if rows != rows_expected:
        raise RuntimeError(f"read {rows} rows, expected {rows_expected}")
    return {
        "total_s": total_s,
        "read_s": read_s,
        "update_s": update_s,
        "report_s": report_s,
        "process_cpu_s": cpu_s,
        "chunks": n_chunks,
        "rows_per_s": rows / total_s,
        "peak_mb": peak / 1024,
        "baseline_mb": baseline / 1024,
        "added_mb": (peak - baseline) / 1024,
        "rss_growth_mb": max(0, later_rss - early_rss) / 1024,
        "frame_bytes_per_row": float(frame_bytes_per_row or 0),
        "in_memory_frame_mb": float(frame_bytes_per_row or 0) * rows / 2**20,
        "drifted": [f.name for f in report.drifted_features],
        "prediction_drift": report.prediction.drifted,
        # The joint check's one sentence: that it ran (on its sample), and what it found.
        "multivariate": report.multivariate.summary if report.multivariate else "not run",
        "shifted": {
            name: {
                "p": report.features[name].p_value,
                "psi": report.features[name].psi,
                "wasserstein": report.features[name].wasserstein,
            }
            for name in SHIFTED_FEATURES
        },
        "fingerprint": _report_fingerprint(report),
    }


def child(url: str, rows: int, chunksize: int, reference_rows: int, breakdown: bool) -> dict:
    schema = load_schema(SCHEMA_PATH)
    profile = reference_profile(schema, reference_rows)
    # a clock read per chunk, nothing more
    typing = _Timer("frame_from_log_rows") if breakdown else None
    features = _Timer("features_frame") if breakdown else None
    end = WINDOW_START + WINDOW
    chunks = read_predictions(schema, WINDOW_START, end, url=url, chunksize=chunksize)
    result = drift_pass(schema, profile, chunks, rows, chunksize)
    dispose_engines()
    if typing is not None:
        # read before split_time, whose cursor pass parses features through `features_frame` too
        split = {"typing_s": typing.seconds, "features_json_s": features.seconds}
        split["copy_and_parse_s"] = result["read_s"] - typing.seconds
        result["breakdown"] = split_time(url, schema, profile, rows, chunksize, result) | split
    return result


# ---------------------------------------------------------------------------------------------
# --breakdown: where the time goes


def split_time(url, schema, profile, rows, chunksize, copy_pass) -> dict:
    """The database's part of the timed pass, and the same window read with a cursor."""
    engine = get_engine(url)
    query = window_query(schema, WINDOW_START, WINDOW_START + WINDOW)  # read_predictions' own
    compiled = query.compile(dialect=engine.dialect)
    sql, params = str(compiled), compiled.params
    out: dict[str, object] = {}
    with (
        contextlib.closing(psycopg2.connect(_dsn(url))) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("EXPLAIN DECLARE bench_plan NO SCROLL CURSOR FOR " + sql, params)
        out["plan"] = [row[0] for row in cursor.fetchall()]
        # The database alone: every row computed, none sent.
        t0 = time.perf_counter()
        cursor.execute("DECLARE bench_move NO SCROLL CURSOR FOR " + sql, params)
        cursor.execute("MOVE FORWARD ALL IN bench_move")
        out["database_s"] = time.perf_counter() - t0
        moved = cursor.rowcount
        connection.rollback()
        # COPY alone: every row written as CSV and sent, nothing parsed.
        copy = f"COPY ({cursor.mogrify(sql, params).decode()}) TO STDOUT WITH (FORMAT csv)"
        t0 = time.perf_counter()
        cursor.copy_expert(copy, _Discard(), size=1 << 20)
        out["copy_s"] = time.perf_counter() - t0
        connection.rollback()
    if moved != rows:
        raise RuntimeError(f"MOVE counted {moved} rows, expected {rows}")
    out["read_predictions_s"] = copy_pass["read_s"]
    out["drift_s"] = copy_pass["update_s"] + copy_pass["report_s"]

    # The same window through a server-side cursor, as read_predictions read it before COPY.
    timers = {"driver_s": 0.0, "frame_s": 0.0, "typing_s": 0.0}
    chunks = cursor_chunks(url, schema, sql, params, chunksize, timers)
    cursor_pass = drift_pass(schema, profile, chunks, rows, chunksize)
    out["cursor"] = {k: v for k, v in cursor_pass.items() if k != "fingerprint"} | timers
    out["cursor_report_identical"] = cursor_pass["fingerprint"] == copy_pass["fingerprint"]
    return out


class _Discard:
    """A file that keeps nothing: where `COPY ... TO STDOUT` writes when only sending counts."""

    def write(self, data: bytes) -> int:
        return len(data)


def cursor_chunks(url, schema, sql, params, chunksize, timers) -> Iterator[pd.DataFrame]:
    """The window as typed frames from a server-side cursor: psycopg2 turns each row into a
    Python tuple, pandas builds a frame from them, `frame_from_log_rows` types it."""
    with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
        with connection.cursor(name="bench_fetch") as cursor:
            t0 = time.perf_counter()
            cursor.execute(sql, params)  # DECLARE: the query runs as FETCH asks for rows
            timers["driver_s"] += time.perf_counter() - t0
            while True:
                t1 = time.perf_counter()
                batch = cursor.fetchmany(chunksize)
                t2 = time.perf_counter()
                timers["driver_s"] += t2 - t1
                if not batch:
                    break
                names = [d[0] for d in cursor.description]
                frame = pd.DataFrame.from_records(batch, columns=names, coerce_float=True)
                del batch
                t3 = time.perf_counter()
                typed = frame_from_log_rows(frame, schema)
                timers["frame_s"] += t3 - t2
                timers["typing_s"] += time.perf_counter() - t3
                yield typed
        connection.rollback()


# ---------------------------------------------------------------------------------------------
# the orchestration


def run_child(url: str, rows: int, chunksize: int, reference_rows: int, breakdown: bool) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_drift_postgres",
        "--child",
        url,
        "--rows",
        str(rows),
    ]
    command += ["--chunksize", str(chunksize), "--reference-rows", str(reference_rows)]
    command += ["--breakdown"] * breakdown
    process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if process.returncode:
        sys.stderr.write(process.stderr)
        raise RuntimeError(f"the timed pass failed (exit {process.returncode})")
    return json.loads(process.stdout.strip().splitlines()[-1])


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # so that the database is dropped on the way out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--chunksize", type=int, nargs="+", default=[50_000])
    parser.add_argument("--reference-rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per chunk size")
    parser.add_argument("--breakdown", action="store_true", help="also split the time")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(
            args.child, args.rows, args.chunksize[0], args.reference_rows, args.breakdown
        )
        print(json.dumps(result))
        return 0

    signal.signal(signal.SIGTERM, _terminate)
    schema = load_schema(SCHEMA_PATH)
    machine = (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"pandas {pd.__version__}"
    )
    scratch = contextlib.ExitStack()
    url = scratch.enter_context(fresh_postgres_database("bench_drift_pg", ADMIN_URL))
    try:
        with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
            cursor = connection.cursor()
            cursor.execute("SHOW server_version")
            machine += f", PostgreSQL {cursor.fetchone()[0].split()[0]}"
        print(f"drift check over {args.rows:,} logged predictions read from Postgres; {machine}")
        print(
            f"loading {args.rows:,} rows into database {make_url(url).database} ...",
            file=sys.stderr,
        )
        loaded = load(url, schema, args.rows)
        print(
            f"load: {loaded['load_s']:.1f} s ({args.rows / loaded['load_s']:,.0f} rows/s; "
            f"generating {loaded['generate_s']:.1f} s alongside COPY {loaded['copy_s']:.1f} s, "
            f"VACUUM ANALYZE {loaded['vacuum_analyze_s']:.1f} s), table "
            f"{loaded['table_mb']:,.0f} MB with indexes, loader peak "
            f"{loaded['loader_peak_mb']:,.0f} MB"
        )
        results = []
        header = (
            f"{'rows':>12} {'chunk':>8} {'median s':>9} {'min s':>7} {'rows/s':>9} "
            f"{'read s':>7} {'drift s':>8} {'peak MB':>8} {'added MB':>9} {'growth MB':>10} "
            f"{'whole frame MB':>15}"
        )
        print(header)
        print("-" * len(header))
        for chunksize in args.chunksize:
            passes = []
            for repeat in range(args.repeats):
                breakdown = args.breakdown and repeat == args.repeats - 1
                passes.append(run_child(url, args.rows, chunksize, args.reference_rows, breakdown))
            fingerprints = {p.pop("fingerprint") for p in passes}
            if len(fingerprints) != 1:
                raise RuntimeError("the drift report differs between repeats")
            median = statistics.median(p["total_s"] for p in passes)
            summary = {
                "rows": args.rows,
                "chunksize": chunksize,
                "repeats": args.repeats,
                "median_s": median,
                "min_s": min(p["total_s"] for p in passes),
                "rows_per_s": args.rows / median,
                "read_s": statistics.median(p["read_s"] for p in passes),
                "drift_s": statistics.median(p["update_s"] + p["report_s"] for p in passes),
                "process_cpu_s": statistics.median(p["process_cpu_s"] for p in passes),
                "peak_mb": statistics.median(p["peak_mb"] for p in passes),
                "added_mb": statistics.median(p["added_mb"] for p in passes),
                "baseline_mb": statistics.median(p["baseline_mb"] for p in passes),
                "rss_growth_mb": max(p["rss_growth_mb"] for p in passes),
                "in_memory_frame_mb": passes[0]["in_memory_frame_mb"],
                "drifted": passes[0]["drifted"],
                "prediction_drift": passes[0]["prediction_drift"],
                "multivariate": passes[0]["multivariate"],
                "report_s": statistics.median(p["report_s"] for p in passes),
                "shifted": passes[0]["shifted"],
                "passes_s": [round(p["total_s"], 2) for p in passes],
            }
            if "breakdown" in passes[-1]:
                summary["breakdown"] = passes[-1]["breakdown"]
            # Bounded: resident memory stops growing once the first chunks are in.
            summary["bounded"] = summary["rss_growth_mb"] < 64
            results.append(summary)
            print(
                f"{args.rows:>12,} {chunksize:>8,} {median:>9.1f} {summary['min_s']:>7.1f} "
                f"{summary['rows_per_s']:>9,.0f} {summary['read_s']:>7.1f} "
                f"{summary['drift_s']:>8.1f} {summary['peak_mb']:>8.0f} "
                f"{summary['added_mb']:>9.0f} {summary['rss_growth_mb']:>10.0f} "
                f"{summary['in_memory_frame_mb']:>15,.0f}"
            )
        print(
            "median/min s: one pass (read_predictions with chunksize + DriftAccumulator.update "
            "per chunk + report), each in a fresh process; read s / drift s: its two parts; peak "
            "MB: resident memory at its highest during the pass (VmHWM reset before it), added "
            "MB: the part above what the process held before (interpreter, libraries, reference "
            "profile); growth MB: resident memory at the end above its level after the first "
            "tenth of the window (0 = bounded); whole frame MB: the window as one typed "
            "DataFrame, what reading it without chunks would need at the least."
        )
        drifted = results[0]["drifted"]
        shifted = ", ".join(
            f"{name} p {t['p']:.2g} PSI {t['psi']:.3f}"
            + (f" Wasserstein {t['wasserstein']:.3f} std" if t["wasserstein"] is not None else "")
            for name, t in results[0]["shifted"].items()
        )
        print(
            f"drifted: {', '.join(drifted) or 'none'} (shifted in the last quarter: {shifted}; "
            f"drifted needs PSI >= 0.1 or a Wasserstein distance >= 0.1 std too); prediction "
            "drift: "
            f"{'yes' if results[0]['prediction_drift'] else 'no'}; bounded: "
            f"{'yes' if all(r['bounded'] for r in results) else 'NO'}"
        )
        print(
            f"{results[0]['multivariate']} The report step (the multivariate check on its "
            f"sample included) took {results[0]['report_s']:.1f} s of the pass."
        )
        for r in results:
            if "breakdown" in r:
                print_breakdown(r)
        print(json.dumps({"benchmark": "drift_postgres", "machine": machine, "load": loaded,
                          "results": results}))  # fmt: skip
        return 0 if all(r["bounded"] for r in results) else 1
    finally:
        scratch.close()
        print(f"dropped database {make_url(url).database}", file=sys.stderr)


def print_breakdown(result: dict) -> None:
    b = result["breakdown"]
    cursor = b["cursor"]
    rows = result["rows"]
    print(f"where the time goes, chunk {result['chunksize']:,} (last pass):")
    print("  plan: " + " / ".join(line.strip() for line in b["plan"]))
    lines = [
        ("database alone (DECLARE + MOVE FORWARD ALL: computed, none sent)", b["database_s"]),
        ("COPY alone (every row written as CSV and sent, nothing parsed)", b["copy_s"]),
        ("read_predictions in the timed pass", b["read_predictions_s"]),
        ("  COPY stream + Arrow's CSV reader (threads, overlapping)", b["copy_and_parse_s"]),
        ("  typing the frames (frame_from_log_rows)", b["typing_s"]),
        ("    of which the features JSON (features_frame, Arrow)", b["features_json_s"]),
        ("drift: DriftAccumulator.update + report", b["drift_s"]),
    ]
    for label, seconds in lines:
        print(f"  {label:<66} {seconds:>7.1f} s")
    print(
        f"  a server-side cursor instead of COPY: pass {cursor['total_s']:.1f} s "
        f"({rows / cursor['total_s']:,.0f} rows/s), read {cursor['read_s']:.1f} s (psycopg2 "
        f"tuples {cursor['driver_s']:.1f} s, DataFrame.from_records {cursor['frame_s']:.1f} s, "
        f"typing {cursor['typing_s']:.1f} s), peak {cursor['peak_mb']:.0f} MB, growth "
        f"{cursor['rss_growth_mb']:.0f} MB; same drift report: "
        f"{'yes' if b['cursor_report_identical'] else 'NO'}"
    )


if __name__ == "__main__":
    sys.exit(main())
