"""Fairness metrics, with fairlearn's MetricFrame: on the data before training, and on a model's
held-out predictions after evaluation. The bootstrap intervals of the rates are computed here,
with numpy (see bootstrap_intervals for why not with MetricFrame's own bootstrap).

A rate whose denominator is zero in a group (the TPR of a group with no positive labels, the
precision of a group with no favourable predictions) is NaN in that group's row, shown as "n/a",
never as a silent 0. A summary metric that cannot be computed (a ratio over groups of which none
is selected, fewer than two groups large enough to compare, a classification metric on a
regression task) is a Summary with value None and the reason.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, count, mean_prediction, selection_rate
from sklearn.metrics import mean_absolute_error

from components.common.vocabulary import (
    CLASSIFICATION_SUMMARIES,
    REGRESSION_SUMMARIES,
)

CI_QUANTILES = [0.025, 0.975]
# The rates that get bootstrap intervals (the others are shown as point values).
BOOTSTRAPPED = ("selection_rate", "accuracy", "tpr", "fpr", "mae")


# --- Per-group rates; NaN where the denominator is zero ----------------------------------------


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> float:
    total = int(np.sum(denominator))
    return float(np.sum(numerator & denominator)) / total if total else float("nan")


def true_positive_rate(y_true, y_pred) -> float:
    """Recall; NaN for a group without positive labels."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    return _rate(y_pred, y_true)


def false_positive_rate(y_true, y_pred) -> float:
    """NaN for a group without negative labels."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    return _rate(y_pred, ~y_true)


def precision(y_true, y_pred) -> float:
    """NaN for a group without favourable predictions."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    return _rate(y_true, y_pred)


def accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def positives(y_true, y_pred) -> float:
    return float(np.sum(np.asarray(y_true, bool)))


# --- The data, before training -----------------------------------------------------------------


def data_metrics(
    frame: pd.DataFrame,
    schema: dict,
    sets: dict[str, pd.Series],
    positive: object,
    min_group_size: int,
) -> dict[str, pd.DataFrame]:
    """Per group of each set: rows, share of rows, base rate of the favourable label among the
    labelled rows (the mean target for regression, and for several classes without a positive
    class), the share of rows with a missing value (a feature or the label), and whether the
    group is smaller than min_group_size.
    """
    target = schema["target"]
    labels = frame[target]
    labelled = labels.notna().to_numpy()
    if positive is not None:
        outcome = (labels == positive).astype(float).to_numpy()
    else:
        outcome = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=float)
    outcome[~labelled] = np.nan
    missing = frame.isna().any(axis=1).to_numpy()

    def base_rate(y_true, y_pred) -> float:
        known = ~np.isnan(y_true)
        return float(np.mean(y_true[known])) if known.any() else float("nan")

    def missing_rate(y_true, y_pred, missing) -> float:
        return float(np.mean(missing))

    tables = {}
    for name, groups in sets.items():
        by_group = MetricFrame(
            metrics={"rows": count, "base_rate": base_rate, "missing_rate": missing_rate},
            y_true=outcome,
            y_pred=outcome,
            sensitive_features=groups.to_numpy(),
            sample_params={"missing_rate": {"missing": missing}},
        ).by_group
        table = by_group.reset_index()
        table.columns = ["group", *by_group.columns]
        table["rows"] = table["rows"].astype(int)
        table.insert(2, "share", table["rows"] / len(frame))
        table["small"] = table["rows"] < min_group_size
        tables[name] = table
    return tables


# --- The model, on held-out rows ---------------------------------------------------------------


@dataclass
class Summary:
    """One summary metric over the groups of one set.

    Attributes:
        value: the metric, or None when it cannot be computed (then `reason` says why).
        ci: the bootstrap interval (2.5 %, 97.5 %), when bootstrapped and defined.
        low, high: the two groups the metric compares (group, rate), for messages.
        rate: the per-group rate it compares, for example selection_rate.
    """

    value: float | None
    reason: str = ""
    ci: tuple[float, float] | None = None
    low: tuple[str, float] | None = None
    high: tuple[str, float] | None = None
    rate: str = ""

    def as_dict(self) -> dict:
        return {
            "value": self.value,
            "reason": self.reason,
            "ci": list(self.ci) if self.ci else None,
            "low": list(self.low) if self.low else None,
            "high": list(self.high) if self.high else None,
            "rate": self.rate,
        }


