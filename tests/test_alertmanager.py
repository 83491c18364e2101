"""Alertmanager's routing (alerting/alertmanager.yml) checked by amtool and by the real binary,
and the notifier's events (alerting/notify.py) arriving there as alerts: one paging path.

The live tests start Debian's Alertmanager on a loopback port with a copy of the project's file
(tools/testkit/alertmanager_run.py) whose secrets point at a local HTTP sink.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml
from sqlalchemy import select

from alerting.events import candidate_rejected, task_failed, training_failed
from alerting.notify import AlertmanagerConfig, Notifier, NotifierConfig, SlackConfig
from data.db import alert_log, get_engine
from monitoring.retrain.notifier import AlertLog
from tests.test_alert_rules import RULE_TESTS, load
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
    run_entrypoint,
    wait_for,
)
from tools.testkit.http_sink import Sink, running_sink


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
    by_source: dict[str, list[dict]] = {}
    for rule in outages:
        by_source.setdefault(rule["source_matchers"][0], []).append(rule)
    # A bigger outage mutes what it explains: no exporter, no API, an SLO page (the API's fast
    # alert), the latest window's accuracy (the mature window's), no Postgres, lost log rows (the
    # writer's disk errors), a refused champion (a replica on the old version), the spool's disk
    # filling (the host's disk alerts).
    assert [rule["source_matchers"][0] for rule in outages] == [
        'alertname="MLExporterDown"', 'alertname="MLExporterDown"',
        'alertname="MLApiUnavailable"', 'alertname="MLApiUnavailable"',
        'alertname="MLPredictAvailabilityBudgetBurn"', 'alertname="MLPredictLatencyBudgetBurn"',
        'alertname="MLRealizedAccuracyLow"', 'alertname="MLRealizedAccuracyLow"',
        'alertname="MLPostgresDown"', 'alertname="MLPostgresDown"',
        'alertname="MLPredictionLogDropping"', 'alertname="MLChampionRefused"',
        'alertname="MLSpoolDiskFilling"', 'alertname="MLSpoolDiskFilling"',
    ]  # fmt: skip
    # A refused champion mutes the replica-serves-an-old-version ticket it explains.
    (refused,) = by_source['alertname="MLChampionRefused"']
    assert refused["target_matchers"] == ['alertname="MLReplicaServesOldVersion"']
    assert refused["equal"] == ["environment"]
    # Lost log rows mute the writer's disk errors (what they cost), not its internal ones.
    (dropping,) = by_source['alertname="MLPredictionLogDropping"']
    assert dropping["target_matchers"] == ['alertname="MLPredictionLogWriterErrors"', 'kind="disk"']
    assert dropping["equal"] == ["environment"]
    # The latest window's accuracy alert mutes the mature window's of the same model at the same
    # or a lower severity: its page any level, its warning only a warning.
    latest_page, latest_warning = by_source['alertname="MLRealizedAccuracyLow"']
    assert latest_page["source_matchers"][1:] == ['severity="critical"']
    assert latest_page["target_matchers"] == ['alertname="MLMatureAccuracyLow"']
    assert latest_warning["source_matchers"][1:] == ['severity="warning"']
    assert latest_warning["target_matchers"] == [
        'alertname="MLMatureAccuracyLow"', 'severity="warning"']  # fmt: skip
    for rule in (latest_page, latest_warning):
        assert rule["equal"] == ["environment", "model_name"]
    # An SLO page mutes the API's fast alert on the same symptom, in its own environment only.
    (availability,) = by_source['alertname="MLPredictAvailabilityBudgetBurn"']
    (latency,) = by_source['alertname="MLPredictLatencyBudgetBurn"']
    for slo, source, target in [
        (availability, "MLPredictAvailabilityBudgetBurn", "MLApiErrorRateHigh"),
        (latency, "MLPredictLatencyBudgetBurn", "MLApiLatencyHigh"),
    ]:
        assert slo["source_matchers"] == [f'alertname="{source}"', 'severity="critical"']
        assert slo["target_matchers"] == [f'alertname="{target}"']
        assert slo["equal"] == ["environment"]
    # What the stack stands on mutes only in its own environment (Prometheus' external label
    # gives postgres-exporter's and node-exporter's alerts the one their series lack).
    for source in ('alertname="MLPostgresDown"', 'alertname="MLSpoolDiskFilling"'):
        for rule in by_source[source]:
            assert rule["equal"] == ["environment"], rule
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert {"alertname", "environment", "instance"} <= set(inhibit["equal"])


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


def target_down(job: str) -> dict:
    down = alert("MLTargetDown", "warning")
    down["labels"]["job"] = job
    down["annotations"]["description"] = f"the {job} target is down"
    return down


def test_a_postgres_outage_pages_once_and_mutes_what_it_explains(tmp_path):
    """Everything a Postgres outage fires (tests/test_oncall_scenarios.py): MLPostgresDown pages,
    and what it explains stays out of Slack: the spooling, the exporter's failed reads, the
    registry, Airflow and postgres-exporter's target are the same news. What it costs still gets
    through: the spool's disk filling. Other news too: /predict's SLO page (/predict does not
    need Postgres), the API's server errors (not only /feedback's 503s), another job's target
    down and another environment's spooling."""
    explained = [
        alert("MLPredictionLogSpooling", "warning"), alert("MLExporterSourceDown", "warning"),
        alert("MLRegistryUnreachable", "warning"), alert("MLAirflowUnhealthy", "warning"),
        target_down("postgres"),
    ]  # fmt: skip
    elsewhere = alert("MLPredictionLogSpooling", "warning")
    elsewhere["labels"]["environment"] = "staging"
    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            manager.fire(alert("MLPostgresDown", "critical"))
            assert wait_for(lambda: sink.at(PAGERDUTY)), manager.log.read_text()[-2000:]
            manager.fire(alert("MLPostgresDown", "critical"), *explained,
                         alert("MLSpoolDiskFilling", "critical"), target_down("api"),
                         alert("MLPredictLatencyBudgetBurn", "critical"),
                         alert("MLApiErrorRateHigh", "warning"), elsewhere)  # fmt: skip
            assert wait_for(lambda: len(sink.at(PAGERDUTY)) >= 3 and len(sink.at(SLACK)) >= 6)
            time.sleep(3)
            slack = " ".join(json.dumps(request.body) for request in sink.at(SLACK))
            pages = " ".join(json.dumps(request.body) for request in sink.at(PAGERDUTY))
            assert "MLPostgresDown" in pages and "MLSpoolDiskFilling" in pages
            assert "MLPredictLatencyBudgetBurn" in pages
            assert "MLApiErrorRateHigh (warning, test)" in slack
            assert "the api target is down" in slack
            assert "the postgres target is down" not in slack
            assert "MLPredictionLogSpooling (warning, staging)" in slack
            for muted in ("MLPredictionLogSpooling (warning, test)", "MLExporterSourceDown",
                          "MLRegistryUnreachable", "MLAirflowUnhealthy"):  # fmt: skip
                assert muted not in slack, muted
        finally:
            manager.stop()


