"""The seven data-quality checks a live window goes through, and where each turns soft or hard.

Each is a `data.checks` check: `check(QualityWindow) -> CheckResult`, run in report order
(`SUITE`, whose names are `CHECKS`) by `monitoring.quality_report.compute_quality_report`, which
types the window and writes the report. A hard failure means the pipeline feeding the model is
broken and someone should look now; a soft warning means something changed that deserves a
look. Thresholds are `QualityThresholds` fields.

1. `missing_values`: hard when a non-nullable feature is missing in more than
   `missing_tolerance` of the rows (0.1%) or is absent from the data; soft when a nullable
   feature's missing share exceeds the reference's by more than `missing_margin` (5 points).
2. `out_of_range`: numerical values outside the schema's min / max; soft for any, hard when
   more than `out_of_range_hard` (1%) of a feature's values are outside. Where the schema sets
   no bound on a side and there is a reference, the reference's minimum or maximum (the
   training range) is the bound on that side: values beyond it are not invalid, so they count
   apart (`outside_training_range_share`) and only a share of them is a problem: soft above
   `training_range_soft` (1%), hard above `training_range_hard` (5%). By chance about
   2 / (reference rows + 1) of new values fall outside the range of a continuous reference
   (0.02% for the 10,000 rows a profile keeps); 10% of values 10-20 std beyond it is a
   broken feed.
3. `unseen_categories`: categorical values outside the schema's categories, or outside the
   reference's counts when the schema lists none; soft for any, hard above
   `unseen_category_hard` (5%) of a feature's values.
4. `type_violations`: hard for any value that cannot take its type: ±inf or text in a
   numerical feature, a boolean that is not 0 / 1 (or a word `data.ingest` reads as one), a
   timestamp that is not a date. Such values count here, not as missing or out of range.
5. `duplicate_ids`: hard when an id occurs twice. `prediction_logs.request_id` is unique, so on
   a healthy path this cannot happen: duplicates mean double logging or a join that fans rows
   out, and they would double-count every rate the drift and performance checks compute.
6. `volume_freshness`: hard when the window has no rows, or its newest row is more than
   `freshness_hard_minutes` (180) older than `window_end`; soft when it has fewer rows than
   `min_volume_ratio` (50%) of `expected_rows_per_hour` × the window's hours, or the newest row
   is more than `freshness_soft_minutes` (60) old.
7. `stuck_features`: hard when a feature holds one value (numerical: a standard deviation at
   most `stuck_std_ratio` of the reference's) in a window where the reference makes that
   implausible: its most common value, repeated in every row, has a chance below `stuck_chance`
   (1e-6). So a quiet hour of ten rows with no failed logins is not "stuck", a thousand are.
   Soft when a feature holds one value over at least `stuck_min_rows` rows and there is no
   reference to compare with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from data.checks import HARD, OK, SOFT, CheckResult, Problem, judge, worst
from data.profile import MISSING_KEY, ReferenceProfile
from data.schema import Feature, FeatureSchema

CHECKS = (
    "missing_values",
    "out_of_range",
    "unseen_categories",
    "type_violations",
    "duplicate_ids",
    "volume_freshness",
    "stuck_features",
)
_MAX_EXAMPLES = 5
_TYPE_WORDS = {"numerical": "finite numbers", "boolean": "booleans (0 / 1)"}


@dataclass(frozen=True)
class QualityThresholds:
    """Where each check turns soft or hard (see the module docstring)."""

    missing_tolerance: float = 0.001
    missing_margin: float = 0.05
    out_of_range_hard: float = 0.01
    training_range_soft: float = 0.01
    training_range_hard: float = 0.05
    unseen_category_hard: float = 0.05
    min_volume_ratio: float = 0.5
    freshness_soft_minutes: float = 60.0
    freshness_hard_minutes: float = 180.0
    stuck_std_ratio: float = 1e-3
    stuck_chance: float = 1e-6
    stuck_min_rows: int = 100

    def __post_init__(self) -> None:
        if self.freshness_soft_minutes > self.freshness_hard_minutes:
            raise ValueError("freshness_soft_minutes must not exceed freshness_hard_minutes")
        if self.training_range_soft > self.training_range_hard:
            raise ValueError("training_range_soft must not exceed training_range_hard")


@dataclass
class FeatureColumn:
    """A feature column as `coerce_frame(errors="mask")` typed it: values NaN where `missing`
    or `invalid` (a value that could not take the feature's type)."""

    values: pd.Series
    missing: np.ndarray
    invalid: np.ndarray

    @property
    def present(self) -> pd.Series:
        return self.values[~(self.missing | self.invalid)]


@dataclass(frozen=True)
class QualityWindow:
    """What every quality check is given: the window as it came (`raw`, for examples of bad
    values) and typed, feature by feature, with the report's settings."""

    raw: pd.DataFrame
    typed: pd.DataFrame
    columns: dict[str, FeatureColumn]
    schema: FeatureSchema
    timestamp: str
    bad_times: np.ndarray | None
    start: pd.Timestamp
    end: pd.Timestamp
    expected_rows_per_hour: float | None
    reference: ReferenceProfile | None
    thresholds: QualityThresholds

    @property
    def rows(self) -> int:
        return len(self.typed)

    @property
    def times(self) -> pd.Series | None:
        return self.typed.get(self.timestamp)


def _missing_values(window: QualityWindow) -> CheckResult:
    columns, rows, thresholds = window.columns, window.rows, window.thresholds
    details: dict[str, Any] = {}
    problems: list[Problem] = []
    for feature in window.schema.features:
        name = feature.name
        if name not in columns:
            details[name] = {"missing": rows, "share": 1.0, "absent": True, "level": HARD}
            problems.append(Problem(HARD, f"{name} is absent from the data", name))
            continue
        count = int(columns[name].missing.sum())
        # An empty window has no missing values; the volume check reports the emptiness.
        share = count / rows if rows else 0.0
        baseline = _reference_missing_share(window.reference, feature)
        level = OK
        if not feature.nullable and share > thresholds.missing_tolerance:
            level = HARD
            message = f"{name} has {count:,} missing value(s) ({_pct(share)}) but is not nullable"
            problems.append(Problem(HARD, message, name))
        elif (
            feature.nullable
            and baseline is not None
            and share > baseline + thresholds.missing_margin
        ):
            level = SOFT
            message = (
                f"{name} is missing in {_pct(share)} of rows against {_pct(baseline)} "
                "in the reference"
            )
            problems.append(Problem(SOFT, message, name))
        details[name] = {
            "missing": count,
            "share": share,
            "reference_share": baseline,
            "nullable": feature.nullable,
            "level": level,
        }
    passed = "no feature has more missing values than allowed"
    most = max(details, key=lambda name: details[name]["share"], default=None)
    if most is not None and details[most]["share"]:
        passed += f" (the most: {most} in {_pct(details[most]['share'])} of rows)"
    return judge("missing_values", problems, passed=passed, details=details)


def _out_of_range(window: QualityWindow) -> CheckResult:
    columns, reference, thresholds = window.columns, window.reference, window.thresholds
    details: dict[str, Any] = {}
    problems: list[Problem] = []
    for feature in window.schema.numerical:
        bounds = _bounds(feature, reference)
        if feature.name not in columns or not bounds:
            continue
        values = columns[feature.name].present.to_numpy(dtype=np.float64)
        beyond = {
            side: int((values < bound).sum() if side == "min" else (values > bound).sum())
            for side, bound, _ in bounds
        }
        detail: dict[str, Any] = {
            "below_min": beyond.get("min", 0),
            "above_max": beyond.get("max", 0),
        }
        levels = [OK]
        for source in ("schema", "reference"):
            mine = [(side, bound) for side, bound, s in bounds if s == source]
            if not mine:
                continue
            count = sum(beyond[side] for side, _ in mine)
            share = count / values.size if values.size else 0.0
            if source == "schema":
                detail["share"] = share
                level = HARD if share > thresholds.out_of_range_hard else SOFT if share else OK
                what = "out of range"
            else:
                detail["outside_training_range_share"] = share
                level = (
                    HARD
                    if share > thresholds.training_range_hard
                    else SOFT
                    if share > thresholds.training_range_soft
                    else OK
                )
                what = "outside the training range"
            levels.append(level)
            if level != OK:
                said = [_beyond(side, beyond[side], bound, source) for side, bound in mine]
                message = (
                    f"{feature.name} has {_pct(share)} of its values {what} "
                    f"({' and '.join(t for t in said if t)})"
                )
                problems.append(Problem(level, message, feature.name))
        for side, bound, source in bounds:
            detail |= {side: bound, f"{side}_from": source}
        details[feature.name] = detail | {"level": worst(levels)}
    return judge(
        "out_of_range",
        problems,
        passed="every numerical value is within the schema's bounds, and within the training "
        "range where the schema sets none",
        details=details,
    )


def _bounds(feature: Feature, reference: ReferenceProfile | None) -> list[tuple[str, float, str]]:
    """(side, bound, source) per bounded side: the schema's bound, else the training range's."""
    trained = reference.numerical.get(feature.name) if reference else None
    result = []
    for side, given in (("min", feature.min), ("max", feature.max)):
        seen = getattr(trained, side) if trained else None
        if given is not None:
            result.append((side, given, "schema"))
        elif seen is not None:
            result.append((side, seen, "reference"))
    return result


def _beyond(side: str, count: int, bound: float, source: str) -> str:
    if not count:
        return ""
    if source == "schema":
        return f"{count:,} {'below min' if side == 'min' else 'above max'} {_num(bound)}"
    return f"{count:,} {'below' if side == 'min' else 'above'} the training {side} {_num(bound)}"


def _unseen_categories(window: QualityWindow) -> CheckResult:
    details: dict[str, Any] = {}
    problems: list[Problem] = []
    for feature in window.schema.categorical:
        if feature.name not in window.columns:
            continue
        known, source = _known_categories(feature, window.reference)
        if known is None:
            details[feature.name] = {"level": OK, "skipped": "no categories to compare with"}
            continue
        values = window.columns[feature.name].present
        unseen = values[~values.isin(known)].value_counts()
        count = int(unseen.sum())
        share = count / len(values) if len(values) else 0.0
        level = HARD if share > window.thresholds.unseen_category_hard else SOFT if count else OK
        examples = {str(v): int(n) for v, n in unseen.head(_MAX_EXAMPLES).items()}
        details[feature.name] = {
            "unseen": count,
            "share": share,
            "known_from": source,
            "examples": examples,
            "level": level,
        }
        if level != OK:
            listed = ", ".join(f"{v!r} ({n:,})" for v, n in examples.items())
            more = f" and {len(unseen) - _MAX_EXAMPLES} more" if len(unseen) > _MAX_EXAMPLES else ""
            message = (
                f"{feature.name} has {count:,} value(s) ({_pct(share)}) not in the {source}'s "
                f"categories: {listed}{more}"
            )
            problems.append(Problem(level, message, feature.name))
    return judge(
        "unseen_categories",
        problems,
        passed="every categorical value is a known category",
        details=details,
    )


def _type_violations(window: QualityWindow) -> CheckResult:
    invalid = {name: column.invalid for name, column in window.columns.items()}
    if window.bad_times is not None:
        invalid[window.timestamp] = window.bad_times
    details: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, mask in invalid.items():
        count = int(mask.sum())
        if not count:
            continue
        # Examples as they came, before typing made them missing.
        bad = window.raw[name][mask].drop_duplicates().head(_MAX_EXAMPLES)
        examples = [repr(v) for v in bad.tolist()]
        if name == window.timestamp:
            kind = "dates"
        else:
            kind = _TYPE_WORDS[window.schema.feature(name).type]
        details[name] = {"count": count, "examples": examples, "level": HARD}
        message = f"{name} has {count:,} value(s) that are not {kind}, e.g. {', '.join(examples)}"
        problems.append(Problem(HARD, message, name))
    return judge(
        "type_violations", problems, passed="every value has its feature's type", details=details
    )


def _duplicate_ids(window: QualityWindow) -> CheckResult:
    name, id_column = "duplicate_ids", window.schema.id
    if not id_column or id_column not in window.typed.columns:
        return judge(name, [], passed="skipped: the data has no id column")
    ids = window.typed[id_column].dropna()
    repeats = ids[ids.duplicated()]
    details = {"duplicated_rows": len(repeats), "ids_affected": int(repeats.nunique())}
    if repeats.empty:
        return judge(
            name, [], passed=f"every {id_column} is unique", details=details, columns=(id_column,)
        )
    examples = [str(v) for v in repeats.drop_duplicates().head(3).tolist()]
    message = (
        f"{len(repeats):,} row(s) repeat an earlier {id_column} ({details['ids_affected']:,} "
        f"id(s), e.g. {', '.join(examples)}): predictions were logged twice"
    )
    return judge(
        name,
        [Problem(HARD, message, id_column)],
        passed="",
        details={**details, "examples": examples},
    )


def _volume_freshness(window: QualityWindow) -> CheckResult:
    rows, times, timestamp = window.rows, window.times, window.timestamp
    start, end, thresholds = window.start, window.end, window.thresholds
    expected_rows_per_hour = window.expected_rows_per_hour
    hours = (end - start).total_seconds() / 3600
    expected = expected_rows_per_hour * hours if expected_rows_per_hour is not None else None
    newest = times.max() if times is not None else pd.NaT
    age = (end - newest).total_seconds() / 60 if not pd.isna(newest) else None
    details = {
        "rows": rows,
        "window_hours": hours,
        "rows_per_hour": rows / hours if hours else None,
        "expected_rows": expected,
        "newest": None if pd.isna(newest) else newest.isoformat(),
        "minutes_since_newest": age,
    }
    problems: list[Problem] = []
    if rows == 0:
        problems.append(Problem(HARD, f"the window of {hours:g} hour(s) has no rows"))
    elif expected and rows < thresholds.min_volume_ratio * expected:
        message = (
            f"{rows:,} rows against {expected:,.0f} expected ({_pct(rows / expected)}; "
            f"a warning below {_pct(thresholds.min_volume_ratio)})"
        )
        problems.append(Problem(SOFT, message))
    if age is not None and age > thresholds.freshness_soft_minutes:
        level = HARD if age > thresholds.freshness_hard_minutes else SOFT
        message = f"the newest row is {age:,.0f} minutes older than the end of the window"
        problems.append(Problem(level, message, timestamp))
    volume = f"{rows:,} rows" + (f" ({expected:,.0f} expected)" if expected is not None else "")
    if age is not None:
        fresh = f"the newest {age:,.0f} minutes before the end of the window"
    else:
        fresh = f"freshness not measured (no {timestamp} values)"
    return judge("volume_freshness", problems, passed=f"{volume}, {fresh}", details=details)


def _stuck_features(window: QualityWindow) -> CheckResult:
    columns, reference, thresholds = window.columns, window.reference, window.thresholds
    details: dict[str, Any] = {}
    problems: list[Problem] = []
    for feature in window.schema.features:
        if feature.name not in columns:
            continue
        values = columns[feature.name].present
        if len(values) < 2:
            continue
        distinct = values.nunique()
        modal_share, reference_std = _reference_spread(reference, feature)
        if feature.is_numerical:
            std = float(values.std(ddof=0))
            constant = (
                std <= thresholds.stuck_std_ratio * reference_std
                if reference_std
                else distinct == 1
            )
        else:
            std, constant = None, distinct == 1
        if not constant or modal_share == 1.0:  # constant in the reference too: that is normal
            continue
        what = f"the single value {_value(values.iloc[0])}" if distinct == 1 else "almost one value"
        if modal_share is not None:
            chance = modal_share ** len(values)
            level = HARD if chance < thresholds.stuck_chance else OK
            why = f"the reference varies (chance of this by luck {max(chance, 1e-99):.0e})"
        else:
            chance = None
            level = SOFT if len(values) >= thresholds.stuck_min_rows else OK
            why = "no reference to compare with"
        details[feature.name] = {
            "rows": len(values),
            "distinct": int(distinct),
            "std": std,
            "reference_std": reference_std,
            "chance": chance,
            "level": level,
        }
        if level != OK:
            message = f"{feature.name} holds {what} in {len(values):,} rows; {why}"
            problems.append(Problem(level, message, feature.name))
    return judge(
        "stuck_features", problems, passed="no feature is stuck at one value", details=details
    )


# The suite, in report order (`CHECKS`); every check has the one signature
# `check(QualityWindow) -> CheckResult`.
SUITE = (
    _missing_values,
    _out_of_range,
    _unseen_categories,
    _type_violations,
    _duplicate_ids,
    _volume_freshness,
    _stuck_features,
)


def _reference_missing_share(reference: ReferenceProfile | None, feature: Feature) -> float | None:
    if reference is None:
        return None
    profile = (reference.numerical if feature.is_numerical else reference.categorical).get(
        feature.name
    )
    return profile.missing / profile.count if profile and profile.count else None


def _known_categories(
    feature: Feature, reference: ReferenceProfile | None
) -> tuple[list[str] | None, str]:
    if feature.categories:
        return list(feature.categories), "schema"
    profile = reference.categorical.get(feature.name) if reference else None
    if profile is None:
        return None, ""
    return [c for c in profile.counts if c != MISSING_KEY], "reference"


def _reference_spread(
    reference: ReferenceProfile | None, feature: Feature
) -> tuple[float | None, float | None]:
    """The reference's share of its most common value, and its std (numerical features)."""
    if reference is None:
        return None, None
    if feature.is_numerical:
        profile = reference.numerical.get(feature.name)
        if profile is None or not profile.sample:
            return None, None
        _, counts = np.unique(profile.sample, return_counts=True)
        return float(counts.max() / counts.sum()), profile.std
    categorical = reference.categorical.get(feature.name)
    counts = [n for c, n in categorical.counts.items() if c != MISSING_KEY] if categorical else []
    return (max(counts) / sum(counts), None) if counts else (None, None)


def utc_timestamp(moment: datetime | str) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def _pct(share: float) -> str:
    return f"{share:.1%}" if share >= 0.001 or share == 0 else f"{share:.3%}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _value(value: Any) -> str:
    return _num(value) if isinstance(value, float) and math.isfinite(value) else repr(value)
