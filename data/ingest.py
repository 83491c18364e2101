"""Ingest: read a dataset (CSV, Parquet or a SQL query) into a frame typed by the feature schema.

Everything downstream (the feature pipeline, training, the drift and quality checks) relies on
one shape, which `coerce_frame` produces and nothing else has to re-check:

- columns in schema order: id and timestamp first when the data has them, then the features,
  then the target when present; any other column is dropped;
- id: values as found;
- timestamp: tz-aware UTC datetimes (naive values are taken as UTC);
- numerical: float64, NaN for missing, ±inf kept so that validation can report it;
- categorical: object dtype holding `str` values (a number 1 becomes "1"), NaN for missing;
- boolean: float64 0.0 / 1.0, NaN for missing;
- target: numeric as found, booleans and "true"/"false" mapped to 1 / 0; with the schema's
  `positive_label`, that value is 1 and the one other value 0 (a third value is an error).

Data that cannot take that shape raises `DataError`, a one-line message naming the file (or
query), the column and a few offending values. Value rules (bounds, categories, a binary label)
are not checked here: `data.validate` reports them all at once.

`coerce_frame(..., errors="mask")` types by the same rules without raising, for the live quality
checks (`monitoring.quality_report`), which must count bad values rather than stop on them: a
value that cannot take its type becomes missing and is marked in a mask returned with the frame,
and so is ±inf in a numerical feature (nothing after the live checks would report it, and the
model cannot score it); a required column the data lacks is left out for the caller to report.
So there is one rule for what a number, a boolean word or a date is, wherever data is typed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
import pyarrow
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from data.db import get_engine
from data.schema import (
    Feature,
    FeatureSchema,
)

SUPPORTED_SUFFIXES = (".csv", ".parquet")
BOOLEAN_WORDS = {
    "true": 1.0,
    "t": 1.0,
    "yes": 1.0,
    "y": 1.0,
    "1": 1.0,
    "1.0": 1.0,
    "false": 0.0,
    "f": 0.0,
    "no": 0.0,
    "n": 0.0,
    "0": 0.0,
    "0.0": 0.0,
}
_MAX_EXAMPLES = 3


class DataError(ValueError):
    """Input data that cannot be used; the message names the file/column and the problem."""


def load_frame(
    source: str | Path, schema: FeatureSchema, *, require_target: bool = True
) -> pd.DataFrame:
    """Read a `.csv` or `.parquet` file and return it typed by `schema` (see `coerce_frame`)."""
    path = Path(source)
    frame = read_file(path, schema)
    if frame.empty:
        raise DataError(f"{path}: no data rows (the file has {len(frame.columns)} columns, 0 rows)")
    return coerce_frame(frame, schema, require_target=require_target, origin=str(path))


def read_file(source: str | Path, schema: FeatureSchema) -> pd.DataFrame:
    """Read a `.csv` or `.parquet` file as it is, not yet typed (`load_frame` types it).

    Categories and ids are read as text, so that codes like "007" keep their leading zeros. A
    file with a header and no rows is returned as an empty frame: a quiet window is data too.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet"
        )
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    try:
        if suffix == ".csv":
            text_columns = [f.name for f in schema.categorical] + [schema.id]
            return pd.read_csv(path, dtype={c: str for c in text_columns if c}, low_memory=False)
        return pd.read_parquet(path)
    except (OSError, ValueError, UnicodeDecodeError, pyarrow.ArrowException) as exc:
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise DataError(f"{path}: cannot read as {kind}: {_one_line(exc)}") from None


def read_sql(
    query: str,
    schema: FeatureSchema,
    *,
    url: str | None = None,
    require_target: bool = True,
) -> pd.DataFrame:
    """Run `query` on `url` (default `DATABASE_URL`) and return the rows typed by `schema`.

    An empty result is returned as an empty typed frame, not an error: a quiet monitoring
    window is a normal answer to a query.
    """
    engine = get_engine(url)
    origin = f"query on {engine.url.render_as_string(hide_password=True)}"
    try:
        # text() lets SQLAlchemy escape "%" for drivers like psycopg2 (LIKE 'card%' must work).
        frame = pd.read_sql(text(query), engine)
    except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
        # pandas wraps the SQLAlchemy error, which wraps the driver's; the driver says it best.
        cause = exc.__cause__ if isinstance(exc.__cause__, SQLAlchemyError) else exc
        problem = getattr(cause, "orig", None) or cause
        raise DataError(f"{origin} failed: {_one_line(problem)}") from None
    return coerce_frame(frame, schema, require_target=require_target, origin=origin)


Errors = Literal["raise", "mask"]


@overload
def coerce_frame(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    require_target: bool = ...,
    origin: str = ...,
    errors: Literal["raise"] = ...,
) -> pd.DataFrame: ...


