"""Shared fixtures: isolated settings, throwaway Postgres databases, the shipped schema.

Every test runs with its own `var/`-like folder (SQLite databases, MLflow store) under pytest's
tmp_path, so tests never touch a developer's `var/`. Postgres tests create a fresh database on
127.0.0.1:5432 and drop it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from data.db import dispose_engines
from data.schema import FeatureSchema, load_schema
from data.settings import PROJECT_ROOT, Settings, get_settings

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
FRAUD_SCHEMA_PATH = PROJECT_ROOT / "schemas" / "fraud.yaml"


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every store at a per-test folder and re-read settings for each test."""
    var = tmp_path / "var"
    var.mkdir()
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{var / 'monitoring.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{var / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(var / "mlartifacts"))
    monkeypatch.setenv("DATA_DIR", str(var / "data"))
    monkeypatch.chdir(tmp_path)  # .env in the project root must not leak into tests
    get_settings.cache_clear()
    dispose_engines()
    yield var
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture
def fraud_schema() -> FeatureSchema:
    return load_schema(FRAUD_SCHEMA_PATH)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty Postgres database on 127.0.0.1:5432, dropped on exit (even if in use)."""
    name = f"test_mlmon_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty Postgres database for one test; dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, isolated_settings: Path) -> str:
    """Run a test once against SQLite and once against real Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{isolated_settings / 'db.sqlite'}"
    return request.getfixturevalue("postgres_url")


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


@pytest.fixture(scope="session")
def default_training(tmp_path_factory: pytest.TempPathFactory):
    """`python -m training.train` as a newcomer runs it (defaults, 50,000 synthetic rows),
    auto-promoted, once per test session: (settings, TrainingResult)."""
    from training.train import train

    settings = store_settings(tmp_path_factory.mktemp("default-store"))
    return settings, train(settings=settings, auto_promote=True)


@pytest.fixture
def client(monkeypatch, default_training, tmp_path):
    """The app in-process (TestClient) serving the default model, logging to SQLite."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.traffic import configure

    store, _ = default_training
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path)
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def private_postgres():
    """A Postgres server the test may stop and start (see tests/private_postgres.py)."""
    from tests.private_postgres import PrivatePostgres

    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()
