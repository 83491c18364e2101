"""Demo report: the story `make demo` replays, on one self-contained HTML page.

The page turns the timeline the runner records (`demo.timeline` reads it) into what a person
reads top to bottom: summary cards, four timeline charts (realized vs estimated accuracy,
drifted share, PSI per feature, latency p50/p99), an alert timeline, the summary table, the
retrain table with each gate's numbers, and every window's numbers in a collapsed table.

Every chart shares one x axis (the windows, labelled by week), shades the phases and draws a
vertical marker at each retrain (solid green when the candidate was promoted, dashed red when
it was not), so the eye can go down the page at one moment in time. The page frame and the
charts are the project's HTML kit (`monitoring.html`), as the drift report's: everything
inline, nothing fetched, every text that comes from data escaped.

    python -m demo.report --timeline t.json --out report.html [--screenshot out.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from demo.tables import pct, readable, retrain_section, summary_table, window_table
from demo.timeline import NA, Story, TimelineError, column, number, story, text, thresholds
from demo.timeline import windows as read_windows
from monitoring.html import charts
from monitoring.html.charts import (
    Cell,
    CellRow,
    Event,
    Key,
    Mark,
    Series,
    Span,
    Threshold,
    TimeAxis,
)
from monitoring.html.page import badge, card, cards, document, e, moment, row, table, write_page
from monitoring.html.screenshot import screenshot

TOP_PSI_FEATURES = 6  # more lines than this on one chart cannot be told apart

_LINE_COLOURS = ("#0969da", "#e16f24", "#1a7f37", "#8250df", "#bf3989", "#57606a", "#a40e26")
_PHASE_FILLS = ("#ffffff", "#fff8c5", "#ffebe9", "#ddf4ff", "#fbefff", "#dafbe1")
_SEVERITY_COLOURS = {"critical": "#cf222e", "warning": "#d4a72c", "info": "#54aeff"}
_PROMOTED, _REJECTED = "#1a7f37", "#cf222e"
_STYLE = """
table.gates { margin-bottom: 1rem; }
dl.numbers { margin: 0; display: grid; grid-template-columns: auto auto; gap: 0 .8rem;
             font-size: .8rem; }
