"""The API's Prometheus metrics, correct with one worker or several.

Metrics are `prometheus_client` objects registered once per process at import. With several
workers, `api.serve` sets PROMETHEUS_MULTIPROC_DIR (wiped at start) before any worker imports
this module, so every worker writes its values to files there and `/metrics` merges them with a
`MultiProcessCollector` on a fresh registry per scrape. Gauges declare how workers combine:
`ml_model_loaded` takes the minimum over live workers (one worker without a model is a
problem), the logger's queue depth the sum, and the prediction log's disk figures the most
recent measure (the workers share the folder; the one answering a scrape measures it first).

Every metric carries `environment` (ENVIRONMENT). No request id or raw feature value is ever a
label: per-feature values go into histograms, whose label is only the feature's name.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_fastapi_instrumentator.metrics import Info

from api.logger import WRITER_ERROR_KINDS
from api.spool import disk_usage
from data.settings import get_settings
from training.registry import REFUSAL_KINDS

log = logging.getLogger(__name__)

_CLIENT_VERSION = metadata.version("prometheus-client")

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# A boundary at every latency threshold of prometheus/alerts.yml (2 s): with one there,
# "more than 1% slower than the threshold" and "estimated p99 above it" are the same question.
# And at the latency SLO's 0.1 s: its rules count the answers in the `le="0.1"` bucket as good.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
# One bucket set for every numerical feature, log-spaced so that amounts and hours both fit.
FEATURE_BUCKETS = (0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 100000)

PREDICTIONS = Counter(
    "ml_predictions_total", "Predictions served", ["environment", "model_version", "prediction"]
)
PREDICTION_LATENCY = Histogram(
    "ml_prediction_latency_seconds",
    "Time to validate, score and enqueue one prediction (per row for batches)",
    ["environment"],
    buckets=LATENCY_BUCKETS,
)
PREDICTION_ERRORS = Counter(
    "ml_prediction_errors_total",
    "Prediction requests refused or failed, by cause",
    ["environment", "error_type"],
)
# The causes the API counts, created at 0 when the app starts: a healthy API then serves
# `ml_prediction_errors_total` (a panel of refusals reads 0, not "No data"), and the first
# refusal is an increase from 0 that rate() sees, not a new series starting at 1.
ERROR_TYPES = (
    "validation",
    "batch_too_large",
    "model_not_loaded",
    "feedback_database_unavailable",
    "request_id_conflict",
)
PREDICTION_CONFIDENCE = Histogram(
    "ml_prediction_confidence",
    "Probability of the predicted class",
    ["environment"],
    buckets=CONFIDENCE_BUCKETS,
)
PREDICTION_SCORE = Histogram(
    "ml_prediction_score",
    "Probability of the positive class",
    ["environment"],
    buckets=SCORE_BUCKETS,
)
FEATURE_VALUE = Histogram(
    "ml_feature_value",
    "Values of numerical input features as received",
    ["environment", "feature"],
    buckets=FEATURE_BUCKETS,
)
MODEL_LOADED = Gauge(
    "ml_model_loaded",
    "1 when a model is loaded and serving (minimum over workers)",
    ["environment"],
    multiprocess_mode="livemin",
)
MODEL_INFO = Gauge(
    "ml_model_info",
    "The model version a worker serves (value 1)",
    ["environment", "model_name", "model_version", "scorer"],
    multiprocess_mode="livemostrecent",
)
MODEL_RELOADS = Counter(
    "ml_model_reloads_total", "Model (re)loads by result", ["environment", "result"]
)
# A version @champion pointed at that the API would not load (training.registry.ModelRefused),
# by kind; the version served before keeps serving. Each kind exists at 0 from the start.
MODEL_REFUSED = Counter(
    "ml_model_refused_total",
    "Model versions refused at load, by kind: serialization (pickle, cloudpickle), "
    "untrusted_type (a type outside the trusted list), threshold (decision threshold tag not "
    "strictly between 0 and 1), unreadable",
    ["environment", "kind"],
)
# 1 while @champion points at a version this API refused (any worker: livemax), 0 once it
# points at one it serves: MLChampionRefused, which the counter above cannot say for long.
CHAMPION_REFUSED = Gauge(
    "ml_model_champion_refused",
    "1 while @champion points at a version the API refused to load (the previous one serves)",
    ["environment"],
    multiprocess_mode="livemax",
)
# Per HTTP request, for every route (the instrumentator's middleware fills them). Two series only:
# its default set adds size summaries and a 21-bucket histogram that cost more than scoring.
HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by handler, method and status",
    ["environment", "handler", "method", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration by handler and method",
    ["environment", "handler", "method"],
    buckets=HTTP_BUCKETS,
)
FEEDBACK = Counter("ml_feedback_total", "Ground-truth labels received", ["environment", "label"])
# Labels are training data and the gates' hold-out: who wrote them, who changed one, and what
# was refused are the signs of a poisoning attempt or of a label feed gone wrong.
LABELS_ACCEPTED = Counter(
    "ml_labels_accepted_total",
    "Labels stored, by the source (LABEL_TOKENS) whose token sent them",
    ["environment", "source"],
)
LABELS_CHANGED = Counter(
    "ml_labels_changed_total",
    "Labels that flipped the value of an earlier label for the same request id, by the source "
    "of the new one (both stay in label_history)",
    ["environment", "source"],
)
FEEDBACK_REJECTED = Counter(
    "ml_feedback_rejected_total",
    "Label requests refused, by reason; nothing of a refused request is stored",
    ["environment", "reason"],
)
# The reasons, created at 0 when the app starts (as ERROR_TYPES): unauthorized (no or a wrong
# label token), disabled (LABEL_TOKENS unset), invalid (a 422: unknown label value, bad id),
# batch_too_large (FEEDBACK_MAX_BATCH_SIZE), unknown_request_ids (FEEDBACK_MAX_AWAITING).
FEEDBACK_REJECT_REASONS = (
    "unauthorized",
    "disabled",
    "invalid",
    "batch_too_large",
    "unknown_request_ids",
)
LOG_QUEUE_DEPTH = Gauge(
    "ml_prediction_log_queue_depth",
    "Prediction log rows waiting in memory for the writer",
    ["environment"],
    multiprocess_mode="livesum",
)
LOG_WRITTEN = Counter(
    "ml_prediction_log_written_total",
    "Prediction log rows written to the database",
    ["environment"],
)
LOG_SPOOLED = Counter(
    "ml_prediction_log_spooled_total",
    "Prediction log rows written to the disk spool while the database was unavailable",
    ["environment"],
)
LOG_REPLAYED = Counter(
    "ml_prediction_log_replayed_total",
    "Spooled prediction log rows replayed into the database",
    ["environment"],
)
LOG_DROPPED = Counter(
    "ml_prediction_log_dropped_total",
    "Prediction log rows lost (neither database nor spool could take them)",
    ["environment"],
)
LOG_QUARANTINED = Counter(
    "ml_prediction_log_quarantined_total",
    "Unreadable prediction log spool lines moved to a .quarantine file beside the spool",
    ["environment"],
)
LOG_DEAD_LETTERED = Counter(
    "ml_prediction_log_dead_lettered_total",
    "Prediction log rows the database refused for good (a value a column rejects), written to "
    "PREDICTION_SPOOL_DIR/dead-letter/ for `python -m api.spool --replay-dead-letter`",
    ["environment"],
)
LOG_CONFLICTS = Counter(
    "ml_prediction_log_conflicts_total",
    "Prediction log rows not written because their request id was logged already with other "
    "features (a caller reusing an id; the first row stays). Postgres only",
    ["environment"],
)
LOG_WRITER_ERRORS = Counter(
    "ml_prediction_log_writer_errors_total",
    "Errors the prediction log writer caught and went on from, by kind: disk (spool, journal or "
    "dead-letter file), rejected (a row the database refused), internal (a bug)",
    ["environment", "kind"],
)
# PREDICTION_SPOOL_DIR, measured before each scrape by the worker answering it. The folder is
# shared, so the newest measure is the truth: `livemostrecent`, not `max` (a worker that measured
# a full spool an hour ago would keep showing it) nor `sum` (each worker sees the same files).
LOG_DISK_BYTES = Gauge(
    "ml_prediction_log_disk_bytes",
    "Bytes of prediction log files in PREDICTION_SPOOL_DIR by kind: spool (rows waiting for the "
    "database), journal (answered, not yet written), quarantine (unreadable lines kept)",
    ["environment", "kind"],
    multiprocess_mode="livemostrecent",
)
LOG_FILESYSTEM_FREE = Gauge(
    "ml_prediction_log_filesystem_free_bytes",
    "Bytes free for the API on the filesystem of PREDICTION_SPOOL_DIR, which the spool fills "
    "while the database is down",
    ["environment"],
    multiprocess_mode="livemostrecent",
)
LOG_FILESYSTEM_SIZE = Gauge(
    "ml_prediction_log_filesystem_size_bytes",
    "Size in bytes of the filesystem of PREDICTION_SPOOL_DIR",
    ["environment"],
    multiprocess_mode="livemostrecent",
)


class ApiMetrics:
    """The metrics above bound to one environment, with label children cached for speed."""

    def __init__(
        self, environment: str, numerical_features: Iterable[str] = (), enabled: bool = True
    ) -> None:
        self.environment = environment
        self.enabled = enabled
        self._predictions: dict[tuple[str, int], Any] = {}
        self.latency = PREDICTION_LATENCY.labels(environment)
        self.confidence = PREDICTION_CONFIDENCE.labels(environment)
        self.score = PREDICTION_SCORE.labels(environment)
        self.features = {f: FEATURE_VALUE.labels(environment, f) for f in numerical_features}
        self.model_loaded = MODEL_LOADED.labels(environment)
        self.queue_depth = LOG_QUEUE_DEPTH.labels(environment)
        self.log_written = LOG_WRITTEN.labels(environment)
        self.log_spooled = LOG_SPOOLED.labels(environment)
        self.log_replayed = LOG_REPLAYED.labels(environment)
        self.log_dropped = LOG_DROPPED.labels(environment)
        self.log_quarantined = LOG_QUARANTINED.labels(environment)
        self.log_dead_lettered = LOG_DEAD_LETTERED.labels(environment)
        self.log_conflicts = LOG_CONFLICTS.labels(environment)
        self.log_writer_errors = {
            kind: LOG_WRITER_ERRORS.labels(environment, kind) for kind in WRITER_ERROR_KINDS
        }
        self.errors = {kind: PREDICTION_ERRORS.labels(environment, kind) for kind in ERROR_TYPES}
        self.feedback_rejections = {
            reason: FEEDBACK_REJECTED.labels(environment, reason)
            for reason in FEEDBACK_REJECT_REASONS
        }
        self.refusals = {kind: MODEL_REFUSED.labels(environment, kind) for kind in REFUSAL_KINDS}
        self.champion_refused = CHAMPION_REFUSED.labels(environment)
        self._model_info: tuple[str, ...] | None = None
        self._buffer: deque[tuple] = deque()  # appends and poplefts are thread-safe
        self._spool_dir: Path | None = None
        self._spool_unreadable = False
        for histogram in (self.latency, self.confidence, self.score, *self.features.values()):
            check_histogram_internals(histogram)
        self.model_loaded.set(0)
        self.champion_refused.set(0)

    def prediction(
        self,
        model_version: str,
        predicted_class: int,
        confidence: float,
        score: float,
        features: Mapping[str, Any],
        latency_seconds: float,
    ) -> None:
        """Count one prediction. It is buffered and written by `flush`, in bulk: in multiprocess
        mode every histogram observation is two mmap writes, and a request observes eleven."""
        if self.enabled:
            self._buffer.append(
                (model_version, predicted_class, confidence, score, features, latency_seconds)
            )

    def flush(self) -> None:
        """Write the buffered predictions into the metrics (the logger's writer thread calls this
        every 0.1 s at most, `/metrics` before every scrape)."""
        rows = [self._buffer.popleft() for _ in range(len(self._buffer))]
        by_version: dict[str, list] = {}
        for row in rows:
            by_version.setdefault(row[0], []).append(row)
        for version, group in by_version.items():
            _, predicted, confidence, scores, features, latency = zip(*group, strict=True)
            self.predictions(
                version,
                np.array(predicted, dtype=np.int64),
                np.array(confidence, dtype=np.float64),
                np.array(scores, dtype=np.float64),
                features,
                np.array(latency, dtype=np.float64),
            )

    def predictions(
        self,
        model_version: str,
        predicted: np.ndarray,
        confidence: np.ndarray,
        scores: np.ndarray,
        features: Sequence[Mapping[str, Any]],
        latency_seconds: float | np.ndarray,
    ) -> None:
        """Count many predictions at once, one increment per histogram bucket touched."""
        if not self.enabled:
            return
        for predicted_class, count in enumerate(np.bincount(predicted, minlength=2)):
            if count:
                PREDICTIONS.labels(self.environment, model_version, str(predicted_class)).inc(
                    int(count)
                )
        _observe_many(self.confidence, confidence)
        _observe_many(self.score, scores)
        _observe_many(self.latency, np.broadcast_to(latency_seconds, scores.shape))
        for name, histogram in self.features.items():
            values = [row.get(name) for row in features]
            _observe_many(histogram, np.array(values, dtype=np.float64))  # None -> NaN

    def watch_spool(self, folder: Path) -> None:
        """Measure the prediction log's folder at every scrape from now on (`measure_spool`)."""
        self._spool_dir = folder

    def measure_spool(self) -> None:
        """The bytes of the prediction log's files and the room left on their filesystem, into
        the gauges; `/metrics` calls this before each scrape (a directory listing and a statvfs:
        the journal's segments and the spool files are a few files, not thousands)."""
        if self._spool_dir is None or not self.enabled:
            return
        try:
            usage = disk_usage(self._spool_dir)
        except OSError as exc:  # the gauges keep their last values; said once per streak
            if not self._spool_unreadable:
                log.error("cannot measure the prediction log folder %s: %s", self._spool_dir, exc)
            self._spool_unreadable = True
            return
        self._spool_unreadable = False
        for kind, size in usage.files.items():
            LOG_DISK_BYTES.labels(self.environment, kind).set(size)
        LOG_FILESYSTEM_FREE.labels(self.environment).set(usage.free)
        LOG_FILESYSTEM_SIZE.labels(self.environment).set(usage.size)

    def error(self, error_type: str, count: int = 1) -> None:
        counter = self.errors.get(error_type) or PREDICTION_ERRORS.labels(
            self.environment, error_type
        )
        counter.inc(count)

    def feedback(self, label: int, count: int = 1) -> None:
        FEEDBACK.labels(self.environment, str(label)).inc(count)

    def label_sources(self, sources: Iterable[str]) -> None:
        """Create the per-source series at 0 (a source that has sent nothing yet reads 0)."""
        for source in sources:
            LABELS_ACCEPTED.labels(self.environment, source)
            LABELS_CHANGED.labels(self.environment, source)

    def labels_stored(self, source: str, accepted: int, changed: int) -> None:
        LABELS_ACCEPTED.labels(self.environment, source).inc(accepted)
        if changed:
            LABELS_CHANGED.labels(self.environment, source).inc(changed)

    def feedback_rejected(self, reason: str) -> None:
        counter = self.feedback_rejections.get(reason) or FEEDBACK_REJECTED.labels(
            self.environment, reason
        )
        counter.inc()

    def model_served(self, model_name: str, model_version: str, scorer: str) -> None:
        if self._model_info is not None:
            MODEL_INFO.labels(*self._model_info).set(0)
        self._model_info = (self.environment, model_name, model_version, scorer)
        MODEL_INFO.labels(*self._model_info).set(1)
        self.model_loaded.set(1)
        # Both classes exist at 0 from the moment a version serves: a model that never (or no
        # longer) predicts class 1 must read as a positive rate of 0, not as no data, or the
        # alert on a moved positive rate (MLPositiveRateShift) could never see it.
        for predicted_class in ("0", "1"):
            PREDICTIONS.labels(self.environment, model_version, predicted_class)

    def reload(self, result: str) -> None:
        MODEL_RELOADS.labels(self.environment, result).inc()

    def model_refused(self, kind: str) -> None:
        self.refusals.get(kind, MODEL_REFUSED.labels(self.environment, kind)).inc()

    def champion_refused_now(self, refused: bool) -> None:
        self.champion_refused.set(1 if refused else 0)


