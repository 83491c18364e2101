"""A loopback HTTP server answering like Airflow 3's health endpoint, for the exporter's probe
(AIRFLOW_HEALTH_URL): `GET /api/v2/monitor/health` gives the components' statuses as Airflow's
`get_airflow_health` does; `answer` sets what it says next (status, body, delay)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tools.testkit.http_sink import serving

HEALTH_PATH = "/api/v2/monitor/health"


def airflow_answer(**statuses: str | None) -> dict:
    """A body as Airflow 3 gives it: every component healthy unless given (None: a component
    that never ran, which Airflow reports without a status)."""
    body: dict = {"metadatabase": {"status": statuses.get("metadatabase", "healthy")}}
    for name in ("scheduler", "triggerer", "dag_processor"):
        body[name] = {
            "status": statuses.get(name, "healthy"),
            f"latest_{name}_heartbeat": "2026-03-01T06:00:00.123456+00:00",
        }
    return body


HEALTHY = (200, airflow_answer(), 0.0)


@dataclass
class FakeAirflow:
    url: str  # the health endpoint's URL
    # (HTTP status, JSON body or raw text, seconds to wait before answering)
    answer: tuple[int, dict | str, float] = field(default_factory=lambda: HEALTHY)
    requests: int = 0


@contextmanager
def running_airflow_health() -> Iterator[FakeAirflow]:
    state = FakeAirflow(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            status, body, delay = state.answer
            time.sleep(delay)
            text = body if isinstance(body, str) else json.dumps(body)
            self.send_response(status if self.path == HEALTH_PATH else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(text.encode())))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args) -> None:
            pass

    with serving(Handler) as url:
        state.url = url + HEALTH_PATH
        yield state
