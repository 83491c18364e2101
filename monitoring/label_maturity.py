"""Realized performance by prediction time, refreshed as late labels mature.

Fraud labels (chargebacks) arrive days after the prediction. A window's realized figures computed
when the window closes see few of them, so every monitoring pass also refreshes the realized
figures of the earlier windows whose labels changed, back to LABEL_MATURITY_DAYS: a window's
realized accuracy fills in from "unknown" to full coverage over the passes that follow it, and
stays attached to the time the predictions were made, not the time the labels came.

The refresh is incremental. Each pass first copies onto every label still waiting for it what
realized performance needs of its prediction (`match_labels`: model, version, prediction time,
score, the class answered), then finds the labels matched or changed since the previous pass
through their own indexes (`matched_at`, `received_at`), maps them to the saved windows, and
recomputes only those windows, from their labels alone (`ix_labels_model_predicted_at`). The
predictions themselves, with their features, are never read again: a window's prediction counts
are the ones its pass saved.

A row counts with the class the API answered, so a window that straddles a promotion scores each
row with the threshold of the version that answered it, and the figures are kept per version too
(`by_version`). Each refreshed window also keeps the distribution of its labels' lag (label time
minus prediction time, in LAG_BUCKETS_SECONDS), which the exporter sums into a histogram.

`labels_as_of` in a window's realized report is when its labels were last counted; the previous
pass's time, less a margin for labels whose transaction was still open then, is where the next
pass looks for new ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, func, inspect, select, union, update

from data.db import as_utc, labels, performance_reports, prediction_logs
from data.schema import FeatureSchema
from monitoring.performance import METRICS, realized_performance

log = logging.getLogger(__name__)

# Upper bounds of the label-lag buckets, in seconds: 1 h, 6 h, 1 d, 2 d, 3 d, 7 d, 14 d, 30 d.
LAG_BUCKETS_SECONDS = (3600, 21600, 86400, 172800, 259200, 604800, 1209600, 2592000)
# A label received this long before the previous pass may have been committed after it read it:
# a /feedback transaction lasts well under a second, and hosts' clocks (NTP) agree to
# milliseconds. Longer costs a recount of every window a burst received just before the
# previous pass touched (BENCHMARKS.md, "Late labels").
WATERMARK_MARGIN = timedelta(minutes=1)


@dataclass
class RefreshedWindow:
    """One saved window whose realized figures a pass recomputed."""

    window: tuple[datetime, datetime]
    labelled_before: int
    labelled: int
    accuracy_before: float | None
    accuracy: float | None
    label_coverage: float | None


def match_labels(conn: Connection, now: datetime) -> int:
    """Copy each unmatched label's prediction (model, version, time, score, class) onto it."""
    log_row = prediction_logs.c
    statement = (
        update(labels)
        .where(labels.c.predicted_at.is_(None), labels.c.request_id == log_row.request_id)
        .values(
            model_name=log_row.model_name,
            model_version=log_row.model_version,
            predicted_at=log_row.predicted_at,
            score=log_row.score,
            predicted_class=log_row.predicted_class,
            matched_at=now,
        )
    )
    return conn.execute(statement).rowcount


def refresh_realized(
    engine: Engine,
    schema: FeatureSchema,
    *,
    model_name: str,
    end: datetime,
    maturity_days: float,
    now: datetime | None = None,
) -> list[RefreshedWindow]:
    """Match new labels, then recompute the saved windows ending in (end - maturity_days, end]
    whose labels were matched or changed since the previous pass; oldest window first."""
    now = as_utc(now) if now else datetime.now(UTC)
    horizon = as_utc(end) - timedelta(days=maturity_days)
    with engine.begin() as conn:
        matched = match_labels(conn, now)
        rows = _saved_windows(conn, model_name, horizon, as_utc(end))
        if not rows:
            return []
        changed = _changed_hours(
            conn, model_name, _last_pass(rows), min(r["window_start"] for r in rows)
        )
        affected = [r for r in rows if _touches(r, changed)]
        refreshed = [_refresh(conn, schema, row, now) for row in affected]
    if matched or refreshed:
        log.info("labels: %d matched to their prediction; realized figures of %d earlier "
                 "window(s) refreshed", matched, len(refreshed))  # fmt: skip
    return refreshed


