"""The on-call dashboard `ml-overview`, in six rows: service health (with what the stack stands
on: Postgres, Airflow, the spool's disk); the error budgets of single-row /predict's SLOs; model
performance, realized against estimated, with label coverage; late labels (coverage by window
age, the label lag, the most recent mature window beside its estimate); drift and data quality;
retraining and the registry, with the report and audit tables from Postgres.

Over 700 lines on purpose: one file per dashboard, so whoever changes the on-call view reads all
of it in the order Grafana draws it.
"""

from __future__ import annotations

from typing import Any

from grafana.panels import (
    BLUE,
    ENV,
    FEATURE,
    GREEN,
    ORANGE,
    PREDICT,
    QUALITY,
    RED,
    SEL,
    THRESHOLDS,
    VERSION,
    _default_options,
    _quantile,
    _rate,
    alert_list,
    alert_steps,
    default,
    mapping,
    panel,
    prom,
    row,
    stat,
    steps,
    table,
    threshold_line,
    timeseries,
)


def service_health() -> list[dict[str, Any]]:
    errors_5xx = _rate("http_requests_total", "environment", f'{PREDICT}, status=~"5..", {ENV}')
    errors_4xx = _rate("http_requests_total", "environment", f'{PREDICT}, status=~"4..", {ENV}')
    requests = _rate("http_requests_total", "environment", f"{PREDICT}, {ENV}")
    up_down = mapping((0, "down", RED), (1, "up", GREEN))
    return [
        row("Service health"),
        alert_list(
            "Alerts now",
            description=(
                "What fires or is pending in these environments, critical first, from the rules "
                "of prometheus/alerts.yml; each alert's runbook is linked from its panel below."
            ),
            height=6,
        ),
        stat(
            "API replicas up",
            "none",
            prom('sum(up{job="api"}) or vector(0)', "replicas"),
            description="API targets answering Prometheus' scrapes (MLApiUnavailable at 0).",
            thresholds=steps(RED, (1, GREEN)),
            decimals=0,
        ),
        stat(
            "Model loaded in every replica",
            "none",
            prom(f"min by (environment) (ml_model_loaded{{{ENV}}})", "{{environment}}"),
            description="1 when every live worker has a model (MLNoProductionModel below 1).",
            mappings=mapping((0, "no model", RED), (1, "loaded", GREEN)),
            thresholds=steps(RED, (1, GREEN)),
        ),
        stat(
            "Scrape targets",
            "none",
            prom("up", "{{job}} {{instance}}"),
            description=(
                "Every target Prometheus scrapes (MLTargetDown while one is 0; MLExporterDown "
                "when no exporter answers, MLApiUnavailable when no API replica does)."
            ),
            mappings=up_down,
            thresholds=steps(RED, (1, GREEN)),
        ),
        stat(
            "Exporter sources",
            "none",
            prom(f"ml_exporter_source_up{{{SEL}}}", "{{source}}"),
            description=(
                "Whether the exporter could read the database and the registry "
                "(MLExporterSourceDown at 0: drift, quality and performance values are frozen; "
                "MLRegistryUnreachable), and reach Airflow's health endpoint (MLAirflowUnhealthy)."
            ),
            mappings=up_down,
            thresholds=steps(RED, (1, GREEN)),
        ),
        timeseries(
            "Requests by route and status",
            "reqps",
            prom(
                _rate("http_requests_total", "environment, handler, status"),
                "{{handler}} {{status}}",
            ),
            description="HTTP requests per second, every route, by status code.",
        ),
        timeseries(
            "Server error ratio (/predict, /feedback)",
            "percentunit",
            prom(f"({errors_5xx} or {requests} * 0) / {requests}", "{{environment}}"),
            threshold_line("api_error_ratio", "alert threshold"),
            description=(
                "Share of prediction and feedback requests answered 5xx "
                "(MLApiErrorRateHigh over the threshold for 5 minutes)."
            ),
            thresholds=alert_steps("api_error_ratio", low_is_bad=False),
        ),
        timeseries(
            "Client error ratio (/predict, /feedback)",
            "percentunit",
            prom(f"({errors_4xx} or {requests} * 0) / {requests}", "{{environment}}"),
            threshold_line("api_client_error_ratio", "alert threshold"),
            description=(
                "Share of prediction and feedback requests refused 4xx, mostly 422: a client "
                "whose payloads no longer match the schema (MLApiClientErrorsHigh over the "
                "threshold for 15 minutes)."
            ),
            thresholds=alert_steps("api_client_error_ratio", low_is_bad=False),
        ),
        timeseries(
            "/predict latency (HTTP)",
            "s",
            prom(
                _quantile(
                    0.99, "http_request_duration_seconds_bucket", f'handler="/predict", {ENV}'
                ),
                "p99 {{environment}}",
            ),
            prom(
                _quantile(
                    0.5, "http_request_duration_seconds_bucket", f'handler="/predict", {ENV}'
                ),
                "p50 {{environment}}",
            ),
            threshold_line("latency_p99_seconds", "alert threshold (p99)"),
            description=(
                "Request duration of single-row /predict as the middleware measures it "
                "(MLApiLatencyHigh: p99 over the threshold for 5 minutes)."
            ),
            thresholds=alert_steps("latency_p99_seconds", low_is_bad=False),
        ),
        timeseries(
            "Scoring latency (per row, in the worker)",
            "s",
            prom(
                _quantile(0.99, "ml_prediction_latency_seconds_bucket", ENV), "p99 {{environment}}"
            ),
            prom(
                _quantile(0.5, "ml_prediction_latency_seconds_bucket", ENV), "p50 {{environment}}"
            ),
            description="Validate, score and enqueue one prediction, without the HTTP layer.",
        ),
        timeseries(
            "Predictions by class",
            "ops",
            prom(_rate("ml_predictions_total", "environment, prediction"), "class {{prediction}}"),
            description="Predictions served per second, by predicted class (MLNoPredictions at 0).",
        ),
        timeseries(
            "Predictions by model version",
            "ops",
            prom(
                _rate("ml_predictions_total", "environment, model_version", f"{ENV}, {VERSION}"),
                "v{{model_version}}",
            ),
            description=(
                "Predictions served per second by the version that answered (the `version` "
                "variable picks some): a rollout, a rollback, or replicas on different versions "
                "(MLReplicaServesOldVersion)."
            ),
        ),
        timeseries(
            "Refused or failed predictions by cause",
            "ops",
            prom(
                f"{_rate('ml_prediction_errors_total', 'environment, error_type')} or vector(0)",
                "{{error_type}}",
            ),
            description="422, 413, 503 and scoring failures per second (0 when there were none).",
        ),
        timeseries(
            "Mean confidence",
            "percentunit",
            prom(f"ml:prediction_confidence:mean_rate10m{{{ENV}}}", "{{environment}}"),
            threshold_line("mean_confidence_min", "alert threshold"),
            description=(
                "Mean probability of the predicted class over 10 minutes "
                "(MLPredictionConfidenceLow under the threshold for 15 minutes)."
            ),
            thresholds=alert_steps("mean_confidence_min", low_is_bad=True),
        ),
        timeseries(
            "Prediction log rows",
            "cps",
            *(
                prom(_rate(f"ml_prediction_log_{what}_total", "environment"), what)
                for what in ("written", "spooled", "replayed", "dropped", "quarantined")
            ),
            description=(
                "Rows per second written to the database, spooled to disk while it is down "
                "(MLPredictionLogSpooling), replayed, dropped (MLPredictionLogDropping) and "
                "quarantined."
            ),
        ),
        timeseries(
            "Prediction log rows lost",
            "percentunit",
            prom(
                f"{_rate('ml_prediction_log_dropped_total', 'environment')} / "
                f"{_rate('ml_predictions_total', 'environment')}",
                "{{environment}}",
            ),
            threshold_line("prediction_log_drop_ratio", "alert threshold (pages)"),
            description=(
                "Share of the predictions served whose log row was lost (MLPredictionLogDropping "
                "pages above the threshold for 5 minutes; any loss is a warning)."
            ),
            thresholds=alert_steps("prediction_log_drop_ratio", low_is_bad=False),
            width=6,
        ),
        timeseries(
            "Prediction log queue",
            "short",
            prom(
                f"sum by (environment) (ml_prediction_log_queue_depth{{{ENV}}})", "{{environment}}"
            ),
            description="Rows waiting in the workers' memory for the writer thread.",
            width=6,
        ),
        timeseries(
            "Prediction log writer faults",
            "short",
            prom(
                "sum by (environment) "
                f"(increase(ml_prediction_log_dead_lettered_total{{{ENV}}}[$__rate_interval]))",
                "dead-lettered",
            ),
            prom(
                "sum by (environment, kind) "
                f"(increase(ml_prediction_log_writer_errors_total{{{ENV}}}[$__rate_interval]))",
                "error: {{kind}}",
            ),
            description=(
                "Rows the database refused for good, kept in the spool's dead-letter folder "
                "(MLPredictionLogDeadLettered), and errors the writer caught and went on from, "
                "by kind: disk, rejected, internal (MLPredictionLogWriterErrors)."
            ),
            width=6,
        ),
        timeseries(
            "Exporter read time",
            "s",
            prom(f"ml_exporter_read_seconds{{{SEL}}}", "{{environment}}"),
            description="How long the exporter's last read of the database and registry took.",
            width=6,
        ),
        timeseries(
            "Alerting pipeline: rule evaluations failing",
            "short",
            prom(
                "sum by (rule_group) (increase(prometheus_rule_evaluation_failures_total[10m]))",
                "{{rule_group}}",
            ),
            description=(
                "Rule evaluations that failed over 10 minutes, by group: a rule that cannot be "
                "evaluated never fires (MLRuleEvaluationFailing)."
            ),
        ),
        timeseries(
            "Alerting pipeline: notifications failed or dropped",
            "short",
            prom(
                "sum by (integration) (increase(alertmanager_notifications_failed_total[10m]))",
                "failed: {{integration}}",
            ),
            prom(
                "sum(increase(prometheus_notifications_dropped_total[10m]))",
                "dropped by Prometheus",
            ),
            description=(
                "Notifications Alertmanager could not deliver, by receiver type "
                "(MLAlertNotificationsFailing), and alerts Prometheus could not hand to "
                "Alertmanager (MLAlertsDropped), over 10 minutes."
            ),
        ),
    ]


