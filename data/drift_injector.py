"""Inject controlled drift into a DataFrame, one kind at a time.

The monitoring stack claims to catch several kinds of change between the training data and live
traffic. This module manufactures each kind on purpose, at a chosen intensity (0 = no change,
1 = the strongest) and seed, so tests and the demo can show that the matching check fires:

    kind                      feature type            what changes
    mean_shift                numerical               every value + intensity × 2 × the column's std
    variance_change           numerical               deviations from the mean × (1 + 2 × intensity)
    category_frequency_shift  categorical, boolean    a share `intensity` of rows moved to the
                                                      least frequent value
    new_category              categorical             a share `intensity` of rows set to
                                                      UNSEEN_CATEGORY
    missing_values            any                     a share `intensity` of rows set to missing
    out_of_range              numerical               a share `intensity` of rows pushed outside
                                                      the schema bounds and the observed range
    concept_drift             any (picks the region)  inputs untouched; labels flipped with
                                                      probability `intensity` in one region
    correlation_flip          numerical               in a share `intensity` of rows the values
                                                      are dealt back in reverse rank order: the
                                                      same values, correlations reversed
    new_cluster               numerical (+ partner)   a share `intensity` of rows moved to a
                                                      corner of the feature and its partner
                                                      inside both ranges where few rows were

The last two are joint changes for the multivariate check: correlation_flip leaves every
column's distribution exactly as it was, new_cluster keeps every value inside the old ranges.

Only the drifted feature's column changes (the target column for concept_drift; the feature and
its partner for new_cluster); the input frame is never modified, and the same seed always gives
the same output.

    python -m data.drift_injector --schema schemas/fraud.yaml --kind mean_shift --intensity 0.5 \\
        --input var/data/transactions.parquet --output var/data/drifted.parquet
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from data.schema import FEATURE_TYPES, Feature, FeatureSchema, load_schema
from data.synthetic import write_frame

DRIFT_TYPES = (
    "mean_shift",
    "variance_change",
    "category_frequency_shift",
    "new_category",
    "missing_values",
    "out_of_range",
    "concept_drift",
    "correlation_flip",
    "new_cluster",
)
UNSEEN_CATEGORY = "__unseen_category__"

# Feature types each kind applies to, in the order a default feature is looked for.
_ACCEPTED_TYPES: dict[str, tuple[str, ...]] = {
    "mean_shift": ("numerical",),
    "variance_change": ("numerical",),
    "category_frequency_shift": ("categorical", "boolean"),
    "new_category": ("categorical",),
    "missing_values": FEATURE_TYPES,
    "out_of_range": ("numerical",),
    "concept_drift": FEATURE_TYPES,
    "correlation_flip": ("numerical",),
    "new_cluster": ("numerical",),
}
_MEAN_SHIFT_STDS = 2.0
_VARIANCE_GROWTH = 2.0
# Out-of-range values land this many standard deviations beyond the edge: far enough that no
# plausible reference contains them, spread out so they do not form one suspicious spike.
_OUT_OF_RANGE_STDS = (10.0, 20.0)
# new_cluster: the feature's rows come from this band of its own quantiles, its partner's from
# the mirror band (or the same band when the two are negatively correlated).
_CLUSTER_BAND = (0.85, 0.95)


def inject_drift(
    frame: pd.DataFrame,
    kind: str,
    *,
    schema: FeatureSchema,
    feature: str | None = None,
    intensity: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """Return a copy of `frame` with one kind of drift injected into one feature.

    `kind` is one of DRIFT_TYPES. `feature` defaults to the schema's first feature of a type the
    kind applies to (numerical first, then categorical, then boolean). `intensity` runs from 0
    (an unchanged copy) to 1:

    - mean_shift: every value moves up by intensity × 2 standard deviations of the column.
    - variance_change: deviations from the mean grow by a factor 1 + 2 × intensity, so the std
      does too while the mean stays put. Values may leave the schema bounds (e.g. negative
      amounts), which the quality checks are right to report.
    - category_frequency_shift: round(intensity × rows) rows, chosen among those holding another
      value, move to the least frequent observed value (for booleans, the rarer of True/False),
      so its share rises by `intensity`. Staying within the observed values keeps this distinct
      from new_category.
    - new_category: round(intensity × rows) rows get UNSEEN_CATEGORY, a value in neither the
      schema's categories nor the data (a numbered variant if the data already holds it).
    - missing_values: round(intensity × rows) rows become missing. Integer columns become float
      (NaN) and boolean columns the nullable "boolean" dtype, the only way to hold a gap.
    - out_of_range: round(intensity × rows) rows get values 10-20 stds beyond an edge, rounded
      outward to whole numbers: above `max` when the schema sets one, below `min` when it sets
      only a minimum, above the observed maximum when it sets neither. Either way they are
      outside the schema bounds and the observed range.
    - concept_drift: every feature column stays exactly as it was; within a region of `feature`
      (numerical: rows above its median; otherwise rows holding its most frequent value) each
      0/1 label flips with probability `intensity`. Input-drift tests cannot see this by
      construction; only performance monitoring on labelled feedback can.
    - correlation_flip: round(intensity × rows) rows are chosen; among them the feature's values
      are dealt back in reverse rank order (the largest goes to the row that held the
      smallest). The column holds exactly the values it held, so its distribution is unchanged,
      while its correlation with every other feature changes sign within those rows
      (intensity 1: the whole correlation flips). Missing values stay where they were.
    - new_cluster: the feature's partner is the other numerical feature most correlated with it
      (Spearman). round(intensity × rows) rows get, for the feature, values of its own column
      between its 85th and 95th percentiles and, for the partner, values of the partner's column
      between its 5th and 15th percentiles (85th-95th when the two are negatively correlated):
      a cluster where the two rarely go together, with every value one the columns already held.

    Raises ValueError for an unknown kind, an intensity outside [0, 1], a feature that is not in
    the schema or the frame or has the wrong type for the kind, and (concept_drift) a missing or
    non-binary target column.
    """
    spec = _check_request(kind, schema, feature, intensity)
    if spec.name not in frame.columns:
        raise ValueError(f"feature {spec.name!r} is in the schema but not in the data")
    if kind == "concept_drift":
        _check_binary_target(frame, schema.target)
    drifted = frame.copy()
    if intensity == 0:
        return drifted
    rng = np.random.default_rng(seed)
    column = frame[spec.name]
    if kind == "concept_drift":
        region = _concept_region(column, spec)
        drifted[schema.target] = _flip_labels(frame[schema.target], region, intensity, rng)
    elif kind == "new_cluster":
        partner = _partner(frame, schema, spec)
        _spread(column, spec)
        _spread(frame[partner.name], partner)
        high, low = _CLUSTER_BAND
        negative = column.corr(frame[partner.name], method="spearman") < 0
        mask = _pick_rows(_every_row(column), round(intensity * len(column)), rng)
        drifted[spec.name] = _from_band(column, mask, (high, low), rng)
        drifted[partner.name] = _from_band(
            frame[partner.name], mask, (high, low) if negative else (1 - low, 1 - high), rng
        )
    else:
        drifted[spec.name] = _INJECTORS[kind](column, spec, intensity, rng)
    return drifted


def _check_request(
    kind: str, schema: FeatureSchema, feature: str | None, intensity: float
) -> Feature:
    """Validate the arguments that do not depend on the data; return the feature to drift."""
    if kind not in DRIFT_TYPES:
        raise ValueError(f"unknown drift kind {kind!r}; expected one of {', '.join(DRIFT_TYPES)}")
    if not 0.0 <= intensity <= 1.0:  # also refuses NaN
        raise ValueError(f"intensity must be between 0 and 1, got {intensity}")
    accepted = _ACCEPTED_TYPES[kind]
    if feature is None:
        for ftype in accepted:
            for candidate in schema.features:
                if candidate.type == ftype:
                    return candidate
        raise ValueError(
            f"schema {schema.name!r} has no {' or '.join(accepted)} feature for {kind}"
        )
    if feature not in schema.feature_names:
        raise ValueError(
            f"feature {feature!r} is not in schema {schema.name!r}; "
            f"its features are {', '.join(schema.feature_names)}"
        )
    spec = schema.feature(feature)
    if spec.type not in accepted:
        raise ValueError(
            f"feature {feature!r} is {spec.type}; {kind} needs a {' or '.join(accepted)} feature"
        )
    return spec


def _check_binary_target(frame: pd.DataFrame, target: str) -> None:
    if target not in frame.columns:
        raise ValueError(
            f"concept_drift changes the labels, but target column {target!r} is absent"
        )
    values = set(frame[target].dropna().unique())
    if not values <= {0, 1}:
        raise ValueError(
            f"concept_drift flips 0/1 labels, but target {target!r} holds "
            f"{sorted(values, key=str)[:5]}"
        )


def _spread(column: pd.Series, feature: Feature) -> float:
    """Standard deviation of the column: the unit every numerical drift is measured in."""
    if not pd.api.types.is_numeric_dtype(column):
        raise ValueError(
            f"feature {feature.name!r} is numerical in the schema, "
            f"but its column has dtype {column.dtype}"
        )
    std = column.std()
    if not std > 0:  # NaN with fewer than two values, 0 for a constant column
        raise ValueError(
            f"feature {feature.name!r} needs at least two distinct values to drift, "
            f"its standard deviation is {std}"
        )
    return float(std)


def _keep_integer_dtype(original: pd.Series, values: pd.Series) -> pd.Series:
    if pd.api.types.is_integer_dtype(original.dtype):
        return values.round().astype(original.dtype)
    return values


def _pick_rows(eligible: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of `count` rows drawn without replacement from the eligible ones."""
    positions = np.flatnonzero(eligible)
    chosen = rng.choice(positions, size=min(count, positions.size), replace=False)
    mask = np.zeros(eligible.size, dtype=bool)
    mask[chosen] = True
    return mask


