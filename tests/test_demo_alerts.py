"""The demo's alerts come from prometheus/alerts.yml: its thresholds, severities and summaries."""

from __future__ import annotations

import pytest

from demo.alerts import RULES_FILE, AlertRules, AlertRulesError, WindowFigures

HEALTHY = WindowFigures(
    realized_accuracy=0.96, label_coverage=0.6, estimated_accuracy=0.95, mean_confidence=0.9,
    latency_p99_seconds=0.004,
)  # fmt: skip


def names(alerts) -> list[tuple[str, str]]:
    return [(alert.name, alert.severity) for alert in alerts]


def test_the_thresholds_are_the_rules_files_own():
    rules = AlertRules.load()
    assert rules.thresholds["realized_accuracy_warning"] == 0.90
    assert rules.thresholds["label_coverage_min"] == 0.3
    assert rules.evaluate(HEALTHY) == []


def test_each_condition_fires_at_its_threshold_with_the_rules_summary():
    rules = AlertRules.load()
    low = WindowFigures(realized_accuracy=0.88, label_coverage=0.6, estimated_accuracy=0.95)
    (alert,) = rules.evaluate(low)
    assert (alert.name, alert.severity) == ("MLRealizedAccuracyLow", "warning")
    assert alert.summary == "Realized accuracy is below the warning floor."
    assert alert.threshold == 0.90 and alert.value == 0.88
    assert alert.runbook_url.endswith("#mlrealizedaccuracylow")
    # Too few labels to trust the figure: no realized-accuracy alert, as in the rule.
    assert rules.evaluate(WindowFigures(realized_accuracy=0.5, label_coverage=0.1)) == []
    drifted = WindowFigures(critical_features=1, warning_features=2, prediction_drift=True)
    assert names(rules.evaluate(drifted)) == [
        ("MLFeatureDrift", "critical"),  # its warning is inhibited, as Alertmanager does
        ("MLPredictionDrift", "warning"),
    ]


def test_a_threshold_changed_in_the_rules_file_changes_what_fires(tmp_path):
    tuned = tmp_path / "alerts.yml"
    text = RULES_FILE.read_text()
    old = "- record: ml:threshold:realized_accuracy_warning\n        expr: vector(0.90)"
    assert old in text
    tuned.write_text(text.replace(old, old.replace("0.90", "0.80")))
    figures = WindowFigures(realized_accuracy=0.85, label_coverage=0.6)
    assert names(AlertRules.load().evaluate(figures)) == [("MLRealizedAccuracyLow", "warning")]
    assert AlertRules.load(tuned).evaluate(figures) == []


def test_a_rules_file_without_an_alert_the_demo_shows_is_refused(tmp_path):
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES_FILE.read_text().replace("alert: MLPredictionDrift", "alert: Renamed"))
    with pytest.raises(AlertRulesError, match="no warning alert MLPredictionDrift"):
        AlertRules.load(broken)
    unreadable = tmp_path / "missing.yml"
    with pytest.raises(AlertRulesError, match="cannot read the alert rules"):
        AlertRules.load(unreadable)


def test_the_mature_window_alert_and_the_latest_windows_hold_each_other_as_alertmanager_does():
    rules = AlertRules.load()
    # Labels three days late: the latest window has none, the mature one says 0.87.
    late = WindowFigures(label_coverage=0.0, mature_accuracy=0.87, estimated_accuracy=0.95)
    (alert,) = rules.evaluate(late)
    assert (alert.name, alert.severity, alert.value) == ("MLMatureAccuracyLow", "warning", 0.87)
    assert alert.runbook_url.endswith("#mlmatureaccuracylow")
    assert names(rules.evaluate(WindowFigures(mature_accuracy=0.80))) == [
        ("MLMatureAccuracyLow", "critical")
    ]
    # Fast labels: the latest window's alert holds back the mature one's of the same or a lower
    # severity, never a page with a warning.
    both = WindowFigures(realized_accuracy=0.80, label_coverage=0.6, mature_accuracy=0.80)
    assert names(rules.evaluate(both)) == [("MLRealizedAccuracyLow", "critical")]
    worse = WindowFigures(realized_accuracy=0.88, label_coverage=0.6, mature_accuracy=0.80)
    assert names(rules.evaluate(worse)) == [
        ("MLMatureAccuracyLow", "critical"),
        ("MLRealizedAccuracyLow", "warning"),
    ]
