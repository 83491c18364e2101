"""Demo report: the timeline page renders in a real browser, escaped, self-contained and whole."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from data.settings import Settings
from demo.report import TOP_PSI_FEATURES, TimelineError, render_demo_html, render_demo_report
from monitoring.html.screenshot import CHROMIUM_FLAGS, chromium_binary, screenshot
from training.gates import GateReport, GateResult

ROOT = Path(__file__).resolve().parent.parent
SCRIPT_FEATURE = "<script>alert(1)</script>"
FEATURES = [
    "amount",
    "avg_amount_30d",
    "hour_of_day",
    "customer_age",
    "account_age_days",
    "distance_from_home_km",
    "transactions_24h",
    "merchant_category",
    "entry_mode",
    SCRIPT_FEATURE,  # a name from a user-supplied schema: must show as text
]
CHARTS = ("accuracy", "drifted-share", "psi", "latency", "alerts")


def _gates(version: str, *, passed: bool) -> dict[str, Any]:
    """Gate results in the exact shape training.gates records them."""
    report = GateReport(
        version=version,
        gates=[
            GateResult(
                "performance_floor",
                True,
                {
                    "metrics": {"roc_auc": 0.962, "pr_auc": 0.71, "f1": 0.62},
                    "floors": {"roc_auc": 0.9, "pr_auc": 0.5, "f1": 0.4},
                },
                "all metrics at or above their floors",
            ),
            GateResult(
                "no_regression",
                passed,
                {
                    "champion_version": "1",
                    "tolerance_relative": 0.02,
                    "candidate": {"roc_auc": 0.962 if passed else 0.91, "pr_auc": 0.71},
                    "champion": {"roc_auc": 0.95, "pr_auc": 0.70},
                },
                "within 2% of champion v1 on the same hold-out"
                if passed
                else "worse than the champion by more than 2%: roc_auc 0.9100 vs champion 0.9500",
            ),
            GateResult(
                "operational",
                True,
                {
                    "validation_passed": True,
                    "scorer": "compiled",
                    "latency_p50_us": 41.0,
                    "latency_p99_us": 97.5,
                    "latency_budget_ms": 20.0,
                    "brier": 0.031,
                    "champion_brier": 0.034,
                    "brier_limit": 0.0374,
                },
                "validation, latency and calibration in order",
            ),
        ],
    )
    return report.to_dict()["gates"]


def make_timeline(weeks: int = 4, seed: int = 42, features: list[str] = FEATURES) -> dict[str, Any]:
    """A card-fraud story: calm week 1, covariate shift, then concept drift; one candidate
    rejected by the no-regression gate, the next promoted, accuracy recovering after it. The
    last feature has one PSI spike of its own in week 3."""
    spiky = features[-1]
    rng = np.random.default_rng(seed)
    per_week = 28  # four 6-hour windows a day
    n = weeks * per_week
    shift, concept = per_week, per_week + 14
    rejected_at, promoted_at = concept + 5, concept + 9
    start = datetime(2026, 11, 1, tzinfo=UTC)
    windows = []
    champion = "1"
    for i in range(n):
        after = i > promoted_at
        if i < shift or after:
            realized = 0.95 + rng.normal(0, 0.006)
            estimated = realized + rng.normal(0, 0.004)
        elif i < concept:
            realized = 0.935 + rng.normal(0, 0.008)
            estimated = realized + rng.normal(0, 0.005)
        else:  # the model's confidence cannot see a changed feature/label relationship
            realized = 0.79 + rng.normal(0, 0.01)
            estimated = 0.93 + rng.normal(0, 0.005)
        drifting = shift <= i <= promoted_at
        psi = {name: round(float(abs(rng.normal(0.02, 0.01))), 4) for name in features}
        if drifting:
            psi["amount"] = round(0.28 + 0.1 * rng.random(), 4)
            psi["avg_amount_30d"] = round(0.12 + 0.05 * rng.random(), 4)
            psi["distance_from_home_km"] = round(0.09 + 0.04 * rng.random(), 4)
        psi[spiky] = round(0.25 + 0.02 * rng.random(), 4) if i == 60 else psi["amount"] / 9
        if i % 9 == 0:
            psi["entry_mode"] = None  # not tested in this window
        drifted = [f for f, v in psi.items() if v is not None and v >= 0.1]
        critical = [f for f, v in psi.items() if v is not None and v >= 0.2]
        alerts = []
        if critical:
            alerts.append(
                {
                    "name": "MLFeatureDrift",
                    "severity": "critical",
                    "summary": f"PSI above 0.2 on {', '.join(critical)}",
                }
            )
        if realized < 0.9:
            alerts.append(
                {"name": "MLAccuracyLow", "severity": "warning", "summary": "accuracy < 90%"}
            )
        if i == promoted_at + 1:
            alerts.append({"name": "MLLatencyHigh", "severity": "warning", "summary": "reload"})
        if i == promoted_at + 1:
            champion = "3"
        phase = "baseline" if i < shift else "covariate shift" if i < concept else "concept drift"
        p50 = 1.1 + rng.normal(0, 0.05)
        p99 = 3.9 + abs(rng.normal(0, 0.4)) + (6.0 if i == promoted_at + 1 else 0.0)  # reload
        labelled = i < n - 2  # the newest labels have not arrived yet
        decision: dict[str, Any] | None = {"retrain": False, "reason": "no trigger"}
        if i in (rejected_at, promoted_at):
            decision = {"retrain": True, "reason": "critical drift on amount", "blocked_by": None}
        elif rejected_at < i < promoted_at:
            decision = {"retrain": False, "reason": "critical drift", "blocked_by": "cooldown"}
        if i == 3:
            decision = None
        windows.append(
            {
                "index": i,
                "start": (start + timedelta(hours=6 * i)).isoformat(),
                "end": (start + timedelta(hours=6 * (i + 1))).isoformat(),
                "week": i // per_week + 1,
                "phase": phase,
                "rows": int(rng.integers(350, 450)),
                "champion": champion,
                "realized_accuracy": round(realized, 4) if labelled else None,
                "label_coverage": round(0.5 + 0.2 * rng.random(), 3) if labelled else None,
                "estimated_accuracy": round(estimated, 4),
                "drifted_share": round(len(drifted) / len(features), 3),
                "dataset_drift": len(drifted) / len(features) >= 0.3,
                "psi": psi,
                "drifted_features": drifted,
                "critical_features": critical,
                "latency_p50_ms": None if i == 10 else round(p50, 3),
                "latency_p99_ms": None if i == 10 else round(p99, 3),
                "alerts": alerts,
                "decision": decision,
            }
        )
    return {
        "title": f"Card-fraud model, {weeks} simulated weeks",
        "seed": seed,
        "model_name": "fraud-detector",
        "generated_at": "2026-12-01T10:00:00+00:00",
        "features": list(features),
        "phases": [
            {"name": "baseline", "start_window": 0},
            {"name": "covariate shift", "start_window": shift},
            {"name": "concept drift", "start_window": concept},
        ],
        "windows": windows,
        "retrains": [
            {
                "window": rejected_at,
                "version": "2",
                "previous": "1",
                "reason": "critical drift on amount",
                "promoted": False,
                "data_rows": 5000,
                "gates": _gates("2", passed=False),
            },
            {
                "window": promoted_at,
                "version": "3",
                "previous": "1",
                "reason": "critical drift on amount",
                "promoted": True,
                "data_rows": 6200,
                "gates": _gates("3", passed=True),
            },
        ],
        "summary": {
            "baseline_accuracy": 0.95,
            "worst_accuracy": 0.78,
            "final_accuracy": 0.948,
            "drift_detected_week": 2,
            "drift_injected_week": 2,
            "retrains": 2,
            "champion_before": "1",
            "champion_after": "3",
            "duration_seconds": 170.0,
        },
    }


class _Dom(HTMLParser):
    """What the rendered DOM holds: each chart's markers, bands and series; every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.charts: dict[str, dict[str, list[dict[str, str]]]] = {}
        self._chart: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "svg" and a.get("id", "").startswith("chart-"):
            self._chart = a["id"].removeprefix("chart-")
            self.charts[self._chart] = {"markers": [], "bands": [], "series": [], "lines": []}
        if self._chart is None or tag != "g":
            return
        classes = a.get("class", "").split()
        chart = self.charts[self._chart]
        if "retrain-marker" in classes:
            chart["markers"].append(a)
        elif "phase-band" in classes:
            chart["bands"].append(a)
        elif "series" in classes:
            chart["series"].append(a)
        elif "threshold" in classes:
            chart["lines"].append(a)

    def handle_endtag(self, tag):
        if tag == "svg":
            self._chart = None

    def handle_data(self, data):
        self.text.append(data)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def timeline() -> dict[str, Any]:
    return make_timeline()


