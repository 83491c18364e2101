"""The model the API serves: load `models:/<MODEL_NAME>@champion`, score, hot-reload.

A `LoadedModel` is immutable: the pipeline, its compiled scorer (verified against the pipeline
at load), the version and its gate results. `Predictor.current` is a single reference that a
reload replaces in one assignment, so a request holds either the old model or the new one for
its whole duration, never half of each, and no request fails or waits during a reload (the new
model is loaded and verified before the swap). A background thread polls the alias every
MODEL_POLL_SECONDS and reloads when it points at another version; `/model/reload` does the same
on demand.

A version that must not be loaded (`training.registry.ModelRefused`: a pickle flavor, a type
outside the trusted list, a decision threshold not strictly between 0 and 1) is refused: logged,
counted (`on_refuse`), kept in `refused` for `/model` and `/ready` to show, and the model served
goes on serving. The poller does not try a refused version again while `@champion` points at it
with the same tags; `/model/reload` does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from data.logs import log_context
from data.profile import DEFAULT_THRESHOLD
from data.schema import FeatureSchema
from data.settings import Settings
from training.registry import CHAMPION, ModelRefused, Registry, RegistryError, VersionInfo
from training.scoring import VERIFY_ROWS, Scorer, make_scorer

log = logging.getLogger(__name__)


class ModelNotLoaded(RuntimeError):
    """No champion could be loaded yet."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    pipeline: Pipeline
    scorer: Scorer
    loaded_at: datetime
    run_id: str
    # A score at or above it is class 1: trained and stored with the version, read once here.
    threshold: float = DEFAULT_THRESHOLD
    tags: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        gates = {
            key.removeprefix("gate."): value
            for key, value in self.tags.items()
            if key.startswith("gate.") and not key.endswith(".detail")
        }
        holdout = {
            key.removeprefix("holdout."): float(value)
            for key, value in self.tags.items()
            if key.startswith("holdout.")
        }
        return {
            "model_name": self.name,
            "model_version": self.version,
            "alias": self.alias,
            "loaded_at": self.loaded_at.isoformat(),
            "run_id": self.run_id,
            "scorer": self.scorer.kind,
            "decision_threshold": self.threshold,
            "gates": gates,
            "gates_passed": self.tags.get("gates.passed"),
            "holdout_metrics": holdout,
        }


@dataclass(frozen=True)
class Refusal:
    """A version `@champion` pointed at that was not loaded, and why."""

    version: str
    kind: str  # training.registry.REFUSAL_KINDS
    reason: str
    refused_at: datetime
    tags: dict[str, str] = field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": self.kind,
            "reason": self.reason,
            "refused_at": self.refused_at.isoformat(),
        }


class Predictor:
    """Holds the served model and replaces it atomically."""

    def __init__(
        self,
        registry: Registry,
        schema: FeatureSchema,
        on_load: Callable[[LoadedModel], None] | None = None,
        on_refuse: Callable[[Refusal], None] | None = None,
        on_refused_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.registry = registry
        self.schema = schema
        self.on_load = on_load
        self.on_refuse = on_refuse
        # Told whether @champion now points at a refused version (the metric behind an alert).
        self.on_refused_state = on_refused_state
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        # The version @champion points at that was refused (None once it points elsewhere).
        self._refused: Refusal | None = None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, schema: FeatureSchema, **kwargs) -> Predictor:
        return cls(Registry.from_settings(settings), schema, **kwargs)

    @property
    def refused(self) -> Refusal | None:
        return self._refused

    @refused.setter
    def refused(self, refusal: Refusal | None) -> None:
        self._refused = refusal
        if self.on_refused_state:
            self.on_refused_state(refusal is not None)

    def require(self) -> LoadedModel:
        model = self.current
        if model is None:
            raise ModelNotLoaded(self.last_error or "no model loaded yet")
        return model

    def load_champion(self, retry_refused: bool = True) -> LoadedModel | None:
        """Load `@champion` if it is not what is served already; return the model served.

        Raises `ModelRefused` when the version must not be loaded (the model served stays);
        without `retry_refused` (the poller), a version refused before with the same tags is
        not tried again: the model served is returned.
        """
        with self._reload_lock:
            version = None  # the one this is about, once known
            try:
                champion = self.registry.alias(CHAMPION)
                if champion is None:
                    self.registry.require_exists()
                    raise RegistryError(
                        f"model {self.registry.model_name!r} has no @champion yet; promote a "
                        f"version with `python -m training.register_model promote`"
                    )
                if self.current is not None and self.current.version == champion.version:
                    self.refused = None
                    return self.current
                version = champion.version
                refused = self.refused
                if (
                    not retry_refused
                    and refused is not None
                    and (refused.version, refused.tags) == (version, champion.tags)
                ):
                    return self.current
                with log_context(model_version=version):
                    loaded = self._load(champion)
            except ModelRefused as exc:  # keep serving the model we have; say why
                self.refused = Refusal(
                    exc.version, exc.kind, exc.reason, datetime.now(UTC), champion.tags
                )
                self.last_error = str(exc)
                served = f"v{self.current.version}" if self.current else "no model"
                with log_context(model_version=version):
                    log.error("@champion %s; still serving %s", exc, served)
                if self.on_refuse:
                    self.on_refuse(self.refused)
                raise
            except Exception as exc:  # keep serving the model we have; report why
                self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                with log_context(model_version=version):
                    log.error("could not load the champion: %s", self.last_error)
                raise
            previous = self.current
            self.current = loaded  # the atomic swap
            self.last_error = None
            self.refused = None
            with log_context(model_version=version):
                log.info(
                    "serving %s v%s (%s scorer)%s",
                    loaded.name,
                    loaded.version,
                    loaded.scorer.kind,
                    f", was v{previous.version}" if previous else "",
                )
            if self.on_load:
                self.on_load(loaded)
            return loaded

    def _load(self, version: VersionInfo) -> LoadedModel:
        threshold = version.threshold  # checked first: a bad tag refuses without a download
        pipeline = self.registry.load_model(version.version)
        sample = self._verification_rows(version)
        return LoadedModel(
            name=self.registry.model_name,
            version=version.version,
            alias=CHAMPION,
            pipeline=pipeline,
            scorer=make_scorer(pipeline, self.schema, sample),
            loaded_at=datetime.now(UTC),
            run_id=version.run_id,
            threshold=threshold,
            tags=version.tags,
        )

    def _verification_rows(self, version: VersionInfo) -> pd.DataFrame:
        """Real rows to check the compiled scorer against the pipeline: the version's hold-out."""
        frame = self.registry.holdout(version.version)
        return frame.head(VERIFY_ROWS)

    # --- polling -----------------------------------------------------------------------------

    def start_polling(self, interval: float) -> None:
        if interval <= 0:
            return
        self._poller = threading.Thread(
            target=self._poll, args=(interval,), name="champion-poller", daemon=True
        )
        self._poller.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.load_champion(retry_refused=False)
            except Exception:  # already logged; the current model keeps serving
                continue
