"""Production start: several uvicorn workers with multiprocess Prometheus metrics.

    python -m api.serve [--workers N] [--port P] [--host H]

Before any worker starts it points PROMETHEUS_MULTIPROC_DIR at a fresh, empty folder (stale
files from an earlier run would be summed into the new counters), then hands over to uvicorn's
process manager with uvloop and httptools. SIGTERM or SIGINT shuts down gracefully: each worker
stops taking requests, finishes the ones in flight, and drains its prediction log queue to the
database (or the disk spool) before it exits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import uvicorn

from data.settings import get_settings

GRACEFUL_SHUTDOWN_SECONDS = 20


def prepare_multiprocess_dir(path: str) -> str:
    """Wipe and recreate the metrics folder shared by the workers; export it to them."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=settings.API_WORKERS)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=settings.API_PORT)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    metrics_dir = settings.PROMETHEUS_MULTIPROC_DIR or str(settings.path("var/prometheus"))
    prepare_multiprocess_dir(metrics_dir)
    get_settings.cache_clear()  # workers and this process must see the folder just set
    uvicorn.run(
        "api.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
