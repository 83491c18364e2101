"""Feature-schema loader: the single source of truth for a model's columns.

API validation, training, drift and quality checks all read the same YAML file (format in
ARCHITECTURE.md). `load_schema` refuses a file with mistakes with a `SchemaError` that names the
file, the line and the field, so a typo is fixed in seconds instead of surfacing as a KeyError in
a DAG six hours later.

    python -m data.schema schemas/fraud.yaml     # check a file, print a summary
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

FEATURE_TYPES = ("numerical", "categorical", "boolean")
_TOP_LEVEL_KEYS = {
    "name",
    "target",
    "positive_label",
    "id",
    "timestamp",
    "prediction",
    "score",
    "features",
    "description",
}
# The model's outputs as columns of logged or scored data, unless the schema names them.
DEFAULT_PREDICTION_COLUMN = "prediction"
DEFAULT_SCORE_COLUMN = "score"
_FEATURE_KEYS = {"name", "type", "min", "max", "nullable", "categories", "description"}


class SchemaError(ValueError):
    """A feature-schema file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    description: str = ""

    @property
    def is_numerical(self) -> bool:
        return self.type == "numerical"

    @property
    def is_categorical(self) -> bool:
        return self.type == "categorical"

    @property
    def is_boolean(self) -> bool:
        return self.type == "boolean"


@dataclass(frozen=True)
class FeatureSchema:
    name: str
    target: str
    features: tuple[Feature, ...]
    # The target value that is class 1 when the labels are words such as "male" / "female";
    # None: the target holds 0/1 (or true/false) already.
    positive_label: str | None = None
    id: str | None = None
    timestamp: str | None = None
    # Columns holding the predicted class and the positive-class score, in data that has them
    # (the prediction log as `read_predictions` returns it, a scored CSV handed to the drift CLI).
    prediction: str = DEFAULT_PREDICTION_COLUMN
    score: str = DEFAULT_SCORE_COLUMN
    description: str = ""
    source: str = field(default="<memory>", compare=False)

    @property
    def class_names(self) -> tuple[str, str]:
        """What classes 0 and 1 are, for people (plots): "sex ≠ male", "sex = male"."""
        positive = self.positive_label
        if positive is not None:
            return f"{self.target} ≠ {positive}", f"{self.target} = {positive}"
        return f"{self.target} = 0", f"{self.target} = 1"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numerical(self) -> list[Feature]:
        return [f for f in self.features if f.is_numerical]

    @property
    def categorical(self) -> list[Feature]:
        return [f for f in self.features if f.is_categorical]

    @property
    def boolean(self) -> list[Feature]:
        return [f for f in self.features if f.is_boolean]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature {name!r} is not in schema {self.name!r}")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping, for error messages."""


def _construct_mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    for key in {k for k in keys if keys.count(k) > 1}:
        raise SchemaError(f"line {node.start_mark.line + 1}: key {key!r} appears twice")
    return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_with_line
)


