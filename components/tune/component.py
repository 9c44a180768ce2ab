"""KFP component: hyperparameter search with Ray Tune, on an embedded Ray or a Ray cluster."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def tune(
    train: Input[Dataset],
    schema: Input[Artifact],
    preprocessor: Input[Model],
    tuning_config: dict,
    ray_config: dict,
    split_config: dict,
    plan: Input[Artifact],
    best: Output[Artifact],
    trials: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
):
    """Searches model families and their hyperparameters with Ray Tune, scoring each trial by
    k-fold cross-validation on the training rows (the prepare step's transform refitted per fold).

    Args:
        train: the training rows.
        schema: the schema that validate wrote.
        preprocessor: the prepare step's transform (its settings are refitted per fold).
        tuning_config: the run config's `tuning:` section (components.common.settings.sections.
            TuningConfig): `families`, `num_trials`, `cv_folds`, `metric` (a scikit-learn scorer
            name; empty picks roc_auc, roc_auc_ovr or r2), `search` (random or tpe), `scheduler`
            (fifo or asha), `space` (per-family overrides of the default space, as JSON text: a
            KFP dict parameter would turn integers into floats), `max_failures`.
        ray_config: the run config's `ray:` section (RayConfig): `num_cpus` of the embedded Ray;
            `address`, an existing cluster (empty: RAY_ADDRESS, else an embedded Ray on
            127.0.0.1); `storage_path`, where Tune keeps the experiment (a rerun on the same
            inputs resumes it); `connect_timeout_seconds`.
        split_config: the run config's `split:` section: its `seed` seeds the search and the
            estimators; with strategy group, the folds keep each `group_column` value together.
        plan: the run's plan (components.common.retraining): an incremental run does not search;
            its best configuration is the champion's, recorded with no trials.
        best: JSON with the best family, its parameters and its CV score and spread.
        trials: every trial as CSV (score, status, budget, node, error).
        metrics: the best trial's CV score and spread, for comparing runs in the dashboard.
        report: Markdown with the best configuration and a plot of score against time.
    """
    import os

    import joblib

    # A driver that joins a cluster needs Ray's normal networking (components/tune/__init__.py
    # pins only an embedded Ray to loopback), and Ray reads that when it is first imported.
    if isinstance(ray_config, dict) and ray_config.get("address"):
        os.environ.setdefault("RAY_ADDRESS", str(ray_config["address"]))

    from components.common.io import read_frame, read_json, write_json
    from components.common.settings.parse import parse_section
    from components.common.settings.prepare import parse_split_options
    from components.common.settings.sections import RayConfig, TuningConfig
    from components.common.step import step_summary, user_errors
    from components.tune.logic import (
        incremental_report,
        incremental_trials,
        tune_model,
        tune_report,
    )

    run_plan = read_json(plan.path)
    if run_plan["mode"] == "incremental":
        # The champion's hyperparameters, no search: the update keeps its recipe.
        best_trial = {**run_plan["parent_tuning"], "incremental_of": run_plan["parent"]}
        write_json(best.path, best_trial)
        trial_table = incremental_trials()
        trial_table.to_csv(trials.path, index=False)
        with open(report.path, "w", encoding="utf-8") as handle:
            handle.write(incremental_report(best_trial))
        best.metadata.update({"family": best_trial["family"], "incremental_of": run_plan["parent"]})
        step_summary(
            "tune",
            f"no search (incremental): champion {run_plan['parent']}'s {best_trial['family']} "
            f"{best_trial['params']}",
        )
        return
    with user_errors("tune"):
        tuning = parse_section(TuningConfig, tuning_config, "tuning")
        ray = parse_section(RayConfig, ray_config, "ray")
        split = parse_split_options(split_config)
    train_frame = read_frame(train.path)
    groups = train_frame[split.group_column] if split.strategy == "group" else None
    with user_errors("tune"):
        best_trial, trial_table = tune_model(
            train_frame,
            read_json(schema.path),
            tuning.families,
            tuning.num_trials,
            tuning.cv_folds,
            tuning.metric,
            ray.num_cpus,
            split.seed,
            search=tuning.search,
            scheduler=tuning.scheduler,
            space=tuning.space,
            max_failures=tuning.max_failures,
            address=ray.address,
            storage_path=ray.storage_path,
            connect_timeout_s=ray.connect_timeout_seconds,
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
