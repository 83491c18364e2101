"""The retrain policy: from one window's saved reports and the training history, retrain or not.

This is the code that closes the loop. The drift-check DAG (and the demo) call `decide_and_record`
after `monitoring.window_checks` has saved the window's drift, quality and performance reports;
it reads them back from the database, so it decides on exactly what the exporter shows.

What triggers a retrain (each one is named in the decision, with its numbers):

- `critical_drift`: a feature drifted with severity critical;
- `multivariate_drift`: the joint distribution of the features drifted with severity critical
  (`monitoring.multivariate_drift`: a domain classifier's held-out AUC of at least
  MULTIVARIATE_AUC_CRITICAL), even where no feature drifted on its own;
- `dataset_drift`: at least DRIFT_SHARE_THRESHOLD of the features drifted;
- `quality_hard_failure`: a quality check failed hard, other than volume/freshness (an empty or
  stale window says the feed stopped, which no retrain fixes); training validates its data
  again, so a broken feed is stopped there instead of being learnt;
- `accuracy_below_floor`: realized accuracy under RETRAIN_ACCURACY_FLOOR, trusted only once at
  least RETRAIN_MIN_LABEL_COVERAGE of the window's predictions have their label. Labels come
  days late, so this reads every window of the last LABEL_MATURITY_DAYS by prediction time
  (their realized figures refreshed by `monitoring.label_maturity` as labels came in), not
  only the one that just closed: a fall found three days late still triggers, the episode is the
  windows where accuracy fell, and the decision's `numbers.late_accuracy.found_late_hours` says
  how late it was found. Only the rows the current champion answered count, so the windows an
  older version served do not retrigger after it was replaced;
- `estimated_accuracy_below_floor`: estimated accuracy (CBPE) under
  RETRAIN_ESTIMATED_ACCURACY_FLOOR, which sees trouble before labels arrive.

What holds a triggered retrain back (the first that applies is `blocked_by`):

- `training_running`: a training run is still running (one older than RETRAIN_TIMEOUT_HOURS
  counts as dead and blocks nothing), or one requested for a later window is running or
  starting (a decision taken late, in a backfill or racing a later window's);
- `cooldown`: a run was requested less than RETRAIN_COOLDOWN_HOURS ago (failed runs excepted);
- `daily_cap`: RETRAIN_MAX_PER_DAY runs were started by the policy in the last 24 hours;
- `not_enough_labels`: fewer than RETRAIN_MIN_LABELLED_ROWS labelled predictions to learn from
  arrived since the last run's data ended: nothing new to learn from. New are the labelled
  predictions made since then, and the earlier ones of the episode whose label came since (by
  the label's `labelled_at`): under a label lag the predictions made after the last run have no
  labels yet, and the labels that did come are for predictions it saw unlabelled.

A retrain learns from the drift episode: the labelled predictions of the unbroken run of
triggered windows that ends with this one (at most RETRAIN_DATA_DAYS back), plus a sample of the
original training data. Rows from before the episode follow the relationship the world has
left; the decision's `numbers.data_start` says where the episode began. When realized accuracy
is under its floor, the episode is the run of windows where it was: the relationship changed
there, and the drifted windows before it were still predicted well (a covariate shift the
champion handled), so their labels would teach the old relationship back.

Time is the window's end, the run's logical time, never `now()`: a re-run or a simulation (the
demo replays weeks in minutes) keeps its own clock. Every decision, taken or not, is one row of
`retrain_decisions` per window; deciding a window again returns the row already there, so a
re-run Airflow task neither duplicates it nor starts a second training. A decision to retrain
also writes its `training_runs` row (status `running`) in the same transaction, which is what
the next decision's guards see. On Postgres, decisions for one model are taken one at a time
(a transaction-scoped advisory lock, `pg_advisory_xact_lock`, taken before anything is read):
two windows decided at the same moment (Airflow catching up, a backfill) cannot both start a
training; the second waits for the first to commit and sees its run.

    python -m monitoring.retrain.policy [--limit 20] [--json]   # the latest decisions, newest first
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from data.db import (
    as_utc,
    database_error_message,
    drift_reports,
    get_engine,
    init_db,
    labels,
    performance_reports,
    prediction_logs,
    quality_reports,
    retrain_decisions,
    training_runs,
)
from data.logs import configure_logging
from data.settings import Settings, exit_on_config_error, get_settings
from training.runs import FAILED, RUNNING, start_training_run, times_as_text, with_utc_times

log = logging.getLogger(__name__)

TRIGGERS = (
    "critical_drift",
    "multivariate_drift",
    "dataset_drift",
    "quality_hard_failure",
    "accuracy_below_floor",
    "estimated_accuracy_below_floor",
)
GUARDS = ("training_running", "cooldown", "daily_cap", "not_enough_labels")
# Quality failures that mean "no data", not "bad data": a retrain has nothing to learn from.
_NO_DATA_CHECKS = frozenset({"volume_freshness"})


@dataclass(frozen=True)
class Decision:
    """One window's decision, as stored in `retrain_decisions`."""

    window: tuple[datetime, datetime]
    model_name: str
    model_version: str | None
    retrain: bool
    reason: str
    triggers: list[str]
    blocked_by: str | None
    numbers: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    training_run_id: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Decision:
        return cls(
            window=(as_utc(row["window_start"]), as_utc(row["window_end"])),
            model_name=row["model_name"],
            model_version=row["model_version"],
            retrain=bool(row["retrain"]),
            reason=row["reason"],
            triggers=list(row["triggers"]),
            blocked_by=row["blocked_by"],
            numbers=dict(row["numbers"]),
            id=row["id"],
            training_run_id=row["training_run_id"],
        )


