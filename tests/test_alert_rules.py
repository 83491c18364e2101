"""The Prometheus rules and configs: promtool accepts them and their unit tests pass, every alert
is shaped as the house style says and is tested firing and silent, and no rule names a metric
that no service of the stack exports (checked statically against the API's metric objects and
the exporter's families; a published stack of this shape had 5 of 12 rules on metrics nobody
exported)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from data.settings import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "tests" / "alerts_test.yml"  # every alert, at one-minute steps
DAY_TESTS = PROMETHEUS / "tests" / "alerts_day_test.yml"  # the healthy day, at five
CONFIGS = (PROMETHEUS / "prometheus.yml", PROMETHEUS / "prometheus.loopback.yml")
# Series Prometheus itself makes for every target or rule.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}
# What the meta-monitoring alerts read from Prometheus' and Alertmanager's own /metrics (both
# are scraped: jobs prometheus and alertmanager).
WATCHERS_OWN = {
    "prometheus_rule_evaluation_failures_total", "prometheus_notifications_dropped_total",
    "alertmanager_notifications_failed_total",
}  # fmt: skip
# What the Postgres alerts read from postgres-exporter (compose's `postgres-exporter` service,
# scraped as job `postgres`; its default collectors): whether it reached Postgres, the backends
# per database (pg_stat_database, readable without pg_monitor), and max_connections.
POSTGRES_EXPORTER_OWN = {"pg_up", "pg_stat_database_numbackends", "pg_settings_max_connections"}
# Fires always, by design: the dead-man's switch's heartbeat.
ALWAYS_FIRING = {"MLWatchdog"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "offset", "bool", "inf", "nan"}  # fmt: skip
COMPOSE_ONLY_JOBS = {"node", "cadvisor", "postgres"}
# What the host rules (group ml-host) and dashboard (ml-host) read from the compose-only jobs,
# named as node-exporter 1.8 and cAdvisor 0.49 serve them (default collectors and flags; the
# vmstat fields include oom_kill, pswp* and pgmajfault), and the Postgres alerts (group
# ml-dependencies) and overview panels from postgres-exporter. None runs outside compose, so
# these are listed here rather than read from a metric object; tests/test_dashboards.py checks that
# each is read somewhere, and tests/test_monitoring_live.py leaves their queries out.
COMPOSE_ONLY_OWN = {
    "node": {
        "node_cpu_seconds_total", "node_load1", "node_pressure_cpu_waiting_seconds_total",
        "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
        "node_vmstat_pswpin", "node_vmstat_pswpout", "node_vmstat_pgmajfault",
        "node_vmstat_oom_kill",
        "node_filesystem_avail_bytes", "node_filesystem_size_bytes",
        "node_filesystem_device_error", "node_filesystem_readonly",
        "node_disk_io_time_seconds_total", "node_disk_io_time_weighted_seconds_total",
        "node_network_receive_bytes_total", "node_network_transmit_bytes_total",
        "node_network_receive_errs_total", "node_network_transmit_errs_total",
        "node_network_receive_drop_total", "node_network_transmit_drop_total",
        "node_uname_info",
    },
    "cadvisor": {
        "container_cpu_usage_seconds_total", "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_periods_total", "container_memory_working_set_bytes",
        "container_spec_memory_limit_bytes", "container_oom_events_total",
        "container_start_time_seconds", "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    },
    "postgres": POSTGRES_EXPORTER_OWN,
}  # fmt: skip
assert set(COMPOSE_ONLY_OWN) == COMPOSE_ONLY_JOBS


def compose_only_names() -> set[str]:
    """The node-exporter, cAdvisor and postgres-exporter series the rules and the dashboards may
    read."""
    return set().union(*COMPOSE_ONLY_OWN.values())


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: `make system-tools` installs it (Debian prometheus)"
    return subprocess.run(
        [binary, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900
    )


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def alert_keys() -> set[tuple[str, str]]:
    """(name, severity) of every alert: one condition at two levels is one name, two rules."""
    return {(rule["alert"], rule["labels"]["severity"]) for rule in alerts()}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not functions, keywords or label names)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        name, call = match.groups()
        if not call and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def test_the_metric_name_parser_sees_only_series():
    expr = """
        histogram_quantile(0.99, sum by (environment, le) (rate(a_bucket{handler=~"/p.*"}[5m])))
        > on() group_left() ml:threshold:x
        and on (environment) (sum without (job) (increase(b_total[10m] offset 1d)) > bool 0)
        unless absent(up{job="api"} == 1) or vector(2.5e3) or time() - c_seconds
    """
    assert metric_names(expr) == {"a_bucket", "ml:threshold:x", "b_total", "up", "c_seconds"}


def exported_names() -> set[str]:
    """Every sample name the API and the exporter can serve, from their own metric objects."""
    from prometheus_client.metrics import MetricWrapperBase

    import api.instrumentation
    from monitoring.prometheus_exporter import MonitoringCollector

    families = [
        family
        for metric in vars(api.instrumentation).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
    ]
    families += MonitoringCollector(read_registry=False).describe()  # reads nothing
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names = {family.name + suffix for family in families for suffix in suffixes[family.type]}
    assert {"ml_predictions_total", "http_request_duration_seconds_bucket"} <= names
    assert {"ml_drift_features", "ml_training_runs_total", "ml_champion_age_seconds"} <= names
    return names


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_promtool_accepts_the_config_and_finds_its_rules(config):
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


@pytest.mark.parametrize("tests", [RULE_TESTS, DAY_TESTS], ids=lambda path: path.stem)
def test_promtool_rule_tests_pass(tests):
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_follows_the_house_style():
    found = alerts()
    assert len(found) >= 26 and len(alert_keys()) == len(found)
    severities: dict[str, set[str]] = {}
    for rule in found:
        name = rule["alert"]
        severities.setdefault(name, set()).add(rule["labels"]["severity"])
        assert re.fullmatch(r"ML(?:[A-Z][a-z0-9]*)+", name), f"{name}: CamelCase with prefix ML"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in notes["summary"], f"{name}: the summary is a fixed sentence"
        assert "$value" in notes["description"], f"{name}: the description shows the value"
        assert notes["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
        assert "for" in rule, f"{name}: a deliberate for:"
    # A repeated name is a warning and a critical level of one condition, which Alertmanager's
    # inhibition (alerting/alertmanager.yml, equal on alertname) pairs.
    assert all(len(s) == 1 or s == {"warning", "critical"} for s in severities.values())


def test_alerts_keep_the_series_labels_alertmanager_groups_by():
    """Aggregations keep `environment` (and the exporter's `model_name`)."""
    for rule in alerts():
        name = rule["alert"]
        for clause in re.findall(r"\b(?:sum|min|max|avg|count) by \(([^)]*)\)", rule["expr"]):
            assert "environment" in clause, f"{name}: `by ({clause})` drops environment"


def test_every_alert_is_tested_silent_one_step_before_it_fires_and_on_a_healthy_stack():
    tests, day = load(RULE_TESTS), load(DAY_TESTS)
    assert tests["rule_files"] == day["rule_files"] == ["../alerts.yml"]
    assert tests["group_eval_order"] == day["group_eval_order"]
    # The day's file is evaluated every five minutes: it may only assert a healthy end state.
    assert tests["evaluation_interval"] == "1m" and day["evaluation_interval"] == "5m"
    assert [group["name"] for group in day["tests"]] == ["healthy", "healthy host"]
    assert {c["eval_time"] for g in day["tests"] for c in g["alert_rule_test"]} == {"1500m"}
    boundary, healthy = set(), set()
    for group in tests["tests"] + day["tests"]:
        step = group.get("interval", "1m")
        assert step == "1m", "the boundary arithmetic below assumes one-minute steps"
        cases = {}
        for case in group.get("alert_rule_test", []):
            minutes = int(case["eval_time"].removesuffix("m"))
            cases.setdefault(case["alertname"], {})[minutes] = case.get("exp_alerts") or []
        for name, by_time in cases.items() if group in tests["tests"] else ():  # 1-minute steps
            for minutes, expected in by_time.items():
                if expected and (by_time.get(minutes - 1) == [] or name in ALWAYS_FIRING):
                    for alert in expected:
                        assert set(alert["exp_annotations"]) == {"summary", "description",
                                                                 "runbook_url"}  # fmt: skip
                        boundary.add((name, alert["exp_labels"]["severity"]))
        # "healthy", and a healthy part of the stack on its own ("healthy host").
        if group["name"] == "healthy" or group["name"].startswith("healthy "):
            healthy |= {name for name, by_time in cases.items() if by_time == {1500: []}}
            assert {n for n, by_time in cases.items() if by_time[1500]} == ALWAYS_FIRING
    tested = {
        case["alertname"]
        for group in tests["tests"] + day["tests"]
        for case in group.get("alert_rule_test", [])
    }
    # promtool takes a name no rule has as an alert that never fires: a renamed alert's test
    # would pass silently.
    assert tested - {name for name, _ in alert_keys()} == set(), "tests of alerts that do not exist"
    assert alert_keys() - boundary == set(), "alerts not tested firing one step after silent"
    assert {name for name, _ in alert_keys()} - healthy - ALWAYS_FIRING == set(), (
        "not silent when healthy"
    )


def test_no_alert_is_expected_to_fire_before_its_for():
    """Each alert's own test group ("<name>", or "<name> <severity>" for a name with two)
    expects it no earlier than its `for:`."""
    tests = {group["name"]: group for group in load(RULE_TESTS)["tests"]}
    for rule in alerts():
        name, severity = rule["alert"], rule["labels"]["severity"]
        group = tests.get(f"{name} {severity}") or tests[name]
        amount, unit = int(rule["for"][:-1]), rule["for"][-1]
        for_minutes = amount * {"m": 1, "h": 60}[unit]
        fire = max(int(c["eval_time"][:-1]) for c in group["alert_rule_test"] if c["exp_alerts"])
        assert fire >= for_minutes, f"{name} fires at {fire}m, before its for: {rule['for']}"


def test_every_rule_names_only_metrics_a_service_exports():
    known = exported_names() | PROMETHEUS_OWN | WATCHERS_OWN | compose_only_names()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    unknown = {
        rule.get("alert") or rule["record"]: sorted(metric_names(rule["expr"]) - known - recorded)
        for rule in rules()
    }
    assert {name: names for name, names in unknown.items() if names} == {}


def test_thresholds_are_constants_in_one_block_and_all_used():
    groups = load(RULES)["groups"]
    (block,) = [group for group in groups if group["name"] == "ml-thresholds"]
    thresholds = {rule["record"]: rule["expr"] for rule in block["rules"]}
    assert all(name.startswith("ml:threshold:") for name in thresholds)
    assert all(re.fullmatch(r"vector\([\d.e+]+\)", expr) for expr in thresholds.values())
    others = [rule for group in groups if group is not block for rule in group["rules"]]
    used = set().union(*(metric_names(rule["expr"]) for rule in others))
    assert set(thresholds) <= used, "a threshold no rule reads"
    assert {name for name in used if name.startswith("ml:threshold:")} <= set(thresholds)
    assert not any(rule.get("record", "").startswith("ml:threshold:") for rule in others)


def threshold(name: str) -> float:
    (expr,) = [r["expr"] for r in rules() if r.get("record") == f"ml:threshold:{name}"]
    return float(expr.removeprefix("vector(").removesuffix(")"))


def test_the_latency_threshold_is_a_bucket_boundary_below_the_top():
    """With buckets at 1.0 and 2.5 s and a 2 s threshold, a true p99 of 1.05 s was estimated at
    2.1 s (paged) and one of 2.4 s at 1.75 s (silent). With a boundary at the threshold, the
    estimate is above it exactly when more than 1% of requests are slower."""
    from api.instrumentation import HTTP_BUCKETS

    assert threshold("latency_p99_seconds") in HTTP_BUCKETS
    assert threshold("latency_p99_seconds") < max(HTTP_BUCKETS)


def test_the_latency_slo_threshold_is_a_bucket_boundary_below_the_top():
    """The latency SLO's "good" is an answer within the `le` bucket its rules read: one bound on
    every window, a boundary of HTTP_BUCKETS (an `le` the API does not write selects nothing,
    and the SLO would measure nothing) spelt as prometheus_client writes it ("0.1")."""
    from prometheus_client.utils import floatToGoString

    from api.instrumentation import HTTP_BUCKETS

    bounds = {
        bound
        for rule in rules()
        if rule.get("record", "").startswith("ml:slo_latency:error_ratio")
        for bound in re.findall(r'le="([^"]+)"', rule["expr"])
    }
    assert "+Inf" in bounds
    (bound,) = bounds - {"+Inf"}
    assert float(bound) in HTTP_BUCKETS and float(bound) < max(HTTP_BUCKETS)
    assert bound == floatToGoString(float(bound)) == "0.1"


SLO_WINDOWS = {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
# The workbook's multiwindow, multi-burn-rate table: (long window, short window, burn rate).
BURN_TABLE = {
    "critical": {("1h", "5m", 14.4), ("6h", "30m", 6.0)},
    "warning": {("1d", "2h", 3.0), ("3d", "6h", 1.0)},
}
BURN_ALERTS = {
    "MLPredictAvailabilityBudgetBurn": "availability",
    "MLPredictLatencyBudgetBurn": "latency",
}


def test_the_slos_read_single_row_predict_on_every_window():
    """Both SLOs are about single-row /predict: every series the ml-slo group reads from the API
    is selected by `handler="/predict"` (not a regex that takes /predict/batch in), and each
    SLO's error ratio and the request rate are recorded on the seven windows the alerts use."""
    (group,) = [g for g in load(RULES)["groups"] if g["name"] == "ml-slo"]
    records = {rule["record"]: rule["expr"] for rule in group["rules"] if "record" in rule}
    for name, expr in records.items():
        for selector in re.findall(r"\bhttp_\w+\{([^}]*)\}", expr):
            assert 'handler="/predict"' in selector, f"{name}: {selector}"
    for family in ("slo_availability:error_ratio", "slo_latency:error_ratio", "slo_requests:"):
        windows = {n.rsplit("rate", 1)[1] for n in records if n.startswith(f"ml:{family}")}
        assert windows == SLO_WINDOWS, family
    assert threshold("slo_availability_target") == 0.999
    assert threshold("slo_latency_target") == 0.99


def test_the_burn_alerts_follow_the_multiwindow_multi_burn_rate_table():
    """Each SLO has one alert name at two severities; each severity is two branches of the table,
    a long and a short window (1/12 of it) over the same burn rate, and the minimum traffic over
    the long window."""
    branch = re.compile(
        r"ml:slo_(\w+):error_ratio_rate(\w+) / on\(\) group_left\(\) ml:slo_\1:error_budget_ratio"
        r" > ([\d.]+)\s+and on \(environment\)\s+"
        r"ml:slo_\1:error_ratio_rate(\w+) / on\(\) group_left\(\) ml:slo_\1:error_budget_ratio"
        r" > ([\d.]+)\s+and on \(environment\)\s+"
        r"ml:slo_requests:rate(\w+) >= on\(\) group_left\(\) "
        r"ml:threshold:api_min_requests_per_second"
    )
    minutes = {"5m": 5, "30m": 30, "1h": 60, "2h": 120, "6h": 360, "1d": 1440, "3d": 4320}
    found = {}
    for rule in alerts():
        slo = BURN_ALERTS.get(rule["alert"])
        if slo is None:
            continue
        severity = rule["labels"]["severity"]
        parts = rule["expr"].split("or on (environment)")
        matches = [branch.search(part) for part in parts]
        assert len(parts) == 2 and all(matches), f"{rule['alert']} {severity}: {rule['expr']}"
        table = set()
        for match in matches:
            name, long, rate, short, short_rate, guard = match.groups()
            assert name == slo and rate == short_rate and guard == long
            assert minutes[long] == 12 * minutes[short]
            table.add((long, short, float(rate)))
        found[(rule["alert"], severity)] = table
    assert found == {
        (name, severity): table for name in BURN_ALERTS for severity, table in BURN_TABLE.items()
    }


def test_the_latency_alert_reads_single_row_predict_only():
    (p99,) = [
        r["expr"] for r in rules() if r.get("record") == "ml:http_request_duration:p99_rate5m"
    ]
    assert 'handler="/predict"' in p99 and "/predict.*" not in p99


def test_thresholds_shared_with_the_retrain_policy_are_its_defaults():
    """The alerts and the retrain policy judge the same figures: the same floors."""
    from data.settings import Settings

    defaults = Settings.model_fields
    assert threshold("realized_accuracy_warning") == defaults["RETRAIN_ACCURACY_FLOOR"].default
    assert (
        threshold("estimated_accuracy_warning")
        == defaults["RETRAIN_ESTIMATED_ACCURACY_FLOOR"].default
    )
    assert threshold("label_coverage_min") == defaults["RETRAIN_MIN_LABEL_COVERAGE"].default


def test_the_loopback_config_has_the_compose_jobs_on_127_0_0_1():
    compose, loopback = (load(path) for path in CONFIGS)
    assert compose["rule_files"] == loopback["rule_files"] == ["alerts.yml"]
    assert compose["global"] == loopback["global"]
    jobs = {job["job_name"]: job for job in compose["scrape_configs"]}
    local = {job["job_name"]: job for job in loopback["scrape_configs"]}
    assert set(jobs) - COMPOSE_ONLY_JOBS == set(local)
    assert {"api", "exporter", "prometheus", "alertmanager", "node", "cadvisor",
            "postgres"} == set(jobs)  # fmt: skip
    assert jobs["api"]["dns_sd_configs"] == [
        {"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]
    for job in local.values():
        (static,) = job["static_configs"]
        assert all(target.startswith("127.0.0.1:") for target in static["targets"])
    for config in (compose, loopback):
        (manager,) = config["alerting"]["alertmanagers"]
        assert manager["static_configs"][0]["targets"][0].endswith(":9093")
    # The job the API alerts select exists in both.
    (unavailable,) = [rule for rule in alerts() if rule["alert"] == "MLApiUnavailable"]
    assert 'job="api"' in unavailable["expr"] and "api" in local


def test_the_host_alerts_read_real_filesystems_and_named_containers_and_page_sparingly():
    """The ml-host group reads node-exporter and cAdvisor only; filesystems without tmpfs or
    overlay, containers by name (cAdvisor's own cgroups, the root and the system slices, have
    none). Of a host, only memory about to run out or a filesystem full within hours pages."""
    (group,) = [group for group in load(RULES)["groups"] if group["name"] == "ml-host"]
    host = [rule for rule in group["rules"] if "alert" in rule]
    for rule in host:
        expr, name = rule["expr"], rule["alert"]
        thresholds = {n for n in metric_names(expr) if n.startswith("ml:threshold:")}
        assert metric_names(expr) - thresholds <= compose_only_names(), name
        selectors = re.findall(r"(?<![\w:])((?:node_filesystem|container)_\w+)(\{[^}]*\})?", expr)
        for series, matchers in selectors:
            if series.startswith("node_filesystem"):
                assert 'fstype!~"tmpfs|ramfs|overlay"' in matchers, (name, series)
            else:
                assert 'name!=""' in matchers, (name, series)
    assert {rule["alert"] for rule in host} == {
        "MLHostCpuSaturated", "MLHostMemoryLow", "MLHostDiskFillingUp", "MLHostDiskSpaceLow",
        "MLOomKill", "MLContainerRestarting", "MLContainerMemoryNearLimit",
    }  # fmt: skip
    pages = {rule["alert"] for rule in host if rule["labels"]["severity"] == "critical"}
    assert pages == {"MLHostDiskFillingUp", "MLHostMemoryLow"}
    # A node-exporter or cAdvisor that stops answering is MLTargetDown's (every job's `up`).
    (target_down,) = [rule for rule in alerts() if rule["alert"] == "MLTargetDown"]
    assert target_down["expr"].strip() == "up == 0"


def test_the_coverage_alert_reads_the_age_of_its_threshold():
    """MLLabelCoverageLow fires when the most recent mature window is older than
    ml:threshold:mature_window_max_age_seconds, or when there is none although predictions are
    that many days old (`age_days`, whole days): one age, in the threshold and the selector. The
    latest window's coverage is no part of it (under a lag of days it is always near 0)."""
    (rule,) = [r for r in alerts() if r["alert"] == "MLLabelCoverageLow"]
    (days,) = re.findall(r'age_days="(\d+)"', rule["expr"])
    assert int(days) * 86400 == threshold("mature_window_max_age_seconds")
    assert "ml:label_coverage_ratio:last_known" not in rule["expr"]
    from data.settings import Settings

    maturity_days = Settings.model_fields["LABEL_MATURITY_DAYS"].default
    assert threshold("mature_window_max_age_seconds") < maturity_days * 86400