# The SLOs of prometheus/alerts.yml (group ml-slo): what each counts as bad on single-row
# /predict, and the burn alert that pages or tickets on it.
SLOS = {
    "availability": ("answered 5xx", "MLPredictAvailabilityBudgetBurn"),
    "latency": ("slower than 0.1 s", "MLPredictLatencyBudgetBurn"),
}


def _increase(metric: str, matchers: str, window: str) -> str:
    return f"sum by (environment) (increase({metric}{{{matchers}}}[{window}]))"


def _bad_ratio(slo: str, window: str) -> str:
    """The share of single-row /predict requests the SLO counts as bad over `window`, as the
    ml-slo group's `ml:slo_<slo>:error_ratio_rate*` (0, not absent, without a 5xx)."""
    if slo == "availability":
        bad = _increase("http_requests_total", f'handler="/predict", status=~"5..", {ENV}', window)
        total = _increase("http_requests_total", f'handler="/predict", {ENV}', window)
        return f"({bad} or 0 * {total}) / {total}"
    bucket = "http_request_duration_seconds_bucket"
    fast = _increase(bucket, f'handler="/predict", le="0.1", {ENV}', window)
    total = _increase(bucket, f'handler="/predict", le="+Inf", {ENV}', window)
    return f"1 - {fast} / {total}"


