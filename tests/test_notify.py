"""Notifications against real endpoints: a local HTTP sink playing Slack, PagerDuty, a webhook and
Alertmanager's API, a real SMTP server (aiosmtpd), and `alert_log` on SQLite and Postgres as the
dedup memory. The real Alertmanager receives the notifier's alerts in tests/test_alertmanager.py."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from pydantic import ValidationError
from sqlalchemy import select

from alerting.events import (
    ALERTNAMES,
    Event,
    candidate_challenger,
    candidate_promoted,
    candidate_rejected,
    retrain_started,
    task_failed,
    training_failed,
)
from alerting.notify import (
    AlertmanagerConfig,
    EmailConfig,
    Notifier,
    NotifierConfig,
    PagerDutyConfig,
    SlackConfig,
    WebhookConfig,
)
from data.db import alert_claims, alert_log, get_engine, init_db
from data.settings import PROJECT_ROOT, Settings, get_settings
from monitoring.retrain.notifier import AlertLog, notifier_config, notify, on_task_failure
from tools.testkit.http_sink import Sink, running_sink

SLACK_PATH = "/services/T0001/B0002/slack-secret-token"
PAGERDUTY_PATH = "/v2/enqueue"
WEBHOOK_PATH = "/hooks/webhook-secret-token"
ROUTING_KEY = "pd-routing-key-0123456789abcdef"
SMTP_PASSWORD = "smtp-password-9f8e7d"
SECRETS = (SLACK_PATH, ROUTING_KEY, SMTP_PASSWORD, WEBHOOK_PATH)

GATES = {  # as training.gates.GateReport.to_dict()["gates"] gives them
    "performance_floor": {
        "passed": False,
        "reason": "roc_auc 0.8712 < 0.9",
        "metrics": {"roc_auc": 0.8712, "pr_auc": 0.61, "f1": 0.52},
        "floors": {"roc_auc": 0.9, "pr_auc": 0.5, "f1": 0.4},
    },
    "no_regression": {"passed": True, "reason": "within 2%", "champion_version": "3"},
    "operational": {"passed": True, "reason": "in order", "latency_p50_us": 1712.5},
}


def http_config(sink: Sink, **overrides) -> NotifierConfig:
    values = {
        "slack": SlackConfig(sink.url + SLACK_PATH),
        "pagerduty": PagerDutyConfig(ROUTING_KEY, events_url=sink.url + PAGERDUTY_PATH),
        "environment": "test",
        "backoff_seconds": 0.05,
        "timeout_seconds": 2.0,
        "max_seconds": 10.0,
    }
    return NotifierConfig(**(values | overrides))


def page() -> Event:
    """A critical event: it pages (none of the retrain loop's own events does)."""
    return Event(
        "model_accuracy_low",
        "critical",
        "Model accuracy below the critical floor",
        "fraud-detector v7 at 0.78",
        details={"accuracy": 0.78, "threshold": 0.85},
        labels={"model_name": "fraud-detector", "version": "7"},
        dedup_key="model_accuracy_low:fraud-detector:7",
    )


def every_kind_of_event() -> list[Event]:
    """One event of each kind the retrain loop and the DAGs send."""
    return [
        retrain_started("fraud-detector", reason="dataset drift", run_id="r1"),
        candidate_promoted("fraud-detector", 8, previous_champion=7, metrics={"roc_auc": 0.95}),
        candidate_challenger("fraud-detector", 8, metrics={"roc_auc": 0.95}),
        candidate_rejected("fraud-detector", 7, gates=GATES),
        training_failed("fraud-detector", "training_dag", "fit", run_id="manual__1", error="OOM"),
        task_failed("drift_check_dag", "check", model_name="fraud-detector", run_id="s__1"),
    ]


def outcomes(deliveries) -> dict[str, str]:
    return {d.destination: d.outcome for d in deliveries}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sink() -> Iterator[Sink]:
    with running_sink() as state:
        yield state


# --- The SMTP server ------------------------------------------------------------------------


@dataclass
class Mailbox:
    port: int
    messages: list = field(default_factory=list)
    logins: list = field(default_factory=list)


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    mailbox = Mailbox(port=free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            mailbox.messages.append(envelope)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        mailbox.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password.decode() == SMTP_PASSWORD)

    # No TLS on loopback: login over plain text is allowed here only.
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=mailbox.port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    yield mailbox
    controller.stop()


def email_config(mailbox: Mailbox, **overrides) -> EmailConfig:
    values = {
        "host": "127.0.0.1",
        "port": mailbox.port,
        "sender": "alerts@example.org",
        "recipients": ("oncall@example.org", "ml-team@example.org"),
        "username": "alerts",
        "password": SMTP_PASSWORD,
        "starttls": False,
    }
    return EmailConfig(**(values | overrides))


# --- Routing and payloads -------------------------------------------------------------------


def test_critical_reaches_slack_pagerduty_email_and_webhook_in_their_shapes(sink, smtp):
    notifier = Notifier(
        http_config(sink, email=email_config(smtp), webhook=WebhookConfig(sink.url + WEBHOOK_PATH))
    )
    deliveries = notifier.notify(page())

    assert outcomes(deliveries) == dict.fromkeys(("slack", "pagerduty", "email", "webhook"), "sent")
    (paged,) = sink.at(PAGERDUTY_PATH)
    assert paged.body["routing_key"] == ROUTING_KEY
    assert paged.body["event_action"] == "trigger"
    assert paged.body["dedup_key"] == "model_accuracy_low:fraud-detector:7"
    payload = paged.body["payload"]
    assert payload["severity"] == "critical"
    assert (
        payload["summary"] == "Model accuracy below the critical floor: fraud-detector v7 at 0.78"
    )
    assert payload["source"] == "ml-monitoring" and payload["group"] == "test"
    assert payload["component"] == "fraud-detector"
    assert payload["custom_details"]["version"] == "7"
    assert paged.headers["Content-Type"] == "application/json"
    (slack,) = sink.at(SLACK_PATH)
    assert slack.body["text"].startswith("[CRITICAL] Model accuracy below the critical floor")
    assert slack.body["blocks"][0]["type"] == "header"
    (hook,) = sink.at(WEBHOOK_PATH)
    assert hook.body["event"] == "model_accuracy_low" and hook.body["severity"] == "critical"
    (mail,) = smtp.messages
    assert mail.rcpt_tos == ["oncall@example.org", "ml-team@example.org"]
    assert "Subject: [CRITICAL] Model accuracy below the critical floor (test)" in (
        mail.content.decode()
    )
    assert smtp.logins == [("alerts", SMTP_PASSWORD)]


def test_a_rejected_candidate_reaches_slack_only_with_the_gate_numbers(sink):
    notifier = Notifier(http_config(sink, webhook=None))

    deliveries = notifier.notify(candidate_rejected("fraud-detector", 7, gates=GATES))

    assert outcomes(deliveries) == {"slack": "sent", "webhook": "skipped"}
    assert sink.at(PAGERDUTY_PATH) == []
    (slack,) = sink.received
    assert slack.path == SLACK_PATH
    assert "fraud-detector v7 stays off @champion" in slack.body["text"]
    assert "performance_floor: roc_auc 0.8712 < 0.9" in slack.body["text"]
    fields = [f["text"] for b in slack.body["blocks"] for f in b.get("fields", [])]
    assert "*performance_floor.metrics.roc_auc*\n0.8712" in fields
    assert "*performance_floor.floors.roc_auc*\n0.9" in fields
    assert "*operational.latency_p50_us*\n1712.5" in fields
    # Slack allows 10 fields per section: the 14 values span two sections.
    assert len(fields) == 14
    assert all(len(b.get("fields", [])) <= 10 for b in slack.body["blocks"])


@pytest.mark.parametrize(
    "event",
    [
        retrain_started("fraud-detector", reason="dataset drift", run_id="r1"),
        candidate_promoted("fraud-detector", 8, previous_champion=7, metrics={"roc_auc": 0.95}),
        # A failed task pages nobody: the rule for a failed training run is a warning too.
        task_failed("drift_check_dag", "check", run_id="scheduled__1", error="boom"),
        training_failed("fraud-detector", "training_dag", "fit", run_id="manual__1"),
    ],
    ids=lambda event: event.name,
)
def test_warnings_go_to_slack_and_not_to_pagerduty(sink, event):
    deliveries = Notifier(http_config(sink)).notify(event)
    assert [r.path for r in sink.received] == [SLACK_PATH]
    assert outcomes(deliveries) == {"slack": "sent", "webhook": "skipped"}


def test_info_reaches_nothing_but_the_log(sink):
    event = Event("retrain_skipped", "info", "Retraining skipped", "cooldown active")
    deliveries = Notifier(http_config(sink)).notify(event)
    assert sink.received == []
    assert outcomes(deliveries) == {"log": "not_routed"}


def test_an_unknown_severity_is_refused_not_downgraded():
    with pytest.raises(ValueError, match="severity must be one of"):
        Event("task_failed", "CRITICAL", "Airflow task failed")  # type: ignore[arg-type]


def test_an_unconfigured_destination_is_skipped_visibly(sink):
    deliveries = Notifier(NotifierConfig(slack=SlackConfig(sink.url + SLACK_PATH))).notify(page())
    assert outcomes(deliveries) == {
        "slack": "sent",
        "pagerduty": "skipped",
        "email": "skipped",
        "webhook": "skipped",
    }
    assert {d.error for d in deliveries if d.outcome == "skipped"} == {
        "pagerduty is not configured",
        "email is not configured",
        "webhook is not configured",
    }
    assert not any(d.delivered for d in deliveries if d.outcome == "skipped")


# --- Retries --------------------------------------------------------------------------------


def test_a_500_then_success_is_retried_and_delivered(sink):
    sink.answers[PAGERDUTY_PATH] = [(500, {}, "upstream error")]
    deliveries = Notifier(http_config(sink)).notify(page())
    pagerduty = next(d for d in deliveries if d.destination == "pagerduty")
    assert (pagerduty.outcome, pagerduty.attempts) == ("sent", 2)
    assert len(sink.at(PAGERDUTY_PATH)) == 2


def test_a_429_waits_for_retry_after(sink):
    sink.answers[SLACK_PATH] = [(429, {"Retry-After": "1"}, "rate limited")]
    started = time.monotonic()
    (slack, *_) = Notifier(http_config(sink)).notify(retrain_started("m", reason="drift"))
    assert (slack.outcome, slack.attempts) == ("sent", 2)
    assert time.monotonic() - started >= 0.9  # the server's second, not the 0.05 s backoff


def test_a_400_is_not_retried_and_is_recorded_as_failed_with_the_error(sink):
    sink.answers[PAGERDUTY_PATH] = [(400, {}, '{"status":"invalid event"}')]
    deliveries = Notifier(http_config(sink)).notify(page())
    pagerduty = next(d for d in deliveries if d.destination == "pagerduty")
    assert (pagerduty.outcome, pagerduty.attempts) == ("failed", 1)
    assert pagerduty.error == 'HTTP 400: {"status":"invalid event"}'
    assert len(sink.at(PAGERDUTY_PATH)) == 1


def test_a_dead_endpoint_neither_raises_nor_holds_the_task(caplog):
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    config = NotifierConfig(
        slack=SlackConfig(refused + SLACK_PATH),
        pagerduty=PagerDutyConfig(
            ROUTING_KEY, events_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v2/enqueue"
        ),
        retries=10,
        timeout_seconds=0.5,
        max_seconds=2.0,
        backoff_seconds=0.1,
    )
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="alerting.notify"):
        deliveries = Notifier(config).notify(page())
    elapsed = time.monotonic() - started
    silent.close()

    assert elapsed < config.max_seconds + config.timeout_seconds + 0.5
    slack, pagerduty = deliveries[:2]
    assert slack.outcome == pagerduty.outcome == "failed"
    assert "ConnectionError" in slack.error and slack.attempts > 1
    assert "Timeout" in pagerduty.error
    lines = [r for r in caplog.records if r.name == "alerting.notify"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "slack failed after" in lines[0].getMessage()


# --- Email ----------------------------------------------------------------------------------


def test_email_carries_the_numbers(smtp):
    notifier = Notifier(NotifierConfig(email=email_config(smtp)))
    event = Event(
        "model_accuracy_low",
        "critical",
        "Model accuracy low",
        "fraud-detector v7 at 0.78",
        details={"accuracy": 0.78, "threshold": 0.9},
    )
    assert outcomes(notifier.notify(event))["email"] == "sent"
    (mail,) = smtp.messages
    body = mail.content.decode()
    assert "accuracy: 0.78" in body and "threshold: 0.9" in body
    assert mail.mail_from == "alerts@example.org"


def test_email_with_starttls_refuses_a_server_without_it(smtp):
    notifier = Notifier(NotifierConfig(email=email_config(smtp, starttls=True)))
    (*_, email, _) = notifier.notify(page())
    assert (email.outcome, email.attempts) == ("failed", 1)
    assert "STARTTLS" in email.error
    assert smtp.messages == [] and smtp.logins == []  # the password never left in clear text


def test_email_to_a_server_that_is_down_fails_after_retries():
    config = EmailConfig("127.0.0.1", "a@example.org", ("b@example.org",), port=free_port())
    notifier = Notifier(NotifierConfig(email=config, retries=2, backoff_seconds=0.01))
    email = next(d for d in notifier.notify(page()) if d.destination == "email")
    assert (email.outcome, email.attempts) == ("failed", 3)
    assert "ConnectionRefusedError" in email.error


# --- alert_log: the record and the dedup memory ---------------------------------------------


def rows(url: str) -> list[dict]:
    with get_engine(url).connect() as conn:
        result = conn.execute(select(alert_log).order_by(alert_log.c.id))
        return [dict(row._mapping) for row in result]


def configure_env(monkeypatch, sink: Sink, database_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", sink.url + SLACK_PATH)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", sink.url + PAGERDUTY_PATH)
    monkeypatch.setenv("NOTIFY_DEDUP_MINUTES", "30")
    get_settings.cache_clear()


def test_every_delivery_is_a_row_in_alert_log(sink, database_url, monkeypatch):
    configure_env(monkeypatch, sink, database_url)
    sink.answers[PAGERDUTY_PATH] = [(503, {}, "busy")]

    notify(page(), settings=get_settings())
    notify(
        Event("retrain_skipped", "info", "Retraining skipped", "cooldown active"),
        settings=get_settings(),
    )

    logged = rows(database_url)
    assert [(r["destination"], r["outcome"], r["delivered"], r["attempts"]) for r in logged] == [
        ("slack", "sent", True, 1),
        ("pagerduty", "sent", True, 2),
        ("email", "skipped", False, 0),
        ("webhook", "skipped", False, 0),
        ("log", "not_routed", False, 0),
    ]
    first = logged[0]
    assert first["alertname"] == "model_accuracy_low" and first["severity"] == "critical"
    assert first["status"] == "firing"
    assert first["dedup_key"] == "model_accuracy_low:fraud-detector:7"
    assert first["labels"] == {"model_name": "fraud-detector", "version": "7"}
    assert first["annotations"]["summary"] == "Model accuracy below the critical floor"
    assert first["annotations"]["description"] == "fraud-detector v7 at 0.78"
    assert logged[2]["error"] == "email is not configured"
    assert first["created_at"] is not None


def test_dedup_lives_in_the_database_across_processes(sink, database_url, monkeypatch, tmp_path):
    configure_env(monkeypatch, sink, database_url)
    script = (
        "from alerting.events import candidate_rejected\n"
        "from data.settings import get_settings\n"
        "from monitoring.retrain.notifier import notify\n"
        f"event = candidate_rejected('fraud-detector', 7, gates={GATES!r})\n"
        "print([d.outcome for d in notify(event, settings=get_settings())])"
    )
    sent = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert sent.stdout.strip() == "['sent', 'skipped']"
    assert len(sink.at(SLACK_PATH)) == 1

    again = notify(
        candidate_rejected("fraud-detector", 7, gates=GATES), settings=get_settings()
    )  # this process
    assert outcomes(again) == {"slack": "deduplicated", "webhook": "skipped"}
    assert len(sink.at(SLACK_PATH)) == 1
    other = notify(
        candidate_rejected("fraud-detector", 8, gates=GATES), settings=get_settings()
    )  # another key
    assert outcomes(other)["slack"] == "sent"

    later = datetime.now(UTC) + timedelta(minutes=31)
    settings = get_settings()
    after_window = Notifier(
        notifier_config(settings), AlertLog(get_engine(database_url)), clock=lambda: later
    ).notify(candidate_rejected("fraud-detector", 7, gates=GATES))
    assert outcomes(after_window)["slack"] == "sent"
    assert len(sink.at(SLACK_PATH)) == 3
    slack_rows = [r["outcome"] for r in rows(database_url) if r["destination"] == "slack"]
    assert slack_rows == ["sent", "deduplicated", "sent", "sent"]


def test_a_failed_delivery_does_not_count_for_dedup(sink, monkeypatch, isolated_settings):
    url = f"sqlite:///{isolated_settings / 'alerts.db'}"
    configure_env(monkeypatch, sink, url)
    sink.answers[SLACK_PATH] = [(404, {}, "no_service")]
    assert (
        outcomes(notify(retrain_started("m", reason="drift"), settings=get_settings()))["slack"]
        == "failed"
    )
    assert (
        outcomes(notify(retrain_started("m", reason="drift"), settings=get_settings()))["slack"]
        == "sent"
    )


def test_a_database_that_is_down_does_not_stop_the_page(sink, monkeypatch, caplog):
    configure_env(monkeypatch, sink, f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x")
    with caplog.at_level(logging.WARNING, logger="alerting.notify"):
        deliveries = notify(page(), settings=get_settings())
    assert outcomes(deliveries)["pagerduty"] == "sent"
    assert "dedup check failed" in caplog.text and "could not record" in caplog.text


def test_no_secret_reaches_the_log_or_alert_log(sink, monkeypatch, caplog, isolated_settings):
    url = f"sqlite:///{isolated_settings / 'alerts.db'}"
    configure_env(monkeypatch, sink, url)
    refused = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", refused + SLACK_PATH)  # errors quote the URL
    monkeypatch.setenv("ALERT_WEBHOOK_URL", sink.url + WEBHOOK_PATH)
    monkeypatch.setenv("NOTIFY_RETRIES", "1")
    get_settings.cache_clear()
    sink.answers[PAGERDUTY_PATH] = [(400, {}, "invalid event: {body}")]  # echoes the routing key
    sink.answers[WEBHOOK_PATH] = [(500, {}, "bad"), (500, {}, "bad")]

    # INFO, the level Airflow's task logs run at (urllib3's DEBUG lines name every request path).
    with caplog.at_level(logging.INFO):
        deliveries = notify(page(), settings=get_settings())

    assert {d.outcome for d in deliveries if d.destination != "email"} == {"failed"}
    assert ROUTING_KEY in json.dumps(sink.at(PAGERDUTY_PATH)[0].body)  # it was sent, and so
    recorded = json.dumps(rows(url), default=str)
    assert "invalid event" in recorded and "***" in recorded  # ...the echo is kept, masked
    for secret in SECRETS:
        assert secret not in caplog.text
        assert secret not in recorded
    assert ROUTING_KEY not in repr(notifier_config(get_settings()))


# --- Settings and the Airflow callback ------------------------------------------------------


def test_settings_become_the_notifier_config(monkeypatch):
    monkeypatch.setenv("SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("SMTP_USER", "alerts")
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("ALERT_EMAIL_FROM", "alerts@example.org")
    monkeypatch.setenv("ALERT_EMAIL_TO", "a@example.org, b@example.org")
    monkeypatch.setenv("NOTIFY_RETRIES", "5")
    config = notifier_config(Settings())
    assert config.slack is None and config.pagerduty is None and config.webhook is None
    assert config.email == EmailConfig(
        host="smtp.example.org",
        port=587,
        sender="alerts@example.org",
        recipients=("a@example.org", "b@example.org"),
        username="alerts",
        password=SMTP_PASSWORD,
        starttls=True,
    )
    assert (config.retries, config.timeout_seconds, config.max_seconds) == (5, 5.0, 30.0)
    assert config.dedup_minutes == 30.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMTP_HOST": "smtp.example.org"}, "ALERT_EMAIL_FROM, ALERT_EMAIL_TO unset"),
        ({"SMTP_PASSWORD": SMTP_PASSWORD}, "SMTP_PASSWORD is set without SMTP_USER"),
    ],
)
def test_half_an_email_setup_is_refused(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


@pytest.mark.parametrize("name", ["SMTP_PASSWORD", "ALERT_WEBHOOK_URL"])
def test_placeholder_notification_secrets_refused_outside_development(monkeypatch, name):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_ADMIN_TOKEN", "a-real-token-7f3a")
    monkeypatch.setenv("LABEL_TOKENS", "chargebacks=9f2c-real-label-token")
    monkeypatch.setenv("SMTP_USER", "alerts")
    monkeypatch.setenv(name, "changeme")
    with pytest.raises(ValidationError, match=f"{name} is a placeholder"):
        Settings()


@pytest.mark.parametrize(
    ("training", "name", "description"),
    [
        (False, "task_failed", "drift_check.quality failed: KeyError: 'amount'"),
        (True, "training_failed", "Training fraud-detector: drift_check.quality failed"),
    ],
)
def test_on_task_failure_tells_slack_of_the_failed_task_and_pages_nobody(
    sink, monkeypatch, isolated_settings, training, name, description
):
    url = f"sqlite:///{isolated_settings / 'alerts.db'}"
    configure_env(monkeypatch, sink, url)
    ti = SimpleNamespace(
        dag_id="drift_check",
        task_id="quality",
        run_id="scheduled__2",
        try_number=3,
        log_url="http://airflow/log",
    )
    deliveries = on_task_failure({"ti": ti, "exception": KeyError("amount")}, training=training)
    assert outcomes(deliveries) == {"slack": "sent", "webhook": "skipped"}
    assert sink.at(PAGERDUTY_PATH) == []
    (slack,) = sink.at(SLACK_PATH)
    assert slack.body["text"].startswith("[WARNING] ") and description in slack.body["text"]
    (row,) = rows(url)[:1]
    assert row["alertname"] == name
    assert row["dedup_key"] == f"{name}:drift_check:quality:scheduled__2"
    assert row["labels"]["model_name"] == "fraud-detector"  # MODEL_NAME's default


def test_a_failed_task_and_the_rule_for_the_same_failure_agree_on_severity():
    """Each event and the Prometheus rule Alertmanager merges it with (same alertname) have one
    severity; a failed task pages nobody, as the rule for a failed training run."""
    from tests.test_alert_rules import alerts

    rules = {rule["alert"]: rule["labels"]["severity"] for rule in alerts()}
    shared = [event for event in every_kind_of_event() if event.alertname in rules]
    assert {event.alertname for event in shared} == {"MLRetrainRejected", "MLRetrainFailed"}
    for event in shared:
        assert event.severity == rules[event.alertname], event.name
    assert {event.severity for event in every_kind_of_event()} == {"warning"}


# --- Through Alertmanager -------------------------------------------------------------------

ALERTS_PATH = "/api/v2/alerts"
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def alertmanager_notifier(url: str, **overrides) -> Notifier:
    values = {
        "alertmanager": AlertmanagerConfig(url, resolve_minutes=90),
        "environment": "test",
        "backoff_seconds": 0.05,
        "timeout_seconds": 2.0,
        "max_seconds": 10.0,
    }
    return Notifier(NotifierConfig(**(values | overrides)), clock=lambda: NOON)


def test_an_event_is_one_alertmanager_alert_labels_annotations_and_an_end():
    notifier = alertmanager_notifier("http://alertmanager:9093")
    event = task_failed(
        "drift_check_dag", "check", model_name="fraud-detector", run_id="scheduled__1",
        error="boom", try_number=2, log_url="http://airflow:8080/log?x=1",
    )  # fmt: skip

    assert notifier.alertmanager_alert(event) == {
        "labels": {
            "alertname": "MLAirflowTaskFailed",
            "severity": "warning",
            "environment": "test",
            "model_name": "fraud-detector",
            "dag_id": "drift_check_dag",
            "task_id": "check",
            "run_id": "scheduled__1",
        },
        "annotations": {
            "summary": "Airflow task failed",
            "description": "drift_check_dag.check failed: boom",
            "runbook_url": "docs/runbooks.md#mlairflowtaskfailed",
            "details": "try_number: 2\nlog_url: http://airflow:8080/log?x=1",
        },
        "startsAt": "2026-03-01T12:00:00.000Z",
        "endsAt": "2026-03-01T13:30:00.000Z",  # resolve_minutes later: it resolves by itself
        "generatorURL": "http://airflow:8080/log?x=1",
    }


def test_every_kind_of_event_has_a_stable_alert_name_in_house_style():
    notifier = alertmanager_notifier("http://alertmanager:9093")
    names = {}
    for event in every_kind_of_event():
        alert = notifier.alertmanager_alert(event)
        names[event.name] = alert["labels"]["alertname"]
        assert re.fullmatch(r"ML(?:[A-Z][a-z0-9]*)+", names[event.name])
        assert alert["annotations"]["runbook_url"].endswith("#" + names[event.name].lower())
        assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label) for label in alert["labels"])
    assert names == dict(ALERTNAMES)
    assert Event("model_accuracy_low", "critical", "s").alertname == "MLModelAccuracyLow"


