"""Registry: each gate passing and failing; promote, reject, rollback, history; the audit table."""

from __future__ import annotations

import json

import mlflow
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sqlalchemy import select

from data.db import get_engine, promotion_audit
from data.db import main as db_cli
from data.features import FeaturePipeline
from data.ingest import coerce_frame
from data.settings import get_settings
from data.synthetic import generate_transactions
from monitoring.window_checks import main as window_checks_cli
from tools.testkit.databases import store_settings
from training.gates import decide, run_gates
from training.pipeline import configure_mlflow, log_servable_model, time_split
from training.register_model import main as registry_cli
from training.registry import (
    CHALLENGER,
    CHAMPION,
    Registry,
    RegistryError,
    promote,
    rollback,
)
from training.train import main as train_cli
from training.train import train

ROWS = 20_000


@pytest.fixture(scope="module")
def data(fraud_schema_module):
    frame = coerce_frame(generate_transactions(ROWS, seed=11), fraud_schema_module)
    return time_split(frame, fraud_schema_module, 0.25)


@pytest.fixture(scope="module")
def fraud_schema_module():
    from data.schema import load_schema
    from tools.testkit.databases import FRAUD_SCHEMA_PATH

    return load_schema(FRAUD_SCHEMA_PATH)


@pytest.fixture(scope="module")
def gate_store(tmp_path_factory, data, fraud_schema_module):
    """A registry whose champion (v1) is a good model trained on `data`."""
    settings = store_settings(tmp_path_factory.mktemp("gates"))
    path = tmp_path_factory.mktemp("gate-data") / "train.parquet"
    generate_transactions(ROWS, seed=11).to_parquet(path)
    result = train(data_path=path, settings=settings, auto_promote=True, holdout_fraction=0.25)
    assert result.action == "promoted"
    return settings


def register(settings, schema, train_frame, classifier) -> str:
    """Log and register a pipeline around `classifier`, as training does, without the gates."""
    features = FeaturePipeline(schema).fit(train_frame)
    classifier.fit(features.transform(train_frame), train_frame[schema.target].astype(int))
    model = Pipeline([("features", features.column_transformer), ("classifier", classifier)])
    configure_mlflow(settings)
    with mlflow.start_run():
        return log_servable_model(model, train_frame[schema.feature_names], settings)


def gates_for(settings, schema, data, classifier, validation_passed=True):
    train_frame, holdout = data
    version = register(settings, schema, train_frame, classifier)
    registry = Registry.from_settings(settings)
    report = run_gates(
        registry, version, holdout, schema, validation_passed=validation_passed, settings=settings
    )
    return registry, version, {g.name: g for g in report.gates}, report


def test_good_candidate_passes_every_gate(gate_store, fraud_schema_module, data):
    registry, version, gates, report = gates_for(
        gate_store, fraud_schema_module, data, HistGradientBoostingClassifier(random_state=1)
    )
    assert report.passed, report.to_dict()
    assert gates["no_regression"].detail["champion_version"] == "1"
    tags = registry.version(version).tags
    assert tags["gates.passed"] == "true"
    detail = json.loads(tags["gate.no_regression.detail"])
    assert set(detail["candidate"]) == {"roc_auc", "pr_auc"}


def test_floor_gate_fails_below_the_floor(gate_store, fraud_schema_module, data):
    settings = gate_store.model_copy(update={"GATE_MIN_ROC_AUC": 0.999})
    registry, version, gates, report = gates_for(
        settings, fraud_schema_module, data, HistGradientBoostingClassifier(random_state=2)
    )
    assert not gates["performance_floor"].passed
    assert (
        "roc_auc" in gates["performance_floor"].reason
        and "< 0.999" in gates["performance_floor"].reason
    )
    assert registry.version(version).tags["gate.performance_floor"] == "failed"

    # Rejected: an audit row, and the champion does not move.
    assert decide(registry, report, auto_promote=True) == "rejected"
    assert registry.alias(CHAMPION).version == "1"
    last = registry.audit_rows(1)[0]
    assert (last["version"], last["action"]) == (version, "rejected")
    assert "performance_floor" in last["reason"]