def load_schema(path: str | Path) -> FeatureSchema:
    """Read and validate a feature-schema YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: feature-schema file not found")
    try:
        raw = yaml.load(path.read_text(), Loader=_LineLoader)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: not valid YAML: {exc}") from None
    try:
        schema = parse_schema(raw)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    return replace(schema, source=str(path))


def parse_schema(raw: Any) -> FeatureSchema:
    """Validate an already-parsed schema document: a dict as in the YAML file, from
    `load_schema` (whose mappings carry their line numbers for the messages) or built in code."""
    if not isinstance(raw, dict):
        raise SchemaError("the file must be a mapping with 'name', 'target' and 'features'")
    at = _at(raw)
    unknown = set(raw) - _TOP_LEVEL_KEYS - {"__line__"}
    if unknown:
        raise SchemaError(
            f"{at}unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL_KEYS)}"
        )
    for key in ("name", "target", "features"):
        if key not in raw or raw[key] in (None, "", []):
            raise SchemaError(f"{at}missing required key {key!r}")
    for key in ("name", "target", "id", "timestamp", "prediction", "score"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            raise SchemaError(f"{at}{key!r} must be a column name (a string)")
    if not isinstance(raw["features"], list):
        raise SchemaError(f"{at}'features' must be a list of feature entries")
    positive = raw.get("positive_label")
    # YAML reads `yes` as True and `1` as 1: only text or a whole number can equal a label.
    if positive is not None and (isinstance(positive, bool) or not isinstance(positive, str | int)):
        raise SchemaError(
            f"{at}'positive_label' must be the target value that means class 1, as text "
            f'(quote it: positive_label: "yes"), got {positive!r}'
        )
    if positive is not None and str(positive) in ("0", "1"):
        raise SchemaError(f"{at}'positive_label' is for labels that are words; 0/1 need none")

    features = [_parse_feature(entry, index) for index, entry in enumerate(raw["features"])]
    seen: dict[str, int] = {}
    for feature, entry in zip(features, raw["features"], strict=True):
        if feature.name in seen:
            raise SchemaError(
                f"{_at(entry)}duplicate feature name {feature.name!r} "
                f"(first defined as feature #{seen[feature.name] + 1})"
            )
        seen[feature.name] = len(seen)
    prediction = raw.get("prediction") or DEFAULT_PREDICTION_COLUMN
    score = raw.get("score") or DEFAULT_SCORE_COLUMN
    roles = [
        (raw["target"], "target"),
        (raw.get("id"), "id"),
        (raw.get("timestamp"), "timestamp"),
        (prediction, "prediction"),
        (score, "score"),
    ]
    taken: dict[str, str] = {}
    for column, role in roles:
        if column is None:
            continue
        if column in seen:
            raise SchemaError(f"{at}column {column!r} is the {role} and cannot also be a feature")
        if column in taken:
            raise SchemaError(
                f"{at}column {column!r} is the {taken[column]} and cannot also be the {role}"
            )
        taken[column] = role
    return FeatureSchema(
        name=raw["name"],
        target=raw["target"],
        positive_label=None if positive is None else str(positive),
        id=raw.get("id"),
        timestamp=raw.get("timestamp"),
        prediction=prediction,
        score=score,
        description=raw.get("description") or "",
        features=tuple(features),
    )


def _at(mapping: dict) -> str:
    """ "line N: " when the mapping came from `load_schema`'s loader, else nothing."""
    line = mapping.get("__line__")
    return f"line {line}: " if line is not None else ""


def _parse_feature(entry: Any, index: int) -> Feature:
    if not isinstance(entry, dict):
        raise SchemaError(f"feature #{index + 1}: expected a mapping with 'name' and 'type'")
    line = f"line {entry['__line__']}, " if "__line__" in entry else ""
    where = f"{line}feature #{index + 1}"
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where}: 'name' is missing or not a string")
    where = f"{line}feature {name!r}"
    unknown = set(entry) - _FEATURE_KEYS - {"__line__"}
    if unknown:
        raise SchemaError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_FEATURE_KEYS)}"
        )
    ftype = entry.get("type")
    if ftype not in FEATURE_TYPES:
        raise SchemaError(
            f"{where}: unknown type {ftype!r}; expected one of {', '.join(FEATURE_TYPES)}"
        )
    nullable = entry.get("nullable", False)
    if not isinstance(nullable, bool):
        raise SchemaError(f"{where}: 'nullable' must be true or false")

    bounds: dict[str, float | None] = {}
    for key in ("min", "max"):
        value = entry.get(key)
        if value is not None and ftype != "numerical":
            raise SchemaError(f"{where}: {key!r} only applies to numerical features")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise SchemaError(f"{where}: {key!r} must be a number, got {value!r}")
        bounds[key] = None if value is None else float(value)
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        raise SchemaError(f"{where}: min ({bounds['min']}) is greater than max ({bounds['max']})")

    categories = entry.get("categories")
    if categories is not None:
        if ftype != "categorical":
            raise SchemaError(f"{where}: 'categories' only applies to categorical features")
        if not isinstance(categories, list) or not categories:
            raise SchemaError(f"{where}: 'categories' must be a non-empty list")
        categories = tuple(str(c) for c in categories)
        if len(set(categories)) != len(categories):
            raise SchemaError(f"{where}: 'categories' lists a value twice")
    return Feature(
        name=name,
        type=ftype,
        nullable=nullable,
        min=bounds["min"],
        max=bounds["max"],
        categories=categories,
        description=entry.get("description") or "",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a feature-schema file.")
    parser.add_argument("path", help="feature-schema YAML file")
    args = parser.parse_args(argv)
    try:
        schema = load_schema(args.path)
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    positive = f" (class 1: {schema.positive_label!r})" if schema.positive_label else ""
    print(
        f"{schema.name}: target {schema.target!r}{positive}, {len(schema.features)} features "
        f"({len(schema.numerical)} numerical, {len(schema.categorical)} categorical, "
        f"{len(schema.boolean)} boolean)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
