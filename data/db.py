"""Database access: the one table definition and the engine every package uses.

The tables are declared once here with SQLAlchemy Core, so Postgres (compose, tests) and SQLite
(the embedded demo) get the same columns. `init_db.sql` at the repository root is generated from
these definitions (`python -m data.db --sql > init_db.sql`) and a test keeps it in step, so the
SQL file and the code cannot disagree about a column name. `init_db` also brings a database made
by an earlier version up to these definitions: the nullable columns and the indexes added since.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    inspect,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from data.settings import exit_on_config_error, get_settings

metadata = MetaData()

_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only
_JSON = JSON().with_variant(postgresql.JSONB, "postgresql")
_TIME = DateTime(timezone=True)

# One row per prediction the API served, keyed by its request id: the logger's retries and spool
# replays rely on the key to log each prediction exactly once. Features are one JSON object keyed
# by the schema's feature names, so the table does not change with the model; readers parse it
# with the schema (`data.prediction_log.read_predictions`), never hand the blob on. Every prediction
# is written here and read back every six hours, so the table is shaped for the insert: `json`
# rather than `jsonb` (Postgres keeps the text instead of converting it) and no surrogate id (one
# index fewer); measured with COPY, 21 µs a row of Postgres CPU became 10 µs.
prediction_logs = Table(
    "prediction_logs",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("predicted_at", _TIME, nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(50), nullable=False),
    Column("features", JSON, nullable=False),
    Column("predicted_class", SmallInteger, nullable=False),
    Column("score", Float, nullable=False),  # probability of the positive class
    Column("latency_ms", Float, nullable=False),
)
Index("ix_prediction_logs_predicted_at", prediction_logs.c.predicted_at)

# Ground truth that arrived later, joined to predictions by request id: the one label that
# counts per request, the latest received (`api.routes.feedback`). `received_at` is when the
# label that counts was received: it moves when a new label changes the value or `labelled_at`,
# and stays when the same label is sent again (a retry), so "labels new or changed since T" is a
# range on its index (the realized-performance refresh reads it). `source` is the label writer
# whose token sent it (LABEL_TOKENS); null for labels stored before label tokens existed.
#
# The monitoring pass copies onto each label what realized performance needs of its prediction
# (`monitoring.label_maturity.match_labels`: model, version, time, score, answered class), once,
# when both are in. Labels arrive days after their prediction, and every pass recomputes the
# realized figures of the earlier windows whose labels changed: with the prediction's time on the
# label, that reads the window's labels through `ix_labels_model_predicted_at`, never the window's
# predictions (their features make them fifty times wider). `matched_at` is when the copy was made,
# so a pass finds the labels matched since the previous one through its own index.
labels = Table(
    "labels",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("label", SmallInteger, nullable=False),
    Column("labelled_at", _TIME, nullable=False),
    Column("received_at", _TIME, nullable=False, server_default=func.now()),
    Column("source", String(64)),
    Column("model_name", String(200)),
    Column("model_version", String(50)),
    Column("predicted_at", _TIME),
    Column("score", Float),
    Column("predicted_class", SmallInteger),
    Column("matched_at", _TIME),
)
Index("ix_labels_model_predicted_at", labels.c.model_name, labels.c.predicted_at)
Index("ix_labels_matched_at", labels.c.matched_at)
# The labels still waiting for their prediction: what every pass tries to match, kept small.
Index(
    "ix_labels_unmatched",
    labels.c.request_id,
    postgresql_where=labels.c.predicted_at.is_(None),
    sqlite_where=labels.c.predicted_at.is_(None),
)
Index("ix_labels_received_at", labels.c.received_at)

# Every label the API accepted, appended, never updated: who said what about which request and
# when, so a flipped label is on record with its source and the earlier one is not lost.
label_history = Table(
    "label_history",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("request_id", String(128), nullable=False),
    Column("label", SmallInteger, nullable=False),
    Column("source", String(64), nullable=False),
    Column("labelled_at", _TIME, nullable=False),
    Column("received_at", _TIME, nullable=False, server_default=func.now()),
)
Index("ix_label_history_request_id", label_history.c.request_id)
# Retention deletes the history of labels whose prediction never came by this time.
Index("ix_label_history_received_at", label_history.c.received_at)


def _window_report_columns() -> list[Column]:
    """What every monitoring report row starts with: which window, which model, when.

    Then the report's own summary columns and, last, the full report as JSON in `report`.
    """
    return [
        Column("id", _ID, primary_key=True),
        Column("created_at", _TIME, nullable=False, server_default=func.now()),
        Column("window_start", _TIME, nullable=False),
        Column("window_end", _TIME, nullable=False),
        Column("model_name", String(200), nullable=False),
        Column("model_version", String(50)),
    ]


# The drift check's result for one window (the full report is `report`, see
# `monitoring.drift_report.DriftReport.to_dict`).
drift_reports = Table(
    "drift_reports",
    metadata,
    *_window_report_columns(),
    Column("rows_reference", Integer, nullable=False),
    Column("rows_current", Integer, nullable=False),
    Column("drifted_share", Float, nullable=False),
    Column("dataset_drift", Boolean, nullable=False),
    Column("prediction_drift", Boolean, nullable=False),
    Column("report", _JSON, nullable=False),
)
Index("ix_drift_reports_window_end", drift_reports.c.window_end)
# One row per window and model: re-running a window replaces its row (`save_reports`).
Index(
    "ux_drift_reports_model_window",
    drift_reports.c.model_name,
    drift_reports.c.window_end,
    drift_reports.c.window_start,
    unique=True,
)

# The data-quality check's result for one window.
quality_reports = Table(
    "quality_reports",
    metadata,
    *_window_report_columns(),
    Column("rows", Integer, nullable=False),
    Column("hard_failures", Integer, nullable=False),
    Column("soft_warnings", Integer, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("report", _JSON, nullable=False),
)
Index("ix_quality_reports_window_end", quality_reports.c.window_end)
# One row per window and model: re-running a window replaces its row (`save_reports`).
Index(
    "ux_quality_reports_model_window",
    quality_reports.c.model_name,
    quality_reports.c.window_end,
    quality_reports.c.window_start,
    unique=True,
)

# Model performance for one window: realized from the labels that arrived, and estimated from
# the scores (CBPE) before they do; the full `{"realized": ..., "estimated": ...}` is `report`.
performance_reports = Table(
    "performance_reports",
    metadata,
    *_window_report_columns(),
    Column("predictions", Integer, nullable=False),
    Column("labelled", Integer, nullable=False),
    Column("report", _JSON, nullable=False),
)
Index("ix_performance_reports_window_end", performance_reports.c.window_end)
# One row per window and model: re-running a window replaces its row (`save_reports`).
Index(
    "ux_performance_reports_model_window",
    performance_reports.c.model_name,
    performance_reports.c.window_end,
    performance_reports.c.window_start,
    unique=True,
)

# Every alert notification that went out (or failed to), for the post-incident timeline, one row
# per destination (`monitoring.retrain.notifier`). It is also the notifier's dedup memory across
# processes: "was this dedup_key delivered to this destination lately?" is the index below.
alert_log = Table(
    "alert_log",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("created_at", _TIME, nullable=False, server_default=func.now()),
    Column("alertname", String(200), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("status", String(20), nullable=False),  # firing | resolved
    # slack | pagerduty | email | webhook, alertmanager (then the only one), or log for an info
    # event routed nowhere
    Column("destination", String(50), nullable=False),
    Column("delivered", Boolean, nullable=False),
    # sent | failed | skipped (not configured) | deduplicated | not_routed
    Column("outcome", String(20), nullable=False),
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("dedup_key", String(300), nullable=False),
    Column("labels", _JSON),
    Column("annotations", _JSON),
    Column("error", Text),
)
Index(
    "ix_alert_log_dedup",
    alert_log.c.dedup_key,
    alert_log.c.destination,
    alert_log.c.created_at,
)

# A notification being sent: claimed (under a Postgres advisory lock on its dedup key and
# destination) before the send, so two processes cannot both send it; deleted if the send fails.
alert_claims = Table(
    "alert_claims",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("claimed_at", _TIME, nullable=False),
    Column("dedup_key", String(300), nullable=False),
    Column("destination", String(50), nullable=False),
)
Index(
    "ix_alert_claims_dedup",
    alert_claims.c.dedup_key,
    alert_claims.c.destination,
    alert_claims.c.claimed_at,
)

# Every promotion, rejection and rollback of a model version: who, why, when, with the numbers.
promotion_audit = Table(
    "promotion_audit",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("created_at", _TIME, nullable=False, server_default=func.now()),
    Column("model_name", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("action", String(20), nullable=False),  # promoted | challenger | rejected | rollback
    Column("previous_champion", String(50)),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("gates", _JSON),
)
Index(
    "ix_promotion_audit_model_created", promotion_audit.c.model_name, promotion_audit.c.created_at
)


# Every decision of the retrain policy (`monitoring.retrain.policy`), taken or not, one per
# drift-check window and model: what triggered it, what guard held it back, and the numbers.
retrain_decisions = Table(
    "retrain_decisions",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("created_at", _TIME, nullable=False, server_default=func.now()),
    Column("window_start", _TIME, nullable=False),
    Column("window_end", _TIME, nullable=False),  # the decision's time: the run's logical time
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(50)),  # the champion the window was checked against
    Column("retrain", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("triggers", _JSON, nullable=False),  # ["critical_drift", ...], empty when healthy
    Column("blocked_by", String(50)),  # cooldown | daily_cap | training_running | ...
    Column("numbers", _JSON, nullable=False),
    Column("training_run_id", BigInteger),
)
Index(
    "ux_retrain_decisions_model_window",
    retrain_decisions.c.model_name,
    retrain_decisions.c.window_end,
    retrain_decisions.c.window_start,
    unique=True,
)

# Every training run the loop started (or a person asked for): the cooldown, the daily cap and
# "not while one is running" read this table. `requested_at` is the logical time the run was
# asked for (a drift window's end), so re-runs and simulations keep their own clock.
training_runs = Table(
    "training_runs",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("created_at", _TIME, nullable=False, server_default=func.now()),
    Column("requested_at", _TIME, nullable=False),
    Column("finished_at", _TIME),
    Column("model_name", String(200), nullable=False),
    Column("trigger", String(20), nullable=False),  # policy | schedule | manual
    Column("reason", Text, nullable=False),
    Column(
        "status", String(20), nullable=False
    ),  # running | promoted | challenger | rejected | failed
    Column("data_start", _TIME),
    Column("data_end", _TIME),
    Column("version", String(50)),
    Column("external_id", String(250)),  # the Airflow dag run id, when Airflow started it
    Column("details", _JSON),
)
Index("ix_training_runs_model_requested", training_runs.c.model_name, training_runs.c.requested_at)


_engines: dict[str, Engine] = {}
# The statement timeout of this process's Postgres engines when it is not the general one:
# the API's (`use_statement_timeout`).
_statement_timeout_override: float | None = None

# libpq drivers: they take the connection parameters below as keywords.
_LIBPQ_DRIVERS = {"psycopg2", "psycopg"}


def get_engine(url: str | None = None) -> Engine:
    """A pooled engine for `url` (default: `DATABASE_URL`), created once per process.

    Postgres connections get the timeouts of the settings (`postgres_connect_args`), so a
    database that stops answering makes a call fail within seconds instead of hanging it.
    """
    url = url or get_settings().database_url
    if url not in _engines:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True, connect_args=postgres_connect_args(url))
        _engines[url] = engine
    return _engines[url]


def postgres_connect_args(url: str) -> dict:
    """The libpq parameters every Postgres connection gets: `connect_timeout`, TCP keepalives,
    `tcp_user_timeout` and the server's `statement_timeout`, from the settings.

    Connect timeout: a server that accepts nothing (or accepts and never answers) fails the
    connection in seconds. Keepalives: a pooled idle connection to a server that vanished is
    found dead. TCP user timeout: a statement sent to a server that went silent fails instead of
    waiting for the kernel's retransmissions (~15 minutes). Statement timeout: the server
    cancels what runs too long. Empty for a driver that is not libpq's; an `options` in the URL
    is kept, the statement timeout appended to it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() not in _LIBPQ_DRIVERS:
        return {}
    settings = get_settings()
    statement_timeout = (
        settings.DATABASE_STATEMENT_TIMEOUT_SECONDS
        if _statement_timeout_override is None
        else _statement_timeout_override
    )
    options = " ".join(
        part
        for part in (
            parsed.query.get("options"),
            f"-c statement_timeout={round(statement_timeout * 1000)}",
        )
        if part
    )
    return {
        "connect_timeout": settings.DATABASE_CONNECT_TIMEOUT_SECONDS,
        "keepalives": 1,
        "keepalives_idle": settings.DATABASE_KEEPALIVES_IDLE_SECONDS,
        "keepalives_interval": settings.DATABASE_KEEPALIVES_INTERVAL_SECONDS,
        "keepalives_count": settings.DATABASE_KEEPALIVES_COUNT,
        "tcp_user_timeout": settings.DATABASE_TCP_USER_TIMEOUT_SECONDS * 1000,
        "options": options,
    }


