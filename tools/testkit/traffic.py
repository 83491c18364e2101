"""Talking to the API as a client does, shared by the API and monitoring tests."""

from __future__ import annotations

from data.replay import request_instances
from data.settings import get_settings
from data.synthetic import generate_transactions

TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
# The tests' label writer: its own source and token (LABEL_TOKENS), never the admin's.
LABEL_SOURCE = "tests"
LABEL_TOKEN = "test-label-token"
LABEL_TOKENS = f"{LABEL_SOURCE}={LABEL_TOKEN}"
LABELLER = {"Authorization": f"Bearer {LABEL_TOKEN}"}


def request_rows(schema, n: int, seed: int = 5) -> list[dict]:
    """`n` synthetic transactions as a client sends them."""
    return request_features(generate_transactions(n, seed=seed), schema)


def request_features(frame, schema) -> list[dict]:
    """The rows of `frame` as `features` objects, as `data.replay` sends them."""
    return [instance["features"] for instance in request_instances(frame, schema)]


def configure(monkeypatch, store, database_url: str, tmp_path, **env) -> None:
    values = {
        "MLFLOW_TRACKING_URI": store.MLFLOW_TRACKING_URI,
        "DATABASE_URL": database_url,
        "API_ADMIN_TOKEN": TOKEN,
        "LABEL_TOKENS": LABEL_TOKENS,
        "MODEL_POLL_SECONDS": "0",
        "PREDICTION_SPOOL_DIR": str(tmp_path / "spool"),
        **{k: str(v) for k, v in env.items()},
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
