"""Tune: Ray Tune over model families and their hyperparameters, scored by cross-validation.

Only the training split is seen here. Everything the user wrote (families, space, metric, search,
scheduler) is checked before Ray starts. The folds go into Ray's object store once
(tune.with_parameters), trial actors are reused, and Tune's per-trial loggers are off, which keeps
Ray's per-trial overhead small.

With a storage path (`ray.storage_path`, or MLPIPE_TUNE_STORAGE_PATH) the experiment lives at
`<storage>/tune-<digest of data and search>`: a step that runs again on the same inputs after its
driver died resumes it with `Tuner.restore`, and finished trials are not run again.
"""

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ray import tune

from components.common.charts import figure_png_data_uri, pyplot
from components.common.errors import PipelineInputError
from components.common.families import check_metric, family_params
from components.common.ray_cluster import (
    DEFAULT_CONNECT_TIMEOUT_S,
    LOOPBACK,
    cluster_address,
    local_ray,
    ray_session,
)
from components.common.schema import as_model_input
from components.tune.search_space import resource_tops, search_space
from components.tune.trainable import (
    ASHA_GRACE,
    ASHA_MILESTONES,
    ASHA_REDUCTION,
    MAX_BUDGET,
    cross_validate,
    make_folds,
)

__all__ = ["LOOPBACK", "default_metric", "check_metric", "local_ray", "tune_model", "tune_report"]

DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "roc_auc_ovr", "regression": "r2"}
SEARCHES = ("random", "tpe")
SCHEDULERS = ("fifo", "asha")
STORAGE_ENV = "MLPIPE_TUNE_STORAGE_PATH"


def default_metric(schema: dict) -> str:
    if schema["task"] == "regression":
        return DEFAULT_METRIC["regression"]
    return DEFAULT_METRIC["binary" if len(schema["classes"]) == 2 else "multiclass"]


def check_search(search: str, scheduler: str, num_trials: int, cv_folds: int, max_failures: int):
    if search not in SEARCHES:
        raise PipelineInputError(
            f"tuning.search: '{search}', expected one of {', '.join(SEARCHES)}"
        )
    if scheduler not in SCHEDULERS:
        raise PipelineInputError(
            f"tuning.scheduler: '{scheduler}', expected one of {', '.join(SCHEDULERS)}"
        )
    if num_trials < 1:
        raise PipelineInputError(f"tuning.num_trials: {num_trials}, expected at least 1")
    if cv_folds < 2:
        raise PipelineInputError(f"tuning.cv_folds: {cv_folds}, expected at least 2")
    if max_failures < 0:
        raise PipelineInputError(f"tuning.max_failures: {max_failures}, expected 0 or more")


