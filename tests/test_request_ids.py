"""Caps on what a prediction request may hold, and request ids that name one prediction: a long
categorical value is a 422 naming the feature; an id sent again with other features is a 409
(or, past the worker's memory, counted by the prediction log's writer), with the same features
the first answer again."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from api.idempotency import Answer, RecentRequests
from api.logger import PredictionLogger, PredictionRecord
from api.main import create_app
from data.db import get_engine, init_db, prediction_logs
from tools.testkit.traffic import configure, request_rows

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def metric(api: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{name} {labels} is not exported")


def predictions_served(api: TestClient) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for sample in family.samples
        if sample.name == "ml_predictions_total"
    )


def logged(url: str) -> dict[str, dict]:
    with get_engine(url).connect() as conn:
        rows = conn.execute(select(prediction_logs.c.request_id, prediction_logs.c.features))
        return {rid: features for rid, features in rows}


def test_a_categorical_value_over_the_cap_gets_422_naming_the_feature(client, fraud_schema):
    features = request_rows(fraud_schema, 1)[0]
    at_cap = client.post("/predict", json={"features": features | {"device_type": "x" * 256}})
    assert at_cap.status_code == 200, at_cap.text  # an unseen category: served, as before
    answer = client.post("/predict", json={"features": features | {"device_type": "x" * 257}})
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail.startswith("features.device_type") and "at most 256 characters" in detail
    batch = client.post(
        "/predict/batch",
        json={
            "instances": [
                {"features": features},
                {"features": features | {"entry_mode": "y" * 10_000}},
            ]
        },
    )
    assert batch.status_code == 422
    assert batch.json()["errors"][0]["field"] == "instances.1.features.entry_mode"


def test_the_cap_is_a_setting(monkeypatch, default_training, tmp_path, fraud_schema):
    store, _ = default_training
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path,
              CATEGORICAL_MAX_LENGTH=8)  # fmt: skip
    features = request_rows(fraud_schema, 1)[0] | {f.name: "x" for f in fraud_schema.categorical}
    with TestClient(create_app()) as api:
        answer = api.post("/predict", json={"features": features | {"device_type": "smart-tv-"}})
        assert answer.status_code == 422 and "at most 8 characters" in answer.json()["detail"]
        assert api.post(
            "/predict", json={"features": features | {"device_type": "smart-tv"}}
        ).is_success


def test_a_request_id_sent_again_gets_the_same_answer_or_409(
    monkeypatch, default_training, tmp_path, fraud_schema, postgres_url
):
    store, _ = default_training
    configure(monkeypatch, store, postgres_url, tmp_path)
    rows = request_rows(fraud_schema, 3, seed=21)
    with TestClient(create_app()) as api:
        before = metric(api, "ml_prediction_errors_total", error_type="request_id_conflict")
        served = predictions_served(api)  # the counters live as long as the test process
        first = api.post("/predict", json={"request_id": "t-1", "features": rows[0]})
        assert first.status_code == 200
        # A client's retry (its keys in another order): the same answer, one row logged.
        again = api.post(
            "/predict", json={"request_id": "t-1", "features": dict(reversed(rows[0].items()))}
        )
        assert again.status_code == 200 and again.json() == first.json()
        # The same id for another request: refused, and it says why (before: 200, and the
        # second prediction's row silently never logged).
        other = api.post("/predict", json={"request_id": "t-1", "features": rows[1]})
        assert other.status_code == 409
        assert "'t-1'" in other.json()["detail"] and "other features" in other.json()["detail"]
        assert (
            metric(api, "ml_prediction_errors_total", error_type="request_id_conflict")
            == before + 1
        )
        # Without a request id, the same features are two predictions.
        assert api.post("/predict", json={"features": rows[0]}).status_code == 200
        assert api.post("/predict", json={"features": rows[0]}).status_code == 200
        assert api.app.state.logger.flush()
        predictions = predictions_served(api) - served
    assert predictions == 3  # the retry was not counted as a prediction
    rows_logged = logged(postgres_url)
    assert len(rows_logged) == 3 and rows_logged["t-1"]["amount"] == rows[0]["amount"]


def test_batches_refuse_a_reused_id_and_answer_a_retried_one_the_same(
    monkeypatch, default_training, tmp_path, fraud_schema, postgres_url
):
    store, _ = default_training
    configure(monkeypatch, store, postgres_url, tmp_path)
    rows = request_rows(fraud_schema, 4, seed=22)
    with TestClient(create_app()) as api:
        single = api.post("/predict", json={"request_id": "b-0", "features": rows[0]}).json()
        body = {"instances": [{"request_id": f"b-{i}", "features": r} for i, r in enumerate(rows)]}
        first = api.post("/predict/batch", json=body)
        assert first.status_code == 200
        predictions = first.json()["predictions"]
        assert predictions[0] == single  # b-0 was answered before: its answer again
        assert api.post("/predict/batch", json=body).json() == first.json()  # a retry
        # The same id twice in one batch: one prediction, answered twice.
        twice = {"instances": [{"request_id": "b-9", "features": rows[1]}] * 2}
        answer = api.post("/predict/batch", json=twice).json()["predictions"]
        assert answer[0] == answer[1]
        # Reused for other features, in the batch or across: 409 naming them, nothing served.
        clash = {"instances": [{"request_id": "n-1", "features": rows[0]},
                               {"request_id": "n-1", "features": rows[1]}]}  # fmt: skip
        refused = api.post("/predict/batch", json=clash)
        assert refused.status_code == 409 and "'n-1'" in refused.json()["detail"]
        swapped = {"instances": [{"request_id": "b-1", "features": rows[2]},
                                 {"request_id": "b-2", "features": rows[1]}]}  # fmt: skip
        refused = api.post("/predict/batch", json=swapped)
        assert refused.status_code == 409
        assert "'b-1', 'b-2'" in refused.json()["detail"]
        assert api.app.state.logger.flush()
    assert set(logged(postgres_url)) == {"b-0", "b-1", "b-2", "b-3", "b-9"}


def test_the_writer_counts_a_reused_id_it_could_not_log(postgres_url, tmp_path, caplog):
    """Past a worker's memory (another worker, an old id), the row reaches the writer: the first
    stays, the other is counted and its id logged; a replayed row is no conflict."""
    init_db(get_engine(postgres_url))

    def row(rid: str, amount: float) -> PredictionRecord:
        features = {"amount": amount, "device_type": "mobile"}
        return PredictionRecord(rid, T0, "fraud-detector", "1", features, 0, 0.1, 0.05)

    logger = PredictionLogger(tmp_path / "spool", url=postgres_url, journal=False)
    logger.write([row("w-1", 1.0), row("w-2", 2.0)])
    with caplog.at_level(logging.WARNING, logger="api.logger"):
        logger.write([row("w-1", 1.0), row("w-3", 3.0)])  # a replay: w-1 is the same row
        assert logger.stats()["conflicts"] == 0
        logger.write([row("w-2", 99.0), row("w-4", 4.0), row("w-4", 5.0)])
    logger._disconnect()
    assert logger.stats()["conflicts"] == 2
    assert (
        "'w-2'" in caplog.text and "'w-4'" in caplog.text and "with other features" in caplog.text
    )
    rows = logged(postgres_url)
    assert rows["w-2"]["amount"] == 2.0 and rows["w-4"]["amount"] == 4.0 and len(rows) == 4


def test_the_worker_remembers_at_least_the_last_cache_size_ids_and_at_most_twice_that():
    """Two generations: every one of the last `size` ids is known, none older than 2 × size."""
    recent = RecentRequests(100)
    for n in range(1_000):
        recent.remember_many([(f"id{n}", Answer(n, n % 2, 0.5, "1"))])
        known = [m for m in range(n + 1) if recent.get(f"id{m}") is not None]
        assert set(range(max(0, n - 99), n + 1)) <= set(known), n
        assert len(known) <= 200 and len(recent) == len(known)
    assert recent.get("id999") == Answer(999, 1, 0.5, "1")
    assert recent.known_any(["new", "id950"]) and not recent.known_any(["new", "id1"])
    off = RecentRequests(0)
    off.remember("x", Answer(1, 0, 0.1, "1"))
    assert off.get("x") is None and len(off) == 0
