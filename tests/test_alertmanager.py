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
    DEADMANSSWITCH,
    PAGERDUTY,
    ROUTING_KEY,
    RUNBOOK_BASE_URL,
    SLACK,
    RunningAlertmanager,
    loopback_copy,
    render,
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


@pytest.mark.parametrize("url", ["", "https://hc-ping.com/5f1c?create=1&rid=a|b"])
def test_the_watchdog_goes_to_the_dead_mans_switch_when_there_is_one_and_nowhere_otherwise(
    tmp_path, url
):
    """MLWatchdog is `info` (routed nowhere) by its severity; its own route comes first. Without
    DEADMANSSWITCH_URL the entrypoint routes it to "null": a placeholder URL would fail every
    minute and keep MLAlertNotificationsFailing firing."""
    config = render(tmp_path, DEADMANSSWITCH_URL=url)
    done = amtool("check-config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    pairs = ["alertname=MLWatchdog", "severity=info", "environment=production"]
    done = amtool("config", "routes", "test", f"--config.file={config}", *pairs)
    assert done.stdout.strip() == ("deadmansswitch" if url else "null"), done.stderr
    (receiver,) = [r for r in yaml.safe_load(config.read_text())["receivers"]
                   if r["name"] == "deadmansswitch"]  # fmt: skip
    if url:  # `&` and `|` are taken literally, not as sed's
        assert receiver["webhook_configs"][0]["url"] == url
    # No other alert reaches the heartbeat.
    for severity in ("critical", "warning", "info"):
        done = amtool("config", "routes", "test", f"--config.file={config}",
                      "alertname=MLExample", f"severity={severity}")  # fmt: skip
        assert done.stdout.strip() != "deadmansswitch"


def test_the_rendered_files_keep_the_secrets_out_of_the_config_and_the_runbooks_absolute(
    tmp_path,
):
    config = render(
        tmp_path,
        SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T/B/secret",
        PAGERDUTY_ROUTING_KEY="R0UT1NGKEY",
        RUNBOOK_BASE_URL=RUNBOOK_BASE_URL,
    )
    text = config.read_text()
    assert "secret" not in text and "R0UT1NGKEY" not in text
    assert (tmp_path / "slack_webhook_url").read_text().endswith("/T/B/secret")
    assert (tmp_path / "slack_webhook_url").stat().st_mode & 0o077 == 0
    assert (tmp_path / "pagerduty_routing_key").read_text() == "R0UT1NGKEY"
    template = (tmp_path / "templates" / "ml.tmpl").read_text()
    assert "@RUNBOOK_BASE_URL@" not in template and RUNBOOK_BASE_URL in template
    unset = render(tmp_path / "unset")
    assert "@RUNBOOK_BASE_URL@" not in (tmp_path / "unset" / "templates" / "ml.tmpl").read_text()
    assert (tmp_path / "unset" / "slack_webhook_url").read_text().startswith("http://127.0.0.1:9/")
    assert "https://events.pagerduty.com/v2/enqueue" in unset.read_text()


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
    inhibit, *outages = config["inhibit_rules"]
    # A bigger outage mutes what it explains: no exporter, no API.
    assert [rule["source_matchers"] for rule in outages] == [
        ['alertname="MLExporterDown"'], ['alertname="MLApiUnavailable"'],
        ['alertname="MLApiUnavailable"'],
    ]  # fmt: skip
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert {"alertname", "environment"} <= set(inhibit["equal"])


def alert(name: str, severity: str, runbook: str | None = None) -> dict:
    return {
        "labels": {"alertname": name, "severity": severity, "environment": "test",
                   "model_name": "fraud-detector"},
        "annotations": {"summary": f"{name} summary", "description": f"{name} at {severity}",
                        "runbook_url": runbook or f"https://example.org/runbooks#{name.lower()}"},
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


def test_the_watchdog_reaches_the_dead_mans_switch_every_repeat_and_pages_nobody(tmp_path):
    with running_sink() as sink:
        config = loopback_copy(tmp_path, sink.url, deadmansswitch=True)
        data = yaml.safe_load(config.read_text())
        (watchdog,) = [r for r in data["route"]["routes"] if r["receiver"] == "deadmansswitch"]
        assert watchdog["repeat_interval"] == "1m"  # what a heartbeat service's period must exceed
        watchdog |= {"group_interval": "1s", "repeat_interval": "1s"}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        manager = RunningAlertmanager(config, tmp_path)
        try:
            watchdog_alert = alert("MLWatchdog", "info")
            manager.fire(watchdog_alert)
            # Prometheus re-sends a firing alert every evaluation; the heartbeat keeps coming.
            assert wait_for(
                lambda: manager.fire(watchdog_alert) or len(sink.at(DEADMANSSWITCH)) >= 3, 30
            ), manager.log.read_text()[-2000:]
            beat = sink.at(DEADMANSSWITCH)[0].body
            assert beat["status"] == "firing"
            assert beat["commonLabels"]["alertname"] == "MLWatchdog"
            assert sink.at(SLACK) == [] and sink.at(PAGERDUTY) == []
        finally:
            manager.stop()


def test_slack_and_pagerduty_get_the_runbook_as_an_absolute_link(tmp_path):
    """The rules' runbook_url is relative (docs/runbooks.md#...): RUNBOOK_BASE_URL makes it a
    link a person can click in Slack and PagerDuty; an absolute one is left as it is."""
    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            manager.fire(alert("MLFeatureDrift", "critical", "docs/runbooks.md#mlfeaturedrift"))
            assert wait_for(lambda: sink.at(PAGERDUTY) and sink.at(SLACK))
            link = RUNBOOK_BASE_URL + "docs/runbooks.md#mlfeaturedrift"
            assert f"Runbook: {link}" in json.dumps(sink.at(SLACK)[0].body)
            (page,) = sink.at(PAGERDUTY)
            assert page.body["payload"]["custom_details"]["runbook_url"] == link
            assert page.body["links"] == [{"href": link, "text": "Runbook"}]
        finally:
            manager.stop()
