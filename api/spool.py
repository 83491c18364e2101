"""The prediction logger's files: the spool (rows waiting for the database) and the journal
(rows answered to a client and not yet handled by the writer thread), one folder for both.

Every file holds lines of `data.prediction_log`'s line format, one line per request or batch.
A line is written whole or not at all as far as a reader is concerned: one that does not end in
a newline was torn by a process that died while writing it, and was never acknowledged.

- The spool (`<ns>-<id>.jsonl`) is fsync'ed: rows there survive a machine crash.
- The journal (`<ns>-<id>.journal`) is written in the request handler before the answer, with
  one `write` and no fsync: the kernel holds the written pages, so the rows outlive a killed
  process (SIGKILL, the OOM killer, a crash), though not a crash of the machine. The writer
  rotates it every JOURNAL_ROTATE_SECONDS and deletes a closed segment once every row queued
  before it closed is in the database or the spool.
- Files are owned by a logger process's random id (`Owner`), not by its pid: PIDs repeat in a
  restarted container and across replicas sharing the folder (a compose volume), each in its
  PID namespace. The owner holds an exclusive flock on `<id>.lock` for its whole life; the
  kernel drops it when the process dies, however it dies, and flock works between containers
  sharing a volume on one host. A logger that starts, and every CLAIM_SECONDS after
  (`api.logger`), claims the files of owners whose lock it can take or whose lock file is gone
  (`claim_orphans`): it holds the dead owner's lock, renames its spool and journal files to
  spool files of its own and deletes the lock; the logger replays them in order. A live
  owner's files are never touched, and each orphan is renamed by exactly one claimer. Rows
  already in the database are skipped by the table's key, so a journal that overlaps what was
  written costs a little replay time, never a duplicate. Files an older version named
  `<ns>-<pid>` are claimed too (see `claim_orphans`).
- The folder must be local to the host (a volume, a PersistentVolume mounted by one node at a
  time): flock across NFS hosts is not to be trusted.
- A line that cannot be read (a disk error, a hand edit, a bug) must neither stop the replay of
  the rows behind it nor be thrown away: it is moved to `<name>.quarantine` beside the file,
  counted, and logged once with the file and line number.
- A write the disk cannot take whole (ENOSPC) is cut back off the spool or journal file, so
  the next line never glues onto a torn one; a torn last line (no newline) is skipped on
  reading, its bytes logged and counted.
- `dead-letter/` holds the rows the database refused for good (a value a column rejects), in
  the same line format, until `python -m api.spool --replay-dead-letter` re-sends them.

`disk_usage` measures the folder for the metrics: the bytes of each kind of file and the room
left on the filesystem under it, which the spool fills while the database is down.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from data.prediction_log import PredictionRecord, UnreadableLine, decode, encode

log = logging.getLogger(__name__)

SPOOL_SUFFIX = ".jsonl"
JOURNAL_SUFFIX = ".journal"
QUARANTINE_SUFFIX = ".quarantine"
# Rows the database refused for good (a value a column rejects), in the spool's line format.
DEAD_LETTER_DIR = "dead-letter"
REPLAYING_SUFFIX = ".replaying"
# `<id>.lock`: held (flock) by the live logger process whose files are named `<ns>-<id>.*`.
LOCK_SUFFIX = ".lock"
OWNER_PREFIX = "w"  # owner ids are `w` + hex: never all digits, as an older version's pids
# A file named by an older version (`<ns>-<pid>`) whose pid is alive here is still claimed
# when nothing has written to it for this long: the pid may be another container's process.
LEGACY_IDLE_SECONDS = 60.0
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


class Owner:
    """This process's identity in the spool folder, and the lock that says it is alive.

    The id is random (`w` + 16 hex digits), so it is unique across containers, hosts and
    restarts, where PIDs are not: a restarted container numbers its processes as before, and
    replicas sharing a volume have PID namespaces of their own. The owner holds an exclusive
    `flock` on `<id>.lock` in the folder for its whole life. The kernel drops it when the
    process dies however it dies (SIGKILL, the OOM killer; a zombie holds no lock), and flock
    works between containers sharing a volume on one host. The lock file is made under a
    temporary name, locked, then renamed into place, so no one ever sees it unlocked while its
    owner lives. The descriptor is not inherited by `exec`ed children (Python's default); a bare
    `fork` would share the lock with the child.

    A folder that cannot take the lock file (read-only, no inode left) must not keep the API
    from starting: that is logged, and `lock` is tried again at each claim pass."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.id = OWNER_PREFIX + secrets.token_hex(8)
        self.lock_path = folder / f"{self.id}{LOCK_SUFFIX}"
        self._fd: int | None = None
        self._released = False
        self._failed = False  # logged once, not at every claim pass
        self.lock()

    def lock(self) -> bool:
        """Hold `<id>.lock` if not yet held (never raises); whether it is held."""
        if self._fd is not None or self._released:
            return self._fd is not None
        making = self.folder / f"{self.id}{LOCK_SUFFIX}.new"
        try:
            fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._cannot_lock(exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
            os.rename(making, self.lock_path)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                making.unlink()
            self._cannot_lock(exc)
            return False
        self._fd = fd
        if self._failed:
            log.warning("prediction log lock %s taken after all", self.lock_path)
        return True

    def _cannot_lock(self, exc: OSError) -> None:
        if not self._failed:
            log.critical(
                "cannot make the prediction log's lock file %s (%s): until it can, other "
                "loggers may take this one's files", self.lock_path, exc,
            )  # fmt: skip
        self._failed = True

    def file_name(self, suffix: str) -> str:
        """`<ns>-<id><suffix>`: names sort in the order the files were started."""
        return f"{time.time_ns():020d}-{self.id}{suffix}"

    def spool_files(self) -> list[Path]:
        return sorted(self.folder.glob(f"*-{self.id}{SPOOL_SUFFIX}"))

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def release(self, unlink: bool = True) -> None:
        """Give up the lock: the files left in the folder become orphans, for the next logger
        to claim. `unlink=False` leaves the lock file as a killed process does."""
        self._released = True
        if self._fd is None:
            return
        if unlink:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.close(fd)


def claim_orphans(folder: Path, owner: Owner) -> int:
    """Rename the spool and journal files of dead owners to spool files of `owner`; how many.

    An owner is dead when its lock can be taken (LOCK_EX | LOCK_NB) or its lock file is gone
    (released on a clean stop). Its lock is held while its files are renamed, then deleted, so
    two claimers are serialized; each file is renamed by exactly one of them (a rename is
    atomic: the other finds it gone). Files named by an older version (`<ns>-<pid>`) are
    claimed when their pid is this process's (a restarted container's new process has the
    old one's pid) or not alive in this PID namespace, else once nothing has written them for
    LEGACY_IDLE_SECONDS (the pid may be another process's, or another container's). Never
    raises FileNotFoundError: files come and go meanwhile."""
    claimed = 0
    owner.lock()  # if it could not be made at start
    by_owner: dict[str, list[Path]] = {}
    for path in _data_files(folder):
        by_owner.setdefault(path.stem.partition("-")[2], []).append(path)
    for path in folder.glob(f"{OWNER_PREFIX}*{LOCK_SUFFIX}"):
        by_owner.setdefault(path.name[: -len(LOCK_SUFFIX)], [])
    by_owner.pop(owner.id, None)
    for other, paths in sorted(by_owner.items()):
        if other.isdigit():
            claimed += sum(_take(path, owner) for path in paths if _legacy_orphan(path, other))
            continue
        if not other.startswith(OWNER_PREFIX) or "-" in other:
            continue  # not a file of ours
        with _dead_owner_lock(folder / f"{other}{LOCK_SUFFIX}") as dead:
            if dead:
                # Listed again under the lock: what the dead owner left, complete.
                claimed += sum(_take(path, owner) for path in _data_files(folder, other))
    return claimed


def _data_files(folder: Path, owner_id: str = "") -> list[Path]:
    return [*folder.glob(f"*-{owner_id or '*'}{SPOOL_SUFFIX}"),
            *folder.glob(f"*-{owner_id or '*'}{JOURNAL_SUFFIX}")]  # fmt: skip


@contextlib.contextmanager
def _dead_owner_lock(lock: Path) -> Iterator[bool]:
    """Whether the owner of `lock` is dead; if so, its lock is held until the block ends and
    then deleted."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True  # released by a clean stop, or claimed and deleted just now
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False  # alive
            return
        yield True
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    finally:
        os.close(fd)


def _legacy_orphan(path: Path, pid: str) -> bool:
    if int(pid) <= 0 or int(pid) == os.getpid() or not _alive(int(pid)):
        return True
    try:
        return time.time() - path.stat().st_mtime > LEGACY_IDLE_SECONDS
    except FileNotFoundError:
        return False


def _take(path: Path, owner: Owner) -> int:
    """Rename `path` to a spool file of `owner`, keeping its time stamp (its place in the
    replay order); 1 if done, 0 if someone else took it first."""
    head = path.stem.partition("-")[0]
    stamp = int(head) if head.isdigit() else 0
    while True:  # only this process makes names of its own: check, then rename
        target = path.with_name(f"{stamp:020d}-{owner.id}{SPOOL_SUFFIX}")
        if not target.exists():
            break
        stamp += 1
    try:
        path.rename(target)
    except FileNotFoundError:
        return 0
    log.info("claimed %s as %s", path.name, target.name)
    return 1


def read_batches(
    path: Path,
    batch_size: int,
    on_quarantine: Callable[[int], None] | None = None,
    on_torn: Callable[[int], None] | None = None,
) -> Iterator[list[PredictionRecord]]:
    """The records of a spool file in order, `batch_size` at a time. Unreadable lines are
    first moved out of the file (`quarantine`); the file is then read from its start, so a
    reader that had already handed on some batches hands them on again (they are skipped by
    the table's key). A torn last line (no newline) is skipped and its bytes passed to
    `on_torn`, once."""
    try:
        yield from _batches(path, batch_size, on_torn)
    except UnreadableLine:
        moved = quarantine(path, on_torn)
        if on_quarantine is not None:
            on_quarantine(moved)
        yield from _batches(path, batch_size)


def _batches(
    path: Path, batch_size: int, on_torn: Callable[[int], None] | None = None
) -> Iterator[list[PredictionRecord]]:
    batch: list[PredictionRecord] = []
    for _, line in _whole_lines(path, on_torn):
        batch.extend(decode(line))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _whole_lines(
    path: Path, on_torn: Callable[[int], None] | None = None
) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.endswith(b"\n"):
                yield number, line
            else:  # a torn last line was never acknowledged
                log.warning("skipped a torn last line of %d bytes in %s", len(line), path)
                if on_torn is not None:
                    on_torn(len(line))


def quarantine(path: Path, on_torn: Callable[[int], None] | None = None) -> int:
    """Move the unreadable lines of `path` to `<name>.quarantine` beside it; how many. A torn
    last line is dropped from the rewritten file."""
    kept = path.with_name(path.name + ".tmp")
    bad = path.with_name(path.stem + QUARANTINE_SUFFIX)
    moved = 0
    with open(kept, "wb") as good:
        for number, line in _whole_lines(path, on_torn):
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
    """This worker's current spool file: appended to and fsync'ed, rotated before a replay.

    A write the disk cannot take whole (ENOSPC, EIO) is cut back off the file and the file is
    closed: the next append starts a new one, so a torn write never glues onto the next line,
    and the spool works again as soon as the disk has room.
    """

    def __init__(self, folder: Path, owner: Owner) -> None:
        self.folder = folder
        self.owner = owner
        self._fd: int | None = None
        self._size = 0

    def append(self, records: list[PredictionRecord]) -> None:
        """Raises OSError when the disk cannot take them (nothing of them is left behind)."""
        data = encode(records)
        if self._fd is None:
            path = self.folder / self.owner.file_name(SPOOL_SUFFIX)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError:
            _cut(self._fd, self._size)
            self.rotate()
            raise
        self._size += len(data)

    def rotate(self) -> None:
        """Close the current file: what comes next goes to a new one, behind it. Never
        raises: every append was fsync'ed, so a failing close loses nothing."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` or raise OSError: a short write is a full disk."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _cut(fd: int, size: int) -> None:
    """Truncate a file back to `size` after a failed write (best effort: if even that fails,
    the reader cuts the torn line off)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)


class Journal:
    """Segments of rows answered to clients, deleted once the writer has handled them.

    `append` runs in the request handler under the logger's submit lock, the lock under which
    the same rows are queued; `rotate` takes the queue's count of rows put so far under that
    lock too, so a closed segment holds exactly rows the queue had received by then.
    """

    def __init__(self, folder: Path, owner: Owner) -> None:
        self.folder = folder
        self.owner = owner
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self.opened_at = 0.0
        self._closed: list[tuple[Path, int]] = []  # segment, rows queued when it closed

    def append(self, data: bytes) -> None:
        """Raises OSError when the disk cannot take `data`; what was written of it is cut back
        off, so the next request's line does not glue onto a torn one."""
        if self._fd is None:
            self._path = self.folder / self.owner.file_name(JOURNAL_SUFFIX)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = 0
            self.opened_at = time.monotonic()
        if os.write(self._fd, data) != len(data):  # one call on the hot path, as before
            _cut(self._fd, self._size)
            raise OSError(errno.ENOSPC, "short write to the prediction log journal")
        self._size += len(data)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def rotate(self, queued: int) -> None:
        if self._fd is not None and self._path is not None:
            with contextlib.suppress(OSError):  # nothing buffered: the written pages stay
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


def append_dead_letter(path: Path, records: list[PredictionRecord]) -> None:
    """Append rows the database rejected to the dead-letter file `path` (fsync'ed); raises
    OSError when the disk cannot take them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, encode(records))
            os.fsync(fd)
        except OSError:
            _cut(fd, size)
            raise
    finally:
        os.close(fd)


def dead_letter_files(folder: Path) -> list[Path]:
    """The dead-letter files under the spool folder `folder`, oldest first (with any a replay
    left half done)."""
    letters = folder / DEAD_LETTER_DIR
    return sorted([*letters.glob(f"*{SPOOL_SUFFIX}"), *letters.glob(f"*{REPLAYING_SUFFIX}")])


def main(argv: list[str] | None = None) -> int:
    """`python -m api.spool --replay-dead-letter`: re-send the rows the database rejected."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m api.spool",
        description="The prediction log's spool folder (PREDICTION_SPOOL_DIR).",
    )
    parser.add_argument(
        "--replay-dead-letter",
        action="store_true",
        required=True,
        help="insert the rows of <spool>/dead-letter/ once the cause is fixed (a widened "
        "column, a dropped constraint); rows still rejected go to a new dead-letter file",
    )
    parser.add_argument("--spool-dir", help="default: PREDICTION_SPOOL_DIR")
    parser.add_argument("--database-url", help="default: DATABASE_URL")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from api.logger import replay_dead_letter
    from data.settings import get_settings

    settings = get_settings()
    folder = (
        Path(args.spool_dir) if args.spool_dir else settings.path(settings.PREDICTION_SPOOL_DIR)
    )
    try:
        written, rejected = replay_dead_letter(folder, url=args.database_url)
    except Exception as exc:
        log.error("dead-letter replay stopped (the files are kept): %s", exc)
        return 1
    print(f"{written} rows inserted, {rejected} still rejected")
    return 0 if rejected == 0 else 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    raise SystemExit(main())
