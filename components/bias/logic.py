"""Bias analysis: who is in the data, and how the model treats each group.

Numeric sensitive columns (such as age) are compared in bands. Per-group model metrics come
from fairlearn's MetricFrame.
"""

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, selection_rate
from sklearn.metrics import accuracy_score, mean_absolute_error

from components.common.errors import PipelineInputError

# A numeric column with more distinct values than this is compared in quantile bands.
MAX_GROUPS_UNBINNED = 10
NUMERIC_BANDS = 4


def sensitive_groups(frame: pd.DataFrame, column: str) -> pd.Series:
    """The group label of each row for one sensitive column: values, or bands of a numeric column."""
    if column not in frame.columns:
        raise PipelineInputError(f"column '{column}' (a sensitive column) is not in the data")
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_GROUPS_UNBINNED:
        bands = pd.qcut(values, q=NUMERIC_BANDS, duplicates="drop", precision=0)
        labels = bands.astype(str).str.replace(r"\.0\b", "", regex=True)
        return labels.where(values.notna(), "missing").rename(column)
    return values.astype(str).where(values.notna(), "missing").rename(column)


def positive_label(schema: dict, positive_class: str) -> object:
    """The class that counts as the favourable outcome (selection) for binary classification."""
    classes = schema.get("classes", [])
    if positive_class:
        matches = [c for c in classes if str(c) == positive_class]
        if not matches:
            raise PipelineInputError(
                f"positive_class '{positive_class}' is not a class of '{schema['target']}' "
                f"(classes: {', '.join(map(str, classes))})"
            )
        return matches[0]
    return classes[-1] if len(classes) == 2 else None


def data_bias(
    frame: pd.DataFrame, schema: dict, sensitive_columns: list[str], positive_class: str
) -> dict[str, pd.DataFrame]:
    """Per sensitive column: group size, share of rows, and base rate of the favourable label.

    For regression the "base rate" is the mean target.
    """
    target = schema["target"]
    positive = (
        positive_label(schema, positive_class) if schema["task"] == "classification" else None
    )
    tables = {}
    for column in sensitive_columns:
        groups = sensitive_groups(frame, column)
        labels = frame[target]
        if schema["task"] == "classification" and positive is not None:
            outcome = (labels == positive).astype(float)
        else:
            outcome = pd.to_numeric(labels, errors="coerce")
        table = (
            pd.DataFrame({"group": groups, "outcome": outcome})
            .groupby("group", observed=True)["outcome"]
            .agg(rows="size", base_rate="mean")
        )
        table["share"] = table["rows"] / table["rows"].sum()
        tables[column] = table[["rows", "share", "base_rate"]].reset_index()
    return tables


def model_bias(
    frame: pd.DataFrame,
    predictions: np.ndarray,
    schema: dict,
    sensitive_columns: list[str],
    positive_class: str,
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, float]]]:
    """Per sensitive column and group, on held-out rows: size, selection rate and accuracy
    (classification), or size, MAE and mean prediction (regression).

    Returns:
        The table per column, and per column the ratio of the smallest group value to the
        largest for each metric (fairlearn's MetricFrame.ratio; 1.0 is parity).
    """
    y_true = frame[schema["target"]].to_numpy()
    metrics = {"rows": lambda t, p: len(t)}
    if schema["task"] == "classification":
        metrics["accuracy"] = accuracy_score
        positive = positive_label(schema, positive_class)
        if positive is not None:
            metrics["selection_rate"] = lambda t, p: selection_rate(t, p, pos_label=positive)
    else:
        metrics["mae"] = mean_absolute_error
        metrics["mean_prediction"] = lambda t, p: float(np.mean(p))
    tables, ratios = {}, {}
    for column in sensitive_columns:
        by_group = MetricFrame(
            metrics=metrics,
            y_true=y_true,
            y_pred=predictions,
            sensitive_features=sensitive_groups(frame, column),
        )
        table = by_group.by_group.reset_index().rename(columns={column: "group"})
        tables[column] = table.astype({"rows": int})
        ratio = by_group.ratio().drop(labels="rows")
        ratios[column] = {name: float(value) for name, value in ratio.items()}
    return tables, ratios


def markdown_tables(title: str, tables: dict[str, pd.DataFrame]) -> str:
    """The tables as Markdown, one section per sensitive column."""
    parts = [f"## {title}\n"]
    for column, table in tables.items():
        parts.append(f"### {column}\n")
        parts.append(table.to_markdown(index=False, floatfmt=".3f"))
        parts.append("")
    return "\n".join(parts) + "\n"
