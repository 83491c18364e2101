"""Fast scoring of request dicts with the registered sklearn pipeline.

`model.predict_proba(one_row_dataframe)` costs about 3.5 ms here: building the DataFrame, sklearn's
input validation in every step, and HistGradientBoosting walking its trees one Python call per
tree. For one row none of that is needed. `CompiledScorer` reads the fitted pipeline once
(imputer medians, one-hot categories, every tree's nodes) and then scores a request as:

1. features: a preallocated vector filled from the dict (median for a missing number, a 1 at the
   index of a known category, nothing for an unseen one), exactly what the ColumnTransformer does;
2. trees: all trees walked at once with numpy, one vectorised step per tree level;
3. the link: sigmoid(baseline + sum of leaf values), as HistGradientBoosting's log-loss does.

`CompiledScorer.compile` refuses pipelines it does not understand (another classifier,
categorical splits, multi-class) by raising `NotCompilable`; `make_scorer` then falls back to the
pipeline itself, slower but always right. `verify` compares both on real rows; the API runs it
at every load and refuses a compiled scorer that differs by more than 1e-6.

It lives with the model code, not the HTTP code: the API serves with it, and the operational
gate times the very scorer the API will load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from data.schema import FeatureSchema

log = logging.getLogger(__name__)

TOLERANCE = 1e-6
# Hold-out rows the compiled scorer is checked against the pipeline on, at every load.
VERIFY_ROWS = 2_000
BATCH_ROWS = 128  # from here on sklearn's own predictor beats the numpy tree walk


class NotCompilable(ValueError):
    """The pipeline has a step the compiled scorer does not reproduce."""


class Scorer(Protocol):
    kind: str

    def score_one(self, features: Mapping[str, Any]) -> float: ...

    def score_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray: ...


# From this many rows on, the matrix is built column by column.
COLUMNWISE_ROWS = 32


class PipelineScorer:
    """The slow, general path: the sklearn pipeline on a DataFrame."""

    kind = "pipeline"

    def __init__(self, pipeline: Pipeline, schema: FeatureSchema) -> None:
        self.pipeline = pipeline
        self.columns = schema.feature_names

    def score_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        frame = pd.DataFrame.from_records(list(rows), columns=self.columns)
        for name in frame.columns:
            if frame[name].dtype == object:
                frame[name] = frame[name].where(frame[name].notna(), np.nan)
        return self.pipeline.predict_proba(frame)[:, 1]

    def score_one(self, features: Mapping[str, Any]) -> float:
        return float(self.score_many([features])[0])


class CompiledScorer:
    """Pipeline(ColumnTransformer(SimpleImputer, OneHotEncoder), HistGradientBoosting), compiled."""

    kind = "compiled"

    def __init__(
        self,
        numeric: list[tuple[str, int, float]],
        categorical: dict[str, dict[str, int]],
        width: int,
        trees: dict[str, np.ndarray],
        baseline: float,
        depth: int,
        classifier: HistGradientBoostingClassifier,
    ) -> None:
        self.numeric = numeric  # (feature, column, fill value)
        self.categorical = categorical  # feature -> {category: column}
        self.width = width
        self.baseline = baseline
        self.depth = depth
        self.roots = trees["roots"]
        self.feature = trees["feature"]
        self.threshold = trees["threshold"]
        self.left = trees["left"]
        self.right = trees["right"]
        self.value = trees["value"]
        self.classifier = classifier

    @classmethod
    def compile(cls, pipeline: Pipeline, schema: FeatureSchema) -> CompiledScorer:
        steps = list(pipeline.named_steps.values())
        if len(steps) != 2 or not isinstance(steps[0], ColumnTransformer):
            raise NotCompilable("expected Pipeline([ColumnTransformer, classifier])")
        transformer, classifier = steps
        if not isinstance(classifier, HistGradientBoostingClassifier):
            raise NotCompilable(f"classifier {type(classifier).__name__} is not compiled")
        if classifier.n_trees_per_iteration_ != 1 or list(classifier.classes_) != [0, 1]:
            raise NotCompilable("only binary 0/1 classifiers are compiled")
        if classifier._baseline_prediction.shape != (1, 1):
            raise NotCompilable("unexpected baseline shape")
        numeric, categorical, width = cls._compile_features(transformer, schema)
        trees, depth = cls._compile_trees(classifier)
        baseline = float(classifier._baseline_prediction[0, 0])
        return cls(numeric, categorical, width, trees, baseline, depth, classifier)

    @staticmethod
    def _compile_features(
        transformer: ColumnTransformer, schema: FeatureSchema
    ) -> tuple[list[tuple[str, int, float]], dict[str, dict[str, int]], int]:
        numeric: list[tuple[str, int, float]] = []
        categorical: dict[str, dict[str, int]] = {}
        column = 0
        covered: set[str] = set()
        for name, step, columns in transformer.transformers_:
            if name == "remainder":
                if step != "drop":
                    raise NotCompilable("remainder columns are not compiled")
                continue
            if isinstance(step, SimpleImputer) and step.strategy in ("median", "mean"):
                if step.add_indicator:
                    raise NotCompilable("missing indicators are not compiled")
                for feature, fill in zip(columns, step.statistics_, strict=True):
                    numeric.append((feature, column, float(fill)))
                    column += 1
            elif isinstance(step, OneHotEncoder) and step.handle_unknown == "ignore":
                if step.drop is not None:
                    raise NotCompilable("one-hot with drop is not compiled")
                for feature, categories in zip(columns, step.categories_, strict=True):
                    categorical[feature] = {str(c): column + i for i, c in enumerate(categories)}
                    column += len(categories)
            else:
                raise NotCompilable(f"transformer {name!r} ({type(step).__name__}) not compiled")
            covered.update(columns)
        if covered != set(schema.feature_names):
            raise NotCompilable("the pipeline's columns differ from the feature schema")
        return numeric, categorical, column

    @staticmethod
    def _compile_trees(classifier: HistGradientBoostingClassifier) -> tuple[dict, int]:
        roots, features, thresholds, lefts, rights, values = [], [], [], [], [], []
        offset, depth = 0, 0
        for (predictor,) in classifier._predictors:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise NotCompilable("categorical splits are not compiled")
            leaf = nodes["is_leaf"].astype(bool)
            index = np.arange(len(nodes)) + offset
            roots.append(offset)
            # A leaf points at itself and compares against +inf, so walking past it stays put:
            # every tree can take the same number of steps without a per-node branch.
            features.append(np.where(leaf, 0, nodes["feature_idx"]))
            thresholds.append(np.where(leaf, np.inf, nodes["num_threshold"]))
            lefts.append(np.where(leaf, index, nodes["left"] + offset))
            rights.append(np.where(leaf, index, nodes["right"] + offset))
            values.append(np.where(leaf, nodes["value"], 0.0))
            depth = max(depth, int(nodes["depth"].max()))
            offset += len(nodes)
        trees = {
            "roots": np.array(roots, dtype=np.intp),
            "feature": np.concatenate(features).astype(np.intp),
            "threshold": np.concatenate(thresholds).astype(np.float64),
            "left": np.concatenate(lefts).astype(np.intp),
            "right": np.concatenate(rights).astype(np.intp),
            "value": np.concatenate(values).astype(np.float64),
        }
        return trees, depth

    def vectorize(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The ColumnTransformer's output for `rows`, without pandas."""
        if len(rows) >= COLUMNWISE_ROWS:
            return self._vectorize_columns(rows)
        matrix = np.zeros((len(rows), self.width))
        for r, row in enumerate(rows):
            out = matrix[r]
            for feature, column, fill in self.numeric:
                value = row.get(feature)
                out[column] = fill if value is None or value != value else value
            for feature, columns in self.categorical.items():
                column = columns.get(row.get(feature))
                if column is not None:
                    out[column] = 1.0
        return matrix

    def _vectorize_columns(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        # The same matrix built a column at a time: numpy does the per-row work of big batches.
        matrix = np.zeros((len(rows), self.width))
        for feature, column, fill in self.numeric:
            values = np.array([row.get(feature) for row in rows], dtype=np.float64)  # None: NaN
            matrix[:, column] = np.where(np.isnan(values), fill, values)
        for feature, columns in self.categorical.items():
            hits = [columns.get(row.get(feature), -1) for row in rows]
            where = np.array(hits, dtype=np.intp)
            known = where >= 0
            matrix[np.flatnonzero(known), where[known]] = 1.0
        return matrix

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        """Sum of leaf values per row (the model's log-odds before the baseline)."""
        nodes = np.broadcast_to(self.roots, (len(matrix), len(self.roots)))
        rows = np.arange(len(matrix))[:, None]
        for _ in range(self.depth):
            go_left = matrix[rows, self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(go_left, self.left[nodes], self.right[nodes])
        return self.value[nodes].sum(axis=1)

    def score_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        matrix = self.vectorize(rows)
        if len(rows) >= BATCH_ROWS:
            # For many rows sklearn's compiled tree walk wins; the matrix is the same either way.
            return self.classifier.predict_proba(matrix)[:, 1]
        raw = self.raw(matrix) + self.baseline
        return 1.0 / (1.0 + np.exp(-raw))

    def score_one(self, features: Mapping[str, Any]) -> float:
        return float(self.score_many((features,))[0])


def make_scorer(pipeline: Pipeline, schema: FeatureSchema, sample: pd.DataFrame) -> Scorer:
    """The compiled scorer when it reproduces `pipeline` on `sample` within TOLERANCE, else the
    pipeline itself."""
    try:
        compiled = CompiledScorer.compile(pipeline, schema)
    except NotCompilable as exc:
        log.warning("scoring with the sklearn pipeline (slower): %s", exc)
        return PipelineScorer(pipeline, schema)
    difference = verify(compiled, pipeline, sample, schema)
    if difference > TOLERANCE:
        log.error("compiled scorer differs by %.3g from the model; using the pipeline", difference)
        return PipelineScorer(pipeline, schema)
    return compiled


def verify(
    scorer: Scorer, pipeline: Pipeline, sample: pd.DataFrame, schema: FeatureSchema
) -> float:
    """Largest |difference| in positive-class probability between `scorer` and `pipeline`."""
    frame = sample[schema.feature_names]
    expected = pipeline.predict_proba(frame)[:, 1]
    records = request_records(frame, schema)
    # Both paths: one row at a time (as /predict scores) and all rows at once (/predict/batch).
    one_by_one = np.array([scorer.score_one(r) for r in records[:500]])
    difference = np.abs(one_by_one - expected[:500]).max()
    return float(max(difference, np.abs(scorer.score_many(records) - expected).max()))


def request_records(frame: pd.DataFrame, schema: FeatureSchema) -> list[dict[str, Any]]:
    """Typed rows as the API hands them to a scorer: one dict each, None where missing."""
    return [
        {k: (None if _missing(v) else v) for k, v in row.items()}
        for row in frame[schema.feature_names].to_dict("records")
    ]


def time_one_row(scorer: Scorer, records: Sequence[Mapping[str, Any]], repeats: int = 500) -> dict:
    """Median and p99 microseconds of `scorer.score_one`, one record at a time on one thread,
    as `/predict` scores: what the operational gate holds against its budget.

    One OpenMP thread, as each API worker runs: with OpenMP's thread per core, a busy machine
    turned one row's hand-off between threads into ~0.9 s stalls, which failed the gate for a
    reason the API never meets."""
    timings = np.empty(repeats)
    with threadpool_limits(1):
        for i in range(repeats):
            record = records[i % len(records)]
            start = time.perf_counter()
            scorer.score_one(record)
            timings[i] = (time.perf_counter() - start) * 1e6
    return {
        "scorer": scorer.kind,
        "p50_us": float(np.percentile(timings, 50)),
        "p99_us": float(np.percentile(timings, 99)),
        "repeats": repeats,
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
