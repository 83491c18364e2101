"""FastAPI dependencies: the app's shared objects, the admin check and the label writers'
check, as Annotated aliases.

They are `async def` although they do no I/O: FastAPI runs a plain `def` dependency in a worker
thread, and that hop costs more than the whole prediction.
"""

from __future__ import annotations

import hashlib
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


_label_bearer = HTTPBearer(
    auto_error=False, scheme_name="LabelToken", description="a token of LABEL_TOKENS"
)


def _digest(token: str) -> bytes:
    # Compared as digests, so that every comparison is of 32 bytes and a token's length does
    # not show in the time either.
    return hashlib.sha256(token.encode()).digest()


async def require_label_writer(
    settings: SettingsDep,
    metrics: MetricsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_label_bearer)],
) -> str:
    """The source (LABEL_TOKENS) whose token the request carries as `Authorization: Bearer`;
    401 without one or with any other token (the admin token too), 503 while LABEL_TOKENS is
    unset.

    The presented token is compared with every configured token in constant time, each
    comparison made whatever the others gave, so the time says neither whether nor which one
    matched.
    """
    tokens = settings.label_tokens
    if not tokens:
        metrics.feedback_rejected("disabled")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "label endpoints are disabled: set LABEL_TOKENS"
        )
    presented = _digest(credentials.credentials if credentials is not None else "")
    matches = [
        source
        for source, token in tokens.items()
        if secrets.compare_digest(presented, _digest(token.get_secret_value()))
    ]
    if credentials is None or len(matches) != 1:  # tokens are distinct: at most one matches
        metrics.feedback_rejected("unauthorized")
        reason = "missing" if credentials is None else "unknown"
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"{reason} label token: labels need `Authorization: Bearer <token>` with the token "
            "of their source in LABEL_TOKENS (the admin token does not write labels); nothing "
            "stored",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return matches[0]


LabelSourceDep = Annotated[str, Depends(require_label_writer)]
