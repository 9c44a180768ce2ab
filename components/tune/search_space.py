"""Model families, their default search spaces, and a user's overrides of them.

A space is written the same way in code and in the run config (`tuning.space`), one entry per
hyperparameter:

    max_depth: {randint: [3, 16]}        # integers, both ends included
    learning_rate: {loguniform: [0.02, 0.3]}
    min_impurity_decrease: {uniform: [0.0, 0.01]}
    max_features: {choice: [sqrt, 0.5]}
    n_estimators: 100                    # a fixed value

The Ray Tune space is flat, with keys "<family>.<param>", so that every searcher (random, Optuna's
TPE) can sample it; the family itself is one more choice, and a trial uses the keys of the family
it drew and ignores the rest.

Iterative families name their iteration resource (boosting rounds, trees grown with warm_start):
a trial grows it step by step and reports at each step, so that ASHA can stop a bad trial early.
"""

import math
from numbers import Real

from ray import tune
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge

from components.common.errors import PipelineInputError

FAMILY_KEY = "family"
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")

# family -> (estimator class per task, default search space of its constructor arguments)
FAMILIES = {
    "logistic_regression": (
        {"classification": LogisticRegression},
        {"C": {"loguniform": [1e-3, 1e2]}},
    ),
    "linear_regression": (
        {"regression": Ridge},
        {"alpha": {"loguniform": [1e-3, 1e2]}},
    ),
    "random_forest": (
        {"classification": RandomForestClassifier, "regression": RandomForestRegressor},
        {
            "n_estimators": {"randint": [50, 200]},
            "max_depth": {"randint": [3, 16]},
            "min_samples_leaf": {"randint": [1, 20]},
        },
    ),
    "hist_gradient_boosting": (
        {
            "classification": HistGradientBoostingClassifier,
            "regression": HistGradientBoostingRegressor,
        },
        {
            "learning_rate": {"loguniform": [0.02, 0.3]},
            "max_iter": {"randint": [50, 300]},
            "max_leaf_nodes": {"randint": [8, 64]},
            "l2_regularization": {"loguniform": [1e-4, 10.0]},
        },
    ),
}

# The iteration resource of each iterative family: the constructor argument that warm_start grows.
RESOURCES = {"random_forest": "n_estimators", "hist_gradient_boosting": "max_iter"}


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


def hyperparameter_names(family: str) -> set[str]:
    """The constructor arguments of the family's estimators (any task)."""
    names: set[str] = set()
    for estimator_class in FAMILIES[family][0].values():
        names |= set(estimator_class().get_params())
    return names


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
            check_distribution(f"{prefix}.{family}.{name}", spec)


def family_specs(family: str, overrides: dict | None = None) -> dict:
    """The family's default space with the user's entries laid over it."""
    return {**FAMILIES[family][1], **((overrides or {}).get(family) or {})}


def to_domain(spec):
    """A checked spec as a Ray Tune domain (or the fixed value itself)."""
    if not isinstance(spec, dict):
        return spec
    kind, arguments = next(iter(spec.items()))
    if kind == "choice":
        return tune.choice(arguments)
    low, high = arguments
    if kind == "randint":
        return tune.randint(int(low), int(high) + 1)  # Ray's upper end is exclusive
    return getattr(tune, kind)(float(low), float(high))


def spec_high(spec) -> float | None:
    """The largest value a spec can take, for numbers (the top of an iteration resource)."""
    if not isinstance(spec, dict):
        return float(spec) if _number(spec) else None
    kind, arguments = next(iter(spec.items()))
    values = [v for v in arguments if _number(v)]
    return float(max(values)) if values else None


def search_space(families: list[str], task: str, overrides: dict | None = None) -> dict:
    """The Ray Tune param_space: the family as a choice, then every family's parameters."""
    check_families(families, task)
    check_space_overrides(overrides)
    space: dict = {FAMILY_KEY: tune.choice(sorted(families))}
    for family in sorted(families):
        for name, spec in family_specs(family, overrides).items():
            space[f"{family}.{name}"] = to_domain(spec)
    return space


def resource_tops(families: list[str], overrides: dict | None = None) -> dict[str, float]:
    """family -> the largest value of its iteration resource in this space."""
    tops = {}
    for family in families:
        resource = RESOURCES.get(family)
        if resource is not None:
            top = spec_high(family_specs(family, overrides).get(resource, 100))
            if top and top >= 1:
                tops[family] = top
    return tops


def family_params(config: dict) -> tuple[str, dict]:
    """Split a sampled config into its family and that family's constructor arguments."""
    family = config[FAMILY_KEY]
    prefix = f"{family}."
    params = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    return family, params


def make_estimator(family: str, params: dict, task: str, seed: int):
    """A fresh, unfitted estimator of `family` with `params`, seeded where it takes a seed.

    Histogram gradient boosting runs exactly `max_iter` rounds (no internal early stopping), so
    that the rounds tuning chose are the rounds training fits.
    """
    estimator_class = FAMILIES[family][0][task]
    estimator = estimator_class(**params)
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=seed)
    if family == "logistic_regression" and "max_iter" not in params:
        estimator.set_params(max_iter=1000)
    if family == "hist_gradient_boosting" and "early_stopping" not in params:
        estimator.set_params(early_stopping=False)
    return estimator
