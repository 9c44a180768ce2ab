"""The run report: one self-contained HTML page per pipeline run.

Everything is inline (CSS in a <style> element, charts as PNG data URIs drawn with matplotlib),
with no script, no web font and no external URL, so the page opens offline from the run folder
or as a Kubeflow HTML artifact. The page is the template run_report.html.j2 of
components.common.pages (autoescaped: every string from the data or the config is text); this
module computes what each section shows. The fairness section is rendered from the fairness
step's report data (JSON) with the same macros as the fairness step's own page, never from that
page's HTML. Each section renders on its own: a missing input shows a short "not run" line, and
a section that cannot be drawn shows why, so one bad input never costs the whole page.
"""

import json
import math
import os
import re
from collections.abc import Callable

import pandas as pd
from markupsafe import Markup

from components.common.charts import figure_png_data_uri, pyplot
from components.common.io import read_json
from components.common.pages import fairness_context, macros, markup, render_page
from components.common.vocabulary import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    higher_is_better,
)

# (id, heading) in page order: the decision first, where a reader looks.
SECTIONS = (
    ("decision", "Decision"),
    ("data", "Data"),
    ("fairness", "Fairness"),
    ("tuning", "Tuning"),
    ("metrics", "Metrics"),
    ("curves", "Curves"),
    ("champion", "Champion comparison"),
)
# The class of the line a section shows when it could not be drawn (the component looks for it).
RENDER_ERROR_CLASS = "render-error"

METRIC_ORDER = CLASSIFICATION_METRICS + REGRESSION_METRICS
THRESHOLD_RULES = {
    "fixed": "a fixed threshold",
    "max_f1": "the threshold that maximises F1",
    "target_precision": "the lowest threshold that reaches the target precision",
}
TOP_TRIALS = 10

# --- small helpers --------------------------------------------------------------------------


def _sections():
    """The section macros (report_sections.html.j2)."""
    return macros("report_sections.html.j2")


def _cell(text, css_class) -> dict:
    """A table cell with a class (the table macro's mapping form)."""
    return {"text": text, "class": css_class}


def fmt(value, digits: int = 4) -> str:
    """A number for a table: "n/a" for a missing or undefined one (never "nan")."""
    if value is None or isinstance(value, str):
        return "n/a" if value in (None, "") else value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "n/a"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    return f"{number:.{digits}f}"


