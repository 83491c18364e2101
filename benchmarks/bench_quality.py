"""Benchmark: how long the seven data-quality checks take on a large live window.

The fraud schema, `generate_transactions` rows spread over a 6-hour window, and the reference
profile training stores (10,000 rows). Two shapes of input are timed, each the median of
`--repeats` calls of `compute_quality_report` in one process:

- typed: the frame as `read_predictions` hands it to the monitoring pass (`coerce_frame`'s types);
- raw: the frame as a CSV window arrives in the command line, before any typing (categories and
  ids as text, numbers as read, booleans as the words "yes" / "no").

    python -m benchmarks.bench_quality                 # 1,000,000 rows
    python -m benchmarks.bench_quality --rows 200000

Run it against the code before and after a change, alternating, and compare the same run's
figures (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from data.ingest import coerce_frame
from data.profile import build_reference_profile
from data.schema import load_schema
from data.synthetic import generate_transactions
from monitoring.quality_report import compute_quality_report

START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(hours=6)


def window(rows: int) -> pd.DataFrame:
    frame = generate_transactions(rows, seed=2)
    offsets = np.sort(np.random.default_rng(2).uniform(0, 6 * 3600 - 300, rows))
    frame["timestamp"] = START + pd.to_timedelta(offsets, unit="s")
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    schema = load_schema(Path(__file__).resolve().parent.parent / "schemas" / "fraud.yaml")
    trained = coerce_frame(generate_transactions(10_000, seed=1), schema)
    nothing = np.zeros(len(trained))
    reference = build_reference_profile(
        trained[schema.feature_names], schema, predictions=nothing, scores=nothing
    )
    raw = window(args.rows)
    typed = coerce_frame(raw, schema)
    for feature in schema.boolean:
        raw[feature.name] = np.where(raw[feature.name].to_numpy(dtype=bool), "yes", "no")
    raw["timestamp"] = raw["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    figures: dict[str, float] = {}
    for name, frame in (("typed", typed), ("raw", raw)):
        times = []
        for _ in range(args.repeats):
            gc.collect()
            started = time.perf_counter()
            report = compute_quality_report(
                frame, schema, window_start=START, window_end=END, reference=reference
            )
            times.append(time.perf_counter() - started)
        assert report.rows == args.rows, report.summary()
        figures[f"{name}_median_s"] = round(statistics.median(times), 3)
        figures[f"{name}_all_s"] = [round(t, 3) for t in times]
        figures[f"{name}_hard_failures"] = report.hard_failures
    print(json.dumps({"rows": args.rows, **figures}))


if __name__ == "__main__":
    main()
