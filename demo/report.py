"""Demo report: the story `make demo` replays, on one self-contained HTML page.

The demo runner (`demo.run`) records a *timeline*: one entry per simulated six-hour
window (accuracy realized and estimated, drifted share, PSI per feature, latency, alerts, the
retrain decision), the phases of the simulation, every retrain with its three gates, and a
summary. This module turns that JSON-ready dict into a page a person reads top to bottom:
summary cards, four timeline charts (realized vs estimated accuracy, drifted share, PSI per
feature, latency p50/p99), an alert timeline, the summary table, the retrain table with each
gate's numbers, and every window's numbers in a collapsed table.

Every chart shares one x axis (the windows, labelled by week), shades the phases and draws a
vertical marker at each retrain (solid green when the candidate was promoted, dashed red when
it was not), so the eye can go down the page at one moment in time. Like `html_report`, the page
carries everything inline (styles, hand-built SVG; no script, no external CSS, fonts or URL)
and escapes every text that comes from data. A key that is missing or null shows as "n/a".

    python -m demo.report --timeline t.json --out report.html [--screenshot out.png]
"""

from __future__ import annotations

import argparse
import html
import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data.settings import Settings

# The thresholds drawn on the charts are the stack's defaults, the values the drift check and
# the retrain policy use unless the environment says otherwise; a timeline may carry its own
# under "thresholds" (the run's settings), which then win.
_DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
PSI_WARNING: float = _DEFAULTS["PSI_WARNING"]
PSI_CRITICAL: float = _DEFAULTS["PSI_CRITICAL"]
DRIFT_SHARE_THRESHOLD: float = _DEFAULTS["DRIFT_SHARE_THRESHOLD"]
ACCURACY_FLOOR: float = _DEFAULTS["RETRAIN_ACCURACY_FLOOR"]

TOP_PSI_FEATURES = 6  # more lines than this on one chart cannot be told apart
NA = "n/a"

# Headless Chromium on a closed network: without the background-networking flags it keeps
# trying to reach Google's hosts; a fresh profile keeps runs independent of each other.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)

# Chart geometry (SVG user units; the SVG scales down with the page). The left margin is wide
# enough for alert names, and the same on every chart so that the x axes line up.
_WIDTH = 1060
_LEFT = 140
_RIGHT = 16
_PLOT_W = _WIDTH - _LEFT - _RIGHT
_TOP = 22  # room for the phase names and retrain versions
_AXIS = 34  # week labels under the plot
_LINE_COLOURS = ("#0969da", "#e16f24", "#1a7f37", "#8250df", "#bf3989", "#57606a", "#a40e26")
_PHASE_FILLS = ("#ffffff", "#fff8c5", "#ffebe9", "#ddf4ff", "#fbefff", "#dafbe1")
_DASH = ' stroke-dasharray="5 3"'
_SEVERITY_COLOURS = {"critical": "#cf222e", "warning": "#d4a72c", "info": "#54aeff"}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1f2328; background: #fff; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1rem; margin: 1.2rem 0 .25rem; }
.meta, .note { color: #57606a; font-size: .85rem; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem .9rem; flex: 1 1 auto;
        min-width: 8rem; }
