"""The model registry: MLflow's, with aliases only, as every process of the stack reads it.

The API serves `models:/<MODEL_NAME>@champion` (`CHAMPION`); a version that passed the gates
but waits for a person is `@challenger` (`CHALLENGER`). This module is the only place that
knows those names, where a version keeps its reference profile, hold-out and decision
threshold, and how `@champion` moves (`promote`, `rollback`, each a row in the
`promotion_audit` table). Importing it or building a `Registry` has no side effect: the audit
table is created when it is first written or read. The gates that decide whether a version may
become champion are training's (`training.gates`); the command line is
`python -m training.register_model`.

Loading a version runs no code of its artifact's choosing (`load_model`): only the sklearn
flavor in skops format is read (a pickle or cloudpickle flavor is refused), and the types its
skops file holds beyond skops' own defaults must be in the project's allowlist
(`PROJECT_TRUSTED_TYPES`, the types of the models `training` fits) or in MODEL_TRUSTED_TYPES;
the list the artifact's own MLmodel file names is ignored. A version whose decision threshold tag
is not a number strictly between 0 and 1 is refused too. A refusal is a `ModelRefused` naming the
version and why.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import skops.io
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sqlalchemy import Engine, insert, select

from data.db import get_engine, init_db, promotion_audit
from data.logs import log_context
from data.profile import DEFAULT_THRESHOLD, ReferenceProfile
from data.settings import Settings, get_settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
REFERENCE_PROFILE_ARTIFACT = "reference_profile.json"
HOLDOUT_ARTIFACT = "holdout.parquet"
# The version tag holding its decision threshold (a score at or above it is class 1).
THRESHOLD_TAG = "decision_threshold"
# The types a project model's skops file holds beyond those skops trusts by default (its own list:
# scikit-learn's estimators and transformers, numpy arrays, builtins): the trees of the two model
# types training fits, and numpy's dtypes. A data scientist's own types go in MODEL_TRUSTED_TYPES.
PROJECT_TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)
# The one MLflow serialization of the sklearn flavor that is read: skops (pickle and cloudpickle
# run whatever code the file names when loaded).
SKOPS = "skops"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why and what to do."""


# Why a version is refused (`ModelRefused.kind`): its serialization (pickle, cloudpickle), a type
# outside the trusted list, its decision threshold tag, or an artifact that cannot be read.
REFUSAL_KINDS = ("serialization", "untrusted_type", "threshold", "unreadable")


class ModelRefused(RegistryError):
    """A version that must not be loaded: its artifact or its tags are not trusted."""

    def __init__(self, version: str, kind: str, reason: str) -> None:
        super().__init__(f"version {version} refused: {reason}")
        self.version = version
        self.kind = kind
        self.reason = reason


