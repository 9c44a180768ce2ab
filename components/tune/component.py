"""KFP component: hyperparameter search with Ray Tune, on an embedded Ray or a Ray cluster."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def tune(
    train: Input[Dataset],
    schema: Input[Artifact],
    preprocessor: Input[Model],
    model_families: list,
    num_trials: int,
    cv_folds: int,
    metric: str,
    ray_cpus: int,
    seed: int,
    search_space: str,
    best: Output[Artifact],
    trials: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    search: str = "random",
    scheduler: str = "fifo",
    max_failures: int = 2,
    ray_address: str = "",
    ray_storage_path: str = "",
    ray_connect_timeout: int = 30,
    split_strategy: str = "stratified",
    group_column: str = "",
):
    """Searches model families and hyperparameters by k-fold cross-validation on the training split.

    Args:
        train: the training rows.
        schema: the schema that validate wrote.
        preprocessor: the prepare step's transform; each fold refits a clone of it.
        model_families: families to search, for example logistic_regression, random_forest.
        num_trials: how many configurations to try.
        cv_folds: folds of the cross-validation that scores each trial.
        metric: a scikit-learn scorer name; empty picks roc_auc (binary), roc_auc_ovr or r2.
        ray_cpus: CPUs for the embedded Ray (one trial per CPU at a time).
        seed: seeds the search and the estimators.
        search_space: per-family overrides of the default space, {family: {param: spec}}, as
            JSON text (a KFP dict parameter would turn integers into floats).
        best: JSON with the best family, its parameters and its CV score and spread.
        trials: every trial as CSV (score, status, budget, node, error).
        metrics: the best trial's CV score and spread, for comparing runs in the dashboard.
        report: Markdown with the best configuration and a plot of score against time.
        search: random, or tpe (Optuna's TPE).
        scheduler: fifo, or asha (stops bad trials early).
        max_failures: retries of a trial whose worker died.
        ray_address: an existing Ray cluster (host:port of its GCS); empty: RAY_ADDRESS, else an
            embedded Ray on 127.0.0.1.
        ray_storage_path: where Tune keeps the experiment (s3://... on a cluster); a rerun on the
            same inputs resumes from it. Empty: MLPIPE_TUNE_STORAGE_PATH, else a temporary folder.
        ray_connect_timeout: seconds a cluster address may take to answer.
        split_strategy: the train/test split's strategy; with "group", the folds keep each
            value of `group_column` together too.
        group_column: the group split's column.
    """
    import json

    import joblib

    from components.common.io import read_frame, read_json, write_json
    from components.common.step import step_summary, user_errors
    from components.tune.logic import tune_model, tune_report

    train_frame = read_frame(train.path)
    groups = train_frame[group_column] if split_strategy == "group" else None
    with user_errors("tune"):
        best_trial, trial_table = tune_model(
            train_frame,
            read_json(schema.path),
            model_families,
            num_trials,
            cv_folds,
            metric,
            ray_cpus,
            seed,
            search=search,
            scheduler=scheduler,
            space=json.loads(search_space or "{}"),
            max_failures=max_failures,
            address=ray_address,
            storage_path=ray_storage_path,
            connect_timeout_s=ray_connect_timeout,
            preprocessor=joblib.load(preprocessor.path),
            groups=groups,
        )
    write_json(best.path, best_trial)
    trial_table.to_csv(trials.path, index=False)
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(tune_report(best_trial, trial_table))
    best.metadata.update({"family": best_trial["family"], "cv_score": best_trial["cv_score"]})
    metrics.log_metric(f"cv_{best_trial['metric']}", best_trial["cv_score"])
    metrics.log_metric(f"cv_{best_trial['metric']}_std", best_trial["cv_std"])
    metrics.log_metric("trials", best_trial["num_trials"])
    metrics.log_metric("failed_trials", best_trial["failed_trials"])
    metrics.log_metric("stopped_trials", best_trial["stopped_trials"])
    step_summary(
        "tune",
        f"best {best_trial['family']} {best_trial['params']} "
        f"cv {best_trial['metric']}={best_trial['cv_score']:.4f} over {best_trial['num_trials']} "
        f"trials ({best_trial['scheduler']}: {best_trial['stopped_trials']} stopped early, "
        f"{best_trial['failed_trials']} failed) on {best_trial['ray']}",
    )
