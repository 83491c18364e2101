"""Who owns the prediction log's files, with real processes: loggers sharing one spool folder
(workers of one server, replicas sharing a volume) never take each other's live files, and the
files of one that died (SIGKILL, a restarted container whose processes get the same PIDs) are
claimed by a live one within seconds, replayed once, and every row lands once.

Each logger process owns its files by a random id and a flock'ed `<id>.lock` (`api.spool.Owner`);
the pid, which containers and restarts reuse, no longer says anything.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from api import spool as spool_files
from api.logger import CLAIM_SECONDS, PredictionLogger
from data.db import get_engine, init_db
from data.settings import PROJECT_ROOT
from tests.test_logger import count_rows, logged_ids, record
from tests.test_logger_faults import wait_until
from tools.testkit.api_server import Load, ServerProcess, wait_until_logged
from tools.testkit.api_server import logged_ids as logged_counts
from tools.testkit.traffic import request_rows

# A logger in a process of its own: submits `count` rows named `<prefix><i>`, prints its owner
# id, then on a line "close" on stdin flushes (if the database answers) and closes cleanly.
LOGGER_PROCESS = """
import json, sys
from api.logger import PredictionLogger
from tests.test_logger import record
spool, url, prefix, count = sys.argv[1:5]
logger = PredictionLogger(spool, url=url, flush_interval=0.02, retry_interval=0.2,
                          claim_interval=0.2).start()
logger.submit_many(record(i, prefix) for i in range(int(count)))
print(logger.owner_id, flush=True)
for line in sys.stdin:
    if line.strip() == "close":
        logger.flush(timeout=30)
        logger.close()
        print(json.dumps(logger.stats()), flush=True)
        break
"""


class LoggerProcess:
    def __init__(self, spool: Path, url: str, prefix: str, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOGGER_PROCESS, str(spool), url, prefix, str(count)],
            cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )  # fmt: skip
        assert self.process.stdout is not None
        self.owner_id = self.process.stdout.readline().strip()
        assert self.owner_id.startswith(spool_files.OWNER_PREFIX), self.owner_id

    def files(self, spool: Path) -> list[Path]:
        return sorted(spool.glob(f"*-{self.owner_id}.*"))

    def close(self) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("close\n")
        self.process.stdin.flush()
        stats = json.loads(self.process.stdout.readline())
        assert self.process.wait(30) == 0
        return stats

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def test_replicas_sharing_a_spool_folder_keep_their_files_and_claim_a_killed_ones(
    private_postgres, tmp_path
):
    """Two loggers (two replicas sharing a volume) spool while the database is down: neither
    renames, replays or deletes the other's live files, however often they look. One is
    SIGKILLed: the other claims its journal and spool within a second or so (its claim
    interval), without a restart. The database back, every row of both lands exactly once."""
    url = private_postgres.url
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    private_postgres.stop()
    one = LoggerProcess(spool, url, "a", 400)
    two = LoggerProcess(spool, url, "b", 300)
    try:
        assert wait_until(lambda: count_rows(one.files(spool)) >= 400), one.files(spool)
        assert wait_until(lambda: count_rows(two.files(spool)) >= 300), two.files(spool)
        time.sleep(1.5)  # seven claim intervals each
        assert (spool / f"{one.owner_id}.lock").exists()
        assert (spool / f"{two.owner_id}.lock").exists()
        assert {p.suffix for p in two.files(spool)} >= {".jsonl"}
        assert count_rows(two.files(spool)) >= 300  # nothing of the live one was taken
        spooled_by_two = count_rows(f for f in two.files(spool) if f.suffix == ".jsonl")

        two.kill()
        assert wait_until(lambda: two.files(spool) == [], timeout=10), two.files(spool)
        assert not (spool / f"{two.owner_id}.lock").exists()
        assert count_rows(one.files(spool)) >= 400 + spooled_by_two

        private_postgres.start()
        stats = one.close()
    finally:
        for process in (one, two):
            if process.process.poll() is None:
                process.kill()
    ids = Counter(logged_ids(url))
    assert set(ids) == {f"a{i}" for i in range(400)} | {f"b{i}" for i in range(300)}
    assert max(ids.values()) == 1
    assert stats["dropped"] == 0 and sum(stats["writer_errors"].values()) == 0
    assert list(spool.iterdir()) == []  # every file replayed, both locks gone


def test_a_killed_process_journal_is_replayed_whatever_its_pid(private_postgres, tmp_path):
    """A restarted container numbers its processes as before, so the new worker often has the
    pid of the one that was killed. Files named by pid were "its own" then, and a journal of its
    own was never read. Now: a killed process's files (a random id) are claimed by the next
    logger; and files an older version named `<ns>-<pid>` are claimed even when that pid is
    this very process's."""
    url = private_postgres.url
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    private_postgres.stop()
    killed = LoggerProcess(spool, url, "k", 200)
    assert wait_until(lambda: count_rows(killed.files(spool)) >= 200)
    killed.kill()
    # As an older version left them in the container before its restart: a journal named by
    # the pid the new worker now has (this process's), and a spool file of another pid.
    legacy = [record(i, "old") for i in range(30)]
    (spool / f"{1:020d}-{os.getpid()}.journal").write_bytes(spool_files.encode(legacy[:20]))
    (spool / f"{2:020d}-{os.getpid()}.journal").write_bytes(spool_files.encode(legacy[20:]))
    # and one of pid 1, alive here (and in every container): claimed once a minute idle
    pid1 = spool / f"{3:020d}-1.jsonl"
    pid1.write_bytes(spool_files.encode([record(0, "pid1-")]))
    idle = time.time() - spool_files.LEGACY_IDLE_SECONDS - 1
    os.utime(pid1, (idle, idle))
    private_postgres.start()

    successor = PredictionLogger(spool, url=url, flush_interval=0.02).start()
    assert successor.owner_id != killed.owner_id
    assert successor.flush(timeout=20), successor.stats()
    successor.close()
    ids = Counter(logged_ids(url))
    expected = {f"k{i}" for i in range(200)} | {r.request_id for r in legacy} | {"pid1-0"}
    assert set(ids) == expected and max(ids.values()) == 1
    assert list(spool.iterdir()) == []