def test_chromium_renders_every_chart_with_phases_and_retrain_markers(timeline, tmp_path):
    page = render_demo_report(timeline, tmp_path / "report" / "demo.html")
    dom = _Dom()
    dom.feed(_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout)

    assert set(dom.charts) == set(CHARTS)
    for name, chart in dom.charts.items():
        # Every chart: one band per phase, one marker per retrain, told apart by outcome.
        assert [b["data-phase"] for b in chart["bands"]] == [
            "baseline",
            "covariate shift",
            "concept drift",
        ], name
        assert [(m["class"], m["data-version"]) for m in chart["markers"]] == [
            ("retrain-marker rejected", "2"),
            ("retrain-marker promoted", "3"),
        ], name
    assert [s["data-series"] for s in dom.charts["accuracy"]["series"]] == ["realized", "estimated"]
    assert [s["data-series"] for s in dom.charts["latency"]["series"]] == ["p50", "p99"]
    defaults = Settings.model_fields
    assert [float(line["data-value"]) for line in dom.charts["psi"]["lines"]] == [
        defaults["PSI_WARNING"].default,
        defaults["PSI_CRITICAL"].default,
    ]
    assert len(dom.charts["psi"]["series"]) == TOP_PSI_FEATURES
    # The user-typed feature name reached the page as text, not as an element.
    assert "script" not in dom.tags
    text = "".join(dom.text)
    assert SCRIPT_FEATURE in text
    assert "MLFeatureDrift" in text and "performance_floor" in text
    assert "worse than the champion by more than 2%" in text


