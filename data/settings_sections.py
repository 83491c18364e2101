"""Every setting of the stack, grouped by concern: one pydantic model per section (where the
data lives, the model, the gates, drift, retraining, retention, the exporter, serving, alerts,
e-mail, notifications, logs), each field with its default, bounds and meaning. `data.settings`
combines them into `Settings`, the one class that reads the environment, and writes the
configuration reference from these descriptions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent

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
        "and `LABEL_TOKENS` are required.",
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

    DATABASE_CONNECT_TIMEOUT_SECONDS: int = Field(
        default=5,
        ge=2,
        le=300,
        description="Postgres: seconds a new connection may take before it fails (libpq "
        "`connect_timeout`; 2 is libpq's least). A database that does not answer then fails "
        "fast, and the API's prediction logger spools instead of waiting.",
    )
    DATABASE_STATEMENT_TIMEOUT_SECONDS: float = Field(
        default=600.0,
        ge=0,
        description="Postgres: the server cancels any statement running longer "
        "(`statement_timeout`; 0 = never). Long on purpose: the monitoring pass reads a "
        "whole window in one statement (measured 30-100 s for 10M logged rows, BENCHMARKS.md) "
        "and an upgrade's `init_db` may build an index on a large table; 600 s is six times "
        "the longest measured read. The API's own statements use "
        "`API_DATABASE_STATEMENT_TIMEOUT_SECONDS`.",
    )
    DATABASE_KEEPALIVES_IDLE_SECONDS: int = Field(
        default=30,
        ge=1,
        description="Postgres: seconds a connection is idle before TCP keepalive probes start, so "
        "a pooled connection to a vanished server is found dead (libpq `keepalives_idle`).",
    )
    DATABASE_KEEPALIVES_INTERVAL_SECONDS: int = Field(
        default=10,
        ge=1,
        description="Postgres: seconds between unanswered TCP keepalive probes "
        "(libpq `keepalives_interval`).",
    )
    DATABASE_KEEPALIVES_COUNT: int = Field(
        default=3,
        ge=1,
        description="Postgres: unanswered TCP keepalive probes before the connection is "
        "dropped (libpq `keepalives_count`).",
    )
    DATABASE_TCP_USER_TIMEOUT_SECONDS: int = Field(
        default=30,
        ge=0,
        description="Postgres: seconds data sent to the server may stay unacknowledged before the "
        "connection is dropped (libpq `tcp_user_timeout`; 0 = the kernel's, about 15 minutes). "
        "This is what ends a statement sent to a black-holed server; a slow query is not cut, "
        "its server still acknowledges.",
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
    MODEL_TRUSTED_TYPES: str = Field(
        default="",
        description="Types a model version's skops file may hold besides skops' defaults and "
        "the project's own (`training.registry.PROJECT_TRUSTED_TYPES`): full names separated by "
        "commas, e.g. `mypackage.features.Winsorizer`. A version holding any other type, saved "
        "with pickle or cloudpickle, or with a decision threshold not strictly between 0 and 1, "
        "is refused and the API keeps serving the version it has.",
    )

    @property
    def model_trusted_types(self) -> frozenset[str]:
        return frozenset(
            name.strip() for name in self.MODEL_TRUSTED_TYPES.split(",") if name.strip()
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
    MULTIVARIATE_P_THRESHOLD: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Significance level of the multivariate check (a domain classifier's "
        "held-out AUC telling the window's rows from the reference's): the joint distribution "
        "drifted below it, even where no feature did on its own. Its false-alarm rate per "
        "check, measured in docs/drift-detection.md.",
    )
    MULTIVARIATE_AUC_CRITICAL: float = Field(
        default=0.65,
        gt=0.5,
        le=1,
        description="A multivariate drift with a held-out AUC at least this high is critical: "
        "it triggers a retrain as critical drift of a feature does.",
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


class LabelSettings(BaseModel):
    """Ground truth that arrives late (`monitoring.label_maturity`): how far back every pass
    refreshes realized performance as labels come in, and when a window's figures count as
    mature."""

    LABEL_MATURITY_DAYS: float = Field(
        default=30,
        gt=0,
        description="Every monitoring pass refreshes the realized performance of the windows of "
        "the last this many days whose labels changed; a label for an older prediction still "
        "counts for training, not for the reports.",
    )
    LABEL_MATURE_COVERAGE: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Share of a window's predictions that must have their label for its realized "
        "figures to count as mature: the mature-accuracy alert and the estimate's gap read the "
        "most recent such window.",
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
    Prometheus exporter that serves the saved reports and probes Airflow's health."""

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
    # Airflow runs the six-hourly checks and the retrains: the exporter says whether it is alive.
    AIRFLOW_HEALTH_URL: str | None = Field(
        default=None,
        description="Airflow's health endpoint (Airflow 3: `http://<api-server>:8080/api/v2/"
        "monitor/health`), which the exporter asks at each read for "
        "`ml_airflow_component_healthy{component}` and the `airflow` source of "
        "`ml_exporter_source_up` (alert `MLAirflowUnhealthy`); unset = not probed. Compose and "
        "`make stack` set it.",
    )


