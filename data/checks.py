"""Checks on a typed frame: one result type, one signature, one runner, one report base.

Validation (`data.validate`, before training) and data quality (`monitoring.quality_report`, on a
live window) are each a tuple of checks run by `run_suite`. A check is a function of one
argument, its suite's input (the typed frame, the schema and the suite's settings, in a small
dataclass of the suite's own), returning a `CheckResult`:

    Check = Callable[[Input], CheckResult]

so a suite is extended by writing one more such function. A check that looks at several columns
collects `Problem`s and lets `judge` turn them into its result: the worst problem's level, the
problems' messages worst first, the columns they name.

Levels: "ok"; "soft", a warning; "hard", a failure (training stops; the live feed is broken).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

OK, SOFT, HARD = "ok", "soft", "hard"
LEVELS = (OK, SOFT, HARD)
_RANK = {level: rank for rank, level in enumerate(LEVELS)}

Input = TypeVar("Input")
Check = Callable[[Input], "CheckResult"]


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. `columns` names the columns at fault (or the one checked);
    `details` is JSON-ready, the check's own figures."""

    name: str
    level: str
    message: str
    columns: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.level not in _RANK:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {self.level!r}")

    @property
    def passed(self) -> bool:
        return self.level == OK

    @property
    def hard(self) -> bool:
        """True when the check failed hard (a passed check is never hard)."""
        return self.level == HARD

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "level": self.level,
            "hard": self.hard,
            "passed": self.passed,
            "message": self.message,
            "columns": list(self.columns),
            "details": self.details,
        }


@dataclass(frozen=True)
class Problem:
    """One thing a check found: how bad, what to say, and the column, if one is at fault."""

    level: str
    message: str
    column: str | None = None


def judge(
    name: str,
    problems: Iterable[Problem],
    *,
    passed: str,
    details: dict[str, Any] | None = None,
    columns: tuple[str, ...] = (),
    suffix: str = "",
) -> CheckResult:
    """The result of check `name`: `passed` as the message when there is no problem, else the
    worst problem's level and every message, worst first, joined by "; " and then `suffix`.
    `columns` (named either way) come first, then the problems' columns in order."""
    problems = sorted((p for p in problems if p.level != OK), key=lambda p: -_RANK[p.level])
    named = tuple(dict.fromkeys([*columns, *(p.column for p in problems if p.column)]))
    if not problems:
        return CheckResult(name, OK, passed, named, details or {})
    message = "; ".join(p.message for p in problems) + suffix
    return CheckResult(name, problems[0].level, message, named, details or {})


def worst(levels: Iterable[str]) -> str:
    """The most severe of `levels` ("ok" when there are none)."""
    return max(levels, key=_RANK.__getitem__, default=OK)


def run_suite(checks: Sequence[Callable[[Input], CheckResult]], data: Input) -> list[CheckResult]:
    """Run every check on `data`, in order: one report names every problem at once."""
    results = [check(data) for check in checks]
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"checks must have distinct names, got {names}")
    return results


@dataclass
class CheckReport:
    """What a suite of checks found on `rows` rows; the suites' reports extend it."""

    checks: list[CheckResult]
    rows: int

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.level == HARD]

    @property
    def warnings(self) -> list[CheckResult]:
        return [c for c in self.checks if c.level == SOFT]

    @property
    def passed(self) -> bool:
        """True when no check failed hard; warnings do not count."""
        return not self.failures

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)