BURN_WINDOWS = ("1h", "6h", "1d", "3d")  # the long windows of the burn alerts' branches


def error_budgets() -> list[dict[str, Any]]:
    """Per SLO: the 30-day budget left, the SLI against its target, the burn rates."""
    targets, burns = [], []
    for slo, (bad, alert) in SLOS.items():
        budget = f"ml:slo_{slo}:error_budget_ratio"
        target = THRESHOLDS[f"ml:threshold:slo_{slo}_target"]
        targets += [
            stat(
                f"{slo.capitalize()} budget left (30 days)",
                "percentunit",
                prom(
                    f"1 - ({_bad_ratio(slo, '30d')}) / on() group_left() {budget}",
                    "{{environment}}",
                ),
                description=(
                    f"Share of the 30-day error budget of /predict's {slo} SLO (at most "
                    f"{1 - target:.1%} of requests {bad}) not yet spent; below 0 the SLO is "
                    "missed. Over what Prometheus keeps: PROMETHEUS_RETENTION (15 days by "
                    "default) shorter than 30 days is a shorter window."
                ),
                thresholds=steps(RED, (0, ORANGE), (0.25, GREEN)),
                decimals=1,
                width=4,
            ),
            timeseries(
                f"{slo.capitalize()} SLI against the SLO",
                "percentunit",
                *(
                    prom(
                        f"1 - ml:slo_{slo}:error_ratio_rate{w}{{{ENV}}}",
                        f"{words} {{{{environment}}}}",
                    )
                    for w, words in (("1h", "last hour"), ("1d", "last day"))
                ),
                threshold_line(f"slo_{slo}_target", "SLO target"),
                description=(
                    f"Share of single-row /predict requests not {bad}, over the last hour and "
                    f"day, against the SLO's target over 30 days ({alert} when the budget burns "
                    "too fast)."
                ),
                thresholds=alert_steps(f"slo_{slo}_target", low_is_bad=True),
                decimals=2,
                width=8,
            ),
        ]
        burns.append(
            timeseries(
                f"{slo.capitalize()} budget burn rate",
                "none",
                *(
                    prom(
                        f"ml:slo_{slo}:error_ratio_rate{w}{{{ENV}}} / on() group_left() {budget}",
                        f"{w} {{{{environment}}}}",
                    )
                    for w in BURN_WINDOWS
                ),
                description=(
                    f"How many times faster than 30 days allow the {slo} budget burns, over the "
                    f"long windows of {alert}: it pages above 14.4 (1 h) or 6 (6 h), tickets "
                    "above 3 (1 day) or 1 (3 days), each while its short window agrees."
                ),
                thresholds=steps(GREEN, (1, "yellow"), (3, ORANGE), (6, RED), (14.4, "dark-red")),
                line_thresholds=True,
                decimals=1,
            )
        )
    return [row("Error budgets: single-row /predict SLOs, 30 days"), *targets, *burns]


