"""The champion/challenger gate (TFX's "blessing"): may this run's model be deployed?

Three checks, all of which must pass: the absolute thresholds of the run config, the comparison
with the registry's champion re-scored on this run's test rows that it never trained on
(components.common.stable_split), and the fairness gate.
"""

import math

import numpy as np

from components.common.errors import PipelineInputError
from components.common.vocabulary import higher_is_better


def check_thresholds_config(thresholds: dict, known_metrics: set[str] | None = None) -> None:
    """A threshold naming an unknown metric or a non-number: one line naming the key."""
    for metric, value in thresholds.items():
        if known_metrics is not None and metric not in known_metrics:
            raise PipelineInputError(
                f"evaluation.thresholds.{metric}: not a metric of this task "
                f"(known: {', '.join(sorted(known_metrics))})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise PipelineInputError(f"evaluation.thresholds.{metric}: expected a number")


def _meets(value: float, bound: float, metric: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return value >= bound if higher_is_better(metric) else value <= bound


def threshold_checks(metrics: dict, thresholds: dict) -> list[dict]:
    """One check per configured absolute threshold ({metric: bound})."""
    checks = []
    for metric, bound in sorted(thresholds.items()):
        if metric not in metrics:
            raise PipelineInputError(
                f"evaluation.thresholds.{metric}: this run has no such metric "
                f"(it has: {', '.join(sorted(metrics))})"
            )
        sign = ">=" if higher_is_better(metric) else "<="
        value = metrics[metric]
        checks.append(
            {
                "kind": "threshold",
                "name": f"{metric} {sign} {bound:g}",
                "passed": _meets(value, bound, metric),
                "detail": f"{value:.4f} {sign} {bound:g}"
                if _meets(value, bound, metric)
                else f"{value:.4f} does not reach {bound:g}",
            }
        )
    return checks


def champion_checks(
    candidate: dict, champion: dict, compare: list[str], margin: float, version: str
) -> list[dict]:
    """The candidate may be worse than the champion by at most `margin` on each compared metric.

    Both metric dicts come from scoring on the same rows (this run's test split).
    """
    checks = []
    for metric in compare:
        if metric not in candidate or metric not in champion:
            raise PipelineInputError(
                f"evaluation.compare_metrics: '{metric}' is not a metric of both the candidate "
                f"and champion {version}"
            )
        ours, theirs = candidate[metric], champion[metric]
        loss = (theirs - ours) if higher_is_better(metric) else (ours - theirs)
        passed = not math.isnan(ours) and (math.isnan(theirs) or loss <= margin)
        verdict = "not worse than" if passed else "worse than"
        checks.append(
            {
                "kind": "champion",
                "name": f"{metric} vs champion {version}",
                "passed": passed,
                "detail": f"{metric} {ours:.4f} is {verdict} champion {version} ({theirs:.4f}) "
                f"by more than the margin {margin:g}"
                if not passed
                else f"{metric} {ours:.4f} against champion {version} {theirs:.4f} "
                f"(margin {margin:g})",
            }
        )
    return checks


def rescore_champion(
    model_store_uri: str, model_name: str, held_out, positive_class: str, candidate=None
) -> dict | None:
    """The registry's champion, re-scored on this run's test rows that it never trained on; None
    when there is none.

    The champion's split record (metadata.json `split`, components.common.stable_split) says
    which rows it may have trained on: those are dropped from this run's test rows (a row its
    rule puts on its training side counts as seen, even one that arrived later). The candidate
    never trained on any test row, so the rest are rows neither model saw; when some were
    dropped, the candidate is scored again on the same rows, so that both metric dicts compare
    like with like. A champion registered before split records is scored on every test row.

    Args:
        held_out: a function returning (test rows, schema), called only when there is a champion.
        positive_class: the positive class of a binary task; empty: the second sorted class.
        candidate: a function returning this run's model; called only when the champion trained
            on some of the test rows.

    Returns:
        {"version", "metrics", "candidate_metrics", "rows", "rows_excluded", "split_record",
        "error"}: `metrics` the champion's on `rows` test rows, `rows_excluded` the rows it may
        have trained on, `candidate_metrics` the candidate's on the same rows (None: the
        evaluation's own metrics are on those rows), `split_record` whether the champion had
        one. A champion that cannot be loaded (its checksum fails, a file is missing) or scored
        on this data (a feature it needs is gone) has empty metrics and the reason in "error",
        which the gate reports as a finding that blocks; so does one with no rows left.
    """
    from components.common.columnwise import take_rows
    from components.common.metrics import evaluate_model
    from components.common.registry import ModelRegistry
    from components.common.stable_split import trained_on

    registry = ModelRegistry(model_store_uri, model_name)
    version = registry.aliases().get("champion")
    if version is None:
        return None
    result = {
        "version": version,
        "metrics": {},
        "candidate_metrics": None,
        "rows": 0,
        "rows_excluded": 0,
        "split_record": False,
        "error": None,
    }
    try:
        champion_model, metadata = registry.load(version)
        test, schema = held_out()
        record = metadata.get("split")
        result["split_record"] = bool(record)
        if record:
            unseen = np.flatnonzero(~trained_on(test, record, schema["target"]))
            result["rows_excluded"] = len(test) - len(unseen)
            if result["rows_excluded"]:
                test = take_rows(test, unseen)
        result["rows"] = len(test)
        if not len(test):
            return result
        result["metrics"] = evaluate_model(champion_model, test, schema, positive_class)["metrics"]
        if result["rows_excluded"]:
            scored = evaluate_model(candidate(), test, schema, positive_class)
            result["candidate_metrics"] = scored["metrics"]
    except Exception as error:  # any failure to score it is the gate's finding, not a crash
        return {**result, "metrics": {}, "candidate_metrics": None, "error": str(error)}
    return result


def _rows_said(champion: dict) -> str:
    """Which rows the champion comparison was made on, as the end of a check's detail."""
    rows = champion.get("rows")
    if rows is None:  # a champion dict that does not count its rows
        return ""
    if not champion.get("split_record"):
        return (
            f"; champion {champion['version']} has no split record: scored on all {rows} test "
            "rows, some of which it may have trained on"
        )
    return f" on {rows} test rows neither model trained on"


def decide(
    metrics: dict,
    thresholds: dict,
    compare: list[str],
    margin: float,
    champion: dict | None,
    fairness: dict | None,
) -> dict:
    """The gate's decision, as the gate JSON.

    Args:
        metrics: the candidate's held-out metrics.
        thresholds: {metric: bound}: at least the bound (at most, for losses).
        compare: the metrics compared with the champion.
        margin: how much worse than the champion the candidate may be on each.
        champion: None when the registry has no champion; else `rescore_champion`'s dict:
            {"version", "metrics", "candidate_metrics", "rows", "rows_excluded", ...} scored on
            this run's test rows it never trained on, or {"version", "error"} when it could not
            be scored. The candidate is compared by its `candidate_metrics` (the same rows)
            when they are there, else by `metrics`.
        fairness: the fairness step's gate ({"passed", "reason"}); None when it did not run.

    Returns:
        {"blessed", "reason", "margin", "checks": [{kind, name, passed, detail}], "champion"}.
    """
    checks = threshold_checks(metrics, thresholds)
    if champion is not None:
        if champion.get("error"):
            checks.append(
                {
                    "kind": "champion",
                    "name": f"champion {champion['version']} scored on this test split",
                    "passed": False,
                    "detail": f"champion {champion['version']} could not be scored on this run's "
                    f"test split ({champion['error']}); promote by hand if that is intended",
                }
            )
        elif champion.get("rows") == 0:
            checks.append(
                {
                    "kind": "champion",
                    "name": f"champion {champion['version']} scored on rows it never trained on",
                    "passed": False,
                    "detail": f"champion {champion['version']} may have trained on every one of "
                    f"this run's {champion.get('rows_excluded', 0)} test rows: no row left to "
                    "compare the models on; promote by hand if that is intended",
                }
            )
        else:
            compared = champion_checks(
                champion.get("candidate_metrics") or metrics,
                champion["metrics"],
                compare,
                margin,
                champion["version"],
            )
            for check in compared:
                check["detail"] += _rows_said(champion)
            checks += compared
    if fairness is not None:
        checks.append(
            {
                "kind": "fairness",
                "name": "fairness gate",
                "passed": bool(fairness["passed"]),
                "detail": fairness.get("reason", ""),
            }
        )
    failed = [check for check in checks if not check["passed"]]
    if failed:
        reason = "not blessed: " + "; ".join(check["detail"] for check in failed)
    elif champion is None:
        reason = "blessed: meets every threshold and there is no champion yet"
    else:
        reason = (
            f"blessed: meets every threshold and is not worse than champion {champion['version']}"
        )
    return {
        "blessed": not failed,
        "reason": reason,
        "margin": margin,
        "checks": checks,
        "champion": champion,
    }
