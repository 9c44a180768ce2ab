"""Model families: the estimator each family fits per task, its default search space, and a
user's overrides of it (checked here, so that the run config is checked before any step runs).

A space is written the same way in code and in the run config (`tuning.space`), one entry per
hyperparameter:

    max_depth: {randint: [3, 16]}        # integers, both ends included
    learning_rate: {loguniform: [0.02, 0.3]}
    min_impurity_decrease: {uniform: [0.0, 0.01]}
    max_features: {choice: [sqrt, 0.5]}
    n_estimators: 100                    # a fixed value

Iterative families name their iteration resource (boosting rounds, trees grown with warm_start):
a trial grows it step by step and reports at each step, so that ASHA can stop a bad trial early.
Tune turns a space into Ray Tune's (components.tune.search_space); train fits the family tune
chose (make_estimator).
"""

import importlib
import math
from numbers import Real

from components.common.errors import PipelineInputError

FAMILY_KEY = "family"
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")

# family -> (estimator class per task, by import path, so that reading the run config imports no
# ML library; the default search space of its constructor arguments)
FAMILIES = {
    "logistic_regression": (
        {"classification": "sklearn.linear_model.LogisticRegression"},
        {"C": {"loguniform": [1e-3, 1e2]}},
    ),
    "linear_regression": (
        {"regression": "sklearn.linear_model.Ridge"},
        {"alpha": {"loguniform": [1e-3, 1e2]}},
    ),
    "random_forest": (
        {
            "classification": "sklearn.ensemble.RandomForestClassifier",
            "regression": "sklearn.ensemble.RandomForestRegressor",
        },
        {
            "n_estimators": {"randint": [50, 200]},
            "max_depth": {"randint": [3, 16]},
            "min_samples_leaf": {"randint": [1, 20]},
        },
    ),
    "hist_gradient_boosting": (
        {
            "classification": "sklearn.ensemble.HistGradientBoostingClassifier",
            "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
        },
        {
            "learning_rate": {"loguniform": [0.02, 0.3]},
            "max_iter": {"randint": [50, 300]},
            "max_leaf_nodes": {"randint": [8, 64]},
            "l2_regularization": {"loguniform": [1e-4, 10.0]},
        },
    ),
    # A linear model fitted by stochastic gradient descent: the family whose champion can be
    # updated with new rows in place (partial_fit, components.common.incremental). Its loss is
    # fixed by the task (LOSSES), not searched.
    "sgd_linear": (
        {
            "classification": "sklearn.linear_model.SGDClassifier",
            "regression": "sklearn.linear_model.SGDRegressor",
        },
        {
            "alpha": {"loguniform": [1e-6, 1e-1]},
            "penalty": {"choice": ["l2", "elasticnet"]},
            "l1_ratio": {"uniform": [0.05, 0.5]},  # read only with the elasticnet penalty
        },
    ),
}

# Losses fixed per task: the model server, the evaluation gate and the reference read a
# classifier's predict_proba, which SGDClassifier has with the log loss only (modified_huber's
# are not calibrated probabilities).
LOSSES = {"sgd_linear": {"classification": "log_loss", "regression": "squared_error"}}

# The iteration resource of each iterative family: the constructor argument that warm_start grows.
RESOURCES = {"random_forest": "n_estimators", "hist_gradient_boosting": "max_iter"}