def model_performance() -> list[dict[str, Any]]:
    realized_accuracy = f'ml_realized_performance{{metric="accuracy", {SEL}}}'
    estimated_accuracy = f'ml_estimated_performance{{metric="accuracy", {SEL}}}'
    accuracy_steps = steps(
        RED,
        (THRESHOLDS["ml:threshold:realized_accuracy_critical"], ORANGE),
        (THRESHOLDS["ml:threshold:realized_accuracy_warning"], GREEN),
    )
    estimated_steps = steps(
        RED,
        (THRESHOLDS["ml:threshold:estimated_accuracy_critical"], ORANGE),
        (THRESHOLDS["ml:threshold:estimated_accuracy_warning"], GREEN),
    )
    return [
        row("Model performance: realized vs estimated"),
        stat(
            "Realized accuracy",
            "percentunit",
            prom(realized_accuracy, "{{model_name}}"),
            description=(
                "Accuracy over the labelled predictions of the latest window; trusted from the "
                "label coverage floor on (MLRealizedAccuracyLow)."
            ),
            thresholds=accuracy_steps,
        ),
        stat(
            "Estimated accuracy (CBPE)",
            "percentunit",
            prom(estimated_accuracy, "{{model_name}}"),
            description=(
                "Accuracy estimated from calibrated scores before labels arrive; blind to "
                "concept drift (MLEstimatedAccuracyLow)."
            ),
            thresholds=estimated_steps,
        ),
        stat(
            "Label coverage",
            "percentunit",
            prom(f"ml_label_coverage_ratio{{{SEL}}}", "{{model_name}}"),
            description="Share of the window's predictions with a label (MLLabelCoverageLow).",
            thresholds=alert_steps("label_coverage_min", low_is_bad=True, color=ORANGE),
        ),
        stat(
            "Orphaned labels",
            "short",
            prom(f"ml_labels_orphaned{{{SEL}}}", "{{model_name}}"),
            description=(
                "Labels still without a logged prediction LABEL_MATCH_MINUTES after they arrived: "
                "a wrong request id, or a prediction that was never logged."
            ),
            thresholds=steps(GREEN, (1, ORANGE)),
            decimals=0,
        ),
        timeseries(
            "Accuracy: realized vs estimated",
            "percentunit",
            prom(realized_accuracy, "realized {{model_name}}"),
            prom(estimated_accuracy, "estimated {{model_name}}"),
            threshold_line("realized_accuracy_warning", "warning floor"),
            threshold_line("realized_accuracy_critical", "critical floor"),
            description=(
                "The two should agree under covariate shift; realized falling away from the "
                "estimate is concept drift, which only labels reveal."
            ),
            thresholds=accuracy_steps,
        ),
        timeseries(
            "Estimate error (estimated - realized)",
            "percentunit",
            prom(
                f"ml_estimated_performance{{{SEL}}} - on (environment, model_name, metric) "
                f"ml_realized_performance{{{SEL}}}",
                "{{metric}}",
            ),
            description="How far CBPE is off on the rows whose labels arrived, per metric.",
        ),
        timeseries(
            "Realized metrics",
            "percentunit",
            prom(f"ml_realized_performance{{{SEL}}}", "{{metric}}"),
            description="Accuracy, precision, recall, F1 and ROC AUC over labelled predictions.",
            thresholds=accuracy_steps,
        ),
        timeseries(
            "Estimated metrics (CBPE)",
            "percentunit",
            prom(f"ml_estimated_performance{{{SEL}}}", "{{metric}}"),
            threshold_line("estimated_accuracy_warning", "accuracy warning floor"),
            threshold_line("estimated_accuracy_critical", "accuracy critical floor"),
            description="The same metrics estimated from the scores alone.",
            thresholds=estimated_steps,
        ),
        timeseries(
            "Label coverage",
            "percentunit",
            prom(f"ml_label_coverage_ratio{{{SEL}}}", "{{model_name}}"),
            threshold_line("label_coverage_min", "realized alerts trusted from"),
            description="Below the line, realized accuracy alerts wait (MLLabelCoverageLow).",
            thresholds=alert_steps("label_coverage_min", low_is_bad=True, color=ORANGE),
            width=8,
        ),
        timeseries(
            "Window rows",
            "short",
            prom(f"ml_performance_window_rows{{{SEL}}}", "{{rows}}"),
            description="Predictions in the latest performance window, and how many are labelled.",
            width=8,
        ),
        timeseries(
            "Labels received",
            "cps",
            prom(
                f"{_rate('ml_feedback_total', 'environment, label')} or vector(0)",
                "label {{label}}",
            ),
            description="Ground truth arriving through /feedback, per second, by label.",
            width=8,
        ),
        table(
            "Performance reports",
            """
            SELECT window_end AS time, model_name, model_version, predictions, labelled,
                   (report->'realized'->'overall'->>'accuracy')::float AS realized_accuracy,
                   (report->'estimated'->'overall'->>'accuracy')::float AS estimated_accuracy,
                   (report->'realized'->'overall'->>'label_coverage')::float AS label_coverage
            FROM performance_reports
            WHERE $__timeFilter(window_end)
            ORDER BY window_end DESC
            LIMIT 50
            """,
            description="One row per monitoring window (performance_reports).",
            width=24,
        ),
    ]


