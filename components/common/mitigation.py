"""Bias mitigation, off by default (`bias.mitigation`), for binary classification.

- reweighing (pre-processing): each training row weighs P(group) * P(label) / P(group, label),
  so that group and label are independent in the weighted data (Kamiran & Calders, 2012;
  fairlearn has no reweighing). The weights go to the final fit; tuning does not use them.
- exponentiated_gradient (in-processing): fairlearn's ExponentiatedGradient with the chosen
  constraint; the served model is ExponentiatedGradientModel, the preprocessor's output in,
  the mitigated classifier's labels out.
- threshold_optimizer (post-processing): fairlearn's ThresholdOptimizer on top of the fitted
  model, with thresholds per group; the served model is ThresholdOptimizedModel, whose
  predict(X) reads the group from X's sensitive column. A request without that column is
  refused (HTTP 400), and so is a group value the model was not fitted with.

Both fairlearn mitigators predict at random (a mixture of classifiers, or of two thresholds).
Served models must answer a request the same way every time, whatever else is in the batch, so
here each row's draw is a fixed function of the row itself (a hash of its feature values): the
same person always gets the same answer, and over many rows the rates are the mitigator's.
"""

import numpy as np
import pandas as pd
from fairlearn.postprocessing import ThresholdOptimizer
from fairlearn.reductions import (
    DemographicParity,
    EqualizedOdds,
    ErrorRateParity,
    ExponentiatedGradient,
    FalsePositiveRateParity,
    TruePositiveRateParity,
)
from sklearn.base import BaseEstimator, ClassifierMixin

from components.common.errors import PipelineInputError
from components.common.groups import Grouping
from components.common.vocabulary import CONSTRAINTS, MITIGATIONS, THRESHOLD_CONSTRAINTS

# fairlearn's constraint for each name the run config may give (vocabulary.CONSTRAINTS).
REDUCTION_CONSTRAINTS = {
    "demographic_parity": DemographicParity,
    "equalized_odds": EqualizedOdds,
    "true_positive_rate_parity": TruePositiveRateParity,
    "false_positive_rate_parity": FalsePositiveRateParity,
    "error_rate_parity": ErrorRateParity,
}


def check_mitigation(mitigation: str, constraint: str) -> None:
    """Raises PipelineInputError naming bias.mitigation or bias.constraint."""
    if mitigation not in MITIGATIONS:
        raise PipelineInputError(
            f"bias.mitigation '{mitigation}': expected one of {', '.join(MITIGATIONS)}"
        )
    allowed = THRESHOLD_CONSTRAINTS if mitigation == "threshold_optimizer" else CONSTRAINTS
    if (
        mitigation in ("exponentiated_gradient", "threshold_optimizer")
        and constraint not in allowed
    ):
        raise PipelineInputError(
            f"bias.constraint '{constraint}': {mitigation} takes one of {', '.join(allowed)}"
        )


def reweighing_weights(groups: pd.Series, favourable: np.ndarray) -> np.ndarray:
    """Sample weights P(g) * P(y) / P(g, y), normalised to a mean of 1.

    Args:
        groups: each row's group.
        favourable: each row's label as a boolean (True: the favourable class).
    """
    table = pd.DataFrame({"g": np.asarray(groups, dtype=object), "y": np.asarray(favourable)})
    n = len(table)
    p_group = table["g"].map(table["g"].value_counts() / n)
    p_label = table["y"].map(table["y"].value_counts() / n)
    p_joint = table.groupby(["g", "y"])["y"].transform("size") / n
    weights = (p_group * p_label / p_joint).to_numpy(dtype=float)
    return weights / weights.mean()


def row_draws(features) -> np.ndarray:
    """A number in [0, 1) per row, a fixed function of the row's values alone.

    Numbers are hashed as float64 and everything else as text, so a row read from Parquet
    (integers) and the same row from a JSON request (floats) draw the same number.
    """
    frame = pd.DataFrame(features).reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    normal = {}
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            normal[name] = column.astype(float)
        else:
            normal[name] = column.astype(str)
    hashes = pd.util.hash_pandas_object(pd.DataFrame(normal), index=False).to_numpy()
    return (hashes >> np.uint64(11)).astype(float) / float(1 << 53)


