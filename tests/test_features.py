"""FeaturePipeline: schema-driven fit / transform / save / load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.features import FeaturePipeline
from data.synthetic import generate_transactions


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    # The shape `data.ingest.coerce_frame` hands over: booleans as 0.0 / 1.0.
    return frame.astype({"is_foreign": float, "card_present": float})


@pytest.fixture
def frame() -> pd.DataFrame:
    return typed(generate_transactions(2_000, seed=3))


def test_output_has_one_column_per_number_and_category(fraud_schema, frame):
    pipeline = FeaturePipeline(fraud_schema).fit(frame)
    matrix = pipeline.transform(frame)
    n_numeric = len(fraud_schema.numerical) + len(fraud_schema.boolean)
    n_onehot = sum(len(f.categories) for f in fraud_schema.categorical)
    assert matrix.shape == (len(frame), n_numeric + n_onehot)
    assert np.isfinite(matrix).all()
    assert "merchant_category_travel" in pipeline.output_names
    # one-hot rows sum to one per categorical feature
    onehot = matrix[:, n_numeric:]
    assert np.allclose(onehot.sum(axis=1), len(fraud_schema.categorical))


def test_missing_and_unseen_values_do_not_fail(fraud_schema, frame):
    pipeline = FeaturePipeline(fraud_schema).fit(frame)
    odd = frame.head(3).copy()
    odd.loc[0, "amount"] = np.nan
    odd.loc[1, "merchant_category"] = "crypto-exchange"
    odd.loc[2, "device_type"] = None
    matrix = pipeline.transform(odd)
    assert np.isfinite(matrix).all()
    amount = pipeline.output_names.index("amount")
    assert matrix[0, amount] == pytest.approx(frame["amount"].median())
    category_columns = [i for i, n in enumerate(pipeline.output_names) if n.startswith("merchant_")]
    assert matrix[1, category_columns].sum() == 0  # unseen category: all zeros, no error


def test_categories_learned_when_schema_lists_none(fraud_schema, frame):
    from dataclasses import replace

    feature = replace(fraud_schema.feature("entry_mode"), categories=None)
    schema = replace(
        fraud_schema,
        features=tuple(feature if f.name == "entry_mode" else f for f in fraud_schema.features),
    )
    names = FeaturePipeline(schema).fit(frame).output_names
    learned = sorted(n.removeprefix("entry_mode_") for n in names if n.startswith("entry_mode_"))
    assert learned == sorted(frame["entry_mode"].unique())


def test_save_and_load_round_trip(fraud_schema, frame, tmp_path):
    pipeline = FeaturePipeline(fraud_schema).fit(frame)
    loaded = FeaturePipeline.load(pipeline.save(tmp_path / "features.joblib"))
    assert loaded.schema == fraud_schema
    np.testing.assert_array_equal(loaded.transform(frame), pipeline.transform(frame))


def test_errors_name_the_problem(fraud_schema, frame):
    with pytest.raises(RuntimeError, match="before fit"):
        FeaturePipeline(fraud_schema).transform(frame)
    pipeline = FeaturePipeline(fraud_schema).fit(frame)
    with pytest.raises(ValueError, match="missing: amount, hour_of_day"):
        pipeline.transform(frame.drop(columns=["amount", "hour_of_day"]))
