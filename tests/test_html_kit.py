"""The HTML kit (monitoring.html): charts a page can inline, whatever text the data holds, the
same bytes for the same data, and matplotlib only where a page is drawn."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from data.schema import Feature, FeatureSchema
from demo.report import render_demo_html
from monitoring.drift_report import compute_drift_report
from monitoring.html.drift_page import render_html
from tests.test_demo_report import make_timeline

ROOT = Path(__file__).resolve().parent.parent


def _category_report(values: list[str]) -> str:
    """A drift page of one categorical feature holding `values` (and a common one)."""
    schema = FeatureSchema("x", "y", (Feature("c0", "categorical"),))
    column = np.array(["common"] * 300 + values * 50, dtype=object)
    frame = pd.DataFrame({"c0": column})
    return render_html(compute_drift_report(frame, frame, schema))


def _svg_texts(page: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", page)


def test_dollar_signs_in_a_category_are_text_not_mathtext():
    page = _category_report(["$5-$10", "$x^2$"])
    assert "$5-$10" in _svg_texts(page)
    assert "$x^2$" in _svg_texts(page)


def test_a_category_with_control_characters_still_draws():
    # matplotlib writes such characters into its SVG as they are, which no XML parser reads.
    page = _category_report(["bad\x00value", "esc\x1bape"])
    assert "bad\ufffdvalue" in _svg_texts(page)
    assert "esc\ufffdape" in _svg_texts(page)


def test_charts_refer_to_nothing_and_ids_are_unique():
    pages = [render_demo_html(make_timeline()), _category_report(["a", "b"])]
    for page in pages:
        for needle in ("<use", "xlink", "<defs", "clip-path", "url(", "<metadata", "<?xml"):
            assert needle not in page, needle
        ids = re.findall(r'\sid="([^"]*)"', page)
        assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_window_has_a_tooltip_that_takes_the_pointer():
    timeline = make_timeline(weeks=2)
    page = render_demo_html(timeline)
    accuracy = page[page.index('id="chart-accuracy"') :]
    accuracy = accuracy[: accuracy.index("</svg>")]
    # matplotlib draws the hover columns with no fill, which by default takes no pointer.
    tips = re.findall(r'<g pointer-events="all"><title>([^<]*)</title>', accuracy)
    assert len(tips) == len(timeline["windows"])
    first = timeline["windows"][0]
    assert tips[0].startswith("week 1, window 0 (2026-11-01 00:00 UTC)\n")
    assert f"realized accuracy: {first['realized_accuracy']:.4g}" in tips[0]


def test_drawing_leaves_matplotlib_settings_as_they_were():
    before = dict(matplotlib.rcParams)
    _category_report(["a"])
    render_demo_html(make_timeline(weeks=2))
    assert dict(matplotlib.rcParams) == before


def test_the_same_report_gives_the_same_page_in_another_process(tmp_path):
    script = (
        "import json, sys; from monitoring.html.drift_page import render_html; "
        "sys.stdout.write(render_html(json.load(open(sys.argv[1]))))"
    )
    report = compute_drift_report(
        pd.DataFrame({"x0": np.arange(500.0)}),
        pd.DataFrame({"x0": np.arange(500.0) + 40}),
        FeatureSchema("x", "y", (Feature("x0", "numerical"),)),
    )
    source = tmp_path / "report.json"
    source.write_text(json.dumps(report.to_dict()))
    pages = [
        subprocess.run(
            [sys.executable, "-c", script, str(source)],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert pages[0] == pages[1] == render_html(report)


def test_the_drift_check_loads_no_page_and_the_page_no_drift_check():
    """The page (and matplotlib, half a second) loads only when a page is written; the page
    reads a report as data, so the two modules no longer import each other."""
    script = (
        "import sys\n"
        "import monitoring.drift_report, monitoring.window_checks\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib'\n"
        "assert 'monitoring.html.drift_page' not in sys.modules, 'page'\n"
        "del sys.modules['monitoring.drift_report']\n"
        "import monitoring.html.drift_page\n"
        "assert 'monitoring.drift_report' not in sys.modules, 'circle'\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=120)


def test_a_timeline_chart_ends_at_the_tick_nearest_above_its_highest_value():
    timeline = make_timeline(weeks=2)
    timeline["windows"][30]["psi"]["amount"] = 1.0  # the peak, drawn up to 1.08
    page = render_demo_html(timeline)
    psi = page[page.index('id="chart-psi"') :]
    labels = _svg_texts(psi[: psi.index("</svg>")])
    assert {"0", "0.5", "1"} <= set(labels)
    # matplotlib's locator runs a step past the data: an axis to 1.5, a third of it empty.
    assert "1.5" not in labels
