"""`make demo`: watch a model degrade, get caught, retrain and recover, in one command.

Weeks of card-fraud traffic are replayed in minutes through the real API, on the embedded
defaults (SQLite, a local MLflow store, everything under `--out`). The story:

- week 1, **baseline**: the first champion, trained on the original data, serves ordinary
  traffic (about 95% accuracy);
- week 2, **covariate shift**: card holders pay farther from home (a mean shift of
  `distance_from_home_km`); the fraud rule is the same;
- weeks 3-4, **concept drift**: fraudsters move to skimmed cards used contactless at fuel
  stations and grocers (`data.synthetic` pattern `contactless`): the inputs look the same, the
  relationship changed, which only the labels can show.

Every simulated six hours the demo does what production does: the window's predictions go
through `POST /predict/batch`, then the labels that are known by then through `/feedback/batch`
(LABEL_SHARE_IN_WINDOW of them within the window, as customers confirm or dispute; the rest a
window later). Then it runs `monitoring.retrain.loop.check_and_decide`, the drift-check DAG's own
task (drift, quality, realized and estimated performance, saved; then the retrain policy with
its cooldown), reads back what the exporter would serve, and evaluates the alerts of
`prometheus/alerts.yml` on it (`demo.alerts`). When the policy says retrain, it runs
the training DAG's steps (ingest, validate, fit, evaluate, register, three gates, promote) and
waits for the API to hot-reload the new `@champion`.

Six-hour windows cannot pass in minutes: once a window's predictions are logged, their
`predicted_at` is moved into that window (as if served then); all checks and the policy run on
the window's own time, as in production. The same seed gives the same story.

At the end it prints a summary, writes the timeline as JSON and a self-contained HTML report.

    python -m demo.run [--days 7,7,14] [--rows-per-window 300] [--seed 42] [--out var/demo]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import bindparam, func, select, update

from data.db import get_engine, prediction_logs
from data.replay import request_instances, wait_until_ready
from data.schema import FeatureSchema, load_schema
from data.settings import PROJECT_ROOT, Settings, get_settings
from data.synthetic import fraud_probability, generate_transactions, write_frame
from demo.alerts import AlertRules, WindowFigures

log = logging.getLogger(__name__)

SLOT = timedelta(hours=6)
WINDOWS_PER_DAY = 4
LABEL_SHARE_IN_WINDOW = 0.6
SINGLE_REQUESTS = 40
SHIFT_FEATURE = "distance_from_home_km"
SHIFT_FACTOR = 2.5
FRAUD_WAVE = 1.0
BASELINE, SHIFT, CONCEPT = "baseline", "covariate shift", "concept drift"


@dataclass(frozen=True)
class Scenario:
    """How long each phase lasts, how much traffic, which seed."""

    days: tuple[int, int, int] = (7, 7, 14)  # baseline, covariate shift, concept drift
    rows_per_window: int = 300
    seed: int = 42
    base_rows: int = 20_000

    @property
    def windows(self) -> int:
        return sum(self.days) * WINDOWS_PER_DAY

    def phase(self, window: int) -> str:
        day = window // WINDOWS_PER_DAY
        if day < self.days[0]:
            return BASELINE
        return SHIFT if day < self.days[0] + self.days[1] else CONCEPT

    def phase_starts(self) -> list[dict[str, Any]]:
        starts = [0, self.days[0], self.days[0] + self.days[1]]
        return [
            {"name": name, "start_window": day * WINDOWS_PER_DAY}
            for name, day in zip((BASELINE, SHIFT, CONCEPT), starts, strict=True)
        ]

    def traffic(self, window: int, start: datetime, schema: FeatureSchema) -> pd.DataFrame:
        """The window's transactions, with the labels the world gives them."""
        phase = self.phase(window)
        seed = self.seed * 100_000 + window
        pattern = "contactless" if phase == CONCEPT else "card_not_present"
        frame = generate_transactions(
            self.rows_per_window,
            seed=seed,
            start=start.isoformat(),
            days=SLOT / timedelta(days=1),
            pattern=pattern,
        )
        if phase != BASELINE:
            # A covariate shift: card holders pay SHIFT_FACTOR times farther from home, the same
            # factor in every window (a stationary new world), and the labels follow the same
            # rule on the moved inputs (drawn again): only the concept phase changes the rule.
            frame[SHIFT_FEATURE] = (frame[SHIFT_FEATURE] * SHIFT_FACTOR).round(1)
            chance = fraud_probability(frame, pattern)
            if phase == CONCEPT:  # and a fraud wave: FRAUD_WAVE more log-odds of fraud
                chance = 1 / (1 + np.exp(-(np.log(chance / (1 - chance)) + FRAUD_WAVE)))
            draw = np.random.default_rng(seed).random(len(frame))
            frame[schema.target] = (draw < chance).astype(int)
        return frame


