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

import logging
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from api.deps import MetricsDep
from api.instrumentation import ApiMetrics
from api.payloads import BatchFeedback, ErrorResponse, Feedback, FeedbackResponse
from api.routes import JSONBodyRoute
from data.db import get_engine, labels, prediction_logs
from data.logs import bind

log = logging.getLogger(__name__)

router = APIRouter(prefix="/feedback", tags=["feedback"], route_class=JSONBodyRoute)

ERRORS = {503: {"model": ErrorResponse, "description": "database unavailable; retry"}}


# The handlers bind the request ids in the request's own task, where uvicorn's lines about it
# are written too, then store in the thread pool as a plain `def` handler would.


@router.post("", response_model=FeedbackResponse, responses=ERRORS)
async def feedback(body: Feedback, metrics: MetricsDep) -> FeedbackResponse:
    """Record the true label of one earlier prediction."""
    bind(request_id=body.request_id)
    return await run_in_threadpool(_store, [body], metrics)


@router.post("/batch", response_model=FeedbackResponse, responses=ERRORS)
async def feedback_batch(body: BatchFeedback, metrics: MetricsDep) -> FeedbackResponse:
    """Record many labels at once; all are stored or none."""
    bind(request_id=body.labels[0].request_id, request_count=len(body.labels))
    return await run_in_threadpool(_store, body.labels, metrics)


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
    log.debug("stored %d labels, %d awaiting their prediction", len(rows), len(awaiting))
    return FeedbackResponse(accepted=len(rows), awaiting_prediction=awaiting)
