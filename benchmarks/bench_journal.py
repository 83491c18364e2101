"""What the prediction journal costs: /predict and /predict/batch with it on and off.

    python -m benchmarks.bench_journal [--seconds 10] [--rounds 3]    (make bench runs it)

Each answered prediction is appended to its worker's journal before the answer, so that a
killed worker loses none (api/spool.py). The issue that asked for it set the bar: ship it if
/predict keeps at least 90% of its throughput. This starts `python -m api.serve` (2 workers,
Postgres logging, monitoring on) with PREDICTION_JOURNAL=true and =false in alternation,
`--rounds` times each so the machine's drift spreads over both, and reports the medians and
the ratio on/off for /predict (32 connections) and /predict/batch (1,000 rows, 8 in flight).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_api import ADMIN_URL, batch_rows_per_s, wrk
from data.schema import load_schema
from tools.testkit.api_server import ServerProcess
from tools.testkit.databases import fresh_postgres_database, store_settings
from tools.testkit.traffic import request_rows
from training.train import train

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="servers started per setting")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    scratch = contextlib.ExitStack()
    db_url = scratch.enter_context(fresh_postgres_database("bench_journal", ADMIN_URL))
    figures: dict[str, dict[str, list[float]]] = {
        setting: {"predict": [], "batch": []} for setting in ("true", "false")
    }
    try:
        settings = store_settings(work / "store")
        (work / "store").mkdir()
        train(settings=settings, auto_promote=True)
        rows = request_rows(load_schema(ROOT / "schemas/fraud.yaml"), 1_000, seed=77)
        body = work / "body.json"
        body.write_text(json.dumps({"request_id": "REQUEST_ID", "features": rows[0]}))
        batch = work / "batch.json"
        instances = [{"request_id": "REQUEST_ID", "features": r} for r in rows]
        batch.write_text(json.dumps({"instances": instances}))
        env = {
            "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
            "DATABASE_URL": db_url,
            "MODEL_POLL_SECONDS": "0",
        }
        for round_ in range(args.rounds):
            for journal in ("true", "false"):
                folder = work / f"server-{journal}-{round_}"
                folder.mkdir()
                server = ServerProcess(
                    folder,
                    env | {"PREDICTION_JOURNAL": journal, "PREDICTION_SPOOL_DIR": str(folder)},
                )
                try:
                    server.wait_ready()
                    wrk(server.url, body, 3)  # warm-up
                    predict = wrk(server.url, body, args.seconds)["requests_per_s"]
                    rows_per_s = batch_rows_per_s(server.url, batch, args.seconds, 8)["rows_per_s"]
                finally:
                    server.stop()
                figures[journal]["predict"].append(predict)
                figures[journal]["batch"].append(rows_per_s)
                print(f"round {round_ + 1}, journal {journal}: /predict {predict:,.0f} req/s, "
                      f"batch {rows_per_s:,.0f} rows/s", flush=True)  # fmt: skip
    finally:
        scratch.close()
        shutil.rmtree(work, ignore_errors=True)

    on, off = figures["true"], figures["false"]
    ratio = {key: statistics.median(on[key]) / statistics.median(off[key]) for key in on}
    print(json.dumps({"journal_on": on, "journal_off": off, "ratio_on_off": ratio}, indent=2))
    print(
        "\n| journal | /predict, 32 connections | /predict/batch, 1,000 rows, 8 in flight |\n"
        "|---|---|---|\n"
        f"| on | {statistics.median(on['predict']):,.0f} req/s | "
        f"{statistics.median(on['batch']):,.0f} rows/s |\n"
        f"| off | {statistics.median(off['predict']):,.0f} req/s | "
        f"{statistics.median(off['batch']):,.0f} rows/s |\n"
        f"| on / off | {ratio['predict']:.2f} | {ratio['batch']:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
