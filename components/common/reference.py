"""A model version's training reference: what its data and its answers looked like at training.

Stored with the version as reference.json (checksummed like model.joblib) so that a monitor can
compare new data and new predictions with it without the training data:

- `profile`: a profile (components.common.profile) that drift.compare reads as it is: the
  features profiled on the TRAINING split, the `prediction` and `probability_<class>` columns on
  the model's answers for the HELD-OUT split (the columns a prediction log holds them in, named
  by the model's own classes, as the server names them);
- `metrics`: each held-out metric that evaluate reports, with a 95% percentile-bootstrap interval
  (the rows resampled with replacement, `bootstrap` times, with a fixed seed);
- `task`, `classes`, `positive_class`, `threshold` (the decision threshold the model applies, for
  a binary task) and `rows` (train, test).

The point values are scikit-learn's, computed by the same functions evaluate uses, so they equal
the evaluation's. The intervals are not: scikit-learn's functions take milliseconds per call,
and 200 resamples of nine metrics would take seconds. Each resample is instead a row of counts
(how often each row was drawn), and every metric is written as weighted sums over those counts,
all resamples at once (a matrix product); with every count 1 the weighted forms give
scikit-learn's values, which the tests check.
"""

import json
import math

import numpy as np
import pandas as pd
from scipy import sparse

from components.common.errors import PipelineInputError
from components.common.io import json_ready
from components.common.metrics import (
    _binary_metrics,
    decision_threshold,
    multiclass_metrics,
    positive_class_of,
    regression_metrics,
)
from components.common.profile import (
    PREDICTION_COLUMN,
    check_profile,
    probability_column,
    profile_frame,
)
from components.common.schema import TASKS, as_model_input

REFERENCE_VERSION = 1
LEVEL = 0.95
# Resamples are drawn in chunks of at most this many counts (resamples x rows): 200 resamples of
# a 100,000-row test split would otherwise be a 160 MB matrix.
MAX_CHUNK_CELLS = 2_000_000
METRIC_KEYS = ("value", "low", "high", "level", "rows")
TOP_KEYS = ("version", "profile", "metrics", "task", "classes", "positive_class", "threshold")