def test_an_event_a_rule_also_raises_carries_only_the_rules_labels():
    """MLRetrainRejected and MLRetrainFailed: alertname, severity, environment and model_name,
    as the rules' alerts (aggregated by environment and model_name); the version, the task and
    every gate's numbers go into the `details` annotation."""
    notifier = alertmanager_notifier("http://alertmanager:9093")
    rejected = notifier.alertmanager_alert(candidate_rejected("fraud-detector", 7, gates=GATES))
    rule_labels = {"severity": "warning", "environment": "test", "model_name": "fraud-detector"}
    assert rejected["labels"] == {"alertname": "MLRetrainRejected", **rule_labels}
    details = rejected["annotations"]["details"].splitlines()
    assert "version: 7" in details and "failed_gates: performance_floor" in details
    assert "performance_floor.metrics.roc_auc: 0.8712" in details
    assert "performance_floor: roc_auc 0.8712 < 0.9" in rejected["annotations"]["description"]
    failed = notifier.alertmanager_alert(
        training_failed("fraud-detector", "training_dag", "fit", run_id="manual__1", error="OOM")
    )
    assert failed["labels"] == {"alertname": "MLRetrainFailed", **rule_labels}
    assert "task_id: fit" in failed["annotations"]["details"].splitlines()
    assert "generatorURL" not in failed  # no log URL known


