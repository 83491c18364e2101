"""The request ids a worker answered lately: a reused id with other features is a 409.

`prediction_logs` is keyed by request id and written after the answer, so a request id sent
again used to be answered as new and its row silently dropped by the key. Each worker remembers
at least the last REQUEST_ID_CACHE_SIZE request ids that callers gave (at most twice that), with
a hash of their features and the answer: an id sent again with the same features (a client's
retry) gets the first answer again and is neither counted nor logged a second time; with other
features it gets 409. Older ids, and ids first answered by another worker, are not seen here:
the prediction log's writer finds them when it writes the row (the first row stays, the other
is counted in `ml_prediction_log_conflicts_total` and logged).

Handlers run on the worker's event loop, one at a time between awaits, and nothing here awaits:
no lock is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    """The caller-given request ids answered lately and their answers: at least the last
    `size`, at most the last 2 × `size`.

    Two generations of plain dicts: new ids go to the young one; once it holds `size`, it
    becomes the old one and the one before is dropped whole. Every operation is a dict call in
    C, batch-wide where it can be (`known_any`, `remember_many`): an OrderedDict trimmed one
    id at a time cost about 2 µs a row, a tenth of a logged batch row's time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._young: dict[str, Answer] = {}
        self._old: dict[str, Answer] = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def get(self, request_id: str) -> Answer | None:
        answer = self._young.get(request_id)
        return answer if answer is not None else self._old.get(request_id)

    def known_any(self, request_ids: list[str]) -> bool:
        """Whether any of `request_ids` is remembered (one C-level pass; usually none is)."""
        return not (self._young.keys().isdisjoint(request_ids)
                    and self._old.keys().isdisjoint(request_ids))  # fmt: skip

    def remember(self, request_id: str, answer: Answer) -> None:
        self.remember_many(((request_id, answer),))

    def remember_many(self, answers: Iterable[tuple[str, Answer]]) -> None:
        if self.size <= 0:
            return
        self._young.update(answers)
        if len(self._young) >= self.size:
            self._old, self._young = self._young, {}


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
