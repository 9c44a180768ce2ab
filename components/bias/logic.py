"""Bias analysis, the shared part: which group each row is in, and what counts as favourable.

A sensitive column's groups are its values (categorical), or bands of a numeric column: the
bands declared in the run config (`bias.bands`, for example age bands), or else quartile bands of
the data. Intersections of two columns are groups too ("colour_x_sex", with labels such as
"Black & Male"). Missing values are a group of their own, "missing".

The metrics are in metrics.py, the gate in gate.py, mitigation in mitigation.py and the report in
report.py.
"""

import pandas as pd

from components.common.errors import PipelineInputError
from components.common.groups import (  # noqa: F401  (Grouping: old pickles name it here)
    Grouping,
    make_grouping,
    positive_label,
    sensitive_groups,
)
from components.common.vocabulary import (  # noqa: F401  (the bias modules' names for sets)
    INTERSECTION_MARK,
    ON_NOT_COMPUTABLE,
    intersection_name,
)


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
