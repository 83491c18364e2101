"""Prometheus exporter: the latest drift, quality and performance results as `ml_*` metrics.

The monitoring pass (`monitoring.window_checks`, run by the six-hourly DAG) writes its reports to
the database; this process serves them on port EXPORTER_PORT (9100) for Prometheus to scrape,
so alert rules and dashboards see what the last pass found. A custom collector reads the newest
report rows and the registry's `@champion` at scrape time, at most once per
EXPORTER_CACHE_SECONDS; ages are computed at every scrape so they keep growing when the checks
stop running.

Every series carries `environment` (ENVIRONMENT) and `model_name` (MODEL_NAME). Encodings:
`ml_drift_severity` 0 none, 1 warning, 2 critical; `ml_quality_check_status` 0 ok, 1 soft,
2 hard; booleans 0 / 1. A database or registry that cannot be read is not a failed scrape:
`ml_exporter_source_up{source}` drops to 0 and the last values read stay (with growing ages),
so an outage is an alert, not a gap in every graph.

Training runs (`training_runs`) and the champion's age are here too, for the alerts on a failed
or rejected retrain and on a champion nobody has replaced for long: `ml_training_runs_total
{status}` counts closed runs by outcome (a closed run never changes, so it only grows),
`ml_training_last_run_status{status}` is 1 for the newest closed run's outcome and 0 for the
others, and `ml_champion_age_seconds` counts from when the champion version was registered
(the data it learnt from is at least that old; a rollback to an old version is an old model).

`ml_realized_confusion{cell}` is the latest window's confusion matrix over its labelled
predictions, so a dashboard can show what precision and recall do not: the false-positive rate
fp / (fp + tn), the share of legitimate cases the model flags.

Airflow runs the six-hourly checks and the retrains; when it stops, the reports only go stale
12 hours later. With AIRFLOW_HEALTH_URL set (Airflow 3's `/api/v2/monitor/health`), each read
asks it too, with a short timeout (AIRFLOW_HEALTH_TIMEOUT_SECONDS) so a hung Airflow never holds
a scrape: `ml_airflow_component_healthy{component}` is 1 for each of `metadatabase`,
`scheduler`, `triggerer` and `dag_processor` that reports "healthy" and 0 otherwise (a component
that never ran reports no status: 0 too), and `ml_exporter_source_up{source="airflow"}` is 0
when the endpoint does not answer as Airflow's does (the components' series are then absent:
nothing is known about them).

    python -m monitoring.prometheus_exporter            # serve on :9100
    python -m monitoring.prometheus_exporter --once     # print one scrape and exit
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from data.db import get_engine
from data.logs import configure_logging, log_context
from data.settings import Settings, exit_on_config_error, get_settings
from monitoring.label_maturity import MaturitySummary, maturity_summary
from monitoring.performance import METRICS
from monitoring.report_store import LatestReports, latest_reports, orphaned_labels
from training.runs import OUTCOMES, RunsSummary, runs_summary

# Named, not __name__: run as `python -m monitoring.prometheus_exporter` that would be "__main__".
log = logging.getLogger("monitoring.prometheus_exporter")

SEVERITY_CODE = {"none": 0, "warning": 1, "critical": 2}
LEVEL_CODE = {"ok": 0, "soft": 1, "hard": 2}
BASE_LABELS = ("environment", "model_name")
CONFUSION_CELLS = ("tp", "fp", "fn", "tn")
# The components Airflow 3's health endpoint reports, each with a "status".
AIRFLOW_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
# Per network step (connect, each read): well inside Prometheus' 10 s scrape timeout, beside the
# database and registry reads of the same scrape.
AIRFLOW_HEALTH_TIMEOUT_SECONDS = 3.0


@dataclass
class Snapshot:
    """What one read of the sources found; kept between reads for the cache."""

    reports: LatestReports = field(default_factory=lambda: LatestReports(None, None, None))
    champion_version: str | None = None
    champion_created_at: datetime | None = None
    runs: RunsSummary | None = None
    orphaned_labels: int | None = None
    maturity: MaturitySummary | None = None
    airflow: dict[str, bool] = field(default_factory=dict)  # component -> healthy
    sources_up: dict[str, bool] = field(default_factory=dict)
    read_at: float = 0.0
    read_seconds: float = 0.0


class MonitoringCollector(Collector):
    """Reads the newest reports and the champion (cached), yields `ml_*` gauge families."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        read_registry: bool = True,
        clock: Any = time.monotonic,
    ) -> None:
        self.settings = settings or get_settings()
        self.read_registry = read_registry
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._labels = [self.settings.ENVIRONMENT, self.settings.MODEL_NAME]

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Registering a collector calls describe(): answering with the families keeps the
        # registration from reading the database.
        return list(self._families(None))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families(self.snapshot()))

    def snapshot(self) -> Snapshot:
        """The sources as last read, read again if older than EXPORTER_CACHE_SECONDS."""
        with self._lock:
            age = self._clock() - self._snapshot.read_at
            if not self._snapshot.read_at or age >= self.settings.EXPORTER_CACHE_SECONDS:
                self._snapshot = self._read(self._snapshot)
            return self._snapshot

    def _read(self, previous: Snapshot) -> Snapshot:
        started = time.perf_counter()
        snapshot = Snapshot(
            reports=previous.reports,
            champion_version=previous.champion_version,
            champion_created_at=previous.champion_created_at,
            runs=previous.runs,
            orphaned_labels=previous.orphaned_labels,
            maturity=previous.maturity,
            sources_up=dict(previous.sources_up),
        )
        try:
            engine = get_engine(self.settings.database_url)
            snapshot.reports = latest_reports(self.settings.MODEL_NAME, engine=engine)
            cutoff = datetime.now(UTC) - timedelta(minutes=self.settings.LABEL_MATCH_MINUTES)
            snapshot.orphaned_labels = orphaned_labels(cutoff, engine=engine)
            snapshot.runs = runs_summary(self.settings.MODEL_NAME, engine=engine)
            snapshot.maturity = maturity_summary(
                engine,
                model_name=self.settings.MODEL_NAME,
                maturity_days=self.settings.LABEL_MATURITY_DAYS,
                mature_coverage=self.settings.LABEL_MATURE_COVERAGE,
            )
            snapshot.sources_up["database"] = True
        except Exception as exc:  # any driver error: report it as a metric, keep serving
            log.warning("cannot read the report tables: %s", " ".join(str(exc).split())[:300])
            snapshot.sources_up["database"] = False
        if self.read_registry:
            try:
                snapshot.champion_version, snapshot.champion_created_at = self._champion()
                snapshot.sources_up["registry"] = True
            except Exception as exc:
                log.warning("cannot read the model registry: %s", " ".join(str(exc).split())[:300])
                snapshot.sources_up["registry"] = False
        if self.settings.AIRFLOW_HEALTH_URL:
            try:
                snapshot.airflow = airflow_health(self.settings.AIRFLOW_HEALTH_URL)
                snapshot.sources_up["airflow"] = True
            except Exception as exc:  # refused, timed out, not Airflow's answer
                log.warning("cannot read Airflow's health: %s", " ".join(str(exc).split())[:300])
                snapshot.airflow = {}
                snapshot.sources_up["airflow"] = False
        snapshot.read_at = self._clock()
        snapshot.read_seconds = time.perf_counter() - started
        _say_what_changed(previous, snapshot)
        return snapshot

    def _champion(self) -> tuple[str | None, datetime | None]:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from training.registry import CHAMPION

        uri = self.settings.mlflow_tracking_uri
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        try:
            champion = client.get_model_version_by_alias(self.settings.MODEL_NAME, CHAMPION)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None, None  # no model or no champion yet: a state, not an outage
            raise
        created = datetime.fromtimestamp(champion.creation_timestamp / 1000, UTC)
        return str(champion.version), created

    # --- the metric families -------------------------------------------------------------

    def _families(self, snapshot: Snapshot | None) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        reports = snapshot.reports if snapshot else LatestReports(None, None, None)
        yield from self._exporter_families(snapshot, now)
        yield from self._training_families(snapshot.runs if snapshot else None)
        yield from self._drift_families(reports.drift, now)
        yield from self._quality_families(reports.quality, now)
        yield from self._performance_families(reports.performance, now)
        yield from self._maturity_families(snapshot.maturity if snapshot else None, now)

    def _gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*BASE_LABELS, *labels])

    def _add(self, family: GaugeMetricFamily, value: float | None, *labels: str) -> None:
        if value is not None:
            family.add_metric([*self._labels, *labels], float(value))

    def _exporter_families(
        self, snapshot: Snapshot | None, now: datetime
    ) -> Iterator[GaugeMetricFamily]:
        up = self._gauge(
            "ml_exporter_source_up",
            "1 when the exporter's last read of the source worked, 0 when it failed",
            ["source"],
        )
        duration = self._gauge(
            "ml_exporter_read_seconds", "Seconds the last read of the database and registry took"
        )
        champion = self._gauge(
            "ml_champion_version",
            "The registry's @champion version of the model (absent when there is none)",
        )
        # The version as a label, to compare with the API's ml_model_info{model_version}: a
        # replica still serving an old version (MLReplicaServesOldVersion).
        champion_info = self._gauge(
            "ml_champion_info",
            "The registry's @champion version as a label (value 1; absent when there is none)",
            ["model_version"],
        )
        champion_age = self._gauge(
            "ml_champion_age_seconds",
            "Seconds since the @champion version was registered (absent when there is none)",
        )
        orphaned = self._gauge(
            "ml_labels_orphaned",
            "Labels still without a logged prediction LABEL_MATCH_MINUTES after they arrived",
        )
        airflow = self._gauge(
            "ml_airflow_component_healthy",
            "1 when Airflow's health endpoint reports the component healthy, 0 when not "
            "(absent when Airflow is not probed or does not answer)",
            ["component"],
        )
        if snapshot is not None:
            for source, ok in snapshot.sources_up.items():
                self._add(up, ok, source)
            self._add(duration, snapshot.read_seconds)
            if snapshot.champion_version is not None and snapshot.champion_version.isdigit():
                self._add(champion, int(snapshot.champion_version))
            if snapshot.champion_version is not None:
                self._add(champion_info, 1, snapshot.champion_version)
            if snapshot.champion_version is not None and snapshot.champion_created_at:
                self._add(champion_age, (now - snapshot.champion_created_at).total_seconds())
            self._add(orphaned, snapshot.orphaned_labels)
            for component, healthy in snapshot.airflow.items():
                self._add(airflow, healthy, component)
        yield from (up, duration, champion, champion_info, champion_age, orphaned, airflow)

    def _training_families(self, runs: RunsSummary | None) -> Iterator[Any]:
        total = CounterMetricFamily(
            "ml_training_runs",
            "Training runs closed, by outcome (promoted, challenger, rejected, failed)",
            labels=[*BASE_LABELS, "status"],
        )
        running = self._gauge("ml_training_runs_running", "Training runs still running")
        last_status = self._gauge(
            "ml_training_last_run_status",
            "1 for the outcome of the newest closed training run, 0 for the other outcomes",
            ["status"],
        )
        last_finished = self._gauge(
            "ml_training_last_run_timestamp_seconds",
            "When the newest closed training run finished (Unix time)",
        )
        if runs is not None:
            for outcome, count in runs.finished.items():
                total.add_metric([*self._labels, outcome], count)
            self._add(running, runs.running)
            if runs.last_finished is not None:
                for outcome in OUTCOMES:
                    self._add(last_status, runs.last_finished["status"] == outcome, outcome)
                if runs.last_finished["finished_at"] is not None:
                    self._add(last_finished, runs.last_finished["finished_at"].timestamp())
        yield from (total, running, last_status, last_finished)

    def _age(self, name: str, what: str, row: dict | None, now: datetime) -> GaugeMetricFamily:
        family = self._gauge(name, f"Seconds since the end of the window of the latest {what}")
        if row is not None:
            self._add(family, (now - row["window_end"]).total_seconds())
        return family

    def _drift_families(self, row: dict | None, now: datetime) -> Iterator[GaugeMetricFamily]:
        psi = self._gauge("ml_drift_psi", "PSI of the feature, latest drift report", ["feature"])
        wasserstein = self._gauge(
            "ml_drift_wasserstein",
            "Wasserstein distance of a numerical feature in reference standard deviations",
            ["feature"],
        )
        p_value = self._gauge(
            "ml_drift_p_value",
            "p-value of the feature's test (KS or chi-square, uncorrected), latest drift report",
            ["feature", "test"],
        )
        statistic = self._gauge(
            "ml_drift_statistic", "KS or chi-square statistic of the feature", ["feature", "test"]
        )
        drifted = self._gauge(
            "ml_drift_detected",
            "1 when the feature drifted (corrected p-value significant and PSI over the warning)",
            ["feature"],
        )
        severity = self._gauge(
            "ml_drift_severity",
            "Feature drift severity: 0 none, 1 warning, 2 critical",
            ["feature"],
        )
        missing = self._gauge(
            "ml_drift_missing_ratio",
            "Share of the window's rows without a value for the feature",
            ["feature"],
        )
        by_severity = self._gauge(
            "ml_drift_features", "Number of features at each severity", ["severity"]
        )
        share = self._gauge("ml_drift_drifted_share", "Share of features that drifted")
        dataset = self._gauge(
            "ml_drift_dataset_drift", "1 when the drifted share reaches DRIFT_SHARE_THRESHOLD"
        )
        prediction = self._gauge(
            "ml_prediction_drift_detected", "1 when the predicted class or the score drifted"
        )
        prediction_psi = self._gauge(
            "ml_prediction_drift_psi", "PSI of the model's outputs", ["output"]
        )
        prediction_p = self._gauge(
            "ml_prediction_drift_p_value",
            "p-value of the outputs' test (chi-square for the class, KS for the score)",
            ["output"],
        )
        rows = self._gauge("ml_drift_window_rows", "Rows in the latest drift report", ["dataset"])
        if row is not None:
            report = row["report"]
            for name, feature in report["features"].items():
                self._add(psi, feature["psi"], name)
                self._add(wasserstein, feature.get("wasserstein"), name)
                self._add(p_value, feature["p_value"], name, feature["test"])
                self._add(statistic, feature["statistic"], name, feature["test"])
                self._add(drifted, feature["drifted"], name)
                self._add(severity, SEVERITY_CODE.get(feature["severity"]), name)
                self._add(missing, feature["missing_share_current"], name)
            for level, count in report["counts_by_severity"].items():
                self._add(by_severity, count, level)
            self._add(share, row["drifted_share"])
            self._add(dataset, row["dataset_drift"])
            self._add(prediction, row["prediction_drift"])
            outputs = report["prediction"]
            if outputs.get("available"):
                self._add(prediction_psi, outputs["psi"], "predicted_class")
                self._add(prediction_p, outputs["p_value"], "predicted_class")
                self._add(prediction_psi, outputs["score"]["psi"], "score")
                self._add(prediction_p, outputs["score"]["p_value"], "score")
            self._add(rows, row["rows_reference"], "reference")
            self._add(rows, row["rows_current"], "current")
        yield from (psi, wasserstein, p_value, statistic, drifted, severity, missing)
        yield from (by_severity, share)
        yield from (dataset, prediction, prediction_psi, prediction_p, rows)
        report = (row or {}).get("report", {})
        yield from self._multivariate_families(
            report.get("multivariate"), report.get("features", {})
        )
        yield self._age("ml_drift_report_age_seconds", "drift report", row, now)

    def _multivariate_families(
        self, section: dict | None, features: Iterable[str]
    ) -> Iterator[GaugeMetricFamily]:
        """The multivariate check of the latest drift report; no series when it could not run
        (a profile without a joint sample, a report from before the check): unknown, not 0."""
        auc = self._gauge(
            "ml_drift_multivariate_auc",
            "Held-out ROC AUC of the domain classifier telling the window's rows from the "
            "reference's (0.5: indistinguishable), latest drift report",
        )
        p_value = self._gauge("ml_drift_multivariate_p_value", "p-value of that AUC under no drift")
        auc_threshold = self._gauge(
            "ml_drift_multivariate_auc_threshold",
            "The AUC this window's sizes needed to count as drifted (MULTIVARIATE_P_THRESHOLD)",
        )
        severity = self._gauge(
            "ml_drift_multivariate_severity",
            "Multivariate (joint) drift: 0 none, 1 warning, 2 critical (MULTIVARIATE_AUC_CRITICAL)",
        )
        drivers = self._gauge(
            "ml_drift_multivariate_driver_importance",
            "Held-out AUC lost when the feature is shuffled, for the features named as driving "
            "the multivariate drift; 0 for every other feature, and for all while it has not "
            "drifted (the attribution runs only then)",
            ["feature"],
        )
        if section and section.get("available"):
            self._add(auc, section.get("auc"))
            self._add(p_value, section.get("p_value"))
            self._add(auc_threshold, section.get("auc_threshold"))
            self._add(severity, SEVERITY_CODE.get(section.get("severity", "none")))
            named = {d["feature"]: d.get("auc_drop") for d in section.get("top_features", [])}
            for name in sorted(set(features) | set(named)):
                self._add(drivers, named.get(name, 0.0), name)
        yield from (auc, p_value, auc_threshold, severity, drivers)

    def _quality_families(self, row: dict | None, now: datetime) -> Iterator[GaugeMetricFamily]:
        hard = self._gauge("ml_quality_hard_failures", "Quality checks that failed hard")
        soft = self._gauge("ml_quality_soft_warnings", "Quality checks that raised a warning")
        passed = self._gauge("ml_quality_passed", "1 when no quality check failed hard")
        status = self._gauge(
            "ml_quality_check_status", "Quality check result: 0 ok, 1 soft, 2 hard", ["check"]
        )
        missing = self._gauge(
            "ml_quality_missing_ratio", "Share of rows missing the feature", ["feature"]
        )
        outside = self._gauge(
            "ml_quality_outside_training_range_ratio",
            "Share of the feature's values outside the training range (where the schema sets "
            "no bound)",
            ["feature"],
        )
        rows = self._gauge("ml_quality_window_rows", "Rows in the latest quality report's window")
        if row is not None:
            report = row["report"]
            self._add(hard, row["hard_failures"])
            self._add(soft, row["soft_warnings"])
            self._add(passed, row["passed"])
            for check in report["checks"]:
                self._add(status, LEVEL_CODE.get(check["level"]), check["name"])
            for name, share in report["missing_share"].items():
                self._add(missing, share, name)
            for name, share in (report.get("outside_training_range_share") or {}).items():
                self._add(outside, share, name)
            self._add(rows, row["rows"])
        yield from (hard, soft, passed, status, missing, outside, rows)
        yield self._age("ml_quality_report_age_seconds", "quality report", row, now)

    def _performance_families(self, row: dict | None, now: datetime) -> Iterator[GaugeMetricFamily]:
        realized = self._gauge(
            "ml_realized_performance",
            "Metric over the labelled predictions of the latest window (labels arrive late)",
            ["metric"],
        )
        estimated = self._gauge(
            "ml_estimated_performance",
            "Metric estimated from calibrated scores before labels arrive (CBPE); "
            "blind to concept drift",
            ["metric"],
        )
        confusion = self._gauge(
            "ml_realized_confusion",
            "Labelled predictions of the latest window by confusion-matrix cell (tp, fp, fn, tn)",
            ["cell"],
        )
        coverage = self._gauge(
            "ml_label_coverage_ratio", "Share of the window's predictions that have a label"
        )
        counts = self._gauge(
            "ml_performance_window_rows", "Predictions and labelled ones in the window", ["rows"]
        )
        if row is not None:
            report = row["report"]
            for kind, family in (("realized", realized), ("estimated", estimated)):
                overall = (report.get(kind) or {}).get("overall") or {}
                for metric in METRICS:
                    self._add(family, overall.get(metric), metric)
            overall = (report.get("realized") or {}).get("overall") or {}
            for cell in CONFUSION_CELLS:  # absent from reports saved before they were kept
                self._add(confusion, overall.get(cell), cell)
            self._add(coverage, overall.get("label_coverage"))
            self._add(counts, row["predictions"], "predictions")
            self._add(counts, row["labelled"], "labelled")
        yield from (realized, estimated, confusion, coverage, counts)
        yield self._age("ml_performance_report_age_seconds", "performance report", row, now)

    def _maturity_families(
        self, summary: MaturitySummary | None, now: datetime
    ) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        by_age = self._gauge(
            "ml_label_coverage_by_age_ratio",
            "Share of the predictions made `age_days` whole days before the latest window's end "
            "that have their label by now (labels arrive late and fill in)",
            ["age_days"],
        )
        lag = HistogramMetricFamily(
            "ml_label_lag_seconds",
            "Time from a prediction to its label (the label's labelled_at), over the labelled "
            "predictions of the last LABEL_MATURITY_DAYS",
            labels=list(BASE_LABELS),
        )
        mature = self._gauge(
            "ml_mature_realized_performance",
            "Realized metric of the most recent window whose label coverage reached "
            "LABEL_MATURE_COVERAGE (the latest figure labels can vouch for)",
            ["metric"],
        )
        mature_estimate = self._gauge(
            "ml_mature_estimated_performance",
            "What CBPE estimated, when that window closed, for the most recent mature window",
            ["metric"],
        )
        gap = self._gauge(
            "ml_estimate_gap",
            "Estimated minus realized metric on the most recent mature window: the estimate's "
            "own check (a large gap: it was confidently wrong, concept drift)",
            ["metric"],
        )
        mature_coverage = self._gauge(
            "ml_mature_window_label_coverage_ratio",
            "Label coverage of the most recent mature window",
        )
        mature_age = self._gauge(
            "ml_mature_window_age_seconds",
            "Seconds since the end of the most recent mature window",
        )
        last_label = self._gauge(
            "ml_labels_last_received_timestamp_seconds",
            "When the newest label arrived (Unix time; absent before the first)",
        )
        if summary is not None:
            for age, (predictions, labelled) in sorted(summary.coverage_by_age.items()):
                if predictions:
                    self._add(by_age, labelled / predictions, str(age))
            buckets = [
                (floatToGoString(float(bound)), float(n))
                for bound, n in summary.label_lag["buckets"].items()
            ]
            buckets.append(("+Inf", float(summary.label_lag["count"])))
            lag.add_metric(self._labels, buckets, summary.label_lag["sum"])
            if summary.mature_window is not None:
                realized = summary.mature_realized or {}
                estimated = summary.mature_estimated or {}
                for metric in METRICS:
                    self._add(mature, realized.get(metric), metric)
                    self._add(mature_estimate, estimated.get(metric), metric)
                    if realized.get(metric) is not None and estimated.get(metric) is not None:
                        self._add(gap, estimated[metric] - realized[metric], metric)
                self._add(mature_coverage, realized.get("label_coverage"))
                self._add(mature_age, (now - summary.mature_window[1]).total_seconds())
            if summary.last_label_received is not None:
                self._add(last_label, summary.last_label_received.timestamp())
        yield from (by_age, lag, mature, mature_estimate, gap, mature_coverage, mature_age)
        yield last_label


