"""Sending one event to the people on call: through Alertmanager, or straight to Slack, PagerDuty
Events API v2, email and a webhook.

`Notifier(config, log).notify(event)` routes the event (an `alerting.events.Event`) by severity,
sends it to each configured destination with retries, and returns one `Delivery` per destination; it
never raises for a destination that fails, so the Airflow task that calls it keeps its own outcome.

Alertmanager: with `config.alertmanager` set, every event that would page or post goes there and
nowhere else, as one alert (`alertmanager_alert`: Alertmanager's API v2, `POST /api/v2/alerts`),
so the one paging path applies its routes, silences, inhibitions, grouping and dedup to it as to
the Prometheus rules' alerts. The alert's labels are `alertname` (the event's, a stable name per
kind), `severity`, `environment` and the event's labels (or those of `event.alert_labels`); its
annotations `summary`, `description`, `runbook_url` (`docs/runbooks.md#<alertname lower>`, as the
rules') and `details` (everything else). An event happens once, so its alert ends
`resolve_minutes` after it starts and resolves by itself; the same event sent again has the same
labels, so Alertmanager keeps one alert (and the notifier does not dedup it: Alertmanager does).

Routing without Alertmanager (`ROUTES`): `critical` pages: Slack, PagerDuty, email and the
webhook. `warning` goes to Slack and the webhook, not to PagerDuty (it does not wake anyone) nor
to email (an inbox is read for incidents, not for every retrain). `info` is sent nowhere and only
recorded (with Alertmanager too). A destination the event is routed to but that has no
configuration is a `skipped` delivery, never a silent success.

Email: with `starttls` (the default) the connection is upgraded before the login, and the
server's certificate must be valid for the host and chain to a CA the system trusts (or the
bundle in SSL_CERT_FILE); an untrusted one fails the delivery at once, the password unsent.

Retries: a connection error, a timeout, HTTP 429 or 5xx (SMTP: a 4xx reply or a dropped
connection) is tried again after `backoff_seconds * 2**n`, or after the server's `Retry-After`
when it gives one, capped at `max_backoff_seconds`; any other 4xx is final at once. Destinations
are sent in parallel and every attempt shares one deadline (`max_seconds` from the call), so one
dead endpoint neither starves the others nor holds a task past the deadline (plus, at most, one
request timeout, which bounds each socket wait rather than the whole request).

Dedup: an event whose `dedup_key` was delivered to a destination within `dedup_minutes` is not
sent there again (Alertmanager excepted: it dedups by labels itself). The memory is the
`DeliveryLog` given to the notifier; DAG tasks run in separate processes, so the stack gives a
database-backed one (`monitoring.retrain.notifier`), and a log that fails is logged and treated
as "not sent before": a duplicate page beats a missed one. A log that can `claim` (the stack's
does) is asked to claim the key and destination before the send, atomically: of two processes
sending the same key in the same instant, one sends and the other's delivery is `deduplicated`;
a claim whose send fails is released, so the next attempt sends.

Secrets (the Slack URL, the routing key, the SMTP password, the webhook URL, a password in the
Alertmanager URL) come in through the config, are kept out of its repr, and are masked in every
error text and log line. This module depends on nothing of the project's, only on the standard
library and `requests`.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import requests

from alerting.events import Detail, Event

logger = logging.getLogger(__name__)

Destination = Literal["slack", "pagerduty", "email", "webhook", "alertmanager"]
Outcome = Literal["sent", "failed", "skipped", "deduplicated", "not_routed"]

ROUTES: Mapping[str, tuple[Destination, ...]] = {
    "critical": ("slack", "pagerduty", "email", "webhook"),
    "warning": ("slack", "webhook"),
    "info": (),
}
# With Alertmanager configured, what pages or posts goes there only; `info` stays unrouted.
ALERTMANAGER_ROUTE: tuple[Destination, ...] = ("alertmanager",)
# `info` is routed nowhere; its one alert_log row names this instead of a destination.
LOG_ONLY = "log"

# Beyond the deadline and one request timeout, how long a claim holds for its record to be written.
CLAIM_MARGIN_SECONDS = 30.0
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SUMMARY_LIMIT = 1024  # the Events API v2 rejects longer summaries
SLACK_FIELDS_PER_SECTION = 10  # Slack's limit on fields in one section block

# --- Configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackConfig:
    webhook_url: str = field(repr=False)


@dataclass(frozen=True)
class PagerDutyConfig:
    routing_key: str = field(repr=False)
    events_url: str = PAGERDUTY_EVENTS_URL


@dataclass(frozen=True)
class EmailConfig:
    host: str
    sender: str
    recipients: tuple[str, ...]
    port: int = 587
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # Refuse to send (and so to log in) in clear text unless the server is trusted to be local.
    starttls: bool = True


@dataclass(frozen=True)
class WebhookConfig:
    url: str = field(repr=False)


@dataclass(frozen=True)
class AlertmanagerConfig:
    url: str = field(repr=False)  # the base URL, http://alertmanager:9093 (it may hold a login)
    # How long an event's alert lasts before it resolves by itself: above a rule's `for:` and
    # scrape, so an event and the rule it shares an alert with (alerting.events) stay one.
    resolve_minutes: float = 60.0
    runbooks: str = "docs/runbooks.md"  # runbook_url = f"{runbooks}#{alertname lower}"

    @property
    def alerts_url(self) -> str:
        return self.url.rstrip("/") + "/api/v2/alerts"


@dataclass(frozen=True)
class NotifierConfig:
    """Where events go and how hard to try; a destination left None is skipped."""

    slack: SlackConfig | None = None
    pagerduty: PagerDutyConfig | None = None
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    environment: str = "development"
    source: str = "ml-monitoring"
    dedup_minutes: float = 30.0
    retries: int = 3
    timeout_seconds: float = 5.0
    max_seconds: float = 30.0
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 10.0

    def secrets(self) -> list[str]:
        """Every secret value in the config, for masking (with the path of each secret URL,
        which is the part that carries the token)."""
        values = [
            self.slack and self.slack.webhook_url,
            self.pagerduty and self.pagerduty.routing_key,
            self.email and self.email.password,
            self.webhook and self.webhook.url,
        ]
        if self.alertmanager and urlsplit(self.alertmanager.url).password:
            values.append(urlsplit(self.alertmanager.url).password)
        secrets = [value for value in values if value]
        for url in (self.slack and self.slack.webhook_url, self.webhook and self.webhook.url):
            if url and len(urlsplit(url).path) > 1:
                secrets.append(urlsplit(url).path)
        return sorted(set(secrets), key=len, reverse=True)  # longest first: mask whole URLs


# --- Results and their log --------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What happened to one event at one destination."""

    destination: str
    outcome: Outcome
    attempts: int = 0
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome == "sent"