dl.numbers dt { color: #57606a; }
dl.numbers dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
"""


def render_demo_report(timeline: dict[str, Any], path: str | Path) -> Path:
    """Write the demo report for `timeline` to `path` (folders are created); return the path."""
    return write_page(render_demo_html(timeline), path)


def render_demo_html(timeline: dict[str, Any]) -> str:
    """The demo report as one self-contained HTML page."""
    if not isinstance(timeline, dict):
        raise TimelineError(f"the timeline must be a JSON object, not {type(timeline).__name__}")
    windows = read_windows(timeline)
    told = story(timeline, windows)
    axis = _time_axis(told)
    limits = thresholds(timeline)
    return document(
        text(timeline.get("title")) or "Demo report",
        [
            _meta_line(timeline, windows),
            _cards(timeline, told),
            "<h2>Timeline</h2>",
            _key_legend(told),
            _accuracy_chart(windows, axis, limits),
            _drifted_share_chart(windows, axis, limits),
            _psi_chart(timeline, windows, axis, limits),
            _latency_chart(windows, axis),
            "<h2>Alerts</h2>",
            _alert_section(windows, axis, told),
            "<h2>Summary</h2>",
            summary_table(timeline.get("summary")),
            "<h2>Retrains</h2>",
            retrain_section(timeline, windows),
            "<h2>Every window</h2>",
            window_table(windows),
        ],
        style=_STYLE,
    )


def _time_axis(told: Story) -> TimeAxis:
    """The story as the charts' shared x axis: weeks under it, phases shaded, retrains marked."""
    # A week starts where the window's week differs from the one before.
    starts = [i for i in range(told.count) if i == 0 or told.weeks[i] != told.weeks[i - 1]]
    weeks = [
        (
            start,
            starts[k + 1] if k + 1 < len(starts) else told.count,
            NA if told.weeks[start] is None else f"week {told.weeks[start]}",
        )
        for k, start in enumerate(starts)
    ]
    spans = [
        Span(start, end, name, _PHASE_FILLS[j % len(_PHASE_FILLS)])
        for j, (start, end, name) in enumerate(told.phases)
    ]
    events = []
    for r in told.retrains:
        outcome = "promoted" if r.promoted else "rejected"
        mark = Mark(f"retrain-marker {outcome}", {"version": r.version}, r.tip)
        colour = _PROMOTED if r.promoted else _REJECTED
        events.append(Event(r.position, f"v{r.version}", colour, not r.promoted, mark))
    return TimeAxis(told.count, weeks, spans, events, "6-hour windows", told.window_labels)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


# ----------------------------------------------------------------------------- top of the page


def _meta_line(timeline: dict[str, Any], windows: list[dict[str, Any]]) -> str:
    facts = [
        f"model {text(timeline.get('model_name')) or NA}",
        f"seed {readable(timeline.get('seed'))}",
        f"{len(windows)} windows, {moment(windows[0].get('start'), NA)} to "
        f"{moment(windows[-1].get('end'), NA)} UTC",
        f"generated {moment(timeline.get('generated_at'), NA)} UTC",
    ]
    return f'<p class="meta" id="meta">{e("; ".join(facts))}</p>'


def _cards(timeline: dict[str, Any], told: Story) -> str:
    summary = timeline.get("summary") if isinstance(timeline.get("summary"), dict) else {}
    get = summary.get
    worst = number(get("worst_accuracy"), "summary.worst_accuracy")
    final = number(get("final_accuracy"), "summary.final_accuracy")
    baseline = number(get("baseline_accuracy"), "summary.baseline_accuracy")
    recovered = None if final is None or baseline is None else final >= baseline - 0.02
    promoted = sum(r.promoted for r in told.retrains)
    return cards(
        [
            card("Baseline accuracy", pct(baseline)),
            card("Worst accuracy", pct(worst), "alarm" if worst is not None else ""),
            card(
                "Final accuracy",
                pct(final),
                {True: "calm", False: "alarm", None: ""}[recovered],
                "final-accuracy",
            ),
            card(
                "Drift injected / detected (week)",
                f"{readable(get('drift_injected_week'))} / {readable(get('drift_detected_week'))}",
            ),
            card("Retrains (promoted)", f"{len(told.retrains)} ({promoted})"),
            card(
                "Champion",
                f"v{readable(get('champion_before'))} → v{readable(get('champion_after'))}",
            ),
        ]
    )


def _key_legend(told: Story) -> str:
    """What the shading and the vertical markers mean, once for all the charts."""
    keys = [
        Key(f"phase: {name}", _PHASE_FILLS[j % len(_PHASE_FILLS)], "box")
        for j, (_, _, name) in enumerate(told.phases)
    ]
    keys.append(Key("retrain, promoted", _PROMOTED, "rule"))
    keys.append(Key("retrain, not promoted", _REJECTED, "rule", dashed=True))
    return charts.legend(keys, "key")


# ----------------------------------------------------------------------------- charts


def _section(chart_id: str, title: str, series: list[Series], svg: str, note: str = "") -> str:
    keys = [Key(s.label, s.colour, "line", s.dashed) for s in series]
    note_html = f'<p class="note">{e(note)}</p>' if note else ""
    return (
        f'<section class="timeline-chart" id="section-{chart_id}"><h3>{e(title)}</h3>'
        f"{charts.legend(keys)}{svg}{note_html}</section>"
    )


def _accuracy_chart(windows: list[dict[str, Any]], axis: TimeAxis, t: dict[str, float]) -> str:
    series = [
        Series("realized", "realized accuracy", column(windows, "realized_accuracy"), "#0969da"),
        Series(
            "estimated",
            "estimated accuracy (from confidence)",
            column(windows, "estimated_accuracy"),
            "#e16f24",
            dashed=True,
        ),
    ]
    if any(w.get("mature_window") is not None for w in windows):
        # With late labels: at each pass, what the labels vouched for then, the most recent
        # mature window's accuracy, days behind the final curve above.
        series.append(
            Series(
                "mature",
                "realized accuracy known at the time (most recent mature window)",
                column(windows, "mature_accuracy"),
                "#8250df",
            )
        )
    coverage = column(windows, "label_coverage")
    floor = t["accuracy_floor"]
    title = "Accuracy: realized vs estimated"
    svg = charts.line_chart(
        "chart-accuracy",
        title,
        axis,
        series,
        ticks=charts.percent,
        thresholds=[Threshold(floor, f"retrain floor {floor:.0%}", "#cf222e")],
        extra_tips={"label coverage": [pct(c, 0) for c in coverage]},
    )
    note = (
        f"Realized accuracy is computed from the labels that arrived; label coverage averaged "
        f"{pct(_mean(coverage), 0)} of the rows where known, and a window without labels has "
        "no point."
    )
    if len(series) > 2:
        note = (
            "Realized accuracy (blue) is each window's, once all its labels came in. Labels "
            "came days late: at each pass the realized accuracy known then (purple) was that of "
            "the most recent window whose labels were in, which is why a fall shows there days "
            "after it began, while the estimate (orange) cannot see it at all."
        )
    return _section("accuracy", title, series, svg, note)


def _drifted_share_chart(windows: list[dict[str, Any]], axis: TimeAxis, t: dict[str, float]) -> str:
    shares = column(windows, "drifted_share")
    series = [Series("drifted_share", "drifted share", shares, "#8250df")]
    limit = t["drift_share_threshold"]
    # From 0, up to the highest share (or the threshold) with headroom, never past 100%.
    top = min(1.0, 1.15 * max([limit, *(v for v in shares if v is not None)]))
    dataset = [
        NA if w.get("dataset_drift") is None else ("yes" if w.get("dataset_drift") else "no")
        for w in windows
    ]
    drifted = [", ".join(text(f) for f in w.get("drifted_features") or []) for w in windows]
    title = "Share of features drifted"
    svg = charts.line_chart(
        "chart-drifted-share",
        title,
        axis,
        series,
        ticks=charts.percent,
        thresholds=[Threshold(limit, f"dataset drift from {limit:.0%}", "#cf222e")],
        fixed_range=(0.0, top),
        extra_tips={"dataset drift": dataset, "drifted": [d or "none" for d in drifted]},
    )
    return _section("drifted-share", title, series, svg)


def _psi_chart(
    timeline: dict[str, Any], windows: list[dict[str, Any]], axis: TimeAxis, t: dict[str, float]
) -> str:
    features = [text(f) for f in timeline.get("features") or []]
    for window in windows:  # a feature only in the windows still gets its line
        psi = window.get("psi")
        if psi is not None and not isinstance(psi, dict):
            raise TimelineError(f"windows[{window.get('index')}].psi must be an object or null")
        for name in psi or {}:
            if text(name) not in features:
                features.append(text(name))
    values = {
        name: [
            number((w.get("psi") or {}).get(name), f"windows[{i}].psi[{name!r}]")
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
        Series(f"psi-{i}", name, values[name], _LINE_COLOURS[i % len(_LINE_COLOURS)])
        for i, name in enumerate(shown)
    ]
    lines = [
        Threshold(t["psi_warning"], f"warning {t['psi_warning']:g}", "#bf8700"),
        Threshold(t["psi_critical"], f"critical {t['psi_critical']:g}", "#cf222e"),
    ]
    hidden = [f"{name} (max {peak[name]:.3f})" for name in ranked[TOP_PSI_FEATURES:]]
    untested = [name for name in features if peak[name] is None]
    notes = []
    if hidden:
        notes.append(f"Not drawn, lower peaks: {', '.join(hidden)}.")
    if untested:
        notes.append(f"Never tested: {', '.join(untested)}.")
    title = f"PSI per feature (the {len(shown)} highest peaks of {len(features)} features)"
    svg = charts.line_chart(
        "chart-psi",
        title,
        axis,
        series,
        ticks=lambda value: f"{value:g}",
        thresholds=lines,
        floor_zero=True,
    )
    return _section("psi", title, series, svg, " ".join(notes))


def _latency_chart(windows: list[dict[str, Any]], axis: TimeAxis) -> str:
    series = [
        Series("p50", "p50", column(windows, "latency_p50_ms"), "#0969da"),
        Series("p99", "p99", column(windows, "latency_p99_ms"), "#cf222e", dashed=True),
    ]
    title = "/predict latency (ms)"
    svg = charts.line_chart(
        "chart-latency", title, axis, series, ticks=lambda value: f"{value:g} ms", floor_zero=True
    )
    return _section("latency", title, series, svg)


# ----------------------------------------------------------------------------- alerts


def _alert_section(windows: list[dict[str, Any]], axis: TimeAxis, told: Story) -> str:
    """Which alert fired in which window: one row per alert, one cell per window."""
    fired: dict[str, dict[int, dict[str, Any]]] = {}
    for position, window in enumerate(windows):
        alerts = window.get("alerts") or []
        if not isinstance(alerts, list):
            raise TimelineError(f"windows[{position}].alerts must be a list or null")
        for alert in alerts:
            if not isinstance(alert, dict):
                raise TimelineError(f"windows[{position}].alerts holds {alert!r}, not an object")
            name = text(alert.get("name")) or "unnamed alert"
            fired.setdefault(name, {}).setdefault(position, alert)
    if not fired:
        return '<p class="note" id="alerts-none">No alert fired in any window.</p>'

    names = sorted(fired, key=lambda n: (min(fired[n]), n))
    rows = []
    for name in names:
        cells = {}
        for position, alert in fired[name].items():
            severity = text(alert.get("severity")) or "unknown"
            tip = (
                f"{name} ({severity}) in {told.window_labels[position]}: "
                f"{text(alert.get('summary')) or 'no summary'}"
            )
            colour = _SEVERITY_COLOURS.get(severity, "#8c959f")
            cells[position] = Cell(colour, Mark(f"alert-cell {severity}", tip=tip))
        rows.append(CellRow(name, Mark("alert-row", {"alert": name}, name), cells))
    svg = charts.cell_chart("chart-alerts", "Alert timeline", axis, rows)
    keys = [Key(severity, colour, "box") for severity, colour in _SEVERITY_COLOURS.items()]

    lines = []
    for name in names:
        hits = fired[name]
        first, last = min(hits), max(hits)
        severities = sorted({text(a.get("severity")) or "unknown" for a in hits.values()})
        summary = next((text(a.get("summary")) for a in hits.values() if a.get("summary")), "")
        cells = [
            e(name),
            " ".join(badge(s, s) for s in severities),
            str(len(hits)),
            e(told.short_labels[first]),
            e(told.short_labels[last]),
            e(summary or NA),
        ]
        lines.append(row(cells, text={1, 3, 4, 5}, attrs={"data-alert": name}))
    head = ["Alert", "Severity", "Windows", "First window (UTC)", "Last window (UTC)", "Summary"]
    return (
        f'<section class="timeline-chart" id="section-alerts">{charts.legend(keys)}{svg}'
        f"</section>{table(head, lines, text={1, 3, 4, 5}, element_id='alerts')}"
    )


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
