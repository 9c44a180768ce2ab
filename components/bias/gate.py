"""The fairness gate: thresholds from the run config, checked on the model's summary metrics.

A threshold is {metric, threshold, direction, blocking, columns}:
- metric: a summary metric (metrics.SUMMARY_METRICS);
- direction: "at_least" (the value must be >= threshold) or "at_most" (<=); by default at_least
  for ratios and at_most for differences;
- blocking: true (default) keeps a model that breaks it from deployment; false only warns;
- columns: the sets it applies to (a sensitive column, or "a_x_b" for an intersection); empty
  means every set.

The gate passes when no blocking threshold is broken. A threshold whose metric cannot be computed
is a warning ("not checked"), or fails the step with on_not_computable "fail". A blocking
threshold that names a set this run does not group by (a misspelt column), or that has no set to
be checked on, fails the step whatever on_not_computable says: it would check nothing, and the
gate would pass.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from components.bias.logic import Problems
from components.bias.metrics import (
    GroupResult,
    Summary,
    missing_summary_reason,
)
from components.common.errors import PipelineInputError
from components.common.vocabulary import AT_LEAST, DIRECTIONS, SUMMARY_METRICS, default_direction

THRESHOLD_KEYS = {"metric", "threshold", "direction", "blocking", "columns"}


@dataclass(frozen=True)
class Threshold:
    metric: str
    threshold: float
    direction: str
    blocking: bool = True
    columns: tuple[str, ...] = ()

    @property
    def sign(self) -> str:
        return ">=" if self.direction == AT_LEAST else "<="

    def met_by(self, value: float) -> bool:
        return value >= self.threshold if self.direction == AT_LEAST else value <= self.threshold


def parse_thresholds(raw: list) -> list[Threshold]:
    """Thresholds from the run config's `bias.thresholds` (a list of mappings).

    Raises:
        PipelineInputError: naming the entry and key, for example
            "bias.thresholds[0].metric: unknown metric 'parity' (known: ...)".
    """
    if not isinstance(raw, list):
        raise PipelineInputError("bias.thresholds: expected a list of {metric, threshold, ...}")
    thresholds = []
    for index, entry in enumerate(raw):
        where = f"bias.thresholds[{index}]"
        if not isinstance(entry, dict):
            raise PipelineInputError(f"{where}: expected a mapping with metric and threshold")
        unknown = sorted(set(entry) - THRESHOLD_KEYS)
        if unknown:
            raise PipelineInputError(
                f"{where}.{unknown[0]}: unknown key (use {', '.join(sorted(THRESHOLD_KEYS))})"
            )
        for key in ("metric", "threshold"):
            if key not in entry:
                raise PipelineInputError(f"{where}.{key}: missing")
        metric = entry["metric"]
        if metric not in SUMMARY_METRICS:
            raise PipelineInputError(
                f"{where}.metric: unknown metric {metric!r} (known: {', '.join(SUMMARY_METRICS)})"
            )
        value = entry["threshold"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineInputError(f"{where}.threshold: expected a number, got {value!r}")
        direction = entry.get("direction") or default_direction(metric)
        if direction not in DIRECTIONS:
            raise PipelineInputError(
                f"{where}.direction: {direction!r}, expected {' or '.join(DIRECTIONS)}"
            )
        blocking = entry.get("blocking", True)
        if not isinstance(blocking, bool):
            raise PipelineInputError(f"{where}.blocking: expected true or false, got {blocking!r}")
        columns = entry.get("columns") or []
        if isinstance(columns, str):
            columns = [columns]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise PipelineInputError(f"{where}.columns: expected a list of column names")
        thresholds.append(Threshold(metric, float(value), direction, blocking, tuple(columns)))
    return thresholds


@dataclass
class Finding:
    """One threshold checked on one set of groups."""

    threshold: Threshold
    column: str
    status: str  # "met", "broken" or "not checked"
    value: float | None = None
    detail: str = ""

    def line(self) -> str:
        t = self.threshold
        name = f"{t.metric} for '{self.column}'"
        if self.status == "not checked":
            return f"{name} not checked: {self.detail}"
        relation = "meets" if self.status == "met" else "breaks"
        text = f"{name} = {self.value:.3f} {relation} {t.sign} {t.threshold:g}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class GateResult:
    passed: bool
    reason: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocked(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "broken" and f.threshold.blocking]

    @property
    def warnings(self) -> list[Finding]:
        return [
            f
            for f in self.findings
            if f.status == "not checked" or (f.status == "broken" and not f.threshold.blocking)
        ]

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "findings": [
                {
                    "metric": f.threshold.metric,
                    "column": f.column,
                    "threshold": f.threshold.threshold,
                    "direction": f.threshold.direction,
                    "blocking": f.threshold.blocking,
                    "status": f.status,
                    "value": f.value,
                    "detail": f.detail,
                }
                for f in self.findings
            ],
        }


def _groups_detail(summary: Summary) -> str:
    if not (summary.low and summary.high):
        return ""
    (low_group, low), (high_group, high) = summary.low, summary.high
    if low == high:
        text = f"{summary.rate} {low:.3f} in every group compared"
    else:
        text = f"{summary.rate} {low:.3f} in group '{low_group}' vs {high:.3f} in '{high_group}'"
    if summary.ci:
        text += f"; 95% interval {summary.ci[0]:.3f}-{summary.ci[1]:.3f}"
    return text


def check_threshold_sets(thresholds: list[Threshold], sets: Sequence[str], problems: Problems):
    """Every set a threshold names must be one this run groups by.

    Raises:
        PipelineInputError: a blocking threshold naming an unknown set, or with no set at all,
            as "bias.thresholds[0].columns: column 'COLOUR' is not ...". A non-blocking one is a
            problem (a warning, or an error with on_not_computable "fail").
    """
    have = ", ".join(sets) or "none"
    for index, threshold in enumerate(thresholds):
        where = f"bias.thresholds[{index}]"
        unknown = [column for column in threshold.columns if column not in sets]
        if not sets:
            message = f"{where}: no sensitive column or intersection to check it on"
        elif unknown:
            message = (
                f"{where}.columns: column '{unknown[0]}' is not a sensitive column or "
                f"intersection of this run (have: {have})"
            )
        else:
            continue
        if threshold.blocking:
            raise PipelineInputError(f"{message}; a blocking threshold must check something")
        problems.add(f"{message}; the threshold is not checked there")


def apply_gate(
    results: dict[str, GroupResult],
    thresholds: list[Threshold],
    task: str,
    positive: object,
    problems: Problems,
    sets: Sequence[str] | None = None,
) -> GateResult:
    """Check every threshold on every set it applies to.

    Args:
        sets: every set this run groups by (sensitive columns, then intersections), including
            those left out of `results` as not computable; default: the sets of `results`.

    Returns:
        passed (no blocking threshold broken) and a one-line reason: the first blocking breach,
        naming the metric, the set, the value and the groups; otherwise how many thresholds held
        and how many warnings there were. A set that was left out (not computable) is a "not
        checked" warning for each threshold on it.

    Raises:
        PipelineInputError: a blocking threshold that names a set not in `sets`, or with no set
            to be checked on (check_threshold_sets).
    """
    sets = list(results) if sets is None else list(sets)
    check_threshold_sets(thresholds, sets, problems)
    findings = []
    for threshold in thresholds:
        for column in threshold.columns or tuple(sets):
            if column not in sets:  # a non-blocking threshold's (check_threshold_sets)
                detail = "not a sensitive column or intersection of this run"
                findings.append(Finding(threshold, column, "not checked", detail=detail))
                continue
            if column not in results:
                # Left out of the analysis (too many groups): its problem is recorded already.
                detail = "not computable: the set was left out of the analysis"
                findings.append(Finding(threshold, column, "not checked", detail=detail))
                continue
            summary = results[column].summaries.get(threshold.metric)
            if summary is None:
                reason = missing_summary_reason(threshold.metric, task, positive)
                problems.add(f"{column}: {reason}")
                findings.append(Finding(threshold, column, "not checked", detail=reason))
            elif summary.value is None:
                problems.add(f"{threshold.metric} for '{column}': {summary.reason}")
                findings.append(Finding(threshold, column, "not checked", detail=summary.reason))
            else:
                status = "met" if threshold.met_by(summary.value) else "broken"
                findings.append(
                    Finding(threshold, column, status, summary.value, _groups_detail(summary))
                )
    result = GateResult(passed=True, reason="", findings=findings)
    blocked, warnings = result.blocked, result.warnings
    if blocked:
        result.passed = False
        more = f" (and {len(blocked) - 1} more blocking)" if len(blocked) > 1 else ""
        result.reason = f"blocked: {blocked[0].line()}{more}"
    elif warnings:
        result.reason = (
            f"passed with {len(warnings)} warning{'s' if len(warnings) > 1 else ''}: "
            f"{warnings[0].line()}"
        )
    elif findings:
        result.reason = f"passed: {len(findings)} threshold checks met"
    else:
        result.reason = "passed: no thresholds configured"
    return result
