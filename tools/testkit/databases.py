"""Scratch stores for tests and benchmarks: a throwaway Postgres database, settings whose stores
all live under one folder, the shipped schema's path."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from data.db import dispose_engines
from data.settings import PROJECT_ROOT, Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
FRAUD_SCHEMA_PATH = PROJECT_ROOT / "schemas" / "fraud.yaml"


@contextmanager
def fresh_postgres_database(
    prefix: str = "test_mlmon", admin_url: str = POSTGRES_ADMIN_URL
) -> Iterator[str]:
    """A new, empty Postgres database, its URL; dropped on exit (even if still in use)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            dispose_engines()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def store_settings(var: Path, **overrides) -> Settings:
    """Settings whose stores (SQLite, MLflow, generated data) all live under `var`."""
    values = {
        "ENVIRONMENT": "development",
        "DATABASE_URL": f"sqlite:///{var / 'monitoring.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{var / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(var / "mlartifacts"),
        "DATA_DIR": str(var / "data"),
    }
    return Settings(**(values | overrides))
