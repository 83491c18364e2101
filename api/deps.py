"""FastAPI dependencies: the app's shared objects and the admin check, as Annotated aliases.

They are `async def` although they do no I/O: FastAPI runs a plain `def` dependency in a worker
thread, and that hop costs more than the whole prediction.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.instrumentation import ApiMetrics
from api.logger import PredictionLogger
from api.predictor import Predictor
from data.schema import FeatureSchema
from data.settings import Settings, get_settings


async def _predictor(request: Request) -> Predictor:
    return request.app.state.predictor


async def _logger(request: Request) -> PredictionLogger:
    return request.app.state.logger


async def _metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


async def _schema(request: Request) -> FeatureSchema:
    return request.app.state.schema


PredictorDep = Annotated[Predictor, Depends(_predictor)]
LoggerDep = Annotated[PredictionLogger, Depends(_logger)]
MetricsDep = Annotated[ApiMetrics, Depends(_metrics)]
SchemaDep = Annotated[FeatureSchema, Depends(_schema)]


async def _settings() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]

_bearer = HTTPBearer(auto_error=False, description="API_ADMIN_TOKEN")


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries `Authorization: Bearer <API_ADMIN_TOKEN>`."""
    expected = settings.API_ADMIN_TOKEN
    if expected is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "admin endpoints are disabled: set API_ADMIN_TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminDep = Depends(require_admin)
