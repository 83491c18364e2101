"""Validation: hard checks stop training with a message naming column and rule; soft ones warn."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from data.ingest import coerce_frame
from data.synthetic import generate_transactions
from data.validate import ValidationError, validate_frame

ALL_CHECKS = [
    "target_binary",
    "enough_rows",
    "no_missing_in_required",
    "finite_numbers",
    "within_bounds",
    "known_categories",
    "unique_ids",
]


@pytest.fixture(scope="module")
def raw_frame() -> pd.DataFrame:
    return generate_transactions(2_000, seed=1)


@pytest.fixture
def frame(raw_frame: pd.DataFrame, fraud_schema) -> pd.DataFrame:
    return coerce_frame(raw_frame, fraud_schema)


def check(report, name):
    return next(c for c in report.checks if c.name == name)


def test_clean_synthetic_frame_passes_without_warnings(fraud_schema, frame):
    report = validate_frame(frame, fraud_schema)
    assert report.passed
    assert report.failures == [] and report.warnings == []
    assert [c.name for c in report.checks] == ALL_CHECKS
    assert report.rows == 2_000
    report.raise_for_failures()  # does not raise


def set_rows(column: str, rows, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[rows, column] = value
        return frame

    return mutate


def keep_frauds(n: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frauds = frame.index[frame["is_fraud"] == 1]
        frame.loc[frauds[n:], "is_fraud"] = 0
        return frame

    return mutate


HARD_FAILURES = [
    # (mutation, failed check, column named, words the message must contain)
    (
        set_rows("is_fraud", slice(0, 2), 2),
        "target_binary",
        "is_fraud",
        ["0 and 1", "found 0, 1, 2"],
    ),
    (
        set_rows("is_fraud", slice(0, 4), np.nan),
        "target_binary",
        "is_fraud",
        ["5 row(s) have no label"],
    ),
    (lambda f: f.head(150), "enough_rows", None, ["150 rows", "at least 200"]),
    (keep_frauds(5), "enough_rows", "is_fraud", ["is_fraud=1 has 5 rows", "at least 20 per class"]),
    (set_rows("amount", slice(0, 6), np.nan), "no_missing_in_required", "amount", ["7 missing"]),
    (set_rows("merchant_category", 3, None), "no_missing_in_required", "merchant_category", ["1 "]),
    (set_rows("amount", 0, np.inf), "finite_numbers", "amount", ["infinite", "1 +inf"]),
    (
        set_rows("distance_from_home_km", 5, -np.inf),
        "finite_numbers",
        "distance",
        ["infinite", "1 -inf"],
    ),
    (
        set_rows("amount", slice(0, 2), -12.5),
        "within_bounds",
        "amount",
        ["3 value(s) below its min 0", "-12.5"],
    ),
    (
        set_rows("hour_of_day", 9, 24.0),
        "within_bounds",
        "hour_of_day",
        ["above its max 23", "e.g. 24"],
    ),
    (
        set_rows("customer_age", 4, 7.0),
        "within_bounds",
        "customer_age",
        ["below its min 18", "e.g. 7"],
    ),
]


@pytest.mark.parametrize(("mutate", "name", "column", "words"), HARD_FAILURES)
def test_each_hard_check_fails_naming_column_and_rule(
    fraud_schema, frame, mutate, name, column, words
):
    report = validate_frame(mutate(frame), fraud_schema)
    failed = check(report, name)
    assert not report.passed
    assert not failed.passed and failed.hard
    assert [c.name for c in report.failures] == [name]
    if column:
        assert any(column in c for c in failed.columns)
        assert column in failed.message
    for word in words:
        assert word in failed.message


def test_three_valued_label_message_reads_like_a_sentence(fraud_schema, frame):
    frame.loc[:9, "is_fraud"] = 2
    result = check(validate_frame(frame, fraud_schema), "target_binary")
    assert result.message == "is_fraud must have exactly the values 0 and 1; found 0, 1, 2"
    assert result.columns == ("is_fraud",)


def test_target_with_a_single_class_fails(fraud_schema, frame):
    frame["is_fraud"] = 0
    report = validate_frame(frame, fraud_schema)
    assert "found 0" in check(report, "target_binary").message
    assert {c.name for c in report.failures} == {"target_binary", "enough_rows"}


def test_nullable_feature_may_be_missing(fraud_schema, frame):
    frame.loc[:99, "customer_age"] = np.nan
    assert validate_frame(frame, fraud_schema).passed


def test_min_rows_and_min_class_rows_are_configurable(fraud_schema, frame):
    frauds = int(frame["is_fraud"].sum())
    assert validate_frame(frame, fraud_schema, min_class_rows=frauds).passed
    report = validate_frame(frame, fraud_schema, min_class_rows=frauds + 1)
    assert [c.name for c in report.failures] == ["enough_rows"]
    assert not validate_frame(frame, fraud_schema, min_rows=2_001).passed


def test_raise_for_failures_lists_every_failed_check(fraud_schema, frame):
    frame.loc[0, "amount"] = -1.0
    frame.loc[1, "hour_of_day"] = np.inf
    frame.loc[2, "entry_mode"] = None
    frame.loc[3, "is_fraud"] = 7
    report = validate_frame(frame, fraud_schema)
    with pytest.raises(ValidationError) as error:
        report.raise_for_failures()
    message = str(error.value)
    for name, column in [
        ("target_binary", "is_fraud"),
        ("no_missing_in_required", "entry_mode"),
        ("finite_numbers", "hour_of_day"),
        ("within_bounds", "amount"),
    ]:
        line = next(line for line in message.splitlines() if line.startswith(f"- {name}"))
        assert column in line
    assert "enough_rows" not in message
    assert error.value.report is report
    assert isinstance(error.value, ValueError)


def test_unknown_category_warns_but_passes(fraud_schema, frame):
    frame.loc[:2, "merchant_category"] = "crypto"
    frame.loc[3, "merchant_category"] = "casino"
    report = validate_frame(frame, fraud_schema)
    warning = check(report, "known_categories")
    assert report.passed
    assert report.warnings == [warning] and not warning.hard
    assert warning.columns == ("merchant_category",)
    assert "'crypto' (3)" in warning.message and "'casino' (1)" in warning.message


def test_duplicate_ids_warn_with_the_count_but_pass(fraud_schema, frame):
    frame.loc[1:3, "transaction_id"] = frame.loc[0, "transaction_id"]
    report = validate_frame(frame, fraud_schema)
    warning = check(report, "unique_ids")
    assert report.passed
    assert report.warnings == [warning]
    assert "3 row(s) repeat an earlier id" in warning.message
    assert frame.loc[0, "transaction_id"] in warning.message


def test_frame_without_target_validates_when_target_not_required(fraud_schema, frame):
    unlabelled = frame.drop(columns=["is_fraud"])
    report = validate_frame(unlabelled, fraud_schema, require_target=False)
    assert report.passed
    assert check(report, "target_binary").message == "skipped: no target"
    # Row count still matters without labels; the label itself is what is required by default.
    too_few = validate_frame(unlabelled.head(50), fraud_schema, require_target=False)
    assert [c.name for c in too_few.failures] == ["enough_rows"]
    assert (
        "is_fraud is missing"
        in check(validate_frame(unlabelled, fraud_schema), "target_binary").message
    )


def test_labels_are_not_checked_when_target_not_required(fraud_schema, frame):
    frame = keep_frauds(5)(frame)
    frame.loc[0, "is_fraud"] = 2
    report = validate_frame(frame, fraud_schema, require_target=False)
    assert report.passed
    assert not validate_frame(frame, fraud_schema).passed


def test_report_is_json_ready_and_summarised(fraud_schema, frame):
    frame.loc[0, "amount"] = -5.0
    frame.loc[1, "device_type"] = "smartwatch"
    report = validate_frame(frame, fraud_schema)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is False
    assert data["rows"] == 2_000
    assert data["failures"] == ["within_bounds"] and data["warnings"] == ["known_categories"]
    assert [c["name"] for c in data["checks"]] == ALL_CHECKS
    assert data["checks"][4]["columns"] == ["amount"]
    summary = report.summary()
    assert "FAILED" in summary and "within_bounds" in summary and "smartwatch" in summary
