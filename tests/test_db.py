"""The table definitions, `init_db.sql`, and creating them on SQLite and Postgres."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text

from data.db import get_engine, init_db, metadata, postgres_ddl
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
