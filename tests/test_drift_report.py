"""Drift report: scipy-exact statistics, PSI with open bins, corrections, streaming, the CLI.

Known answers come from scipy on the same data (`ks_2samp`, `chi2_contingency`,
`false_discovery_control`) or from hand-built shares; the statistical guarantees (few false
alarms with 30 undrifted features, no alarm for a trivial shift in a million rows, each injected
drift found on the right feature) are checked over many seeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from data.drift_injector import DRIFT_TYPES, inject_drift
from data.ingest import coerce_frame
from data.prediction_log import PREDICTION_COLUMN, SCORE_COLUMN
from data.profile import build_reference_profile
from data.schema import Feature, FeatureSchema, load_schema
from data.settings import PROJECT_ROOT, get_settings
from data.synthetic import fraud_probability, generate_transactions
from monitoring.drift_report import (
    MULTIVARIATE_AUC_CRITICAL,
    MULTIVARIATE_P_THRESHOLD,
    WASSERSTEIN_CRITICAL,
    WASSERSTEIN_NOISE_MULTIPLE,
    WASSERSTEIN_WARNING,
    DriftAccumulator,
    DriftError,
    DriftThresholds,
    compute_drift_report,
    main,
    profile_from_frame,
    psi,
)
from monitoring.html.drift_page import render_html


def univariate(reference: pd.DataFrame, schema: FeatureSchema):
    """A profile of `reference` without the joint sample: the per-feature rule alone. The
    seed loops below judge that rule's false alarms; the multivariate check (a classifier fit,
    70% of a 500-row report's time) has its own seed loop in test_multivariate_drift.py."""
    return replace(profile_from_frame(reference, schema), joint_sample=None)


FEATURE_KEYS = {
    "type",
    "test",
    "statistic",
    "p_value",
    "p_value_corrected",
    "psi",
    "severity",
    "drifted",
    "missing_share_reference",
    "missing_share_current",
    "distribution",
}
REPORT_KEYS = {
    "features",
    "prediction",
    "drifted_share",
    "dataset_drift",
    "summary",
    "rows_reference",
    "rows_current",
    "correction",
    "thresholds",
    "counts_by_severity",
}


def make_schema(numerical: int = 1, categorical: int = 0, boolean: int = 0) -> FeatureSchema:
    features = [Feature(f"x{i}", "numerical", nullable=True) for i in range(numerical)]
    features += [Feature(f"c{i}", "categorical", nullable=True) for i in range(categorical)]
    features += [Feature(f"b{i}", "boolean", nullable=True) for i in range(boolean)]
    return FeatureSchema(name="test", target="y", features=tuple(features))


def one_column(values, name: str = "x0") -> pd.DataFrame:
    return pd.DataFrame({name: np.asarray(values, dtype=object if name[0] == "c" else float)})


def with_outputs(frame: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    return frame.assign(**{PREDICTION_COLUMN: (scores > 0.5).astype(int), SCORE_COLUMN: scores})


def assert_json_ready(value) -> None:
    """Only JSON types, no NaN or infinity, anywhere."""
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            assert_json_ready(v)
    elif isinstance(value, list):
        for v in value:
            assert_json_ready(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), (type(value), value)
        if isinstance(value, float):
            assert np.isfinite(value)


def assert_same_numbers(left, right) -> None:
    """Equal structure; floats equal to 12 significant digits (running means may differ in
    the last bits when added chunk by chunk)."""
    if isinstance(left, dict):
        assert left.keys() == right.keys()
        for key in left:
            assert_same_numbers(left[key], right[key])
    elif isinstance(left, list):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            assert_same_numbers(a, b)
    elif isinstance(left, float) and isinstance(right, float):
        assert left == pytest.approx(right, rel=1e-12, abs=1e-15)
    else:
        assert left == right


# --- Kolmogorov-Smirnov: exactly scipy's ks_2samp -------------------------------------------


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "decimals"),
    [
        (300, 200, None),  # exact mode, no ties
        (300, 300, 1),  # exact mode, equal sizes, many ties
        (40, 25, 0),  # tiny, heavy ties
        (30_000, 20_000, None),  # asymptotic mode
        (30_000, 12_000, 1),  # asymptotic with ties between the samples
        (5_000, 50_000, 2),  # reference small enough for exact, current is not
    ],
)
def test_ks_equals_scipy(n_ref, n_cur, decimals):
    rng = np.random.default_rng(n_ref + n_cur)
    reference = rng.normal(0, 1, n_ref)
    current = rng.normal(0.05, 1.1, n_cur)
    if decimals is not None:
        reference, current = reference.round(decimals), current.round(decimals)
    report = compute_drift_report(one_column(reference), one_column(current), make_schema())
    expected = stats.ks_2samp(reference, current)
    feature = report.features["x0"]
    assert feature.test == "ks"
    assert feature.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert feature.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("n_cur", [3_000, 40_000])
def test_ks_against_a_sampled_profile_equals_scipy_on_the_sample(n_cur):
    rng = np.random.default_rng(7)
    reference = one_column(rng.lognormal(3, 0.7, 60_000).round(2))
    profile = build_reference_profile(
        reference,
        make_schema(),
        predictions=np.zeros(60_000),
        scores=np.zeros(60_000),
        sample_size=2_000,
    )
    current = rng.lognormal(3.05, 0.7, n_cur).round(2)
    feature = compute_drift_report(profile, one_column(current), make_schema()).features["x0"]
    expected = stats.ks_2samp(np.array(profile.numerical["x0"].sample), current)
    assert feature.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert feature.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_identical_data_has_no_drift():
    values = np.random.default_rng(1).normal(size=2_000)
    report = compute_drift_report(one_column(values), one_column(values), make_schema())
    feature = report.features["x0"]
    assert feature.statistic == 0.0 and feature.p_value == 1.0
    assert feature.psi == pytest.approx(0.0, abs=1e-12)
    assert not feature.drifted and feature.severity == "none"


