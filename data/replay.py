"""Replay a CSV or Parquet file into a running API, as client traffic and, later, ground truth.

Each row becomes a `/predict/batch` instance (its id column as the request id, the schema's
features as `features`); with `--labels`, the target column then goes to `/feedback/batch`, as
if the truth had arrived (rows without a label get none). `make demo` uses it to feed the API
normal and drifted traffic; it is also the quickest way to see what the monitoring makes of a
dataset of your own. Labels go with a label writer's token: that of `--label-source` in
LABEL_TOKENS (the API's setting, read here too), or of its only source.

    python -m data.replay --data var/data/live.parquet --url http://127.0.0.1:8000 --labels
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import requests

from data.ingest import DataError, coerce_frame, load_frame
from data.logs import configure_logging
from data.schema import FeatureSchema, SchemaError, load_schema
from data.settings import Settings, exit_on_config_error, get_settings


class ReplayError(RuntimeError):
    """The API refused a batch or could not be reached; the message says which and why."""


def request_instances(frame: pd.DataFrame, schema: FeatureSchema) -> list[dict[str, Any]]:
    """The rows of `frame` as `/predict` requests (missing values as null, booleans as bools),
    with the id column as `request_id` when the schema names one and the frame has it."""
    typed = coerce_frame(frame, schema, require_target=False)
    booleans = {f.name for f in schema.boolean}
    instances = []
    for position, record in enumerate(typed[schema.feature_names].to_dict("records")):
        features = {}
        for name, value in record.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                features[name] = None
            elif name in booleans:
                features[name] = bool(value)
            else:
                features[name] = value
        instance: dict[str, Any] = {"features": features}
        # Without an id column the API makes the ids up (and answers with them): a null would
        # be refused, since a request id is text when it is given.
        if schema.id and schema.id in frame:
            instance["request_id"] = str(frame[schema.id].iloc[position])
        instances.append(instance)
    return instances


def label_token(settings: Settings, source: str | None = None) -> str:
    """The token of `source` in LABEL_TOKENS, or of its only source; ReplayError if none."""
    tokens = settings.label_tokens
    if not tokens:
        raise ReplayError(
            "sending labels needs a label token: set LABEL_TOKENS (source=token) as the API has it"
        )
    if source is None:
        if len(tokens) > 1:
            raise ReplayError(
                f"LABEL_TOKENS has several sources ({', '.join(tokens)}): choose one with "
                "--label-source"
            )
        source = next(iter(tokens))
    if source not in tokens:
        raise ReplayError(f"--label-source {source!r} is not in LABEL_TOKENS ({', '.join(tokens)})")
    return tokens[source].get_secret_value()


def _chunks(items: list, size: int) -> Iterator[list]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def replay(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    url: str,
    *,
    labels: bool = False,
    batch_size: int = 500,
    session: requests.Session | None = None,
    token: str | None = None,
) -> dict[str, int]:
    """Send `frame` to the API at `url`; returns how many predictions (and labels) it took.
    Labels go with `token` (default: the only source's in LABEL_TOKENS, `label_token`)."""
    session = session or requests.Session()
    # Resolved first: a missing token stops the replay before any prediction is sent.
    headers = {"Authorization": f"Bearer {token or label_token(get_settings())}"} if labels else {}
    instances = request_instances(frame, schema)
    ids: list[str] = []
    positives = 0
    for chunk in _chunks(instances, batch_size):
        answer = _post(session, f"{url}/predict/batch", {"instances": chunk})
        for prediction in answer["predictions"]:
            ids.append(prediction["request_id"])
            positives += prediction["predicted_class"]
    result = {"predictions": len(ids), "predicted_positive": positives, "labels": 0}
    if labels:
        if schema.target not in frame:
            raise ReplayError(f"--labels needs the target column {schema.target!r} in the data")
        truth = coerce_frame(frame, schema)[schema.target]
        # A row without a label has had no truth yet: it is predicted, and gets no feedback.
        feedback = [
            {"request_id": i, "label": int(y)}
            for i, y in zip(ids, truth, strict=True)
            if not pd.isna(y)
        ]
        for chunk in _chunks(feedback, batch_size):
            answer = _post(session, f"{url}/feedback/batch", {"labels": chunk}, headers)
            result["labels"] += answer["accepted"]
    return result


def wait_until_ready(url: str, seconds: float) -> None:
    """Poll `/ready` until the API serves a model, or raise ReplayError after `seconds`."""
    deadline = time.monotonic() + seconds
    reason = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{url}/ready", timeout=5)
            if answer.status_code == 200:
                return
            reason = answer.json().get("detail", answer.text)
        except (requests.RequestException, ValueError) as exc:
            reason = str(exc)
        time.sleep(0.5)
    raise ReplayError(f"{url} was not ready after {seconds:g} s: {reason}")


def _post(
    session: requests.Session, url: str, body: dict, headers: dict[str, str] | None = None
) -> dict:
    try:
        answer = session.post(url, json=body, timeout=60, headers=headers)
    except requests.RequestException as exc:
        raise ReplayError(f"cannot reach {url}: {exc}") from None
    if answer.status_code != 200:
        try:
            detail = answer.json().get("detail", answer.text)
        except ValueError:
            detail = answer.text
        raise ReplayError(f"{url} answered {answer.status_code}: {detail}")
    return answer.json()


def _slice(text: str) -> slice:
    try:
        start, end = (int(part) if part else None for part in text.split(":"))
    except ValueError:
        raise ReplayError(f"--rows {text!r} is not START:END, e.g. 0:3000") from None
    return slice(start, end)


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(description="Replay a data file into the API.")
    parser.add_argument("--data", required=True, help=".csv or .parquet file")
    parser.add_argument("--url", default=f"http://127.0.0.1:{settings.API_PORT}")
    parser.add_argument("--schema", default=str(settings.path(settings.FEATURE_SCHEMA)))
    parser.add_argument("--labels", action="store_true", help="also send the target as feedback")
    parser.add_argument(
        "--label-source",
        help="the source in LABEL_TOKENS whose token sends the labels (default: its only one)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rows", help="only rows START:END of the file (Python slice, 0-based)")
    parser.add_argument(
        "--wait", type=float, default=0, help="seconds to wait for the API's /ready first"
    )
    args = parser.parse_args(argv)
    configure_logging(settings, process="replay", command=True)
    try:
        if args.wait:
            wait_until_ready(args.url, args.wait)
        schema = load_schema(args.schema)
        frame = load_frame(args.data, schema, require_target=args.labels)
        if args.rows:
            frame = frame.iloc[_slice(args.rows)]
        token = label_token(settings, args.label_source) if args.labels else None
        result = replay(
            frame, schema, args.url, labels=args.labels, batch_size=args.batch_size, token=token
        )
    except (SchemaError, DataError, ReplayError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(
        f"sent {result['predictions']:,} predictions ({result['predicted_positive']:,} positive)"
        + (f" and {result['labels']:,} labels" if args.labels else "")
        + f" to {args.url}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