def http_instrumentation(environment: str) -> Callable[[Info], None]:
    """The instrumentator callback that fills HTTP_REQUESTS and HTTP_DURATION."""

    def record(info: Info) -> None:
        handler, method = info.modified_handler, info.method
        HTTP_REQUESTS.labels(environment, handler, method, info.modified_status).inc()
        HTTP_DURATION.labels(environment, handler, method).observe(info.modified_duration)

    return record


def _observe_many(histogram: Any, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every non-NaN v, with one increment per bucket touched.

    prometheus_client has no bulk observe, and in multiprocess mode every observe is two mmap
    writes: a 1,000-row batch spent 80% of its time in them. This fills the same buckets
    (the first upper bound >= v, as `observe` picks) and the same sum, through the histogram's
    private fields: `check_histogram_internals` refuses to start on a prometheus_client whose
    fields differ, and tests/test_metrics.py compares the two paths on every bucket bound.
    """
    values = values[~np.isnan(values)]
    if not values.size:
        return
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket in np.flatnonzero(counts):
        histogram._buckets[bucket].inc(int(counts[bucket]))
    histogram._sum.inc(float(values.sum()))


def check_histogram_internals(histogram: Any) -> None:
    """Fail loudly, at start, if a labelled histogram lacks what `_observe_many` writes: one
    value per bucket in `_buckets` (per bucket, not cumulative), bounds in `_upper_bounds`
    ending with +Inf, and `_sum`. A new prometheus_client may rename or reshape them."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not (
        isinstance(bounds, list)
        and bounds
        and bounds[-1] == float("inf")
        and isinstance(buckets, list)
        and len(buckets) == len(bounds)
        and all(callable(getattr(bucket, "inc", None)) for bucket in buckets)
        and callable(getattr(total, "inc", None))
    ):
        raise RuntimeError(
            f"prometheus_client {_CLIENT_VERSION} changed Histogram's private fields "
            "(_upper_bounds, _buckets, _sum) that api.instrumentation._observe_many fills in bulk; "
            "update it (tests/test_metrics.py checks it against Histogram.observe)"
        )


