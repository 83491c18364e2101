"""Benchmark: the monitoring pass's refresh of realized performance as late labels arrive.

What every six-hourly pass now does after its own window (`monitoring.label_maturity.
refresh_realized`, issue 21 item 1): match each new label to its prediction (`match_labels`, one
UPDATE ... FROM), find the hours (by prediction time) holding labels matched or received since
the previous pass, and recompute the saved 6-hour windows those hours touch, from their labels
alone, never re-reading `prediction_logs`. Timed here at the issue's size, 10,000,000 logged
predictions over 30 days and 1,000,000 late labels, next to the re-read it replaces.

1. A fresh database (dropped at the end, also on failure or Ctrl-C) gets the project's tables
   (`init_db`) and N prediction-log rows of the fraud schema (default 10,000,000), spread evenly
   over 30 days and loaded with COPY by `benchmarks.bench_drift_postgres.load` (its rows: model
   fraud-detector, version 3, the synthetic data's own fraud probability as the score, the class
   answered at 0.5; the last quarter of the span mildly shifted, which nothing here looks at).
   `ix_labels_received_at`, which the refresh's search by arrival relies on, is created here with
   CREATE INDEX IF NOT EXISTS when `init_db` did not create it (the output says which).
2. 120 `performance_reports` rows, one per 6-hour window, as `monitoring.window_checks` saves
   them through `save_reports`: a realized part (hourly `windows`, `overall`, `by_version`; no
   label yet) and an estimated part (CBPE), both computed by `realized_performance` and
   `estimated_performance_by_window` on a 600-row synthetic sample spread over the window, then
   given the window's real prediction counts per hour (counted from `prediction_logs`). The
   estimated figures are the sample's; the refresh never reads them. Each realized part carries
   `labels_as_of` = the previous pass's time, as the steady state leaves it.
3. Label values are drawn as the synthetic world draws fraud: 1 with the prediction's score as
   probability (`random() < score`, seeded), so realized accuracy is about what the model earns.
   Each batch is inserted with its `received_at`, unmatched, then `ANALYZE labels` (what
   autovacuum would do after a burst; autovacuum is off on the reference server).
4. Passes, each timed once and split by wrapping the module's functions: match (`match_labels`),
   find (`_saved_windows` + `_changed_hours`), recompute (`_refresh` per window: reading its
   labels, `realized_from_labels`, the UPDATE), and the commit (the rest). Each reports the labels
   matched, the changed hours, the windows recomputed (and how many of them gained labels), the
   label rows read, and what the pass did to `prediction_logs` and `labels` according to
   `pg_stat_user_tables` / `pg_statio_user_tables` (sequential scans and rows they read, index
   scans and rows fetched, heap blocks touched; read after the pass's backend exited, so its
   counters are flushed), with the plans Postgres chose (EXPLAIN, plan only, taken as the pass
   runs each statement for the first time; their few milliseconds are taken out of the times).
   - A, a burst: L late labels (default 1,000,000, every N/L-th prediction across the 30 days)
     received just before the pass that closes the last window.
   - B, a normal pass six hours later: the labels of one day's predictions, 3 to 4 days old
     (L/100, default 10,000).
   - C, the next normal pass six hours after B: L/100 labels for predictions 7 to 8 days old.
5. The check: after A, the middle window's refreshed realized figures (overall and per hour:
   labelled, predictions, confusion matrix, accuracy, ROC AUC) equal `realized_performance` on
   `read_predictions(..., with_labels=True)` of that window, i.e. from prediction_logs joined
   with labels. The exit status is 1 if they differ.
6. What the refresh replaces: every saved window re-read with its labels (`read_predictions(...,
   with_labels=True)` + `realized_performance`, per window, all of them unless --naive-windows
   samples fewer, then scaled up and said so), and the join that re-read runs, alone, over the 30
   days (`data.prediction_log.window_query` as a cursor, `MOVE FORWARD ALL`: computed, none sent).

    python -m benchmarks.bench_label_maturity           # 10,000,000 rows, 1,000,000 labels
    python -m benchmarks.bench_label_maturity --rows 200000 --labels 20000
    python -m benchmarks.bench_label_maturity --breakdown      # also: the parts of match, recompute

`--breakdown`, after the passes: the match's join alone (counted, no UPDATE, over every label),
and the recompute's reading of the 120 windows' labels split into the database alone, psycopg2's
fetch and `_window_labels` as a whole (see `breakdown`).

Postgres: BENCH_POSTGRES_ADMIN_URL (as benchmarks.bench_drift_postgres), a role that may create
databases. The last line of the output is the results as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import psycopg2
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

import monitoring.label_maturity as maturity
from benchmarks.bench_drift_postgres import (
    ADMIN_URL,
    SCHEMA_PATH,
    WINDOW,
    WINDOW_START,
    _dsn,
    _terminate,
    load,
)
from data.db import as_utc, get_engine, performance_reports
from data.prediction_log import read_predictions, window_query
from data.schema import FeatureSchema, load_schema
from data.synthetic import fraud_probability, generate_transactions
from monitoring.performance import estimated_performance_by_window, realized_performance
from monitoring.report_store import save_reports
from tools.testkit.databases import fresh_postgres_database

MODEL = "fraud-detector"  # what bench_drift_postgres.piece_text logs
VERSION = "3"
THRESHOLD = 0.5
DAYS = 30  # LABEL_MATURITY_DAYS' default, and the span of the log
SPAN = timedelta(days=DAYS)
END_A = WINDOW_START + SPAN  # pass A closes the last window of the 30 days
PASS_DELAY = timedelta(minutes=5)  # a pass runs this long after its window closes
SAMPLE_ROWS = 600  # the synthetic sample each saved window's figures are computed on
LABEL_SEED = 0.21  # setseed() for the label values
STAT_COLUMNS = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_upd")
IO_COLUMNS = ("heap_blks_read", "heap_blks_hit")


# ---------------------------------------------------------------------------------------------
# the setup


def received_at_index(url: str) -> str:
    """Make sure `labels.received_at` has its index; say whether init_db had made one."""
    with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'labels' "
            "AND indexdef LIKE '%(received_at)%'"
        )
        found = [name for (name,) in cursor.fetchall()]
        if found:
            return f"created by init_db ({', '.join(found)})"
        cursor.execute("CREATE INDEX IF NOT EXISTS ix_labels_received_at ON labels (received_at)")
        return "not created by init_db: created by the benchmark"


def hourly_counts(url: str) -> dict[datetime, int]:
    """Predictions per hour, counted in the database (setup, before any pass is measured)."""
    with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
        cursor = connection.cursor()
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.execute(
            "SELECT date_trunc('hour', predicted_at), count(*) FROM prediction_logs GROUP BY 1"
        )
        return {as_utc(hour): count for hour, count in cursor.fetchall()}


def save_windows(url: str, schema: FeatureSchema, counts: dict[datetime, int]) -> int:
    """One performance_reports row per 6-hour window of the 30 days, as a pass saves it."""
    raw = generate_transactions(SAMPLE_ROWS, seed=7)
    scores = fraud_probability(raw)
    step = WINDOW / SAMPLE_ROWS
    previous_pass = END_A - WINDOW + PASS_DELAY
    engine = get_engine(url)
    saved = 0
    start = WINDOW_START
    while start < END_A:
        end = start + WINDOW
        edges = [start + timedelta(hours=h) for h in range(int(WINDOW / timedelta(hours=1)) + 1)]
        frame = pd.DataFrame(
            {
                schema.timestamp: pd.to_datetime(
                    [start + step * (i + 0.5) for i in range(SAMPLE_ROWS)], utc=True
                ),
                schema.score: scores,
                schema.prediction: (scores >= THRESHOLD).astype(np.int64),
                schema.target: np.nan,
                "model_version": VERSION,
            }
        )
        realized = realized_performance(frame, schema, window=edges, threshold=THRESHOLD)
        estimated = estimated_performance_by_window(
            frame, schema, window=edges, threshold=THRESHOLD
        )
        per_hour = np.array([counts.get(as_utc(hour), 0) for hour in edges[:-1]])
        total = int(per_hour.sum())
        for report in (realized, estimated):
            report.windows["predictions"] = per_hour
            report.overall["predictions"] = total
            report.by_version[VERSION]["predictions"] = total
        realized.windows["label_coverage"] = np.where(per_hour > 0, 0.0, np.nan)
        realized.overall["label_coverage"] = 0.0 if total else None
        realized.by_version[VERSION]["label_coverage"] = 0.0 if total else None
        save_reports(
            window=(start, end),
            model_name=MODEL,
            model_version=VERSION,
            realized=realized,
            estimated=estimated,
            engine=engine,
        )
        saved += 1
        start = end
    with engine.begin() as conn:  # as the previous pass left them: labels counted then
        conn.execute(
            text(
                "UPDATE performance_reports SET report = jsonb_set(report, "
                "'{realized,labels_as_of}', to_jsonb(CAST(:stamp AS text)))"
            ),
            {"stamp": previous_pass.isoformat()},
        )
    return saved


def insert_labels(url: str, ids: np.ndarray, received: datetime) -> tuple[int, float]:
    """Labels for the predictions `bench-<id>`, received at `received`, unmatched; then ANALYZE."""
    started = time.perf_counter()
    with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT setseed(%s)", (LABEL_SEED,))
        cursor.execute(
            "INSERT INTO labels (request_id, label, labelled_at, received_at) "
            "SELECT p.request_id, (random() < p.score)::int, %(at)s, %(at)s "
            "FROM unnest(%(ids)s::bigint[]) AS g(i) "
            "JOIN prediction_logs p ON p.request_id = 'bench-' || g.i",
            {"ids": ids.tolist(), "at": received},
        )
        inserted = cursor.rowcount
        connection.commit()
        connection.autocommit = True
        cursor.execute("ANALYZE labels")
    if inserted != len(ids):
        raise RuntimeError(f"inserted {inserted} labels, expected {len(ids)}")
    return inserted, time.perf_counter() - started


def burst_ids(rows: int, count: int) -> np.ndarray:
    """Every rows/count-th prediction, across the whole span."""
    return np.arange(count, dtype=np.int64) * rows // count


def day_ids(rows: int, count: int, day_start: datetime, taken: np.ndarray) -> np.ndarray:
    """`count` predictions made in the day from `day_start`, none of them in `taken`, evenly."""
    step = SPAN / rows  # prediction i is at WINDOW_START + i * step (rounded to the microsecond)
    first = math.ceil((day_start - WINDOW_START) / step) + 1
    last = math.floor((day_start + timedelta(days=1) - WINDOW_START) / step) - 1
    candidates = np.setdiff1d(np.arange(first, last + 1, dtype=np.int64), taken)
    if len(candidates) < count:
        raise ValueError(f"the day holds {len(candidates)} unlabelled predictions, not {count}")
    return candidates[np.arange(count) * len(candidates) // count]


# ---------------------------------------------------------------------------------------------
# a timed pass


class _Steps:
    """Wraps label_maturity's functions where refresh_realized calls them: time and counts."""

    NAMES = (
        "match_labels",
        "_saved_windows",
        "_changed_hours",
        "_refresh",
        "_window_labels",
        "realized_from_labels",
    )

    def __init__(self, explain: _Explain) -> None:
        self.seconds = dict.fromkeys(self.NAMES, 0.0)
        self.explain = explain
        self.matched = self.hours = self.label_rows = 0
        self._originals = {name: getattr(maturity, name) for name in self.NAMES}

    def __enter__(self) -> _Steps:
        for name, original in self._originals.items():
            setattr(maturity, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._originals.items():
            setattr(maturity, name, original)

    def _wrap(self, name: str, original: Callable) -> Callable:
        def timed(*args, **kwargs):
            explained = self.explain.seconds
            started = time.perf_counter()
            result = original(*args, **kwargs)
            spent = time.perf_counter() - started - (self.explain.seconds - explained)
            self.seconds[name] += spent
            if name == "match_labels":
                self.matched += result
            elif name == "_changed_hours":
                self.hours += len(result)
            elif name == "_window_labels":
                self.label_rows += len(result)
            return result

        return timed


class _Explain:
    """The plan of the first statement of each kind the pass runs (EXPLAIN, not executed)."""

    KINDS = (
        ("match", lambda s: s.startswith("UPDATE labels")),
        ("find", lambda s: "date_trunc" in s),
        ("window labels", lambda s: s.startswith("SELECT") and "labels.labelled_at" in s),
    )

    def __init__(self) -> None:
        self.plans: dict[str, list[str]] = {}
        self.seconds = 0.0

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        sql = statement.lstrip()
        for kind, matches in self.KINDS:
            if kind not in self.plans and matches(sql):
                started = time.perf_counter()
                with cursor.connection.cursor() as own:
                    own.execute("EXPLAIN " + statement, parameters)
                    self.plans[kind] = [line for (line,) in own.fetchall()]
                self.seconds += time.perf_counter() - started


def table_stats(url: str) -> dict[str, dict[str, int]]:
    with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
        cursor = connection.cursor()
        columns = ", ".join([*(f"s.{c}" for c in STAT_COLUMNS), *(f"io.{c}" for c in IO_COLUMNS)])
        cursor.execute(
            f"SELECT s.relname, {columns} FROM pg_stat_user_tables s "
            "JOIN pg_statio_user_tables io USING (relid) "
            "WHERE s.relname IN ('prediction_logs', 'labels')"
        )
        names = (*STAT_COLUMNS, *IO_COLUMNS)
        return {
            row[0]: {n: int(v or 0) for n, v in zip(names, row[1:], strict=True)}
            for row in cursor.fetchall()
        }


def _wait_gone(url: str, pids: list[int], timeout: float = 30.0) -> None:
    """Until the pass's backends have exited: a backend flushes its statistics as it exits."""
    deadline = time.monotonic() + timeout
    with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
        connection.autocommit = True
        cursor = connection.cursor()
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)
    raise RuntimeError(f"the pass's backends {pids} did not exit")


