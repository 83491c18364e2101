"""The API while its database hangs: the liveness and readiness probes still answer.

`/feedback` calls the database from the thread pool; with a black-holed database every such call
waits, and enough of them hold every thread of the pool. The probes must not need one.
"""

from __future__ import annotations

import socket
import threading
import time

from fastapi.testclient import TestClient

from api.main import create_app
from data.db import get_engine
from tools.testkit.databases import store_settings
from tools.testkit.traffic import LABELLER, configure

# More /feedback requests than the thread pool has threads (anyio's default: 40).
HUNG_REQUESTS = 50


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BlackHole:
    """Accepts TCP connections on `port` and never answers; `close` drops them all."""

    def __init__(self, port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", port), backlog=200)
        self.server.settimeout(0.2)
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.held.append(self.server.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for connection in self.held:
            connection.close()
        self.server.close()


def test_probes_answer_while_feedback_waits_on_a_hung_database(monkeypatch, tmp_path):
    port = _free_port()
    store = store_settings(tmp_path / "store")  # an empty registry: no model, /ready says 503
    configure(
        monkeypatch,
        store,
        f"postgresql+psycopg2://mlmon@127.0.0.1:{port}/monitoring",
        tmp_path,
        DATABASE_CONNECT_TIMEOUT_SECONDS=60,  # each /feedback holds its thread this long
    )
    with TestClient(create_app()) as client:  # nothing listens yet: the start is not held up
        hole = BlackHole(port)
        answers: list[int] = []
        senders: list[threading.Thread] = []
        try:

            def send(i: int) -> None:
                response = client.post(
                    "/feedback", json={"request_id": f"r{i}", "label": 1}, headers=LABELLER
                )
                answers.append(response.status_code)

            senders += [
                threading.Thread(target=send, args=(i,), daemon=True) for i in range(HUNG_REQUESTS)
            ]
            for sender in senders:
                sender.start()
            deadline = time.monotonic() + 20
            while len(hole.held) < 5 and time.monotonic() < deadline:  # the pool's connections
                time.sleep(0.1)
            assert len(hole.held) >= 5, "the /feedback requests never reached the database"
            time.sleep(1.0)  # let every request take its thread

            for path, expected in (("/health", 200), ("/ready", 503)):
                started = time.monotonic()
                response = client.get(path)
                elapsed = time.monotonic() - started
                assert response.status_code == expected, response.text
                assert elapsed < 2.0, f"{path} took {elapsed:.1f} s while the database hangs"
            assert client.get("/health").json()["status"] == "ok"
            assert not answers, "the /feedback requests were not held by the hung database"
        finally:
            hole.close()  # the held connections end: every /feedback answers
            for sender in senders:
                sender.join(timeout=60)
    assert len(answers) == HUNG_REQUESTS
    assert all(code >= 500 for code in answers), answers
    get_engine().dispose()


def test_the_api_uses_its_short_statement_timeout_and_gives_it_back(
    monkeypatch, tmp_path, postgres_url
):
    """The API's statements take milliseconds: a stuck one is cancelled after
    API_DATABASE_STATEMENT_TIMEOUT_SECONDS (its batch then spools), not after the general
    timeout sized for the monitoring pass."""
    store = store_settings(tmp_path / "store")
    configure(
        monkeypatch,
        store,
        postgres_url,
        tmp_path,
        DATABASE_STATEMENT_TIMEOUT_SECONDS=600,
        API_DATABASE_STATEMENT_TIMEOUT_SECONDS=2,
    )

    def statement_timeout() -> str:
        with get_engine().connect() as conn:
            return conn.exec_driver_sql("SHOW statement_timeout").scalar()

    with TestClient(create_app()) as client:
        assert client.get("/health").status_code == 200
        assert statement_timeout() == "2s"
    assert statement_timeout() == "10min"  # the process's other work gets the general one
    get_engine().dispose()
