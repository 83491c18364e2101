"""`/predict` and `/predict/batch`: validate, score with the served model, count, log.

A request id the caller gave is remembered by the worker (`api.idempotency`): sent again with
other features it is a 409, with the same features the first answer comes back again.

Handlers are `async def` on purpose: scoring one request takes about 50 µs, far less than the
hop to a worker thread that a plain `def` handler would cost on every request.
"""
# No `from __future__ import annotations` here: FastAPI must see the generated body models
# of `build_router` as real types, not as strings naming local variables.

import logging
import time
import uuid
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Response, status

from api.deps import LoggerDep, MetricsDep, PredictorDep, SettingsDep
from api.idempotency import Answer, RecentRequests, RequestIdConflict, features_digest
from api.instrumentation import ApiMetrics
from api.logger import PredictionLogger, PredictionRecord
from api.payloads import BatchPredictResponse, ErrorResponse, PredictResponse, build_models
from api.predictor import LoadedModel, Predictor
from api.routes import JSONBodyRoute
from data.logs import bind
from data.schema import FeatureSchema

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorResponse,
        "description": "a request_id this worker answered lately with other features",
    },
    413: {"model": ErrorResponse, "description": "batch or body too large"},
    422: {
        "model": ErrorResponse,
        "description": "a feature is missing, extra, mistyped, NaN or inf",
    },
    503: {"model": ErrorResponse, "description": "no model loaded yet"},
}


def build_router(
    schema: FeatureSchema, categorical_max_length: int, recent: RecentRequests
) -> APIRouter:
    """The prediction routes, with request bodies generated from `schema`; `recent`: the
    request ids this worker answered lately."""
    models = build_models(schema, categorical_max_length)
    predict_request = models["PredictRequest"]
    batch_request = models["BatchPredictRequest"]
    booleans = [f.name for f in schema.boolean]
    router = APIRouter(prefix="/predict", tags=["predict"], route_class=JSONBodyRoute)

    @router.post("", response_model=PredictResponse, responses=ERRORS)
    async def predict(
        body: predict_request, predictor: PredictorDep, logger: LoggerDep, metrics: MetricsDep
    ) -> PredictResponse:
        """Score one transaction. The prediction is logged after the response is decided,
        without waiting for the database."""
        started = time.perf_counter()
        given = body.get("request_id")
        request_id = given or uuid.uuid4().hex
        # For the rest of this request's task: this handler's lines and uvicorn's about it.
        bind(request_id=request_id)
        features = _plain(body["features"], booleans)
        digest = None
        if given is not None and recent.size:
            digest = features_digest(features)
            seen = recent.get(given)
            if seen is not None:
                _check_same([(given, digest, seen)], metrics)
                return _again(given, seen)
        model = _served(predictor, metrics)
        score = model.scorer.score_one(features)
        answer = _answer(request_id, features, score, model, started, metrics, logger)
        if digest is not None:
            recent.remember(
                request_id, Answer(digest, answer.predicted_class, score, model.version)
            )
        return answer

    @router.post("/batch", response_model=BatchPredictResponse, responses=ERRORS)
    async def predict_batch(
        body: batch_request,
        predictor: PredictorDep,
        logger: LoggerDep,
        metrics: MetricsDep,
        settings: SettingsDep,
    ) -> Response:
        """Score up to MAX_BATCH_SIZE transactions in one call (one vectorised pass)."""
        started = time.perf_counter()
        if len(body.instances) > settings.MAX_BATCH_SIZE:
            metrics.error("batch_too_large")
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"batch of {len(body.instances)} instances is over the limit of "
                f"{settings.MAX_BATCH_SIZE} (MAX_BATCH_SIZE)",
            )
        rows = [_plain(instance["features"], booleans) for instance in body.instances]
        given = [instance.get("request_id") for instance in body.instances]
        # Rows whose id was answered before with the same features: their first answer again,
        # not counted nor logged twice. Other features, here or earlier: 409, nothing served.
        digests: list[int] | None = None
        again: dict[int, Answer] = {}
        first: dict[str, tuple[int, int]] = {}
        named = [rid for rid in given if rid is not None] if recent.size else []
        if named:
            digests = [features_digest(row) for row in rows]
        # The usual batch (new ids, each once) skips the row-by-row look below.
        if named and (recent.known_any(named) or len(set(named)) < len(named)):
            checks: list[tuple[str, int, Answer]] = []
            for i, rid in enumerate(given):
                if rid is None:
                    continue
                digest = digests[i]
                seen = recent.get(rid)
                if seen is None and rid in first:  # the same id twice in this batch
                    seen = Answer(first[rid][1], -1, 0.0, "")
                    again[i] = seen  # filled in from the first row below
                elif seen is not None:
                    again[i] = seen
                else:
                    first[rid] = (i, digest)
                if seen is not None:
                    checks.append((rid, digest, seen))
            _check_same(checks, metrics)
        model = _served(predictor, metrics)
        fresh = [i for i in range(len(rows)) if i not in again] if again else None
        scored = rows if fresh is None else [rows[i] for i in fresh]
        scores = np.asarray(model.scorer.score_many(scored) if scored else [], dtype=np.float64)
        predicted = (scores >= model.threshold).astype(np.int64)
        latency = (time.perf_counter() - started) / max(len(rows), 1)
        confidence = np.where(predicted == 1, scores, 1.0 - scores)
        if scored:
            metrics.predictions(model.version, predicted, confidence, scores, scored, latency)
        now = datetime.now(UTC)
        ids = [rid or uuid.uuid4().hex for rid in given]
        version, scores_list, labels = model.version, scores.tolist(), predicted.tolist()
        bind(request_id=ids[0], request_count=len(ids), model_version=version)
        log.debug("scored %d rows, %d of class 1", len(scored), int(predicted.sum()))
        fresh_ids = ids if fresh is None else [ids[i] for i in fresh]
        if scored:  # (a batch of retries only has nothing new to log)
            logger.submit_many(
                [
                    PredictionRecord(
                        rid, now, model.name, version, row, label, score, latency * 1e3
                    )
                    for rid, row, label, score in zip(
                        fresh_ids, scored, labels, scores_list, strict=True
                    )
                ]
            )
        answered = list(zip(labels, scores_list, [version] * len(labels), strict=True))
        if fresh is not None:  # the retried rows take their first answer back
            by_row = dict(zip(fresh, answered, strict=True))
            for i in range(len(rows)):
                if i in again:
                    seen = again[i]
                    by_row[i] = (
                        by_row[first[given[i]][0]]
                        if seen.predicted_class < 0
                        else (seen.predicted_class, seen.score, seen.model_version)
                    )
            answered = [by_row[i] for i in range(len(rows))]
        if digests is not None:
            if not again and len(named) == len(ids):
                answers = map(Answer, digests, labels, scores_list, repeat(version))
                recent.remember_many(zip(ids, answers, strict=True))
            else:
                recent.remember_many(
                    (ids[i], Answer(digests[i], *answer))
                    for i, answer in enumerate(answered)
                    if given[i] is not None and i not in again
                )
        # Built as plain JSON: a thousand response models validated one by one cost more than
        # scoring the batch. The shape is BatchPredictResponse's, as the OpenAPI docs say.
        answers = [
            {
                "request_id": rid,
                "predicted_class": label,
                "confidence": score if label else 1.0 - score,
                "probabilities": {"0": 1.0 - score, "1": score},
                "model_version": answered_by,
            }
            for rid, (label, score, answered_by) in zip(ids, answered, strict=True)
        ]
        return Response(orjson.dumps({"predictions": answers}), media_type="application/json")

    return router


