"""Bias analysis, the shared part: which group each row is in, and what counts as favourable.

A sensitive column's groups are its values (categorical), or bands of a numeric column: the
bands declared in the run config (`bias.bands`, for example age bands), or else quartile bands of
the data. Intersections of two columns are groups too ("colour_x_sex", with labels such as
"Black & Male"). Missing values are a group of their own, "missing".

The metrics are in metrics.py, the gate in gate.py, mitigation in mitigation.py and the report in
report.py.
"""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.common.errors import PipelineInputError

# A numeric column with more distinct values than this, and no declared bands, is compared in
# quartile bands.
MAX_GROUPS_UNBINNED = 10
NUMERIC_BANDS = 4
MISSING_GROUP = "missing"
INTERSECTION_MARK = "_x_"
ON_NOT_COMPUTABLE = ("warn", "fail")


def _edge(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def band_label(low: float, high: float) -> str:
    """A band's label: "[18, 25)", or "< 18" and ">= 50" for the open ends."""
    if math.isinf(low):
        return f"< {_edge(high)}"
    if math.isinf(high):
        return f">= {_edge(low)}"
    return f"[{_edge(low)}, {_edge(high)})"


@dataclass(frozen=True)
class Grouping:
    """How one sensitive column's rows become groups; fixed once made, so that the same value
    lands in the same group at training, evaluation and serving time.

    Attributes:
        column: the sensitive column.
        edges: band edges for a numeric column (a value v is in [edges[i], edges[i+1])), or None
            to group by value.
    """

    column: str
    edges: tuple[float, ...] | None = None

    def labels(self, frame: pd.DataFrame) -> pd.Series:
        """Each row's group label (strings; "missing" for a missing value)."""
        if self.column not in frame.columns:
            raise PipelineInputError(
                f"column '{self.column}' (a sensitive column) is not in the data"
            )
        values = frame[self.column]
        if self.edges is None:
            labels = values.astype(str)
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            bins = np.searchsorted(np.asarray(self.edges), numbers.to_numpy(), side="right") - 1
            names = [band_label(lo, hi) for lo, hi in zip(self.edges, self.edges[1:], strict=False)]
            outside = f"outside [{_edge(self.edges[0])}, {_edge(self.edges[-1])})"
            labels = pd.Series(
                [names[b] if 0 <= b < len(names) else outside for b in bins],
                index=values.index,
                dtype=object,
            )
        return labels.where(values.notna(), MISSING_GROUP).astype(object).rename(self.column)


def make_grouping(frame: pd.DataFrame, column: str, bands: dict) -> Grouping:
    """The grouping of one column: declared bands, quartile bands of a many-valued numeric
    column (open at both ends, so unseen values still fall in a band), or its values.

    Raises:
        PipelineInputError: the column is missing, or has declared bands but is not numeric.
    """
    if column not in frame.columns:
        raise PipelineInputError(f"column '{column}' (a sensitive column) is not in the data")
    values = frame[column]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if column in bands:
        if not numeric:
            raise PipelineInputError(
                f"bias.bands.{column}: column '{column}' holds {values.dtype} values; "
                "bands are for numeric columns"
            )
        return Grouping(column, tuple(float(edge) for edge in bands[column]))
    if numeric and values.nunique() > MAX_GROUPS_UNBINNED:
        inner = values.quantile([i / NUMERIC_BANDS for i in range(1, NUMERIC_BANDS)]).round()
        edges = sorted(set(inner.tolist()))
        return Grouping(column, (-math.inf, *edges, math.inf))
    return Grouping(column)


def sensitive_groups(frame: pd.DataFrame, column: str, bands: dict | None = None) -> pd.Series:
    """The group label of each row for one sensitive column (see make_grouping)."""
    return make_grouping(frame, column, bands or {}).labels(frame)


def intersection_name(pair: list[str] | tuple[str, str]) -> str:
    return INTERSECTION_MARK.join(pair)


def group_sets(
    frame: pd.DataFrame,
    sensitive_columns: list[str],
    bands: dict | None = None,
    intersections: list | None = None,
) -> dict[str, pd.Series]:
    """The group labels per sensitive column, then per intersection of two columns.

    Returns:
        {name: labels}; an intersection's name is "a_x_b" and its labels "value_a & value_b".
    """
    bands = bands or {}
    sets = {column: sensitive_groups(frame, column, bands) for column in sensitive_columns}
    for pair in intersections or []:
        first, second = pair
        for column in pair:
            if column not in sets:
                sets[column] = sensitive_groups(frame, column, bands)
        labels = sets[first].astype(str) + " & " + sets[second].astype(str)
        sets[intersection_name(pair)] = labels.rename(intersection_name(pair))
    return {
        name: sets[name]
        for name in [*sensitive_columns, *map(intersection_name, intersections or [])]
    }


def positive_label(schema: dict, positive_class: str) -> object:
    """The class that counts as the favourable outcome (selection) for classification; None
    for regression, or for more than two classes without a declared positive_class."""
    if schema["task"] != "classification":
        return None
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


class Problems:
    """What could not be computed: with on_not_computable "warn" the run goes on and each
    problem is listed in the report; with "fail" the first one ends the step.

    Args:
        on_not_computable: "warn" or "fail".
    """

    def __init__(self, on_not_computable: str = "warn"):
        if on_not_computable not in ON_NOT_COMPUTABLE:
            raise PipelineInputError(
                f"bias.on_not_computable '{on_not_computable}': expected warn or fail"
            )
        self.fail = on_not_computable == "fail"
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        """Record one problem, or raise it as a PipelineInputError when configured to fail."""
        if self.fail:
            raise PipelineInputError(message + " (bias.on_not_computable is fail)")
        if message not in self.messages:
            self.messages.append(message)


def checked_group_sets(
    frame: pd.DataFrame,
    sensitive_columns: list[str],
    bands: dict,
    intersections: list,
    max_groups: int,
    problems: Problems,
) -> dict[str, pd.Series]:
    """group_sets, less any set with more than max_groups groups (each one a problem: such a
    column is an identifier or needs bands, and hundreds of one-row groups say nothing)."""
    sets = {}
    for name, labels in group_sets(frame, sensitive_columns, bands, intersections).items():
        count = labels.nunique()
        if count > max_groups:
            problems.add(
                f"sensitive column '{name}' has {count} groups, more than bias.max_groups "
                f"{max_groups}: declare bias.bands for it, or raise bias.max_groups; "
                "it is left out"
            )
            continue
        sets[name] = labels
    return sets