# --- Chi-square and PSI --------------------------------------------------------------------


def test_chi2_equals_scipy_over_the_union_of_categories():
    reference = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    current = ["a"] * 40 + ["b"] * 30 + ["c"] * 10 + ["new"] * 20
    schema = FeatureSchema(
        "t", "y", (Feature("c0", "categorical", categories=("a", "b", "c", "never")),)
    )
    feature = compute_drift_report(
        one_column(reference, "c0"), one_column(current, "c0"), schema
    ).features["c0"]
    # "never" is in neither sample and is dropped; "new" is in the current only and counts.
    table = [[50, 30, 20, 0], [40, 30, 10, 20]]
    expected = stats.chi2_contingency(table)
    assert feature.test == "chi2"
    assert feature.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert feature.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    distribution = feature.distribution
    assert distribution.labels == ["a", "b", "c", "new"]
    assert distribution.new == ["new"]
    assert distribution.reference == pytest.approx([0.5, 0.3, 0.2, 0.0])
    assert distribution.current == pytest.approx([0.4, 0.3, 0.1, 0.2])
    shares_ref, shares_cur = np.array([0.5, 0.3, 0.2, 1e-4]), np.array([0.4, 0.3, 0.1, 0.2])
    hand_psi = np.sum((shares_cur - shares_ref) * np.log(shares_cur / shares_ref))
    assert feature.psi == pytest.approx(hand_psi, rel=1e-9)
    assert feature.severity == "critical"


def test_boolean_and_missing_categories_are_counted_like_the_profile():
    schema = make_schema(numerical=0, categorical=1, boolean=1)
    reference = pd.DataFrame(
        {"c0": ["x"] * 90 + [np.nan] * 10, "b0": [1.0] * 70 + [0.0] * 30}, dtype=object
    ).astype({"b0": float})
    current = pd.DataFrame(
        {"c0": ["x"] * 60 + [np.nan] * 40, "b0": [1.0] * 50 + [0.0] * 40 + [np.nan] * 10},
        dtype=object,
    ).astype({"b0": float})
    report = compute_drift_report(reference, current, schema)
    categorical, boolean = report.features["c0"], report.features["b0"]
    assert categorical.missing_share_reference == 0.1
    assert categorical.missing_share_current == 0.4
    assert categorical.distribution.labels == ["x", "(missing)"]
    expected = stats.chi2_contingency([[90, 10], [60, 40]])  # two columns: Yates' correction
    assert categorical.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert categorical.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert boolean.distribution.labels == ["true", "false", "(missing)"]
    expected = stats.chi2_contingency([[70, 30, 0], [50, 40, 10]])
    assert boolean.statistic == pytest.approx(expected.statistic, rel=1e-9)


def test_psi_uses_open_decile_bins_lessons_6():
    """30% of values at +10σ must give a large PSI (a closed histogram gave 0.002)."""
    rng = np.random.default_rng(6)
    reference = rng.normal(0, 1, 10_000)
    current = rng.normal(0, 1, 10_000)
    current[:3_000] = 10 + rng.uniform(0, 1, 3_000)
    feature = compute_drift_report(
        one_column(reference), one_column(current), make_schema()
    ).features["x0"]

    edges = np.quantile(reference, np.linspace(0.1, 0.9, 9))
    ref_shares = np.bincount(np.searchsorted(edges, reference), minlength=10) / 10_000
    cur_shares = np.bincount(np.searchsorted(edges, current), minlength=10) / 10_000
    assert cur_shares[-1] == pytest.approx(0.3 + 0.7 * 0.1, abs=0.02)
    hand_psi = psi(np.append(ref_shares, 0), np.append(cur_shares, 0))
    assert feature.psi == pytest.approx(hand_psi, rel=1e-9)
    assert feature.psi > 0.2
    assert feature.severity == "critical"
    assert feature.distribution.labels[-2].startswith(">")  # the open upper bin
    assert feature.distribution.labels[-1] == "(missing)"


# --- Wasserstein distance: scipy's, counted chunk by chunk ---------------------------------


