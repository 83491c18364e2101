"""The request ids a worker answered lately: a reused id with other features is a 409.

`prediction_logs` is keyed by request id and written after the answer, so a request id sent
again used to be answered as new and its row silently dropped by the key. Each worker remembers
the last REQUEST_ID_CACHE_SIZE request ids that callers gave, with a hash of their features and
the answer: an id sent again with the same features (a client's retry) gets the first answer
again and is neither counted nor logged a second time; with other features it gets 409. Older
ids, and ids first answered by another worker, are not seen here: the prediction log's writer
finds them when it writes the row (the first row stays, the other is counted in
`ml_prediction_log_conflicts_total` and logged).

Handlers run on the worker's event loop, one at a time between awaits, and nothing here awaits:
no lock is needed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple


class Answer(NamedTuple):
    """What a request id was answered: enough to answer its retry the same way."""

    digest: int  # of its features
    predicted_class: int
    score: float
    model_version: str


def features_digest(features: dict[str, Any]) -> int:
    """A 64-bit hash of a request's validated features. Validation gives them in the schema's
    order whatever the order they were sent in, so their values alone say which they are.
    Python's own hash, keyed per process (the memory lives in one process); only the features
    sent with one request id are ever compared."""
    return hash(tuple(features.values()))


class RecentRequests:
    """The last `size` caller-given request ids and their answers (oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._answers: OrderedDict[str, Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, request_id: str) -> Answer | None:
        return self._answers.get(request_id)

    def remember(self, request_id: str, answer: Answer) -> None:
        if self.size <= 0:
            return
        self._answers[request_id] = answer
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)


class RequestIdConflict(Exception):
    """Request ids already answered with other features (by this worker, lately)."""

    def __init__(self, request_ids: list[str]) -> None:
        shown = ", ".join(repr(rid[:128]) for rid in request_ids[:5])
        more = f" and {len(request_ids) - 5} more" if len(request_ids) > 5 else ""
        super().__init__(
            f"request_id {shown}{more} already used with other features: a request id names "
            f"one prediction; send a new one (the same features again get the same answer)"
        )
        self.request_ids = request_ids