def test_with_alertmanager_every_event_goes_there_and_nowhere_else(sink, smtp):
    notifier = alertmanager_notifier(
        sink.url,
        slack=SlackConfig(sink.url + SLACK_PATH),
        pagerduty=PagerDutyConfig(ROUTING_KEY, events_url=sink.url + PAGERDUTY_PATH),
        webhook=WebhookConfig(sink.url + WEBHOOK_PATH),
        email=email_config(smtp),
    )
    for event in [page(), *every_kind_of_event()]:
        deliveries = notifier.notify(event)
        assert [(d.destination, d.outcome, d.attempts) for d in deliveries] == [
            ("alertmanager", "sent", 1)
        ], event.name
    info = Event("retrain_skipped", "info", "Retraining skipped", "cooldown active")
    assert outcomes(notifier.notify(info)) == {"log": "not_routed"}  # nowhere, as before

    assert {request.path for request in sink.received} == {ALERTS_PATH}
    assert smtp.messages == []
    bodies = [request.body for request in sink.at(ALERTS_PATH)]
    assert all(isinstance(body, list) and len(body) == 1 for body in bodies)
    assert [body[0]["labels"]["severity"] for body in bodies] == ["critical"] + ["warning"] * 6
    assert bodies[0][0]["labels"]["alertname"] == "MLModelAccuracyLow"