def scipy_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """scipy's distance over the present reference values and the finite current ones, in
    reference standard deviations."""
    reference = reference[~np.isnan(reference)]
    return stats.wasserstein_distance(reference, current[np.isfinite(current)]) / reference.std()


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "decimals"),
    [
        # Whole numbers: every current value sits on a reference point or outside the
        # reference's range, so no gap holds a crossing and the counts give scipy's value.
        (400, 300, 0),
        (3_000, 50_000, 0),
        # Continuous: where the two ECDFs cross inside a gap between reference points, the
        # counts cannot say where, and the distance may fall short of scipy's by at most the
        # gap's width times the current share inside it.
        (300, 200, None),
        (5_000, 20_000, None),
    ],
)
def test_wasserstein_equals_scipy(n_ref, n_cur, decimals):
    rng = np.random.default_rng(n_ref + n_cur)
    reference = rng.normal(0, 2, n_ref)
    current = rng.normal(0.3, 2.4, n_cur)
    current[: n_cur // 10] += 30  # far outliers weigh by how far out they are
    if decimals is not None:
        reference, current = reference.round(decimals), current.round(decimals)
    feature = compute_drift_report(
        one_column(reference), one_column(current), make_schema()
    ).features["x0"]
    expected = scipy_wasserstein(reference, current)
    # The bound: every gap's width times the current share strictly inside it.
    points = np.unique(reference)
    right = np.searchsorted(points, current)
    strictly = (right > 0) & (right < points.size)
    strictly[strictly] &= current[strictly] != points[right[strictly]]
    inside = np.bincount(right[strictly] - 1, minlength=points.size - 1)
    bound = (np.diff(points) * inside).sum() / n_cur / reference.std()
    if decimals is None:
        assert expected - bound <= feature.wasserstein <= expected * (1 + 1e-12)
        assert feature.wasserstein == pytest.approx(expected, rel=0.01)
    else:
        assert feature.wasserstein == pytest.approx(expected, rel=1e-12)
    assert feature.wasserstein_noise == pytest.approx(np.sqrt(1 / n_ref + 1 / n_cur))


def test_wasserstein_leaves_out_missing_and_infinite_values():
    rng = np.random.default_rng(12)
    reference = rng.normal(size=1_000).round(1)
    reference[:20] = np.nan
    current = rng.normal(0.5, 1, 800).round(1)
    current[:50], current[50:53], current[53] = np.nan, np.inf, -np.inf
    report = compute_drift_report(one_column(reference), one_column(current), make_schema())
    feature = report.features["x0"]
    assert feature.wasserstein == pytest.approx(scipy_wasserstein(reference, current), rel=1e-12)
    assert report.to_dict()["features"]["x0"]["wasserstein"] == feature.wasserstein


def test_wasserstein_is_not_defined_without_a_spread_or_for_categories():
    schema = make_schema(numerical=1, categorical=1)
    reference = pd.DataFrame({"x0": np.full(100, 3.0), "c0": ["a", "b"] * 50})
    current = pd.DataFrame({"x0": np.full(100, 4.0), "c0": ["a"] * 100})
    data = compute_drift_report(reference, current, schema).to_dict()["features"]
    assert data["x0"]["wasserstein"] is None  # a constant reference: PSI alone decides
    assert data["x0"]["drifted"]
    assert "wasserstein" not in data["c0"]


def test_psi_function():
    shares = np.array([0.2, 0.3, 0.5])
    assert psi(shares, shares) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(
        0.4 * np.log(0.9 / 0.5) - 0.4 * np.log(0.1 / 0.5)
    )
    assert psi([1.0, 0.0], [0.5, 0.5]) == pytest.approx(
        -0.5 * np.log(0.5) + (0.5 - 1e-4) * np.log(0.5 / 1e-4)
    )


def test_missing_values_are_reported_tested_and_binned():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=4_000)
    reference[:200] = np.nan  # 5%
    current = rng.normal(size=4_000)
    current[:800] = np.nan  # 20%
    report = compute_drift_report(one_column(reference), one_column(current), make_schema())
    feature = report.features["x0"]
    assert feature.missing_share_reference == pytest.approx(0.05)
    assert feature.missing_share_current == pytest.approx(0.20)
    expected = stats.ks_2samp(reference[200:], current[800:])  # KS on the present values
    assert feature.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert feature.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert feature.distribution.reference[-1] == pytest.approx(0.05)
    assert feature.distribution.current[-1] == pytest.approx(0.20)
    assert sum(feature.distribution.current) == pytest.approx(1.0)
    missing_test = stats.chi2_contingency([[200, 3_800], [800, 3_200]])
    assert feature.missing_p_value == pytest.approx(missing_test.pvalue, rel=1e-9)
    assert feature.decision_p_value == pytest.approx(min(1, 2 * missing_test.pvalue))
    assert feature.drifted  # same present values, but four times as many gaps


def test_a_column_with_no_values_left_is_reported_not_crashed():
    reference = np.random.default_rng(0).normal(size=1_000)
    report = compute_drift_report(
        one_column(reference), one_column(np.full(500, np.nan)), make_schema()
    )
    feature = report.features["x0"]
    assert feature.statistic is None and feature.p_value is None
    assert feature.missing_share_current == 1.0
    assert feature.severity == "critical"
    data = report.to_dict()
    assert_json_ready(data)
    assert data["features"]["x0"]["mean_current"] is None


# --- Decisions: correction, effect size, false alarms --------------------------------------


@pytest.mark.parametrize("correction", ["benjamini_hochberg", "bonferroni"])
def test_p_values_are_corrected_across_all_features(correction):
    rng = np.random.default_rng(11)
    schema = make_schema(numerical=4, categorical=1)
    cats = np.array(list("abc"), dtype=object)

    def frame(shift: float) -> pd.DataFrame:
        data = {f"x{i}": rng.normal(shift * i, 1, 3_000) for i in range(4)}
        return pd.DataFrame(data | {"c0": cats[rng.integers(0, 3, 3_000)]})

    thresholds = DriftThresholds(correction=correction)
    report = compute_drift_report(frame(0), frame(0.15), schema, thresholds=thresholds)
    raw = np.array([f.p_value for f in report.features.values()])
    if correction == "bonferroni":
        expected = np.minimum(raw * raw.size, 1)
    else:
        expected = stats.false_discovery_control(raw, method="bh")
    corrected = [f.p_value_corrected for f in report.features.values()]
    assert corrected == pytest.approx(expected.tolist(), rel=1e-12)
    assert report.to_dict()["correction"] == correction
    for f in report.features.values():
        moved = f.wasserstein is not None and f.wasserstein >= f.wasserstein_threshold
        assert f.drifted == (f.p_value_corrected < 0.05 and (f.psi >= 0.1 or moved))
    # x2 moved 0.3 std: PSI 0.09 misses it, the Wasserstein distance does not.
    assert report.features["x2"].psi < 0.1 and report.features["x2"].drifted


def test_thresholds_come_from_settings(monkeypatch):
    monkeypatch.setenv("PSI_WARNING", "0.05")
    monkeypatch.setenv("PSI_CRITICAL", "0.5")
    monkeypatch.setenv("DRIFT_CORRECTION", "bonferroni")
    monkeypatch.setenv("DRIFT_SHARE_THRESHOLD", "0.5")
    get_settings.cache_clear()
    values = np.arange(100.0)
    thresholds = compute_drift_report(one_column(values), one_column(values), make_schema())
    assert thresholds.to_dict()["thresholds"] == {
        "ks_p_threshold": 0.05,
        "chi2_p_threshold": 0.05,
        "psi_warning": 0.05,
        "psi_critical": 0.5,
        "correction": "bonferroni",
        "drift_share_threshold": 0.5,
        "wasserstein_warning": WASSERSTEIN_WARNING,
        "wasserstein_critical": WASSERSTEIN_CRITICAL,
        "wasserstein_noise_multiple": WASSERSTEIN_NOISE_MULTIPLE,
        "multivariate_p_threshold": MULTIVARIATE_P_THRESHOLD,
        "multivariate_auc_critical": MULTIVARIATE_AUC_CRITICAL,
    }
    with pytest.raises(DriftError, match="psi_warning < psi_critical"):
        DriftThresholds(psi_warning=0.3, psi_critical=0.2)
    with pytest.raises(DriftError, match="wasserstein_warning < wasserstein_critical"):
        DriftThresholds(wasserstein_warning=0.5, wasserstein_critical=0.5)
    with pytest.raises(DriftError, match="wasserstein_noise_multiple"):
        DriftThresholds(wasserstein_noise_multiple=-1)


