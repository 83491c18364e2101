"""The demo's API: the real `python -m api.serve` as a local process, and what the demo asks of
it: predictions (one by one and in batches), labels, the served version, and the histograms of
its /metrics, from which a window's latency is read as Prometheus would. Labels go with the
demo's label token, as a label writer's do (LABEL_TOKENS)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, bindparam, func, select, update

from data.db import prediction_logs
from data.replay import request_instances, wait_until_ready
from data.schema import FeatureSchema
from data.settings import PROJECT_ROOT
from demo.world import SINGLE_REQUESTS, SLOT

# The demo's label writer, in LABEL_TOKENS as `demo=<a token made up for the run>`.
LABEL_SOURCE = "demo"


@dataclass
class DemoApi:
    """The API process the demo starts in `out`, on `port`, logging into `engine`."""

    out: Path
    port: int
    schema: FeatureSchema
    engine: Engine
    label_token: str
    process: subprocess.Popen | None = None
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.serve", "--workers", "1", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=env,
            cwd=self.out,
            stdout=(self.out / "api.log").open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until_ready(self.url, 90)
        except Exception:
            raise RuntimeError(
                f"the API did not start; its log:\n{(self.out / 'api.log').read_text()[-3000:]}"
            ) from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def serve(self, frame: pd.DataFrame, start: datetime) -> list[str]:
        """Send the window's predictions; once logged, move them into the window."""
        instances = request_instances(frame, self.schema)
        # The first SINGLE_REQUESTS one by one, as a client calls /predict (their latency is
        # the window's in the report), the rest in batches, which is faster to replay.
        ids = [self.post("/predict", one)["request_id"] for one in instances[:SINGLE_REQUESTS]]
        for first in range(SINGLE_REQUESTS, len(instances), 500):
            answer = self.post("/predict/batch", {"instances": instances[first : first + 500]})
            ids.extend(p["request_id"] for p in answer["predictions"])
        deadline = time.monotonic() + 60
        while True:
            with self.engine.connect() as conn:
                logged = conn.execute(
                    select(func.count()).where(prediction_logs.c.request_id.in_(ids))
                ).scalar_one()
            if logged == len(ids):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API logged {logged} of {len(ids)} predictions in 60 s")
            time.sleep(0.1)
        step = SLOT / (len(ids) + 1)
        with self.engine.begin() as conn:
            conn.execute(
                update(prediction_logs)
                .where(prediction_logs.c.request_id == bindparam("rid"))
                .values(predicted_at=bindparam("at")),
                [{"rid": rid, "at": start + step * (i + 1)} for i, rid in enumerate(ids)],
            )
        return ids

    def send_labels(self, labels: list[dict[str, Any]]) -> None:
        for first in range(0, len(labels), 500):
            self.post(
                "/feedback/batch",
                {"labels": labels[first : first + 500]},
                headers={"Authorization": f"Bearer {self.label_token}"},
            )

    def scrape(self) -> dict[str, Any]:
        """The API's /predict duration and confidence histograms, summed over labels."""
        text = self.session.get(f"{self.url}/metrics", timeout=10).text
        wanted = {
            # What MLApiLatencyHigh reads: single /predict calls (batches would add their size).
            "http_request_duration_seconds": {"handler": "/predict"},
            "ml_prediction_confidence": {},
        }
        found: dict[str, Any] = {name: {"buckets": {}, "sum": 0.0, "count": 0.0} for name in wanted}
        for family in text_string_to_metric_families(text):
            if family.name not in wanted:
                continue
            into = found[family.name]
            for sample in family.samples:
                if any(sample.labels.get(k) != v for k, v in wanted[family.name].items()):
                    continue
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    into["buckets"][bound] = into["buckets"].get(bound, 0.0) + sample.value
                elif sample.name.endswith("_sum"):
                    into["sum"] += sample.value
                elif sample.name.endswith("_count"):
                    into["count"] += sample.value
        return found

    def post(self, path: str, body: dict, headers: dict[str, str] | None = None) -> dict:
        response = self.session.post(f"{self.url}{path}", json=body, timeout=60, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def served_version(self) -> str | None:
        return self.session.get(f"{self.url}/health", timeout=5).json().get("model_version")


def window_histogram(before: dict, after: dict, name: str) -> dict[str, Any]:
    """The histogram of one window: the difference of two scrapes."""
    b, a = before[name], after[name]
    buckets = {le: a["buckets"][le] - b["buckets"].get(le, 0.0) for le in a["buckets"]}
    count = a["count"] - b["count"]
    mean = (a["sum"] - b["sum"]) / count if count > 0 else None
    return {"buckets": buckets, "count": count, "mean": None if mean is None else round(mean, 4)}


def histogram_quantile(histogram: dict[str, Any], q: float) -> float | None:
    """Prometheus' `histogram_quantile`: linear within the bucket the rank falls in."""
    buckets = sorted(histogram["buckets"].items())
    if not buckets or histogram["count"] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound
