"""Data validation: the checks that decide whether a model may be trained on a dataset.

Runs on a frame as `data.ingest.coerce_frame` returns it. Every check runs, so one report names
every problem at once instead of one per training attempt.

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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from data.schema import FeatureSchema

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


@dataclass(frozen=True)
class CheckResult:
    name: str
    hard: bool
    passed: bool
    message: str
    columns: tuple[str, ...] = ()


@dataclass
class ValidationReport:
    checks: list[CheckResult]
    rows: int

    @property
    def passed(self) -> bool:
        """True when every hard check passed; warnings do not count."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.hard and not c.passed]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.hard and not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "failures": [c.name for c in self.failures],
            "warnings": [c.name for c in self.warnings],
            "checks": [{**asdict(c), "columns": list(c.columns)} for c in self.checks],
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


def validate_frame(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    require_target: bool = True,
    min_rows: int = 200,
    min_class_rows: int = 20,
) -> ValidationReport:
    """Run every check on `frame` (typed by `data.ingest.coerce_frame`) and return the report."""
    checks = [
        _target_binary(frame, schema)
        if require_target
        else _passed("target_binary", SKIPPED_NO_TARGET),
        _enough_rows(frame, schema, min_rows, min_class_rows, require_target),
        _no_missing_in_required(frame, schema),
        _finite_numbers(frame, schema),
        _within_bounds(frame, schema),
        _known_categories(frame, schema),
        _unique_ids(frame, schema),
    ]
    return ValidationReport(checks=checks, rows=len(frame))


def _target_binary(frame: pd.DataFrame, schema: FeatureSchema) -> CheckResult:
    name, target = "target_binary", schema.target
    if target not in frame.columns:
        return _failed(name, f"the target column {target} is missing", (target,))
    labels = frame[target]
    missing = int(labels.isna().sum())
    found = sorted(labels.dropna().unique().tolist())
    problems = []
    if found != [0, 1]:
        problems.append(f"found {_join(found)}" if found else "found no labels at all")
    if missing:
        problems.append(f"{missing:,} row(s) have no label")
    if problems:
        message = f"{target} must have exactly the values 0 and 1; " + "; ".join(problems)
        return _failed(name, message, (target,))
    return _passed(name, f"{target} has exactly the values 0 and 1", (target,))


def _enough_rows(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    min_rows: int,
    min_class_rows: int,
    require_target: bool,
) -> CheckResult:
    name = "enough_rows"
    rows = len(frame)
    problems = []
    columns: tuple[str, ...] = ()
    if rows < min_rows:
        problems.append(f"the data has {rows:,} rows; at least {min_rows:,} are needed")
    if require_target and schema.target in frame.columns:
        counts = frame[schema.target].value_counts()
        for label in (0, 1):
            count = int(counts.get(label, 0))
            if count < min_class_rows:
                columns = (schema.target,)
                problems.append(
                    f"{schema.target}={label} has {count:,} rows; "
                    f"at least {min_class_rows:,} per class are needed"
                )
    if problems:
        return _failed(name, "; ".join(problems), columns)
    detail = "" if require_target else f" (class counts {SKIPPED_NO_TARGET})"
    return _passed(name, f"{rows:,} rows, at least {min_rows:,} needed{detail}")


def _no_missing_in_required(frame: pd.DataFrame, schema: FeatureSchema) -> CheckResult:
    name = "no_missing_in_required"
    problems: dict[str, str] = {}
    for feature in schema.features:
        if feature.nullable:
            continue
        if feature.name not in frame.columns:
            problems[feature.name] = f"{feature.name} is absent from the data"
            continue
        missing = int(frame[feature.name].isna().sum())
        if missing:
            problems[feature.name] = f"{feature.name} has {missing:,} missing value(s)"
    if problems:
        message = "; ".join(problems.values()) + " (nullable: false in the schema)"
        return _failed(name, message, tuple(problems))
    return _passed(name, "every non-nullable feature has a value in every row")


