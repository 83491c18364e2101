"""Loss-free prediction logging, off the request path.

`submit` appends the rows to this worker's journal (one `write`, no database wait), puts them
on a bounded in-memory queue and returns: the journal keeps them if the process is killed
before the writer gets to them. One writer thread per worker drains the queue in batches (COPY
on Postgres, executemany on SQLite). When the database is down or failing, batches go to an
fsync'ed spool on disk instead; once the database answers again the spool is replayed in order,
file by file, and each file is deleted only after its rows are committed. Rows are inserted
with ON CONFLICT (request_id) DO NOTHING, so a replay interrupted between commit and delete, or
a journal that overlaps what was written, cannot log a row twice: every acknowledged request id
ends up in `prediction_logs` exactly once. A row whose request id is logged already with other
features (a caller's id reused for another request, which `api.idempotency` did not see) is not
written either: the first stays, and on Postgres the writer counts it
(`ml_prediction_log_conflicts_total`) and logs its id. While spooled rows are waiting, new batches
are spooled behind them, which keeps the order. `close` (on SIGTERM, via the app's lifespan) drains
the queue to the database or, failing that, to the spool. Each logger names its files by a random
id and holds a lock that says it lives (`api.spool.Owner`); the files of one that stopped or was
killed (a sibling worker, a replica sharing the folder, the container before a restart) are
claimed at start and then every CLAIM_SECONDS by a live logger, and replayed (`api.spool` has
the file formats and the rules); an unreadable line in them is quarantined beside the file, not
allowed to block the rows behind it.

A full queue (the database slower than the traffic for a long time) spills to the spool from
the request thread: one line appended to a file, still no database wait. A row is dropped only
if the disk cannot take it either, and `ml_prediction_log_dropped_total` counts it.

Nothing ends the writer thread but `close`: an error in an iteration is counted by kind
(`ml_prediction_log_writer_errors_total{kind}`: disk, rejected, internal), logged at most once
per ERROR_LOG_SECONDS per kind, and the loop goes on, the batch it held going to the spool. A
full disk drops rows (counted) and never raises into the request; the spool works again once
there is room. A row the database refuses for good (SQLSTATE class 22 or 23, not a duplicate
key) is found by halving its batch, appended to `<spool>/dead-letter/` and counted
(`ml_prediction_log_dead_lettered_total`); the other rows are inserted. `python -m api.spool
--replay-dead-letter` (`replay_dead_letter`) re-sends them once the cause is fixed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import psycopg2.errors
from sqlalchemy import Engine
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from api.spool import (
    DEAD_LETTER_DIR,
    QUARANTINE_SUFFIX,
    REPLAYING_SUFFIX,
    SPOOL_SUFFIX,
    Journal,
    Owner,
    Spool,
    append_dead_letter,
    claim_orphans,
    dead_letter_files,
    read_batches,
)
from data.db import get_engine, prediction_logs
from data.logs import log_context
from data.prediction_log import (
    COPY_CHUNK,
    COPY_INTO_LOGS,
    COPY_INTO_STAGE,
    CREATE_STAGE,
    INSERT_FROM_STAGE,
    STAGED_CONFLICTS,
    PredictionRecord,
    copy_rows,
    encode,
)

log = logging.getLogger(__name__)

__all__ = ["DisabledLogger", "PredictionLogger", "PredictionRecord"]

# How often the writer starts a new journal segment: after a kill, at most about this much
# traffic already in the database is replayed again (and skipped by the key).
JOURNAL_ROTATE_SECONDS = 1.0
# How often the writer looks for the files of stopped or killed loggers (a sibling worker, a
# replica sharing the folder) and claims them for replay, besides once at start.
CLAIM_SECONDS = 10.0
# A kept connection failing faster than this was closed under the writer (a server restart, an
# idle timeout) and is retried once on a new one; slower, the database is unreachable.
STALE_CONNECTION_SECONDS = 1.0
# An error of one kind is logged at most once per this many seconds (all are counted).
ERROR_LOG_SECONDS = 60.0
# `ml_prediction_log_writer_errors_total{kind}`: disk (the spool, journal or dead-letter file),
# rejected (a row the database refused for good, sent to the dead-letter file), internal (a bug).
WRITER_ERROR_KINDS = ("disk", "rejected", "internal")


class RowQueue:
    """A bounded FIFO of rows that are put and taken in chunks.

    A request's rows go in under one lock and the writer takes up to a batch under one lock:
    `queue.Queue` takes its lock and notifies once per row, which on a 1,000-row batch cost
    the writer as much as formatting the rows.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._chunks: deque[list[PredictionRecord]] = deque()
        self._rows = 0
        self.unfinished = 0  # put and not yet marked done: what `flush` waits for
        # Rows ever put and ever marked done: rows leave in the order they came, so once
        # `done_total` reaches a value `put_total` had, every row put until then is handled.
        self.put_total = 0
        self.done_total = 0
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return self._rows

    def put(self, rows: list[PredictionRecord]) -> list[PredictionRecord]:
        """Queue what fits; return the rest."""
        with self._changed:
            room = max(self.max_rows - self._rows, 0)
            accepted = rows if len(rows) <= room else rows[:room]
            if accepted:
                self._chunks.append(accepted)
                self._rows += len(accepted)
                self.unfinished += len(accepted)
                self.put_total += len(accepted)
                self._changed.notify_all()
        return rows[len(accepted) :]

    def wait(self, timeout: float) -> bool:
        """Until a row is queued or `timeout` passes; whether one is."""
        with self._changed:
            return self._changed.wait_for(lambda: self._rows > 0, timeout)

    def take(self, limit: int | None = None) -> list[PredictionRecord]:
        """Up to `limit` rows (all with None), oldest first, without waiting."""
        taken: list[PredictionRecord] = []
        with self._changed:
            while self._chunks and (limit is None or len(taken) < limit):
                chunk = self._chunks.popleft()
                room = len(chunk) if limit is None else limit - len(taken)
                if len(chunk) > room:
                    self._chunks.appendleft(chunk[room:])
                    chunk = chunk[:room]
                taken.extend(chunk)
            self._rows -= len(taken)
        return taken

    def done(self, count: int) -> None:
        with self._changed:
            self.unfinished -= count
            self.done_total += count


