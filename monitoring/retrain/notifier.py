"""The stack's notifications: `alerting.notify` wired to our settings and to the `alert_log` table.

`alerting` knows nothing of ours; this module gives it its destinations from `Settings` and its
memory in the monitoring database, where every delivery becomes an `alert_log` row and the dedup
window is read back, so DAG tasks in separate processes share it. With `ALERTMANAGER_URL` set
(compose, `make stack`), Alertmanager is the one destination: one `alert_log` row per event,
destination `alertmanager`. What the DAG tasks call:

    from alerting.events import candidate_rejected
    from monitoring.retrain.notifier import notify
    notify(candidate_rejected("fraud-detector", "7", gates=report.to_dict()["gates"]))

and `on_task_failure` as a task's `on_failure_callback` (`on_task_failure(context, training=True)`
for the training DAG's tasks, whose failure is the training run's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, text

from alerting.events import Event, task_failed, training_failed
from alerting.notify import (
    AlertmanagerConfig,
    Delivery,
    EmailConfig,
    Notifier,
    NotifierConfig,
    PagerDutyConfig,
    SlackConfig,
    WebhookConfig,
)
from data.db import alert_claims, alert_log, get_engine, init_db
from data.settings import Settings, get_settings


class AlertLog:
    """The notifier's `DeliveryLog` in `alert_log`: one row per delivery, read back for dedup;
    sends are claimed first in `alert_claims`, atomically across processes."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or get_engine()
        self._ready = False

    def _tables(self) -> Engine:
        if not self._ready:  # the first notification of a fresh database creates the table
            init_db(self.engine)
            self._ready = True
        return self.engine

    def sent_since(self, dedup_key: str, destination: str, since: datetime) -> bool:
        with self._tables().connect() as conn:
            return conn.execute(_delivered(dedup_key, destination, since)).first() is not None

    def claim(
        self, dedup_key: str, destination: str, since: datetime, at: datetime, live: datetime
    ) -> int | None:
        """Claim a send in `alert_claims` unless it was delivered since `since` or claimed since
        `live`; the claim's id, or None. On Postgres the check and the claim hold a transaction
        advisory lock on the key and destination, so of two processes one claims; SQLite takes
        one writer at a time."""
        with self._tables().begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": _lock_key(dedup_key, destination)},
                )
            mine = (alert_claims.c.dedup_key == dedup_key) & (
                alert_claims.c.destination == destination
            )
            held = conn.execute(
                select(alert_claims.c.id).where(mine, alert_claims.c.claimed_at >= live).limit(1)
            ).first()
            delivered = conn.execute(_delivered(dedup_key, destination, since)).first()
            if held is not None or delivered is not None:
                return None
            conn.execute(delete(alert_claims).where(mine, alert_claims.c.claimed_at < live))
            return conn.execute(
                insert(alert_claims).values(
                    claimed_at=at, dedup_key=dedup_key, destination=destination
                )
            ).inserted_primary_key[0]

    def release(self, token: int) -> None:
        with self._tables().begin() as conn:
            conn.execute(delete(alert_claims).where(alert_claims.c.id == token))

    def record(self, event: Event, deliveries: Sequence[Delivery], at: datetime) -> None:
        annotations = {
            "summary": event.summary,
            "description": event.description,
            "details": dict(event.details),
        }
        rows = [
            {
                # Set here, not by the server, so the dedup window and the row agree on one
                # clock (SQLite's CURRENT_TIMESTAMP has no time zone and whole seconds).
                "created_at": at,
                "alertname": event.name,
                "severity": event.severity,
                "status": "firing",
                "destination": delivery.destination,
                "delivered": delivery.delivered,
                "outcome": delivery.outcome,
                "attempts": delivery.attempts,
                "dedup_key": event.dedup_key,
                "labels": dict(event.labels),
                "annotations": annotations,
                "error": delivery.error,
            }
            for delivery in deliveries
        ]
        with self._tables().begin() as conn:
            conn.execute(insert(alert_log), rows)


def _delivered(dedup_key: str, destination: str, since: datetime):
    """The query for a delivery of `dedup_key` to `destination` at or after `since`."""
    return (
        select(alert_log.c.id)
        .where(
            alert_log.c.dedup_key == dedup_key,
            alert_log.c.destination == destination,
            alert_log.c.delivered.is_(True),
            alert_log.c.created_at >= since,
        )
        .limit(1)
    )