class DeliveryLog(Protocol):
    """The notifier's memory: what was delivered (for dedup) and every outcome (for the record)."""

    def sent_since(self, dedup_key: str, destination: str, since: datetime) -> bool:
        """Whether `dedup_key` was delivered to `destination` at or after `since`."""
        ...

    def record(self, event: Event, deliveries: Sequence[Delivery], at: datetime) -> None:
        """Keep one entry per delivery."""
        ...


class ClaimingDeliveryLog(DeliveryLog, Protocol):
    """A `DeliveryLog` that can claim a send atomically (across processes, for a shared one)."""

    def claim(
        self, dedup_key: str, destination: str, since: datetime, at: datetime, live: datetime
    ) -> Any:
        """Unless `dedup_key` was delivered to `destination` at or after `since`, or claimed for
        it at or after `live` (a claim whose sender died stops holding once the send and its
        record would be over), claim it at `at` and return a token (truthy); else None.
        Atomic: of concurrent claims of one key and destination, one gets a token."""
        ...

    def release(self, token: Any) -> None:
        """Drop a claim whose send failed."""
        ...


class MemoryDeliveryLog:
    """A `DeliveryLog` in this process's memory: dedup within one process only."""

    def __init__(self) -> None:
        self.entries: list[tuple[datetime, Event, Delivery]] = []
        self._claims: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def claim(
        self, dedup_key: str, destination: str, since: datetime, at: datetime, live: datetime
    ) -> Any:
        key = (dedup_key, destination)
        with self._lock:
            held = self._claims.get(key)
            if (held is not None and held >= live) or self.sent_since(*key, since):
                return None
            self._claims[key] = at
            return (key, at)

    def release(self, token: Any) -> None:
        key, at = token
        with self._lock:
            if self._claims.get(key) == at:
                del self._claims[key]

    def sent_since(self, dedup_key: str, destination: str, since: datetime) -> bool:
        return any(
            at >= since and event.dedup_key == dedup_key and d.destination == destination
            for at, event, d in self.entries
            if d.delivered
        )

    def record(self, event: Event, deliveries: Sequence[Delivery], at: datetime) -> None:
        self.entries.extend((at, event, delivery) for delivery in deliveries)


# --- Sending ----------------------------------------------------------------------------------