def on_node(name: str, severity: str, mountpoint: str = "/") -> dict:
    """A host alert as node-exporter's series give it: no `environment` of their own, the
    external label's (here the tests' "test")."""
    host = alert(name, severity)
    del host["labels"]["model_name"]
    host["labels"] |= {"instance": "node-exporter:9100", "job": "node", "mountpoint": mountpoint}
    return host


def test_the_spool_disk_filling_mutes_the_host_disk_alerts_of_its_environment(tmp_path):
    """The spool's disk is the host's: while MLSpoolDiskFilling pages, the host's filling-up page
    and space-low warning in that environment are the same bytes; another environment's host
    still pages. The spool's warning mutes the host's warning, never its page."""
    elsewhere = on_node("MLHostDiskFillingUp", "critical")
    elsewhere["labels"]["environment"] = "staging"
    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            manager.fire(alert("MLSpoolDiskFilling", "critical"))
            assert wait_for(lambda: sink.at(PAGERDUTY)), manager.log.read_text()[-2000:]
            manager.fire(alert("MLSpoolDiskFilling", "critical"),
                         on_node("MLHostDiskFillingUp", "critical"),
                         on_node("MLHostDiskSpaceLow", "warning"), elsewhere)  # fmt: skip
            assert wait_for(lambda: len(sink.at(PAGERDUTY)) >= 2)
            time.sleep(3)
            pages = [json.dumps(request.body) for request in sink.at(PAGERDUTY)]
            slack = " ".join(json.dumps(request.body) for request in sink.at(SLACK))
            assert len(pages) == 2, pages
            assert any("MLHostDiskFillingUp" in page and "staging" in page for page in pages)
            assert "MLHostDiskFillingUp (critical, test)" not in slack
            assert "MLHostDiskSpaceLow" not in slack
        finally:
            manager.stop()