def late_labels() -> list[dict[str, Any]]:
    """Labels that arrive days late (monitoring.label_maturity): how much of each day's
    predictions is labelled by now, how late labels are, and the most recent mature window
    (LABEL_MATURE_COVERAGE of its labels in): its realized accuracy beside what the estimate said
    of it, their gap, its age."""
    mature = default("LABEL_MATURE_COVERAGE")
    accuracy_steps = steps(
        RED,
        (THRESHOLDS["ml:threshold:realized_accuracy_critical"], ORANGE),
        (THRESHOLDS["ml:threshold:realized_accuracy_warning"], GREEN),
    )
    lag = f"sum by (environment, model_name, le) (ml_label_lag_seconds_bucket{{{SEL}}})"
    age = f"ml_mature_window_age_seconds{{{SEL}}}"
    since_label = f"time() - ml_labels_last_received_timestamp_seconds{{{SEL}}}"
    return [
        row("Late labels: coverage by age, lag, the mature window"),
        stat(
            "Mature window accuracy",
            "percentunit",
            prom(f'ml_mature_realized_performance{{metric="accuracy", {SEL}}}', "{{model_name}}"),
            description=(
                "Realized accuracy of the most recent window whose labels are in "
                f"(LABEL_MATURE_COVERAGE, {mature:.0%}): days old under a normal lag, but what "
                "the labels vouch for (MLMatureAccuracyLow)."
            ),
            thresholds=accuracy_steps,
        ),
        stat(
            "Mature window label coverage",
            "percentunit",
            prom(f"ml_mature_window_label_coverage_ratio{{{SEL}}}", "{{model_name}}"),
            description="Share of the mature window's predictions with their label.",
            thresholds=steps(ORANGE, (mature, GREEN)),
        ),
        stat(
            "Mature window age",
            "s",
            prom(age, "{{model_name}}"),
            description=(
                "Since the end of the most recent mature window: about the label lag under a "
                "steady one; older than the threshold, labels stopped maturing "
                "(MLLabelCoverageLow)."
            ),
            thresholds=alert_steps("mature_window_max_age_seconds", low_is_bad=False, color=ORANGE),
        ),
        stat(
            "Since the newest label",
            "s",
            prom(since_label, "{{model_name}}"),
            description="When the newest label arrived, any model (MLLabelFeedStopped).",
            thresholds=alert_steps("label_feed_silence_seconds", low_is_bad=False, color=ORANGE),
        ),
        timeseries(
            "Accuracy: mature window realized vs its estimate",
            "percentunit",
            prom(
                f'ml_mature_realized_performance{{metric="accuracy", {SEL}}}',
                "realized, mature window {{model_name}}",
            ),
            prom(
                f'ml_mature_estimated_performance{{metric="accuracy", {SEL}}}',
                "estimated then, mature window {{model_name}}",
            ),
            prom(
                f'ml_estimated_performance{{metric="accuracy", {SEL}}}',
                "estimated, latest window {{model_name}}",
            ),
            threshold_line("realized_accuracy_warning", "warning floor"),
            threshold_line("realized_accuracy_critical", "critical floor"),
            description=(
                "The mature window's realized accuracy beside what CBPE estimated for it when it "
                "closed, and the latest window's estimate (all there is for the windows not yet "
                "mature). Realized under the floors: MLMatureAccuracyLow; apart from its "
                "estimate: MLEstimateGapLarge."
            ),
            thresholds=accuracy_steps,
        ),
        timeseries(
            "Estimate gap on the mature window (estimated - realized)",
            "percentunit",
            prom(f"ml_estimate_gap{{{SEL}}}", "{{metric}}"),
            threshold_line("estimate_gap", "alert threshold"),
            prom("ml:threshold:estimate_gap * -1", "alert threshold (below)"),
            description=(
                "How far the estimate was off on the most recent mature window, per metric: "
                "above 0 it was too optimistic (concept drift), below too pessimistic "
                "(calibration). MLEstimateGapLarge when accuracy's is beyond the threshold "
                "either way for 30 minutes."
            ),
            thresholds=alert_steps("estimate_gap", low_is_bad=False, color=ORANGE),
        ),
        panel(
            "bargauge",
            "Label coverage by window age",
            "percentunit",
            [
                prom(
                    f"ml_label_coverage_by_age_ratio{{{SEL}}}",
                    "{{age_days}} days ago",
                    instant=True,
                )
            ],
            description=(
                "Share of the predictions made that many whole days before the latest window's "
                "end that have their label by now: it rises with age as labels arrive, and the "
                f"day it passes LABEL_MATURE_COVERAGE ({mature:.0%}) is the lag the mature "
                "window lives with (MLLabelCoverageLow when it never does)."
            ),
            thresholds=steps(RED, (0.3, ORANGE), (mature, GREEN)),
            max_value=1,
            width=8,
            height=10,
        ),
        timeseries(
            "Label lag (prediction to label)",
            "s",
            prom(f"histogram_quantile(0.5, {lag})", "p50 {{model_name}}"),
            prom(f"histogram_quantile(0.9, {lag})", "p90 {{model_name}}"),
            description=(
                "Quantiles of the time from a prediction to its label, over the labelled "
                "predictions of the last LABEL_MATURITY_DAYS (recomputed at each scrape, so read "
                "from the buckets as they are, not through rate())."
            ),
            width=8,
            height=10,
        ),
        timeseries(
            "Mature window age and the newest label",
            "s",
            prom(age, "mature window {{model_name}}"),
            prom(since_label, "since the newest label"),
            threshold_line("mature_window_max_age_seconds", "mature window alert threshold"),
            threshold_line("label_feed_silence_seconds", "label feed alert threshold"),
            description=(
                "Age of the most recent mature window (MLLabelCoverageLow past its threshold) and "
                "the time since the newest label arrived (MLLabelFeedStopped past its own)."
            ),
            thresholds=steps(
                GREEN,
                (THRESHOLDS["ml:threshold:label_feed_silence_seconds"], ORANGE),
                (THRESHOLDS["ml:threshold:mature_window_max_age_seconds"], RED),
            ),
            width=8,
            height=10,
        ),
    ]


