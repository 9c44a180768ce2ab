"""KFP components: fit the best configuration, then evaluate it on the held-out split."""

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

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
    """
    import joblib

    from components.common.io import read_frame, read_json
    from components.common.step import step_summary, user_errors
    from components.train.logic import fit_mitigated

    best_trial = read_json(best.path)
    with user_errors("train"):
        fitted, unmitigated = fit_mitigated(
            read_frame(train.path),
            read_json(schema.path),
            joblib.load(preprocessor.path),
            best_trial,
            seed,
            mitigation,
            constraint,
            mitigate_by,
            bands,
            positive_class,
        )
    joblib.dump(fitted, model.path)
    joblib.dump(unmitigated, baseline.path)
    model.metadata.update(
        {"framework": "scikit-learn", "family": best_trial["family"], "mitigation": mitigation}
    )
    baseline.metadata.update({"framework": "scikit-learn", "family": best_trial["family"]})
    how = "" if mitigation == "none" else f" with {mitigation} by '{mitigate_by}'"
    step_summary("train", f"fitted {best_trial['family']}{how}")


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test: Input[Dataset],
    schema: Input[Artifact],
    best: Input[Artifact],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
):
    """Scores the model on the held-out rows (per-group metrics: the fairness step).

    Args:
        model: the fitted Pipeline.
        test: the held-out rows.
        schema: the schema that validate wrote.
        best: the best trial from tune (its CV score goes into the report).
        metrics: held-out scalar metrics.
        classification_metrics: confusion matrix and ROC curve (classification only).
        report: Markdown with the model and its held-out metrics.
    """
    import joblib

    from components.common.io import read_frame, read_json
    from components.common.step import step_summary
    from components.train.logic import evaluate_model, metrics_markdown

    fitted = joblib.load(model.path)
    table_schema = read_json(schema.path)
    test_frame = read_frame(test.path)
    result = evaluate_model(fitted, test_frame, table_schema)
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    if "confusion_matrix" in result:
        matrix = result["confusion_matrix"]
        classification_metrics.log_confusion_matrix(matrix["labels"], matrix["matrix"])
    if "roc" in result:
        roc = result["roc"]
        classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(metrics_markdown(result["metrics"], read_json(best.path)))
    summary = ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
    step_summary("evaluate", summary)
