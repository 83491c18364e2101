"""Data-quality checks on a live window: each of the seven fires on its own problem, at the
level it should, and stays quiet on a clean window."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert

from data.db import get_engine, init_db, prediction_logs
from data.drift_injector import UNSEEN_CATEGORY, inject_drift
from data.ingest import coerce_frame
from data.prediction_log import read_predictions
from data.profile import ReferenceProfile, build_reference_profile
from data.schema import FeatureSchema, load_schema
from data.settings import PROJECT_ROOT
from data.synthetic import generate_transactions
from monitoring.quality_report import (
    CHECKS,
    QualityThresholds,
    compute_quality_report,
    main,
)

START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(hours=6)
SCHEMA = load_schema(PROJECT_ROOT / "schemas" / "fraud.yaml")


@pytest.fixture(scope="module")
def reference() -> ReferenceProfile:
    frame = coerce_frame(generate_transactions(5_000, seed=1), SCHEMA)
    outputs = np.zeros(len(frame))
    return build_reference_profile(
        frame[SCHEMA.feature_names], SCHEMA, predictions=outputs, scores=outputs
    )


def live_window(rows: int = 2_000, seed: int = 2) -> pd.DataFrame:
    """`rows` typed transactions spread over the 6-hour window, the newest 5 minutes old."""
    frame = generate_transactions(rows, seed=seed)
    offsets = np.sort(np.random.default_rng(seed).uniform(0, 6 * 3600 - 300, rows)).round(3)
    offsets[-1] = 6 * 3600 - 300
    frame["timestamp"] = START + pd.to_timedelta(offsets, unit="s")
    return coerce_frame(frame, SCHEMA)


def check(frame: pd.DataFrame, name: str, schema: FeatureSchema = SCHEMA, **kwargs):
    report = compute_quality_report(frame, schema, window_start=START, window_end=END, **kwargs)
    return report.check(name)


def test_a_clean_window_passes_every_check(reference):
    report = compute_quality_report(
        live_window(),
        SCHEMA,
        window_start=START,
        window_end=END,
        expected_rows_per_hour=300,
        reference=reference,
    )
    assert [c.name for c in report.checks] == list(CHECKS)
    assert report.passed and report.hard_failures == 0 and report.soft_warnings == 0, (
        report.summary()
    )
    assert set(report.missing_share) == set(SCHEMA.feature_names)
    assert report.missing_share["customer_age"] == pytest.approx(0.01, abs=0.006)
    assert report.missing_share["amount"] == 0.0
    assert report.summary().startswith("quality passed: 7 checks on 2,000 rows")


def test_missing_values_hard_for_required_soft_for_nullable_beyond_the_reference(reference):
    frame = live_window()
    frame.loc[:1, "hour_of_day"] = np.nan  # 2 of 2,000 = 0.1%: within the default tolerance
    assert check(frame, "missing_values", reference=reference).passed

    frame.loc[:39, "amount"] = np.nan  # 2% of a non-nullable feature
    result = check(frame, "missing_values", reference=reference)
    assert result.hard and "amount has 40 missing value(s) (2.0%) but is not nullable" in (
        result.message
    )
    assert result.details["hour_of_day"] == {
        "missing": 2,
        "share": 0.001,
        "reference_share": 0.0,
        "nullable": False,
        "level": "ok",
    }

    nullable = live_window()
    nullable.loc[:299, "customer_age"] = np.nan  # ~16% against ~1% in the reference
    result = check(nullable, "missing_values", reference=reference)
    assert result.level == "soft" and "customer_age is missing in 15." in result.message
    # Without a reference there is nothing to compare a nullable feature's share with.
    assert check(nullable, "missing_values").passed

    report = compute_quality_report(
        nullable.drop(columns=["device_type"]), SCHEMA, window_start=START, window_end=END
    )
    assert report.check("missing_values").hard
    assert "device_type is absent from the data" in report.check("missing_values").message
    assert report.missing_share["device_type"] == 1.0


def test_out_of_range_soft_for_a_few_hard_above_one_percent():
    few = inject_drift(
        live_window(), "out_of_range", schema=SCHEMA, feature="amount", intensity=0.005
    )
    result = check(few, "out_of_range")
    assert result.level == "soft"
    assert result.message == "amount has 0.5% of its values out of range (10 below min 0)"
    many = inject_drift(
        live_window(), "out_of_range", schema=SCHEMA, feature="hour_of_day", intensity=0.03
    )
    result = check(many, "out_of_range")
    assert result.hard and result.details["hour_of_day"]["above_max"] == 60
    assert result.details["hour_of_day"]["share"] == pytest.approx(0.03)


UNBOUNDED = replace(SCHEMA, features=tuple(replace(f, min=None, max=None) for f in SCHEMA.features))


@pytest.mark.parametrize("feature", ["amount", "customer_age"])
def test_values_far_outside_the_training_range_fail_without_schema_bounds_issue_9(
    feature, reference
):
    """10% of a feature's values 10-20 std beyond anything in the reference, in a schema with no
    min / max: the check used to skip such features and pass."""
    frame = inject_drift(
        live_window(5_000), "out_of_range", schema=UNBOUNDED, feature=feature, intensity=0.1
    )
    report = compute_quality_report(
        frame, UNBOUNDED, window_start=START, window_end=END, reference=reference
    )
    result = report.check("out_of_range")
    assert result.hard and not report.passed
    detail = result.details[feature]
    trained = reference.numerical[feature]
    assert (detail["min"], detail["max"]) == (trained.min, trained.max)
    assert detail["min_from"] == detail["max_from"] == "reference"
    assert detail["above_max"] == 500 and "share" not in detail  # no schema bound broken
    share = detail["outside_training_range_share"]
    assert share == pytest.approx(0.1, abs=0.002)  # of the present values (customer_age: 1% NaN)
    assert report.outside_training_range_share[feature] == share
    assert report.to_dict()["outside_training_range_share"][feature] == share
    assert (
        f"{feature} has {share:.1%} of its values outside the training range (500 above the "
        f"training max {trained.max:g})" in result.message
    )
    # The same with the reference data itself instead of its profile.
    data = coerce_frame(generate_transactions(5_000, seed=1), SCHEMA)
    again = check(frame, "out_of_range", UNBOUNDED, reference=data)
    assert again.details[feature] == detail


def test_the_training_range_needs_a_share_and_completes_one_sided_schema_bounds(reference):
    # amount: min 0 in the schema, the training maximum above.
    frame = live_window(2_000)
    top = reference.numerical["amount"].max
    frame.loc[:9, "amount"] = top + 1  # 0.5%: new values happen, not yet a problem
    result = check(frame, "out_of_range", reference=reference)
    assert result.passed
    detail = result.details["amount"]
    assert (detail["min"], detail["min_from"], detail["max"], detail["max_from"]) == (
        0,
        "schema",
        top,
        "reference",
    )
    assert detail["share"] == 0.0 and detail["outside_training_range_share"] == 0.005
    frame.loc[:59, "amount"] = top + 1  # 3%: soft
    frame.loc[60:69, "amount"] = -1.0  # and 0.5% below the schema's min 0: soft
    result = check(frame, "out_of_range", reference=reference)
    assert result.level == "soft"
    assert "amount has 0.5% of its values out of range (10 below min 0)" in result.message
    assert "amount has 3.0% of its values outside the training range (60 above" in result.message
    # Features bounded on both sides by the schema keep the schema's bounds only.
    assert "outside_training_range_share" not in result.details["hour_of_day"]
    assert check(frame, "out_of_range").details["amount"] == {
        "below_min": 10,
        "above_max": 0,
        "share": 0.005,
        "min": 0,
        "min_from": "schema",
        "level": "soft",
    }


def test_undrifted_windows_stay_within_the_training_range(reference):
    """By chance about 2 / (5,000 + 1) of new values fall outside a 5,000-row reference's
    range: far below the 1% that makes a warning, at any window size."""
    for rows, seed in ((500, 3), (20_000, 4), (100_000, 5)):
        frame = live_window(rows, seed=seed)
        report = compute_quality_report(
            frame, UNBOUNDED, window_start=START, window_end=END, reference=reference
        )
        result = report.check("out_of_range")
        assert result.passed, result.message
        assert max(report.outside_training_range_share.values()) < 0.002


def test_unseen_categories_from_the_schema_or_else_the_reference(reference):
    few = inject_drift(
        live_window(), "new_category", schema=SCHEMA, feature="entry_mode", intensity=0.01
    )
    result = check(few, "unseen_categories")
    assert result.level == "soft"
    assert (
        f"entry_mode has 20 value(s) (1.0%) not in the schema's categories: '{UNSEEN_CATEGORY}'"
        in (result.message)
    )
    many = inject_drift(
        live_window(), "new_category", schema=SCHEMA, feature="entry_mode", intensity=0.2
    )
    assert check(many, "unseen_categories").hard

    # A schema without a category list: the reference's categories are the known ones.
    unlisted = replace(SCHEMA.feature("entry_mode"), categories=None)
    schema = replace(
        SCHEMA, features=tuple(unlisted if f.name == "entry_mode" else f for f in SCHEMA.features)
    )
    result = check(many, "unseen_categories", schema, reference=reference)
    assert result.hard and result.details["entry_mode"]["known_from"] == "reference"
    skipped = check(many, "unseen_categories", schema)
    assert skipped.passed and "skipped" in skipped.details["entry_mode"]


def test_type_violations_are_reported_not_raised():
    frame = live_window(200)
    frame.loc[0, "amount"] = np.inf
    frame.loc[1, "account_age_days"] = -np.inf
    frame.loc[2, "is_foreign"] = 2.0
    frame["transactions_24h"] = frame["transactions_24h"].astype(object)
    frame.loc[3, "transactions_24h"] = "three"
    frame["card_present"] = frame["card_present"].map({1.0: "yes", 0.0: "no"})  # ingest's words
    frame["timestamp"] = frame["timestamp"].astype(object)
    frame.loc[4, "timestamp"] = "yesterday"
    report = compute_quality_report(frame, SCHEMA, window_start=START, window_end=END)
    result = report.check("type_violations")
    assert result.hard
    assert set(result.details) == {
        "amount",
        "account_age_days",
        "is_foreign",
        "transactions_24h",
        "timestamp",
    }
    assert "transactions_24h has 1 value(s) that are not finite numbers, e.g. 'three'" in (
        result.message
    )
    assert "is_foreign has 1 value(s) that are not booleans (0 / 1), e.g. 2.0" in result.message
    assert "timestamp has 1 value(s) that are not dates, e.g. 'yesterday'" in result.message
    # A value of the wrong type is not also a missing or an out-of-range one.
    assert report.missing_share["amount"] == 0.0
    assert report.check("missing_values").passed and report.check("out_of_range").passed


def test_duplicate_request_ids_are_a_hard_failure():
    frame = live_window(100)
    doubled = pd.concat([frame, frame.head(3)], ignore_index=True)
    result = check(doubled, "duplicate_ids")
    assert result.hard and result.details["duplicated_rows"] == 3
    assert result.message.startswith("3 row(s) repeat an earlier transaction_id (3 id(s), e.g. ")
    assert check(doubled.drop(columns=["transaction_id"]), "duplicate_ids").passed


def test_volume_and_freshness():
    frame = live_window(600)
    assert check(frame, "volume_freshness", expected_rows_per_hour=100).passed
    low = check(frame, "volume_freshness", expected_rows_per_hour=250)
    assert low.level == "soft" and low.message.startswith("600 rows against 1,500 expected (40.0%")
    assert low.details["minutes_since_newest"] == pytest.approx(5)

    # The last 90 minutes without a row: stale; the last 4 hours: the feed has stopped.
    stale = frame[frame["timestamp"] < END - timedelta(minutes=90)]
    result = check(stale, "volume_freshness")
    assert result.level == "soft" and "minutes older than the end of the window" in result.message
    stopped = frame[frame["timestamp"] < END - timedelta(hours=4)]
    assert check(stopped, "volume_freshness").hard

    empty = compute_quality_report(frame.iloc[:0], SCHEMA, window_start=START, window_end=END)
    assert empty.check("volume_freshness").message == "the window of 6 hour(s) has no rows"
    assert empty.hard_failures == 1 and empty.missing_share["amount"] == 0.0


def test_stuck_features_judged_against_the_reference(reference):
    frame = live_window()
    frame["failed_logins_24h"] = 0.0  # 86% of reference rows are 0; 2,000 in a row are not luck
    frame["merchant_category"] = "online"
    frame["avg_amount_30d"] = 42.0 + np.random.default_rng(0).normal(0, 1e-3, len(frame))
    result = check(frame, "stuck_features", reference=reference)
    assert result.hard
    assert set(result.details) == {"failed_logins_24h", "merchant_category", "avg_amount_30d"}
    assert "merchant_category holds the single value 'online' in 2,000 rows" in result.message
    assert "avg_amount_30d holds almost one value" in result.message

    # Twenty quiet rows without a failed login happen by chance (0.86^20 ≈ 5%).
    quiet = live_window(20)
    quiet["failed_logins_24h"] = 0.0
    assert check(quiet, "stuck_features", reference=reference).passed
    # Without a reference: a warning, only over enough rows.
    assert check(frame, "stuck_features").level == "soft"
    assert check(quiet, "stuck_features").passed


def test_report_is_json_ready_and_the_thresholds_are_checked(reference):
    frame = live_window(300)
    frame.loc[:5, "amount"] = np.nan
    frame.loc[6, "amount"] = np.inf
    report = compute_quality_report(
        frame, SCHEMA, window_start=START, window_end=END, reference=reference
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["hard_failures"] == report.hard_failures == 2
    assert data["failures"] == ["missing_values", "type_violations"]
    assert data["window_end"] == "2026-03-01T06:00:00+00:00"
    assert data["checks"][0]["details"]["amount"]["missing"] == 6
    assert "  error   type_violations: amount has 1 value(s)" in report.summary()
    with pytest.raises(ValueError, match="freshness_soft_minutes"):
        QualityThresholds(freshness_soft_minutes=200)
    with pytest.raises(ValueError, match="before window_start"):
        compute_quality_report(frame, SCHEMA, window_start=END, window_end=START)


def test_a_window_read_from_the_prediction_log(database_url, reference):
    frame = live_window(50)
    records = frame[SCHEMA.feature_names].to_dict("records")
    rows = [
        {
            "request_id": request_id,
            "predicted_at": moment.to_pydatetime(),
            "model_name": "fraud-detector",
            "model_version": "1",
            "features": {k: None if pd.isna(v) else v for k, v in record.items()},
            "predicted_class": 0,
            "score": 0.1,
            "latency_ms": 1.0,
        }
        for request_id, moment, record in zip(
            frame["transaction_id"], frame["timestamp"], records, strict=True
        )
    ]
    engine = get_engine(database_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(insert(prediction_logs), rows)
    window = read_predictions(SCHEMA, START, END, url=database_url)
    report = compute_quality_report(
        window,
        SCHEMA,
        window_start=START,
        window_end=END,
        expected_rows_per_hour=8,
        reference=reference,
    )
    assert report.rows == 50 and report.passed and report.soft_warnings == 0, report.summary()


def test_command_line(tmp_path, capsys, reference):
    schema_path = str(PROJECT_ROOT / "schemas" / "fraud.yaml")
    clean = tmp_path / "clean.csv"
    live_window(300).to_csv(clean, index=False)
    out = tmp_path / "out" / "quality.json"
    profile = reference.save(tmp_path / "profile.json")
    args = ["--schema", schema_path, "--reference", str(profile), "--json", str(out)]
    assert main([*args, "--current", str(clean)]) == 0
    assert capsys.readouterr().out.startswith("quality passed: 7 checks on 300 rows")
    assert json.loads(out.read_text())["passed"] is True

    # Text in a numerical column is reported as a hard failure, not a crash.
    broken = live_window(300)
    broken["amount"] = broken["amount"].astype(str)
    broken.loc[0, "amount"] = "12,50"
    parquet = tmp_path / "broken.parquet"
    broken.to_parquet(parquet)
    assert main(["--schema", schema_path, "--current", str(parquet)]) == 1
    assert "type_violations: amount has 1 value(s)" in capsys.readouterr().out

    assert main(["--schema", schema_path, "--current", str(tmp_path / "none.csv")]) == 2
    assert capsys.readouterr().err.strip().endswith("none.csv: file not found")
    assert main(["--schema", schema_path]) == 2
    assert capsys.readouterr().err.count("\n") == 1
