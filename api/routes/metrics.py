"""`/metrics` for Prometheus and `/metrics/summary` for people."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api import instrumentation as metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format, summed over all workers."""
    # This worker's buffered predictions now; the other workers' writer threads flush theirs
    # every 0.1 s.
    request.app.state.metrics.flush()
    request.app.state.metrics.measure_spool()  # the spool's folder as it is now
    body, content_type = metrics.latest()
    return Response(body, media_type=content_type)


@router.get("/metrics/summary")
def metrics_summary(request: Request) -> dict:
    """Totals, error counts, latency quantiles, the served model and the logger's counters."""
    request.app.state.metrics.flush()
    return metrics.summary()
