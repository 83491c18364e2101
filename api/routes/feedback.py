"""`/feedback`: ground truth for earlier predictions, joined later by request id.

A label for a request id that was never predicted is refused with 404 (naming the ids), and a
batch is all-or-nothing, so a caller never has to guess which labels were kept. A label sent
again replaces the earlier one. Labels are written straight to the database: if it is down the
caller gets 503 and retries, so nothing is acknowledged that is not stored.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from api.deps import LoggerDep, MetricsDep
from api.logger import PredictionLogger
from api.metrics import ApiMetrics
from api.routes import JSONBodyRoute
from api.schemas import BatchFeedback, ErrorResponse, Feedback, FeedbackResponse
from data.db import get_engine, labels, prediction_logs

router = APIRouter(prefix="/feedback", tags=["feedback"], route_class=JSONBodyRoute)

ERRORS = {
    404: {"model": ErrorResponse, "description": "unknown request id(s)"},
    503: {"model": ErrorResponse, "description": "database unavailable; retry"},
}


@router.post("", response_model=FeedbackResponse, responses=ERRORS)
def feedback(body: Feedback, logger: LoggerDep, metrics: MetricsDep) -> FeedbackResponse:
    """Record the true label of one earlier prediction."""
    return _store([body], logger, metrics)


@router.post("/batch", response_model=FeedbackResponse, responses=ERRORS)
def feedback_batch(body: BatchFeedback, logger: LoggerDep, metrics: MetricsDep) -> FeedbackResponse:
    """Record many labels at once; all are stored or none."""
    return _store(body.labels, logger, metrics)


def _store(
    items: list[Feedback], logger: PredictionLogger, metrics: ApiMetrics
) -> FeedbackResponse:
    engine = get_engine()
    latest = {item.request_id: item for item in items}  # the last label for an id wins
    now = datetime.now(UTC)
    rows = [
        {
            "request_id": item.request_id,
            "label": item.label,
            "labelled_at": item.labelled_at or now,
            "received_at": now,
        }
        for item in latest.values()
    ]
    try:
        with engine.begin() as conn:
            known = set(
                conn.execute(
                    select(prediction_logs.c.request_id).where(
                        prediction_logs.c.request_id.in_(list(latest))
                    )
                ).scalars()
            )
            unknown = [rid for rid in latest if rid not in known and not logger.is_pending(rid)]
            if unknown:
                metrics.error("feedback_unknown_request_id", len(unknown))
                shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
                raise HTTPException(
                    status.HTTP_404_NOT_FOUND,
                    f"no prediction with request_id {shown}; nothing was stored",
                )
            dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
            statement = dialect.insert(labels)
            statement = statement.on_conflict_do_update(
                index_elements=["request_id"],
                set_={
                    "label": statement.excluded.label,
                    "labelled_at": statement.excluded.labelled_at,
                },
            )
            conn.execute(statement, rows)
    except SQLAlchemyError as exc:
        metrics.error("feedback_database_unavailable")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"label database unavailable, nothing stored; retry: {type(exc).__name__}",
        ) from None
    for item in latest.values():
        metrics.feedback(item.label)
    return FeedbackResponse(accepted=len(rows))