@pytest.mark.slow
def test_few_false_alarms_with_30_undrifted_features_at_n_500_lessons_7():
    """Without correction and effect size, something was flagged in 81% of such runs."""
    schema = make_schema(numerical=25, categorical=5)
    cats = np.array(list("abcde"), dtype=object)

    def frame(rng: np.random.Generator) -> pd.DataFrame:
        data = {f"x{i}": rng.normal(size=500) for i in range(25)}
        return pd.DataFrame(data | {f"c{i}": cats[rng.integers(0, 5, 500)] for i in range(5)})

    runs, any_flagged, dataset_flagged, naive_flagged = 200, 0, 0, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        report = compute_drift_report(univariate(frame(rng), schema), frame(rng), schema)
        any_flagged += bool(report.drifted_features)
        dataset_flagged += report.dataset_drift
        naive_flagged += any(f.p_value < 0.05 for f in report.features.values())
    assert naive_flagged / runs > 0.5  # the data really does produce chance "discoveries"
    assert any_flagged / runs <= 0.05 + 0.03
    assert dataset_flagged / runs <= 0.05 + 0.03


@pytest.mark.slow
def test_the_wasserstein_floor_rises_with_sampling_noise_at_n_500():
    """At 500 against 500 rows, chance alone puts two samples about 0.06 std apart, so a
    fixed floor of 0.1 std would turn most chance discoveries into alarms (4.3% of these runs
    against 1.2% with PSI alone, over 2,000 seeds); the floor of 5 times the noise (0.32
    here) keeps the rate where PSI alone had it."""
    schema = make_schema(numerical=25, categorical=5)
    cats = np.array(list("abcde"), dtype=object)

    def frame(rng: np.random.Generator) -> pd.DataFrame:
        data = {f"x{i}": rng.normal(size=500) for i in range(25)}
        return pd.DataFrame(data | {f"c{i}": cats[rng.integers(0, 5, 500)] for i in range(5)})

    flagged = {"rule": 0, "psi alone": 0, "fixed floor": 0}
    for seed in range(300):
        rng = np.random.default_rng(seed)
        report = compute_drift_report(univariate(frame(rng), schema), frame(rng), schema)
        significant = [f for f in report.features.values() if f.p_value_corrected < 0.05]
        flagged["rule"] += bool(report.drifted_features)
        flagged["psi alone"] += any(f.psi >= 0.1 for f in significant)
        flagged["fixed floor"] += any(
            f.psi >= 0.1 or (f.wasserstein or 0) >= WASSERSTEIN_WARNING for f in significant
        )
        for f in report.features.values():
            if f.type == "numerical":
                assert f.wasserstein_threshold == pytest.approx(
                    WASSERSTEIN_NOISE_MULTIPLE * np.sqrt(2 / 500)
                )
    assert flagged["rule"] == flagged["psi alone"] <= 0.02 * 300
    assert flagged["fixed floor"] >= 2 * flagged["psi alone"] + 3


@pytest.mark.slow
def test_few_false_alarms_with_a_million_rows():
    """Undrifted million-row windows against a stored 100k-row profile: almost never flagged."""
    schema = make_schema(numerical=4, categorical=1)
    cats = np.array([f"v{i}" for i in range(8)], dtype=object)
    probabilities = np.linspace(1, 2, 8) / np.linspace(1, 2, 8).sum()

    def frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
        data = {
            "x0": rng.normal(0, 1, rows),
            "x1": rng.lognormal(3, 0.7, rows).round(2),  # ties
            "x2": rng.poisson(2.5, rows).astype(float),  # heavy ties
            "x3": rng.exponential(1.0, rows),
        }
        return pd.DataFrame(data | {"c0": cats[rng.choice(8, rows, p=probabilities)]})

    runs, any_flagged, dataset_flagged = 20, 0, 0
    for seed in range(runs):
        rng = np.random.default_rng(1_000 + seed)
        reference = frame(rng, 100_000)
        profile = build_reference_profile(
            reference,
            schema,
            predictions=np.zeros(100_000),
            scores=np.zeros(100_000),
            joint_sample_size=0,  # the per-feature rule alone, as in `univariate`
        )
        report = compute_drift_report(profile, frame(rng, 1_000_000), schema)
        any_flagged += bool(report.drifted_features)
        dataset_flagged += report.dataset_drift
    assert any_flagged <= 2 and dataset_flagged <= 1


def test_a_trivial_shift_in_a_million_rows_is_not_drift_lessons_7():
    """0.02σ against a full 1M-row reference: KS calls it significant, PSI says it is tiny."""
    rng = np.random.default_rng(2)
    reference = one_column(rng.normal(0, 1, 1_000_000))
    current = one_column(rng.normal(0.02, 1, 1_000_000))
    feature = compute_drift_report(reference, current, make_schema()).features["x0"]
    assert feature.p_value < 1e-6
    assert feature.psi < 0.01
    assert feature.wasserstein == pytest.approx(0.02, abs=0.003)
    assert feature.wasserstein_threshold == WASSERSTEIN_WARNING
    assert not feature.drifted and feature.severity == "none"