def _every_row(column: pd.Series) -> np.ndarray:
    return np.ones(len(column), dtype=bool)


def _put(column: pd.Series, mask: np.ndarray, value: object) -> pd.Series:
    """`column` with `value` in the masked rows, whatever the column's dtype."""
    if isinstance(column.dtype, pd.CategoricalDtype) and value not in column.cat.categories:
        column = column.cat.add_categories([value])
    return column.where(~mask, value)


def _mean_shift(
    column: pd.Series, feature: Feature, intensity: float, rng: np.random.Generator
) -> pd.Series:
    shift = intensity * _MEAN_SHIFT_STDS * _spread(column, feature)
    return _keep_integer_dtype(column, column + shift)


def _variance_change(
    column: pd.Series, feature: Feature, intensity: float, rng: np.random.Generator
) -> pd.Series:
    _spread(column, feature)  # a constant column cannot be stretched; say so instead of no-op
    mean = column.mean()
    return _keep_integer_dtype(column, mean + (column - mean) * (1 + _VARIANCE_GROWTH * intensity))


def _category_frequency_shift(
    column: pd.Series, feature: Feature, intensity: float, rng: np.random.Generator
) -> pd.Series:
    counts = column.value_counts()
    counts = counts[counts > 0]  # a pandas Categorical also lists categories it does not hold
    if feature.is_boolean:
        # A boolean can always take both values, even when the data holds only one.
        counts = counts.reindex([False, True], fill_value=0)
    if len(counts) < 2:
        raise ValueError(
            f"feature {feature.name!r} holds a single value; there is no frequency to shift"
        )
    rarest = min(counts.items(), key=lambda item: (item[1], str(item[0])))[0]
    eligible = (column.notna() & (column != rarest)).to_numpy(dtype=bool, na_value=False)
    mask = _pick_rows(eligible, round(intensity * len(column)), rng)
    return _put(column, mask, rarest)


