"""Data validation: the checks that decide whether a model may be trained on a dataset.

Runs on a frame as `data.ingest.coerce_frame` returns it. Every check runs, so one report names
every problem at once instead of one per training attempt. The checks are `data.checks` checks
(one `CheckResult` type, one signature, one runner), as the live quality checks are.

Hard checks (any failure stops training):

1. `target_binary` – the target holds exactly the classes 0 and 1 and no missing labels;
2. `enough_rows` – at least `min_rows` rows and `min_class_rows` rows of each class;
3. `no_missing_in_required` – features with `nullable: false` have no missing values;
4. `finite_numbers` – numerical features hold no +inf / -inf;
5. `within_bounds` – numerical values respect the schema's `min` / `max`.

Soft checks (reported as warnings, training goes on):

6. `known_categories` – categorical values outside the schema's `categories` list (only for
   features whose schema lists them; the model encodes an unknown value as all zeros);
7. `unique_ids` – duplicated values in the schema's id column.

With `require_target=False` (live data before labels arrive) the target checks pass as skipped
and `enough_rows` counts rows only.

`ValidationReport.to_dict()` is what training logs to MLflow as `validation_report.json`: each
check as `CheckResult.to_dict()` gives it (`hard` means "failed hard", as in the quality report).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from data.checks import HARD, SOFT, CheckReport, CheckResult, Problem, judge, run_suite
from data.schema import FeatureSchema

__all__ = ["CheckResult", "ValidationError", "ValidationReport", "validate_frame"]

HARD_CHECKS = (
    "target_binary",
    "enough_rows",
    "no_missing_in_required",
    "finite_numbers",
    "within_bounds",
)
SKIPPED_NO_TARGET = "skipped: no target"
_MAX_LISTED = 5


class ValidationError(ValueError):
    """Hard validation failures; the message lists each failed check with column and rule."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ValidationReport(CheckReport):
    """The checks' results on a dataset; `passed` when no hard check failed."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "failures": [c.name for c in self.failures],
            "warnings": [c.name for c in self.warnings],
            "checks": [c.to_dict() for c in self.checks],
        }

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"validation {verdict}: {len(self.checks)} checks on {self.rows:,} rows, "
            f"{len(self.failures)} failed, {len(self.warnings)} warning(s)"
        ]
        lines += [f"  error   {_describe(c)}" for c in self.failures]
        lines += [f"  warning {_describe(c)}" for c in self.warnings]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise `ValidationError` listing every failed hard check; do nothing if all passed."""
        if self.passed:
            return
        listed = "\n".join(f"- {_describe(c)}" for c in self.failures)
        raise ValidationError(
            f"data validation failed ({len(self.failures)} check(s)):\n{listed}", self
        )


@dataclass(frozen=True)
class _Dataset:
    """What every validation check is given."""

    frame: pd.DataFrame
    schema: FeatureSchema
    require_target: bool
    min_rows: int
    min_class_rows: int


def validate_frame(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    require_target: bool = True,
    min_rows: int = 200,
    min_class_rows: int = 20,
) -> ValidationReport:
    """Run every check on `frame` (typed by `data.ingest.coerce_frame`) and return the report."""
    data = _Dataset(frame, schema, require_target, min_rows, min_class_rows)
    return ValidationReport(checks=run_suite(CHECKS, data), rows=len(frame))


def _target_binary(data: _Dataset) -> CheckResult:
    name, target = "target_binary", data.schema.target
    if not data.require_target:
        return judge(name, [], passed=SKIPPED_NO_TARGET)
    if target not in data.frame.columns:
        return _failed(name, f"the target column {target} is missing", target)
    labels = data.frame[target]
    missing = int(labels.isna().sum())
    found = sorted(labels.dropna().unique().tolist())
    problems = []
    if found != [0, 1]:
        problems.append(f"found {_join(found)}" if found else "found no labels at all")
    if missing:
        problems.append(f"{missing:,} row(s) have no label")
    if problems:
        message = f"{target} must have exactly the values 0 and 1; " + "; ".join(problems)
        return _failed(name, message, target)
    return judge(name, [], passed=f"{target} has exactly the values 0 and 1", columns=(target,))


def _enough_rows(data: _Dataset) -> CheckResult:
    name, frame, schema = "enough_rows", data.frame, data.schema
    rows = len(frame)
    problems = []
    if rows < data.min_rows:
        problems.append(
            _problem(name, f"the data has {rows:,} rows; at least {data.min_rows:,} are needed")
        )
    if data.require_target and schema.target in frame.columns:
        counts = frame[schema.target].value_counts()
        for label in (0, 1):
            count = int(counts.get(label, 0))
            if count < data.min_class_rows:
                message = (
                    f"{schema.target}={label} has {count:,} rows; "
                    f"at least {data.min_class_rows:,} per class are needed"
                )
                problems.append(_problem(name, message, schema.target))
    detail = "" if data.require_target else f" (class counts {SKIPPED_NO_TARGET})"
    passed = f"{rows:,} rows, at least {data.min_rows:,} needed{detail}"
    return judge(name, problems, passed=passed)


