# Series selectors are PromQL with every label a scrape gives them: long lines, read as data.
# ruff: noqa: E501
"""On call, scenario by scenario: what fires, at which severity, by when, and nothing else.

Each scenario is a healthy stack (the series the API, the exporter, Prometheus and Alertmanager
export, with the labels a scrape gives them) with one thing gone wrong. The test turns the table
into a promtool unit-test file over the real rules (prometheus/alerts.yml) and asks, at each
checkpoint, for the exact set of firing alerts (`ALERTS{alertstate="firing"}` by name and
severity): an alert that should fire and does not, fires at another severity, or an extra alert
that fires, all fail. MLWatchdog fires in every scenario (the dead-man's switch's heartbeat).

Alertmanager's part (routing by severity, a bigger outage muting what it explains) is
tests/test_alertmanager.py's; here an alert "pages" when it fires `critical`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from tests.test_alert_rules import RULE_TESTS, RULES, alert_keys, load, promtool

MINUTES = 240  # every scenario lasts four hours at one-minute steps
N = MINUTES
API = 'environment="production", instance="api-1:8000", job="api"'
EXP = 'environment="production", model_name="fraud-detector", instance="exporter:9100", job="exporter"'
PREDICT = f'{API}, handler="/predict", method="POST"'
PG = 'instance="postgres-exporter:9187", job="postgres"'
AIRFLOW_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
HEARTBEAT = {"MLWatchdog": "info"}


DAY = 86400
# A pass every six hours: the most recent mature window ages, then the next window matures.
PASS_MINUTES = 360


def mature_age(start: int, minutes: int = N) -> str:
    """ml_mature_window_age_seconds from `start` seconds, growing a minute a minute, back to
    `start` at every pass (the next window matures)."""
    parts, left = [], minutes + 1
    while left > 0:
        run = min(PASS_MINUTES, left)
        parts.append(f"{start}+60x{run - 1}")
        left -= run
    return " ".join(parts)


LAG_BUCKETS = {  # ml_label_lag_seconds_bucket: half the labels in three days, 99% in a week
    "3600.0": 10, "21600.0": 30, "86400.0": 100, "172800.0": 300, "259200.0": 500,
    "604800.0": 990, "1209600.0": 1000, "2592000.0": 1000, "+Inf": 1000,
}  # fmt: skip


def late_labels() -> dict[str, str]:
    """Labels three days late, the model healthy: the latest window has no label yet (so no
    realized figure of its own), the predictions of three days ago are 85% labelled, the most
    recent mature window (three days and some hours old) is at 0.95 as its estimate said (0.96),
    and the newest label arrived two minutes ago."""
    coverage = {0: 0, 1: 0.1, 2: 0.4, 3: 0.85, 4: 0.95, 7: 0.99, 14: 1, 30: 1}
    return {
        f"ml_label_coverage_ratio{{{EXP}}}": f"0x{N}",
        **{
            f'ml_label_coverage_by_age_ratio{{{EXP}, age_days="{age}"}}': f"{share}x{N}"
            for age, share in coverage.items()
        },
        **{
            f'ml_label_lag_seconds_bucket{{{EXP}, le="{le}"}}': f"{count}x{N}"
            for le, count in LAG_BUCKETS.items()
        },
        f"ml_label_lag_seconds_sum{{{EXP}}}": f"{300 * DAY}x{N}",
        f"ml_label_lag_seconds_count{{{EXP}}}": f"1000x{N}",
        f'ml_mature_realized_performance{{{EXP}, metric="accuracy"}}': f"0.95x{N}",
        f'ml_mature_estimated_performance{{{EXP}, metric="accuracy"}}': f"0.96x{N}",
        f'ml_estimate_gap{{{EXP}, metric="accuracy"}}': f"0.01x{N}",
        f"ml_mature_window_label_coverage_ratio{{{EXP}}}": f"0.85x{N}",
        f"ml_mature_window_age_seconds{{{EXP}}}": mature_age(3 * DAY + 7200),
        f"ml_labels_last_received_timestamp_seconds{{{EXP}}}": f"-120+60x{N}",
    }


def mature_fall(realized: float, estimated: float) -> dict[str, str]:
    """At minute 10 a pass finds, three days late, the mature window's accuracy at `realized`;
    the estimate made for that window when it closed was `estimated`."""
    return {
        f'ml_mature_realized_performance{{{EXP}, metric="accuracy"}}': f"0.95x9 {realized}x{N - 10}",
        f'ml_mature_estimated_performance{{{EXP}, metric="accuracy"}}': f"0.96x9 {estimated}x{N - 10}",
        f'ml_estimate_gap{{{EXP}, metric="accuracy"}}': f"0.01x9 {estimated - realized:.2f}x{N - 10}",
    }


def healthy() -> dict[str, str]:
    """A healthy stack: 100 requests a minute, 0.05% 5xx and 0.2% slower than 0.1 s (half and a
    fifth of what the /predict SLOs allow), reports fresh, estimated accuracy 0.95, labels three
    days late with the mature window's accuracy at 0.95 (`late_labels`)."""
    return {
        'up{instance="api-1:8000", job="api"}': f"1x{N}",
        'up{instance="exporter:9100", job="exporter"}': f"1x{N}",
        f'http_requests_total{{{PREDICT}, status="200"}}': f"0+99.95x{N}",
        f'http_requests_total{{{PREDICT}, status="503"}}': f"0+0.05x{N}",
        f'http_request_duration_seconds_bucket{{{PREDICT}, le="0.01"}}': f"0+95x{N}",
        f'http_request_duration_seconds_bucket{{{PREDICT}, le="0.1"}}': f"0+99.8x{N}",
        f'http_request_duration_seconds_bucket{{{PREDICT}, le="2.0"}}': f"0+100x{N}",
        f'http_request_duration_seconds_bucket{{{PREDICT}, le="2.5"}}': f"0+100x{N}",
        f'http_request_duration_seconds_bucket{{{PREDICT}, le="+Inf"}}': f"0+100x{N}",
        f"ml_prediction_confidence_sum{{{API}}}": f"0+90x{N}",
        f"ml_prediction_confidence_count{{{API}}}": f"0+100x{N}",
        f"ml_model_loaded{{{API}}}": f"1x{N}",
        f"ml_model_champion_refused{{{API}}}": f"0x{N}",
        f'ml_model_info{{{API}, model_name="fraud-detector", model_version="3", scorer="compiled"}}': f"1x{N}",
        f'ml_predictions_total{{{API}, model_version="3", prediction="1"}}': f"0+2x{N}",
        f'ml_predictions_total{{{API}, model_version="3", prediction="0"}}': f"0+98x{N}",
        f"ml_prediction_log_spooled_total{{{API}}}": f"0x{N}",
        f"ml_prediction_log_dropped_total{{{API}}}": f"0x{N}",
        f"ml_prediction_log_dead_lettered_total{{{API}}}": f"0x{N}",
        **{
            f'ml_prediction_log_writer_errors_total{{{API}, kind="{kind}"}}': f"0x{N}"
            for kind in ("disk", "rejected", "internal")
        },
        f'ml_drift_features{{{EXP}, severity="critical"}}': f"0x{N}",
        f'ml_drift_features{{{EXP}, severity="warning"}}': f"0x{N}",
        f"ml_prediction_drift_detected{{{EXP}}}": f"0x{N}",
        f"ml_drift_report_age_seconds{{{EXP}}}": f"3600x{N}",
        f"ml_quality_hard_failures{{{EXP}}}": f"0x{N}",
        f'ml_quality_missing_ratio{{{EXP}, feature="amount"}}': f"0.01x{N}",
        f"ml_quality_report_age_seconds{{{EXP}}}": f"3600x{N}",
        f'ml_estimated_performance{{{EXP}, metric="accuracy"}}': f"0.95x{N}",
        **late_labels(),
        f"ml_training_last_run_timestamp_seconds{{{EXP}}}": f"0x{N}",
        f'ml_training_last_run_status{{{EXP}, status="promoted"}}': f"1x{N}",
        f'ml_training_last_run_status{{{EXP}, status="failed"}}': f"0x{N}",
        f'ml_training_last_run_status{{{EXP}, status="rejected"}}': f"0x{N}",
        f"ml_champion_age_seconds{{{EXP}}}": f"604800+60x{N}",
        f'ml_champion_info{{{EXP}, model_version="3"}}': f"1x{N}",
        f'ml_exporter_source_up{{{EXP}, source="database"}}': f"1x{N}",
        f'ml_exporter_source_up{{{EXP}, source="registry"}}': f"1x{N}",
        'prometheus_rule_evaluation_failures_total{instance="localhost:9090", job="prometheus", rule_group="ml-api"}': f"0x{N}",
        'prometheus_notifications_dropped_total{instance="localhost:9090", job="prometheus"}': f"0x{N}",
        'alertmanager_notifications_failed_total{instance="alertmanager:9093", job="alertmanager", integration="slack"}': f"0x{N}",
        # What the stack stands on: Postgres (postgres-exporter), Airflow (the exporter's
        # probe), the spool's disk (60 GB free of 100).
        f"up{{{PG}}}": f"1x{N}",
        f"pg_up{{{PG}}}": f"1x{N}",
        f'pg_stat_database_numbackends{{{PG}, datid="16385", datname="monitoring"}}': f"12x{N}",
        f'pg_settings_max_connections{{{PG}, server="postgres:5432"}}': f"100x{N}",
        f'ml_exporter_source_up{{{EXP}, source="airflow"}}': f"1x{N}",
        **{
            f'ml_airflow_component_healthy{{{EXP}, component="{c}"}}': f"1x{N}"
            for c in AIRFLOW_COMPONENTS
        },
        f"ml_prediction_log_filesystem_free_bytes{{{API}}}": f"60e9x{N}",
        f"ml_prediction_log_filesystem_size_bytes{{{API}}}": f"100e9x{N}",
    } | healthy_host()


