"""data.drift_injector: each kind of drift moves what it should, on its feature only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, ks_2samp

from data.drift_injector import DRIFT_TYPES, UNSEEN_CATEGORY, inject_drift, main
from data.synthetic import generate_transactions, write_frame

N_ROWS = 20_000
ONE_ROW = 1 / N_ROWS
# Kinds that pick rows at random, with the column each changes by default.
ROW_CHOOSING_KINDS = {
    "category_frequency_shift": "merchant_category",
    "new_category": "merchant_category",
    "missing_values": "amount",
    "out_of_range": "amount",
    "concept_drift": "is_fraud",
}

# Every kind on its default feature, plus the boolean cases that change a column's dtype.
EVERY_KIND = [(kind, None) for kind in DRIFT_TYPES] + [
    ("missing_values", "card_present"),
    ("category_frequency_shift", "is_foreign"),
]


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return generate_transactions(N_ROWS, seed=7)


def assert_only_column_changed(after: pd.DataFrame, before: pd.DataFrame, column: str) -> None:
    assert list(after.columns) == list(before.columns)
    pd.testing.assert_index_equal(after.index, before.index)
    pd.testing.assert_frame_equal(after.drop(columns=column), before.drop(columns=column))


def changed_rows(after: pd.Series, before: pd.Series) -> set[int]:
    return {
        i
        for i, (new, old) in enumerate(
            zip(after.astype(object), before.astype(object), strict=True)
        )
        if not (new == old or (pd.isna(new) and pd.isna(old)))
    }


def test_mean_shift_moves_the_mean_by_intensity_times_two_stds(transactions, fraud_schema):
    before = transactions
    after = inject_drift(
        before, "mean_shift", schema=fraud_schema, feature="customer_age", intensity=0.4
    )

    old, new = before["customer_age"], after["customer_age"]
    assert new.mean() - old.mean() == pytest.approx(0.4 * 2 * old.std(), rel=1e-9)
    ks = ks_2samp(old.dropna(), new.dropna())
    assert ks.statistic > 0.25
    assert ks.pvalue < 1e-20
    pd.testing.assert_series_equal(new.isna(), old.isna())  # unknown ages stay unknown
    assert_only_column_changed(after, before, "customer_age")


def test_variance_change_grows_the_std_and_keeps_the_mean(transactions, fraud_schema):
    before = transactions
    after = inject_drift(
        before, "variance_change", schema=fraud_schema, feature="avg_amount_30d", intensity=0.4
    )

    old, new = before["avg_amount_30d"], after["avg_amount_30d"]
    assert new.std() / old.std() == pytest.approx(1 + 2 * 0.4, rel=1e-9)
    assert new.mean() == pytest.approx(old.mean(), rel=1e-9)
    assert ks_2samp(old, new).pvalue < 1e-20
    assert_only_column_changed(after, before, "avg_amount_30d")


def test_category_frequency_shift_moves_rows_to_the_rarest_category(transactions, fraud_schema):
    before = transactions
    after = inject_drift(
        before,
        "category_frequency_shift",
        schema=fraud_schema,
        feature="merchant_category",
        intensity=0.3,
    )

    old_counts = before["merchant_category"].value_counts()
    new_counts = after["merchant_category"].value_counts().reindex(old_counts.index, fill_value=0)
    rarest = old_counts.idxmin()
    assert set(new_counts.index) == set(old_counts.index)  # no value the reference lacks
    assert new_counts[rarest] / N_ROWS == pytest.approx(
        old_counts[rarest] / N_ROWS + 0.3, abs=ONE_ROW
    )
    assert (new_counts.drop(rarest) <= old_counts.drop(rarest)).all()
    assert chi2_contingency(np.vstack([old_counts, new_counts])).pvalue < 1e-6
    assert_only_column_changed(after, before, "merchant_category")


def test_category_frequency_shift_on_a_boolean_raises_the_rarer_value(transactions, fraud_schema):
    before = transactions
    after = inject_drift(
        before,
        "category_frequency_shift",
        schema=fraud_schema,
        feature="is_foreign",
        intensity=0.3,
    )

    assert after["is_foreign"].dtype == bool
    assert before["is_foreign"].mean() < 0.5  # True is the rarer value
    assert after["is_foreign"].mean() == pytest.approx(
        before["is_foreign"].mean() + 0.3, abs=ONE_ROW
    )
    table = pd.crosstab(
        np.repeat(["reference", "current"], N_ROWS),
        np.concatenate([before["is_foreign"], after["is_foreign"]]),
    )
    assert chi2_contingency(table).pvalue < 1e-6
    assert_only_column_changed(after, before, "is_foreign")


def test_new_category_adds_an_unseen_value_to_a_share_of_rows(transactions, fraud_schema):
    before = transactions
    after = inject_drift(
        before, "new_category", schema=fraud_schema, feature="entry_mode", intensity=0.3
    )

    is_new = after["entry_mode"] == UNSEEN_CATEGORY
    assert is_new.mean() == pytest.approx(0.3, abs=ONE_ROW)
    assert UNSEEN_CATEGORY not in fraud_schema.feature("entry_mode").categories
    assert UNSEEN_CATEGORY not in set(before["entry_mode"])
    assert after["entry_mode"].dtype == before["entry_mode"].dtype
    pd.testing.assert_series_equal(after["entry_mode"][~is_new], before["entry_mode"][~is_new])
    assert_only_column_changed(after, before, "entry_mode")


def test_new_category_on_already_drifted_data_still_adds_a_new_value(transactions, fraud_schema):
    once = inject_drift(transactions, "new_category", schema=fraud_schema, intensity=0.2)
    twice = inject_drift(once, "new_category", schema=fraud_schema, intensity=0.2, seed=1)

    added = set(twice["merchant_category"]) - set(once["merchant_category"])
    assert len(added) == 1
    assert UNSEEN_CATEGORY not in added


def test_new_category_works_on_a_pandas_categorical_column(transactions, fraud_schema):
    before = transactions.astype({"merchant_category": "category"})
    after = inject_drift(before, "new_category", schema=fraud_schema, intensity=0.3)

    assert isinstance(after["merchant_category"].dtype, pd.CategoricalDtype)
    assert (after["merchant_category"] == UNSEEN_CATEGORY).mean() == pytest.approx(0.3, abs=ONE_ROW)


@pytest.mark.parametrize("feature", ["amount", "device_type", "card_present"])
def test_missing_values_blanks_a_share_of_rows(transactions, fraud_schema, feature):
    before = transactions
    after = inject_drift(
        before, "missing_values", schema=fraud_schema, feature=feature, intensity=0.3
    )

    missing = after[feature].isna()
    assert before[feature].notna().all()
    assert missing.mean() == pytest.approx(0.3, abs=ONE_ROW)
    kept = after[feature][~missing]
    assert (kept.to_numpy() == before[feature][~missing].to_numpy()).all()
    if feature == "card_present":
        assert after[feature].dtype == "boolean"  # numpy bool has no way to hold a gap
    assert_only_column_changed(after, before, feature)


@pytest.mark.parametrize("feature", ["amount", "hour_of_day", "customer_age"])
def test_out_of_range_puts_a_share_outside_schema_bounds_and_reference(
    transactions, fraud_schema, feature
):
    before = transactions
    after = inject_drift(
        before, "out_of_range", schema=fraud_schema, feature=feature, intensity=0.3
    )

    spec = fraud_schema.feature(feature)
    low = -math.inf if spec.min is None else spec.min
    high = math.inf if spec.max is None else spec.max
    new = after[feature]
    outside_schema = (new < low) | (new > high)
    outside_reference = (new < before[feature].min()) | (new > before[feature].max())
    outside = outside_schema & outside_reference
    assert outside.mean() == pytest.approx(0.3, abs=ONE_ROW)
    assert not (outside_schema & ~outside_reference).any()
    assert changed_rows(new, before[feature]) == set(np.flatnonzero(outside))
    assert_only_column_changed(after, before, feature)


@pytest.mark.parametrize(
    ("feature", "region_of"),
    [
        ("amount", lambda frame: frame["amount"] > frame["amount"].median()),
        ("merchant_category", lambda frame: frame["merchant_category"] == "grocery"),
        ("is_foreign", lambda frame: ~frame["is_foreign"]),
    ],
)
def test_concept_drift_changes_labels_in_one_region_and_no_input(
    transactions, fraud_schema, feature, region_of
):
    before = transactions
    after = inject_drift(
        before, "concept_drift", schema=fraud_schema, feature=feature, intensity=0.3
    )

    # Input-drift checks compare feature columns; these are identical, so nothing can be seen.
    pd.testing.assert_frame_equal(after.drop(columns="is_fraud"), before.drop(columns="is_fraud"))
    region = region_of(before)
    old_rate = before["is_fraud"][region].mean()
    new_rate = after["is_fraud"][region].mean()
    assert new_rate == pytest.approx(old_rate * 0.7 + (1 - old_rate) * 0.3, abs=0.02)
    assert new_rate - old_rate > 0.15
    pd.testing.assert_series_equal(after["is_fraud"][~region], before["is_fraud"][~region])
    assert after["is_fraud"].dtype == before["is_fraud"].dtype


def test_concept_drift_needs_the_target_column(transactions, fraud_schema):
    unlabelled = transactions.drop(columns="is_fraud")
    with pytest.raises(ValueError, match="'is_fraud'"):
        inject_drift(unlabelled, "concept_drift", schema=fraud_schema)


@pytest.mark.parametrize(
    ("kind", "changed"),
    [
        ("mean_shift", "amount"),
        ("variance_change", "amount"),
        ("category_frequency_shift", "merchant_category"),
        ("new_category", "merchant_category"),
        ("missing_values", "amount"),
        ("out_of_range", "amount"),
        ("concept_drift", "is_fraud"),
    ],
)
def test_without_a_feature_the_first_fitting_one_is_drifted(
    transactions, fraud_schema, kind, changed
):
    after = inject_drift(transactions, kind, schema=fraud_schema, intensity=0.3)

    assert [c for c in after.columns if not after[c].equals(transactions[c])] == [changed]


@pytest.mark.parametrize(("kind", "feature"), EVERY_KIND)
def test_intensity_zero_returns_an_identical_copy(transactions, fraud_schema, kind, feature):
    after = inject_drift(transactions, kind, schema=fraud_schema, feature=feature, intensity=0)

    assert after is not transactions
    pd.testing.assert_frame_equal(after, transactions, check_exact=True)


@pytest.mark.parametrize("kind", DRIFT_TYPES)
def test_the_same_seed_gives_the_same_output(transactions, fraud_schema, kind):
    first = inject_drift(transactions, kind, schema=fraud_schema, seed=11)
    again = inject_drift(transactions, kind, schema=fraud_schema, seed=11)

    pd.testing.assert_frame_equal(first, again)


@pytest.mark.parametrize(("kind", "column"), ROW_CHOOSING_KINDS.items())
def test_another_seed_drifts_other_rows(transactions, fraud_schema, kind, column):
    one = inject_drift(transactions, kind, schema=fraud_schema, intensity=0.1, seed=1)
    two = inject_drift(transactions, kind, schema=fraud_schema, intensity=0.1, seed=2)

    rows_one = changed_rows(one[column], transactions[column])
    rows_two = changed_rows(two[column], transactions[column])
    assert rows_one
    assert rows_one != rows_two


@pytest.mark.parametrize(("kind", "feature"), EVERY_KIND)
def test_the_input_frame_is_not_modified(transactions, fraud_schema, kind, feature):
    frame = transactions.copy(deep=True)

    inject_drift(frame, kind, schema=fraud_schema, feature=feature, intensity=0.5)

    pd.testing.assert_frame_equal(frame, transactions)


def test_an_unknown_kind_is_refused_with_the_valid_kinds(transactions, fraud_schema):
    with pytest.raises(ValueError, match="unknown drift kind 'everything'") as error:
        inject_drift(transactions, "everything", schema=fraud_schema)
    assert all(kind in str(error.value) for kind in DRIFT_TYPES)


@pytest.mark.parametrize(
    ("kind", "feature", "message"),
    [
        ("mean_shift", "not_a_feature", "'not_a_feature' is not in schema 'fraud'"),
        ("mean_shift", "merchant_category", "'merchant_category' is categorical"),
        ("out_of_range", "is_foreign", "'is_foreign' is boolean"),
        ("new_category", "is_foreign", "'is_foreign' is boolean"),
        ("category_frequency_shift", "amount", "'amount' is numerical"),
        ("missing_values", "is_fraud", "'is_fraud' is not in schema"),
    ],
)
def test_a_wrong_feature_is_refused_by_name_and_type(
    transactions, fraud_schema, kind, feature, message
):
    with pytest.raises(ValueError, match=message):
        inject_drift(transactions, kind, schema=fraud_schema, feature=feature)


@pytest.mark.parametrize("intensity", [-0.1, 1.5, math.nan])
def test_an_intensity_outside_zero_to_one_is_refused(transactions, fraud_schema, intensity):
    with pytest.raises(ValueError, match=f"got {intensity}"):
        inject_drift(transactions, "mean_shift", schema=fraud_schema, intensity=intensity)


def test_a_schema_feature_missing_from_the_data_is_refused(transactions, fraud_schema):
    with pytest.raises(ValueError, match="'amount' is in the schema but not in the data"):
        inject_drift(transactions.drop(columns="amount"), "mean_shift", schema=fraud_schema)


def test_a_constant_column_is_refused_rather_than_left_unchanged(transactions, fraud_schema):
    constant = transactions.assign(amount=10.0)
    with pytest.raises(ValueError, match="'amount' needs at least two distinct values"):
        inject_drift(constant, "mean_shift", schema=fraud_schema)


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.mark.parametrize(
    ("suffix", "kind", "feature"),
    [("csv", "mean_shift", "amount"), ("parquet", "missing_values", "card_present")],
)
def test_the_cli_writes_a_drifted_copy(tmp_path, capsys, fraud_schema, suffix, kind, feature):
    source = tmp_path / f"in.{suffix}"
    target = tmp_path / f"out.{suffix}"
    write_frame(generate_transactions(2_000, seed=3), source)

    code = main(
        [
            "--schema",
            fraud_schema.source,
            "--input",
            str(source),
            "--output",
            str(target),
            "--kind",
            kind,
            "--feature",
            feature,
            "--intensity",
            "0.25",
            "--seed",
            "5",
        ]
    )

    assert code == 0
    assert "wrote 2,000 rows" in capsys.readouterr().out
    expected = inject_drift(
        read(source), kind, schema=fraud_schema, feature=feature, intensity=0.25, seed=5
    )
    written = read(target)
    pd.testing.assert_frame_equal(written, expected)
    assert not written[feature].equals(read(source)[feature])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"--input": "missing.csv"}, "missing.csv: input file not found"),
        ({"--kind": "everything"}, "unknown drift kind 'everything'"),
        ({"--feature": "nope"}, "feature 'nope' is not in schema"),
        ({"--kind": "mean_shift", "--feature": "device_type"}, "'device_type' is categorical"),
        ({"--schema": "missing.yaml"}, "missing.yaml: feature-schema file not found"),
    ],
)
def test_the_cli_reports_bad_input_in_one_line(tmp_path, capsys, fraud_schema, overrides, message):
    # The autouse settings fixture runs every test inside tmp_path, so relative paths land there.
    write_frame(generate_transactions(200, seed=3), tmp_path / "in.csv")
    args = {
        "--schema": fraud_schema.source,
        "--input": "in.csv",
        "--output": "out.csv",
        "--kind": "missing_values",
    } | overrides

    code = main([part for option in args.items() for part in option])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert captured.err.count("\n") == 1
    assert message in captured.err
    assert not (tmp_path / "out.csv").exists()
