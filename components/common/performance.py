"""A model's performance on a window of served predictions: realized (from labels) or estimated.

- `realized_performance`: the metric on the window's labelled rows, with a bootstrap interval
  over those rows (a fixed seed, so the same window gives the same interval).
- `estimate_performance`: confidence-based performance estimation (CBPE, as NannyML does it)
  for the rows that have no label yet. Each row's probabilities are read as the chance of each
  class being its true label, which gives the metric's expected value without any label: for
  accuracy the mean probability of the predicted class; for precision, recall, F1 and balanced
  accuracy the expected confusion matrix; for ROC AUC (and PR AUC) the curve with the
  probabilities as soft labels; for log loss and the Brier score their expectation. The
  interval is where the realized value would fall if the labels were drawn from those
  probabilities (simulated with a fixed seed).

The assumption: the model's probabilities are calibrated, on the reference and still on the
window. Covariate shift (the features moved, P(y|x) the same) keeps that true and the estimate
follows the change in performance. A change of the label relation itself (concept drift: the
same features now mean other labels) leaves the probabilities unchanged, so CBPE cannot see it:
the estimate stays where it was while the realized metric falls. Only labels reveal that.

Labels, predictions and classes are matched as text, as the prediction log and the labels lake
may hold the same class as 1, "1" or True.
"""

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from components.common.errors import PipelineInputError
from components.common.vocabulary import CLASSIFICATION_METRICS, REGRESSION_METRICS

LEVEL = 0.95
# Label draws behind an estimate's interval; the chunk bounds one draw block's memory.
ESTIMATE_DRAWS = 200
DRAW_CELLS = 4_000_000
ESTIMATE_SEED = 0
# Metrics that need a binary task (one positive class) or more than two classes.
BINARY_ONLY = frozenset({"roc_auc", "pr_auc", "brier"})
MULTICLASS_ONLY = frozenset({"roc_auc_ovr"})
# log(0) has no value: probabilities are clipped to this (scikit-learn's log_loss does too).
PROBABILITY_FLOOR = 1e-15


# --- Realized -------------------------------------------------------------------------------


