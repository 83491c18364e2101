"""`/model` (what serves and why) and `/model/reload` (admin: load the current @champion)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import AdminDep, MetricsDep, PredictorDep
from api.payloads import ErrorResponse, ReloadResponse
from training.registry import ModelRefused

router = APIRouter(prefix="/model", tags=["model"])


@router.get("", responses={503: {"model": ErrorResponse}})
def model_info(predictor: PredictorDep) -> dict:
    """The served version, its alias, when it was loaded, its gate results and hold-out metrics;
    `refused`: the version `@champion` points at that was not loaded, and why (else null)."""
    model = predictor.current
    if model is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"no model loaded yet: {predictor.last_error or 'loading'}",
        )
    refused = predictor.refused
    return model.describe() | {"refused": refused.describe() if refused else None}


@router.post(
    "/reload",
    response_model=ReloadResponse,
    dependencies=[AdminDep],
    responses={
        401: {"model": ErrorResponse},
        409: {"model": ErrorResponse, "description": "the @champion version is refused"},
        503: {"model": ErrorResponse},
    },
)
def reload_model(predictor: PredictorDep, metrics: MetricsDep) -> ReloadResponse:
    """Load the version `@champion` points at now, without a restart (this worker; the others
    follow within MODEL_POLL_SECONDS). A version that must not be loaded (pickle, an untrusted
    type, a bad decision threshold) is a 409 saying why; the version served keeps serving."""
    previous = predictor.current.version if predictor.current else None
    try:
        model = predictor.load_champion()
    except ModelRefused as exc:
        metrics.reload("refused")
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"@champion {exc}; still serving {f'v{previous}' if previous else 'no model'}",
        ) from None
    except Exception as exc:
        metrics.reload("failed")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"reload failed, still serving v{previous}: {predictor.last_error or exc}",
        ) from None
    metrics.reload("changed" if model.version != previous else "unchanged")
    return ReloadResponse(
        previous_version=previous, model_version=model.version, changed=model.version != previous
    )