class ServingSettings(BaseModel):
    """The inference API (`python -m api.serve`): workers and port, limits, the prediction log's
    spool and journal, the token of its admin endpoints and the tokens of the label writers."""

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
    CATEGORICAL_MAX_LENGTH: int = Field(
        default=256,
        ge=1,
        description="Longest categorical feature value `/predict` takes, in characters; longer: "
        "422 naming the feature.",
    )
    REQUEST_ID_CACHE_SIZE: int = Field(
        default=100_000,
        ge=0,
        description="Request ids each API worker remembers (at least the latest this many, at "
        "most twice as many, with a hash of their features and their answer): one sent again "
        "with other features gets 409, with the same "
        "features the first answer again. 0 = none (a reused id is only counted when its row is "
        "written, `ml_prediction_log_conflicts_total`).",
    )
    MAX_BODY_BYTES: int = Field(
        default=2_000_000,
        ge=1_024,
        description="Largest request body in bytes; above it: 413.",
    )
    API_DATABASE_STATEMENT_TIMEOUT_SECONDS: float = Field(
        default=30.0,
        ge=0,
        description="Postgres: the API's statements (the prediction log's inserts, `/feedback`) "
        "are cancelled after this many seconds (0 = never), so a lock wait or a stuck server "
        "turns into a failed batch that the logger spools and retries, not a writer held for "
        "`DATABASE_STATEMENT_TIMEOUT_SECONDS`. They take milliseconds; the tables it creates at "
        "start run under the longer `DATABASE_STATEMENT_TIMEOUT_SECONDS`.",
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
    FEEDBACK_MAX_BATCH_SIZE: int = Field(
        default=10_000,
        ge=1,
        description="Largest `/feedback/batch`, in labels; above it: 413 and nothing of the "
        "batch is stored.",
    )
    FEEDBACK_MAX_AWAITING: int = Field(
        default=10_000,
        ge=1,
        description="Labels of one source (LABEL_TOKENS) that may wait at once for their "
        "prediction to reach the log: those received in the last `LABEL_MATCH_MINUTES` whose "
        "request id is not logged. A request that would take a source over it is refused with "
        "429 and nothing of it is stored: a flood of labels for ids that were never predicted "
        "(a wrong id column, a replayed export, a leaked token) cannot fill the labels table. "
        "Room frees as the predictions arrive and as waiting labels turn orphaned.",
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
    # Labels become training data and the gates' hold-out: whoever can write them can get a
    # poisoned model approved, so they take a credential of their own, one per source system.
    LABEL_TOKENS: SecretStr | None = Field(
        default=None,
        description="Bearer tokens of the label writers (`/feedback`, `/feedback/batch`): "
        "`source=token` pairs separated by commas, one per source system "
        "(`chargebacks=<token>,manual-review=<token>`; sources of letters, digits, `.`, `_`, "
        "`-`). Every label is stored with the source whose token sent it. The admin token is "
        "never accepted for labels, and may not be one of these. Unset: the label endpoints "
        "answer 503. Required outside development.",
    )

    @field_validator("LABEL_TOKENS")
    @classmethod
    def _well_formed_label_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_label_tokens(value.get_secret_value())
        return value

    @property
    def label_tokens(self) -> dict[str, SecretStr]:
        """LABEL_TOKENS as {source: token}; empty when unset."""
        if self.LABEL_TOKENS is None:
            return {}
        parsed = parse_label_tokens(self.LABEL_TOKENS.get_secret_value())
        return {source: SecretStr(token) for source, token in parsed.items()}


class AlertSettings(BaseModel):
    """Where alerts and notifications go: through Alertmanager when `ALERTMANAGER_URL` is set
    (every notification, like every Prometheus alert), else straight to Slack, PagerDuty, a
    generic webhook and email (its own section)."""

    ALERTMANAGER_URL: str | None = Field(
        default=None,
        description="Alertmanager's base URL (`http://alertmanager:9093`; compose and `make "
        "stack` set it). Set, every notification that would page or post goes there as an "
        "alert (API v2) and nowhere else: Alertmanager routes, silences, inhibits and dedups it "
        "with the Prometheus alerts, through its own receivers. Unset (`make demo`), "
        "notifications go straight to the Slack, PagerDuty, webhook and email settings.",
    )
    ALERTMANAGER_RESOLVE_MINUTES: float = Field(
        default=60.0,
        gt=0,
        description="Minutes a notification's alert stays firing in Alertmanager before it "
        "resolves by itself (an event has no end of its own); keep it above a few minutes, so "
        "the alert of a failed or rejected training run and the Prometheus rule's stay one.",
    )

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
    # A heartbeat URL lets anyone ping the check (or silence it by pinging): a secret too.
    DEADMANSSWITCH_URL: SecretStr | None = Field(
        default=None,
        description="Dead-man's switch: a heartbeat service (Healthchecks.io, Opsgenie's "
        "heartbeats, ...) that Alertmanager sends the always-firing `MLWatchdog` to every "
        "minute, and that pages when it stops arriving (unset = MLWatchdog goes nowhere).",
    )
    RUNBOOK_BASE_URL: str = Field(
        default="",
        description="Where your team reads this repository's files, e.g. "
        "`https://github.com/acme/ml-monitoring/blob/main/`: prefixed to each alert's "
        "`docs/runbooks.md#...` link in Slack and PagerDuty (empty = the link stays relative).",
    )

    @field_validator("ALERTMANAGER_URL")
    @classmethod
    def _http_alertmanager(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL (http://alertmanager:9093)")
        return value.rstrip("/") if value else value


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
        description="Upgrade the SMTP connection with STARTTLS before login and sending, "
        "verifying the server's certificate (a CA the system trusts, or the bundle in the "
        "standard `SSL_CERT_FILE` variable; an untrusted one: nothing sent); `false` only for a "
        "relay on the same host or network.",
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
        default="INFO",
        description=(
            "The lowest level of the project's own lines (other libraries log warnings only); "
            "a line per request only at DEBUG; a command in a terminal shows warnings only "
            "unless DEBUG."
        ),
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
    ("Late labels", LabelSettings),
    ("Retention of the prediction log", RetentionSettings),
    ("Quality check and exporter", ExporterSettings),
    ("Serving", ServingSettings),
    ("Alert destinations", AlertSettings),
    ("Email", EmailSettings),
    ("Notification delivery", NotificationSettings),
    ("Logs", LogSettings),
)


# A source names a label writer in the labels' rows and in a metric's label: short and plain.
LABEL_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_label_tokens(text: str) -> dict[str, str]:
    """`source=token,source=token` as {source: token}; a ValueError says what is malformed.

    The messages name pairs by position and sources by name, never a token. A token may hold
    `=` (base64 padding): a pair splits at its first one.
    """
    tokens: dict[str, str] = {}
    for position, pair in enumerate(text.split(","), start=1):
        source, equals, token = (part.strip() for part in pair.partition("="))
        if not equals:
            raise ValueError(
                f"pair {position} has no '=': expected source=token pairs separated by commas "
                "(chargebacks=<token>,manual-review=<token>)"
            )
        if not source:
            raise ValueError(f"pair {position} has an empty source before '='")
        if not LABEL_SOURCE.fullmatch(source):
            raise ValueError(
                f"source {source!r} (pair {position}) is not 1-64 letters, digits, '.', '_' or "
                "'-' starting with a letter or digit"
            )
        if not token:
            raise ValueError(f"source {source!r} has an empty token")
        if any(character.isspace() for character in token):
            raise ValueError(f"the token of source {source!r} contains whitespace")
        if source in tokens:
            raise ValueError(f"source {source!r} is given twice")
        for other, known in tokens.items():
            if known == token:
                raise ValueError(
                    f"sources {other!r} and {source!r} share one token: each needs its own, or "
                    "a label's source cannot be known"
                )
        tokens[source] = token
    return tokens


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
