"""KFP component: hyperparameter search with Ray Tune on an embedded local Ray."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def tune(
    train: Input[Dataset],
    schema: Input[Artifact],
    model_families: list,
    num_trials: int,
    cv_folds: int,
    metric: str,
    ray_cpus: int,
    seed: int,
    best: Output[Artifact],
    trials: Output[Dataset],
    metrics: Output[Metrics],
):
    """Searches model families and hyperparameters by k-fold cross-validation on the training split.

    Args:
        train: the training rows.
        schema: the schema that validate wrote.
        model_families: families to search, for example logistic_regression, random_forest.
        num_trials: how many configurations to try.
        cv_folds: folds of the cross-validation that scores each trial.
        metric: a scikit-learn scorer name; empty picks roc_auc (binary), roc_auc_ovr or r2.
        ray_cpus: CPUs for the embedded Ray (one trial per CPU at a time).
        seed: seeds the search and the estimators.
        best: JSON with the best family, its parameters and its CV score and spread.
        trials: every trial as CSV.
        metrics: the best trial's CV score, for comparing runs in the dashboard.
    """
    from components.common.io import read_frame, read_json, write_json
    from components.common.step import step_summary, user_errors
    from components.tune.logic import tune_model

    with user_errors("tune"):
        best_trial, trial_table = tune_model(
            read_frame(train.path),
            read_json(schema.path),
            model_families,
            num_trials,
            cv_folds,
            metric,
            ray_cpus,
            seed,
        )
    write_json(best.path, best_trial)
    trial_table.to_csv(trials.path, index=False)
    best.metadata.update({"family": best_trial["family"], "cv_score": best_trial["cv_score"]})
    metrics.log_metric(f"cv_{best_trial['metric']}", best_trial["cv_score"])
    metrics.log_metric(f"cv_{best_trial['metric']}_std", best_trial["cv_std"])
    step_summary(
        "tune",
        f"best {best_trial['family']} {best_trial['params']} "
        f"cv {best_trial['metric']}={best_trial['cv_score']:.4f} over {best_trial['num_trials']} trials",
    )
