"""Liveness and readiness.

Both are `async def` and read only what the process holds (the model being served): they run on
the event loop, never in the thread pool, and never touch the database. A plain `def` route runs
in the thread pool that `/feedback`'s database calls also use; with the database hung, those
calls fill the pool and a probe waiting for a thread would fail, and the orchestrator restart a
worker that serves predictions fine.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import PredictorDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(predictor: PredictorDep) -> dict:
    """Liveness: the process answers. Says which model version serves, if any."""
    model = predictor.current
    return {"status": "ok", "model_version": model.version if model else None}


@router.get("/ready", responses={503: {"description": "no model loaded yet"}})
async def ready(predictor: PredictorDep) -> JSONResponse:
    """Readiness: 200 once a model is loaded, 503 (with the reason) until then. `refused`: the
    version `@champion` points at that was not loaded, and why (the one loaded keeps serving)."""
    model = predictor.current
    refused = predictor.refused.describe() if predictor.refused else None
    if model is None:
        return JSONResponse(
            {
                "status": "not ready",
                "detail": predictor.last_error or "loading",
                "refused": refused,
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready", "model_version": model.version, "refused": refused})