def drift_and_quality() -> list[dict[str, Any]]:
    psi = steps(GREEN, (default("PSI_WARNING"), ORANGE), (default("PSI_CRITICAL"), RED))
    wasserstein = steps(
        GREEN, (default("WASSERSTEIN_WARNING"), ORANGE), (default("WASSERSTEIN_CRITICAL"), RED)
    )
    severity = mapping((0, "none", GREEN), (1, "warning", ORANGE), (2, "critical", RED))
    level = mapping((0, "ok", GREEN), (1, "soft", ORANGE), (2, "hard", RED))
    return [
        row("Drift and data quality"),
        stat(
            "Drifted features",
            "short",
            prom(f'ml_drift_features{{severity=~"warning|critical", {SEL}}}', "{{severity}}"),
            description="Features at each severity in the latest drift report (MLFeatureDrift).",
            thresholds=steps(GREEN, (1, RED)),
            decimals=0,
        ),
        stat(
            "Drifted share",
            "percentunit",
            prom(f"ml_drift_drifted_share{{{SEL}}}", "{{model_name}}"),
            description="Share of features drifted; dataset drift from DRIFT_SHARE_THRESHOLD.",
            thresholds=steps(GREEN, (default("DRIFT_SHARE_THRESHOLD"), RED)),
        ),
        stat(
            "Prediction drift",
            "none",
            prom(f"ml_prediction_drift_detected{{{SEL}}}", "{{model_name}}"),
            description="Whether the predicted class or the score drifted (MLPredictionDrift).",
            mappings=mapping((0, "no drift", GREEN), (1, "drifted", ORANGE)),
            thresholds=steps(GREEN, (1, ORANGE)),
        ),
        stat(
            "Quality failures",
            "short",
            prom(f"ml_quality_hard_failures{{{SEL}}}", "hard"),
            prom(f"ml_quality_soft_warnings{{{SEL}}}", "soft"),
            description="Quality checks failed hard (MLDataQualityHardFailure) or soft.",
            thresholds=steps(GREEN, (1, RED)),
            decimals=0,
        ),
        timeseries(
            "PSI per feature",
            "none",
            prom(f"ml_drift_psi{{{SEL}, {FEATURE}}}", "{{feature}}"),
            description="Population stability index against the champion's reference profile.",
            thresholds=psi,
            line_thresholds=True,
        ),
        timeseries(
            "Wasserstein distance per feature",
            "none",
            prom(f"ml_drift_wasserstein{{{SEL}, {FEATURE}}}", "{{feature}}"),
            description="Numerical features, in reference standard deviations.",
            thresholds=wasserstein,
            line_thresholds=True,
        ),
        stat(
            "Drift severity per feature",
            "none",
            prom(f"ml_drift_severity{{{SEL}, {FEATURE}}}", "{{feature}}"),
            description="Latest drift report: none, warning (drifted), critical.",
            mappings=severity,
            thresholds=steps(GREEN, (1, ORANGE), (2, RED)),
            width=12,
        ),
        timeseries(
            "Prediction drift PSI",
            "none",
            prom(f"ml_prediction_drift_psi{{{SEL}}}", "{{output}}"),
            description="PSI of the predicted class and of the score.",
            thresholds=psi,
            line_thresholds=True,
        ),
        timeseries(
            "Multivariate drift (domain classifier AUC)",
            "none",
            prom(f"ml_drift_multivariate_auc{{{SEL}}}", "AUC"),
            prom(f"ml_drift_multivariate_auc_threshold{{{SEL}}}", "drifted from"),
            description=(
                "Held-out AUC of a classifier telling the window's rows from the reference's: "
                "0.5 when the joint distribution is unchanged; drifted over the window's "
                "threshold (MULTIVARIATE_P_THRESHOLD), critical from MULTIVARIATE_AUC_CRITICAL "
                "(MLMultivariateDrift). It sees a flipped correlation or a new cluster that no "
                "feature's own test does."
            ),
            thresholds=steps(GREEN, (default("MULTIVARIATE_AUC_CRITICAL"), RED)),
            line_thresholds=True,
        ),
        panel(
            "bargauge",
            "Multivariate drift drivers",
            "none",
            [
                prom(
                    f"sort_desc(ml_drift_multivariate_driver_importance{{{SEL}}})",
                    "{{feature}}",
                    instant=True,
                )
            ],
            description=(
                "While the joint distribution drifted: the held-out AUC lost when each named "
                "feature is shuffled, the features the drift lives in (0 for the others, and "
                "for all while it has not drifted). The report names the feature pairs whose "
                "correlation moved."
            ),
            thresholds=steps(BLUE),
            width=12,
        ),
        timeseries(
            "Missing share per feature",
            "percentunit",
            prom(f"ml_quality_missing_ratio{{{SEL}, {FEATURE}}}", "{{feature}}"),
            threshold_line("feature_missing_ratio", "alert threshold"),
            description="Quality window rows without the feature (MLFeatureMissingRateHigh).",
            thresholds=alert_steps("feature_missing_ratio", low_is_bad=False, color=ORANGE),
        ),
        timeseries(
            "Outside the training range per feature",
            "percentunit",
            prom(f"ml_quality_outside_training_range_ratio{{{SEL}, {FEATURE}}}", "{{feature}}"),
            description="Values beyond the training range, where the schema sets no bound.",
            thresholds=steps(
                GREEN, (QUALITY.training_range_soft, ORANGE), (QUALITY.training_range_hard, RED)
            ),
            line_thresholds=True,
        ),
        stat(
            "Quality checks",
            "none",
            prom(f"ml_quality_check_status{{{SEL}}}", "{{check}}"),
            description="Each check of the latest quality report: ok, soft or hard.",
            mappings=level,
            thresholds=steps(GREEN, (1, ORANGE), (2, RED)),
            width=12,
        ),
        timeseries(
            "Report ages",
            "s",
            prom(f"ml_drift_report_age_seconds{{{SEL}}}", "drift"),
            prom(f"ml_quality_report_age_seconds{{{SEL}}}", "quality"),
            prom(f"ml_performance_report_age_seconds{{{SEL}}}", "performance"),
            threshold_line("drift_report_max_age_seconds", "drift alert threshold"),
            threshold_line("quality_report_max_age_seconds", "quality alert threshold"),
            description=(
                "Seconds since the end of the latest report's window "
                "(MLDriftReportStale, MLQualityReportStale)."
            ),
            thresholds=alert_steps("drift_report_max_age_seconds", low_is_bad=False),
        ),
        timeseries(
            "Live feature medians (API)",
            "short",
            prom(
                "histogram_quantile(0.5, sum by (environment, feature, le) "
                f"(rate(ml_feature_value_bucket{{{ENV}, {FEATURE}}}[$__rate_interval])))",
                "{{feature}}",
            ),
            description="Medians of the numerical inputs as received, between drift reports.",
        ),
        timeseries(
            "Mean positive-class score (API)",
            "percentunit",
            prom(
                f"{_rate('ml_prediction_score_sum', 'environment')} / "
                f"{_rate('ml_prediction_score_count', 'environment')}",
                "{{environment}}",
            ),
            description="The live score the drift report's prediction drift summarises.",
        ),
        table(
            "Drift reports",
            """
            SELECT window_end AS time, model_name, model_version, rows_current, drifted_share,
                   dataset_drift, prediction_drift, report->>'summary' AS summary
            FROM drift_reports
            WHERE $__timeFilter(window_end)
            ORDER BY window_end DESC
            LIMIT 50
            """,
            description="One row per drift-check window (drift_reports).",
        ),
        table(
            "Quality reports",
            """
            SELECT window_end AS time, model_name, model_version, rows, hard_failures,
                   soft_warnings, passed, report->>'summary' AS summary
            FROM quality_reports
            WHERE $__timeFilter(window_end)
            ORDER BY window_end DESC
            LIMIT 50
            """,
            description="One row per quality-check window (quality_reports).",
        ),
    ]


