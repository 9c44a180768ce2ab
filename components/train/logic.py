"""Train and evaluate: fit the best configuration, then score it on the held-out split."""

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from components.common.errors import PipelineInputError
from components.common.families import make_estimator
from components.common.groups import make_grouping, positive_label
from components.common.metrics import (
    choose_threshold,
    out_of_fold,
    positive_class_of,
    with_threshold,
)
from components.common.mitigation import (
    ExponentiatedGradientModel,
    ThresholdOptimizedModel,
    check_mitigation,
    reweighing_weights,
)
from components.common.schema import as_model_input


def fit_model(
    train: pd.DataFrame,
    schema: dict,
    preprocessor: ColumnTransformer,
    best: dict,
    seed: int,
    sample_weight: np.ndarray | None = None,
) -> Pipeline:
    """The served model: the fitted preprocessor from prepare, then the best estimator fitted on
    the preprocessor's output, as one scikit-learn Pipeline.

    Args:
        sample_weight: per training row, for example reweighing's (see components.bias);
            None weighs every row the same.
    """
    features = as_model_input(train, schema)
    estimator = make_estimator(best["family"], best["params"], schema["task"], seed)
    fit_params = {} if sample_weight is None else {"sample_weight": sample_weight}
    estimator.fit(preprocessor.transform(features), train[schema["target"]], **fit_params)
    return Pipeline([("prep", preprocessor), ("model", estimator)])


def fit_mitigated(
    train: pd.DataFrame,
    schema: dict,
    preprocessor: ColumnTransformer,
    best: dict,
    seed: int,
    mitigation: str,
    constraint: str,
    mitigate_by: str,
    bands: dict,
    positive_class: str,
) -> tuple[object, Pipeline]:
    """Fit the served model with the configured bias mitigation, and the unmitigated model.

    Args:
        mitigation: none, reweighing, exponentiated_gradient or threshold_optimizer.
        constraint: the fairness constraint of the last two.
        mitigate_by: the sensitive column whose groups mitigation balances.
        bands: band edges of numeric sensitive columns (bias.bands).
        positive_class: the favourable class; empty means the second of two sorted classes.

    Returns:
        (served model, unmitigated Pipeline); the same object when mitigation is none.
    """
    check_mitigation(mitigation, constraint)
    if mitigation == "none":
        baseline = fit_model(train, schema, preprocessor, best, seed)
        return baseline, baseline
    positive = positive_label(schema, positive_class)
    if schema["task"] != "classification" or positive is None:
        raise PipelineInputError(
            f"bias.mitigation {mitigation}: needs classification with a favourable class "
            f"(task {schema['task']}; set positive_class when there are several classes)"
        )
    if not mitigate_by:
        raise PipelineInputError(f"bias.mitigation {mitigation}: name bias.mitigate_by")
    grouping = make_grouping(train, mitigate_by, bands)
    baseline = fit_model(train, schema, preprocessor, best, seed)
    groups = grouping.labels(train)
    labels = train[schema["target"]].to_numpy()
    if mitigation == "reweighing":
        weights = reweighing_weights(groups, labels == positive)
        return fit_model(train, schema, preprocessor, best, seed, sample_weight=weights), baseline
    features = as_model_input(train, schema)
    if mitigation == "exponentiated_gradient":
        estimator = make_estimator(best["family"], best["params"], schema["task"], seed)
        model = ExponentiatedGradientModel(estimator, constraint, positive)
        model.fit(preprocessor.transform(features), labels, sensitive_features=groups)
        return Pipeline([("prep", preprocessor), ("model", model)]), baseline
    model = ThresholdOptimizedModel(baseline, grouping, constraint, positive)
    return model.fit(features, labels), baseline


def fit_with_threshold(
    model,
    train: pd.DataFrame,
    schema: dict,
    preprocessor: ColumnTransformer,
    best: dict,
    seed: int,
    cv_folds: int,
    positive_class: str,
    threshold_rule: str,
    threshold: float,
    target_precision: float,
    mitigation: str,
    groups=None,
) -> tuple[object, dict]:
    """Cross-validate the training recipe, and set the decision threshold by the rule.

    The folds refit the preprocessor (a clone of prepare's) and the best estimator on each
    fold's rows, without mitigation; their out-of-fold probabilities choose the threshold, so
    it is never tuned on rows the model was fitted on, nor on the test split.

    Args:
        groups: each training row's group for a group-aware split (the folds keep groups
            together); None: folds of rows.

    Returns:
        (the served model, wrapped in a FixedThresholdClassifier when the threshold is not 0.5;
        the CV summary {"folds", "scores", "threshold"}).
    """

    def fit_fold(rows: pd.DataFrame):
        fold_preprocessor = clone(preprocessor).fit(as_model_input(rows, schema))
        return fit_model(rows, schema, fold_preprocessor, best, seed)

    folds = out_of_fold(fit_fold, train, schema, cv_folds, seed, positive_class, groups)
    if folds.scores is None:  # regression or multiclass: no threshold to choose
        if threshold_rule != "fixed" or threshold != 0.5:
            raise PipelineInputError(
                f"evaluation.threshold_rule {threshold_rule}: thresholds apply to binary "
                "classification only"
            )
        return model, {**folds.summary(), "threshold": None}
    if threshold_rule != "fixed" and mitigation not in ("none", "reweighing"):
        raise PipelineInputError(
            f"evaluation.threshold_rule {threshold_rule}: bias.mitigation {mitigation} sets its "
            "own thresholds; use the fixed rule"
        )
    chosen = choose_threshold(
        folds.is_positive, folds.scores, threshold_rule, threshold, target_precision
    )
    summary = {**folds.summary(chosen), "threshold": {"rule": threshold_rule, "value": chosen}}
    if chosen == 0.5 or mitigation not in ("none", "reweighing"):
        return model, summary
    positive = positive_class_of(list(model.classes_), positive_class)
    features = as_model_input(train, schema)
    wrapped = with_threshold(model, chosen, positive, features, train[schema["target"]])
    return wrapped, summary