def _finite_numbers(frame: pd.DataFrame, schema: FeatureSchema) -> CheckResult:
    name = "finite_numbers"
    problems: dict[str, str] = {}
    for feature in schema.numerical:
        if feature.name not in frame.columns:
            continue
        values = frame[feature.name].to_numpy(dtype="float64", na_value=np.nan)
        counts = {"+inf": int(np.isposinf(values).sum()), "-inf": int(np.isneginf(values).sum())}
        if any(counts.values()):
            kinds = ", ".join(f"{n:,} {kind}" for kind, n in counts.items() if n)
            problems[feature.name] = f"{feature.name} has infinite values ({kinds})"
    if problems:
        message = "; ".join(problems.values()) + "; numerical features must be finite"
        return _failed(name, message, tuple(problems))
    return _passed(name, "every numerical feature is finite")


def _within_bounds(frame: pd.DataFrame, schema: FeatureSchema) -> CheckResult:
    name = "within_bounds"
    problems: dict[str, str] = {}
    for feature in schema.numerical:
        if feature.name not in frame.columns or (feature.min is None and feature.max is None):
            continue
        values = frame[feature.name].to_numpy(dtype="float64", na_value=np.nan)
        # Infinite values are finite_numbers' to report; counting them twice would only confuse.
        values = values[np.isfinite(values)]
        parts = []
        if feature.min is not None:
            below = values[values < feature.min]
            if below.size:
                parts.append(
                    f"{below.size:,} value(s) below its min {_number(feature.min)} "
                    f"(e.g. {_number(below.min())})"
                )
        if feature.max is not None:
            above = values[values > feature.max]
            if above.size:
                parts.append(
                    f"{above.size:,} value(s) above its max {_number(feature.max)} "
                    f"(e.g. {_number(above.max())})"
                )
        if parts:
            problems[feature.name] = f"{feature.name} has " + " and ".join(parts)
    if problems:
        message = "; ".join(problems.values()) + " (bounds from the schema)"
        return _failed(name, message, tuple(problems))
    return _passed(name, "every numerical value is within the schema's bounds")


def _known_categories(frame: pd.DataFrame, schema: FeatureSchema) -> CheckResult:
    name = "known_categories"
    problems: dict[str, str] = {}
    for feature in schema.categorical:
        if not feature.categories or feature.name not in frame.columns:
            continue
        values = frame[feature.name].dropna()
        unknown = values[~values.isin(feature.categories)].value_counts()
        if not unknown.empty:
            listed = ", ".join(f"{v!r} ({n:,})" for v, n in unknown.head(_MAX_LISTED).items())
            more = f" and {len(unknown) - _MAX_LISTED} more" if len(unknown) > _MAX_LISTED else ""
            problems[feature.name] = (
                f"{feature.name} has {int(unknown.sum()):,} value(s) not in the schema's "
                f"categories: {listed}{more}"
            )
    if problems:
        message = "; ".join(problems.values()) + "; the model encodes them as unknown"
        return _failed(name, message, tuple(problems))
    return _passed(name, "every categorical value is one the schema lists")


def _unique_ids(frame: pd.DataFrame, schema: FeatureSchema) -> CheckResult:
    name = "unique_ids"
    if not schema.id or schema.id not in frame.columns:
        return _passed(name, "skipped: the data has no id column")
    ids = frame[schema.id].dropna()
    repeats = ids[ids.duplicated()]
    if repeats.empty:
        return _passed(name, f"every {schema.id} is unique", (schema.id,))
    examples = _join(repeats.drop_duplicates().head(3).tolist())
    message = (
        f"{schema.id} should be unique; {len(repeats):,} row(s) repeat an earlier id "
        f"({repeats.nunique():,} ids affected, e.g. {examples})"
    )
    return _failed(name, message, (schema.id,))


def _passed(name: str, message: str, columns: tuple[str, ...] = ()) -> CheckResult:
    return CheckResult(
        name, hard=name in HARD_CHECKS, passed=True, message=message, columns=columns
    )


def _failed(name: str, message: str, columns: tuple[str, ...]) -> CheckResult:
    return CheckResult(
        name, hard=name in HARD_CHECKS, passed=False, message=message, columns=columns
    )


def _describe(check: CheckResult) -> str:
    columns = f" [{', '.join(check.columns)}]" if check.columns else ""
    return f"{check.name}{columns}: {check.message}"


def _number(value: float) -> str:
    # 23 rather than 23.0, full precision otherwise ("{:g}" would print 1234567.5 as 1.23457e+06).
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _join(values: list[Any]) -> str:
    return ", ".join(_number(v) if isinstance(v, float) else str(v) for v in values)
