"""The two bias steps end to end, as plain functions the KFP components call: the data before
training, and the model on the held-out rows (metrics, gate, before/after mitigation)."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.bias.gate import GateResult, apply_gate, parse_thresholds
from components.bias.logic import Problems, checked_group_sets, intersection_name
from components.bias.metrics import GroupResult, data_metrics, model_metrics
from components.common.groups import positive_label
from components.common.schema import as_model_input
from components.common.settings.sections import BiasConfig


def assess_data(
    frame: pd.DataFrame,
    schema: dict,
    sensitive_columns: list[str],
    positive_class: str,
    settings: BiasConfig,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Group sizes, base rates and missing-value rates per set of groups, before training.

    Returns:
        The table per set, and notes: what could not be computed (with on_not_computable
        "warn"; "fail" raises instead) and groups without a favourable label.
    """
    problems = Problems(settings.on_not_computable)
    positive = positive_label(schema, positive_class)
    sets = checked_group_sets(
        frame,
        sensitive_columns,
        settings.bands,
        settings.intersections,
        settings.max_groups,
        problems,
    )
    tables = data_metrics(frame, schema, sets, positive, settings.min_group_size)
    notes = list(problems.messages)
    if positive is not None:
        labels = frame[schema["target"]]
        labelled = labels.notna()
        for name, groups in sets.items():
            counts = (labels[labelled] == positive).groupby(groups[labelled]).sum()
            for group in (str(g) for g, n in counts.items() if n == 0):
                notes.append(
                    f"{name}: group '{group}' has no favourable labels; a ratio against it is "
                    "0, and its TPR will not be defined"
                )
    return tables, notes


@dataclass
class ModelAssessment:
    """The fairness step's result.

    Attributes:
        results: per set, the served model's group table and summary metrics.
        gate: the gate's decision on `results`.
        problems: what could not be computed.
        mitigation: the configured mitigation.
        before: with mitigation, the same for the unmitigated model (no bootstrap).
        accuracy: with mitigation, overall accuracy (before, after).
    """

    results: dict[str, GroupResult]
    gate: GateResult
    problems: list[str]
    mitigation: str = "none"
    before: dict[str, GroupResult] | None = None
    accuracy: tuple[float, float] | None = None

    def kfp_metrics(self) -> dict[str, float]:
        """Every computable summary metric as `<metric>_<set>`, and the gate as fairness_passed
        (1 or 0); with mitigation, accuracy before and after."""
        metrics = {"fairness_passed": 1.0 if self.gate.passed else 0.0}
        for name, result in self.results.items():
            for metric, summary in result.summaries.items():
                if summary.value is not None:
                    metrics[f"{metric}_{name}"] = float(summary.value)
        if self.accuracy:
            metrics["accuracy_before_mitigation"] = self.accuracy[0]
            metrics["accuracy_after_mitigation"] = self.accuracy[1]
        return metrics

    def as_dict(self) -> dict:
        return {
            "gate": self.gate.as_dict(),
            "mitigation": self.mitigation,
            "problems": self.problems,
            "summaries": {
                name: {m: s.as_dict() for m, s in r.summaries.items()}
                for name, r in self.results.items()
            },
        }


def _predict(model, test: pd.DataFrame, schema: dict) -> np.ndarray:
    return np.asarray(model.predict(as_model_input(test, schema)))


def assess_model(
    model,
    test: pd.DataFrame,
    schema: dict,
    sensitive_columns: list[str],
    positive_class: str,
    settings: BiasConfig,
    seed: int,
    baseline=None,
) -> ModelAssessment:
    """Fairness of a fitted model on the held-out rows, and the gate's decision.

    Args:
        model: the served model (anything with predict on the model input).
        test: the held-out rows.
        baseline: with mitigation, the unmitigated model, measured for the before/after table.

    Raises:
        PipelineInputError: bad settings, a missing sensitive column, a blocking threshold
            naming a set this run does not group by, or (on_not_computable "fail") a metric that
            cannot be computed.
    """
    thresholds = parse_thresholds(settings.thresholds_as_dicts())
    problems = Problems(settings.on_not_computable)
    positive = positive_label(schema, positive_class)
    sets = checked_group_sets(
        test,
        sensitive_columns,
        settings.bands,
        settings.intersections,
        settings.max_groups,
        problems,
    )
    y_true = test[schema["target"]].to_numpy()
    predictions = _predict(model, test, schema)
    results = model_metrics(
        y_true,
        predictions,
        schema,
        positive,
        sets,
        settings.min_group_size,
        settings.bootstrap,
        seed,
    )
    # Every set this run groups by, computed or left out: a threshold naming another is refused.
    names = [*sensitive_columns, *map(intersection_name, settings.intersections)]
    gate = apply_gate(results, thresholds, schema["task"], positive, problems, names)
    assessment = ModelAssessment(results, gate, problems.messages, settings.mitigation)
    if baseline is not None and settings.mitigation != "none":
        before = _predict(baseline, test, schema)
        assessment.before = model_metrics(
            y_true, before, schema, positive, sets, settings.min_group_size, 0, seed
        )
        if schema["task"] == "classification":
            assessment.accuracy = (
                float(np.mean(before == y_true)),
                float(np.mean(predictions == y_true)),
            )
    return assessment
