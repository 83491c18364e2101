"""`/metrics` for Prometheus and `/metrics/summary` for people."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api import metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def prometheus_metrics() -> Response:
    """Prometheus text format, summed over all workers."""
    body, content_type = metrics.latest()
    return Response(body, media_type=content_type)


@router.get("/metrics/summary")
def metrics_summary() -> dict:
    """Totals, error counts, latency quantiles, the served model and the logger's counters."""
    return metrics.summary()
