"""One logging setup for every process: plain text for a terminal, JSON lines for a container.

`configure_logging(settings, process=...)` is the first thing each entry point does: the API's
supervisor and workers, the exporter, the monitoring pass, the commands and the Airflow tasks.
Every line names its process and carries the fields bound where the work happens, so that one
request can be followed from the handler that answered it to the writer thread that logged it,
and one window from its check to the retrain it caused:

    request_id, last_request_id, request_count   a request, or a batch: its first (and last)
                                                 id and how many, never a thousand ids
    model_version                                the version served, checked against, promoted
    window_start, window_end                     the monitoring window (ISO 8601, UTC)
    training_run_id, dag_run_id                  the retrain (`training_runs`) and its DAG run

They are bound with `log_context(...)` (a block, a thread's batch) or `bind(...)` (the rest of
the current asyncio task: a request's, so uvicorn's own lines about it carry them too), kept in
a context variable, and copied onto each record by `ContextFilter`. `LOG_FORMAT=json` writes

    {"timestamp": "2026-12-07T01:49:35.123Z", "level": "DEBUG", "logger": "api.logger",
     "process": "api-worker", "pid": 41, "message": "wrote 1 rows", "request_id": "r-1", ...}

and `LOG_FORMAT=text` the same fields compactly:

    2026-12-07T01:49:35.123Z DEBUG api-worker[41] api.logger: wrote 1 rows [request=r-1]

Levels. The project's loggers (and uvicorn's) log at LOG_LEVEL and every other library at
WARNING: SQLAlchemy at INFO prints every statement, MLflow and alembic every migration step. A
command (`command=True`, whose output is what it prints) keeps to warnings in text, as commands
always did here, unless LOG_LEVEL is DEBUG; in JSON, in a container, its lines go to the
collector like any process's. A line per request is a DEBUG matter: the API answers thousands
of requests a second and `prediction_logs` keeps each one, so the handlers' lines and uvicorn's
access log (`request_lines`) appear only at LOG_LEVEL=DEBUG.

Airflow configures a task's logging itself (structlog, its handlers, its format): with
`airflow=True` no handler or format is touched. The project's loggers get their levels and
propagate into Airflow's handlers, and the bound fields also go into structlog's context
variables, which Airflow's formatter merges into every line of the task log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from data.settings import Settings

# The project's packages, the module run with `python -m` (its `__name__` logger), and uvicorn.
PROJECT_LOGGERS = (
    "__main__",
    "alerting",
    "api",
    "data",
    "demo",
    "monitoring",
    "tools",
    "training",
    "uvicorn",
)
# MLflow, when imported, gives these loggers a stderr handler and format of its own and stops
# them propagating: their lines would bypass this setup (plain text among a container's JSON).
MLFLOW_LOGGERS = ("mlflow", "alembic", "huey", "sqlalchemy.engine")

FIELDS = frozenset(
    {
        "request_id",
        "last_request_id",
        "request_count",
        "model_version",
        "window_start",
        "window_end",
        "training_run_id",
        "dag_run_id",
    }
)

_NOTHING: Mapping[str, Any] = MappingProxyType({})
# Never mutated: binding sets a new mapping, so a thread or task that copied the context keeps
# what was bound when it started.
_bound: ContextVar[Mapping[str, Any]] = ContextVar("log_fields", default=_NOTHING)
_under_airflow = False


def configure_logging(
    settings: Settings, *, process: str, command: bool = False, airflow: bool = False
) -> None:
    """Send this process's log lines (its own, its libraries', uvicorn's) through one handler
    on stderr in LOG_FORMAT, at LOG_LEVEL; `process` names it in every line. Safe to call again.
    """
    global _under_airflow
    level = logging.getLevelNamesMapping()[settings.LOG_LEVEL]
    if command and settings.LOG_FORMAT == "text" and level > logging.DEBUG:
        level = max(level, logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.getLogger("uvicorn.access").setLevel(
        logging.INFO if level <= logging.DEBUG else logging.WARNING
    )
    # An environment variable is MLflow's only switch, read when it is first imported (by this
    # process or a child); a process that imported it already gets its loggers reset here.
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    for name in MLFLOW_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(logging.WARNING)
    _under_airflow = airflow
    if airflow:
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.addFilter(ContextFilter())
    json_lines = settings.LOG_FORMAT == "json"
    handler.setFormatter(JsonFormatter(process) if json_lines else TextFormatter(process))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a library's warnings.warn becomes a line like any other
    if json_lines:
        # A traceback printed as is would reach the collector as dozens of one-line records.
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def request_lines(settings: Settings) -> bool:
    """Whether a line per request is written (the handlers', uvicorn's access log)."""
    return settings.LOG_LEVEL == "DEBUG"


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind `fields` to every line logged inside the block (in this thread or task).

    Keys: the names in FIELDS, or `window=(start, end)`; a None value binds nothing.
    """
    added = _checked(fields)
    token = _bound.set({**_bound.get(), **added})
    structlog_tokens = _bind_for_airflow(added)
    try:
        yield
    finally:
        if structlog_tokens:
            import structlog.contextvars

            structlog.contextvars.reset_contextvars(**structlog_tokens)
        _bound.reset(token)


