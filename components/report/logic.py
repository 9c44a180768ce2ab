"""The run report: one self-contained HTML page per pipeline run.

Everything is inline (CSS in a <style> element, charts as PNG data URIs drawn with matplotlib),
with no script, no web font and no external URL, so the page opens offline from the run folder
or as a Kubeflow HTML artifact. Every string that comes from the data or the config is escaped.
Each section renders on its own: a missing input shows a short "not run" line, and a section that
cannot be drawn shows why, so one bad input never costs the whole page.
"""

import html
import json
import math
import os
import re
from collections.abc import Callable

import pandas as pd

from components.common.charts import figure_png_data_uri, pyplot
from components.common.io import read_json
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

STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #1f2328; background: #fff; line-height: 1.4; }
header { background: #24292f; color: #fff; padding: 1em 1.5em; }
header h1 { margin: 0 0 0.2em; font-size: 1.5em; }
header p { margin: 0; color: #d0d7de; }
nav { padding: 0.5em 1.5em; border-bottom: 1px solid #d0d7de; font-size: 0.9em; }
nav a { margin-right: 1em; color: #0969da; text-decoration: none; }
main { padding: 0 1.5em 2em; max-width: 75em; }
section { border-bottom: 1px solid #d0d7de; padding: 0.5em 0 1em; }
h2 { font-size: 1.3em; margin: 0.8em 0 0.4em; }
h3 { font-size: 1.05em; margin: 0.9em 0 0.3em; }
h4 { font-size: 0.95em; margin: 0.8em 0 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.verdict { font-size: 1.2em; font-weight: bold; padding: 0.6em 0.9em; border-radius: 6px; }
.verdict.blessed { background: #dafbe1; color: #116329; border: 1px solid #4ac26b; }
.verdict.not-blessed { background: #ffebe9; color: #82071e; border: 1px solid #ff8182; }
.verdict.unknown { background: #f6f8fa; color: #57606a; border: 1px solid #d0d7de; }
.passed, .better { color: #116329; } .blocked, .failed, .worse { color: #a40e26; }
.block { color: #a40e26; font-weight: bold; } .warn { color: #9a6700; }
.note, .not-run { color: #57606a; font-size: 0.95em; }
.render-error { color: #a40e26; font-family: ui-monospace, monospace; }
"""


# --- small helpers --------------------------------------------------------------------------


def _e(value) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


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


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """An HTML table; cells are escaped, columns listed in `numeric` are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def _not_run(what: str) -> str:
    return f"<p class='not-run'>Not run: {_e(what)}.</p>"


def _img(uri: str | None, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='{uri}'>" if uri else ""


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


def _data_section(dataset, schema, anomalies, contract_inferred, data_bias_markdown) -> str:
    parts = []
    if dataset:
        rows = [
            ["source", dataset.get("source_uri")],
            ["rows", _count(dataset.get("rows"))],
            ["content hash", dataset.get("content_hash")],
        ]
        if dataset.get("bytes") is not None:
            rows.append(["bytes", _count(dataset.get("bytes"))])
        if dataset.get("columns") is not None:
            rows.append(["columns", len(dataset["columns"])])
        if dataset.get("incremental"):
            rows.append(["read", "incrementally: only files new or changed since the watermark"])
        parts.append(_table(["", "value"], rows))
    else:
        parts.append(_not_run("no dataset metadata"))

    parts.append("<h3>Schema</h3>")
    if schema:
        facts = f"Target <code>{_e(schema.get('target'))}</code> ({_e(schema.get('task'))})"
        if schema.get("classes") is not None:
            facts += "; classes: " + ", ".join(f"<code>{_e(c)}</code>" for c in schema["classes"])
        if schema.get("missing_labels"):
            facts += f"; {_e(schema['missing_labels'])} rows without a label were dropped"
        parts.append(f"<p>{facts}.</p>")
        features = schema.get("features") or []
        parts.append(
            _table(["feature", "kind"], [[f.get("name"), f.get("kind")] for f in features])
        )
    else:
        parts.append(_not_run("no schema"))

    parts.append("<h3>Data contract</h3>")
    if contract_inferred:
        parts.append(
            "<p class='note'>No reviewed contract was given, so this run inferred one from its "
            "data and checked nothing against it. Review the <code>contract</code> artifact, "
            "commit it and name it in the run config (<code>contract.path</code>).</p>"
        )
    if anomalies is None:
        parts.append(_not_run("no anomalies file"))
    elif not anomalies:
        parts.append("<p class='passed'>No anomalies: the data meets the contract.</p>")
    else:
        ordered = sorted(
            anomalies,
            key=lambda a: (a.get("severity") != "block", str(a.get("kind")), str(a.get("column"))),
        )
        header = ["severity", "kind", "column", "expected", "observed"]
        head = "".join(f"<th>{h}</th>" for h in header)
        body = "".join(
            f"<tr><td class='{_e(a.get('severity'))}'>{_e(a.get('severity'))}</td>"
            f"<td>{_e(a.get('kind'))}</td><td>{_e(a.get('column') or '')}</td>"
            f"<td>{_e(a.get('expectation'))}</td><td>{_e(a.get('observed'))}</td></tr>"
            for a in ordered
        )
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    if data_bias_markdown and data_bias_markdown.strip():
        parts.append(markdown_html(data_bias_markdown))
    else:
        parts += ["<h3>Groups in the data</h3>", _not_run("no data bias report")]
    return "\n".join(parts)


# --- fairness -------------------------------------------------------------------------------


def fairness_body(page: str) -> str:
    """The <body> of the fairness step's own page, to sit inside this one: its title dropped,
    its headings one level down, and any script removed (this page runs none)."""
    match = re.search(r"<body[^>]*>(.*)</body\s*>", page, flags=re.S | re.I)
    body = match.group(1) if match else page
    body = re.sub(r"<script\b.*?(</script\s*>|$)", "", body, flags=re.S | re.I)
    body = re.sub(r"<h1\b[^>]*>.*?</h1\s*>", "", body, flags=re.S | re.I)
    for level in (5, 4, 3, 2):
        body = re.sub(rf"<(/?)h{level}\b", rf"<\1h{level + 1}", body, flags=re.I)
    return body


def _fairness_section(fairness_html, fairness_summary) -> str:
    parts = []
    page = fairness_html if fairness_html and fairness_html.strip() else None
    gate = (fairness_summary or {}).get("gate")
    if gate and page is None:  # the fairness page opens with the same line
        state = "passed" if gate.get("passed") else "blocked"
        parts.append(f"<p class='{state}'><b>Gate: {_e(gate.get('reason'))}</b></p>")
    if fairness_summary is not None and not fairness_summary.get("summaries"):
        parts.append(
            "<p class='note'>No group metrics: the run names no sensitive columns "
            "(<code>sensitive_columns</code>), or none could be computed.</p>"
        )
    if page is not None:
        parts.append(f"<div class='fairness'>{fairness_body(page)}</div>")
    elif not parts:
        parts.append(_not_run("no fairness report"))
    return "\n".join(parts)


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


def _tuning_section(best, trials) -> str:
    parts = []
    metric = (best or {}).get("metric") or "score"
    if best:
        score = fmt(best.get("cv_score"))
        if best.get("cv_std") is not None:
            score += f" ± {fmt(best.get('cv_std'))}"
        params = json.dumps(best.get("params", {}), sort_keys=True, default=str)
        parts.append(
            f"<p>Best: <code>{_e(best.get('family'))}</code> <code>{_e(params)}</code>, "
            f"CV {_e(metric)} <b>{_e(score)}</b> ({_e(best.get('cv_folds'))} folds).</p>"
        )
        parts.append(
            f"<p class='note'>{_e(best.get('num_trials'))} trials, {_e(best.get('search'))} "
            f"search, {_e(best.get('scheduler'))} scheduler, on {_e(best.get('ray'))}: "
            f"{_e(best.get('stopped_trials', 0))} stopped early, "
            f"{_e(best.get('failed_trials', 0))} failed, {_e(best.get('seconds'))} s.</p>"
        )
    else:
        parts.append(_not_run("no tuning result"))
    if trials is None or trials.empty:
        parts.append(_not_run("no trials table"))
        return "\n".join(parts)
    parts.append(
        _img(tuning_curve(trials, metric), f"tuning curve: best CV {metric} by trial") + "\n"
    )
    if "score" in trials:
        parts.append(f"<h3>Top {TOP_TRIALS} trials</h3>")
        ranked = trials.assign(_score=pd.to_numeric(trials["score"], errors="coerce"))
        ranked = ranked.sort_values("_score", ascending=False, na_position="last", kind="stable")
        header = [
            "rank",
            "trial",
            "family",
            "parameters",
            "CV score",
            "status",
            "budget",
            "finished (s)",
        ]
        rows = []
        for rank, (_, row) in enumerate(ranked.head(TOP_TRIALS).iterrows(), start=1):
            score = fmt(row["_score"])
            if pd.notna(row.get("score_std")):
                score += f" ± {fmt(row['score_std'])}"
            rows.append(
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
        parts.append(_table(header, rows, numeric={0, 1, 4, 6, 7}))
    if "status" in trials:
        failed = trials[trials["status"] == "failed"]
        for _, row in failed.head(5).iterrows():
            parts.append(
                f"<p class='failed'>Trial {_e(row.get('trial'))} failed: "
                f"<code>{_e(row.get('error'))}</code></p>"
            )
    return "\n".join(parts)


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


def _metrics_section(evaluation) -> str:
    if not evaluation:
        return _not_run("no evaluation")
    metrics = evaluation.get("metrics") or {}
    cv = evaluation.get("cv") or {}
    cv_scores = cv.get("scores") or {}
    parts = []
    facts = f"{_e(evaluation.get('task'))} on {_e(fmt(evaluation.get('rows')))} held-out rows"
    if evaluation.get("classes"):
        facts += "; classes " + ", ".join(f"<code>{_e(c)}</code>" for c in evaluation["classes"])
    if evaluation.get("positive_class") is not None:
        facts += f"; positive class <code>{_e(evaluation['positive_class'])}</code>"
    parts.append(f"<p>{facts}.</p>")
    line = threshold_text(evaluation.get("threshold"))
    if line:
        parts.append(f"<p>{_e(line)}</p>")
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
    parts.append(_table(header, rows, numeric={1}))
    if cv_scores:
        parts.append(
            "<p class='note'>Test: the held-out split, scored once. CV: the same pipeline "
            "cross-validated on the training rows; the spread shows how much a score moves "
            "between folds.</p>"
        )
    return "\n".join(parts)


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


def _confusion_table(labels: list, matrix: list[list[int]]) -> str:
    header = ["actual \\ predicted", *(str(label) for label in labels)]
    rows = [[str(label), *row] for label, row in zip(labels, matrix, strict=True)]
    return _table(header, rows, numeric=set(range(1, len(labels) + 1)))


def _curves_section(evaluation) -> str:
    if not evaluation:
        return _not_run("no evaluation")
    metrics = evaluation.get("metrics") or {}
    curves = evaluation.get("curves") or {}
    charts, tables = [], []
    if curves.get("roc"):
        charts.append(_img(roc_chart(curves["roc"], metrics.get("roc_auc")), "ROC curve"))
    if curves.get("pr"):
        charts.append(_img(pr_chart(curves["pr"], metrics.get("pr_auc")), "precision-recall curve"))
    if curves.get("calibration"):
        charts.append(
            _img(
                calibration_chart(curves["calibration"], metrics.get("brier")), "calibration curve"
            )
        )
    confusion = evaluation.get("confusion_matrix")
    if confusion and confusion.get("labels"):
        labels, matrix = confusion["labels"], confusion["matrix"]
        charts.append(_img(confusion_chart(labels, matrix), "confusion matrix"))
        tables.append(_confusion_table(labels, matrix))
    residuals = evaluation.get("residuals")
    if residuals and residuals.get("predicted"):
        charts.append(_img(residual_chart(residuals), "residuals against predicted values"))
    if not charts:
        return _not_run("the evaluation has no curves for this task")
    return "<div class='charts'>" + "\n".join(charts) + "</div>\n" + "\n".join(tables)


# --- decision and champion ------------------------------------------------------------------


def _verdict(gate) -> str:
    if not gate:
        return "<p class='verdict unknown'>No decision: the gate did not run.</p>"
    blessed = bool(gate.get("blessed"))
    state, word = ("blessed", "Blessed") if blessed else ("not-blessed", "Not blessed")
    reason = str(gate.get("reason") or "")
    # The gate's reason usually opens with the verdict itself ("not blessed: ..."): say it once.
    reason = re.sub(rf"^\s*{word}\s*[:\-–]\s*", "", reason, flags=re.I)
    return f"<p class='verdict {state}'>{word}" + (f": {_e(reason)}" if reason else "") + "</p>"


def _decision_section(gate, version) -> str:
    parts = [_verdict(gate)]
    if not gate:
        return "\n".join(parts)
    if gate.get("blessed"):
        parts.append(
            f"<p>This model ({_e(version)}) may replace the serving model.</p>"
            if version
            else "<p>This model may replace the serving model.</p>"
        )
    checks = gate.get("checks") or []
    if checks:
        head = "".join(f"<th>{h}</th>" for h in ("kind", "check", "result", "detail"))
        body = "".join(
            f"<tr><td>{_e(c.get('kind'))}</td><td>{_e(c.get('name'))}</td>"
            f"<td class='{'passed' if c.get('passed') else 'failed'}'>"
            f"{'passed' if c.get('passed') else 'failed'}</td><td>{_e(c.get('detail'))}</td></tr>"
            for c in checks
        )
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(parts)


def _champion_section(gate, evaluation, version) -> str:
    if not gate:
        return _not_run("no gate result")
    champion = gate.get("champion")
    if not champion:
        return "<p>No champion yet: this is the first model.</p>"
    name = champion.get("version") or "champion"
    if champion.get("error"):
        return (
            f"<p class='failed'>Champion {_e(name)} could not be scored on this run's test split: "
            f"{_e(champion['error'])}</p>"
        )
    candidate = (evaluation or {}).get("metrics") or {}
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
        rows.append((metric, fmt(mine), fmt(other), difference, verdict))
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in (
            "metric",
            f"candidate {version}".strip(),
            f"champion {name}",
            "difference",
            "candidate is",
        )
    )
    body = "".join(
        f"<tr><td>{_e(m)}</td><td class='num'>{_e(a)}</td><td class='num'>{_e(b)}</td>"
        f"<td class='num'>{_e(d)}</td><td class='{_e(v)}'>{_e(v)}</td></tr>"
        for m, a, b, d, v in rows
    )
    parts = [
        "<p>Both models scored on this run's held-out split"
        + (f"; margin {_e(fmt(gate.get('margin')))}" if gate.get("margin") is not None else "")
        + ".</p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        _verdict(gate),
    ]
    return "\n".join(parts)


# --- the page -------------------------------------------------------------------------------


def _guarded(render: Callable[[], str]) -> str:
    """A section's HTML, or one line saying why it could not be drawn: a report is read after
    the run, and one malformed input should cost its section, not the whole page."""
    try:
        return render()
    except Exception as error:  # noqa: BLE001 - shown in the page and logged by the component
        return (
            f"<p class='{RENDER_ERROR_CLASS}'>This section could not be drawn: "
            f"{_e(type(error).__name__)}: {_e(error)}</p>"
        )


def render_run_report(
    model_name: str,
    version: str,
    run_id: str = "",
    dataset: dict | None = None,
    schema: dict | None = None,
    anomalies: list[dict] | None = None,
    contract_inferred: bool = False,
    data_bias_markdown: str | None = None,
    fairness_html: str | None = None,
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
        fairness_html: the fairness step's HTML page; its body is embedded.
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
        "fairness": lambda: _fairness_section(fairness_html, fairness_summary),
        "tuning": lambda: _tuning_section(best, trials),
        "metrics": lambda: _metrics_section(evaluation),
        "curves": lambda: _curves_section(evaluation),
        "champion": lambda: _champion_section(gate, evaluation, version),
    }
    nav = "".join(f"<a href='#{sid}'>{_e(heading)}</a>" for sid, heading in SECTIONS)
    sections = [
        f"<section id='{sid}'>\n<h2>{_e(heading)}</h2>\n{_guarded(bodies[sid])}\n</section>"
        for sid, heading in SECTIONS
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header>\n"
        f"<nav>{nav}</nav>\n<main>\n" + "\n".join(sections) + "\n</main>\n</body>\n</html>\n"
    )


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