@dataclass
class GroupResult:
    """A set's per-group table and its summary metrics.

    Attributes:
        table: one row per group: rows, positives, the rates, `<rate>_low`/`<rate>_high` bounds
            when bootstrapped, and `small` (fewer rows than min_group_size).
        summaries: metric name -> Summary.
        notes: what was left out of the summaries, and why.
    """

    table: pd.DataFrame
    summaries: dict[str, Summary]
    notes: list[str] = field(default_factory=list)


@dataclass
class BootstrapIntervals:
    """The 95 % bootstrap intervals of the bootstrapped rates (BOOTSTRAPPED) of one set.

    Attributes:
        by_group: (low, high) DataFrames, one row per group, one column per rate.
        difference: (low, high) Series per rate: the interval of max - min over the groups.
        ratio: (low, high) Series per rate: the interval of min / max over the groups.
    """

    by_group: tuple[pd.DataFrame, pd.DataFrame]
    difference: tuple[pd.Series, pd.Series]
    ratio: tuple[pd.Series, pd.Series]


def _resampled_rates(
    truth: np.ndarray, predicted: np.ndarray, codes: np.ndarray, groups: int, kind: str
) -> dict[str, np.ndarray]:
    """The bootstrapped rates of one resample, per group (NaN where a denominator is 0)."""

    def total(values=None) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=groups)

    rows = total()
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "regression":
            return {"mae": total(np.abs(truth - predicted)) / rows}
        rates = {"accuracy": total((truth == predicted).astype(float)) / rows}
        if kind == "binary":
            positives = total(truth.astype(float))
            rates["selection_rate"] = total(predicted.astype(float)) / rows
            rates["tpr"] = total((truth & predicted).astype(float)) / positives
            rates["fpr"] = total((~truth & predicted).astype(float)) / (rows - positives)
        return rates


def bootstrap_intervals(
    truth: np.ndarray, predicted: np.ndarray, groups: np.ndarray, kind: str, n_boot: int, seed: int
) -> BootstrapIntervals:
    """Resample the rows n_boot times (with replacement, as fairlearn's MetricFrame does) and
    take the 2.5 % and 97.5 % quantiles of each group's rates, and of their difference and ratio
    over the groups.

    The same statistics as MetricFrame(n_boot=..., ci_quantiles=...), which recomputes every
    metric of every group through pandas for each resample: about 0.1-0.4 s a resample, 7.8 s of
    a 10 s fairness step at 20 resamples. Counting with np.bincount takes milliseconds. As in
    MetricFrame, a group missing from a resample has no rates in it, the difference and ratio of
    a resample skip groups whose rate is undefined there, and an interval is undefined (NaN) when
    a resample left its statistic undefined.

    Args:
        truth, predicted: booleans (favourable or not) for kind "binary", any labels for
            "multiclass", numbers for "regression".
        groups: each row's group label.
        kind: "binary", "multiclass" or "regression".
    """
    names, codes = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {}
    for _ in range(n_boot):
        rows = rng.integers(0, len(codes), size=len(codes))
        rates = _resampled_rates(truth[rows], predicted[rows], codes[rows], len(names), kind)
        for rate, values in rates.items():
            samples.setdefault(rate, []).append(values)
    stacked = {rate: np.vstack(values) for rate, values in samples.items()}  # [n_boot, groups]
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples: NaN, as intended
        highest = {rate: np.nanmax(values, axis=1) for rate, values in stacked.items()}
        lowest = {rate: np.nanmin(values, axis=1) for rate, values in stacked.items()}
    index = pd.Index(names.astype(str))

    def quantiles(per_rate: dict[str, np.ndarray], frame: bool):
        bounds = {
            rate: np.quantile(values, CI_QUANTILES, axis=0) for rate, values in per_rate.items()
        }
        if frame:
            return tuple(
                pd.DataFrame({rate: b[i] for rate, b in bounds.items()}, index=index)
                for i in range(2)
            )
        return tuple(pd.Series({rate: float(b[i]) for rate, b in bounds.items()}) for i in range(2))

    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = {rate: lowest[rate] / highest[rate] for rate in stacked}
    return BootstrapIntervals(
        by_group=quantiles(stacked, frame=True),
        difference=quantiles({r: highest[r] - lowest[r] for r in stacked}, frame=False),
        ratio=quantiles(ratios, frame=False),
    )


