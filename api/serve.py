"""Production start: several uvicorn workers, each with its own listening socket.

    python -m api.serve [--workers N] [--port P] [--host H]

Before any worker starts it points PROMETHEUS_MULTIPROC_DIR at a fresh, empty folder (stale
files from an earlier run would be summed into the new counters). Each worker then binds its own
SO_REUSEPORT socket on the same port, so the kernel spreads new connections over the workers.
Uvicorn's own process manager shares one socket between workers instead, and whichever worker
wakes first accepts every pending connection: with a few keep-alive clients (a batch job, a
load balancer's pool) one worker served all of them while the other sat idle.

Workers are forked from a fork server that imported the heavy libraries once (MLflow,
scikit-learn and skops through the registry, pandas and SQLAlchemy through the prediction log,
FastAPI and uvicorn): each worker, and each replacement of one that died, starts without
importing them again (about 3.5 CPU-seconds each), and they share those pages. The fork server
imports no project module that defines metrics, so the multiprocess metrics see only workers.

Before the first worker, a short-lived child creates the monitoring tables and migrates MLflow's
database once: workers doing it together on fresh stores collided, and the loser took the server
down. This process supervises the workers: it restarts one that dies (and marks it dead for the
multiprocess metrics), exits with status 3 if one cannot start its app at all, and on SIGTERM
or SIGINT passes SIGTERM on and waits. Each worker then stops taking connections, answers
requests on the open ones for up to a second more with `Connection: close` (so a kept-alive
client is told to leave instead of having a request reset), finishes the ones in flight, and
drains its prediction log queue to the database (or the disk spool) before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext, ForkServerProcess
from multiprocessing.synchronize import Event as EventType
from typing import Any

import uvicorn
from prometheus_client import multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.importer import import_from_string

from data.logs import configure_logging, request_lines
from data.settings import exit_on_config_error, get_settings

GRACEFUL_SHUTDOWN_SECONDS = 20
# How long a stopping worker keeps answering on open connections (each answer says close).
DRAIN_SECONDS = 1.0
STARTUP_FAILED = 3  # uvicorn's exit code when the app fails to start
RESTART_PAUSE_SECONDS = 1.0  # a worker that dies at once must not turn into a busy loop
# What the fork server imports before it forks any worker: the libraries that take a worker's
# start (`python -X importtime -c "import api.main"`), not api.instrumentation, whose metrics
# would be created in the fork server's name.
PRELOAD = ["training.registry", "data.prediction_log", "fastapi", "uvicorn"]

log = logging.getLogger("api.serve")


def prepare_multiprocess_dir(path: str) -> str:
    """Wipe and recreate the metrics folder shared by the workers; export it to them."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def worker_socket(host: str, port: int) -> socket.socket:
    """A socket bound into the port's SO_REUSEPORT group, for uvicorn to listen on once the
    app has started: the kernel only hands connections to listening sockets, so none waits
    on a worker that is still loading its model."""
    sock = _tcp_socket(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _tcp_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def port_problem(host: str, port: int) -> str | None:
    """Why the port cannot be ours, if it cannot. Binding without SO_REUSEPORT also refuses a
    port that an earlier instance of this server still holds: joining its group would quietly
    split the traffic between the old server and the new one."""
    with _tcp_socket(host) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def uvicorn_options(access_log: bool) -> dict[str, Any]:
    return {
        "app": "api.main:app",
        "loop": "uvloop",
        "http": "httptools",
        # uvicorn's loggers write through the worker's own setup (data.logs): uvicorn's
        # dictConfig would give them handlers and a format of their own.
        "log_config": None,
        "access_log": access_log,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }


class ClosingWhenDraining:
    """The app, answering with `Connection: close` once its worker is stopping.

    uvicorn stops by closing every idle kept-alive connection at once, and a client that sent
    its next request at that moment had it reset, unanswered (3 of them in one SIGTERM under
    load). Told to close with an answer instead, a client stops using the connection itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.draining:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)


class _WorkerServer(uvicorn.Server):
    """uvicorn's server, telling the supervisor once the app has started, and draining its
    kept-alive connections before it stops."""

    def __init__(
        self, config: uvicorn.Config, started: EventType, app: ClosingWhenDraining
    ) -> None:
        super().__init__(config)
        self.started_event = started
        self.closing_app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.started_event.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Take no new connection; answer each request on the open ones with `Connection:
        # close` for up to DRAIN_SECONDS, so that busy clients leave between two requests;
        # then uvicorn closes whatever is left (idle clients) and finishes as usual.
        self.closing_app.draining = True
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.server_state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await super().shutdown(sockets=sockets)


def process_context() -> ForkServerContext:
    """Where the workers and the store preparer come from: the fork server with PRELOAD,
    started here (so PROMETHEUS_MULTIPROC_DIR must already be set) with SIGTERM ignored.

    A stop sent to the whole process group (systemd's default, honcho, `kill -- -PGID`) would
    otherwise end the fork server at once, and with it the exit statuses of the workers it
    forked, which are still draining: the supervisor saw 255 for each and exited 1 after a
    clean stop. Ignoring it, the fork server lives until the supervisor exits (it stops when its
    parent's end of a pipe closes), and each worker restores SIGTERM first thing."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # an ignored signal survives exec
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return context


def run_worker(host: str, port: int, started: EventType) -> None:
    """One worker process: its own socket, one uvicorn server (which handles SIGTERM itself)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server ignores it (see above)
    settings = get_settings()
    configure_logging(settings, process="api-worker")  # a forked worker starts unconfigured
    options = uvicorn_options(access_log=request_lines(settings))
    try:
        app = ClosingWhenDraining(import_from_string(options.pop("app")))
    except Exception:
        # Logged rather than left to multiprocessing, which prints the traceback as it is.
        log.exception("the app cannot start")
        sys.exit(1)
    config = uvicorn.Config(app, host=host, port=port, **options)
    _WorkerServer(config, started, app).run(sockets=[worker_socket(host, port)])


class Supervisor:
    """Keeps `workers` worker processes running until SIGTERM or SIGINT, then stops them."""

    def __init__(
        self, host: str, port: int, workers: int, context: ForkServerContext | None = None
    ) -> None:
        self.args = (host, port)
        self.workers = workers
        # Set by the signal handler. A plain flag, not a threading.Event: the handler runs in
        # the main thread between two bytecodes, and Event.set() takes the lock that
        # Event.wait() in that same thread may hold at that moment, which deadlocked a
        # supervisor for good on SIGTERM (the workers never told to stop).
        self.stopping = False
        # Each worker's process, and the event it sets once its app has started.
        self.running: list[tuple[ForkServerProcess, EventType]] = []
        self._context = context or process_context()  # main's, which started the preparer

    def _start_one(self) -> tuple[ForkServerProcess, EventType]:
        started = self._context.Event()
        process = self._context.Process(
            target=run_worker, args=(*self.args, started), name="api-worker"
        )
        process.start()
        return process, started

    def request_stop(self, *_signal: Any) -> None:
        """The SIGTERM / SIGINT handler: only a flag, which the run loop polls."""
        self.stopping = True

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)

    def run(self) -> int:
        self.install_signal_handlers()
        self.running = [self._start_one() for _ in range(self.workers)]
        log.info("started %d workers: %s", self.workers, [p.pid for p, _ in self.running])
        while not self.stopping:
            time.sleep(0.5)
            for index, (process, started) in enumerate(self.running):
                if process.is_alive() or self.stopping:
                    continue
                multiprocess.mark_process_dead(process.pid)  # its live gauges stop counting
                if not started.is_set():
                    # The app cannot start (a missing schema file, a broken setting): starting
                    # it again would fail the same way, forever. Say so and stop.
                    log.critical("a worker exited with %s before the app started (its error "
                                 "is above); stopping", process.exitcode)  # fmt: skip
                    self.stop()
                    return STARTUP_FAILED
                log.error("worker %s exited with %s; starting another", process.pid,
                          process.exitcode)  # fmt: skip
                time.sleep(RESTART_PAUSE_SECONDS)
                self.running[index] = self._start_one()
        return self.stop()

    def stop(self) -> int:
        processes = [process for process, _ in self.running]
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_SHUTDOWN_SECONDS + 15
        clean = True
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():
                log.error("worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
            # Killed by our SIGTERM before uvicorn took over the signal: it had accepted nothing.
            clean = clean and process.exitcode in (0, -signal.SIGTERM)
        return 0 if clean else 1


def prepare_stores() -> None:
    """Create the monitoring tables and migrate MLflow's database once, before any worker
    starts: workers doing it at the same moment on a fresh store raced each other ("table ...
    already exists"), and the loser exited, taking the server down. A store that cannot be
    reached now is left to the workers, which retry (the logger spools, the model loader polls).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from data.db import get_engine, init_db
    from training.registry import Registry

    settings = get_settings()
    configure_logging(settings, process="api")
    try:
        init_db(get_engine(settings.database_url))
    except SQLAlchemyError as exc:
        log.warning("monitoring tables not created before the workers: %s", exc)
    try:
        Registry.prepare_store(settings.mlflow_tracking_uri)
    except Exception as exc:  # MLflow raises several kinds; the workers will say it again
        log.warning("MLflow store not prepared before the workers: %s", exc)


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    settings.require_api_secrets()
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=settings.API_WORKERS)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=settings.API_PORT)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1 (got {args.workers})")
    configure_logging(settings, process="api")

    metrics_dir = settings.PROMETHEUS_MULTIPROC_DIR or str(settings.path("var/prometheus"))
    prepare_multiprocess_dir(metrics_dir)
    get_settings.cache_clear()  # workers and this process must see the folder just set
    # One worker runs under the supervisor too, in a process of its own: prometheus_client
    # picks its multiprocess mode when it is first imported, and this process imported it
    # before the folder was set, so an app served from here wrote its metrics to memory while
    # /metrics read the empty folder.
    problem = port_problem(args.host, args.port)
    if problem:  # one line here rather than a traceback in every worker
        print(f"cannot listen on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 2
    # In a child of its own, so this long-lived process does not keep MLflow in memory.
    context = process_context()
    preparer = context.Process(target=prepare_stores, name="stores")
    preparer.start()
    preparer.join()
    return Supervisor(args.host, args.port, args.workers, context).run()


if __name__ == "__main__":
    sys.exit(main())