NODE = 'instance="node-exporter:9100", job="node"'
CADVISOR = 'instance="cadvisor:8080", job="cadvisor"'
API_CONTAINER = (
    f'{CADVISOR}, id="/system.slice/docker-a1.scope", image="mlmon-api:latest", name="mlmon-api-1"'
)
DB_CONTAINER = (
    f'{CADVISOR}, id="/system.slice/docker-b2.scope", image="postgres:16", name="mlmon-postgres-1"'
)
ROOT = f'{NODE}, device="/dev/sda1", fstype="ext4", mountpoint="/"'


def healthy_host() -> dict[str, str]:
    """The host under it (node-exporter, cAdvisor): two cores 30% busy, 60% of the memory
    available, / at 40% free and losing 1 MB a minute, a full tmpfs (memory, not disk), three
    OOM kills from before, the API's container and Postgres' (at half of its 2 GB limit)
    started once, and cAdvisor's own nameless root cgroup."""
    cpu = {"user": 15, "system": 3, "iowait": 0.6, "idle": 41.4}  # seconds a minute
    return {
        'up{instance="node-exporter:9100", job="node"}': f"1x{N}",
        'up{instance="cadvisor:8080", job="cadvisor"}': f"1x{N}",
        **{
            f'node_cpu_seconds_total{{{NODE}, cpu="{core}", mode="{mode}"}}': f"0+{step}x{N}"
            for core in (0, 1)
            for mode, step in cpu.items()
        },
        f"node_load1{{{NODE}}}": f"0.7x{N}",
        f"node_memory_MemTotal_bytes{{{NODE}}}": f"16000000000x{N}",
        f"node_memory_MemAvailable_bytes{{{NODE}}}": f"9600000000x{N}",
        f"node_filesystem_avail_bytes{{{ROOT}}}": f"40000000000-1000000x{N}",
        f"node_filesystem_size_bytes{{{ROOT}}}": f"100000000000x{N}",
        f'node_filesystem_avail_bytes{{{NODE}, device="tmpfs", fstype="tmpfs", mountpoint="/run/user/1000"}}': f"0x{N}",
        f'node_filesystem_size_bytes{{{NODE}, device="tmpfs", fstype="tmpfs", mountpoint="/run/user/1000"}}': f"100000000x{N}",
        f"node_vmstat_oom_kill{{{NODE}}}": f"3x{N}",
        f"container_start_time_seconds{{{API_CONTAINER}}}": f"1700000000x{N}",
        f"container_oom_events_total{{{API_CONTAINER}}}": f"0x{N}",
        f"container_memory_working_set_bytes{{{API_CONTAINER}}}": f"300000000x{N}",
        f"container_spec_memory_limit_bytes{{{API_CONTAINER}}}": f"0x{N}",
        f"container_start_time_seconds{{{DB_CONTAINER}}}": f"1700000000x{N}",
        f"container_oom_events_total{{{DB_CONTAINER}}}": f"0x{N}",
        f"container_memory_working_set_bytes{{{DB_CONTAINER}}}": f"1000000000x{N}",
        f"container_spec_memory_limit_bytes{{{DB_CONTAINER}}}": f"2000000000x{N}",
        f'container_start_time_seconds{{{CADVISOR}, id="/"}}': f"1700000000x{N}",
        f'container_memory_working_set_bytes{{{CADVISOR}, id="/"}}': f"6400000000x{N}",
    }


