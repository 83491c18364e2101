"""The dashboards' building blocks: targets (PromQL, SQL, alert-threshold lines), panels with
units and thresholds, the template variables, the grid layout and the dashboard frame.

`grafana.overview`, `grafana.business` and `grafana.host` compose the dashboards from these;
`grafana.build_dashboards` writes them. Thresholds come from prometheus/alerts.yml (its
`ml:threshold:*` series), the settings' defaults and the quality check's, never a copy.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from data.settings import PROJECT_ROOT as ROOT
from data.settings import Settings
from monitoring.quality_report import QualityThresholds

DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "prometheus" / "alerts.yml"

PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "postgres"}
ENV = 'environment=~"$environment"'
SEL = 'environment=~"$environment", model_name=~"$model"'
FEATURE = 'feature=~"$feature"'  # the per-feature panels
VERSION = 'model_version=~"$version"'  # the per-version panels
PREDICT = 'handler=~"/predict.*|/feedback.*"'  # the routes ml:http_requests:error_ratio reads
# The alert views (the alert list, the alerts annotation) also keep alerts without an
# `environment` of their own: those on Prometheus' targets, the host and Postgres (`up`, node-
# exporter, cAdvisor, postgres-exporter). Prometheus' external label gives them one on the way to
# Alertmanager only, not in ALERTS or the rules Grafana lists, and they are the environment of
# the Prometheus the dashboard reads.
ALERT_ENV = 'environment=~"$environment|"'

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"


def alert_thresholds() -> dict[str, float]:
    """`ml:threshold:<name>` -> its value, from the thresholds block of alerts.yml."""
    values = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("record", "")
            if name.startswith("ml:threshold:"):
                (number,) = re.fullmatch(r"vector\(([\d.e+]+)\)", rule["expr"].strip()).groups()
                values[name] = float(number)
    return values


def alert_runbooks() -> dict[str, str]:
    """Alert name -> its `runbook_url` (docs/runbooks.md#...), from alerts.yml."""
    return {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


THRESHOLDS = alert_thresholds()
RUNBOOKS = alert_runbooks()
# Prefixed to a runbook's docs/runbooks.md#... in panel links: a textbox variable, empty by
# default (open a dashboard with `?var-runbook_base=https://git.example.com/ml/blob/main/`, as
# RUNBOOK_BASE_URL does for Alertmanager's messages).
RUNBOOK_BASE = "${runbook_base}"
DEFAULTS = Settings.model_fields
QUALITY = QualityThresholds()


def default(name: str) -> float:
    return float(DEFAULTS[name].default)


# --- targets -------------------------------------------------------------------------------


def prom(expr: str, legend: str = "__auto", *, instant: bool = False) -> dict[str, Any]:
    return {
        "datasource": PROMETHEUS,
        "expr": " ".join(expr.split()),
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }


def threshold_line(name: str, legend: str) -> dict[str, Any]:
    """The alert's threshold series, drawn as a dashed line (see `_threshold_overrides`)."""
    return prom(f"ml:threshold:{name}", legend)


def sql(query: str, fmt: str = "table") -> dict[str, Any]:
    return {
        "datasource": POSTGRES,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": " ".join(query.split()),
    }


def steps(first: str, *levels: tuple[float, str]) -> dict[str, Any]:
    """Grafana thresholds: `first` below the lowest level, then each (value, color) upwards."""
    return {
        "mode": "absolute",
        "steps": [
            {"color": first, "value": None},
            *({"color": color, "value": value} for value, color in levels),
        ],
    }


def alert_steps(name: str, *, low_is_bad: bool, color: str = RED) -> dict[str, Any]:
    value = THRESHOLDS[f"ml:threshold:{name}"]
    return steps(color, (value, GREEN)) if low_is_bad else steps(GREEN, (value, color))


def mapping(*pairs: tuple[int, str, str]) -> list[dict[str, Any]]:
    """Value mappings: (value, text, color)."""
    return [
        {
            "type": "value",
            "options": {
                str(value): {"text": text, "color": color, "index": i}
                for i, (value, text, color) in enumerate(pairs)
            },
        }
    ]


# --- panels --------------------------------------------------------------------------------


def panel(
    kind: str,
    title: str,
    unit: str,
    targets: list[dict[str, Any]],
    *,
    description: str,
    width: int = 6,
    height: int = 8,
    thresholds: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    line_thresholds: bool = False,
    options: dict[str, Any] | None = None,
    decimals: int | None = None,
    max_value: float | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": thresholds or steps(GREEN),
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if max_value is not None:
        defaults["min"], defaults["max"] = 0, max_value
    if kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 0,
            "showPoints": "never",
            "spanNulls": True,
            "thresholdsStyle": {"mode": "dashed" if line_thresholds else "off"},
        }
    elif kind in ("stat", "bargauge"):
        defaults["color"] = {"mode": "thresholds"}
    for ref, target in zip(_ref_ids(), targets, strict=False):
        target["refId"] = ref
    result: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": defaults, "overrides": _threshold_overrides(targets)},
        "options": options or _default_options(kind),
        "targets": targets,
    }
    links = runbook_links(description)
    if links:
        result["links"] = links
    return result


def runbook_links(description: str) -> list[dict[str, Any]]:
    """A link to the runbook of every alert the panel's description names (each panel that
    draws an alert's figure says which alert in its description)."""
    named = dict.fromkeys(re.findall(r"\bML[A-Z]\w+", description))
    return [
        {"title": f"Runbook: {name}", "url": RUNBOOK_BASE + RUNBOOKS[name], "targetBlank": True}
        for name in named
        if name in RUNBOOKS
    ]


def _ref_ids():
    return (chr(ord("A") + i) for i in range(26))


def _threshold_overrides(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Threshold series drawn dashed and red, whatever the panel's palette."""
    return [
        {
            "matcher": {"id": "byFrameRefID", "options": target["refId"]},
            "properties": [
                {"id": "color", "value": {"mode": "fixed", "fixedColor": RED}},
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            ],
        }
        for target in targets
        if target.get("expr", "").startswith("ml:threshold:")
    ]


def _default_options(kind: str) -> dict[str, Any]:
    if kind == "timeseries":
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
            "justifyMode": "auto",
        }
    if kind == "bargauge":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "basic",
        }
    if kind == "table":
        return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    raise ValueError(kind)