def test_regression_gate_fails_against_a_better_champion(gate_store, fraud_schema_module, data):
    settings = gate_store.model_copy(
        update={"GATE_MIN_ROC_AUC": 0.0, "GATE_MIN_PR_AUC": 0.0, "GATE_MIN_F1": 0.0}
    )
    stump = HistGradientBoostingClassifier(max_iter=3, max_depth=1, random_state=3)
    _, _, gates, report = gates_for(settings, fraud_schema_module, data, stump)
    assert gates["performance_floor"].passed
    assert not gates["no_regression"].passed
    assert "worse than the champion by more than 2%" in gates["no_regression"].reason
    assert not report.passed


def test_operational_gate_latency(gate_store, fraud_schema_module, data):
    settings = gate_store.model_copy(update={"GATE_LATENCY_BUDGET_MS": 0.001})
    _, _, gates, _ = gates_for(
        settings, fraud_schema_module, data, HistGradientBoostingClassifier(random_state=4)
    )
    assert not gates["operational"].passed
    assert "single-row latency p50" in gates["operational"].reason
    detail = gates["operational"].detail
    assert detail["scorer"] == "compiled" and 1 < detail["latency_p50_us"] < 1_000


def test_operational_gate_validation_and_calibration(gate_store, fraud_schema_module, data):
    # class_weight="balanced" keeps the ranking but inflates fraud probabilities: worse Brier.
    skewed = HistGradientBoostingClassifier(class_weight="balanced", random_state=5)
    _, _, gates, _ = gates_for(
        gate_store, fraud_schema_module, data, skewed, validation_passed=False
    )
    reason = gates["operational"].reason
    assert not gates["operational"].passed
    assert "training data failed validation" in reason
    assert "calibration worse: Brier" in reason