class _Retryable(Exception):
    """A failure worth another attempt; `wait` is the server's Retry-After in seconds, if any."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class _Final(Exception):
    """A failure another attempt would repeat (a 4xx other than 429, an SMTP 5xx)."""


class Notifier:
    """Routes, dedups, sends and records events; see the module docstring for the rules."""

    def __init__(
        self,
        config: NotifierConfig,
        log: DeliveryLog | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.log = log if log is not None else MemoryDeliveryLog()
        self.clock = clock
        self._secrets = config.secrets()

    def notify(self, event: Event) -> list[Delivery]:
        """Send `event` where its severity routes it; one `Delivery` per destination.

        Never raises for a destination or the log failing; logs one line per call.
        """
        now = self.clock()
        deadline = time.monotonic() + self.config.max_seconds
        routes = self.routes(event)
        if not routes:
            deliveries = {LOG_ONLY: Delivery(LOG_ONLY, "not_routed")}
        else:
            deliveries, senders, claims = self._plan(event, routes, now)
            # In parallel, so a dead endpoint cannot spend the deadline of a live one.
            with ThreadPoolExecutor(max_workers=max(len(senders), 1)) as pool:
                futures = {
                    destination: pool.submit(self._send, destination, send, event, deadline)
                    for destination, send in senders.items()
                }
                deliveries |= {destination: f.result() for destination, f in futures.items()}
            deliveries = {destination: deliveries[destination] for destination in routes}
            for destination, token in claims.items():
                if not deliveries[destination].delivered:  # the next attempt may send it
                    try:
                        self.log.release(token)  # type: ignore[attr-defined]
                    except Exception as exc:
                        logger.warning("notify %s: could not release the claim for %s: %s",
                                       event.name, destination, self._mask(exc))  # fmt: skip
        try:
            self.log.record(event, list(deliveries.values()), now)
        except Exception as exc:  # the record must not cost the delivery or the task
            logger.warning(
                "notify %s: could not record deliveries: %s", event.name, self._mask(exc)
            )
        self._log_line(event, deliveries.values())
        return list(deliveries.values())

    def routes(self, event: Event) -> tuple[Destination, ...]:
        """Where `event` goes: Alertmanager alone when it is configured, else `ROUTES`."""
        routes = ROUTES[event.severity]
        if routes and self.config.alertmanager is not None:
            return ALERTMANAGER_ROUTE
        return routes

    def _plan(
        self, event: Event, routes: Sequence[Destination], now: datetime
    ) -> tuple[dict[str, Delivery], dict[str, Callable[[Event, float], None]], dict[str, Any]]:
        """Deliveries settled without sending (skipped, deduplicated), the senders to run, and
        the claims taken for them (released if their send fails).

        The log is asked here, one destination after the other, rather than from the sending
        threads: one connection, and no threads racing to create the log's table.
        """
        settled: dict[str, Delivery] = {}
        senders: dict[str, Callable[[Event, float], None]] = {}
        claims: dict[str, Any] = {}
        since = now - timedelta(minutes=self.config.dedup_minutes)
        check = self.config.dedup_minutes > 0
        claiming = callable(getattr(self.log, "claim", None))
        # A claim holds while its send may still run and be recorded (then the delivered row
        # does): a sender that died mid-send does not mute the key for the whole window.
        claim_hold = timedelta(
            seconds=self.config.max_seconds + self.config.timeout_seconds + CLAIM_MARGIN_SECONDS
        )
        for destination in routes:
            send = self._sender(destination)
            if send is None:
                settled[destination] = Delivery(
                    destination, "skipped", error=f"{destination} is not configured"
                )
                continue
            # Alertmanager dedups itself: the same event is the same alert there.
            if check and destination != "alertmanager":
                try:
                    if claiming:
                        token = self.log.claim(  # type: ignore[attr-defined]
                            event.dedup_key, destination, since, now, now - claim_hold
                        )
                        if token:
                            claims[destination] = token
                        else:
                            settled[destination] = Delivery(destination, "deduplicated")
                            continue
                    elif self.log.sent_since(event.dedup_key, destination, since):
                        settled[destination] = Delivery(destination, "deduplicated")
                        continue
                except Exception as exc:  # a duplicate message beats a missed page
                    logger.warning(
                        "notify %s: dedup check failed, sending: %s", event.name, self._mask(exc)
                    )
                    check = False
            senders[destination] = send
        return settled, senders, claims

    def _send(
        self,
        destination: str,
        send: Callable[[Event, float], None],
        event: Event,
        deadline: float,
    ) -> Delivery:
        attempts, error = 0, ""
        while True:
            attempts += 1
            timeout = min(self.config.timeout_seconds, max(deadline - time.monotonic(), 0.1))
            try:
                send(event, timeout)
                return Delivery(destination, "sent", attempts)
            except _Final as exc:
                return Delivery(destination, "failed", attempts, self._mask(exc))
            except _Retryable as exc:
                error, server_wait = self._mask(exc), exc.wait
            if attempts > self.config.retries:
                return Delivery(destination, "failed", attempts, error)
            backoff = self.config.backoff_seconds * 2 ** (attempts - 1)
            wait = min(
                backoff if server_wait is None else server_wait, self.config.max_backoff_seconds
            )
            if time.monotonic() + wait >= deadline:
                return Delivery(
                    destination, "failed", attempts, f"{error} (gave up: deadline reached)"
                )
            time.sleep(wait)

    def _sender(self, destination: Destination) -> Callable[[Event, float], None] | None:
        config = self.config
        if destination == "slack" and config.slack:
            url = config.slack.webhook_url
            return lambda event, timeout: self._post(url, self.slack_payload(event), timeout)
        if destination == "pagerduty" and config.pagerduty:
            url = config.pagerduty.events_url
            return lambda event, timeout: self._post(url, self.pagerduty_payload(event), timeout)
        if destination == "webhook" and config.webhook:
            url = config.webhook.url
            return lambda event, timeout: self._post(url, self.webhook_payload(event), timeout)
        if destination == "email" and config.email:
            return self._send_email
        if destination == "alertmanager" and config.alertmanager:
            url = config.alertmanager.alerts_url
            return lambda event, timeout: self._post(url, [self.alertmanager_alert(event)], timeout)
        return None

    # Payloads ------------------------------------------------------------------------------

    def slack_payload(self, event: Event) -> dict[str, Any]:
        """Slack incoming-webhook JSON: `text` (notifications, old clients) and Block Kit."""
        title = f"[{event.severity.upper()}] {event.summary}"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        ]
        if event.description:
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": event.description}}
            )
        fields = [
            {"type": "mrkdwn", "text": f"*{name}*\n{_show(value)}"}
            for name, value in event.details.items()
        ]
        for start in range(0, len(fields), SLACK_FIELDS_PER_SECTION):
            blocks.append(
                {"type": "section", "fields": fields[start : start + SLACK_FIELDS_PER_SECTION]}
            )
        context = [f"event `{event.name}`", f"env `{self.config.environment}`"]
        context += [f"{key} `{value}`" for key, value in event.labels.items()]
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
        )
        text = f"{title}: {event.description}" if event.description else title
        return {"text": text, "blocks": blocks}

    def pagerduty_payload(self, event: Event) -> dict[str, Any]:
        """A PagerDuty Events API v2 `trigger` for the event's dedup key."""
        assert self.config.pagerduty is not None
        summary = f"{event.summary}: {event.description}" if event.description else event.summary
        return {
            "routing_key": self.config.pagerduty.routing_key,
            "event_action": "trigger",
            "dedup_key": event.dedup_key,
            "payload": {
                "summary": summary[:PAGERDUTY_SUMMARY_LIMIT],
                "source": self.config.source,
                "severity": event.severity,
                "component": event.labels.get("model_name") or event.labels.get("dag_id"),
                "group": self.config.environment,
                "class": event.name,
                "custom_details": {
                    "description": event.description,
                    **event.details,
                    **event.labels,
                },
            },
        }

    def webhook_payload(self, event: Event) -> dict[str, Any]:
        """The generic webhook's JSON: the event as it is, plus where it comes from."""
        return {
            "event": event.name,
            "severity": event.severity,
            "summary": event.summary,
            "description": event.description,
            "details": dict(event.details),
            "labels": dict(event.labels),
            "dedup_key": event.dedup_key,
            "environment": self.config.environment,
            "source": self.config.source,
            "sent_at": self.clock().isoformat(),
        }

    def alertmanager_alert(self, event: Event) -> dict[str, Any]:
        """The event as one alert of Alertmanager's API v2 (`POST /api/v2/alerts` takes a list).

        Labels identify it: `alertname`, `severity`, `environment` and the event's labels (those
        of `event.alert_labels` when it names them). Every other label and detail goes into the
        `details` annotation, one `name: value` a line; a `log_url` detail is the alert's
        `generatorURL`. It starts now and ends `resolve_minutes` later.
        """
        config = self.config.alertmanager
        assert config is not None
        keep = event.labels.keys() if event.alert_labels is None else event.alert_labels
        # An empty value is no label to Alertmanager (it refuses the alert).
        labels = {key: value for key, value in event.labels.items() if key in keep and value}
        labels |= {
            "alertname": event.alertname,
            "severity": event.severity,
            "environment": self.config.environment,
        }
        rest = [(key, value) for key, value in event.labels.items() if key not in keep]
        rest += list(event.details.items())
        annotations = {
            "summary": event.summary,
            "description": event.description or event.summary,
            "runbook_url": f"{config.runbooks}#{event.alertname.lower()}",
        }
        if rest:
            annotations["details"] = "\n".join(f"{key}: {_show(value)}" for key, value in rest)
        starts = self.clock().astimezone(UTC)
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": _rfc3339(starts),
            "endsAt": _rfc3339(starts + timedelta(minutes=config.resolve_minutes)),
        }
        log_url = event.details.get("log_url")
        if isinstance(log_url, str) and log_url.startswith(("http://", "https://")):
            alert["generatorURL"] = log_url
        return alert

    def email_message(self, event: Event) -> EmailMessage:
        assert self.config.email is not None
        message = EmailMessage()
        message["Subject"] = (
            f"[{event.severity.upper()}] {event.summary} ({self.config.environment})"
        )
        message["From"] = self.config.email.sender
        message["To"] = ", ".join(self.config.email.recipients)
        lines = [event.description, ""]
        lines += [f"{name}: {_show(value)}" for name, value in event.details.items()]
        lines += ["", *(f"{key}: {value}" for key, value in event.labels.items())]
        lines += [f"event: {event.name}", f"dedup_key: {event.dedup_key}"]
        message.set_content("\n".join(lines).strip() + "\n")
        return message

    # Transports ----------------------------------------------------------------------------

    def _post(self, url: str, payload: dict[str, Any] | list[Any], timeout: float) -> None:
        try:
            response = requests.post(url, json=payload, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        except requests.RequestException as exc:  # a malformed URL: no attempt will do better
            raise _Final(f"{type(exc).__name__}: {exc}") from None
        if response.ok:
            return
        # Masked before it is cut, so no half of a secret that the server echoed survives.
        message = f"HTTP {response.status_code}: {self._mask(response.text.strip())[:300]}"
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(message, _retry_after(response.headers.get("Retry-After")))
        raise _Final(message)

    def _send_email(self, event: Event, timeout: float) -> None:
        email = self.config.email
        assert email is not None
        try:
            with smtplib.SMTP(email.host, email.port, timeout=timeout) as smtp:
                if email.starttls:
                    # Verified: the server's certificate must chain to a trusted CA (the
                    # system's, or SSL_CERT_FILE's) and name the host. smtplib's own default
                    # context checks neither, so anyone on the path could read the password.
                    smtp.starttls(context=ssl.create_default_context())
                if email.username:
                    smtp.login(email.username, email.password or "")
                smtp.send_message(self.email_message(event))
        except smtplib.SMTPNotSupportedError as exc:
            raise _Final(f"SMTP: {exc}") from None
        except ssl.SSLCertVerificationError as exc:  # trying again cannot make it trusted
            raise _Final(
                f"SMTP STARTTLS: the server's certificate is not trusted ({exc.verify_message}); "
                f"nothing was sent (give its CA with SSL_CERT_FILE)"
            ) from None
        except smtplib.SMTPResponseException as exc:  # 4xx is "try later", 5xx is final
            reply = exc.smtp_error
            text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
            message = f"SMTP {exc.smtp_code}: {text}"
            raise (_Retryable(message) if 400 <= exc.smtp_code < 500 else _Final(message)) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise _Final(f"SMTP recipients refused: {sorted(exc.recipients)}") from None
        except (OSError, smtplib.SMTPException) as exc:  # refused, reset, timed out, dropped
            raise _Retryable(f"SMTP {type(exc).__name__}: {exc}") from None

    # Reporting -----------------------------------------------------------------------------

    def _mask(self, exc: BaseException | str) -> str:
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _log_line(self, event: Event, deliveries: Iterable[Delivery]) -> None:
        parts = []
        for d in deliveries:
            part = f"{d.destination} {d.outcome}"
            if d.attempts > 1:
                part += f" after {d.attempts} attempts"
            if d.outcome == "failed":
                part += f" ({d.error})"
            parts.append(part)
        level = logging.WARNING if any(d.outcome == "failed" for d in deliveries) else logging.INFO
        summary = ", ".join(parts)
        logger.log(
            level, "notify %s [%s] %s: %s", event.name, event.severity, event.dedup_key, summary
        )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


def _rfc3339(moment: datetime) -> str:
    """A UTC time as Alertmanager's API writes them: `2026-03-01T12:00:00.000Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _show(value: Detail) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)
