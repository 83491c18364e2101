"""Labels nobody can forge: `/feedback` and `/feedback/batch` in the real app on real Postgres.

Only a label writer's token (LABEL_TOKENS) writes labels, each stored with its source; a second
label is history, not an overwrite, and the latest received counts; a batch over its cap and a
flood of labels for ids that were never predicted are refused whole; every refusal is counted.
The app runs without a model (labels need none), on an empty registry shared by the module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select

from api.main import create_app
from data.db import as_utc, get_engine, label_history, labels, prediction_logs
from data.settings import Settings, get_settings
from tools.testkit.databases import store_settings
from tools.testkit.traffic import ADMIN, LABEL_SOURCE, LABELLER, TOKEN, configure

pytestmark = pytest.mark.postgres

# Two label writers, as a deployment has them: one token per source system.
CHARGEBACKS = {"Authorization": "Bearer chargebacks-7c1e"}
REVIEW = {"Authorization": "Bearer review-03ad"}
TWO_SOURCES = "chargebacks=chargebacks-7c1e,manual-review=review-03ad"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Settings:
    """An MLflow store with no model: the API starts and serves labels without one."""
    return store_settings(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def start(monkeypatch, registry, tmp_path, postgres_url) -> Iterator[Callable[..., TestClient]]:
    """`start(**env)`: the app on a fresh Postgres database; LABEL_TOKENS=None leaves it unset."""
    clients: list[TestClient] = []

    def started(**env) -> TestClient:
        unset = [name for name, value in env.items() if value is None]
        configure(monkeypatch, registry, postgres_url, tmp_path,
                  **{k: v for k, v in env.items() if v is not None})  # fmt: skip
        for name in unset:
            monkeypatch.delenv(name)
        get_settings.cache_clear()
        client = TestClient(create_app())
        client.__enter__()
        clients.append(client)
        return client

    yield started
    for client in clients:
        client.__exit__(None, None, None)


def stored(url: str) -> tuple[list[tuple], list[tuple]]:
    """Every row of `labels` and of `label_history`, in a stable order."""
    with get_engine(url).connect() as conn:
        current = conn.execute(select(labels).order_by(labels.c.request_id)).all()
        history = conn.execute(
            select(
                label_history.c.request_id,
                label_history.c.label,
                label_history.c.source,
                label_history.c.labelled_at,
            ).order_by(label_history.c.id)
        ).all()
    return [tuple(row) for row in current], [tuple(row) for row in history]


def row(url: str, request_id: str) -> dict:
    with get_engine(url).connect() as conn:
        found = conn.execute(select(labels).where(labels.c.request_id == request_id)).one()
    return {**found._mapping, "received_at": as_utc(found.received_at)}


def counter(client: TestClient, name: str, **wanted: str) -> float | None:
    """The value of one series of the app's /metrics (None when it does not exist)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return sample.value
    return None


def rejected(client: TestClient, reason: str) -> float:
    value = counter(client, "ml_feedback_rejected_total", reason=reason)
    assert value is not None, f"ml_feedback_rejected_total{{reason={reason!r}}} is not exported"
    return value


def log_predictions(url: str, *request_ids: str) -> None:
    """Prediction log rows for these ids, as the API's logger writes them."""
    now = datetime.now(UTC)
    rows = [
        {"request_id": rid, "predicted_at": now, "model_name": "fraud-detector",
         "model_version": "1", "features": {}, "predicted_class": 0, "score": 0.1,
         "latency_ms": 1.0}
        for rid in request_ids
    ]  # fmt: skip
    with get_engine(url).begin() as conn:
        conn.execute(insert(prediction_logs), rows)


