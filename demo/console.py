"""What the demo's terminal shows: a line per simulated day, every event in between (alerts,
policy decisions, gates, promotions), and the summary tables at the end."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from demo.world import BASELINE, CONCEPT, SHIFT, SHIFT_FEATURE, WINDOWS_PER_DAY


def print_events(
    console: Console, windows: list[dict[str, Any]], retrains: list[dict[str, Any]]
) -> None:
    """What changed in the last window: alerts firing and resolving, the policy's decision,
    and the `retrains` it ran, each gate with its numbers."""
    record = windows[-1]
    previous = windows[-2] if len(windows) > 1 else None
    when = _when(record)
    alerts = {(a["name"], a["severity"]) for a in record["alerts"]}
    earlier = {(a["name"], a["severity"]) for a in previous["alerts"]} if previous else set()
    for name, severity in sorted(alerts - earlier):
        alert = next(a for a in record["alerts"] if (a["name"], a["severity"]) == (name, severity))
        colour = "red" if severity == "critical" else "yellow"
        value = "" if alert["value"] is None else f" (value {alert['value']:.3g})"
        console.print(f"{when}  [{colour}]alert {name} {severity}[/]{value}: {alert['summary']}")
    for name, severity in sorted(earlier - alerts):
        console.print(f"{when}  [green]resolved {name} {severity}[/]")
    decision = record["decision"]
    was = previous["decision"] if previous else None
    if decision["triggers"] and (
        decision["retrain"] or not was or was["blocked_by"] != decision["blocked_by"]
    ):
        colour = "bold magenta" if decision["retrain"] else "magenta"
        console.print(f"{when}  [{colour}]policy[/] {decision['reason']}")
    for retrain in retrains:
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


def day_line(windows: list[dict[str, Any]], day: int) -> str:
    """One simulated day in a line: the champion, accuracy realized and estimated, drift."""
    records = windows[day * WINDOWS_PER_DAY : (day + 1) * WINDOWS_PER_DAY]
    realized = [r["realized_accuracy_at_check"] for r in records]
    estimated = [r["estimated_accuracy"] for r in records]
    drifted = sorted({f for r in records for f in r["drifted_features"]})
    # With late labels the day's own accuracy is unknown yet: say what the labels vouch for,
    # the most recent mature window's, and how old it is.
    mature = ""
    last = records[-1]
    if last.get("mature_window") is not None and last["mature_accuracy"] is not None:
        age = (last["index"] - last["mature_window"]) / WINDOWS_PER_DAY
        mature = f", mature {last['mature_accuracy']:.3f} from {age:.1f} days ago"
    return (
        f"[dim]day {day + 1:>2}[/] v{records[-1]['champion']}  accuracy "
        f"{_mean(realized)} (estimated {_mean(estimated)}{mature})  drifted: "
        f"{', '.join(drifted) or 'none'}"
    )


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


def phase_banner(phase: str, index: int) -> str:
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
