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
  pandas' C reader chunk by chunk (`data.ingest.read_predictions` types the frames).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import pandas as pd
from sqlalchemy import Engine, Select

from data.db import prediction_logs


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


def copy_out(
    engine: Engine,
    query: Select,
    dtypes: dict[str, Any],
    nullable: tuple[str, ...],
    chunksize: int | None,
) -> Iterator[pd.DataFrame]:
    """The rows of `query` as frames of at most `chunksize` rows (all at once with None),
    streamed with `COPY (query) TO STDOUT` in CSV and parsed by pandas' C reader.

    Measured on the prediction log, this reads a window about 1.5 times as fast as a cursor
    whose rows psycopg2 turns into Python tuples for pandas to take apart again. A thread runs
    the COPY into a pipe while the caller's thread parses: memory stays bounded by the pipe and
    one chunk. `dtypes` gives every selected column's type (in order); `nullable` the columns
    that may hold NULL. Times come as text in UTC, for the caller to parse.
    """
    compiled = query.compile(dialect=engine.dialect)
    names = list(dtypes)
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
            with os.fdopen(read_fd, "rb") as source:
                reader = pd.read_csv(
                    source,
                    names=names,
                    header=None,
                    dtype=dtypes,
                    na_values={name: [_NULL] for name in nullable},
                    keep_default_na=False,
                    chunksize=chunksize or None,
                )
                if chunksize is None:
                    yield reader
                else:
                    yield from reader
        finally:
            producer.join(timeout=60)  # the COPY stops when its pipe closes
        if failure:
            raise failure[0]
    finally:
        connection.rollback()
        connection.close()
