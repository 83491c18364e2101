"""HTML drift report: self-contained, escaped, and correct as a real browser renders it."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data.prediction_log import PREDICTION_COLUMN, SCORE_COLUMN
from data.schema import Feature, FeatureSchema
from monitoring.drift_report import SEVERITIES, DriftReport, compute_drift_report
from monitoring.html.drift_page import render_html, write_html
from monitoring.html.screenshot import CHROMIUM_FLAGS, chromium_binary

SCRIPT = "<script>alert(1)</script>"


def drifted_report() -> DriftReport:
    """Two critical features, one warning, two quiet ones; a user-typed category in a label."""
    rng = np.random.default_rng(0)
    n = 20_000
    schema = FeatureSchema(
        "demo",
        "y",
        (
            Feature("steady", "numerical"),
            Feature("shifted", "numerical"),
            Feature("channel", "categorical"),
            Feature("merchant", "categorical"),
            Feature("quiet", "categorical"),
        ),
    )
    cats = np.array(list("abcd"), dtype=object)
    reference = pd.DataFrame(
        {
            "steady": rng.normal(0, 1, n),
            "shifted": rng.normal(0, 1, n),
            "channel": np.array(["web", "shop"] * (n // 2), dtype=object),
            "merchant": cats[rng.integers(0, 4, n)],
            "quiet": cats[rng.integers(0, 4, n)],
        }
    )
    merchant = cats[rng.integers(0, 4, n)]
    merchant[: n // 4] = SCRIPT  # a quarter of the window in a category never seen before
    current = pd.DataFrame(
        {
            "steady": rng.normal(0, 1, n),
            "shifted": rng.normal(1.5, 1, n),
            # 68% / 32% instead of 50% / 50%: PSI 0.136, a warning
            "channel": np.array(["web"] * 13_600 + ["shop"] * 6_400, dtype=object),
            "merchant": merchant,
            "quiet": cats[rng.integers(0, 4, n)],
        }
    )
    return compute_drift_report(reference, current, schema)


@pytest.fixture(scope="module")
def report() -> DriftReport:
    return drifted_report()


def test_fixture_has_the_intended_severities(report):
    severities = {name: f.severity for name, f in report.features.items()}
    assert severities == {
        "shifted": "critical",
        "merchant": "critical",
        "channel": "warning",
        "steady": "none",
        "quiet": "none",
    }


def test_user_text_is_escaped(report):
    page = render_html(report)
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_feature_names_are_escaped():
    schema = FeatureSchema("x", "y", (Feature('<img src=x onerror="boom">', "numerical"),))
    values = pd.DataFrame({schema.features[0].name: np.arange(100.0)})
    page = render_html(compute_drift_report(values, values, schema))
    assert "<img" not in page
    assert "&lt;img src=x onerror=&quot;boom&quot;&gt;" in page


def test_page_is_self_contained(report):
    page = render_html(report)
    for needle in ("<script", "<link", "src=", "url(", "@import", "https://", "<img"):
        assert needle not in page, needle
    # The only "http" is the SVG namespace, which is a name, not something fetched.
    assert page.count("http://") == page.count('xmlns="http://www.w3.org/2000/svg"')
    assert page.count("<svg") == len(report.features)


def test_a_stored_json_report_renders_the_same(report):
    stored = json.loads(json.dumps(report.to_dict()))
    assert render_html(stored) == render_html(report)


def test_prediction_section():
    rng = np.random.default_rng(1)
    schema = FeatureSchema("x", "y", (Feature("x0", "numerical"),))

    def frame(a: float) -> pd.DataFrame:
        scores = rng.beta(a, 5, 3_000)
        return pd.DataFrame(
            {"x0": rng.normal(size=3_000), PREDICTION_COLUMN: scores > 0.5, SCORE_COLUMN: scores}
        )

    page = render_html(compute_drift_report(frame(2), frame(4), schema))
    assert "Drifted in the model's outputs." in page
    assert page.count("<svg") == 3  # predicted class, score, the feature
    without = render_html(compute_drift_report(frame(2).iloc[:, :1], frame(2), schema))
    assert "Not available: the reference has no model predictions" in without


def test_many_categories_are_capped():
    rng = np.random.default_rng(2)
    schema = FeatureSchema("x", "y", (Feature("c0", "categorical"),))
    values = np.array([f"v{i:02d}" for i in range(50)], dtype=object)
    frame = pd.DataFrame({"c0": values[rng.integers(0, 50, 5_000)]})
    page = render_html(compute_drift_report(frame, frame, schema), max_categories=30)
    assert "20 smaller categories not shown." in page


class _FeatureTable(HTMLParser):
    """Rows of the rendered severity table: (data-feature, link text, badge text)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_table = False
        self._capture: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table" and attributes.get("id") == "features":
            self._in_table = True
        elif self._in_table and tag == "tr" and "data-feature" in attributes:
            self.rows.append([attributes["data-feature"]])
        elif (
            self._in_table
            and self.rows
            and (tag == "a" or "badge" in (attributes.get("class") or ""))
        ):
            self._capture = tag

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        if tag in ("a", "span"):
            self._capture = None

    def handle_data(self, data):
        if self._capture:
            self.rows[-1].append(data)


def test_chromium_renders_the_severity_table_in_order(report, tmp_path):
    page = write_html(report, tmp_path / "report.html")
    # The flags this closed network needs, kept in one place with the demo report's screenshot.
    command = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*command, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    table = _FeatureTable()
    table.feed(dom)
    # Severity first, then PSI (largest first).
    expected = sorted(
        report.features.values(), key=lambda f: (SEVERITIES.index(f.severity), -f.psi)
    )
    assert [row[0] for row in table.rows] == [f.name for f in expected]
    assert [row[0] for row in table.rows][:3] == ["merchant", "shifted", "channel"]
    assert [row[1:] for row in table.rows] == [[f.name, f.severity] for f in expected]
    assert 'id="dataset-drift"' in dom and ">yes<" in dom  # 3 of 5 drifted: 60% >= 30%
    assert SCRIPT not in dom  # the browser saw text, not a script element
    assert dom.count("<svg") == len(report.features)

    screenshot = tmp_path / "report.png"
    subprocess.run(
        [*command, f"--screenshot={screenshot}", "--window-size=1200,2000", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_screenshot_command_takes_the_page_at_the_width_asked(report, tmp_path):
    page = write_html(report, tmp_path / "report.html")
    out = tmp_path / "report.png"
    result = subprocess.run(
        [sys.executable, "-m", "monitoring.html.screenshot", str(page), str(out), "--width", "900"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert f"screenshot: {out.resolve()}" in result.stdout
    with Image.open(out) as image:
        assert image.width == 900
