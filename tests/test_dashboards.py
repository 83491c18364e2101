"""The Grafana dashboards and their provisioning, checked without Grafana (it cannot run here).

The committed JSON is what grafana/build_dashboards.py writes. Every query is extracted from the
JSON as a live test would (`queries()`): PromQL is `panels[].targets[].expr` of targets whose
datasource type is `prometheus`, SQL is `panels[].targets[].rawSql` of `grafana-postgresql-
datasource` targets. PromQL must parse (promtool), use the template variables only as
`environment=~"$environment"` / `model_name=~"$model"` and `$__rate_interval` only in range
selectors, and name only series a service exports (the check tests/test_alert_rules.py runs on
the rules: a published stack of this kind had rules and panels on metrics nobody exported). SQL
runs on a real Postgres created by `data.db.init_db`, with `$__timeFilter(x)` replaced as a
Grafana would, over real report rows.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, insert, text

from data.db import init_db, labels, metadata, prediction_logs, promotion_audit, training_runs
from data.settings import PROJECT_ROOT
from tests.test_alert_rules import (
    COMPOSE_ONLY_OWN,
    RULES,
    WATCHERS_OWN,
    compose_only_names,
    exported_names,
    metric_names,
    promtool,
    rules,
)

GRAFANA = PROJECT_ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
UIDS = {"ml-overview", "ml-business", "ml-host"}
OVERVIEW_ROWS = (
    "service health", "error budget", "performance", "late labels", "drift", "retrain",
)  # fmt: skip
PROMETHEUS_TYPE, POSTGRES_TYPE = "prometheus", "grafana-postgresql-datasource"
LIVE_SUBSTITUTIONS = {"$environment": ".+", "$model": ".*", "$__rate_interval": "1m",
                      "$node": ".+", "$container": ".+", "$version": ".+",
                      "$feature": ".+"}  # fmt: skip
# The variables of each dashboard: a host's series have no environment or model, but a host
# (node-exporter's instance) and a container (cAdvisor's name). `runbook_base` (a textbox) is
# prefixed to the panels' runbook links.
VARIABLES = {"ml-host": {"datasource", "node", "container", "runbook_base"}}
DEFAULT_VARIABLES = {"datasource", "environment", "model", "version", "feature", "runbook_base"}
# How the variables may appear in PromQL: as these regex matchers only.
VARIABLE_MATCHERS = (
    r'environment=~"\$environment"|model_name=~"\$model"|instance=~"\$node"|name=~"\$container"'
    r'|model_version=~"\$version"|feature=~"\$feature"'
    r'|ALERTS\{[^}]*environment=~"\$environment\|"'  # alerts: also those without an environment
)
ANNOTATIONS = {"Alerts firing", "Promotions", "Retrains"}


def build_module():
    from grafana import build_dashboards

    return build_dashboards


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that query something (rows are layout; the alert list reads the rules)."""
    return [panel for panel in board["panels"] if panel["type"] not in ("row", "alertlist")]