def realized_from_labels(
    frame: pd.DataFrame, schema: FeatureSchema, saved: dict[str, Any]
) -> dict[str, Any]:
    """A window's realized report from its labelled rows and the prediction counts its pass saved.

    `frame` holds the window's labels with their prediction's time, version, score and answered
    class (named as `read_predictions` names them); `saved` is the window's realized report as
    saved, whose per-hour, per-version and overall prediction counts stay (a pass counts the
    predictions once, when the window closes).
    """
    edges = _edges(saved)
    report = realized_performance(frame, schema, window=edges).to_dict()
    windows = {w["window_start"]: w for w in saved.get("windows") or []}
    for row in report["windows"]:
        predictions = (windows.get(row["window_start"]) or {}).get("predictions", 0)
        _set_predictions(row, predictions)
    overall = saved.get("overall") or {}
    _set_predictions(report["overall"], overall.get("predictions", 0))
    old_versions = saved.get("by_version") or {}
    for version, figures in report.get("by_version", {}).items():
        _set_predictions(figures, (old_versions.get(version) or {}).get("predictions", 0))
    for version, figures in old_versions.items():  # versions whose rows have no label yet
        report.setdefault("by_version", {}).setdefault(
            version, _unlabelled(figures.get("predictions", 0))
        )
    timestamp = schema.timestamp or "predicted_at"
    lag = (frame["labelled_at"] - frame[timestamp]).dt.total_seconds().to_numpy()
    report["label_lag"] = lag_histogram(lag)
    return report


def lag_histogram(seconds: np.ndarray) -> dict[str, Any]:
    """Label lags as cumulative bucket counts (Prometheus' `le` buckets), their sum and count.

    A label time before its prediction (a clock skew, or a label sent before the answer) counts
    as no lag."""
    seconds = np.clip(np.asarray(seconds, dtype=np.float64), 0.0, None)
    buckets = {str(bound): int((seconds <= bound).sum()) for bound in LAG_BUCKETS_SECONDS}
    return {"buckets": buckets, "sum": float(seconds.sum()), "count": int(seconds.size)}


def _saved_windows(
    conn: Connection, model_name: str, horizon: datetime, end: datetime
) -> list[dict[str, Any]]:
    table = performance_reports
    query = (
        select(
            table.c.id, table.c.model_name, table.c.window_start, table.c.window_end, table.c.report
        )
        .where(table.c.model_name == model_name)
        .where(table.c.window_end > horizon, table.c.window_end <= end)
        .order_by(table.c.window_start)
    )
    rows = []
    for row in conn.execute(query):
        found = dict(row._mapping)
        if not ((found["report"] or {}).get("realized") or {}).get("windows"):
            continue  # a window without predictions has no realized figures to refresh
        found["window_start"] = as_utc(found["window_start"])
        found["window_end"] = as_utc(found["window_end"])
        rows.append(found)
    return rows


def _last_pass(rows: list[dict[str, Any]]) -> datetime | None:
    """When the latest pass counted labels (None: never, look at all)."""
    counted = [
        as_utc(stamp)
        for row in rows
        if (stamp := ((row["report"] or {}).get("realized") or {}).get("labels_as_of"))
    ]
    return max(counted) if counted else None


def _changed_hours(
    conn: Connection, model_name: str, last_pass: datetime | None, start: datetime
) -> list[datetime]:
    """The hours (by prediction time, from `start`) holding a label matched or changed since the
    last pass, each found through its own index.

    A pass stamps `matched_at` with its own time, the one it saves as `labels_as_of`, so the
    labels it matched are exactly those after it. A label's `received_at` is the API's clock at a
    moment whose transaction may have committed after the last pass read: those of the
    WATERMARK_MARGIN before it are looked at again (recounting a window is idempotent).
    """
    hour = _hour(conn, labels.c.predicted_at).label("hour")
    base = select(hour).where(labels.c.model_name == model_name, labels.c.predicted_at >= start)
    if last_pass is None:
        query = base.distinct()
    else:
        query = union(
            base.where(labels.c.matched_at > last_pass),
            base.where(labels.c.received_at > last_pass - WATERMARK_MARGIN),
        )
    return sorted(as_utc(value) for (value,) in conn.execute(query))


def _hour(conn: Connection, column):
    """The hour a timestamp falls in, computed by the database (Postgres or SQLite)."""
    if conn.dialect.name == "postgresql":
        return func.date_trunc("hour", column)
    return func.strftime("%Y-%m-%d %H:00:00+00:00", column)


def _touches(row: dict[str, Any], hours: list[datetime]) -> bool:
    """Whether any of the changed hours overlaps the window [start, end)."""
    start, end = row["window_start"], row["window_end"]
    return any(hour + timedelta(hours=1) > start and hour < end for hour in hours)


def _refresh(
    conn: Connection, schema: FeatureSchema, row: dict[str, Any], now: datetime
) -> RefreshedWindow:
    start, end = row["window_start"], row["window_end"]
    frame = _window_labels(conn, schema, row)
    report = dict(row["report"] or {})
    saved = report.get("realized") or {}
    realized = realized_from_labels(frame, schema, saved)
    realized["labels_as_of"] = now.isoformat()
    report["realized"] = realized
    before, after = saved.get("overall") or {}, realized["overall"]
    conn.execute(
        update(performance_reports)
        .where(performance_reports.c.id == row["id"])
        .values(report=report, labelled=after["labelled"])
    )
    return RefreshedWindow(
        (start, end),
        int(before.get("labelled") or 0),
        int(after["labelled"]),
        before.get("accuracy"),
        after.get("accuracy"),
        after.get("label_coverage"),
    )


