"""A model version is loaded only if the project trusts it: skops with known types, a sane
decision threshold. Against a real MLflow registry and the app in-process: a refused version is
named with the reason in /model, /ready and /model/reload, counted, and the version served before
keeps answering."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import skops.io
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.base import BaseEstimator, TransformerMixin

from api.main import create_app
from data.synthetic import generate_transactions
from tools.testkit.databases import store_settings
from tools.testkit.traffic import ADMIN, configure, request_rows
from training.pipeline import configure_mlflow
from training.registry import (
    CHAMPION,
    HOLDOUT_ARTIFACT,
    THRESHOLD_TAG,
    ModelRefused,
    Registry,
    decision_threshold,
)
from training.train import train


class Sneaky(BaseEstimator, TransformerMixin):
    """A class of no trusted library: a skops file holding it could hold anything."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


SNEAKY = f"{Sneaky.__module__}.{Sneaky.__qualname__}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A registry whose v1 is a trained, promoted model."""
    var = tmp_path_factory.mktemp("trust-store")
    settings = store_settings(var)
    data = var / "data.parquet"
    generate_transactions(8_000, seed=5).to_parquet(data)
    assert train(data_path=data, settings=settings, seed=1).version == "1"
    Registry.from_settings(settings).set_alias(CHAMPION, "1")
    return settings


@pytest.fixture
def registry(store):
    registry = Registry.from_settings(store)
    yield registry
    registry.set_alias(CHAMPION, "1")  # the next test starts from v1 again


def log_version(store, registry: Registry, *, sneaky: bool = False, **log_kwargs) -> str:
    """v1's pipeline logged again as a new version (as training logs one, its own MLmodel
    trusting every type it holds), with v1's hold-out beside it."""
    model = registry.load_model("1")
    if sneaky:
        model.sneaky = Sneaky()  # kept by skops with the pipeline's attributes
    v1 = registry.version("1")
    configure_mlflow(store)
    with mlflow.start_run(), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(registry.client.download_artifacts(v1.run_id, HOLDOUT_ARTIFACT, tmp))
        if log_kwargs.get("serialization_format") != "pickle":
            types = skops.io.get_untrusted_types(data=skops.io.dumps(model))
            log_kwargs["skops_trusted_types"] = types
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=store.MODEL_NAME, **log_kwargs
        )
    version = str(info.registered_model_version)
    registry.tag_version(version, {THRESHOLD_TAG: v1.tags[THRESHOLD_TAG]})
    return version


def copy_of_v1(registry: Registry, threshold: str) -> str:
    """A new version of v1's very artifact whose decision threshold tag says `threshold`."""
    v1 = registry.client.get_model_version(registry.model_name, "1")
    made = registry.client.create_model_version(
        registry.model_name, v1.source, run_id=v1.run_id, tags={THRESHOLD_TAG: threshold}
    )
    return str(made.version)


def refused_count(api: TestClient, kind: str) -> float:
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "ml_model_refused_total" and sample.labels["kind"] == kind:
                return sample.value
    raise AssertionError("ml_model_refused_total is not exported")


def champion_refused(api: TestClient) -> float:
    """`ml_model_champion_refused`: what MLChampionRefused reads (the counter above says a
    refusal happened; this says @champion still points at the refused version)."""
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "ml_model_champion_refused":
                return sample.value
    raise AssertionError("ml_model_champion_refused is not exported")


def assert_refused_and_v1_serves(api: TestClient, version: str, kind: str, words: list[str]):
    answer = api.post("/model/reload", headers=ADMIN)
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert f"version {version} refused" in detail and "still serving v1" in detail
    assert all(word in detail for word in words), detail
    rows = request_rows_cache()
    served = api.post("/predict", json={"features": rows[0]})
    assert served.status_code == 200 and served.json()["model_version"] == "1"
    model = api.get("/model").json()
    assert model["model_version"] == "1"
    assert model["refused"]["version"] == version and model["refused"]["kind"] == kind
    assert all(word in model["refused"]["reason"] for word in words)
    ready = api.get("/ready")
    assert ready.status_code == 200 and ready.json()["refused"]["version"] == version
    assert refused_count(api, kind) >= 1
    before = refused_count(api, kind)
    assert api.post("/model/reload", headers=ADMIN).status_code == 409  # asked again: tried
    assert refused_count(api, kind) == before + 1


_ROWS: list = []


def request_rows_cache():
    if not _ROWS:
        from data.schema import load_schema
        from tools.testkit.databases import FRAUD_SCHEMA_PATH

        _ROWS.extend(request_rows(load_schema(FRAUD_SCHEMA_PATH), 5))
    return _ROWS


@pytest.fixture
def api(monkeypatch, store, tmp_path, registry):
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path)
    with TestClient(create_app()) as client:
        assert client.get("/model").json()["model_version"] == "1"
        yield client