def timed_pass(url: str, schema: FeatureSchema, end: datetime, now: datetime) -> dict:
    """One refresh_realized pass on its own connection, timed by step, with its table stats."""
    engine = create_engine(url, poolclass=NullPool)
    pids: list[int] = []

    @event.listens_for(engine, "connect")
    def _pid(dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids.append(cursor.fetchone()[0])

    explain = _Explain()
    event.listen(engine, "before_cursor_execute", explain)
    before = table_stats(url)
    with _Steps(explain) as steps:
        started = time.perf_counter()
        refreshed = maturity.refresh_realized(
            engine, schema, model_name=MODEL, end=end, maturity_days=DAYS, now=now
        )
        total = time.perf_counter() - started - explain.seconds
    engine.dispose()
    _wait_gone(url, pids)
    after = table_stats(url)
    s = steps.seconds
    recompute = s["_refresh"]
    found = s["_saved_windows"] + s["_changed_hours"]
    delta = {
        table: {k: after[table][k] - before[table][k] for k in after[table]} for table in after
    }
    return {
        "end": end.isoformat(),
        "now": now.isoformat(),
        "total_s": total,
        "match_s": s["match_labels"],
        "find_s": found,
        "recompute_s": recompute,
        "recompute_read_s": s["_window_labels"],
        "recompute_compute_s": s["realized_from_labels"],
        "recompute_write_s": recompute - s["_window_labels"] - s["realized_from_labels"],
        "commit_and_rest_s": total - s["match_labels"] - found - recompute,
        "explain_s": explain.seconds,
        "matched": steps.matched,
        "changed_hours": steps.hours,
        "windows": len(refreshed),
        "windows_gained": sum(w.labelled > w.labelled_before for w in refreshed),
        "gained_windows": [
            w.window[0].isoformat() for w in refreshed if w.labelled > w.labelled_before
        ],
        "label_rows_read": steps.label_rows,
        "labelled_after": sum(w.labelled for w in refreshed),
        "stats": delta,
        "plans": explain.plans,
    }


# ---------------------------------------------------------------------------------------------
# the check and the naive alternative


def check_window(url: str, schema: FeatureSchema, start: datetime) -> dict:
    """The saved, refreshed realized figures of [start, start + 6 h) against realized_performance
    on the window read from prediction_logs joined with labels."""
    end = start + WINDOW
    edges = [start + timedelta(hours=h) for h in range(int(WINDOW / timedelta(hours=1)) + 1)]
    frame = read_predictions(schema, start, end, url=url, with_labels=True)
    direct = realized_performance(frame, schema, window=edges, threshold=THRESHOLD).to_dict()
    with get_engine(url).connect() as conn:
        report = conn.execute(
            select(performance_reports.c.report).where(
                performance_reports.c.model_name == MODEL,
                performance_reports.c.window_start == start,
                performance_reports.c.window_end == end,
            )
        ).scalar_one()
    saved = report["realized"]
    exact = ("predictions", "labelled", "tp", "fp", "fn", "tn")
    close = ("accuracy", "precision", "recall", "f1", "roc_auc", "label_coverage")

    def same(a: dict, b: dict) -> list[str]:
        wrong = [k for k in exact if a.get(k) != b.get(k)]
        for k in close:
            x, y = a.get(k), b.get(k)
            if (x is None) != (y is None) or (x is not None and not math.isclose(x, y)):
                wrong.append(k)
        return wrong

    differences = [f"overall.{k}" for k in same(saved["overall"], direct["overall"])]
    if len(saved["windows"]) != len(direct["windows"]):
        differences.append("windows")
    for ours, theirs in zip(saved["windows"], direct["windows"], strict=False):
        differences += [f"{ours['window_start']}.{k}" for k in same(ours, theirs)]
    return {
        "window": [start.isoformat(), end.isoformat()],
        "labelled": saved["overall"]["labelled"],
        "direct_labelled": direct["overall"]["labelled"],
        "accuracy": saved["overall"]["accuracy"],
        "direct_accuracy": direct["overall"]["accuracy"],
        "differences": differences,
        "identical": not differences,
    }


def breakdown(url: str, schema: FeatureSchema) -> dict:
    """After the passes, the parts of their two costly steps, each run on its own.

    The match: its join (labels with their prediction by request id), counted without the
    UPDATE, over every label (none is unmatched any more, so not the pass's own statement; the
    plan is printed), without parallel workers, as the UPDATE runs. The recompute's read: each
    saved window's labels by `_window_labels` (its query captured as it runs), then the same
    queries by the database alone (a cursor, `MOVE FORWARD ALL`) and fetched by psycopg2
    (`fetchall`, no SQLAlchemy rows, no DataFrame), then `_window_labels` again, warm."""
    out: dict[str, object] = {}
    join = (
        "SELECT count(*), sum(p.score) FROM labels l "
        "JOIN prediction_logs p ON p.request_id = l.request_id"
    )
    with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
        cursor = connection.cursor()
        cursor.execute("SET max_parallel_workers_per_gather = 0")  # an UPDATE gets no workers
        cursor.execute("EXPLAIN " + join)
        out["match_join_plan"] = [line for (line,) in cursor.fetchall()]
        started = time.perf_counter()
        cursor.execute(join)
        out["match_join_rows"] = cursor.fetchone()[0]
        out["match_join_s"] = time.perf_counter() - started
        connection.rollback()

    engine = create_engine(url, poolclass=NullPool)
    captured: list[tuple[str, object]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany) -> None:
        captured.append((statement, parameters))

    starts = [WINDOW_START + WINDOW * i for i in range(int(SPAN / WINDOW))]
    rows = [{"window_start": s, "window_end": s + WINDOW, "model_name": MODEL} for s in starts]
    with engine.connect() as conn:
        started = time.perf_counter()
        out["window_label_rows"] = sum(len(maturity._window_labels(conn, schema, r)) for r in rows)
        out["window_labels_s"] = time.perf_counter() - started
    queries = [q for q in captured if "labels.labelled_at" in q[0]]
    with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
        cursor = connection.cursor()
        started = time.perf_counter()
        for statement, parameters in queries:
            cursor.execute("DECLARE bench_labels NO SCROLL CURSOR FOR " + statement, parameters)
            cursor.execute("MOVE FORWARD ALL IN bench_labels")
            cursor.execute("CLOSE bench_labels")
        out["window_labels_database_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for statement, parameters in queries:
            cursor.execute(statement, parameters)
            cursor.fetchall()
        out["window_labels_psycopg2_s"] = time.perf_counter() - started
        connection.rollback()
    with engine.connect() as conn:
        started = time.perf_counter()
        for r in rows:
            maturity._window_labels(conn, schema, r)
        out["window_labels_warm_s"] = time.perf_counter() - started
    engine.dispose()
    return out


def naive_reread(url: str, schema: FeatureSchema, sample: int | None) -> dict:
    """Every saved window re-read with its labels and its realized figures recomputed, as a
    refresh without the labels' copy of their prediction would have to (or `sample` windows of
    them, evenly spaced, scaled up)."""
    starts = [WINDOW_START + WINDOW * i for i in range(int(SPAN / WINDOW))]
    chosen = starts if not sample else [starts[i * len(starts) // sample] for i in range(sample)]
    rows = 0
    started = time.perf_counter()
    for start in chosen:
        edges = [start + timedelta(hours=h) for h in range(int(WINDOW / timedelta(hours=1)) + 1)]
        frame = read_predictions(schema, start, start + WINDOW, url=url, with_labels=True)
        realized_performance(frame, schema, window=edges, threshold=THRESHOLD)
        rows += len(frame)
    seconds = time.perf_counter() - started
    return {
        "windows_read": len(chosen),
        "windows_total": len(starts),
        "rows_read": rows,
        "seconds_measured": seconds,
        "seconds_all": seconds * len(starts) / len(chosen),
        "estimated": len(chosen) < len(starts),
    }


def join_alone(url: str, schema: FeatureSchema) -> dict:
    """read_predictions' query with labels over the 30 days, run by the database alone."""
    engine = get_engine(url)
    compiled = window_query(schema, WINDOW_START, END_A, with_labels=True).compile(
        dialect=engine.dialect
    )
    with (
        contextlib.closing(psycopg2.connect(_dsn(url))) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("EXPLAIN DECLARE bench_plan NO SCROLL CURSOR FOR " + str(compiled),
                       compiled.params)  # fmt: skip
        plan = [line for (line,) in cursor.fetchall()]
        started = time.perf_counter()
        cursor.execute("DECLARE bench_move NO SCROLL CURSOR FOR " + str(compiled), compiled.params)
        cursor.execute("MOVE FORWARD ALL IN bench_move")
        seconds = time.perf_counter() - started
        moved = cursor.rowcount
        connection.rollback()
    return {"seconds": seconds, "rows": moved, "plan": plan}


# ---------------------------------------------------------------------------------------------
# the orchestration


def _plan_line(lines: list[str]) -> str:
    return " / ".join(line.strip().split("  (cost")[0] for line in lines)


def _print_table(passes: dict[str, dict], naive: dict, join: dict, rows: int) -> None:
    header = (
        f"{'pass':<38} {'total s':>8} {'match s':>8} {'find s':>7} {'recompute s':>12} "
        f"{'matched':>9} {'hours':>6} {'windows':>8} {'gained':>7} {'labels read':>12} "
        f"{'log seq scans':>14} {'log idx fetches':>16} {'log blocks':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, p in passes.items():
        log = p["stats"].get("prediction_logs", {})
        blocks = log.get("heap_blks_read", 0) + log.get("heap_blks_hit", 0)
        print(
            f"{name:<38} {p['total_s']:>8.2f} {p['match_s']:>8.2f} {p['find_s']:>7.2f} "
            f"{p['recompute_s']:>12.2f} {p['matched']:>9,} {p['changed_hours']:>6,} "
            f"{p['windows']:>8,} {p['windows_gained']:>7,} {p['label_rows_read']:>12,} "
            f"{log.get('seq_scan', 0):>14,} {log.get('idx_tup_fetch', 0):>16,} {blocks:>11,}"
        )
    how = "estimated from" if naive["estimated"] else "measured:"
    print(
        f"{'naive: every window re-read':<38} {naive['seconds_all']:>8.1f}   ({how} "
        f"{naive['windows_read']} of {naive['windows_total']} windows, read_predictions with "
        f"labels + realized_performance, {naive['rows_read']:,} rows read in "
        f"{naive['seconds_measured']:.1f} s)"
    )
    print(
        f"{'naive: its join alone, 30 days':<38} {join['seconds']:>8.1f}   (DECLARE + MOVE "
        f"FORWARD ALL: {join['rows']:,} rows computed, none sent)"
    )
    print(
        "total s: the refresh_realized call (EXPLAIN time taken out); match s: match_labels; "
        "find s: reading the saved windows + the changed hours; recompute s: the windows' labels "
        "read, realized_from_labels and the UPDATE, all windows; matched: labels matched to their "
        "prediction; hours: hours (by prediction time) with a label matched or received since "
        "the previous pass; windows: windows recomputed; gained: of them, those whose labelled "
        "count rose; labels read: label rows the recompute read; log seq scans / idx fetches / "
        f"blocks: on prediction_logs ({rows:,} rows) during the pass, from pg_stat_user_tables "
        "and pg_statio_user_tables (heap blocks hit + read)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="logged predictions")
    parser.add_argument("--labels", type=int, default=1_000_000, help="late labels of pass A")
    parser.add_argument(
        "--day-labels", type=int, help="labels of passes B and C (default: --labels / 100)"
    )
    parser.add_argument(
        "--naive-windows", type=int, help="re-read only this many windows and scale up"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the parts of match and recompute"
    )
    args = parser.parse_args()
    day_labels = args.day_labels or max(1, args.labels // 100)
    if args.labels > args.rows:
        parser.error("--labels must not exceed --rows")

    signal.signal(signal.SIGTERM, _terminate)
    schema = load_schema(SCHEMA_PATH)
    machine = (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"pandas {pd.__version__}"
    )
    scratch = contextlib.ExitStack()
    url = scratch.enter_context(fresh_postgres_database("bench_label_maturity", ADMIN_URL))
    try:
        with contextlib.closing(psycopg2.connect(_dsn(url))) as connection:
            cursor = connection.cursor()
            cursor.execute("SHOW server_version")
            machine += f", PostgreSQL {cursor.fetchone()[0].split()[0]}"
        print(
            f"refresh of realized performance: {args.rows:,} logged predictions over {DAYS} days, "
            f"{args.labels:,} late labels, then {day_labels:,} a pass; {machine}"
        )
        print(f"loading {args.rows:,} rows into {make_url(url).database} ...", file=sys.stderr)
        setup: dict[str, object] = {}
        loaded = load(url, schema, args.rows, span=SPAN)
        setup["received_at_index"] = received_at_index(url)
        started = time.perf_counter()
        windows = save_windows(url, schema, hourly_counts(url))
        setup["save_windows_s"] = time.perf_counter() - started
        print(
            f"setup: load {loaded['load_s']:.1f} s ({args.rows / loaded['load_s']:,.0f} rows/s, "
            f"table {loaded['table_mb']:,.0f} MB with indexes); {windows} saved windows in "
            f"{setup['save_windows_s']:.1f} s; ix_labels_received_at: "
            f"{setup['received_at_index']}"
        )

        passes: dict[str, dict] = {}
        # A: the burst, received just before the pass closing the last window of the 30 days.
        now_a = END_A + PASS_DELAY
        burst = burst_ids(args.rows, args.labels)
        _, setup["insert_burst_s"] = insert_labels(url, burst, END_A)
        passes[f"A burst: {args.labels:,} late labels"] = timed_pass(url, schema, END_A, now_a)
        middle = WINDOW_START + WINDOW * (int(SPAN / WINDOW) // 2)
        check = check_window(url, schema, middle)

        # B: six hours later, the labels of the predictions made 3 to 4 days before its window end.
        end_b, now_b = END_A + WINDOW, now_a + WINDOW
        day_b = end_b - timedelta(days=4)
        ids_b = day_ids(args.rows, day_labels, day_b, burst)
        insert_labels(url, ids_b, end_b - timedelta(hours=1))
        passes[f"B +6 h: {day_labels:,} labels, 3-4 days old"] = timed_pass(
            url, schema, end_b, now_b
        )
        # C: six hours after B, labels for predictions 7 to 8 days old.
        end_c, now_c = end_b + WINDOW, now_b + WINDOW
        day_c = end_c - timedelta(days=8)
        ids_c = day_ids(args.rows, day_labels, day_c, np.concatenate([burst, ids_b]))
        insert_labels(url, ids_c, end_c - timedelta(hours=1))
        passes[f"C +12 h: {day_labels:,} labels, 7-8 days old"] = timed_pass(
            url, schema, end_c, now_c
        )
        expected = {"B": day_b, "C": day_c}

        print("naive re-read ...", file=sys.stderr)
        naive = naive_reread(url, schema, args.naive_windows)
        join = join_alone(url, schema)
        parts = breakdown(url, schema) if args.breakdown else None

        _print_table(passes, naive, join, args.rows)
        for name, p in passes.items():
            key = name[0]
            if key in expected:
                day = expected[key]
                gained = sorted(as_utc(w) for w in p["gained_windows"])
                inside = all(day <= w < day + timedelta(days=1) for w in gained)
                print(
                    f"{key}: windows that gained labels: {len(gained)} "
                    f"({'all' if inside else 'NOT all'} in the day from {day:%Y-%m-%d %H:%M}); "
                    f"windows recomputed: {p['windows']}"
                )
        a = next(iter(passes.values()))
        print(
            f"A by step: match {a['match_s']:.2f} s, find {a['find_s']:.2f} s, recompute "
            f"{a['recompute_s']:.2f} s (labels read {a['recompute_read_s']:.2f}, "
            f"realized_from_labels {a['recompute_compute_s']:.2f}, UPDATE "
            f"{a['recompute_write_s']:.2f}), commit and the rest {a['commit_and_rest_s']:.2f} s"
        )
        for name, p in passes.items():
            log, lab = p["stats"]["prediction_logs"], p["stats"]["labels"]
            print(
                f"{name[0]} prediction_logs: seq scans {log['seq_scan']}, rows read by them "
                f"{log['seq_tup_read']:,}, index scans {log['idx_scan']:,}, rows fetched "
                f"{log['idx_tup_fetch']:,}; labels: seq scans {lab['seq_scan']}, rows updated "
                f"{lab['n_tup_upd']:,}"
            )
            for kind, plan in p["plans"].items():
                print(f"  plan, {kind}: {_plan_line(plan)}")
        verdict = (
            "identical" if check["identical"] else "DIFFERENT: " + ", ".join(check["differences"])
        )
        print(
            f"check: window {check['window'][0]} refreshed {check['labelled']:,} labelled, "
            f"accuracy {check['accuracy']}; from prediction_logs joined with labels "
            f"{check['direct_labelled']:,} labelled, accuracy {check['direct_accuracy']}: "
            f"{verdict}"
        )
        if parts is not None:
            print(
                "breakdown (after the passes): the match's join alone, "
                f"{parts['match_join_rows']:,} labels with their prediction, counted: "
                f"{parts['match_join_s']:.1f} s "
                f"({_plan_line(parts['match_join_plan'])}); the {parts['window_label_rows']:,} "
                f"labels of the 120 windows read by _window_labels: "
                f"{parts['window_labels_s']:.1f} s ({parts['window_labels_warm_s']:.1f} s "
                f"again, warm), of which the database alone "
                f"{parts['window_labels_database_s']:.1f} s and psycopg2's fetchall "
                f"{parts['window_labels_psycopg2_s']:.1f} s"
            )
        print(
            json.dumps(
                {
                    "benchmark": "label_maturity",
                    "machine": machine,
                    "rows": args.rows,
                    "labels": args.labels,
                    "day_labels": day_labels,
                    "load": loaded,
                    "setup": setup,
                    "passes": {
                        name[0]: {k: v for k, v in p.items() if k != "gained_windows"}
                        for name, p in passes.items()
                    },
                    "check": check,
                    "naive": naive,
                    "join": join,
                    "breakdown": parts,
                }
            )
        )
        return 0 if check["identical"] else 1
    finally:
        scratch.close()
        print(f"dropped database {make_url(url).database}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
