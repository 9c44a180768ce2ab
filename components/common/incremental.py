"""Incremental updates of a registered champion: its own hyperparameters, no search, one rule per
family (UPDATE_RULES):

- `partial_fit` (sgd_linear): the champion's estimator takes `epochs` more passes (partial_fit
  calls) over the new rows, at its own learning-rate schedule. The classes are the champion's.
  One pass barely moves a model that has seen many rows (its learning rate has decayed with
  them); on the demo's changed relation, 1 pass took ROC AUC 0.31 -> 0.33, 5 passes 0.64, 10
  passes 0.68 (a fresh fit: 0.69).
- `warm_start` (random_forest): the champion's trees are kept and new ones are grown on the new
  rows only (warm_start=True, n_estimators raised; see `new_tree_count`).
- `refit_window` (every other family, histogram gradient boosting among them): a fresh fit of the
  champion's recipe (the preprocessor's settings, the family and its parameters, the seed) on the
  window the caller supplies (the last N partitions or days). HistGradientBoosting's warm_start
  would re-bin the features on the new rows and continue boosting on edges its earlier trees were
  not built on, so it is never used to continue on other rows.

The preprocessor stays the champion's fitted one for `partial_fit` and `warm_start`: the
estimator's inputs must keep their meaning (the columns, the scaling) for its coefficients and
trees to stay valid. A category the champion never saw goes where the encoder puts unknown
categories (the all-zero one-hot row, or the rare-category bucket), as at serving time.

A tuned decision threshold (FixedThresholdClassifier) is kept as it was: it was chosen on
out-of-fold scores of the whole training split, which an update has not got; choosing it again is
full retraining's work, and the evaluation gate scores the updated model with it.

Bias mitigation wraps the estimator, so `partial_fit` and `warm_start` cannot reach it: a
mitigated champion is refit on the window when its mitigation can be refit from the model alone
(threshold_optimizer keeps its grouping), and is otherwise refused with IncrementalNotSupported
(exponentiated_gradient needs the groups of bias.mitigate_by), so that the caller retrains in
full and says why. Reweighing leaves no trace in the model: a caller that uses it passes the new
rows' weights as `sample_weight`.

The champion object is never changed: the update works on a deep copy (or on fresh objects).
"""

import copy
import math

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from components.common.errors import PipelineInputError
from components.common.families import FAMILIES, estimator_class, make_estimator
from components.common.metrics import with_threshold
from components.common.mitigation import ExponentiatedGradientModel, ThresholdOptimizedModel
from components.common.schema import as_model_input
from components.common.update_rules import (
    PARTIAL_FIT,
    REFIT_WINDOW,
    WARM_START,
    IncrementalNotSupported,
    update_rule,
)

# Trees a warm-start update grows at least (fewer would add noise, not knowledge).
MIN_NEW_TREES = 10
# Rows a forest's trees stand for, carried across updates on the fitted forest itself (scikit-
# learn's own record, _n_samples, holds only the rows of the last fit).
ROWS_SEEN_ATTRIBUTE = "mlpipe_rows_seen_"


def unwrap(champion) -> tuple[object, dict | None]:
    """The champion's fitted Pipeline (or mitigation wrapper) under a tuned threshold, and that
    threshold's settings {"threshold", "pos_label"} (None when there is no threshold)."""
    from sklearn.model_selection import FixedThresholdClassifier

    if isinstance(champion, FixedThresholdClassifier):
        inner = champion.estimator
        inner = getattr(inner, "estimator", inner)  # the FrozenEstimator's model
        return inner, {"threshold": champion.threshold, "pos_label": champion.pos_label}
    return champion, None


def new_tree_count(trees_before: int, rows_seen: int | None, new_rows: int) -> int:
    """Trees a warm-start update grows: the new rows' share of all rows times the trees so far,
    at least MIN_NEW_TREES and at most trees_before (so one update never outweighs the forest);
    MIN_NEW_TREES when the rows the forest has seen are unknown."""
    if not rows_seen:
        return min(MIN_NEW_TREES, trees_before) if trees_before else MIN_NEW_TREES
    share = new_rows / (rows_seen + new_rows)
    return max(MIN_NEW_TREES, min(trees_before, math.ceil(trees_before * share)))


