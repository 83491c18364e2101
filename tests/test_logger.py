"""The prediction logger: batches into SQLite and Postgres, spools when the database is down,
replays once and in order, and loses nothing on close."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from api import spool as spool_files
from api.logger import PredictionLogger, PredictionRecord
from data.db import get_engine, init_db, prediction_logs

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def record(i: int, prefix: str = "r") -> PredictionRecord:
    return PredictionRecord(
        request_id=f"{prefix}{i}",
        predicted_at=T0 + timedelta(milliseconds=i),
        model_name="fraud-detector",
        model_version="1",
        features={"amount": float(i), "merchant_category": "travel", "is_foreign": 1.0, "x": None},
        predicted_class=i % 2,
        score=i / 1000,
        latency_ms=0.05,
    )


def logged_ids(url: str) -> list[str]:
    """Request ids in the order they were inserted (the table has no insertion counter: a
    transaction's id, then the row's place in the heap, or SQLite's rowid)."""
    engine = get_engine(url)
    order = "xmin::text::bigint, ctid" if engine.dialect.name == "postgresql" else "rowid"
    with engine.connect() as conn:
        return list(
            conn.execute(text(f"SELECT request_id FROM prediction_logs ORDER BY {order}")).scalars()
        )


def count_rows(paths) -> int:
    """Records in the whole lines of spool or journal files."""
    return sum(
        len(spool_files.decode(line))
        for path in paths
        for line in path.read_bytes().splitlines(keepends=True)
        if line.endswith(b"\n")
    )


def legacy_line(row: PredictionRecord) -> str:
    """A record in the one-object-per-line format spool files had before the journal."""
    values = row._asdict()
    values["predicted_at"] = row.predicted_at.isoformat()
    return json.dumps(values, separators=(",", ":"))


def test_rows_arrive_once_with_their_values(database_url, tmp_path):
    init_db(get_engine(database_url))
    logger = PredictionLogger(tmp_path / "spool", url=database_url, flush_interval=0.02).start()
    logger.submit_many(record(i) for i in range(2_500))
    logger.submit(record(7))  # a client retrying the same request id: still one row
    assert logger.flush()
    logger.close()
    ids = logged_ids(database_url)
    assert len(ids) == 2_500 and len(set(ids)) == 2_500
    with get_engine(database_url).connect() as conn:
        row = conn.execute(
            select(prediction_logs).where(prediction_logs.c.request_id == "r42")
        ).one()
    assert row.features == {
        "amount": 42.0,
        "merchant_category": "travel",
        "is_foreign": 1.0,
        "x": None,
    }
    assert (row.predicted_class, row.score, row.model_version) == (0, 0.042, "1")
    assert logger.stats()["written"] == 2_501 and logger.stats()["spooled"] == 0


AWKWARD = 'tab\there, new\nline, back\\slash, "quoted", \\N, \\., é, 🙂'


# COPY's text format escapes backslashes, tabs and line breaks; quotes pass as they are. The
# features of a batch are serialised in one piece and split between rows at "},{", unless a
# value holds that text too.
@pytest.mark.parametrize("awkward", [AWKWARD, AWKWARD + ' "},{" {}, {"a": 1}'])
def test_awkward_text_arrives_exactly(database_url, tmp_path, awkward):
    init_db(get_engine(database_url))
    logger = PredictionLogger(tmp_path / "spool", url=database_url, flush_interval=0.02).start()
    rows = [record(i) for i in range(3)]
    rows[1] = PredictionRecord(
        request_id=awkward,
        predicted_at=T0,
        model_name="fraud\tdetector",
        model_version="1",
        features={"merchant_category": awkward, "amount": 1e-300, "x": None},
        predicted_class=1,
        score=0.1 + 0.2,
        latency_ms=0.05,
    )
    logger.submit_many(rows)
    assert logger.flush()
    logger.close()
    with get_engine(database_url).connect() as conn:
        row = conn.execute(
            select(prediction_logs).where(prediction_logs.c.request_id == awkward)
        ).one()
    assert row.features == {"merchant_category": awkward, "amount": 1e-300, "x": None}
    assert row.model_name == "fraud\tdetector" and row.score == 0.1 + 0.2
    assert logged_ids(database_url) == ["r0", awkward, "r2"]


def test_a_dropped_connection_is_not_an_outage(postgres_url, tmp_path):
    """The writer keeps its connection between batches; when the server closes it (a restart,
    an idle timeout), the next batch goes through on a new one instead of to the spool."""
    init_db(get_engine(postgres_url))
    logger = PredictionLogger(tmp_path / "spool", url=postgres_url, flush_interval=0.02).start()
    logger.submit_many(record(i) for i in range(10))
    assert logger.flush()
    with get_engine(postgres_url).connect() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        assert any(killed)
    logger.submit_many(record(i) for i in range(10, 20))
    assert logger.flush()
    logger.close()
    assert logged_ids(postgres_url) == [f"r{i}" for i in range(20)]
    assert logger.stats()["spooled"] == 0 and logger.database_ok


def test_database_down_spools_then_replays_in_order(private_postgres, tmp_path):
    url = private_postgres.url
    init_db(get_engine(url))
    logger = PredictionLogger(
        tmp_path / "spool", url=url, flush_interval=0.02, retry_interval=0.2, batch_size=100
    ).start()
    logger.submit_many(record(i) for i in range(300))
    assert logger.flush()

    private_postgres.stop()
    logger.submit_many(record(i) for i in range(300, 900))
    # Nothing waits and nothing is lost: the rows are on disk, in order.
    deadline = datetime.now() + timedelta(seconds=10)
    while logger.stats()["spooled"] < 600 and datetime.now() < deadline:
        logger.flush(timeout=0.1)
    assert logger.stats()["spooled"] == 600
    assert not logger.database_ok
    spooled = [
        row.request_id
        for path in sorted((tmp_path / "spool").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
        for row in spool_files.decode(line)
    ]
    assert spooled == [f"r{i}" for i in range(300, 900)]

    private_postgres.start()
    logger.submit_many(record(i) for i in range(900, 1_000))
    assert logger.flush(timeout=20)
    logger.close()
    assert logged_ids(url) == [f"r{i}" for i in range(1_000)]  # once each, in order
    assert logger.stats()["replayed"] >= 600
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_close_with_database_down_keeps_rows_for_the_next_worker(private_postgres, tmp_path):
    url = private_postgres.url
    init_db(get_engine(url))
    private_postgres.stop()
    spool = tmp_path / "spool"
    dying = PredictionLogger(spool, url=url, flush_interval=0.02, retry_interval=60).start()
    dying.submit_many(record(i, "d") for i in range(50))
    dying.close(timeout=5)
    files = list(spool.glob("*.jsonl"))
    assert files and count_rows(files) == 50

    # Its lock released, its files are orphans: the next worker claims and replays them.
    assert not list(spool.glob("*.lock"))
    private_postgres.start()
    successor = PredictionLogger(spool, url=url, flush_interval=0.02).start()
    assert successor.flush(timeout=20)
    successor.close()
    assert sorted(logged_ids(url)) == sorted(f"d{i}" for i in range(50))


def test_full_queue_spills_to_disk_not_to_the_floor(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    logger = PredictionLogger(tmp_path / "spool", url=url, max_queue=10)  # writer not started
    logger.submit_many(record(i) for i in range(25))
    assert logger.stats()["queue_depth"] == 10
    assert logger.stats()["spooled"] == 15
    logger.start()
    assert logger.flush(timeout=10)
    logger.close()
    assert sorted(logged_ids(url)) == sorted(f"r{i}" for i in range(25))


@pytest.mark.parametrize("rows", [1, 3])
def test_torn_last_line_is_skipped(tmp_path, rows):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = b"".join(spool_files.encode([record(i)]) for i in range(rows))
    (spool / f"{1:020d}-999999999.jsonl").write_bytes(lines + b'[["torn')
    logger = PredictionLogger(spool, url=url).start()
    assert logger.flush(timeout=10)
    logger.close()
    assert len(logged_ids(url)) == rows
    with get_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(prediction_logs)).scalar() == rows


GARBAGE = [b"\x00\x17 not json at all\n", b'[["r-bad", "yesterday", "m", "1", {}, 0, 0.5, 1]]\n']


def test_a_bad_spool_line_is_quarantined_and_the_rest_replayed(private_postgres, tmp_path, caplog):
    """The database down, lines that cannot be read appended to the worker's spool file, the
    database back: every other row arrives, in order; the bad lines are kept beside the spool,
    counted and named once each. (They used to be caught as 'database unavailable': the file
    was retried every second forever, and every later row of the worker queued behind it.)"""
    url = private_postgres.url
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    logger = PredictionLogger(
        spool, url=url, flush_interval=0.02, retry_interval=0.2, batch_size=100
    ).start()
    private_postgres.stop()
    logger.submit_many(record(i) for i in range(200))
    deadline = datetime.now() + timedelta(seconds=10)
    while logger.stats()["spooled"] < 200 and datetime.now() < deadline:
        logger.flush(timeout=0.1)
    (own,) = spool.glob("*.jsonl")
    with open(own, "ab") as handle:
        handle.write(b"".join(GARBAGE))
    logger.submit_many(record(i) for i in range(200, 400))  # spooled behind the bad lines

    private_postgres.start()
    assert logger.flush(timeout=30), logger.stats()
    logger.submit_many(record(i) for i in range(400, 450))  # and the log keeps going
    assert logger.flush(timeout=10)
    logger.close()
    assert logged_ids(url) == [f"r{i}" for i in range(450)]
    assert logger.stats()["quarantined"] == 2 and logger.database_ok
    (kept,) = spool.glob("*.quarantine")
    assert kept.read_bytes() == b"".join(GARBAGE)
    messages = [r.getMessage() for r in caplog.records]
    named = [m for m in messages if "unreadable prediction log line" in m]
    assert len(named) == 2 and all(own.name in m for m in named)
    assert sum("database unavailable" in m for m in messages) == 1  # the real outage only


def test_spool_files_of_the_earlier_format_are_replayed(tmp_path):
    """One JSON object per line, as versions before the journal wrote their spool."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = "".join(legacy_line(record(i)) + "\n" for i in range(5))
    (spool / f"{1:020d}-999999999.jsonl").write_text(lines)
    logger = PredictionLogger(spool, url=url).start()
    assert logger.flush(timeout=10)
    logger.close()
    assert logged_ids(url) == [f"r{i}" for i in range(5)]


def test_rows_of_a_killed_worker_are_in_its_journal_and_replayed(tmp_path):
    """What a worker answered but its writer had not yet handled is in the journal (written
    before the answer), which the next worker replays; rows already written are not doubled."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    killed = PredictionLogger(spool, url=url)  # its writer never runs: as if killed at once
    killed.submit_many(record(i) for i in range(3))
    killed.submit(record(3))
    killed.write([record(0)])  # one row had made it to the database
    (journal,) = spool.glob("*.journal")
    assert count_rows([journal]) == 4
    killed._owner.release(unlink=False)  # what the kernel does as it kills the process

    successor = PredictionLogger(spool, url=url).start()
    assert successor.flush(timeout=10)
    successor.close()
    assert sorted(logged_ids(url)) == [f"r{i}" for i in range(4)]
    assert not list(spool.iterdir())  # replayed, and the successor's own journal deleted


def test_handled_journal_segments_are_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr("api.logger.JOURNAL_ROTATE_SECONDS", 0.05)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    spool = tmp_path / "spool"
    logger = PredictionLogger(spool, url=url, flush_interval=0.02).start()
    for n in range(20):
        logger.submit_many(record(i, f"b{n}-") for i in range(50))
        assert logger.flush(timeout=5)
    deadline = datetime.now() + timedelta(seconds=5)
    while len(list(spool.glob("*.journal"))) > 1 and datetime.now() < deadline:
        logger.flush(timeout=0.1)
    assert len(list(spool.glob("*.journal"))) <= 1  # at most the segment still open
    logger.close()
    assert not list(spool.glob("*.journal"))
    assert len(logged_ids(url)) == 1_000


def test_without_the_journal_nothing_is_written_beside_the_spool(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    init_db(get_engine(url))
    logger = PredictionLogger(tmp_path / "spool", url=url, journal=False)
    logger.submit_many(record(i) for i in range(3))
    # only the lock that tells other loggers this one lives
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [f"{logger.owner_id}.lock"]
