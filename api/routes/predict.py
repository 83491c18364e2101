"""`/predict` and `/predict/batch`: validate, score with the served model, count, log.

Handlers are `async def` on purpose: scoring one request takes about 50 µs, far less than the
hop to a worker thread that a plain `def` handler would cost on every request.
"""
# No `from __future__ import annotations` here: FastAPI must see the generated body models
# of `build_router` as real types, not as strings naming local variables.

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Response, status

from api.deps import LoggerDep, MetricsDep, PredictorDep, SettingsDep
from api.instrumentation import ApiMetrics
from api.logger import PredictionLogger, PredictionRecord
from api.payloads import BatchPredictResponse, ErrorResponse, PredictResponse, build_models
from api.predictor import LoadedModel, Predictor
from api.routes import JSONBodyRoute
from data.logs import bind
from data.schema import FeatureSchema

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "batch or body too large"},
    422: {
        "model": ErrorResponse,
        "description": "a feature is missing, extra, mistyped, NaN or inf",
    },
    503: {"model": ErrorResponse, "description": "no model loaded yet"},
}


def build_router(schema: FeatureSchema) -> APIRouter:
    """The prediction routes, with request bodies generated from `schema`."""
    models = build_models(schema)
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
        request_id = body.get("request_id") or uuid.uuid4().hex
        # For the rest of this request's task: this handler's lines and uvicorn's about it.
        bind(request_id=request_id)
        model = _served(predictor, metrics)
        features = _plain(body["features"], booleans)
        score = model.scorer.score_one(features)
        return _answer(request_id, features, score, model, started, metrics, logger)

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
        model = _served(predictor, metrics)
        rows = [_plain(instance["features"], booleans) for instance in body.instances]
        scores = np.asarray(model.scorer.score_many(rows), dtype=np.float64)
        predicted = (scores >= model.threshold).astype(np.int64)
        confidence = np.where(predicted == 1, scores, 1.0 - scores)
        latency = (time.perf_counter() - started) / max(len(rows), 1)
        metrics.predictions(model.version, predicted, confidence, scores, rows, latency)
        now = datetime.now(UTC)
        ids = [instance.get("request_id") or uuid.uuid4().hex for instance in body.instances]
        version, scores_list = model.version, scores.tolist()
        bind(request_id=ids[0], request_count=len(ids), model_version=version)
        log.debug("scored %d rows, %d of class 1", len(ids), int(predicted.sum()))
        logger.submit_many(
            [
                PredictionRecord(rid, now, model.name, version, row, label, score, latency * 1e3)
                for rid, row, label, score in zip(
                    ids, rows, predicted.tolist(), scores_list, strict=True
                )
            ]
        )
        # Built as plain JSON: a thousand response models validated one by one cost more than
        # scoring the batch. The shape is BatchPredictResponse's, as the OpenAPI docs say.
        answers = [
            {
                "request_id": rid,
                "predicted_class": label,
                "confidence": sure,
                "probabilities": {"0": 1.0 - score, "1": score},
                "model_version": version,
            }
            for rid, label, sure, score in zip(
                ids, predicted.tolist(), confidence.tolist(), scores_list, strict=True
            )
        ]
        return Response(orjson.dumps({"predictions": answers}), media_type="application/json")

    return router


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
