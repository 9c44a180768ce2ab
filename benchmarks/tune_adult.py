"""Ray Tune on the Adult data: against scikit-learn's RandomizedSearchCV, ASHA against a full
search, two nodes against one, and the best model's held-out ROC AUC.

    .venv/bin/python -m benchmarks.tune_adult --output benchmarks/results/tune_adult.json

Every run below happens in this one process, one after the other, on the same training split
(80 %, stratified, seed 42), the same search space, the same 64 trials and the same 3 folds:

1. peer: `RandomizedSearchCV(Pipeline([preprocessor, model]), n_jobs=<all cores>)`;
2. Ray Tune, random search, FIFO, on the embedded Ray (start-up and shut-down included);
3. the same with ASHA (the same 64 configurations: the search's seed is the same);
4. the same FIFO search on a Ray cluster of one node with all cores, and on two nodes on loopback
   (`ray.cluster_utils.Cluster`, a head and a worker node with half the cores each), both
   reached by address as a real cluster would be.

Then the best configuration of the ASHA run is fitted on the whole training split and scored on
the held-out 20 % (tuning never saw it). --smoke runs the same on 1,000 rows and 4 trials, for CI (the embedded run standing in for the
one-node cluster).
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import components.tune  # noqa: F401  (keeps Ray on loopback: before Ray is imported)
from benchmarks.output import load_average, write_results

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult.csv"
# An iterative model, so that ASHA has rounds to cut: histogram gradient boosting, its default
# space with fewer boosting rounds (20-100), so that 5 x 64 trials fit a 2-core machine.
FAMILIES = ["hist_gradient_boosting"]
SPACE = {
    "hist_gradient_boosting": {
        "learning_rate": {"loguniform": [0.03, 0.3]},
        "max_iter": {"randint": [20, 100]},
        "max_leaf_nodes": {"randint": [8, 64]},
        "l2_regularization": {"loguniform": [1e-4, 10.0]},
    }
}
SEED = 42
TARGETS = {
    "ray_over_randomized_search_cv": 1.25,
    "asha_over_full_random": 0.5,
    "asha_best_cv_within": 0.002,
    "test_roc_auc_at_least": 0.925,
    "quality_seconds_at_most": 600,
    "two_nodes_over_one_node": 1.15,
}


def load_adult(path: Path, rows: int | None):
    import pandas as pd

    from components.prepare.logic import split_table
    from components.validate.logic import validate_table

    frame = pd.read_csv(path, skipinitialspace=True, na_values=["?"])
    if rows:
        frame = frame.sample(rows, random_state=SEED)
    schema = validate_table(frame, "Salary", "classification", ["sex", "race", "age"], {})
    train, test = split_table(frame, schema, 0.2, seed=SEED)
    return schema, train, test


def randomized_search_cv(train, schema, trials: int, folds: int, cores: int) -> dict:
    """The peer: scikit-learn's own random search over the same space, all cores."""
    from scipy import stats
    from sklearn.base import clone
    from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    from components.common.families import family_specs, make_estimator
    from components.common.schema import as_model_input
    from components.prepare.logic import build_preprocessor

    def distribution(spec):
        kind, (low, high) = next(iter(spec.items()))
        if kind == "randint":
            return stats.randint(low, high + 1)
        if kind == "loguniform":
            return stats.loguniform(low, high)
        return stats.uniform(low, high - low)

    grids = []
    for family in FAMILIES:
        grid = {"model": [make_estimator(family, {}, "classification", SEED)]}
        for name, spec in family_specs(family, SPACE).items():
            grid[f"model__{name}"] = distribution(spec)
        grids.append(grid)
    pipeline = Pipeline(
        [
            ("prep", clone(build_preprocessor(schema))),
            ("model", make_estimator(FAMILIES[0], {}, "classification", SEED)),
        ]
    )
    search = RandomizedSearchCV(
        pipeline,
        grids,
        n_iter=trials,
        scoring="roc_auc",
        cv=StratifiedKFold(folds, shuffle=True, random_state=SEED),
        n_jobs=cores,
        refit=False,
        random_state=SEED,
    )
    started = time.perf_counter()
    search.fit(as_model_input(train, schema), train[schema["target"]])
    seconds = time.perf_counter() - started
    best = int(search.best_index_)
    return {
        "seconds": round(seconds, 1),
        "best_cv_roc_auc": round(float(search.cv_results_["mean_test_score"][best]), 4),
    }


def ray_tune(train, schema, trials, folds, cores, scheduler="fifo", address="") -> dict:
    from components.prepare.logic import build_preprocessor
    from components.tune.logic import tune_model

    started = time.perf_counter()
    best, table = tune_model(
        train,
        schema,
        FAMILIES,
        trials,
        folds,
        "roc_auc",
        cores,
        SEED,
        scheduler=scheduler,
        space=SPACE,
        address=address,
        preprocessor=build_preprocessor(schema),
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "best_cv_roc_auc": round(best["cv_score"], 4),
        "best": {"family": best["family"], "params": best["params"]},
        "stopped_trials": best["stopped_trials"],
        "failed_trials": best["failed_trials"],
        "nodes_used": best["nodes"],
        "_best": best,
    }


