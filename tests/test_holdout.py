"""The gates' hold-out in a retrain: labelled rows the candidate's training never saw.

`training.pipeline.ingest` splits the labelled predictions of the retrain's window by prediction
time: the newest share is the hold-out the gates score candidate and champion on, the rest
(with a sample of the original data) is what the candidate learns from. Checked here on real
Postgres with labels that arrived late and were changed after the fact, as /feedback stores
them: the split follows prediction time, not label arrival, so no labelled row is on both sides
and relabelling an old row cannot move it into the hold-out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import insert, update

from data.db import get_engine, init_db, labels, prediction_logs
from data.replay import request_instances
from data.settings import get_settings
from data.synthetic import generate_transactions, write_frame
from training import pipeline

pytestmark = pytest.mark.postgres

START = datetime(2026, 5, 1, tzinfo=UTC)
ROWS, LABELLED = 2_000, 1_800


def test_the_holdout_is_labelled_rows_the_retrain_never_trains_on(
    monkeypatch, postgres_url, tmp_path, fraud_schema
):
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    settings = get_settings()
    base = write_frame(generate_transactions(5_000, seed=42), tmp_path / "base.parquet")
    logged = generate_transactions(ROWS, seed=11)
    instances = request_instances(logged, fraud_schema)
    predicted_at = {inst["request_id"]: START + i * timedelta(minutes=2)
                    for i, inst in enumerate(instances)}  # fmt: skip
    rows = [
        {"request_id": inst["request_id"], "predicted_at": predicted_at[inst["request_id"]],
         "model_name": "fraud-detector", "model_version": "1", "features": inst["features"],
         "predicted_class": 0, "score": 0.1, "latency_ms": 1.0}
        for inst in instances
    ]  # fmt: skip
    # Labels arrive in no order of prediction time (the newest first here), some never.
    truth = [
        {"request_id": inst["request_id"], "label": int(logged["is_fraud"].iloc[i]),
         "labelled_at": START + timedelta(days=10) - i * timedelta(minutes=1),
         "received_at": START + timedelta(days=10) - i * timedelta(minutes=1), "source": "tests"}
        for i, inst in enumerate(instances[:LABELLED])
    ]  # fmt: skip
    engine = get_engine(postgres_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(insert(prediction_logs), rows)
        conn.execute(insert(labels), truth)
        # The oldest labels changed last (a source correcting them): received most recently.
        conn.execute(
            update(labels)
            .where(labels.c.request_id.in_([t["request_id"] for t in truth[:100]]))
            .values(label=1 - labels.c.label, received_at=START + timedelta(days=20))
        )

    plan = pipeline.TrainingPlan(
        folder=str(tmp_path / "runs" / "retrain"), schema=settings.FEATURE_SCHEMA,
        model_type=settings.MODEL_TYPE, data_path=str(base),
        data_start=START.isoformat(), data_end=(START + timedelta(days=30)).isoformat(),
    )  # fmt: skip
    summary = pipeline.ingest(plan, settings)
    folder = plan.run_folder
    train, holdout = pd.read_parquet(folder.train), pd.read_parquet(folder.holdout)
    assert summary["recent_rows"] == LABELLED

    # A fifth of the labelled rows is held out, and none of them is trained on.
    ids = fraud_schema.id
    assert len(holdout) == LABELLED // 5 and holdout[ids].is_unique
    assert set(holdout[ids]).isdisjoint(train[ids])
    recent_train = train[train[ids].isin(predicted_at)]
    assert len(recent_train) == LABELLED - len(holdout)
    assert len(train) == len(recent_train) + summary["base_sample_rows"]  # + the old data
    # The hold-out is the newest by prediction time: every trained row was predicted before it.
    newest_trained = max(predicted_at[rid] for rid in recent_train[ids])
    assert min(predicted_at[rid] for rid in holdout[ids]) > newest_trained
    assert set(holdout[ids]) == {
        inst["request_id"] for inst in instances[LABELLED - 360 : LABELLED]
    }
    # Relabelled rows (the oldest predictions, the latest labels) stay on the training side.
    assert set(holdout[ids]).isdisjoint(t["request_id"] for t in truth[:100])
