"""One trial: k-fold cross-validation of one sampled configuration, on the training split only.

The folds are cut and their preprocessors fitted once, by the driver, exactly as
`cross_val_score(Pipeline([preprocessor, estimator]))` would: each fold's preprocessor sees only
that fold's training rows. The transformed folds go into Ray's object store once
(`tune.with_parameters`), so a trial only fits and scores estimators.

Iterative families grow their iteration resource with warm_start and report at ASHA's milestones,
on one budget axis shared by all families: `budget` is the share of the largest resource value in
the family's space, in units of 1/MAX_BUDGET. A trial that ASHA stops has paid only for the rounds
or trees it grew. Non-iterative families report once, with their full budget.
"""

import math
import os
import time
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import get_scorer

from components.common.families import RESOURCES, family_params, make_estimator
from components.common.folds import cv_fold_rows

MAX_BUDGET = 27
ASHA_GRACE = 3
ASHA_REDUCTION = 3
# Where ASHA decides (3 and 9 of 27): a trial reports there, and at its own end.
ASHA_MILESTONES = (3, 9)


def make_folds(
    features: pd.DataFrame,
    labels: pd.Series,
    schema: dict,
    cv_folds: int,
    seed: int,
    preprocessor,
    groups=None,
) -> list[tuple]:
    """(train X, train y, validation X, validation y) per fold, each X already preprocessed.

    Args:
        preprocessor: the prepare step's transform (its settings are cloned and refitted per
            fold, so the folds score the transform that is served).
        groups: each row's group for a group-aware split (no group in two folds); None: rows.
    """
    folds = []
    y = labels.to_numpy()
    for train_rows, valid_rows in cv_fold_rows(y, schema["task"], cv_folds, seed, groups):
        fold_preprocessor = clone(preprocessor).fit(features.iloc[train_rows], y[train_rows])
        folds.append(
            (
                fold_preprocessor.transform(features.iloc[train_rows]),
                y[train_rows],
                fold_preprocessor.transform(features.iloc[valid_rows]),
                y[valid_rows],
            )
        )
    return folds


def resource_steps(final: int, top: float, milestones) -> list[tuple[int, int]]:
    """(resource value, budget) at each report: the milestones below `final`, then `final`."""
    steps = []
    for milestone in milestones:
        value = max(1, math.ceil(top * milestone / MAX_BUDGET))
        if value < final and (not steps or value > steps[-1][0]):
            steps.append((value, milestone))
    steps.append((final, max(1, min(MAX_BUDGET, math.ceil(MAX_BUDGET * final / top)))))
    return steps


def cross_validate(config, folds, task, metric, seed, tops, milestones):
    """The Ray Tune function trainable: reports the mean and spread of the fold scores."""
    import ray
    from ray import tune

    family, params = family_params(config)
    scorer = get_scorer(metric)
    where = {"node": ray.get_runtime_context().get_node_id()[:12], "pid": os.getpid()}
    resource = RESOURCES.get(family)
    if resource is None or family not in tops or not isinstance(params.get(resource), Integral):
        steps = [(None, MAX_BUDGET)]
    else:
        steps = resource_steps(int(params[resource]), tops[family], milestones)
    models = [make_estimator(family, params, task, seed) for _ in folds]
    if steps[0][0] is not None:
        for model in models:
            model.set_params(warm_start=True)
    for value, budget in steps:
        scores = []
        for model, (train_x, train_y, valid_x, valid_y) in zip(models, folds, strict=True):
            if value is not None:
                model.set_params(**{resource: value})
            model.fit(train_x, train_y)
            scores.append(scorer(model, valid_x, valid_y))
        tune.report(
            {
                "score": float(np.mean(scores)),
                "score_std": float(np.std(scores)),
                "budget": budget,
                "complete": value == steps[-1][0],
                "finished_at": time.time(),
                **where,
            }
        )