def on_cluster(train, schema, trials, folds, cpus_per_node: list[int]) -> dict:
    """The FIFO search on a Ray cluster started here on loopback, reached by its address."""
    import ray
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus_per_node[0]})
    try:
        for cpus in cpus_per_node[1:]:
            cluster.add_node(num_cpus=cpus)
        cluster_start = time.perf_counter() - started
        result = ray_tune(train, schema, trials, folds, sum(cpus_per_node), address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    result["cluster_start_seconds"] = round(cluster_start, 1)
    return result


def held_out_auc(train, test, schema, best: dict) -> float:
    from sklearn.metrics import roc_auc_score

    from components.common.schema import as_model_input
    from components.prepare.logic import fit_preprocessor
    from components.train.logic import fit_model

    model = fit_model(train, schema, fit_preprocessor(train, schema), best, SEED)
    probabilities = model.predict_proba(as_model_input(test, schema))[:, 1]
    positive = model.classes_[1]
    return float(roc_auc_score(test[schema["target"]] == positive, probabilities))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1,000 rows and 4 trials, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.trials, args.folds = 4, 2
    cores = os.cpu_count() or 2
    load_before = os.getloadavg()

    schema, train, test = load_adult(Path(args.data), 2000 if args.smoke else None)
    results: dict = {
        "command": "python -m benchmarks.tune_adult"
        + (" --smoke" if args.smoke else "")
        + (f" --output {args.output}" if args.output else ""),
        "machine": {"cpus": cores, "python": platform.python_version()},
        "data": {"file": "adult.csv", "train_rows": len(train), "test_rows": len(test)},
        "search": {
            "families": FAMILIES,
            "space": SPACE,
            "trials": args.trials,
            "cv_folds": args.folds,
            "metric": "roc_auc",
            "seed": SEED,
        },
        "targets": TARGETS,
    }
    print("RandomizedSearchCV ...", file=sys.stderr, flush=True)
    results["randomized_search_cv"] = randomized_search_cv(
        train, schema, args.trials, args.folds, cores
    )
    print("Ray Tune, random + FIFO ...", file=sys.stderr, flush=True)
    results["ray_fifo"] = ray_tune(train, schema, args.trials, args.folds, cores)
    print("Ray Tune, random + ASHA ...", file=sys.stderr, flush=True)
    asha_started = time.perf_counter()
    results["ray_asha"] = ray_tune(train, schema, args.trials, args.folds, cores, "asha")
    best = results["ray_asha"].pop("_best")
    auc = held_out_auc(train, test, schema, best)
    quality_seconds = time.perf_counter() - asha_started
    results["ray_fifo"].pop("_best")
    if args.smoke:  # one Ray start fewer: the embedded run stands in for the one-node cluster
        results["cluster_one_node"] = dict(results["ray_fifo"], note="smoke: the embedded run")
    else:
        print("Ray cluster, one node ...", file=sys.stderr, flush=True)
        results["cluster_one_node"] = on_cluster(train, schema, args.trials, args.folds, [cores])
        results["cluster_one_node"].pop("_best")
    print("Ray cluster, two nodes ...", file=sys.stderr, flush=True)
    half = max(1, cores // 2)
    results["cluster_two_nodes"] = on_cluster(
        train, schema, args.trials, args.folds, [half, cores - half]
    )
    results["cluster_two_nodes"].pop("_best")

    fifo, asha = results["ray_fifo"], results["ray_asha"]
    one, two = results["cluster_one_node"], results["cluster_two_nodes"]
    ratios = {
        "ray_over_randomized_search_cv": round(
            fifo["seconds"] / results["randomized_search_cv"]["seconds"], 2
        ),
        "asha_over_full_random": round(asha["seconds"] / fifo["seconds"], 2),
        "asha_best_cv_minus_full_best_cv": round(
            asha["best_cv_roc_auc"] - fifo["best_cv_roc_auc"], 4
        ),
        "two_nodes_over_one_node": round(two["seconds"] / one["seconds"], 2),
    }
    results["quality"] = {
        "test_roc_auc": round(auc, 4),
        "seconds": round(quality_seconds, 1),
        "from": "the ASHA run's best configuration, fitted on the whole training split",
    }
    results["ratios"] = ratios
    results["met"] = {
        "ray_within_1.25x_of_randomized_search_cv": ratios["ray_over_randomized_search_cv"]
        <= TARGETS["ray_over_randomized_search_cv"],
        "asha_same_best_in_half_the_time": ratios["asha_over_full_random"]
        <= TARGETS["asha_over_full_random"]
        and abs(ratios["asha_best_cv_minus_full_best_cv"]) <= TARGETS["asha_best_cv_within"],
        "test_roc_auc_0.925_within_10_minutes": auc >= TARGETS["test_roc_auc_at_least"]
        and quality_seconds <= TARGETS["quality_seconds_at_most"],
        "two_nodes_overhead_within_15_percent": ratios["two_nodes_over_one_node"]
        <= TARGETS["two_nodes_over_one_node"],
    }
    results["load_average"] = load_average(load_before)
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