def test_the_spool_disk_warning_mutes_the_host_disk_warning_not_its_page(tmp_path):
    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            other_disk = on_node("MLHostDiskFillingUp", "critical", "/var/lib/postgresql")
            manager.fire(alert("MLSpoolDiskFilling", "warning"),
                         on_node("MLHostDiskSpaceLow", "warning"), other_disk)  # fmt: skip
            assert wait_for(lambda: sink.at(PAGERDUTY) and len(sink.at(SLACK)) >= 2)
            time.sleep(3)
            slack = " ".join(json.dumps(request.body) for request in sink.at(SLACK))
            (page,) = sink.at(PAGERDUTY)
            assert "MLHostDiskFillingUp" in page.body["payload"]["summary"]
            assert "MLSpoolDiskFilling (warning, test)" in slack
            assert "MLHostDiskSpaceLow" not in slack
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


# --- The notifier's events, through the real Alertmanager --------------------------------------

DIRECT_SLACK = "/direct/slack"  # the notifier's own Slack destination: never used with Alertmanager


@pytest.fixture
def manager(tmp_path) -> Iterator[tuple[RunningAlertmanager, Sink]]:
    with running_sink() as sink:
        running = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            yield running, sink
        finally:
            running.stop()


def notifier_for(running: RunningAlertmanager, sink: Sink, **overrides) -> Notifier:
    values = {
        "alertmanager": AlertmanagerConfig(running.url),
        "slack": SlackConfig(sink.url + DIRECT_SLACK),
        "environment": "test",
        "backoff_seconds": 0.05,
        "timeout_seconds": 2.0,
        "max_seconds": 10.0,
    }
    return Notifier(NotifierConfig(**(values | overrides)))


def alerts_in(running: RunningAlertmanager) -> list[dict]:
    answer = httpx.get(f"{running.url}/api/v2/alerts", timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def failed_check(run_id: str = "scheduled__1", dag_id: str = "drift_check_dag"):
    return task_failed(
        dag_id, "check", model_name="fraud-detector", run_id=run_id,
        error="KeyError: 'amount'", try_number=2, log_url="http://airflow:8080/log?try=2",
    )  # fmt: skip


def test_an_event_is_an_alert_in_alertmanager_and_reaches_slack_only_through_it(manager):
    running, sink = manager
    deliveries = notifier_for(running, sink).notify(failed_check())
    assert [(d.destination, d.outcome) for d in deliveries] == [("alertmanager", "sent")]

    (alert,) = alerts_in(running)
    assert alert["labels"] == {
        "alertname": "MLAirflowTaskFailed", "severity": "warning", "environment": "test",
        "model_name": "fraud-detector", "dag_id": "drift_check_dag", "task_id": "check",
        "run_id": "scheduled__1",
    }  # fmt: skip
    assert alert["annotations"] == {
        "summary": "Airflow task failed",
        "description": "drift_check_dag.check failed: KeyError: 'amount'",
        "runbook_url": "docs/runbooks.md#mlairflowtaskfailed",
        "details": "try_number: 2\nlog_url: http://airflow:8080/log?try=2",
    }
    assert alert["generatorURL"] == "http://airflow:8080/log?try=2"
    # An event has no end: its alert resolves by itself an hour later.
    assert when(alert["endsAt"]) - when(alert["startsAt"]) == timedelta(minutes=60)
    assert abs(when(alert["startsAt"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert alert["status"]["state"] == "active"
    assert [receiver["name"] for receiver in alert["receivers"]] == ["slack"]  # a warning

    assert wait_for(lambda: sink.at(SLACK)), running.log.read_text()[-2000:]
    time.sleep(2)
    (message,) = sink.at(SLACK)
    text = json.dumps(message.body)
    assert "MLAirflowTaskFailed (warning, test)" in text and "KeyError" in text
    assert "log_url: http://airflow:8080/log?try=2" in text  # the template shows the details
    assert sink.at(DIRECT_SLACK) == [] and sink.at(PAGERDUTY) == []


def test_a_silence_keeps_the_events_alert_suppressed(manager):
    running, sink = manager
    now = datetime.now(UTC)
    silence = {
        "matchers": [
            {"name": "alertname", "value": "MLAirflowTaskFailed", "isRegex": False},
            {"name": "dag_id", "value": "drift_check_dag", "isRegex": False},
        ],
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=2)).isoformat(),
        "createdBy": "jane", "comment": "INC-42: the drift check is being fixed",
    }  # fmt: skip
    answer = httpx.post(f"{running.url}/api/v2/silences", json=silence, timeout=5)
    assert answer.status_code == 200, answer.text
    silence_id = answer.json()["silenceID"]
    notifier = notifier_for(running, sink)

    assert notifier.notify(failed_check())[0].outcome == "sent"
    notifier.notify(failed_check(dag_id="maintenance_dag"))  # not silenced

    by_dag = {alert["labels"]["dag_id"]: alert for alert in alerts_in(running)}
    assert by_dag["drift_check_dag"]["status"]["state"] == "suppressed"
    assert by_dag["drift_check_dag"]["status"]["silencedBy"] == [silence_id]
    assert by_dag["maintenance_dag"]["status"]["state"] == "active"
    assert wait_for(lambda: sink.at(SLACK)), running.log.read_text()[-2000:]
    time.sleep(3)
    texts = [json.dumps(message.body) for message in sink.at(SLACK)]
    assert len(texts) == 1 and "maintenance_dag" in texts[0]
    assert not any("drift_check_dag" in text for text in texts)
    assert sink.at(DIRECT_SLACK) == []


def test_the_same_event_sent_twice_is_one_alert_told_once(manager):
    running, sink = manager
    notifier = notifier_for(running, sink)
    first = notifier.notify(failed_check())
    assert wait_for(lambda: sink.at(SLACK)), running.log.read_text()[-2000:]
    again = notifier.notify(failed_check())
    time.sleep(3)  # a few of the test copy's one-second group intervals
    assert [d.outcome for d in first + again] == ["sent", "sent"]  # Alertmanager dedups
    assert len(alerts_in(running)) == 1
    assert len(sink.at(SLACK)) == 1


def rule_labels(name: str) -> dict[str, str]:
    """The labels promtool checks the rule `name` fires with (prometheus/tests/alerts_test.yml):
    exactly those of the alert Prometheus sends, plus its name."""
    (group,) = [group for group in load(RULE_TESTS)["tests"] if group["name"] == name]
    (labels,) = [alert["exp_labels"] for case in group["alert_rule_test"]
                 for alert in case.get("exp_alerts") or []]  # fmt: skip
    return {"alertname": name, **labels}


def as_prometheus_sends(name: str) -> dict:
    """The rule's alert as Prometheus posts it to Alertmanager (no external labels are set in
    prometheus/prometheus.yml or prometheus.loopback.yml)."""
    now = datetime.now(UTC)
    return {
        "labels": rule_labels(name),
        "annotations": {"summary": f"{name} (the rule)", "description": "from the exporter",
                        "runbook_url": f"docs/runbooks.md#{name.lower()}"},
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=4)).isoformat(),
        "generatorURL": "http://prometheus:9090/graph",
    }  # fmt: skip


