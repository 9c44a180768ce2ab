"""The schema's vocabulary, shared by every stage and the model server.

validate writes the schema (the target, the task, the classes, and each feature's name, kind and
whether it had missing values); every later step, the served model and the ONNX client read
features through it. `as_model_input` is the one way a table becomes the model's input: the
features in schema order, categorical ones as strings with MISSING_CATEGORY for a missing value.
"""

import numpy as np
import pandas as pd

from components.common.columnwise import columnwise
from components.common.errors import PipelineInputError
from components.common.vocabulary import (  # noqa: F401  (the schema's words, with its functions)
    CATEGORICAL,
    FEATURE_KINDS,
    MISSING_CATEGORY,
    NUMERIC,
    TASKS,
)


def feature_names(schema: dict, kind: str | None = None) -> list[str]:
    return [f["name"] for f in schema["features"] if kind is None or f["kind"] == kind]


def as_model_input(frame: pd.DataFrame, schema: dict) -> pd.DataFrame:
    """The feature columns in schema order, categoricals as strings with a token for missing.

    Strings only (no NaN or None) in categorical columns keep the encoder, and an ONNX export of
    it, free of mixed types.
    """
    return model_input(frame, schema, text_with_token)


def model_input(frame: pd.DataFrame, schema: dict, categorical_values) -> pd.DataFrame:
    """The feature columns in schema order, each categorical one as `categorical_values` makes
    it (text_with_token: strings; coded_with_token: a categorical of the same strings)."""
    columns = feature_names(schema)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineInputError(f"column '{missing[0]}' (a feature) is not in the data")
    features = {name: frame[name] for name in columns}  # read here, in this thread
    categorical = [name for name in feature_names(schema, CATEGORICAL) if name in features]
    # Each categorical column converted on a thread of its own: a per-row take of its codes.
    converted = columnwise(categorical_values, [features[name] for name in categorical])
    features.update(zip(categorical, converted, strict=True))
    # Numeric columns are shared with `frame`, not copied: the transforms never write to their
    # input (DerivedFeatures copies before it adds columns).
    return pd.DataFrame(features, index=frame.index, copy=False)


def text_with_token(values: pd.Series) -> pd.Series:
    """A categorical feature as str objects, MISSING_CATEGORY where a value is missing."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        # From the codes: one str per category, not one per row (code -1, missing, takes the
        # token at the end).
        text = np.append(values.cat.categories.astype(str).to_numpy(dtype=object), MISSING_CATEGORY)
        return pd.Series(text[values.cat.codes.to_numpy()], index=values.index, name=values.name)
    return values.astype(str).where(values.notna(), MISSING_CATEGORY).astype(object)


def coded_with_token(values: pd.Series) -> pd.Series:
    """text_with_token's strings as a categorical: codes per row, each string once."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return text_with_token(values)
    text = np.append(values.cat.categories.astype(str).to_numpy(dtype=object), MISSING_CATEGORY)
    # Distinct strings (a category may read as the token, or two as one string), and each old
    # code's new one; code -1, missing, takes the token at the end.
    categories, renumbered = np.unique(text, return_inverse=True)
    # As narrow as the categoricals' own codes: the take below makes an array per row.
    codes = renumbered.astype(np.min_scalar_type(-len(categories)))[values.cat.codes.to_numpy()]
    coded = pd.Categorical.from_codes(codes, categories=categories)
    return pd.Series(coded, index=values.index, name=values.name)
