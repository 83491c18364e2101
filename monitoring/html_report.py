"""HTML drift report: one self-contained page for whoever is on call.

The page carries everything inline (styles and SVG charts; no scripts, external CSS, fonts or
CDN), because monitoring hosts often have no internet and the file is passed around as an
attachment. At the top: dataset drift yes/no, the drifted share, counts by severity, rows and
the window. Then prediction drift, a table of features sorted by severity then PSI (with the
Wasserstein distance of numerical ones), and for each feature the reference and current shares
side by side: the reference decile bins (open-ended,
plus missing) for numerical features, the categories (new ones marked) for the others.

Every piece of text that comes from data (feature and category names) is escaped: category
values come from users. `render_html` takes a `DriftReport` or its `to_dict()` output, so a
report stored as JSON can be rendered again later.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.drift_report import DriftReport

MAX_CATEGORIES = 30
_LABEL_CHARS = 18

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1rem; margin-bottom: .25rem; }
.summary { color: #444; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin: 1rem 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem .9rem; min-width: 9rem; }
.card .label { font-size: .8rem; color: #57606a; }
.card .value { font-size: 1.3rem; font-weight: 600; }
.card.alarm { border-color: #cf222e; background: #ffebe9; }
.card.calm { border-color: #1a7f37; background: #dafbe1; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { border-bottom: 1px solid #d0d7de; padding: .35rem .5rem; text-align: right; }
th:first-child, td:first-child, .text { text-align: left; }
thead th { background: #f6f8fa; }
.badge { border-radius: 1rem; padding: .1rem .6rem; font-size: .8rem; font-weight: 600; }
.badge.critical { background: #cf222e; color: #fff; }
.badge.warning { background: #bf8700; color: #fff; }
.badge.none { background: #eaeef2; color: #57606a; }
.feature { margin: 1.5rem 0; }
.facts { color: #57606a; font-size: .85rem; margin: 0 0 .4rem; }
.legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 .8rem;
               vertical-align: middle; }
svg text { font-size: 10px; fill: #57606a; }
.ref { fill: #8da0cb; }
.cur { fill: #fc8d62; }
.legend .ref { background: #8da0cb; }
.legend .cur { background: #fc8d62; }
.note { color: #57606a; font-size: .85rem; }
"""


