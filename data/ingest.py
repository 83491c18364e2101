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

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
import pyarrow
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype
from sqlalchemy import Select, Text, cast, select, text
from sqlalchemy.exc import SQLAlchemyError

from data.db import get_engine, labels, prediction_logs
from data.prediction_log import copy_out, features_frame
from data.schema import (
    DEFAULT_PREDICTION_COLUMN,
    DEFAULT_SCORE_COLUMN,
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


# Columns `read_predictions` adds next to the schema's columns: the model's outputs under the
# schema's `prediction` and `score` names (these by default), and the version that made them.
PREDICTION_COLUMN = DEFAULT_PREDICTION_COLUMN
SCORE_COLUMN = DEFAULT_SCORE_COLUMN
MODEL_VERSION_COLUMN = "model_version"
# The request id and the prediction time under the log's own names when the schema names no id
# or timestamp column: performance per hour and the freshness check need the time either way.
LOG_ID_COLUMN = "request_id"
LOG_TIME_COLUMN = "predicted_at"
_FEATURES_JSON = "_features_json"


def read_predictions(
    schema: FeatureSchema,
    start: datetime,
    end: datetime,
    *,
    url: str | None = None,
    with_labels: bool = False,
    chunksize: int | None = None,
) -> pd.DataFrame | Iterator[pd.DataFrame]:
    """Logged predictions with `start <= predicted_at < end`, typed by the schema.

    Each feature becomes its own typed column (parsed from the logged JSON), next to the
    schema's id (the request id) and timestamp (the prediction time), under the log's names
    `request_id` and `predicted_at` when the schema names no such column, the predicted class and
    the score (named by the schema's `prediction` and `score`) and `model_version`; with
    `with_labels`, the target column holds the label that arrived later, or NaN. With
    `chunksize`, rows are streamed and an iterator of frames is returned, so a window larger
    than memory can be processed in pieces. Postgres streams them with COPY
    (`data.prediction_log.copy_out`), SQLite with a cursor.
    """
    query = window_query(schema, start, end, with_labels=with_labels)
    engine = get_engine(url)

    def typed(frame: pd.DataFrame) -> pd.DataFrame:
        return frame_from_log_rows(frame, schema, with_labels=with_labels)

    if engine.dialect.name == "postgresql":
        dtypes = {column.name: str for column in query.selected_columns}
        dtypes |= {schema.prediction: "int64", schema.score: "float64"}
        if with_labels:
            dtypes[schema.target] = "float64"
        parts = copy_out(engine, query, dtypes, chunksize)
        if chunksize is None:
            (whole,) = parts  # to the end, so the connection is released at once
            return typed(whole)
        return (typed(frame) for frame in parts)

    if chunksize is None:
        with engine.connect() as conn:
            return typed(pd.read_sql(query, conn))

    def chunks() -> Iterator[pd.DataFrame]:
        with engine.connect() as conn:
            streaming = conn.execution_options(stream_results=True, max_row_buffer=chunksize)
            for frame in pd.read_sql(query, streaming, chunksize=chunksize):
                yield typed(frame)

    return chunks()


def window_query(
    schema: FeatureSchema, start: datetime, end: datetime, *, with_labels: bool = False
) -> Select:
    """The query `read_predictions` runs: the log's rows with `start <= predicted_at < end` in
    time order, the features as one JSON text per row (`frame_from_log_rows` types them), and
    with `with_labels` the label of each, if one arrived."""
    log = prediction_logs
    columns = [
        log.c.request_id.label(schema.id or LOG_ID_COLUMN),
        log.c.predicted_at.label(schema.timestamp or LOG_TIME_COLUMN),
        cast(log.c.features, Text).label(_FEATURES_JSON),
        log.c.predicted_class.label(schema.prediction),
        log.c.score.label(schema.score),
        log.c.model_version.label(MODEL_VERSION_COLUMN),
    ]
    if with_labels:
        columns.append(labels.c.label.label(schema.target))
    query = select(*columns)
    if with_labels:
        query = query.select_from(log.outerjoin(labels, labels.c.request_id == log.c.request_id))
    return query.where(log.c.predicted_at >= start, log.c.predicted_at < end).order_by(
        log.c.predicted_at, log.c.request_id
    )


def frame_from_log_rows(
    frame: pd.DataFrame, schema: FeatureSchema, *, with_labels: bool = False
) -> pd.DataFrame:
    """Rows of `read_predictions`' query (the features still one JSON text per row, in
    `_features_json`) as the typed frame it returns."""
    extra = frame[[schema.prediction, schema.score, MODEL_VERSION_COLUMN]].reset_index(drop=True)
    # The features as text, parsed here in one pass: extracting each key in SQL would make
    # Postgres parse every row's JSON once per feature.
    features = features_frame(frame[_FEATURES_JSON], schema)
    keys = frame.drop(columns=[_FEATURES_JSON, *extra.columns]).reset_index(drop=True)
    # Typed as the schema's id and timestamp, also when the schema names none (coerce_frame
    # keeps only the columns the schema knows).
    keyed = replace(
        schema, id=schema.id or LOG_ID_COLUMN, timestamp=schema.timestamp or LOG_TIME_COLUMN
    )
    result = coerce_frame(
        pd.concat([keys, features], axis=1), keyed, require_target=False, origin="prediction_logs"
    )
    if with_labels:
        result[schema.target] = pd.to_numeric(frame[schema.target]).to_numpy(dtype=float)
    result[schema.prediction] = extra[schema.prediction].astype("int64")
    result[schema.score] = extra[schema.score].astype("float64")
    result[MODEL_VERSION_COLUMN] = extra[MODEL_VERSION_COLUMN].astype(str)
    return result
