"""A loopback HTTP server that records what it is sent: the Slack / PagerDuty / webhook peer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class Sink:
    """A loopback HTTP server recording every request; `answers[path]` are the replies to give
    first, as (status, headers, body), before it answers 202 like PagerDuty (Slack's 200 alike)."""

    url: str
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[tuple[int, dict[str, str], str]]] = field(default_factory=dict)
    delay_seconds: float = 0.0  # how long each answer takes (a slow peer)

    def at(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]


@contextmanager
def running_sink() -> Iterator[Sink]:
    state = Sink(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw or b"{}")
            with lock:
                state.received.append(Received("POST", self.path, dict(self.headers), body))
                queue = state.answers.get(self.path) or []
                status, headers, text = queue.pop(0) if queue else (202, {}, '{"status":"ok"}')
            if state.delay_seconds:
                time.sleep(state.delay_seconds)
            # A PagerDuty-like 400 echoes the event back, as real APIs often quote the input.
            text = text.replace("{body}", raw.decode())
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text.encode())))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args) -> None:
            pass

    with serving(Handler) as url:
        state.url = url
        yield state


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` answering on a free loopback port from a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a hung answer must not hold the shutdown
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