def _new_category(
    column: pd.Series, feature: Feature, intensity: float, rng: np.random.Generator
) -> pd.Series:
    taken = {str(value) for value in column.dropna().unique()} | set(feature.categories or ())
    value, suffix = UNSEEN_CATEGORY, 1
    # Drifting already-drifted data must still add a value the column has never held.
    while value in taken:
        suffix += 1
        value = f"{UNSEEN_CATEGORY}{suffix}"
    mask = _pick_rows(_every_row(column), round(intensity * len(column)), rng)
    return _put(column, mask, value)


def _missing_values(
    column: pd.Series, feature: Feature, intensity: float, rng: np.random.Generator
) -> pd.Series:
    mask = _pick_rows(_every_row(column), round(intensity * len(column)), rng)
    if feature.is_boolean:
        column = column.astype("boolean")
    return column.mask(mask)


def _out_of_range(
    column: pd.Series, feature: Feature, intensity: float, rng: np.random.Generator
) -> pd.Series:
    std = _spread(column, feature)
    mask = _pick_rows(_every_row(column), round(intensity * len(column)), rng)
    offsets = std * rng.uniform(*_OUT_OF_RANGE_STDS, size=len(column))
    # Rounding outward keeps integer columns integral and the values strictly outside.
    if feature.max is None and feature.min is not None:
        # With only a lower bound, values above the data would still be valid: break the bound.
        outside = np.floor(min(column.min(), feature.min) - offsets)
    else:
        upper = column.max() if feature.max is None else max(column.max(), feature.max)
        outside = np.ceil(upper + offsets)
    return _keep_integer_dtype(column, column.where(~mask, outside))