def _lock_key(dedup_key: str, destination: str) -> int:
    """The advisory lock of one key and destination (a signed 64-bit number)."""
    digest = hashlib.blake2b(f"notify:{destination}:{dedup_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def notifier_config(settings: Settings) -> NotifierConfig:
    """The notifier's destinations and limits from the settings; unset destinations are None."""

    def secret(value) -> str | None:
        return value.get_secret_value() if value is not None and value.get_secret_value() else None

    slack_url = secret(settings.SLACK_WEBHOOK_URL)
    routing_key = secret(settings.PAGERDUTY_ROUTING_KEY)
    webhook_url = secret(settings.ALERT_WEBHOOK_URL)
    email = None
    if settings.SMTP_HOST and settings.ALERT_EMAIL_FROM and settings.ALERT_EMAIL_TO:
        email = EmailConfig(
            host=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            sender=settings.ALERT_EMAIL_FROM,
            recipients=tuple(
                address.strip() for address in settings.ALERT_EMAIL_TO.split(",") if address.strip()
            ),
            username=settings.SMTP_USER or None,
            password=secret(settings.SMTP_PASSWORD),
            starttls=settings.SMTP_STARTTLS,
        )
    return NotifierConfig(
        slack=SlackConfig(slack_url) if slack_url else None,
        pagerduty=(
            PagerDutyConfig(routing_key, events_url=settings.PAGERDUTY_EVENTS_URL)
            if routing_key
            else None
        ),
        email=email,
        webhook=WebhookConfig(webhook_url) if webhook_url else None,
        alertmanager=(
            AlertmanagerConfig(
                settings.ALERTMANAGER_URL, resolve_minutes=settings.ALERTMANAGER_RESOLVE_MINUTES
            )
            if settings.ALERTMANAGER_URL
            else None
        ),
        environment=settings.ENVIRONMENT,
        dedup_minutes=settings.NOTIFY_DEDUP_MINUTES,
        retries=settings.NOTIFY_RETRIES,
        timeout_seconds=settings.NOTIFY_TIMEOUT_SECONDS,
        max_seconds=settings.NOTIFY_MAX_SECONDS,
    )


def notifier_from_settings(settings: Settings, engine: Engine | None = None) -> Notifier:
    """A notifier for this process: destinations from the settings, memory in `alert_log`."""
    return Notifier(
        notifier_config(settings), AlertLog(engine or get_engine(settings.database_url))
    )


def notify(event: Event, *, settings: Settings, engine: Engine | None = None) -> list[Delivery]:
    """Send `event` to the destinations its severity routes it to; record each in `alert_log`.

    Never raises for a destination or the database failing (the deliveries say what happened).
    """
    return notifier_from_settings(settings, engine).notify(event)


def on_task_failure(context: Mapping[str, Any], *, training: bool = False) -> list[Delivery]:
    """An Airflow `on_failure_callback`: a `task_failed` event (warning) for the failed task, or
    with `training` (the training DAG's tasks) a `training_failed` one, which is the alert of
    the rule MLRetrainFailed (alerting.events: each event once).

    Airflow calls it once the task has failed for good (retries have their own callback).
    """
    settings = get_settings()
    ti = context.get("ti") or context.get("task_instance")
    error = context.get("exception")
    dag_id = str(getattr(ti, "dag_id", None) or context.get("dag_id") or "unknown")
    task_id = str(getattr(ti, "task_id", None) or "unknown")
    about: dict[str, Any] = {
        "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
        "error": f"{type(error).__name__}: {error}"
        if isinstance(error, BaseException)
        else str(error or ""),
        "try_number": getattr(ti, "try_number", None),
        "log_url": _log_url(ti),
    }
    if training:
        event = training_failed(settings.MODEL_NAME, dag_id, task_id, **about)
    else:
        event = task_failed(dag_id, task_id, model_name=settings.MODEL_NAME, **about)
    return notify(event, settings=settings)


def _log_url(ti: object) -> str | None:
    try:
        return getattr(ti, "log_url", None)
    except Exception:  # a property that needs configuration the worker lacks
        return None
