"""Bring your own model: docs/own-model.md's path, followed to the letter on a second schema.

`schemas/penguins.yaml` and the Palmer penguins CSV (from the `palmerpenguins` package, real data
the project did not generate: word labels, categoricals, an integer column, missing values, no id
or timestamp column, rows sorted by species) go through every command a user runs, each as its
own process: `python -m data.schema`, `python -m training.train` into a fresh MLflow store, the
API (`python -m api.serve`) with FEATURE_SCHEMA pointed at the new schema, `python -m
data.replay` for predictions and labels, `python -m data.drift_injector`, `python -m
monitoring.window_checks` and the exporter's /metrics. The monitoring database is a fresh real
Postgres database. The unit tests at the end pin each fix that following the path required.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from sqlalchemy import select

from data.db import drift_reports, get_engine, performance_reports, quality_reports
from data.ingest import DataError, load_frame
from data.prediction_log import read_predictions
from data.replay import request_instances
from data.schema import SchemaError, load_schema, parse_schema
from data.settings import PROJECT_ROOT, Settings
from tests.test_monitoring_live import Exporter, tail
from tools.testkit.api_server import ServerProcess
from tools.testkit.databases import fresh_postgres_database
from tools.testkit.traffic import LABEL_TOKENS, LABELLER
from training.pipeline import time_split

SCHEMA_PATH = PROJECT_ROOT / "schemas" / "penguins.yaml"
MODEL_NAME = "penguin-sex"
FEATURES = [
    "species",
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "year",
]
DRIFTED = "body_mass_g"


def run(command: list[str], env: dict[str, str], cwd: Path, ok: bool = True) -> str:
    """One README command as its own process; its output (stdout, then stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", *command], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    if ok:
        assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    else:
        assert done.returncode == 2, f"{' '.join(command)} should refuse:\n{output}"
        assert "Traceback" not in output, output
    return output


@dataclass
class Penguins:
    folder: Path
    env: dict[str, str]
    database_url: str
    api: ServerProcess
    train_output: str
    all_rows: Path  # the package's CSV as it is: 344 penguins, 11 without a sex
    labelled: Path  # those with a sex: what the model is trained on


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Iterator[Penguins]:
    folder = tmp_path_factory.mktemp("own-model")
    all_rows, labelled = folder / "penguins-all.csv", folder / "penguins.csv"
    load_penguins().to_csv(all_rows, index=False)
    load_penguins().dropna(subset=["sex"]).to_csv(labelled, index=False)
    with fresh_postgres_database() as database_url:
        # Only what README tells a user to set, plus the stores of this test and a fast poll.
        env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
        env |= {
            "PYTHONPATH": str(PROJECT_ROOT),
            "ENVIRONMENT": "development",
            "FEATURE_SCHEMA": str(SCHEMA_PATH),
            "MODEL_NAME": MODEL_NAME,
            "DATABASE_URL": database_url,
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "MLFLOW_ARTIFACT_ROOT": str(folder / "mlartifacts"),
            "PREDICTION_SPOOL_DIR": str(folder / "spool"),
            "EXPORTER_CACHE_SECONDS": "0",
            "LABEL_TOKENS": LABEL_TOKENS,  # the replay's labels go with this source's token
        }
        out = run(["data.schema", str(SCHEMA_PATH)], env, folder)
        assert out.startswith("penguins: target 'sex' (class 1: 'male'), 7 features"), out
        # The package's CSV as it is: 11 penguins without a sex stop training, saying so.
        refused = run(["training.train", "--schema", str(SCHEMA_PATH), "--data", str(all_rows)],
                      env, folder, ok=False)  # fmt: skip
        assert "target_binary [sex]" in refused and "11 row(s) have no label" in refused
        trained = run(["training.train", "--schema", str(SCHEMA_PATH), "--data", str(labelled),
                       "--auto-promote"], env, folder)  # fmt: skip
        assert f"trained models:/{MODEL_NAME}/1" in trained and "now @champion" in trained, trained
        (folder / "api").mkdir()
        api = ServerProcess(folder / "api", env, workers=2)
        try:
            api.wait_ready()
            yield Penguins(folder, env, database_url, api, trained, all_rows, labelled)
        finally:
            api.stop()


def penguin(**changes) -> dict:
    """The first penguin of the CSV, as a client sends it (whole numbers stay whole)."""
    row = {"species": "Adelie", "island": "Torgersen", "bill_length_mm": 39.1,
           "bill_depth_mm": 18.7, "flipper_length_mm": 181, "body_mass_g": 3750,
           "year": 2007}  # fmt: skip
    return row | changes


def test_the_model_is_trained_on_every_species(penguins):
    """The CSV has no timestamp and is sorted by species: its last fifth is Chinstrap penguins
    only, so a hold-out "by time" would hold out a species the model never saw, and the
    reference profile every drift check compares with would know no other."""
    from training.registry import Registry

    settings = Settings(**{k: penguins.env[k] for k in Settings.model_fields if k in penguins.env})
    profile = Registry.from_settings(settings).reference_profile("1")
    assert profile.schema_name == "penguins"
    assert set(profile.categorical["species"].counts) == {"Adelie", "Chinstrap", "Gentoo"}
    assert set(profile.numerical) == {f for f in FEATURES if f not in ("species", "island")}
    assert "ROC AUC 0.9" in penguins.train_output, penguins.train_output


def test_predict_serves_penguins_and_names_the_field_of_a_bad_row(penguins):
    url = penguins.api.url
    with httpx.Client(base_url=url, timeout=30) as client:
        model = client.get("/model").json()
        assert model["model_name"] == MODEL_NAME and model["model_version"] == "1"
        answer = client.post("/predict", json={"request_id": "pg-1", "features": penguin()})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predicted_class"] in (0, 1)
        # Measurements missing (nullable) are scored; an island the schema does not list is
        # served too, for the quality check to report rather than hidden by a refusal.
        unmeasured = penguin(bill_length_mm=None, bill_depth_mm=None, flipper_length_mm=None,
                             body_mass_g=None, island="Atlantis")  # fmt: skip
        answer = client.post("/predict", json={"request_id": "pg-2", "features": unmeasured})
        assert answer.status_code == 200, answer.text

        bad_rows = {
            "features.amount": penguin(amount=12.5),  # a fraud feature
            "features.species": {k: v for k, v in penguin().items() if k != "species"},
            "features.year": penguin(year="2007"),
            "features.island": penguin(island=3),
        }
        for field, features in bad_rows.items():
            answer = client.post("/predict", json={"request_id": "pg-bad", "features": features})
            assert answer.status_code == 422, (field, answer.text)
            assert answer.json()["detail"].startswith(field), (field, answer.text)

        labels = {"labels": [{"request_id": "pg-1", "label": 0}, {"request_id": "pg-2",
                                                                  "label": 1}]}  # fmt: skip
        answer = client.post("/feedback/batch", json=labels, headers=LABELLER)
        assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text
        answer = client.post(
            "/feedback", json={"request_id": "pg-1", "label": "male"}, headers=LABELLER
        )
        assert answer.status_code == 422 and "label" in answer.text, answer.text


def reports(database_url: str, start: str) -> dict[str, dict]:
    """The drift, quality and performance reports saved for the window starting at `start`."""
    found = {}
    with get_engine(database_url).connect() as conn:
        for name, table in (("drift", drift_reports), ("quality", quality_reports),
                            ("performance", performance_reports)):  # fmt: skip
            row = conn.execute(
                select(table.c.report, table.c.window_start, table.c.model_name)
                .order_by(table.c.id.desc())
                .limit(1)
            ).one()
            assert row.model_name == MODEL_NAME
            began = row.window_start.replace(tzinfo=UTC) - datetime.fromisoformat(start)
            assert abs(began) < timedelta(milliseconds=1), (start, row.window_start)
            found[name] = row.report if isinstance(row.report, dict) else json.loads(row.report)
    return found


def replay(penguins: Penguins, data: Path) -> str:
    """Replay `data` with its labels, once logged; when it began, as README's `date -u` gives it
    for `window_checks --start` (whole seconds, so the replay waits for the next one)."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    time.sleep((start - datetime.now(UTC)).total_seconds())
    out = run(["data.replay", "--data", str(data), "--url", penguins.api.url, "--labels"],
              penguins.env, penguins.folder)  # fmt: skip
    assert "sent 344 predictions" in out and "and 333 labels" in out, out
    # The loggers write in the background: the window closes once every row is in Postgres.
    deadline = time.monotonic() + 30
    schema = load_schema(SCHEMA_PATH)
    while True:
        end = datetime.now(UTC)
        logged = read_predictions(schema, start, end, url=penguins.database_url, with_labels=True)
        if len(logged) == 344 and logged["sex"].notna().sum() == 333:
            break
        assert time.monotonic() < deadline, (
            f"{len(logged)} rows logged\n{tail(penguins.api.log_path)}"
        )
        time.sleep(0.3)
    return start.isoformat()


def test_monitoring_finds_drift_in_a_penguin_feature(penguins, tmp_path):
    schema, env, folder = str(SCHEMA_PATH), penguins.env, penguins.folder

    # Ordinary traffic: every penguin of the package (missing measurements and all), labelled.
    start = replay(penguins, penguins.all_rows)
    out = run(["monitoring.window_checks", "--start", start], env, folder)
    assert "344 predictions" in out, out
    saved = reports(penguins.database_url, start)
    drift = saved["drift"]
    assert set(drift["features"]) == set(FEATURES), drift["features"].keys()
    assert drift["summary"].startswith("0 of 7 features drifted"), drift["summary"]
    missing = drift["features"]["bill_length_mm"]["missing_share_current"]
    assert missing == pytest.approx(2 / 344), drift["features"]  # two penguins never measured
    quality = saved["quality"]
    assert quality["rows"] == 344
    # The penguins the model learnt from are inside the training range, though not all inside
    # the 67 of its hold-out.
    assert "out_of_range" not in quality["warnings"] + quality["failures"], quality["summary"]
    realized = saved["performance"]["realized"]["overall"]
    assert realized["labelled"] == 333 and realized["accuracy"] > 0.8, realized

    # The same penguins 1 std heavier: the drift check names body_mass_g.
    drifted = folder / "penguins-heavier.csv"
    out = run(["data.drift_injector", "--schema", schema, "--kind", "mean_shift", "--feature",
               DRIFTED, "--intensity", "0.5", "--input", str(penguins.all_rows), "--output",
               str(drifted)], env, folder)  # fmt: skip
    start = replay(penguins, drifted)
    refused = run(
        ["monitoring.window_checks", "--start", start, "--hours", "1"], env, folder, ok=False
    )
    assert "--start or --hours, not both" in refused, refused
    html = str(tmp_path / "drift.html")
    out = run(["monitoring.window_checks", "--start", start, "--html", html], env, folder)
    assert "344 predictions" in out, out
    assert DRIFTED in out.split("drift:", 1)[1].splitlines()[0], out
    saved = reports(penguins.database_url, start)
    features = saved["drift"]["features"]
    assert features[DRIFTED]["drifted"] and features[DRIFTED]["severity"] == "critical", features
    assert [name for name, f in features.items() if f["drifted"]] == [DRIFTED], features
    assert DRIFTED in (tmp_path / "drift.html").read_text()
    checks = {check["name"]: check for check in saved["quality"]["checks"]}
    assert "body_mass_g" in checks["out_of_range"]["message"], checks["out_of_range"]
    assert saved["performance"]["estimated"]["overall"]["accuracy"] is not None

    # The exporter, a process of its own, serves all of it under the penguin feature names.
    exporter = Exporter(folder / "exporter", env)
    try:
        exporter.wait_ready()
        metrics = httpx.get(f"{exporter.url}/metrics", timeout=30).text
    finally:
        exporter.stop()
    labels = f'environment="development",feature="{DRIFTED}",model_name="{MODEL_NAME}"'
    assert f"ml_drift_detected{{{labels}}} 1.0" in metrics, metrics
    assert f"ml_drift_severity{{{labels}}} 2.0" in metrics
    for feature in FEATURES:
        assert f'ml_drift_psi{{environment="development",feature="{feature}"' in metrics, feature
        assert f'ml_quality_missing_ratio{{environment="development",feature="{feature}"' in metrics
    assert "amount" not in metrics and "merchant_category" not in metrics
    assert (
        f'ml_realized_performance{{environment="development",metric="accuracy",model_name="{MODEL_NAME}"}}'
        in metrics
    )
    assert (
        f'ml_champion_version{{environment="development",model_name="{MODEL_NAME}"}} 1.0' in metrics
    )


# --- the fixes the path needed, one by one ---------------------------------------------------


def test_word_labels_are_mapped_by_positive_label_and_a_third_word_is_refused(tmp_path):
    schema = load_schema(SCHEMA_PATH)
    path = tmp_path / "p.csv"
    load_penguins().to_csv(path, index=False)
    frame = load_frame(path, schema)
    sex = frame["sex"]
    assert ((sex == 1).sum(), (sex == 0).sum(), sex.isna().sum()) == (168, 165, 11)
    # Typed data typed again (replay, the log's labels read back) keeps its 0/1.
    assert frame.equals(load_frame(_written(frame, tmp_path / "typed.csv"), schema))

    odd = load_penguins()
    odd.loc[0, "sex"] = "Male"
    with pytest.raises(DataError, match=r"'male' \(class 1.*one other value.*'Male'"):
        load_frame(_written(odd, tmp_path / "odd.csv"), schema)
    raw = {"name": "x", "target": "y", "features": [{"name": "a", "type": "numerical"}]}
    for bad in (True, 1.5, "1"):
        with pytest.raises(SchemaError, match="positive_label"):
            parse_schema(raw | {"positive_label": bad})
    assert parse_schema(raw | {"positive_label": 7}).positive_label == "7"
    # What the training plots call the classes.
    assert schema.class_names == ("sex ≠ male", "sex = male")
    assert parse_schema(raw).class_names == ("y = 0", "y = 1")


def _written(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_without_a_timestamp_the_hold_out_is_a_stratified_sample_not_the_file_tail():
    schema = load_schema(SCHEMA_PATH)
    frame = load_penguins().dropna(subset=["sex"])
    frame["sex"] = (frame["sex"] == "male").astype(int)
    train, holdout = time_split(frame, schema, 0.2, seed=1)
    assert len(holdout) == 67 and len(train) == 266
    assert set(holdout["species"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert abs(holdout["sex"].mean() - frame["sex"].mean()) < 0.02
    again, _ = time_split(frame, schema, 0.2, seed=1)
    assert again.equals(train)  # seeded
    # Rows known to be in time order (the prediction log's) keep the newest as the hold-out.
    _, newest = time_split(frame, schema, 0.2, in_time_order=True)
    assert newest.equals(frame.iloc[-67:].reset_index(drop=True))


def test_replay_without_an_id_column_lets_the_api_make_the_ids():
    schema = load_schema(SCHEMA_PATH)
    instances = request_instances(load_penguins().head(4), schema)
    assert all("request_id" not in instance for instance in instances)
    assert instances[3]["features"]["body_mass_g"] is None and set(instances[0]["features"]) == set(
        FEATURES
    )