def realized_performance(
    y_true,
    predictions,
    probabilities,
    classes: Sequence | None,
    metric: str,
    positive_class=None,
    bootstrap: int = 200,
    seed: int = 0,
) -> dict:
    """The metric on the labelled rows, with a bootstrap 95% interval.

    Rows whose label is missing (None or NaN) are left out; `rows` counts the others.

    Args:
        y_true: each row's true label (missing where there is none yet).
        predictions: each row's predicted label (classification) or value (regression).
        probabilities: classification: a float array (rows, classes) in `classes` order, or
            None when the metric needs none (accuracy, precision, ...); regression: None.
        classes: the class labels; None or empty for regression.
        metric: a name of components.common.vocabulary's CLASSIFICATION_METRICS or
            REGRESSION_METRICS.
        positive_class: a binary task's positive class; None: the second class.
        bootstrap: resamples of the labelled rows behind the interval; 0: no interval.
        seed: the resampling seed.

    Returns:
        {"metric", "value", "low", "high", "level", "rows", "method": "realized"}; value (and
        the interval) None with a "reason" when there are no labelled rows or the metric is
        undefined on them (ROC AUC with a single class present).

    Raises:
        PipelineInputError: an unknown metric or one of another task, arrays of different
            lengths, probabilities not shaped (rows, classes), a label that is not a class.
    """
    if bootstrap < 0:
        raise PipelineInputError(f"bootstrap: {bootstrap} resamples (must be 0 or more)")
    regression = not classes
    _check_metric(metric, classes)
    y_true = np.asarray(y_true, dtype=object)
    predictions = np.asarray(predictions, dtype=object)
    if len(predictions) != len(y_true):
        raise PipelineInputError(
            f"predictions: {len(predictions)} rows for {len(y_true)} labels (must be equal)"
        )
    labelled = ~_missing(y_true)
    if regression:
        score = _regression_scorer(metric, y_true, predictions)
    else:
        score = _classification_scorer(
            metric, y_true, predictions, probabilities, list(classes), positive_class
        )
    rows = np.flatnonzero(labelled)
    result = _result(metric, "realized", len(rows))
    if len(rows) == 0:
        return {**result, "reason": "no labelled rows"}
    value = score(rows)
    if not np.isfinite(value):
        return {**result, "reason": f"{metric} is undefined on these rows (one class only)"}
    result["value"] = value
    if bootstrap:
        rng = np.random.default_rng(seed)
        resampled = np.array([score(rng.choice(rows, size=len(rows))) for _ in range(bootstrap)])
        resampled = resampled[np.isfinite(resampled)]
        if resampled.size:
            low, high = np.quantile(resampled, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
            # A percentile interval need not hold the point value on a skewed metric; the
            # interval reported always does.
            result["low"], result["high"] = float(min(low, value)), float(max(high, value))
    return result


def _regression_scorer(metric: str, y_true, predictions) -> Callable[[np.ndarray], float]:
    truth = _floats(y_true, "y_true", allow_missing=True)
    predicted = _floats(predictions, "predictions")
    functions = {
        "mse": mean_squared_error,
        "rmse": lambda t, p: np.sqrt(mean_squared_error(t, p)),
        "mae": mean_absolute_error,
        "r2": r2_score,
    }
    function = functions[metric]
    return lambda rows: float(function(truth[rows], predicted[rows]))


def _classification_scorer(
    metric: str, y_true, predictions, probabilities, classes: list, positive_class
) -> Callable[[np.ndarray], float]:
    names = [str(c) for c in classes]
    truth = _class_indices(y_true, names, "y_true", allow_missing=True)
    predicted = _class_indices(predictions, names, "predictions")
    needs_probabilities = metric in {"roc_auc", "roc_auc_ovr", "pr_auc", "log_loss", "brier"}
    matrix = None
    if needs_probabilities or probabilities is not None:
        matrix = _probability_matrix(probabilities, len(names), len(truth))
    if len(names) == 2:
        positive = _positive_index(names, positive_class)
        is_positive = truth == positive
        predicted_positive = predicted == positive
        scores = matrix[:, positive] if matrix is not None else None
        binary = {
            "accuracy": lambda t, p, s: accuracy_score(t, p),
            "balanced_accuracy": lambda t, p, s: balanced_accuracy_score(t, p),
            "precision": lambda t, p, s: precision_score(t, p, zero_division=0),
            "recall": lambda t, p, s: recall_score(t, p, zero_division=0),
            "f1": lambda t, p, s: f1_score(t, p, zero_division=0),
            "roc_auc": lambda t, p, s: _defined(roc_auc_score, t, s),
            "pr_auc": lambda t, p, s: _defined(average_precision_score, t, s),
            "log_loss": lambda t, p, s: log_loss(
                t, np.clip(s, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR), labels=[False, True]
            ),
            "brier": lambda t, p, s: brier_score_loss(t, s, pos_label=True),
        }
        function = binary[metric]
        return lambda rows: float(
            function(
                is_positive[rows],
                predicted_positive[rows],
                scores[rows] if scores is not None else None,
            )
        )
    labels = list(range(len(names)))
    average = {"average": "macro", "labels": labels, "zero_division": 0}
    multiclass = {
        "accuracy": lambda t, p, m: accuracy_score(t, p),
        "balanced_accuracy": lambda t, p, m: balanced_accuracy_score(t, p),
        "precision": lambda t, p, m: precision_score(t, p, **average),
        "recall": lambda t, p, m: recall_score(t, p, **average),
        "f1": lambda t, p, m: f1_score(t, p, **average),
        "roc_auc_ovr": lambda t, p, m: _defined(
            roc_auc_score, t, m, multi_class="ovr", labels=labels
        ),
        "log_loss": lambda t, p, m: log_loss(t, m, labels=labels),
    }
    function = multiclass[metric]
    return lambda rows: float(
        function(truth[rows], predicted[rows], matrix[rows] if matrix is not None else None)
    )


def _defined(metric: Callable, *args, **kwargs) -> float:
    """A ranking metric, or NaN when the rows hold a single class (it is undefined there)."""
    try:
        with warnings.catch_warnings():
            # scikit-learn warns before it returns NaN for a single class; NaN says it here.
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            return float(metric(*args, **kwargs))
    except ValueError:
        return float("nan")


# --- Estimated (CBPE) -----------------------------------------------------------------------


def estimate_performance(
    probabilities,
    classes: Sequence | None,
    metric: str,
    positive_class=None,
    threshold: float | None = None,
) -> dict:
    """The metric's expected value from calibrated probabilities, without labels (CBPE).

    Each row's predicted label is taken as the model's: a binary task's positive class where
    its probability is at least `threshold`, otherwise the most probable class.

    Args:
        probabilities: a float array (rows, classes) in `classes` order; None for regression.
        classes: the class labels; None or empty for regression.
        metric: a name of CLASSIFICATION_METRICS or REGRESSION_METRICS.
        positive_class: a binary task's positive class; None: the second class.
        threshold: a binary task's decision threshold on the positive class's probability;
            None: 0.5.

    Returns:
        {"metric", "value", "low", "high", "level", "rows", "method": "cbpe"}; value None with
        a "reason" for regression (no probabilities to read), a metric without a label-free
        estimate, or no rows.

    Raises:
        PipelineInputError: an unknown metric or one of another task, probabilities not
            shaped (rows, classes) or not in [0, 1], a threshold outside [0, 1].
    """
    _check_metric(metric, classes)
    if not classes:
        rows = 0 if probabilities is None else len(probabilities)
        return {
            **_result(metric, "cbpe", rows),
            "reason": "regression: there are no class probabilities to estimate from",
        }
    names = [str(c) for c in classes]
    if probabilities is None:
        raise PipelineInputError("probabilities: missing (CBPE needs one column per class)")
    matrix = _probability_matrix(probabilities, len(names), None)
    result = _result(metric, "cbpe", len(matrix))
    if len(matrix) == 0:
        return {**result, "reason": "no rows"}
    if threshold is not None and not 0 <= threshold <= 1:
        raise PipelineInputError(f"threshold: {threshold} is not a probability in [0, 1]")
    # Each row's probabilities, normalised: a row may sum to 1 only up to rounding.
    matrix = matrix / matrix.sum(axis=1, keepdims=True)
    if len(names) == 2:
        positive = _positive_index(names, positive_class)
        predicted_positive = matrix[:, positive] >= (0.5 if threshold is None else threshold)
        predicted = np.where(predicted_positive, positive, 1 - positive)
    else:
        positive = None
        predicted = matrix.argmax(axis=1)
    if metric == "accuracy":
        # Each row is right with the probability of its predicted class, independently: the
        # count right is Poisson-binomial, its variance known; a normal interval is enough for
        # a window of monitoring size, and a million rows cost no simulation.
        right = matrix[np.arange(len(matrix)), predicted]
        expected = float(right.mean())
        spread = 1.959964 * float(np.sqrt((right * (1 - right)).sum())) / len(matrix)
        result.update(
            value=expected, low=max(expected - spread, 0.0), high=min(expected + spread, 1.0)
        )
        return result
    if metric == "pr_auc":
        expected = _expected_binary_ranking(matrix[:, positive], average_precision_score)
        draws = _simulated(matrix, lambda labels: _pr_auc_draws(labels, matrix[:, positive]))
    else:
        expected = _expected(metric, matrix, predicted, positive)
        draws = _simulated(
            matrix, lambda labels: _metric_draws(metric, labels, matrix, predicted, positive)
        )
    result["value"] = float(expected)
    draws = draws[np.isfinite(draws)]
    if draws.size:
        low, high = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        result["low"], result["high"] = float(min(low, expected)), float(max(high, expected))
    return result


def _expected(metric: str, matrix: np.ndarray, predicted: np.ndarray, positive) -> float:
    """The metric's expected value when each row's label is drawn from its probabilities."""
    rows = len(matrix)
    if metric == "accuracy":
        return float(matrix[np.arange(rows), predicted].mean())
    if metric == "log_loss":
        clipped = np.clip(matrix, PROBABILITY_FLOOR, 1)
        return float(-(matrix * np.log(clipped)).sum(axis=1).mean())
    if metric == "brier":
        scores = matrix[:, positive]
        return float((scores * (1 - scores)).mean())
    if metric in {"roc_auc", "roc_auc_ovr"}:
        columns = [positive] if positive is not None else range(matrix.shape[1])
        return float(
            np.mean([_expected_binary_ranking(matrix[:, k], roc_auc_score) for k in columns])
        )
    # The expected confusion matrix: rows the true class, columns the predicted one.
    confusion = np.stack(
        [matrix[predicted == k].sum(axis=0) for k in range(matrix.shape[1])], axis=1
    )
    return _from_confusion(metric, confusion[np.newaxis], positive)[0]


def _expected_binary_ranking(scores: np.ndarray, metric: Callable) -> float:
    """A ranking metric of `scores` with the scores themselves as soft labels: each row counts
    as a positive with weight p and as a negative with weight 1 - p."""
    doubled = np.concatenate([scores, scores])
    labels = np.concatenate([np.ones(len(scores), bool), np.zeros(len(scores), bool)])
    weights = np.concatenate([scores, 1 - scores])
    return _defined(metric, labels, doubled, sample_weight=weights)


def _from_confusion(metric: str, confusion: np.ndarray, positive) -> np.ndarray:
    """A label metric from confusion matrices (draws, true class, predicted class): a binary
    task's for its positive class, otherwise the macro average over classes."""
    true_positive = np.diagonal(confusion, axis1=1, axis2=2)
    actual = confusion.sum(axis=2)
    predicted = confusion.sum(axis=1)
    total = confusion.sum(axis=(1, 2))
    if metric == "accuracy":
        return true_positive.sum(axis=1) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(actual > 0, true_positive / actual, 0.0)
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    if metric == "balanced_accuracy":
        # scikit-learn averages the recall over the classes present.
        present = actual > 0
        return (recall * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    per_class = {"precision": precision, "recall": recall, "f1": f1}[metric]
    if positive is not None:
        return per_class[:, positive]
    return per_class.mean(axis=1)


def _simulated(matrix: np.ndarray, metric_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The metric on ESTIMATE_DRAWS label draws, each row's label drawn from its probabilities."""
    rng = np.random.default_rng(ESTIMATE_SEED)
    rows = len(matrix)
    cumulative = np.cumsum(matrix, axis=1)[:, :-1]
    cells = max(rows * (matrix.shape[1] - 1), 1)
    block = max(1, min(ESTIMATE_DRAWS, DRAW_CELLS // cells))
    values = []
    for start in range(0, ESTIMATE_DRAWS, block):
        uniform = rng.random((min(block, ESTIMATE_DRAWS - start), rows))
        # A label is the number of cumulative shares its uniform passes.
        labels = (uniform[:, :, np.newaxis] > cumulative[np.newaxis]).sum(axis=2)
        values.append(metric_of(labels))
    return np.concatenate(values)


def _metric_draws(
    metric: str, labels: np.ndarray, matrix: np.ndarray, predicted: np.ndarray, positive
) -> np.ndarray:
    """The realized metric of each draw of labels (draws, rows), vectorised over the draws."""
    rows = matrix.shape[0]
    classes = matrix.shape[1]
    if metric == "log_loss":
        chosen = np.clip(matrix[np.arange(rows), labels], PROBABILITY_FLOOR, 1)
        return -np.log(chosen).mean(axis=1)
    if metric == "brier":
        return (((labels == positive) - matrix[:, positive]) ** 2).mean(axis=1)
    if metric in {"roc_auc", "roc_auc_ovr"}:
        columns = [positive] if positive is not None else range(classes)
        return np.mean([_auc_draws(labels == k, matrix[:, k]) for k in columns], axis=0)
    confusion = np.stack(
        [
            np.stack([((labels == t) & (predicted == p)).sum(axis=1) for p in range(classes)], 1)
            for t in range(classes)
        ],
        axis=1,
    ).astype(float)
    return _from_confusion(metric, confusion, positive)


def _auc_draws(is_positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of fixed scores for each draw of labels (Mann-Whitney: from the score ranks)."""
    ranks = rankdata(scores)
    positives = is_positive.sum(axis=1).astype(float)
    negatives = is_positive.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return (is_positive @ ranks - positives * (positives + 1) / 2) / (positives * negatives)


def _pr_auc_draws(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.array([_defined(average_precision_score, draw == 1, scores) for draw in labels])


# --- Checks ---------------------------------------------------------------------------------


def _result(metric: str, method: str, rows: int) -> dict:
    return {
        "metric": metric,
        "value": None,
        "low": None,
        "high": None,
        "level": LEVEL,
        "rows": int(rows),
        "method": method,
    }


def _check_metric(metric: str, classes) -> None:
    if not classes:
        if metric not in REGRESSION_METRICS:
            raise PipelineInputError(
                f"metric '{metric}' is not a regression metric "
                f"(known: {', '.join(REGRESSION_METRICS)})"
            )
        return
    if len(classes) < 2:
        raise PipelineInputError(f"classes: {len(classes)} class (a classifier has at least 2)")
    if metric not in CLASSIFICATION_METRICS:
        raise PipelineInputError(
            f"metric '{metric}' is not a classification metric "
            f"(known: {', '.join(CLASSIFICATION_METRICS)})"
        )
    if len(classes) == 2 and metric in MULTICLASS_ONLY:
        raise PipelineInputError(f"metric '{metric}' is for more than 2 classes (use roc_auc)")
    if len(classes) > 2 and metric in BINARY_ONLY:
        raise PipelineInputError(
            f"metric '{metric}' is for 2 classes; with {len(classes)} use another "
            "(roc_auc_ovr, log_loss, accuracy, ...)"
        )


def _missing(values: np.ndarray) -> np.ndarray:
    return np.asarray(pd.isna(values), dtype=bool)


def _floats(values: np.ndarray, name: str, allow_missing: bool = False) -> np.ndarray:
    try:
        numbers = np.array([np.nan if v is None else v for v in values], dtype=float)
    except (TypeError, ValueError):
        raise PipelineInputError(f"{name}: a value is not a number (regression)") from None
    if not allow_missing and np.isnan(numbers).any():
        raise PipelineInputError(f"{name}: a value is missing")
    return numbers


def _class_indices(values: np.ndarray, names: list[str], name: str, allow_missing=False):
    """Each value's position in `names` (matched as text); -1 for a missing one."""
    missing = _missing(values)
    if missing.any() and not allow_missing:
        raise PipelineInputError(f"{name}: a value is missing")
    text = pd.Series(values, dtype=object).astype(str).to_numpy()
    indices = pd.Index(names).get_indexer(text)
    unknown = (indices < 0) & ~missing
    if unknown.any():
        raise PipelineInputError(
            f"{name}: '{text[unknown][0]}' is not a class (classes: {', '.join(names)})"
        )
    return np.where(missing, -1, indices)


def _probability_matrix(probabilities, classes: int, rows: int | None) -> np.ndarray:
    if probabilities is None:
        raise PipelineInputError("probabilities: missing (the metric needs one column per class)")
    try:
        matrix = np.asarray(probabilities, dtype=float)
    except (TypeError, ValueError):
        raise PipelineInputError("probabilities: a value is not a number") from None
    if matrix.ndim != 2 or matrix.shape[1] != classes or (rows is not None and len(matrix) != rows):
        expected = f"({rows if rows is not None else 'rows'}, {classes})"
        raise PipelineInputError(
            f"probabilities: shape {matrix.shape}, expected {expected} (one column per class)"
        )
    if np.isnan(matrix).any() or (matrix < 0).any() or (matrix > 1).any():
        raise PipelineInputError("probabilities: a value is missing or outside [0, 1]")
    if len(matrix) and (matrix.sum(axis=1) <= 0).any():
        raise PipelineInputError("probabilities: a row sums to 0")
    return matrix


def _positive_index(names: list[str], positive_class) -> int:
    if positive_class is None or positive_class == "":
        return 1
    if str(positive_class) not in names:
        raise PipelineInputError(
            f"positive_class '{positive_class}' is not a class (classes: {', '.join(names)})"
        )
    return names.index(str(positive_class))
