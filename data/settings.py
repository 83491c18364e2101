"""The stack's configuration: the one place that reads the environment.

Every package (data, training, monitoring, api, the DAGs) calls `get_settings()`; nothing else
touches `os.environ`. The settings are grouped by concern into sections (`StoreSettings`,
`DriftSettings`, ...), which `Settings` combines: one flat namespace, so each variable keeps its
name and `settings.X` works whatever section X is in. Every field carries its meaning as its
description; `python -m data.settings --reference > docs/configuration.md` writes the reference
page from them, and `.env.example` lists every variable with a comment. Defaults are the embedded
ones (`make demo`: SQLite and a local MLflow store under `var/`); compose overrides them with
Postgres and the MLflow server. Outside `ENVIRONMENT=development` placeholder secrets are refused
at start, so a copied `.env.example` cannot reach production unnoticed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Callable
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
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


# The sections. Each is a plain pydantic model holding the fields of one concern; only `Settings`
# (below) reads the environment. A validator that needs one section only lives in it; one that
# crosses sections (`_refuse_unsafe_production_config`) lives in `Settings`.


class EnvironmentSettings(BaseModel):
    """Which deployment this is: the label on every metric and alert, and whether placeholder
    secrets are tolerated (only in `development`)."""

    ENVIRONMENT: str = Field(
        default="development",
        description="`development`, `staging` or `production`. Labels every metric and alert. "
        "Outside `development` placeholder secrets are refused at start and `API_ADMIN_TOKEN` "
        "is required.",
    )

    @property
    def is_development(self) -> bool:
        return self.ENVIRONMENT == "development"


class StoreSettings(BaseModel):
    """The monitoring database (prediction log, labels, reports, decisions, audit) and MLflow's
    tracking store and model registry."""

    DATABASE_URL: str = Field(
        default="sqlite:///var/monitoring.db",
        description="SQLAlchemy URL of the monitoring database (prediction logs, labels, reports, "
        "promotion audit). Relative SQLite paths are resolved against the repository root. "
        "Compose sets a Postgres URL (`postgresql+psycopg2://...@postgres:5432/monitoring`).",
    )
    MLFLOW_TRACKING_URI: str = Field(
        default="sqlite:///var/mlflow.db",
        description="MLflow tracking and model registry store: a database or a tracking server "
        "(`http://...`), not a directory (MLflow 3 no longer serves file stores). Aliases, never "
        "stages.",
    )
    MLFLOW_ARTIFACT_ROOT: str = Field(
        default="var/mlartifacts",
        description="Where MLflow keeps model artifacts when it creates the experiment (a path or "
        "a URI).",
    )
    MLFLOW_EXPERIMENT: str = Field(
        default="fraud-detector",
        description="MLflow experiment that training runs are logged to.",
    )

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

    @property
    def database_url(self) -> str:
        return _anchor_sqlite(self.DATABASE_URL)

    @property
    def mlflow_tracking_uri(self) -> str:
        return _anchor_sqlite(self.MLFLOW_TRACKING_URI)


class ModelSettings(BaseModel):
    """Which registered model the API serves, the feature schema every part reads, and how
    training builds a model and its reference profile."""

    MODEL_NAME: str = Field(
        default="fraud-detector",
        description="Registered model name; the API serves `models:/<MODEL_NAME>@champion`.",
    )
    FEATURE_SCHEMA: str = Field(
        default="schemas/fraud.yaml",
        description="Feature-schema file: the single source of truth for columns (see "
        "`schemas/fraud.yaml`).",
    )
    DATA_DIR: str = Field(
        default="var/data",
        description="Where `make demo` and `python -m training.train` write generated data when "
        "no `--data` is given, and where training runs keep their run folders.",
    )
    MODEL_TYPE: Literal["hist_gradient_boosting", "random_forest"] = Field(
        default="hist_gradient_boosting",
        description="The classifier training fits.",
    )
    REFERENCE_SAMPLE_SIZE: int = Field(
        default=10_000,
        ge=100,
        description="Values kept per numerical feature in the reference profile stored with "
        "each model version.",
    )


class GateSettings(BaseModel):
    """The promotion gates a new model version must pass before it may become `@champion`, and
    whether a version that passes them is promoted without a person."""

    AUTO_PROMOTE: bool = Field(
        default=False,
        description="Promote a candidate that passes all three gates without a person (else it "
        "becomes `@challenger`).",
    )
    GATE_MIN_ROC_AUC: float = Field(
        default=0.90, ge=0, le=1, description="Gate 1 (performance_floor): least hold-out ROC AUC."
    )
    GATE_MIN_PR_AUC: float = Field(
        default=0.50, ge=0, le=1, description="Gate 1 (performance_floor): least hold-out PR AUC."
    )
    GATE_MIN_F1: float = Field(
        default=0.40, ge=0, le=1, description="Gate 1 (performance_floor): least hold-out F1."
    )
    GATE_MAX_REGRESSION: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Gate 2 (no_regression): largest relative drop of ROC AUC and PR AUC against "
        "the champion on the same hold-out (0.02 = 2%).",
    )
    GATE_LATENCY_BUDGET_MS: float = Field(
        default=20.0,
        gt=0,
        description="Gate 3 (operational): budget for the median single-row scoring latency, in "
        "milliseconds.",
    )
    GATE_MAX_CALIBRATION_WORSENING: float = Field(
        default=0.10,
        ge=0,
        description="Gate 3 (operational): largest relative worsening of the Brier score against "
        "the champion (0.10 = 10%).",
    )


class DriftSettings(BaseModel):
    """The drift check: the live window it compares with the reference profile, the tests'
    significance levels, the effect sizes a drifted feature must also show, and when the
    dataset as a whole counts as drifted."""

    DRIFT_WINDOW_HOURS: int = Field(
        default=6,
        gt=0,
        description="Live window compared with the reference by the drift check, in hours.",
    )
    KS_P_THRESHOLD: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Significance level of the KS test (numerical features).",
    )
    CHI2_P_THRESHOLD: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Significance level of the Chi-square test (categorical and boolean features).",
    )
    PSI_WARNING: float = Field(
        default=0.1,
        gt=0,
        description="PSI at or above which a feature is a warning; also the PSI floor of a "
        "drifted feature. Must be below `PSI_CRITICAL`.",
    )
    PSI_CRITICAL: float = Field(
        default=0.2, gt=0, description="PSI at or above which a feature is critical."
    )
    DRIFT_CORRECTION: Literal["benjamini_hochberg", "bonferroni"] = Field(
        default="benjamini_hochberg",
        description="Multiple-testing correction across features. A feature is drifted only when "
        "its corrected p-value is significant AND an effect size passes its floor: PSI at least "
        "`PSI_WARNING`, or (numerical) the Wasserstein distance.",
    )
    DRIFT_SHARE_THRESHOLD: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Dataset drift when at least this share of features drifted.",
    )
    WASSERSTEIN_WARNING: float = Field(
        default=0.1,
        gt=0,
        description="Wasserstein distance, in reference standard deviations, from which a "
        "numerical feature counts as drifted (with `WASSERSTEIN_NOISE_MULTIPLE`). It sees far "
        "outliers and a wider spread, which PSI misses. Must be below `WASSERSTEIN_CRITICAL`.",
    )
    WASSERSTEIN_CRITICAL: float = Field(
        default=0.5,
        gt=0,
        description="Wasserstein distance, in reference standard deviations, from which a "
        "numerical feature is critical.",
    )
    WASSERSTEIN_NOISE_MULTIPLE: float = Field(
        default=5.0,
        ge=0,
        description="A Wasserstein distance counts only at this many times its sampling noise, "
        "which keeps small windows quiet.",
    )


class RetrainSettings(BaseModel):
    """The retrain policy (`monitoring.retrain.policy`): what triggers an automatic retrain,
    the guards that hold one back, and what a retrain learns from."""

    RETRAIN_COOLDOWN_HOURS: int = Field(
        default=12,
        ge=0,
        description="An automatic retrain waits at least this many hours after the last "
        "training run that did not fail, whatever started it.",
    )
    RETRAIN_MAX_PER_DAY: int = Field(
        default=2, ge=1, description="At most this many automatic retrains in 24 hours."
    )
    RETRAIN_TIMEOUT_HOURS: float = Field(
        default=6.0,
        gt=0,
        description="No retrain starts while one runs; a run older than this many hours counts "
        "as dead.",
    )
    RETRAIN_MIN_LABELLED_ROWS: int = Field(
        default=1_000,
        ge=1,
        description="No retrain without this many new labelled predictions to learn from: "
        "labelled since the last retrain's data ended, within the drift episode (at most "
        "`RETRAIN_DATA_DAYS` back).",
    )
    RETRAIN_DATA_DAYS: float = Field(
        default=7.0,
        gt=0,
        description="How many days back a retrain looks, at most, for the labelled "
        "predictions of the drift episode it learns from.",
    )
    RETRAIN_ACCURACY_FLOOR: float = Field(
        default=0.90,
        ge=0,
        le=1,
        description="Retrain when realized accuracy falls below this (once at least "
        "`RETRAIN_MIN_LABEL_COVERAGE` of the window is labelled).",
    )
    RETRAIN_ESTIMATED_ACCURACY_FLOOR: float = Field(
        default=0.90,
        ge=0,
        le=1,
        description="Retrain when estimated accuracy (CBPE, before labels arrive) falls below "
        "this.",
    )
    RETRAIN_MIN_LABEL_COVERAGE: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Share of the window's predictions that must be labelled before realized "
        "accuracy is trusted.",
    )
    # A retrain learns from the recent labelled predictions plus a sample of the original
    # training data of this many rows per recent row: the recent relationship dominates, the old
    # one keeps rare cases in view.
    TRAINING_DATA: str = Field(
        default="",
        description="The original training data (CSV or Parquet) a retrain samples from beside "
        "the recent labelled predictions of the drift episode; empty = the generated synthetic "
        "set (only the fraud schema has one).",
    )
    RETRAIN_BASE_SAMPLE_RATIO: float = Field(
        default=0.2,
        ge=0,
        description="Rows of `TRAINING_DATA` per recent row in a retrain (0 = recent data only): "
        "enough to keep rare old cases in view, too few to teach the relationship the world has "
        "left.",
    )


class RetentionSettings(BaseModel):
    """How long the prediction log keeps its rows, and how the maintenance DAG deletes older
    ones."""

    PREDICTION_RETENTION_DAYS: float = Field(
        default=30.0,
        gt=0,
        description="The maintenance DAG deletes prediction log rows (and their labels) older "
        "than this many days.",
    )
    # 5,000 deleted a day as fast as 50,000 or 200,000, next to the same logging, in
    # transactions a tenth as long (BENCHMARKS.md).
    PREDICTION_RETENTION_BATCH: int = Field(
        default=5_000,
        ge=1,
        description="Rows the maintenance DAG deletes per transaction.",
    )


class ExporterSettings(BaseModel):
    """The monitoring jobs beside drift: the traffic the quality check expects, and the
    Prometheus exporter that serves the saved reports."""

    EXPECTED_ROWS_PER_HOUR: float = Field(
        default=0.0,
        ge=0,
        description="Predictions per hour the quality check expects; fewer than half is a "
        "warning. 0 = check only that the window is not empty.",
    )
    EXPORTER_PORT: int = Field(
        default=9100,
        gt=0,
        lt=65536,
        description="Port of `python -m monitoring.prometheus_exporter`.",
    )
    EXPORTER_CACHE_SECONDS: float = Field(
        default=15.0,
        ge=0,
        description="How many seconds one database read serves scrapes before the exporter "
        "reads again.",
    )


class ServingSettings(BaseModel):
    """The inference API (`python -m api.serve`): workers and port, limits, the prediction log's
    spool and journal, and the token of its admin endpoints."""

    API_WORKERS: int = Field(
        default=2, ge=1, description="Worker processes started by `python -m api.serve`."
    )
    API_PORT: int = Field(
        default=8000, gt=0, lt=65536, description="Port the API's workers listen on."
    )
    MODEL_POLL_SECONDS: float = Field(
        default=30.0,
        ge=0,
        description="Seconds between checks of the `@champion` alias for a new version (0 = no "
        "polling).",
    )
    MAX_BATCH_SIZE: int = Field(
        default=1_000,
        ge=1,
        description="Largest `/predict/batch`, in instances; above it: 413.",
    )
    MAX_BODY_BYTES: int = Field(
        default=2_000_000,
        ge=1_024,
        description="Largest request body in bytes; above it: 413.",
    )
    PREDICTION_SPOOL_DIR: str = Field(
        default="var/spool",
        description="Where prediction log rows wait on disk while the database is unavailable, "
        "and where each worker keeps its journal.",
    )
    PREDICTION_JOURNAL: bool = Field(
        default=True,
        description="Journal every answered prediction in `PREDICTION_SPOOL_DIR` before answering, "
        "so that a killed worker loses none; `false` only to measure what it costs.",
    )
    LABEL_MATCH_MINUTES: int = Field(
        default=60,
        ge=1,
        description="Minutes a label may wait for its prediction to reach the log before it "
        "counts as orphaned (`ml_labels_orphaned`).",
    )
    API_MONITORING: bool = Field(
        default=True,
        description="`true` in every real deployment; `false` (no prediction log, no metrics) only "
        "to measure what monitoring costs (`make bench`).",
    )
    PROMETHEUS_MULTIPROC_DIR: str | None = Field(
        default=None,
        description="Metrics directory shared by the workers, read by prometheus_client itself; "
        "set and wiped by `python -m api.serve` (leave unset).",
    )
    API_ADMIN_TOKEN: SecretStr | None = Field(
        default=None,
        description="Bearer token for the API's admin endpoints (`/model/reload`, `/logs`). "
        "Required outside development.",
    )


class AlertSettings(BaseModel):
    """Where alerts and notifications go: Slack, PagerDuty and a generic webhook (email has its
    own section)."""

    SLACK_WEBHOOK_URL: SecretStr | None = Field(
        default=None,
        description="Slack incoming-webhook URL (warnings and critical alerts).",
    )
    PAGERDUTY_ROUTING_KEY: SecretStr | None = Field(
        default=None,
        description="PagerDuty Events API v2 routing key (critical alerts).",
    )
    PAGERDUTY_EVENTS_URL: str = Field(
        default="https://events.pagerduty.com/v2/enqueue",
        description="PagerDuty Events API v2 endpoint (change only for a proxy or a test sink).",
    )
    # A webhook URL usually carries its token, so it is a secret like Slack's.
    ALERT_WEBHOOK_URL: SecretStr | None = Field(
        default=None,
        description="Generic webhook that receives each critical and warning notification as "
        "JSON (unset = none).",
    )


class EmailSettings(BaseModel):
    """Email for critical notifications: off unless `SMTP_HOST`, `ALERT_EMAIL_FROM` and
    `ALERT_EMAIL_TO` are all set (half a setup is refused at start)."""

    SMTP_HOST: str | None = Field(
        default=None, description="SMTP server for critical-notification emails."
    )
    SMTP_PORT: int = Field(
        default=587,
        gt=0,
        lt=65536,
        description="SMTP port: 587 for submission with STARTTLS, 25 for a local relay.",
    )
    SMTP_USER: str | None = Field(default=None, description="SMTP login (unset = no login).")
    SMTP_PASSWORD: SecretStr | None = Field(
        default=None,
        description="SMTP password; needs `SMTP_USER`. Refused as a placeholder outside "
        "development.",
    )
    SMTP_STARTTLS: bool = Field(
        default=True,
        description="Upgrade the SMTP connection with STARTTLS before login and sending; "
        "`false` only for a relay on the same host or network.",
    )
    ALERT_EMAIL_FROM: str | None = Field(default=None, description="Sender address of the emails.")
    ALERT_EMAIL_TO: str | None = Field(
        default=None, description="Comma-separated recipients of the emails."
    )


class NotificationSettings(BaseModel):
    """How notifications (retrain started, candidate promoted or rejected, DAG task failed) are
    delivered: deduplication, retries and time limits."""

    NOTIFY_DEDUP_MINUTES: float = Field(
        default=30.0,
        ge=0,
        description="The same event (dedup key) goes to the same destination once in this many "
        "minutes (0 = always).",
    )
    NOTIFY_RETRIES: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries after a connection error, timeout, 429 or 5xx (exponential backoff; "
        "`Retry-After` is honoured up to 10 s); other 4xx answers are not retried.",
    )
    NOTIFY_TIMEOUT_SECONDS: float = Field(
        default=5.0,
        gt=0,
        description="Seconds one request may wait on the network.",
    )
    NOTIFY_MAX_SECONDS: float = Field(
        default=30.0,
        gt=0,
        description="The most one notification may take in all, retries included, so a DAG task "
        "is never held by a dead endpoint.",
    )


class LogSettings(BaseModel):
    """The logs of every process (API, logger, exporter, DAG tasks, commands): plain text for a
    terminal, JSON lines for a container's log collector."""

    LOG_FORMAT: Literal["text", "json"] = Field(
        default="text",
        description="`text` (for a terminal) or `json` (one JSON object per line, for a "
        "container's log collector).",
    )
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The lowest level of the lines logged."
    )