def test_an_event_and_the_rule_for_it_are_one_alert_told_once(manager):
    """Each event once: a rejected candidate and a failed training run reach Alertmanager twice,
    from the notifier at once and from the rule a minute later (or the other way round), and
    are one alert, one Slack message each."""
    running, sink = manager
    notifier = notifier_for(running, sink, environment="production")  # the rule tests' label
    rejected = candidate_rejected("fraud-detector", 7, gates={
        "performance_floor": {"passed": False, "reason": "roc_auc 0.87 < 0.9"}})  # fmt: skip
    failed = training_failed("fraud-detector", "training_dag", "fit", run_id="manual__1")
    assert notifier.notify(rejected)[0].outcome == "sent"
    running.fire(as_prometheus_sends("MLRetrainFailed"))
    assert wait_for(lambda: len(sink.at(SLACK)) == 2), running.log.read_text()[-2000:]
    running.fire(as_prometheus_sends("MLRetrainRejected"))
    assert notifier.notify(failed)[0].outcome == "sent"
    time.sleep(3)

    alerts = alerts_in(running)
    assert sorted(alert["labels"]["alertname"] for alert in alerts) == [
        "MLRetrainFailed", "MLRetrainRejected"]  # fmt: skip
    for alert in alerts:
        assert alert["labels"] == rule_labels(alert["labels"]["alertname"])
    texts = [json.dumps(message.body) for message in sink.at(SLACK)]
    assert len(texts) == 2, texts
    assert sum("MLRetrainRejected" in text for text in texts) == 1


def test_alertmanager_down_the_delivery_fails_after_retries_and_is_recorded(manager, tmp_path):
    running, sink = manager
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    running.stop()  # down (the fixture's second stop finds it gone)
    config = NotifierConfig(
        alertmanager=AlertmanagerConfig(running.url), slack=SlackConfig(sink.url + DIRECT_SLACK),
        retries=2, backoff_seconds=0.2, timeout_seconds=1.0, max_seconds=5.0,
    )  # fmt: skip
    started = time.monotonic()
    (delivery,) = Notifier(config, AlertLog(get_engine(url))).notify(failed_check())
    assert time.monotonic() - started < config.max_seconds + config.timeout_seconds
    assert (delivery.destination, delivery.outcome, delivery.attempts) == (
        "alertmanager", "failed", 3)  # fmt: skip
    assert "ConnectionError" in delivery.error
    assert sink.received == []  # no fallback around Alertmanager's silences
    with get_engine(url).connect() as conn:
        (row,) = conn.execute(select(alert_log)).all()
    assert (row.destination, row.outcome, row.delivered, row.attempts) == (
        "alertmanager", "failed", False, 3)  # fmt: skip