@dataclass
class Scenario:
    name: str
    changed: dict[str, str]  # series -> values, replacing or adding to healthy()
    # minute -> {alert: severity}: exactly what fires then. "critical,warning": both levels of
    # one alert fire (Alertmanager inhibits the warning while the critical fires).
    expect: dict[int, dict[str, str]]
    removed: tuple[str, ...] = ()  # series the failure takes away (a dead service's own)
    series: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        base = {k: v for k, v in healthy().items() if k not in self.removed}
        self.series = base | self.changed


def fires(**alerts: str) -> dict[str, str]:
    return HEARTBEAT | alerts


API_OWN = tuple(k for k in healthy() if 'instance="api-1:8000"' in k and not k.startswith("up"))
EXPORTER_OWN = tuple(k for k in healthy() if 'instance="exporter:9100"' in k and "up{" not in k)
POSTGRES_EXPORTER_OWN = tuple(k for k in healthy() if k.startswith("pg_"))


def postgres_down(at: int) -> dict[str, str]:
    """Postgres stops at minute `at` (compose: one server for everything). postgres-exporter
    says pg_up 0 and reads nothing else; the API spools its log; the exporter reads neither the
    monitoring database nor MLflow's registry (its store); Airflow's health endpoint reports
    every component unhealthy (its metadata database is gone)."""
    down = f"1x{at - 1} 0x{N - at}"
    return {
        f"pg_up{{{PG}}}": down,
        f'pg_stat_database_numbackends{{{PG}, datid="16385", datname="monitoring"}}': f"12x{at - 1} stale",
        f'pg_settings_max_connections{{{PG}, server="postgres:5432"}}': f"100x{at - 1} stale",
        f"ml_prediction_log_spooled_total{{{API}}}": f"0x{at - 1} 0+100x{N - at}",
        f'ml_exporter_source_up{{{EXP}, source="database"}}': down,
        f'ml_exporter_source_up{{{EXP}, source="registry"}}': down,
        **{
            f'ml_airflow_component_healthy{{{EXP}, component="{c}"}}': down
            for c in AIRFLOW_COMPONENTS
        },
    }


# Everything a Postgres outage fires, once each alert's `for:` has passed (Alertmanager then
# mutes all but MLPostgresDown: tests/test_alertmanager.py).
POSTGRES_OUTAGE = {
    "MLPostgresDown": "critical",
    "MLPredictionLogSpooling": "warning",
    "MLExporterSourceDown": "warning",
    "MLRegistryUnreachable": "warning",
    "MLAirflowUnhealthy": "warning",
}