def _registry() -> CollectorRegistry:
    if get_settings().PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def latest() -> tuple[bytes, str]:
    """The exposition for a scrape: merged over workers in multiprocess mode."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def summary() -> dict[str, Any]:
    """A human-readable snapshot of the merged metrics (all workers)."""
    samples: dict[str, list] = {}
    for family in _registry().collect():
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    def total(name: str, by: str | None = None) -> Any:
        rows = samples.get(name, [])
        if by is None:
            return sum(s.value for s in rows)
        grouped: dict[str, float] = {}
        for s in rows:
            grouped[s.labels.get(by, "")] = grouped.get(s.labels.get(by, ""), 0) + s.value
        return grouped

    buckets: dict[float, float] = {}
    for s in samples.get("ml_prediction_latency_seconds_bucket", []):
        bound = float(s.labels["le"])
        buckets[bound] = buckets.get(bound, 0) + s.value
    count = total("ml_prediction_latency_seconds_count")
    served = [s.labels for s in samples.get("ml_model_info", []) if s.value == 1]
    return {
        "predictions": {
            "total": total("ml_predictions_total"),
            "by_class": total("ml_predictions_total", "prediction"),
            "by_model_version": total("ml_predictions_total", "model_version"),
        },
        "errors": total("ml_prediction_errors_total", "error_type"),
        "feedback": total("ml_feedback_total", "label"),
        "labels": {
            "accepted_by_source": total("ml_labels_accepted_total", "source"),
            "changed_by_source": total("ml_labels_changed_total", "source"),
            "rejected": total("ml_feedback_rejected_total", "reason"),
        },
        "latency_seconds": {
            "count": count,
            "mean": total("ml_prediction_latency_seconds_sum") / count if count else None,
            **{f"p{int(q * 100)}_upper_bound": _quantile(buckets, q) for q in (0.5, 0.95, 0.99)},
        },
        "model": {
            "loaded_in_all_workers": min(
                (s.value for s in samples.get("ml_model_loaded", [])), default=0
            )
            == 1,
            "serving": sorted({(i["model_name"], i["model_version"]) for i in served}),
        },
        "prediction_log": {
            "queue_depth": total("ml_prediction_log_queue_depth"),
            "written": total("ml_prediction_log_written_total"),
            "spooled": total("ml_prediction_log_spooled_total"),
            "replayed": total("ml_prediction_log_replayed_total"),
            "dropped": total("ml_prediction_log_dropped_total"),
            "quarantined": total("ml_prediction_log_quarantined_total"),
            "dead_lettered": total("ml_prediction_log_dead_lettered_total"),
            "writer_errors": total("ml_prediction_log_writer_errors_total", by="kind"),
        },
    }


def _quantile(buckets: dict[float, float], q: float) -> float | None:
    """The smallest bucket bound holding at least a share `q` of observations."""
    if not buckets or buckets.get(float("inf"), 0) == 0:
        return None
    target = q * buckets[float("inf")]
    return next(bound for bound in sorted(buckets) if buckets[bound] >= target)


def mark_worker_dead(pid: int) -> None:
    """Drop a finished worker's live gauges from the merged view."""
    if get_settings().PROMETHEUS_MULTIPROC_DIR:
        multiprocess.mark_process_dead(pid)