def test_a_skops_file_holding_an_untrusted_type_is_refused_and_v1_keeps_serving(
    api, store, registry
):
    # Before: MLflow loaded it with the trusted list its own MLmodel file names, so a version
    # could trust any type it liked (and a crafted one, run code at load).
    version = log_version(store, registry, sneaky=True)
    registry.set_alias(CHAMPION, version)
    assert_refused_and_v1_serves(api, version, "untrusted_type", [SNEAKY, "MODEL_TRUSTED_TYPES"])


def test_a_pickled_version_is_refused(api, store, registry):
    version = log_version(store, registry, serialization_format="pickle")
    registry.set_alias(CHAMPION, version)
    assert_refused_and_v1_serves(api, version, "serialization", ["'pickle'", "skops"])


@pytest.mark.parametrize("threshold", ["nan", "2", "abc", "0", "1", "-0.5", "inf"])
def test_a_decision_threshold_outside_0_1_is_refused(api, registry, threshold):
    # Before: "nan" served every score as class 0, "2" the same, "abc" failed every reload
    # with a bare "could not convert string to float".
    version = copy_of_v1(registry, threshold)
    registry.set_alias(CHAMPION, version)
    assert_refused_and_v1_serves(api, version, "threshold", [THRESHOLD_TAG, repr(threshold)])


def test_the_poller_keeps_the_served_version_says_why_once_and_moves_on(
    monkeypatch, store, registry, tmp_path
):
    configure(
        monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path, MODEL_POLL_SECONDS=0.1
    )
    bad = copy_of_v1(registry, "nan")
    good = copy_of_v1(registry, "0.4")
    rows = request_rows_cache()
    with TestClient(create_app()) as api:
        before = refused_count(api, "threshold")  # the counter lives as long as the process
        assert champion_refused(api) == 0
        registry.set_alias(CHAMPION, bad)
        deadline = time.monotonic() + 15
        while (api.get("/ready").json().get("refused") or {}).get("version") != bad:
            assert time.monotonic() < deadline, "the poller did not refuse the bad version"
            time.sleep(0.1)
        time.sleep(0.5)  # several polls: the refusal is not tried (nor counted) again
        assert refused_count(api, "threshold") == before + 1
        assert champion_refused(api) == 1  # for as long as @champion points at it
        assert api.post("/predict", json={"features": rows[0]}).json()["model_version"] == "1"
        registry.set_alias(CHAMPION, good)
        while api.get("/model").json()["model_version"] != good:
            assert time.monotonic() < deadline, "the poller did not load the good version"
            time.sleep(0.1)
        assert api.get("/model").json()["refused"] is None
        assert champion_refused(api) == 0
        assert api.get("/model").json()["decision_threshold"] == 0.4


def test_a_type_named_in_model_trusted_types_is_loaded(monkeypatch, store, registry, tmp_path):
    version = log_version(store, registry, sneaky=True)
    registry.set_alias(CHAMPION, version)
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path,
              MODEL_TRUSTED_TYPES=f"some.other.Type, {SNEAKY}")  # fmt: skip
    with TestClient(create_app()) as api:
        assert api.get("/model").json() | {"refused": None} == api.get("/model").json()
        assert api.get("/model").json()["model_version"] == version
        answer = api.post("/predict", json={"features": request_rows_cache()[0]})
        assert answer.status_code == 200 and answer.json()["model_version"] == version


def test_a_refused_champion_at_start_is_why_the_api_is_not_ready(
    monkeypatch, store, registry, tmp_path
):
    registry.set_alias(CHAMPION, copy_of_v1(registry, "abc"))
    configure(monkeypatch, store, f"sqlite:///{tmp_path / 'api.db'}", tmp_path)
    with TestClient(create_app()) as api:
        ready = api.get("/ready")
        assert ready.status_code == 503
        assert THRESHOLD_TAG in ready.json()["detail"] and ready.json()["refused"]["kind"] == (
            "threshold"
        )
        answer = api.post("/predict", json={"features": request_rows_cache()[0]})
        assert answer.status_code == 503 and "refused" in answer.json()["detail"]


def test_the_project_models_load_without_extra_trusted_types(store, tmp_path):
    """Both model types training fits hold only types of the project's list."""
    settings = store_settings(tmp_path)
    data = tmp_path / "data.parquet"
    generate_transactions(4_000, seed=2).to_parquet(data)
    result = train(data_path=data, settings=settings.model_copy(update={"MODEL_TYPE":
                   "random_forest"}), auto_promote=True)  # fmt: skip
    assert Registry.from_settings(settings).load_model(result.version) is not None
    assert decision_threshold("1", {}) == 0.5
    with pytest.raises(ModelRefused, match="strictly between 0 and 1"):
        decision_threshold("1", {THRESHOLD_TAG: "nan"})


def test_a_folder_that_is_not_a_model_is_refused(tmp_path):
    from training.registry import PROJECT_TRUSTED_TYPES, load_trusted

    with pytest.raises(ModelRefused, match="MLmodel"):
        load_trusted(Path(tmp_path), "9", PROJECT_TRUSTED_TYPES)
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function: {}\n")
    with pytest.raises(ModelRefused, match="no sklearn flavor"):
        load_trusted(Path(tmp_path), "9", PROJECT_TRUSTED_TYPES)