SCENARIOS = [
    Scenario("a healthy day", {}, {60: fires(), 239: fires()}),
    Scenario(
        "the API is down (every replica)",
        {'up{instance="api-1:8000", job="api"}': f"1x9 0x{N - 10}"},
        {
            11: fires(),
            12: fires(MLApiUnavailable="critical"),
            20: fires(MLApiUnavailable="critical", MLTargetDown="warning"),
        },
        removed=API_OWN,
    ),
    # The SLO burn alerts guard on the traffic of their long window, and a scenario's counters
    # start at 0m: the hour holds 0.2 requests a second at 8m (a page 2 minutes later), the day
    # at 173m (a ticket 15 minutes later). With that history behind it, a real one is quicker.
    Scenario(
        "the API answers 10% 5xx at full traffic",
        {
            f'http_requests_total{{{PREDICT}, status="503"}}': f"0+11x{N}",
            f'http_requests_total{{{PREDICT}, status="200"}}': f"0+89x{N}",
        },
        {
            5: fires(),
            6: fires(MLApiErrorRateHigh="warning"),
            9: fires(MLApiErrorRateHigh="warning"),
            10: fires(MLApiErrorRateHigh="warning", MLPredictAvailabilityBudgetBurn="critical"),
            239: fires(
                MLApiErrorRateHigh="warning", MLPredictAvailabilityBudgetBurn="critical,warning"
            ),
        },
    ),
    Scenario(
        "the API answers 2% 5xx: under the error alert, over the budget",
        {
            f'http_requests_total{{{PREDICT}, status="503"}}': f"0+2x{N}",
            f'http_requests_total{{{PREDICT}, status="200"}}': f"0+98x{N}",
        },
        {
            9: fires(),
            10: fires(MLPredictAvailabilityBudgetBurn="critical"),
            239: fires(MLPredictAvailabilityBudgetBurn="critical,warning"),
        },
    ),
    Scenario(
        "a few 5xx at two requests a minute, at night",
        {
            f'http_requests_total{{{PREDICT}, status="200"}}': f"0+1.6x{N}",
            f'http_requests_total{{{PREDICT}, status="503"}}': f"0+0.4x{N}",
            f'ml_predictions_total{{{API}, model_version="3", prediction="0"}}': f"0+2x{N}",
            f'ml_predictions_total{{{API}, model_version="3", prediction="1"}}': f"0x{N}",
        },
        {30: fires(), 120: fires()},
    ),
    Scenario(
        "no traffic at night (a warning, never a page)",
        {
            f'ml_predictions_total{{{API}, model_version="3", prediction="1"}}': f"0+2x60 120x{N - 61}",
            f'ml_predictions_total{{{API}, model_version="3", prediction="0"}}': f"0+98x60 5880x{N - 61}",
            f'http_requests_total{{{PREDICT}, status="200"}}': f"0+99.95x60 5997x{N - 61}",
            f'http_requests_total{{{PREDICT}, status="503"}}': f"0+0.05x60 3x{N - 61}",
        },
        {60: fires(), 90: fires(MLNoPredictions="warning")},
    ),
    Scenario(
        "a client whose payloads broke: 30% answered 422",
        {f'http_requests_total{{{PREDICT}, status="422"}}': f"0+30x{N}"},
        {15: fires(), 16: fires(MLApiClientErrorsHigh="warning")},
    ),
    Scenario(
        "a slow model: 3% of /predict between 2 and 2.5 s",
        {
            f'http_request_duration_seconds_bucket{{{PREDICT}, le="0.1"}}': f"0+96.8x{N}",
            f'http_request_duration_seconds_bucket{{{PREDICT}, le="2.0"}}': f"0+97x{N}",
        },
        {
            5: fires(),
            6: fires(MLApiLatencyHigh="warning"),
            187: fires(MLApiLatencyHigh="warning"),
            188: fires(MLApiLatencyHigh="warning", MLPredictLatencyBudgetBurn="warning"),
        },
    ),
    Scenario(
        "a slow dependency: 5% of /predict over 100 ms, a ticket and never a page",
        {f'http_request_duration_seconds_bucket{{{PREDICT}, le="0.1"}}': f"0+95x{N}"},
        {
            120: fires(),
            187: fires(),
            188: fires(MLPredictLatencyBudgetBurn="warning"),
            239: fires(MLPredictLatencyBudgetBurn="warning"),
        },
    ),
    Scenario(
        "slow batch calls beside a fast /predict",
        {
            f'http_request_duration_seconds_bucket{{{API}, handler="/predict/batch", method="POST", le="2.0"}}': f"0x{N}",
            f'http_request_duration_seconds_bucket{{{API}, handler="/predict/batch", method="POST", le="+Inf"}}': f"0+20x{N}",
        },
        {30: fires()},
    ),
    Scenario(
        "a replica still serves the old version after a promotion",
        {
            f'ml_champion_info{{{EXP}, model_version="3"}}': "1x29 stale",
            f'ml_champion_info{{{EXP}, model_version="4"}}': f"_x30 1x{N - 30}",
        },
        {44: fires(), 45: fires(MLReplicaServesOldVersion="warning")},
    ),
    Scenario(
        "@champion moves to a version the API refuses: a ticket saying why; the replica keeps "
        "serving the old version (MLReplicaServesOldVersion too, muted by Alertmanager)",
        {
            f"ml_model_champion_refused{{{API}}}": f"0x9 1x{N - 10}",
            f'ml_champion_info{{{EXP}, model_version="3"}}': "1x9 stale",
            f'ml_champion_info{{{EXP}, model_version="4"}}': f"_x10 1x{N - 10}",
        },
        {
            14: fires(),
            15: fires(MLChampionRefused="warning"),
            25: fires(MLChampionRefused="warning", MLReplicaServesOldVersion="warning"),
        },
    ),
    Scenario(
        "a replica has no model",
        {f"ml_model_loaded{{{API}}}": f"1x9 0x{N - 10}"},
        {11: fires(), 12: fires(MLNoProductionModel="critical")},
    ),
    Scenario(
        "the exporter is down",
        {'up{instance="exporter:9100", job="exporter"}': f"1x9 0x{N - 10}"},
        {14: fires(), 15: fires(MLExporterDown="critical", MLTargetDown="warning")},
        removed=EXPORTER_OWN,
    ),
    Scenario(
        "the exporter dies during critical drift: no RESOLVED, and it pages",
        {
            f'ml_drift_features{{{EXP}, severity="critical"}}': "2x29 stale",
            'up{instance="exporter:9100", job="exporter"}': f"1x29 0x{N - 30}",
        },
        {
            10: fires(MLFeatureDrift="critical"),
            60: fires(
                MLFeatureDrift="critical,warning", MLExporterDown="critical", MLTargetDown="warning"
            ),
        },
        removed=EXPORTER_OWN,
    ),
    Scenario(
        "Postgres is down: it pages; the log spools, the registry and Airflow stop with it",
        postgres_down(at=10),
        {
            11: fires(),
            12: fires(MLPostgresDown="critical"),
            19: fires(
                MLPostgresDown="critical",
                MLPredictionLogSpooling="warning",
                MLExporterSourceDown="warning",
            ),
            20: fires(**POSTGRES_OUTAGE),
        },
    ),
    Scenario(
        "Postgres down and the spool's disk full: rows are lost",
        postgres_down(at=10)
        | {
            f"ml_prediction_log_spooled_total{{{API}}}": f"0x9 0+50x{N - 10}",
            f"ml_prediction_log_dropped_total{{{API}}}": f"0x9 0+50x{N - 10}",
            f'ml_prediction_log_writer_errors_total{{{API}, kind="disk"}}': f"0x9 0+1x{N - 10}",
            f"ml_prediction_log_filesystem_free_bytes{{{API}}}": f"60e9x9 0x{N - 10}",
        },
        {
            10: fires(),
            19: fires(
                MLPostgresDown="critical",
                MLPredictionLogSpooling="warning",
                MLExporterSourceDown="warning",
                MLPredictionLogDropping="critical",
                MLPredictionLogWriterErrors="warning",
            ),
            30: fires(
                **POSTGRES_OUTAGE,
                MLPredictionLogDropping="critical,warning",
                MLPredictionLogWriterErrors="warning",
                MLSpoolDiskFilling="critical,warning",
            ),
        },
    ),
    Scenario(
        "the spool's disk filling during a Postgres outage: it pages hours before rows are lost",
        postgres_down(at=10)
        | {  # 30 GB free of 100; from minute 11 the spool takes 0.2 GB a minute (12 GB an hour)
            f"ml_prediction_log_filesystem_free_bytes{{{API}}}": f"30e9x10 29.8e9-0.2e9x148 0x{N - 159}",
        },
        {
            55: fires(**POSTGRES_OUTAGE),  # 21% free: the outage, not yet the disk
            65: fires(**POSTGRES_OUTAGE),  # under 20% since 61, full within 4 h: pending
            # 17% free, full in about 1 h 25 at the last hour's rate:
            75: fires(**POSTGRES_OUTAGE, MLSpoolDiskFilling="critical"),
            120: fires(**POSTGRES_OUTAGE, MLSpoolDiskFilling="critical"),
            130: fires(**POSTGRES_OUTAGE, MLSpoolDiskFilling="critical,warning"),  # under 10%
        },
    ),
    Scenario(
        "MLflow is down: the API keeps serving its model, retrains and promotions would fail",
        {f'ml_exporter_source_up{{{EXP}, source="registry"}}': f"1x9 0x{N - 10}"},
        {19: fires(), 20: fires(MLRegistryUnreachable="warning")},
    ),
    Scenario(
        "postgres-exporter dies, Postgres is fine: a target down, nobody paged",
        {f"up{{{PG}}}": f"1x9 0x{N - 10}"},
        {14: fires(), 15: fires(MLTargetDown="warning"), 120: fires(MLTargetDown="warning")},
        removed=POSTGRES_EXPORTER_OWN,
    ),
    Scenario(
        "Airflow's scheduler stops, its api-server still answers",
        {f'ml_airflow_component_healthy{{{EXP}, component="scheduler"}}': f"1x9 0x{N - 10}"},
        {19: fires(), 20: fires(MLAirflowUnhealthy="warning")},
    ),
    Scenario(
        "the database refuses one log row: a ticket for the dead-letter file, for an hour",
        {
            f"ml_prediction_log_dead_lettered_total{{{API}}}": f"0x9 1x{N - 10}",
            f'ml_prediction_log_writer_errors_total{{{API}, kind="rejected"}}': f"0x9 1x{N - 10}",
        },
        {10: fires(), 11: fires(MLPredictionLogDeadLettered="warning"), 71: fires()},
    ),
    Scenario(
        "the writer hits a bug on every batch: a ticket",
        {f'ml_prediction_log_writer_errors_total{{{API}, kind="internal"}}': f"0x9 0+10x{N - 10}"},
        {15: fires(), 16: fires(MLPredictionLogWriterErrors="warning")},
    ),
    Scenario(
        "one log row lost: a ticket, not a page",
        {f"ml_prediction_log_dropped_total{{{API}}}": f"0x9 1x{N - 10}"},
        {15: fires(), 21: fires(MLPredictionLogDropping="warning"), 40: fires()},
    ),
    Scenario(
        "the Alertmanager's Slack receiver fails",
        {
            'alertmanager_notifications_failed_total{instance="alertmanager:9093", job="alertmanager", integration="slack"}': f"0+1x{N}"
        },
        {5: fires(), 6: fires(MLAlertNotificationsFailing="critical")},
    ),
    Scenario(
        "a rule group fails to evaluate",
        {
            'prometheus_rule_evaluation_failures_total{instance="localhost:9090", job="prometheus", rule_group="ml-api"}': f"0+1x{N}"
        },
        {5: fires(), 6: fires(MLRuleEvaluationFailing="critical")},
    ),
    Scenario(
        "Airflow is down: no drift or quality report for 12 hours",
        {
            f"ml_drift_report_age_seconds{{{EXP}}}": f"42600+60x{N}",
            f"ml_quality_report_age_seconds{{{EXP}}}": f"42600+60x{N}",
            f'ml_exporter_source_up{{{EXP}, source="airflow"}}': f"0x{N}",
        },
        {
            9: fires(),
            10: fires(MLAirflowUnhealthy="warning"),
            21: fires(
                MLAirflowUnhealthy="warning",
                MLDriftReportStale="warning",
                MLQualityReportStale="warning",
            ),
        },
        # Its api-server does not answer: the exporter knows nothing of its components.
        removed=tuple(k for k in healthy() if k.startswith("ml_airflow_component_healthy")),
    ),
    Scenario(
        "a deploy: the replica restarts, its counters start again",
        {
            'up{instance="api-1:8000", job="api"}': f"1x99 0 1x{N - 101}",
            f'http_requests_total{{{PREDICT}, status="200"}}': f"0+99.95x99 0+99.95x{N - 100}",
            f'http_requests_total{{{PREDICT}, status="503"}}': f"0+0.05x99 0+0.05x{N - 100}",
            f'ml_predictions_total{{{API}, model_version="3", prediction="0"}}': f"0+98x99 0+98x{N - 100}",
            f'ml_predictions_total{{{API}, model_version="3", prediction="1"}}': f"0+2x99 0+2x{N - 100}",
        },
        {101: fires(), 110: fires(), 200: fires()},
    ),
    Scenario(
        "a covariate shift: features drift at warning level",
        {f'ml_drift_features{{{EXP}, severity="warning"}}': f"0x9 3x{N - 10}"},
        {24: fires(), 25: fires(MLFeatureDrift="warning")},
    ),
    # Labels as fast as the window: the latest window is the mature one, both accuracy alerts
    # fire (Alertmanager holds back the mature one's while the latest one's fires), and the
    # estimate, which did not see the concept drift, was 15 points off.
    Scenario(
        "concept drift with fast labels: the latest window, mature at once, at 0.80",
        mature_fall(0.80, 0.95)
        | {
            f'ml_realized_performance{{{EXP}, metric="accuracy"}}': f"0.95x9 0.80x{N - 10}",
            f"ml_label_coverage_ratio{{{EXP}}}": f"0.9x{N}",
            f"ml_mature_window_label_coverage_ratio{{{EXP}}}": f"0.9x{N}",
            f"ml_mature_window_age_seconds{{{EXP}}}": mature_age(3600),
        },
        {
            14: fires(),
            15: fires(MLRealizedAccuracyLow="critical", MLMatureAccuracyLow="critical"),
            30: fires(
                MLRealizedAccuracyLow="critical,warning", MLMatureAccuracyLow="critical,warning"
            ),
            40: fires(
                MLRealizedAccuracyLow="critical,warning",
                MLMatureAccuracyLow="critical,warning",
                MLEstimateGapLarge="warning",
            ),
        },
    ),
    Scenario(
        "labels arrive three days late, model healthy: nothing but the heartbeat",
        # healthy() is this stack; here the pass at minute 120 moves the mature window on.
        {
            f"ml_mature_window_age_seconds{{{EXP}}}": f"{3 * DAY + 4 * 3600}+60x119 {3 * DAY}+60x{N - 120}"
        },
        {10: fires(), 119: fires(), 120: fires(), 239: fires()},
    ),
    # The estimate saw part of it (0.91 for that window, 4 points off: within the tolerance) and
    # still says 0.91 of the latest window, over its floor: the labels alone tell.
    Scenario(
        "accuracy slipped to 0.87, found three days late: a ticket and nothing else",
        mature_fall(0.87, 0.91)
        | {f'ml_estimated_performance{{{EXP}, metric="accuracy"}}': f"0.95x9 0.91x{N - 10}"},
        {
            24: fires(),
            25: fires(MLMatureAccuracyLow="warning"),
            239: fires(MLMatureAccuracyLow="warning"),
        },
    ),
    # The estimate saw it (0.86 for that window) and still does (its warning from 15m, as from
    # its pass three days ago); the labels confirm it three days late, and page.
    Scenario(
        "accuracy fell to 0.82, found three days late: it pages",
        mature_fall(0.82, 0.86)
        | {f'ml_estimated_performance{{{EXP}, metric="accuracy"}}': f"0.86x{N}"},
        {
            14: fires(),
            15: fires(MLEstimatedAccuracyLow="warning", MLMatureAccuracyLow="critical"),
            25: fires(MLEstimatedAccuracyLow="warning", MLMatureAccuracyLow="critical,warning"),
        },
    ),
    # Concept drift under a three-day lag: the estimate said 0.95 for the window, still says
    # 0.95 now, and the labels say 0.86. Two pieces of news: accuracy is low (retrain), and the
    # estimate cannot be trusted for the windows not yet mature.
    Scenario(
        "the estimate was confidently wrong: concept drift found three days late",
        mature_fall(0.86, 0.95),
        {
            24: fires(),
            25: fires(MLMatureAccuracyLow="warning"),
            39: fires(MLMatureAccuracyLow="warning"),
            40: fires(MLMatureAccuracyLow="warning", MLEstimateGapLarge="warning"),
        },
    ),
    # The calibration broke the other way: the estimate says 0.88 (its warning fires), the
    # labels say 0.96. The gap says the estimate's alert is the one to doubt.
    Scenario(
        "the estimate cries wolf: it says 0.88, the labels 0.96",
        mature_fall(0.96, 0.88)
        | {f'ml_estimated_performance{{{EXP}, metric="accuracy"}}': f"0.95x9 0.88x{N - 10}"},
        {
            24: fires(),
            25: fires(MLEstimatedAccuracyLow="warning"),
            40: fires(MLEstimatedAccuracyLow="warning", MLEstimateGapLarge="warning"),
        },
    ),
    Scenario(
        "the label feed stopped: the newest label is 23 hours old at 0m",
        {f"ml_labels_last_received_timestamp_seconds{{{EXP}}}": f"{-23 * 3600}x{N}"},
        {
            90: fires(),
            91: fires(MLLabelFeedStopped="warning"),
            239: fires(MLLabelFeedStopped="warning"),
        },
    ),
    Scenario(
        "labels arrive but stop maturing: the mature window turns a week old",
        {f"ml_mature_window_age_seconds{{{EXP}}}": f"{7 * DAY - 600}+60x{N}"},
        {40: fires(), 41: fires(MLLabelCoverageLow="warning")},
    ),
    Scenario(
        "no label ever matures and the model is right half the time",
        {
            f'ml_realized_performance{{{EXP}, metric="accuracy"}}': f"0.5x{N}",
            f'ml_label_coverage_by_age_ratio{{{EXP}, age_days="7"}}': f"0.5x{N}",
        },
        {29: fires(), 30: fires(MLLabelCoverageLow="warning")},
        removed=tuple(k for k in late_labels() if k.startswith(("ml_mature_", "ml_estimate_gap"))),
    ),
    Scenario(
        "a retrain's candidate is rejected: told once, then resolved",
        {
            f"ml_training_last_run_timestamp_seconds{{{EXP}}}": f"600x{N}",
            f'ml_training_last_run_status{{{EXP}, status="promoted"}}': f"1x9 0x{N - 10}",
            f'ml_training_last_run_status{{{EXP}, status="rejected"}}': f"0x9 1x{N - 10}",
        },
        {10: fires(), 11: fires(MLRetrainRejected="warning"), 190: fires()},
    ),
    Scenario(
        "live data breaks a hard quality check",
        {f"ml_quality_hard_failures{{{EXP}}}": f"0x9 1x{N - 10}"},
        {14: fires(), 15: fires(MLDataQualityHardFailure="critical")},
    ),
]