def find_triggers(
    drift: dict[str, Any] | None,
    quality: dict[str, Any] | None,
    performance: dict[str, Any] | None,
    settings: Settings,
) -> tuple[list[str], list[str], dict[str, Any]]:
    """What in one window's reports (their stored JSON) calls for a retrain.

    Returns (trigger names, one phrase per trigger, the numbers behind them); pure, no I/O.
    """
    found: list[str] = []
    phrases: list[str] = []
    numbers: dict[str, Any] = {}
    if drift is not None:
        features = drift.get("features", {})
        critical = sorted(n for n, f in features.items() if f.get("severity") == "critical")
        drifted = sorted(n for n, f in features.items() if f.get("drifted"))
        numbers |= {
            "drifted_share": drift.get("drifted_share"),
            "dataset_drift": bool(drift.get("dataset_drift")),
            "drifted_features": drifted,
            "critical_features": critical,
            "prediction_drift": bool((drift.get("prediction") or {}).get("drifted")),
        }
        if critical:
            found.append("critical_drift")
            phrases.append(f"critical drift in {', '.join(critical)}")
        joint = drift.get("multivariate") or {}
        if joint.get("available"):
            numbers["multivariate"] = {
                k: joint.get(k) for k in ("severity", "auc", "p_value", "drivers")
            }
        if joint.get("severity") == "critical":
            found.append("multivariate_drift")
            drivers = ", ".join(joint.get("drivers") or []) or "no feature named"
            # The threshold the report was judged by (saved with it), not today's setting.
            floor = (drift.get("thresholds") or {}).get(
                "multivariate_auc_critical", settings.MULTIVARIATE_AUC_CRITICAL
            )
            phrases.append(
                f"critical multivariate drift (domain classifier AUC {joint['auc']:.3f} >= "
                f"{floor}; driven by {drivers})"
            )
        if drift.get("dataset_drift"):
            found.append("dataset_drift")
            phrases.append(
                f"dataset drift ({len(drifted)} of {len(features)} features, share "
                f"{drift.get('drifted_share', 0):.2f} >= {settings.DRIFT_SHARE_THRESHOLD})"
            )
    if quality is not None:
        failures = list(quality.get("failures", []))
        numbers["quality_failures"] = failures
        broken = [name for name in failures if name not in _NO_DATA_CHECKS]
        if broken:
            found.append("quality_hard_failure")
            phrases.append(f"quality hard failure ({', '.join(broken)})")
    if performance is not None:
        realized = (performance.get("realized") or {}).get("overall") or {}
        estimated = (performance.get("estimated") or {}).get("overall") or {}
        accuracy, coverage = realized.get("accuracy"), realized.get("label_coverage")
        numbers |= {
            "realized_accuracy": accuracy,
            "label_coverage": coverage,
            "labelled": realized.get("labelled"),
            "estimated_accuracy": estimated.get("accuracy"),
        }
        trusted = coverage is not None and coverage >= settings.RETRAIN_MIN_LABEL_COVERAGE
        if accuracy is not None and trusted and accuracy < settings.RETRAIN_ACCURACY_FLOOR:
            found.append("accuracy_below_floor")
            numbers["realized_accuracy_low_now"] = True
            phrases.append(
                f"realized accuracy {accuracy:.3f} < {settings.RETRAIN_ACCURACY_FLOOR} "
                f"(label coverage {coverage:.2f})"
            )
        guess = estimated.get("accuracy")
        if guess is not None and guess < settings.RETRAIN_ESTIMATED_ACCURACY_FLOOR:
            found.append("estimated_accuracy_below_floor")
            phrases.append(
                f"estimated accuracy {guess:.3f} < {settings.RETRAIN_ESTIMATED_ACCURACY_FLOOR}"
            )
    return found, phrases, numbers


