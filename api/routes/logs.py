"""`/logs` (admin): the prediction log for a time window, newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from api.deps import AdminDep
from api.payloads import ErrorResponse
from data.db import as_utc, get_engine, labels, prediction_logs

router = APIRouter(prefix="/logs", tags=["admin"], dependencies=[AdminDep])

MAX_ROWS = 1_000


@router.get("", responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
def prediction_log(
    start: Annotated[datetime | None, Query(description="inclusive; default: end − 1 hour")] = None,
    end: Annotated[datetime | None, Query(description="exclusive; default: now")] = None,
    model_version: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 100,
) -> dict:
    """Logged predictions with `start <= predicted_at < end`, with their label if one arrived."""
    try:
        end = as_utc(end) if end else datetime.now(UTC)
        start = as_utc(start) if start else end - timedelta(hours=1)
    except OverflowError:
        # e.g. end=0001-01-01T00:00Z has no hour before it; 9999-12-31T23:00-05:00 no UTC form.
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "start/end are outside the representable range"
        ) from None
    if start >= end:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "start must be before end")
    log = prediction_logs
    query = (
        select(log, labels.c.label)
        .select_from(log.outerjoin(labels, labels.c.request_id == log.c.request_id))
        .where(log.c.predicted_at >= start, log.c.predicted_at < end)
        .order_by(log.c.predicted_at.desc(), log.c.request_id.desc())
        .limit(limit)
    )
    if model_version:
        query = query.where(log.c.model_version == model_version)
    with get_engine().connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        row["predicted_at"] = as_utc(row["predicted_at"]).isoformat()
    return {"start": start.isoformat(), "end": end.isoformat(), "count": len(rows), "rows": rows}
