"""The stack's configuration: the one place that reads the environment.

Every package (data, training, monitoring, api, the DAGs) calls `get_settings()`; nothing else
touches `os.environ`. Every field is documented in `.env.example`. Defaults are the embedded ones
(`make demo`: SQLite and a local MLflow store under `var/`); compose overrides them with Postgres
and the MLflow server. Outside `ENVIRONMENT=development` placeholder secrets are refused at start,
so a copied `.env.example` cannot reach production unnoticed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import lru_cache, wraps
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Values that mean "nobody filled this in"; `.env.example` uses the first one.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "changethis", "secret", "password", "xxx"}
)


class ConfigError(ValueError):
    """The environment (or `.env`) holds settings the stack cannot run with; the message names
    each variable and says what is wrong with it, in one line."""


class Settings(BaseSettings):
    """Typed view of the environment (see `.env.example` for every variable)."""

    # An empty variable (`SMTP_PASSWORD=` in a copied .env.example, `${VAR:-}` in compose)
    # means unset: the default applies, not an empty value.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=True, env_ignore_empty=True
    )

    ENVIRONMENT: str = "development"

    # Stores
    DATABASE_URL: str = "sqlite:///var/monitoring.db"
    MLFLOW_TRACKING_URI: str = "sqlite:///var/mlflow.db"
    MLFLOW_ARTIFACT_ROOT: str = "var/mlartifacts"
    MLFLOW_EXPERIMENT: str = "fraud-detector"

    # The model and its data
    MODEL_NAME: str = "fraud-detector"
    FEATURE_SCHEMA: str = "schemas/fraud.yaml"
    DATA_DIR: str = "var/data"
    MODEL_TYPE: Literal["hist_gradient_boosting", "random_forest"] = "hist_gradient_boosting"
    REFERENCE_SAMPLE_SIZE: int = Field(default=10_000, ge=100)

    # Promotion gates
    AUTO_PROMOTE: bool = False
    GATE_MIN_ROC_AUC: float = Field(default=0.90, ge=0, le=1)
    GATE_MIN_PR_AUC: float = Field(default=0.50, ge=0, le=1)
    GATE_MIN_F1: float = Field(default=0.40, ge=0, le=1)
    GATE_MAX_REGRESSION: float = Field(default=0.02, ge=0, le=1)
    GATE_LATENCY_BUDGET_MS: float = Field(default=20.0, gt=0)
    GATE_MAX_CALIBRATION_WORSENING: float = Field(default=0.10, ge=0)

    # Drift and retraining
    DRIFT_WINDOW_HOURS: int = Field(default=6, gt=0)
    RETRAIN_COOLDOWN_HOURS: int = Field(default=12, ge=0)
    # The retrain policy (monitoring.retrain.policy): at most this many automatic retrains in
    # 24 hours, none while one runs (a run older than RETRAIN_TIMEOUT_HOURS counts as dead),
    # none without RETRAIN_MIN_LABELLED_ROWS labelled rows in the last RETRAIN_DATA_DAYS.
    RETRAIN_MAX_PER_DAY: int = Field(default=2, ge=1)
    RETRAIN_TIMEOUT_HOURS: float = Field(default=6.0, gt=0)
    RETRAIN_MIN_LABELLED_ROWS: int = Field(default=1_000, ge=1)
    RETRAIN_DATA_DAYS: float = Field(default=7.0, gt=0)
    # Accuracy floors: realized (trusted once at least RETRAIN_MIN_LABEL_COVERAGE of the
    # window's predictions are labelled) and estimated (CBPE, before labels arrive).
    RETRAIN_ACCURACY_FLOOR: float = Field(default=0.90, ge=0, le=1)
    RETRAIN_ESTIMATED_ACCURACY_FLOOR: float = Field(default=0.90, ge=0, le=1)
    RETRAIN_MIN_LABEL_COVERAGE: float = Field(default=0.3, gt=0, le=1)
    # A retrain learns from the recent labelled predictions plus a sample of the original
    # training data (TRAINING_DATA; the synthetic set when empty) of this many rows per recent
    # row: the recent relationship dominates, the old one keeps rare cases in view.
    TRAINING_DATA: str = ""
    RETRAIN_BASE_SAMPLE_RATIO: float = Field(default=0.2, ge=0)
    # Prediction log rows (and their labels) older than this many days are deleted by the
    # maintenance DAG, in batches of PREDICTION_RETENTION_BATCH rows (5,000 deleted a day as fast
    # as 50,000 or 200,000, next to the same logging, in transactions a tenth as long; BENCHMARKS).
    PREDICTION_RETENTION_DAYS: float = Field(default=30.0, gt=0)
    PREDICTION_RETENTION_BATCH: int = Field(default=5_000, ge=1)
    KS_P_THRESHOLD: float = Field(default=0.05, gt=0, lt=1)
    CHI2_P_THRESHOLD: float = Field(default=0.05, gt=0, lt=1)
    PSI_WARNING: float = Field(default=0.1, gt=0)
    PSI_CRITICAL: float = Field(default=0.2, gt=0)
    DRIFT_CORRECTION: Literal["benjamini_hochberg", "bonferroni"] = "benjamini_hochberg"
    DRIFT_SHARE_THRESHOLD: float = Field(default=0.3, gt=0, le=1)
    # Effect size of numerical features beside PSI: Wasserstein distance in reference stds.
    WASSERSTEIN_WARNING: float = Field(default=0.1, gt=0)
    WASSERSTEIN_CRITICAL: float = Field(default=0.5, gt=0)
    WASSERSTEIN_NOISE_MULTIPLE: float = Field(default=5.0, ge=0)

    # Monitoring jobs and the Prometheus exporter (monitoring/)
    EXPECTED_ROWS_PER_HOUR: float = Field(default=0.0, ge=0)
    EXPORTER_PORT: int = Field(default=9100, gt=0, lt=65536)
    EXPORTER_CACHE_SECONDS: float = Field(default=15.0, ge=0)

    # Serving (api/)
    API_WORKERS: int = Field(default=2, ge=1)
    API_PORT: int = Field(default=8000, gt=0, lt=65536)
    MODEL_POLL_SECONDS: float = Field(default=30.0, ge=0)
    MAX_BATCH_SIZE: int = Field(default=1_000, ge=1)
    MAX_BODY_BYTES: int = Field(default=2_000_000, ge=1_024)
    PREDICTION_SPOOL_DIR: str = "var/spool"
    # Each answered prediction is appended to a journal in PREDICTION_SPOOL_DIR before the
    # answer, so a killed worker loses none; off only to measure what it costs.
    PREDICTION_JOURNAL: bool = True
    # How long a label may wait for its prediction to reach the log before it counts as
    # orphaned (`ml_labels_orphaned`).
    LABEL_MATCH_MINUTES: int = Field(default=60, ge=1)
    # Off only to measure what monitoring costs (`make bench`): no prediction log, no metrics.
    API_MONITORING: bool = True
    # Read by prometheus_client itself; `python -m api.serve` sets and wipes it for its workers.
    PROMETHEUS_MULTIPROC_DIR: str | None = None

    # Alert destinations and admin access
    SLACK_WEBHOOK_URL: SecretStr | None = None
    PAGERDUTY_ROUTING_KEY: SecretStr | None = None
    API_ADMIN_TOKEN: SecretStr | None = None

    # Notifications (alerting.notify through monitoring.retrain.notifier)
    PAGERDUTY_EVENTS_URL: str = "https://events.pagerduty.com/v2/enqueue"
    # A webhook URL usually carries its token, so it is a secret like Slack's.
    ALERT_WEBHOOK_URL: SecretStr | None = None
    SMTP_HOST: str | None = None
    SMTP_PORT: int = Field(default=587, gt=0, lt=65536)
    SMTP_USER: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    SMTP_STARTTLS: bool = True
    ALERT_EMAIL_FROM: str | None = None
    ALERT_EMAIL_TO: str | None = None  # comma-separated addresses
    NOTIFY_DEDUP_MINUTES: float = Field(default=30.0, ge=0)
    NOTIFY_RETRIES: int = Field(default=3, ge=0, le=10)
    NOTIFY_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0)
    NOTIFY_MAX_SECONDS: float = Field(default=30.0, gt=0)

    # Logs of every process (API, logger, exporter, DAG tasks, commands): plain text for a
    # terminal, JSON lines for a container's log collector.
    LOG_FORMAT: Literal["text", "json"] = "text"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def is_development(self) -> bool:
        return self.ENVIRONMENT == "development"

    @field_validator("MLFLOW_TRACKING_URI")
    @classmethod
    def _refuse_file_store(cls, value: str) -> str:
        # MLflow 3 refuses a directory as its store, deep in the first registry call; said here,
        # every command stops at once with the fix instead of a traceback from MLflow.
        if value.startswith("file:") or ("://" not in value and not value.startswith("databricks")):
            raise ValueError(
                f"{value!r} is a file store, which MLflow 3 no longer serves: use a database "
                "(sqlite:///var/mlflow.db) or a tracking server (http://mlflow:5000)"
            )
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production_config(self) -> Settings:
        if self.PSI_WARNING >= self.PSI_CRITICAL:
            raise ValueError(
                f"PSI_WARNING ({self.PSI_WARNING}) must be below PSI_CRITICAL ({self.PSI_CRITICAL})"
            )
        if self.WASSERSTEIN_WARNING >= self.WASSERSTEIN_CRITICAL:
            raise ValueError(
                f"WASSERSTEIN_WARNING ({self.WASSERSTEIN_WARNING}) must be below "
                f"WASSERSTEIN_CRITICAL ({self.WASSERSTEIN_CRITICAL})"
            )
        # Half an email setup would skip every email without a word; said at start instead.
        email = {
            "SMTP_HOST": self.SMTP_HOST,
            "ALERT_EMAIL_FROM": self.ALERT_EMAIL_FROM,
            "ALERT_EMAIL_TO": self.ALERT_EMAIL_TO,
        }
        if any(email.values()) and not all(email.values()):
            missing = ", ".join(name for name, value in email.items() if not value)
            raise ValueError(
                f"email alerts need SMTP_HOST, ALERT_EMAIL_FROM and ALERT_EMAIL_TO: {missing} unset"
            )
        if self.SMTP_PASSWORD is not None and not self.SMTP_USER:
            raise ValueError("SMTP_PASSWORD is set without SMTP_USER")
        if self.is_development:
            return self
        if self.API_ADMIN_TOKEN is None:
            raise ValueError(f"API_ADMIN_TOKEN must be set when ENVIRONMENT={self.ENVIRONMENT}")
        secrets = {
            "API_ADMIN_TOKEN": self.API_ADMIN_TOKEN,
            "SLACK_WEBHOOK_URL": self.SLACK_WEBHOOK_URL,
            "PAGERDUTY_ROUTING_KEY": self.PAGERDUTY_ROUTING_KEY,
            "ALERT_WEBHOOK_URL": self.ALERT_WEBHOOK_URL,
            "SMTP_PASSWORD": self.SMTP_PASSWORD,
        }
        for name, value in secrets.items():
            if value is not None and _is_placeholder(value.get_secret_value()):
                raise ValueError(
                    f"{name} is a placeholder; set a real secret when "
                    f"ENVIRONMENT={self.ENVIRONMENT}"
                )
        db_password = make_url(self.DATABASE_URL).password
        if db_password is not None and _is_placeholder(db_password):
            raise ValueError(
                f"DATABASE_URL uses a placeholder password; set a real one when "
                f"ENVIRONMENT={self.ENVIRONMENT}"
            )
        return self

    def path(self, value: str) -> Path:
        """Resolve a configured path against the project root, so CWD does not matter."""
        candidate = Path(value)
        return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate

    @property
    def database_url(self) -> str:
        return _anchor_sqlite(self.DATABASE_URL)

    @property
    def mlflow_tracking_uri(self) -> str:
        return _anchor_sqlite(self.MLFLOW_TRACKING_URI)


def _is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDER_SECRETS


def _anchor_sqlite(url: str) -> str:
    """Make a relative SQLite path absolute under the project root; create the file's folder.

    `sqlite:///var/x.db` is relative to the working directory, which differs between the
    Makefile, Airflow workers and tests; anchoring it keeps every process on the same file.
    """
    if not url.startswith("sqlite:///"):
        return url
    location = url.removeprefix("sqlite:///")
    if location in ("", ":memory:"):
        return url
    path = PROJECT_ROOT / location  # an absolute location ("/...") stays as it is
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once; `ConfigError` if invalid."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """pydantic's multi-line report as one line: `NAME: problem (got value)` per setting."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] != "value_error":  # pydantic's own messages do not quote the value
            message += f" (got {error['input']!r})"
        if error["loc"]:  # one setting's; a model validator's message names its settings
            message = f"{error['loc'][0]}: {message}"
        problems.append(message)
    return "invalid configuration: " + "; ".join(problems)


def exit_on_config_error(main: Callable[..., int]) -> Callable[..., int]:
    """For a command's `main`: invalid settings end it with their one-line message and status 2,
    not a traceback."""

    @wraps(main)
    def checked(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return checked


def configure_cli_logging() -> None:
    """Warnings and errors only: MLflow's INFO lines (store migrations, "registered model")
    would bury the one line a command-line user needs."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