def _count(value) -> str:
    """A count; KFP metadata carries numbers as floats, so 5226.0 shows as 5226."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return fmt(value)


def _short(value, limit: int = 120) -> str:
    """A long cell (a trial's parameters) cut to `limit` characters."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _floats(values) -> list[float]:
    return [float("nan") if v is None else float(v) for v in (values or [])]


# --- data -----------------------------------------------------------------------------------


def markdown_html(text: str) -> str:
    """A step's Markdown report as HTML: raw HTML in it is escaped, and links and images are
    kept as plain text, so that a column name can neither inject markup nor point off the page."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    renderer.disable(["link", "image", "autolink"])
    converted = renderer.render(text)
    # The step's own "## ..." titles sit under this page's section headings.
    for level in (5, 4, 3, 2, 1):
        converted = re.sub(rf"<(/?)h{level}>", rf"<\1h{min(level + 1, 6)}>", converted)
    return converted


def _data_section(dataset, schema, anomalies, contract_inferred, data_bias_markdown) -> Markup:
    dataset_rows = []
    if dataset:
        dataset_rows = [
            ["source", dataset.get("source_uri")],
            ["rows", _count(dataset.get("rows"))],
            ["content hash", dataset.get("content_hash")],
        ]
        if dataset.get("bytes") is not None:
            dataset_rows.append(["bytes", _count(dataset.get("bytes"))])
        if dataset.get("columns") is not None:
            dataset_rows.append(["columns", len(dataset["columns"])])
        if dataset.get("incremental"):
            dataset_rows.append(
                ["read", "incrementally: only files new or changed since the watermark"]
            )
    facts, features = None, []
    if schema:
        facts = {
            "target": schema.get("target"),
            "task": schema.get("task"),
            "classes": schema.get("classes"),
            "missing_labels": schema.get("missing_labels"),
        }
        features = [[f.get("name"), f.get("kind")] for f in schema.get("features") or []]
    rows = None
    if anomalies is not None:
        ordered = sorted(
            anomalies,
            key=lambda a: (a.get("severity") != "block", str(a.get("kind")), str(a.get("column"))),
        )
        rows = [
            [
                _cell(a.get("severity"), a.get("severity")),
                a.get("kind"),
                a.get("column") or "",
                a.get("expectation"),
                a.get("observed"),
            ]
            for a in ordered
        ]
    bias_html = None
    if data_bias_markdown and data_bias_markdown.strip():
        bias_html = markup(markdown_html(data_bias_markdown))
    return _sections().data(dataset_rows, facts, features, contract_inferred, rows, bias_html)


# --- fairness -------------------------------------------------------------------------------


def _fairness_section(fairness_data, fairness_summary) -> Markup:
    gate = (fairness_summary or {}).get("gate")
    no_groups = fairness_summary is not None and not fairness_summary.get("summaries")
    view = fairness_context(fairness_data) if fairness_data else None
    return _sections().fairness(gate, no_groups, view)


# --- tuning ---------------------------------------------------------------------------------


def tuning_progress(trials: pd.DataFrame) -> pd.DataFrame:
    """The scored trials in the order they finished, with the best score so far.

    Trials without a finishing time come last, by number. Only finished trials ("done") count
    for the best so far: a trial stopped early was scored on a smaller budget, and the tune step
    picks its best among finished ones too (when none finished, every score counts).

    Returns:
        The scored rows, in order, with `order` (1, 2, ...) and `best_so_far` columns.
    """
    scores = pd.to_numeric(trials["score"], errors="coerce")
    scored = trials.assign(score=scores)[scores.notna()]
    finished = pd.to_numeric(scored["seconds"], errors="coerce") if "seconds" in scored else None
    scored = scored.assign(_finished=math.nan if finished is None else finished)
    sort = ["_finished", "trial"] if "trial" in scored else ["_finished"]
    ordered = scored.sort_values(sort, na_position="last", kind="stable").reset_index(drop=True)
    ordered = ordered.drop(columns="_finished")
    if "status" not in ordered:
        ordered["status"] = "done"
    done = ordered["score"].where(ordered["status"] == "done")
    if done.isna().all():
        done = ordered["score"]
    return ordered.assign(order=range(1, len(ordered) + 1), best_so_far=done.cummax().ffill())


def tuning_curve(trials: pd.DataFrame, metric: str) -> str | None:
    """The best CV score so far against the trials in order of completion, over every trial's
    score (hollow: stopped early); a PNG data URI, or None when no trial has a score."""
    if "score" not in trials:
        return None
    progress = tuning_progress(trials)
    if progress.empty:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    families = progress["family"] if "family" in progress else pd.Series("trial", progress.index)
    figure, axes = plt.subplots(figsize=(7, 3.4), dpi=100)
    for index, family in enumerate(sorted(families.unique(), key=str)):
        colour = f"C{index % 10}"
        mine = progress[families == family]
        full, part = mine[mine["status"] == "done"], mine[mine["status"] != "done"]
        axes.scatter(full["order"], full["score"], s=20, color=colour, label=str(family))
        axes.scatter(part["order"], part["score"], s=20, facecolors="none", edgecolors=colour)
    axes.step(
        progress["order"],
        progress["best_so_far"],
        where="post",
        color="black",
        lw=1.2,
        label="best so far",
    )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trials in order of completion")
    axes.set_ylabel(f"CV {metric}")
    axes.set_title("tuning curve (hollow: stopped early)", fontsize=9)
    axes.legend(fontsize=8, loc="lower right")
    return figure_png_data_uri(figure)


def _tuning_section(best, trials) -> Markup:
    metric = (best or {}).get("metric") or "score"
    facts = None
    if best:
        score = fmt(best.get("cv_score"))
        if best.get("cv_std") is not None:
            score += f" ± {fmt(best.get('cv_std'))}"
        facts = {
            "family": best.get("family"),
            "params": json.dumps(best.get("params", {}), sort_keys=True, default=str),
            "metric": metric,
            "score": score,
            "folds": best.get("cv_folds"),
            "num_trials": best.get("num_trials"),
            "search": best.get("search"),
            "scheduler": best.get("scheduler"),
            "ray": best.get("ray"),
            "stopped": best.get("stopped_trials", 0),
            "failed": best.get("failed_trials", 0),
            "seconds": best.get("seconds"),
        }
    if trials is None or trials.empty:
        return _sections().tuning(facts, "no trials table", None, "", TOP_TRIALS, None, [])
    curve = tuning_curve(trials, metric)
    top_rows = None
    if "score" in trials:
        ranked = trials.assign(_score=pd.to_numeric(trials["score"], errors="coerce"))
        ranked = ranked.sort_values("_score", ascending=False, na_position="last", kind="stable")
        top_rows = []
        for rank, (_, row) in enumerate(ranked.head(TOP_TRIALS).iterrows(), start=1):
            score = fmt(row["_score"])
            if pd.notna(row.get("score_std")):
                score += f" ± {fmt(row['score_std'])}"
            top_rows.append(
                [
                    rank,
                    fmt(row.get("trial")),
                    row.get("family", ""),
                    _short(row.get("params", "")),
                    score,
                    row.get("status", ""),
                    fmt(row.get("budget"), 0),
                    fmt(row.get("seconds"), 1),
                ]
            )
    failed = []
    if "status" in trials:
        rows = trials[trials["status"] == "failed"].head(5)
        failed = [(row.get("trial"), row.get("error")) for _, row in rows.iterrows()]
    alt = f"tuning curve: best CV {metric} by trial"
    return _sections().tuning(facts, None, curve, alt, TOP_TRIALS, top_rows, failed)


# --- metrics and curves ---------------------------------------------------------------------


def _metric_names(*metric_dicts: dict) -> list[str]:
    """The metrics in a reader's order: the known ones first, any others after, sorted."""
    names = set().union(*(d.keys() for d in metric_dicts if d))
    return [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))