def build_reference(
    train: pd.DataFrame,
    test: pd.DataFrame,
    schema: dict,
    model,
    positive_class: str = "",
    metrics: list[str] | None = None,
    bootstrap: int = 200,
    seed: int = 0,
) -> dict:
    """The reference of a fitted model (see the module docstring).

    Args:
        train: the training split (raw features, as prepare wrote it).
        test: the held-out split, with the target.
        schema: the schema that validate wrote.
        model: the served model (takes as_model_input rows; its predict() applies its
            decision threshold).
        positive_class: the positive class of a binary task; empty: the second sorted class.
        metrics: the metrics to keep; None: every metric evaluate reports for the task.
        bootstrap: resamples for the intervals (0: no interval, low and high are None).
        seed: the resampling seed.

    Returns:
        The reference dict, JSON-ready (no NaN: an undefined value is None).

    Raises:
        PipelineInputError: a split without rows, a feature or the target missing, an unknown
            metric, or an unknown positive class.
    """
    if bootstrap < 0:
        raise PipelineInputError(f"bootstrap: {bootstrap}, expected 0 or more")
    for name, split in (("train", train), ("test", test)):
        if split.empty:
            raise PipelineInputError(f"the {name} split has no rows: nothing to profile")
    if schema["target"] not in test.columns:
        raise PipelineInputError(
            f"column '{schema['target']}' (the target) is not in the test split"
        )
    profile = profile_frame(train, schema)
    features = as_model_input(test, schema)
    y_true = test[schema["target"]].to_numpy()
    reference = {
        "version": REFERENCE_VERSION,
        "profile": profile,
        "metrics": {},
        "task": schema["task"],
        "classes": None,
        "positive_class": None,
        "threshold": None,
        "rows": {"train": len(train), "test": len(test)},
    }
    outputs = pd.DataFrame(index=range(len(test)))
    if schema["task"] == "regression":
        predicted = np.asarray(model.predict(features), dtype=float)
        answers = profile_frame(outputs, {**schema, "features": []}, predictions=predicted)
        values = regression_metrics(y_true, predicted)
        weighted = _regression_resampled(y_true.astype(float), predicted)
    else:
        classes = np.asarray(model.classes_).tolist()
        probabilities = np.asarray(model.predict_proba(features), dtype=float)
        predicted = np.asarray(model.predict(features), dtype=object)
        # Named by the model's classes, in its column order: the server logs them so.
        answers = profile_frame(
            outputs,
            {**schema, "features": [], "classes": classes},
            predictions=predicted,
            probabilities=probabilities,
        )
        positive = positive_class_of(classes, positive_class)
        reference["classes"] = classes
        if positive is None:
            values = multiclass_metrics(y_true, probabilities, classes)
            weighted = _multiclass_resampled(y_true, probabilities, classes)
        else:
            is_positive = y_true == positive
            scores = probabilities[:, classes.index(positive)]
            predicted_positive = predicted == positive
            values = _binary_metrics(is_positive, predicted_positive, scores)
            weighted = _binary_resampled(is_positive, predicted_positive, scores)
            reference["positive_class"] = positive
            reference["threshold"] = decision_threshold(model)
    profile["outputs"] = answers["outputs"]
    names = list(values)
    if metrics is not None:
        unknown = [name for name in metrics if name not in values]
        if unknown:
            raise PipelineInputError(
                f"metric '{unknown[0]}' is not a {schema['task']} metric here "
                f"(known: {', '.join(values)})"
            )
        names = list(metrics)
    distribution = resampled_metrics(weighted, len(test), bootstrap, seed)
    for name in names:
        low = high = None
        if bootstrap:
            low, high = percentile_interval(distribution[name])
        reference["metrics"][name] = {
            "value": _finite(values[name]),
            "low": low,
            "high": high,
            "level": LEVEL,
            "rows": len(test),
        }
    return json_ready(reference)


# --- Bootstrap intervals ----------------------------------------------------------------------


def resample_counts(rows: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, rows]: how many times each row was drawn in each resample (each row sums to
    `rows`)."""
    picks = rng.integers(0, rows, size=(resamples, rows))
    picks += np.arange(resamples)[:, None] * rows
    counts = np.bincount(picks.ravel(), minlength=resamples * rows)
    return counts.reshape(resamples, rows).astype(float)


def resampled_metrics(weighted, rows: int, bootstrap: int, seed: int) -> dict[str, np.ndarray]:
    """Each metric over `bootstrap` resamples of the rows: `weighted(counts)` gives the metrics
    of a [resamples, rows] count matrix as {name: [resamples]}."""
    if bootstrap == 0:
        return {}
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_CHUNK_CELLS // max(rows, 1))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, bootstrap, chunk):
        parts.append(weighted(resample_counts(rows, min(chunk, bootstrap - start), rng)))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple:
    """The central `level` interval of the resampled values (resamples where the metric is
    undefined, e.g. an AUC on one class, left out); (None, None) when none is defined."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float = 0.0) -> np.ndarray:
    """numerator / denominator, `empty` where the denominator is 0 (scikit-learn's
    zero_division)."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, empty)


def _score_groups(scores: np.ndarray) -> sparse.csr_matrix:
    """[rows, distinct scores] indicator, the distinct scores ascending: tied rows share one
    threshold, as in scikit-learn's curves."""
    _, group = np.unique(scores, return_inverse=True)
    rows = len(scores)
    return sparse.csr_matrix(
        (np.ones(rows), (np.arange(rows), group)), shape=(rows, int(group.max()) + 1)
    )


