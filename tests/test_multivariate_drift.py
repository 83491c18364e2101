"""The multivariate drift check: a change of the joint distribution that every per-feature test
misses is found and its features named; undrifted windows stay quiet; old profiles still load.

Seeds make every figure repeatable. The rates over many seeds (40-100 per case) are measured by
`python -m benchmarks.drift_power --parts multivariate` (docs/drift-detection.md); the tests
here check a few seeds of each, and `test_false_alarms_stay_under_the_threshold_over_many_seeds`
(slow) the false-alarm rate at 500, 5,000 and 100,000 rows.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

from data.drift_injector import inject_drift
from data.ingest import coerce_frame
from data.profile import ReferenceProfile
from data.schema import FeatureSchema, load_schema
from data.settings import PROJECT_ROOT
from data.synthetic import generate_transactions
from monitoring.drift_report import (
    MULTIVARIATE_P_THRESHOLD,
    DriftAccumulator,
    DriftThresholds,
    compute_drift_report,
    profile_from_frame,
)
from monitoring.multivariate_drift import RowReservoir, multivariate_drift

FRAUD = load_schema(PROJECT_ROOT / "schemas" / "fraud.yaml")
PENGUINS = load_schema(PROJECT_ROOT / "schemas" / "penguins.yaml")
# The feature each joint drift is injected into, and the partner it is correlated with.
PAIRS = {"fraud": ("avg_amount_30d", "amount"), "penguins": ("body_mass_g", "flipper_length_mm")}


def penguin_rows(n: int, seed: int) -> pd.DataFrame:
    """A smoothed bootstrap of the 333 complete penguins (as benchmarks.drift_power's)."""
    penguins = load_penguins().dropna().reset_index(drop=True)
    rng = np.random.default_rng(seed)
    rows = penguins.iloc[rng.integers(0, len(penguins), n)].reset_index(drop=True)
    for name in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        rows[name] = (rows[name] + rng.normal(0, 0.05 * penguins[name].std(), n)).round(1)
    return rows


def rows(schema: FeatureSchema, n: int, seed: int) -> pd.DataFrame:
    raw = generate_transactions(n, seed=seed) if schema.name == "fraud" else penguin_rows(n, seed)
    return coerce_frame(raw, schema, require_target=False)


@pytest.fixture(scope="module")
def profiles() -> dict[str, ReferenceProfile]:
    return {s.name: profile_from_frame(rows(s, 10_000, 1), s) for s in (FRAUD, PENGUINS)}


def check(profile: ReferenceProfile, window: pd.DataFrame, schema: FeatureSchema):
    return multivariate_drift(
        profile, window, schema, p_threshold=MULTIVARIATE_P_THRESHOLD, auc_critical=0.65
    )


@pytest.mark.parametrize("schema", [FRAUD, PENGUINS], ids=["fraud", "penguins"])
def test_a_correlation_flip_with_identical_columns_is_found_and_named(schema, profiles):
    feature, partner = PAIRS[schema.name]
    for seed in range(2):
        window = rows(schema, 5_000, 1_000 + seed)
        flipped = inject_drift(
            window, "correlation_flip", schema=schema, feature=feature, intensity=1.0, seed=seed
        )
        # Every column holds exactly the values it held.
        for name in schema.feature_names:
            assert sorted(flipped[name].dropna()) == sorted(window[name].dropna())
        report = compute_drift_report(profiles[schema.name], flipped, schema, workers=1)

        assert report.drifted_features == []  # no per-feature test can see it
        assert report.multivariate_drift
        multivariate = report.multivariate
        assert multivariate.severity == "critical"
        assert set(multivariate.drivers[:2]) == {feature, partner}
        pair = multivariate.correlation_changes[0]
        assert set(pair["features"]) == {feature, partner}
        assert pair["reference"] > 0.5 and pair["current"] < -0.5  # the sign flipped
        assert "Multivariate drift: yes" in report.summary
        assert f"{pair['features'][0]} ~ {pair['features'][1]}" in report.summary
        saved = json.loads(json.dumps(report.to_dict(), allow_nan=False))
        assert saved["multivariate_drift"] is True
        assert saved["multivariate"]["drivers"][:2] == multivariate.drivers[:2]


@pytest.mark.parametrize("schema", [FRAUD, PENGUINS], ids=["fraud", "penguins"])
def test_a_new_cluster_inside_the_old_ranges_is_found_and_named(schema, profiles):
    feature, partner = PAIRS[schema.name]
    profile = profiles[schema.name]
    for seed in range(2):
        before = rows(schema, 5_000, 2_000 + seed)
        window = inject_drift(
            before, "new_cluster", schema=schema, feature=feature, intensity=0.1, seed=seed
        )
        for name in (feature, partner):  # only values the column already held
            assert set(window[name].dropna()) <= set(before[name].dropna())
        report = compute_drift_report(profile, window, schema, workers=1)

        assert report.multivariate_drift
        assert set(report.multivariate.drivers[:2]) == {feature, partner}


def test_undrifted_windows_are_quiet_at_500_and_5000_rows(profiles):
    """8 seeds per schema and size; the many-seed rates are in the slow test below."""
    flagged, p_values = 0, []
    for schema in (FRAUD, PENGUINS):
        for n in (500, 5_000):
            for seed in range(8):
                result = check(profiles[schema.name], rows(schema, n, 3_000 + seed), schema)
                flagged += result.drifted
                p_values.append(result.p_value)
                if not result.drifted:
                    assert result.top_features == []  # nothing to name
    assert flagged <= 2  # of 32; at the 1% level 0.3 are expected
    # Not drifting towards small p-values (the reference margin makes them lean large).
    assert np.median(p_values) > 0.3


@pytest.mark.slow
def test_false_alarms_stay_under_the_threshold_over_many_seeds(profiles):
    """At most 5% of undrifted windows flagged: 100 seeds at 500 and 5,000 rows, 20 at 100,000,
    on both schemas (the threshold is 1%; the bound leaves room for sampling)."""
    for schema in (FRAUD, PENGUINS):
        for n, seeds in ((500, 100), (5_000, 100), (100_000, 20)):
            accumulator = None
            flagged = 0
            for seed in range(seeds):
                window = rows(schema, n, 5_000 + seed)
                accumulator = DriftAccumulator(profiles[schema.name], schema, workers=1)
                for start in range(0, n, 25_000):  # as the monitoring pass feeds it
                    accumulator._reservoir.update(window.iloc[start : start + 25_000])
                flagged += check(
                    profiles[schema.name], accumulator._reservoir.sample, schema
                ).drifted
            assert flagged / seeds <= 0.05, (schema.name, n, flagged)


def test_a_profile_saved_before_the_check_still_loads_and_says_not_available(profiles, tmp_path):
    saved = profiles["fraud"].to_dict()
    del saved["joint_sample"]
    path = tmp_path / "old-profile.json"
    path.write_text(json.dumps(saved))
    old = ReferenceProfile.load(path)
    assert old.joint_sample is None

    report = compute_drift_report(old, rows(FRAUD, 2_000, 7), FRAUD, workers=1)
    section = report.to_dict()["multivariate"]
    assert section["available"] is False and section["drifted"] is False
    assert "no joint sample" in section["reason"] and "retrain" in section["reason"]
    assert "Multivariate drift: not available (the reference profile keeps no joint" in (
        report.summary
    )
    assert report.to_dict()["multivariate_drift"] is False
    # The per-feature report is what it was.
    assert report.features.keys() == set(FRAUD.feature_names)


def test_the_joint_sample_is_saved_and_read_back(profiles, tmp_path):
    profile = profiles["penguins"]
    joint = profile.joint_sample
    assert set(joint) == set(PENGUINS.feature_names)
    assert {len(values) for values in joint.values()} == {10_000}  # JOINT_SAMPLE_ROWS
    assert set(joint["species"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    loaded = ReferenceProfile.load(profile.save(tmp_path / "profile.json"))
    assert loaded.joint_sample == joint


def test_the_window_sample_is_uniform_and_the_same_however_the_window_is_chunked():
    window = pd.DataFrame({"x": np.arange(100_000.0), "y": np.zeros(100_000)})
    whole = RowReservoir(["x"], size=2_000, seed=3)
    whole.update(window)
    chunked = RowReservoir(["x"], size=2_000, seed=3)
    for start, stop in [(0, 10), (10, 1_500), (1_500, 40_000), (40_000, 100_000)]:
        chunked.update(window.iloc[start:stop])

    assert whole.rows == chunked.rows == 100_000
    assert list(whole.sample.columns) == ["x"]
    pd.testing.assert_frame_equal(whole.sample, chunked.sample)
    values = whole.sample["x"]
    assert len(values) == 2_000 and values.is_unique
    # Uniform over the window: each tenth holds about a tenth of the sample.
    tenths = np.bincount((values // 10_000).astype(int), minlength=10)
    assert tenths.min() > 140 and tenths.max() < 260


def test_a_chunked_window_gives_the_one_call_report(profiles):
    window = inject_drift(
        rows(FRAUD, 6_000, 11), "correlation_flip", schema=FRAUD, feature="avg_amount_30d"
    )
    one = compute_drift_report(profiles["fraud"], window, FRAUD, workers=1)
    accumulator = DriftAccumulator(profiles["fraud"], FRAUD, workers=1)
    for start in range(0, 6_000, 1_700):
        accumulator.update(window.iloc[start : start + 1_700])
    chunked = accumulator.report()
    assert chunked.to_dict()["multivariate"] == one.to_dict()["multivariate"]


def test_the_threshold_is_part_of_the_thresholds_and_checked(profiles):
    strict = DriftThresholds(multivariate_p_threshold=1e-12)
    window = inject_drift(
        rows(FRAUD, 500, 12),
        "correlation_flip",
        schema=FRAUD,
        feature="avg_amount_30d",
        intensity=0.5,
        seed=1,
    )
    loose = compute_drift_report(profiles["fraud"], window, FRAUD, workers=1).multivariate
    tight = compute_drift_report(
        profiles["fraud"], window, FRAUD, thresholds=strict, workers=1
    ).multivariate
    assert loose.auc == tight.auc
    assert loose.drifted and not tight.drifted
    assert tight.auc_threshold > loose.auc_threshold
    with pytest.raises(ValueError, match="multivariate_p_threshold"):
        replace(strict, multivariate_p_threshold=0)
    with pytest.raises(ValueError, match="multivariate_auc_critical"):
        DriftThresholds(multivariate_auc_critical=0.4)


def test_the_html_page_shows_the_drivers_and_reads_reports_without_the_section(profiles):
    from monitoring.html.drift_page import render_html

    window = inject_drift(
        rows(PENGUINS, 2_000, 13), "correlation_flip", schema=PENGUINS, feature="body_mass_g"
    )
    data = compute_drift_report(profiles["penguins"], window, PENGUINS, workers=1).to_dict()
    page = render_html(data)
    assert '<h2 id="multivariate">Multivariate drift</h2>' in page
    assert f"held-out AUC of {data['multivariate']['auc']:.3f}" in page
    assert "body_mass_g ~ flipper_length_mm" in page or "flipper_length_mm ~ body_mass_g" in page
    assert "AUC lost when shuffled" in page
    # A report stored before the check still renders, and says so.
    del data["multivariate"], data["multivariate_drift"]
    assert "Not available: the report predates the check." in render_html(data)
