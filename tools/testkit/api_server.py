"""Run the API as production does (`python -m api.serve`, several workers) and load it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from data.db import get_engine, prediction_logs
from data.settings import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_sockets(port: int) -> int:
    """How many sockets listen on `port` (Linux's /proc/net/tcp; 0A is LISTEN)."""
    suffix = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as handle:
            for line in handle.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                count += local.endswith(suffix) and state == "0A"
    return count


class ServerProcess:
    def __init__(self, folder: Path, env: dict[str, str], workers: int = 2) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "server.log"
        self.metrics_dir = folder / "prometheus"
        # The metrics folder comes from a `.env` file, as a user configures it, not from the
        # environment: the launcher must export it to its workers itself.
        (folder / ".env").write_text(f"PROMETHEUS_MULTIPROC_DIR={self.metrics_dir}\n")
        environment = {**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT)}
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.serve", "--workers", str(workers), "--port", str(self.port),
             "--host", "127.0.0.1"],
            cwd=folder,
            env=environment,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as a service manager gives it
        )  # fmt: skip

    def wait_ready(self, timeout: float = 240) -> None:
        """Until every worker listens (each has its own socket) and one answers /ready.

        Generous: on two cores saturated by `make test`, two workers took over 90 s to import
        and load their model (a test failed on it); a server that never starts still fails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                ready = httpx.get(f"{self.url}/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready and listening_sockets(self.port) == self.workers:
                return
            time.sleep(0.2)
        raise TimeoutError(f"server not ready: {self.log_path.read_text()[-2000:]}")

    def worker_pids(self) -> list[int]:
        """The live worker processes of `python -m api.serve`: the children of its fork server
        (multiprocessing's resource tracker is a child of the server too, but forks nothing)."""

        def children(pid: int) -> list[int]:
            return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

        return [
            worker
            for child in children(self.process.pid)
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()
            for worker in children(child)
        ]

    def sigterm(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.sigterm()


class Load:
    """`threads` clients sending /predict with unique ids until stopped; keeps what was acked."""

    def __init__(
        self,
        url: str,
        rows: list[dict],
        threads: int = 6,
        pause: float = 0.0,
        prefix: str = "load-",
    ) -> None:
        self.url = url
        self.prefix = prefix  # request ids are `<prefix><thread>-<i>`
        self.rows = rows
        self.pause = pause
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                request_id = f"{self.prefix}{n}-{i}"
                body = {"request_id": request_id, "features": self.rows[i % len(self.rows)]}
                try:
                    answer = client.post("/predict", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{request_id}: {type(exc).__name__}")
                else:
                    if answer.status_code == 200:
                        self.acknowledged.append(request_id)
                    else:
                        self.failures.append(f"{request_id}: HTTP {answer.status_code}")
                i += 1
                if self.pause:
                    time.sleep(self.pause)


def logged_ids(url: str) -> Counter:
    with get_engine(url).connect() as conn:
        return Counter(conn.execute(select(prediction_logs.c.request_id)).scalars())


def wait_until_logged(url: str, expected: set[str], timeout: float = 60) -> Counter:
    deadline = time.monotonic() + timeout
    while True:
        found = logged_ids(url)
        if expected <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def metric_total(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )
