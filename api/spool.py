"""The prediction logger's files: the spool (rows waiting for the database) and the journal
(rows answered to a client and not yet handled by the writer thread), one folder for both.

Every file holds lines of `data.prediction_log`'s line format, one line per request or batch.
A line is written whole or not at all as far as a reader is concerned: one that does not end in
a newline was torn by a process that died while writing it, and was never acknowledged.

- The spool (`<ns>-<pid>.jsonl`) is fsync'ed: rows there survive a machine crash.
- The journal (`<ns>-<pid>.journal`) is written in the request handler before the answer, with
  one `write` and no fsync: the kernel holds the written pages, so the rows outlive a killed
  process (SIGKILL, the OOM killer, a crash), though not a crash of the machine. The writer
  rotates it every JOURNAL_ROTATE_SECONDS and deletes a closed segment once every row queued
  before it closed is in the database or the spool.
- A worker that starts claims the spool and journal files of workers that are gone, renaming
  them to spool files of its own; the logger replays them in order. Rows already in the
  database are skipped by the table's key, so a journal that overlaps what was written costs
  a little replay time, never a duplicate.
- A line that cannot be read (a disk error, a hand edit, a bug) must neither stop the replay of
  the rows behind it nor be thrown away: it is moved to `<name>.quarantine` beside the file,
  counted, and logged once with the file and line number.

`disk_usage` measures the folder for the metrics: the bytes of each kind of file and the room
left on the filesystem under it, which the spool fills while the database is down.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from data.prediction_log import PredictionRecord, UnreadableLine, decode, encode

log = logging.getLogger(__name__)

SPOOL_SUFFIX = ".jsonl"
JOURNAL_SUFFIX = ".journal"
QUARANTINE_SUFFIX = ".quarantine"
# The files of the folder by kind, as the metrics name them (`.tmp` files are a quarantine's
# rewrite in progress: a copy of a spool file, not more rows).
FILE_KINDS = {SPOOL_SUFFIX: "spool", JOURNAL_SUFFIX: "journal", QUARANTINE_SUFFIX: "quarantine"}


@dataclass(frozen=True)
class DiskUsage:
    """The prediction log's files in the folder and the filesystem they are on, in bytes."""

    files: dict[str, int]  # kind (FILE_KINDS' values) -> bytes
    free: int  # available to an unprivileged process (statvfs f_bavail), as `df` shows
    size: int


def disk_usage(folder: Path) -> DiskUsage:
    """Raises OSError when the folder cannot be read (gone, not a folder)."""
    files = dict.fromkeys(FILE_KINDS.values(), 0)
    with os.scandir(folder) as entries:
        for entry in entries:
            kind = FILE_KINDS.get(os.path.splitext(entry.name)[1])
            if kind is not None:
                with contextlib.suppress(FileNotFoundError):  # replayed or claimed meanwhile
                    files[kind] += entry.stat(follow_symlinks=False).st_size
    stats = os.statvfs(folder)
    return DiskUsage(files, stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)


def file_name(suffix: str) -> str:
    """`<ns>-<pid><suffix>` for this process: names sort in the order the files were started."""
    return f"{time.time_ns():020d}-{os.getpid()}{suffix}"


def own_spool_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*-{os.getpid()}{SPOOL_SUFFIX}"))


def claim_orphans(folder: Path) -> int:
    """Rename the spool and journal files of dead processes to spool files of this one."""
    mine, claimed = os.getpid(), 0
    for path in [*folder.glob(f"*{SPOOL_SUFFIX}"), *folder.glob(f"*{JOURNAL_SUFFIX}")]:
        stamp, _, pid = path.stem.partition("-")
        if pid.isdigit() and int(pid) != mine and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):  # another worker claimed it first
                path.rename(path.with_name(f"{stamp}-{mine}{SPOOL_SUFFIX}"))
                claimed += 1
    return claimed


def read_batches(
    path: Path, batch_size: int, on_quarantine: Callable[[int], None] | None = None
) -> Iterator[list[PredictionRecord]]:
    """The records of a spool file in order, `batch_size` at a time. Unreadable lines are
    first moved out of the file (`quarantine`); the file is then read from its start, so a
    reader that had already handed on some batches hands them on again (they are skipped by
    the table's key)."""
    try:
        yield from _batches(path, batch_size)
    except UnreadableLine:
        moved = quarantine(path)
        if on_quarantine is not None:
            on_quarantine(moved)
        yield from _batches(path, batch_size)


def _batches(path: Path, batch_size: int) -> Iterator[list[PredictionRecord]]:
    batch: list[PredictionRecord] = []
    for _, line in _whole_lines(path):
        batch.extend(decode(line))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _whole_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.endswith(b"\n"):  # a torn last line was never acknowledged
                yield number, line


def quarantine(path: Path) -> int:
    """Move the unreadable lines of `path` to `<name>.quarantine` beside it; how many."""
    kept = path.with_name(path.name + ".tmp")
    bad = path.with_name(path.stem + QUARANTINE_SUFFIX)
    moved = 0
    with open(kept, "wb") as good:
        for number, line in _whole_lines(path):
            try:
                decode(line)
            except UnreadableLine as exc:
                with open(bad, "ab") as handle:
                    handle.write(line)
                log.error("unreadable prediction log line %d of %s moved to %s: %s",
                          number, path, bad, exc)  # fmt: skip
                moved += 1
            else:
                good.write(line)
        good.flush()
        os.fsync(good.fileno())
    os.replace(kept, path)
    return moved


class Spool:
    """This worker's current spool file: appended to and fsync'ed, rotated before a replay."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._file: io.BufferedWriter | None = None

    def append(self, records: list[PredictionRecord]) -> None:
        """Raises OSError when the disk cannot take them."""
        if self._file is None:
            self._file = open(self.folder / file_name(SPOOL_SUFFIX), "ab")  # noqa: SIM115
        self._file.write(encode(records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def rotate(self) -> None:
        """Close the current file: what comes next goes to a new one, behind it."""
        if self._file is not None:
            self._file.close()
            self._file = None


class Journal:
    """Segments of rows answered to clients, deleted once the writer has handled them.

    `append` runs in the request handler under the logger's submit lock, the lock under which
    the same rows are queued; `rotate` takes the queue's count of rows put so far under that
    lock too, so a closed segment holds exactly rows the queue had received by then.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self._path: Path | None = None
        self.opened_at = 0.0
        self._closed: list[tuple[Path, int]] = []  # segment, rows queued when it closed

    def append(self, data: bytes) -> None:
        if self._fd is None:
            self._path = self.folder / file_name(JOURNAL_SUFFIX)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.opened_at = time.monotonic()
        os.write(self._fd, data)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def rotate(self, queued: int) -> None:
        if self._fd is not None and self._path is not None:
            os.close(self._fd)
            self._closed.append((self._path, queued))
            self._fd = self._path = None

    def release(self, handled: int) -> None:
        """Delete the closed segments whose rows have all been handled."""
        while self._closed and self._closed[0][1] <= handled:
            path, _ = self._closed.pop(0)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def close(self, everything_handled: bool) -> None:
        """Close the open segment; delete all segments if every row was handled, else leave
        them for the next worker to replay."""
        self.rotate(queued=0)
        if everything_handled:
            for path, _ in self._closed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._closed.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