class _TrialLog(tune.Callback):
    """One line per finished or failed trial in the step's log (and a cluster driver's)."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        state = "done" if result.get("complete") else f"stopped at budget {result.get('budget')}"
        family = trial.config.get("family")
        print(
            f"[tune] trial {trial.trial_id} {family}: score {result.get('score', math.nan):.4f} "
            f"({state}) on node {result.get('node')}",
            flush=True,
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _error_line(getattr(trial, "error_file", None))
        print(f"[tune] trial {trial.trial_id} failed: {error}", flush=True)


def _experiment_name(train: pd.DataFrame, settings: dict) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(train, index=True).to_numpy().tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return f"tune-{digest.hexdigest()[:16]}"


def _searcher(search: str, seed: int):
    if search == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed))
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed)


def _scheduler(scheduler: str):
    if scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr="budget",
            max_t=MAX_BUDGET,
            grace_period=ASHA_GRACE,
            reduction_factor=ASHA_REDUCTION,
        )
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def tune_model(
    train: pd.DataFrame,
    schema: dict,
    families: list[str],
    num_trials: int,
    cv_folds: int,
    metric: str,
    num_cpus: int,
    seed: int,
    *,
    search: str = "random",
    scheduler: str = "fifo",
    space: dict | None = None,
    max_failures: int = 2,
    address: str = "",
    storage_path: str = "",
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    preprocessor,
    groups=None,
    reuse_actors: bool = True,
) -> tuple[dict, pd.DataFrame]:
    """Search the families' spaces with Ray Tune, on an embedded Ray or an existing cluster.

    Args:
        search: random, or tpe (Optuna's TPE).
        scheduler: fifo (every trial runs to the end) or asha (bad trials stop early).
        space: per-family overrides of the default space (see search_space).
        max_failures: retries of a trial whose run failed (a killed worker, a lost node).
        preprocessor: the prepare step's transform (fitted or not), cloned and refitted per
            fold.
        groups: each training row's group, for folds that keep a group together (a group-aware
            split); None: folds of rows.
        address: an existing Ray cluster's address; empty: RAY_ADDRESS, else an embedded Ray.
        storage_path: where the experiment lives (a path, or s3://... on a cluster); empty:
            MLPIPE_TUNE_STORAGE_PATH, else a temporary folder (no resume).
        connect_timeout_s: how long a cluster address may take to answer.
        reuse_actors: hand a finished trial's worker to the next trial (saves starting a
            process per trial). A trial then runs wherever a worker is free first, so a node
            slow to start its first worker may get none; False gives every trial its own.

    Returns:
        The best trial (family, params, metric, CV score and spread, counts) and the table of all
        trials.
    """
    # Everything the user wrote is checked before Ray starts.
    param_space = search_space(families, schema["task"], space)
    metric = metric or default_metric(schema)
    check_metric(metric)
    check_search(search, scheduler, num_trials, cv_folds, max_failures)
    address = cluster_address(address)

    features = as_model_input(train, schema)
    labels = train[schema["target"]]
    folds = make_folds(features, labels, schema, cv_folds, seed, preprocessor, groups)
    settings = {
        "families": sorted(families),
        "space": space or {},
        "num_trials": num_trials,
        "cv_folds": cv_folds,
        "metric": metric,
        "seed": seed,
        "search": search,
        "scheduler": scheduler,
    }
    name = _experiment_name(train, settings)
    storage = storage_path or os.environ.get(STORAGE_ENV, "")
    if storage and "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())

    started = time.time()
    with ray_session(num_cpus, address, connect_timeout_s), _storage(storage) as root:
        trainable = tune.with_resources(
            tune.with_parameters(
                cross_validate,
                folds=folds,
                task=schema["task"],
                metric=metric,
                seed=seed,
                tops=resource_tops(families, space),
                milestones=ASHA_MILESTONES if scheduler == "asha" else (),
            ),
            {"cpu": 1},
        )
        experiment = f"{root.rstrip('/')}/{name}"
        resumed = bool(storage) and tune.Tuner.can_restore(experiment)
        if resumed:
            print(f"[tune] resuming {experiment}", flush=True)
            tuner = tune.Tuner.restore(
                experiment, trainable, resume_unfinished=True, resume_errored=False
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    metric="score",
                    mode="max",
                    num_samples=num_trials,
                    reuse_actors=reuse_actors,
                    search_alg=_searcher(search, seed),
                    scheduler=_scheduler(scheduler),
                ),
                run_config=tune.RunConfig(
                    storage_path=root,
                    name=name,
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=max_failures),
                    callbacks=[_TrialLog()],
                ),
            )
        # With the per-trial loggers off, ResultGrid warns that it finds no result.json; the
        # results come from the trials' last reports instead.
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        trials = _trial_table(tuner.fit(), started)
    done = trials[trials["status"] == "done"]
    if done.empty:
        first_error = trials["error"].dropna()
        raise PipelineInputError(
            f"tuning: none of {len(trials)} trials finished; first error: "
            f"{first_error.iloc[0] if len(first_error) else 'none recorded'}"
        )
    best_row = done.sort_values(["score", "trial"], ascending=[False, True], kind="stable").iloc[0]
    best = {
        "family": best_row["family"],
        "params": best_row["params"],
        "metric": metric,
        "cv_score": float(best_row["score"]),
        "cv_std": float(best_row["score_std"]),
        "cv_folds": cv_folds,
        "num_trials": int(len(trials)),
        "failed_trials": int((trials["status"] == "failed").sum()),
        "stopped_trials": int((trials["status"] == "stopped").sum()),
        "search": search,
        "scheduler": scheduler,
        "ray": address or f"embedded ({num_cpus} CPUs on {LOOPBACK})",
        "nodes": int(trials["node"].dropna().nunique()),
        "experiment": experiment if storage else "",
        "resumed": resumed,
        "seconds": round(time.time() - started, 1),
    }
    return best, trials.assign(params=trials["params"].map(json.dumps))


class _storage:
    """The given storage path, or a temporary folder removed afterwards."""

    def __init__(self, storage: str):
        self.storage = storage
        self.scratch = None

    def __enter__(self) -> str:
        if self.storage:
            return self.storage
        self.scratch = tempfile.TemporaryDirectory(prefix="mlpipe-tune-")
        return self.scratch.name

    def __exit__(self, *exc):
        if self.scratch is not None:
            self.scratch.cleanup()


def _error_line(error) -> str:
    """The original exception of a trial's error, as one line."""
    if error is None:
        return ""
    if isinstance(error, str):  # a path to Ray's error file
        try:
            text = Path(error).read_text(encoding="utf-8").strip().splitlines()
            return text[-1] if text else error
        except OSError:
            return error
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        cause = getattr(error, "cause", None) or error.__cause__
        if cause is None or not isinstance(cause, BaseException):
            break
        error = cause
    lines = str(error).strip().splitlines()
    message = next((line for line in reversed(lines) if line.strip()), "")
    return f"{type(error).__name__}: {message}"[:500]


