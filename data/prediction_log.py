"""The prediction log's row format, in one place: what the API writes to `prediction_logs`,
and the lines its logger keeps on disk meanwhile.

- `PredictionRecord` is one row as the API makes it; its fields are the table's columns, in
  the table's order (checked at import against `data.db.prediction_logs`).
- `copy_rows` turns a batch into COPY's text format for Postgres (`COPY_INTO_LOGS`); a batch
  holding a request id already logged goes through a temporary staging table shaped `LIKE` the
  table (`CREATE_STAGE`, `COPY_INTO_STAGE`, `INSERT_FROM_STAGE`), so that it is inserted once.
- `encode` / `decode` are the line format of the logger's spool and journal (`api/spool.py`):
  a JSON array of records, each record the array of its fields (the time in ISO-8601), one line
  per request or batch. `decode` also reads the earlier one-object-per-line format.
- `copy_out` reads a window back from Postgres with `COPY (query) TO STDOUT` as CSV, parsed by
  Arrow's CSV reader chunk by chunk (`data.prediction_log.read_predictions` types the frames), and
  `features_frame` turns the `features` JSON texts of a chunk into one column per feature.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
from sqlalchemy import Engine, Select, Text, cast, select

from data.db import get_engine, labels, prediction_logs
from data.ingest import coerce_frame
from data.schema import DEFAULT_PREDICTION_COLUMN, DEFAULT_SCORE_COLUMN, FeatureSchema


class PredictionRecord(NamedTuple):
    """One logged prediction (a tuple: a batch makes a thousand of them per request)."""

    request_id: str
    predicted_at: datetime
    model_name: str
    model_version: str
    features: dict[str, Any]
    predicted_class: int
    score: float
    latency_ms: float


class UnreadableLine(ValueError):
    """A spool or journal line that is not a list of well-formed records."""


def encode(records: list[PredictionRecord]) -> bytes:
    """One line holding `records`: a single orjson call for the whole request (a call per row
    of a 1,000-row batch cost five times as much)."""
    return orjson.dumps([list(record) for record in records]) + b"\n"


def decode(line: str | bytes) -> list[PredictionRecord]:
    """The records of one line, checked field by field: a row that the database would refuse
    must be caught here, or it would fail its batch on every replay."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UnreadableLine(f"not JSON: {exc}") from None
    rows = [raw] if isinstance(raw, dict) else raw
    if not isinstance(rows, list) or not rows:
        raise UnreadableLine("not a list of records")
    return [_record(row) for row in rows]


def _record(row: Any) -> PredictionRecord:
    if isinstance(row, dict):  # the earlier one-object-per-line format
        try:
            row = [row[name] for name in PredictionRecord._fields]
        except KeyError as exc:
            raise UnreadableLine(f"record without {exc}") from None
    if not isinstance(row, list) or len(row) != len(PredictionRecord._fields):
        raise UnreadableLine("a record is not a list of 8 fields")
    request_id, predicted_at, name, version, features, predicted, score, latency = row
    texts_ok = all(isinstance(v, str) and v and "\0" not in v for v in (request_id, name, version))
    if not (
        texts_ok
        and isinstance(predicted_at, str)
        and isinstance(features, dict)
        and predicted in (0, 1)
        and isinstance(score, int | float)
        and isinstance(latency, int | float)
    ):
        raise UnreadableLine("a record field has the wrong type")
    try:
        when = datetime.fromisoformat(predicted_at)
    except ValueError:
        raise UnreadableLine(f"bad time {predicted_at!r}") from None
    if when.tzinfo is None:
        raise UnreadableLine(f"time without a zone {predicted_at!r}")
    return PredictionRecord(
        request_id, when, name, version, features, int(predicted), float(score), float(latency)
    )


COLUMNS = PredictionRecord._fields
if tuple(column.name for column in prediction_logs.columns) != COLUMNS:
    raise RuntimeError(
        "PredictionRecord's fields must be prediction_logs' columns in order: "
        f"{COLUMNS} != {tuple(column.name for column in prediction_logs.columns)}"
    )

_STAGE = "prediction_logs_stage"
CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE {prediction_logs.name}) ON COMMIT DELETE ROWS"
)
_COLUMN_LIST = ", ".join(COLUMNS)
# Bytes handed to libpq per call: with psycopg2's default of 8 kB a batch took 100 calls.
COPY_CHUNK = 1 << 20
COPY_INTO_LOGS = f"COPY {prediction_logs.name} ({_COLUMN_LIST}) FROM STDIN"
COPY_INTO_STAGE = f"COPY {_STAGE} ({_COLUMN_LIST}) FROM STDIN"
INSERT_FROM_STAGE = (
    f"INSERT INTO {prediction_logs.name} ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGE} "
    "ON CONFLICT (request_id) DO NOTHING"
)
# Then, in the same transaction: the staged rows whose request id is logged with other features
# (one id sent for two requests; the row logged first stays). A replayed row matches itself.
STAGED_CONFLICTS = (
    f"SELECT s.request_id FROM {_STAGE} s JOIN {prediction_logs.name} p USING (request_id) "
    "WHERE p.features::jsonb <> s.features::jsonb"
)


