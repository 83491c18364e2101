"""The timeline `demo.run` records, read for the report (`demo.report`).

A timeline is a JSON-ready dict: one entry per simulated six-hour window (accuracy realized and
estimated, drifted share, PSI per feature, latency, alerts, the retrain decision), the phases
of the simulation, every retrain with its three gates, a summary, and optionally the run's
thresholds. The report draws whatever a timeline holds: a key that is missing or null reads as
"n/a"; a value of the wrong kind, or a phase or retrain naming a window that is not there,
stops it with a `TimelineError` that names the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from data.settings import Settings
from monitoring.html.page import moment

NA = "n/a"

# The thresholds drawn on the charts are the stack's defaults, the values the drift check and
# the retrain policy use unless the environment says otherwise; a timeline may carry its own
# under "thresholds" (the run's settings), which then win.
_DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
PSI_WARNING: float = _DEFAULTS["PSI_WARNING"]
PSI_CRITICAL: float = _DEFAULTS["PSI_CRITICAL"]
DRIFT_SHARE_THRESHOLD: float = _DEFAULTS["DRIFT_SHARE_THRESHOLD"]
ACCURACY_FLOOR: float = _DEFAULTS["RETRAIN_ACCURACY_FLOOR"]


class TimelineError(ValueError):
    """The timeline is not one this report can draw; the message names the field."""


@dataclass(frozen=True)
class Retrain:
    position: int
    version: str
    promoted: bool
    tip: str


@dataclass(frozen=True)
class Story:
    """What every chart shares: the windows, their weeks, the phases and the retrains."""

    count: int
    weeks: list[Any]
    phases: list[tuple[int, int, str]]  # (first position, position after the last, name)
    retrains: list[Retrain]
    window_labels: list[str]  # for tooltips: week, window index, start
    short_labels: list[str]  # for tables: window index and start


def windows(timeline: dict[str, Any]) -> list[dict[str, Any]]:
    """The timeline's windows, checked to be a non-empty list of objects."""
    found = timeline.get("windows")
    if not isinstance(found, list):
        raise TimelineError("timeline 'windows' must be a list of windows, one per 6-hour window")
    if not found:
        raise TimelineError("timeline 'windows' is empty: there is nothing to draw")
    for position, window in enumerate(found):
        if not isinstance(window, dict):
            raise TimelineError(f"windows[{position}] must be an object, not {window!r}")
    return found


def number(value: Any, where: str) -> float | None:
    """A number from the timeline; None when absent, null or not finite (shown as n/a)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TimelineError(f"{where} must be a number or null, not {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def column(windows: list[dict[str, Any]], key: str) -> list[float | None]:
    """`key` of every window, as `number` reads it."""
    return [number(w.get(key), f"windows[{i}].{key}") for i, w in enumerate(windows)]


def text(value: Any) -> str:
    return "" if value is None else str(value)


def story(timeline: dict[str, Any], windows: list[dict[str, Any]]) -> Story:
    """The phases and retrains placed on the windows (they name windows by their "index")."""
    position_of: dict[Any, int] = {}
    for position, window in enumerate(windows):
        position_of.setdefault(window.get("index", position), position)

    starts = []
    for i, phase in enumerate(timeline.get("phases") or []):
        if not isinstance(phase, dict):
            raise TimelineError(f"phases[{i}] must be an object, not {phase!r}")
        start = phase.get("start_window")
        if start not in position_of:
            raise TimelineError(
                f"phases[{i}].start_window {start!r} is not the index of any window"
            )
        starts.append((position_of[start], text(phase.get("name"))))
    starts.sort()
    phases = [
        (start, starts[j + 1][0] if j + 1 < len(starts) else len(windows), name)
        for j, (start, name) in enumerate(starts)
    ]

    retrains = []
    for i, retrain in enumerate(timeline.get("retrains") or []):
        if not isinstance(retrain, dict):
            raise TimelineError(f"retrains[{i}] must be an object, not {retrain!r}")
        window = retrain.get("window")
        if window not in position_of:
            raise TimelineError(f"retrains[{i}].window {window!r} is not the index of any window")
        version = text(retrain.get("version")) or "?"
        promoted = retrain.get("promoted") is True
        tip = (
            f"v{version} {'promoted' if promoted else 'not promoted'} at window {window}: "
            f"{text(retrain.get('reason')) or 'no reason given'}"
        )
        retrains.append(Retrain(position_of[window], version, promoted, tip))

    labels = [
        f"week {text(w.get('week')) or NA}, window {w.get('index', i)} "
        f"({moment(w.get('start'), NA)} UTC)"
        for i, w in enumerate(windows)
    ]
    short = [f"{w.get('index', i)}: {moment(w.get('start'), NA)}" for i, w in enumerate(windows)]
    weeks = [w.get("week") for w in windows]
    return Story(len(windows), weeks, phases, retrains, labels, short)


def thresholds(timeline: dict[str, Any]) -> dict[str, float]:
    """The run's thresholds where it recorded them, the stack's defaults elsewhere."""
    given = timeline.get("thresholds") or {}
    values = {
        "psi_warning": PSI_WARNING,
        "psi_critical": PSI_CRITICAL,
        "drift_share_threshold": DRIFT_SHARE_THRESHOLD,
        "accuracy_floor": ACCURACY_FLOOR,
    }
    for key in values:
        found = number(given.get(key), f"thresholds.{key}")
        if found is not None:
            values[key] = found
    return values