def _classification_metrics() -> dict:
    return {
        "rows": count,
        "positives": positives,
        "selection_rate": selection_rate,
        "accuracy": accuracy,
        "precision": precision,
        "tpr": true_positive_rate,
        "fpr": false_positive_rate,
    }


def _regression_metrics() -> dict:
    return {"rows": count, "mae": mean_absolute_error, "mean_prediction": mean_prediction}


def _ci(series_pair, name: str) -> tuple[float, float] | None:
    if series_pair is None:
        return None
    low, high = float(series_pair[0][name]), float(series_pair[1][name])
    return None if np.isnan(low) or np.isnan(high) else (low, high)


def _compare(by_group: pd.DataFrame, rate: str, kind: str, set_name: str, ci_pair) -> Summary:
    """The difference (max - min) or ratio (min / max) of one rate over the groups where the rate
    is defined; not computable with fewer than two such groups or a zero denominator."""
    values = by_group[rate].dropna()
    if len(values) < 2:
        undefined = [str(g) for g in by_group.index[by_group[rate].isna()]]
        why = f"; undefined in {', '.join(undefined)}" if undefined else ""
        return Summary(
            None,
            f"{rate} is defined for fewer than two groups of '{set_name}' large enough to "
            f"compare{why}",
            rate=rate,
        )
    low = (str(values.idxmin()), float(values.min()))
    high = (str(values.idxmax()), float(values.max()))
    if kind == "ratio":
        if high[1] == 0:
            return Summary(
                None,
                f"{rate} is 0 in every group of '{set_name}', so the ratio is 0/0",
                low=low,
                high=high,
                rate=rate,
            )
        value = low[1] / high[1]
    else:
        value = high[1] - low[1]
    return Summary(value, ci=_ci(ci_pair, rate), low=low, high=high, rate=rate)


def _summaries(
    boot: BootstrapIntervals | None, by_group: pd.DataFrame, task: str, set_name: str, binary: bool
) -> dict[str, Summary]:
    difference_ci = boot.difference if boot else None
    ratio_ci = boot.ratio if boot else None
    if task == "regression":
        return {
            "mae_difference": _compare(by_group, "mae", "difference", set_name, difference_ci),
            "mae_ratio": _compare(by_group, "mae", "ratio", set_name, ratio_ci),
        }
    result = {
        "accuracy_difference": _compare(by_group, "accuracy", "difference", set_name, difference_ci)
    }
    if not binary:
        return result
    dp_ratio = _compare(by_group, "selection_rate", "ratio", set_name, ratio_ci)
    tpr = _compare(by_group, "tpr", "difference", set_name, difference_ci)
    fpr = _compare(by_group, "fpr", "difference", set_name, difference_ci)
    if tpr.value is None or fpr.value is None:
        odds = Summary(None, tpr.reason or fpr.reason, rate="tpr/fpr")
    else:
        worst = tpr if tpr.value >= fpr.value else fpr
        # The interval of a maximum, taken bound by bound: an approximation, for reading only.
        both = tpr.ci is not None and fpr.ci is not None
        bounds = (max(tpr.ci[0], fpr.ci[0]), max(tpr.ci[1], fpr.ci[1])) if both else None
        odds = Summary(worst.value, ci=bounds, low=worst.low, high=worst.high, rate=worst.rate)
    result.update(
        {
            "demographic_parity_difference": _compare(
                by_group, "selection_rate", "difference", set_name, difference_ci
            ),
            "demographic_parity_ratio": dp_ratio,
            # The four-fifths rule's number: the least selected group's rate over the most
            # selected group's; the same number as the demographic parity ratio.
            "disparate_impact_ratio": dp_ratio,
            "equalized_odds_difference": odds,
            "equal_opportunity_difference": tpr,
        }
    )
    return result


def _binary(values, positive) -> np.ndarray:
    return np.asarray(pd.Series(values).to_numpy() == positive, dtype=bool)