# --- the host and its containers (node-exporter, cAdvisor) ----------------------------------

NODE_OWN = tuple(k for k in healthy_host() if 'job="node"' in k and not k.startswith("up"))
HOST_ALERTS = {
    "MLHostCpuSaturated", "MLHostMemoryLow", "MLHostDiskFillingUp", "MLHostDiskSpaceLow",
    "MLOomKill", "MLContainerRestarting", "MLContainerMemoryNearLimit",
}  # fmt: skip


def busy_from(minute: int, cpu: dict[str, float]) -> dict[str, str]:
    """Both cores' counters: healthy_host()'s seconds a minute until `minute`, `cpu`'s after."""
    before = {"user": 15, "system": 3, "iowait": 0.6, "idle": 41.4}
    return {
        f'node_cpu_seconds_total{{{NODE}, cpu="{core}", mode="{mode}"}}': (
            f"0+{before[mode]}x{minute - 1} "
            f"{before[mode] * (minute - 1) + step:g}+{step}x{N - minute}"
        )
        for core in (0, 1)
        for mode, step in cpu.items()
    }


SCENARIOS += [
    Scenario(
        "a batch job saturates the host's CPU: a ticket, not a page",
        busy_from(30, {"user": 55, "system": 3.2, "iowait": 0.6, "idle": 1.2}),
        {
            45: fires(),
            55: fires(MLHostCpuSaturated="warning"),
            200: fires(MLHostCpuSaturated="warning"),
        },
    ),
    Scenario(
        "the host runs out of memory: Slack at 8% available, a page at 3%",
        {
            f"node_memory_MemAvailable_bytes{{{NODE}}}": f"9600000000x29 1280000000x59 480000000x{N - 90}"
        },
        {
            39: fires(),
            40: fires(MLHostMemoryLow="warning"),
            94: fires(MLHostMemoryLow="warning"),
            95: fires(MLHostMemoryLow="critical,warning"),
        },
    ),
    Scenario(
        "the host's disk filling: a runaway log fills / in 200 minutes",
        {f"node_filesystem_avail_bytes{{{ROOT}}}": f"30000000000-150000000x200 0x{N - 201}"},
        {
            30: fires(),
            31: fires(MLHostDiskFillingUp="critical"),
            148: fires(MLHostDiskFillingUp="critical"),
            149: fires(MLHostDiskFillingUp="critical", MLHostDiskSpaceLow="warning"),
        },
    ),
    Scenario(
        "a container OOM-killed and restarting",
        {
            # Docker restarts the API's container at 60m, 62m and 64m: its start time stays its
            # creation time, each run is a new series (container_label_restartcount), and each
            # kill is counted on the run it ended (and by the host's kernel).
            f"container_start_time_seconds{{{API_CONTAINER}}}": "1700000000x59 stale",
            f'container_start_time_seconds{{{API_CONTAINER}, container_label_restartcount="1"}}': "_x60 1700000000x1 stale",
            f'container_start_time_seconds{{{API_CONTAINER}, container_label_restartcount="2"}}': "_x62 1700000000x1 stale",
            f'container_start_time_seconds{{{API_CONTAINER}, container_label_restartcount="3"}}': f"_x64 1700000000x{N - 65}",
            f"container_oom_events_total{{{API_CONTAINER}}}": "0x58 1 stale",
            f'container_oom_events_total{{{API_CONTAINER}, container_label_restartcount="1"}}': "_x60 0 1 stale",
            f'container_oom_events_total{{{API_CONTAINER}, container_label_restartcount="2"}}': "_x62 0 1 stale",
            f'container_oom_events_total{{{API_CONTAINER}, container_label_restartcount="3"}}': f"_x64 0x{N - 65}",
            f"node_vmstat_oom_kill{{{NODE}}}": f"3x58 4x1 5x1 6x{N - 64}",
        },
        {
            58: fires(),
            59: fires(MLOomKill="warning"),
            63: fires(MLOomKill="warning"),
            64: fires(MLOomKill="warning", MLContainerRestarting="warning"),
            90: fires(),
        },
    ),
    Scenario(
        "Postgres' container near its memory limit",
        {
            f"container_memory_working_set_bytes{{{DB_CONTAINER}}}": f"1000000000x29 1900000000x{N - 30}"
        },
        {44: fires(), 45: fires(MLContainerMemoryNearLimit="warning")},
    ),
    Scenario(
        "node-exporter is down: its target-down warning, nothing else",
        {'up{instance="node-exporter:9100", job="node"}': f"1x9 0x{N - 10}"},
        {14: fires(), 15: fires(MLTargetDown="warning"), 200: fires(MLTargetDown="warning")},
        removed=NODE_OWN,
    ),
    Scenario(
        # compose's api-spool volume is on the host's disk: the API and node-exporter measure
        # the same filesystem. 40 GB free of 100 for 90 minutes; from Postgres' outage the spool
        # takes 0.3 GB a minute. Every rule fires; Alertmanager then holds back the host's two
        # disk alerts while the spool's fires (tests/test_alertmanager.py).
        "a Postgres outage spools onto the host's own disk: the spool pages first, then the host",
        postgres_down(at=90)
        | {
            series: "40e9x90 39.7e9-0.3e9x132 0x16"
            for series in (
                f"ml_prediction_log_filesystem_free_bytes{{{API}}}",
                f"node_filesystem_avail_bytes{{{ROOT}}}",
            )
        },
        {
            166: fires(**POSTGRES_OUTAGE),  # 20.5% free
            # Under 20% and, at the last hour's rate, full within 4 h for 10 minutes:
            167: fires(**POSTGRES_OUTAGE, MLSpoolDiskFilling="critical"),
            184: fires(**POSTGRES_OUTAGE, MLSpoolDiskFilling="critical"),
            # The host's 6-hour trend, diluted by the quiet 90 minutes, says so 18 minutes later:
            185: fires(
                **POSTGRES_OUTAGE, MLSpoolDiskFilling="critical", MLHostDiskFillingUp="critical"
            ),
            205: fires(
                **POSTGRES_OUTAGE, MLSpoolDiskFilling="critical", MLHostDiskFillingUp="critical"
            ),
            # Under 10% free for 15 minutes, both say it again as warnings:
            206: fires(
                **POSTGRES_OUTAGE,
                MLSpoolDiskFilling="critical,warning",
                MLHostDiskFillingUp="critical",
                MLHostDiskSpaceLow="warning",
            ),
        },
    ),
]


