"""The loop closes: drift in served traffic → the drift-check DAG → training → a new champion.

One test drives the whole loop on real parts: the API as production runs it (`api.serve`,
polling `@champion`), real Postgres for the log and the reports, a real MLflow registry, and
real Airflow 3 running the project's DAG files (`dag.test()`, each step in its own process, see
tools/testkit/airflow_run.py). Slack and PagerDuty are a local HTTP sink.

Six-hour windows cannot pass in a test, so after each phase of traffic is logged through the
API its rows are moved into the phase's own six-hour slot in the past (as if it had been served
then); every DAG run is given the logical date whose data interval is that slot. Everything
downstream (checks, policy, cooldown, training window) runs on those logical times, as in
production.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest
from sqlalchemy import bindparam, create_engine, func, select, update

from data.db import drift_reports, prediction_logs, retrain_decisions, training_runs
from data.drift_injector import inject_drift
from data.replay import replay, wait_until_ready
from data.schema import load_schema
from data.settings import PROJECT_ROOT, get_settings
from data.synthetic import generate_transactions, write_frame
from tools.testkit.airflow_run import AirflowHome
from tools.testkit.api_server import ServerProcess
from tools.testkit.http_sink import running_sink
from tools.testkit.traffic import LABEL_TOKENS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SLOT = timedelta(hours=6)
SLACK, PAGERDUTY = "/slack/T000/B000/XXXX", "/pagerduty/v2/enqueue"


def move_into_slot(engine, request_ids: list[str], start: datetime) -> None:
    """Spread these logged rows evenly over [start, start + 6 h), in the order they came."""
    step = SLOT / (len(request_ids) + 1)
    moves = [{"rid": rid, "at": start + step * (i + 1)} for i, rid in enumerate(request_ids)]
    statement = (
        update(prediction_logs)
        .where(prediction_logs.c.request_id == bindparam("rid"))
        .values(predicted_at=bindparam("at"))
    )
    with engine.begin() as conn:
        conn.execute(statement, moves)


def serve_phase(api: ServerProcess, engine, frame: pd.DataFrame, schema, slot_start) -> None:
    """Send `frame` with its labels through the API; once logged, move it into its slot."""
    sent = replay(frame, schema, api.url, labels=True)
    assert sent["predictions"] == sent["labels"] == len(frame)
    ids = frame[schema.id].astype(str).tolist()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            logged = conn.execute(
                select(func.count()).where(prediction_logs.c.request_id.in_(ids))
            ).scalar_one()
        if logged == len(ids):
            break
        time.sleep(0.3)
    assert logged == len(ids), "the API did not log every prediction"
    move_into_slot(engine, ids, slot_start)


def shift_distance(frame: pd.DataFrame, schema, seed: int) -> pd.DataFrame:
    """The new world's covariate shift: transactions one std. dev. farther from home."""
    return inject_drift(
        frame, "mean_shift", schema=schema, feature="distance_from_home_km", intensity=0.5,
        seed=seed,
    )  # fmt: skip


def served_version(api: ServerProcess) -> str | None:
    return httpx.get(f"{api.url}/health", timeout=5).json()["model_version"]


def accuracy(version: str, frame: pd.DataFrame, schema, settings) -> float:
    from training.registry import Registry

    model = Registry.from_settings(settings).load_model(version)
    threshold = Registry.from_settings(settings).version(version).threshold
    scores = model.predict_proba(frame[schema.feature_names])[:, 1]
    return float(((scores >= threshold).astype(int) == frame[schema.target]).mean())


