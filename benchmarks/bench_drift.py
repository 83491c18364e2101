"""Benchmark: how long the drift check takes, and how much memory, on large windows.

The same shape as the published Evidently figure (LESSONS.md: 52 s and 1.8 GB for 1,000,000
reference + 1,000,000 current rows of 20 numerical and 5 categorical columns; 6.5 s for
100,000 + 100,000): numpy-generated data, the reference profile built beforehand keeping every
value (so KS is 1M vs 1M, not against a sample), then `compute_drift_report` timed (median of 3).

Each size runs in its own process so that its memory figures are its own: the peak resident
memory during the call (Linux's VmHWM, reset just before it), how much of it the call added on
top of the inputs it was given (the current frame and the profile), and the process's maximum.

    python -m benchmarks.bench_drift            # 100k + 100k and 1M + 1M
    python -m benchmarks.bench_drift --rows 200000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data.schema import Feature, FeatureSchema
from data.settings import PROJECT_ROOT
from monitoring.drift_report import DriftThresholds, compute_drift_report, profile_from_frame

NUMERICAL = 20
CATEGORICAL = 5
REPEATS = 3


def make_schema() -> FeatureSchema:
    features = [Feature(f"num_{i:02d}", "numerical") for i in range(NUMERICAL)]
    features += [Feature(f"cat_{i}", "categorical") for i in range(CATEGORICAL)]
    return FeatureSchema(name="bench", target="label", features=tuple(features))


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Numerical columns of several shapes; categorical columns with 4 to 20 values."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for i in range(NUMERICAL):
        if i % 4 == 0:
            columns[f"num_{i:02d}"] = rng.lognormal(3.0, 0.8, rows).round(2)
        elif i % 4 == 1:
            columns[f"num_{i:02d}"] = rng.poisson(3.0, rows).astype(np.float64)
        else:
            columns[f"num_{i:02d}"] = rng.normal(10.0 * i, 1.0 + i, rows)
    for i in range(CATEGORICAL):
        values = np.array([f"value_{k}" for k in range(4 + 4 * i)], dtype=object)
        columns[f"cat_{i}"] = values[rng.integers(0, values.size, rows)]
    return pd.DataFrame(columns)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(rows: int) -> dict[str, float]:
    """Run in a child process: build the inputs, then measure one size."""
    schema = make_schema()
    reference = make_frame(rows, seed=1)
    profile = profile_from_frame(reference, schema)  # samples held as float64 arrays
    del reference
    current = make_frame(rows, seed=2)
    thresholds = DriftThresholds()
    gc.collect()

    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    report = compute_drift_report(profile, current, schema, thresholds=thresholds)
    peak = _status_kib("VmHWM")

    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        report = compute_drift_report(profile, current, schema, thresholds=thresholds)
        times.append(time.perf_counter() - start)
    return {
        "rows": rows,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_mb": peak / 1024,
        "added_mb": (peak - baseline) / 1024,
        "inputs_mb": baseline / 1024,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "drifted": len(report.drifted_features),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return 0

    print(
        f"drift check, {NUMERICAL} numerical + {CATEGORICAL} categorical columns, "
        f"reference profile keeps every value; {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    header = (
        f"{'rows ref + cur':>22} {'median s':>9} {'min s':>7} "
        f"{'peak MB':>8} {'added MB':>9} {'inputs MB':>10} {'max RSS MB':>11}"
    )
    print(header)
    print("-" * len(header))
    for rows in args.rows:
        command = [sys.executable, "-m", "benchmarks.bench_drift", "--child", str(rows)]
        child = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)
        if child.returncode:
            print(child.stderr, file=sys.stderr)
            return child.returncode
        r = json.loads(child.stdout)
        print(
            f"{f'{rows:,} + {rows:,}':>22} "
            f"{r['median_s']:>9.2f} {r['min_s']:>7.2f} {r['peak_mb']:>8.0f} "
            f"{r['added_mb']:>9.0f} {r['inputs_mb']:>10.0f} {r['max_rss_mb']:>11.0f}"
        )
    print(
        "peak MB: resident memory at its highest during compute_drift_report; added MB: the "
        "part of it above the inputs already in memory (the current frame and the reference "
        "profile, its samples as float64 arrays); max RSS MB: the whole process, including "
        "building the data and the profile."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