def _copy_text(value: str) -> str:
    """`value` as a field of COPY's text format: backslash, tab and line breaks escaped."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def copy_rows(batch: list[PredictionRecord]) -> bytes:
    """`batch` in COPY's text format, built by hand: csv.writer spent most of the writer's time
    doubling the quotes of every features JSON. The rows of a request share their time and
    model, which are escaped once for the run of rows that shares them."""
    lines = []
    shared_with = None
    for r, request_id, features in zip(
        batch, _escaped_request_ids(batch), _features_json(batch), strict=True
    ):
        if shared_with is None or not (
            r.predicted_at is shared_with.predicted_at
            and r.model_name is shared_with.model_name
            and r.model_version is shared_with.model_version
        ):
            shared_with = r
            shared = (
                f"\t{r.predicted_at.isoformat()}\t{_copy_text(r.model_name)}\t"
                f"{_copy_text(r.model_version)}\t"
            )
        lines.append(
            f"{request_id}{shared}{{{features}}}\t{r.predicted_class}\t{r.score!r}\t"
            f"{r.latency_ms!r}\n"
        )
    return "".join(lines).encode()


def _escaped_request_ids(batch: list[PredictionRecord]) -> list[str]:
    # Escaped in one pass over all ids joined by NUL, which none contains: the API refuses it,
    # and Postgres could not store it anyway.
    return _copy_text("\0".join([r.request_id for r in batch])).split("\0")


def _features_json(batch: list[PredictionRecord]) -> list[str]:
    """Each row's features as JSON without its outer braces, escaped for COPY, from one orjson
    call for the whole batch: a call per row costs three times as much, mostly in per-call
    overhead. The rows are split at the `},{` between them; a value holding that text makes the
    split ambiguous, and then each row is serialised alone."""
    # orjson escapes control characters: of COPY's special characters only `\` can occur.
    whole = orjson.dumps([r.features for r in batch]).decode().replace("\\", "\\\\")
    parts = whole[2:-2].split("},{")
    if len(parts) == len(batch):
        return parts
    return [_copy_text(orjson.dumps(r.features).decode())[1:-1] for r in batch]


# What `copy_out` writes for SQL NULL: COPY's CSV default (an unquoted empty field) cannot be
# told from an empty text, which a request id or a category may be.
_NULL = "\\N"
# Bytes of CSV Arrow parses at a time (about 2,700 log rows); chunks are cut from these blocks.
# A 1M-row pass took 3.3 s with 1 MB, 3.7 s with 2 MB and 4.3 s with 4 MB, which also peaked
# 120 MB higher (Arrow reads blocks ahead of the caller); 256 and 512 kB were no faster.
_CSV_BLOCK = 1 << 20
_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64()}


def copy_out(
    engine: Engine,
    query: Select,
    dtypes: dict[str, Any],
    chunksize: int | None,
) -> Iterator[pd.DataFrame]:
    """The rows of `query` as frames of at most `chunksize` rows (all at once with None),
    streamed with `COPY (query) TO STDOUT` in CSV and parsed by Arrow's CSV reader.

    Measured on the prediction log, this reads a window about 1.5 times as fast as a cursor
    whose rows psycopg2 turns into Python tuples for pandas to take apart again, and Arrow's
    reader (C++, no Python object per value, the GIL released) parses the CSV in half the time
    pandas' C reader took. A thread runs the COPY into a pipe while Arrow parses: memory stays
    bounded by the pipe, a few blocks and one chunk. `dtypes` gives every selected column's type
    (in order): `str` (text, pandas' `str` dtype), "int64" or "float64"; a NULL, which only a
    numeric column may hold (the label of an outer join), reads as NaN. Times come as text in
    UTC, for the caller to parse. An empty result is one empty frame, also in chunks.
    """
    compiled = query.compile(dialect=engine.dialect)
    names = list(dtypes)
    types = {name: _ARROW_TYPES.get(dtype, pa.large_string()) for name, dtype in dtypes.items()}
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
            sql = cursor.mogrify(str(compiled), compiled.params).decode()
        statement = f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, NULL '{_NULL}')"
        read_fd, write_fd = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with (
                    os.fdopen(write_fd, "wb", buffering=1 << 20) as sink,
                    connection.cursor() as cursor,
                ):
                    cursor.copy_expert(statement, sink, size=1 << 20)
            except BaseException as exc:  # handed to the reading thread
                failure.append(exc)

        producer = threading.Thread(target=produce, name="copy-out", daemon=True)
        producer.start()
        try:
            with os.fdopen(read_fd, "rb", buffering=1 << 20) as source:
                if not source.peek(1):  # Arrow refuses an empty stream
                    yield pa.table({n: pa.array([], t) for n, t in types.items()}).to_pandas()
                else:
                    reader = pa_csv.open_csv(
                        source,
                        read_options=pa_csv.ReadOptions(column_names=names, block_size=_CSV_BLOCK),
                        # A text may hold a line break; COPY quotes it, Arrow must look for it.
                        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                        convert_options=pa_csv.ConvertOptions(
                            column_types=types,
                            null_values=[_NULL],
                            strings_can_be_null=False,
                            quoted_strings_can_be_null=False,
                        ),
                    )
                    try:
                        for table in _in_chunks(reader, chunksize):
                            yield table.to_pandas()
                    finally:
                        reader.close()  # before its source closes: Arrow may be reading ahead
        finally:
            producer.join(timeout=60)  # the COPY stops when its pipe closes
        if failure:
            raise failure[0]
    finally:
        connection.rollback()
        connection.close()


def _in_chunks(reader: pa.RecordBatchReader, chunksize: int | None) -> Iterator[pa.Table]:
    """The reader's batches (one per CSV block) regrouped into tables of `chunksize` rows."""
    if chunksize is None:
        yield reader.read_all()
        return
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in reader:
        pending.append(batch)
        held += batch.num_rows
        while held >= chunksize:
            table = pa.Table.from_batches(pending, reader.schema)
            yield table.slice(0, chunksize)
            rest = table.slice(chunksize)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending, reader.schema)


