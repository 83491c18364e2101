"""Settings: defaults, the environment, `.env.example`, and refusing placeholder secrets."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

from data.settings import PROJECT_ROOT, ConfigError, Settings, get_settings


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


# `.env.example` is also the template of compose's `.env`: below this line come the variables
# only docker-compose.yml reads (passwords, ports, image tags), which are not settings.
COMPOSE_ONLY_MARKER = "# ==== docker compose only ===="


def test_every_setting_is_documented_in_env_example():
    text = (PROJECT_ROOT / ".env.example").read_text()
    settings_part, marker, compose_part = text.partition(COMPOSE_ONLY_MARKER)
    assert marker, f"{COMPOSE_ONLY_MARKER!r} is missing from .env.example"
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", settings_part, flags=re.M))
    assert documented == set(Settings.model_fields)
    compose_only = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", compose_part, flags=re.M))
    assert not compose_only & set(Settings.model_fields), "a setting belongs above the marker"
    # and each variable has a comment line right above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]+=", line):
            assert lines[i - 1].startswith("#") or re.match(r"^[A-Z_]+=", lines[i - 1]), line


def test_a_dotenv_copied_from_env_example_loads(tmp_path, monkeypatch):
    """Found by the compose file: `SMTP_PASSWORD=` (empty) in a copied .env.example counted as
    a password without a user, and every command refused to start."""
    (tmp_path / ".env").write_text((PROJECT_ROOT / ".env.example").read_text())
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.SMTP_PASSWORD is None and settings.SLACK_WEBHOOK_URL is None
    assert settings.TRAINING_DATA == "" and settings.PROMETHEUS_MULTIPROC_DIR is None


def test_placeholder_secrets_are_fine_in_development(monkeypatch):
    monkeypatch.setenv("API_ADMIN_TOKEN", "changeme")
    assert Settings().API_ADMIN_TOKEN.get_secret_value() == "changeme"


LABELS = "chargebacks=9f2c-real-label-token,manual-review=41aa-real-label-token"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"API_ADMIN_TOKEN": "changeme", "LABEL_TOKENS": LABELS},
            "API_ADMIN_TOKEN is a placeholder",
        ),
        (
            {"API_ADMIN_TOKEN": "s3cr3t-token", "LABEL_TOKENS": "chargebacks=x,review=CHANGEME"},
            r"LABEL_TOKENS \(source 'review'\) is a placeholder",
        ),
        (
            {
                "API_ADMIN_TOKEN": "s3cr3t-token",
                "LABEL_TOKENS": LABELS,
                "PAGERDUTY_ROUTING_KEY": "CHANGEME",
            },
            "PAGERDUTY_ROUTING_KEY is a placeholder",
        ),
        (
            {
                "API_ADMIN_TOKEN": "s3cr3t-token",
                "LABEL_TOKENS": LABELS,
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


def test_the_api_tokens_are_required_by_the_api_only(monkeypatch):
    """Found in dockerfiles/kubernetes/airflow-values.yaml (ENVIRONMENT=production, no API
    tokens): every DAG task refused to start for two tokens it never uses. The API still refuses
    to start without them."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("API_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("LABEL_TOKENS", raising=False)
    settings = Settings()  # the exporter's, a DAG task's
    with pytest.raises(
        ConfigError,
        match="API_ADMIN_TOKEN and LABEL_TOKENS must be set for the API when "
        "ENVIRONMENT=production",
    ):
        settings.require_api_secrets()
    monkeypatch.setenv("API_ADMIN_TOKEN", "s3cr3t-token")
    with pytest.raises(ConfigError, match=r"^LABEL_TOKENS must be set for the API"):
        Settings().require_api_secrets()
    monkeypatch.setenv("LABEL_TOKENS", LABELS)
    Settings().require_api_secrets()
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.delenv("LABEL_TOKENS")
    Settings().require_api_secrets()  # development: the endpoints answer 503 instead