def _trial_table(results, started: float) -> pd.DataFrame:
    rows = []
    for index, result in enumerate(results):
        family, params = family_params(result.config)
        metrics = result.metrics or {}
        if result.error is not None:
            status = "failed"
        elif metrics.get("complete"):
            status = "done"
        else:
            status = "stopped"
        finished = metrics.get("finished_at")
        rows.append(
            {
                "trial": index,
                "trial_id": metrics.get("trial_id", ""),
                "family": family,
                "params": {k: _plain(v) for k, v in params.items()},
                "score": metrics.get("score", math.nan),
                "score_std": metrics.get("score_std", math.nan),
                "budget": metrics.get("budget", math.nan),
                "status": status,
                "seconds": round(finished - started, 2) if finished else math.nan,
                "node": metrics.get("node"),
                "pid": metrics.get("pid"),
                "error": _error_line(result.error) if result.error is not None else None,
            }
        )
    return pd.DataFrame(rows)


def _plain(value):
    """numpy scalars to Python numbers, so the params serialize as JSON."""
    return value.item() if isinstance(value, np.generic) else value


def trials_chart(trials: pd.DataFrame, best: dict) -> str:
    """Score against time since the start, per family; stopped trials hollow, best line drawn;
    a PNG data URI."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.6), dpi=100)
    scored = trials[trials["score"].notna()].sort_values("seconds")
    for family, rows in scored.groupby("family"):
        full = rows[rows["status"] == "done"]
        part = rows[rows["status"] != "done"]
        points = axes.scatter(full["seconds"], full["score"], s=18, label=family)
        axes.scatter(
            part["seconds"], part["score"], s=18, facecolors="none", edgecolors=points.get_fc()
        )
    done = scored[scored["status"] == "done"]
    if not done.empty:
        axes.step(done["seconds"], done["score"].cummax(), where="post", color="black", lw=1)
    axes.set_xlabel("seconds since tuning started")
    axes.set_ylabel(f"CV {best['metric']}")
    axes.set_title("trials (hollow: stopped early by ASHA; line: best so far)", fontsize=9)
    axes.legend(fontsize=8, loc="lower right")
    return figure_png_data_uri(figure)


def tune_report(best: dict, trials: pd.DataFrame) -> str:
    """Markdown for the run report: the best configuration, the counts, the plot, the top trials."""
    chart = trials_chart(trials, best)
    counts = trials["status"].value_counts()
    lines = [
        "## Tuning\n",
        f"{best['num_trials']} trials ({best['search']} search, {best['scheduler']} scheduler) on "
        f"{best['ray']}, {best['nodes']} node(s), {best['seconds']} s: "
        f"{counts.get('done', 0)} finished, {counts.get('stopped', 0)} stopped early, "
        f"{counts.get('failed', 0)} failed.\n",
        f"Best: `{best['family']}` `{json.dumps(best['params'])}`, CV {best['metric']} "
        f"{best['cv_score']:.4f} ± {best['cv_std']:.4f} ({best['cv_folds']} folds).\n",
        f"![score against time]({chart})\n",
        "| trial | family | score | status | seconds |",
        "|---|---|---|---|---|",
    ]
    top = trials.sort_values("score", ascending=False, na_position="last").head(10)
    for _, row in top.iterrows():
        lines.append(
            f"| {row['trial']} | {row['family']} | {row['score']:.4f} | {row['status']} | "
            f"{row['seconds']} |"
        )
    failed = trials[trials["status"] == "failed"]
    for _, row in failed.head(5).iterrows():
        lines.append(f"\nTrial {row['trial']} failed: `{row['error']}`")
    return "\n".join(lines) + "\n\n"


TRIAL_COLUMNS = ("trial", "family", "params", "score", "score_std", "status", "seconds", "node")


def incremental_trials() -> pd.DataFrame:
    """An incremental run's trials table: none (it searched nothing), with the usual columns."""
    return pd.DataFrame(columns=list(TRIAL_COLUMNS))


def incremental_report(best: dict) -> str:
    """Markdown for an incremental run: no search, the champion's configuration."""
    return (
        "## Tuning\n\n"
        f"No search: an incremental update of champion {best.get('incremental_of')} keeps its "
        f"configuration, `{best['family']}` `{json.dumps(best['params'])}` (its CV "
        f"{best.get('metric')} was {best.get('cv_score', float('nan')):.4f}).\n\n"
    )
