"""Settings: defaults, the environment, `.env.example`, and refusing placeholder secrets."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from data.settings import PROJECT_ROOT, Settings, get_settings


def test_embedded_defaults_match_the_architecture(monkeypatch):
    for name in ("DATABASE_URL", "MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name)
    settings = Settings()
    assert settings.DATABASE_URL == "sqlite:///var/monitoring.db"
    assert settings.MLFLOW_TRACKING_URI == "sqlite:///var/mlflow.db"
    assert settings.MODEL_NAME == "fraud-detector"
    assert settings.FEATURE_SCHEMA == "schemas/fraud.yaml"
    assert settings.AUTO_PROMOTE is False
    assert (settings.DRIFT_WINDOW_HOURS, settings.RETRAIN_COOLDOWN_HOURS) == (6, 12)
    assert (settings.KS_P_THRESHOLD, settings.CHI2_P_THRESHOLD) == (0.05, 0.05)
    assert (settings.PSI_WARNING, settings.PSI_CRITICAL) == (0.1, 0.2)
    # Relative SQLite paths are anchored at the repository root, whatever the working directory.
    assert settings.database_url == f"sqlite:///{PROJECT_ROOT / 'var' / 'monitoring.db'}"


def test_environment_overrides_and_is_read_once(monkeypatch):
    monkeypatch.setenv("AUTO_PROMOTE", "true")
    monkeypatch.setenv("PSI_CRITICAL", "0.3")
    get_settings.cache_clear()
    first = get_settings()
    assert first.AUTO_PROMOTE is True and first.PSI_CRITICAL == 0.3
    monkeypatch.setenv("PSI_CRITICAL", "0.5")
    assert get_settings() is first


def test_every_setting_is_documented_in_env_example():
    text = (PROJECT_ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    assert documented == set(Settings.model_fields)
    # and each variable has a comment line right above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]+=", line):
            assert lines[i - 1].startswith("#") or re.match(r"^[A-Z_]+=", lines[i - 1]), line


def test_placeholder_secrets_are_fine_in_development(monkeypatch):
    monkeypatch.setenv("API_ADMIN_TOKEN", "changeme")
    assert Settings().API_ADMIN_TOKEN.get_secret_value() == "changeme"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "API_ADMIN_TOKEN must be set when ENVIRONMENT=production"),
        ({"API_ADMIN_TOKEN": "changeme"}, "API_ADMIN_TOKEN is a placeholder"),
        (
            {"API_ADMIN_TOKEN": "s3cr3t-token", "PAGERDUTY_ROUTING_KEY": "CHANGEME"},
            "PAGERDUTY_ROUTING_KEY is a placeholder",
        ),
        (
            {
                "API_ADMIN_TOKEN": "s3cr3t-token",
                "DATABASE_URL": "postgresql+psycopg2://mlmon:changeme@db:5432/monitoring",
            },
            "DATABASE_URL uses a placeholder password",
        ),
    ],
)
def test_placeholder_secrets_refused_outside_development(monkeypatch, env, message):
    monkeypatch.setenv("ENVIRONMENT", "production")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_real_secrets_accepted_in_production(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_ADMIN_TOKEN", "a-real-token-7f3a")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://mlmon:Zx9-long@db:5432/monitoring")
    assert Settings().is_development is False


def test_bad_values_are_named(monkeypatch):
    monkeypatch.setenv("PSI_WARNING", "0.3")
    with pytest.raises(ValidationError, match=r"PSI_WARNING .* must be below PSI_CRITICAL"):
        Settings()
    monkeypatch.setenv("PSI_WARNING", "0.1")
    monkeypatch.setenv("DRIFT_WINDOW_HOURS", "soon")
    with pytest.raises(ValidationError, match="DRIFT_WINDOW_HOURS"):
        Settings()
