"""Realized and estimated (CBPE) performance: known answers, edge windows, real tables, and
the claim that matters: the estimate tracks covariate shift and is blind to concept drift."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sqlalchemy import insert
from threadpoolctl import threadpool_limits

from data.db import get_engine, init_db, labels, prediction_logs
from data.drift_injector import inject_drift
from data.features import FeaturePipeline
from data.ingest import coerce_frame
from data.prediction_log import SCORE_COLUMN, read_predictions
from data.schema import load_schema
from data.settings import PROJECT_ROOT
from data.synthetic import fraud_probability, generate_transactions
from monitoring.performance import (
    METRICS,
    Calibrator,
    estimated_performance,
    estimated_performance_by_window,
    estimation_error,
    fit_calibrator,
    realized_performance,
)
from training.evaluate import evaluate_scores
from training.registry import Registry

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def hours(*values: float) -> list[datetime]:
    return [T0 + timedelta(hours=v) for v in values]


def log_frame(
    fraud_schema, times: list[datetime], scores: list[float], y: list[float]
) -> pd.DataFrame:
    """The columns `read_predictions(..., with_labels=True)` gives that performance reads."""
    return pd.DataFrame(
        {
            fraud_schema.timestamp: pd.DatetimeIndex(times),
            SCORE_COLUMN: scores,
            fraud_schema.target: np.array(y, dtype=float),
        }
    )


def test_estimate_of_four_scores_is_the_hand_computed_one():
    # Predicted positives 0.9, 0.8: TP 1.7, FP 0.3; predicted negatives 0.3, 0.1: FN 0.4, TN 1.6.
    estimate = estimated_performance(np.array([0.9, 0.8, 0.3, 0.1]))
    assert estimate["tp"] == pytest.approx(1.7) and estimate["tn"] == pytest.approx(1.6)
    assert estimate["fp"] == pytest.approx(0.3) and estimate["fn"] == pytest.approx(0.4)
    assert estimate["accuracy"] == pytest.approx(3.3 / 4)
    assert estimate["precision"] == pytest.approx(1.7 / 2.0)
    assert estimate["recall"] == pytest.approx(1.7 / 2.1)
    assert estimate["f1"] == pytest.approx(3.4 / 4.1)
    # Weighted pairs p_i (1 - p_j) with s_i > s_j, plus half of each row's tie with itself.
    wins = 0.9 * 1.8 + 0.8 * 1.6 + 0.3 * 0.9 + 0.5 * (0.09 + 0.16 + 0.21 + 0.09)
    assert estimate["roc_auc"] == pytest.approx(wins / (2.1 * 1.9))
    assert estimate["rows"] == 4 and estimate["expected_positive_rate"] == pytest.approx(0.525)


def test_estimated_auc_is_sklearns_weighted_auc_on_duplicated_rows():
    rng = np.random.default_rng(0)
    scores = np.round(rng.beta(0.5, 3, 500), 2)  # rounded, so there are many ties
    twice = np.r_[scores, scores]
    expected = roc_auc_score(
        np.r_[np.ones(500), np.zeros(500)], twice, sample_weight=np.r_[scores, 1 - scores]
    )
    assert estimated_performance(scores)["roc_auc"] == pytest.approx(expected, abs=1e-12)


def test_estimate_without_predicted_positives_has_no_precision():
    estimate = estimated_performance([0.1, 0.2, 0.4])
    assert estimate["precision"] is None
    assert estimate["recall"] == 0.0 and estimate["f1"] == 0.0
    assert estimate["accuracy"] == pytest.approx((0.9 + 0.8 + 0.6) / 3)


def test_estimate_of_nothing_is_undefined_and_bad_scores_are_refused():
    empty = estimated_performance(np.array([]))
    assert empty["rows"] == 0 and all(empty[m] is None for m in METRICS)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]; 2 are not"):
        estimated_performance([0.2, 1.5, np.nan])


def test_realized_metrics_per_hour_with_late_unlabelled_and_one_class_windows(fraud_schema):
    frame = log_frame(
        fraud_schema,
        hours(0.1, 0.2, 0.3, 0.4, 0.5, 1.1, 1.9, 3.0, 3.5, 3.9),
        [0.9, 0.6, 0.4, 0.2, 0.7, 0.8, 0.1, 0.8, 0.3, 0.6],
        [1, 0, 1, 0, np.nan, np.nan, np.nan, 1, 1, 1],
    )
    report = realized_performance(frame, fraud_schema, window="1h")
    windows = report.windows
    assert windows["window_start"].tolist() == [pd.Timestamp(t) for t in hours(0, 1, 2, 3)]
    assert windows["window_end"].tolist() == [pd.Timestamp(t) for t in hours(1, 2, 3, 4)]
    assert windows["predictions"].tolist() == [5, 2, 0, 3]
    assert windows["labelled"].tolist() == [4, 0, 0, 3]

    first, no_labels, empty, one_class = report.to_dict()["windows"]
    # Hour 0: predictions 1, 1, 0, 0 against labels 1, 0, 1, 0; the fifth row has no label yet.
    assert first["label_coverage"] == pytest.approx(0.8)
    assert [first[m] for m in ("accuracy", "precision", "recall", "f1")] == pytest.approx([0.5] * 4)
    assert first["roc_auc"] == pytest.approx(0.75)  # 3 of the 4 positive-negative pairs in order
    assert [first[cell] for cell in ("tp", "fp", "fn", "tn")] == [1, 1, 1, 1]
    assert no_labels["label_coverage"] == 0.0
    assert all(no_labels[m] is None for m in METRICS)
    assert empty["predictions"] == 0 and empty["label_coverage"] is None
    assert one_class["accuracy"] == pytest.approx(2 / 3) and one_class["precision"] == 1.0
    assert one_class["recall"] == pytest.approx(2 / 3) and one_class["f1"] == pytest.approx(0.8)
    assert one_class["roc_auc"] is None

    labelled = frame.dropna(subset=[fraud_schema.target])
    reference = evaluate_scores(labelled[fraud_schema.target], labelled[SCORE_COLUMN]).metrics
    overall = report.to_dict()["overall"]
    assert overall["predictions"] == 10 and overall["labelled"] == 7
    assert overall["label_coverage"] == pytest.approx(0.7)
    assert [overall[m] for m in METRICS] == pytest.approx([reference[m] for m in METRICS])


def test_realized_auc_per_window_is_sklearns(fraud_schema):
    rng = np.random.default_rng(3)
    times = T0 + pd.to_timedelta(rng.uniform(0, 6 * 3600, 3000), unit="s")
    scores = np.round(rng.random(3000), 2)
    y = (rng.random(3000) < scores).astype(float)
    frame = log_frame(fraud_schema, list(times), scores.tolist(), y.tolist())
    windows = realized_performance(frame, fraud_schema, window="2h").windows
    for start, auc in zip(windows["window_start"], windows["roc_auc"], strict=True):
        rows = (frame[fraud_schema.timestamp] >= start) & (
            frame[fraud_schema.timestamp] < start + pd.Timedelta("2h")
        )
        assert auc == pytest.approx(roc_auc_score(y[rows], scores[rows]), abs=1e-12)


def test_explicit_bins_leave_outside_rows_to_the_overall_figures(fraud_schema):
    frame = log_frame(
        fraud_schema, hours(-1, 0.5, 1.5, 2.5, 5), [0.9, 0.8, 0.2, 0.7, 0.1], [1, 1, 0, 0, 0]
    )
    report = realized_performance(frame, fraud_schema, window=hours(0, 2, 3))
    assert report.windows["predictions"].tolist() == [2, 1]
    assert report.windows["accuracy"].tolist() == [1.0, 0.0]
    assert report.overall["predictions"] == 5
    with pytest.raises(ValueError, match="increasing"):
        realized_performance(frame, fraud_schema, window=hours(2, 1))


def test_estimate_by_window_is_the_estimate_of_each_window(fraud_schema):
    rng = np.random.default_rng(4)
    times = T0 + pd.to_timedelta(rng.uniform(0, 4 * 3600, 400), unit="s")
    frame = log_frame(fraud_schema, list(times), rng.beta(0.5, 2, 400).tolist(), [np.nan] * 400)
    report = estimated_performance_by_window(frame, fraud_schema, window="1h")
    assert report.kind == "estimated" and len(report.windows) == 4
    hour = frame[fraud_schema.timestamp].dt.floor("1h")
    for row in report.to_dict()["windows"]:
        scores = frame.loc[hour == pd.Timestamp(row["window_start"]), SCORE_COLUMN]
        alone = estimated_performance(scores)
        assert row["predictions"] == alone["rows"]
        assert [row[m] for m in METRICS] == pytest.approx([alone[m] for m in METRICS])
    assert report.overall["accuracy"] == pytest.approx(
        estimated_performance(frame[SCORE_COLUMN])["accuracy"]
    )


def test_reports_are_json_ready_and_bad_frames_are_refused(fraud_schema):
    frame = log_frame(fraud_schema, hours(0.5, 2.5), [0.9, 0.2], [1, np.nan])
    text = json.dumps(realized_performance(frame, fraud_schema).to_dict(), allow_nan=False)
    assert '"window_start": "2026-03-01T00:00:00+00:00"' in text
    assert realized_performance(frame.iloc[:0], fraud_schema).windows.empty
    with pytest.raises(ValueError, match="is_fraud"):
        realized_performance(frame.drop(columns=[fraud_schema.target]), fraud_schema)
    with pytest.raises(ValueError, match="0/1 labels"):
        realized_performance(frame.assign(is_fraud=[2, 0]), fraud_schema)


def test_realized_performance_from_the_logged_tables(database_url, fraud_schema):
    features = coerce_frame(generate_transactions(6, seed=5), fraud_schema)
    scores = [0.92, 0.81, 0.35, 0.12, 0.66, 0.05]
    records = features[fraud_schema.feature_names].to_dict("records")
    logged = [
        {
            "request_id": f"r{i}",
            "predicted_at": T0 + timedelta(minutes=20 * i),
            "model_name": "fraud-detector",
            "model_version": "1",
            "features": {k: None if pd.isna(v) else v for k, v in record.items()},
            "predicted_class": int(score >= 0.5),
            "score": score,
            "latency_ms": 1.0,
        }
        for i, (record, score) in enumerate(zip(records, scores, strict=True))
    ]
    engine = get_engine(database_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(insert(prediction_logs), logged)
        # Feedback for four of six predictions; r4 (predicted fraud) turned out legitimate.
        conn.execute(
            insert(labels),
            [
                {"request_id": r, "label": y, "labelled_at": T0 + timedelta(days=3)}
                for r, y in (("r0", 1), ("r1", 1), ("r3", 0), ("r4", 0))
            ],
        )

    window = read_predictions(
        fraud_schema, T0, T0 + timedelta(hours=2), url=database_url, with_labels=True
    )
    report = realized_performance(window, fraud_schema, window="1h").to_dict()
    first, second = report["windows"]
    # 00:00-01:00 holds r0-r2 (r2 unlabelled), 01:00-02:00 holds r3-r5 (r5 unlabelled).
    assert (first["predictions"], first["labelled"], second["labelled"]) == (3, 2, 2)
    assert first["accuracy"] == 1.0 and first["roc_auc"] is None  # both labels are fraud
    assert second["accuracy"] == 0.5 and second["precision"] == 0.0
    assert report["overall"]["label_coverage"] == pytest.approx(4 / 6)
    assert report["overall"]["accuracy"] == pytest.approx(0.75)
    assert report["overall"]["roc_auc"] == 1.0


# CBPE against the truth on synthetic data. The label rule is known (`fraud_probability`), so
# covariate shift that keeps P(y|x) is made by drifting the inputs and drawing the labels again.


@pytest.fixture(scope="module")
def calibrated_model():
    """train.py's classifier on 30,000 rows, calibrated: isotonic, 5-fold, averaged.

    Raw HistGradientBoosting probabilities are not calibrated enough for CBPE under this shift:
    trees extrapolate flat into the sparse regions the shift fills, and the raw estimate was
    1.9 accuracy points optimistic here (1.9-2.2 over six data seeds), against 0.1 (at most 0.6
    over eight seeds) for this ensemble. `fit_calibrator` on 10,000 separate labelled rows,
    as training does with the hold-out, brings the raw model to 0.15-0.45 points (two seeds
    each of reference and data); this fixture keeps the calibration inside the model so these
    tests read its scores as they are.
    """
    schema = load_schema(PROJECT_ROOT / "schemas" / "fraud.yaml")
    train = coerce_frame(generate_transactions(30_000, seed=1), schema)
    # Same settings as training.train.make_classifier (importing it pulls in MLflow: seconds).
    classifier = HistGradientBoostingClassifier(
        learning_rate=0.1, max_iter=300, early_stopping=True, random_state=42
    )
    features = FeaturePipeline(schema).build(train)
    model = CalibratedClassifierCV(
        Pipeline([("features", features), ("classifier", classifier)]), method="isotonic", cv=5
    )
    # One thread: OpenMP spinning against other test processes on a small machine costs 10×.
    with threadpool_limits(1):
        return model.fit(train[schema.feature_names], train[schema.target].astype(int))


def scored(model, frame: pd.DataFrame, schema) -> pd.DataFrame:
    typed = coerce_frame(frame, schema)
    typed[SCORE_COLUMN] = model.predict_proba(typed[schema.feature_names])[:, 1]
    return typed


def covariate_shift(frame: pd.DataFrame, schema) -> pd.DataFrame:
    drifted = inject_drift(
        frame, "mean_shift", schema=schema, feature="amount", intensity=0.5, seed=3
    )
    drifted = inject_drift(
        drifted,
        "variance_change",
        schema=schema,
        feature="distance_from_home_km",
        intensity=0.5,
        seed=4,
    )
    # Stretching makes some distances negative, where the rule's log1p is NaN (never fraud): that
    # would change P(y|x). Clipping to the schema's min keeps every input valid for both.
    drifted["distance_from_home_km"] = drifted["distance_from_home_km"].clip(lower=0)
    drifted = inject_drift(
        drifted,
        "category_frequency_shift",
        schema=schema,
        feature="merchant_category",
        intensity=0.5,
        seed=5,
    )
    rng = np.random.default_rng(6)
    drifted[schema.target] = (rng.random(len(drifted)) < fraud_probability(drifted)).astype(int)
    return drifted


def compare(name: str, frame: pd.DataFrame, schema) -> tuple[dict, dict]:
    estimated = estimated_performance(frame[SCORE_COLUMN])
    realized = realized_performance(frame, schema, window="1D").overall
    print(f"\n{name}: estimated vs realized")
    for metric in METRICS:
        gap = estimated[metric] - realized[metric]
        print(f"  {metric:<9} {estimated[metric]:.4f} {realized[metric]:.4f} ({gap:+.4f})")
    return estimated, realized


@pytest.mark.slow
def test_estimate_tracks_covariate_shift_within_two_points(calibrated_model, fraud_schema):
    fresh = generate_transactions(20_000, seed=2)
    clean = scored(calibrated_model, fresh, fraud_schema)
    shifted = scored(calibrated_model, covariate_shift(fresh, fraud_schema), fraud_schema)
    clean_estimate, clean_realized = compare("no drift", clean, fraud_schema)
    estimate, realized = compare("covariate shift", shifted, fraud_schema)

    # The shift is real: about 3 times the fraud and 11 points less accuracy ...
    assert clean_realized["accuracy"] - realized["accuracy"] > 0.08
    # ... and the estimate follows it without a single label.
    assert abs(clean_estimate["accuracy"] - clean_realized["accuracy"]) <= 0.01
    assert abs(estimate["accuracy"] - realized["accuracy"]) <= 0.02
    assert abs(estimate["recall"] - realized["recall"]) <= 0.03
    assert abs(estimate["roc_auc"] - realized["roc_auc"]) <= 0.03


@pytest.mark.slow
def test_estimate_cannot_see_concept_drift(calibrated_model, fraud_schema):
    fresh = generate_transactions(20_000, seed=2)
    clean = scored(calibrated_model, fresh, fraud_schema)
    # Labels flip with probability 0.5 for amounts above the median; the inputs stay the same.
    drifted = scored(
        calibrated_model,
        inject_drift(fresh, "concept_drift", schema=fraud_schema, intensity=0.5, seed=7),
        fraud_schema,
    )
    clean_estimate, clean_realized = compare("no drift", clean, fraud_schema)
    estimate, realized = compare("concept drift", drifted, fraud_schema)

    assert clean_realized["accuracy"] - realized["accuracy"] > 0.15
    assert abs(estimate["accuracy"] - clean_estimate["accuracy"]) < 0.005
    # Once labels arrive, measuring the estimate against them exposes it.
    check = estimation_error(drifted, fraud_schema)
    assert check["labelled"] == 20_000
    assert check["error"]["accuracy"] > 0.15
    assert estimation_error(clean, fraud_schema)["error"]["accuracy"] == pytest.approx(0, abs=0.01)


def test_the_shipped_models_estimate_tracks_covariate_shift(default_training, fraud_schema):
    # The same check on the model `python -m training.train` ships, estimated as check_window
    # does: through the calibrator stored with the version. Measured over four data seeds: 0.2
    # to 0.4 accuracy points off under this shift (raw scores, whose hold-out ECE is about
    # 0.005: 0.6 to 0.8).
    settings, result = default_training
    registry = Registry.from_settings(settings)
    model = registry.load_model(result.version)
    calibrator = Calibrator.from_dict(registry.reference_profile(result.version).calibration)
    for seed in (2, 12):
        fresh = generate_transactions(20_000, seed=seed)
        frame = scored(model, covariate_shift(fresh, fraud_schema), fraud_schema)
        estimate = estimated_performance(frame[SCORE_COLUMN], calibrator=calibrator)
        realized = realized_performance(frame, fraud_schema, window="1D").overall
        assert abs(estimate["accuracy"] - realized["accuracy"]) <= 0.01
        assert abs(estimate["roc_auc"] - realized["roc_auc"]) <= 0.01


def test_calibration_makes_the_estimate_follow_miscalibrated_scores():
    """Scores that rank well but are overconfident (logit times three, shifted): read as
    probabilities they put the estimate 17 accuracy points off the truth; through an isotonic
    calibrator fitted on 10,000 labelled reference rows, within a point or so, also after
    the inputs moved (the current chunks are drawn from another distribution)."""
    rng = np.random.default_rng(0)

    def draw(rows: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        truth = rng.beta(a, b, rows)
        labels = (rng.random(rows) < truth).astype(int)
        served = 1 / (1 + np.exp(-3 * np.log(truth / (1 - truth)) + 1.0))
        return served, labels

    reference_scores, reference_labels = draw(10_000, 1, 3)
    calibrator = fit_calibrator(reference_scores, reference_labels)
    raw_errors, calibrated_errors = [], []
    for _ in range(10):
        scores, labels = draw(5_000, 2, 2)
        realized = ((scores >= 0.5) == labels).mean()
        raw_errors.append(abs(estimated_performance(scores)["accuracy"] - realized))
        estimate = estimated_performance(scores, calibrator=calibrator)["accuracy"]
        calibrated_errors.append(abs(estimate - realized))
    assert np.mean(raw_errors) > 0.12
    assert np.mean(calibrated_errors) < 0.02 and max(calibrated_errors) < 0.03


def test_a_calibrator_survives_its_stored_form_and_refuses_bad_references():
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    calibrator = fit_calibrator(scores, [0, 0, 1, 1, 1])
    again = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    probe = np.linspace(0, 1, 11)
    np.testing.assert_allclose(again(probe), calibrator(probe))
    from sklearn.isotonic import IsotonicRegression

    isotonic = IsotonicRegression(out_of_bounds="clip").fit(scores, [0, 0, 1, 1, 1])
    np.testing.assert_allclose(calibrator(probe), isotonic.predict(probe))
    with pytest.raises(ValueError, match="0 or 1"):
        fit_calibrator(scores, [0, 2, 1, 1, 1])
    with pytest.raises(ValueError, match="same length"):
        fit_calibrator(scores, [0, 1])


def test_each_row_counts_with_the_version_that_answered_it(fraud_schema):
    # A window that straddles a promotion: v1 answered at 0.5, v2 at 0.2. The log holds the
    # class each answered; realized figures read it, the estimate reads each version's threshold
    # and calibrator, and both are also given per version.
    frame = log_frame(
        fraud_schema, hours(0.1, 0.2, 0.3, 0.4), [0.3, 0.6, 0.3, 0.6], [1, 0, 1, 0]
    ).assign(model_version=["1", "1", "2", "2"], **{fraud_schema.prediction: [0, 1, 1, 1]})
    realized = realized_performance(frame, fraud_schema, window="1h", threshold=0.5)
    # v1: 0.3 -> 0 (label 1, wrong), 0.6 -> 1 (label 0, wrong); v2: 0.3 -> 1 (right), 0.6 -> 1.
    assert realized.by_version["1"]["accuracy"] == 0.0
    assert realized.by_version["2"]["accuracy"] == 0.5
    assert realized.overall["accuracy"] == 0.25
    assert realized.to_dict()["by_version"]["2"]["labelled"] == 2

    halves = Calibrator((0.0, 1.0), (0.5, 0.5))  # every row: p = 0.5
    estimated = estimated_performance_by_window(
        frame, fraud_schema, window="1h", threshold=0.5, versions={"2": (0.2, halves)}
    )
    # v1 raw at 0.5: 0.3 -> negative (p 0.3), 0.6 -> positive (p 0.6): expected correct 0.7 + 0.6.
    assert estimated.by_version["1"]["accuracy"] == pytest.approx((0.7 + 0.6) / 2)
    # v2 at 0.2 with p = 0.5: both positive, each half right.
    assert estimated.by_version["2"]["accuracy"] == pytest.approx(0.5)
    assert estimated.overall["accuracy"] == pytest.approx((0.7 + 0.6 + 0.5 + 0.5) / 4)