def _window_labels(conn: Connection, schema: FeatureSchema, row: dict[str, Any]) -> pd.DataFrame:
    """The window's labels with their prediction's time, version, score and answered class."""
    c = labels.c
    query = (
        select(c.model_version, c.predicted_at, c.score, c.predicted_class, c.label, c.labelled_at)
        .where(c.predicted_at >= row["window_start"], c.predicted_at < row["window_end"])
        .where(c.model_name == row["model_name"])
    )
    rows = conn.execute(query).all()
    # Column by column: a DataFrame built from the Row objects probes each of them, three times
    # slower than the read itself (BENCHMARKS.md, "Late labels").
    names = list(query.selected_columns.keys())
    found = dict(zip(names, map(list, zip(*rows, strict=True)), strict=True)) if rows else {}
    timestamp = schema.timestamp or "predicted_at"
    return pd.DataFrame(
        {
            "model_version": pd.Series(found.get("model_version", []), dtype=str),
            timestamp: pd.to_datetime(
                pd.Series(found.get("predicted_at", []), dtype=object), utc=True
            ),
            schema.score: pd.Series(found.get("score", []), dtype=float),
            schema.prediction: pd.Series(found.get("predicted_class", []), dtype=float),
            schema.target: pd.Series(found.get("label", []), dtype=float),
            "labelled_at": pd.to_datetime(
                pd.Series(found.get("labelled_at", []), dtype=object), utc=True
            ),
        }
    )


def _edges(saved: dict[str, Any]) -> list[pd.Timestamp]:
    windows = saved["windows"]
    starts = [pd.Timestamp(w["window_start"]) for w in windows]
    return [*starts, pd.Timestamp(windows[-1]["window_end"])]


def _set_predictions(figures: dict[str, Any], predictions: int) -> None:
    """Put the saved prediction count back, and the coverage it gives, into refreshed figures."""
    predictions = max(int(predictions or 0), int(figures.get("labelled") or 0))
    figures["predictions"] = predictions
    figures["label_coverage"] = figures["labelled"] / predictions if predictions else None


def _unlabelled(predictions: int) -> dict[str, Any]:
    return {
        "predictions": predictions,
        "labelled": 0,
        "label_coverage": 0.0 if predictions else None,
        **dict.fromkeys(METRICS),
        **dict.fromkeys(("tp", "fp", "fn", "tn"), 0.0),
    }


@dataclass
class MaturitySummary:
    """Where the labels stand, for the exporter: by window age, the lag, the latest mature
    window's realized figures beside the estimate made for it."""

    # Whole days between a window's end and the latest window's end -> (predictions, labelled).
    coverage_by_age: dict[int, tuple[int, int]]
    label_lag: dict[str, Any]  # lag_histogram's shape, summed over the windows
    mature_window: tuple[datetime, datetime] | None = None
    mature_realized: dict[str, Any] | None = None  # the window's realized overall figures
    mature_estimated: dict[str, Any] | None = None  # the estimate its pass made
    last_label_received: datetime | None = None


def maturity_summary(
    engine: Engine, *, model_name: str, maturity_days: float, mature_coverage: float
) -> MaturitySummary:
    """Read the saved windows of the last `maturity_days` (counted back from the latest one)."""
    table = performance_reports
    with engine.connect() as conn:
        if not all(inspect(conn).has_table(t.name) for t in (table, labels)):
            return MaturitySummary({}, lag_histogram(np.array([])))  # no pass has run yet
        latest = conn.execute(
            select(func.max(table.c.window_end)).where(table.c.model_name == model_name)
        ).scalar()
        last_label = conn.execute(select(func.max(labels.c.received_at))).scalar()
        summary = MaturitySummary(
            {},
            lag_histogram(np.array([])),
            last_label_received=as_utc(last_label) if last_label else None,
        )
        if latest is None:
            return summary
        latest = as_utc(latest)
        rows = _saved_windows(conn, model_name, latest - timedelta(days=maturity_days), latest)
    for row in rows:
        realized = row["report"].get("realized") or {}
        overall = realized.get("overall") or {}
        age = int((latest - row["window_end"]) / timedelta(days=1))
        predictions, labelled = summary.coverage_by_age.get(age, (0, 0))
        summary.coverage_by_age[age] = (
            predictions + int(overall.get("predictions") or 0),
            labelled + int(overall.get("labelled") or 0),
        )
        lag = realized.get("label_lag")
        if lag:
            for bound, count in lag["buckets"].items():
                summary.label_lag["buckets"][bound] += count
            summary.label_lag["sum"] += lag["sum"]
            summary.label_lag["count"] += lag["count"]
        coverage = overall.get("label_coverage")
        if coverage is not None and coverage >= mature_coverage:  # rows are oldest first
            summary.mature_window = (row["window_start"], row["window_end"])
            summary.mature_realized = overall
            summary.mature_estimated = (row["report"].get("estimated") or {}).get("overall")
    return summary
