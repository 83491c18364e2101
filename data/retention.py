"""Retention of the prediction log: rows older than PREDICTION_RETENTION_DAYS go, in batches.

The log grows by every prediction served; the maintenance DAG keeps it bounded. Rows go in
batches of a fixed number of request ids, one short transaction each, oldest first, with their
labels: a batch holds its locks for milliseconds, so the API's logging (COPY into the same
table) never waits behind a delete of a whole day. Partitioning the table by day would make the
delete a `DROP` of a partition, but Postgres requires the partition key in every unique key,
and the prediction log's exactly-once logging rests on `request_id` alone being the key.
Labels whose prediction never reached the log go too once they are older than the cut-off, and
with every label its history (`label_history`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from data.db import as_utc, get_engine, init_db, label_history, labels, prediction_logs
from data.settings import Settings


def purge_expired(now: datetime, settings: Settings) -> dict[str, Any]:
    """The maintenance DAG's task: delete what is older than PREDICTION_RETENTION_DAYS before
    `now`, in batches of PREDICTION_RETENTION_BATCH rows."""
    return delete_predictions_before(
        as_utc(now) - timedelta(days=settings.PREDICTION_RETENTION_DAYS),
        batch_size=settings.PREDICTION_RETENTION_BATCH,
        url=settings.database_url,
    )


def delete_predictions_before(
    before: datetime, *, batch_size: int = 5_000, url: str | None = None
) -> dict[str, Any]:
    """Delete log rows with `predicted_at < before` and their labels; returns the counts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    before = as_utc(before)
    engine = get_engine(url)
    init_db(engine)
    started = time.perf_counter()
    deleted_rows = deleted_labels = batches = 0
    while True:
        with engine.begin() as conn:
            ids = (
                select(prediction_logs.c.request_id)
                .where(prediction_logs.c.predicted_at < before)
                .order_by(prediction_logs.c.predicted_at)
                .limit(batch_size)
            )
            batch = [row[0] for row in conn.execute(ids)]
            if not batch:
                break
            deleted_labels += conn.execute(
                delete(labels).where(labels.c.request_id.in_(batch))
            ).rowcount
            conn.execute(delete(label_history).where(label_history.c.request_id.in_(batch)))
            deleted_rows += conn.execute(
                delete(prediction_logs).where(prediction_logs.c.request_id.in_(batch))
            ).rowcount
            batches += 1
    with engine.begin() as conn:
        logged = select(prediction_logs.c.request_id).where(
            prediction_logs.c.request_id == labels.c.request_id
        )
        orphans = conn.execute(
            delete(labels).where(labels.c.received_at < before, ~logged.exists())
        ).rowcount
        logged_history = select(prediction_logs.c.request_id).where(
            prediction_logs.c.request_id == label_history.c.request_id
        )
        conn.execute(
            delete(label_history).where(
                label_history.c.received_at < before, ~logged_history.exists()
            )
        )
    return {
        "before": before.isoformat(),
        "deleted_predictions": deleted_rows,
        "deleted_labels": deleted_labels + orphans,
        "batches": batches,
        "seconds": round(time.perf_counter() - started, 3),
    }