def test_real_secrets_accepted_in_production(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_ADMIN_TOKEN", "a-real-token-7f3a")
    monkeypatch.setenv("LABEL_TOKENS", LABELS)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://mlmon:Zx9-long@db:5432/monitoring")
    assert Settings().is_development is False


def test_label_tokens_are_source_token_pairs(monkeypatch):
    monkeypatch.setenv("LABEL_TOKENS", " chargebacks = abc== , manual-review=def")
    tokens = Settings().label_tokens
    assert {source: token.get_secret_value() for source, token in tokens.items()} == {
        "chargebacks": "abc==",  # a token may hold '=' (base64 padding)
        "manual-review": "def",
    }
    monkeypatch.delenv("LABEL_TOKENS")
    assert Settings().label_tokens == {}
    assert "abc" not in repr(Settings(LABEL_TOKENS="chargebacks=abc"))  # a secret


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("abc123", "LABEL_TOKENS: pair 1 has no '=': expected source=token pairs"),
        ("chargebacks=abc,def", "LABEL_TOKENS: pair 2 has no '='"),
        ("=abc", "LABEL_TOKENS: pair 1 has an empty source"),
        ("chargebacks=", "LABEL_TOKENS: source 'chargebacks' has an empty token"),
        ("chargebacks=abc,", "LABEL_TOKENS: pair 2 has no '='"),
        ("charge backs=abc", "LABEL_TOKENS: source 'charge backs' (pair 1) is not"),
        ("chargebacks=ab c", "LABEL_TOKENS: the token of source 'chargebacks' contains whitespace"),
        ("a=abc,a=def", "LABEL_TOKENS: source 'a' is given twice"),
        ("a=abc,b=abc", "LABEL_TOKENS: sources 'a' and 'b' share one token"),
        ("a=admin-7f3a", "LABEL_TOKENS: the token of source 'a' is API_ADMIN_TOKEN"),
    ],
)
def test_malformed_label_tokens_stop_the_start_naming_label_tokens(monkeypatch, value, named):
    monkeypatch.setenv("API_ADMIN_TOKEN", "admin-7f3a")
    monkeypatch.setenv("LABEL_TOKENS", value)
    get_settings.cache_clear()
    with pytest.raises(ConfigError) as raised:
        get_settings()
    message = str(raised.value)
    assert named in message and "\n" not in message
    # the message names pairs and sources, never a token
    for secret in ("abc", "def", "admin-7f3a"):
        assert secret not in message, message
    get_settings.cache_clear()


def test_bad_values_are_named(monkeypatch):
    monkeypatch.setenv("PSI_WARNING", "0.3")
    with pytest.raises(ValidationError, match=r"PSI_WARNING .* must be below PSI_CRITICAL"):
        Settings()
    monkeypatch.setenv("PSI_WARNING", "0.1")
    monkeypatch.setenv("DRIFT_WINDOW_HOURS", "soon")
    with pytest.raises(ValidationError, match="DRIFT_WINDOW_HOURS"):
        Settings()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MLFLOW_TRACKING_URI": "./mlruns"}, "MLFLOW_TRACKING_URI: './mlruns' is a file store"),
        (
            {"MLFLOW_TRACKING_URI": "file:///srv/mlruns"},
            "MLFLOW_TRACKING_URI: 'file:///srv/mlruns'",
        ),
        ({"API_PORT": "70000"}, "API_PORT: Input should be less than 65536 (got '70000')"),
        ({"PSI_WARNING": "0.5"}, "PSI_WARNING (0.5) must be below PSI_CRITICAL (0.2)"),
    ],
)
def test_get_settings_says_what_is_wrong_in_one_line(monkeypatch, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    with pytest.raises(ConfigError) as raised:
        get_settings()
    assert named in str(raised.value) and "\n" not in str(raised.value)
    get_settings.cache_clear()


def test_database_and_server_tracking_uris_are_accepted(monkeypatch):
    for uri in ("sqlite:///var/mlflow.db", "postgresql://mlflow@db/mlflow", "http://mlflow:5000"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert uri == Settings().MLFLOW_TRACKING_URI


# Every command that reads the settings, with arguments that get it that far.
COMMANDS = [
    ["api.serve", "--port", "0"],
    ["data.db"],
    ["data.replay", "--data", "missing.parquet"],
    ["training.train", "--rows", "1000"],
    ["training.register_model", "history"],
    ["monitoring.window_checks", "--hours", "1"],
    ["monitoring.prometheus_exporter", "--once"],
]


@pytest.mark.slow
def test_every_command_stops_on_a_file_store_with_one_line_and_no_traceback(tmp_path):
    """Found by hand: with MLFLOW_TRACKING_URI a directory, `api.serve` ended with MLflow's
    traceback from a worker's lifespan; a command must say which setting to fix instead."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": str(tmp_path / "mlruns")}
    runs = {
        command[0]: subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in COMMANDS
    }
    for module, process in runs.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, (module, stderr)
        assert "Traceback" not in stderr, (module, stderr)
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: invalid configuration: MLFLOW_TRACKING_URI: "), (
            module,
            last,
        )
    assert not (tmp_path / "mlruns").exists()


def test_production_without_api_tokens_the_api_refuses_and_the_exporter_starts(tmp_path):
    """The Helm values run the DAG tasks with ENVIRONMENT=production and no API tokens: the
    commands that never use the tokens run; `python -m api.serve` says which ones it needs."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("API_ADMIN_TOKEN", "LABEL_TOKENS")},
        "ENVIRONMENT": "production",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *command], cwd=PROJECT_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    api = run("api.serve", "--port", "0")
    assert api.returncode == 2, api.stderr
    assert api.stderr.strip().splitlines()[-1] == (
        "error: API_ADMIN_TOKEN and LABEL_TOKENS must be set for the API when "
        "ENVIRONMENT=production"
    )
    exporter = run("data.db")  # a DAG task's kind of command: it reads the settings, then works
    assert exporter.returncode == 0, exporter.stderr