def retraining_and_registry() -> list[dict[str, Any]]:
    return [
        row("Retraining and registry"),
        stat(
            "Champion version",
            "none",
            prom(f"ml_champion_version{{{SEL}}}", "{{model_name}}"),
            description="The registry's @champion (absent when there is none).",
            thresholds=steps(BLUE),
            decimals=0,
        ),
        stat(
            "Version each API worker serves",
            "none",
            prom(
                "max by (environment, instance, model_version, scorer) "
                f"(ml_model_info{{{SEL}}}) == 1",
                "{{instance}}: v{{model_version}} ({{scorer}})",
            ),
            description="Should match the champion within MODEL_POLL_SECONDS of a promotion.",
            thresholds=steps(BLUE),
            options=_default_options("stat") | {"textMode": "name"},
        ),
        stat(
            "Newest training run",
            "none",
            prom(f"ml_training_last_run_status{{{SEL}}} == 1", "{{status}}"),
            description="Outcome of the newest closed run (MLRetrainFailed, MLRetrainRejected).",
            thresholds=steps(BLUE),
            options=_default_options("stat") | {"textMode": "name"},
        ),
        stat(
            "Training runs running",
            "short",
            prom(f"ml_training_runs_running{{{SEL}}}", "{{model_name}}"),
            description="A run older than RETRAIN_TIMEOUT_HOURS no longer blocks the policy.",
            thresholds=steps(GREEN, (2, ORANGE)),
            decimals=0,
        ),
        timeseries(
            "Champion age",
            "s",
            prom(f"ml_champion_age_seconds{{{SEL}}}", "{{model_name}}"),
            threshold_line("champion_max_age_seconds", "alert threshold"),
            description="Seconds since the champion version was registered (MLChampionStale).",
            thresholds=alert_steps("champion_max_age_seconds", low_is_bad=False, color=ORANGE),
            width=8,
        ),
        timeseries(
            "Since the newest training run finished",
            "s",
            prom(f"time() - ml_training_last_run_timestamp_seconds{{{SEL}}}", "{{model_name}}"),
            description="Seconds since the newest closed training run finished.",
            width=8,
        ),
        panel(
            "bargauge",
            "Training runs by outcome",
            "short",
            [prom(f"ml_training_runs_total{{{SEL}}}", "{{status}}", instant=True)],
            description="Closed training runs: promoted, challenger, rejected, failed.",
            thresholds=steps(BLUE),
            width=8,
        ),
        timeseries(
            "Model (re)loads in the API",
            "short",
            prom(
                "sum by (environment, result) "
                f"(increase(ml_model_reloads_total{{{ENV}}}[$__rate_interval]))",
                "{{result}}",
            ),
            description="Hot reloads of @champion by result: changed, unchanged, failed.",
            width=16,
            height=6,
        ),
        timeseries(
            "Champion versions refused",
            "short",
            prom(f"max by (environment) (ml_model_champion_refused{{{ENV}}})", "@champion refused"),
            prom(
                "sum by (environment, kind) "
                f"(increase(ml_model_refused_total{{{ENV}}}[$__rate_interval]))",
                "refused: {{kind}}",
            ),
            description=(
                "1 while @champion names a version the API will not load (pickle, a type "
                "outside the trusted list, a bad decision threshold) and the one before serves "
                "(MLChampionRefused); refusals by kind."
            ),
            width=8,
            height=6,
        ),
        table(
            "Retrain decisions",
            """
            SELECT window_end AS time, model_name, model_version, retrain, reason,
                   triggers::text AS triggers, blocked_by, training_run_id
            FROM retrain_decisions
            WHERE $__timeFilter(window_end)
            ORDER BY window_end DESC
            LIMIT 50
            """,
            description="The policy's answer for every drift-check window, and what held it back.",
        ),
        table(
            "Training runs",
            """
            SELECT requested_at AS time, finished_at, model_name, trigger, status, version,
                   reason, external_id
            FROM training_runs
            WHERE $__timeFilter(requested_at)
            ORDER BY requested_at DESC
            LIMIT 50
            """,
            description="Every training run: trigger, reason, status, the version it registered.",
        ),
        table(
            "Promotions, rejections and rollbacks",
            """
            SELECT created_at AS time, model_name, version, action, previous_champion, actor,
                   reason
            FROM promotion_audit
            WHERE $__timeFilter(created_at)
            ORDER BY created_at DESC
            LIMIT 50
            """,
            description="The registry's audit trail (promotion_audit).",
        ),
        table(
            "Notifications",
            """
            SELECT created_at AS time, alertname, severity, status, destination, outcome,
                   attempts, error
            FROM alert_log
            WHERE $__timeFilter(created_at)
            ORDER BY created_at DESC
            LIMIT 50
            """,
            description="Every notification of the retrain loop and the DAGs, per destination.",
        ),
    ]