def test_the_table_has_the_host_on_a_healthy_day_and_each_host_alert():
    """Every scenario runs on a healthy host too (node-exporter and cAdvisor series), so none of
    the host alerts may fire where a scenario does not name it; each host alert has its
    scenario, and of the host only memory running out and a filesystem filling up page."""
    series = healthy()
    assert {'up{instance="node-exporter:9100", job="node"}',
            'up{instance="cadvisor:8080", job="cadvisor"}'} <= set(series)  # fmt: skip
    assert any(k.startswith("node_cpu") for k in series)
    assert any(k.startswith("container_start_time") for k in series)
    assert HOST_ALERTS - {name for name, _ in alert_keys()} == set()
    expected = [firing for s in SCENARIOS for firing in s.expect.values()]
    assert HOST_ALERTS - {name for firing in expected for name in firing} == set()
    pages = {n for firing in expected for n, sev in firing.items() if "critical" in sev}
    assert pages & HOST_ALERTS == {"MLHostDiskFillingUp", "MLHostMemoryLow"}


def promtool_tests(scenario: Scenario) -> dict:
    checks = []
    for minute, firing in sorted(scenario.expect.items()):
        checks.append(
            {
                "expr": 'count by (alertname, severity) (ALERTS{alertstate="firing"})',
                "eval_time": f"{minute}m",
                "exp_samples": [
                    {"labels": f'{{alertname="{name}", severity="{severity}"}}', "value": 1}
                    for name, severities in sorted(firing.items())
                    for severity in sorted(severities.split(","))
                ],
            }
        )
    return {
        "name": scenario.name,
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in scenario.series.items()],
        "promql_expr_test": checks,
    }