def test_without_the_label_token_a_label_changes_nothing(start, postgres_url):
    api = start()
    assert api.post("/feedback", json={"request_id": "r1", "label": 0}, headers=LABELLER).is_success
    before = stored(postgres_url)
    refusals = rejected(api, "unauthorized")
    forged = {"request_id": "r1", "label": 1}
    for headers, says in [
        ({}, "missing label token"),
        (ADMIN, "unknown label token"),  # the admin token does not write labels
        ({"Authorization": "Bearer not-a-token"}, "unknown label token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "unknown label token"),
        ({"Authorization": "Basic dGVzdHM6dGVzdC1sYWJlbC10b2tlbg=="}, "missing label token"),
    ]:
        for path, body in [("/feedback", forged), ("/feedback/batch", {"labels": [forged]})]:
            answer = api.post(path, json=body, headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert says in answer.json()["detail"] and "LABEL_TOKENS" in answer.json()["detail"]
            assert answer.headers["www-authenticate"] == "Bearer"
    # A forged label with an invalid body is refused for its token first, not its body.
    answer = api.post("/feedback", json={"request_id": "r1", "label": 7})
    assert answer.status_code == 401
    assert stored(postgres_url) == before
    assert rejected(api, "unauthorized") == refusals + 11


def test_unset_label_tokens_disable_the_label_endpoints(start, postgres_url):
    api = start(LABEL_TOKENS=None)
    before = rejected(api, "disabled")
    for headers in ({}, LABELLER, ADMIN):
        answer = api.post("/feedback", json={"request_id": "r1", "label": 1}, headers=headers)
        assert answer.status_code == 503
        assert answer.json()["detail"] == "label endpoints are disabled: set LABEL_TOKENS"
    assert stored(postgres_url) == ([], [])
    assert rejected(api, "disabled") == before + 3


def test_each_label_is_stored_with_the_source_whose_token_sent_it(start, postgres_url):
    api = start(LABEL_TOKENS=TWO_SOURCES)
    accepted = {
        source: counter(api, "ml_labels_accepted_total", source=source)
        for source in ("chargebacks", "manual-review")
    }
    assert None not in accepted.values()  # exported from the start, at 0 in a fresh process
    assert (
        api.post("/feedback", json={"request_id": "a", "label": 1}, headers=CHARGEBACKS).json()[
            "accepted"
        ]
        == 1
    )
    batch = {"labels": [{"request_id": "b", "label": 0}, {"request_id": "c", "label": 1}]}
    assert api.post("/feedback/batch", json=batch, headers=REVIEW).json()["accepted"] == 2
    current, history = stored(postgres_url)
    assert [(r[0], r[1], r[4]) for r in current] == [
        ("a", 1, "chargebacks"), ("b", 0, "manual-review"), ("c", 1, "manual-review")]  # fmt: skip
    assert [(r[0], r[2]) for r in history] == [
        ("a", "chargebacks"), ("b", "manual-review"), ("c", "manual-review")]  # fmt: skip
    assert counter(api, "ml_labels_accepted_total", source="chargebacks") == (
        accepted["chargebacks"] + 1
    )
    assert counter(api, "ml_labels_accepted_total", source="manual-review") == (
        accepted["manual-review"] + 2
    )


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_second_label_is_history_and_the_latest_received_counts(
    start, database, postgres_url, isolated_settings
):
    url = postgres_url if database == "postgres" else f"sqlite:///{isolated_settings / 'l.db'}"
    api = start(LABEL_TOKENS=TWO_SOURCES, DATABASE_URL=url)
    flips = counter(api, "ml_labels_changed_total", source="manual-review")
    day1, day2 = "2026-03-01T10:00:00Z", "2026-03-02T09:30:00+01:00"

    def send(headers, label, labelled_at=None):
        body = {"request_id": "txn-1", "label": label}
        if labelled_at:
            body["labelled_at"] = labelled_at
        answer = api.post("/feedback", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        time.sleep(0.01)  # received_at has microseconds; keep the sends apart

    send(CHARGEBACKS, 0, day1)
    first = row(url, "txn-1")
    assert (first["label"], first["source"]) == (0, "chargebacks")

    # A different label from another source: both in the history, the later one counts, and
    # received_at says when the label that counts arrived.
    send(REVIEW, 1, day2)
    flipped = row(url, "txn-1")
    assert (flipped["label"], flipped["source"]) == (1, "manual-review")
    assert as_utc(flipped["labelled_at"]) == datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    assert flipped["received_at"] > first["received_at"]
    assert counter(api, "ml_labels_changed_total", source="manual-review") == flips + 1

    # The same label again, dated the same or not at all, from either source: a retry. The
    # history records it; the label that counts and its received_at stay as they are.
    send(REVIEW, 1, day2)
    send(REVIEW, 1)
    send(CHARGEBACKS, 1)
    assert row(url, "txn-1") == flipped

    # The same value with a new labelled_at is a new label: it counts, received_at moves.
    send(CHARGEBACKS, 1, "2026-03-03T00:00:00Z")
    redated = row(url, "txn-1")
    assert (redated["label"], redated["source"]) == (1, "chargebacks")
    assert redated["received_at"] > flipped["received_at"]
    assert counter(api, "ml_labels_changed_total", source="manual-review") == flips + 1

    # Undated labels: the first is dated when received; a retry keeps that date.
    send(REVIEW, 0)
    undated = row(url, "txn-1")
    assert undated["label"] == 0 and undated["received_at"] > redated["received_at"]
    send(REVIEW, 0)
    assert row(url, "txn-1") == undated

    _, history = stored(url)
    assert [(label, source) for _, label, source, _ in history] == [
        (0, "chargebacks"), (1, "manual-review"), (1, "manual-review"), (1, "manual-review"),
        (1, "chargebacks"), (1, "chargebacks"), (0, "manual-review"), (0, "manual-review"),
    ]  # fmt: skip


def test_a_batch_over_its_cap_is_refused_whole(start, postgres_url):
    api = start(FEEDBACK_MAX_BATCH_SIZE=5)
    before = rejected(api, "batch_too_large")
    batch = {"labels": [{"request_id": f"r{i}", "label": i % 2} for i in range(6)]}
    answer = api.post("/feedback/batch", json=batch, headers=LABELLER)
    assert answer.status_code == 413
    assert (
        "batch of 6 labels is over the limit of 5 (FEEDBACK_MAX_BATCH_SIZE)"
        in (answer.json()["detail"])
    )
    assert stored(postgres_url) == ([], [])
    assert rejected(api, "batch_too_large") == before + 1
    batch["labels"].pop()
    assert api.post("/feedback/batch", json=batch, headers=LABELLER).json()["accepted"] == 5


def test_a_flood_of_labels_for_ids_never_predicted_is_bounded_per_source(start, postgres_url):
    api = start(LABEL_TOKENS=TWO_SOURCES, FEEDBACK_MAX_AWAITING=5)
    before = rejected(api, "unknown_request_ids")
    log_predictions(postgres_url, "known-1", "known-2")

    def batch(*ids: str) -> dict:
        return {"labels": [{"request_id": rid, "label": 1} for rid in ids]}

    # A label may come a moment before its prediction: a few wait, and the answer says which.
    answer = api.post("/feedback/batch", json=batch("u1", "u2", "u3", "known-1"), headers=REVIEW)
    assert answer.json() == {"accepted": 4, "awaiting_prediction": ["u1", "u2", "u3"]}
    # Sent again (a retry), they do not count twice.
    assert api.post("/feedback/batch", json=batch("u1", "u2", "u3"), headers=REVIEW).is_success
    before_flood = stored(postgres_url)

    # Three more would make six waiting, over FEEDBACK_MAX_AWAITING: refused whole, counted.
    answer = api.post("/feedback/batch", json=batch("u4", "u5", "u6", "known-2"), headers=REVIEW)
    assert answer.status_code == 429, answer.text
    detail = answer.json()["detail"]
    assert "3 of these labels are for request ids not in the prediction log" in detail
    assert "3 labels of source 'manual-review' already wait" in detail
    assert "FEEDBACK_MAX_AWAITING (5)" in detail and "nothing stored" in detail
    assert stored(postgres_url) == before_flood
    assert rejected(api, "unknown_request_ids") == before + 1

    # Labels of logged predictions are never held back by it, and each source has its own.
    assert api.post("/feedback/batch", json=batch("known-2"), headers=REVIEW).is_success
    answer = api.post("/feedback/batch", json=batch("c1", "c2"), headers=CHARGEBACKS)
    assert answer.json()["awaiting_prediction"] == ["c1", "c2"]
    # Once their predictions are logged, the waiting labels make room again.
    log_predictions(postgres_url, "u1", "u2", "u3")
    answer = api.post("/feedback/batch", json=batch("u4", "u5", "u6"), headers=REVIEW)
    assert answer.json()["awaiting_prediction"] == ["u4", "u5", "u6"]
    assert rejected(api, "unknown_request_ids") == before + 1


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (2, "label: Input should be less than or equal to 1"),
        (-1, "label: Input should be greater than or equal to 0"),
        ("1", "label: Input should be a valid integer"),
        (True, "label: Input should be a valid integer"),
        (None, "label: Input should be a valid integer"),
    ],
)
def test_an_unknown_label_value_is_a_422_naming_it(start, postgres_url, label, message):
    api = start()
    before = rejected(api, "invalid")
    for path, body in [
        ("/feedback", {"request_id": "r1", "label": label}),
        ("/feedback/batch", {"labels": [{"request_id": "r0", "label": 0},
                                        {"request_id": "r1", "label": label}]}),
    ]:  # fmt: skip
        answer = api.post(path, json=body, headers=LABELLER)
        assert answer.status_code == 422, answer.text
        assert message in answer.json()["detail"], answer.text
    assert stored(postgres_url) == ([], [])
    assert rejected(api, "invalid") == before + 2


def test_every_refusal_reason_is_exported_before_the_first_refusal(start):
    api = start()
    for reason in ("unauthorized", "disabled", "invalid", "batch_too_large", "unknown_request_ids"):
        assert rejected(api, reason) >= 0
    assert counter(api, "ml_labels_accepted_total", source=LABEL_SOURCE) is not None
    assert counter(api, "ml_labels_changed_total", source=LABEL_SOURCE) is not None


@pytest.mark.parametrize("labelled_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:30:00-05:00"])
def test_a_labelled_at_without_a_utc_value_is_a_422_not_a_500(start, postgres_url, labelled_at):
    api = start()
    body = {"request_id": "r1", "label": 1, "labelled_at": labelled_at}
    answer = api.post("/feedback", json=body, headers=LABELLER)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith("labelled_at: Value error, has no UTC value")
    assert stored(postgres_url) == ([], [])