# --- Streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [6_000, 60_000])  # scipy's exact mode, then asymptotic
def test_five_chunks_give_the_same_report_as_one_call(rows):
    rng = np.random.default_rng(rows)
    schema = make_schema(numerical=2, categorical=1, boolean=1)
    cats = np.array(list("abc"), dtype=object)

    def frame(shift: float) -> pd.DataFrame:
        x0 = rng.normal(shift, 1, rows).round(2)
        x0[rng.random(rows) < 0.03] = np.nan
        data = {
            "x0": x0,
            "x1": rng.poisson(3 + shift, rows).astype(float),
            "c0": cats[rng.integers(0, 3, rows)],
            "b0": (rng.random(rows) < 0.3 + shift / 10).astype(float),
        }
        return with_outputs(pd.DataFrame(data), rng.beta(2, 5 - shift, rows))

    reference, current = frame(0.0), frame(0.3)
    current.loc[current.index[-50:], "c0"] = "late"  # a category only the last chunk has
    whole = compute_drift_report(reference, current, schema).to_dict()

    accumulator = DriftAccumulator(reference, schema)
    for start in range(0, rows, rows // 5):
        accumulator.update(current.iloc[start : start + rows // 5])
    streamed = accumulator.report().to_dict()
    for data in (whole, streamed):
        data.pop("created_at")
    assert_same_numbers(streamed, whole)
    assert whole["prediction"]["available"] is True
    assert "late" in whole["features"]["c0"]["distribution"]["new"]


def test_report_can_be_taken_while_streaming():
    values = np.random.default_rng(0).normal(size=3_000)
    accumulator = DriftAccumulator(one_column(values), make_schema())
    accumulator.update(one_column(values[:1_000]))
    assert accumulator.report().rows_current == 1_000
    accumulator.update(one_column(values[1_000:]))
    report = accumulator.report()
    assert report.rows_current == 3_000
    assert report.features["x0"].statistic == 0.0


# --- The seven injected drift types on the fraud data ---------------------------------------

FRAUD_SCHEMA = load_schema(PROJECT_ROOT / "schemas" / "fraud.yaml")
INJECTED_FEATURE = {
    "mean_shift": "amount",
    "variance_change": "customer_age",
    "category_frequency_shift": "entry_mode",
    "new_category": "merchant_category",
    "missing_values": "account_age_days",
    "out_of_range": "distance_from_home_km",
    "concept_drift": "amount",
    "correlation_flip": "avg_amount_30d",
    "new_cluster": "avg_amount_30d",
}
# Joint changes: the multivariate check finds them and names the feature among its drivers.
JOINT_KINDS = ("correlation_flip", "new_cluster")


def model_outputs(raw: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """Typed frame plus the outputs of a "model" that knows the hidden rule exactly."""
    with np.errstate(invalid="ignore"):  # negative distances (out_of_range) score NaN: missing
        scores = fraud_probability(raw)
    return with_outputs(coerce_frame(raw, schema), scores)


@pytest.fixture(scope="module")
def fraud_reference():
    raw = generate_transactions(20_000, seed=1)
    frame = model_outputs(raw, FRAUD_SCHEMA)
    return build_reference_profile(
        frame,
        FRAUD_SCHEMA,
        predictions=frame[PREDICTION_COLUMN].to_numpy(),
        scores=frame[SCORE_COLUMN].to_numpy(),
    )


@pytest.fixture(scope="module")
def fraud_current() -> pd.DataFrame:
    return generate_transactions(20_000, seed=2)


def test_injected_kinds_cover_every_drift_type():
    assert set(INJECTED_FEATURE) == set(DRIFT_TYPES)


@pytest.mark.parametrize("kind", DRIFT_TYPES)
def test_each_injected_drift_is_found_on_its_feature(kind, fraud_reference, fraud_current):
    feature = INJECTED_FEATURE[kind]
    drifted = inject_drift(
        fraud_current, kind, schema=FRAUD_SCHEMA, feature=feature, intensity=0.3, seed=4
    )
    report = compute_drift_report(
        fraud_reference, model_outputs(drifted, FRAUD_SCHEMA), FRAUD_SCHEMA
    )
    if kind == "concept_drift":
        # Only labels changed: input drift cannot see it by construction, and must not claim
        # to. Performance monitoring on labelled feedback (monitoring.performance) catches it.
        assert report.drifted_features == []
        assert not report.dataset_drift
        assert not report.prediction.drifted
        return
    if kind in JOINT_KINDS:
        assert report.multivariate_drift
        assert feature in report.multivariate.drivers[:3]
        assert "amount" in report.multivariate.drivers[:3]  # its partner
        if kind == "correlation_flip":  # every column holds the values it held
            assert report.drifted_features == []
        return
    assert [f.name for f in report.drifted_features] == [feature]
    assert report.ranked_features()[0].name == feature
    assert report.features[feature].severity in ("warning", "critical")
    assert not report.dataset_drift  # one feature of 13 is below the 30% share


def test_undrifted_fraud_window_is_quiet(fraud_reference, fraud_current):
    report = compute_drift_report(
        fraud_reference, model_outputs(fraud_current, FRAUD_SCHEMA), FRAUD_SCHEMA
    )
    assert report.drifted_features == []
    assert report.prediction.available and not report.prediction.drifted
    assert report.summary.startswith("0 of 13 features drifted.")


def test_out_of_range_and_new_category_raise_psi_and_chi2(fraud_reference, fraud_current):
    by_intensity = {}
    for intensity in (0.05, 0.15, 0.3):
        frames = {
            kind: inject_drift(
                fraud_current, kind, schema=FRAUD_SCHEMA, intensity=intensity, seed=1
            )
            for kind in ("out_of_range", "new_category")
        }
        out_of_range = compute_drift_report(
            fraud_reference, coerce_frame(frames["out_of_range"], FRAUD_SCHEMA), FRAUD_SCHEMA
        ).features["amount"]
        new_category = compute_drift_report(
            fraud_reference, coerce_frame(frames["new_category"], FRAUD_SCHEMA), FRAUD_SCHEMA
        ).features["merchant_category"]
        by_intensity[intensity] = (out_of_range, new_category)
        # amount has only a lower bound, so the injector puts values below it: they land in
        # the open bottom bin, whose share grows by the intensity.
        bottom_bin = out_of_range.distribution.current[0]
        assert bottom_bin == pytest.approx(0.1 * (1 - intensity) + intensity, abs=0.01)
        assert new_category.drifted
        # 5% of the values 10-20 std out is a PSI of only 0.02 (the open bin does not see how
        # far out they are), which used to pass as no drift; they moved the distribution by
        # most of a standard deviation.
        assert out_of_range.drifted and out_of_range.severity == "critical"
        assert out_of_range.wasserstein > WASSERSTEIN_CRITICAL
        assert new_category.distribution.new == ["__unseen_category__"]
    low, mid, high = (by_intensity[i] for i in (0.05, 0.15, 0.3))
    assert low[0].psi < 0.1
    assert low[0].psi < mid[0].psi < high[0].psi
    assert low[0].wasserstein < mid[0].wasserstein < high[0].wasserstein
    assert low[0].statistic < mid[0].statistic < high[0].statistic
    assert low[1].psi < mid[1].psi < high[1].psi
    assert low[1].statistic < mid[1].statistic < high[1].statistic


@pytest.fixture(scope="module")
def unbounded_fraud():
    """The fraud schema without min / max bounds, and a 10,000-row reference profile."""
    features = tuple(replace(f, min=None, max=None) for f in FRAUD_SCHEMA.features)
    schema = replace(FRAUD_SCHEMA, features=features)
    reference = coerce_frame(generate_transactions(10_000, seed=1), schema)
    return schema, profile_from_frame(reference, schema)


@pytest.mark.parametrize("feature", ["amount", "customer_age"])
def test_far_outliers_are_drift_though_psi_is_small_issue_9(feature, unbounded_fraud):
    """10% of a feature's values pushed 10-20 std beyond the reference's maximum, 5,000 rows:
    KS p about 1e-40, but PSI 0.07-0.08, below PSI_WARNING, because the open top bin does not
    see how far out a value lands. It used to pass as no drift."""
    schema, profile = unbounded_fraud
    current = inject_drift(
        generate_transactions(5_000, seed=1_000),
        "out_of_range",
        schema=schema,
        feature=feature,
        intensity=0.1,
        seed=0,
    )
    report = compute_drift_report(profile, coerce_frame(current, schema), schema)
    drift = report.features[feature]
    assert drift.p_value < 1e-20 and drift.psi < 0.1
    assert drift.wasserstein > 1.0  # a tenth of the values moved 10+ std
    assert drift.drifted and drift.severity == "critical"
    assert [f.name for f in report.drifted_features] == [feature]
    assert report.summary.startswith(f"1 of 13 features drifted (1 critical): {feature} (")
    assert "Wasserstein" in report.summary


def test_a_wider_spread_is_drift_at_5000_rows_issue_9(unbounded_fraud):
    """Deviations from the mean 1.2 times larger (variance_change at 0.1): PSI about 0.08 at
    any size, so at 5,000 rows it was never flagged (at 500, only when chance lifted PSI)."""
    schema, profile = unbounded_fraud
    for seed in range(10):
        current = inject_drift(
            generate_transactions(5_000, seed=1_000 + seed),
            "variance_change",
            schema=schema,
            feature="customer_age",
            intensity=0.1,
            seed=seed,
        )
        report = compute_drift_report(profile, coerce_frame(current, schema), schema)
        drift = report.features["customer_age"]
        assert drift.psi < 0.1
        assert WASSERSTEIN_WARNING < drift.wasserstein < WASSERSTEIN_CRITICAL
        assert drift.drifted and drift.severity == "warning"
        assert [f.name for f in report.drifted_features] == ["customer_age"]


@pytest.mark.slow
def test_undrifted_fraud_windows_stay_quiet_at_every_size(unbounded_fraud):
    """The guarantee the new effect size must keep: no drift, no alarm (0 of 2,000 windows of
    500 rows, 1,000 of 5,000 and 100 of 100,000 in benchmarks/drift_power.py)."""
    schema, profile = unbounded_fraud
    profile = replace(profile, joint_sample=None)  # the per-feature rule alone (`univariate`)
    for rows, seeds in ((500, 40), (5_000, 10), (100_000, 2)):
        for seed in range(seeds):
            current = coerce_frame(generate_transactions(rows, seed=1_000 + seed), schema)
            report = compute_drift_report(profile, current, schema)
            assert report.drifted_features == [], (rows, seed)


# --- Prediction drift -----------------------------------------------------------------------


def test_prediction_drift_is_detected_when_scores_shift():
    rng = np.random.default_rng(5)
    schema = make_schema()
    reference = with_outputs(one_column(rng.normal(size=5_000)), rng.beta(2, 5, 5_000))
    current = with_outputs(one_column(rng.normal(size=5_000)), rng.beta(4, 4, 5_000))
    report = compute_drift_report(reference, current, schema)
    prediction = report.to_dict()["prediction"]
    assert prediction["available"] and prediction["drifted"]
    assert prediction["test"] == "chi2" and prediction["score"]["test"] == "ks"
    expected = stats.ks_2samp(reference[SCORE_COLUMN], current[SCORE_COLUMN])
    assert prediction["score"]["statistic"] == pytest.approx(expected.statistic, rel=1e-9)
    assert prediction["score"]["p_value"] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    classes = [np.bincount(frame[PREDICTION_COLUMN], minlength=2) for frame in (reference, current)]
    expected = stats.chi2_contingency(classes)
    assert prediction["statistic"] == pytest.approx(expected.statistic, rel=1e-9)
    assert prediction["score"]["drifted"] and prediction["score"]["psi"] >= 0.2
    assert report.features["x0"].drifted is False
    assert "Prediction drift: yes" in report.summary


def test_prediction_drift_is_not_available_without_reference_predictions_lessons_5():
    rng = np.random.default_rng(5)
    reference = one_column(rng.normal(size=1_000))  # training features only
    current = with_outputs(one_column(rng.normal(size=1_000)), rng.beta(2, 5, 1_000))
    prediction = compute_drift_report(reference, current, make_schema()).to_dict()["prediction"]
    assert prediction["available"] is False and prediction["drifted"] is False
    assert "reference has no model predictions" in prediction["reason"]


def test_prediction_drift_is_not_available_without_current_predictions(fraud_reference):
    current = coerce_frame(generate_transactions(2_000, seed=3), FRAUD_SCHEMA)
    prediction = compute_drift_report(fraud_reference, current, FRAUD_SCHEMA).prediction
    assert not prediction.available
    assert "current data has no 'prediction'" in prediction.reason


def test_prediction_columns_are_the_ones_the_schema_names():
    """Data whose outputs are not literally `prediction` and `score` used to get "Prediction
    drift: not available" with no word of why; the schema can name them now."""
    rng = np.random.default_rng(5)
    base = make_schema()
    schema = FeatureSchema(
        name="test", target="y", features=base.features, prediction="yhat", score="p_yes"
    )

    def scored(scores):
        frame = one_column(rng.normal(size=scores.size))
        return frame.assign(yhat=(scores > 0.5).astype(int), p_yes=scores)

    reference, current = scored(rng.beta(2, 5, 5_000)), scored(rng.beta(4, 4, 5_000))
    prediction = compute_drift_report(reference, current, schema).to_dict()["prediction"]
    assert prediction["available"] and prediction["drifted"]
    expected = stats.ks_2samp(reference["p_yes"], current["p_yes"])
    assert prediction["score"]["statistic"] == pytest.approx(expected.statistic, rel=1e-9)

    without_score = current.drop(columns=["p_yes"])
    missing = compute_drift_report(reference, without_score, schema).prediction
    assert not missing.available
    assert "current data has no 'p_yes' column" in missing.reason
    assert "`score`" in missing.reason

    # Reference data whose outputs carry the default names: the report says which it looked for.
    defaults = reference.rename(columns={"yhat": PREDICTION_COLUMN, "p_yes": SCORE_COLUMN})
    report = compute_drift_report(defaults, current, schema)
    assert not report.prediction.available
    assert (
        "Prediction drift: not available (the reference has no model predictions and scores "
        "to compare with (its data has no 'yhat' and 'p_yes' columns: the model's predicted "
        "class and score, named by the schema's `prediction` and `score` keys))."
    ) in report.summary


# --- The report's shape and errors ----------------------------------------------------------


def test_to_dict_follows_the_contract(fraud_reference, fraud_current):
    current = inject_drift(fraud_current, "mean_shift", schema=FRAUD_SCHEMA, intensity=0.3)
    current = model_outputs(current, FRAUD_SCHEMA)
    data = compute_drift_report(fraud_reference, current, FRAUD_SCHEMA).to_dict()
    assert set(data) >= REPORT_KEYS
    assert list(data["features"]) == FRAUD_SCHEMA.feature_names
    for name, feature in data["features"].items():
        assert set(feature) >= FEATURE_KEYS, name
        assert feature["test"] == ("ks" if feature["type"] == "numerical" else "chi2")
    assert {"test", "statistic", "p_value", "psi", "drifted", "score"} <= set(data["prediction"])
    assert data["counts_by_severity"] == {"critical": 1, "warning": 0, "none": 12}
    assert data["drifted_share"] == pytest.approx(1 / 13)
    assert data["dataset_drift"] is False
    assert data["summary"].startswith("1 of 13 features drifted (1 critical): amount (critical")
    assert data["rows_reference"] == data["rows_current"] == 20_000
    assert data["window"]["start"].startswith("2026-01-01")
    assert data["ranked_features"][0] == "amount"
    assert_json_ready(data)
    assert json.loads(json.dumps(data, allow_nan=False)) == data


def test_the_html_page_shows_the_wasserstein_distance_and_reads_older_reports():
    rng = np.random.default_rng(13)
    reference = one_column(rng.normal(size=5_000))
    current = one_column(np.r_[rng.normal(size=4_500), rng.normal(15, 1, 500)])
    data = compute_drift_report(reference, current, make_schema()).to_dict()
    page = render_html(data)
    assert "Wasserstein (std)" in page
    assert f"{data['features']['x0']['wasserstein']:.3f}" in page
    assert "Wasserstein distance is at least 0.1 reference std" in page
    # A report stored before the Wasserstein distance existed still renders.
    for key in ("wasserstein_warning", "wasserstein_critical", "wasserstein_noise_multiple"):
        del data["thresholds"][key]
    del data["features"]["x0"]["wasserstein"], data["features"]["x0"]["wasserstein_threshold"]
    assert "its PSI is at least 0.1; critical from PSI 0.2." in render_html(data)


def test_dataset_drift_needs_the_share_of_drifted_features():
    rng = np.random.default_rng(9)
    schema = make_schema(numerical=3)
    reference = pd.DataFrame({f"x{i}": rng.normal(size=2_000) for i in range(3)})
    current = pd.DataFrame({f"x{i}": rng.normal(size=2_000) for i in range(3)})
    current["x0"] += 1.0
    report = compute_drift_report(reference, current, schema)
    assert report.drifted_share == pytest.approx(1 / 3)
    assert report.dataset_drift  # 33% >= the default 30%
    strict = DriftThresholds(drift_share_threshold=0.5)
    assert not compute_drift_report(reference, current, schema, thresholds=strict).dataset_drift


def test_explicit_window_is_reported():
    values = one_column(np.arange(50.0))
    window = (datetime(2026, 3, 1, 0, tzinfo=UTC), datetime(2026, 3, 1, 6, tzinfo=UTC))
    data = compute_drift_report(values, values, make_schema(), window=window).to_dict()
    assert data["window"] == {
        "start": "2026-03-01T00:00:00+00:00",
        "end": "2026-03-01T06:00:00+00:00",
    }


def test_bad_inputs_raise_drift_errors(fraud_reference):
    values = one_column(np.arange(10.0))
    with pytest.raises(DriftError, match="current data lacks feature column"):
        compute_drift_report(values, pd.DataFrame({"other": [1.0]}), make_schema())
    with pytest.raises(DriftError, match="no rows"):
        compute_drift_report(values, values.iloc[:0], make_schema())
    with pytest.raises(DriftError, match="must be numeric"):
        compute_drift_report(
            values, one_column(["a", "b"], "c0").rename(columns={"c0": "x0"}), make_schema()
        )
    with pytest.raises(DriftError, match="no statistics for: x0"):
        compute_drift_report(fraud_reference, values, make_schema())
    with pytest.raises(DriftError, match="reference must be"):
        compute_drift_report({"x0": [1.0]}, values, make_schema())


def test_a_reference_frame_is_profiled_with_every_value_and_its_model_outputs():
    rng = np.random.default_rng(1)
    frame = with_outputs(one_column(rng.normal(size=25_000)), rng.random(25_000))
    profile = profile_from_frame(frame, make_schema())
    assert len(profile.numerical["x0"].sample) == 25_000
    assert len(profile.score.sample) == 25_000
    assert profile.prediction_counts == {
        str(k): int(v) for k, v in frame[PREDICTION_COLUMN].value_counts().items()
    }
    assert profile_from_frame(frame[["x0"]], make_schema()).prediction_counts == {}


# --- Command line ---------------------------------------------------------------------------


@pytest.fixture
def data_files(tmp_path):
    def write(suffix: str, *, drift: bool) -> tuple[str, str]:
        reference = generate_transactions(3_000, seed=1)
        current = generate_transactions(3_000, seed=2)
        if drift:
            current = inject_drift(current, "mean_shift", schema=FRAUD_SCHEMA, intensity=0.5)
        paths = []
        for name, frame in (("reference", reference), ("current", current)):
            frame = frame.assign(
                **{SCORE_COLUMN: fraud_probability(frame)},
                **{PREDICTION_COLUMN: (fraud_probability(frame) > 0.5).astype(int)},
            )
            path = tmp_path / f"{name}{suffix}"
            if suffix == ".csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            paths.append(str(path))
        return paths[0], paths[1]

    return write


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_writes_json_and_html(suffix, data_files, tmp_path, capsys):
    reference, current = data_files(suffix, drift=True)
    json_out, html_out = tmp_path / "out" / "drift.json", tmp_path / "out" / "drift.html"
    schema = str(PROJECT_ROOT / "schemas" / "fraud.yaml")
    code = main(
        ["--schema", schema, "--reference", reference, "--current", current]
        + ["--json", str(json_out), "--html", str(html_out)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("1 of 13 features drifted (1 critical): amount")
    data = json.loads(json_out.read_text())
    assert set(data) >= REPORT_KEYS
    assert data["features"]["amount"]["drifted"] is True
    assert data["prediction"]["available"] is True  # prediction/score read next to the schema
    page = html_out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page


def test_cli_reads_the_output_columns_the_schema_names(data_files, tmp_path, capsys):
    reference, current = data_files(".csv", drift=False)
    renamed = {PREDICTION_COLUMN: "fraud_predicted", SCORE_COLUMN: "fraud_probability"}
    for path in (reference, current):
        pd.read_csv(path).rename(columns=renamed).to_csv(path, index=False)
    text = (PROJECT_ROOT / "schemas" / "fraud.yaml").read_text()
    schema = tmp_path / "named.yaml"
    schema.write_text(
        text.replace(
            "features:", "prediction: fraud_predicted\nscore: fraud_probability\nfeatures:"
        )
    )
    json_out = tmp_path / "drift.json"
    args = ["--schema", str(schema), "--reference", reference, "--current", current]
    assert main([*args, "--json", str(json_out)]) == 0
    assert json.loads(json_out.read_text())["prediction"]["available"] is True
    # The shipped schema looks for `prediction` and `score`, and says so.
    fraud = str(PROJECT_ROOT / "schemas" / "fraud.yaml")
    assert main(["--schema", fraud, "--reference", reference, "--current", current]) == 0
    assert "its data has no 'prediction' and 'score' columns" in capsys.readouterr().out


def test_cli_accepts_a_saved_reference_profile(data_files, tmp_path, fraud_reference, capsys):
    _, current = data_files(".parquet", drift=False)
    profile_path = fraud_reference.save(tmp_path / "profile.json")
    schema = str(PROJECT_ROOT / "schemas" / "fraud.yaml")
    code = main(["--schema", schema, "--reference", str(profile_path), "--current", current])
    assert code == 0
    assert capsys.readouterr().out.startswith("0 of 13 features drifted.")


def test_cli_runs_as_a_module(data_files, tmp_path):
    reference, current = data_files(".csv", drift=False)
    result = subprocess.run(
        [sys.executable, "-m", "monitoring.drift_report", "--schema", "schemas/fraud.yaml"]
        + ["--reference", reference, "--current", current, "--json", str(tmp_path / "r.json")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "features drifted" in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["rows_current"] == 3_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--current": "missing.csv"}, "file not found"),
        ({"--current": "data.txt"}, "unsupported file type"),
        ({"--schema": "nope.yaml"}, "feature-schema file not found"),
        ({"--reference": "profile.json"}, "profile.json"),
        ({"--current": None}, "the following arguments are required: --current"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(change, message, data_files, tmp_path, capsys):
    reference, current = data_files(".csv", drift=False)
    (tmp_path / "data.txt").write_text("x\n1\n")
    (tmp_path / "profile.json").write_text('{"version": 1}')
    args = {
        "--schema": str(PROJECT_ROOT / "schemas" / "fraud.yaml"),
        "--reference": reference,
        "--current": current,
    }
    for key, value in change.items():
        args[key] = None if value is None else str(tmp_path / value)
    argv = [part for key, value in args.items() if value for part in (key, value)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
