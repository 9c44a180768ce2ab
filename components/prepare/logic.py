"""Prepare: the preprocessing transform and the train/test split.

The transform is fitted on the training split only and ends up as the first step of the
model's scikit-learn Pipeline, so the model server applies exactly what training applied.
"""

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from components.common.errors import PipelineInputError
from components.validate.logic import CATEGORICAL, NUMERIC

MISSING_CATEGORY = "__missing__"


def feature_names(schema: dict, kind: str | None = None) -> list[str]:
    return [f["name"] for f in schema["features"] if kind is None or f["kind"] == kind]


def build_preprocessor(schema: dict) -> ColumnTransformer:
    """Impute and scale numeric features; impute and one-hot encode categorical ones.

    Unknown categories at serving time encode as all zeros instead of failing.
    """
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    # Missing categoricals arrive as MISSING_CATEGORY (see as_model_input), a category of its own.
    categorical = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    return ColumnTransformer(
        [
            ("numeric", numeric, feature_names(schema, NUMERIC)),
            ("categorical", categorical, feature_names(schema, CATEGORICAL)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )


def as_model_input(frame: pd.DataFrame, schema: dict) -> pd.DataFrame:
    """The feature columns in schema order, categoricals as strings with a token for missing.

    Strings only (no NaN or None) in categorical columns keep the encoder, and an ONNX export of
    it, free of mixed types.
    """
    columns = feature_names(schema)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineInputError(f"column '{missing[0]}' (a feature) is not in the data")
    features = frame[columns].copy()
    for name in feature_names(schema, CATEGORICAL):
        values = features[name]
        features[name] = values.astype(str).where(values.notna(), MISSING_CATEGORY).astype(object)
    return features


def split_table(
    frame: pd.DataFrame, schema: dict, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop unlabelled rows, then split; stratified by the label for classification."""
    target = schema["target"]
    labelled = frame[frame[target].notna()].reset_index(drop=True)
    stratify = labelled[target] if schema["task"] == "classification" else None
    if stratify is not None:
        smallest = labelled[target].value_counts().min()
        if smallest < 2:
            raise PipelineInputError(
                f"column '{target}' (the target): a class has {smallest} row; "
                "a stratified split needs at least 2 per class"
            )
    try:
        train, test = train_test_split(
            labelled, test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as error:
        raise PipelineInputError(f"split with test_size={test_size}: {error}") from None
    return train.reset_index(drop=True), test.reset_index(drop=True)


def fit_preprocessor(train: pd.DataFrame, schema: dict) -> ColumnTransformer:
    return build_preprocessor(schema).fit(as_model_input(train, schema))
