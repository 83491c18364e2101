"""The bulk histogram path of api.instrumentation against prometheus_client's own `observe`.

`_observe_many` writes prometheus_client's private histogram fields to count a batch with one
increment per bucket. These tests hold it to `Histogram.observe` on values lying exactly on
every bucket bound (where an off-by-one bucket choice shows), in single-process and in
multiprocess mode, and check the start-up guard that refuses changed private fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from api.instrumentation import (
    CONFIDENCE_BUCKETS,
    FEATURE_BUCKETS,
    LATENCY_BUCKETS,
    SCORE_BUCKETS,
    _observe_many,
    check_histogram_internals,
)
from data.settings import PROJECT_ROOT


def values_on_and_around(bounds) -> np.ndarray:
    """Every bound exactly, just below and just above it, far outside both ends, and NaN."""
    bounds = np.asarray(bounds, dtype=np.float64)
    return np.concatenate(
        [
            bounds,
            np.nextafter(bounds, -np.inf),
            np.nextafter(bounds, np.inf),
            [bounds[0] - 1e6, -1.0, 0.0, bounds[-1] * 10, np.nan, bounds[-1], bounds[0]],
        ]
    )


def exposed(registry: CollectorRegistry) -> dict[tuple, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "buckets", [LATENCY_BUCKETS, CONFIDENCE_BUCKETS, SCORE_BUCKETS, FEATURE_BUCKETS]
)
def test_bulk_observe_matches_observe_on_every_bucket_bound(buckets):
    values = values_on_and_around(buckets)
    one_by_one, bulk = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "doc", ["environment"], buckets=buckets, registry=one_by_one)
    tested = Histogram("h", "doc", ["environment"], buckets=buckets, registry=bulk)
    for value in values[~np.isnan(values)]:
        reference.labels("test").observe(float(value))
    _observe_many(tested.labels("test"), values)
    expected, found = exposed(one_by_one), exposed(bulk)
    assert found == pytest.approx(expected)
    assert found[("h_count", (("environment", "test"),))] == np.count_nonzero(~np.isnan(values))


MULTIPROCESS_CHECK = """
import json, sys
import numpy as np
from prometheus_client import CollectorRegistry, Histogram, multiprocess
from api.instrumentation import _observe_many
buckets, values = json.loads(sys.argv[1])
values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
reference = Histogram("reference", "doc", buckets=buckets)
tested = Histogram("tested", "doc", buckets=buckets)
for value in values[~np.isnan(values)]:
    reference.observe(float(value))
_observe_many(tested, values)
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
out = {}
for family in registry.collect():
    for sample in family.samples:
        key = sample.name.split("_", 1)[1] + json.dumps(sorted(sample.labels.items()))
        out.setdefault(family.name, {})[key] = sample.value
print(json.dumps(out))
"""


def test_bulk_observe_matches_observe_in_multiprocess_mode(tmp_path):
    """With several workers every value lives in an mmap file: the same comparison there."""
    values = values_on_and_around(LATENCY_BUCKETS)
    argument = json.dumps(
        [list(LATENCY_BUCKETS), [None if np.isnan(v) else float(v) for v in values]]
    )
    done = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_CHECK, argument],
        env=os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    families = json.loads(done.stdout)
    assert families["tested"] == pytest.approx(families["reference"])
    assert len(families["tested"]) == len(LATENCY_BUCKETS) + 3  # buckets, +Inf, count, sum


def test_a_histogram_without_the_expected_private_fields_stops_the_start():
    real = Histogram("g", "doc", ["environment"], registry=CollectorRegistry()).labels("x")
    check_histogram_internals(real)  # today's prometheus_client: accepted
    renamed = SimpleNamespace(_upper_bounds=real._upper_bounds, _sum=real._sum)
    cumulative_tuple = SimpleNamespace(
        _upper_bounds=real._upper_bounds, _buckets=tuple(real._buckets), _sum=real._sum
    )
    no_inf = SimpleNamespace(
        _upper_bounds=real._upper_bounds[:-1], _buckets=real._buckets[:-1], _sum=real._sum
    )
    for changed in (renamed, cumulative_tuple, no_inf):
        with pytest.raises(RuntimeError, match="changed Histogram's private fields"):
            check_histogram_internals(changed)


# --- The prediction log's folder on disk (MLSpoolDiskFilling) ----------------------------------


def spool_folder(tmp_path):
    """A PREDICTION_SPOOL_DIR as the logger leaves it during an outage: two workers' spool
    files, an open journal segment, a quarantine, and a quarantine's rewrite in progress."""
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "00000000000000000001-101.jsonl").write_bytes(b"x" * 1000)
    (folder / "00000000000000000002-102.jsonl").write_bytes(b"x" * 500)
    (folder / "00000000000000000003-101.journal").write_bytes(b"x" * 300)
    (folder / "00000000000000000001-99.quarantine").write_bytes(b"x" * 20)
    (folder / "00000000000000000001-99.jsonl.tmp").write_bytes(b"x" * 4000)  # a copy, not rows
    (folder / "notes.txt").write_bytes(b"x" * 7)
    return folder