def test_an_outage_mutes_only_what_it_explains(tmp_path):
    """A critical on one host does not mute the same alert's warning on another host, and a
    dead exporter mutes its own target-down, not node-exporter's."""

    def on(instance: str, job: str, base: dict) -> dict:
        return base | {"labels": base["labels"] | {"instance": instance, "job": job}}

    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            manager.fire(
                on("host-a:9100", "node", alert("MLHostMemoryLow", "critical")),
                on("host-b:9100", "node", alert("MLHostMemoryLow", "warning")),
                on("exporter:9100", "exporter", alert("MLExporterDown", "critical")),
                on("exporter:9100", "exporter", alert("MLTargetDown", "warning")),
                on("node-exporter:9100", "node", alert("MLTargetDown", "warning")),
            )
            assert wait_for(lambda: len(sink.at(PAGERDUTY)) >= 2 and len(sink.at(SLACK)) >= 4)
            time.sleep(3)
            slack = [json.dumps(request.body) for request in sink.at(SLACK)]
            assert any("MLHostMemoryLow" in t and "warning, test" in t for t in slack), slack
            target_down = [t for t in slack if "MLTargetDown" in t]
            assert len(target_down) == 1 and "node-exporter:9100" in target_down[0], target_down
            assert "exporter:9100 of job exporter" not in target_down[0]
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


def test_the_latest_windows_accuracy_alert_holds_back_the_mature_windows_never_a_page(tmp_path):
    """MLRealizedAccuracyLow (the latest window, labels came fast) and MLMatureAccuracyLow (the
    most recent mature window) are one fall told twice: while the first fires, the second of the
    same model is held back at the same or a lower severity. A warning never mutes a page, and
    another model's mature alert still gets through."""

    def of(model: str, name: str, severity: str) -> dict:
        fired = alert(name, severity)
        fired["labels"]["model_name"] = model
        fired["annotations"]["description"] = f"{name} {severity} of {model}"
        return fired

    with running_sink() as sink:
        manager = RunningAlertmanager(loopback_copy(tmp_path, sink.url), tmp_path)
        try:
            manager.fire(
                of("model-a", "MLRealizedAccuracyLow", "warning"),
                of("model-a", "MLMatureAccuracyLow", "warning"),  # held back
                of("model-b", "MLRealizedAccuracyLow", "warning"),
                of("model-b", "MLMatureAccuracyLow", "critical"),  # pages all the same
                of("model-c", "MLRealizedAccuracyLow", "critical"),
                of("model-c", "MLMatureAccuracyLow", "critical"),  # held back
                of("model-d", "MLMatureAccuracyLow", "warning"),  # another model: told
            )
            assert wait_for(lambda: len(sink.at(PAGERDUTY)) >= 2 and len(sink.at(SLACK)) >= 4)
            time.sleep(3)
            slack = " ".join(json.dumps(request.body) for request in sink.at(SLACK))
            pages = " ".join(json.dumps(request.body) for request in sink.at(PAGERDUTY))
            assert "MLMatureAccuracyLow critical of model-b" in pages
            assert "MLRealizedAccuracyLow critical of model-c" in pages
            assert "MLMatureAccuracyLow warning of model-d" in slack
            for told in ("MLRealizedAccuracyLow warning of model-a",
                         "MLRealizedAccuracyLow warning of model-b"):  # fmt: skip
                assert told in slack, told
            for muted in ("MLMatureAccuracyLow warning of model-a",
                          "MLMatureAccuracyLow critical of model-c"):  # fmt: skip
                assert muted not in slack and muted not in pages, muted
        finally:
            manager.stop()


def test_the_entrypoint_says_which_destination_is_not_set(tmp_path):
    """An unset destination fails every notification to it: said at start, in the log."""

    def stderr(**env: str) -> str:
        return run_entrypoint(tmp_path, **env).stderr

    said = stderr()
    for name in ("SLACK_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY", "DEADMANSSWITCH_URL"):
        assert f"{name} is not set" in said
    assert stderr(SLACK_WEBHOOK_URL="https://hooks.example/x", PAGERDUTY_ROUTING_KEY="k",
                  DEADMANSSWITCH_URL="https://hc.example/ping") == ""  # fmt: skip
