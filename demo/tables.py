"""The demo report's tables: the run's summary, the retrains with each gate's numbers, and
every window's figures, as `demo.report` places them on its page; and how the page writes a
value of any kind (`readable`) or a share (`pct`).
"""

from __future__ import annotations

import math
from typing import Any

from demo.timeline import NA, TimelineError, number, text
from monitoring.html.page import badge, e, moment, row, table


def pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage, n/a when unknown."""
    return NA if value is None else f"{value:.{digits}%}"


def _fixed(value: float | None, digits: int = 3, unit: str = "") -> str:
    return NA if value is None else f"{value:.{digits}f}{unit}"


def readable(value: Any) -> str:
    """A value of unknown kind (gate details, extra summary keys) as a person reads it."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return format(value, ".4g") if math.isfinite(value) else NA
    if isinstance(value, list | tuple):
        return ", ".join(readable(v) for v in value) or "none"
    return str(value)


def _duration(seconds: Any) -> str:
    seconds = number(seconds, "summary.duration_seconds")
    if seconds is None:
        return NA
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


_SUMMARY_LABELS = {
    "baseline_accuracy": ("Baseline accuracy", pct),
    "worst_accuracy": ("Worst accuracy", pct),
    "final_accuracy": ("Final accuracy", pct),
    "drift_injected_week": ("Drift injected in week", readable),
    "drift_detected_week": ("Drift detected in week", readable),
    "retrains": ("Retrains", readable),
    "champion_before": ("Champion before", readable),
    "champion_after": ("Champion after", readable),
    "duration_seconds": ("Run time", _duration),
}


def summary_table(summary: Any) -> str:
    """The run's summary, key by key: the known keys first, then whatever else it recorded."""
    if summary is None:
        return f'<p class="note" id="summary">No summary recorded ({NA}).</p>'
    if not isinstance(summary, dict):
        raise TimelineError(f"timeline 'summary' must be an object, not {summary!r}")
    rows = []
    for key, (label, fmt) in _SUMMARY_LABELS.items():
        value = summary.get(key)
        if fmt is pct:
            value = number(value, f"summary.{key}")
        rows.append(row([e(label), e(fmt(value))], header=True, attrs={"data-key": key}))
    for key, value in summary.items():  # whatever else the runner chose to record
        if key not in _SUMMARY_LABELS:
            rows.append(row([e(key), e(readable(value))], header=True, attrs={"data-key": key}))
    return table(None, rows, css="kv", element_id="summary")


def retrain_section(timeline: dict[str, Any], windows: list[dict[str, Any]]) -> str:
    """One row per retrain (when, why, the outcome, each gate's verdict), then each one's gates
    with their numbers."""
    retrains = timeline.get("retrains") or []
    if not retrains:
        return '<p class="note" id="retrains-none">No retrain ran.</p>'
    by_index = {w.get("index", i): w for i, w in enumerate(windows)}
    rows, details = [], []
    for i, retrain in enumerate(retrains):
        window = by_index.get(retrain.get("window"), {})
        gates = retrain.get("gates") or {}
        if not isinstance(gates, dict):
            raise TimelineError(f"retrains[{i}].gates must be an object or null")
        promoted = retrain.get("promoted")
        outcome = {True: "promoted", False: "rejected"}.get(promoted, "unknown")
        outcome_text = {True: "promoted", False: "not promoted"}.get(promoted, NA)
        version = text(retrain.get("version")) or NA
        gate_badges = " ".join(
            badge(_gate_css(g), f"{name} {_gate_word(g)}") for name, g in gates.items()
        )
        cells = [
            e(retrain.get("window", NA)),
            f"week {e(window.get('week', NA))}, {e(moment(window.get('start'), NA))}",
            f"v{e(version)}",
            f"v{e(retrain.get('previous') or NA)}",
            e(retrain.get("reason") or NA),
            e(readable(retrain.get("data_rows"))),
            badge(outcome, outcome_text),
            gate_badges or NA,
        ]
        attrs = {"class": f"retrain {outcome}", "data-version": version}
        rows.append(row(cells, text={1, 4, 6, 7}, attrs=attrs))
        details.append(_gate_table(i, version, gates))
    head = [
        "Window",
        "When (UTC)",
        "Version",
        "Previous",
        "Reason",
        "Training rows",
        "Outcome",
        "Gates",
    ]
    return table(head, rows, text={1, 4, 6, 7}, element_id="retrains") + "".join(details)