def test_alertmanager_dedups_so_the_notifier_sends_every_time(sink):
    notifier = alertmanager_notifier(sink.url)  # dedup_minutes stays 30
    event = retrain_started("fraud-detector", reason="drift", run_id="r1")
    assert (
        outcomes(notifier.notify(event))
        == outcomes(notifier.notify(event))
        == {"alertmanager": "sent"}
    )
    first, again = (request.body for request in sink.at(ALERTS_PATH))
    assert first == again  # the same alert: Alertmanager keeps one


def test_alertmanager_retries_a_5xx_and_gives_up_at_once_on_a_4xx(sink):
    sink.answers[ALERTS_PATH] = [(503, {}, "not ready"), (400, {}, '{"message":"bad alert"}')]
    notifier = alertmanager_notifier(sink.url)
    (first,) = notifier.notify(page())
    assert (first.outcome, first.attempts) == ("failed", 2)
    assert first.error == 'HTTP 400: {"message":"bad alert"}'
    (second,) = notifier.notify(page())
    assert (second.outcome, second.attempts) == ("sent", 1)


def test_alertmanager_down_fails_after_retries_within_the_deadline(caplog):
    notifier = alertmanager_notifier(
        f"http://127.0.0.1:{free_port()}", retries=3, max_seconds=3.0, timeout_seconds=0.5
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="alerting.notify"):
        (delivery,) = notifier.notify(task_failed("drift_check_dag", "check"))
    assert time.monotonic() - started < 3.0 + 0.5 + 0.5
    assert (delivery.destination, delivery.outcome, delivery.attempts) == (
        "alertmanager", "failed", 4,
    )  # fmt: skip
    assert "ConnectionError" in delivery.error
    assert "alertmanager failed after 4 attempts" in caplog.text