def test_a_clean_stop_replays_what_a_worker_killed_since_the_last_claim_left(tmp_path):
    """A worker killed moments before the server's clean stop (its successor still starting,
    the survivor's next claim not due): the survivor claims the orphan while it stops and
    writes its rows, so a clean stop leaves no file behind (CI once found a journal left)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    survivor = PredictionLogger(spool, url=url, flush_interval=0.02, claim_interval=3600)
    survivor.start()
    killed = spool_files.Owner(spool)
    rows = [record(i, "killed") for i in range(50)]
    (spool / killed.file_name(".journal")).write_bytes(spool_files.encode(rows))
    killed.release(unlink=False)  # as SIGKILL leaves it: the lock file stays, unlocked
    survivor.submit_many(record(i, "alive") for i in range(10))
    assert survivor.flush(timeout=10)
    survivor.close()
    ids = Counter(logged_ids(url))
    assert set(ids) == {r.request_id for r in rows} | {f"alive{i}" for i in range(10)}
    assert max(ids.values()) == 1
    assert list(spool.iterdir()) == []


def _claim_many(folder: str, start, results, finish) -> None:
    owner = spool_files.Owner(Path(folder))
    start.wait()
    claimed = 0
    for _ in range(20):
        claimed += spool_files.claim_orphans(Path(folder), owner)
    results.put((owner.id, claimed))
    finish.wait()  # alive (its lock held) until every claimer is done: then its files are
    # orphans again, and a claimer still looking would rightly take them


def test_claimers_racing_for_a_dead_owners_files_take_each_file_once(tmp_path):
    """Four processes claim the 300 files of one dead owner at the same moment, 20 times each:
    every file is taken by exactly one of them, none raises (two replicas replaying one file
    used to end in an uncaught FileNotFoundError), and no row is lost or doubled."""
    spool = tmp_path / "spool"
    spool.mkdir()
    dead = spool_files.Owner(spool)
    for i in range(300):
        suffix = ".journal" if i % 2 else ".jsonl"
        (spool / dead.file_name(suffix)).write_bytes(spool_files.encode([record(i)]))
    dead.release(unlink=i % 2 == 0)  # as a kill leaves it (the lock file stays)
    context = multiprocessing.get_context("spawn")
    start, results, finish = context.Event(), context.Queue(), context.Event()
    claimers = [
        context.Process(target=_claim_many, args=(str(spool), start, results, finish))
        for _ in range(4)
    ]
    for process in claimers:
        process.start()
    time.sleep(1.0)
    start.set()
    got = dict(results.get(timeout=60) for _ in claimers)
    finish.set()
    for process in claimers:
        process.join(30)
        assert process.exitcode == 0
    assert sum(got.values()) == 300, got
    files = sorted(spool.glob("*.jsonl"))
    assert len(files) == 300 and not list(spool.glob("*.journal"))
    assert {f.stem.partition("-")[2] for f in files} <= set(got)
    rows = Counter(r.request_id for f in files for r in spool_files.decode(f.read_bytes()))
    assert set(rows) == {f"r{i}" for i in range(300)} and max(rows.values()) == 1
    assert not (spool / f"{dead.id}.lock").exists()


def test_a_spool_file_that_vanishes_during_the_replay_does_not_stop_the_writer(tmp_path):
    """Files deleted under the writer while it replays them (by hand, by another process)
    cost neither an error nor the rows behind them."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    logger = PredictionLogger(spool, url=url, flush_interval=0.02, batch_size=5)
    owner = logger._owner
    paths = []
    for n in range(200):
        path = spool / owner.file_name(".jsonl")
        path.write_bytes(spool_files.encode([record(i, f"f{n}-") for i in range(10)]))
        paths.append(path)
    logger.start()
    for path in reversed(paths[100:]):  # while the writer works from the oldest
        path.unlink(missing_ok=True)
    assert logger.flush(timeout=30), logger.stats()
    logger.submit_many(record(i, "after") for i in range(10))
    assert logger.flush(timeout=10)
    assert logger._thread is not None and logger._thread.is_alive()
    logger.close()
    assert logger.stats()["writer_errors"] == {"disk": 0, "rejected": 0, "internal": 0}
    ids = set(logged_ids(url))
    assert {f"f{n}-{i}" for n in range(100) for i in range(10)} <= ids
    assert {f"after{i}" for i in range(10)} <= ids


