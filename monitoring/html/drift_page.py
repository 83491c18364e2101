"""The drift report's page: one self-contained HTML file for whoever is on call.

At the top: dataset drift yes/no, the drifted share, counts by severity, rows and the window.
Then prediction drift, multivariate drift (the domain classifier's AUC, the features it needs
most and the pairs whose correlation moved; older reports without it say so), a table of
features sorted by severity then PSI (with the Wasserstein distance of numerical ones), and for
each feature the reference and current shares side by side: the reference decile bins
(open-ended, plus missing) for numerical features, the categories (new ones marked) for the
others.

`render_html` takes a `DriftReport` or its `to_dict()` output, so a report stored as JSON can be
rendered again later. It reads the report only through that dict, so this module needs nothing
of `monitoring.drift_report` at run time, and `drift_report` imports it only when a page is
asked for: the page's matplotlib never weighs on a drift check that writes no page.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.html.charts import Bars, Key, bar_chart, legend
from monitoring.html.page import badge, card, cards, document, e, moment, row, table, write_page

if TYPE_CHECKING:
    from monitoring.drift_results import DriftReport

MAX_CATEGORIES = 30
_LABEL_CHARS = 18
_REFERENCE = "#8da0cb"
_CURRENT = "#fc8d62"
_NA = "—"
_STYLE = ".feature { margin: 1.5rem 0; }"


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
    return document(
        title,
        [
            f'<p class="lead" id="summary">{e(data["summary"])}</p>',
            _cards(data),
            _prediction_section(data["prediction"], max_categories),
            _multivariate_section(data.get("multivariate")),
            "<h2>Features</h2>",
            _feature_table(data, ranked),
            *(
                _feature_section(index, name, data["features"][name], max_categories)
                for index, name in enumerate(ranked)
            ),
            _thresholds_note(data),
        ],
        style=_STYLE,
    )


def write_html(report: DriftReport | dict[str, Any], path: str | Path) -> Path:
    """Write `render_html(report)` to `path` (folders are created); return the path."""
    return write_page(render_html(report), path)


def _p(value: float | None) -> str:
    if value is None:
        return _NA
    if value == 0:  # below the smallest double: scipy returns exactly 0
        return "< 1e-300"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


def _num(value: float | None, spec: str = ".4g") -> str:
    return _NA if value is None else format(value, spec)


def _share(value: float | None) -> str:
    return _NA if value is None else f"{value:.1%}"


def _cards(data: dict[str, Any]) -> str:
    counts = data["counts_by_severity"]
    threshold = data["thresholds"]["drift_share_threshold"]
    window = data.get("window") or {}
    items = [
        card(
            "Dataset drift",
            "yes" if data["dataset_drift"] else "no",
            "alarm" if data["dataset_drift"] else "calm",
            "dataset-drift",
        ),
        card(f"Drifted share (threshold {threshold:.0%})", f"{data['drifted_share']:.0%}"),
        card("Critical", str(counts["critical"])),
        card("Warning", str(counts["warning"])),
        card("No drift", str(counts["none"])),
        card("Rows reference / current", f"{data['rows_reference']:,} / {data['rows_current']:,}"),
    ]
    if window.get("start") or window.get("end"):
        start, end = moment(window.get("start"), "?"), moment(window.get("end"), "?")
        items.append(card("Window (UTC)", f"{start} → {end}"))
    return cards(items)


_TEST_COLUMNS = ["Statistic", "p-value", "Corrected p", "PSI", "Wasserstein (std)", "Severity"]


def _test_cells(part: dict[str, Any]) -> list[str]:
    """A test's figures, in the order of `_TEST_COLUMNS`."""
    return [
        _num(part["statistic"]),
        _p(part["p_value"]),
        _p(part["p_value_corrected"]),
        _num(part["psi"], ".3f"),
        _num(part.get("wasserstein"), ".3f"),
        badge(part["severity"], part["severity"]),
    ]