# Each family's constructor arguments (any task), as scikit-learn's get_params() names them:
# written out so that checking a run config's tuning.space imports no ML library.
# tests/components/test_families.py holds this table to the pinned scikit-learn's own names.
HYPERPARAMETERS = {
    "logistic_regression": frozenset(
        {
            "C",
            "class_weight",
            "dual",
            "fit_intercept",
            "intercept_scaling",
            "l1_ratio",
            "max_iter",
            "n_jobs",
            "penalty",
            "random_state",
            "solver",
            "tol",
            "verbose",
            "warm_start",
        }
    ),
    "linear_regression": frozenset(
        {
            "alpha",
            "copy_X",
            "fit_intercept",
            "max_iter",
            "positive",
            "random_state",
            "solver",
            "tol",
        }
    ),
    "random_forest": frozenset(
        {
            "bootstrap",
            "ccp_alpha",
            "class_weight",
            "criterion",
            "max_depth",
            "max_features",
            "max_leaf_nodes",
            "max_samples",
            "min_impurity_decrease",
            "min_samples_leaf",
            "min_samples_split",
            "min_weight_fraction_leaf",
            "monotonic_cst",
            "n_estimators",
            "n_jobs",
            "oob_score",
            "random_state",
            "verbose",
            "warm_start",
        }
    ),
    "hist_gradient_boosting": frozenset(
        {
            "categorical_features",
            "class_weight",
            "early_stopping",
            "interaction_cst",
            "l2_regularization",
            "learning_rate",
            "loss",
            "max_bins",
            "max_depth",
            "max_features",
            "max_iter",
            "max_leaf_nodes",
            "min_samples_leaf",
            "monotonic_cst",
            "n_iter_no_change",
            "quantile",
            "random_state",
            "scoring",
            "tol",
            "validation_fraction",
            "verbose",
            "warm_start",
        }
    ),
    "sgd_linear": frozenset(
        {
            "alpha",
            "average",
            "class_weight",
            "early_stopping",
            "epsilon",
            "eta0",
            "fit_intercept",
            "l1_ratio",
            "learning_rate",
            "loss",
            "max_iter",
            "n_iter_no_change",
            "n_jobs",
            "penalty",
            "power_t",
            "random_state",
            "shuffle",
            "tol",
            "validation_fraction",
            "verbose",
            "warm_start",
        }
    ),
}


def check_families(families: list[str], task: str) -> None:
    """Fail before Ray starts if a family is unknown or does not fit the task."""
    if not families:
        raise PipelineInputError("tuning.families: name at least one model family")
    for family in families:
        if family not in FAMILIES:
            raise PipelineInputError(
                f"tuning.families: unknown family '{family}' (known: {', '.join(FAMILIES)})"
            )
        if task not in FAMILIES[family][0]:
            raise PipelineInputError(f"tuning.families: '{family}' does not do {task}")


def estimator_class(path: str) -> type:
    """The class at an import path such as "sklearn.linear_model.Ridge" (imported on first use)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def hyperparameter_names(family: str) -> set[str]:
    """The constructor arguments of the family's estimators (any task)."""
    return set(HYPERPARAMETERS[family])


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_distribution(key: str, spec) -> None:
    """One hyperparameter's entry: a fixed value, or {distribution: arguments}."""
    if not isinstance(spec, dict):
        if isinstance(spec, (list, tuple, set)):
            raise PipelineInputError(
                f"{key}: a list is not a distribution; write {{choice: [...]}} to choose from it"
            )
        return  # a fixed value
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise PipelineInputError(
            f"{key}: expected one of {', '.join(DISTRIBUTIONS)} (for example "
            f"{{randint: [1, 10]}}), got {spec!r}"
        )
    kind, arguments = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(arguments, list) or not arguments:
            raise PipelineInputError(f"{key}: choice needs a non-empty list of values")
        return
    if not (isinstance(arguments, list) and len(arguments) == 2 and all(map(_number, arguments))):
        raise PipelineInputError(f"{key}: {kind} needs [low, high], two numbers")
    low, high = arguments
    if kind == "randint" and not all(float(v).is_integer() for v in arguments):
        raise PipelineInputError(f"{key}: randint needs whole numbers, got [{low}, {high}]")
    if low > high:
        raise PipelineInputError(f"{key}: low {low} > high {high}")
    if kind in ("uniform", "loguniform") and low == high:
        raise PipelineInputError(f"{key}: low {low} = high {high}; write the value to fix it")
    if kind == "loguniform" and low <= 0:
        raise PipelineInputError(f"{key}: loguniform needs low > 0, got {low}")


def check_space_overrides(overrides: dict | None, prefix: str = "tuning.space") -> None:
    """Unknown family, unknown hyperparameter name or a bad distribution: one line naming the key."""
    if not overrides:
        return
    if not isinstance(overrides, dict):
        raise PipelineInputError(f"{prefix}: expected a mapping of family to hyperparameters")
    for family, params in overrides.items():
        if family not in FAMILIES:
            raise PipelineInputError(
                f"{prefix}.{family}: unknown family (known: {', '.join(FAMILIES)})"
            )
        if not isinstance(params, dict):
            raise PipelineInputError(f"{prefix}.{family}: expected a mapping of hyperparameters")
        known = hyperparameter_names(family)
        for name, spec in params.items():
            if name not in known:
                raise PipelineInputError(
                    f"{prefix}.{family}.{name}: unknown hyperparameter of {family} "
                    f"(known: {', '.join(sorted(known))})"
                )
            if name == "random_state":
                raise PipelineInputError(
                    f"{prefix}.{family}.random_state: the seed comes from split.seed"
                )
            if name == "loss" and family in LOSSES:
                raise PipelineInputError(
                    f"{prefix}.{family}.{name}: fixed by the task (classification "
                    f"{LOSSES[family]['classification']}, for predict_proba; regression "
                    f"{LOSSES[family]['regression']})"
                )
            check_distribution(f"{prefix}.{family}.{name}", spec)


