"""Tune: Ray Tune over model families and their hyperparameters, scored by cross-validation.

Only the training split is seen here. The data goes into Ray's object store once
(tune.with_parameters) and trial actors are reused, which keeps Ray's per-trial overhead small.
"""

import contextlib
import math
import os
import tempfile

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import get_scorer_names
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from components.common.errors import PipelineInputError
from components.prepare.logic import as_model_input, build_preprocessor
from components.tune.search_space import family_params, make_estimator, search_space

LOOPBACK = "127.0.0.1"
DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "roc_auc_ovr", "regression": "r2"}


def default_metric(schema: dict) -> str:
    if schema["task"] == "regression":
        return DEFAULT_METRIC["regression"]
    return DEFAULT_METRIC["binary" if len(schema["classes"]) == 2 else "multiclass"]


def check_metric(metric: str) -> None:
    if metric not in get_scorer_names():
        raise PipelineInputError(
            f"tuning.metric: '{metric}' is not a scikit-learn scorer name (for example roc_auc, "
            "accuracy, f1, r2, neg_root_mean_squared_error)"
        )


@contextlib.contextmanager
def local_ray(num_cpus: int):
    """Start an embedded Ray on 127.0.0.1 for the duration of the block, then shut it down.

    Importing this package already set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (see __init__), which
    keeps Ray on loopback; if Ray was imported before that could happen, the node comes up on
    another address, and this refuses to go on with it.
    """
    # Per-trial JSON/CSV/TensorBoard loggers cost more than a small trial; results are collected here.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        addresses = {node["NodeManagerAddress"] for node in ray.nodes()}
        if addresses != {LOOPBACK}:
            raise RuntimeError(
                f"the embedded Ray came up on {', '.join(sorted(addresses))}, not {LOOPBACK}: "
                "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is first imported"
            )
        yield
    finally:
        ray.shutdown()


def _cross_validate(config, features, labels, schema, metric, cv_folds, seed):
    """One trial: the configured estimator behind an unfitted copy of the preprocessor."""
    from ray import tune

    family, params = family_params(config)
    model = Pipeline(
        [
            ("prep", clone(build_preprocessor(schema))),
            ("model", make_estimator(family, params, schema["task"], seed)),
        ]
    )
    splitter = (
        StratifiedKFold(cv_folds, shuffle=True, random_state=seed)
        if schema["task"] == "classification"
        else KFold(cv_folds, shuffle=True, random_state=seed)
    )
    scores = cross_val_score(model, features, labels, cv=splitter, scoring=metric, n_jobs=1)
    tune.report({"score": float(np.mean(scores)), "score_std": float(np.std(scores))})


def tune_model(
    train: pd.DataFrame,
    schema: dict,
    families: list[str],
    num_trials: int,
    cv_folds: int,
    metric: str,
    num_cpus: int,
    seed: int,
) -> tuple[dict, pd.DataFrame]:
    """Search the families' spaces with Ray Tune on an embedded local Ray.

    Returns:
        The best trial (family, params, metric, cv score and spread) and the table of all trials.
    """
    space = search_space(families, schema["task"])
    metric = metric or default_metric(schema)
    check_metric(metric)
    if num_trials < 1:
        raise PipelineInputError(f"tuning.num_trials: {num_trials}, expected at least 1")
    features = as_model_input(train, schema)
    labels = train[schema["target"]]

    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    with local_ray(num_cpus), tempfile.TemporaryDirectory(prefix="mlpipe-tune-") as storage:
        trainable = tune.with_parameters(
            _cross_validate,
            features=features,
            labels=labels,
            schema=schema,
            metric=metric,
            cv_folds=cv_folds,
            seed=seed,
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="score",
                mode="max",
                num_samples=num_trials,
                reuse_actors=True,
                search_alg=BasicVariantGenerator(random_state=seed),
            ),
            run_config=tune.RunConfig(storage_path=storage, name="tune", verbose=0),
        )
        results = tuner.fit()
        trials = _trial_table(results)
    ok = trials[trials["error"].isna() & trials["score"].notna()]
    if ok.empty:
        raise PipelineInputError(
            f"tuning: all {len(trials)} trials failed; first error: {trials['error'].iloc[0]}"
        )
    best_row = ok.sort_values("score", ascending=False, kind="stable").iloc[0]
    best = {
        "family": best_row["family"],
        "params": best_row["params"],
        "metric": metric,
        "cv_score": float(best_row["score"]),
        "cv_std": float(best_row["score_std"]),
        "cv_folds": cv_folds,
        "num_trials": int(len(trials)),
        "failed_trials": int(len(trials) - len(ok)),
    }
    return best, trials.assign(params=trials["params"].map(str))


def _trial_table(results) -> pd.DataFrame:
    rows = []
    for index, result in enumerate(results):
        family, params = family_params(result.config)
        metrics = result.metrics or {}
        rows.append(
            {
                "trial": index,
                "family": family,
                "params": {k: _plain(v) for k, v in params.items()},
                "score": metrics.get("score", math.nan),
                "score_std": metrics.get("score_std", math.nan),
                "error": None if result.error is None else str(result.error).splitlines()[0],
            }
        )
    return pd.DataFrame(rows)


def _plain(value):
    """numpy scalars to Python numbers, so the params serialize as JSON."""
    return value.item() if isinstance(value, np.generic) else value
