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
    seed: int,
    positive_class: str,
    mitigation: str,
    constraint: str,
    mitigate_by: str,
    bands: dict,
    model: Output[Model],
    baseline: Output[Model],
    cv: Output[Artifact],
    cv_folds: int = 3,
    threshold_rule: str = "fixed",
    threshold: float = 0.5,
    target_precision: float = 0.9,
    split_strategy: str = "stratified",
    group_column: str = "",
):
    """Fits the best estimator behind the fitted preprocessor, with the configured bias
    mitigation, as the model the server loads.

    Args:
        train: the training rows.
        schema: the schema that validate wrote.
        preprocessor: the ColumnTransformer that prepare fitted on the training rows.
        best: the best trial from tune (tuning itself does not use mitigation or weights).
        seed: seeds the estimator.
        positive_class: the favourable class; empty means the second of two sorted classes.
        mitigation: none, reweighing (sample weights by group and label),
            exponentiated_gradient (fairlearn's reduction) or threshold_optimizer (fairlearn's
            per-group thresholds; the served model then needs the sensitive column).
        constraint: the fairness constraint of exponentiated_gradient and threshold_optimizer.
        mitigate_by: the sensitive column whose groups mitigation balances.
        bands: band edges of numeric sensitive columns.
        model: the served model (joblib): a scikit-learn Pipeline, or with threshold_optimizer
            a ThresholdOptimizedModel around one.
        baseline: the same fit without mitigation, for the fairness step's before/after table.
        cv: JSON: k-fold scores of the recipe on the training split (mean and spread of every
            metric) and the decision threshold with its rule.
        cv_folds: folds of that cross-validation.
        threshold_rule: binary tasks: fixed (`threshold`), max_f1 or target_precision, chosen on
            the folds' out-of-fold probabilities; the served model applies it in predict().
        threshold: the fixed rule's threshold.
        target_precision: the precision the target_precision rule must reach.
        split_strategy: the train/test split's strategy; with "group", the folds keep each
            value of `group_column` together too.
        group_column: the group split's column.
    """
    import joblib

    from components.common.io import read_frame, read_json, write_json
    from components.common.step import step_summary, user_errors
    from components.train.logic import fit_mitigated, fit_with_threshold

    best_trial = read_json(best.path)
    train_frame, table_schema = read_frame(train.path), read_json(schema.path)
    fitted_preprocessor = joblib.load(preprocessor.path)
    with user_errors("train"):
        fitted, unmitigated = fit_mitigated(
            train_frame,
            table_schema,
            fitted_preprocessor,
            best_trial,
            seed,
            mitigation,
            constraint,
            mitigate_by,
            bands,
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
            threshold_rule,
            threshold,
            target_precision,
            mitigation,
            groups=train_frame[group_column] if split_strategy == "group" else None,
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