def decide_and_record(
    window: tuple[datetime, datetime],
    *,
    model_version: str | None = None,
    settings: Settings,
    engine: Engine | None = None,
) -> Decision:
    """Decide for the window [start, end) whose reports `check_window` saved; record it once.

    A window decided before returns its stored decision unchanged.
    """
    engine = engine or get_engine(settings.database_url)
    init_db(engine)
    start, end = (as_utc(moment) for moment in window)
    model_name = settings.MODEL_NAME
    try:
        with engine.begin() as conn:
            _one_decision_at_a_time(conn, model_name)
            existing = _stored_decision(conn, model_name, start, end)
            if existing is not None:
                return existing
            decision = _decide(conn, (start, end), model_name, model_version, settings)
            return _record(conn, decision, settings)
    except IntegrityError:
        # The same window decided at the same moment by another run: theirs stands.
        with engine.connect() as conn:
            existing = _stored_decision(conn, model_name, start, end)
        if existing is None:
            raise
        return existing


def decision_lock_key(model_name: str) -> int:
    """The advisory lock that serializes the decisions for `model_name` (a signed 64-bit key)."""
    digest = hashlib.blake2b(f"retrain-decision:{model_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _one_decision_at_a_time(conn: Connection, model_name: str) -> None:
    """Wait for any other decision for the model to commit (Postgres; held to this
    transaction's end). SQLite takes one writer at a time and has no such lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": decision_lock_key(model_name)}
        )


def _decide(
    conn: Connection,
    window: tuple[datetime, datetime],
    model_name: str,
    model_version: str | None,
    settings: Settings,
) -> Decision:
    start, end = window
    reports = {
        name: _window_report(conn, table, model_name, start, end)
        for name, table in (
            ("drift", drift_reports),
            ("quality", quality_reports),
            ("performance", performance_reports),
        )
    }
    found, phrases, numbers = find_triggers(
        reports["drift"], reports["quality"], reports["performance"], settings
    )
    numbers["reports"] = sorted(name for name, report in reports.items() if report is not None)
    late = _late_accuracy(conn, model_name, model_version, (start, end), settings)
    if late is not None:
        numbers["late_accuracy"] = late
        if "accuracy_below_floor" not in found:
            found.append("accuracy_below_floor")
            phrases.append(
                f"realized accuracy {late['accuracy']:.3f} < {settings.RETRAIN_ACCURACY_FLOOR} on "
                f"the predictions of {late['window_start']:%Y-%m-%d %H:%M}.."
                f"{late['window_end']:%H:%M} (label coverage {late['label_coverage']:.2f}, found "
                f"{late['found_late_hours']:.0f} h after that window closed)"
            )

    def decision(retrain: bool, reason: str, blocked_by: str | None = None) -> Decision:
        return Decision(
            (start, end), model_name, model_version, retrain, reason, found, blocked_by, numbers
        )

    if not found:
        return decision(False, "no retrain: no drift, quality or accuracy trigger in the window")
    why = "; ".join(phrases)
    runs = _runs_before(
        conn, model_name, end, since=end - timedelta(days=max(settings.RETRAIN_DATA_DAYS, 1.0))
    )
    timeout = timedelta(hours=settings.RETRAIN_TIMEOUT_HOURS)
    running = [r for r in runs if r["status"] == RUNNING and end - r["requested_at"] < timeout]
    if running:
        numbers["running_run_id"] = running[0]["id"]
        return decision(
            False,
            f"skipped: training run {running[0]['id']} is still running ({why})",
            "training_running",
        )
    later = _running_from(conn, model_name, end)
    if later:
        numbers["running_run_id"] = later[0]["id"]
        return decision(
            False,
            f"skipped: a training is already running or starting: run {later[0]['id']}, "
            f"requested for the later window ending {later[0]['requested_at']:%Y-%m-%d %H:%M} "
            f"({why})",
            "training_running",
        )
    counted = [r for r in runs if r["status"] != FAILED]
    if counted:
        last = counted[0]["requested_at"]
        hours = (end - last).total_seconds() / 3600
        numbers |= {"hours_since_last_training": round(hours, 2), "last_training_at": last}
        if hours < settings.RETRAIN_COOLDOWN_HOURS:
            return decision(
                False,
                f"skipped: cooldown, last training {hours:.1f} h ago < "
                f"RETRAIN_COOLDOWN_HOURS={settings.RETRAIN_COOLDOWN_HOURS} ({why})",
                "cooldown",
            )
    today = [
        r for r in runs if r["trigger"] == "policy" and end - r["requested_at"] < timedelta(days=1)
    ]
    numbers["policy_retrains_24h"] = len(today)
    if len(today) >= settings.RETRAIN_MAX_PER_DAY:
        return decision(
            False,
            f"skipped: daily cap, {len(today)} automatic retrains in 24 h >= "
            f"RETRAIN_MAX_PER_DAY={settings.RETRAIN_MAX_PER_DAY} ({why})",
            "daily_cap",
        )
    # Learn from the drift episode: the run of consecutive triggered windows that ends here.
    # Labelled rows from before it follow the relationship the world has left, and mixed in
    # they teach the old one back (ROC AUC 0.96 -> 0.87 on the shipped data when the week
    # before a concept change is kept).
    kind = "accuracy_below_floor" if "accuracy_below_floor" in found else None
    floor = end - timedelta(days=settings.RETRAIN_DATA_DAYS)
    data_start = _episode_start(conn, model_name, start, floor=floor, kind=kind)
    if late is not None and not numbers.get("realized_accuracy_low_now"):
        # Found late: learn from where accuracy fell, by prediction time, not from the windows
        # whose checks happened to run while the labels were on their way.
        data_start = max(late["episode_start"], floor)
    numbers["data_start"] = data_start
    previous_end = max((r["data_end"] for r in counted if r["data_end"] is not None), default=None)
    new_since = max(data_start, previous_end) if previous_end else data_start
    labelled = count_labelled(conn, new_since, end)
    if new_since > data_start:
        # Labels come late: predictions the last run saw unlabelled whose labels came since are
        # new to learn from too (their label's time, `labelled_at`, is after that run's data).
        late = count_labelled(conn, data_start, new_since, labelled_since=new_since)
        numbers["late_labelled_rows"] = late
        labelled += late
    numbers |= {"new_labelled_rows": labelled, "new_labelled_since": new_since}
    if labelled < settings.RETRAIN_MIN_LABELLED_ROWS:
        return decision(
            False,
            f"skipped: {labelled:,} new labelled rows since {new_since:%Y-%m-%d %H:%M} < "
            f"RETRAIN_MIN_LABELLED_ROWS={settings.RETRAIN_MIN_LABELLED_ROWS:,} ({why})",
            "not_enough_labels",
        )
    return decision(True, f"retrain: {why}")


def _record(conn: Connection, decision: Decision, settings: Settings) -> Decision:
    start, end = decision.window
    run_id = None
    if decision.retrain:
        run_id = start_training_run(
            conn,
            model_name=decision.model_name,
            requested_at=end,
            trigger="policy",
            reason=decision.reason,
            data_window=(as_utc(decision.numbers["data_start"]), end),
        )
    values = {
        "window_start": start,
        "window_end": end,
        "model_name": decision.model_name,
        "model_version": decision.model_version,
        "retrain": decision.retrain,
        "reason": decision.reason,
        "triggers": decision.triggers,
        "blocked_by": decision.blocked_by,
        "numbers": times_as_text(decision.numbers),
        "training_run_id": run_id,
    }
    row_id = conn.execute(insert(retrain_decisions).values(**values)).inserted_primary_key[0]
    log.info("retrain decision for %s..%s: %s", start, end, decision.reason)
    return Decision.from_row({**values, "id": row_id})


def decisions(
    model_name: str | None = None, limit: int = 50, engine: Engine | None = None
) -> list[Decision]:
    """Stored decisions, newest window first."""
    engine = engine or get_engine()
    init_db(engine)
    query = select(retrain_decisions).order_by(
        retrain_decisions.c.window_end.desc(), retrain_decisions.c.id.desc()
    )
    if model_name is not None:
        query = query.where(retrain_decisions.c.model_name == model_name)
    with engine.connect() as conn:
        return [Decision.from_row(dict(r._mapping)) for r in conn.execute(query.limit(limit))]


def count_labelled(
    conn: Connection, start: datetime, end: datetime, *, labelled_since: datetime | None = None
) -> int:
    """Predictions made in [start, end) whose label has arrived (with `labelled_since`: whose
    label's time is at or after it)."""
    query = (
        select(func.count())
        .select_from(
            prediction_logs.join(labels, labels.c.request_id == prediction_logs.c.request_id)
        )
        .where(prediction_logs.c.predicted_at >= start, prediction_logs.c.predicted_at < end)
    )
    if labelled_since is not None:
        query = query.where(labels.c.labelled_at >= labelled_since)
    return int(conn.execute(query).scalar_one())


def _episode_start(
    conn: Connection, model_name: str, start: datetime, floor: datetime, kind: str | None = None
) -> datetime:
    """Where the drift episode ending with the window starting at `start` began: the earliest
    window of the unbroken run of earlier decided windows that had a trigger (the trigger
    `kind`, when given), not before `floor` (RETRAIN_DATA_DAYS back)."""
    rows = conn.execute(
        select(
            retrain_decisions.c.window_start,
            retrain_decisions.c.window_end,
            retrain_decisions.c.triggers,
        )
        .where(retrain_decisions.c.model_name == model_name)
        .where(retrain_decisions.c.window_end <= start, retrain_decisions.c.window_end > floor)
        .order_by(retrain_decisions.c.window_end.desc())
    ).all()
    earliest = start
    for window_start, window_end, triggers in rows:
        if as_utc(window_end) != earliest or not triggers or (kind and kind not in triggers):
            break
        earliest = as_utc(window_start)
    return max(earliest, floor)


def _late_accuracy(
    conn: Connection,
    model_name: str,
    model_version: str | None,
    window: tuple[datetime, datetime],
    settings: Settings,
) -> dict[str, Any] | None:
    """The earlier windows (ending by `window`'s start, within LABEL_MATURITY_DAYS) whose
    realized accuracy, over the rows `model_version` answered, is trusted and under the floor.

    None when there is none; else the latest such window's figures, how many hours after it
    closed this is, and where the unbroken run of such windows (by prediction time) began.
    """
    start, end = window
    horizon = end - timedelta(days=settings.LABEL_MATURITY_DAYS)
    rows = conn.execute(
        select(
            performance_reports.c.window_start,
            performance_reports.c.window_end,
            performance_reports.c.report,
        )
        .where(performance_reports.c.model_name == model_name)
        .where(performance_reports.c.window_end <= start)
        .where(performance_reports.c.window_end > horizon)
        .order_by(performance_reports.c.window_start)
    ).all()
    run: list[dict[str, Any]] = []
    for window_start, window_end, report in rows:
        realized = (report or {}).get("realized") or {}
        versions = realized.get("by_version")
        # Reports saved before they were split by version count as a whole.
        figures = (versions.get(str(model_version)) if versions else realized.get("overall")) or {}
        accuracy, coverage = figures.get("accuracy"), figures.get("label_coverage")
        if coverage is None or coverage < settings.RETRAIN_MIN_LABEL_COVERAGE or accuracy is None:
            continue  # not known yet: neither breaks nor extends a run
        if accuracy >= settings.RETRAIN_ACCURACY_FLOOR:
            run = []
            continue
        found = {
            "window_start": as_utc(window_start),
            "window_end": as_utc(window_end),
            "accuracy": accuracy,
            "label_coverage": coverage,
        }
        run.append(found)
    if not run:
        return None
    return {
        **run[-1],
        "low_windows": len(run),
        "episode_start": run[0]["window_start"],
        "found_late_hours": round((end - run[-1]["window_end"]).total_seconds() / 3600, 1),
    }


def _stored_decision(
    conn: Connection, model_name: str, start: datetime, end: datetime
) -> Decision | None:
    row = conn.execute(
        select(retrain_decisions).where(
            retrain_decisions.c.model_name == model_name,
            retrain_decisions.c.window_start == start,
            retrain_decisions.c.window_end == end,
        )
    ).first()
    return Decision.from_row(dict(row._mapping)) if row else None


def _window_report(
    conn: Connection, table, model_name: str, start: datetime, end: datetime
) -> dict[str, Any] | None:
    row = conn.execute(
        select(table.c.report)
        .where(table.c.model_name == model_name, table.c.window_start == start)
        .where(table.c.window_end == end)
        .order_by(table.c.id.desc())
        .limit(1)
    ).first()
    return row[0] if row else None


def _runs_before(
    conn: Connection, model_name: str, end: datetime, since: datetime
) -> list[dict[str, Any]]:
    """Training runs requested in [since, end), newest first."""
    query = (
        select(training_runs)
        .where(training_runs.c.model_name == model_name)
        .where(training_runs.c.requested_at >= since, training_runs.c.requested_at < end)
        .order_by(training_runs.c.requested_at.desc(), training_runs.c.id.desc())
    )
    return [with_utc_times(dict(row._mapping)) for row in conn.execute(query)]


def _running_from(conn: Connection, model_name: str, end: datetime) -> list[dict[str, Any]]:
    """Training runs still running that were requested at or after `end`, oldest first."""
    query = (
        select(training_runs)
        .where(training_runs.c.model_name == model_name, training_runs.c.status == RUNNING)
        .where(training_runs.c.requested_at >= end)
        .order_by(training_runs.c.requested_at, training_runs.c.id)
    )
    return [with_utc_times(dict(row._mapping)) for row in conn.execute(query)]


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.retrain.policy",
        description="Show the retrain policy's latest decisions: retrain or not, and why.",
    )
    parser.add_argument("--limit", type=int, default=20, help="how many windows (default 20)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings, process="retrain-policy", command=True)
    try:
        found = decisions(settings.MODEL_NAME, args.limit, get_engine(settings.database_url))
    except SQLAlchemyError as exc:
        print(f"error: {database_error_message(exc)}", file=sys.stderr)
        return 2
    if args.json:
        rows = [times_as_text({**d.__dict__, "window": list(d.window)}) for d in found]
        print(json.dumps(rows, indent=2))
        return 0
    if not found:
        print(f"no retrain decisions for {settings.MODEL_NAME!r} yet (the drift check records one "
              "per window)")  # fmt: skip
        return 0
    for d in found:
        start, end = d.window
        verdict = "RETRAIN" if d.retrain else (f"held: {d.blocked_by}" if d.blocked_by else "no")
        run = f" -> training run {d.training_run_id}" if d.training_run_id else ""
        print(f"{start:%Y-%m-%d %H:%M}..{end:%H:%M} UTC  v{d.model_version or '?'}  {verdict}{run}")
        print(f"    {d.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
