"""The prediction logger's writer under faults: a full disk, a torn write, an error in its own
loop, a row the database refuses. The writer thread must survive each, `submit` must never
raise, and every row either arrives or is counted (dropped, dead-lettered)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from api import spool as spool_files
from api.logger import PredictionLogger, PredictionRecord
from data.db import get_engine, init_db
from tests.test_logger import logged_ids, record


@contextlib.contextmanager
def tiny_filesystem(folder: Path, size: str = "256k") -> Iterator[Path]:
    """A real tmpfs of `size` mounted on `folder` (root only; the test is skipped otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem of `folder` up to `leave` bytes free; the filler file."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            if free <= leave:
                break
            handle.write(b"\0" * min(4096, free - leave))
    return filler


def wait_until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_full_disk_drops_rows_counted_and_the_spool_recovers(private_postgres, tmp_path):
    """The database down and the spool's disk (a real 256 kB tmpfs) full: rows are dropped and
    counted, `submit` never raises, the writer lives on; once space returns the spool takes
    rows again and they reach the database. (The writer thread used to die on the spool
    file's close, and the next overflow raised ValueError into /predict.)"""
    url = private_postgres.url
    init_db(get_engine(url))
    with tiny_filesystem(tmp_path / "spool") as spool:
        logger = PredictionLogger(
            spool, url=url, flush_interval=0.02, retry_interval=0.2, max_queue=20
        ).start()
        private_postgres.stop()
        logger.submit_many(record(i) for i in range(100))
        assert wait_until(lambda: logger.stats()["spooled"] == 100), logger.stats()

        filler = fill(spool)
        for start in range(100, 300, 10):  # more than the queue holds: overflow spills too
            logger.submit_many(record(i) for i in range(start, start + 10))
        assert wait_until(lambda: logger._queue.unfinished == 0), logger.stats()
        time.sleep(0.5)  # a replay is due: it rotates the spool file, whose close failed
        for start in range(300, 400, 10):
            logger.submit_many(record(i) for i in range(start, start + 10))
        assert wait_until(lambda: logger._queue.unfinished == 0), logger.stats()
        assert logger._thread is not None and logger._thread.is_alive()
        stats = logger.stats()
        assert stats["dropped"] > 0 and stats["writer_errors"]["disk"] > 0

        filler.unlink()  # space is back
        spooled = stats["spooled"]
        logger.submit_many(record(i) for i in range(400, 500))
        assert wait_until(lambda: logger.stats()["spooled"] == spooled + 100), logger.stats()

        private_postgres.start()
        assert logger.flush(timeout=30), logger.stats()
        logger.close()
        assert logger.stats()["quarantined"] == 0  # no torn write glued onto a line
    ids = logged_ids(url)
    assert len(ids) == len(set(ids)) == 500 - logger.stats()["dropped"]
    assert {f"r{i}" for i in [*range(100), *range(400, 500)]} <= set(ids)


def test_a_spool_folder_that_takes_no_file_does_not_stop_the_logger(tmp_path, caplog):
    """A read-only spool folder (a mount gone read-only, a wrong volume): the logger cannot even
    make the lock file that names its files, which must not keep the API from starting; rows
    still reach the database, and the lock is taken once the folder is writable again."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    with tiny_filesystem(tmp_path / "spool") as spool:
        subprocess.run(["mount", "-o", "remount,ro", str(spool)], check=True)
        logger = PredictionLogger(spool, url=url, flush_interval=0.02, claim_interval=0.1)
        logger.start()
        logger.submit_many(record(i) for i in range(20))
        assert logger.flush(timeout=10), logger.stats()
        assert not logger._owner.locked
        assert any(
            "cannot make the prediction log's lock" in r.getMessage() for r in caplog.records
        )
        subprocess.run(["mount", "-o", "remount,rw", str(spool)], check=True)
        assert wait_until(lambda: logger._owner.locked, timeout=5)
        assert (spool / f"{logger.owner_id}.lock").exists()
        logger.submit_many(record(i) for i in range(20, 30))
        assert logger.flush(timeout=10)
        logger.close()
    assert logged_ids(url) == [f"r{i}" for i in range(30)]


def test_a_torn_write_is_cut_off_and_never_glued_to_the_next_line(tmp_path):
    """A write the disk takes only part of (a short write on a full tmpfs) is cut back off the
    spool and the journal, so the next line starts on a line of its own."""
    with tiny_filesystem(tmp_path / "disk") as disk:
        owner = spool_files.Owner(disk)
        spool, journal = spool_files.Spool(disk, owner), spool_files.Journal(disk, owner)
        spool.append([record(0)])
        journal.append(spool_files.encode([record(0)]))
        filler = fill(disk, leave=2_048)
        big = [record(i) for i in range(1, 200)]  # ~30 kB: only part of it fits
        with pytest.raises(OSError) as raised:
            spool.append(big)
        assert raised.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            journal.append(spool_files.encode(big))
        filler.unlink()
        spool.append([record(200)])
        journal.append(spool_files.encode([record(200)]))
        spool.rotate()
        journal.close(everything_handled=False)
        files = sorted(disk.glob("*.jsonl")) + sorted(disk.glob("*.journal"))
        rows = [
            r.request_id
            for path in files
            for line in path.read_bytes().splitlines(keepends=True)
            for r in spool_files.decode(line)  # raises on a glued or torn line
        ]
    assert sorted(rows) == ["r0", "r0", "r200", "r200"]


def test_a_torn_last_line_is_counted(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    spool.mkdir()
    torn = b'[["torn'
    lines = spool_files.encode([record(0)]) + spool_files.encode([record(1)])
    (spool / f"{1:020d}-999999999.jsonl").write_bytes(lines + torn)
    logger = PredictionLogger(spool, url=url).start()
    assert logger.flush(timeout=10)
    logger.close()
    assert logged_ids(url) == ["r0", "r1"]
    assert logger.stats()["torn_bytes"] == len(torn) and logger.stats()["quarantined"] == 0


def test_an_error_in_the_writer_loop_does_not_end_the_thread(tmp_path, monkeypatch, caplog):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    logger = PredictionLogger(tmp_path / "spool", url=url, flush_interval=0.02)
    real_trim, calls = logger._trim_journal, []

    def failing_trim() -> None:
        calls.append(1)
        if len(calls) <= 2:  # the batches of both flushes pass here
            raise RuntimeError("a bug in the writer")
        real_trim()

    monkeypatch.setattr(logger, "_trim_journal", failing_trim)
    logger.start()
    logger.submit_many(record(i) for i in range(10))
    assert logger.flush(timeout=10)
    logger.submit_many(record(i) for i in range(10, 20))
    assert logger.flush(timeout=10)
    assert logger._thread is not None and logger._thread.is_alive()
    logger.close()
    assert sorted(logged_ids(url)) == sorted(f"r{i}" for i in range(20))
    assert logger.stats()["writer_errors"]["internal"] == 2
    logged = [r for r in caplog.records if "a bug in the writer" in r.getMessage()]
    assert len(logged) == 1  # once per kind and ERROR_LOG_SECONDS


def poison(i: int, **change) -> PredictionRecord:
    return record(i)._replace(**change)


def test_a_row_the_database_refuses_goes_to_the_dead_letter_file(postgres_url, tmp_path):
    """One row with a model_version longer than the column's 50 characters and one with a
    request id longer than 128, among good rows (submitted past the API's validation): the
    good rows arrive, the bad ones go to the dead-letter file, the writer goes on; once the
    columns are widened, `python -m api.spool --replay-dead-letter` inserts them."""
    url = postgres_url
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    logger = PredictionLogger(spool, url=url, flush_interval=0.02).start()
    rows = [record(i) for i in range(100)]
    rows[37] = poison(37, model_version="v" * 51)
    rows[80] = poison(80, request_id="r80-" + "x" * 130)
    logger.submit_many(rows)
    assert logger.flush(timeout=15), logger.stats()
    logger.submit_many(record(i) for i in range(100, 150))  # and the log keeps going
    assert logger.flush(timeout=15), logger.stats()
    assert logger._thread is not None and logger._thread.is_alive()
    logger.close()

    good = [f"r{i}" for i in range(150) if i not in (37, 80)]
    assert logged_ids(url) == good
    stats = logger.stats()
    assert stats["dead_lettered"] == 2 and stats["writer_errors"]["rejected"] == 2
    assert stats["written"] == 148 and stats["spooled"] == 0
    (letters,) = spool_files.dead_letter_files(spool)
    assert letters.parent == spool / "dead-letter"
    kept = [r for line in letters.read_bytes().splitlines() for r in spool_files.decode(line)]
    assert kept == [rows[37], rows[80]]

    with get_engine(url).begin() as conn:
        conn.execute(text("ALTER TABLE prediction_logs ALTER COLUMN model_version TYPE text"))
        conn.execute(text("ALTER TABLE prediction_logs ALTER COLUMN request_id TYPE text"))
    assert spool_files.main(["--replay-dead-letter", "--spool-dir", str(spool),
                             "--database-url", url]) == 0  # fmt: skip
    assert sorted(logged_ids(url)) == sorted([*good, rows[37].request_id, rows[80].request_id])
    assert spool_files.dead_letter_files(spool) == []


def test_a_refused_row_in_the_spool_does_not_block_its_replay(postgres_url, tmp_path):
    """A refused row among spooled ones (left by a stopped worker) used to fail its file's
    replay as 'database down' every second, forever, and every later row queued behind it."""
    url = postgres_url
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    spool.mkdir()
    rows = [record(i) for i in range(20)]
    rows[5] = poison(5, model_version="v" * 51)
    lines = b"".join(spool_files.encode(rows[i : i + 4]) for i in range(0, 20, 4))
    (spool / f"{1:020d}-999999999.jsonl").write_bytes(lines)
    logger = PredictionLogger(spool, url=url, flush_interval=0.02).start()
    assert logger.flush(timeout=15), logger.stats()
    logger.submit_many(record(i) for i in range(20, 30))
    assert logger.flush(timeout=15), logger.stats()
    logger.close()
    assert logged_ids(url) == [f"r{i}" for i in range(30) if i != 5]
    assert logger.stats()["dead_lettered"] == 1 and logger.stats()["replayed"] == 19
    (letters,) = spool_files.dead_letter_files(spool)
    assert spool_files.decode(letters.read_bytes()) == [rows[5]]
