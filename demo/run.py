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
window later; with `--label-delay-days N`, every label N days after its window, as chargebacks
come, and each pass refreshes the realized figures of the windows whose labels came in). Then
it runs `monitoring.retrain.loop.check_and_decide`, the drift-check DAG's own task (drift,
quality, realized and estimated performance, saved; then the retrain policy with its
cooldown), reads back what the exporter would serve, and evaluates the alerts of
`prometheus/alerts.yml` on it (`demo.alerts`). When the policy says retrain, it runs
the training DAG's steps (ingest, validate, fit, evaluate, register, three gates, promote) and
waits for the API to hot-reload the new `@champion`.

Six-hour windows cannot pass in minutes: once a window's predictions are logged, their
`predicted_at` is moved into that window (as if served then); all checks and the policy run on
the window's own time, as in production. The same seed gives the same story.

At the end it prints a summary, writes the timeline as JSON and a self-contained HTML report.

    python -m demo.run [--days 7,7,14] [--rows-per-window 300] [--seed 42] [--out var/demo]
        [--label-delay-days 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from data.db import get_engine
from data.logs import configure_logging
from data.schema import FeatureSchema, load_schema
from data.settings import Settings, get_settings
from data.synthetic import generate_transactions, write_frame
from demo.alerts import AlertRules, WindowFigures
from demo.api_process import LABEL_SOURCE, DemoApi, histogram_quantile, window_histogram
from demo.console import day_line, phase_banner, print_events, print_summary
from demo.world import (
    BASELINE,
    LABEL_SHARE_IN_WINDOW,
    SHIFT_FEATURE,
    SLOT,
    WINDOWS_PER_DAY,
    Scenario,
    simulated_start,
)

log = logging.getLogger(__name__)


@dataclass
class Demo:
    """One run of the story: its folder, settings, API process and everything it saw."""

    scenario: Scenario
    out: Path
    port: int
    console: Console
    # The demo's one label writer (LABEL_TOKENS): labels, like in production, need its token.
    label_token: str = field(default_factory=lambda: secrets.token_hex(16))
    settings: Settings = field(init=False)
    schema: FeatureSchema = field(init=False)
    windows: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)
    api: DemoApi = field(init=False)
    caught: tuple[int, dict] | None = None  # the first window with critical drift, its report
    # With a label delay: the labels due at each window index, sent before its check.
    scheduled: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

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
            "LABEL_TOKENS": f"{LABEL_SOURCE}={self.label_token}",
            # Variables exported in the shell may name real destinations: the demo pages nobody.
            "SLACK_WEBHOOK_URL": "",
            "PAGERDUTY_ROUTING_KEY": "",
            "SMTP_HOST": "",
            "ALERT_WEBHOOK_URL": "",
            "ALERTMANAGER_URL": "",
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
        self.api = DemoApi(self.out, self.port, self.schema, self.engine, self.label_token)

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

    # -- one window ------------------------------------------------------------------------

    def run_window(self, index: int, start: datetime, rng: np.random.Generator, pending: list):
        from monitoring.report_store import latest_reports
        from monitoring.retrain.loop import check_and_decide

        end = start + SLOT
        frame = self.scenario.traffic(index, start, self.schema)
        self.frames.append(frame)
        clock = time.perf_counter()
        before = self.api.scrape()
        ids = self.api.serve(frame, start)
        after = self.api.scrape()
        served = time.perf_counter()
        truth = frame[self.schema.target].astype(int).tolist()
        known = rng.random(len(ids)) < LABEL_SHARE_IN_WINDOW
        if self.scenario.label_delay_windows:
            due = index + self.scenario.label_delay_windows
            labelled_at = (start + SLOT * (due - index + 1)).isoformat()
            self.scheduled[due] = [
                {"request_id": i, "label": y, "labelled_at": labelled_at}
                for i, y in zip(ids, truth, strict=True)
            ]
            known[:] = False
        now = [
            {"request_id": i, "label": y} for i, y, k in zip(ids, truth, known, strict=True) if k
        ]
        later = [
            {"request_id": i, "label": y}
            for i, y, k in zip(ids, truth, known, strict=True)
            if not k and not self.scenario.label_delay_windows
        ]
        # The labels' own time is the simulated one, as the retrain policy reads it.
        known_by = end.isoformat()
        due = [{**label, "labelled_at": known_by} for label in pending + now]
        self.api.send_labels(due + self.scheduled.pop(index, []))

        labelled = time.perf_counter()
        outcome = check_and_decide(start, end, self.settings)
        reports = latest_reports(self.settings.MODEL_NAME, self.engine)
        checked = time.perf_counter()
        mature = self.mature_figures(start - SLOT * index)
        record = self.window_record(index, start, end, outcome, reports, before, after, mature)
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

    def window_record(
        self, index, start, end, outcome, reports, before, after, mature
    ) -> dict[str, Any]:
        drift = (reports.drift or {}).get("report") or {}
        quality = (reports.quality or {}).get("report") or {}
        performance = (reports.performance or {}).get("report") or {}
        realized = (performance.get("realized") or {}).get("overall") or {}
        estimated = (performance.get("estimated") or {}).get("overall") or {}
        features = drift.get("features") or {}
        severities = [f.get("severity") for f in features.values()]
        latency = window_histogram(before, after, "http_request_duration_seconds")
        confidence = window_histogram(before, after, "ml_prediction_confidence")
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
            mature_accuracy=mature["mature_accuracy"],
            latency_p99_seconds=histogram_quantile(latency, 0.99),
            mean_confidence=confidence["mean"],
        )
        p50, p99 = histogram_quantile(latency, 0.5), histogram_quantile(latency, 0.99)
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
                "found_late_hours": outcome.get("found_late_hours"),
            },
            "_figures": figures,
        } | mature

    def mature_figures(self, first: datetime) -> dict[str, Any]:
        """What the exporter serves about late labels after this pass: the most recent window
        whose labels are LABEL_MATURE_COVERAGE in (its index and realized accuracy)."""
        from monitoring.label_maturity import maturity_summary

        summary = maturity_summary(
            self.engine,
            model_name=self.settings.MODEL_NAME,
            maturity_days=self.settings.LABEL_MATURITY_DAYS,
            mature_coverage=self.settings.LABEL_MATURE_COVERAGE,
        )
        if summary.mature_window is None:
            return {"mature_window": None, "mature_accuracy": None}
        return {
            "mature_window": int((summary.mature_window[0] - first) / SLOT),
            "mature_accuracy": (summary.mature_realized or {}).get("accuracy"),
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
            while self.api.served_version() != str(version):
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
        say(f"   v{first} is @champion; starting the API on {self.api.url}")
        self.api.start()
        start = simulated_start(sum(self.scenario.days))
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
                        progress.console.print(phase_banner(phase, index))
                    retrains = len(self.retrains)
                    pending = self.run_window(index, start + SLOT * index, rng, pending)
                    print_events(progress.console, self.windows, self.retrains[retrains:])
                    if (index + 1) % WINDOWS_PER_DAY == 0:
                        progress.console.print(day_line(self.windows, index // WINDOWS_PER_DAY))
                    progress.update(task, advance=1, description=f"day {index // 4 + 1} {phase}")
            last = (start + SLOT * self.scenario.windows).isoformat()
            rest = [{**label, "labelled_at": last} for label in pending]
            self.api.send_labels(
                rest + [x for due in sorted(self.scheduled) for x in self.scheduled[due]]
            )
        finally:
            self.api.stop()
        self.final_accuracy(start)
        timeline = self.timeline(first, time.perf_counter() - began)
        if self.caught is not None:
            from monitoring.html.drift_page import write_html

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
                "label_delay_days": self.scenario.label_delay_days,
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
                # The first retrain the labels asked for late, and how late (None: none did).
                "accuracy_fall_found_late_hours": next(
                    (
                        r["decision"]["found_late_hours"]
                        for r in windows
                        if r["decision"]["retrain"] and r["decision"]["found_late_hours"]
                    ),
                    None,
                ),
                "duration_seconds": round(seconds, 1),
            },
        }

    # -- what the terminal shows -----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", default="7,7,14",
                        help="days of baseline, covariate shift and concept drift")  # fmt: skip
    parser.add_argument("--rows-per-window", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--out", default="var/demo", help="folder for everything it writes")
    parser.add_argument("--label-delay-days", type=float, default=0.0,
                        help="every label this many days after its prediction (default: most "
                        "within the window, the rest one window later)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        days = tuple(int(part) for part in args.days.split(","))
        if len(days) != 3 or min(days) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--days wants three positive whole numbers like 7,7,14, got {args.days!r}")
    if args.label_delay_days < 0:
        parser.error(f"--label-delay-days must be 0 or more, got {args.label_delay_days}")
    configure_logging(get_settings(), process="demo", command=True)
    console = Console()
    out = Path(args.out).resolve()
    scenario = Scenario(days=days, rows_per_window=args.rows_per_window, seed=args.seed,
                        label_delay_days=args.label_delay_days)  # fmt: skip
    demo = Demo(scenario, out, args.port, console)
    timeline = demo.run()
    (out / "timeline.json").write_text(json.dumps(timeline, indent=1, default=str))
    print_summary(console, timeline)
    from demo.report import render_demo_report

    report = render_demo_report(timeline, out / "report.html")
    console.print(f"The report: {report}")
    if "drift_report" in timeline:
        console.print(f"The drift report of the window that caught it: "
                      f"{timeline['drift_report']['path']}")  # fmt: skip
    console.print(f"The timeline: {out / 'timeline.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