def _check_family(estimator, family: str, task: str) -> None:
    expected = estimator_class(FAMILIES[family][0][task])
    if type(estimator) is not expected:
        raise PipelineInputError(
            f"family '{family}': the champion's estimator is a {type(estimator).__name__}, "
            f"not a {expected.__name__}"
        )


def _check_classes(champion_classes, labels: pd.Series, rule: str) -> None:
    """New rows may only hold the champion's classes; warm-started trees need every one of them
    too (a forest's fit takes its classes from the rows it is given)."""
    known = [str(c) for c in champion_classes]
    present = sorted({str(v) for v in pd.unique(labels)})
    unseen = [c for c in present if c not in known]
    if unseen:
        raise IncrementalNotSupported(
            f"{rule}: the new rows hold class '{unseen[0]}', which the champion never saw "
            f"(its classes: {', '.join(known)})"
        )
    if rule == WARM_START and len(present) < len(known):
        missing = sorted(set(known) - set(present))
        raise IncrementalNotSupported(
            f"{rule}: the new rows lack class '{missing[0]}'; new trees must know every class"
        )


def update_model(
    champion,
    train: pd.DataFrame,
    schema: dict,
    family: str,
    params: dict,
    seed: int,
    new_trees: int | None = None,
    sample_weight: np.ndarray | None = None,
    epochs: int = 1,
) -> tuple[object, dict]:
    """The champion updated with `train` by its family's rule (see the module docstring).

    Args:
        champion: the registered model as ModelRegistry.load returns it: a Pipeline of the
            fitted preprocessor and the estimator, possibly under a FixedThresholdClassifier,
            possibly a mitigated model. Not changed.
        train: the new rows (partial_fit, warm_start) or the window (refit_window), with the
            target column.
        schema: the run's schema (task, target, features).
        family: the champion's family; params: its hyperparameters; seed: split.seed (the
            recipe of a refit).
        new_trees: trees a warm-start update grows; None: new_tree_count's default.
        sample_weight: per row of `train` (reweighing's); None weighs every row the same.
        epochs: passes of partial_fit over `train` (the partial_fit rule only).

    Returns:
        (the updated model, shaped as the champion: the same wrappers, the same threshold;
        details {"rule", "rows", and "trees_before"/"trees_after", or
        "updates_before"/"updates_after" (SGD's weight updates), or "refit": the window}).

    Raises:
        IncrementalNotSupported: the champion cannot be updated by its rule (a mitigation
            wrapping the estimator, classes the champion never saw, ...).
        PipelineInputError: an unknown family, or one the champion's estimator is not of.
    """
    rule = update_rule(family)
    if len(train) == 0:
        raise PipelineInputError("incremental update: no new rows to update the model with")
    task = schema["task"]
    model, threshold = unwrap(champion)
    labels = train[schema["target"]]
    details: dict = {"rule": rule, "rows": len(train)}
    if isinstance(model, ThresholdOptimizedModel):
        updated = _refit_threshold_optimized(model, train, schema, family, params, seed)
        details.update(rule=REFIT_WINDOW, refit="window", fallback=_mitigated_reason(rule))
    elif not isinstance(model, Pipeline):
        raise IncrementalNotSupported(
            f"{rule}: the champion is a {type(model).__name__}, not a fitted Pipeline"
        )
    elif isinstance(model.steps[-1][1], ExponentiatedGradientModel):
        raise IncrementalNotSupported(
            f"{rule}: bias mitigation exponentiated_gradient wraps the estimator, and refitting "
            "it needs the groups of bias.mitigate_by; retrain in full"
        )
    else:
        _check_family(model.steps[-1][1], family, task)
        if task == "classification" and rule != REFIT_WINDOW:
            _check_classes(model.steps[-1][1].classes_, labels, rule)
        if rule == PARTIAL_FIT:
            updated = _partial_fit(model, train, schema, sample_weight, details, epochs)
        elif rule == WARM_START:
            updated = _warm_start(model, train, schema, new_trees, sample_weight, details)
        else:
            updated = _refit(model, train, schema, family, params, seed, sample_weight)
            details["refit"] = "window"
    if threshold is not None:
        updated = with_threshold(
            updated,
            threshold["threshold"],
            threshold["pos_label"],
            as_model_input(train, schema),
            labels,
        )
        details["threshold"] = threshold["threshold"]
    return updated, details