@dataclass
class Demo:
    """One run of the story: its folder, settings, API process and everything it saw."""

    scenario: Scenario
    out: Path
    port: int
    console: Console
    settings: Settings = field(init=False)
    schema: FeatureSchema = field(init=False)
    windows: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)
    api: subprocess.Popen | None = None
    caught: tuple[int, dict] | None = None  # the first window with critical drift, its report

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- setting up ------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The settings of the demo's services: embedded stores under `out`, nothing sent out."""
        out = self.out
        return {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{out / 'monitoring.db'}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",
            "MLFLOW_ARTIFACT_ROOT": str(out / "mlartifacts"),
            "DATA_DIR": str(out / "data"),
            "TRAINING_DATA": str(out / "data" / "base.parquet"),
            "PREDICTION_SPOOL_DIR": str(out / "spool"),
            "PROMETHEUS_MULTIPROC_DIR": str(out / "prometheus"),
            "AUTO_PROMOTE": "true",
            "MODEL_POLL_SECONDS": "1",
            "MLFLOW_LOGGING_LEVEL": "WARNING",
            # Variables exported in the shell may name real destinations: the demo pages nobody.
            "SLACK_WEBHOOK_URL": "",
            "PAGERDUTY_ROUTING_KEY": "",
            "SMTP_HOST": "",
            "ALERT_WEBHOOK_URL": "",
        }

    def setup(self) -> None:
        if self.out.exists():
            shutil.rmtree(self.out)
        (self.out / "data").mkdir(parents=True)
        # Settings also read a `.env` in the working directory, and an empty variable counts as
        # unset there: a user's .env naming real Slack or PagerDuty destinations (or other
        # stores) would reach the demo and its API. Both run in the demo's own folder instead.
        os.chdir(self.out)
        os.environ.update(self.environment())
        get_settings.cache_clear()
        self.settings = get_settings()
        self.schema = load_schema(self.settings.path(self.settings.FEATURE_SCHEMA))
        self.rules = AlertRules.load()
        self.engine = get_engine(self.settings.database_url)
        self.session = requests.Session()

    def first_champion(self) -> str:
        from training.train import train

        base = generate_transactions(self.scenario.base_rows, seed=self.scenario.seed)
        path = write_frame(base, self.out / "data" / "base.parquet")
        with self.quiet():
            result = train(data_path=path, auto_promote=True, seed=self.scenario.seed)
        if result.action != "promoted":
            raise RuntimeError(f"the first model was not promoted: {result.action}")
        return str(result.version)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """MLflow prints to stdout and stderr ("Created version ..."): into training.log."""
        with (
            (self.out / "training.log").open("a") as log_file,
            contextlib.redirect_stdout(log_file),
            contextlib.redirect_stderr(log_file),
        ):
            yield

    def start_api(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        self.api = subprocess.Popen(
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

    def stop_api(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(30)
            except subprocess.TimeoutExpired:
                self.api.kill()
        self.api = None

    # -- one window ------------------------------------------------------------------------

    def serve(self, frame: pd.DataFrame, start: datetime) -> list[str]:
        """Send the window's predictions; once logged, move them into the window."""
        instances = request_instances(frame, self.schema)
        # The first SINGLE_REQUESTS one by one, as a client calls /predict (their latency is
        # the window's in the report), the rest in batches, which is faster to replay.
        ids = [self._post("/predict", one)["request_id"] for one in instances[:SINGLE_REQUESTS]]
        for first in range(SINGLE_REQUESTS, len(instances), 500):
            answer = self._post("/predict/batch", {"instances": instances[first : first + 500]})
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
            self._post("/feedback/batch", {"labels": labels[first : first + 500]})

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

    def run_window(self, index: int, start: datetime, rng: np.random.Generator, pending: list):
        from monitoring.report_store import latest_reports
        from monitoring.retrain.loop import check_and_decide

        end = start + SLOT
        frame = self.scenario.traffic(index, start, self.schema)
        self.frames.append(frame)
        clock = time.perf_counter()
        before = self.scrape()
        ids = self.serve(frame, start)
        after = self.scrape()
        served = time.perf_counter()
        truth = frame[self.schema.target].astype(int).tolist()
        known = rng.random(len(ids)) < LABEL_SHARE_IN_WINDOW
        now = [
            {"request_id": i, "label": y} for i, y, k in zip(ids, truth, known, strict=True) if k
        ]
        later = [
            {"request_id": i, "label": y}
            for i, y, k in zip(ids, truth, known, strict=True)
            if not k
        ]
        self.send_labels(pending + now)

        labelled = time.perf_counter()
        outcome = check_and_decide(start, end, self.settings)
        reports = latest_reports(self.settings.MODEL_NAME, self.engine)
        checked = time.perf_counter()
        record = self.window_record(index, start, end, outcome, reports, before, after)
        if record["critical_features"] and self.caught is None:
            self.caught = (index, (reports.drift or {}).get("report"))
        alerts = self.rules.evaluate(record.pop("_figures"))
        record["alerts"] = [alert.to_dict() for alert in alerts]
        record["seconds"] = {
            "serve": round(served - clock, 3),
            "labels": round(labelled - served, 3),
            "check": round(checked - labelled, 3),
        }
        self.windows.append(record)
        if outcome["retrain"]:
            self.retrain(index, end, outcome)
        return later

    def window_record(self, index, start, end, outcome, reports, before, after) -> dict[str, Any]:
        drift = (reports.drift or {}).get("report") or {}
        quality = (reports.quality or {}).get("report") or {}
        performance = (reports.performance or {}).get("report") or {}
        realized = (performance.get("realized") or {}).get("overall") or {}
        estimated = (performance.get("estimated") or {}).get("overall") or {}
        features = drift.get("features") or {}
        severities = [f.get("severity") for f in features.values()]
        latency = _window_histogram(before, after, "http_request_duration_seconds")
        confidence = _window_histogram(before, after, "ml_prediction_confidence")
        # The share of rows missing each feature, as the exporter serves ml_quality_missing_ratio.
        missing = (quality.get("missing_share") or {}).values()
        figures = WindowFigures(
            critical_features=severities.count("critical"),
            warning_features=severities.count("warning"),
            prediction_drift=bool((drift.get("prediction") or {}).get("drifted")),
            quality_hard_failures=len(quality.get("failures", [])),
            max_missing_ratio=max(missing, default=None),
            realized_accuracy=realized.get("accuracy"),
            label_coverage=realized.get("label_coverage"),
            estimated_accuracy=estimated.get("accuracy"),
            latency_p99_seconds=_quantile(latency, 0.99),
            mean_confidence=confidence["mean"],
        )
        p50, p99 = _quantile(latency, 0.5), _quantile(latency, 0.99)
        return {
            "index": index,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "day": index // WINDOWS_PER_DAY + 1,
            "week": index // (7 * WINDOWS_PER_DAY) + 1,
            "phase": self.scenario.phase(index),
            "rows": outcome["rows"],
            "champion": (reports.drift or reports.quality or {}).get("model_version"),
            "realized_accuracy_at_check": realized.get("accuracy"),
            "label_coverage": realized.get("label_coverage"),
            "estimated_accuracy": estimated.get("accuracy"),
            "drifted_share": drift.get("drifted_share"),
            "dataset_drift": bool(drift.get("dataset_drift")),
            "psi": {name: f.get("psi") for name, f in features.items()},
            "drifted_features": sorted(n for n, f in features.items() if f.get("drifted")),
            "critical_features": sorted(
                n for n, f in features.items() if f.get("severity") == "critical"
            ),
            "quality_failures": list(quality.get("failures", [])),
            "latency_p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "latency_p99_ms": None if p99 is None else round(p99 * 1000, 3),
            "mean_confidence": confidence["mean"],
            "decision": {
                "retrain": outcome["retrain"],
                "reason": outcome["reason"],
                "blocked_by": outcome["blocked_by"],
                "triggers": outcome["triggers"],
            },
            "_figures": figures,
        }

    def retrain(self, index: int, end: datetime, outcome: dict[str, Any]) -> None:
        """The training DAG's steps for the policy's run, then wait for the hot reload."""
        from monitoring.retrain.loop import begin, conclude
        from training import pipeline

        started = time.perf_counter()
        conf = outcome["conf"]
        settings = self.settings
        with self.quiet():
            run = begin(
                conf,
                dag_run_id=f"demo__retrain__{conf['training_run_id']}",
                logical_end=end,
                settings=settings,
            )
            data = pipeline.ingest(run, settings)
            validation = pipeline.validate(run, settings)
            pipeline.fit(run, settings)
            pipeline.evaluate(run, settings)
            version = pipeline.register(run, settings)
            report = pipeline.gate(run, version, settings)
            previous = self.windows[-1]["champion"]
            action = conclude(run, version, report, settings)
        reload_seconds = None
        if action == "promoted":
            waited = time.perf_counter()
            deadline = time.monotonic() + 60
            while self._served_version() != str(version):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not load v{version} within 60 s")
                time.sleep(0.1)
            reload_seconds = round(time.perf_counter() - waited, 2)
        self.retrains.append(
            {
                "window": index,
                "day": index // WINDOWS_PER_DAY + 1,
                "version": str(version),
                "previous": previous,
                "reason": conf["reason"],
                "data_start": run["data_start"],
                "data_end": run["data_end"],
                "data_rows": data.get("rows") if isinstance(data, dict) else None,
                "validation_passed": validation["passed"],
                "gates": report["gates"],
                "action": action,
                "promoted": action == "promoted",
                "reload_seconds": reload_seconds,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )

    # -- after the last window -------------------------------------------------------------

    def final_accuracy(self, start: datetime) -> None:
        """Once every label is in: each window's realized accuracy, and what the first
        champion would have scored on the same traffic (the stack switched off)."""
        from data.prediction_log import read_predictions
        from training.registry import Registry

        end = start + SLOT * len(self.windows)
        logged = read_predictions(
            self.schema, start, end, url=self.settings.database_url, with_labels=True
        )
        slot = ((logged[self.schema.timestamp] - pd.Timestamp(start)) / SLOT).astype(int)
        correct = logged[self.schema.prediction] == logged[self.schema.target]
        by_window = correct.groupby(slot).mean()
        registry = Registry.from_settings(self.settings)
        first = self.windows[0]["champion"]
        model, threshold = registry.load_model(first), registry.version(first).threshold
        for record, frame in zip(self.windows, self.frames, strict=True):
            value = by_window.get(record["index"])
            record["realized_accuracy"] = None if value is None else round(float(value), 4)
            scores = model.predict_proba(frame[self.schema.feature_names])[:, 1]
            unchanged = (scores >= threshold).astype(int) == frame[self.schema.target].to_numpy()
            record["first_champion_accuracy"] = round(float(unchanged.mean()), 4)

    # -- the whole story -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        began = time.perf_counter()
        self.setup()
        say = self.console.print
        say(f"[bold]The demo[/]: {sum(self.scenario.days)} simulated days, "
            f"{self.scenario.windows} six-hour windows of {self.scenario.rows_per_window} "
            f"transactions, seed {self.scenario.seed}; everything under {self.out}")  # fmt: skip
        say(f"1. training the first champion on {self.scenario.base_rows:,} transactions ...")
        first = self.first_champion()
        say(f"   v{first} is @champion; starting the API on {self.url}")
        self.start_api()
        start = _simulated_start(sum(self.scenario.days))
        rng = np.random.default_rng(self.scenario.seed)
        pending: list[dict[str, Any]] = []
        say("2. replaying the weeks (each line: a simulated day; events in between)")
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        try:
            with Progress(*columns, console=self.console, transient=True) as progress:
                task = progress.add_task("windows", total=self.scenario.windows)
                for index in range(self.scenario.windows):
                    phase = self.scenario.phase(index)
                    if index == 0 or phase != self.scenario.phase(index - 1):
                        progress.console.print(_phase_banner(phase, index))
                    retrains = len(self.retrains)
                    pending = self.run_window(index, start + SLOT * index, rng, pending)
                    self.print_events(progress.console, retrains)
                    if (index + 1) % WINDOWS_PER_DAY == 0:
                        progress.console.print(self.day_line(index // WINDOWS_PER_DAY))
                    progress.update(task, advance=1, description=f"day {index // 4 + 1} {phase}")
            self.send_labels(pending)
        finally:
            self.stop_api()
        self.final_accuracy(start)
        timeline = self.timeline(first, time.perf_counter() - began)
        if self.caught is not None:
            from monitoring.html_report import write_html

            index, report = self.caught
            path = write_html(report, self.out / "drift-report.html")
            timeline["drift_report"] = {"window": index, "path": str(path)}
        return timeline

    def timeline(self, first: str, seconds: float) -> dict[str, Any]:
        windows = self.windows
        phases = {record["phase"] for record in windows}

        def pooled(records: list[dict[str, Any]], key: str) -> float | None:
            values = [r[key] for r in records if r.get(key) is not None]
            return round(float(np.mean(values)), 4) if values else None

        baseline = [r for r in windows if r["phase"] == BASELINE]
        tail = windows[-min(7 * WINDOWS_PER_DAY, max(len(windows) // 4, 1)) :]
        daily = [
            pooled(windows[d : d + WINDOWS_PER_DAY], "realized_accuracy")
            for d in range(0, len(windows), WINDOWS_PER_DAY)
        ]
        injected = next((r for r in windows if r["phase"] != BASELINE), None)
        detected = next(
            (r for r in windows if r["phase"] != BASELINE and r["critical_features"]), None
        )
        last = windows[-1]["champion"] if windows else first
        return {
            "title": f"Card-fraud model, {sum(self.scenario.days)} simulated days",
            "seed": self.scenario.seed,
            "model_name": self.settings.MODEL_NAME,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "scenario": {
                "days": list(self.scenario.days),
                "rows_per_window": self.scenario.rows_per_window,
                "label_share_in_window": LABEL_SHARE_IN_WINDOW,
                "shift_feature": SHIFT_FEATURE,
            },
            "features": list(self.schema.feature_names),
            "thresholds": {
                "psi_warning": self.settings.PSI_WARNING,
                "psi_critical": self.settings.PSI_CRITICAL,
                "drift_share_threshold": self.settings.DRIFT_SHARE_THRESHOLD,
                "accuracy_floor": self.settings.RETRAIN_ACCURACY_FLOOR,
            },
            "phases": [p for p in self.scenario.phase_starts() if p["name"] in phases],
            "windows": windows,
            "retrains": self.retrains,
            "summary": {
                "baseline_accuracy": pooled(baseline, "realized_accuracy"),
                "worst_accuracy": min((d for d in daily if d is not None), default=None),
                "final_accuracy": pooled(tail, "realized_accuracy"),
                "final_days": len(tail) / WINDOWS_PER_DAY,
                "final_accuracy_without_retraining": pooled(tail, "first_champion_accuracy"),
                "drift_injected_day": injected["day"] if injected else None,
                "drift_injected_week": injected["week"] if injected else None,
                "drift_detected_day": detected["day"] if detected else None,
                "drift_detected_week": detected["week"] if detected else None,
                "drift_detected_features": detected["critical_features"] if detected else [],
                "retrains": len(self.retrains),
                "promotions": sum(r["promoted"] for r in self.retrains),
                "champion_before": first,
                "champion_after": last,
                "alerts_fired": sorted({a["name"] for r in windows for a in r["alerts"]}),
                "duration_seconds": round(seconds, 1),
            },
        }

    # -- what the terminal shows -----------------------------------------------------------

    def print_events(self, console: Console, retrains_before: int) -> None:
        record = self.windows[-1]
        previous = self.windows[-2] if len(self.windows) > 1 else None
        when = _when(record)
        alerts = {(a["name"], a["severity"]) for a in record["alerts"]}
        earlier = {(a["name"], a["severity"]) for a in previous["alerts"]} if previous else set()
        for name, severity in sorted(alerts - earlier):
            alert = next(
                a for a in record["alerts"] if (a["name"], a["severity"]) == (name, severity)
            )
            colour = "red" if severity == "critical" else "yellow"
            value = "" if alert["value"] is None else f" (value {alert['value']:.3g})"
            console.print(
                f"{when}  [{colour}]alert {name} {severity}[/]{value}: {alert['summary']}"
            )
        for name, severity in sorted(earlier - alerts):
            console.print(f"{when}  [green]resolved {name} {severity}[/]")
        decision = record["decision"]
        was = previous["decision"] if previous else None
        if decision["triggers"] and (
            decision["retrain"] or not was or was["blocked_by"] != decision["blocked_by"]
        ):
            colour = "bold magenta" if decision["retrain"] else "magenta"
            console.print(f"{when}  [{colour}]policy[/] {decision['reason']}")
        for retrain in self.retrains[retrains_before:]:
            for name, gate in retrain["gates"].items():
                mark = "[green]pass[/]" if gate.get("passed") else "[red]fail[/]"
                console.print(f"{when}    gate {name}: {mark} {gate.get('reason', '')}")
            if retrain["promoted"]:
                console.print(
                    f"{when}  [bold green]v{retrain['version']} promoted[/] to @champion "
                    f"(was v{retrain['previous']}); the API served it "
                    f"{retrain['reload_seconds']} s later, without a restart"
                )
            else:
                console.print(f"{when}  [bold red]v{retrain['version']} {retrain['action']}[/]")

    def day_line(self, day: int) -> str:
        records = self.windows[day * WINDOWS_PER_DAY : (day + 1) * WINDOWS_PER_DAY]
        realized = [r["realized_accuracy_at_check"] for r in records]
        estimated = [r["estimated_accuracy"] for r in records]
        drifted = sorted({f for r in records for f in r["drifted_features"]})
        return (
            f"[dim]day {day + 1:>2}[/] v{records[-1]['champion']}  accuracy "
            f"{_mean(realized)} (estimated {_mean(estimated)})  drifted: "
            f"{', '.join(drifted) or 'none'}"
        )

    def _post(self, path: str, body: dict) -> dict:
        response = self.session.post(f"{self.url}{path}", json=body, timeout=60)
        if response.status_code >= 400:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def _served_version(self) -> str | None:
        return self.session.get(f"{self.url}/health", timeout=5).json().get("model_version")


def print_summary(console: Console, timeline: dict[str, Any]) -> None:
    """The story in two tables: by phase, and each retrain."""
    windows = timeline["windows"]
    table = Table(title="What happened")
    for column in ("phase", "days", "served by", "accuracy", "estimated", "without the stack",
                   "drifted features", "alerts"):  # fmt: skip
        table.add_column(column)
    for phase in timeline["phases"]:
        records = [r for r in windows if r["phase"] == phase["name"]]
        table.add_row(
            phase["name"],
            f"{records[0]['day']}-{records[-1]['day']}",
            ", ".join(f"v{v}" for v in dict.fromkeys(r["champion"] for r in records)),
            _mean([r["realized_accuracy"] for r in records]),
            _mean([r["estimated_accuracy"] for r in records]),
            _mean([r["first_champion_accuracy"] for r in records]),
            ", ".join(sorted({f for r in records for f in r["critical_features"]})) or "none",
            ", ".join(sorted({a["name"] for r in records for a in r["alerts"]})) or "none",
        )
    console.print(table)
    if timeline["retrains"]:
        retrains = Table(title="Retrains (the training DAG's steps)")
        for column in ("day", "version", "reason", "gates", "outcome"):
            retrains.add_column(column)
        for r in timeline["retrains"]:
            gates = "; ".join(
                f"{name} {'pass' if g.get('passed') else 'FAIL'}" for name, g in r["gates"].items()
            )
            retrains.add_row(str(r["day"]), f"v{r['version']}", r["reason"], gates, r["action"])
        console.print(retrains)
    s = timeline["summary"]
    console.print(
        f"Accuracy {_pct(s['baseline_accuracy'])} in the baseline week, worst day "
        f"{_pct(s['worst_accuracy'])}, {_pct(s['final_accuracy'])} over the last "
        f"{s['final_days']:g} days (the first champion alone: "
        f"{_pct(s['final_accuracy_without_retraining'])}). Drift injected on day "
        f"{s['drift_injected_day']}, caught on day {s['drift_detected_day']} "
        f"({', '.join(s['drift_detected_features']) or 'nothing'}); {s['retrains']} retrain(s), "
        f"{s['promotions']} promoted; @champion v{s['champion_before']} → v{s['champion_after']}. "
        f"{s['duration_seconds']:.0f} s."
    )


def _window_histogram(before: dict, after: dict, name: str) -> dict[str, Any]:
    """The histogram of one window: the difference of two scrapes."""
    b, a = before[name], after[name]
    buckets = {le: a["buckets"][le] - b["buckets"].get(le, 0.0) for le in a["buckets"]}
    count = a["count"] - b["count"]
    mean = (a["sum"] - b["sum"]) / count if count > 0 else None
    return {"buckets": buckets, "count": count, "mean": None if mean is None else round(mean, 4)}


def _quantile(histogram: dict[str, Any], q: float) -> float | None:
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


def _simulated_start(days: int) -> datetime:
    """Midnight UTC `days` days before today: the replayed weeks end where today begins."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def _phase_banner(phase: str, index: int) -> str:
    what = {
        BASELINE: "ordinary traffic, the world the first champion was trained on",
        SHIFT: f"card holders pay farther from home ({SHIFT_FEATURE} shifts up)",
        CONCEPT: "a fraud wave of skimmed cards used contactless (the labels change, not the "
        "inputs)",
    }[phase]
    return f"[bold cyan]── day {index // WINDOWS_PER_DAY + 1}: {phase}[/] ── {what}"


def _when(record: dict[str, Any]) -> str:
    return f"[dim]day {record['day']:>2} {record['start'][11:16]}[/]"


def _mean(values: list) -> str:
    present = [v for v in values if v is not None]
    return f"{np.mean(present):.3f}" if present else "n/a"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", default="7,7,14",
                        help="days of baseline, covariate shift and concept drift")  # fmt: skip
    parser.add_argument("--rows-per-window", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--out", default="var/demo", help="folder for everything it writes")
    args = parser.parse_args(argv)
    try:
        days = tuple(int(part) for part in args.days.split(","))
        if len(days) != 3 or min(days) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--days wants three positive whole numbers like 7,7,14, got {args.days!r}")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    console = Console()
    out = Path(args.out).resolve()
    demo = Demo(Scenario(days=days, rows_per_window=args.rows_per_window, seed=args.seed),
                out, args.port, console)  # fmt: skip
    timeline = demo.run()
    (out / "timeline.json").write_text(json.dumps(timeline, indent=1, default=str))
    print_summary(console, timeline)
    try:
        from demo.report import render_demo_report
    except ImportError:  # until the report lands
        render_demo_report = None
    if render_demo_report is not None:
        report = render_demo_report(timeline, out / "report.html")
        console.print(f"The report: {report}")
    if "drift_report" in timeline:
        console.print(f"The drift report of the window that caught it: "
                      f"{timeline['drift_report']['path']}")  # fmt: skip
    console.print(f"The timeline: {out / 'timeline.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