def test_a_password_in_the_alertmanager_url_is_masked(caplog):
    url = f"http://notify:am-secret-55@127.0.0.1:{free_port()}"
    notifier = alertmanager_notifier(url, retries=0)
    with caplog.at_level(logging.INFO):
        (delivery,) = notifier.notify(page())
    assert delivery.outcome == "failed"
    assert "am-secret-55" not in caplog.text and "am-secret-55" not in delivery.error
    assert "am-secret-55" not in repr(notifier.config)


def test_through_alertmanager_each_event_is_one_alert_log_row(sink, database_url, monkeypatch):
    configure_env(monkeypatch, sink, database_url)  # Slack and PagerDuty set too, unused
    monkeypatch.setenv("ALERTMANAGER_URL", sink.url + "/")
    get_settings.cache_clear()

    notify(candidate_rejected("fraud-detector", 7, gates=GATES), settings=get_settings())
    notify(candidate_rejected("fraud-detector", 7, gates=GATES), settings=get_settings())
    sink.answers[ALERTS_PATH] = [(500, {}, "down")] * 4
    notify(retrain_started("fraud-detector", reason="drift", run_id="r2"), settings=get_settings())

    assert {request.path for request in sink.received} == {ALERTS_PATH}
    logged = rows(database_url)
    assert [(r["alertname"], r["destination"], r["outcome"], r["delivered"], r["attempts"])
            for r in logged] == [
        ("candidate_rejected", "alertmanager", "sent", True, 1),
        ("candidate_rejected", "alertmanager", "sent", True, 1),  # Alertmanager merged it
        ("retrain_started", "alertmanager", "failed", False, 4),
    ]  # fmt: skip
    assert logged[0]["labels"]["version"] == "7" and logged[2]["error"] == "HTTP 500: down"