def queries(kind: str) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, query) of every PromQL (`expr`) or SQL (`rawSql`) target."""
    field, datasource = {"promql": ("expr", PROMETHEUS_TYPE), "sql": ("rawSql", POSTGRES_TYPE)}[
        kind
    ]
    found = []
    for board in dashboards().values():
        for panel in panels(board):
            for target in panel["targets"]:
                if target["datasource"]["type"] == datasource:
                    found.append((board["uid"], panel["title"], target[field]))
        # The annotations' queries are checked like the panels' (an SQL one is `rawQuery`).
        for note in board["annotations"]["list"]:
            if note["datasource"]["type"] == datasource:
                query = note["expr"] if kind == "promql" else note["rawQuery"]
                found.append((board["uid"], f"annotation {note['name']}", query))
    return found


def live_promql(expr: str) -> str:
    """The query as the live test runs it: variables replaced by match-everything values."""
    for variable, value in LIVE_SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr


def grafana_sql(query: str) -> str:
    """The SQL Grafana sends for a time range of a day."""
    return re.sub(
        r"\$__timeFilter\(([\w.]+)\)", r"\1 BETWEEN now() - interval '1 day' AND now()", query
    )


def alert_thresholds() -> dict[str, float]:
    return {
        rule["record"]: float(rule["expr"].removeprefix("vector(").removesuffix(")"))
        for rule in rules()
        if rule.get("record", "").startswith("ml:threshold:")
    }


def step_values(panel: dict[str, Any]) -> set[float]:
    return {
        step["value"]
        for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        if step["value"] is not None
    }


# --- the files -------------------------------------------------------------------------------


def test_the_committed_json_is_what_the_builder_writes():
    built = build_module().build()
    assert set(built) == {path.name for path in DASHBOARDS.glob("*.json")}
    for name, board in built.items():
        assert (DASHBOARDS / name).read_text() == build_module().render(board), (
            f"{name} is out of date: run python -m grafana.build_dashboards"
        )


def test_dashboards_have_fixed_uids_and_unique_panel_ids():
    boards = dashboards()
    assert set(boards) == UIDS and all(board["uid"] == uid for uid, board in boards.items())
    for board in boards.values():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0, panel["title"]


def test_the_overview_has_six_rows_with_the_named_concerns_and_at_least_20_panels():
    board = dashboards()["ml-overview"]
    assert len(panels(board)) >= 20
    rows = [panel for panel in board["panels"] if panel["type"] == "row"]
    assert len(rows) == len(OVERVIEW_ROWS) and board["panels"][0]["type"] == "row"
    for row, concern in zip(rows, OVERVIEW_ROWS, strict=True):
        assert concern in row["title"].lower()
    # Each row has panels under it, and the performance row shows realized, estimated, coverage.
    starts = [board["panels"].index(row) for row in rows] + [len(board["panels"])]
    sections = [board["panels"][a + 1 : b] for a, b in itertools.pairwise(starts)]
    assert all(len(section) >= 5 for section in sections)
    performance = " ".join(t["expr"] for p in sections[2] for t in p["targets"] if "expr" in t)
    assert {"ml_realized_performance", "ml_estimated_performance", "ml_label_coverage_ratio"} <= (
        metric_names(live_promql(performance))
    )
    # Late labels: coverage by window age, the lag's quantiles from its buckets (no rate(): the
    # histogram is recomputed at every scrape), the mature window beside its estimate and their
    # gap, its age.
    late = [t["expr"] for p in sections[3] for t in p["targets"] if "expr" in t]
    assert {
        "ml_label_coverage_by_age_ratio", "ml_label_lag_seconds_bucket",
        "ml_mature_realized_performance", "ml_mature_estimated_performance",
        "ml_estimated_performance", "ml_estimate_gap", "ml_mature_window_age_seconds",
        "ml_labels_last_received_timestamp_seconds",
    } <= metric_names(live_promql(" ".join(late)))  # fmt: skip
    quantiles = [e for e in late if "ml_label_lag_seconds_bucket" in e]
    assert {re.match(r"histogram_quantile\((0\.\d+),", e).group(1) for e in quantiles} == {
        "0.5",
        "0.9",
    }
    assert not any("rate(" in e for e in quantiles)
    (by_age,) = [p for p in sections[3] if p["type"] == "bargauge"]
    assert "ml_label_coverage_by_age_ratio" in by_age["targets"][0]["expr"]


def test_every_panel_has_a_unit_a_datasource_and_queries():
    for board in dashboards().values():
        for panel in panels(board):
            where = f"{board['uid']}: {panel['title']}"
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
            assert panel["targets"], where
            assert panel["description"], where
            for target in panel["targets"]:
                kind = target["datasource"]["type"]
                assert kind in (PROMETHEUS_TYPE, POSTGRES_TYPE), where
                assert ("expr" in target) == (kind == PROMETHEUS_TYPE), where
                assert ("rawSql" in target) == (kind == POSTGRES_TYPE), where
                expected = "${datasource}" if kind == PROMETHEUS_TYPE else "postgres"
                assert target["datasource"]["uid"] == expected, where


def test_every_dashboard_has_the_datasource_environment_and_model_variables():
    """(The host dashboard: the datasource, the host and the container.)"""
    for uid, board in dashboards().items():
        variables = {var["name"]: var for var in board["templating"]["list"]}
        assert set(variables) == VARIABLES.get(uid, DEFAULT_VARIABLES)
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == PROMETHEUS_TYPE
        assert variables["runbook_base"]["type"] == "textbox"
        for name in set(variables) - {"datasource", "runbook_base"}:
            assert variables[name]["datasource"]["uid"] == "${datasource}"
            # The variables' own queries read exported series too.
            (series,) = re.findall(r"label_values\((\w+)", variables[name]["definition"])
            assert series in exported_names() | compose_only_names(), name


# --- PromQL ----------------------------------------------------------------------------------


def test_promql_uses_the_variables_only_as_the_live_test_substitutes_them():
    found = queries("promql")
    assert len(found) >= 40
    for uid, title, expr in found:
        where = f"{uid}: {title}: {expr}"
        rest = re.sub(VARIABLE_MATCHERS, "", expr)
        rest = re.sub(r"\[\$__rate_interval\]", "", rest)
        assert "$" not in rest, f"a variable outside the allowed matchers: {where}"
        # rate() and irate() always over $__rate_interval (increase over a fixed window is a
        # count over that window, as "predictions per hour" means).
        for window in re.findall(r"\b(?:i?rate)\([^[]*\[([^\]]*)\]", expr):
            assert window == "$__rate_interval", where


def test_promql_parses(tmp_path: Path):
    """promtool parses every query (as a recording rule) after the live substitutions."""
    recorded = [
        {"record": f"dashboard_query_{i}", "expr": live_promql(expr)}
        for i, (_, _, expr) in enumerate(queries("promql"))
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": recorded}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_query_names_only_series_a_service_exports_or_a_rule_records():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = exported_names() | recorded | {"up", "ALERTS"} | compose_only_names() | WATCHERS_OWN
    unknown = {
        f"{uid}: {title}": sorted(metric_names(live_promql(expr)) - known)
        for uid, title, expr in queries("promql")
    }
    assert {where: names for where, names in unknown.items() if names} == {}


def test_every_alert_threshold_is_drawn_with_its_value():
    """Each `ml:threshold:*` of alerts.yml is drawn by some panel, and a panel that draws one
    carries the same value in its field thresholds (so stat colours and lines agree)."""
    thresholds = alert_thresholds()
    drawn = set()
    for board in dashboards().values():
        for panel in panels(board):
            names = set().union(
                *(metric_names(live_promql(t["expr"])) for t in panel["targets"] if "expr" in t)
            )
            for name in names & set(thresholds):
                drawn.add(name)
                assert thresholds[name] in step_values(panel), f"{panel['title']}: {name}"
    # Guards, not levels a figure is drawn against: a minimum traffic, an event's lifetime.
    guards = {"ml:threshold:api_min_requests_per_second", "ml:threshold:training_event_seconds"}
    assert set(thresholds) - drawn - guards == set(), "alert thresholds no panel draws"


# --- the business view -----------------------------------------------------------------------


def test_the_business_view_has_positive_rate_false_positive_rate_and_amount_at_risk():
    board = dashboards()["ml-business"]
    by_title = {panel["title"].lower(): panel for panel in panels(board)}

    def targets(words: str) -> list[dict[str, Any]]:
        matching = [panel for title, panel in by_title.items() if title.startswith(words)]
        assert matching, f"no panel titled {words!r}..."
        return [target for panel in matching for target in panel["targets"]]

    assert any(
        "ml:predictions:positive_ratio_rate1h" in t["expr"] for t in targets("positive rate")
    )
    fpr = [t["expr"] for t in targets("false-positive rate")]
    assert any('cell="fp"' in expr and 'cell=~"fp|tn"' in expr for expr in fpr)
    amount = [t["rawSql"] for t in targets("amount at risk")]
    assert amount and all("features->>'amount'" in q and "predicted_class = 1" in q for q in amount)


# --- the host view ---------------------------------------------------------------------------


def test_the_host_view_has_use_rows_and_a_panel_for_each_host_alert():
    """ml-host: a row per resource (CPU, memory, disks, network) and the containers; node
    series filtered by the host variable, cAdvisor's by the container variable (and a name, so
    cAdvisor's own cgroups stay out); each ml-host alert named by the panel that draws it; and
    every node-exporter and cAdvisor name test_alert_rules allows is read by a rule or here."""
    board = dashboards()["ml-host"]
    rows = [panel["title"].lower() for panel in board["panels"] if panel["type"] == "row"]
    for resource in ("cpu", "memory", "disks", "network", "containers"):
        assert any(title.startswith(resource) for title in rows), resource
    for resource in ("memory", "disks", "network"):
        (title,) = [title for title in rows if title.startswith(resource)]
        assert "utilisation" in title and "saturation" in title and "errors" in title, title
    host_queries = [expr for uid, _, expr in queries("promql") if uid == "ml-host"]
    for expr in host_queries:
        for name, matchers in re.findall(r"(?<![\w:])((?:node|container)_\w+)\{([^}]*)\}", expr):
            if name.startswith("node_"):
                assert 'instance=~"$node"' in matchers, expr
            else:
                assert 'name!=""' in matchers and 'name=~"$container"' in matchers, expr
    (group,) = [g for g in yaml.safe_load(RULES.read_text())["groups"] if g["name"] == "ml-host"]
    host_alerts = {rule["alert"] for rule in group["rules"] if "alert" in rule}
    described = " ".join(panel["description"] for panel in panels(board))
    assert {name for name in host_alerts if name not in described} == set()
    read = set().union(*(metric_names(live_promql(expr)) for _, _, expr in queries("promql")))
    read |= set().union(*(metric_names(rule["expr"]) for rule in rules()))
    read |= {
        series
        for variable in board["templating"]["list"]
        for series in re.findall(r"label_values\((\w+)", variable.get("definition", ""))
    }
    assert compose_only_names() - read == set(), "listed in COMPOSE_ONLY_OWN, read nowhere"
    assert set(COMPOSE_ONLY_OWN) == {"node", "cadvisor", "postgres"}


# --- SQL on real Postgres --------------------------------------------------------------------


def test_sql_uses_only_the_time_filter_macro_and_project_tables():
    tables = set(metadata.tables)
    for uid, title, query in queries("sql"):
        rest = re.sub(r"\$__timeFilter\([\w.]+\)", "", query)
        assert "$" not in rest, f"{uid}: {title}: only $__timeFilter(column) is allowed"
        used = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", query, flags=re.I))
        assert used and used <= tables, f"{uid}: {title}: {used - tables}"


@pytest.mark.postgres
def test_every_sql_query_runs_on_postgres_and_the_amounts_add_up(postgres_url, fraud_schema):
    from tests.test_exporter import save_window

    engine = create_engine(postgres_url)
    init_db(engine)
    save_window(fraud_schema, postgres_url)  # real drift, quality and performance rows
    with engine.begin() as conn:  # ... moved into the last day
        for table in ("drift_reports", "quality_reports", "performance_reports"):
            conn.execute(
                text(
                    f"UPDATE {table} SET window_start = now() - interval '7 hours', "
                    "window_end = now() - interval '1 hour'"
                )
            )
    now = datetime.now(UTC)
    rows = [  # (predicted class, label, amount)
        (1, 1, 900.0),
        (1, 0, 120.5),
        (1, None, 40.0),
        (0, 1, 300.0),
        (0, 0, 10.0),
    ]
    with engine.begin() as conn:
        for i, (predicted, label, amount) in enumerate(rows):
            conn.execute(
                insert(prediction_logs).values(
                    request_id=f"r{i}",
                    predicted_at=now - timedelta(minutes=5),
                    model_name="fraud-detector",
                    model_version="1",
                    features={"amount": amount, "merchant_category": "online"},
                    predicted_class=predicted,
                    score=0.9 if predicted else 0.1,
                    latency_ms=0.1,
                )
            )
            if label is not None:
                conn.execute(
                    insert(labels).values(request_id=f"r{i}", label=label, labelled_at=now)
                )
        # Outside the day: a Grafana time range of a day must not count it.
        conn.execute(
            insert(prediction_logs).values(
                request_id="old",
                predicted_at=now - timedelta(days=3),
                model_name="fraud-detector",
                model_version="1",
                features={"amount": 5000.0},
                predicted_class=1,
                score=0.9,
                latency_ms=0.1,
            )
        )

        # A promotion and two retrains, one finished and one still running, for the annotations.
        conn.execute(
            insert(promotion_audit).values(
                created_at=now - timedelta(hours=1), model_name="fraud-detector", version="7",
                action="promoted", actor="airflow", reason="gates passed",
            )
        )  # fmt: skip
        for requested, finished, status, version in (
            (now - timedelta(hours=2), now - timedelta(hours=1), "promoted", "7"),
            (now - timedelta(minutes=10), None, "running", None),
        ):
            conn.execute(
                insert(training_runs).values(
                    requested_at=requested, finished_at=finished, model_name="fraud-detector",
                    trigger="policy", reason="drift", status=status, version=version,
                )
            )  # fmt: skip

    results = {}
    with engine.connect() as conn:
        for _, title, query in queries("sql"):
            results[title] = conn.execute(text(grafana_sql(query))).mappings().all()
    engine.dispose()

    assert results["Amount at risk (flagged, time range)"] == [{"amount_at_risk": 1060.5}]
    (hour,) = results["Amount at risk per hour"]
    assert hour["amount_at_risk"] == 1060.5
    assert dict(results["Amounts by labelled outcome"][0]) == {
        "flagged": 3,
        "amount_flagged": 1060.5,
        "fraud_caught": 900.0,
        "fraud_missed": 300.0,
        "legitimate_flagged": 120.5,
    }
    (performance,) = results["Performance reports"]
    assert performance["realized_accuracy"] is not None and performance["label_coverage"] == 1.0
    (promotion,) = {tuple(r.items()) for r in results["annotation Promotions"]}
    assert dict(promotion)["text"] == "promoted v7" and dict(promotion)["tags"] == "promoted"
    retrains = sorted(results["annotation Retrains"], key=lambda r: r["time"])[:2]
    assert [(r["text"], r["tags"]) for r in retrains] == [
        ("policy: promoted v7", "promoted"),
        ("policy: running", "running"),
    ]
    assert retrains[0]["timeend"] > retrains[0]["time"]  # a region from request to end
    assert retrains[1]["timeend"] >= retrains[1]["time"]  # still running: until now
    (drift,) = results["Drift reports"]
    assert drift["summary"] and drift["rows_current"] == 3_000


# --- provisioning ----------------------------------------------------------------------------


def test_datasources_have_fixed_uids_and_no_committed_secret():
    config = yaml.safe_load(DATASOURCES.read_text())
    sources = {source["uid"]: source for source in config["datasources"]}
    assert set(sources) == {"prometheus", "alertmanager", "postgres"}
    assert sources["prometheus"]["type"] == PROMETHEUS_TYPE and sources["prometheus"]["isDefault"]
    assert sources["alertmanager"]["type"] == "alertmanager"
    assert sources["alertmanager"]["url"].endswith(":9093")
    postgres = sources["postgres"]
    assert postgres["type"] == POSTGRES_TYPE
    for value in (postgres["url"], postgres["user"], postgres["jsonData"]["database"]):
        assert re.fullmatch(r"\$__env\{[A-Z_]+\}", value), value
    assert set(postgres["secureJsonData"]) == {"password"}
    assert re.fullmatch(r"\$__env\{[A-Z_]+\}", postgres["secureJsonData"]["password"])
    assert not any("password" in key.lower() for key in postgres if key != "secureJsonData")
    # Every datasource a dashboard names is provisioned (the Prometheus one via its variable).
    for board in dashboards().values():
        variables = {var["name"]: var for var in board["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] in sources
        for panel in panels(board):
            for target in panel["targets"]:
                uid = target["datasource"]["uid"]
                assert uid == "${datasource}" or uid in sources, (board["uid"], panel["title"])


def test_the_dashboard_provider_reads_the_mounted_folder():
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert provider["allowUiUpdates"] is False


# --- incidents: alerts, runbooks, annotations -------------------------------------------------


def test_every_dashboard_marks_alerts_promotions_and_retrains():
    for uid, board in dashboards().items():
        notes = {note["name"]: note for note in board["annotations"]["list"]}
        assert set(notes) == ANNOTATIONS, uid
        assert notes["Alerts firing"]["datasource"]["uid"] == "${datasource}"
        assert 'alertstate="firing"' in notes["Alerts firing"]["expr"]
        if uid != "ml-host":  # the host's alerts have no environment: that dashboard shows all
            assert 'environment=~"$environment|"' in notes["Alerts firing"]["expr"], uid
        for name in ("Promotions", "Retrains"):
            assert notes[name]["datasource"]["uid"] == "postgres", (uid, name)
        # a retrain is a region, from its request to its end
        assert "timeend" in notes["Retrains"]["rawQuery"]


def test_a_panel_that_names_an_alert_links_to_its_runbook():
    """Every alert named in a panel's description is a link to its section of the runbooks,
    and every alert of alerts.yml (but the watchdog) has a panel that links to it."""
    runbooks = (PROJECT_ROOT / "docs" / "runbooks.md").read_text()
    anchors = {f"docs/runbooks.md#{h.lower()}" for h in re.findall(r"^## (\w+)", runbooks, re.M)}
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    linked = set()
    for uid, board in dashboards().items():
        for panel in panels(board):
            named = set(re.findall(r"\bML[A-Z]\w+", panel["description"])) & alerts
            links = {
                link["title"].removeprefix("Runbook: "): link for link in panel.get("links", [])
            }
            assert set(links) == named, (uid, panel["title"])
            for link in links.values():
                assert link["url"].startswith("${runbook_base}docs/runbooks.md#"), link
                assert link["url"].removeprefix("${runbook_base}") in anchors, link
            linked |= named
    assert alerts - linked - {"MLWatchdog"} == set(), "alerts no panel links to"


def test_the_overview_opens_with_the_alerts_firing_now():
    board = dashboards()["ml-overview"]
    first = board["panels"][1]  # right under the first row's title
    assert first["type"] == "alertlist"
    options = first["options"]
    assert options["datasource"] == "Prometheus" and options["stateFilter"]["firing"]
    # The chosen environments' alerts, and those with no environment label (Prometheus'
    # targets, the host, Postgres: the external label reaches Alertmanager only).
    assert options["alertInstanceLabelFilter"] == '{environment=~"$environment|"}'
    config = yaml.safe_load(DATASOURCES.read_text())
    (prometheus,) = [s for s in config["datasources"] if s["name"] == options["datasource"]]
    assert prometheus["jsonData"]["manageAlerts"] is True  # else Grafana lists no rule of it


def test_the_version_and_feature_variables_filter_panels():
    promql = " ".join(expr for _, _, expr in queries("promql"))
    assert 'model_version=~"$version"' in promql
    assert promql.count('feature=~"$feature"') >= 5
