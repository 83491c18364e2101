"""Alertmanager's routing (alerting/alertmanager.yml) checked by amtool and by the real binary.

The live tests start Debian's Alertmanager on a loopback port with a copy of the project's file
(tools/testkit/alertmanager_run.py) whose secrets point at a local HTTP sink.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import yaml

from tools.testkit.alertmanager_run import (
    CONFIG,
    PAGERDUTY,
    ROUTING_KEY,
    SLACK,
    RunningAlertmanager,
    loopback_copy,
    wait_for,
)
from tools.testkit.http_sink import running_sink


def amtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("amtool")
    assert binary, "amtool is not installed: `make system-tools` installs prometheus-alertmanager"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def test_amtool_accepts_the_configuration():
    done = amtool("check-config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"severity": "critical"}, "slack-and-pagerduty"),
        ({"severity": "warning"}, "slack"),
        ({"severity": "info"}, "null"),
        ({}, "null"),  # an alert without a severity pages nobody, but is not lost from the UI
    ],
)
def test_each_severity_goes_where_it_should(labels, receiver):
    pairs = [f"{k}={v}" for k, v in {"alertname": "MLExample", **labels}.items()]
    done = amtool("config", "routes", "test", f"--config.file={CONFIG}", *pairs)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == receiver


def test_no_secret_is_in_the_file_and_groups_and_inhibition_are_as_documented():
    text = CONFIG.read_text()
    config = yaml.safe_load(text)
    assert "hooks.slack.com" not in text and "routing_key:" not in text
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert set(slack) & {"api_url", "api_url_file"} == {"api_url_file"}
        for page in receiver.get("pagerduty_configs", []):
            assert "routing_key_file" in page and "routing_key" not in page
    assert config["route"]["group_by"] == ["alertname", "environment"]
    inhibit, *outages, availability, latency = config["inhibit_rules"]
    # A bigger outage mutes what it explains: no exporter, no API.
    assert [rule["source_matchers"] for rule in outages] == [
        ['alertname="MLExporterDown"'], ['alertname="MLApiUnavailable"'],
        ['alertname="MLApiUnavailable"'],
    ]  # fmt: skip
    # An SLO page mutes the API's fast alert on the same symptom, in its own environment only.
    for slo, source, target in [
        (availability, "MLPredictAvailabilityBudgetBurn", "MLApiErrorRateHigh"),
        (latency, "MLPredictLatencyBudgetBurn", "MLApiLatencyHigh"),
    ]:
        assert slo["source_matchers"] == [f'alertname="{source}"', 'severity="critical"']
        assert slo["target_matchers"] == [f'alertname="{target}"']
        assert slo["equal"] == ["environment"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert {"alertname", "environment"} <= set(inhibit["equal"])


def alert(name: str, severity: str) -> dict:
    return {
        "labels": {"alertname": name, "severity": severity, "environment": "test",
                   "model_name": "fraud-detector"},
        "annotations": {"summary": f"{name} summary", "description": f"{name} at {severity}",
                        "runbook_url": f"https://example.org/runbooks#{name.lower()}"},
    }  # fmt: skip


def test_a_warning_reaches_slack_and_a_critical_slack_and_pagerduty(tmp_path):
    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            manager.fire(alert("MLExampleWarning", "warning"))
            assert wait_for(lambda: sink.at(SLACK)), manager.log.read_text()[-2000:]
            time.sleep(2)  # a warning must not page, even a little later
            assert sink.at(PAGERDUTY) == []
            (warning,) = sink.at(SLACK)
            text = json.dumps(warning.body)
            assert "MLExampleWarning" in text and "runbooks#mlexamplewarning" in text

            manager.fire(alert("MLExampleCritical", "critical"))
            assert wait_for(lambda: sink.at(PAGERDUTY)), manager.log.read_text()[-2000:]
            (page,) = sink.at(PAGERDUTY)
            assert page.body["routing_key"] == ROUTING_KEY
            assert page.body["event_action"] == "trigger"
            assert page.body["payload"]["severity"] == "critical"
            assert "MLExampleCritical" in page.body["payload"]["summary"]
            assert wait_for(lambda: len(sink.at(SLACK)) == 2)
        finally:
            manager.stop()


def test_a_critical_alert_inhibits_the_warning_of_the_same_name(tmp_path):
    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            manager.fire(alert("MLAccuracyLow", "critical"), alert("MLAccuracyLow", "warning"),
                         alert("MLOtherWarning", "warning"))  # fmt: skip
            assert wait_for(lambda: sink.at(PAGERDUTY) and len(sink.at(SLACK)) >= 2)
            time.sleep(3)
            slack = [json.dumps(request.body) for request in sink.at(SLACK)]
            assert len(slack) == 2, slack
            assert any("MLOtherWarning" in text for text in slack)
            assert not any("MLAccuracyLow" in text and "warning, test" in text for text in slack)
        finally:
            manager.stop()


def test_an_slo_page_holds_back_the_api_error_warning_of_its_environment(tmp_path):
    """The availability SLO's page and MLApiErrorRateHigh (a warning) are the same server errors:
    while the page fires, the warning of its environment is held back; another environment's
    still reaches Slack."""
    elsewhere = alert("MLApiErrorRateHigh", "warning")
    elsewhere["labels"]["environment"] = "staging"
    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            manager.fire(alert("MLPredictAvailabilityBudgetBurn", "critical"),
                         alert("MLApiErrorRateHigh", "warning"), elsewhere)  # fmt: skip
            assert wait_for(lambda: sink.at(PAGERDUTY) and len(sink.at(SLACK)) >= 2)
            time.sleep(3)
            slack = [json.dumps(request.body) for request in sink.at(SLACK)]
            assert len(slack) == 2, slack
            assert any("MLPredictAvailabilityBudgetBurn" in text for text in slack)
            assert any("MLApiErrorRateHigh (warning, staging)" in text for text in slack)
            (page,) = sink.at(PAGERDUTY)
            assert "MLPredictAvailabilityBudgetBurn" in page.body["payload"]["summary"]
        finally:
            manager.stop()