# What a feature's values are in the JSON the API logs: numbers (booleans as 0.0 / 1.0) or text;
# null or a missing key when it has none.
def _json_type(schema: FeatureSchema, name: str) -> pa.DataType:
    return pa.string() if schema.feature(name).is_categorical else pa.float64()


def features_frame(texts: pd.Series, schema: FeatureSchema) -> pd.DataFrame:
    """The `features` JSON objects in `texts` (one per row) as one column per schema feature,
    in schema order, for `data.ingest.coerce_frame` to type; a key a row lacks (a feature added
    to the schema later) reads as missing, keys the schema does not name are left out.

    Parsed by Arrow's JSON reader, columnar and without a Python object per value, when every
    value has the type the API logs (a number for numerical and boolean features, a text for
    categorical ones, or null); otherwise (a boolean `true`, a number in a categorical feature,
    a nested value, a key twice) by orjson into Python objects, as all rows were before. The two
    differ only in representation (an integer 3 comes as 3.0), never in what `coerce_frame`
    makes of them.
    """
    names = schema.feature_names
    fast = _arrow_features(texts, pa.schema([(n, _json_type(schema, n)) for n in names]))
    if fast is not None:
        return fast
    return pd.DataFrame.from_records(
        orjson.loads("[" + ",".join(texts.tolist()) + "]"), columns=names
    )


# Rows handed to Arrow's JSON reader at once, at most: its block size is a 32-bit number of
# bytes. A chunk is cut into as many parts as there are cores, parsed side by side (Arrow
# releases the GIL; one block is parsed by one thread). The threads are the call's own: a pool
# kept between calls would not survive a fork (Airflow's and the API's workers).
_JSON_ROWS = 1 << 17


def _arrow_features(texts: pd.Series, types: pa.Schema) -> pd.DataFrame | None:
    """`features_frame` by Arrow, or None when a value does not have its type in `types`."""
    try:
        array = pa.array(texts)  # pandas' str dtype is Arrow already: no copy
    except (pa.ArrowException, TypeError):
        return None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    textual = pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
    if not textual or array.null_count or not len(array):
        return None
    offsets = np.frombuffer(
        array.buffers()[1], dtype=np.int64 if pa.types.is_large_string(array.type) else np.int32
    )[array.offset :]
    options = pa_json.ParseOptions(explicit_schema=types, unexpected_field_behavior="ignore")

    def parse(first: int, rows: int) -> pa.Table | None:
        start, end = int(offsets[first]), int(offsets[first + rows])
        # The objects back to back, as they lie in the array's data: Arrow's reader takes one
        # after the other within a block (a line break between them would cost a copy), and
        # the count of rows it finds is checked.
        data = array.buffers()[2][start:end]
        try:
            table = pa_json.read_json(
                pa.BufferReader(data),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
                parse_options=options,
            )
        except pa.ArrowInvalid:
            return None
        return table if table.num_rows == rows else None

    step = min(_JSON_ROWS, -(-len(array) // (os.cpu_count() or 1)))
    bounds = [(first, min(step, len(array) - first)) for first in range(0, len(array), step)]
    if len(bounds) == 1:
        parts = [parse(*bounds[0])]
    else:
        workers = min(len(bounds), os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="features-json") as parsers:
            parts = list(parsers.map(lambda bound: parse(*bound), bounds))
    if any(part is None for part in parts):
        return None
    return pa.concat_tables(parts).to_pandas()


# ---------------------------------------------------------------------------------------------
# The read path: a window of the log back as a frame typed by the schema

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