def test_cli_writes_the_page_and_a_small_screenshot(timeline, tmp_path):
    source = tmp_path / "timeline.json"
    source.write_text(json.dumps(timeline))
    out, png = tmp_path / "report.html", tmp_path / "report.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo.report",
            "--timeline",
            str(source),
            "--out",
            str(out),
            "--screenshot",
            str(png),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert f"demo report: {out.resolve()}" in result.stdout
    assert out.read_text().startswith("<!DOCTYPE html>")
    with Image.open(png) as image:
        assert image.width == 1200
        # Cropped to the content (the page is well over one screen), not the 8000 px window.
        assert 1500 < image.height < 8000
        assert image.mode == "P"  # palette: the PNG stays small for the README
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours and len(colours) > 20  # charts drawn, not a blank page
    assert png.stat().st_size < 1_000_000


def test_a_page_taller_than_the_shot_is_cut_between_sections(timeline, tmp_path):
    page = render_demo_report(timeline, tmp_path / "report.html")
    png = screenshot(page, tmp_path / "top.png", width=1000, max_height=1400)
    with Image.open(png) as image:
        assert image.width == 1000
        assert 900 < image.height <= 1400
        pixels = np.asarray(image.convert("RGB"))
    # The cut falls in white space between two sections, not through a chart or table.
    assert (pixels[-10:] == 255).all()
    assert not (pixels[-200:] == 255).all()


def test_page_is_self_contained(timeline):
    page = render_demo_html(timeline)
    for needle in ("<script", "<link", "<img", "src=", "url(", "@import", "://"):
        assert needle not in page, needle
    assert re.findall(r'href="([^"]*)"', page) == []


def test_missing_and_null_values_show_as_na():
    bare = {
        "windows": [
            {"index": 0},
            {"index": 1, "realized_accuracy": None, "psi": None, "alerts": None},
            {"index": 2, "estimated_accuracy": 0.9, "psi": {"amount": None}, "decision": None},
        ],
        "retrains": [{"window": 1, "gates": {"performance_floor": {"passed": None}}}],
        "summary": {"baseline_accuracy": None, "extra": float("nan")},
    }
    page = render_demo_html(bare)
    dom = _Dom()
    dom.feed(page)
    assert set(dom.charts) == {"accuracy", "drifted-share", "psi", "latency"}  # no alerts
    assert "No alert fired in any window." in page
    assert "Never tested: amount." in page
    assert page.count("n/a") > 20
    assert "<h1>Demo report</h1>" in page


def test_retrain_table_carries_every_gate_number(timeline):
    page = render_demo_html(timeline)
    gates = timeline["retrains"][0]["gates"]
    assert list(gates) == ["performance_floor", "no_regression", "operational"]
    for name in ("metrics.roc_auc", "champion.pr_auc", "latency_p99_us", "brier_limit"):
        assert f"<dt>{name}</dt>" in page
    assert "<dd>0.0374</dd>" in page and "<dd>compiled</dd>" in page


def test_thresholds_recorded_with_the_run_win_over_the_defaults(timeline):
    custom = copy.deepcopy(timeline)
    custom["thresholds"] = {"psi_warning": 0.15, "psi_critical": 0.3}
    dom = _Dom()
    dom.feed(render_demo_html(custom))
    assert [line["data-value"] for line in dom.charts["psi"]["lines"]] == ["0.15", "0.3"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("windows"), "timeline 'windows' must be a list"),
        (lambda t: t.update(windows=[]), "timeline 'windows' is empty"),
        (
            lambda t: t["windows"][5].update(realized_accuracy="high"),
            "windows[5].realized_accuracy must be a number or null, not 'high'",
        ),
        (
            lambda t: t["retrains"][1].update(window=999),
            "retrains[1].window 999 is not the index of any window",
        ),
        (
            lambda t: t["phases"][2].update(start_window="x"),
            "phases[2].start_window 'x' is not the index of any window",
        ),
    ],
)
def test_bad_timelines_are_refused_naming_the_field(timeline, change, message):
    broken = copy.deepcopy(timeline)
    change(broken)
    with pytest.raises(TimelineError, match=re.escape(message)):
        render_demo_html(broken)