def threshold_text(threshold: dict | None) -> str:
    """One line on the decision threshold of a binary model (empty when there is none)."""
    if not threshold:
        return ""
    rule = threshold.get("rule")
    text = f"Decision threshold {fmt(threshold.get('value'), 3)}: {THRESHOLD_RULES.get(rule, rule)}"
    if rule == "target_precision" and threshold.get("target_precision") is not None:
        text += f" ({fmt(threshold['target_precision'], 3)})"
    return text + "."


def _metrics_section(evaluation) -> Markup:
    if not evaluation:
        return macros().not_run("no evaluation")
    metrics = evaluation.get("metrics") or {}
    cv = evaluation.get("cv") or {}
    cv_scores = cv.get("scores") or {}
    header = ["metric", "test"]
    if cv_scores:
        header.append(f"CV mean ± std ({cv.get('folds', '?')} folds)")
    rows = []
    for name in _metric_names(metrics):
        row = [name, fmt(metrics.get(name))]
        if cv_scores:
            score = cv_scores.get(name)
            row.append(
                f"{fmt(score.get('mean'))} ± {fmt(score.get('std'))}" if score else "not scored"
            )
        rows.append(row)
    return _sections().metrics(
        evaluation.get("task"),
        fmt(evaluation.get("rows")),
        evaluation.get("classes"),
        evaluation.get("positive_class"),
        threshold_text(evaluation.get("threshold")),
        header,
        rows,
        bool(cv_scores),
    )


def roc_chart(roc: dict, auc) -> str:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(4, 3.6), dpi=100)
    axes.plot(_floats(roc.get("fpr")), _floats(roc.get("tpr")), lw=1.5, label=f"AUC {fmt(auc)}")
    axes.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("ROC", fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    return figure_png_data_uri(figure)


def pr_chart(pr: dict, average_precision) -> str:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(4, 3.6), dpi=100)
    axes.step(
        _floats(pr.get("recall")),
        _floats(pr.get("precision")),
        where="post",
        lw=1.5,
        label=f"average precision {fmt(average_precision)}",
    )
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("precision-recall", fontsize=10)
    axes.legend(fontsize=8, loc="lower left")
    return figure_png_data_uri(figure)


