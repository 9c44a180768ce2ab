"""The monitor's verdict on a window: its performance against the reference's, and the decision.

- performance: with labels, the realized metric with a bootstrap interval
  (components.common.performance.realized_performance); for classification with probabilities,
  the confidence-based estimate (estimate_performance); overall and per UTC day;
- the decision: `retrain` when any `monitoring.retrain` rule is met, else `warn` when any
  `monitoring.warn` rule is, else `ok`, with the reasons (which features, by how much; which
  metric, by how much); a window below min_rows is `ok` with "not enough data". A metric counts
  as dropped only when it is worse than the reference's by more than the rule's `metric_drop`
  and the two 95% intervals do not overlap.
"""

import numpy as np
import pandas as pd

from components.common.errors import PipelineInputError
from components.common.io import json_ready
from components.common.profile import PREDICTION_COLUMN, probability_column
from components.common.settings.sections import EvaluationConfig, MonitoringConfig
from components.common.vocabulary import higher_is_better, primary_metric
from components.monitor.window import LABEL_COLUMN, TIME_COLUMN

OK, WARN, RETRAIN = "ok", "warn", "retrain"
DECISIONS = (OK, WARN, RETRAIN)
# Bootstrap resamples of the realized metric's interval (overall; per day fewer, it is a chart).
BOOTSTRAP = 200
DAILY_BOOTSTRAP = 50


def watched_metric(
    monitoring: MonitoringConfig, evaluation: EvaluationConfig, reference: dict
) -> str:
    """monitoring.metric, else the first of evaluation.compare_metrics, else the gate's default."""
    if monitoring.metric:
        return monitoring.metric
    if evaluation.compare_metrics:
        return evaluation.compare_metrics[0]
    return primary_metric(
        reference.get("task", "classification"), len(reference.get("classes") or [])
    )


def restricted_profile(profile: dict, features: list[str], where: str) -> dict:
    """The reference profile with only `features` (all of them when empty)."""
    if not features:
        return profile
    unknown = [name for name in features if name not in profile["features"]]
    if unknown:
        raise PipelineInputError(
            f"monitoring.features: '{unknown[0]}' is not a feature of {where} (its features: "
            f"{', '.join(profile['features'])})"
        )
    return {**profile, "features": {name: profile["features"][name] for name in features}}


def _probabilities(frame: pd.DataFrame, classes: list | None) -> np.ndarray | None:
    """The window's probabilities in the reference's class order, or None without them all."""
    if not classes:
        return None
    columns = [probability_column(label) for label in classes]
    if not all(column in frame.columns for column in columns):
        return None
    return frame[columns].to_numpy(dtype=float)


def performance(
    frame: pd.DataFrame,
    reference: dict,
    metric: str,
    positive_class: str,
    bootstrap: int,
    min_labels: int = 1,
) -> dict:
    """{"realized": ..., "estimated": ...}: each the performance module's dict, or absent.

    Realized on the labelled rows, when there are at least `min_labels` of them (fewer: a
    realized entry without a value, saying why; three labels are not a metric); estimated (CBPE)
    from the probabilities of every row, for classification."""
    from components.common.performance import estimate_performance, realized_performance

    classes = reference.get("classes")
    probabilities = _probabilities(frame, classes)
    result = {}
    labelled = frame[LABEL_COLUMN].notna() if LABEL_COLUMN in frame else None
    count = 0 if labelled is None else int(labelled.sum())
    if 0 < count < min_labels:
        result["realized"] = {
            "metric": metric,
            "value": None,
            "rows": count,
            "method": "realized",
            "reason": f"{count} labelled rows, fewer than monitoring.min_labels ({min_labels})",
        }
    elif count:
        rows = frame[labelled]
        result["realized"] = realized_performance(
            rows[LABEL_COLUMN].to_numpy(),
            rows[PREDICTION_COLUMN].to_numpy(),
            None if probabilities is None else probabilities[labelled.to_numpy()],
            classes,
            metric,
            positive_class=positive_class or None,
            bootstrap=bootstrap,
        )
    if probabilities is not None:
        result["estimated"] = estimate_performance(
            probabilities,
            classes,
            metric,
            positive_class=positive_class or None,
            threshold=reference.get("threshold"),
        )
    return result


