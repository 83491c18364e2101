"""The table definitions, `init_db.sql`, and creating them on SQLite and Postgres."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import OperationalError

from data.db import (
    SchemaMigrationError,
    add_missing_columns_and_indexes,
    get_engine,
    init_db,
    labels,
    metadata,
    postgres_connect_args,
    postgres_ddl,
    use_statement_timeout,
)
from data.settings import PROJECT_ROOT, get_settings


def test_init_db_sql_is_generated_from_the_table_definitions():
    committed = (PROJECT_ROOT / "init_db.sql").read_text()
    assert committed == postgres_ddl(), "regenerate: python -m data.db --sql > init_db.sql"


def test_init_db_is_idempotent(database_url):
    engine = get_engine(database_url)
    init_db(engine)
    init_db(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables


def test_init_db_sql_creates_the_same_columns_on_postgres(postgres_url):
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql((PROJECT_ROOT / "init_db.sql").read_text())
        conn.exec_driver_sql((PROJECT_ROOT / "init_db.sql").read_text())  # re-runnable
    inspector = inspect(engine)
    for name, table in metadata.tables.items():
        assert [c["name"] for c in inspector.get_columns(name)] == [c.name for c in table.columns]
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from promotion_audit")).scalar() == 0
    engine.dispose()


# The `labels` table as every database made before label tokens has it: no `source` column and
# no index on `received_at` (create_all would leave it so).
OLD_LABELS = """CREATE TABLE labels (
    request_id VARCHAR(128) PRIMARY KEY,
    label SMALLINT NOT NULL,
    labelled_at TIMESTAMP WITH TIME ZONE NOT NULL,
    received_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
)"""


def test_init_db_adds_the_missing_columns_and_indexes_to_an_old_database(database_url):
    engine = get_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(OLD_LABELS)
        conn.exec_driver_sql(
            "INSERT INTO labels (request_id, label, labelled_at, received_at) "
            "VALUES ('old-1', 1, '2026-01-01 00:00:00+00', '2026-01-02 00:00:00+00')"
        )
    init_db(engine)
    inspector = inspect(engine)
    assert [c["name"] for c in inspector.get_columns("labels")] == [c.name for c in labels.columns]
    assert "ix_labels_received_at" in {i["name"] for i in inspector.get_indexes("labels")}
    assert {"label_history"} <= set(inspector.get_table_names())
    with engine.connect() as conn:  # the old row is kept, with no source
        assert conn.execute(select(labels.c.request_id, labels.c.source)).all() == [("old-1", None)]
    # Run again (and by a second process at start): nothing left to do, nothing fails.
    assert add_missing_columns_and_indexes(engine) == []
    init_db(engine)


def test_a_missing_not_null_column_is_a_clear_error_not_a_half_migration(database_url):
    engine = get_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE label_history (id INTEGER PRIMARY KEY)")
    with pytest.raises(SchemaMigrationError, match="'label_history' lacks the NOT NULL column"):
        init_db(engine)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts TCP connections and never says a word: a database
    whose network path or server went silent."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def _settings(monkeypatch, **values) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()


def test_connecting_to_a_black_holed_database_fails_within_the_connect_timeout(
    monkeypatch, black_hole
):
    _settings(monkeypatch, DATABASE_CONNECT_TIMEOUT_SECONDS=2)
    engine = get_engine(f"postgresql+psycopg2://mlmon@127.0.0.1:{black_hole}/monitoring")
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            engine.connect().close()
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=connect, daemon=True)  # a hang must not hang the suite
    thread.start()
    thread.join(timeout=15)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), "connect() to a silent server still waits after 15 s"
    assert isinstance(outcome[0], OperationalError)
    assert "timeout expired" in str(outcome[0])
    assert 1.5 < elapsed < 6, elapsed  # the 2 s connect timeout, not a fast refusal


def test_a_statement_over_the_statement_timeout_is_cancelled(monkeypatch, postgres_url):
    _settings(monkeypatch, DATABASE_STATEMENT_TIMEOUT_SECONDS=1)
    engine = get_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_sleep(0.1)").scalar() == ""  # shorter: served
    started = time.monotonic()
    cancelled = pytest.raises(
        OperationalError, match="canceling statement due to statement timeout"
    )
    with cancelled, engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_sleep(30)")
    assert time.monotonic() - started < 5


def test_the_api_statement_timeout_replaces_the_general_one_for_its_process(
    monkeypatch, postgres_url
):
    _settings(monkeypatch, DATABASE_STATEMENT_TIMEOUT_SECONDS=600)

    def statement_timeout() -> str:
        with get_engine(postgres_url).connect() as conn:
            return conn.exec_driver_sql("SHOW statement_timeout").scalar()

    assert statement_timeout() == "10min"
    use_statement_timeout(1.5)
    try:
        assert statement_timeout() == "1500ms"  # engines made before are replaced
        cancelled = pytest.raises(OperationalError, match="statement timeout")
        with cancelled, get_engine(postgres_url).connect() as conn:
            conn.exec_driver_sql("SELECT pg_sleep(30)")
    finally:
        use_statement_timeout(None)
    assert statement_timeout() == "10min"


def test_postgres_connections_get_keepalives_and_timeouts_from_the_settings(
    monkeypatch, postgres_url
):
    _settings(
        monkeypatch,
        DATABASE_CONNECT_TIMEOUT_SECONDS=7,
        DATABASE_KEEPALIVES_IDLE_SECONDS=11,
        DATABASE_KEEPALIVES_INTERVAL_SECONDS=3,
        DATABASE_KEEPALIVES_COUNT=4,
        DATABASE_TCP_USER_TIMEOUT_SECONDS=9,
    )
    with get_engine(postgres_url).connect() as conn:
        used = conn.connection.dbapi_connection.get_dsn_parameters()
    assert used["connect_timeout"] == "7"
    assert (used["keepalives"], used["keepalives_idle"]) == ("1", "11")
    assert (used["keepalives_interval"], used["keepalives_count"]) == ("3", "4")
    assert used["tcp_user_timeout"] == "9000"
    # An `options` of the URL is kept, the statement timeout added to it.
    args = postgres_connect_args(postgres_url + "?options=-c%20search_path%3Dmon")
    assert args["options"] == "-c search_path=mon -c statement_timeout=600000"


def test_sqlite_and_other_drivers_get_no_libpq_parameters(tmp_path):
    assert postgres_connect_args(f"sqlite:///{tmp_path / 'x.db'}") == {}
    assert postgres_connect_args("postgresql+pg8000://u@h/db") == {}
    with get_engine(f"sqlite:///{tmp_path / 'x.db'}").connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def _iptables(*rule: str) -> bool:
    try:
        return subprocess.run(["iptables", *rule], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_statement_on_a_connection_whose_server_went_silent_fails_within_seconds(
    monkeypatch, private_postgres
):
    """The writer's case: a pooled connection is open when the database's network path starts
    dropping every packet. The query's packets are never acknowledged; without
    `tcp_user_timeout` the kernel retransmits for ~15 minutes and the call hangs that long."""
    if not _iptables("-L", "INPUT", "-n"):
        pytest.skip("needs iptables (root, CAP_NET_ADMIN) to black-hole a port")
    _settings(monkeypatch, DATABASE_TCP_USER_TIMEOUT_SECONDS=2)
    engine = get_engine(private_postgres.url)
    conn = engine.connect()
    assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    rule = ["INPUT", "-p", "tcp", "-i", "lo", "--dport", str(private_postgres.port), "-j", "DROP"]
    assert _iptables("-I", *rule)
    outcome: list[BaseException | None] = []

    def query() -> None:
        try:
            conn.exec_driver_sql("SELECT 2")
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    try:
        started = time.monotonic()
        thread = threading.Thread(target=query, daemon=True)
        thread.start()
        thread.join(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        assert _iptables("-D", *rule)
    assert not thread.is_alive(), "a statement to a silent server still waits after 30 s"
    assert isinstance(outcome[0], OperationalError), outcome
    assert elapsed < 10, elapsed
    conn.invalidate()
    engine.dispose()