class LogMetrics(Protocol):
    """Where the logger reports (`api.instrumentation.ApiMetrics` is one)."""

    queue_depth: Any
    log_written: Any
    log_spooled: Any
    log_replayed: Any
    log_dropped: Any
    log_quarantined: Any
    log_dead_lettered: Any
    log_conflicts: Any
    log_writer_errors: dict[str, Any]  # WRITER_ERROR_KINDS -> counter


class PredictionLogger:
    """Journal + bounded queue → batching writer thread → database, with a disk spool when it
    is down."""

    def __init__(
        self,
        spool_dir: str | Path,
        *,
        url: str | None = None,
        metrics: LogMetrics | None = None,
        batch_size: int = 2_000,
        flush_interval: float = 0.1,
        max_queue: int = 100_000,
        retry_interval: float = 1.0,
        journal: bool = True,
        on_tick: Callable[[], None] | None = None,
        claim_interval: float = CLAIM_SECONDS,
    ) -> None:
        self.engine: Engine = get_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.claim_interval = claim_interval
        self._next_claim = 0.0
        # Called by the writer thread at least every `flush_interval`: the worker's one
        # background thread, which the API also uses to write its buffered metrics.
        self.on_tick = on_tick
        self._queue = RowQueue(max_queue)
        # Held while a request's rows go to the journal and the queue, and while the writer
        # rotates the journal, so a closed segment holds exactly the rows queued before it.
        self._submit_lock = threading.Lock()
        # Names this process's files and holds the lock that tells other loggers it lives.
        self._owner = Owner(self.spool_dir)
        self._journal = Journal(self.spool_dir, self._owner) if journal else None
        self._journal_ok = True
        self._spool_lock = threading.Lock()
        self._spool_file = Spool(self.spool_dir, self._owner)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_retry = 0.0
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self.quarantined = 0
        self.dead_lettered = 0
        self.conflicts = 0  # rows not logged: their request id is logged with other features
        self.torn_bytes = 0
        self.writer_errors: dict[str, int] = dict.fromkeys(WRITER_ERROR_KINDS, 0)
        self._error_logged: dict[str, float] = {}
        self._error_unlogged: dict[str, int] = dict.fromkeys(WRITER_ERROR_KINDS, 0)
        letters = self.spool_dir / DEAD_LETTER_DIR
        self._dead_letter_path = letters / self._owner.file_name(SPOOL_SUFFIX)
        self.database_ok = True
        self._connection: Any = None  # the writer thread's own (Postgres)
        self._spool_waiting = False  # spooled rows wait for replay: new ones must queue behind

    # --- request side ------------------------------------------------------------------------

    def submit(self, record: PredictionRecord) -> None:
        """Journal and queue one row; never blocks on the database."""
        self.submit_many([record])

    def submit_many(self, records: Iterable[PredictionRecord]) -> None:
        """Journal and queue a request's rows together; what does not fit goes to the spool."""
        records = records if isinstance(records, list) else list(records)
        line = encode(records) if self._journal is not None else b""
        with self._submit_lock:
            if line:
                self._append_to_journal(line)
            overflow = self._queue.put(records)
            if overflow:
                self._spool(overflow)

    def _append_to_journal(self, line: bytes) -> None:
        assert self._journal is not None
        try:
            self._journal.append(line)
        except OSError as exc:  # the queue still has the rows; only a kill could lose them now
            if self._journal_ok:
                log.critical("cannot write the prediction log journal in %s: %s",
                             self.spool_dir, exc)  # fmt: skip
            self._journal_ok = False
        else:
            self._journal_ok = True

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def has_spooled_rows(self) -> bool:
        return bool(self._owner.spool_files())

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def owner_id(self) -> str:
        """The id that names this logger's files in the spool folder (`api.spool.Owner`)."""
        return self._owner.id

    def start(self) -> PredictionLogger:
        self._claim()
        self._next_claim = time.monotonic() + self.claim_interval
        self._spool_waiting = self.has_spooled_rows()
        self._thread = threading.Thread(target=self._run, name="prediction-logger", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 15.0) -> None:
        """Write everything still queued (to the database, else the spool) and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        # Whatever the writer could not take in time goes to disk, not to the void.
        leftovers = self._queue.take()
        if leftovers:
            with _about(leftovers):
                self._spool(leftovers)
            self._queue.done(len(leftovers))
        with self._spool_lock:
            self._spool_file.rotate()
        if self._journal is not None:
            with self._submit_lock:
                # A batch the writer still holds (it did not stop in time) stays journalled.
                self._journal.close(everything_handled=self._queue.unfinished == 0)
        self._report_depth()
        if self._thread is None or not self._thread.is_alive():
            # What is left in the folder is now an orphan, for the next logger to claim. (A
            # writer that did not stop in time may still append: the lock goes with the
            # process instead.)
            self._owner.release()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty and nothing is spooled (tests, admin tooling)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished == 0 and not self.has_spooled_rows():
                return True
            time.sleep(0.01)
        return False

    # --- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        """The writer thread: nothing may end it but `close`. An error in an iteration is
        counted and logged (once per kind and ERROR_LOG_SECONDS) and the loop goes on; the
        batch in hand goes to the spool (rows it had already written are skipped by the key
        on replay)."""
        while not (self._stop.is_set() and len(self._queue) == 0):
            try:
                self._iteration()
            except Exception as exc:  # _iteration's own bookkeeping failed: wait, go on
                self._writer_error(exc, "the writer loop")
                self._stop.wait(self.flush_interval)
        # A last claim: a sibling killed since the last pass (its successor may never start,
        # as when the whole server stops) leaves rows that the replay below writes now.
        for step in (
            self._claim,
            lambda: self._replay_if_due(force=True),
            self._tick,
            self._disconnect,
        ):
            try:
                step()
            except Exception as exc:
                self._writer_error(exc, "stopping the writer")

    def _claim(self) -> int:
        """Claim the files of loggers that are gone; their rows queue behind ours."""
        claimed = claim_orphans(self.spool_dir, self._owner)
        if claimed:
            log.warning("replaying %d prediction log file(s) left by stopped workers", claimed)
            with self._spool_lock:
                self._spool_waiting = True
        return claimed

    def _claim_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.claim_interval
            try:
                self._claim()
            except Exception as exc:  # a folder we cannot read now: try again next time
                self._writer_error(exc, "claiming the files of stopped loggers")

    def _iteration(self) -> None:
        self._claim_if_due()
        batch = self._next_batch()
        handled = not batch
        try:
            self._report_depth()
            self._tick()
            if self._spool_waiting:
                if batch:
                    with _about(batch):
                        self._spool(batch)
                handled = True
                self._replay_if_due()
            elif batch:
                self._write_or_spool(batch)
                handled = True
        except Exception as exc:
            self._writer_error(exc, "writing a batch" if batch else "replaying the spool")
            if not handled:
                self._spool(batch)
        finally:
            self._queue.done(len(batch))
        self._trim_journal()

    def _trim_journal(self) -> None:
        """Start a new segment every JOURNAL_ROTATE_SECONDS; delete the handled ones."""
        journal = self._journal
        if journal is None:
            return
        if journal.is_open and time.monotonic() - journal.opened_at >= JOURNAL_ROTATE_SECONDS:
            with self._submit_lock:
                journal.rotate(self._queue.put_total)
        try:
            journal.release(self._queue.done_total)
        except OSError as exc:
            self._writer_error(exc, "deleting a handled journal segment")

    def _next_batch(self) -> list[PredictionRecord]:
        """Up to batch_size rows: after the first arrives, linger flush_interval and take what
        came meanwhile. Waking up for every row would hand the GIL back and forth with the
        request thread and cost more than the prediction itself."""
        if not self._queue.wait(self.flush_interval):
            return []
        if len(self._queue) < self.batch_size:
            self._stop.wait(self.flush_interval)
        return self._queue.take(self.batch_size)

    def _write_or_spool(self, batch: list[PredictionRecord]) -> None:
        with _about(batch):
            try:
                rejected = self._write_sorting(batch)
            except Exception as exc:  # any other database failure: keep the rows on disk
                self._database_down(exc)
                self._spool(batch)
            else:
                self.written += len(batch) - rejected
                if self.metrics:
                    self.metrics.log_written.inc(len(batch) - rejected)
                log.debug("wrote %d rows", len(batch) - rejected)

    def _write_sorting(self, batch: list[PredictionRecord]) -> int:
        """Write `batch`; when the database rejects it for a value (not for being down),
        split it in halves until the rows it refuses are found, send those to the dead-letter
        file and write the others. How many rows were dead-lettered; raises when the database
        fails otherwise (a half already written is skipped by the key when the batch is
        retried)."""
        try:
            self.write(batch)
            return 0
        except Exception as exc:
            if not rejected_by_database(exc):
                raise
            if len(batch) == 1:
                self._dead_letter(batch, exc)
                return 1
        half = len(batch) // 2
        return self._write_sorting(batch[:half]) + self._write_sorting(batch[half:])

    def _dead_letter(self, rows: list[PredictionRecord], exc: Exception) -> None:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        self._writer_error(
            exc, f"row {rows[0].request_id[:200]!r} refused by the database "
            f"({reason[0] if reason else type(exc).__name__}), sent to {self._dead_letter_path}",
            kind="rejected", trace=False,
        )  # fmt: skip
        try:
            append_dead_letter(self._dead_letter_path, rows)
        except OSError as disk:
            self._drop(rows, disk, "writing the dead-letter file")
            return
        self.dead_lettered += len(rows)
        if self.metrics:
            self.metrics.log_dead_lettered.inc(len(rows))

    def write(self, batch: list[PredictionRecord]) -> None:
        """Insert `batch` in one transaction, ignoring request ids already logged."""
        if self.is_postgres:
            self._copy_postgres(batch)
        else:
            rows = [record._asdict() for record in batch]
            statement = sqlite_insert(prediction_logs).on_conflict_do_nothing(
                index_elements=["request_id"]
            )
            with self.engine.begin() as conn:
                conn.execute(statement, rows)
        if not self.database_ok:
            log.warning("prediction log database is back")
            self.database_ok = True

    def _copy_postgres(self, batch: list[PredictionRecord]) -> None:
        text = copy_rows(batch)
        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connect()
            started = time.monotonic()
            try:
                try:
                    # Straight into the table: a quarter less work for Postgres than staging.
                    with connection.cursor() as cursor:
                        cursor.copy_expert(COPY_INTO_LOGS, io.BytesIO(text), size=COPY_CHUNK)
                    connection.commit()
                except psycopg2.errors.UniqueViolation:
                    # A request id already logged (a client's retry, a replayed spool): stage
                    # the batch and insert what is new, once.
                    connection.rollback()
                    with connection.cursor() as cursor:
                        cursor.execute(CREATE_STAGE)
                        cursor.copy_expert(COPY_INTO_STAGE, io.BytesIO(text), size=COPY_CHUNK)
                        cursor.execute(INSERT_FROM_STAGE)
                        cursor.execute(STAGED_CONFLICTS)
                        conflicts = [row[0] for row in cursor.fetchall()]
                    connection.commit()
                    if conflicts:
                        self._conflicting(conflicts)
                return
            except Exception as exc:
                if rejected_by_database(exc):  # the rows, not the connection
                    try:
                        connection.rollback()
                    except Exception:
                        self._disconnect(broken=True)
                    raise
                self._disconnect(broken=True)
                # The kept connection may have been closed under us (a restart, an idle
                # timeout), which fails at once: one more try on a fresh one before calling
                # the database down. One that failed after a wait (a black-holed server, after
                # DATABASE_TCP_USER_TIMEOUT_SECONDS) is down: a new connection would only wait
                # the connect timeout too before the rows reach the spool.
                stale = time.monotonic() - started < STALE_CONNECTION_SECONDS
                if not reused or attempt == 2 or not stale:
                    raise

    def _conflicting(self, request_ids: list[str]) -> None:
        """Rows not logged because their request id is logged with other features."""
        self.conflicts += len(request_ids)
        if self.metrics:
            self.metrics.log_conflicts.inc(len(request_ids))
        shown = ", ".join(repr(rid[:128]) for rid in request_ids[:5])
        log.warning("prediction log: %d rows not logged, their request id is logged already "
                    "with other features (reused by the caller; the first row stays): %s%s",
                    len(request_ids), shown, " ..." if len(request_ids) > 5 else "")  # fmt: skip

    def _connect(self) -> Any:
        """The writer's connection, kept between batches (the pool would ping it each time)."""
        if self._connection is None:
            self._connection = self.engine.raw_connection()
        return self._connection

    def _disconnect(self, broken: bool = False) -> None:
        if self._connection is not None:
            if broken:
                self._connection.invalidate()  # must not go back to the pool
            self._connection.close()
            self._connection = None

    def _database_down(self, exc: Exception) -> None:
        if self.database_ok:
            log.error("prediction log database unavailable, spooling to %s: %s", self.spool_dir,
                      str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # fmt: skip
        self.database_ok = False
        self._next_retry = time.monotonic() + self.retry_interval

    # --- spool -------------------------------------------------------------------------------

    def _spool(self, records: list[PredictionRecord]) -> None:
        """Never raises (it runs in the request thread when the queue is full): rows the disk
        cannot take are dropped and counted; the next call tries a new file."""
        try:
            with self._spool_lock:
                self._spool_file.append(records)
                self._spool_waiting = True
        except Exception as exc:
            self._drop(records, exc, f"spooling {len(records)} rows")
            return
        self.spooled += len(records)
        if self.metrics:
            self.metrics.log_spooled.inc(len(records))
        log.debug("spooled %d rows", len(records))

    def _replay_if_due(self, force: bool = False) -> None:
        if not force and time.monotonic() < self._next_retry:
            return
        with self._spool_lock:  # rotate: new rows go to a new file behind the ones replayed
            self._spool_file.rotate()
            files = self._owner.spool_files()
        for path in files:
            batches = read_batches(
                path, self.batch_size, on_quarantine=self._quarantined, on_torn=self._torn
            )
            while True:
                try:
                    batch = next(batches, None)
                except FileNotFoundError:  # deleted under us (by hand): nothing left to replay
                    log.warning("prediction log spool file %s vanished before its replay", path)
                    break
                except OSError as exc:  # the file itself, not the database: set it aside
                    self._set_aside(path, exc)
                    break
                if batch is None:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    break
                with _about(batch):
                    try:
                        rejected = self._write_sorting(batch)
                    except Exception as exc:  # still down: try again later, from this file
                        self._database_down(exc)
                        return
                    self.replayed += len(batch) - rejected
                    if self.metrics:
                        self.metrics.log_replayed.inc(len(batch) - rejected)
                    log.debug("replayed %d rows from %s", len(batch), path.name)
        with self._spool_lock:  # rows spooled during the replay are still waiting
            self._spool_waiting = self.has_spooled_rows()

    def _torn(self, size: int) -> None:
        self.torn_bytes += size

    def _drop(self, rows: list[PredictionRecord], exc: Exception, doing: str) -> None:
        self.dropped += len(rows)
        if self.metrics:
            self.metrics.log_dropped.inc(len(rows))
        self._writer_error(exc, f"{doing} (dropped {len(rows)} rows)", trace=False)

    def _writer_error(
        self, exc: BaseException, doing: str, kind: str | None = None, trace: bool = True
    ) -> None:
        """Count an error by kind; log it unless one of its kind was logged less than
        ERROR_LOG_SECONDS ago (then say how many went unlogged, next time)."""
        kind = kind or ("disk" if isinstance(exc, OSError) else "internal")
        self.writer_errors[kind] += 1
        if self.metrics:
            self.metrics.log_writer_errors[kind].inc()
        now = time.monotonic()
        last = self._error_logged.get(kind)
        if last is not None and now - last < ERROR_LOG_SECONDS:
            self._error_unlogged[kind] += 1
            return
        self._error_logged[kind] = now
        unlogged, self._error_unlogged[kind] = self._error_unlogged[kind], 0
        more = f" ({unlogged} more of this kind since the last one logged)" if unlogged else ""
        log.error("prediction log writer: %s failed, going on: %s%s", doing,
                  exc, more, exc_info=exc if trace else None)  # fmt: skip

    def _quarantined(self, lines: int) -> None:
        self.quarantined += lines
        if self.metrics:
            self.metrics.log_quarantined.inc(lines)

    def _set_aside(self, path: Path, exc: OSError) -> None:
        """A spool file that cannot be read at all must not hold up the rows behind it."""
        aside = path.with_name(path.stem + QUARANTINE_SUFFIX)
        log.error("cannot read prediction log spool file %s (%s); moved to %s", path, exc, aside)
        try:
            path.rename(aside)
        except OSError:
            log.critical("cannot move %s aside either; the spool is blocked", path)
            return
        self._quarantined(1)

    def _tick(self) -> None:
        if self.on_tick is not None:
            try:
                self.on_tick()
            except Exception:  # a metrics bug must not stop the prediction log
                log.exception("the writer thread's tick failed")

    def _report_depth(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self._queue))

    def stats(self) -> dict[str, Any]:
        return {
            "queue_depth": self.queue_depth,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "quarantined": self.quarantined,
            "dead_lettered": self.dead_lettered,
            "conflicts": self.conflicts,
            "torn_bytes": self.torn_bytes,
            "writer_errors": dict(self.writer_errors),
            "database_ok": self.database_ok,
            "spool_files": len(self._owner.spool_files()),
        }