def calibration_chart(calibration: dict, brier) -> str:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(4, 3.6), dpi=100)
    axes.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    axes.plot(
        _floats(calibration.get("mean_predicted")),
        _floats(calibration.get("fraction_positive")),
        marker="o",
        lw=1.5,
        label=f"model (Brier {fmt(brier)})",
    )
    axes.set(
        xlabel="mean predicted probability",
        ylabel="fraction positive",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    axes.set_title("calibration", fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    return figure_png_data_uri(figure)


def confusion_chart(labels: list, matrix: list[list[int]]) -> str:
    plt = pyplot()
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    size = max(3.6, 0.6 * len(labels) + 2.4)
    figure, axes = plt.subplots(figsize=(size, size * 0.9), dpi=100)
    axes.imshow(counts, cmap="Blues")
    ticks = range(len(labels))
    names = [str(label) for label in labels]
    axes.set_xticks(ticks, names, rotation=30 if len(labels) > 4 else 0, ha="right")
    axes.set_yticks(ticks, names)
    axes.set(xlabel="predicted", ylabel="actual")
    high = counts.max() if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        colour = "white" if high and value > high / 2 else "black"
        axes.text(j, i, f"{int(value)}", ha="center", va="center", color=colour, fontsize=9)
    axes.set_title("confusion matrix", fontsize=10)
    return figure_png_data_uri(figure)


def residual_chart(residuals: dict) -> str:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    axes.scatter(
        _floats(residuals.get("predicted")), _floats(residuals.get("residual")), s=10, alpha=0.6
    )
    axes.axhline(0, color="grey", ls="--", lw=1)
    axes.set(xlabel="predicted", ylabel="residual (actual - predicted)")
    axes.set_title("residuals", fontsize=10)
    return figure_png_data_uri(figure)


def _confusion_table(labels: list, matrix: list[list[int]]) -> dict:
    return {
        "header": ["actual \\ predicted", *(str(label) for label in labels)],
        "rows": [[str(label), *row] for label, row in zip(labels, matrix, strict=True)],
        "numeric": tuple(range(1, len(labels) + 1)),
    }


def _curves_section(evaluation) -> Markup:
    if not evaluation:
        return macros().not_run("no evaluation")
    metrics = evaluation.get("metrics") or {}
    curves = evaluation.get("curves") or {}
    charts, tables = [], []
    if curves.get("roc"):
        charts.append((roc_chart(curves["roc"], metrics.get("roc_auc")), "ROC curve"))
    if curves.get("pr"):
        charts.append((pr_chart(curves["pr"], metrics.get("pr_auc")), "precision-recall curve"))
    if curves.get("calibration"):
        calibration = calibration_chart(curves["calibration"], metrics.get("brier"))
        charts.append((calibration, "calibration curve"))
    confusion = evaluation.get("confusion_matrix")
    if confusion and confusion.get("labels"):
        labels, matrix = confusion["labels"], confusion["matrix"]
        charts.append((confusion_chart(labels, matrix), "confusion matrix"))
        tables.append(_confusion_table(labels, matrix))
    residuals = evaluation.get("residuals")
    if residuals and residuals.get("predicted"):
        charts.append((residual_chart(residuals), "residuals against predicted values"))
    if not charts:
        return macros().not_run("the evaluation has no curves for this task")
    return _sections().curves(charts, tables)


# --- decision and champion ------------------------------------------------------------------


def _verdict(gate) -> tuple[str, str]:
    """The verdict's class and line."""
    if not gate:
        return "unknown", "No decision: the gate did not run."
    blessed = bool(gate.get("blessed"))
    state, word = ("blessed", "Blessed") if blessed else ("not-blessed", "Not blessed")
    reason = str(gate.get("reason") or "")
    # The gate's reason usually opens with the verdict itself ("not blessed: ..."): say it once.
    reason = re.sub(rf"^\s*{word}\s*[:\-–]\s*", "", reason, flags=re.I)
    return state, word + (f": {reason}" if reason else "")


def _decision_section(gate, version) -> Markup:
    checks = [
        [
            c.get("kind"),
            c.get("name"),
            _cell("passed", "passed") if c.get("passed") else _cell("failed", "failed"),
            c.get("detail"),
        ]
        for c in ((gate or {}).get("checks") or [])
    ]
    blessed = bool(gate and gate.get("blessed"))
    return _sections().decision(*_verdict(gate), blessed, version, checks)


def _champion_section(gate, evaluation, version) -> Markup:
    champion_macro = _sections().champion
    if not gate:
        return champion_macro("no-gate", "", None, None, [], [], "", "")
    champion = gate.get("champion")
    if not champion:
        return champion_macro("first", "", None, None, [], [], "", "")
    name = champion.get("version") or "champion"
    if champion.get("error"):
        return champion_macro("error", name, champion["error"], None, [], [], "", "")
    # The gate's candidate metrics on the rows the champion was scored on, when the champion had
    # trained on some test rows; else the evaluation's, on all of them.
    candidate = champion.get("candidate_metrics") or (evaluation or {}).get("metrics") or {}
    theirs = champion.get("metrics") or {}
    rows = []
    for metric in _metric_names(candidate, theirs):
        mine, other = candidate.get(metric), theirs.get(metric)
        difference, verdict = "", ""
        try:
            delta = float(mine) - float(other)
        except (TypeError, ValueError):
            delta = math.nan
        if not math.isnan(delta):
            difference = f"{delta:+.4f}"
            if abs(delta) > 1e-12:
                better = delta > 0 if higher_is_better(metric) else delta < 0
                verdict = "better" if better else "worse"
            else:
                verdict = "equal"
        rows.append([metric, fmt(mine), fmt(other), difference, _cell(verdict, verdict)])
    header = [
        "metric",
        f"candidate {version}".strip(),
        f"champion {name}",
        "difference",
        "candidate is",
    ]
    margin = fmt(gate.get("margin")) if gate.get("margin") is not None else None
    return champion_macro("compared", name, None, margin, header, rows, *_verdict(gate))


# --- the page -------------------------------------------------------------------------------


def _guarded(render: Callable[[], Markup]) -> Markup:
    """A section's HTML, or one line saying why it could not be drawn: a report is read after
    the run, and one malformed input should cost its section, not the whole page."""
    try:
        return render()
    except Exception as error:  # noqa: BLE001 - shown in the page and logged by the component
        return _sections().render_error(RENDER_ERROR_CLASS, type(error).__name__, str(error))


def render_run_report(
    model_name: str,
    version: str,
    run_id: str = "",
    dataset: dict | None = None,
    schema: dict | None = None,
    anomalies: list[dict] | None = None,
    contract_inferred: bool = False,
    data_bias_markdown: str | None = None,
    fairness_data: dict | None = None,
    fairness_summary: dict | None = None,
    best: dict | None = None,
    trials: pd.DataFrame | None = None,
    evaluation: dict | None = None,
    gate: dict | None = None,
) -> str:
    """The run's report as one self-contained HTML page.

    Args:
        model_name: the model's name in the store.
        version: the version this run registered, for example "v2".
        run_id: the run's id (shown when not empty).
        dataset: the ingest step's dataset metadata (source_uri, rows, content_hash, bytes).
        schema: the validate step's schema (target, task, classes, features).
        anomalies: the data contract's anomalies (kind, column, expectation, observed,
            severity); an empty list means none.
        contract_inferred: True when no reviewed contract was given, so nothing was checked.
        data_bias_markdown: the bias step's Markdown report (groups and base rates).
        fairness_data: the fairness step's report data (JSON: gate, tables, charts' numbers;
            components.common.pages.fairness_context), rendered as this page's fairness section.
        fairness_summary: the fairness step's summary JSON ({"gate": ..., "summaries": ...}).
        best: the tune step's best trial.
        trials: the tune step's trials table.
        evaluation: the held-out evaluation (metrics, CV spread, curves, confusion matrix).
        gate: the champion/challenger decision (blessed, reason, checks, champion).

    Returns:
        The page. Any input may be None: its section then says it did not run.
    """
    title = f"Run report: {model_name} {version}".strip()
    subtitle = f"run {run_id}" if run_id else "run id not recorded"
    bodies = {
        "decision": lambda: _decision_section(gate, version),
        "data": lambda: _data_section(
            dataset, schema, anomalies, contract_inferred, data_bias_markdown
        ),
        "fairness": lambda: _fairness_section(fairness_data, fairness_summary),
        "tuning": lambda: _tuning_section(best, trials),
        "metrics": lambda: _metrics_section(evaluation),
        "curves": lambda: _curves_section(evaluation),
        "champion": lambda: _champion_section(gate, evaluation, version),
    }
    sections = [
        {"id": sid, "heading": heading, "body": _guarded(bodies[sid])} for sid, heading in SECTIONS
    ]
    return render_page("run_report.html.j2", title=title, subtitle=subtitle, sections=sections)


# --- reading the inputs ---------------------------------------------------------------------


def _written(path: str | os.PathLike | None) -> bool:
    """Whether a step wrote this artifact file (absent or empty: it did not)."""
    return bool(path) and os.path.isfile(path) and os.path.getsize(path) > 0


def read_optional_text(path: str | os.PathLike | None) -> str | None:
    """A text artifact, or None when its step did not write it."""
    if not _written(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def read_optional_json(path: str | os.PathLike | None):
    """A JSON artifact, or None when its step did not write it."""
    return read_json(path) if _written(path) else None


def read_optional_csv(path: str | os.PathLike | None) -> pd.DataFrame | None:
    """A CSV artifact as a DataFrame, or None when its step did not write it."""
    return pd.read_csv(path) if _written(path) else None