def _gate_css(gate: Any) -> str:
    passed = gate.get("passed") if isinstance(gate, dict) else None
    return {True: "passed", False: "failed"}.get(passed, "unknown")


def _gate_word(gate: Any) -> str:
    return {"passed": "passed", "failed": "failed"}.get(_gate_css(gate), NA)


def _gate_table(i: int, version: str, gates: dict[str, Any]) -> str:
    """Each gate's verdict, reason and numbers (`training.gates.GateReport.to_dict` shape)."""
    if not gates:
        return f'<p class="note">v{e(version)}: no gate results recorded.</p>'
    rows = []
    for name, gate in gates.items():
        gate = gate if isinstance(gate, dict) else {}
        numbers = _flatten({k: v for k, v in gate.items() if k not in ("passed", "reason")})
        listing = "".join(f"<dt>{e(k)}</dt><dd>{e(readable(v))}</dd>" for k, v in numbers)
        cells = [
            e(name),
            badge(_gate_css(gate), _gate_word(gate)),
            e(gate.get("reason") or NA),
            f'<dl class="numbers">{listing}</dl>',
        ]
        rows.append(row(cells, text={1, 2, 3}, attrs={"data-gate": name}))
    head = ["Gate", "Result", "Reason", "Numbers"]
    return f"<h3>Gates of v{e(version)}</h3>" + table(
        head, rows, text={1, 2, 3}, element_id=f"gates-{i}", css="gates"
    )


def _flatten(detail: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested gate details ({"metrics": {"roc_auc": ...}}) as dotted names."""
    out: list[tuple[str, Any]] = []
    for key, value in detail.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, f"{name}.") or [(name, None)]
        else:
            out.append((name, value))
    return out


_WINDOW_COLUMNS = [
    "Window",
    "Week",
    "Start (UTC)",
    "Phase",
    "Rows",
    "Champion",
    "Realized",
    "Labels",
    "Estimated",
    "Drifted",
    "Dataset drift",
    "Critical features",
    "p50 ms",
    "p99 ms",
    "Alerts",
    "Decision",
]
_WINDOW_TEXT = {2, 3, 11, 14, 15}


def window_table(windows: list[dict[str, Any]]) -> str:
    """Every window's figures, one row each, folded away until asked for."""
    rows = []
    for i, w in enumerate(windows):
        decision = w.get("decision") if isinstance(w.get("decision"), dict) else None
        if decision is None:
            verdict = NA
        else:
            verdict = "retrain" if decision.get("retrain") else "no retrain"
            if decision.get("reason"):
                verdict += f": {decision['reason']}"
            if decision.get("blocked_by"):
                verdict += f" (blocked by {decision['blocked_by']})"
        drift = w.get("dataset_drift")
        alerts = ", ".join(
            text(a.get("name")) for a in w.get("alerts") or [] if isinstance(a, dict)
        )
        critical = ", ".join(text(f) for f in w.get("critical_features") or [])
        cells = [
            readable(w.get("index", i)),
            readable(w.get("week")),
            moment(w.get("start"), NA),
            text(w.get("phase")) or NA,
            readable(w.get("rows")),
            text(w.get("champion")) or NA,
            pct(number(w.get("realized_accuracy"), f"windows[{i}].realized_accuracy")),
            pct(number(w.get("label_coverage"), f"windows[{i}].label_coverage"), 0),
            pct(number(w.get("estimated_accuracy"), f"windows[{i}].estimated_accuracy")),
            pct(number(w.get("drifted_share"), f"windows[{i}].drifted_share"), 0),
            NA if drift is None else ("yes" if drift else "no"),
            critical or "none",
            _fixed(number(w.get("latency_p50_ms"), f"windows[{i}].latency_p50_ms"), 2),
            _fixed(number(w.get("latency_p99_ms"), f"windows[{i}].latency_p99_ms"), 2),
            alerts or "none",
            verdict,
        ]
        rows.append(row([e(c) for c in cells], text=_WINDOW_TEXT))
    return (
        f"<details><summary>{len(windows)} windows, one row each</summary>"
        f"{table(_WINDOW_COLUMNS, rows, text=_WINDOW_TEXT, element_id='windows')}</details>"
    )
