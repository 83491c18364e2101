"""Schema-driven feature pipeline: raw typed columns in, a numeric matrix out.

Built on sklearn's `ColumnTransformer`, so the fitted pipeline can be saved with the model and
serve exactly what training saw. Input is a frame as `data.ingest.coerce_frame` returns it:
numerical and boolean columns as float64 (NaN for missing), categorical columns as strings.

- numerical and boolean: median imputation (HistGradientBoosting copes with NaN, RandomForest
  does not, and one pipeline serves both);
- categorical: one-hot over the schema's categories (or those seen in training when the schema
  lists none); an unseen or missing category encodes as all zeros instead of failing, because a
  new category in production is a drift signal to report, not a reason to refuse a prediction.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import OneHotEncoder

from data.schema import FeatureSchema


class FeaturePipeline:
    """Fit / transform / save / load a ColumnTransformer built from a feature schema."""

    def __init__(self, schema: FeatureSchema) -> None:
        self.schema = schema
        self.column_transformer: ColumnTransformer | None = None

    @property
    def input_columns(self) -> list[str]:
        return self.schema.feature_names

    def build(self, frame: pd.DataFrame) -> ColumnTransformer:
        """An unfitted ColumnTransformer whose category lists come from the schema or `frame`."""
        numeric = [f.name for f in self.schema.features if not f.is_categorical]
        categorical = self.schema.categorical
        categories = [
            list(f.categories) if f.categories else sorted(frame[f.name].dropna().unique())
            for f in categorical
        ]
        transformers = []
        if numeric:
            imputer = SimpleImputer(strategy="median", keep_empty_features=True)
            transformers.append(("numerical", imputer, numeric))
        if categorical:
            encoder = OneHotEncoder(
                categories=categories,
                handle_unknown="ignore",
                sparse_output=False,
                dtype=np.float64,
            )
            transformers.append(("categorical", encoder, [f.name for f in categorical]))
        return ColumnTransformer(transformers, verbose_feature_names_out=False)

    def fit(self, frame: pd.DataFrame) -> FeaturePipeline:
        self._check_columns(frame)
        self.column_transformer = self.build(frame).fit(frame[self.input_columns])
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        if self.column_transformer is None:
            raise RuntimeError("FeaturePipeline.transform called before fit")
        self._check_columns(frame)
        return self.column_transformer.transform(frame[self.input_columns])

    def fit_transform(self, frame: pd.DataFrame) -> np.ndarray:
        return self.fit(frame).transform(frame)

    @property
    def output_names(self) -> list[str]:
        if self.column_transformer is None:
            raise RuntimeError("FeaturePipeline is not fitted")
        return list(self.column_transformer.get_feature_names_out())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"schema": self.schema, "column_transformer": self.column_transformer}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeaturePipeline:
        state = joblib.load(path)
        pipeline = cls(state["schema"])
        pipeline.column_transformer = state["column_transformer"]
        return pipeline

    def _check_columns(self, frame: pd.DataFrame) -> None:
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"feature column(s) missing: {', '.join(missing)}")
