"""KFP components: evaluate the model on the held-out split, and the champion/challenger gate."""

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
def evaluate(
    model: Input[Model],
    test: Input[Dataset],
    schema: Input[Artifact],
    cv: Input[Artifact],
    best: Input[Artifact],
    positive_class: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
):
    """Scores the model on the held-out rows (per-group metrics: the fairness step).

    Args:
        model: the served model.
        test: the held-out rows.
        schema: the schema that validate wrote.
        cv: the training split's cross-validated scores and the decision threshold (train).
        best: the best trial from tune.
        positive_class: the positive class of a binary task; empty: the second sorted class.
        evaluation: JSON: metrics, CV scores, confusion matrix, ROC, precision-recall and
            calibration curves (classification) or residuals (regression).
        metrics: held-out scalar metrics, and each CV mean as cv_<metric>.
        classification_metrics: confusion matrix and ROC curve (classification only).
        report: Markdown with the model, its held-out metrics and their CV spread.
    """
    import joblib

    from components.common.io import read_frame, read_json, write_json, write_text
    from components.common.metrics import evaluate_model
    from components.common.step import step_summary, user_errors
    from components.evaluate.report import metrics_markdown

    cv_summary = read_json(cv.path)
    threshold = cv_summary.get("threshold") or {}
    with user_errors("evaluate"):
        result = evaluate_model(
            joblib.load(model.path),
            read_frame(test.path),
            read_json(schema.path),
            positive_class,
            threshold.get("rule", "fixed"),
        )
    result["cv"] = {key: cv_summary[key] for key in ("folds", "scores")}
    write_json(evaluation.path, result)
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value)
    for name, score in cv_summary["scores"].items():
        metrics.log_metric(f"cv_{name}", score["mean"])
    if "confusion_matrix" in result:
        matrix = result["confusion_matrix"]
        classification_metrics.log_confusion_matrix(matrix["labels"], matrix["matrix"])
    if roc := result.get("curves", {}).get("roc"):
        classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    write_text(report.path, metrics_markdown(result, read_json(best.path)))
    summary = ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
    step_summary("evaluate", summary)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def gate(
    model: Input[Model],
    test: Input[Dataset],
    schema: Input[Artifact],
    evaluation: Input[Artifact],
    fairness: Input[Artifact],
    model_store_uri: str,
    model_name: str,
    positive_class: str,
    evaluation_config: dict,
    alerts_config: dict,
    decision: Output[Artifact],
    metrics: Output[Metrics],
) -> bool:
    """The champion/challenger gate: may this run's model be deployed ("blessed")?

    It must meet every absolute threshold, must not be worse than the registry's champion by
    more than `margin` on each compared metric, with the champion re-scored on this run's test
    rows that it never trained on (not compared on old numbers, nor on rows it learnt), and
    must have passed the fairness gate.

    The result is the plain return value ("Output"), not a NamedTuple field: kfp.local (2.17)
    silently takes a dsl.If on a NamedTuple field as false.

    Args:
        model: the candidate model: scored again on the rows the champion is scored on when the
            champion's split record rules out some of the test rows (the evaluation JSON's
            metrics are on all of them).
        test: the held-out rows.
        schema: the schema that validate wrote.
        evaluation: the candidate's evaluation JSON.
        fairness: the fairness step's summary ({"gate": {"passed", "reason"}, ...}).
        model_store_uri: the model store's root.
        model_name: the model's name in the store.
        positive_class: the positive class of a binary task.
        evaluation_config: the run config's `evaluation:` section (components.common.settings.
            sections.EvaluationConfig): `thresholds`, {metric: bound}, at least the bound (at
            most, for losses like log_loss); `compare_metrics`, the metrics compared with the
            champion (empty: the task's primary metric, roc_auc, roc_auc_ovr or r2); `margin`,
            how much worse than the champion the candidate may be.
        alerts_config: the run config's `alerts:` section: a fairness gate that blocks sends a
            `fairness_blocked` alert (one that cannot be delivered is a line in the log, never a
            failed gate).
        decision: JSON: {"blessed", "reason", "margin", "checks", "champion"}; the champion
            entry counts the test rows it was scored on (`rows`) and those left out because it
            may have trained on them (`rows_excluded`).
        metrics: blessed (1 or 0), and the champion's re-scored metrics as champion_<metric>.

    Returns:
        Whether the model is blessed.
    """
    import joblib

    from components.common.alerts import send_alert
    from components.common.io import read_frame, read_json, write_json
    from components.common.settings.parse import parse_section
    from components.common.settings.sections import EvaluationConfig
    from components.common.step import step_summary, user_errors
    from components.common.vocabulary import primary_metric
    from components.evaluate.gate import decide, rescore_champion

    with user_errors("gate"):
        settings = parse_section(EvaluationConfig, evaluation_config, "evaluation")
        candidate = read_json(evaluation.path)
        fairness_gate = read_json(fairness.path).get("gate")
        champion = rescore_champion(
            model_store_uri,
            model_name,
            lambda: (read_frame(test.path), read_json(schema.path)),
            positive_class,
            lambda: joblib.load(model.path),
        )
        result = decide(
            candidate["metrics"],
            settings.thresholds,
            settings.compare_metrics
            or [primary_metric(candidate["task"], len(candidate.get("classes") or []))],
            settings.margin,
            champion,
            fairness_gate,
        )
    write_json(decision.path, result)
    metrics.log_metric("blessed", int(result["blessed"]))
    for name, value in ((champion or {}).get("metrics") or {}).items():
        metrics.log_metric(f"champion_{name}", value)
    step_summary("gate", result["reason"])
    if fairness_gate is not None and not fairness_gate.get("passed", True):
        blocking = [
            finding
            for finding in fairness_gate.get("findings") or []
            if finding.get("status") == "broken" and finding.get("blocking")
        ]
        send_alert(
            alerts_config,
            "fairness_blocked",
            f"{model_name}: the fairness gate blocked deployment: {fairness_gate.get('reason', '')}",
            {"model": model_name, "reason": fairness_gate.get("reason", ""), "findings": blocking},
        )
    return bool(result["blessed"])