def test_drift_in_served_traffic_retrains_and_the_api_serves_the_new_champion(
    tmp_path, monkeypatch, postgres_url
):
    schema = load_schema(PROJECT_ROOT / "schemas" / "fraud.yaml")
    var = tmp_path / "var"
    base_data = write_frame(generate_transactions(20_000, seed=42), var / "base.parquet")
    with running_sink() as sink:
        env = {
            "ENVIRONMENT": "development",
            "DATABASE_URL": postgres_url,
            "MLFLOW_TRACKING_URI": f"sqlite:///{var / 'mlflow.db'}",
            "MLFLOW_ARTIFACT_ROOT": str(var / "mlartifacts"),
            "DATA_DIR": str(var / "data"),
            "TRAINING_DATA": str(base_data),
            "AUTO_PROMOTE": "true",
            "RETRAIN_COOLDOWN_HOURS": "12",
            "RETRAIN_MIN_LABELLED_ROWS": "1000",
            "MODEL_POLL_SECONDS": "1",
            "PREDICTION_SPOOL_DIR": str(var / "spool"),
            "LABEL_TOKENS": LABEL_TOKENS,
            "SLACK_WEBHOOK_URL": sink.url + SLACK,
            "PAGERDUTY_ROUTING_KEY": "test-routing-key-0123456789abcdef",
            "PAGERDUTY_EVENTS_URL": sink.url + PAGERDUTY,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        settings = get_settings()
        engine = create_engine(postgres_url)

        # A first champion, trained on the original data, serves.
        from training.train import train

        first = train(data_path=base_data, auto_promote=True, settings=settings)
        assert first.action == "promoted"
        airflow = AirflowHome(tmp_path / "airflow", env)
        api = ServerProcess(tmp_path, env, workers=1)
        try:
            api.wait_ready()
            wait_until_ready(api.url, 30)
            assert served_version(api) == first.version

            slot = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
            slot -= timedelta(hours=slot.hour % 6)

            # 1. Healthy traffic: the drift check finds nothing and records "no retrain".
            serve_phase(api, engine, generate_transactions(3_000, seed=5), schema, slot)
            healthy = airflow.run_dag("drift_check_dag", slot + SLOT)
            assert healthy["state"] == "success", healthy["log"][-3000:]
            assert healthy["tasks"]["trigger_training"] == "skipped"
            outcome = healthy["xcom"]["check"]
            assert outcome["retrain"] is False and outcome["triggers"] == []
            assert outcome["reason"].startswith("no retrain")

            # 2. Drifted inputs with labels whose relationship changed: the check flags them
            #    and triggers training with the reason.
            new_world = generate_transactions(4_000, seed=6, pattern="contactless")
            drifted = shift_distance(new_world, schema, seed=6)
            serve_phase(api, engine, drifted, schema, slot + SLOT)
            flagged = airflow.run_dag("drift_check_dag", slot + 2 * SLOT)
            assert flagged["state"] == "success", flagged["log"][-3000:]
            outcome = flagged["xcom"]["check"]
            assert outcome["retrain"] is True, outcome
            assert "critical_drift" in outcome["triggers"]
            assert "distance_from_home_km" in outcome["reason"]
            assert flagged["tasks"]["trigger_training"] == "success"
            (triggered,) = [t for t in flagged["triggered"] if t["dag_id"] == "training_dag"]
            assert triggered["run_id"] == f"retrain__{outcome['training_run_id']}"
            assert triggered["conf"]["reason"] == outcome["reason"]

            # Re-running the same interval adds no report, no decision and no training.
            with engine.connect() as conn:
                reports_before = conn.execute(select(func.count()).select_from(drift_reports))
                reports_before = reports_before.scalar_one()
            again = airflow.run_dag("drift_check_dag", slot + 2 * SLOT)
            assert again["state"] == "success"
            assert again["xcom"]["check"]["decision_id"] == outcome["decision_id"]
            assert again["tasks"]["trigger_training"] == "skipped"  # the run id exists
            with engine.connect() as conn:
                assert (
                    conn.execute(select(func.count()).select_from(drift_reports)).scalar_one()
                    == reports_before
                )
                assert (
                    conn.execute(select(func.count()).select_from(training_runs)).scalar_one() == 1
                )

            # 3. The training DAG runs with that conf: gates, then @champion moves, and the
            #    API serves the new version without a restart.
            trained = airflow.run_dag("training_dag", slot + 2 * SLOT, triggered["conf"])
            assert trained["state"] == "success", trained["log"][-5000:]
            version = str(trained["xcom"]["register"])
            assert trained["xcom"]["conclude"] == "promoted"
            gates = trained["xcom"]["gate"]["gates"]
            assert all(gate["passed"] for gate in gates.values())
            assert gates["no_regression"]["champion_version"] == first.version
            deadline = time.monotonic() + 30
            while served_version(api) != version and time.monotonic() < deadline:
                time.sleep(0.5)
            assert served_version(api) == version
            fresh = generate_transactions(5_000, seed=99, pattern="contactless")
            fresh = shift_distance(fresh, schema, seed=99)
            old, new = (accuracy(v, fresh, schema, settings) for v in (first.version, version))
            assert new > old + 0.03, (old, new)

            # 4. Another drift inside the cooldown starts no training; the skip is recorded.
            later = generate_transactions(3_000, seed=8, pattern="contactless")
            # Older card holders now, a covariate shift the relationship ignores.
            later = inject_drift(later, "mean_shift", schema=schema, feature="customer_age",
                                 intensity=0.5, seed=8)  # fmt: skip
            serve_phase(api, engine, later, schema, slot + 2 * SLOT)
            cooled = airflow.run_dag("drift_check_dag", slot + 3 * SLOT)
            assert cooled["state"] == "success", cooled["log"][-3000:]
            outcome = cooled["xcom"]["check"]
            assert outcome["triggers"] and outcome["retrain"] is False
            assert outcome["blocked_by"] == "cooldown"
            assert cooled["tasks"]["trigger_training"] == "skipped"
            with engine.connect() as conn:
                stored = conn.execute(
                    select(retrain_decisions).order_by(retrain_decisions.c.window_end)
                ).all()
            assert [(row.retrain, row.blocked_by) for row in stored] == [
                (False, None),
                (True, None),
                (False, "cooldown"),
            ]
            assert (
                "cooldown" in stored[-1].reason
                and stored[-1].numbers["hours_since_last_training"] == 6
            )

            # 5. With AUTO_PROMOTE=false a passing candidate becomes @challenger instead.
            manual = airflow.run_dag(
                "training_dag", slot + 3 * SLOT,
                {"reason": "manual retrain after the cooldown skip",
                 "data_start": (slot + SLOT).isoformat(),  # since the drift began
                 "data_end": (slot + 3 * SLOT).isoformat()},
                AUTO_PROMOTE="false",
            )  # fmt: skip
            assert manual["state"] == "success", manual["log"][-5000:]
            assert manual["xcom"]["conclude"] == "challenger", manual["xcom"]["gate"]
            from training.registry import CHALLENGER, CHAMPION, Registry

            registry = Registry.from_settings(settings)
            assert registry.alias(CHALLENGER).version == str(manual["xcom"]["register"])
            assert registry.alias(CHAMPION).version == version
            assert served_version(api) == version
        finally:
            api.stop()

        with engine.connect() as conn:
            runs = conn.execute(select(training_runs).order_by(training_runs.c.id)).all()
        assert [(r.trigger, r.status) for r in runs] == [
            ("policy", "promoted"),
            ("manual", "challenger"),
        ]
        assert runs[0].external_id == trained["run_id"] and runs[0].version == version

        # Slack heard of each retrain and the promotion; nothing critical, so no page.
        slack = [request.body for request in sink.at(SLACK)]
        texts = "\n".join(str(body) for body in slack)
        assert texts.count("retrain") >= 2
        assert f"v{version}" in texts
        assert sink.at(PAGERDUTY) == []
        engine.dispose()
