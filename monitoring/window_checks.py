"""One monitoring pass over a window of logged predictions: drift, quality, performance, saved.

This is what the six-hourly Airflow DAG runs, and what `make demo` runs by hand: read the window
[end - DRIFT_WINDOW_HOURS, end) from `prediction_logs` (with the labels that have arrived), take
the reference profile stored with the `@champion` version from the MLflow registry (never the
training set), compute the drift report, the quality report and realized plus estimated
performance, and write them with `monitoring.report_store.save_reports`, where the Prometheus
exporter picks them up. Performance counts a score as class 1 at the champion's decision
threshold (its version tag, what the API answered with) and estimates through the calibrator
stored in its reference profile; a version stored before calibrations were is estimated from raw
scores, with a warning in the log, "calibrated": false in the saved report and a note in the
summary.

Then it refreshes the realized figures of the earlier windows whose labels came in since the
previous pass (`monitoring.label_maturity`): labels arrive days late, and count for the windows
of the predictions they belong to. A row counts with the class the API answered and, for the
estimate, with the threshold and calibrator of the version that answered it (a promotion inside
the window); both reports hold the figures per version too.

An empty window still gets its quality report (whose volume check fails hard), so "no traffic"
is visible; drift and performance need rows and are skipped, which the exporter shows as an
ageing drift report.

    python -m monitoring.window_checks [--end 2026-11-23T12:00:00Z] [--hours 6 | --start T]
        [--html report.html]
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from data.db import as_utc, database_error_message, get_engine, init_db
from data.ingest import DataError
from data.logs import configure_logging, log_context
from data.prediction_log import read_predictions
from data.schema import SchemaError, load_schema
from data.settings import Settings, exit_on_config_error, get_settings
from monitoring.drift_report import DriftReport, compute_drift_report
from monitoring.label_maturity import RefreshedWindow, refresh_realized
from monitoring.performance import (
    Calibrator,
    PerformanceReport,
    estimated_performance_by_window,
    realized_performance,
)
from monitoring.quality_report import QualityReport, compute_quality_report
from monitoring.report_store import SavedReports, save_reports

# Named, not __name__: run as `python -m monitoring.window_checks` that would be "__main__".
log = logging.getLogger("monitoring.window_checks")


@dataclass
class WindowResult:
    """What one pass found and where it was saved; drift and performance are None when the
    window had no rows."""

    window: tuple[datetime, datetime]
    model_version: str
    rows: int
    quality: QualityReport
    drift: DriftReport | None
    realized: PerformanceReport | None
    estimated: PerformanceReport | None
    saved: SavedReports
    # Earlier windows whose realized figures this pass refreshed, as their labels came in.
    refreshed: list[RefreshedWindow] = field(default_factory=list)

    def summary(self) -> str:
        start, end = self.window
        lines = [
            f"window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC: {self.rows:,} predictions,"
            f" reference: model version {self.model_version}",
            f"drift: {self.drift.summary if self.drift else 'not computed (no rows)'}",
            self.quality.summary(),
        ]
        if self.realized and self.estimated:
            realized, estimated = self.realized.overall, self.estimated.overall
            lines.append(
                f"performance: realized accuracy {_num(realized['accuracy'])} on "
                f"{realized['labelled']:,} labelled rows (coverage "
                f"{_num(realized['label_coverage'])}), estimated accuracy "
                f"{_num(estimated['accuracy'])} (CBPE"
                f"{'' if self.estimated.calibrated else ' on uncalibrated scores'}; "
                "blind to concept drift)"
            )
        if self.realized and len(self.realized.by_version) > 1:
            # A promotion inside the window: each version's rows, read as it answered them.
            lines.append(
                "by version: "
                + "; ".join(
                    f"v{version} {figures['predictions']:,} predictions, realized accuracy "
                    f"{_num(figures['accuracy'])}"
                    for version, figures in sorted(self.realized.by_version.items())
                )
            )
        for late in self.refreshed[-5:]:
            late_start, late_end = late.window
            lines.append(
                f"late labels: {late_start:%Y-%m-%d %H:%M}..{late_end:%H:%M} now "
                f"{late.labelled:,} labelled (was {late.labelled_before:,}), realized accuracy "
                f"{_num(late.accuracy)} (coverage {_num(late.label_coverage)})"
            )
        if len(self.refreshed) > 5:
            lines.append(f"late labels: and {len(self.refreshed) - 5} earlier window(s)")
        return "\n".join(lines)


class CheckError(RuntimeError):
    """The pass cannot run (no champion to compare with, unreadable window); one-line message."""


def check_window(
    *,
    end: datetime | None = None,
    hours: float | None = None,
    settings: Settings,
    html: str | Path | None = None,
) -> WindowResult:
    """Check the window of `hours` (default DRIFT_WINDOW_HOURS) ending at `end` (default now)."""
    end = as_utc(end) if end else datetime.now(UTC)
    start = end - timedelta(hours=hours or settings.DRIFT_WINDOW_HOURS)
    with log_context(window=(start, end)):
        result = _check(start, end, settings, html)
        with log_context(model_version=result.model_version):
            log.info(
                "checked %d predictions; quality %s; drift: %s",
                result.rows,
                "passed" if result.quality.passed else "failed",
                result.drift.summary if result.drift else "not computed (no rows)",
            )
        return result


def _check(
    start: datetime, end: datetime, settings: Settings, html: str | Path | None
) -> WindowResult:
    # Imported here: the registry pulls in MLflow, which the rest of monitoring does not need.
    from training.registry import CHAMPION, Registry, RegistryError

    schema = load_schema(settings.path(settings.FEATURE_SCHEMA))
    # The pass reads the log and writes its reports there: an unreachable database is the
    # first thing to say, before the registry is asked anything.
    init_db(get_engine(settings.database_url))
    try:
        registry = Registry.from_settings(settings)
        registry.require_exists()
        champion = registry.alias(CHAMPION)
        if champion is None:
            raise CheckError(
                f"model {settings.MODEL_NAME!r} has no @champion to compare with; "
                "promote one with `python -m training.register_model promote`"
            )
        profile = registry.reference_profile(champion.version)
    except RegistryError as exc:
        raise CheckError(str(exc)) from None

    frame = read_predictions(schema, start, end, url=settings.database_url, with_labels=True)
    quality = compute_quality_report(
        frame,
        schema,
        window_start=start,
        window_end=end,
        expected_rows_per_hour=settings.EXPECTED_ROWS_PER_HOUR or None,
        reference=profile,
    )
    drift = realized = estimated = None
    # Performance counts with the champion's own threshold, read from the version tag the API
    # reads at load, and reads its scores through the calibration fitted with it; a version
    # stored before calibrations were gets raw scores.
    calibrator = Calibrator.from_dict(profile.calibration) if profile.calibration else None
    if calibrator is None:
        log.warning("model version %s has no stored calibration: the estimated performance "
                    "reads its raw scores as probabilities", champion.version)  # fmt: skip
    if len(frame):
        drift = compute_drift_report(profile, frame, schema, settings=settings, window=(start, end))
        threshold = champion.threshold
        realized = realized_performance(frame, schema, window="1h", threshold=threshold)
        estimated = estimated_performance_by_window(
            frame,
            schema,
            window="1h",
            threshold=threshold,
            calibrator=calibrator,
            versions=_other_versions(registry, frame, champion.version),
        )
    saved = save_reports(
        window=(start, end),
        model_name=settings.MODEL_NAME,
        model_version=champion.version,
        drift=drift,
        quality=quality,
        realized=realized,
        estimated=estimated,
        engine=get_engine(settings.database_url),
    )
    # Then the earlier windows whose labels came in since the previous pass.
    refreshed = refresh_realized(
        get_engine(settings.database_url),
        schema,
        model_name=settings.MODEL_NAME,
        end=end,
        maturity_days=settings.LABEL_MATURITY_DAYS,
    )
    if html is not None and drift is not None:
        from monitoring.html.drift_page import write_html  # matplotlib only when a page is asked

        write_html(drift, html)
    return WindowResult(
        (start, end),
        champion.version,
        len(frame),
        quality,
        drift,
        realized,
        estimated,
        saved,
        refreshed,
    )


def _other_versions(registry, frame, champion: str) -> dict[str, tuple[float, Calibrator | None]]:
    """Each other version that answered rows of the window (a promotion inside it) with its own
    threshold and calibrator, so that its rows are read as it answered them."""
    from training.registry import RegistryError

    found = {}
    for version in sorted(set(frame["model_version"].astype(str)) - {str(champion)}):
        try:
            profile = registry.reference_profile(version)
            threshold = registry.version(version).threshold
        except RegistryError as exc:
            log.warning(
                "version %s answered rows of the window but cannot be read from the registry "
                "(%s): its rows are estimated as the champion's",
                version,
                exc,
            )
            continue
        calibration = profile.calibration
        found[version] = (threshold, Calibrator.from_dict(calibration) if calibration else None)
    return found


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run drift, quality and performance checks.")
    parser.add_argument("--end", help="end of the window, ISO time (default: now)")
    parser.add_argument("--hours", type=float, help="window length (default DRIFT_WINDOW_HOURS)")
    # A start rather than a length: "the traffic since I began replaying", as a shell gives it.
    parser.add_argument("--start", help="start of the window, ISO time (instead of --hours)")
    parser.add_argument("--html", help="also write the drift report as an HTML page here")
    args = parser.parse_args(argv)
    configure_logging(get_settings(), process="window-checks", command=True)
    if args.start and args.hours:
        parser.error("give --start or --hours, not both")
    try:
        end = as_utc(args.end) if args.end else None
        hours = args.hours
        if args.start:
            end = end or datetime.now(UTC)  # one "now", or the window would not begin at --start
            seconds = (end - as_utc(args.start)).total_seconds()
            if seconds <= 0:
                raise ValueError(f"--start {args.start} is not before the window's end")
            hours = seconds / 3600
        result = check_window(end=end, hours=hours, settings=get_settings(), html=args.html)
    except (CheckError, SchemaError, DataError, ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"error: {database_error_message(exc)}", file=sys.stderr)
        return 2
    print(result.summary())
    if args.html and result.drift is not None:
        print(f"wrote {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
