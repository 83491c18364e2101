"""`/feedback`: ground truth for earlier predictions, joined later by request id.

Labels become the retraining data and the gates' hold-out, so only the label writers may send
them: each source system has its own token in LABEL_TOKENS (`source=token,...`) and sends it as
`Authorization: Bearer <token>`; a request without one, or with any other (the admin token
too), gets 401 and stores nothing; while LABEL_TOKENS is unset the endpoints answer 503.

Which label counts: the latest received. Every accepted label is appended to `label_history`
with its source, its `labelled_at` and when it was received, and `labels` keeps the one that
counts per request id, with its source. A label that differs from the one that counts (another
value, or another `labelled_at`) replaces it and moves `labels.received_at` to now; the same
label sent again (a retry: the same value with the same or no `labelled_at`) changes nothing in
`labels`, from whichever source. So `labels.received_at` is when the label that counts was
received, and "labels new or changed since T" is a range on its index. Within one batch, the
last label for a request id is the one sent.

Every valid label is stored, whichever worker answers and whether or not its prediction has
reached the log yet: the prediction may still sit in another worker's queue (for about a tenth
of a second) or in a spool waiting for the database, and ground truth is too scarce to refuse.
The answer lists the request ids whose prediction was not in the log at that moment
(`awaiting_prediction`); each such label joins its prediction as soon as the row is written. A
label still without a prediction after LABEL_MATCH_MINUTES counts as orphaned in the exporter's
`ml_labels_orphaned` (a wrong id, or a prediction that was never logged).

Bounds, each a clear 4xx that stores nothing of the request and counts in
`ml_feedback_rejected_total{reason}`: a batch over FEEDBACK_MAX_BATCH_SIZE (413); a request that
would leave more than FEEDBACK_MAX_AWAITING labels of its source waiting for their prediction
(429; those received in the last LABEL_MATCH_MINUTES whose request id is not logged), so a flood
of labels for ids that were never predicted cannot fill the table; a label other than 0 or 1,
or a malformed id (422). The awaiting bound is checked per request: requests of one source
arriving at the same instant may together pass it by at most one request's worth.

A batch is stored in one transaction. Labels are written straight to the database: if it is
down the caller gets 503 and retries, so nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from api.deps import LabelSourceDep, MetricsDep, SettingsDep
from api.instrumentation import ApiMetrics
from api.payloads import BatchFeedback, ErrorResponse, Feedback, FeedbackResponse
from api.routes import JSONBodyRoute
from data.db import get_engine, label_history, labels, prediction_logs
from data.logs import bind
from data.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/feedback", tags=["feedback"], route_class=JSONBodyRoute)

ERRORS = {
    401: {"model": ErrorResponse, "description": "no label token, or not one of LABEL_TOKENS"},
    413: {"model": ErrorResponse, "description": "batch over FEEDBACK_MAX_BATCH_SIZE"},
    429: {"model": ErrorResponse, "description": "over FEEDBACK_MAX_AWAITING unknown ids"},
    503: {
        "model": ErrorResponse,
        "description": "database unavailable (retry), or LABEL_TOKENS unset",
    },
}


class _TooManyAwaiting(Exception):
    def __init__(self, waiting: int, unknown: int) -> None:
        self.waiting, self.unknown = waiting, unknown


# The handlers bind the request ids in the request's own task, where uvicorn's lines about it
# are written too, then store in the thread pool as a plain `def` handler would.


@router.post("", response_model=FeedbackResponse, responses=ERRORS)
async def feedback(
    body: Feedback, source: LabelSourceDep, metrics: MetricsDep, settings: SettingsDep
) -> FeedbackResponse:
    """Record the true label of one earlier prediction (the latest label received for a
    request id is the one that counts; earlier ones stay in the history)."""
    bind(request_id=body.request_id)
    return await run_in_threadpool(_store, [body], source, settings, metrics)


@router.post("/batch", response_model=FeedbackResponse, responses=ERRORS)
async def feedback_batch(
    body: BatchFeedback, source: LabelSourceDep, metrics: MetricsDep, settings: SettingsDep
) -> FeedbackResponse:
    """Record up to FEEDBACK_MAX_BATCH_SIZE labels at once; all are stored or none."""
    bind(request_id=body.labels[0].request_id, request_count=len(body.labels))
    if len(body.labels) > settings.FEEDBACK_MAX_BATCH_SIZE:
        metrics.feedback_rejected("batch_too_large")
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"batch of {len(body.labels)} labels is over the limit of "
            f"{settings.FEEDBACK_MAX_BATCH_SIZE} (FEEDBACK_MAX_BATCH_SIZE); nothing stored: "
            "send it in smaller batches",
        )
    return await run_in_threadpool(_store, body.labels, source, settings, metrics)


def _store(
    items: list[Feedback], source: str, settings: Settings, metrics: ApiMetrics
) -> FeedbackResponse:
    engine = get_engine()
    latest = {item.request_id: item for item in items}  # the last label for an id wins
    ids = list(latest)
    now = datetime.now(UTC)
    history = [
        {
            "request_id": item.request_id,
            "label": item.label,
            "source": source,
            "labelled_at": item.labelled_at or now,  # UTC (the payload model's)
            "received_at": now,
        }
        for item in latest.values()
    ]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    try:
        with engine.begin() as conn:
            logged = set(
                conn.execute(
                    select(prediction_logs.c.request_id).where(
                        prediction_logs.c.request_id.in_(ids)
                    )
                ).scalars()
            )
            unknown = [request_id for request_id in ids if request_id not in logged]
            if unknown:
                _check_awaiting(conn, source, unknown, now, settings)
            before = dict(
                conn.execute(
                    select(labels.c.request_id, labels.c.label).where(labels.c.request_id.in_(ids))
                ).all()
            )
            conn.execute(insert(label_history), history)
            dated = [row for row in history if latest[row["request_id"]].labelled_at]
            undated = [row for row in history if not latest[row["request_id"]].labelled_at]
            if dated:
                conn.execute(_upsert(dialect, dated_label=True), _label_rows(dated))
            if undated:
                conn.execute(_upsert(dialect, dated_label=False), _label_rows(undated))
    except _TooManyAwaiting as over:
        metrics.feedback_rejected("unknown_request_ids")
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{over.unknown} of these labels are for request ids not in the prediction log, and "
            f"{over.waiting} labels of source {source!r} already wait for their prediction: over "
            f"FEEDBACK_MAX_AWAITING ({settings.FEEDBACK_MAX_AWAITING}); nothing stored. Check "
            "the request ids; labels of predictions still on their way are taken once those "
            f"are logged, and waiting labels stop counting after LABEL_MATCH_MINUTES "
            f"({settings.LABEL_MATCH_MINUTES})",
        ) from None
    except SQLAlchemyError as exc:
        metrics.error("feedback_database_unavailable")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"label database unavailable, nothing stored; retry: {type(exc).__name__}",
        ) from None
    flipped = sum(1 for request_id, old in before.items() if old != latest[request_id].label)
    for item in latest.values():
        metrics.feedback(item.label)
    metrics.labels_stored(source, len(history), flipped)
    if flipped:
        log.warning("source %s changed %d existing labels", source, flipped)
    log.debug("stored %d labels, %d awaiting their prediction", len(history), len(unknown))
    return FeedbackResponse(accepted=len(history), awaiting_prediction=unknown)


def _check_awaiting(
    conn: Connection, source: str, unknown: list[str], now: datetime, settings: Settings
) -> None:
    """Raise _TooManyAwaiting if storing `unknown` (ids not in the log) would leave more than
    FEEDBACK_MAX_AWAITING labels of `source` waiting for their prediction.

    Runs only for a request with unknown ids: labels of logged predictions (nearly all, days
    after them) never pay for it. It reads the source's labels of the last LABEL_MATCH_MINUTES
    through `ix_labels_received_at`; ids of this request already waiting are not counted twice.
    """
    since = now - timedelta(minutes=settings.LABEL_MATCH_MINUTES)
    logged = select(prediction_logs.c.request_id).where(
        prediction_logs.c.request_id == labels.c.request_id
    )
    waiting = conn.execute(
        select(func.count())
        .select_from(labels)
        .where(labels.c.received_at >= since, labels.c.source == source, ~logged.exists())
    ).scalar_one()
    already = conn.execute(
        select(func.count())
        .select_from(labels)
        .where(
            labels.c.request_id.in_(unknown),
            labels.c.received_at >= since,
            labels.c.source == source,
        )
    ).scalar_one()
    if waiting + len(unknown) - already > settings.FEEDBACK_MAX_AWAITING:
        raise _TooManyAwaiting(waiting, len(unknown))


def _label_rows(history: list[dict]) -> list[dict]:
    # What the sender gave; the prediction's columns are the monitoring pass's to fill.
    names = ("request_id", "label", "labelled_at", "received_at", "source")
    return [{name: row[name] for name in names} for row in history]


def _upsert(dialect, *, dated_label: bool):
    """Insert each label, or replace the one that counts when the new one differs from it: in
    value, or (when the sender dated it) in `labelled_at`. The same label again (a retry)
    leaves the row, and so its `received_at`, as it is."""
    statement = dialect.insert(labels)
    new = statement.excluded
    differs = labels.c.label != new.label
    if dated_label:
        differs = or_(differs, labels.c.labelled_at != new.labelled_at)
    return statement.on_conflict_do_update(
        index_elements=["request_id"],
        set_={
            "label": new.label,
            "labelled_at": new.labelled_at,
            "source": new.source,
            "received_at": new.received_at,
        },
        where=differs,
    )
