"""One check type for validation and quality, and one typing rule for training and monitoring."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from data.checks import HARD, OK, SOFT, CheckResult, Problem, judge, run_suite
from data.ingest import DataError, coerce_frame
from data.synthetic import generate_transactions
from data.validate import validate_frame
from monitoring.quality_report import compute_quality_report

START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(hours=6)
ODD_BOOLEANS = ["yes", "1", " TRUE ", "no", "F", "0.0", None, ""]
ODD_NUMBERS = ["1e3", " 2 ", "-0.5", "inf", "-inf", None, "", "7"]


def odd_frame() -> pd.DataFrame:
    frame = generate_transactions(len(ODD_NUMBERS), seed=3)
    frame["timestamp"] = START + pd.to_timedelta(np.arange(len(frame)), unit="min")
    frame["is_foreign"] = pd.Series(ODD_BOOLEANS, dtype=object)
    frame["amount"] = pd.Series(ODD_NUMBERS, dtype=object)
    return frame


def test_training_and_quality_type_odd_values_alike(fraud_schema):
    frame = odd_frame()
    strict = coerce_frame(frame, fraud_schema)  # what training and validation see
    masked, invalid = coerce_frame(frame, fraud_schema, require_target=False, errors="mask")

    expected_booleans = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, np.nan, np.nan]
    for typed in (strict, masked):
        assert typed["is_foreign"].equals(pd.Series(expected_booleans, name="is_foreign"))
        assert typed["amount"].tolist()[:3] == [1000.0, 2.0, -0.5]
        assert typed["amount"].tolist()[-1] == 7.0
    assert not invalid["is_foreign"].any()
    # ±inf is a number to both, kept for validation to report and masked for the live checks.
    assert strict["amount"].tolist()[3:5] == [np.inf, -np.inf]
    assert invalid["amount"].tolist() == [False, False, False, True, True, False, False, False]
    assert masked["amount"].isna().tolist()[3:7] == [True, True, True, True]
    finite = validate_frame(strict, fraud_schema).check("finite_numbers")
    assert finite.hard and "1 +inf, 1 -inf" in finite.message

    quality = compute_quality_report(frame, fraud_schema, window_start=START, window_end=END)
    # Validation and the live checks share one result type (and so one way to judge it).
    assert {type(c) for c in quality.checks} == {type(finite)} == {CheckResult}
    violations = quality.check("type_violations")
    assert set(violations.details) == {"amount"} and violations.details["amount"]["count"] == 2
    assert violations.columns == ("amount",)
    # Blank and None are missing to both paths, not a type violation.
    assert quality.check("missing_values").details["amount"]["missing"] == 2


def test_a_value_training_refuses_is_a_violation_the_live_checks_count(fraud_schema):
    frame = odd_frame()
    frame.loc[0, "is_foreign"] = "maybe"
    frame.loc[1, "amount"] = "12,50"
    with pytest.raises(DataError, match=r"'amount'.*'12,50'"):
        coerce_frame(frame, fraud_schema)
    frame_without_amount = frame.assign(amount=1.0)
    with pytest.raises(DataError, match=r"'is_foreign'.*'maybe'"):
        coerce_frame(frame_without_amount, fraud_schema)
    _, invalid = coerce_frame(frame, fraud_schema, errors="mask")
    assert invalid["is_foreign"].tolist()[:2] == [True, False]
    assert invalid["amount"].tolist()[:2] == [False, True]
    quality = compute_quality_report(frame, fraud_schema, window_start=START, window_end=END)
    details = quality.check("type_violations").details
    assert details["is_foreign"]["examples"] == ["'maybe'"]
    assert details["amount"]["examples"] == ["'12,50'", "'inf'", "'-inf'"]


def test_mask_mode_leaves_absent_columns_to_the_caller(fraud_schema):
    frame = odd_frame().drop(columns=["device_type", "is_fraud"])
    with pytest.raises(DataError, match="device_type"):
        coerce_frame(frame, fraud_schema, require_target=False)
    typed, invalid = coerce_frame(frame, fraud_schema, errors="mask")
    assert "device_type" not in typed and list(invalid.columns) == list(typed.columns)
    assert invalid.dtypes.eq(bool).all()


def test_one_result_type_judged_the_same_way():
    problems = [
        Problem(SOFT, "b is a little off", "b"),
        Problem(HARD, "a is broken", "a"),
        Problem(OK, "not a problem", "c"),
    ]
    result = judge("demo", problems, passed="fine", details={"a": 1}, suffix=" (rule)")
    assert (result.level, result.hard, result.passed) == (HARD, True, False)
    assert result.message == "a is broken; b is a little off (rule)"
    assert result.columns == ("a", "b")
    assert json.loads(json.dumps(result.to_dict())) == {
        "name": "demo",
        "level": "hard",
        "hard": True,
        "passed": False,
        "message": "a is broken; b is a little off (rule)",
        "columns": ["a", "b"],
        "details": {"a": 1},
    }
    clean = judge("demo", [], passed="fine", columns=("id",))
    assert clean.passed and not clean.hard and clean.columns == ("id",)
    with pytest.raises(ValueError, match="level"):
        CheckResult("demo", "fatal", "no such level")


def test_the_runner_runs_every_check_in_order_and_wants_distinct_names():
    def first(data: int) -> CheckResult:
        return judge("first", [], passed=f"{data} rows")

    def second(data: int) -> CheckResult:
        return judge("second", [Problem(SOFT, "odd")], passed="")

    assert [r.name for r in run_suite((first, second), 3)] == ["first", "second"]
    with pytest.raises(ValueError, match="distinct"):
        run_suite((first, first), 3)