def render_html(
    report: DriftReport | dict[str, Any],
    *,
    title: str | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> str:
    """The report as one self-contained HTML page."""
    data = report if isinstance(report, dict) else report.to_dict()
    title = title or f"Drift report: {data.get('schema', '')}"
    ranked = data.get("ranked_features") or list(data["features"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="summary" id="summary">{_e(data["summary"])}</p>',
        _cards(data),
        _prediction_section(data["prediction"], max_categories),
        "<h2>Features</h2>",
        _feature_table(data, ranked),
        *(
            _feature_section(index, name, data["features"][name], max_categories)
            for index, name in enumerate(ranked)
        ),
        _thresholds_note(data),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(report: DriftReport | dict[str, Any], path: str | Path) -> Path:
    """Write `render_html(report)` to `path` (folders are created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:  # below the smallest double: scipy returns exactly 0
        return "< 1e-300"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


def _num(value: float | None, spec: str = ".4g") -> str:
    return "—" if value is None else format(value, spec)


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _card(label: str, value: str, css: str = "", element_id: str = "") -> str:
    id_attr = f' id="{element_id}"' if element_id else ""
    return (
        f'<div class="card {css}"{id_attr}><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div></div>'
    )


def _cards(data: dict[str, Any]) -> str:
    counts = data["counts_by_severity"]
    threshold = data["thresholds"]["drift_share_threshold"]
    window = data.get("window") or {}
    cards = [
        _card(
            "Dataset drift",
            "yes" if data["dataset_drift"] else "no",
            "alarm" if data["dataset_drift"] else "calm",
            "dataset-drift",
        ),
        _card(f"Drifted share (threshold {threshold:.0%})", f"{data['drifted_share']:.0%}"),
        _card("Critical", str(counts["critical"])),
        _card("Warning", str(counts["warning"])),
        _card("No drift", str(counts["none"])),
        _card("Rows reference / current", f"{data['rows_reference']:,} / {data['rows_current']:,}"),
    ]
    if window.get("start") or window.get("end"):
        start, end = _moment(window.get("start")), _moment(window.get("end"))
        cards.append(_card("Window (UTC)", f"{start} → {end}"))
    return f'<div class="cards">{"".join(cards)}</div>'


def _prediction_section(prediction: dict[str, Any], max_categories: int) -> str:
    if not prediction.get("available"):
        reason = prediction.get("reason") or "no model outputs"
        return f'<h2>Prediction drift</h2><p class="note">Not available: {_e(reason)}.</p>'
    score = prediction["score"]
    rows = [
        ("predicted class", "chi2", prediction),
        ("score", "ks", score),
    ]
    body = "".join(
        f'<tr><td class="text">{_e(name)}</td><td class="text">{test}</td>'
        f"<td>{_num(part['statistic'])}</td><td>{_p(part['p_value'])}</td>"
        f"<td>{_p(part['p_value_corrected'])}</td><td>{_num(part['psi'], '.3f')}</td>"
        f"<td>{_num(part.get('wasserstein'), '.3f')}</td><td>{_badge(part['severity'])}</td></tr>"
        for name, test, part in rows
    )
    charts = "".join(
        f'<div class="feature"><h3>{_e(name)}</h3>{_chart(part["distribution"], max_categories)}'
        "</div>"
        for name, _, part in rows
    )
    return (
        "<h2>Prediction drift</h2>"
        f"<p>{'Drifted' if prediction['drifted'] else 'No drift'} in the model's outputs.</p>"
        '<table><thead><tr><th>Output</th><th class="text">Test</th><th>Statistic</th>'
        "<th>p-value</th>"
        "<th>Corrected p</th><th>PSI</th><th>Wasserstein (std)</th><th>Severity</th></tr>"
        f"</thead><tbody>{body}</tbody></table>{charts}"
    )


def _badge(severity: str) -> str:
    return f'<span class="badge {_e(severity)}">{_e(severity)}</span>'


def _feature_table(data: dict[str, Any], ranked: list[str]) -> str:
    rows = []
    for index, name in enumerate(ranked):
        f = data["features"][name]
        missing = f"{_share(f['missing_share_reference'])} → {_share(f['missing_share_current'])}"
        rows.append(
            f'<tr class="{_e(f["severity"])}" data-feature="{_e(name)}">'
            f'<td><a href="#feature-{index}">{_e(name)}</a></td>'
            f'<td class="text">{_e(f["type"])}</td><td class="text">{_e(f["test"])}</td>'
            f"<td>{_num(f['statistic'])}</td><td>{_p(f['p_value'])}</td>"
            f"<td>{_p(f['p_value_corrected'])}</td><td>{_num(f['psi'], '.3f')}</td>"
            f"<td>{_num(f.get('wasserstein'), '.3f')}</td>"
            f"<td>{_badge(f['severity'])}</td><td>{missing}</td></tr>"
        )
    return (
        '<table id="features"><thead><tr><th>Feature</th><th class="text">Type</th>'
        '<th class="text">Test</th>'
        "<th>Statistic</th><th>p-value</th><th>Corrected p</th><th>PSI</th>"
        "<th>Wasserstein (std)</th><th>Severity</th>"
        f"<th>Missing (ref → cur)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _feature_section(index: int, name: str, f: dict[str, Any], max_categories: int) -> str:
    facts = [f"{f['type']}", f"{f['test']} statistic {_num(f['statistic'])}"]
    facts.append(f"p {_p(f['p_value'])} (corrected {_p(f['p_value_corrected'])})")
    facts.append(f"PSI {_num(f['psi'], '.3f')}")
    if f.get("wasserstein") is not None:
        facts.append(
            f"Wasserstein {_num(f['wasserstein'], '.3f')} std (an effect from "
            f"{_num(f.get('wasserstein_threshold'), '.3f')})"
        )
    if f["type"] == "numerical":
        facts.append(
            f"mean {_num(f.get('mean_reference'))} → {_num(f.get('mean_current'))}, "
            f"std {_num(f.get('std_reference'))} → {_num(f.get('std_current'))}"
        )
    facts.append(
        f"missing {_share(f['missing_share_reference'])} → {_share(f['missing_share_current'])}"
    )
    return (
        f'<section class="feature" id="feature-{index}"><h3>{_e(name)} {_badge(f["severity"])}'
        f'</h3><p class="facts">{_e("; ".join(facts))}</p>'
        f"{_chart(f['distribution'], max_categories)}</section>"
    )


def _chart(distribution: dict[str, Any], max_categories: int) -> str:
    """Reference and current shares as side-by-side bars in inline SVG."""
    labels = list(distribution["labels"])
    reference = list(distribution["reference"])
    current = list(distribution["current"])
    new = set(distribution.get("new", []))
    note = ""
    if len(labels) > max_categories:
        # Keep the categories that matter most on either side, in their original order.
        biggest = sorted(range(len(labels)), key=lambda i: -max(reference[i], current[i]))
        keep = sorted(biggest[:max_categories])
        note = f'<p class="note">{len(labels) - len(keep)} smaller categories not shown.</p>'
        labels = [labels[i] for i in keep]
        reference = [reference[i] for i in keep]
        current = [current[i] for i in keep]

    group = 56 if len(labels) <= 12 else 34
    left, top, plot_height, bottom = 46, 10, 150, 80
    width = left + group * len(labels) + 10
    height = top + plot_height + bottom
    highest = max([*reference, *current, 0.01])
    ymax = highest * 1.1  # headroom above the tallest bar
    bar = group * 0.38

    def y(share: float) -> float:
        return top + plot_height * (1 - share / ymax)

    items = []
    for tick in (0.0, highest / 2, highest):
        items.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#eaeef2"/>'
            f'<text x="{left - 4}" y="{y(tick) + 3:.1f}" text-anchor="end">{tick:.0%}</text>'
        )
    for i, (label, ref, cur) in enumerate(zip(labels, reference, current, strict=True)):
        x = left + i * group + group * 0.1
        shown = label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"
        if label in new:
            shown += " (new)"
        tip = f"{label}{' (new)' if label in new else ''}: reference {ref:.2%}, current {cur:.2%}"
        label_x, label_y = x + bar, top + plot_height + 12
        items.append(
            f"<g><title>{_e(tip)}</title>"
            f'<rect class="ref" x="{x:.1f}" y="{y(ref):.1f}" width="{bar:.1f}" '
            f'height="{top + plot_height - y(ref):.1f}"/>'
            f'<rect class="cur" x="{x + bar:.1f}" y="{y(cur):.1f}" width="{bar:.1f}" '
            f'height="{top + plot_height - y(cur):.1f}"/>'
            f'<text transform="translate({label_x:.1f},{label_y}) rotate(-35)" '
            f'text-anchor="end">{_e(shown)}</text></g>'
        )
    return (
        '<div class="legend"><span class="ref"></span>reference'
        '<span class="cur"></span>current</div>'
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="max-width:100%;height:auto">'
        f"{''.join(items)}</svg>{note}"
    )


def _thresholds_note(data: dict[str, Any]) -> str:
    t = data["thresholds"]
    correction = t["correction"].replace("_", "-")
    effect = f"its PSI is at least {t['psi_warning']}"
    critical = f"PSI {t['psi_critical']}"
    if "wasserstein_warning" in t:  # reports stored before the Wasserstein distance lack it
        effect += (
            f" or (numerical) its Wasserstein distance is at least {t['wasserstein_warning']} "
            f"reference std and {t['wasserstein_noise_multiple']} times its sampling noise"
        )
        critical += f" or Wasserstein {t['wasserstein_critical']} std"
    return (
        '<p class="note">A feature is drifted when its p-value, corrected over all features '
        f"({_e(correction)}), is below {t['ks_p_threshold']} (KS) or {t['chi2_p_threshold']} "
        f"(chi-square) and {effect}; critical from {critical}. "
        f"Generated {_e(data.get('created_at', ''))}.</p>"
    )


def _moment(text: str | None) -> str:
    """An ISO time as a person reads it: to the minute, in UTC."""
    if not text:
        return "?"
    try:
        return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text