def _weighted_auc_ap(counts: np.ndarray, is_positive: np.ndarray, groups) -> tuple:
    """ROC AUC and average precision of every resample (NaN where it holds one class only)."""
    # Sparse on the left: the product is a dense [resamples, distinct scores] array.
    positives = (groups.T @ (counts * is_positive).T).T
    negatives = (groups.T @ (counts * ~is_positive).T).T
    total_positive, total_negative = positives.sum(axis=1), negatives.sum(axis=1)
    defined = (total_positive > 0) & (total_negative > 0)
    # AUC: the chance that a positive outscores a negative, ties counting half.
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = np.sum(positives * (below + negatives / 2), axis=1)
    auc = np.where(defined, _ratio(pairs, total_positive * total_negative, np.nan), np.nan)
    # Average precision: precision at each threshold (highest first) times the recall it adds.
    true_positive = np.cumsum(positives[:, ::-1], axis=1)
    false_positive = np.cumsum(negatives[:, ::-1], axis=1)
    precision = _ratio(true_positive, true_positive + false_positive)
    gained = positives[:, ::-1] / np.where(total_positive > 0, total_positive, 1.0)[:, None]
    average_precision = np.where(total_positive > 0, np.sum(precision * gained, axis=1), np.nan)
    return auc, average_precision


