"""Which group each row is in, for a sensitive column, and which class is favourable.

A sensitive column's groups are its values (categorical), or bands of a numeric column: the
bands declared in the run config (`bias.bands`, for example age bands), or else quartile bands of
the data, both cut by components.common.binning's rule (values below or above the declared edges
are in the open end bands "< first" and ">= last"). Missing values are a group of their own,
"missing". The bias stage analyses these groups; train balances them when it mitigates bias; a mitigated model carries its Grouping, so
that the same value lands in the same group at training, evaluation and serving time.
"""

import math
from dataclasses import dataclass

import pandas as pd

from components.common.binning import bin_values
from components.common.errors import PipelineInputError

# A numeric column with more distinct values than this, and no declared bands, is compared in
# quartile bands.
MAX_GROUPS_UNBINNED = 10
NUMERIC_BANDS = 4
MISSING_GROUP = "missing"


@dataclass(frozen=True)
class Grouping:
    """How one sensitive column's rows become groups; fixed once made, so that the same value
    lands in the same group at training, evaluation and serving time.

    Attributes:
        column: the sensitive column.
        edges: band edges for a numeric column, cut by components.common.binning's rule (a
            value v is in [edges[i], edges[i+1]); below the first edge and at or above the
            last are bands of their own), or None to group by value.
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
            bands = bin_values(values, self.edges, missing=MISSING_GROUP)
            labels = pd.Series(bands, index=values.index, dtype=object)
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
