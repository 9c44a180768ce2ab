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
    model: Output[Model],
):
    """Fits the best estimator behind the fitted preprocessor, as one scikit-learn Pipeline.

    Args:
        train: the training rows.
        schema: the schema that validate wrote.
        preprocessor: the ColumnTransformer that prepare fitted on the training rows.
        best: the best trial from tune.
        seed: seeds the estimator.
        model: the fitted Pipeline (joblib), what the model server loads.
    """
    import joblib

    from components.common.io import read_frame, read_json
    from components.common.step import step_summary
    from components.train.logic import fit_model

    best_trial = read_json(best.path)
    fitted = fit_model(
        read_frame(train.path),
        read_json(schema.path),
        joblib.load(preprocessor.path),
        best_trial,
        seed,
    )
    joblib.dump(fitted, model.path)
    model.metadata.update({"framework": "scikit-learn", "family": best_trial["family"]})
    step_summary("train", f"fitted {best_trial['family']}")


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test: Input[Dataset],
    schema: Input[Artifact],
    best: Input[Artifact],
    sensitive_columns: list,
    positive_class: str,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
):
    """Scores the model on the held-out rows, overall and per sensitive group.

    Args:
        model: the fitted Pipeline.
        test: the held-out rows.
        schema: the schema that validate wrote.
        best: the best trial from tune (its CV score goes into the report).
        sensitive_columns: columns for the per-group table.
        positive_class: the favourable class for selection rates.
        metrics: held-out scalar metrics.
        classification_metrics: confusion matrix and ROC curve (classification only).
        report: Markdown with the metrics and per-group selection rate and accuracy.
    """
    import joblib

    from components.bias.logic import markdown_tables, model_bias
    from components.common.io import read_frame, read_json
    from components.common.step import step_summary, user_errors
    from components.train.logic import evaluate_model, metrics_markdown

    fitted = joblib.load(model.path)
    table_schema = read_json(schema.path)
    test_frame = read_frame(test.path)
    result = evaluate_model(fitted, test_frame, table_schema)
    with user_errors("evaluate"):
        group_tables, ratios = model_bias(
            test_frame, result["predictions"], table_schema, sensitive_columns, positive_class
        )
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    for column, column_ratios in ratios.items():
        for name, value in column_ratios.items():
            metrics.log_metric(f"{name}_ratio_{column}", value)
    if "confusion_matrix" in result:
        matrix = result["confusion_matrix"]
        classification_metrics.log_confusion_matrix(matrix["labels"], matrix["matrix"])
    if "roc" in result:
        roc = result["roc"]
        classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(metrics_markdown(result["metrics"], read_json(best.path)))
        handle.write(markdown_tables("Model: held-out metrics by group", group_tables))
    summary = ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
    step_summary("evaluate", summary)