def test_settings_give_the_notifier_its_alertmanager(monkeypatch):
    assert notifier_config(Settings()).alertmanager is None  # make demo: straight to Slack
    monkeypatch.setenv("ALERTMANAGER_URL", "http://alertmanager:9093/")
    monkeypatch.setenv("ALERTMANAGER_RESOLVE_MINUTES", "120")
    config = notifier_config(Settings())
    assert config.alertmanager == AlertmanagerConfig("http://alertmanager:9093", 120.0)
    assert config.alertmanager.alerts_url == "http://alertmanager:9093/api/v2/alerts"
    monkeypatch.setenv("ALERTMANAGER_URL", "alertmanager:9093")
    with pytest.raises(ValidationError, match="ALERTMANAGER_URL"):
        Settings()


def test_alerting_imports_nothing_of_ours():
    code = (
        "import sys, alerting.notify\n"
        "ours = {'api', 'data', 'training', 'monitoring'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ours))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


# --- STARTTLS is verified ---------------------------------------------------------------------


@pytest.fixture
def tls_smtp(tmp_path) -> Iterator[tuple[Mailbox, Path]]:
    """An SMTP server that requires STARTTLS, with a self-signed certificate for 127.0.0.1."""
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    mailbox = Mailbox(port=free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            mailbox.messages.append(envelope)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        mailbox.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password.decode() == SMTP_PASSWORD)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=mailbox.port,
        authenticator=authenticator,
        tls_context=server_context,
        require_starttls=True,
    )
    controller.start()
    yield mailbox, cert
    controller.stop()