# (title, section) in the order of `.env.example`; `Settings` combines them, and the reference
# page has one table per section in this order.
SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Environment", EnvironmentSettings),
    ("Stores", StoreSettings),
    ("The model and its data", ModelSettings),
    ("Promotion gates", GateSettings),
    ("Drift", DriftSettings),
    ("Retraining", RetrainSettings),
    ("Retention of the prediction log", RetentionSettings),
    ("Quality check and exporter", ExporterSettings),
    ("Serving", ServingSettings),
    ("Alert destinations", AlertSettings),
    ("Email", EmailSettings),
    ("Notification delivery", NotificationSettings),
    ("Logs", LogSettings),
)


# Every section is a base of `Settings`, listed from the last to the first: pydantic collects
# fields from the far end of the MRO, so `Settings.model_fields` (and a report of several invalid
# values) follows the order of SECTIONS. Listed by name, not unpacked from SECTIONS, so that
# editors and type checkers see every field (tests/test_settings_sections.py checks the two
# agree).
class Settings(
    LogSettings,
    NotificationSettings,
    EmailSettings,
    AlertSettings,
    ServingSettings,
    ExporterSettings,
    RetentionSettings,
    RetrainSettings,
    DriftSettings,
    GateSettings,
    ModelSettings,
    StoreSettings,
    EnvironmentSettings,
    BaseSettings,
):
    """Typed view of the environment: every section's fields in one flat namespace (see
    `.env.example` and docs/configuration.md for every variable)."""

    # An empty variable (`SMTP_PASSWORD=` in a copied .env.example, `${VAR:-}` in compose)
    # means unset: the default applies, not an empty value.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=True, env_ignore_empty=True
    )

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