@overload
def coerce_frame(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    require_target: bool = ...,
    origin: str = ...,
    errors: Literal["mask"],
) -> tuple[pd.DataFrame, pd.DataFrame]: ...


def coerce_frame(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    require_target: bool = True,
    origin: str = "data",
    errors: Errors = "raise",
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Return a new frame with the schema's columns, in schema order, with the schema's types.

    With `errors="mask"`, return `(typed, invalid)` instead of raising on bad values: `invalid`
    is a boolean frame of the same shape, True where a value could not take its column's type
    (that value is missing in `typed`); see the module docstring.
    """
    if errors not in ("raise", "mask"):
        raise ValueError(f"errors must be 'raise' or 'mask', not {errors!r}")
    required = schema.feature_names + ([schema.target] if require_target else [])
    missing = [name for name in required if name not in frame.columns]
    if missing and errors == "raise":
        raise DataError(
            f"{origin}: missing {len(missing)} column(s) required by schema {schema.name!r}: "
            + ", ".join(missing)
        )
    columns = [c for c in (schema.id, schema.timestamp) if c and c in frame.columns]
    columns += [name for name in schema.feature_names if name in frame.columns]
    if schema.target in frame.columns:
        columns.append(schema.target)
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]) & set(columns))
    if duplicated:
        raise DataError(f"{origin}: column(s) appear more than once: {', '.join(duplicated)}")

    typed: dict[str, pd.Series] = {}
    invalid: dict[str, np.ndarray] = {}
    for name in columns:
        column = frame[name].reset_index(drop=True)
        if name == schema.timestamp:
            values, bad, problem = _to_utc_datetime(column)
        elif name == schema.target and schema.positive_label is not None:
            values, bad, problem = _to_named_label(column, schema.positive_label)
        elif name == schema.target:
            values, bad, problem = _to_label(column)
        elif name == schema.id:
            values, bad, problem = column.copy(), None, None
        else:
            values, bad, problem = _to_feature_type(column, schema.feature(name))
            if errors == "mask" and schema.feature(name).is_numerical:
                infinite = np.isinf(values.to_numpy())
                bad = infinite if bad is None else bad | infinite
        if bad is not None and bad.any():
            if errors == "raise":
                raise DataError(f"{origin}: {problem(_examples(column[bad]))}")
            values = values.mask(bad)
        typed[name] = values
        invalid[name] = np.zeros(len(column), dtype=bool) if bad is None else bad
    result = pd.DataFrame(typed, columns=columns)
    if errors == "raise":
        return result
    return result, pd.DataFrame(invalid, columns=columns)


# Each rule below returns the typed column, the mask of values that cannot take the type (None
# when none can fail) and what to say about them given a few examples; `coerce_frame` raises
# with that or masks them.
_Typed = tuple[pd.Series, "np.ndarray | None", "Callable[[str], str] | None"]


def _to_feature_type(column: pd.Series, feature: Feature) -> _Typed:
    if feature.is_numerical:
        return _to_float(column)
    if feature.is_boolean:
        return _to_boolean(column)
    return _to_text(column), None, None


def _to_float(column: pd.Series) -> _Typed:
    if is_bool_dtype(column.dtype) or is_numeric_dtype(column.dtype):
        return column.astype("float64"), None, None
    blank_as_missing = _blank_to_missing(column)
    numbers = pd.to_numeric(blank_as_missing, errors="coerce").astype("float64")
    bad = (blank_as_missing.notna() & numbers.isna()).to_numpy()
    return (
        numbers,
        bad,
        lambda examples: (
            f"column {column.name!r} must be numeric; "
            f"{int(bad.sum())} value(s) are not, e.g. {examples}"
        ),
    )


def _to_boolean(column: pd.Series) -> _Typed:
    if is_bool_dtype(column.dtype):
        return column.astype("float64"), None, None
    if is_numeric_dtype(column.dtype):
        values = column.astype("float64")
        bad = values.notna() & ~values.isin([0.0, 1.0])
    else:
        stripped = _stripped(column)
        present = stripped.notna() & stripped.ne("")
        words = stripped.str.lower().map(BOOLEAN_WORDS, na_action="ignore")
        values = pd.Series(words.to_numpy(dtype="float64", na_value=np.nan), name=column.name)
        bad = present & values.isna()
    bad = bad.to_numpy(dtype=bool, na_value=False)
    return (
        values,
        bad,
        lambda examples: (
            f"column {column.name!r} must be boolean (true/false, yes/no, t/f or 1/0); "
            f"{int(bad.sum())} value(s) are not, e.g. {examples}"
        ),
    )


def _to_text(column: pd.Series) -> pd.Series:
    if column.dtype.kind == "f":
        whole = column.dropna()
        # A category column with gaps is read as float; "3" must not turn into "3.0".
        if np.isfinite(whole).all() and (whole == np.floor(whole)).all():
            column = column.astype("Int64")
    # pandas' string dtype keeps missing values as NaN, which then survive the cast to object.
    return column.astype(str).astype(object)


def _to_label(column: pd.Series) -> _Typed:
    if is_bool_dtype(column.dtype):
        labels = column.astype("float64") if column.isna().any() else column.astype("int64")
        return labels, None, None
    if is_numeric_dtype(column.dtype):
        return column.copy(), None, None
    present = _blank_to_missing(column)
    numbers = pd.to_numeric(present, errors="coerce")
    if (numbers.notna() | present.isna()).all():
        return numbers, None, None
    words = present.astype(str).str.strip().str.lower().map(BOOLEAN_WORDS)
    bad = (present.notna() & words.isna()).to_numpy()
    labels = words.astype("float64") if words.isna().any() else words.astype("int64")
    return (
        labels,
        bad,
        lambda examples: (
            f"target column {column.name!r} must hold 0/1 or true/false labels; "
            f"found e.g. {examples}"
        ),
    )


def _to_named_label(column: pd.Series, positive: str) -> _Typed:
    """Labels as words: the schema's `positive_label` is class 1, the one other value class 0.

    A third value is refused rather than counted as class 0: a typo ("Male") or an "unknown"
    would otherwise become silent negatives, and the model would learn them. A column that
    holds 0/1 already (data typed once, labels read back from the log) is left as it is.
    """
    if is_bool_dtype(column.dtype) or (
        is_numeric_dtype(column.dtype) and column.dropna().isin([0, 1]).all()
    ):
        return _to_label(column)
    text = _stripped(_blank_to_missing(_to_text(column)))
    present = text.notna().to_numpy()
    is_positive = (text == positive).to_numpy(dtype=bool, na_value=False)
    values = pd.Series(np.where(present, is_positive, np.nan), name=column.name)
    others = text[present & ~is_positive].unique()
    if len(others) <= 1:
        # Whole numbers when no label is missing, as `_to_label` gives them.
        return (values if values.isna().any() else values.astype("int64")), None, None
    bad = present & ~is_positive
    return (
        values,
        bad,
        lambda examples: (
            f"target column {column.name!r} must hold {positive!r} (class 1, the schema's "
            f"positive_label) and one other value (class 0); found {len(others)} other "
            f"values: {examples}"
        ),
    )


def _to_utc_datetime(column: pd.Series) -> _Typed:
    if is_datetime64_any_dtype(column.dtype):
        if column.dt.tz is None:
            return column.dt.tz_localize("UTC"), None, None
        return column.dt.tz_convert("UTC"), None, None
    if is_numeric_dtype(column.dtype) and column.notna().any():
        # Seconds, milliseconds and nanoseconds since 1970 all look alike; guessing would
        # silently move every event, so ask for an unambiguous format instead.
        return (
            pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns, UTC]"),
            column.notna().to_numpy(),
            lambda _: (
                f"timestamp column {column.name!r} holds numbers; "
                "store ISO-8601 text (2026-01-31T12:00:00Z) or a datetime column"
            ),
        )
    present = _blank_to_missing(column)
    parsed = pd.to_datetime(present, utc=True, format="ISO8601", errors="coerce")
    retry = present.notna() & parsed.isna()
    if retry.any():
        # Rare non-ISO rows (e.g. "01/31/2026 12:00") are parsed one by one, the rest stay fast.
        parsed[retry] = pd.to_datetime(present[retry], utc=True, format="mixed", errors="coerce")
    bad = (present.notna() & parsed.isna()).to_numpy()
    return (
        parsed,
        bad,
        lambda examples: (
            f"timestamp column {column.name!r} has {int(bad.sum())} value(s) that are "
            f"not dates, e.g. {examples}"
        ),
    )


def _blank_to_missing(column: pd.Series) -> pd.Series:
    """Empty or whitespace-only text means "no value", as it does when read_csv reads a file."""
    return column.mask(_stripped(column).eq("").to_numpy(dtype=bool, na_value=False))


def _stripped(column: pd.Series) -> pd.Series:
    # pandas' string dtype strips in Arrow, several times faster than `str.strip` per object on
    # a million rows (the live checks type whole windows); a non-text value is read as its str.
    return column.astype("string").str.strip()


def _examples(values: pd.Series) -> str:
    # tolist() gives plain Python values, so numbers print as 2.0 rather than np.float64(2.0).
    return ", ".join(repr(v) for v in values.drop_duplicates().head(_MAX_EXAMPLES).tolist())


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