def test_starttls_refuses_a_certificate_nobody_trusts(tls_smtp, monkeypatch):
    # Before: smtplib's default context took any certificate, so a machine in the middle with
    # a self-signed one got the SMTP password.
    mailbox, _ = tls_smtp
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    notifier = Notifier(NotifierConfig(email=email_config(mailbox, starttls=True)))
    email = next(d for d in notifier.notify(page()) if d.destination == "email")
    assert (email.outcome, email.attempts) == ("failed", 1)
    assert "certificate is not trusted" in email.error and "SSL_CERT_FILE" in email.error
    assert mailbox.messages == [] and mailbox.logins == []


def test_starttls_sends_to_a_server_whose_ca_is_trusted(tls_smtp, monkeypatch):
    mailbox, cert = tls_smtp
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the standard way to name a private CA
    notifier = Notifier(NotifierConfig(email=email_config(mailbox, starttls=True)))
    email = next(d for d in notifier.notify(page()) if d.destination == "email")
    assert email.outcome == "sent", email.error
    assert len(mailbox.messages) == 1 and mailbox.logins == [("alerts", SMTP_PASSWORD)]


def test_two_processes_sending_the_same_event_at_once_send_it_once(
    sink, postgres_url, monkeypatch, tmp_path
):
    """Two DAG tasks notify the same event at the same instant, each in its own process against
    real Postgres, to a Slack that takes two seconds to answer: before, each found no delivery in
    alert_log, both sent, and the channel got it twice."""
    configure_env(monkeypatch, sink, postgres_url)
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY")
    get_settings.cache_clear()
    sink.delay_seconds = 2.0
    init_db(get_engine(postgres_url))  # the tables exist, as in a running stack
    # Both processes import everything first, then wait for each other (a file each), then
    # notify: under load one process may take many seconds longer to start than the other.
    script = (
        "import os, pathlib, time\n"
        "from alerting.events import candidate_rejected\n"
        "from data.settings import get_settings\n"
        "from monitoring.retrain.notifier import notify\n"
        "settings = get_settings()\n"
        f"ready = pathlib.Path({str(tmp_path)!r})\n"
        "(ready / f'ready-{os.getpid()}').touch()\n"
        "deadline = time.time() + 60\n"
        "while len(list(ready.glob('ready-*'))) < 2 and time.time() < deadline:\n"
        "    time.sleep(0.01)\n"
        f"event = candidate_rejected('fraud-detector', 7, gates={GATES!r})\n"
        "print({d.destination: d.outcome for d in notify(event, settings=settings)}['slack'])"
    )
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}
    processes = [
        subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    results = [process.communicate(timeout=120) for process in processes]
    assert all(process.returncode == 0 for process in processes), results
    assert sorted(out.strip() for out, _ in results) == ["deduplicated", "sent"]
    assert len(sink.at(SLACK_PATH)) == 1
    slack = sorted(r["outcome"] for r in rows(postgres_url) if r["destination"] == "slack")
    assert slack == ["deduplicated", "sent"]


def test_a_claim_whose_send_failed_is_released(sink, postgres_url, monkeypatch):
    configure_env(monkeypatch, sink, postgres_url)
    sink.answers[SLACK_PATH] = [(404, {}, "no_service")]
    event = retrain_started("m", reason="drift")
    assert outcomes(notify(event, settings=get_settings()))["slack"] == "failed"
    assert outcomes(notify(event, settings=get_settings()))["slack"] == "sent"
    assert outcomes(notify(event, settings=get_settings()))["slack"] == "deduplicated"
    with get_engine(postgres_url).connect() as conn:
        assert len(conn.execute(select(alert_claims)).all()) == 1  # the one that was sent
