"""The evaluate step's Markdown: the model, its held-out metrics and their CV spread."""


def metrics_markdown(evaluation: dict, best: dict) -> str:
    """Markdown for the Kubeflow dashboard and the local run's report.md.

    Args:
        evaluation: the evaluation JSON (components.common.metrics.evaluate_model plus "cv").
        best: the best trial from tune.
    """
    cv = evaluation.get("cv") or {"folds": 0, "scores": {}}
    lines = [
        "## Model\n",
        f"Family `{best['family']}`, parameters `{best['params']}`.\n",
        f"Tuning: cross-validated {best['metric']} {best['cv_score']:.4f} ± {best['cv_std']:.4f} "
        f"({best['cv_folds']} folds, {best['num_trials']} trials).\n",
    ]
    if threshold := evaluation.get("threshold"):
        lines.append(
            f"Decision threshold {threshold['value']:.3f} for class "
            f"`{evaluation['positive_class']}` (rule: {threshold['rule']}).\n"
        )
    lines += [
        f"## Held-out metrics ({evaluation['rows']} rows)\n",
        f"| metric | test | CV mean ± std ({cv['folds']} folds, training split) |",
        "|---|---|---|",
    ]
    for name, value in evaluation["metrics"].items():
        spread = cv["scores"].get(name)
        cv_text = f"{spread['mean']:.4f} ± {spread['std']:.4f}" if spread else ""
        lines.append(f"| {name} | {value:.4f} | {cv_text} |")
    if matrix := evaluation.get("confusion_matrix"):
        labels = matrix["labels"]
        lines += ["", "Confusion matrix (rows: true, columns: predicted):", ""]
        lines += ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for label, row in zip(labels, matrix["matrix"], strict=True):
            lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n\n"