def family_specs(family: str, overrides: dict | None = None) -> dict:
    """The family's default space with the user's entries laid over it."""
    return {**FAMILIES[family][1], **((overrides or {}).get(family) or {})}


def spec_high(spec) -> float | None:
    """The largest value a spec can take, for numbers (the top of an iteration resource)."""
    if not isinstance(spec, dict):
        return float(spec) if _number(spec) else None
    kind, arguments = next(iter(spec.items()))
    values = [v for v in arguments if _number(v)]
    return float(max(values)) if values else None


def family_params(config: dict) -> tuple[str, dict]:
    """Split a sampled config into its family and that family's constructor arguments."""
    family = config[FAMILY_KEY]
    prefix = f"{family}."
    params = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    return family, params


def make_estimator(family: str, params: dict, task: str, seed: int):
    """A fresh, unfitted estimator of `family` with `params`, seeded where it takes a seed.

    Histogram gradient boosting runs exactly `max_iter` rounds (no internal early stopping), so
    that the rounds tuning chose are the rounds training fits. The SGD family's loss is the
    task's (LOSSES).
    """
    estimator = estimator_class(FAMILIES[family][0][task])(**params)
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=seed)
    if family == "logistic_regression" and "max_iter" not in params:
        estimator.set_params(max_iter=1000)
    if family == "hist_gradient_boosting" and "early_stopping" not in params:
        estimator.set_params(early_stopping=False)
    if family in LOSSES:
        estimator.set_params(loss=LOSSES[family][task])
    return estimator


# scikit-learn's scorer names (sklearn.metrics.get_scorer_names()), written out so that checking
# a config does not import scikit-learn (1.8 s of every `mlpipe run` and `mlpipe submit`); a test
# holds this to scikit-learn's own list.
SCORER_NAMES = frozenset(
    {
        "accuracy",
        "adjusted_mutual_info_score",
        "adjusted_rand_score",
        "average_precision",
        "balanced_accuracy",
        "completeness_score",
        "d2_absolute_error_score",
        "d2_brier_score",
        "d2_log_loss_score",
        "explained_variance",
        "f1",
        "f1_macro",
        "f1_micro",
        "f1_samples",
        "f1_weighted",
        "fowlkes_mallows_score",
        "homogeneity_score",
        "jaccard",
        "jaccard_macro",
        "jaccard_micro",
        "jaccard_samples",
        "jaccard_weighted",
        "matthews_corrcoef",
        "mutual_info_score",
        "neg_brier_score",
        "neg_log_loss",
        "neg_max_error",
        "neg_mean_absolute_error",
        "neg_mean_absolute_percentage_error",
        "neg_mean_gamma_deviance",
        "neg_mean_poisson_deviance",
        "neg_mean_squared_error",
        "neg_mean_squared_log_error",
        "neg_median_absolute_error",
        "neg_negative_likelihood_ratio",
        "neg_root_mean_squared_error",
        "neg_root_mean_squared_log_error",
        "normalized_mutual_info_score",
        "positive_likelihood_ratio",
        "precision",
        "precision_macro",
        "precision_micro",
        "precision_samples",
        "precision_weighted",
        "r2",
        "rand_score",
        "recall",
        "recall_macro",
        "recall_micro",
        "recall_samples",
        "recall_weighted",
        "roc_auc",
        "roc_auc_ovo",
        "roc_auc_ovo_weighted",
        "roc_auc_ovr",
        "roc_auc_ovr_weighted",
        "top_k_accuracy",
        "v_measure_score",
    }
)


def check_metric(metric: str) -> None:
    """tuning.metric must be a scikit-learn scorer name (every trial is scored with it)."""
    if metric not in SCORER_NAMES:
        raise PipelineInputError(
            f"tuning.metric: '{metric}' is not a scikit-learn scorer name (for example roc_auc, "
            "accuracy, f1, r2, neg_root_mean_squared_error)"
        )
