"""The Postgres drift benchmark runs, `--breakdown` included, on a small window.

`--breakdown` crashed twice as `read_predictions` changed under it (the features column's
layout, then COPY instead of a cursor); a small run here keeps it working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from data.settings import PROJECT_ROOT
from tools.testkit.databases import POSTGRES_ADMIN_URL


def test_breakdown_runs_and_both_reads_give_the_same_report():
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_drift_postgres",
            "--rows",
            "20000",
            "--reference-rows",
            "5000",
            "--chunksize",
            "5000",
            "--repeats",
            "1",
            "--breakdown",
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"BENCH_POSTGRES_ADMIN_URL": POSTGRES_ADMIN_URL},
        timeout=600,
        cwd=PROJECT_ROOT,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "where the time goes" in process.stdout
    (result,) = json.loads(process.stdout.strip().splitlines()[-1])["results"]
    breakdown = result["breakdown"]
    assert breakdown["cursor_report_identical"] is True
    assert result["rows"] == 20_000 and breakdown["cursor"]["chunks"] == 4
    assert 0 < breakdown["typing_s"] < breakdown["read_predictions_s"]
    assert 0 < breakdown["features_json_s"] < breakdown["typing_s"]
