"""Validate: the table has the columns and types the run needs; write the feature schema."""

import pandas as pd

from components.common.columnwise import columnwise
from components.common.errors import PipelineInputError
from components.common.schema import CATEGORICAL, FEATURE_KINDS, NUMERIC, TASKS


def column_kind(series: pd.Series) -> str:
    """Numeric for numbers (not booleans), categorical for everything else."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return CATEGORICAL
    return NUMERIC


def validate_table(
    frame: pd.DataFrame,
    target: str,
    task: str,
    sensitive_columns: list[str],
    column_types: dict[str, str],
) -> dict:
    """Check the table against the run config and return its schema.

    Args:
        frame: the ingested table.
        target: the label column.
        task: "classification" or "regression".
        sensitive_columns: columns that bias analysis groups by; they must exist.
        column_types: declared kinds ("numeric" or "categorical") of columns that must exist.
            Columns not declared here are features of the kind their dtype suggests.

    Returns:
        The schema: target, task, classes (classification), features as name/kind/nullable,
        and the number of rows dropped because their label was missing.

    Raises:
        PipelineInputError: naming the column and what was wrong with it.
    """
    if task not in TASKS:
        raise PipelineInputError(f"task '{task}': expected one of {', '.join(TASKS)}")
    columns = set(frame.columns)
    if target not in columns:
        raise PipelineInputError(f"column '{target}' (the target) is not in the data")
    for column in sensitive_columns:
        if column not in columns:
            raise PipelineInputError(f"column '{column}' (a sensitive column) is not in the data")
    for column, kind in column_types.items():
        if kind not in FEATURE_KINDS:
            raise PipelineInputError(
                f"column '{column}': declared type '{kind}', expected one of {', '.join(FEATURE_KINDS)}"
            )
        if column not in columns:
            raise PipelineInputError(f"column '{column}' (declared {kind}) is not in the data")
        actual = column_kind(frame[column])
        if kind == NUMERIC and actual != NUMERIC:
            raise PipelineInputError(
                f"column '{column}': declared numeric but holds {frame[column].dtype} values"
            )

    labels = frame[target]
    if labels.isna().all():
        raise PipelineInputError(f"column '{target}' (the target) has no values")
    schema: dict = {"target": target, "task": task, "missing_labels": int(labels.isna().sum())}
    labels = labels.dropna()
    if task == "classification":
        classes = sorted(labels.unique().tolist(), key=str)
        if len(classes) < 2:
            raise PipelineInputError(
                f"column '{target}' (the target) has one class ({classes[0]!r}); "
                "classification needs at least two"
            )
        schema["classes"] = classes
    elif column_kind(labels) != NUMERIC:
        raise PipelineInputError(
            f"column '{target}' (the target) holds {labels.dtype} values; regression needs numbers"
        )

    names = [column for column in frame.columns if column != target]
    features = []
    for column, missing in zip(names, missing_counts(frame, names), strict=True):
        if missing == len(frame):
            raise PipelineInputError(f"column '{column}' has no values (every row is missing)")
        features.append(
            {
                "name": column,
                "kind": column_types.get(column) or column_kind(frame[column]),
                # Whether the data had missing values here: the model server refuses null
                # and NaN in a feature that never had one (the imputer never saw it happen).
                "nullable": missing > 0,
            }
        )
    if not features:
        raise PipelineInputError(f"the data has no feature columns besides the target '{target}'")
    schema["features"] = features
    return schema


def missing_counts(frame: pd.DataFrame, names: list) -> list[int]:
    """How many values of each named column are missing, the columns counted on every core."""
    columns = [frame[name] for name in names]  # read here, in this thread
    return columnwise(lambda values: int(values.isna().sum()), columns)