.card .label { font-size: .8rem; color: #57606a; }
.card .value { font-size: 1.3rem; font-weight: 600; }
.card.alarm { border-color: #cf222e; background: #ffebe9; }
.card.calm { border-color: #1a7f37; background: #dafbe1; }
.legend { font-size: .85rem; color: #57606a; margin: .2rem 0; }
.legend .item { display: inline-block; margin-right: 1rem; white-space: nowrap; }
.legend svg { vertical-align: middle; margin-right: .25rem; }
svg.chart { display: block; width: 100%; height: auto; }
svg text { font-size: 11px; fill: #57606a; }
svg text.phase { font-size: 10px; fill: #6e7781; }
svg text.retrain-label { font-size: 10px; font-weight: 600; }
.promoted text { fill: #1a7f37; }
.rejected text { fill: #cf222e; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; margin: .5rem 0; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3rem .45rem; text-align: right;
         vertical-align: top; }
th:first-child, td:first-child, .text { text-align: left; }
thead th { background: #f6f8fa; }
table.kv { width: auto; min-width: 28rem; }
.badge { border-radius: 1rem; padding: .05rem .55rem; font-size: .78rem; font-weight: 600;
         white-space: nowrap; }
.badge.passed, .badge.promoted { background: #1a7f37; color: #fff; }
.badge.failed, .badge.rejected { background: #cf222e; color: #fff; }
.badge.critical { background: #cf222e; color: #fff; }
.badge.warning { background: #bf8700; color: #fff; }
.badge.info, .badge.unknown { background: #eaeef2; color: #57606a; }
dl.numbers { margin: 0; display: grid; grid-template-columns: auto auto; gap: 0 .8rem;
             font-size: .8rem; }
dl.numbers dt { color: #57606a; }
dl.numbers dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
details summary { cursor: pointer; color: #0969da; margin: .5rem 0; }
"""


class TimelineError(ValueError):
    """The timeline is not one this report can draw; the message names the field."""


@dataclass(frozen=True)
class _Marker:
    position: int
    version: str
    promoted: bool
    tip: str


@dataclass(frozen=True)
class _Axis:
    """What every chart shares: the windows, their weeks, the phases and the retrains."""

    count: int
    weeks: list[Any]
    phases: list[tuple[int, int, str]]  # (first position, position after the last, name)
    markers: list[_Marker]
    window_labels: list[str]  # for tooltips: week, window index, start
    short_labels: list[str]  # for tables: window index and start

    def x(self, position: float) -> float:
        """The centre of window `position`."""
        return _LEFT + (position + 0.5) * _PLOT_W / self.count

    def edge(self, position: float) -> float:
        """The left edge of window `position` (the right edge of the one before)."""
        return _LEFT + position * _PLOT_W / self.count


@dataclass(frozen=True)
class _Series:
    key: str
    label: str
    values: list[float | None]
    colour: str
    dashed: bool = False


def render_demo_report(timeline: dict[str, Any], path: str | Path) -> Path:
    """Write the demo report for `timeline` to `path` (folders are created); return the path."""
    path = Path(path)
    page = render_demo_html(timeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def render_demo_html(timeline: dict[str, Any]) -> str:
    """The demo report as one self-contained HTML page."""
    if not isinstance(timeline, dict):
        raise TimelineError(f"the timeline must be a JSON object, not {type(timeline).__name__}")
    windows = _windows(timeline)
    axis = _axis(timeline, windows)
    thresholds = _thresholds(timeline)
    title = _text(timeline.get("title")) or "Demo report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _meta_line(timeline, windows),
        _cards(timeline, axis),
        "<h2>Timeline</h2>",
        _key_legend(timeline, axis),
        _accuracy_chart(windows, axis, thresholds),
        _drifted_share_chart(windows, axis, thresholds),
        _psi_chart(timeline, windows, axis, thresholds),
        _latency_chart(windows, axis),
        "<h2>Alerts</h2>",
        _alert_section(windows, axis),
        "<h2>Summary</h2>",
        _summary_table(timeline.get("summary")),
        "<h2>Retrains</h2>",
        _retrain_section(timeline, windows),
        "<h2>Every window</h2>",
        _window_table(windows),
        "</body></html>",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- reading input


def _windows(timeline: dict[str, Any]) -> list[dict[str, Any]]:
    windows = timeline.get("windows")
    if not isinstance(windows, list):
        raise TimelineError("timeline 'windows' must be a list of windows, one per 6-hour window")
    if not windows:
        raise TimelineError("timeline 'windows' is empty: there is nothing to draw")
    for position, window in enumerate(windows):
        if not isinstance(window, dict):
            raise TimelineError(f"windows[{position}] must be an object, not {window!r}")
    return windows


def _number(value: Any, where: str) -> float | None:
    """A number from the timeline; None when absent, null or not finite (shown as n/a)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TimelineError(f"{where} must be a number or null, not {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def _column(windows: list[dict[str, Any]], key: str) -> list[float | None]:
    return [_number(w.get(key), f"windows[{i}].{key}") for i, w in enumerate(windows)]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _axis(timeline: dict[str, Any], windows: list[dict[str, Any]]) -> _Axis:
    # Phases and retrains name windows by their "index"; the chart places them by position.
    position_of: dict[Any, int] = {}
    for position, window in enumerate(windows):
        position_of.setdefault(window.get("index", position), position)

    starts = []
    for i, phase in enumerate(timeline.get("phases") or []):
        if not isinstance(phase, dict):
            raise TimelineError(f"phases[{i}] must be an object, not {phase!r}")
        start = phase.get("start_window")
        if start not in position_of:
            raise TimelineError(
                f"phases[{i}].start_window {start!r} is not the index of any window"
            )
        starts.append((position_of[start], _text(phase.get("name"))))
    starts.sort()
    phases = [
        (start, starts[j + 1][0] if j + 1 < len(starts) else len(windows), name)
        for j, (start, name) in enumerate(starts)
    ]

    markers = []
    for i, retrain in enumerate(timeline.get("retrains") or []):
        if not isinstance(retrain, dict):
            raise TimelineError(f"retrains[{i}] must be an object, not {retrain!r}")
        window = retrain.get("window")
        if window not in position_of:
            raise TimelineError(f"retrains[{i}].window {window!r} is not the index of any window")
        version = _text(retrain.get("version")) or "?"
        promoted = retrain.get("promoted") is True
        tip = (
            f"v{version} {'promoted' if promoted else 'not promoted'} at window {window}: "
            f"{_text(retrain.get('reason')) or 'no reason given'}"
        )
        markers.append(_Marker(position_of[window], version, promoted, tip))

    labels = [
        f"week {_text(w.get('week')) or NA}, window {w.get('index', i)} "
        f"({_moment(w.get('start'))} UTC)"
        for i, w in enumerate(windows)
    ]
    short = [f"{w.get('index', i)}: {_moment(w.get('start'))}" for i, w in enumerate(windows)]
    return _Axis(len(windows), [w.get("week") for w in windows], phases, markers, labels, short)


def _thresholds(timeline: dict[str, Any]) -> dict[str, float]:
    given = timeline.get("thresholds") or {}
    values = {
        "psi_warning": PSI_WARNING,
        "psi_critical": PSI_CRITICAL,
        "drift_share_threshold": DRIFT_SHARE_THRESHOLD,
        "accuracy_floor": ACCURACY_FLOOR,
    }
    for key in values:
        number = _number(given.get(key), f"thresholds.{key}")
        if number is not None:
            values[key] = number
    return values


# ----------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _pct(value: float | None, digits: int = 1) -> str:
    return NA if value is None else f"{value:.{digits}%}"


def _fixed(value: float | None, digits: int = 3, unit: str = "") -> str:
    return NA if value is None else f"{value:.{digits}f}{unit}"


def _any(value: Any) -> str:
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
        return ", ".join(_any(v) for v in value) or "none"
    return str(value)


def _moment(text: Any) -> str:
    """An ISO time to the minute, in UTC."""
    if not text:
        return NA
    try:
        return datetime.fromisoformat(str(text)).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(text)


def _duration(seconds: Any) -> str:
    seconds = _number(seconds, "summary.duration_seconds")
    if seconds is None:
        return NA
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _badge(css: str, text: str) -> str:
    return f'<span class="badge {_e(css)}">{_e(text)}</span>'


def _card(label: str, value: str, css: str = "", element_id: str = "") -> str:
    id_attr = f' id="{element_id}"' if element_id else ""
    return (
        f'<div class="card {css}"{id_attr}><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div></div>'
    )


# ----------------------------------------------------------------------------- top of the page


def _meta_line(timeline: dict[str, Any], windows: list[dict[str, Any]]) -> str:
    facts = [
        f"model {_text(timeline.get('model_name')) or NA}",
        f"seed {_any(timeline.get('seed'))}",
        f"{len(windows)} windows, {_moment(windows[0].get('start'))} to "
        f"{_moment(windows[-1].get('end'))} UTC",
        f"generated {_moment(timeline.get('generated_at'))} UTC",
    ]
    return f'<p class="meta" id="meta">{_e("; ".join(facts))}</p>'


def _cards(timeline: dict[str, Any], axis: _Axis) -> str:
    summary = timeline.get("summary") if isinstance(timeline.get("summary"), dict) else {}
    get = summary.get
    worst = _number(get("worst_accuracy"), "summary.worst_accuracy")
    final = _number(get("final_accuracy"), "summary.final_accuracy")
    baseline = _number(get("baseline_accuracy"), "summary.baseline_accuracy")
    recovered = None if final is None or baseline is None else final >= baseline - 0.02
    promoted = sum(m.promoted for m in axis.markers)
    cards = [
        _card("Baseline accuracy", _pct(baseline)),
        _card("Worst accuracy", _pct(worst), "alarm" if worst is not None else ""),
        _card(
            "Final accuracy",
            _pct(final),
            {True: "calm", False: "alarm", None: ""}[recovered],
            "final-accuracy",
        ),
        _card(
            "Drift injected / detected (week)",
            f"{_any(get('drift_injected_week'))} / {_any(get('drift_detected_week'))}",
        ),
        _card("Retrains (promoted)", f"{len(axis.markers)} ({promoted})"),
        _card(
            "Champion",
            f"v{_any(get('champion_before'))} → v{_any(get('champion_after'))}",
        ),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def _key_legend(timeline: dict[str, Any], axis: _Axis) -> str:
    """What the shading and the vertical markers mean, once for all the charts."""
    items = []
    for j, (_, _, name) in enumerate(axis.phases):
        fill = _PHASE_FILLS[j % len(_PHASE_FILLS)]
        items.append(
            '<span class="item"><svg width="18" height="12">'
            f'<rect width="18" height="12" fill="{fill}" stroke="#d0d7de"/></svg>'
            f"phase: {_e(name)}</span>"
        )
    items.append(
        '<span class="item"><svg width="18" height="12"><line x1="9" x2="9" y1="0" y2="12" '
        'stroke="#1a7f37" stroke-width="2"/></svg>retrain, promoted</span>'
    )
    items.append(
        '<span class="item"><svg width="18" height="12"><line x1="9" x2="9" y1="0" y2="12" '
        'stroke="#cf222e" stroke-width="2" stroke-dasharray="3 2"/></svg>'
        "retrain, not promoted</span>"
    )
    return f'<div class="legend" id="key">{"".join(items)}</div>'


# ----------------------------------------------------------------------------- charts


def _accuracy_chart(windows: list[dict[str, Any]], axis: _Axis, t: dict[str, float]) -> str:
    series = [
        _Series("realized", "realized accuracy", _column(windows, "realized_accuracy"), "#0969da"),
        _Series(
            "estimated",
            "estimated accuracy (from confidence)",
            _column(windows, "estimated_accuracy"),
            "#e16f24",
            dashed=True,
        ),
    ]
    coverage = _column(windows, "label_coverage")
    lines = [(t["accuracy_floor"], f"retrain floor {t['accuracy_floor']:.0%}", "#cf222e")]
    note = (
        f"Realized accuracy is computed from the labels that arrived; label coverage averaged "
        f"{_pct(_mean(coverage), 0)} of the rows where known, and a window without labels has "
        "no point."
    )
    return _line_chart(
        "accuracy",
        "Accuracy: realized vs estimated",
        axis,
        series,
        _pct_ticks,
        lines,
        note,
        extra_tips={"label coverage": [_pct(c, 0) for c in coverage]},
    )


def _drifted_share_chart(windows: list[dict[str, Any]], axis: _Axis, t: dict[str, float]) -> str:
    shares = _column(windows, "drifted_share")
    series = [_Series("drifted_share", "drifted share", shares, "#8250df")]
    limit = t["drift_share_threshold"]
    # From 0, up to the highest share (or the threshold) with headroom, never past 100%.
    top = min(1.0, 1.15 * max([limit, *(v for v in shares if v is not None)]))
    lines = [(limit, f"dataset drift from {limit:.0%}", "#cf222e")]
    dataset = [
        NA if w.get("dataset_drift") is None else ("yes" if w.get("dataset_drift") else "no")
        for w in windows
    ]
    drifted = [", ".join(_text(f) for f in w.get("drifted_features") or []) for w in windows]
    return _line_chart(
        "drifted-share",
        "Share of features drifted",
        axis,
        series,
        _pct_ticks,
        lines,
        "",
        fixed_range=(0.0, top),
        extra_tips={"dataset drift": dataset, "drifted": [d or "none" for d in drifted]},
    )


def _psi_chart(
    timeline: dict[str, Any], windows: list[dict[str, Any]], axis: _Axis, t: dict[str, float]
) -> str:
    features = [_text(f) for f in timeline.get("features") or []]
    for window in windows:  # a feature only in the windows still gets its line
        psi = window.get("psi")
        if psi is not None and not isinstance(psi, dict):
            raise TimelineError(f"windows[{window.get('index')}].psi must be an object or null")
        for name in psi or {}:
            if _text(name) not in features:
                features.append(_text(name))
    values = {
        name: [
            _number((w.get("psi") or {}).get(name), f"windows[{i}].psi[{name!r}]")
            for i, w in enumerate(windows)
        ]
        for name in features
    }
    peak = {n: max((v for v in vs if v is not None), default=None) for n, vs in values.items()}
    ranked = sorted(
        (name for name in features if peak[name] is not None), key=lambda n: -(peak[n] or 0)
    )
    shown = ranked[:TOP_PSI_FEATURES]
    series = [
        _Series(f"psi-{i}", name, values[name], _LINE_COLOURS[i % len(_LINE_COLOURS)])
        for i, name in enumerate(shown)
    ]
    lines = [
        (t["psi_warning"], f"warning {t['psi_warning']:g}", "#bf8700"),
        (t["psi_critical"], f"critical {t['psi_critical']:g}", "#cf222e"),
    ]
    hidden = [f"{name} (max {peak[name]:.3f})" for name in ranked[TOP_PSI_FEATURES:]]
    untested = [name for name in features if peak[name] is None]
    notes = []
    if hidden:
        notes.append(f"Not drawn, lower peaks: {', '.join(hidden)}.")
    if untested:
        notes.append(f"Never tested: {', '.join(untested)}.")
    return _line_chart(
        "psi",
        f"PSI per feature (the {len(shown)} highest peaks of {len(features)} features)",
        axis,
        series,
        _plain_ticks,
        lines,
        " ".join(notes),
        floor_zero=True,
    )


def _latency_chart(windows: list[dict[str, Any]], axis: _Axis) -> str:
    series = [
        _Series("p50", "p50", _column(windows, "latency_p50_ms"), "#0969da"),
        _Series("p99", "p99", _column(windows, "latency_p99_ms"), "#cf222e", dashed=True),
    ]
    return _line_chart(
        "latency",
        "/predict latency (ms)",
        axis,
        series,
        _ms_ticks,
        [],
        "",
        floor_zero=True,
    )


def _line_chart(
    chart_id: str,
    title: str,
    axis: _Axis,
    series: list[_Series],
    tick_format: Any,
    lines: list[tuple[float, str, str]],
    note: str,
    *,
    fixed_range: tuple[float, float] | None = None,
    floor_zero: bool = False,
    extra_tips: dict[str, list[str]] | None = None,
) -> str:
    plot_h = 170
    height = _TOP + plot_h + _AXIS
    known = [v for s in series for v in s.values if v is not None]
    if fixed_range:
        low, high = fixed_range
    else:
        reach = known + [value for value, _, _ in lines]
        low, high = (min(reach), max(reach)) if reach else (0.0, 1.0)
        if floor_zero:
            low = 0.0
        pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
        low = low if floor_zero else low - pad
        high += pad
    ticks = _nice_ticks(low, high)
    low, high = min(low, ticks[0]), max(high, ticks[-1])

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - (value - low) / (high - low))

    items = [_frame(axis, _TOP, plot_h)]
    for tick in ticks:
        items.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#eaeef2"/>'
            f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
            f"{_e(tick_format(tick))}</text>"
        )
    for value, label, colour in lines:
        items.append(
            f'<g class="threshold" data-value="{value:g}"><line x1="{_LEFT}" '
            f'x2="{_WIDTH - _RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="{colour}" '
            f'stroke-width="1" stroke-dasharray="5 4"/><text x="{_WIDTH - _RIGHT - 4}" '
            f'y="{y(value) - 4:.1f}" text-anchor="end" style="fill:{colour}">{_e(label)}</text>'
            "</g>"
        )
    for s in series:
        items.append(_polyline(s, axis, y))
    items.append(_markers(axis, _TOP, plot_h))
    items.append(_hover_columns(axis, series, _TOP, plot_h, extra_tips or {}))
    svg = (
        f'<svg class="chart" id="chart-{chart_id}" role="img" aria-label="{_e(title)}" '
        f'viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}">'
        f"{''.join(items)}</svg>"
    )
    legend = "".join(
        '<span class="item"><svg width="22" height="10">'
        f'<line x1="0" x2="22" y1="5" y2="5" stroke="{s.colour}" stroke-width="2"'
        f"{_DASH if s.dashed else ''}/></svg>{_e(s.label)}</span>"
        for s in series
    )
    note_html = f'<p class="note">{_e(note)}</p>' if note else ""
    return (
        f'<section class="timeline-chart" id="section-{chart_id}"><h3>{_e(title)}</h3>'
        f'<div class="legend">{legend}</div>{svg}{note_html}</section>'
    )


def _frame(axis: _Axis, top: float, plot_h: float, *, phase_names: bool = True) -> str:
    """Phase bands, week boundaries and week labels: the backdrop every chart shares."""
    items = []
    for j, (start, end, name) in enumerate(axis.phases):
        fill = _PHASE_FILLS[j % len(_PHASE_FILLS)]
        x0, x1 = axis.edge(start), axis.edge(end)
        items.append(
            f'<g class="phase-band" data-phase="{_e(name)}"><title>{_e(name)}</title>'
            f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{plot_h}" '
            f'fill="{fill}"/>'
            + (
                f'<text class="phase" x="{x0 + 3:.1f}" y="{top + 11}">{_e(name)}</text>'
                if phase_names
                else ""
            )
            + "</g>"
        )
    bottom = top + plot_h
    items.append(
        f'<rect x="{_LEFT}" y="{top}" width="{_PLOT_W}" height="{plot_h}" fill="none" '
        'stroke="#d0d7de"/>'
    )
    # A week starts where the window's week differs from the one before.
    starts = [i for i in range(axis.count) if i == 0 or axis.weeks[i] != axis.weeks[i - 1]]
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else axis.count
        x0 = axis.edge(start)
        if start:
            items.append(
                f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{top}" y2="{bottom + 6}" stroke="#afb8c1"/>'
            )
        week = axis.weeks[start]
        label = NA if week is None else f"week {week}"
        centre = (x0 + axis.edge(end)) / 2
        items.append(
            f'<text class="week" x="{centre:.1f}" y="{bottom + 16}" text-anchor="middle">'
            f"{_e(label)}</text>"
        )
    items.append(
        f'<text x="{_LEFT + _PLOT_W / 2:.1f}" y="{bottom + 30}" text-anchor="middle">'
        "6-hour windows</text>"
    )
    return "".join(items)


def _markers(axis: _Axis, top: float, plot_h: float) -> str:
    items = []
    for m in axis.markers:
        css = "promoted" if m.promoted else "rejected"
        colour = "#1a7f37" if m.promoted else "#cf222e"
        dash = "" if m.promoted else ' stroke-dasharray="4 3"'
        x = axis.x(m.position)
        items.append(
            f'<g class="retrain-marker {css}" data-version="{_e(m.version)}">'
            f"<title>{_e(m.tip)}</title>"
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + plot_h}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text class="retrain-label" x="{x:.1f}" y="{top - 7}" text-anchor="middle">'
            f"v{_e(m.version)}</text></g>"
        )
    return "".join(items)


def _polyline(s: _Series, axis: _Axis, y: Any) -> str:
    """The series as lines through its known points, broken where a value is missing."""
    runs: list[list[tuple[float, float]]] = [[]]
    for position, value in enumerate(s.values):
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((axis.x(position), y(value)))
    dash = _DASH if s.dashed else ""
    shapes = []
    for run in runs:
        if len(run) == 1:  # a lone value between gaps would be invisible as a line
            (x, yy) = run[0]
            shapes.append(f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="2.5" fill="{s.colour}"/>')
        elif run:
            points = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in run)
            shapes.append(
                f'<polyline points="{points}" fill="none" stroke="{s.colour}" '
                f'stroke-width="1.8" stroke-linejoin="round"{dash}/>'
            )
    return (
        f'<g class="series" data-series="{_e(s.key)}"><title>{_e(s.label)}</title>'
        f"{''.join(shapes)}</g>"
    )


def _hover_columns(
    axis: _Axis,
    series: list[_Series],
    top: float,
    plot_h: float,
    extra: dict[str, list[str]],
) -> str:
    """An invisible column per window whose tooltip gives that window's numbers."""
    step = _PLOT_W / axis.count
    items = []
    for position in range(axis.count):
        facts = [axis.window_labels[position]]
        facts += [f"{s.label}: {_any(s.values[position])}" for s in series]
        facts += [f"{name}: {values[position]}" for name, values in extra.items()]
        items.append(
            f'<rect x="{axis.edge(position):.1f}" y="{top}" width="{step:.2f}" '
            f'height="{plot_h}" fill="transparent"><title>{_e(chr(10).join(facts))}</title></rect>'
        )
    return f'<g class="hover">{"".join(items)}</g>'


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    span = high - low
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _pct_ticks(value: float) -> str:
    return f"{value:.0%}" if abs(value * 100 - round(value * 100)) < 1e-9 else f"{value:.1%}"


def _plain_ticks(value: float) -> str:
    return f"{value:g}"


def _ms_ticks(value: float) -> str:
    return f"{value:g} ms"


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


# ----------------------------------------------------------------------------- alerts


def _alert_section(windows: list[dict[str, Any]], axis: _Axis) -> str:
    """Which alert fired in which window: one row per alert, one cell per window."""
    fired: dict[str, dict[int, dict[str, Any]]] = {}
    for position, window in enumerate(windows):
        alerts = window.get("alerts") or []
        if not isinstance(alerts, list):
            raise TimelineError(f"windows[{position}].alerts must be a list or null")
        for alert in alerts:
            if not isinstance(alert, dict):
                raise TimelineError(f"windows[{position}].alerts holds {alert!r}, not an object")
            name = _text(alert.get("name")) or "unnamed alert"
            fired.setdefault(name, {}).setdefault(position, alert)
    if not fired:
        return '<p class="note" id="alerts-none">No alert fired in any window.</p>'

    names = sorted(fired, key=lambda n: (min(fired[n]), n))
    row_h = 18
    plot_h = row_h * len(names)
    height = _TOP + plot_h + _AXIS
    step = _PLOT_W / axis.count
    # The rows would hide the phase names; the key above the charts names the shading.
    items = [_frame(axis, _TOP, plot_h, phase_names=False)]
    for r, name in enumerate(names):
        y = _TOP + r * row_h
        shown = name if len(name) <= 22 else name[:21] + "…"
        items.append(
            f'<g class="alert-row" data-alert="{_e(name)}"><title>{_e(name)}</title>'
            f'<text x="{_LEFT - 6}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">'
            f"{_e(shown)}</text>"
        )
        for position, alert in sorted(fired[name].items()):
            severity = _text(alert.get("severity")) or "unknown"
            colour = _SEVERITY_COLOURS.get(severity, "#8c959f")
            tip = (
                f"{name} ({severity}) in {axis.window_labels[position]}: "
                f"{_text(alert.get('summary')) or 'no summary'}"
            )
            items.append(
                f'<rect class="alert-cell {_e(severity)}" x="{axis.edge(position):.1f}" '
                f'y="{y + 3}" width="{max(step, 1.5):.2f}" height="{row_h - 6}" '
                f'fill="{colour}"><title>{_e(tip)}</title></rect>'
            )
        items.append("</g>")
    items.append(_markers(axis, _TOP, plot_h))
    svg = (
        f'<svg class="chart" id="chart-alerts" role="img" aria-label="Alert timeline" '
        f'viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}">'
        f"{''.join(items)}</svg>"
    )
    legend = "".join(
        f'<span class="item"><svg width="12" height="12"><rect width="12" height="12" '
        f'fill="{colour}"/></svg>{severity}</span>'
        for severity, colour in _SEVERITY_COLOURS.items()
    )
    rows = []
    for name in names:
        hits = fired[name]
        first, last = min(hits), max(hits)
        severities = sorted({_text(a.get("severity")) or "unknown" for a in hits.values()})
        summary = next((_text(a.get("summary")) for a in hits.values() if a.get("summary")), "")
        rows.append(
            f'<tr data-alert="{_e(name)}"><td>{_e(name)}</td>'
            f'<td class="text">{" ".join(_badge(s, s) for s in severities)}</td>'
            f'<td>{len(hits)}</td><td class="text">{_e(axis.short_labels[first])}</td>'
            f'<td class="text">{_e(axis.short_labels[last])}</td>'
            f'<td class="text">{_e(summary or NA)}</td></tr>'
        )
    table = (
        '<table id="alerts"><thead><tr><th>Alert</th><th class="text">Severity</th>'
        '<th>Windows</th><th class="text">First window (UTC)</th>'
        '<th class="text">Last window (UTC)</th>'
        f'<th class="text">Summary</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )
    return (
        f'<section class="timeline-chart" id="section-alerts"><div class="legend">{legend}</div>'
        f"{svg}</section>{table}"
    )


# ----------------------------------------------------------------------------- tables

_SUMMARY_LABELS = {
    "baseline_accuracy": ("Baseline accuracy", _pct),
    "worst_accuracy": ("Worst accuracy", _pct),
    "final_accuracy": ("Final accuracy", _pct),
    "drift_injected_week": ("Drift injected in week", _any),
    "drift_detected_week": ("Drift detected in week", _any),
    "retrains": ("Retrains", _any),
    "champion_before": ("Champion before", _any),
    "champion_after": ("Champion after", _any),
    "duration_seconds": ("Run time", _duration),
}


def _summary_table(summary: Any) -> str:
    if summary is None:
        return f'<p class="note" id="summary">No summary recorded ({NA}).</p>'
    if not isinstance(summary, dict):
        raise TimelineError(f"timeline 'summary' must be an object, not {summary!r}")
    rows = []
    for key, (label, fmt) in _SUMMARY_LABELS.items():
        value = summary.get(key)
        if fmt is _pct:
            value = _number(value, f"summary.{key}")
        rows.append(f'<tr data-key="{key}"><th>{_e(label)}</th><td>{_e(fmt(value))}</td></tr>')
    for key, value in summary.items():  # whatever else the runner chose to record
        if key not in _SUMMARY_LABELS:
            rows.append(
                f'<tr data-key="{_e(key)}"><th>{_e(key)}</th><td>{_e(_any(value))}</td></tr>'
            )
    return f'<table class="kv" id="summary"><tbody>{"".join(rows)}</tbody></table>'


def _retrain_section(timeline: dict[str, Any], windows: list[dict[str, Any]]) -> str:
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
        version = _text(retrain.get("version")) or NA
        gate_badges = " ".join(
            _badge(_gate_css(g), f"{name} {_gate_word(g)}") for name, g in gates.items()
        )
        rows.append(
            f'<tr class="retrain {outcome}" data-version="{_e(version)}">'
            f"<td>{_e(retrain.get('window', NA))}</td>"
            f'<td class="text">week {_e(window.get("week", NA))}, '
            f"{_e(_moment(window.get('start')))}</td>"
            f"<td>v{_e(version)}</td><td>v{_e(retrain.get('previous') or NA)}</td>"
            f'<td class="text">{_e(retrain.get("reason") or NA)}</td>'
            f"<td>{_e(_any(retrain.get('data_rows')))}</td>"
            f'<td class="text">{_badge(outcome, outcome_text)}</td>'
            f'<td class="text">{gate_badges or NA}</td></tr>'
        )
        details.append(_gate_table(i, version, gates))
    table = (
        '<table id="retrains"><thead><tr><th>Window</th><th class="text">When (UTC)</th>'
        '<th>Version</th><th>Previous</th><th class="text">Reason</th><th>Training rows</th>'
        '<th class="text">Outcome</th><th class="text">Gates</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return table + "".join(details)


def _gate_css(gate: Any) -> str:
    passed = gate.get("passed") if isinstance(gate, dict) else None
    return {True: "passed", False: "failed"}.get(passed, "unknown")


def _gate_word(gate: Any) -> str:
    return {"passed": "passed", "failed": "failed"}.get(_gate_css(gate), NA)


def _gate_table(i: int, version: str, gates: dict[str, Any]) -> str:
    """Each gate's verdict, reason and numbers (`training.gates.GateReport.to_dict` shape)."""
    if not gates:
        return f'<p class="note">v{_e(version)}: no gate results recorded.</p>'
    rows = []
    for name, gate in gates.items():
        gate = gate if isinstance(gate, dict) else {}
        numbers = _flatten({k: v for k, v in gate.items() if k not in ("passed", "reason")})
        listing = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_any(v))}</dd>" for k, v in numbers)
        rows.append(
            f'<tr data-gate="{_e(name)}"><td>{_e(name)}</td>'
            f'<td class="text">{_badge(_gate_css(gate), _gate_word(gate))}</td>'
            f'<td class="text">{_e(gate.get("reason") or NA)}</td>'
            f'<td class="text"><dl class="numbers">{listing}</dl></td></tr>'
        )
    return (
        f"<h3>Gates of v{_e(version)}</h3>"
        f'<table class="gates" id="gates-{i}"><thead><tr><th>Gate</th><th class="text">Result'
        '</th><th class="text">Reason</th><th class="text">Numbers</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
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


def _window_table(windows: list[dict[str, Any]]) -> str:
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
            _text(a.get("name")) for a in w.get("alerts") or [] if isinstance(a, dict)
        )
        critical = ", ".join(_text(f) for f in w.get("critical_features") or [])
        cells = [
            _any(w.get("index", i)),
            _any(w.get("week")),
            _moment(w.get("start")),
            _text(w.get("phase")) or NA,
            _any(w.get("rows")),
            _text(w.get("champion")) or NA,
            _pct(_number(w.get("realized_accuracy"), f"windows[{i}].realized_accuracy")),
            _pct(_number(w.get("label_coverage"), f"windows[{i}].label_coverage"), 0),
            _pct(_number(w.get("estimated_accuracy"), f"windows[{i}].estimated_accuracy")),
            _pct(_number(w.get("drifted_share"), f"windows[{i}].drifted_share"), 0),
            NA if drift is None else ("yes" if drift else "no"),
            critical or "none",
            _fixed(_number(w.get("latency_p50_ms"), f"windows[{i}].latency_p50_ms"), 2),
            _fixed(_number(w.get("latency_p99_ms"), f"windows[{i}].latency_p99_ms"), 2),
            alerts or "none",
            verdict,
        ]
        text_columns = {2, 3, 11, 14, 15}
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="text">{_e(c)}</td>' if k in text_columns else f"<td>{_e(c)}</td>"
                for k, c in enumerate(cells)
            )
            + "</tr>"
        )
    head = [
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
    header = "".join(
        f'<th class="text">{h}</th>' if k in {2, 3, 11, 14, 15} else f"<th>{h}</th>"
        for k, h in enumerate(head)
    )
    return (
        f"<details><summary>{len(windows)} windows, one row each</summary>"
        f'<table id="windows"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table></details>"
    )


# ----------------------------------------------------------------------------- screenshot


def chromium_binary() -> str:
    """Debian's Chromium (`make system-tools` installs it); a clear error when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise FileNotFoundError("chromium is not installed: `make system-tools` installs it")
    return found


def screenshot(
    page: str | Path, out: str | Path, *, width: int = 1200, max_height: int = 8000
) -> Path:
    """A PNG of the whole page (up to `max_height` px) as headless Chromium renders it.

    Chromium's command line shoots the window, not the page, so the window is made taller than
    the page and the white space under the content is cropped. The PNG is then reduced to a
    256-colour palette: a page of flat colours loses nothing visible and the file shrinks
    several times, which matters for an image committed to the README.
    """
    from PIL import Image  # only the screenshot needs Pillow

    page, out = Path(page).resolve(), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="demo-report-chromium-") as profile:
        raw = Path(profile) / "raw.png"
        result = subprocess.run(
            [
                chromium_binary(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={Path(profile) / 'profile'}",
                f"--window-size={width},{max_height}",
                f"--screenshot={raw}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0 or not raw.exists():
            raise RuntimeError(
                f"chromium could not take the screenshot (exit {result.returncode}): "
                f"{result.stderr.strip()[-800:]}"
            )
        with Image.open(raw) as shot:
            image = shot.convert("RGB")
    image = image.crop((0, 0, image.width, _bottom(image)))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def _bottom(image: Any) -> int:
    """Where to cut the shot: under the content, or in the last gap between sections above
    the window's bottom when the page is taller than the window (never through a chart)."""
    import numpy as np

    pixels = np.asarray(image)
    blank = (pixels == 255).all(axis=(1, 2))  # rows with nothing drawn on them
    drawn = np.flatnonzero(~blank)
    if not drawn.size:
        return image.height
    gap = 24  # rows of white that separate two sections
    if drawn[-1] < image.height - gap:  # the page ended (or a gap reaches the window's bottom)
        return int(drawn[-1]) + gap
    run = np.convolve(blank.astype(int), np.ones(gap, dtype=int), mode="valid")
    gaps = np.flatnonzero(run == gap)
    return int(gaps[-1]) + gap // 2 if gaps.size else image.height


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.report",
        description="Render the demo's timeline JSON as a self-contained HTML report.",
    )
    parser.add_argument("--timeline", required=True, type=Path, help="timeline JSON file")
    parser.add_argument("--out", required=True, type=Path, help="HTML file to write")
    parser.add_argument("--screenshot", type=Path, help="also write a PNG of the page")
    parser.add_argument("--width", type=int, default=1200, help="screenshot width in px")
    parser.add_argument(
        "--max-height", type=int, default=8000, help="crop the screenshot at this height (px)"
    )
    args = parser.parse_args(argv)
    try:
        timeline = json.loads(args.timeline.read_text(encoding="utf-8"))
    except FileNotFoundError:
        parser.error(f"--timeline {args.timeline}: no such file")
    except json.JSONDecodeError as exc:
        parser.error(f"--timeline {args.timeline}: not valid JSON ({exc})")
    try:
        page = render_demo_report(timeline, args.out)
    except TimelineError as exc:
        parser.error(f"--timeline {args.timeline}: {exc}")
    print(f"demo report: {page.resolve()}")
    if args.screenshot:
        shot = screenshot(page, args.screenshot, width=args.width, max_height=args.max_height)
        print(f"screenshot: {shot.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
