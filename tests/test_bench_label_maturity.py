"""The label-maturity benchmark runs at a tiny scale, and its own check holds.

It reaches into `monitoring.label_maturity` (it wraps the module's functions to time the steps
of a pass), so a small run here keeps it working as that module changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from data.settings import PROJECT_ROOT
from tools.testkit.databases import POSTGRES_ADMIN_URL


def test_label_maturity_benchmark_runs_and_the_refresh_matches_a_direct_read():
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_label_maturity",
            "--rows",
            "20000",
            "--labels",
            "2000",
            "--naive-windows",
            "4",
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"BENCH_POSTGRES_ADMIN_URL": POSTGRES_ADMIN_URL},
        timeout=600,
        cwd=PROJECT_ROOT,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "identical" in process.stdout and "DIFFERENT" not in process.stdout
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result["check"]["identical"] is True
    assert result["check"]["labelled"] == result["check"]["direct_labelled"] > 0
    a, b, c = (result["passes"][k] for k in "ABC")
    # The burst: every label matched, every one of the 120 windows gained labels, each label
    # read once, and no prediction's row fetched other than to match a label.
    assert a["matched"] == a["label_rows_read"] == 2000
    assert a["windows"] == a["windows_gained"] == 120
    assert a["stats"]["prediction_logs"]["idx_tup_fetch"] <= 2000
    assert a["stats"]["labels"]["n_tup_upd"] >= 2000
    # A normal pass: its 20 labels land in the four windows of one day, and those gain.
    for later in (b, c):
        assert later["matched"] == 20 and later["windows_gained"] == 4
        assert later["windows"] >= 4
        assert later["stats"]["prediction_logs"]["seq_scan"] == 0
    assert "all in the day" in process.stdout and "NOT all" not in process.stdout
    naive = result["naive"]
    assert naive["estimated"] is True and naive["windows_read"] == 4
    assert result["join"]["rows"] == 20000
