"""The FastAPI application: builds the app, wires middleware and routers, runs the lifespan.

    uvicorn api.main:app              # one process, for development
    python -m api.serve               # production: several workers, multiprocess metrics

The lifespan creates the tables if missing, starts the prediction logger, loads the
`@champion` model (the API starts without one and answers /ready with 503 until it can) and
polls the alias for new versions. On shutdown (SIGTERM) it stops polling and drains the logger.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.types import ASGIApp, Receive, Scope, Send
from threadpoolctl import threadpool_limits

from api.idempotency import RecentRequests
from api.instrumentation import ApiMetrics, http_instrumentation, mark_worker_dead
from api.logger import DisabledLogger, PredictionLogger
from api.predictor import Predictor
from api.routes import feedback, health, logs, metrics, model, predict
from data.db import get_engine, init_db, use_statement_timeout
from data.schema import load_schema
from data.settings import get_settings
from training.registry import ModelRefused

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # One OpenMP/BLAS thread per worker: the workers already fill the cores, and a batch's
    # threads waiting for a core busy with another worker cost p99 spikes of ~0.9 s here.
    threadpool_limits(1)
    try:
        init_db(get_engine())
    except Exception as exc:  # a database outage must not keep predictions from being served
        log.error("could not create the tables (the logger will spool until it can): %s", exc)
    # The tables were made under the general statement timeout (an upgrade may build an index
    # on a large table); the API's own statements take milliseconds and get the short one.
    use_statement_timeout(settings.API_DATABASE_STATEMENT_TIMEOUT_SECONDS)
    api_metrics: ApiMetrics = app.state.metrics
    if settings.API_MONITORING:
        spool = settings.path(settings.PREDICTION_SPOOL_DIR)
        logger: PredictionLogger | DisabledLogger = PredictionLogger(
            spool,
            metrics=api_metrics,
            journal=settings.PREDICTION_JOURNAL,
            on_tick=api_metrics.flush,
        )
        api_metrics.watch_spool(spool)  # the disk the spool fills (MLSpoolDiskFilling)
    else:
        logger = DisabledLogger()
    app.state.logger = logger.start()

    def served(loaded) -> None:
        api_metrics.model_served(loaded.name, loaded.version, loaded.scorer.kind)

    predictor = Predictor.from_settings(
        settings,
        app.state.schema,
        on_load=served,
        on_refuse=lambda refusal: api_metrics.model_refused(refusal.kind),
        on_refused_state=api_metrics.champion_refused_now,
    )
    app.state.predictor = predictor
    try:
        predictor.load_champion()
        api_metrics.reload("changed")
    except ModelRefused:
        api_metrics.reload("refused")  # logged and counted by the predictor; /ready says why
    except Exception:
        api_metrics.reload("failed")  # logged by the predictor; /ready says why
    predictor.start_polling(settings.MODEL_POLL_SECONDS)
    # Everything loaded so far (the model, pandas, sklearn) lives as long as the worker: keep
    # it out of the garbage collector's scans, which otherwise show up as p99 spikes.
    gc.freeze()
    try:
        yield
    finally:
        predictor.stop_polling()
        logger.close()
        use_statement_timeout(None)
        mark_worker_dead(os.getpid())


class BodySizeLimit:
    """413 for a request body over MAX_BODY_BYTES, declared or streamed, before it is parsed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = f"{self.max_bytes} bytes (MAX_BODY_BYTES)"
        response = JSONResponse(
            {"detail": f"request body is over the limit of {limit}"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 whose `detail` names every offending field in one sentence, plus the raw errors."""
    errors = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"] if part != "body")
        errors.append({"field": field, "message": error["msg"], "type": error["type"]})
    request.app.state.metrics.error("validation", 1)
    if request.url.path.startswith("/feedback"):
        request.app.state.metrics.feedback_rejected("invalid")
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors[:10])
    return JSONResponse(
        {"detail": detail, "errors": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


def create_app() -> FastAPI:
    settings = get_settings()
    settings.require_api_secrets()
    schema = load_schema(settings.path(settings.FEATURE_SCHEMA))
    app = FastAPI(
        title="ML model monitoring: inference API",
        summary=f"Serves models:/{settings.MODEL_NAME}@champion for the {schema.name!r} schema",
        version="1.0",
        lifespan=lifespan,
    )
    app.state.schema = schema
    app.state.metrics = ApiMetrics(
        settings.ENVIRONMENT, [f.name for f in schema.numerical], enabled=settings.API_MONITORING
    )
    app.state.metrics.label_sources(settings.label_tokens)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(health.router)
    app.include_router(
        predict.build_router(
            schema, settings.CATEGORICAL_MAX_LENGTH, RecentRequests(settings.REQUEST_ID_CACHE_SIZE)
        )
    )
    app.include_router(feedback.router)
    app.include_router(model.router)
    app.include_router(logs.router)
    app.include_router(metrics.router)
    if settings.API_MONITORING:
        instrumentator = Instrumentator(
            excluded_handlers=["/metrics"], should_group_status_codes=False
        )
        instrumentator.add(http_instrumentation(settings.ENVIRONMENT))
        instrumentator.instrument(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.MAX_BODY_BYTES)
    return app


app = create_app()