def test_the_table_has_the_scenarios_on_call_asked_for():
    assert len(SCENARIOS) >= 20
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    named = {name for s in SCENARIOS for firing in s.expect.values() for name in firing}
    assert named <= {name for name, _ in alert_keys()}, "a scenario names an alert no rule has"
    pages = {
        n for s in SCENARIOS for f in s.expect.values() for n, sev in f.items() if "critical" in sev
    }
    assert {
        "MLApiUnavailable", "MLExporterDown", "MLPredictionLogDropping",
        "MLPredictAvailabilityBudgetBurn",
    } <= pages  # fmt: skip
    # Nothing goes blind silently: what the stack stands on pages or tells Slack.
    assert {"MLPostgresDown", "MLSpoolDiskFilling"} <= pages
    tickets = {
        n for s in SCENARIOS for f in s.expect.values() for n, sev in f.items() if sev == "warning"
    }
    assert "MLPredictLatencyBudgetBurn" in tickets
    # Labels days late: a fall they find pages, the rest goes to Slack.
    assert "MLMatureAccuracyLow" in pages
    assert {"MLEstimateGapLarge", "MLLabelFeedStopped", "MLLabelCoverageLow"} <= tickets
    assert {"MLRegistryUnreachable", "MLAirflowUnhealthy"} <= tickets


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_exactly_the_expected_alerts_fire(scenario, tmp_path):
    tests = tmp_path / "scenario_test.yml"
    tests.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "1m",
                "group_eval_order": load(RULE_TESTS)["group_eval_order"],
                "tests": [promtool_tests(scenario)],
            },
            sort_keys=False,
        )
    )
    done = promtool("test", "rules", str(tests))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
