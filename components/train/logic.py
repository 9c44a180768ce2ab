"""Train and evaluate: fit the best configuration, then score it on the held-out split."""

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline

from components.bias.logic import make_grouping, positive_label
from components.bias.mitigation import (
    ExponentiatedGradientModel,
    ThresholdOptimizedModel,
    check_mitigation,
    reweighing_weights,
)
from components.common.errors import PipelineInputError
from components.prepare.logic import as_model_input
from components.tune.search_space import make_estimator

# The ROC curve is stored in the run's metadata; a few hundred points draw it well enough.
MAX_ROC_POINTS = 200


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


def evaluate_model(model: Pipeline, test: pd.DataFrame, schema: dict) -> dict:
    """Held-out metrics, plus the confusion matrix and ROC curve for classification.

    Returns:
        {"metrics": {name: value}, "predictions": array, and for classification
        "confusion_matrix": {"labels", "matrix"}, and for binary tasks "roc": {"fpr", "tpr", "thresholds"}}.
    """
    features = as_model_input(test, schema)
    y_true = test[schema["target"]].to_numpy()
    y_pred = model.predict(features)
    result: dict = {"predictions": y_pred}
    if schema["task"] == "regression":
        mse = mean_squared_error(y_true, y_pred)
        result["metrics"] = {
            "mse": float(mse),
            "rmse": float(np.sqrt(mse)),
            "mae": float(mean_absolute_error(y_true, y_pred)),
            "r2": float(r2_score(y_true, y_pred)),
        }
        return result

    classes = list(model.classes_)
    binary = len(classes) == 2
    average = "binary" if binary else "macro"
    pos_label = classes[1] if binary else 1
    metrics = {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(
            y_true, y_pred, average=average, pos_label=pos_label, zero_division=0
        ),
        "recall": recall_score(
            y_true, y_pred, average=average, pos_label=pos_label, zero_division=0
        ),
        "f1": f1_score(y_true, y_pred, average=average, pos_label=pos_label, zero_division=0),
    }
    probabilities = model.predict_proba(features)
    if binary:
        metrics["roc_auc"] = roc_auc_score(y_true == classes[1], probabilities[:, 1])
        fpr, tpr, thresholds = roc_curve(y_true == classes[1], probabilities[:, 1])
        # roc_curve starts at threshold +inf, which JSON cannot carry; 1.0 draws the same point.
        thresholds = np.minimum(thresholds, 1.0)
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), MAX_ROC_POINTS)).astype(int))
        result["roc"] = {
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            "thresholds": thresholds[keep].tolist(),
        }
    else:
        metrics["roc_auc_ovr"] = roc_auc_score(
            y_true, probabilities, multi_class="ovr", labels=classes
        )
    result["metrics"] = {name: float(value) for name, value in metrics.items()}
    result["confusion_matrix"] = {
        "labels": [str(c) for c in classes],
        "matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }
    return result


def metrics_markdown(metrics: dict, best: dict) -> str:
    lines = [
        "## Model\n",
        f"Family `{best['family']}`, parameters `{best['params']}`.\n",
        f"Cross-validated {best['metric']} on the training split: "
        f"{best['cv_score']:.4f} ± {best['cv_std']:.4f} ({best['cv_folds']} folds, "
        f"{best['num_trials']} trials).\n",
        "## Held-out metrics\n",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    return "\n".join(lines) + "\n\n"