def daily_performance(
    frame: pd.DataFrame, reference: dict, metric: str, positive_class: str, min_labels: int = 1
) -> list[dict]:
    """The metric per UTC day of the window (the log's): realized where labelled, else
    estimated; a day whose metric cannot be computed is left out."""
    if TIME_COLUMN not in frame or frame.empty:
        return []
    days = pd.to_datetime(frame[TIME_COLUMN], utc=True).dt.strftime("%Y-%m-%d")
    points = []
    for day, rows in frame.groupby(days.to_numpy(), sort=True):
        try:
            measured = performance(
                rows, reference, metric, positive_class, DAILY_BOOTSTRAP, min_labels
            )
        except (ValueError, PipelineInputError):
            continue
        chosen = chosen_performance(measured)
        if chosen:
            points.append({"date": str(day), **json_ready(chosen)})
    return points


def chosen_performance(perf: dict) -> dict:
    """The measurement the decision uses: realized when it has a value, else estimated; {}
    when neither has one."""
    for method in ("realized", "estimated"):
        if (perf.get(method) or {}).get("value") is not None:
            return perf[method]
    return {}


def metric_drop(measured: dict, reference_metric: dict, metric: str) -> float | None:
    """How much worse the window's metric is than the reference's (positive: worse), counted
    only when the two intervals do not overlap; None when it cannot be said or they overlap."""
    value, low, high = (measured.get(key) for key in ("value", "low", "high"))
    ref, ref_low, ref_high = (reference_metric.get(key) for key in ("value", "low", "high"))
    if value is None or ref is None:
        return None
    if higher_is_better(metric):
        drop = ref - value
        separated = high is None or ref_low is None or high < ref_low
    else:
        drop = value - ref
        separated = low is None or ref_high is None or low > ref_high
    return float(drop) if separated else None


def decide(
    drift: dict, perf: dict, reference: dict, metric: str, monitoring: MonitoringConfig
) -> tuple[str, list[str]]:
    """The decision and its reasons (see the module docstring)."""
    if not drift["enough_data"]:
        return OK, [
            f"not enough data: {drift['rows']} rows, fewer than monitoring.min_rows "
            f"({drift['min_rows']}); no verdict on drift or performance"
        ]
    columns = {column["name"]: column for column in drift["columns"]}
    features = [name for name in drift["drifted"] if columns[name]["role"] == "feature"]
    outputs = [name for name in drift["drifted"] if columns[name]["role"] == "output"]
    reference_metric = (reference.get("metrics") or {}).get(metric) or {}
    measured = chosen_performance(perf)
    drop = metric_drop(measured, reference_metric, metric) if measured else None

    def described(names: list[str]) -> str:
        return ", ".join(
            f"{name} (PSI {columns[name]['psi']:.3f}, p {columns[name]['p_adjusted']:.2g})"
            for name in names
        )

    reasons: dict[str, list[str]] = {WARN: [], RETRAIN: []}
    for decision in (RETRAIN, WARN):
        rule = getattr(monitoring, decision)
        found = reasons[decision]
        if rule.drifted_features and len(features) >= rule.drifted_features:
            found.append(
                f"{len(features)} features drifted (at least {rule.drifted_features}): "
                f"{described(features)}"
            )
        if rule.prediction_drift and outputs:
            found.append(f"the model's outputs drifted: {described(outputs)}")
        if drop is not None and drop > rule.metric_drop:
            method = "realized" if measured.get("method") == "realized" else "estimated"
            found.append(
                f"{metric} ({method}) {measured['value']:.4f} "
                f"[{_fmt(measured.get('low'))}, {_fmt(measured.get('high'))}] is "
                f"{drop:.4f} worse than the reference's {reference_metric['value']:.4f} "
                f"[{_fmt(reference_metric.get('low'))}, {_fmt(reference_metric.get('high'))}] "
                f"(more than {rule.metric_drop:g})"
            )
    if reasons[RETRAIN]:
        return RETRAIN, reasons[RETRAIN]
    if reasons[WARN]:
        return WARN, reasons[WARN]
    notes = [
        f"no feature drifted ({len(features)} of {sum(1 for c in columns.values() if c['role'] == 'feature')})"
    ]
    if features:
        notes = [f"{len(features)} features drifted, below the warn rule: {described(features)}"]
    if measured.get("value") is not None:
        method = "realized" if measured.get("method") == "realized" else "estimated"
        notes.append(
            f"{metric} ({method}) {measured['value']:.4f} [{_fmt(measured.get('low'))}, "
            f"{_fmt(measured.get('high'))}] (reference {_fmt(reference_metric.get('value'))})"
        )
    return OK, notes


def _fmt(value) -> str:
    return "?" if value is None else f"{value:.4f}"