def test_disk_usage_counts_each_kind_of_file_and_the_filesystem(tmp_path):
    from api.spool import disk_usage

    folder = spool_folder(tmp_path)
    usage = disk_usage(folder)
    assert usage.files == {"spool": 1500, "journal": 300, "quarantine": 20}
    stats = os.statvfs(folder)
    assert usage.size == stats.f_blocks * stats.f_frsize
    # Other work writes on this disk meanwhile: the same figure within 64 MB.
    assert usage.free == pytest.approx(stats.f_bavail * stats.f_frsize, abs=64 << 20)
    assert 0 < usage.free <= usage.size
    with pytest.raises(OSError):
        disk_usage(tmp_path / "gone")


def test_the_api_measures_its_spool_folder_into_gauges(tmp_path):
    from prometheus_client import REGISTRY

    from api.instrumentation import ApiMetrics

    folder = spool_folder(tmp_path)
    metrics = ApiMetrics("spool-test")
    metrics.measure_spool()  # nothing watched yet: nothing measured
    labels = {"environment": "spool-test"}
    assert REGISTRY.get_sample_value("ml_prediction_log_filesystem_free_bytes", labels) is None
    metrics.watch_spool(folder)
    metrics.measure_spool()
    get = REGISTRY.get_sample_value
    assert get("ml_prediction_log_disk_bytes", labels | {"kind": "spool"}) == 1500
    assert get("ml_prediction_log_disk_bytes", labels | {"kind": "journal"}) == 300
    assert get("ml_prediction_log_disk_bytes", labels | {"kind": "quarantine"}) == 20
    size = get("ml_prediction_log_filesystem_size_bytes", labels)
    assert size == os.statvfs(folder).f_blocks * os.statvfs(folder).f_frsize
    assert 0 < get("ml_prediction_log_filesystem_free_bytes", labels) <= size
    # The spool replayed: the next scrape says so.
    for path in folder.glob("*.jsonl"):
        path.unlink()
    metrics.measure_spool()
    assert get("ml_prediction_log_disk_bytes", labels | {"kind": "spool"}) == 0


MULTIPROCESS_SPOOL = """
import sys
from pathlib import Path
from api.instrumentation import ApiMetrics
metrics = ApiMetrics("spool-test")
metrics.watch_spool(Path(sys.argv[1]))
metrics.measure_spool()
"""
MULTIPROCESS_MERGE = """
import json
from prometheus_client import CollectorRegistry, multiprocess
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
print(json.dumps({s.labels.get("kind", s.name): s.value for f in registry.collect()
                  for s in f.samples if s.name == "ml_prediction_log_disk_bytes"}))
"""


def test_with_several_workers_the_newest_measure_is_served(tmp_path):
    """Two workers measured the shared folder, one during the outage and one after the replay:
    the merged scrape shows the later figure, not the larger one (nor their sum)."""
    folder, metrics_dir = spool_folder(tmp_path), tmp_path / "metrics"
    metrics_dir.mkdir()
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    def run(script: str, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", script, *args], env=env, cwd=PROJECT_ROOT,
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    run(MULTIPROCESS_SPOOL, str(folder))  # worker 1, during the outage
    for path in folder.glob("*.jsonl"):
        path.unlink()
    run(MULTIPROCESS_SPOOL, str(folder))  # worker 2, after the replay
    assert json.loads(run(MULTIPROCESS_MERGE)) == {"spool": 0, "journal": 300, "quarantine": 20}
    assert len(list(metrics_dir.glob("gauge_livemostrecent_*.db"))) == 2  # one per worker
