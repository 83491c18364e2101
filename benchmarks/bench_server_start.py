"""Benchmark of the API server's start and of a worker's replacement.

    python -m benchmarks.bench_server_start [--runs 5]      (make bench runs it)

Trains a model into a temporary MLflow store (SQLite stores, nothing else needed), then, `runs`
times: starts `python -m api.serve --workers 2`, times it until both workers listen and /ready
answers 200, SIGKILLs one worker and times it until its replacement listens and the server is
ready again, and stops the server. Reports the medians and the CPU the machine was busy for
(from /proc/stat: the workers are not children the benchmark waits for, so their CPU is not in
its rusage). Run it on a quiet machine; compare figures measured in one run.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tools.testkit.api_server import ServerProcess, listening_sockets
from tools.testkit.databases import store_settings
from training.train import train


def busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy (not idle, not waiting on I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def replacement_seconds(server: ServerProcess) -> float:
    """SIGKILL one worker; seconds until a new one listens beside the other and /ready is 200."""
    dead = server.worker_pids()[0]
    started = time.monotonic()
    os.kill(dead, signal.SIGKILL)
    while True:
        workers = server.worker_pids()
        if len(workers) == 2 and dead not in workers and listening_sockets(server.port) == 2:
            try:
                if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-start-"))
    settings = store_settings(work / "store")
    (work / "store").mkdir()
    train(settings=settings, auto_promote=True)
    env = {
        "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
        "DATABASE_URL": f"sqlite:///{work / 'monitoring.db'}",
        "PREDICTION_SPOOL_DIR": str(work / "spool"),
    }
    starts, replacements = [], []
    cpu_before = busy_cpu_seconds()
    for run in range(args.runs):
        folder = work / f"run-{run}"
        folder.mkdir()
        started = time.monotonic()
        server = ServerProcess(folder, env)
        try:
            server.wait_ready()
            starts.append(time.monotonic() - started)
            replacements.append(replacement_seconds(server))
        finally:
            server.stop()
    time.sleep(1)  # the last server's processes exit
    cpu = busy_cpu_seconds() - cpu_before
    print(f"api.serve --workers 2, {args.runs} runs (medians, then each run):")
    print(f"  start to ready             {statistics.median(starts):6.2f} s  "
          f"{' '.join(f'{s:.2f}' for s in starts)}")  # fmt: skip
    print(f"  killed worker to ready     {statistics.median(replacements):6.2f} s  "
          f"{' '.join(f'{s:.2f}' for s in replacements)}")  # fmt: skip
    print(f"  machine CPU busy per run   {cpu / args.runs:6.1f} s  (start, one replacement, stop)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