# --- The configuration reference (`python -m data.settings --reference`) ----------------------

REFERENCE_COMMAND = "python -m data.settings --reference > docs/configuration.md"

# Shown in the reference's default column instead of "unset": the production check requires it.
REQUIRED_OUTSIDE_DEVELOPMENT = frozenset({"API_ADMIN_TOKEN"})

REFERENCE_INTRO = f"""\
# Configuration reference

<!-- Generated from data/settings.py by `{REFERENCE_COMMAND}`;
     edit the field descriptions there, not this page (tests/test_docs.py compares them). -->

Every setting is an environment variable. `data/settings.py` is the one place that reads them:
one pydantic-settings class, `Settings`, read once per process through `get_settings()`, whose
fields are grouped below by concern. Every command, the API, the exporter and the DAG tasks read
the same settings.

- **Where they come from**: the environment first, then a `.env` file in the working directory
  (copy [`.env.example`](../.env.example), which lists every variable with a comment). Names are
  case-sensitive. An empty variable (`SMTP_PASSWORD=`) counts as unset: the default applies.
- **Paths**: relative paths (`FEATURE_SCHEMA`, `DATA_DIR`, ...) and relative SQLite paths in
  `DATABASE_URL` and `MLFLOW_TRACKING_URI` are resolved against the repository root, so every
  process finds the same file whatever its working directory.
- **Invalid values** stop every command at once, with status 2 and one line naming each
  variable:

  ```
  $ API_PORT=70000 python -m api.serve
  error: invalid configuration: API_PORT: Input should be less than 65536 (got '70000')
  ```

  Besides each variable's own range, the settings refuse: `PSI_WARNING` not below
  `PSI_CRITICAL`, `WASSERSTEIN_WARNING` not below `WASSERSTEIN_CRITICAL`, half an email setup
  (some but not all of `SMTP_HOST`, `ALERT_EMAIL_FROM`, `ALERT_EMAIL_TO`), `SMTP_PASSWORD`
  without `SMTP_USER`, and an `MLFLOW_TRACKING_URI` that is a directory (`file:` or a plain
  path).
- **Outside `ENVIRONMENT=development`** they also refuse: an unset `API_ADMIN_TOKEN`; a
  placeholder value (`changeme`, `change-me`, `changethis`, `secret`, `password` or `xxx`, in
  any case) in `API_ADMIN_TOKEN`, `SLACK_WEBHOOK_URL`, `PAGERDUTY_ROUTING_KEY`,
  `ALERT_WEBHOOK_URL` or `SMTP_PASSWORD`; and a placeholder as the password in `DATABASE_URL`.
  Nothing else is checked for placeholders: the passwords that only `docker-compose.yml` reads
  (Postgres, MLflow's and Airflow's databases, Airflow's keys, Grafana) are yours to replace
  (see [deployment](deployment.md#docker-compose-up)).
- **Secrets** (`SecretStr`) print as `**********`; the tables below never show a value
  for them.

The variables below the `# ==== docker compose only ====` line of `.env.example` (published
ports, image tags, the databases' passwords, Airflow's and Grafana's logins) are read by
`docker-compose.yml` alone and are not settings; they are described in that file.
"""