def stat(title: str, unit: str, *targets: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    for target in targets:
        target["instant"], target["range"] = True, False
    return panel("stat", title, unit, list(targets), **kwargs)


def timeseries(title: str, unit: str, *targets: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return panel("timeseries", title, unit, list(targets), width=kwargs.pop("width", 12), **kwargs)


def table(title: str, query: str, **kwargs: Any) -> dict[str, Any]:
    return panel("table", title, "none", [sql(query)], width=kwargs.pop("width", 12), **kwargs)


def alert_list(title: str, *, description: str, width: int = 24, height: int = 8):
    """The alerts firing and pending now, from Prometheus' rules (the datasource lists them
    because it is provisioned with `manageAlerts: true`), in the dashboard's environments."""
    return {
        "type": "alertlist",
        "title": title,
        "description": description,
        "gridPos": {"w": width, "h": height},
        "options": {
            "viewMode": "list",
            "groupMode": "default",
            "groupBy": [],
            "maxItems": 20,
            "sortOrder": 3,  # importance: critical first
            "dashboardAlerts": False,
            "alertName": "",
            "showInstances": True,
            "datasource": "Prometheus",
            "alertInstanceLabelFilter": f"{{{ALERT_ENV}}}",
            "stateFilter": {
                "firing": True,
                "pending": True,
                "noData": False,
                "normal": False,
                "error": True,
                "recovering": False,
            },
            "folder": None,
        },
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def _rate(metric: str, by: str, matchers: str = ENV) -> str:
    return f"sum by ({by}) (rate({metric}{{{matchers}}}[$__rate_interval]))"


def _quantile(q: float, metric: str, matchers: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (environment, le) "
        f"(rate({metric}{{{matchers}}}[$__rate_interval])))"
    )


# --- dashboards ----------------------------------------------------------------------------


def query_variable(name: str, label: str, definition: str) -> dict[str, Any]:
    """A multi-value variable over a label's values (`label_values(series, label)`)."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": PROMETHEUS,
        "definition": definition,
        "query": {"query": definition, "refId": f"{name}-variable"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def datasource_variable() -> dict[str, Any]:
    """The Prometheus datasource every PromQL target names as `${datasource}`."""
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Prometheus",
        "query": "prometheus",
        "current": {"selected": True, "text": "Prometheus", "value": "prometheus"},
    }


def runbook_variable() -> dict[str, Any]:
    """Where the runbooks are read: prefixed to the panels' runbook links (RUNBOOK_BASE)."""
    return {
        "type": "textbox",
        "name": "runbook_base",
        "label": "Runbooks at",
        "description": "Prefixed to docs/runbooks.md#... in the panels' runbook links, e.g. "
        "https://git.example.com/ml/monitoring/blob/main/ (RUNBOOK_BASE_URL).",
        "query": "",
        "current": {"selected": False, "text": "", "value": ""},
        "hide": 0,
    }


def variables() -> list[dict[str, Any]]:
    query = query_variable
    return [
        datasource_variable(),
        query("environment", "Environment", "label_values(ml_model_loaded, environment)"),
        query(
            "model",
            "Model",
            'label_values(ml_exporter_source_up{environment=~"$environment"}, model_name)',
        ),
        # The served versions (ml_predictions_total by version), for a rollout or a rollback.
        query(
            "version",
            "Model version",
            'label_values(ml_predictions_total{environment=~"$environment"}, model_version)',
        ),
        # The features of the latest drift report, to look at one during a drift incident.
        query(
            "feature",
            "Feature",
            f"label_values(ml_drift_psi{{{SEL}}}, feature)",
        ),
        runbook_variable(),
    ]


def annotations(by_environment: bool = True) -> list[dict[str, Any]]:
    """Marks on every time series: alerts as they fire (Prometheus' ALERTS), promotions and
    rollbacks (promotion_audit) and retrains, from request to end (training_runs). The host
    dashboard has no environment variable: its alerts are every environment's; elsewhere the
    chosen environments' and those without one (ALERT_ENV)."""
    environment = f", {ALERT_ENV}" if by_environment else ""
    return [
        {
            "name": "Alerts firing",
            "datasource": PROMETHEUS,
            "enable": True,
            "iconColor": RED,
            "expr": f'ALERTS{{alertstate="firing", severity=~"critical|warning"{environment}}}',
            "step": "1m",
            "titleFormat": "{{alertname}} ({{severity}})",
            "textFormat": "{{environment}} {{instance}}",
            "tagKeys": "severity,alertname",
            "useValueForTime": False,
        },
        {
            "name": "Promotions",
            "datasource": POSTGRES,
            "enable": True,
            "iconColor": BLUE,
            "rawQuery": (
                "SELECT created_at AS time, action || ' v' || version AS text, action AS tags "
                "FROM promotion_audit WHERE $__timeFilter(created_at) ORDER BY created_at"
            ),
            "format": "table",
        },
        {
            "name": "Retrains",
            "datasource": POSTGRES,
            "enable": True,
            "iconColor": ORANGE,
            "rawQuery": (
                "SELECT requested_at AS time, COALESCE(finished_at, now()) AS timeend, "
                "trigger || ': ' || status || COALESCE(' v' || version, '') AS text, "
                "status AS tags FROM training_runs WHERE $__timeFilter(requested_at) "
                "ORDER BY requested_at"
            ),
            "format": "table",
        },
    ]


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ids and positions: panels flow left to right in a 24-wide grid, a row starts a line."""
    x = y = line_height = 0
    for number, item in enumerate(panels, start=1):
        item["id"] = number
        pos = item.setdefault("gridPos", {"w": 24, "h": 1})
        if item["type"] == "row":
            pos.update(w=24, h=1)
        if item["type"] == "row" or x + pos["w"] > 24:
            x, y, line_height = 0, y + line_height, 0
        pos.update(x=x, y=y)
        x += pos["w"]
        line_height = max(line_height, pos["h"])
        if item["type"] == "row":
            x, y, line_height = 0, y + 1, 0
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]], **extra):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["ml-monitoring"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "time": extra.get("time", {"from": "now-24h", "to": "now"}),
        "templating": {"list": extra.get("variables") or variables()},
        "annotations": {"list": extra.get("annotations", annotations())},
        "links": [
            {
                "type": "dashboards",
                "title": "ML monitoring",
                "tags": ["ml-monitoring"],
                "asDropdown": False,
            }
        ],
        "panels": layout(panels),
    }
