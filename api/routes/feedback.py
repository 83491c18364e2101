"""`/feedback`: ground truth for earlier predictions, joined later by request id.

Every valid label is stored, whichever worker answers and whether or not its prediction has
reached the log yet: the prediction may still sit in another worker's queue (for about a tenth
of a second) or in a spool waiting for the database, and ground truth is too scarce to refuse.
The answer lists the request ids whose prediction was not in the log at that moment
(`awaiting_prediction`); each such label joins its prediction as soon as the row is written. A
label still without a prediction after LABEL_MATCH_MINUTES counts as orphaned in the exporter's
`ml_labels_orphaned` (a wrong id, or a prediction that was never logged). A label sent again
replaces the earlier one. A batch is stored in one transaction. Labels are written straight to
the database: if it is down the caller gets 503 and retries, so nothing is acknowledged that is
not stored.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from api.deps import MetricsDep
from api.instrumentation import ApiMetrics
from api.payloads import BatchFeedback, ErrorResponse, Feedback, FeedbackResponse
from api.routes import JSONBodyRoute
from data.db import get_engine, labels, prediction_logs

router = APIRouter(prefix="/feedback", tags=["feedback"], route_class=JSONBodyRoute)

ERRORS = {503: {"model": ErrorResponse, "description": "database unavailable; retry"}}


@router.post("", response_model=FeedbackResponse, responses=ERRORS)
def feedback(body: Feedback, metrics: MetricsDep) -> FeedbackResponse:
    """Record the true label of one earlier prediction."""
    return _store([body], metrics)


@router.post("/batch", response_model=FeedbackResponse, responses=ERRORS)
def feedback_batch(body: BatchFeedback, metrics: MetricsDep) -> FeedbackResponse:
    """Record many labels at once; all are stored or none."""
    return _store(body.labels, metrics)


def _store(items: list[Feedback], metrics: ApiMetrics) -> FeedbackResponse:
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
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(labels)
    statement = statement.on_conflict_do_update(
        index_elements=["request_id"],
        set_={"label": statement.excluded.label, "labelled_at": statement.excluded.labelled_at},
    )
    try:
        with engine.begin() as conn:
            conn.execute(statement, rows)
            logged = set(
                conn.execute(
                    select(prediction_logs.c.request_id).where(
                        prediction_logs.c.request_id.in_(list(latest))
                    )
                ).scalars()
            )
    except SQLAlchemyError as exc:
        metrics.error("feedback_database_unavailable")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"label database unavailable, nothing stored; retry: {type(exc).__name__}",
        ) from None
    for item in latest.values():
        metrics.feedback(item.label)
    awaiting = [request_id for request_id in latest if request_id not in logged]
    return FeedbackResponse(accepted=len(rows), awaiting_prediction=awaiting)