def _mitigated_reason(rule: str) -> str | None:
    if rule == REFIT_WINDOW:
        return None
    return (
        f"{rule}: bias mitigation threshold_optimizer wraps the estimator; the window is refit "
        "with the same mitigation"
    )


def _fit_params(sample_weight) -> dict:
    return {} if sample_weight is None else {"sample_weight": sample_weight}


def _partial_fit(model: Pipeline, train, schema, sample_weight, details, epochs: int = 1):
    if epochs < 1:
        raise PipelineInputError(f"retraining.epochs: {epochs} (must be 1 or more)")
    updated = copy.deepcopy(model)
    preprocessor, estimator = updated[:-1], updated.steps[-1][1]
    features = preprocessor.transform(as_model_input(train, schema))
    details["updates_before"] = int(estimator.t_)
    for _ in range(epochs):
        estimator.partial_fit(features, train[schema["target"]], **_fit_params(sample_weight))
    details["updates_after"] = int(estimator.t_)
    details["epochs"] = epochs
    return updated


def _warm_start(model: Pipeline, train, schema, new_trees, sample_weight, details) -> Pipeline:
    updated = copy.deepcopy(model)
    preprocessor, forest = updated[:-1], updated.steps[-1][1]
    trees_before = len(forest.estimators_)
    rows_seen = getattr(forest, ROWS_SEEN_ATTRIBUTE, None) or getattr(forest, "_n_samples", None)
    grow = (
        new_trees if new_trees is not None else new_tree_count(trees_before, rows_seen, len(train))
    )
    if grow < 1:
        raise PipelineInputError(f"incremental update: new_trees must be at least 1, got {grow}")
    features = preprocessor.transform(as_model_input(train, schema))
    forest.set_params(warm_start=True, n_estimators=trees_before + grow)
    forest.fit(features, train[schema["target"]], **_fit_params(sample_weight))
    # Off again: a later plain fit() of this object (a refit of its recipe) starts afresh.
    forest.set_params(warm_start=False)
    setattr(forest, ROWS_SEEN_ATTRIBUTE, (rows_seen or 0) + len(train))
    details.update(trees_before=trees_before, trees_after=len(forest.estimators_))
    return updated


def _refit(model: Pipeline, train, schema, family, params, seed, sample_weight) -> Pipeline:
    """The champion's recipe, fitted afresh on the window: its preprocessor's settings refitted
    as train's cross-validation folds refit them, the family's estimator with `params`."""
    _check_family(model.steps[-1][1], family, schema["task"])
    features = as_model_input(train, schema)
    (prep_name, preprocessor), (model_name, _) = model.steps[0], model.steps[-1]
    preprocessor = clone(preprocessor).fit(features)
    estimator = make_estimator(family, params, schema["task"], seed)
    estimator.fit(
        preprocessor.transform(features), train[schema["target"]], **_fit_params(sample_weight)
    )
    return Pipeline([(prep_name, preprocessor), (model_name, estimator)])


def _refit_threshold_optimized(
    model: ThresholdOptimizedModel, train, schema, family, params, seed
) -> ThresholdOptimizedModel:
    pipeline = _refit(model.pipeline, train, schema, family, params, seed, None)
    refit = ThresholdOptimizedModel(pipeline, model.grouping, model.constraint, model.positive)
    return refit.fit(as_model_input(train, schema), train[schema["target"]].to_numpy())
