"""The table definitions, `init_db.sql`, and creating them on SQLite and Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, select, text

from data.db import (
    SchemaMigrationError,
    add_missing_columns_and_indexes,
    get_engine,
    init_db,
    labels,
    metadata,
    postgres_ddl,
)
from data.settings import PROJECT_ROOT


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