def _binary_resampled(is_positive, predicted_positive, scores):
    """The weighted forms of metrics._binary_metrics."""
    is_positive = np.asarray(is_positive, dtype=bool)
    predicted_positive = np.asarray(predicted_positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    groups = _score_groups(scores)
    clipped = np.clip(scores, 1e-15, 1 - 1e-15)
    row_log_loss = -np.where(is_positive, np.log(clipped), np.log(1 - clipped))
    row_brier = (is_positive - scores) ** 2

    def weighted(counts: np.ndarray) -> dict[str, np.ndarray]:
        total = counts.sum(axis=1)
        tp = counts @ (is_positive & predicted_positive)
        fp = counts @ (~is_positive & predicted_positive)
        fn = counts @ (is_positive & ~predicted_positive)
        tn = counts @ (~is_positive & ~predicted_positive)
        recall = _ratio(tp, tp + fn)
        specificity = _ratio(tn, tn + fp)
        # balanced accuracy: the mean recall of the classes present in the resample.
        present = (tp + fn > 0).astype(float) + (tn + fp > 0)
        auc, average_precision = _weighted_auc_ap(counts, is_positive, groups)
        return {
            "accuracy": (tp + tn) / total,
            "balanced_accuracy": _ratio(
                recall * (tp + fn > 0) + specificity * (tn + fp > 0), present
            ),
            "precision": _ratio(tp, tp + fp),
            "recall": recall,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "roc_auc": auc,
            "pr_auc": average_precision,
            "log_loss": counts @ row_log_loss / total,
            "brier": counts @ row_brier / total,
        }

    return weighted


def _multiclass_resampled(y_true, probabilities: np.ndarray, classes: list):
    """The weighted forms of metrics.multiclass_metrics (macro averages over `classes`)."""
    y_true = np.asarray(y_true, dtype=object)
    truth = np.stack([y_true == label for label in classes], axis=1).astype(float)
    predicted = np.zeros_like(truth)
    predicted[np.arange(len(truth)), probabilities.argmax(axis=1)] = 1.0
    hit = truth * predicted
    eps = np.finfo(float).eps
    row_log_loss = -np.log(np.clip((truth * probabilities).sum(axis=1), eps, 1 - eps))
    class_groups = [_score_groups(probabilities[:, k]) for k in range(len(classes))]

    def weighted(counts: np.ndarray) -> dict[str, np.ndarray]:
        total = counts.sum(axis=1)
        actual, called, correct = counts @ truth, counts @ predicted, counts @ hit
        recall = _ratio(correct, actual)
        present = actual > 0
        aucs = np.stack(
            [
                _weighted_auc_ap(counts, truth[:, k].astype(bool), class_groups[k])[0]
                for k in range(len(classes))
            ],
            axis=1,
        )
        return {
            "accuracy": correct.sum(axis=1) / total,
            "balanced_accuracy": _ratio((recall * present).sum(axis=1), present.sum(axis=1)),
            "precision": _ratio(correct, called).mean(axis=1),
            "recall": recall.mean(axis=1),
            "f1": _ratio(2 * correct, actual + called).mean(axis=1),
            # scikit-learn's one-vs-rest AUC is undefined unless every class is present.
            "roc_auc_ovr": np.where(present.all(axis=1), aucs.mean(axis=1), np.nan),
            "log_loss": counts @ row_log_loss / total,
        }

    return weighted


def _regression_resampled(y_true: np.ndarray, predicted: np.ndarray):
    """The weighted forms of metrics.regression_metrics."""
    residual = y_true - predicted

    def weighted(counts: np.ndarray) -> dict[str, np.ndarray]:
        total = counts.sum(axis=1)
        mse = counts @ residual**2 / total
        mean = counts @ y_true / total
        spread = counts @ y_true**2 - total * mean**2
        squared_error = mse * total
        # scikit-learn's r2 on a constant target: 1 for a perfect fit, else 0.
        r2 = np.where(
            spread > 0,
            1 - squared_error / np.where(spread > 0, spread, 1.0),
            np.where(squared_error == 0, 1.0, 0.0),
        )
        return {
            "mse": mse,
            "rmse": np.sqrt(mse),
            "mae": counts @ np.abs(residual) / total,
            "r2": r2,
        }

    return weighted


# --- Reading and writing ----------------------------------------------------------------------


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def reference_json(reference: dict) -> bytes:
    """The reference as compact JSON bytes (reference.json): no indentation, it is read by
    programs and `mlpipe models show`, and the samples are most of it."""
    return json.dumps(
        json_ready(reference), separators=(",", ":"), allow_nan=False, ensure_ascii=False
    ).encode("utf-8")


def check_reference(reference: dict, where: str) -> None:
    """Raise PipelineInputError, one line naming `where` and the key, unless `reference` is a
    reference of this version whose profile the drift comparison can read."""
    if not isinstance(reference, dict):
        raise PipelineInputError(
            f"{where}: a reference is a JSON object, not {type(reference).__name__}"
        )
    for key in (*TOP_KEYS, "rows"):
        if key not in reference:
            raise PipelineInputError(f"{where}: key '{key}' is missing (not a reference?)")
    if reference["version"] != REFERENCE_VERSION:
        raise PipelineInputError(
            f"{where}: key 'version' is {reference['version']!r}; this mlpipe reads references "
            f"of version {REFERENCE_VERSION}"
        )
    check_profile(reference["profile"], f"{where}: key 'profile'")
    if reference["task"] not in TASKS:
        raise PipelineInputError(
            f"{where}: key 'task' is {reference['task']!r}, expected one of: {', '.join(TASKS)}"
        )
    if reference["classes"] is not None and not isinstance(reference["classes"], list):
        raise PipelineInputError(f"{where}: key 'classes' is not a list (or null)")
    threshold = reference["threshold"]
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float)
    ):
        raise PipelineInputError(f"{where}: key 'threshold' is {threshold!r}, not a number")
    rows = reference["rows"]
    if not isinstance(rows, dict) or not all(
        isinstance(rows.get(split), int) and rows[split] > 0 for split in ("train", "test")
    ):
        raise PipelineInputError(f"{where}: key 'rows' is not {{train: n, test: n}} (counts > 0)")
    if not isinstance(reference["metrics"], dict):
        raise PipelineInputError(f"{where}: key 'metrics' is not an object")
    for name, metric in reference["metrics"].items():
        if not isinstance(metric, dict):
            raise PipelineInputError(f"{where}: key 'metrics.{name}' is not an object")
        for key in METRIC_KEYS:
            if key not in metric:
                raise PipelineInputError(f"{where}: key 'metrics.{name}.{key}' is missing")
        for key in ("value", "low", "high"):
            item = metric[key]
            if item is not None and (isinstance(item, bool) or not isinstance(item, int | float)):
                raise PipelineInputError(
                    f"{where}: key 'metrics.{name}.{key}' is {item!r}, not a number (or null)"
                )


# The prediction column's name, for readers that summarise the reference's answers.
__all__ = [
    "PREDICTION_COLUMN",
    "REFERENCE_VERSION",
    "build_reference",
    "check_reference",
    "probability_column",
    "reference_json",
]
