"""The operational gate times the scorer the API will serve, and a model that cannot be
compiled says so everywhere: in the gate's detail, in `/model` and in `ml_model_info`."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from tools.testkit.databases import store_settings
from tools.testkit.traffic import configure
from training.registry import Registry, promote
from training.train import train


def test_the_default_model_is_gated_on_its_compiled_scorer(default_training):
    _, trained = default_training
    detail = trained.gates.to_dict()["gates"]["operational"]
    # The compiled scorer takes tens of microseconds; predict_proba on one row took 3-13 ms,
    # so a gate timing it could not tell a model that compiles from one that does not.
    assert detail["scorer"] == "compiled"
    assert 1 < detail["latency_p50_us"] < 1_000


def test_a_random_forest_falls_back_to_the_pipeline_and_says_so(monkeypatch, tmp_path):
    store = store_settings(tmp_path / "store", MODEL_NAME="rf-fallback")
    (tmp_path / "store").mkdir()
    trained = train(settings=store, rows=6_000, model_type="random_forest", auto_promote=False)
    detail = trained.gates.to_dict()["gates"]["operational"]
    assert detail["scorer"] == "pipeline"
    assert detail["latency_p50_us"] > 1_000  # sklearn on a one-row DataFrame: milliseconds

    registry = Registry.from_settings(store)
    promote(registry, trained.version, actor="test", reason="scorer fallback test", force=True)
    configure(
        monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path, MODEL_NAME="rf-fallback"
    )
    with TestClient(create_app()) as client:
        assert client.get("/model").json()["scorer"] == "pipeline"
        text = client.get("/metrics").text
    served = [
        sample.labels["scorer"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ml_model_info"
        and sample.value == 1
        and sample.labels["model_name"] == "rf-fallback"  # metrics are per process, not per test
    ]
    assert served == ["pipeline"]