def bind(**fields: Any) -> None:
    """Bind `fields` for the rest of the current context: an asyncio task (each request is
    one), or a thread. Same keys as `log_context`."""
    added = _checked(fields)
    _bound.set({**_bound.get(), **added})
    _bind_for_airflow(added)


def bound_fields() -> Mapping[str, Any]:
    """What is bound here and now."""
    return _bound.get()


def on_airflow_task_start(context: Mapping[str, Any]) -> None:
    """`on_execute_callback` of every DAG task: the project's lines join Airflow's task log,
    with the DAG run's id on each."""
    from data.settings import get_settings

    configure_logging(get_settings(), process="airflow-task", airflow=True)
    bind(dag_run_id=getattr(context.get("dag_run"), "run_id", None))


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    window = fields.pop("window", None)
    if window is not None:
        fields["window_start"], fields["window_end"] = (_iso(moment) for moment in window)
    if not fields.keys() <= FIELDS:
        raise TypeError(f"unknown log fields {sorted(fields.keys() - FIELDS)}")
    return {
        name: value if isinstance(value, int) else str(value)
        for name, value in fields.items()
        if value is not None
    }


def _bind_for_airflow(fields: dict[str, Any]) -> dict[str, Any] | None:
    if not (_under_airflow and fields):
        return None
    import structlog.contextvars  # Airflow's own dependency; absent from the API image

    return structlog.contextvars.bind_contextvars(**fields)


def _iso(moment: datetime | str) -> str:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    # A captured warning's text ends with a newline (warnings.formatwarning's).
    return record.getMessage().rstrip()


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ContextFilter(logging.Filter):
    """Copies the fields bound where a record is logged onto it, as `record.log_fields`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.log_fields = _bound.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, process, pid, message, the bound
    fields, and `exception` with the traceback when there is one."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "process": self.process,
            "pid": record.process,
            "message": _message(record),
            **getattr(record, "log_fields", _NOTHING),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL process[pid] logger: message [bound fields]`, then any traceback."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        text = (
            f"{_timestamp(record.created)} {record.levelname} {self.process}[{record.process}] "
            f"{record.name}: {_message(record)}"
        )
        fields = _compact(getattr(record, "log_fields", _NOTHING))
        if fields:
            text += f" [{fields}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


def _compact(fields: Mapping[str, Any]) -> str:
    parts = []
    if "request_id" in fields:
        request = f"request={fields['request_id']}"
        last = fields.get("last_request_id")
        if last is not None and last != fields["request_id"]:
            request += f"..{last}"
        if fields.get("request_count", 1) != 1:
            request += f" ({fields['request_count']})"
        parts.append(request)
    if "model_version" in fields:
        parts.append(f"version={fields['model_version']}")
    if "window_start" in fields:
        parts.append(f"window={fields['window_start']}/{fields.get('window_end', '')}")
    if "training_run_id" in fields:
        parts.append(f"training_run={fields['training_run_id']}")
    if "dag_run_id" in fields:
        parts.append(f"dag_run={fields['dag_run_id']}")
    return " ".join(parts)


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stderr` is when a line is written: a command's `main`
    run in-process (as the tests do) writes where its caller's stderr now goes."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger().critical("uncaught exception", exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    error = (args.exc_type, args.exc_value, args.exc_traceback)
    name = args.thread.name if args.thread else "?"
    logging.getLogger().critical("uncaught exception in thread %s", name, exc_info=error)
