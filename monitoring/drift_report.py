"""Drift report: has the live window moved away from the data the model was trained on?

Compares a current window (a DataFrame typed as `data.ingest.coerce_frame` returns it, optionally
with the `prediction` and `score` columns of the prediction log) with a reference: the
`ReferenceProfile` stored with the model version, or a DataFrame, which is profiled here with
every value kept so that the numbers are exact.

Per feature:

- numerical: two-sided Kolmogorov-Smirnov on the present values. `statistic` and `p_value` are
  those of `scipy.stats.ks_2samp(reference_sample, current)` with scipy's defaults (exact up to
  10,000 values a side, asymptotic above). Missing values are never dropped silently: both shares
  are reported, they have a PSI bin of their own, and when either side has any, a chi-square
  test of missing vs present (`missing_p_value`) joins the KS test within the feature
  (Bonferroni: `decision_p_value` = min(1, 2 × the smaller p-value)).
- categorical and boolean: `scipy.stats.chi2_contingency` (defaults, so Yates' correction when
  there are only two categories) on the 2 × K table of reference vs current counts, categories
  aligned over the union: a category never seen in the reference counts, missing is a category,
  and only a category absent from both sides is dropped.
- PSI for both: numerical bins are the reference deciles with open outer ends (values outside
  the reference range count) plus a missing bin; categorical bins are the aligned categories.
  Empty bins get PSI_EPSILON before the log.
- `wasserstein` for numerical columns: `scipy.stats.wasserstein_distance(reference_sample,
  current)` over the finite values, divided by the reference's standard deviation: how far, in
  reference standard deviations, the values moved on average. PSI is blind to two changes this
  sees: a value far outside the reference lands in the same open outer bin as one just outside
  (10% of the values 10-20 std out is a PSI of 0.07), and a wider spread hardly moves the
  deciles (1.2 times the spread is a PSI of 0.08). `wasserstein_threshold` is the distance
  that counts as an effect for this feature: WASSERSTEIN_WARNING, or WASSERSTEIN_NOISE_MULTIPLE
  times 1 / sqrt(n_ref · n_cur / (n_ref + n_cur)) when that is larger, since two small samples
  of one distribution already lie about that far apart. Counted chunk by chunk, it is scipy's
  value except where the two ECDFs cross between two reference points, where it can fall short
  by at most the gap's width times the current share in it.

Direction: a larger statistic, PSI or Wasserstein distance and a smaller p-value mean more
drift. A feature is `drifted` when its p-value, corrected over all features (DRIFT_CORRECTION:
Benjamini-Hochberg by default, or Bonferroni), is below the significance level (KS_P_THRESHOLD or
CHI2_P_THRESHOLD, default 0.05) AND an effect size passes its floor: PSI at least PSI_WARNING
(default 0.1), or (numerical) the Wasserstein distance at least its `wasserstein_threshold`
(default 0.1 std). The floors keep a million-row window from flagging shifts nobody cares about
(0.02 std is a Wasserstein distance of 0.02). Severity is "critical" for a drifted feature with
PSI >= PSI_CRITICAL (default 0.2) or a Wasserstein distance >= WASSERSTEIN_CRITICAL (0.5 std),
"warning" for the other drifted ones, else "none". docs/drift-detection.md has the false-alarm
and detection rates behind these numbers. The dataset drifted when the share of drifted
features reaches DRIFT_SHARE_THRESHOLD (default 0.3). Prediction drift (predicted class by
chi-square, score by KS, both with PSI, corrected over those two tests) needs the model's
outputs on both sides and otherwise says why it is not available. Concept drift (the same
inputs now come with other labels) cannot show up in input drift; performance monitoring on
labelled feedback catches it.

Windows larger than memory: `DriftAccumulator.update` takes the window chunk by chunk and keeps
only counts. Between two consecutive reference sample points the reference ECDF is constant and
the current ECDF is monotone, so sup|F_ref - F_cur| is reached at a reference point or just left
of one: the counts of current values `<` and `<=` each distinct reference value give the exact KS
statistic, in memory proportional to the reference sample whatever the window size. The sums of
the current values below each point give the Wasserstein distance the same way.

    python -m monitoring.drift_report --schema schemas/fraud.yaml \\
        --reference reference.parquet --current window.parquet --json drift.json --html drift.html

The reference may also be a reference profile saved as JSON (`ReferenceProfile.save`).

This module is the entry point (everything below is importable from here) and the command line.
The parts: `monitoring.drift_results` (thresholds, results, the report and its JSON shape),
`monitoring.drift_stats` (the tests and effect sizes, column by column, and the judgement),
`monitoring.multivariate_drift` (the joint distribution: a domain classifier on a sample of the
window's rows against the profile's joint sample, with the features that drive it) and
`monitoring.drift_accumulator` (the window chunk by chunk, `compute_drift_report`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow.parquet

from data.ingest import DataError, load_frame
from data.logs import configure_logging
from data.profile import ReferenceProfile
from data.schema import FeatureSchema, SchemaError, load_schema
from data.settings import exit_on_config_error, get_settings
from monitoring.drift_accumulator import DriftAccumulator, compute_drift_report, profile_from_frame
from monitoring.drift_results import (
    CORRECTIONS,
    MULTIVARIATE_AUC_CRITICAL,
    MULTIVARIATE_P_THRESHOLD,
    SEVERITIES,
    WASSERSTEIN_CRITICAL,
    WASSERSTEIN_NOISE_MULTIPLE,
    WASSERSTEIN_WARNING,
    Distribution,
    DriftError,
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    PredictionDrift,
)
from monitoring.drift_stats import psi

__all__ = [
    "CORRECTIONS",
    "MULTIVARIATE_AUC_CRITICAL",
    "MULTIVARIATE_P_THRESHOLD",
    "SEVERITIES",
    "WASSERSTEIN_CRITICAL",
    "WASSERSTEIN_NOISE_MULTIPLE",
    "WASSERSTEIN_WARNING",
    "Distribution",
    "DriftAccumulator",
    "DriftError",
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "PredictionDrift",
    "compute_drift_report",
    "load_window",
    "main",
    "profile_from_frame",
    "psi",
]


def load_window(path: str | Path, schema: FeatureSchema) -> pd.DataFrame:
    """Read a CSV or Parquet file typed by the schema, keeping the model's outputs if there (the
    schema's `prediction` and `score` columns).

    `load_frame` keeps only the schema's columns; the model's outputs are read next to them.
    """
    frame = load_frame(path, schema, require_target=False)
    present = _column_names(Path(path))
    outputs = [c for c in (schema.prediction, schema.score) if c in present]
    if outputs:
        if Path(path).suffix.lower() == ".csv":
            extra = pd.read_csv(path, usecols=outputs)
        else:
            extra = pd.read_parquet(path, columns=outputs)
        for column in outputs:
            values = pd.to_numeric(extra[column], errors="coerce")
            bad = extra[column].notna() & values.isna()
            if bad.any():
                raise DataError(f"{path}: column {column!r} must be numeric")
            frame[column] = values.to_numpy(dtype=np.float64)
    return frame


def _column_names(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        return list(pd.read_csv(path, nrows=0).columns)
    return list(pyarrow.parquet.read_schema(path).names)


def _load_reference(path: str, schema: FeatureSchema) -> ReferenceProfile | pd.DataFrame:
    if Path(path).suffix.lower() != ".json":
        return load_window(path, schema)
    try:
        return ReferenceProfile.load(path)
    except (KeyError, TypeError, ValueError) as exc:  # ValueError covers malformed JSON
        raise DriftError(f"{path}: cannot use as a reference profile: {exc}") from None


class _UsageError(ValueError):
    """A command line argparse cannot use."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Reported by `main` in one line, as every other bad input, not as argparse's usage block.
        raise _UsageError(message)


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = _ArgumentParser(description="Compare a current data window with the reference.")
    parser.add_argument("--schema", required=True, help="feature-schema YAML file")
    parser.add_argument(
        "--reference",
        required=True,
        help=".csv or .parquet reference data, or a reference profile saved as .json",
    )
    parser.add_argument("--current", required=True, help=".csv or .parquet current window")
    parser.add_argument("--json", dest="json_out", help="write the report as JSON here")
    parser.add_argument("--html", dest="html_out", help="write the report as an HTML page here")
    try:
        args = parser.parse_args(argv)
        configure_logging(get_settings(), process="drift-report", command=True)
        schema = load_schema(args.schema)
        reference = _load_reference(args.reference, schema)
        current = load_window(args.current, schema)
        report = compute_drift_report(reference, current, schema)
        written = []
        if args.json_out:
            path = Path(args.json_out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
            written.append(path)
        if args.html_out:
            # The page imports matplotlib: only a run that writes one pays for it.
            from monitoring.html.drift_page import write_html

            written.append(write_html(report, args.html_out))
    except (SchemaError, DataError, OSError, ValueError) as exc:
        # SchemaError, DataError and DriftError are ValueErrors with one-line messages.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(report.summary)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
