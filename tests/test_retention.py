"""Retention of the prediction log (`data.retention`): what goes, what stays, in how many batches.

Every case has rows on both sides of the cut-off, and some exactly at it: a row or label stamped
at the cut-off is not older than it and stays, so a `<=` where `<` belongs fails here.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from api.logger import PredictionLogger, PredictionRecord
from data.db import get_engine, init_db, label_history, labels, prediction_logs
from data.retention import delete_predictions_before, purge_expired
from tools.testkit.databases import store_settings

CUT = datetime(2026, 6, 1, tzinfo=UTC)


def record(request_id: str, at: datetime) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        predicted_at=at,
        model_name="fraud-detector",
        model_version="1",
        features={"amount": 12.5, "merchant_category": "travel", "is_foreign": 0.0},
        predicted_class=0,
        score=0.01,
        latency_ms=0.1,
    )


def log_predictions(url: str, rows: list[PredictionRecord], tmp_path) -> None:
    """Write `rows` the way the API does (the logger's COPY on Postgres, insert on SQLite)."""
    init_db(get_engine(url))
    logger = PredictionLogger(tmp_path / "spool", url=url, journal=False)
    for start in range(0, len(rows), 1_000):
        logger.write(rows[start : start + 1_000])
    logger._disconnect()


def add_labels(url: str, received: dict[str, datetime]) -> None:
    rows = [
        {"request_id": rid, "label": 1, "labelled_at": at, "received_at": at}
        for rid, at in received.items()
    ]
    with get_engine(url).begin() as conn:
        conn.execute(insert(labels), rows)
        # Their history, as /feedback appends it: an earlier label and the one that counts.
        history = [row | {"source": "tests"} for row in rows]
        conn.execute(insert(label_history), history + [r | {"label": 0} for r in history])


def logged(url: str) -> set[str]:
    with get_engine(url).connect() as conn:
        return set(conn.execute(select(prediction_logs.c.request_id)).scalars())


def labelled(url: str) -> set[str]:
    """The request ids with a label; their history goes and stays with them."""
    with get_engine(url).connect() as conn:
        ids = set(conn.execute(select(labels.c.request_id)).scalars())
        history = list(conn.execute(select(label_history.c.request_id)).scalars())
    assert sorted(history) == sorted(list(ids) * 2)
    return ids


def test_old_rows_go_with_their_labels_and_newer_ones_stay(database_url, tmp_path):
    old = [record(f"old-{i}", CUT - timedelta(days=3, minutes=i)) for i in range(20)]
    edge = [
        record("just-before", CUT - timedelta(microseconds=1)),
        record("at-cut", CUT),
        record("just-after", CUT + timedelta(microseconds=1)),
    ]
    new = [record(f"new-{i}", CUT + timedelta(hours=1, minutes=i)) for i in range(15)]
    log_predictions(database_url, old + edge + new, tmp_path)
    add_labels(
        database_url,
        {
            # Labels of old predictions: they go whenever they arrived, even after the cut-off.
            **{f"old-{i}": CUT - timedelta(days=2) for i in range(0, 20, 2)},
            "old-1": CUT + timedelta(days=1),
            "just-before": CUT + timedelta(hours=2),
            # Labels of kept predictions stay, also one received before the cut-off.
            "at-cut": CUT,
            "new-0": CUT - timedelta(days=10),
            **{f"new-{i}": CUT + timedelta(hours=3) for i in range(1, 15, 3)},
        },
    )

    result = delete_predictions_before(CUT, batch_size=1_000, url=database_url)

    kept = {"at-cut", "just-after"} | {f"new-{i}" for i in range(15)}
    assert logged(database_url) == kept
    assert labelled(database_url) == {"at-cut", "new-0"} | {f"new-{i}" for i in range(1, 15, 3)}
    assert result["deleted_predictions"] == 21  # 20 old + just-before
    assert result["deleted_labels"] == 12  # 10 + old-1 + just-before
    assert result["batches"] == 1
    assert result["before"] == CUT.isoformat()
    # The kept rows are untouched, values and all.
    with get_engine(database_url).connect() as conn:
        row = conn.execute(
            select(prediction_logs).where(prediction_logs.c.request_id == "new-3")
        ).one()
    assert row.features == new[3].features
    assert (row.model_name, row.score, row.latency_ms) == ("fraud-detector", 0.01, 0.1)


def test_orphaned_labels_older_than_the_cut_off_go_newer_orphans_stay(database_url, tmp_path):
    log_predictions(
        database_url,
        [record("old", CUT - timedelta(days=1)), record("new", CUT + timedelta(days=1))],
        tmp_path,
    )
    add_labels(
        database_url,
        {
            "orphan-old-1": CUT - timedelta(days=5),
            "orphan-old-2": CUT - timedelta(microseconds=1),
            "orphan-at-cut": CUT,
            "orphan-new": CUT + timedelta(minutes=1),
            "new": CUT - timedelta(days=3),  # not an orphan: its prediction is kept
        },
    )

    result = delete_predictions_before(CUT, url=database_url)

    assert logged(database_url) == {"new"}
    assert labelled(database_url) == {"orphan-at-cut", "orphan-new", "new"}
    assert result["deleted_predictions"] == 1
    assert result["deleted_labels"] == 2
    assert result["batches"] == 1


def test_small_batches_delete_everything_oldest_first(database_url, tmp_path):
    old = [record(f"old-{i:03}", CUT - timedelta(hours=1, seconds=i)) for i in range(100)]
    new = [record(f"new-{i}", CUT + timedelta(seconds=i)) for i in range(10)]
    log_predictions(database_url, old + new, tmp_path)
    add_labels(database_url, {f"old-{i:03}": CUT for i in range(0, 100, 5)})

    result = delete_predictions_before(CUT, batch_size=7, url=database_url)

    assert result["batches"] == math.ceil(100 / 7) == 15
    assert result["deleted_predictions"] == 100
    assert result["deleted_labels"] == 20
    assert logged(database_url) == {f"new-{i}" for i in range(10)}
    assert labelled(database_url) == set()


def test_a_batch_that_divides_the_rows_exactly(database_url, tmp_path):
    log_predictions(
        database_url,
        [record(f"old-{i}", CUT - timedelta(minutes=i + 1)) for i in range(20)],
        tmp_path,
    )
    result = delete_predictions_before(CUT, batch_size=5, url=database_url)
    assert (result["deleted_predictions"], result["batches"]) == (20, 4)
    assert logged(database_url) == set()


def test_oldest_rows_go_first(database_url, tmp_path, monkeypatch):
    """A run cut short (the task killed, a deploy) has removed the oldest rows, not any rows."""
    rows = [record(f"r-{i:02}", CUT - timedelta(hours=i + 1)) for i in range(30)]
    log_predictions(database_url, rows, tmp_path)  # newest first in the table's heap
    import data.retention as retention

    engine = get_engine(database_url)
    real_begin = engine.begin
    calls = 0

    class Stop(Exception):
        pass

    def begin_twice():  # two batches, then the task is killed
        nonlocal calls
        calls += 1
        if calls > 2:
            raise Stop
        return real_begin()

    monkeypatch.setattr(retention, "init_db", lambda engine: None)  # the tables are there
    monkeypatch.setattr(engine, "begin", begin_twice)
    with pytest.raises(Stop):
        delete_predictions_before(CUT, batch_size=4, url=database_url)
    monkeypatch.undo()
    # The 8 oldest (hours 23..30 before the cut) went in two batches of 4.
    assert logged(database_url) == {f"r-{i:02}" for i in range(22)}


def test_nothing_to_delete_is_a_clean_zero(database_url, tmp_path):
    log_predictions(
        database_url, [record("new", CUT), record("newer", CUT + timedelta(1))], tmp_path
    )
    add_labels(database_url, {"new": CUT, "orphan": CUT + timedelta(days=1)})
    result = delete_predictions_before(CUT, batch_size=10, url=database_url)
    assert {k: result[k] for k in ("deleted_predictions", "deleted_labels", "batches")} == {
        "deleted_predictions": 0,
        "deleted_labels": 0,
        "batches": 0,
    }
    assert result["seconds"] >= 0
    assert logged(database_url) == {"new", "newer"}
    assert labelled(database_url) == {"new", "orphan"}


def test_an_empty_database_is_a_clean_zero_too(database_url):
    result = delete_predictions_before(CUT, url=database_url)  # creates the tables if missing
    assert (result["deleted_predictions"], result["deleted_labels"], result["batches"]) == (0, 0, 0)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_bad_batch_size_is_a_clear_error(batch_size, database_url, tmp_path):
    log_predictions(database_url, [record("old", CUT - timedelta(days=1))], tmp_path)
    with pytest.raises(ValueError, match=f"batch_size must be at least 1, got {batch_size}"):
        delete_predictions_before(CUT, batch_size=batch_size, url=database_url)
    assert logged(database_url) == {"old"}  # refused before touching anything


def test_a_naive_cut_off_is_taken_as_utc(database_url, tmp_path, monkeypatch):
    """Naive means UTC, not the machine's or the database session's zone: both are set far
    from UTC here, so reading the cut-off in either would move it by hours."""
    monkeypatch.setenv("TZ", "America/New_York")  # this process's local time: UTC-4 in June
    monkeypatch.setenv("PGTZ", "Pacific/Auckland")  # the Postgres session's zone: UTC+12
    time.tzset()
    try:
        log_predictions(
            database_url,
            [
                record("hour-before", CUT - timedelta(hours=1)),
                record("hour-after", CUT + timedelta(hours=1)),
            ],
            tmp_path,
        )
        add_labels(
            database_url,
            {
                "orphan-hour-before": CUT - timedelta(hours=1),
                "orphan-hour-after": CUT + timedelta(hours=1),
            },
        )
        result = delete_predictions_before(CUT.replace(tzinfo=None), url=database_url)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert logged(database_url) == {"hour-after"}
    assert labelled(database_url) == {"orphan-hour-after"}
    assert result["before"] == "2026-06-01T00:00:00+00:00"


def test_the_maintenance_task_passes_the_settings_batch(tmp_path, database_url):
    """`purge_expired` (maintenance_dag's task) cuts at PREDICTION_RETENTION_DAYS and deletes in
    batches of PREDICTION_RETENTION_BATCH."""
    log_predictions(
        database_url,
        [record(f"old-{i}", CUT - timedelta(minutes=i + 1)) for i in range(9)],
        tmp_path,
    )
    settings = store_settings(
        tmp_path,
        DATABASE_URL=database_url,
        PREDICTION_RETENTION_BATCH=4,
        PREDICTION_RETENTION_DAYS=2,
    )
    result = purge_expired((CUT + timedelta(days=2)).replace(tzinfo=None), settings)
    assert (result["deleted_predictions"], result["batches"]) == (9, 3)
    assert logged(database_url) == set()
