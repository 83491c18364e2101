"""Request and response models, the feature model generated from the feature schema.

The `features` object of `/predict` is a pydantic model built from the schema file at start, so
the OpenAPI docs list every feature with its type and bounds, and a request is refused with a 422
naming the field when a feature is missing, extra, of the wrong type (strict: "1.5" is not a
number, 1 is not a boolean), NaN or infinite, or a categorical value is longer than
CATEGORICAL_MAX_LENGTH characters. A null is accepted only for `nullable` features.
Values outside the schema's bounds and unseen categories are *accepted*: they are what drift and
quality monitoring exist to catch, and refusing them would hide the very change to be seen.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, NotRequired

from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model, field_validator
from typing_extensions import TypedDict

from data.db import as_utc
from data.schema import Feature, FeatureSchema

# Text that Postgres can store: no NUL character (a Rust-side pattern, which also refuses lone
# surrogates as invalid Unicode). One such value would otherwise fail every COPY of its batch.
STORABLE_TEXT = r"^[^\x00]*$"

RequestId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=STORABLE_TEXT,
        description="Caller's id; feedback refers to it",
    ),
]
StorableStr = Annotated[str, Field(strict=True, pattern=STORABLE_TEXT)]


# CATEGORICAL_MAX_LENGTH's default: far above any category name, far below what fills a row.
CATEGORICAL_MAX_LENGTH = 256


def _feature_field(feature: Feature, max_length: int) -> tuple[Any, Any]:
    if feature.is_numerical:
        bounds = []
        if feature.min is not None:
            bounds.append(f"expected ≥ {feature.min:g}")
        if feature.max is not None:
            bounds.append(f"expected ≤ {feature.max:g}")
        annotation: Any = Annotated[float, Field(strict=True, allow_inf_nan=False)]
        extra = "; ".join(bounds)
    elif feature.is_boolean:
        annotation, extra = StrictBool, ""
    else:
        annotation = Annotated[StorableStr, Field(max_length=max_length)]
        extra = f"one of {', '.join(feature.categories)}" if feature.categories else ""
    description = " ".join(p for p in (feature.description, f"({extra})" if extra else "") if p)
    if feature.nullable:
        annotation = annotation | None
    return annotation, Field(..., description=description or None)


def build_models(
    schema: FeatureSchema, categorical_max_length: int = CATEGORICAL_MAX_LENGTH
) -> dict[str, Any]:
    """The request types for `schema`: Features, PredictRequest, BatchPredictRequest.

    Features and PredictRequest are TypedDicts, not models: a batch validates into plain dicts
    four times faster than into a thousand pairs of model objects, with the same strictness,
    errors and OpenAPI schema. A missing `request_id` is filled in by the handler.
    """
    fields = {f.name: _feature_field(f, categorical_max_length) for f in schema.features}
    features = TypedDict(  # type: ignore[misc]  # the functional form takes computed fields
        "Features", {name: Annotated[kind, info] for name, (kind, info) in fields.items()}
    )
    features.__doc__ = f"Input features of the {schema.name!r} model (from {schema.source})."
    features.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    predict_request = TypedDict(  # noqa: UP013  (class syntax cannot refer to `features`)
        "PredictRequest",
        {"request_id": NotRequired[RequestId], "features": features},
    )
    predict_request.__doc__ = "One transaction to score; without a request_id, one is made up."
    predict_request.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    batch_request = create_model(
        "BatchPredictRequest",
        __config__=ConfigDict(extra="forbid"),
        instances=(list[predict_request], Field(..., min_length=1)),
    )
    return {
        "Features": features,
        "PredictRequest": predict_request,
        "BatchPredictRequest": batch_request,
    }


class PredictResponse(BaseModel):
    request_id: str
    predicted_class: int
    confidence: float = Field(description="Probability of the predicted class")
    probabilities: dict[str, float] = Field(description="Probability per class label")
    model_version: str


class BatchPredictResponse(BaseModel):
    predictions: list[PredictResponse]


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: RequestId
    label: Annotated[int, Field(ge=0, le=1, strict=True, description="Ground truth: 0 or 1")]
    labelled_at: datetime | None = Field(
        default=None,
        description="When the truth became known (default: when first received); a time "
        "without a zone is UTC",
    )

    @field_validator("labelled_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        # Stored and compared in UTC (a retry must compare equal whatever zone it names); a
        # time at the edge of the calendar that has no UTC value is a 422, not a 500.
        if value is None:
            return None
        try:
            return as_utc(value)
        except OverflowError:
            raise ValueError("has no UTC value (out of the calendar's range)") from None


class BatchFeedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[Feedback] = Field(..., min_length=1)


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="Labels stored (a request id sent twice counts once)")
    awaiting_prediction: list[str] = Field(
        default_factory=list,
        description="Request ids whose prediction was not in the log yet: their labels are "
        "kept and join the prediction when it is written (LABEL_MATCH_MINUTES)",
    )


class ReloadResponse(BaseModel):
    previous_version: str | None
    model_version: str
    changed: bool


class ErrorResponse(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None
