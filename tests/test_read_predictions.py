"""Reading the live prediction log back as typed columns, on SQLite and on Postgres."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import insert

from data.db import get_engine, init_db, labels, prediction_logs
from data.ingest import coerce_frame, read_predictions
from data.synthetic import generate_transactions

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def log_rows(url, frame, schema):
    engine = get_engine(url)
    init_db(engine)
    rows = []
    for i, record in enumerate(frame[schema.feature_names].to_dict("records")):
        features = {
            k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()
        }
        rows.append(
            {
                "request_id": f"r{i}",
                "predicted_at": T0 + timedelta(minutes=i),
                "model_name": "fraud-detector",
                "model_version": "3",
                "features": features,
                "predicted_class": i % 2,
                "score": i / len(frame),
                "latency_ms": 1.0,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(prediction_logs), rows)
        conn.execute(
            insert(labels),
            [
                {"request_id": "r1", "label": 1, "labelled_at": T0},
                {"request_id": "r4", "label": 0, "labelled_at": T0},
            ],
        )


def test_window_comes_back_typed_with_labels(database_url, fraud_schema):
    frame = coerce_frame(generate_transactions(10, seed=8), fraud_schema)
    frame.loc[2, "customer_age"] = np.nan
    log_rows(database_url, frame, fraud_schema)

    window = read_predictions(
        fraud_schema,
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=6),
        url=database_url,
        with_labels=True,
    )
    assert window["transaction_id"].tolist() == ["r1", "r2", "r3", "r4", "r5"]
    expected = frame.loc[1:5, fraud_schema.feature_names].reset_index(drop=True)
    pd.testing.assert_frame_equal(window[fraud_schema.feature_names], expected)
    assert window["prediction"].tolist() == [1, 0, 1, 0, 1]
    assert window["model_version"].unique().tolist() == ["3"]
    assert window["is_fraud"].tolist()[0] == 1 and window["is_fraud"].tolist()[3] == 0
    assert window["is_fraud"].isna().sum() == 3
    assert str(window["timestamp"].dt.tz) == "UTC"


def test_chunks_cover_the_window_once(database_url, fraud_schema):
    frame = coerce_frame(generate_transactions(25, seed=9), fraud_schema)
    log_rows(database_url, frame, fraud_schema)
    chunks = list(
        read_predictions(fraud_schema, T0, T0 + timedelta(days=1), url=database_url, chunksize=10)
    )
    assert [len(c) for c in chunks] == [10, 10, 5]
    ids = pd.concat(chunks)["transaction_id"].tolist()
    assert ids == [f"r{i}" for i in range(25)]


def test_outputs_come_back_under_the_schema_names(database_url, fraud_schema):
    """A schema naming its output columns gets them under those names, whole or in chunks."""
    named = replace(fraud_schema, prediction="is_fraud_predicted", score="fraud_probability")
    frame = coerce_frame(generate_transactions(6, seed=10), named)
    log_rows(database_url, frame, named)
    whole = read_predictions(named, T0, T0 + timedelta(days=1), url=database_url)
    assert whole["is_fraud_predicted"].tolist() == [0, 1, 0, 1, 0, 1]
    assert whole["fraud_probability"].tolist() == [i / 6 for i in range(6)]
    assert not {"prediction", "score"} & set(whole.columns)
    chunks = read_predictions(named, T0, T0 + timedelta(days=1), url=database_url, chunksize=4)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
