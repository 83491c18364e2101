"""The inference API in-process (TestClient runs the lifespan): contract, validation, logging,
feedback, admin endpoints, hot reload and metrics, against a real MLflow store."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from threadpoolctl import threadpool_info, threadpool_limits

from api.main import create_app
from api.spool import Owner
from data.db import get_engine, labels
from data.ingest import coerce_frame
from data.prediction_log import read_predictions
from data.synthetic import generate_transactions
from tools.testkit.databases import store_settings
from tools.testkit.traffic import ADMIN, LABELLER, configure, request_rows
from training.registry import Registry, promote
from training.train import train


def test_predict_returns_the_registered_models_probabilities(
    client, default_training, fraud_schema
):
    store, result = default_training
    rows = request_rows(fraud_schema, 50)
    answers = [
        client.post("/predict", json={"request_id": f"p{i}", "features": r})
        for i, r in enumerate(rows)
    ]
    assert all(a.status_code == 200 for a in answers)
    body = answers[0].json()
    assert set(body) == {
        "request_id",
        "predicted_class",
        "confidence",
        "probabilities",
        "model_version",
    }
    assert body["request_id"] == "p0" and body["model_version"] == result.version

    model = Registry.from_settings(store).load_model(result.version)
    frame = pd.DataFrame(rows).astype({f.name: float for f in fraud_schema.boolean})
    frame = frame.astype({f.name: float for f in fraud_schema.numerical})
    expected = model.predict_proba(frame)[:, 1]
    served = np.array([a.json()["probabilities"]["1"] for a in answers])
    np.testing.assert_allclose(served, expected, atol=1e-6)
    for a, p in zip(answers, expected, strict=True):
        assert a.json()["predicted_class"] == int(p >= 0.5)
        assert a.json()["confidence"] == pytest.approx(max(p, 1 - p), abs=1e-6)
    assert client.get("/model").json()["scorer"] == "compiled"


def test_batch_matches_single_predictions(client, fraud_schema):
    rows = request_rows(fraud_schema, 40, seed=9)
    batch = client.post(
        "/predict/batch",
        json={"instances": [{"request_id": f"b{i}", "features": r} for i, r in enumerate(rows)]},
    )
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert [p["request_id"] for p in predictions] == [f"b{i}" for i in range(40)]
    single = client.post("/predict", json={"request_id": "s", "features": rows[17]}).json()
    assert predictions[17]["probabilities"]["1"] == pytest.approx(
        single["probabilities"]["1"], abs=1e-9
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda f: f.pop("amount"), "features.amount", "Field required"),
        (lambda f: f.update(colour="red"), "features.colour", "Extra inputs are not permitted"),
        (lambda f: f.update(amount="12.5"), "features.amount", "valid number"),
        (lambda f: f.update(merchant_category=3), "features.merchant_category", "valid string"),
        (lambda f: f.update(is_foreign=1), "features.is_foreign", "valid boolean"),
        (lambda f: f.update(hour_of_day=None), "features.hour_of_day", "valid number"),
    ],
)
def test_bad_features_get_422_naming_the_field(client, fraud_schema, change, field, message):
    features = request_rows(fraud_schema, 1)[0]
    change(features)
    answer = client.post("/predict", json={"request_id": "bad", "features": features})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(field) and message in answer.json()["detail"]
    assert answer.json()["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ('"merchant_category": "on\\u0000line"', "features.merchant_category", "match pattern"),
        ('"merchant_category": "\\ud800"', "features.merchant_category", "unicode"),
        ('"request_id": "id\\u0000"', "request_id", "match pattern"),
    ],
)
def test_text_postgres_cannot_store_gets_422(client, fraud_schema, raw, field, message):
    # A NUL or a lone surrogate made every COPY of its batch fail, so the logger spooled and
    # retried it forever and no later prediction reached the database.
    features = request_rows(fraud_schema, 1)[0]
    body = json.dumps({"request_id": "x", "features": features})
    key = raw.split(":")[0]
    body = body.replace(f"{key}: {json.dumps(features.get(key.strip(chr(34)), 'x'))}", raw)
    assert raw in body
    answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(field) and message in answer.json()["detail"]


@pytest.mark.parametrize("body", ['{"features": {"amount": 1,', "[1, 2", '{"features": nul}'])
def test_broken_json_gets_422(client, body):
    # Bodies are parsed by orjson, with the standard parser as the fallback for NaN literals;
    # what neither can read is a 422, never a 500.
    answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "JSON" in answer.json()["detail"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_get_422(client, fraud_schema, token):
    features = request_rows(fraud_schema, 1)[0]
    text = json.dumps({"request_id": "nan", "features": features}).replace(
        f'"amount": {json.dumps(features["amount"])}', f'"amount": {token}'
    )
    assert token in text
    answer = client.post("/predict", content=text, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert "features.amount" in answer.json()["detail"] and "finite" in answer.json()["detail"]


def test_nullable_feature_may_be_null_and_unseen_category_is_served(client, fraud_schema):
    features = request_rows(fraud_schema, 1)[0] | {"customer_age": None, "device_type": "smart-tv"}
    assert client.post("/predict", json={"features": features}).status_code == 200


def test_oversized_batch_and_body_get_413(monkeypatch, default_training, tmp_path, fraud_schema):
    store, _ = default_training
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path,
              MAX_BATCH_SIZE=5, MAX_BODY_BYTES=4096)  # fmt: skip
    rows = request_rows(fraud_schema, 30)
    with TestClient(create_app()) as small:
        answer = small.post(
            "/predict/batch", json={"instances": [{"features": r} for r in rows[:6]]}
        )
        assert answer.status_code == 413 and "MAX_BATCH_SIZE" in answer.json()["detail"]
        answer = small.post("/predict/batch", json={"instances": [{"features": r} for r in rows]})
        assert answer.status_code == 413 and "MAX_BODY_BYTES" in answer.json()["detail"]
        assert small.post("/predict/batch", json={"instances": [{"features": rows[0]}]}).is_success


def test_predictions_are_logged_and_feedback_joins_them(
    monkeypatch, default_training, tmp_path, fraud_schema, database_url
):
    store, _ = default_training
    configure(monkeypatch, store, database_url, tmp_path)
    rows = request_rows(fraud_schema, 30, seed=12)
    start = pd.Timestamp.now(tz="UTC")
    with TestClient(create_app()) as api:
        for i, features in enumerate(rows):
            assert api.post(
                "/predict", json={"request_id": f"log{i}", "features": features}
            ).is_success
        # Feedback may arrive before the row is written: it is kept, and says so.
        early = api.post(
            "/feedback", json={"request_id": "log0", "label": 1}, headers=LABELLER
        ).json()
        assert early["accepted"] == 1 and early["awaiting_prediction"] in ([], ["log0"])
        assert api.app.state.logger.flush()
        batch = {"labels": [{"request_id": "log1", "label": 0}, {"request_id": "log2", "label": 1}]}
        assert api.post("/feedback/batch", json=batch, headers=LABELLER).json() == {
            "accepted": 2,
            "awaiting_prediction": [],
        }
        assert api.post(
            "/feedback", json={"request_id": "log1", "label": 1}, headers=LABELLER
        ).is_success  # corrected

        # A label whose prediction is not (yet) logged is stored, not refused, and named.
        unknown = {
            "labels": [{"request_id": "log3", "label": 1}, {"request_id": "nope", "label": 0}]
        }
        assert api.post("/feedback/batch", json=unknown, headers=LABELLER).json() == {
            "accepted": 2,
            "awaiting_prediction": ["nope"],
        }
        wrong = {"request_id": "log4", "label": 2}
        assert api.post("/feedback", json=wrong, headers=LABELLER).status_code == 422

        logs = api.get("/logs", headers=ADMIN, params={"limit": 5})
        assert logs.status_code == 200 and logs.json()["count"] == 5
        assert logs.json()["rows"][0]["request_id"] == "log29"  # newest first

    end = pd.Timestamp.now(tz="UTC").to_pydatetime()
    window = read_predictions(
        fraud_schema, start.to_pydatetime(), end, url=database_url, with_labels=True
    )
    assert window["transaction_id"].tolist() == [f"log{i}" for i in range(30)]
    sent = coerce_frame(pd.DataFrame(rows), fraud_schema, require_target=False)
    sent = sent[fraud_schema.feature_names]
    pd.testing.assert_frame_equal(window[fraud_schema.feature_names], sent)
    assert window["is_fraud"].iloc[:5].tolist()[:4] == [1.0, 1.0, 1.0, 1.0]
    assert np.isnan(window["is_fraud"].iloc[4])  # no label sent for log4
    with get_engine(database_url).connect() as conn:
        assert conn.execute(select(labels.c.request_id)).scalars().all().count("nope") == 1


def test_a_worker_scores_on_one_thread(monkeypatch, default_training, tmp_path):
    # Two workers on two cores, each with OpenMP's thread per core, stalled batches ~0.9 s.
    store, _ = default_training
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path)
    with threadpool_limits(2, user_api="openmp"), TestClient(create_app()) as api:
        # Asked in the event loop's thread, where uvicorn runs the lifespan and the handlers:
        # OpenMP's limit belongs to the thread that sets it.
        pools = api.portal.call(threadpool_info)
        assert [p["num_threads"] for p in pools if p["user_api"] == "openmp"] == [1]


def test_with_monitoring_off_both_predict_routes_still_answer(
    monkeypatch, default_training, tmp_path, fraud_schema
):
    # API_MONITORING=false is how the benchmark measures what monitoring costs; the batch route
    # once called a logger method the stand-in logger lacked, and every batch was a 500.
    store, _ = default_training
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path, API_MONITORING=0)
    rows = request_rows(fraud_schema, 3)
    with TestClient(create_app()) as api:
        assert api.post("/predict", json={"features": rows[0]}).status_code == 200
        batch = api.post("/predict/batch", json={"instances": [{"features": r} for r in rows]})
        assert batch.status_code == 200 and len(batch.json()["predictions"]) == 3


def test_admin_endpoints_need_the_token(client):
    assert client.get("/logs").status_code == 401
    assert client.get("/logs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/model/reload").status_code == 401
    answer = client.post("/model/reload", headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["changed"] is False


@pytest.mark.parametrize(
    "window",
    [{"end": "0001-01-01T00:00:00Z"}, {"start": "9999-12-31T23:30:00-05:00"}],
)
def test_logs_window_at_the_edge_of_time_is_a_422_not_a_500(client, window):
    # Found by the schemathesis fuzz run: "end - 1 hour" overflowed before year 1.
    answer = client.get("/logs", headers=ADMIN, params=window)
    assert answer.status_code == 422 and "range" in answer.json()["detail"]


@pytest.mark.slow
def test_not_ready_until_a_champion_exists(monkeypatch, tmp_path, fraud_schema):
    empty = store_settings(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    configure(monkeypatch, empty, f"sqlite:///{tmp_path / 'api.db'}", tmp_path)
    with TestClient(create_app()) as api:
        assert api.get("/health").json() == {"status": "ok", "model_version": None}
        ready = api.get("/ready")
        assert ready.status_code == 503 and "no registered model" in ready.json()["detail"]
        features = request_rows(fraud_schema, 1)[0]
        answer = api.post("/predict", json={"features": features})
        assert answer.status_code == 503 and "no model loaded" in answer.json()["detail"]
        assert api.get("/model").status_code == 503


@pytest.mark.slow
def test_hot_reload_swaps_without_failing_a_request(monkeypatch, tmp_path, fraud_schema):
    store = store_settings(tmp_path / "store")
    (tmp_path / "store").mkdir()
    data = tmp_path / "data.parquet"
    generate_transactions(15_000, seed=3).to_parquet(data)
    train(data_path=data, settings=store, auto_promote=True, seed=1)
    second = train(data_path=data, settings=store, seed=2)
    configure(
        monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path, MODEL_POLL_SECONDS=0.2
    )
    rows = request_rows(fraud_schema, 20)
    failures, versions = [], set()
    with TestClient(create_app()) as api:
        assert api.get("/model").json()["model_version"] == "1"
        stop = threading.Event()

        def hammer() -> None:
            i = 0
            while not stop.is_set():
                answer = api.post("/predict", json={"features": rows[i % len(rows)]})
                if answer.status_code != 200:
                    failures.append(answer.status_code)
                else:
                    versions.add(answer.json()["model_version"])
                i += 1

        worker = threading.Thread(target=hammer)
        worker.start()
        time.sleep(0.3)
        promote(Registry.from_settings(store), second.version, actor="test", force=True, reason="t")
        deadline = time.monotonic() + 15
        while api.get("/model").json()["model_version"] != second.version:
            assert time.monotonic() < deadline, "the poller did not pick up the new champion"
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        worker.join()
    assert failures == []
    assert versions == {"1", second.version}


def test_every_refusal_cause_is_exported_before_the_first_refusal(client):
    """A healthy API serves `ml_prediction_errors_total` for every cause it counts (at 0 in a
    fresh process), so a dashboard panel of refusals has data and rate() sees the first one;
    every cause the code counts is in the list."""
    import re

    from api.instrumentation import ERROR_TYPES
    from data.settings import PROJECT_ROOT

    causes = {
        sample.labels["error_type"]
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "ml_prediction_errors_total"
    }
    assert set(ERROR_TYPES) <= causes
    counted = {
        cause
        for path in (PROJECT_ROOT / "api").rglob("*.py")
        for cause in re.findall(r"metrics\.error\(\s*\"(\w+)\"", path.read_text())
    }
    assert counted and counted <= set(ERROR_TYPES), counted - set(ERROR_TYPES)


def test_both_classes_are_exported_before_either_is_predicted(client):
    """A fresh worker serving a version exports ml_predictions_total for class 0 and class 1 at
    0, so the positive rate of a model that stops predicting 1 reads 0, not "no data"."""
    served = client.get("/health").json()["model_version"]
    classes = {
        sample.labels["prediction"]: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "ml_predictions_total" and sample.labels["model_version"] == served
    }
    assert set(classes) == {"0", "1"}


def test_metrics_count_predictions_without_request_ids(client, fraud_schema):
    before = client.get("/metrics/summary").json()["predictions"]["total"]
    for i, features in enumerate(request_rows(fraud_schema, 7)):
        client.post("/predict", json={"request_id": f"secret-id-{i}", "features": features})
    client.post("/predict", json={"features": {"amount": 1}})
    text = client.get("/metrics").text
    assert "secret-id" not in text
    for name in (
        "ml_predictions_total",
        "ml_prediction_latency_seconds_bucket",
        "ml_prediction_errors_total",
        "ml_prediction_confidence_bucket",
        "ml_model_loaded",
        "ml_model_info",
        "ml_feature_value_bucket",
        "ml_prediction_log_queue_depth",
        "ml_prediction_log_written_total",
        "ml_prediction_log_spooled_total",
        "ml_prediction_log_dropped_total",
        "http_requests_total",
    ):
        assert f"\n{name}{{" in text, name
    assert 'environment="development"' in text
    summary = client.get("/metrics/summary").json()
    assert summary["predictions"]["total"] == before + 7
    assert summary["errors"]["validation"] >= 1
    assert summary["model"]["loaded_in_all_workers"] is True


def test_each_scrape_measures_the_spool_folder_and_its_disk(client, tmp_path):
    """What MLSpoolDiskFilling reads: PREDICTION_SPOOL_DIR as it is at the scrape."""
    # another live worker's spool (a gone one's would be claimed and replayed meanwhile)
    other = Owner(tmp_path / "spool")
    left = tmp_path / "spool" / other.file_name(".jsonl")
    left.write_bytes(b"x" * 1234)

    def disk() -> dict[str, float]:
        return {
            sample.labels.get("kind", sample.name): sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples
            if sample.name.startswith(("ml_prediction_log_disk", "ml_prediction_log_filesystem"))
        }

    measured = disk()
    assert measured["spool"] == 1234
    free = measured["ml_prediction_log_filesystem_free_bytes"]
    assert 0 < free <= measured["ml_prediction_log_filesystem_size_bytes"]
    left.unlink()
    assert disk()["spool"] == 0
    other.release()


def _histograms(client) -> Counter:
    text = client.get("/metrics").text
    counts: Counter = Counter()
    for family in text_string_to_metric_families(text):
        if family.name in ("ml_feature_value", "ml_predictions", "ml_prediction_score"):
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    counts[key] += round(sample.value, 6)
    return counts


def test_a_batch_counts_in_metrics_exactly_as_its_rows_one_by_one(client, fraud_schema):
    # Batches fill histograms in bulk (one increment per bucket); the counts must not differ.
    rows = request_rows(fraud_schema, 300, seed=21)
    rows[5]["customer_age"] = None  # a missing nullable value is not counted
    start = _histograms(client)
    for row in rows:
        assert client.post("/predict", json={"features": row}).is_success
    singles = _histograms(client)
    instances = [{"features": row} for row in rows]
    assert client.post("/predict/batch", json={"instances": instances}).is_success
    batch = _histograms(client)
    one_by_one = {k: round(v - start[k], 3) for k, v in singles.items() if v != start[k]}
    in_bulk = {k: round(v - singles[k], 3) for k, v in batch.items() if v != singles[k]}
    assert one_by_one == in_bulk
    counted = {
        dict(labels)["feature"]: value
        for (name, labels), value in in_bulk.items()
        if name == "ml_feature_value_count"
    }
    assert counted["amount"] == 300 and counted["customer_age"] < 300  # missing: not counted


def test_buffered_prediction_metrics_are_written_without_a_scrape(client, fraud_schema):
    # Per-request metrics wait in a buffer that the logger's writer thread flushes every 0.1 s,
    # so another worker's scrape sees them even if this worker is never scraped.
    def served() -> float:
        return sum(
            REGISTRY.get_sample_value(
                "ml_predictions_total",
                {"environment": "development", "model_version": "1", "prediction": label},
            )
            or 0.0
            for label in ("0", "1")
        )

    before = served()
    for features in request_rows(fraud_schema, 5, seed=4):
        assert client.post("/predict", json={"features": features}).is_success
    deadline = time.monotonic() + 5
    while served() < before + 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert served() == before + 5


def test_openapi_documents_the_features(client, fraud_schema):
    spec = client.get("/openapi.json").json()
    features = spec["components"]["schemas"]["Features"]
    assert set(features["required"]) == set(fraud_schema.feature_names)
    assert features["additionalProperties"] is False
    documented = set(spec["paths"])
    assert {"/predict", "/predict/batch", "/feedback", "/feedback/batch", "/logs"} <= documented
    assert {"/metrics", "/metrics/summary", "/model", "/model/reload"} <= documented
    assert {"/health", "/ready"} <= documented
