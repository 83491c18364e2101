"""`data.replay`: a data file into the real API as predictions, then as labels."""

from __future__ import annotations

from data.replay import main, replay
from data.settings import get_settings
from data.synthetic import generate_transactions, write_frame
from tools.testkit.traffic import ADMIN


def test_a_file_becomes_predictions_and_labels(client, fraud_schema):
    frame = generate_transactions(1_200, seed=3)
    frame.loc[1_100, "customer_age"] = None  # nullable: sent as null
    result = replay(frame, fraud_schema, "", labels=True, batch_size=500, session=client)
    assert result["predictions"] == 1_200 and result["labels"] == 1_200
    assert client.app.state.logger.flush()
    logged = client.get("/logs", headers=ADMIN, params={"limit": 1_000}).json()
    assert logged["count"] == 1_000
    row = next(r for r in logged["rows"] if r["request_id"] == frame["transaction_id"].iloc[1_100])
    assert row["features"]["customer_age"] is None
    assert row["label"] == int(frame["is_fraud"].iloc[1_100])


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, fraud_schema, monkeypatch):
    frame = generate_transactions(10, seed=3).drop(columns=["amount"])
    missing = write_frame(frame, tmp_path / "missing.csv")
    assert main(["--data", str(missing)]) == 2
    assert "amount" in capsys.readouterr().err

    good = write_frame(generate_transactions(10, seed=3), tmp_path / "good.csv")
    assert main(["--data", str(good), "--rows", "one:two"]) == 2
    assert "START:END" in capsys.readouterr().err
    assert main(["--data", str(good), "--url", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach http://127.0.0.1:1") and "Traceback" not in err
    # Labels need a label writer's token: said before anything is sent.
    assert main(["--data", str(good), "--labels", "--url", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "sending labels needs a label token: set LABEL_TOKENS" in err
    monkeypatch.setenv("LABEL_TOKENS", "a=token-a,b=token-b")
    get_settings.cache_clear()
    assert main(["--data", str(good), "--labels", "--url", "http://127.0.0.1:1"]) == 2
    assert "choose one with --label-source" in capsys.readouterr().err
    args = ["--data", str(good), "--labels", "--label-source", "c", "--url", "http://127.0.0.1:1"]
    assert main(args) == 2
    assert "--label-source 'c' is not in LABEL_TOKENS (a, b)" in capsys.readouterr().err