def _check_same(checks: list[tuple[str, int, Answer]], metrics: ApiMetrics) -> None:
    """409 if any request id comes with other features than when it was first answered."""
    conflicts = list(dict.fromkeys(rid for rid, digest, seen in checks if digest != seen.digest))
    if conflicts:
        metrics.error("request_id_conflict")
        error = RequestIdConflict(conflicts)
        log.info("refused: %s", error)
        raise HTTPException(status.HTTP_409_CONFLICT, str(error))


def _again(request_id: str, seen: Answer) -> PredictResponse:
    """The answer a request id got the first time (an idempotent retry)."""
    return PredictResponse(
        request_id=request_id,
        predicted_class=seen.predicted_class,
        confidence=seen.score if seen.predicted_class else 1.0 - seen.score,
        probabilities={"0": 1.0 - seen.score, "1": seen.score},
        model_version=seen.model_version,
    )


def _served(predictor: Predictor, metrics: ApiMetrics) -> LoadedModel:
    model = predictor.current  # one reference for the whole request: a reload cannot split it
    if model is None:
        metrics.error("model_not_loaded")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"no model loaded yet: {predictor.last_error or 'loading'}",
        )
    return model


def _plain(features: Any, booleans: list[str]) -> dict[str, Any]:
    # Booleans travel as 0.0 / 1.0 from here on: the model and the log store them as numbers.
    values = dict(features)
    for name in booleans:
        value = values[name]
        if value is not None:
            values[name] = 1.0 if value else 0.0
    return values


def _answer(
    request_id: str,
    features: dict[str, Any],
    score: float,
    model: LoadedModel,
    started: float,
    metrics: ApiMetrics,
    logger: PredictionLogger,
) -> PredictResponse:
    predicted = 1 if score >= model.threshold else 0
    confidence = score if predicted else 1.0 - score
    latency = time.perf_counter() - started
    bind(model_version=model.version)
    log.debug("class %d, score %.4f", predicted, score)
    metrics.prediction(model.version, predicted, confidence, score, features, latency)
    logger.submit(
        PredictionRecord(
            request_id=request_id,
            predicted_at=datetime.now(UTC),
            model_name=model.name,
            model_version=model.version,
            features=features,
            predicted_class=predicted,
            score=score,
            latency_ms=latency * 1000,
        )
    )
    return PredictResponse(
        request_id=request_id,
        predicted_class=predicted,
        confidence=confidence,
        probabilities={"0": 1.0 - score, "1": score},
        model_version=model.version,
    )
