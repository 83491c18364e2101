"""Data-quality checks on a live window: is the data the model is scoring fit to be scored?

The live counterpart of `data.validate`, which decides whether a model may be trained on a
dataset. This runs on a window of logged predictions (`data.prediction_log.read_predictions`) or on
a CSV / Parquet file, and every check runs, so one report names every problem at once. The frame
does not have to be typed: it is typed by ingest's rules (`coerce_frame(errors="mask")`), and a
value that cannot take its feature's type is reported (check 4), not raised, because a monitoring
job that crashes on bad data reports nothing about it. The checks are `data.checks` checks, as
validation's are: one `CheckResult` type, one signature, one runner.

A hard failure means the pipeline feeding the model is broken and someone should look now; a soft
warning means something changed that deserves a look. Thresholds are `QualityThresholds` fields.

The checks and their thresholds are `monitoring.quality_checks`.

`QualityReport.missing_share` (feature → share of rows without a value) feeds the Prometheus
exporter, and so can `QualityReport.outside_training_range_share` (feature → share of its present
values beyond the training range, for features the schema leaves unbounded on a side);
`to_dict()` is what the `quality_reports` table stores.

    python -m monitoring.quality_report --schema schemas/fraud.yaml --current window.parquet \\
        [--reference profile.json] [--expected-rows-per-hour 400] [--json quality.json]

Exit status: 0 when no check failed hard, 1 when one did, 2 when the report could not be made.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from data.checks import CheckReport, run_suite
from data.ingest import DataError, coerce_frame, read_file
from data.profile import ReferenceProfile, build_reference_profile
from data.schema import FeatureSchema, SchemaError, load_schema
from monitoring.performance import DEFAULT_TIMESTAMP_COLUMN
from monitoring.quality_checks import (
    CHECKS,
    SUITE,
    FeatureColumn,
    QualityThresholds,
    QualityWindow,
    utc_timestamp,
)

__all__ = ["CHECKS", "QualityReport", "QualityThresholds", "compute_quality_report", "main"]


@dataclass
class QualityReport(CheckReport):
    window_start: datetime
    window_end: datetime
    missing_share: dict[str, float]
    outside_training_range_share: dict[str, float] = field(default_factory=dict)

    @property
    def hard_failures(self) -> int:
        return len(self.failures)

    @property
    def soft_warnings(self) -> int:
        return len(self.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "hard_failures": self.hard_failures,
            "soft_warnings": self.soft_warnings,
            "failures": [c.name for c in self.failures],
            "warnings": [c.name for c in self.warnings],
            "missing_share": self.missing_share,
            "outside_training_range_share": self.outside_training_range_share,
            "checks": [c.to_dict() for c in self.checks],
            "summary": self.summary(),
        }

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"quality {verdict}: {len(self.checks)} checks on {self.rows:,} rows "
            f"from {self.window_start:%Y-%m-%d %H:%M} to {self.window_end:%Y-%m-%d %H:%M} UTC, "
            f"{self.hard_failures} hard failure(s), {self.soft_warnings} warning(s)"
        ]
        for checks, word in ((self.failures, "error  "), (self.warnings, "warning")):
            lines += [f"  {word} {c.name}: {c.message}" for c in checks]
        return "\n".join(lines)


def compute_quality_report(
    current: pd.DataFrame,
    schema: FeatureSchema,
    *,
    window_start: datetime | str,
    window_end: datetime | str,
    expected_rows_per_hour: float | None = None,
    reference: ReferenceProfile | pd.DataFrame | None = None,
    thresholds: QualityThresholds | None = None,
) -> QualityReport:
    """Run the seven checks on `current`, the rows logged in [window_start, window_end).

    `reference` (the profile stored with the model version, or reference data, profiled here)
    sharpens four checks: missing shares are compared with it, categories come from it when the
    schema lists none, numerical bounds come from its range where the schema sets none, and
    stuck features are judged against its spread. Without `expected_rows_per_hour`, volume is
    only checked for an empty window.
    """
    thresholds = thresholds or QualityThresholds()
    if isinstance(reference, pd.DataFrame):
        reference = _profile(reference, schema)
    start, end = utc_timestamp(window_start), utc_timestamp(window_end)
    if end < start:
        raise ValueError(f"window_end {end} is before window_start {start}")
    raw = current.reset_index(drop=True)
    timestamp = schema.timestamp or DEFAULT_TIMESTAMP_COLUMN
    # Ingest's typing rule, masking what fails instead of raising; the timestamp is looked for
    # under the log's name when the schema names none.
    typed, invalid = coerce_frame(
        raw,
        replace(schema, timestamp=timestamp),
        require_target=False,
        origin="the window",
        errors="mask",
    )
    columns = {}
    for name in schema.feature_names:
        if name in typed:
            bad = invalid[name].to_numpy()
            columns[name] = FeatureColumn(typed[name], typed[name].isna().to_numpy() & ~bad, bad)
    window = QualityWindow(
        raw=raw,
        typed=typed,
        columns=columns,
        schema=schema,
        timestamp=timestamp,
        bad_times=invalid[timestamp].to_numpy() if timestamp in invalid else None,
        start=start,
        end=end,
        expected_rows_per_hour=expected_rows_per_hour,
        reference=reference,
        thresholds=thresholds,
    )
    checks = run_suite(SUITE, window)
    by_name = {c.name: c for c in checks}
    return QualityReport(
        checks=checks,
        rows=window.rows,
        window_start=start,
        window_end=end,
        missing_share={
            name: detail["share"] for name, detail in by_name["missing_values"].details.items()
        },
        outside_training_range_share={
            name: detail["outside_training_range_share"]
            for name, detail in by_name["out_of_range"].details.items()
            if "outside_training_range_share" in detail
        },
    )


def _profile(reference: pd.DataFrame, schema: FeatureSchema) -> ReferenceProfile:
    """Reference data as the profile training would store (the model's outputs are not used)."""
    frame = coerce_frame(reference, schema, require_target=False)
    nothing = np.zeros(len(frame))
    return build_reference_profile(frame, schema, predictions=nothing, scores=nothing)


class _UsageError(ValueError):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Reported by `main` in one line like every other bad input, not as a usage block.
        raise _UsageError(message)


def main(argv: list[str] | None = None) -> int:
    parser = _ArgumentParser(description="Run the data-quality checks on a data window.")
    parser.add_argument("--schema", required=True, help="feature-schema YAML file")
    parser.add_argument("--current", required=True, help=".csv or .parquet window")
    parser.add_argument("--reference", help="reference profile JSON (ReferenceProfile.save)")
    parser.add_argument("--window-start", help="ISO time (default: the earliest timestamp)")
    parser.add_argument("--window-end", help="ISO time (default: the latest timestamp)")
    parser.add_argument("--expected-rows-per-hour", type=float)
    parser.add_argument("--json", dest="json_out", help="write the report as JSON here")
    try:
        args = parser.parse_args(argv)
        schema = load_schema(args.schema)
        current = read_file(args.current, schema)
        reference = ReferenceProfile.load(args.reference) if args.reference else None
        start, end = _cli_window(current, schema, args.window_start, args.window_end)
        report = compute_quality_report(
            current,
            schema,
            window_start=start,
            window_end=end,
            expected_rows_per_hour=args.expected_rows_per_hour,
            reference=reference,
        )
        if args.json_out:
            path = Path(args.json_out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    except (SchemaError, DataError, OSError, ValueError, KeyError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(report.summary())
    if args.json_out:
        print(f"wrote {args.json_out}")
    return 0 if report.passed else 1


def _cli_window(
    current: pd.DataFrame, schema: FeatureSchema, start: str | None, end: str | None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    column = schema.timestamp or DEFAULT_TIMESTAMP_COLUMN
    times = pd.Series()
    if column in current:
        only_times = replace(schema, features=(), id=None, timestamp=column)
        typed, _ = coerce_frame(current[[column]], only_times, require_target=False, errors="mask")
        times = typed[column].dropna()
    if (start is None or end is None) and times.empty:
        raise ValueError(
            f"the data has no {column} values to take the window from; "
            "give --window-start and --window-end"
        )
    return (
        utc_timestamp(start) if start else times.min(),
        utc_timestamp(end) if end else times.max(),
    )


if __name__ == "__main__":
    sys.exit(main())