def use_statement_timeout(seconds: float | None) -> None:
    """From now on this process's Postgres engines cancel a statement after `seconds` (None: the
    general `DATABASE_STATEMENT_TIMEOUT_SECONDS` again). The engines made so far are closed, so
    the next call makes new ones with it. The API uses it for its short statements."""
    global _statement_timeout_override
    _statement_timeout_override = seconds
    dispose_engines()


def dispose_engines() -> None:
    """Close every pooled connection (tests, and workers after a fork)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the API write while the demo's monitoring jobs read the same file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def as_utc(moment: datetime | str) -> datetime:
    """An aware UTC datetime from a datetime or ISO-8601 text; naive times are taken as UTC.

    Everything stored is UTC, and SQLite hands stored times back naive.
    """
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if type(moment) is not datetime:
        # A subclass, such as the pendulum times Airflow hands its tasks: pendulum drops the
        # time zone of `datetime.UTC` in arithmetic, and naive and aware times then collide.
        moment = datetime(*moment.timetuple()[:6], moment.microsecond, tzinfo=moment.tzinfo)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def database_error_message(exc: SQLAlchemyError) -> str:
    """One line for a command line to print when the database fails: which one, and why."""
    where = make_url(get_settings().database_url).render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"the database {where} failed: {reason[0] if reason else type(exc).__name__}"


class SchemaMigrationError(RuntimeError):
    """An existing table lacks a column that cannot be added in place (one that is NOT NULL);
    the message names the table and the column."""


def init_db(engine: Engine | None = None) -> None:
    """Create any missing tables, columns and indexes; safe to call at every start, by several
    processes at once.

    `create_all` creates the tables that are missing but leaves an existing table as it is, so
    a database made by an earlier version would lack the columns and indexes added since: those
    are added here (`add_missing_columns_and_indexes`).
    """
    engine = engine or get_engine()
    metadata.create_all(engine)
    add_missing_columns_and_indexes(engine)


def add_missing_columns_and_indexes(engine: Engine) -> list[str]:
    """Bring every existing table of `metadata` up to its definition, in place: add each missing
    column (`ALTER TABLE ... ADD COLUMN`) and create each missing index (`CREATE INDEX IF NOT
    EXISTS`), on Postgres and SQLite. Returns the DDL it ran (empty when nothing was missing).

    Only nullable columns can be added to a table that has rows; a missing NOT NULL column is a
    `SchemaMigrationError` naming it (such a change needs a hand-written migration). Columns are
    never dropped, renamed or retyped. Idempotent and safe against another process doing the
    same at the same time: Postgres adds `IF NOT EXISTS`, and a SQLite "duplicate column" from a
    process that got there first is taken as done.
    """
    dialect = engine.dialect
    inspector = inspect(engine)
    existing_tables = set(inspector.get_table_names())
    statements: list[str] = []
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue  # create_all makes it whole, indexes included
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise SchemaMigrationError(
                    f"table {table.name!r} lacks the NOT NULL column {column.name!r}, which "
                    "cannot be added to a table with rows; migrate it by hand"
                )
            definition = str(CreateColumn(column).compile(dialect=dialect)).strip()
            if_not_exists = "IF NOT EXISTS " if dialect.name == "postgresql" else ""
            statements.append(
                f"ALTER TABLE {dialect.identifier_preparer.format_table(table)} "
                f"ADD COLUMN {if_not_exists}{definition}"
            )
        statements.extend(
            str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda i: i.name or "")
            if index.name not in {i["name"] for i in inspector.get_indexes(table.name)}
        )
    for statement in statements:
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
        except OperationalError as exc:
            if "duplicate column" not in str(exc.orig).lower():  # SQLite: another process won
                raise
    return statements


def postgres_ddl() -> str:
    """The Postgres DDL for every table, idempotent (what `init_db.sql` holds)."""
    dialect = postgresql.dialect()
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        statements.extend(
            str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda i: i.name or "")
        )
    header = "-- Generated by `python -m data.db --sql` from data/db.py; do not edit by hand.\n"
    body = "".join(f"{statement.strip()};\n\n" for statement in statements)
    return header + "\n".join(line.rstrip() for line in body.splitlines()).rstrip() + "\n"


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the monitoring tables.")
    parser.add_argument("--sql", action="store_true", help="print the Postgres DDL and exit")
    args = parser.parse_args(argv)
    if args.sql:
        sys.stdout.write(postgres_ddl())
        return 0
    try:
        init_db()
    except SQLAlchemyError as exc:
        print(f"error: {database_error_message(exc)}", file=sys.stderr)
        return 2
    print(f"tables ready in {get_engine().url.render_as_string(hide_password=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
