"""Model families and their default search spaces.

The space is flat, with keys "<family>.<param>", so that every Ray Tune searcher can sample it;
a trial uses the keys of the family it drew and ignores the rest.
"""

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

# family -> (estimator class per task, default search space of its constructor arguments)
FAMILIES = {
    "logistic_regression": (
        {"classification": LogisticRegression},
        {"C": tune.loguniform(1e-3, 1e2)},
    ),
    "linear_regression": (
        {"regression": Ridge},
        {"alpha": tune.loguniform(1e-3, 1e2)},
    ),
    "random_forest": (
        {"classification": RandomForestClassifier, "regression": RandomForestRegressor},
        {
            "n_estimators": tune.randint(50, 201),
            "max_depth": tune.randint(3, 17),
            "min_samples_leaf": tune.randint(1, 21),
        },
    ),
    "hist_gradient_boosting": (
        {
            "classification": HistGradientBoostingClassifier,
            "regression": HistGradientBoostingRegressor,
        },
        {
            "learning_rate": tune.loguniform(0.02, 0.3),
            "max_iter": tune.randint(50, 301),
            "max_leaf_nodes": tune.randint(8, 65),
            "l2_regularization": tune.loguniform(1e-4, 10.0),
        },
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


def search_space(families: list[str], task: str) -> dict:
    """The Ray Tune param_space: the family as a choice, then every family's parameters."""
    check_families(families, task)
    space: dict = {FAMILY_KEY: tune.choice(sorted(families))}
    for family in sorted(families):
        for name, domain in FAMILIES[family][1].items():
            space[f"{family}.{name}"] = domain
    return space


def family_params(config: dict) -> tuple[str, dict]:
    """Split a sampled config into its family and that family's constructor arguments."""
    family = config[FAMILY_KEY]
    prefix = f"{family}."
    params = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    return family, params


def make_estimator(family: str, params: dict, task: str, seed: int):
    """A fresh, unfitted estimator of `family` with `params`, seeded where it takes a seed."""
    estimator_class = FAMILIES[family][0][task]
    estimator = estimator_class(**params)
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=seed)
    if family == "logistic_regression":
        estimator.set_params(max_iter=1000)
    return estimator