def rejected_by_database(exc: BaseException) -> bool:
    """Whether the database refused the rows themselves (a value a column rejects, a
    constraint), as opposed to being unreachable or failing: retrying would fail again.
    Postgres SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation; a
    duplicate key never gets here: the writer inserts with ON CONFLICT DO NOTHING)."""
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    if isinstance(orig, psycopg2.Error):
        return (orig.pgcode or "")[:2] in ("22", "23")
    return isinstance(orig, sqlite3.IntegrityError | sqlite3.DataError)


def replay_dead_letter(spool_dir: str | Path, url: str | None = None) -> tuple[int, int]:
    """Insert the rows of the dead-letter files under `spool_dir` (`python -m api.spool
    --replay-dead-letter`); rows rejected again go to a new dead-letter file. Each file is
    first renamed (a worker dead-lettering meanwhile starts a new one) and deleted once
    handled. (rows inserted or already there, rows rejected again); raises if the database
    fails otherwise, leaving the file to replay again."""
    replayer = PredictionLogger(spool_dir, url=url, journal=False)
    written = rejected = 0
    try:
        for path in dead_letter_files(replayer.spool_dir):
            if path.suffix != REPLAYING_SUFFIX:
                taken = path.with_suffix(REPLAYING_SUFFIX)
                os.rename(path, taken)
                path = taken
            for batch in read_batches(path, replayer.batch_size, on_torn=replayer._torn):
                again = replayer._write_sorting(batch)
                written += len(batch) - again
                rejected += again
            path.unlink()
            log.info("replayed dead-letter file %s", path.name)
    finally:
        replayer._disconnect()
        replayer._owner.release()
    return written, rejected


def _about(batch: list[PredictionRecord]) -> AbstractContextManager[None]:
    """A batch's first and last request ids and its size, on the lines logged while it is
    written, spooled or replayed (never every id: a batch holds up to `batch_size` rows)."""
    return log_context(
        request_id=batch[0].request_id,
        last_request_id=batch[-1].request_id,
        request_count=len(batch),
    )


class DisabledLogger:
    """Stands in for PredictionLogger when API_MONITORING is off (benchmarks only)."""

    def start(self) -> DisabledLogger:
        return self

    def submit(self, record: PredictionRecord) -> None:
        pass

    def submit_many(self, records: Iterable[PredictionRecord]) -> None:
        pass

    def close(self, timeout: float = 0.0) -> None:
        pass