def test_a_killed_worker_rows_land_within_seconds_while_the_server_runs(
    server_env, postgres_url, tmp_path, fraud_schema
):
    """One of two workers SIGKILLed under load: what it had answered is in Postgres within
    CLAIM_SECONDS and a margin, the server still serving, and after a clean stop no journal or
    spool file is left and every acknowledged id is logged exactly once."""
    spool = Path(server_env["PREDICTION_SPOOL_DIR"])
    server = ServerProcess(tmp_path, server_env | {"DATABASE_URL": postgres_url})
    try:
        server.wait_ready()
        with Load(server.url, request_rows(fraud_schema, 50), threads=6) as load:
            time.sleep(2)
            os.kill(server.worker_pids()[0], signal.SIGKILL)
            killed_at = time.monotonic()
            answered = set(load.acknowledged)
            logged = wait_until_logged(postgres_url, answered, timeout=CLAIM_SECONDS + 15)
            landed_after = time.monotonic() - killed_at
            missing = answered - set(logged)
            assert not missing, f"{len(missing)} answered rows not logged {landed_after:.0f} s on"
            assert server.process.poll() is None
            time.sleep(1)
        print(f"\nrows of the killed worker in Postgres {landed_after:.1f} s after the kill")
        assert server.sigterm() == 0
    finally:
        server.stop()
    assert len(load.acknowledged) > 500
    assert not [p.name for p in spool.iterdir() if p.suffix in (".journal", ".jsonl")]
    logged = logged_counts(postgres_url)
    assert not set(load.acknowledged) - set(logged)
    assert max(logged.values()) == 1