def dependencies() -> list[dict[str, Any]]:
    """The end of the service-health row: Postgres, Airflow and the disk the prediction log
    spools to (alert group ml-dependencies)."""
    free_ratio = (
        f"ml_prediction_log_filesystem_free_bytes{{{ENV}}} "
        f"/ ml_prediction_log_filesystem_size_bytes{{{ENV}}}"
    )
    free = f"ml_prediction_log_filesystem_free_bytes{{{ENV}}}"
    filling, low = (
        THRESHOLDS[f"ml:threshold:spool_disk_free_ratio_{level}"] for level in ("filling", "low")
    )
    return [
        stat(
            "Postgres",
            "none",
            prom('pg_up{job="postgres"}', "{{instance}}"),
            description=(
                "Whether postgres-exporter reaches Postgres (MLPostgresDown at 0 for 2 minutes: "
                "the log spools, feedback, monitoring, the registry and Airflow stop). Compose "
                "only: no data under `make stack`."
            ),
            mappings=mapping((0, "down", RED), (1, "up", GREEN)),
            thresholds=steps(RED, (1, GREEN)),
            width=6,
        ),
        stat(
            "Airflow components",
            "none",
            prom(f"ml_airflow_component_healthy{{{SEL}}}", "{{component}}"),
            description=(
                "Airflow's health endpoint, asked by the exporter (MLAirflowUnhealthy: one at 0, "
                "or no answer, for 10 minutes; the scheduled checks and retrains stop)."
            ),
            mappings=mapping((0, "unhealthy", RED), (1, "healthy", GREEN)),
            thresholds=steps(RED, (1, GREEN)),
            width=8,
        ),
        timeseries(
            "Postgres connections in use",
            "percentunit",
            prom(
                "sum by (environment, instance, job) (pg_stat_database_numbackends) "
                "/ max by (environment, instance, job) (pg_settings_max_connections)",
                "{{instance}}",
            ),
            threshold_line("postgres_connections_ratio", "alert threshold"),
            description=(
                "Backends of every database over max_connections (MLPostgresConnectionsHigh "
                "over the threshold for 10 minutes; past 100% connections are refused)."
            ),
            thresholds=alert_steps("postgres_connections_ratio", low_is_bad=False),
            width=8,
        ),
        timeseries(
            "Spool disk free",
            "percentunit",
            prom(free_ratio, "{{instance}}"),
            threshold_line("spool_disk_free_ratio_filling", "pages below, when filling"),
            threshold_line("spool_disk_free_ratio_low", "warning below"),
            description=(
                "Free share of the filesystem under PREDICTION_SPOOL_DIR, which the API fills "
                "while the database is down (MLSpoolDiskFilling)."
            ),
            thresholds=steps(RED, (low, ORANGE), (filling, GREEN)),
            width=8,
        ),
        timeseries(
            "Spool disk full in (at the last hour's rate)",
            "s",
            prom(f"{free} / -deriv({free}[1h]) > 0", "{{instance}}"),
            threshold_line("spool_disk_full_horizon_seconds", "pages below (under 20% free)"),
            description=(
                "When the free space would reach 0 at the last hour's rate; no data while it is "
                "not falling (MLSpoolDiskFilling pages inside the horizon)."
            ),
            thresholds=alert_steps("spool_disk_full_horizon_seconds", low_is_bad=True),
            width=12,
        ),
        timeseries(
            "Prediction log files on disk",
            "bytes",
            prom(f"max by (environment, kind) (ml_prediction_log_disk_bytes{{{ENV}}})", "{{kind}}"),
            description=(
                "Spool (rows waiting for the database), journal (answered, not yet written) and "
                "quarantine (unreadable lines kept) in PREDICTION_SPOOL_DIR."
            ),
            width=12,
        ),
    ]