def decision_threshold(version: str, tags: dict[str, str]) -> float:
    """The version's decision threshold tag (versions from before it: 0.5); `ModelRefused` when
    it is not a number strictly between 0 and 1 (every score would be one class)."""
    raw = tags.get(THRESHOLD_TAG)
    if raw is None:
        return DEFAULT_THRESHOLD
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value < 1):
        raise ModelRefused(
            version,
            "threshold",
            f"its {THRESHOLD_TAG} tag is {raw[:100]!r}, not a number strictly between 0 and 1 "
            f"(fix it with `mlflow` set_model_version_tag, or promote another version)",
        )
    return value


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version as this module uses it (MLflow returns the number as int or
    str depending on the call; here it is always a str)."""

    version: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created_at: datetime

    @classmethod
    def of(cls, mv: ModelVersion) -> VersionInfo:
        return cls(
            version=str(mv.version),
            run_id=mv.run_id,
            tags=dict(mv.tags),
            aliases=tuple(mv.aliases),
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC),
        )

    @property
    def threshold(self) -> float:
        """The decision threshold trained with the version (versions from before: 0.5);
        `ModelRefused` when the tag is not a number strictly between 0 and 1."""
        return decision_threshold(self.version, self.tags)


class Registry:
    """One registered model in MLflow plus the audit table in DATABASE_URL."""

    def __init__(
        self,
        client: MlflowClient,
        model_name: str,
        engine: Engine,
        trusted_types: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.engine = engine
        # Types a version's skops file may hold besides skops' defaults and the project's.
        self.trusted_types = PROJECT_TRUSTED_TYPES | frozenset(trusted_types)
        self._audit_table_ready = False

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Registry:
        settings = settings or get_settings()
        uri = settings.mlflow_tracking_uri
        return cls(
            MlflowClient(tracking_uri=uri, registry_uri=uri),
            settings.MODEL_NAME,
            get_engine(settings.database_url),
            trusted_types=settings.model_trusted_types,
        )

    @staticmethod
    def prepare_store(uri: str) -> None:
        """Create or migrate the MLflow database behind `uri` now, in this one process.

        Every MLflow client migrates an empty or older database on first use, and two
        processes doing so at once (API workers starting on a fresh store) collide in the
        migrations ("table ... already exists"), which killed a worker. A tracking server
        (`http(s)://`) migrates its own database: nothing to do then.
        """
        if uri.startswith(("http://", "https://", "databricks")):
            return
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # the tracking store: creates and migrates
        client.search_registered_models(max_results=1)  # the registry store on the same database

    def exists(self) -> bool:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            return False
        return True

    def require_exists(self) -> None:
        if not self.exists():
            raise RegistryError(
                f"no registered model named {self.model_name!r}; "
                f"train one with `python -m training.train`"
            )

    def version(self, version: str | int) -> VersionInfo:
        self.require_exists()
        try:
            return VersionInfo.of(self.client.get_model_version(self.model_name, str(version)))
        except MlflowException:
            raise RegistryError(
                f"model {self.model_name!r} has no version {version}; "
                f"see `python -m training.register_model history`"
            ) from None

    def alias(self, alias: str) -> VersionInfo | None:
        try:
            return VersionInfo.of(self.client.get_model_version_by_alias(self.model_name, alias))
        except MlflowException:
            return None

    def load_model(self, version: str | int) -> Any:
        """The fitted sklearn pipeline (features + classifier) of `version`, loaded only from
        a skops file whose types are all trusted (see the module's docstring); `ModelRefused`
        otherwise, before anything of the file is built."""
        uri = self.client.get_model_version_download_uri(self.model_name, str(version))
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri,
                    dst_path=tmp,
                    tracking_uri=self.client.tracking_uri,
                    registry_uri=self.client._registry_uri,
                )
            )
            return load_trusted(local, str(version), self.trusted_types)

    def reference_profile(self, version: str | int) -> ReferenceProfile:
        """The reference profile stored with `version` at training time."""
        mv = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(mv.run_id, REFERENCE_PROFILE_ARTIFACT, tmp)
            return ReferenceProfile.load(path)

    def holdout(self, version: str | int) -> pd.DataFrame:
        """The hold-out rows `version` was evaluated on (typed as training saw them)."""
        mv = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_parquet(self.client.download_artifacts(mv.run_id, HOLDOUT_ARTIFACT, tmp))

    def audit(
        self,
        version: str,
        action: str,
        actor: str,
        reason: str,
        previous_champion: str | None = None,
        gates: dict[str, Any] | None = None,
    ) -> None:
        self._ensure_audit_table()
        with self.engine.begin() as conn:
            conn.execute(
                insert(promotion_audit).values(
                    created_at=datetime.now(UTC),
                    model_name=self.model_name,
                    version=str(version),
                    action=action,
                    previous_champion=previous_champion,
                    actor=actor,
                    reason=reason,
                    gates=gates,
                )
            )

    def audit_rows(self, limit: int = 50) -> list[dict[str, Any]]:
        self._ensure_audit_table()
        query = (
            select(promotion_audit)
            .where(promotion_audit.c.model_name == self.model_name)
            .order_by(promotion_audit.c.created_at.desc(), promotion_audit.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def tag_version(self, version: str | int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, value)

    def set_alias(self, alias: str, version: str | int) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        self.client.delete_registered_model_alias(self.model_name, alias)

    def champion_version(self) -> str | None:
        champion = self.alias(CHAMPION)
        return champion.version if champion else None

    def _ensure_audit_table(self) -> None:
        """Create the audit table on first use, not when the registry is built: the API and
        the exporter build one only to read aliases."""
        if not self._audit_table_ready:
            init_db(self.engine)
            self._audit_table_ready = True


def load_trusted(model_dir: Path, version: str, trusted_types: frozenset[str]) -> Any:
    """The sklearn model of an MLflow model folder, if its flavor is skops and every type its
    file holds is skops' default or in `trusted_types`; `ModelRefused` naming what is not."""
    try:
        flavors = yaml.safe_load((model_dir / "MLmodel").read_text()).get("flavors") or {}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise ModelRefused(
            version, "unreadable", f"its MLmodel file cannot be read ({exc})"
        ) from None
    sklearn_flavor = flavors.get("sklearn")
    if not isinstance(sklearn_flavor, dict):
        raise ModelRefused(
            version,
            "serialization",
            f"it has no sklearn flavor (flavors: {', '.join(map(str, flavors)) or 'none'})",
        )
    serialization = sklearn_flavor.get("serialization_format", "pickle")
    if serialization != SKOPS:
        raise ModelRefused(
            version,
            "serialization",
            f"it is saved as {serialization!r}, which runs whatever code the file names when "
            f"loaded; only the skops format is loaded (log it with serialization_format='skops')",
        )
    path = model_dir / str(sklearn_flavor.get("pickled_model", "model.skops"))
    try:
        found = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # not a skops file at all
        raise ModelRefused(
            version, "unreadable", f"its model file cannot be read as skops ({exc})"
        ) from None
    untrusted = sorted(set(found) - trusted_types)
    if untrusted:
        raise ModelRefused(
            version,
            "untrusted_type",
            f"its model file holds types outside the trusted list: {', '.join(untrusted)} "
            f"(if they are yours and safe, add them to MODEL_TRUSTED_TYPES)",
        )
    return skops.io.load(path, trusted=found)


def promote(
    registry: Registry,
    version: str | int | None = None,
    *,
    actor: str,
    reason: str = "manual promotion",
    force: bool = False,
) -> VersionInfo:
    """Move `@champion` to `version` (default: the current `@challenger`)."""
    if version is None:
        challenger = registry.alias(CHALLENGER)
        if challenger is None:
            registry.require_exists()
            raise RegistryError(
                f"model {registry.model_name!r} has no @challenger to promote; "
                f"pass --version N (see `history`)"
            )
        version = challenger.version
    mv = registry.version(version)
    champion = registry.champion_version()
    if champion == mv.version:
        raise RegistryError(f"version {mv.version} is already @champion")
    gates_passed = mv.tags.get("gates.passed")
    if gates_passed != "true" and not force:
        state = "failed" if gates_passed == "false" else "were never evaluated"
        raise RegistryError(
            f"version {mv.version}'s gates {state}; use --force with --reason to promote it anyway"
        )
    if gates_passed != "true":
        reason = f"forced: {reason}"
    move_champion(registry, mv.version, "promoted", actor, reason)
    return registry.version(mv.version)


def rollback(
    registry: Registry, to_version: str | int, *, actor: str, reason: str = "manual rollback"
) -> VersionInfo:
    """Move `@champion` back to an earlier version."""
    champion = registry.alias(CHAMPION)
    if champion is None:
        registry.require_exists()
        raise RegistryError(
            f"model {registry.model_name!r} has no @champion yet; nothing to roll back"
        )
    target = registry.version(to_version)
    if int(target.version) >= int(champion.version):
        raise RegistryError(
            f"rollback goes to an earlier version than the champion (v{champion.version}); "
            f"v{target.version} is not earlier: use `promote --version {target.version}`"
        )
    move_champion(registry, target.version, "rollback", actor, reason)
    return registry.version(target.version)


def move_champion(registry: Registry, version: str, action: str, actor: str, reason: str) -> None:
    """Point `@champion` at `version` (dropping `@challenger` if it was that), and audit it."""
    previous = registry.champion_version()
    registry.set_alias(CHAMPION, version)
    challenger = registry.alias(CHALLENGER)
    if challenger is not None and challenger.version == version:
        registry.delete_alias(CHALLENGER)
    gates = gates_from_tags(registry.version(version))
    registry.audit(version, action, actor, reason, previous, gates)
    with log_context(model_version=version):
        log.info("model %s: @champion %s -> v%s (%s)", registry.model_name, previous, version,
                 action)  # fmt: skip


def gates_from_tags(mv: VersionInfo) -> dict[str, Any] | None:
    gates = {
        key.removeprefix("gate.").removesuffix(".detail"): json.loads(value)
        for key, value in mv.tags.items()
        if key.startswith("gate.") and key.endswith(".detail")
    }
    return gates or None


def history(registry: Registry, limit: int = 50) -> dict[str, Any]:
    """Versions with their aliases and gate results, and the audit trail (newest first)."""
    audit = registry.audit_rows(limit)  # first: an unreachable database is the news then
    registry.require_exists()
    aliases = {CHAMPION: registry.champion_version()}
    challenger = registry.alias(CHALLENGER)
    aliases[CHALLENGER] = challenger.version if challenger else None
    found = registry.client.search_model_versions(f"name='{registry.model_name}'")
    versions = sorted((VersionInfo.of(mv) for mv in found), key=lambda v: -int(v.version))
    return {
        "model_name": registry.model_name,
        "aliases": aliases,
        "versions": [
            {
                "version": mv.version,
                "created_at": mv.created_at.isoformat(),
                # search results do not carry aliases; take them from the lookups above
                "aliases": [name for name, v in aliases.items() if v == mv.version],
                "gates_passed": mv.tags.get("gates.passed"),
                "roc_auc": mv.tags.get("holdout.roc_auc"),
            }
            for mv in versions
        ],
        "audit": [{**row, "created_at": row["created_at"].isoformat()} for row in audit],
    }
