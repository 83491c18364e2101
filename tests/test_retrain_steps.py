"""The training DAG's steps in-process (`monitoring.retrain.loop`, `training.pipeline`), on the
paths the loop test does not take: a weekly run with no labels yet, and a candidate the gates
reject."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from data.settings import get_settings
from monitoring.retrain import loop
from tools.testkit.http_sink import running_sink
from training import pipeline
from training.registry import CHAMPION, Registry
from training.runs import training_run

SLACK = "/slack/T1/B1/Y"


def test_a_rejected_candidate_is_said_with_the_gates_numbers_and_the_champion_stays(
    monkeypatch, isolated_settings
):
    from training.train import train

    first = train(rows=20_000, auto_promote=True)
    assert first.action == "promoted", first.gates.to_dict()
    data = isolated_settings / "data" / "transactions-20000-42.parquet"
    with running_sink() as sink:
        monkeypatch.setenv("TRAINING_DATA", str(data))
        monkeypatch.setenv("GATE_MIN_ROC_AUC", "0.999")  # no model reaches it
        monkeypatch.setenv("SLACK_WEBHOOK_URL", sink.url + SLACK)
        get_settings.cache_clear()

        settings = get_settings()
        run = loop.begin(
            {}, dag_run_id="scheduled__2026-03-01T03:00:00+00:00",
            logical_end=datetime(2026, 3, 1, 3, tzinfo=UTC), scheduled=True, settings=settings,
        )  # fmt: skip
        assert (run["trigger"], run["reason"]) == ("schedule", "weekly retrain")
        ingested = pipeline.ingest(run, settings)
        # No feedback has arrived: the original data alone, and the summary says so.
        assert ingested["recent_rows"] == 0 and "original data only" in ingested["note"]
        assert pipeline.validate(run, settings)["passed"] is True
        pipeline.fit(run, settings)
        metrics = pipeline.evaluate(run, settings)
        version = pipeline.register(run, settings)
        report = pipeline.gate(run, version, settings)
        assert report["gates"]["performance_floor"]["passed"] is False
        assert loop.conclude(run, version, report, settings) == "rejected"

        assert Registry.from_settings().alias(CHAMPION).version == first.version
        closed = training_run(run["training_run_id"])
        assert (closed["status"], closed["version"], closed["trigger"]) == (
            "rejected", version, "schedule")  # fmt: skip
        assert closed["details"]["gates"]["passed"] is False
        said = [json.dumps(request.body) for request in sink.at(SLACK)]
        assert len(said) == 2 and "weekly retrain" in said[0]
        assert "performance_floor" in said[1] and f"{metrics['roc_auc']:.4f}"[:5] in said[1]


def test_a_window_that_ends_before_it_starts_is_one_clear_error():
    with pytest.raises(ValueError, match=r"data_start .* is not before data_end"):
        loop.begin(
            {"data_start": "2026-03-02T00:00:00Z", "data_end": "2026-03-01T00:00:00Z"},
            dag_run_id="manual__1", logical_end=datetime(2026, 3, 2, tzinfo=UTC),
            settings=get_settings(),
        )  # fmt: skip