def _concept_region(column: pd.Series, feature: Feature) -> np.ndarray:
    if feature.is_numerical:
        region = column > column.median()
        where = "above its median"
    else:
        region = column == column.value_counts().index[0]
        where = "holding its most frequent value"
    mask = region.to_numpy(dtype=bool, na_value=False)
    if not mask.any():
        raise ValueError(f"feature {feature.name!r} has no rows {where} to change labels in")
    return mask


def _flip_labels(
    labels: pd.Series, region: np.ndarray, intensity: float, rng: np.random.Generator
) -> pd.Series:
    flip = region & (rng.random(len(labels)) < intensity)
    flipped = ~labels if pd.api.types.is_bool_dtype(labels.dtype) else 1 - labels
    return labels.where(~flip, flipped)


def _correlation_flip(
    column: pd.Series, feature: Feature, intensity: float, rng: np.random.Generator
) -> pd.Series:
    _spread(column, feature)
    present = column.notna().to_numpy(dtype=bool)
    mask = _pick_rows(present, round(intensity * int(present.sum())), rng)
    rows = np.flatnonzero(mask)
    values = column.to_numpy()[rows]
    # Rank within the chosen rows (ties in a stable order), then deal in reverse.
    order = np.argsort(values, kind="stable")
    flipped = values.copy()
    flipped[order] = values[order[::-1]]
    result = column.copy()
    result.iloc[rows] = flipped
    return result


def _partner(frame: pd.DataFrame, schema: FeatureSchema, feature: Feature) -> Feature:
    """The other numerical feature most correlated with `feature` (Spearman)."""
    others = [f for f in schema.numerical if f.name != feature.name and f.name in frame.columns]
    if not others:
        raise ValueError(
            f"new_cluster needs a second numerical feature beside {feature.name!r}; "
            f"schema {schema.name!r} has none"
        )
    strength = {
        f.name: abs(frame[feature.name].corr(frame[f.name], method="spearman")) for f in others
    }
    return max(others, key=lambda f: (np.nan_to_num(strength[f.name]), f.name))


def _from_band(
    column: pd.Series, mask: np.ndarray, band: tuple[float, float], rng: np.random.Generator
) -> pd.Series:
    """`column` with its masked rows given values of its own between two quantiles."""
    low, high = column.quantile(min(band)), column.quantile(max(band))
    present = column.dropna()
    pool = present[(present >= low) & (present <= high)].to_numpy()
    values = rng.choice(pool, size=int(mask.sum()))
    result = column.copy()
    result.iloc[np.flatnonzero(mask)] = values
    return result


_INJECTORS: dict[str, Callable[[pd.Series, Feature, float, np.random.Generator], pd.Series]] = {
    "mean_shift": _mean_shift,
    "variance_change": _variance_change,
    "category_frequency_shift": _category_frequency_shift,
    "new_category": _new_category,
    "missing_values": _missing_values,
    "out_of_range": _out_of_range,
    "correlation_flip": _correlation_flip,
}


def _read_frame(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: use a .csv or .parquet file name")
    if not path.is_file():
        raise ValueError(f"{path}: input file not found")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a copy of a data file with drift injected.")
    parser.add_argument("--schema", required=True, help="feature-schema YAML file")
    parser.add_argument("--input", required=True, help=".csv or .parquet file to drift")
    parser.add_argument("--output", required=True, help=".csv or .parquet file to write")
    parser.add_argument("--kind", required=True, help=", ".join(DRIFT_TYPES))
    parser.add_argument("--feature", help="feature to drift (default: the first that fits)")
    parser.add_argument("--intensity", type=float, default=0.5, help="0 (none) to 1 (strongest)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        schema = load_schema(args.schema)
        # Checked before reading the input, so a typo fails fast even on a large file.
        feature = _check_request(args.kind, schema, args.feature, args.intensity)
        drifted = inject_drift(
            _read_frame(args.input),
            args.kind,
            schema=schema,
            feature=feature.name,
            intensity=args.intensity,
            seed=args.seed,
        )
        path = write_frame(drifted, args.output)
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(drifted):,} rows with {args.kind} on {feature.name!r} "
        f"(intensity {args.intensity}, seed {args.seed}) to {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