class _BinaryModel(ClassifierMixin, BaseEstimator):
    """A binary classifier's labels: the favourable class where the pmf's draw says so."""

    classes_: np.ndarray
    positive: object

    def _labels(self, favourable: np.ndarray) -> np.ndarray:
        negative = next(c for c in self.classes_ if c != self.positive)
        return np.where(favourable, self.positive, negative)

    def _proba(self, p_favourable: np.ndarray) -> np.ndarray:
        """Columns in classes_ order."""
        if self.classes_[1] == self.positive:
            return np.column_stack([1 - p_favourable, p_favourable])
        return np.column_stack([p_favourable, 1 - p_favourable])


class ExponentiatedGradientModel(_BinaryModel):
    """fairlearn's ExponentiatedGradient, fitted on the preprocessor's output, with a
    deterministic predict (see the module docstring). The last step of the served Pipeline.

    Args:
        estimator: an unfitted scikit-learn classifier that accepts sample_weight.
        constraint: a key of REDUCTION_CONSTRAINTS.
        positive: the favourable class.
    """

    def __init__(self, estimator, constraint: str, positive):
        self.estimator = estimator
        self.constraint = constraint
        self.positive = positive

    def fit(self, X, y, sensitive_features):
        y = np.asarray(y)
        self.classes_ = np.array(sorted(set(y.tolist()), key=str), dtype=object)
        if len(self.classes_) != 2:
            raise PipelineInputError(
                f"bias.mitigation exponentiated_gradient: needs two classes, "
                f"the target has {len(self.classes_)}"
            )
        self.mitigator_ = ExponentiatedGradient(
            self.estimator, constraints=REDUCTION_CONSTRAINTS[self.constraint]()
        )
        self.mitigator_.fit(
            X, (y == self.positive).astype(int), sensitive_features=np.asarray(sensitive_features)
        )
        return self

    def _p_favourable(self, X) -> np.ndarray:
        return np.asarray(self.mitigator_._pmf_predict(X))[:, 1]

    def predict_proba(self, X) -> np.ndarray:
        return self._proba(self._p_favourable(X))

    def predict(self, X) -> np.ndarray:
        return self._labels(row_draws(X) < self._p_favourable(X))


class ThresholdOptimizedModel(_BinaryModel):
    """fairlearn's ThresholdOptimizer on a fitted Pipeline, as the served model: predict(X)
    takes each row's group from X's sensitive column (so the schema's features include it).

    Args:
        pipeline: the fitted Pipeline (preprocessor and estimator) to post-process.
        grouping: how the sensitive column's values become groups (fixed at fit time).
        constraint: one of THRESHOLD_CONSTRAINTS.
        positive: the favourable class.
    """

    def __init__(self, pipeline, grouping: Grouping, constraint: str, positive):
        self.pipeline = pipeline
        self.grouping = grouping
        self.constraint = constraint
        self.positive = positive
        self.classes_ = np.asarray(pipeline.classes_, dtype=object)

    def fit(self, X: pd.DataFrame, y):
        if len(self.classes_) != 2:
            raise PipelineInputError(
                f"bias.mitigation threshold_optimizer: needs two classes, "
                f"the target has {len(self.classes_)}"
            )
        groups = self.grouping.labels(X)
        self.groups_ = sorted(groups.unique().tolist())
        method = "predict_proba" if hasattr(self.pipeline, "predict_proba") else "predict"
        self.optimizer_ = ThresholdOptimizer(
            estimator=self.pipeline,
            constraints=self.constraint,
            prefit=True,
            predict_method=method,
        )
        favourable = (np.asarray(y) == self.positive).astype(int)
        self.optimizer_.fit(X, favourable, sensitive_features=groups.to_numpy())
        return self

    def _groups(self, X: pd.DataFrame) -> np.ndarray:
        column = self.grouping.column
        if column not in X.columns:
            raise PipelineInputError(
                f"feature '{column}' is missing: this model's decision depends on the "
                "sensitive column (fairness post-processing with per-group thresholds)"
            )
        groups = self.grouping.labels(X)
        unknown = sorted(set(groups) - set(self.groups_))
        if unknown:
            raise PipelineInputError(
                f"feature '{column}': group '{unknown[0]}' was not in the training data, and "
                f"this model's thresholds are per group (known: {', '.join(self.groups_)})"
            )
        return groups.to_numpy()

    def _p_favourable(self, X: pd.DataFrame) -> np.ndarray:
        pmf = self.optimizer_._pmf_predict(X, sensitive_features=self._groups(X))
        return np.asarray(pmf)[:, 1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self._proba(self._p_favourable(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._labels(row_draws(X) < self._p_favourable(X))