def airflow_health(url: str) -> dict[str, bool]:
    """{component: healthy} from Airflow's health endpoint; raises when it does not answer, or
    answers something that is not Airflow's health (a proxy's error page, another service)."""
    answer = httpx.get(url, timeout=AIRFLOW_HEALTH_TIMEOUT_SECONDS, follow_redirects=False)
    answer.raise_for_status()
    body = answer.json()
    if not isinstance(body, dict):
        raise ValueError(f"{url} answered {type(body).__name__}, not Airflow's health object")
    reported = {name: body[name] for name in AIRFLOW_COMPONENTS if isinstance(body.get(name), dict)}
    if not reported:
        raise ValueError(f"{url} answered without any of {', '.join(AIRFLOW_COMPONENTS)}")
    return {name: part.get("status") == "healthy" for name, part in reported.items()}


def _say_what_changed(previous: Snapshot, now: Snapshot) -> None:
    """A line when a new window's reports or a new champion reach the metrics: where a window
    or a version can be followed from the monitoring pass (or the promotion) to Prometheus."""
    newest, before = now.reports.quality, previous.reports.quality
    if newest is not None and (before is None or newest["id"] != before["id"]):
        window = (newest["window_start"], newest["window_end"])
        with log_context(window=window, model_version=newest["model_version"]):
            log.info("exporting the reports of a new window")
    if now.champion_version is not None and now.champion_version != previous.champion_version:
        with log_context(model_version=now.champion_version):
            log.info("exporting @champion v%s", now.champion_version)


def build_registry(collector: MonitoringCollector) -> CollectorRegistry:
    """A registry holding only the monitoring collector (no process metrics of the exporter)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.prometheus_exporter",
        description="Serve the latest monitoring results as Prometheus metrics.",
    )
    parser.add_argument("--port", type=int, default=settings.EXPORTER_PORT)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--once", action="store_true", help="print one scrape and exit")
    args = parser.parse_args(argv)
    # --once prints a scrape for a person: a command's quiet, not a server's log.
    configure_logging(settings, process="exporter", command=args.once)

    collector = MonitoringCollector(settings)
    registry = build_registry(collector)
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        down = [name for name, ok in collector.snapshot().sources_up.items() if not ok]
        if down:
            print(f"error: could not read the {' and the '.join(down)}", file=sys.stderr)
        return 1 if down else 0
    try:
        server, thread = start_http_server(args.port, addr=args.host, registry=registry)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"serving monitoring metrics on http://{args.host}:{args.port}/metrics", flush=True)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
