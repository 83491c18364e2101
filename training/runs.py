"""Training runs as the loop records them: one `training_runs` row per run, opened and closed.

The retrain policy opens a run when it decides to retrain (in the same transaction as its
decision, so the next decision's guards see it); a scheduled or manual training opens its own.
The training DAG closes it with what came of it: promoted, challenger, rejected or failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, inspect, select, update

from data.db import as_utc, get_engine, init_db, training_runs

RUNNING = "running"
FAILED = "failed"
OUTCOMES = ("promoted", "challenger", "rejected", FAILED)


def start_training_run(
    conn: Connection,
    *,
    model_name: str,
    requested_at: datetime,
    trigger: str,
    reason: str,
    data_window: tuple[datetime, datetime] | None = None,
    external_id: str | None = None,
) -> int:
    """Write a `training_runs` row in status running; returns its id."""
    data_start, data_end = data_window or (None, None)
    return conn.execute(
        insert(training_runs).values(
            requested_at=as_utc(requested_at),
            model_name=model_name,
            trigger=trigger,
            reason=reason,
            status=RUNNING,
            data_start=data_start,
            data_end=data_end,
            external_id=external_id,
        )
    ).inserted_primary_key[0]


def finish_training_run(
    run_id: int,
    status: str,
    *,
    finished_at: datetime,
    version: str | None = None,
    details: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> None:
    """Close a training run: promoted | challenger | rejected | failed."""
    engine = engine or get_engine()
    with engine.begin() as conn:
        conn.execute(
            update(training_runs)
            .where(training_runs.c.id == run_id)
            .values(
                status=status,
                finished_at=as_utc(finished_at),
                version=version,
                details=times_as_text(details) if details is not None else None,
            )
        )


def claim_training_run(run_id: int, external_id: str, engine: Engine | None = None) -> bool:
    """Record which Airflow run took the policy's training run over; False if there is no such
    run."""
    engine = engine or get_engine()
    with engine.begin() as conn:
        changed = conn.execute(
            update(training_runs)
            .where(training_runs.c.id == run_id)
            .values(external_id=external_id)
        ).rowcount
    return changed == 1


def training_run(run_id: int, engine: Engine | None = None) -> dict[str, Any] | None:
    engine = engine or get_engine()
    with engine.connect() as conn:
        row = conn.execute(select(training_runs).where(training_runs.c.id == run_id)).first()
    return with_utc_times(dict(row._mapping)) if row else None


def open_training_run(*, engine: Engine | None = None, **run: Any) -> int:
    """`start_training_run(**run)` in its own transaction (a scheduled or manual training)."""
    engine = engine or get_engine()
    init_db(engine)
    with engine.begin() as conn:
        return start_training_run(conn, **run)


@dataclass(frozen=True)
class RunsSummary:
    """What the exporter shows of a model's training runs."""

    finished: dict[str, int]  # closed runs by outcome, every outcome present (0 when none)
    running: int
    last_finished: dict[str, Any] | None  # the newest closed run's row (by finished_at, id)


def runs_summary(model_name: str, engine: Engine | None = None) -> RunsSummary:
    """Closed runs by outcome, runs still running, and the newest closed run, for one model.

    A closed run's status never changes again, so the counts by outcome only grow (the
    maintenance DAG's retention leaves this table alone). No table yet reads as no runs.
    """
    engine = engine or get_engine()
    with engine.connect() as conn:
        if not inspect(conn).has_table(training_runs.name):
            return RunsSummary(dict.fromkeys(OUTCOMES, 0), 0, None)
        mine = training_runs.c.model_name == model_name
        counts = dict(
            conn.execute(
                select(training_runs.c.status, func.count()).where(mine).group_by("status")
            ).all()
        )
        last = conn.execute(
            select(training_runs)
            .where(mine, training_runs.c.status.in_(OUTCOMES))
            .order_by(training_runs.c.finished_at.desc().nulls_last(), training_runs.c.id.desc())
            .limit(1)
        ).first()
    return RunsSummary(
        finished={outcome: int(counts.get(outcome, 0)) for outcome in OUTCOMES},
        running=int(counts.get(RUNNING, 0)),
        last_finished=with_utc_times(dict(last._mapping)) if last else None,
    )


def times_as_text(value: Any) -> Any:
    """Datetimes as ISO text, tuples as lists: what a JSON column takes."""
    if isinstance(value, dict):
        return {key: times_as_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [times_as_text(item) for item in value]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return value


def with_utc_times(row: dict[str, Any]) -> dict[str, Any]:
    """A `training_runs` row with its times as aware UTC datetimes (SQLite gives them naive)."""
    for key in ("created_at", "requested_at", "finished_at", "data_start", "data_end"):
        if row.get(key) is not None:
            row[key] = as_utc(row[key])
    return row