def _group_table(
    frame: MetricFrame, boot: BootstrapIntervals | None, min_group_size: int
) -> pd.DataFrame:
    table = frame.by_group.astype(float)
    if boot is not None:
        low, high = boot.by_group
        table.index = table.index.astype(str)
        for rate in [r for r in BOOTSTRAPPED if r in low.columns]:
            table[f"{rate}_low"], table[f"{rate}_high"] = low[rate], high[rate]
    table["rows"] = table["rows"].astype(int)
    if "positives" in table:
        table["positives"] = table["positives"].astype(int)
    table["small"] = table["rows"] < min_group_size
    table.index = table.index.astype(str).rename("group")
    return table


def model_metrics(
    y_true,
    y_pred,
    schema: dict,
    positive: object,
    sets: dict[str, pd.Series],
    min_group_size: int,
    n_boot: int,
    seed: int,
) -> dict[str, GroupResult]:
    """Per set of groups, on held-out rows: the per-group table and the summary metrics.

    Classification with a favourable class: rows, positives, selection rate, accuracy,
    precision, TPR (recall) and FPR per group; demographic parity difference and ratio, the
    disparate impact ratio, equalized odds and equal opportunity differences, and the accuracy
    difference. Several classes without a favourable class: accuracy only. Regression: MAE and
    mean prediction per group; MAE difference and ratio.

    Groups with fewer than min_group_size rows stay in the table, flagged `small` and with
    their bootstrap interval, and are left out of the summary metrics (a note says so): a
    handful of rows would otherwise decide the gate by chance.

    Args:
        y_true, y_pred: labels and predictions, row for row with the sets' labels.
        positive: the favourable class (None: regression, or several classes without one).
        n_boot: bootstrap samples for the intervals (bootstrap_intervals); 0 for none.
        seed: seeds the bootstrap.
    """
    task = schema["task"]
    binary = task == "classification" and positive is not None
    if task == "regression":
        metrics = _regression_metrics()
        truth, predicted = np.asarray(y_true, float), np.asarray(y_pred, float)
    elif binary:
        metrics = _classification_metrics()
        truth, predicted = _binary(y_true, positive), _binary(y_pred, positive)
    else:
        metrics = {"rows": count, "accuracy": accuracy}
        truth, predicted = np.asarray(y_true, object), np.asarray(y_pred, object)

    kind = "regression" if task == "regression" else "binary" if binary else "multiclass"

    def bootstrapped(keep: np.ndarray) -> BootstrapIntervals | None:
        if not n_boot:
            return None
        return bootstrap_intervals(truth[keep], predicted[keep], groups[keep], kind, n_boot, seed)

    results = {}
    for name, labels in sets.items():
        groups = labels.astype(str).to_numpy()
        everyone = np.ones(len(groups), dtype=bool)
        frame = MetricFrame(
            metrics=metrics,
            y_true=truth,
            y_pred=predicted,
            sensitive_features=pd.Series(groups, name=name),
        )
        boot = bootstrapped(everyone)
        table = _group_table(frame, boot, min_group_size)
        notes = []
        small = table.index[table["small"]].tolist()
        compared, compared_table = boot, table
        if small:
            notes.append(
                f"{name}: groups with fewer than {min_group_size} held-out rows are shown but "
                f"left out of the summary metrics: {', '.join(small)}"
            )
            keep = ~np.isin(groups, small)
            compared, compared_table = None, table[~table["small"]]
            if len(set(groups[keep])) >= 2:
                compared = bootstrapped(keep)
        for rate, why in (("tpr", "positive labels"), ("fpr", "negative labels")):
            if rate in compared_table:
                undefined = compared_table.index[compared_table[rate].isna()].tolist()
                if undefined:
                    notes.append(
                        f"{name}: {', '.join(undefined)} ha{'s' if len(undefined) == 1 else 've'} "
                        f"no {why} in the held-out rows, so {rate.upper()} is not defined there "
                        "and the group is left out of the equalized odds and equal opportunity "
                        "differences"
                    )
        summaries = _summaries(compared, compared_table, task, name, binary)
        results[name] = GroupResult(table, summaries, notes)
    return results


def missing_summary_reason(metric: str, task: str, positive: object) -> str:
    """Why a summary metric is absent for this task (used by the gate and the report)."""
    if metric in REGRESSION_SUMMARIES and task != "regression":
        return f"{metric} is for regression (the task is {task})"
    if metric in CLASSIFICATION_SUMMARIES and task != "classification":
        return f"{metric} is for classification (the task is {task})"
    if positive is None:
        return f"{metric} needs a favourable class: set positive_class (the target has several)"
    return f"{metric} was not computed"
