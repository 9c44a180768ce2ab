"""Evaluation metrics: held-out scores, curves, the decision threshold, and cross-validation.

Everything here is scikit-learn's own metric functions on arrays; the functions return plain
JSON-ready dicts (the evaluation artifact, the gate's input, the run report's input).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import FixedThresholdClassifier

from components.common.errors import PipelineInputError
from components.common.folds import cv_fold_rows
from components.common.schema import as_model_input
from components.common.vocabulary import (  # noqa: F401  (the names every metric user needs)
    CLASSIFICATION_METRICS,
    LOWER_IS_BETTER,
    REGRESSION_METRICS,
    THRESHOLD_RULES,
    higher_is_better,
    primary_metric,
)

# Curves go into JSON and the report; a few hundred points draw them well enough.
MAX_CURVE_POINTS = 200
MAX_RESIDUAL_POINTS = 2000
CALIBRATION_BINS = 10


# --- Metrics on arrays ----------------------------------------------------------------------


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, positive, threshold: float) -> dict:
    """Binary classification metrics; labels are `positive` where score >= threshold.

    Args:
        y_true: the true labels.
        scores: the probability of the positive class.
        positive: the positive class label.
        threshold: the decision threshold on `scores`.
    """
    is_positive = np.asarray(y_true) == positive
    return _binary_metrics(is_positive, scores >= threshold, scores)


def _binary_metrics(is_positive: np.ndarray, predicted: np.ndarray, scores: np.ndarray) -> dict:
    """Label metrics of `predicted` (booleans) and ranking metrics of `scores`."""
    clipped = np.clip(scores, 1e-15, 1 - 1e-15)
    return {
        "accuracy": float(accuracy_score(is_positive, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(is_positive, predicted)),
        "precision": float(precision_score(is_positive, predicted, zero_division=0)),
        "recall": float(recall_score(is_positive, predicted, zero_division=0)),
        "f1": float(f1_score(is_positive, predicted, zero_division=0)),
        "roc_auc": _defined(roc_auc_score, is_positive, scores),
        "pr_auc": _defined(average_precision_score, is_positive, scores),
        "log_loss": float(log_loss(is_positive, clipped, labels=[False, True])),
        "brier": float(brier_score_loss(is_positive, scores)),
    }


def label_array(values) -> np.ndarray:
    """Class labels as scikit-learn's metrics read them: numbers as numbers, text as objects.

    An object array of integers is "unknown" to scikit-learn's type_of_target, and every label
    metric refuses it: a table with 0/1 labels read into an object array would fail there.
    """
    return pd.Series(np.asarray(values, dtype=object)).infer_objects().to_numpy()


def multiclass_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes: list) -> dict:
    """Macro-averaged metrics; labels are the most probable class."""
    predicted = label_array(np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)])
    y_true = label_array(y_true)
    average = {"average": "macro", "labels": classes, "zero_division": 0}
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, predicted)),
        "precision": float(precision_score(y_true, predicted, **average)),
        "recall": float(recall_score(y_true, predicted, **average)),
        "f1": float(f1_score(y_true, predicted, **average)),
        "roc_auc_ovr": _defined(
            roc_auc_score, y_true, probabilities, multi_class="ovr", labels=classes
        ),
        "log_loss": float(log_loss(y_true, probabilities, labels=classes)),
    }


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict:
    mse = mean_squared_error(y_true, predicted)
    return {
        "mse": float(mse),
        "rmse": float(np.sqrt(mse)),
        "mae": float(mean_absolute_error(y_true, predicted)),
        "r2": float(r2_score(y_true, predicted)),
    }


def _defined(metric: Callable, *args, **kwargs) -> float:
    """A ranking metric, or NaN when the rows hold a single class (it is undefined there)."""
    try:
        return float(metric(*args, **kwargs))
    except ValueError:
        return float("nan")


# --- The decision threshold -----------------------------------------------------------------


def choose_threshold(
    is_positive: np.ndarray, scores: np.ndarray, rule: str, fixed: float, target_precision: float
) -> float:
    """The decision threshold by the configured rule.

    Args:
        is_positive: whether each row's true label is the positive class.
        scores: the positive-class probability of each row (out-of-fold: never the rows the
            model was fitted on, so the choice is not tuned to the model's own training fit).
        rule: fixed (use `fixed`), max_f1 (the threshold with the best F1) or target_precision
            (the lowest threshold whose precision reaches `target_precision`, which keeps the
            most recall at that precision).
        fixed: the threshold of the fixed rule.
        target_precision: the precision the target_precision rule must reach.

    Raises:
        PipelineInputError: an unknown rule, or no threshold reaches the target precision.
    """
    if rule == "fixed":
        return float(fixed)
    if rule not in THRESHOLD_RULES:
        raise PipelineInputError(
            f"evaluation.threshold_rule: unknown rule '{rule}' (known: {', '.join(THRESHOLD_RULES)})"
        )
    precision, recall, thresholds = precision_recall_curve(is_positive, scores)
    # The last precision/recall pair has no threshold (it is the "predict nothing" end).
    precision, recall = precision[:-1], recall[:-1]
    if rule == "max_f1":
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
        return float(thresholds[int(np.argmax(f1))])
    reached = np.flatnonzero(precision >= target_precision)
    if reached.size == 0:
        raise PipelineInputError(
            f"evaluation.target_precision {target_precision}: no threshold reaches it on the "
            f"training split's out-of-fold predictions (best precision {precision.max():.3f})"
        )
    return float(thresholds[reached[0]])


def with_threshold(model, threshold: float, positive, train_features, train_labels):
    """The fitted binary classifier wrapped so that predict() applies `threshold`.

    scikit-learn's FixedThresholdClassifier around a FrozenEstimator: nothing is refitted, and
    the model server, the fairness step and the report all see the same labels.
    """
    wrapped = FixedThresholdClassifier(
        FrozenEstimator(model), threshold=threshold, pos_label=positive
    )
    return wrapped.fit(train_features, train_labels)


# --- Curves ---------------------------------------------------------------------------------


def _thin(*arrays: np.ndarray) -> list[list]:
    """At most MAX_CURVE_POINTS evenly spaced points of each array, ends kept."""
    size = len(arrays[0])
    keep = np.unique(np.linspace(0, size - 1, min(size, MAX_CURVE_POINTS)).astype(int))
    return [np.asarray(a)[keep].tolist() for a in arrays]


def binary_curves(is_positive: np.ndarray, scores: np.ndarray) -> dict:
    """ROC, precision-recall and calibration curves (empty when a class is absent)."""
    if is_positive.all() or not is_positive.any():
        return {}
    fpr, tpr, roc_thresholds = roc_curve(is_positive, scores)
    # roc_curve starts at threshold +inf, which JSON cannot carry; 1.0 draws the same point.
    roc_thresholds = np.minimum(roc_thresholds, 1.0)
    precision, recall, pr_thresholds = precision_recall_curve(is_positive, scores)
    # precision_recall_curve has one pair more than thresholds: the end at recall 0.
    pr_thresholds = np.append(pr_thresholds, 1.0)
    fraction, mean_predicted = calibration_curve(is_positive, scores, n_bins=CALIBRATION_BINS)
    counts = np.histogram(scores, bins=np.linspace(0, 1, CALIBRATION_BINS + 1))[0]
    fpr, tpr, roc_thresholds = _thin(fpr, tpr, roc_thresholds)
    precision, recall, pr_thresholds = _thin(precision, recall, pr_thresholds)
    return {
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": roc_thresholds},
        "pr": {"precision": precision, "recall": recall, "thresholds": pr_thresholds},
        "calibration": {
            "mean_predicted": mean_predicted.tolist(),
            "fraction_positive": fraction.tolist(),
            "count": [int(c) for c in counts if c > 0],
        },
    }


# --- A model on a split ---------------------------------------------------------------------


def positive_class_of(classes: list, positive: str = ""):
    """The positive class of a binary task: `positive` if given, else the second sorted class."""
    if len(classes) != 2:
        return None
    if positive:
        matches = [c for c in classes if str(c) == str(positive)]
        if not matches:
            raise PipelineInputError(
                f"positive_class '{positive}' is not a class of the target "
                f"(classes: {', '.join(map(str, classes))})"
            )
        return matches[0]
    return classes[1]


def decision_threshold(model) -> float:
    """The threshold a fitted binary model's predict() applies."""
    return float(getattr(model, "threshold", 0.5))


def evaluate_model(
    model, test: pd.DataFrame, schema: dict, positive: str = "", threshold_rule: str = "fixed"
) -> dict:
    """Held-out metrics, confusion matrix and curves of a fitted model, as the evaluation JSON.

    Labels are the model's own predict() (so a threshold the model carries is applied, as
    serving applies it); ranking metrics and curves use predict_proba.

    Args:
        model: a fitted model taking as_model_input rows.
        test: the held-out rows.
        schema: the schema that validate wrote.
        positive: the positive class of a binary task; empty: the second sorted class.
        threshold_rule: recorded with the threshold (how train chose it).
    """
    features = as_model_input(test, schema)
    y_true = test[schema["target"]].to_numpy()
    result: dict = {"task": schema["task"], "rows": len(test)}
    if schema["task"] == "regression":
        predicted = np.asarray(model.predict(features), dtype=float)
        result["metrics"] = regression_metrics(y_true, predicted)
        keep = np.unique(
            np.linspace(0, len(predicted) - 1, min(len(predicted), MAX_RESIDUAL_POINTS)).astype(int)
        )
        result["residuals"] = {
            "predicted": predicted[keep].tolist(),
            "residual": (y_true.astype(float) - predicted)[keep].tolist(),
        }
        return result

    classes = list(model.classes_)
    probabilities = model.predict_proba(features)
    predicted = np.asarray(model.predict(features), dtype=object)
    result["classes"] = [str(c) for c in classes]
    result["confusion_matrix"] = {
        "labels": [str(c) for c in classes],
        "matrix": confusion_matrix(
            label_array(y_true), label_array(predicted), labels=classes
        ).tolist(),
    }
    positive_label = positive_class_of(classes, positive)
    if positive_label is None:
        result.update(
            positive_class=None,
            threshold=None,
            metrics=multiclass_metrics(y_true, probabilities, classes),
            curves={},
        )
        return result
    scores = probabilities[:, classes.index(positive_label)]
    threshold = decision_threshold(model)
    is_positive = y_true == positive_label
    # The labels the model itself predicts are the truth of what serving answers; they equal
    # score >= threshold except at exact ties, where scikit-learn's own rule decides.
    metrics = _binary_metrics(is_positive, predicted == positive_label, scores)
    result.update(
        positive_class=str(positive_label),
        threshold={"rule": threshold_rule, "value": threshold},
        metrics=metrics,
        curves=binary_curves(is_positive, scores),
    )
    return result


# --- Cross-validation -----------------------------------------------------------------------


@dataclass
class OutOfFold:
    """Each training row scored by the fold model that did not see it.

    Attributes:
        held_out: per fold, the row indices it held out.
        per_fold: per fold, its metrics (regression and multiclass; binary ones depend on the
            threshold and come from `summary`).
        scores: binary only: the positive-class probability of every row.
        is_positive: binary only: whether each row's label is the positive class.
    """

    held_out: list[np.ndarray]
    per_fold: list[dict] = field(default_factory=list)
    scores: np.ndarray | None = None
    is_positive: np.ndarray | None = None

    def summary(self, threshold: float = 0.5) -> dict:
        """{"folds": k, "scores": {metric: {"mean", "std"}}}; binary labels at `threshold`."""
        per_fold = self.per_fold
        if self.scores is not None:
            per_fold = [
                binary_metrics(self.is_positive[rows], self.scores[rows], True, threshold)
                for rows in self.held_out
            ]
        return {
            "folds": len(self.held_out),
            "scores": {
                name: {
                    "mean": float(np.nanmean([fold[name] for fold in per_fold])),
                    "std": float(np.nanstd([fold[name] for fold in per_fold])),
                }
                for name in per_fold[0]
            },
        }


def out_of_fold(
    fit: Callable[[pd.DataFrame], object],
    train: pd.DataFrame,
    schema: dict,
    folds: int,
    seed: int,
    positive: str = "",
    groups=None,
) -> OutOfFold:
    """k-fold cross-validation of the training recipe on the training split.

    Args:
        fit: fits a fresh model (preprocessor included) on the rows it is given.
        train: the training split.
        schema: the schema that validate wrote.
        folds: the number of folds (stratified for classification).
        seed: shuffles the folds.
        positive: the positive class of a binary task; empty: the second sorted class.
        groups: each row's group for a group-aware split (no group in two folds); None: rows.
    """
    target = train[schema["target"]].to_numpy()
    result = OutOfFold(held_out=[])
    for fit_rows, held_rows in cv_fold_rows(target, schema["task"], folds, seed, groups):
        model = fit(train.iloc[fit_rows].reset_index(drop=True))
        held = train.iloc[held_rows].reset_index(drop=True)
        features = as_model_input(held, schema)
        y_true = held[schema["target"]].to_numpy()
        result.held_out.append(held_rows)
        if schema["task"] == "regression":
            result.per_fold.append(regression_metrics(y_true, model.predict(features)))
            continue
        classes = list(model.classes_)
        probabilities = model.predict_proba(features)
        positive_label = positive_class_of(classes, positive)
        if positive_label is None:
            result.per_fold.append(multiclass_metrics(y_true, probabilities, classes))
            continue
        if result.scores is None:
            result.scores = np.full(len(train), np.nan)
            result.is_positive = target == positive_label
        result.scores[held_rows] = probabilities[:, classes.index(positive_label)]
    return result
