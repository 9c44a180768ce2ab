"""The folds of k-fold cross-validation on the training split: the same folds for tuning's
trials, training's out-of-fold threshold and its cross-validated scores."""

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from components.common.errors import PipelineInputError


def cv_fold_rows(
    labels, task: str, folds: int, seed: int, groups=None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, held-out rows) of k-fold cross-validation on the training split.

    Stratified by the label for classification. With `groups` (a group-aware split), no group
    is in two folds, as no group is on both sides of the train/test split: otherwise the folds
    would score rows whose group the model has already seen, and flatter it.

    Raises:
        PipelineInputError: fewer groups than folds.
    """
    y = np.asarray(labels)
    rows = np.zeros(len(y))
    if groups is None:
        if task == "classification":
            splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        else:
            splitter = KFold(folds, shuffle=True, random_state=seed)
        return list(splitter.split(rows, y))
    groups = np.asarray(groups)
    count = len(pd.unique(groups))
    if count < folds:
        raise PipelineInputError(
            f"split.group_column: the training split has {count} groups, fewer than the "
            f"{folds} cross-validation folds (tuning.cv_folds)"
        )
    if task == "classification":
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(folds)
    return list(splitter.split(rows, y, groups))