def _format_default(name: str, field: FieldInfo) -> str:
    if SecretStr in get_args(field.annotation) or field.annotation is SecretStr:
        return (
            "unset (required outside development)"
            if name in REQUIRED_OUTSIDE_DEVELOPMENT
            else "unset"
        )
    value: Any = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "empty"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _allowed(field: FieldInfo) -> str:
    """The values a field accepts beyond its type, as the reference says them."""
    choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    if choices:
        return "One of " + ", ".join(f"`{choice}`" for choice in choices) + "."
    bounds = [
        f"{sign} {getattr(meta, key):g}"
        for meta in field.metadata
        for key, sign in _BOUNDS
        if getattr(meta, key, None) is not None
    ]
    return ("Allowed: " + ", ".join(bounds) + ".") if bounds else ""


def reference() -> str:
    """docs/configuration.md: the introduction, then one table per section (variable, default,
    meaning) from the fields' defaults, constraints and descriptions; never a value from the
    environment."""
    parts = [REFERENCE_INTRO]
    for title, section in SECTIONS:
        doc = textwrap.fill(
            f"{' '.join((section.__doc__ or '').split())} (`{section.__name__}`)", 100
        )
        parts.append(f"\n## {title}\n\n{doc}\n\n")
        parts.append("| variable | default | meaning |\n|---|---|---|\n")
        for name, field in section.model_fields.items():
            meaning = " ".join(f"{field.description} {_allowed(field)}".split())
            meaning = meaning.replace("|", "\\|")
            parts.append(f"| `{name}` | {_format_default(name, field)} | {meaning} |\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.settings",
        description="The stack's settings. --reference prints the configuration reference "
        f"(Markdown): `{REFERENCE_COMMAND}`.",
    )
    parser.add_argument(
        "--reference", action="store_true", help="print docs/configuration.md to stdout"
    )
    args = parser.parse_args(argv)
    if not args.reference:
        parser.print_help(sys.stderr)
        return 2
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
