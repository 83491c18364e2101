"""Monitoring results in the database: the one place that writes report rows and reads them back.

`save_reports` is the function the scheduled checks call (`monitoring.window_checks`, and through it
the Airflow drift DAG): the drift, quality and performance results of one window and one model
version, written in one transaction, so that a window never has half of its results.
`latest_reports` is what the Prometheus exporter reads at scrape time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, delete, func, insert, inspect, select

from data.db import (
    as_utc,
    drift_reports,
    get_engine,
    init_db,
    labels,
    performance_reports,
    prediction_logs,
    quality_reports,
)
from monitoring.drift_report import DriftReport
from monitoring.performance import PerformanceReport
from monitoring.quality_report import QualityReport


@dataclass(frozen=True)
class SavedReports:
    """Row ids of what `save_reports` wrote (None for a report it was not given)."""

    drift_id: int | None
    quality_id: int | None
    performance_id: int | None


def save_reports(
    *,
    window: tuple[datetime, datetime],
    model_name: str,
    model_version: str | None,
    drift: DriftReport | None = None,
    quality: QualityReport | None = None,
    realized: PerformanceReport | None = None,
    estimated: PerformanceReport | None = None,
    engine: Engine | None = None,
) -> SavedReports:
    """Write the reports of the window [start, end) for one model version in one transaction.

    Creates the tables if missing. Naive datetimes are taken as UTC. Realized and estimated
    performance share one `performance_reports` row. A window already saved for the model is
    replaced, report by report, in the same transaction: an Airflow task re-run over the same
    data interval leaves one row per window, never two. Raises ValueError, before writing
    anything, for an empty or reversed window, a missing model name, or nothing to save.
    """
    start, end = (as_utc(moment) for moment in window)
    if start >= end:
        raise ValueError(f"window start {start.isoformat()} is not before end {end.isoformat()}")
    if not model_name:
        raise ValueError("model_name is required")
    if drift is None and quality is None and realized is None and estimated is None:
        raise ValueError("nothing to save: give a drift, quality or performance report")
    common = {
        "window_start": start,
        "window_end": end,
        "model_name": model_name,
        "model_version": model_version,
    }
    engine = engine or get_engine()
    init_db(engine)  # a six-hourly job can afford the check; the first run creates the tables
    with engine.begin() as conn:

        def add(table: Table, values: dict[str, Any]) -> int:
            conn.execute(
                delete(table).where(
                    table.c.model_name == model_name,
                    table.c.window_start == start,
                    table.c.window_end == end,
                )
            )
            return conn.execute(insert(table).values(**common, **values)).inserted_primary_key[0]

        drift_id = quality_id = performance_id = None
        if drift is not None:
            drift_id = add(
                drift_reports,
                {
                    "rows_reference": drift.rows_reference,
                    "rows_current": drift.rows_current,
                    "drifted_share": drift.drifted_share,
                    "dataset_drift": drift.dataset_drift,
                    "prediction_drift": bool(drift.prediction.drifted),
                    "report": drift.to_dict(),
                },
            )
        if quality is not None:
            quality_id = add(
                quality_reports,
                {
                    "rows": quality.rows,
                    "hard_failures": quality.hard_failures,
                    "soft_warnings": quality.soft_warnings,
                    "passed": quality.passed,
                    "report": quality.to_dict(),
                },
            )
        if realized is not None or estimated is not None:
            counts = (realized or estimated).overall
            performance_id = add(
                performance_reports,
                {
                    "predictions": int(counts.get("predictions") or 0),
                    "labelled": int(realized.overall.get("labelled") or 0) if realized else 0,
                    "report": {
                        "realized": realized.to_dict() if realized else None,
                        "estimated": estimated.to_dict() if estimated else None,
                    },
                },
            )
    return SavedReports(drift_id, quality_id, performance_id)


@dataclass(frozen=True)
class LatestReports:
    """The newest row of each report table (a dict of its columns), None where there is none."""

    drift: dict[str, Any] | None
    quality: dict[str, Any] | None
    performance: dict[str, Any] | None


def latest_reports(model_name: str | None = None, engine: Engine | None = None) -> LatestReports:
    """The most recent window's reports (by window end, then insertion), optionally per model.

    A table that does not exist yet (no monitoring pass has run) reads as no report.
    """
    engine = engine or get_engine()

    def newest(table: Table) -> dict[str, Any] | None:
        if not inspect(conn).has_table(table.name):
            return None
        query = select(table).order_by(table.c.window_end.desc(), table.c.id.desc()).limit(1)
        if model_name is not None:
            query = query.where(table.c.model_name == model_name)
        row = conn.execute(query).first()
        if row is None:
            return None
        values = dict(row._mapping)
        for column in ("created_at", "window_start", "window_end"):
            values[column] = as_utc(values[column])
        return values

    with engine.connect() as conn:
        return LatestReports(
            newest(drift_reports), newest(quality_reports), newest(performance_reports)
        )


def orphaned_labels(older_than: datetime, engine: Engine | None = None) -> int:
    """Labels received before `older_than` whose prediction is not in the log: a wrong request
    id, or a prediction that never reached the log (`/feedback` stores labels either way)."""
    engine = engine or get_engine()
    with engine.connect() as conn:
        if not inspect(conn).has_table(labels.name):
            return 0
        logged = select(prediction_logs.c.request_id).where(
            prediction_logs.c.request_id == labels.c.request_id
        )
        query = (
            select(func.count())
            .select_from(labels)
            .where(labels.c.received_at < older_than, ~logged.exists())
        )
        return int(conn.execute(query).scalar_one())
