"""Reference profile: what it records, and that it survives a JSON round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.profile import MISSING_KEY, ReferenceProfile, build_reference_profile, category_counts
from data.synthetic import generate_transactions


@pytest.fixture
def frame() -> pd.DataFrame:
    return generate_transactions(3_000, seed=5).astype({"is_foreign": float, "card_present": float})


def build(frame, schema, sample_size=10_000):
    scores = np.linspace(0, 1, len(frame))
    predictions = (scores > 0.9).astype(int)
    return build_reference_profile(
        frame, schema, predictions=predictions, scores=scores, sample_size=sample_size
    )


def test_profile_contents(fraud_schema, frame):
    profile = build(frame, fraud_schema)
    amount = profile.numerical["amount"]
    assert amount.count == 3_000 and amount.missing == 0
    assert amount.mean == pytest.approx(frame["amount"].mean())
    assert amount.quantiles[0] == frame["amount"].min()
    assert amount.quantiles[50] == pytest.approx(frame["amount"].median())
    # smaller than the sample size: every value is kept, so KS against it is exact
    assert amount.sample == sorted(frame["amount"].tolist())
    assert profile.numerical["customer_age"].missing == int(frame["customer_age"].isna().sum())
    merchant = profile.categorical["merchant_category"]
    assert merchant.counts == frame["merchant_category"].value_counts().sort_index().to_dict()
    assert set(profile.categorical["is_foreign"].counts) == {"true", "false"}
    assert profile.prediction_counts == {"0": 2_700, "1": 300}
    assert profile.score.max == 1.0


def test_large_columns_are_sampled(fraud_schema, frame):
    profile = build(frame, fraud_schema, sample_size=500)
    sample = profile.numerical["amount"].sample
    assert len(sample) == 500 and sample == sorted(sample)
    assert set(sample) <= set(frame["amount"])


def test_json_round_trip(fraud_schema, frame, tmp_path):
    profile = build(frame, fraud_schema)
    assert ReferenceProfile.load(profile.save(tmp_path / "p.json")) == profile


def test_unknown_profile_version_is_refused(fraud_schema, frame):
    raw = build(frame, fraud_schema).to_dict() | {"version": 99}
    with pytest.raises(ValueError, match="version 99 is not supported"):
        ReferenceProfile.from_dict(raw)


def test_category_counts_records_missing(fraud_schema):
    feature = fraud_schema.feature("device_type")
    counts = category_counts(pd.Series(["pos", None, "pos", np.nan, "mobile"]), feature)
    assert counts == {MISSING_KEY: 2, "mobile": 1, "pos": 2}
    flag = fraud_schema.feature("is_foreign")
    assert category_counts(pd.Series([1.0, 0.0, 1.0, np.nan]), flag) == {
        MISSING_KEY: 1,
        "false": 1,
        "true": 2,
    }


def test_the_threshold_and_calibration_travel_with_the_profile(fraud_schema, frame, tmp_path):
    scores = np.linspace(0, 1, len(frame))
    calibration = {"method": "isotonic", "scores": [0.0, 1.0], "probabilities": [0.1, 0.7]}
    profile = build_reference_profile(
        frame,
        fraud_schema,
        predictions=(scores >= 0.3).astype(int),
        scores=scores,
        threshold=0.3,
        calibration=calibration,
    )
    again = ReferenceProfile.load(profile.save(tmp_path / "p.json"))
    assert again.threshold == 0.3 and again.calibration == calibration


def test_a_profile_stored_before_thresholds_and_calibrations_reads_as_half_and_none(
    fraud_schema, frame
):
    raw = build(frame, fraud_schema).to_dict()
    del raw["threshold"], raw["calibration"]
    old = ReferenceProfile.from_dict(raw)
    assert old.threshold == 0.5 and old.calibration is None
