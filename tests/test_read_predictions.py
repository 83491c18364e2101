"""Reading the live prediction log back as typed columns, on SQLite and on Postgres."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import pytest
from sqlalchemy import insert, text

import data.prediction_log as prediction_log
from data.db import get_engine, init_db, labels, prediction_logs
from data.ingest import coerce_frame
from data.prediction_log import read_predictions
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


# One row per shape the features JSON can take; `features_frame` parses API-shaped chunks with
# Arrow and anything else with orjson, and both must come out as the orjson path always did.
API_SHAPED = [
    # all 13 keys, booleans as 0.0 / 1.0 as the API logs them
    '{"amount":12.5,"avg_amount_30d":30.0,"hour_of_day":3.0,"customer_age":41.0,'
    '"account_age_days":700.0,"distance_from_home_km":1.5,"transactions_24h":2.0,'
    '"failed_logins_24h":0.0,"merchant_category":"grocery","entry_mode":"chip",'
    '"device_type":"pos","is_foreign":0.0,"card_present":1.0}',
    # a key missing (a feature added to the schema later), an integer, an extra key, spaces
    '{"amount": 7, "hour_of_day": 23.0, "merchant_category": "fuel", "extra": [1, {"x": 2}],'
    '"is_foreign": 1.0}',
    # nulls, a category that looks like a number, escapes, a line break between tokens
    '{"amount":null,"customer_age":null,"merchant_category":"007",'
    '"entry_mode":"caf\\u00e9 \\"x\\", y",\n"device_type":"tab\\tand\\\\slash",'
    '"card_present":null}',
]
OTHER_SHAPES = {
    "a boolean true": '{"amount":1.0,"is_foreign":true,"card_present":false}',
    "a number as a category": '{"amount":1.0,"merchant_category":7}',
    "a key twice": '{"amount":1.0,"amount":2.0}',
    "a numeric text": '{"amount":"3.5"}',
}


def orjson_path(texts, schema):
    """The features as `frame_from_log_rows` parsed them before Arrow: one orjson call."""
    records = orjson.loads("[" + ",".join(texts) + "]")
    return pd.DataFrame.from_records(records, columns=schema.feature_names)


def typed(features, schema):
    return coerce_frame(features, schema, require_target=False)


def assert_same(got, expected):
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    for name in got.columns:  # a missing category is NaN and a present one str, on both paths
        assert [type(v) for v in got[name]] == [type(v) for v in expected[name]], name


def test_features_frame_gives_what_the_orjson_path_gave(fraud_schema, monkeypatch):
    for texts in (API_SHAPED, API_SHAPED[1:2], API_SHAPED[2:]):
        expected = typed(orjson_path(texts, fraud_schema), fraud_schema)
        for dtype in ("str", object):  # Arrow-backed from COPY, Python strs from SQLite
            got = prediction_log.features_frame(pd.Series(texts, dtype=dtype), fraud_schema)
            assert_same(typed(got, fraud_schema), expected)
    # API-shaped chunks never reach orjson
    monkeypatch.setattr(prediction_log.orjson, "loads", lambda _: pytest.fail("orjson path"))
    prediction_log.features_frame(pd.Series(API_SHAPED, dtype="str"), fraud_schema)


def test_features_of_other_shapes_fall_back_to_orjson(fraud_schema):
    for shape, other in OTHER_SHAPES.items():
        texts = [*API_SHAPED, other]
        got = prediction_log.features_frame(pd.Series(texts, dtype="str"), fraud_schema)
        pd.testing.assert_frame_equal(got, orjson_path(texts, fraud_schema), obj=shape)
    both = pd.Series([OTHER_SHAPES["a boolean true"], OTHER_SHAPES["a number as a category"]])
    features = typed(prediction_log.features_frame(both, fraud_schema), fraud_schema)
    assert features[["is_foreign", "card_present"]].iloc[0].tolist() == [1.0, 0.0]
    assert features["merchant_category"].tolist()[1] == "7"


def test_odd_rows_read_back_as_logged(database_url, fraud_schema):
    """Through COPY's CSV and back: ids and a version with quotes, commas, tabs and line breaks,
    an id reading `\\N` (COPY's NULL here), the features JSON kept as it was written (Postgres'
    json keeps the text), whole and in chunks of either parser; and an empty window."""
    texts = [*API_SHAPED, OTHER_SHAPES["a boolean true"], OTHER_SHAPES["a number as a category"]]
    ids = ['r0,"quoted"', "r1\nnext line", "\\N", "r3\ttab", "r4"]
    engine = get_engine(database_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(prediction_logs),
            [
                {
                    "request_id": rid,
                    "predicted_at": T0 + timedelta(minutes=i),
                    "model_name": "fraud-detector",
                    "model_version": 'v"3",\n',
                    "features": orjson.loads(features),
                    "predicted_class": i % 2,
                    "score": 1 / 3 + i,
                    "latency_ms": 1.0,
                }
                for i, (rid, features) in enumerate(zip(ids, texts, strict=True))
            ],
        )
        if engine.dialect.name == "postgresql":  # the texts as they are, line break included
            conn.execute(
                text("UPDATE prediction_logs SET features = CAST(:f AS json) WHERE request_id=:r"),
                [{"f": features, "r": rid} for rid, features in zip(ids, texts, strict=True)],
            )
    end = T0 + timedelta(days=1)
    whole = read_predictions(fraud_schema, T0, end, url=database_url)
    assert whole["transaction_id"].tolist() == ids
    assert whole["model_version"].tolist() == ['v"3",\n'] * len(ids)
    assert whole["score"].tolist() == [1 / 3 + i for i in range(len(ids))]
    assert_same(whole[fraud_schema.feature_names], typed(orjson_path(texts, fraud_schema),
                                                          fraud_schema))  # fmt: skip
    assert whole["merchant_category"].tolist()[2:] == ["007", np.nan, "7"]
    # chunks of 2: the first two rows go through Arrow, the last two through orjson
    chunks = read_predictions(fraud_schema, T0, end, url=database_url, chunksize=2)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    before = T0 - timedelta(days=1)
    empty = read_predictions(fraud_schema, before, T0, url=database_url, with_labels=True)
    assert len(empty) == 0 and set(empty.columns) == {*whole.columns, "is_fraud"}