def audit_actions(url: str, model_name: str) -> list[tuple[str, str]]:
    query = (
        select(promotion_audit.c.version, promotion_audit.c.action)
        .where(promotion_audit.c.model_name == model_name)
        .order_by(promotion_audit.c.id)
    )
    with get_engine(url).connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def test_challenger_promote_rollback_and_history(database_url, monkeypatch, tmp_path, capsys):
    """The whole life of two versions through the CLI, audited in SQLite and in Postgres."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    settings = get_settings()
    data_path = tmp_path / "data.parquet"
    generate_transactions(ROWS, seed=21).to_parquet(data_path)

    first = train(data_path=data_path, settings=settings, seed=1)
    assert first.action == "challenger"  # AUTO_PROMOTE is false by default
    registry = Registry.from_settings(settings)
    assert registry.alias(CHAMPION) is None
    assert registry.alias(CHALLENGER).version == "1"

    # A person promotes the challenger.
    assert registry_cli(["promote", "--actor", "alice"]) == 0
    assert "v1 is now @champion" in capsys.readouterr().out
    assert registry.alias(CHAMPION).version == "1"
    assert registry.alias(CHALLENGER) is None

    # The next version passes the gates against v1 and is promoted automatically.
    # Same data and seed: an equally good model, so the regression gate must let it through.
    second = train(data_path=data_path, settings=settings, seed=1, auto_promote=True)
    assert second.action == "promoted", second.gates.to_dict()
    assert registry.alias(CHAMPION).version == "2"

    # Rollback moves the alias back; rolling "back" to a newer version is refused.
    assert registry_cli(["rollback", "--to-version", "1", "--reason", "bad alerts"]) == 0
    assert registry.alias(CHAMPION).version == "1"
    assert registry_cli(["rollback", "--to-version", "2"]) == 2
    assert "not earlier" in capsys.readouterr().err

    assert audit_actions(database_url, settings.MODEL_NAME) == [
        ("1", "challenger"),
        ("1", "promoted"),
        ("2", "promoted"),
        ("1", "rollback"),
    ]
    rows = registry.audit_rows()
    assert rows[0]["reason"] == "bad alerts" and rows[0]["previous_champion"] == "2"
    assert rows[-1]["actor"] == "training"
    assert rows[2]["actor"] == "alice" and rows[2]["previous_champion"] is None
    assert rows[1]["gates"]["no_regression"]["champion_version"] == "1"

    assert registry_cli(["history", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["aliases"] == {CHAMPION: "1", CHALLENGER: None}
    assert [(v["version"], v["aliases"]) for v in shown["versions"]] == [
        ("2", []),
        ("1", [CHAMPION]),
    ]
    actions = [a["action"] for a in shown["audit"]]
    assert actions == ["rollback", "promoted", "promoted", "challenger"]
    assert registry_cli(["history"]) == 0
    text = capsys.readouterr().out
    assert "@champion = v1" in text and "rollback" in text and "by alice" in text


def test_forced_promotion_of_a_failed_version_is_audited(gate_store, fraud_schema_module, data):
    settings = gate_store.model_copy(update={"GATE_MIN_ROC_AUC": 0.999})
    registry, version, _, report = gates_for(
        settings, fraud_schema_module, data, HistGradientBoostingClassifier(random_state=6)
    )
    assert not report.passed
    with pytest.raises(RegistryError, match="gates failed; use --force"):
        promote(registry, version, actor="bob")
    promote(registry, version, actor="bob", reason="hotfix for incident 42", force=True)
    assert registry.alias(CHAMPION).version == version
    assert registry.audit_rows(1)[0]["reason"] == "forced: hotfix for incident 42"
    rollback(registry, "1", actor="bob")
    assert registry.alias(CHAMPION).version == "1"


def test_empty_registry_gives_clear_errors(capsys):
    for argv, expected in [
        (["history"], "no registered model named 'fraud-detector'"),
        (["promote"], "no registered model named 'fraud-detector'"),
        (["rollback", "--to-version", "1"], "no registered model named 'fraud-detector'"),
        (["promote", "--version", "1", "--force"], "--force needs a --reason"),
    ]:
        assert registry_cli(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and "Traceback" not in err


def test_registry_without_champion_or_challenger(tmp_path, capsys, monkeypatch):
    settings = store_settings(tmp_path)
    data_path = tmp_path / "d.parquet"
    generate_transactions(ROWS, seed=31).to_parquet(data_path)
    strict = settings.model_copy(update={"GATE_MIN_ROC_AUC": 0.999})
    assert train(data_path=data_path, settings=strict).action == "rejected"
    for name, value in {
        "DATABASE_URL": settings.DATABASE_URL,
        "MLFLOW_TRACKING_URI": settings.MLFLOW_TRACKING_URI,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    assert registry_cli(["rollback", "--to-version", "1"]) == 2
    assert "has no @champion yet" in capsys.readouterr().err
    assert registry_cli(["promote"]) == 2
    assert "has no @challenger to promote" in capsys.readouterr().err
    assert registry_cli(["promote", "--version", "7"]) == 2
    assert "has no version 7" in capsys.readouterr().err


DOWN = "postgresql+psycopg2://postgres:secret@127.0.0.1:1/monitoring"


@pytest.mark.parametrize(
    "command",
    [
        lambda: registry_cli(["history"]),
        lambda: train_cli(["--rows", "3000"]),
        lambda: window_checks_cli([]),
        lambda: db_cli([]),
    ],
    ids=["register_model history", "train", "window_checks", "data.db"],
)
def test_database_down_is_one_line_naming_it(monkeypatch, capsys, command):
    # These commands used to end in a SQLAlchemy traceback when DATABASE_URL was unreachable.
    monkeypatch.setenv("DATABASE_URL", DOWN)
    get_settings.cache_clear()
    assert command() == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: the database postgresql+psycopg2://postgres:***@127.0.0.1:1")
    assert "Connection refused" in err and "secret" not in err


def test_building_a_registry_touches_nothing(tmp_path):
    """The API and the exporter build a Registry only to read aliases: it must not create
    tables in their database (it used to create every table on construction)."""
    from sqlalchemy import create_engine, inspect

    url = f"sqlite:///{tmp_path / 'untouched.db'}"
    settings = store_settings(tmp_path, DATABASE_URL=url)
    registry = Registry.from_settings(settings)
    assert registry.alias(CHAMPION) is None
    assert inspect(create_engine(url)).get_table_names() == []
    assert registry.audit_rows() == []  # the audit table appears when it is first used
    assert "promotion_audit" in inspect(create_engine(url)).get_table_names()


def test_importing_the_api_loads_neither_matplotlib_nor_the_gates():
    import subprocess
    import sys

    from data.settings import PROJECT_ROOT

    code = (
        "import sys, api.main; "
        "print(sorted(m for m in ('matplotlib', 'training.gates', 'training.evaluate') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