def _prediction_section(prediction: dict[str, Any], max_categories: int) -> str:
    if not prediction.get("available"):
        reason = prediction.get("reason") or "no model outputs"
        return f'<h2>Prediction drift</h2><p class="note">Not available: {e(reason)}.</p>'
    outputs = [("predicted class", "chi2", prediction), ("score", "ks", prediction["score"])]
    rows = [row([e(name), test, *_test_cells(part)], text={0, 1}) for name, test, part in outputs]
    charts = "".join(
        f'<div class="feature"><h3>{e(name)}</h3>'
        f"{_chart(f'chart-prediction-{k}', name, part['distribution'], max_categories)}</div>"
        for k, (name, _, part) in enumerate(outputs)
    )
    return (
        "<h2>Prediction drift</h2>"
        f"<p>{'Drifted' if prediction['drifted'] else 'No drift'} in the model's outputs.</p>"
        + table(["Output", "Test", *_TEST_COLUMNS], rows, text={0, 1})
        + charts
    )


def _multivariate_section(multivariate: dict[str, Any] | None) -> str:
    head = '<h2 id="multivariate">Multivariate drift</h2>'
    if not multivariate:
        return head + '<p class="note">Not available: the report predates the check.</p>'
    if not multivariate.get("available"):
        reason = multivariate.get("reason") or "not run"
        return head + f'<p class="note">Not available: {e(reason)}.</p>'
    severity = multivariate["severity"]
    verdict = "Drifted" if multivariate["drifted"] else "No drift"
    text = (
        f"<p>{verdict} in the joint distribution of the features: a domain classifier tells "
        f"{multivariate['rows_current']:,} window rows from {multivariate['rows_reference']:,} "
        f"reference rows with a held-out AUC of {multivariate['auc']:.3f} (p "
        f"{_p(multivariate['p_value'])}; drift from p &lt; {multivariate['p_threshold']}, an AUC "
        f"of about {multivariate['auc_threshold']:.3f}) {badge(severity, severity)}</p>"
    )
    features = [
        row([e(f["feature"]), _num(f["auc_drop"], ".3f")], text={0})
        for f in multivariate.get("top_features", [])
    ]
    if features:
        text += table(["Feature it needs most", "AUC lost when shuffled"], features, text={0})
    pairs = [
        row(
            [
                e(" ~ ".join(p["features"])),
                _num(p["reference"], "+.2f"),
                _num(p["current"], "+.2f"),
                _num(p["change"], "+.2f"),
            ],
            text={0},
        )
        for p in multivariate.get("correlation_changes", [])
    ]
    if pairs:
        text += table(["Pair", "Correlation, reference", "current", "change"], pairs, text={0})
    return head + text


def _feature_table(data: dict[str, Any], ranked: list[str]) -> str:
    rows = []
    for index, name in enumerate(ranked):
        f = data["features"][name]
        missing = f"{_share(f['missing_share_reference'])} → {_share(f['missing_share_current'])}"
        cells = [f'<a href="#feature-{index}">{e(name)}</a>', e(f["type"]), e(f["test"])]
        rows.append(
            row(
                [*cells, *_test_cells(f), missing],
                text={1, 2},
                attrs={"class": f["severity"], "data-feature": name},
            )
        )
    head = ["Feature", "Type", "Test", *_TEST_COLUMNS, "Missing (ref → cur)"]
    return table(head, rows, text={1, 2}, element_id="features")


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
    chart = _chart(f"chart-feature-{index}", name, f["distribution"], max_categories)
    return (
        f'<section class="feature" id="feature-{index}"><h3>{e(name)} '
        f'{badge(f["severity"], f["severity"])}</h3><p class="facts">{e("; ".join(facts))}</p>'
        f"{chart}</section>"
    )


def _chart(element_id: str, name: str, distribution: dict[str, Any], max_categories: int) -> str:
    """Reference and current shares of each bin or category, side by side."""
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
    shown, tips = [], []
    for label, ref, cur in zip(labels, reference, current, strict=True):
        marked = " (new)" if label in new else ""
        text = str(label)
        cut = text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"
        shown.append(cut + marked)
        tips.append(f"{text}{marked}: reference {ref:.2%}, current {cur:.2%}")
    sides = [Bars(reference, _REFERENCE), Bars(current, _CURRENT)]
    keys = [Key("reference", _REFERENCE, "box"), Key("current", _CURRENT, "box")]
    chart = bar_chart(element_id, f"{name}: reference and current shares", shown, sides, tips)
    return legend(keys) + chart + note


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
        f"({e(correction)}), is below {t['ks_p_threshold']} (KS) or {t['chi2_p_threshold']} "
        f"(chi-square) and {effect}; critical from {critical}. "
        f"Generated {e(data.get('created_at', ''))}.</p>"
    )