def _no_missing_in_required(data: _Dataset) -> CheckResult:
    name, frame = "no_missing_in_required", data.frame
    problems = []
    for feature in data.schema.features:
        if feature.nullable:
            continue
        if feature.name not in frame.columns:
            problems.append(_problem(name, f"{feature.name} is absent from the data", feature.name))
            continue
        missing = int(frame[feature.name].isna().sum())
        if missing:
            message = f"{feature.name} has {missing:,} missing value(s)"
            problems.append(_problem(name, message, feature.name))
    return judge(
        name,
        problems,
        passed="every non-nullable feature has a value in every row",
        suffix=" (nullable: false in the schema)",
    )


def _finite_numbers(data: _Dataset) -> CheckResult:
    name = "finite_numbers"
    problems = []
    for feature, values in _numbers(data):
        counts = {"+inf": int(np.isposinf(values).sum()), "-inf": int(np.isneginf(values).sum())}
        if any(counts.values()):
            kinds = ", ".join(f"{n:,} {kind}" for kind, n in counts.items() if n)
            message = f"{feature} has infinite values ({kinds})"
            problems.append(_problem(name, message, feature))
    return judge(
        name,
        problems,
        passed="every numerical feature is finite",
        suffix="; numerical features must be finite",
    )


def _within_bounds(data: _Dataset) -> CheckResult:
    name = "within_bounds"
    problems = []
    for feature, values in _numbers(data, bounded=True):
        bounds = data.schema.feature(feature)
        # Infinite values are finite_numbers' to report; counting them twice would only confuse.
        values = values[np.isfinite(values)]
        parts = []
        if bounds.min is not None:
            below = values[values < bounds.min]
            if below.size:
                parts.append(
                    f"{below.size:,} value(s) below its min {_number(bounds.min)} "
                    f"(e.g. {_number(below.min())})"
                )
        if bounds.max is not None:
            above = values[values > bounds.max]
            if above.size:
                parts.append(
                    f"{above.size:,} value(s) above its max {_number(bounds.max)} "
                    f"(e.g. {_number(above.max())})"
                )
        if parts:
            problems.append(_problem(name, f"{feature} has " + " and ".join(parts), feature))
    return judge(
        name,
        problems,
        passed="every numerical value is within the schema's bounds",
        suffix=" (bounds from the schema)",
    )


def _known_categories(data: _Dataset) -> CheckResult:
    name = "known_categories"
    problems = []
    for feature in data.schema.categorical:
        if not feature.categories or feature.name not in data.frame.columns:
            continue
        values = data.frame[feature.name].dropna()
        unknown = values[~values.isin(feature.categories)].value_counts()
        if not unknown.empty:
            listed = ", ".join(f"{v!r} ({n:,})" for v, n in unknown.head(_MAX_LISTED).items())
            more = f" and {len(unknown) - _MAX_LISTED} more" if len(unknown) > _MAX_LISTED else ""
            message = (
                f"{feature.name} has {int(unknown.sum()):,} value(s) not in the schema's "
                f"categories: {listed}{more}"
            )
            problems.append(_problem(name, message, feature.name))
    return judge(
        name,
        problems,
        passed="every categorical value is one the schema lists",
        suffix="; the model encodes them as unknown",
    )


def _unique_ids(data: _Dataset) -> CheckResult:
    name, id_column = "unique_ids", data.schema.id
    if not id_column or id_column not in data.frame.columns:
        return judge(name, [], passed="skipped: the data has no id column")
    ids = data.frame[id_column].dropna()
    repeats = ids[ids.duplicated()]
    if repeats.empty:
        return judge(name, [], passed=f"every {id_column} is unique", columns=(id_column,))
    examples = _join(repeats.drop_duplicates().head(3).tolist())
    message = (
        f"{id_column} should be unique; {len(repeats):,} row(s) repeat an earlier id "
        f"({repeats.nunique():,} ids affected, e.g. {examples})"
    )
    return _failed(name, message, id_column)


# The suite, in report order; every check has the one signature `check(_Dataset) -> CheckResult`.
CHECKS = (
    _target_binary,
    _enough_rows,
    _no_missing_in_required,
    _finite_numbers,
    _within_bounds,
    _known_categories,
    _unique_ids,
)


def _numbers(data: _Dataset, *, bounded: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float64 values) of each numerical feature in the frame; with `bounded`, only of
    those the schema gives a min or a max."""
    for feature in data.schema.numerical:
        if feature.name not in data.frame.columns:
            continue
        if bounded and feature.min is None and feature.max is None:
            continue
        yield feature.name, data.frame[feature.name].to_numpy(dtype="float64", na_value=np.nan)


def _problem(name: str, message: str, column: str | None = None) -> Problem:
    """A problem found by check `name`: a failure for a hard check, a warning for the others."""
    return Problem(HARD if name in HARD_CHECKS else SOFT, message, column)


def _failed(name: str, message: str, column: str) -> CheckResult:
    return judge(name, [_problem(name, message, column)], passed="")


def _describe(check: CheckResult) -> str:
    columns = f" [{', '.join(check.columns)}]" if check.columns else ""
    return f"{check.name}{columns}: {check.message}"


def _number(value: float) -> str:
    # 23 rather than 23.0, full precision otherwise ("{:g}" would print 1234567.5 as 1.23457e+06).
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _join(values: list[Any]) -> str:
    return ", ".join(_number(v) if isinstance(v, float) else str(v) for v in values)
