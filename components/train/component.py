"""KFP component: fit the best configuration, with bias mitigation and the decision threshold."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train(
    train: Input[Dataset],
    schema: Input[Artifact],
    preprocessor: Input[Model],
    best: Input[Artifact],
    positive_class: str,
    bias_config: dict,
    tuning_config: dict,
    evaluation_config: dict,
    split_config: dict,
    plan: Input[Artifact],
    model: Output[Model],
    baseline: Output[Model],
    cv: Output[Artifact],
):
    """Fits the best configuration on the training rows behind the fitted preprocessor, with
    the configured bias mitigation, and cross-validates the recipe.

    Args:
        train: the training rows.
        schema: the schema that validate wrote.
        preprocessor: the prepare step's fitted transform.
        best: the tune step's best configuration.
        positive_class: the favourable class; empty means the second of two sorted classes.
        bias_config: the run config's `bias:` section (components.common.settings.sections.
            BiasConfig): `mitigation`, none, reweighing (sample weights by group and label),
            exponentiated_gradient (fairlearn's reduction) or threshold_optimizer (fairlearn's
            per-group thresholds; the served model then needs the sensitive column);
            `constraint`, the fairness constraint of the last two; `mitigate_by`, the sensitive
            column whose groups mitigation balances; `bands`, band edges of numeric columns.
        tuning_config: the run config's `tuning:` section: its `cv_folds`.
        evaluation_config: the run config's `evaluation:` section (EvaluationConfig): binary
            tasks' `threshold_rule`, fixed (`threshold`), max_f1 or target_precision (reaching
            `target_precision`), chosen on the folds' out-of-fold probabilities; the served
            model applies it in predict().
        split_config: the run config's `split:` section: its `seed`; with strategy group, the
            folds keep each `group_column` value together too.
        plan: the run's plan (components.common.retraining): an incremental run updates the
            champion (components.common.incremental: partial_fit, warm_start or a refit on the
            window) instead of fitting the best configuration; no mitigation, no CV.
        model: the served model (joblib): a scikit-learn Pipeline, or with threshold_optimizer
            a ThresholdOptimizedModel around one.
        baseline: the same fit without mitigation, for the fairness step's before/after table.
        cv: JSON: k-fold scores of the recipe on the training split (mean and spread of every
            metric) and the decision threshold with its rule.
    """
    import joblib

    from components.common.io import read_frame, read_json, write_json
    from components.common.settings.parse import parse_section
    from components.common.settings.prepare import parse_split_options
    from components.common.settings.sections import BiasConfig, EvaluationConfig, TuningConfig
    from components.common.step import step_summary, user_errors
    from components.train.logic import fit_mitigated, fit_with_threshold

    with user_errors("train"):
        bias = parse_section(BiasConfig, bias_config, "bias")
        cv_folds = parse_section(TuningConfig, tuning_config, "tuning").cv_folds
        evaluation = parse_section(EvaluationConfig, evaluation_config, "evaluation")
        split = parse_split_options(split_config)
    mitigation, mitigate_by, seed = bias.mitigation, bias.mitigate_by, split.seed
    best_trial = read_json(best.path)
    train_frame, table_schema = read_frame(train.path), read_json(schema.path)
    fitted_preprocessor = joblib.load(preprocessor.path)
    run_plan = read_json(plan.path)
    if run_plan["mode"] == "incremental":
        from components.common.incremental import update_model
        from components.common.registry import ModelRegistry

        with user_errors("train"):
            registry = ModelRegistry(run_plan["model_store_uri"], run_plan["model_name"])
            champion, _ = registry.load(run_plan["parent"])
            fitted, details = update_model(
                champion,
                train_frame,
                table_schema,
                best_trial["family"],
                best_trial["params"],
                seed,
                epochs=int(run_plan.get("epochs", 1)),
            )
        # No CV: the update is judged on the held-out rows, like any candidate, by the gate.
        write_json(
            cv.path,
            {
                "folds": 0,
                "scores": {},
                "threshold": run_plan.get("parent_threshold"),
                "update": details,
            },
        )
        joblib.dump(fitted, model.path)
        joblib.dump(fitted, baseline.path)
        model.metadata.update(
            {
                "framework": "scikit-learn",
                "family": best_trial["family"],
                "mitigation": "none",
                "update": details,
            }
        )
        baseline.metadata.update({"framework": "scikit-learn", "family": best_trial["family"]})
        step_summary(
            "train",
            f"updated champion {run_plan['parent']} ({best_trial['family']}) by "
            f"{details.get('rule')} on {len(train_frame)} rows",
        )
        return
    with user_errors("train"):
        fitted, unmitigated = fit_mitigated(
            train_frame,
            table_schema,
            fitted_preprocessor,
            best_trial,
            seed,
            mitigation,
            bias.constraint,
            mitigate_by,
            bias.bands,
            positive_class,
        )
        fitted, cv_summary = fit_with_threshold(
            fitted,
            train_frame,
            table_schema,
            fitted_preprocessor,
            best_trial,
            seed,
            cv_folds,
            positive_class,
            evaluation.threshold_rule,
            evaluation.threshold,
            evaluation.target_precision,
            mitigation,
            groups=train_frame[split.group_column] if split.strategy == "group" else None,
        )
    write_json(cv.path, cv_summary)
    joblib.dump(fitted, model.path)
    joblib.dump(unmitigated, baseline.path)
    model.metadata.update(
        {"framework": "scikit-learn", "family": best_trial["family"], "mitigation": mitigation}
    )
    baseline.metadata.update({"framework": "scikit-learn", "family": best_trial["family"]})
    how = "" if mitigation == "none" else f" with {mitigation} by '{mitigate_by}'"
    chosen = cv_summary["threshold"]
    at = f", threshold {chosen['value']:.3f} ({chosen['rule']})" if chosen else ""
    step_summary("train", f"fitted {best_trial['family']}{how}{at}")
