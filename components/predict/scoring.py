"""The model a batch job scores with, and scoring one Arrow table with it.

The version is read through the registry: each file's SHA-256 is checked before it is used (a
pickle is code). The runtime is chosen by one rule (`choose_runtime`): the ONNX graph when the
version has one whose export parity check passed, else scikit-learn's model.joblib.

Scoring a table builds the model's input as the model server does (numbers as float64 with NaN
for missing, categories as text with the missing token: components.common.schema), so a row
scored here gets the server's answer.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from components.common.errors import PipelineInputError
from components.common.prediction_log import PREDICTION, PROBABILITY_PREFIX
from components.common.registry import (
    MODEL_FILE,
    ONNX_FILE,
    ModelRegistry,
    read_verified,
    unpickle_model,
)
from components.common.schema import NUMERIC, as_model_input, feature_names

ONNX, SKLEARN = "onnx", "sklearn"
RUNTIMES = ("auto", ONNX, SKLEARN)
MODEL_VERSION = "model_version"


def choose_runtime(metadata: dict, wanted: str = "auto") -> str:
    """onnx when the version holds model.onnx and its recorded parity check passed (the register
    step records the export's `parity_passed`), else sklearn; `wanted` forces one.

    Raises:
        PipelineInputError: onnx is asked for and the version has no graph with parity proven.
    """
    if wanted not in RUNTIMES:
        raise PipelineInputError(
            f"predict.runtime '{wanted}': expected one of {', '.join(RUNTIMES)}"
        )
    proven = (
        ONNX_FILE in (metadata.get("files") or {})
        and (metadata.get("onnx") or {}).get("parity_passed") is True
    )
    if wanted == ONNX and not proven:
        raise PipelineInputError(
            f"predict.runtime onnx: {metadata.get('name')} {metadata.get('version')} has no "
            "ONNX graph whose parity check passed (use runtime auto or sklearn)"
        )
    if wanted == SKLEARN:
        return SKLEARN
    return ONNX if proven else SKLEARN


@dataclass(frozen=True)
class ModelPayload:
    """What a worker needs to build the model: the version's metadata, the runtime and the one
    verified file it reads. Plain bytes, so a Ray worker gets it without touching the store."""

    metadata: dict
    runtime: str
    data: bytes = field(repr=False)


def read_payload(registry: ModelRegistry, ref: str, runtime: str = "auto") -> ModelPayload:
    """The version `ref` names (a version or an alias), its file checked against its SHA-256.

    Raises:
        PipelineInputError: no such version or alias; ModelIntegrityError: the checksum differs.
    """
    version = registry.resolve(ref)
    metadata = registry.metadata(version)
    chosen = choose_runtime(metadata, runtime)
    name = ONNX_FILE if chosen == ONNX else MODEL_FILE
    files = read_verified(registry.uri(version), metadata, registry.fs, only=(name,))
    return ModelPayload(metadata, chosen, files[name])


@dataclass(frozen=True)
class ScoringModel:
    """A loaded version: `predict(frame)` gives (labels, probabilities or None) for a frame of
    the features as received (`received_features`: numbers as float64); each runtime makes the
    model's input from it as training did (components.common.schema.as_model_input)."""

    name: str
    version: str
    schema: dict
    runtime: str
    classes: list | None
    predict: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray | None]]


def load_model(payload: ModelPayload, threads: int = 0) -> ScoringModel:
    """Build the scoring model from a payload (in the driver, or once per Ray worker)."""
    metadata = payload.metadata
    schema = metadata["schema"]
    where = f"{metadata.get('name')} {metadata.get('version')}"
    classification = schema["task"] == "classification"
    if payload.runtime == ONNX:
        from components.common.onnx_runtime import load_session, predict_onnx

        session = load_session(payload.data, threads)
        # The probabilities' columns are the model's classes_ in its own order, which the export
        # records in the graph (the schema's are sorted as text: 10 before 2).
        recorded = session.get_modelmeta().custom_metadata_map.get("classes")
        classes = None
        if classification:
            classes = json.loads(recorded) if recorded else list(schema.get("classes") or [])

        def predict(frame):
            return predict_onnx(session, frame, schema)

        return ScoringModel(
            metadata["name"], metadata["version"], schema, ONNX, classes or None, predict
        )
    model = unpickle_model(payload.data, f"{where}: {MODEL_FILE}")
    probabilities = classification and hasattr(model, "predict_proba")
    classes = np.asarray(model.classes_).tolist() if probabilities else None
    answer = both_answers(model, probabilities)

    def predict(frame):
        return answer(as_model_input(frame, schema))

    return ScoringModel(metadata["name"], metadata["version"], schema, SKLEARN, classes, predict)


def both_answers(model, probabilities: bool) -> Callable:
    """A function of the model's input giving (model.predict, model.predict_proba or None).

    For a scikit-learn Pipeline, its preprocessing runs once and the last step gives both: what
    Pipeline.predict and predict_proba compute, each of which would run the preprocessing again
    (on a wide one-hot input that is most of the time). Anything else: the two calls.
    """
    from sklearn.pipeline import Pipeline

    if not probabilities:
        return lambda frame: (np.asarray(model.predict(frame)), None)
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        head, final = model[:-1], model.steps[-1][1]

        def once(frame):
            features = head.transform(frame)
            labels = np.asarray(final.predict(features))
            return labels, np.asarray(final.predict_proba(features), dtype=np.float64)

        return once

    def separately(frame):
        labels = np.asarray(model.predict(frame))
        return labels, np.asarray(model.predict_proba(frame), dtype=np.float64)

    return separately


def received_features(table: pa.Table, schema: dict) -> pd.DataFrame:
    """The features of an Arrow table as received: numbers as float64, text as read (text read
    as dictionaries becomes pandas categoricals: a code per row, each string once).

    Raises:
        PipelineInputError: a numeric feature holds a value that is not a number (one line,
            naming the column and the value).
    """
    frame = table.select(feature_names(schema)).to_pandas()
    for name in feature_names(schema, NUMERIC):
        frame[name] = as_numbers(frame[name], name)
    return frame


def as_numbers(values: pd.Series, name: str) -> pd.Series:
    """A numeric feature as float64 (NaN where missing); text that reads as a number is cast."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype(np.float64)
    cast = pd.to_numeric(values.astype(object), errors="coerce")
    bad = cast.isna() & values.notna()
    if bad.any():
        raise PipelineInputError(
            f"column '{name}' (a numeric feature): value {values[bad].iloc[0]!r} cannot be cast "
            "to a number"
        )
    return cast.astype(np.float64)


def scored_columns(model: ScoringModel, frame: pd.DataFrame) -> dict[str, pa.Array]:
    """The prediction and each class's probability for the features as received."""
    labels, probabilities = model.predict(frame)
    columns = {PREDICTION: arrow_labels(labels)}
    if probabilities is not None and model.classes:
        for position, label in enumerate(model.classes):
            columns[f"{PROBABILITY_PREFIX}{label}"] = pa.array(
                probabilities[:, position], pa.float64()
            )
    return columns


def arrow_labels(labels: np.ndarray) -> pa.Array:
    """Predictions as Arrow: numbers and booleans keep their type, anything else is text."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "biuf":
        return pa.array(labels)
    return pa.array(
        [None if value is None else str(value) for value in labels.tolist()], pa.string()
    )
