"""Shared fixtures: isolated settings, throwaway Postgres databases, the shipped schema.

Every test runs with its own `var/`-like folder (SQLite databases, MLflow store) under pytest's
tmp_path, so tests never touch a developer's `var/`. Postgres tests create a fresh database on
127.0.0.1:5432 and drop it afterwards.

Tiers: a test that starts something real (a Postgres database, a trained model, a server
process, Airflow, Prometheus, Docker) is marked `integration`, here, from the fixtures it uses
and the module it is in; the rest are unit tests, which `make check` runs alone (`-m "not
integration"`) in under two minutes. `make test` runs both.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from data import logs
from data.db import dispose_engines
from data.schema import FeatureSchema, load_schema
from data.settings import Settings, get_settings
from tools.testkit.databases import FRAUD_SCHEMA_PATH, fresh_postgres_database, store_settings
from tools.testkit.traffic import LABEL_TOKENS, TOKEN

# Fixtures that start something real: a Postgres database, a trained model (MLflow), a server
# process, Airflow, Docker. `database_url` counts only in its Postgres run.
INTEGRATION_FIXTURES = {
    "postgres_url", "private_postgres", "default_training", "client", "gate_store", "stack",
    "celery_stack", "demo", "api", "airflow", "server_env", "penguins",
}  # fmt: skip
# Modules whose tests start real processes, binaries or stores in their bodies.
INTEGRATION_MODULES = {
    "test_airflow_dags", "test_alert_rules", "test_alertmanager", "test_api_server",
    "test_api_server_durability",
    "test_bench_drift_postgres", "test_bench_label_maturity",
    "test_compose", "test_compose_stack",
    "test_dashboards", "test_demo", "test_demo_report", "test_exporter", "test_html_report",
    "test_kubernetes", "test_kubernetes_airflow", "test_logger", "test_monitoring_live",
    "test_oncall_scenarios",
    "test_own_model", "test_registry", "test_replay", "test_retrain_loop", "test_retrain_steps",
    "test_scorer_gate", "test_stack", "test_train", "test_window_checks",
}  # fmt: skip


# The longest modules first (measured with --durations, most of it starting real stacks): with
# `make test`'s workers (`-n 3 --dist loadfile --no-loadscope-reorder`: a module stays on one
# worker for its fixtures, and xdist hands them out in this order rather than by test count,
# which put the compose stacks, a few tests each, last), they start at once and the short ones
# fill in around them. Measured on one machine: 12:32 against 12:48 in xdist's order.
LONGEST_FIRST = (
    "test_compose_stack", "test_api_server_durability", "test_api_server",
    "test_alert_rules", "test_monitoring_live", "test_retrain_loop", "test_demo", "test_stack",
    "test_own_model", "test_oncall_scenarios", "test_airflow_dags", "test_logs",
    "test_scorer_gate", "test_registry", "test_performance", "test_api", "test_train",
    "test_retrain_steps", "test_window_checks",
)  # fmt: skip


def _module(item: pytest.Item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1] if item.module else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module(item), len(rank)))
    for item in items:
        module = _module(item)
        callspec = getattr(item, "callspec", None)
        postgres = callspec is not None and callspec.params.get("database_url") == "postgres"
        if (
            postgres
            or INTEGRATION_FIXTURES & set(item.fixturenames)
            or module in INTEGRATION_MODULES
            or item.get_closest_marker("slow")
            or item.get_closest_marker("postgres")
        ):
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture(autouse=True)
def isolated_logging() -> Iterator[None]:
    """A command's `main` run in-process configures the whole process's logging (data.logs):
    undone after each test, so the next one starts from pytest's own."""
    names = ["", *logs.PROJECT_LOGGERS, *logs.MLFLOW_LOGGERS, "uvicorn.access"]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, list(logger.handlers), logger.propagate)
    hooks = (sys.excepthook, threading.excepthook, warnings.showwarning)
    mlflow_configures = os.environ.get("MLFLOW_CONFIGURE_LOGGING")
    yield
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook, warnings.showwarning = hooks
    if mlflow_configures is None:
        os.environ.pop("MLFLOW_CONFIGURE_LOGGING", None)
    else:
        os.environ["MLFLOW_CONFIGURE_LOGGING"] = mlflow_configures


@pytest.fixture
def fraud_schema() -> FeatureSchema:
    return load_schema(FRAUD_SCHEMA_PATH)


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
    from tools.testkit.traffic import configure

    store, _ = default_training
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path)
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def private_postgres():
    """A Postgres server the test may stop and start (see tools/testkit/private_postgres.py)."""
    from tools.testkit.private_postgres import PrivatePostgres

    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def server_env(default_training, tmp_path) -> dict[str, str]:
    store, _ = default_training
    return {
        "MLFLOW_TRACKING_URI": store.MLFLOW_TRACKING_URI,
        "API_ADMIN_TOKEN": TOKEN,
        "LABEL_TOKENS": LABEL_TOKENS,
        "MODEL_POLL_SECONDS": "0",
        "PREDICTION_SPOOL_DIR": str(tmp_path / "spool"),
    }
