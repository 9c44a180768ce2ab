"""The bias reports: Markdown for the data step, and for the model a self-contained HTML page
(tables, and a bar chart of selection rate and TPR by group as a PNG data URI) that the Kubeflow
dashboard renders, plus the same tables in Markdown for the local run's report.md."""

import html
import math

import pandas as pd

from components.bias.gate import GateResult
from components.bias.metrics import GroupResult
from components.common.charts import figure_png_data_uri, pyplot
from components.common.vocabulary import SUMMARY_METRICS

RATE_NAMES = {
    "rows": "rows",
    "positives": "positives",
    "selection_rate": "selection rate",
    "accuracy": "accuracy",
    "precision": "precision",
    "tpr": "TPR (recall)",
    "fpr": "FPR",
    "mae": "MAE",
    "mean_prediction": "mean prediction",
}
CHARTED = ("selection_rate", "tpr")


def fmt(value, digits: int = 3) -> str:
    """A number for a table; "n/a" for a missing or undefined one (never "nan")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _with_ci(row: pd.Series, rate: str) -> str:
    text = fmt(row[rate])
    low, high = row.get(f"{rate}_low"), row.get(f"{rate}_high")
    if text != "n/a" and low is not None and not pd.isna(low) and not pd.isna(high):
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def group_rows(result: GroupResult) -> tuple[list[str], list[list[str]]]:
    """The per-group table as header and text rows, rates with their 95% interval."""
    table = result.table
    rates = [c for c in RATE_NAMES if c in table.columns]
    header = ["group", *(RATE_NAMES[r] for r in rates), "small"]
    rows = []
    for group, row in table.iterrows():
        cells = [str(group)]
        for rate in rates:
            cells.append(
                str(int(row[rate])) if rate in ("rows", "positives") else _with_ci(row, rate)
            )
        cells.append("small" if row["small"] else "")
        rows.append(cells)
    return header, rows


def summary_rows(
    result: GroupResult, before: GroupResult | None = None
) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "value", "95% interval", "groups compared"]
    if before is not None:
        header = [
            "metric",
            "before mitigation",
            "after",
            "change",
            "95% interval",
            "groups compared",
        ]
    rows = []
    for name in SUMMARY_METRICS:
        summary = result.summaries.get(name)
        if summary is None:
            continue
        value = (
            fmt(summary.value) if summary.value is not None else f"not computable: {summary.reason}"
        )
        ci = f"{summary.ci[0]:.3f} to {summary.ci[1]:.3f}" if summary.ci else ""
        groups = ""
        if summary.low and summary.high and summary.low[1] == summary.high[1]:
            groups = f"{summary.rate}: {summary.low[1]:.3f} in every group compared"
        elif summary.low and summary.high:
            groups = (
                f"{summary.rate}: {summary.low[0]} {summary.low[1]:.3f}, "
                f"{summary.high[0]} {summary.high[1]:.3f}"
            )
        if name == "disparate_impact_ratio" and summary.value is not None:
            groups += "; four-fifths rule " + ("met" if summary.value >= 0.8 else "broken")
        if before is None:
            rows.append([name, value, ci, groups])
            continue
        previous = before.summaries.get(name)
        old = previous.value if previous else None
        change = fmt(summary.value - old) if (old is not None and summary.value is not None) else ""
        if change and not change.startswith("-"):
            change = "+" + change
        rows.append([name, fmt(old), value, change, ci, groups])
    return header, rows


def gate_rows(gate: GateResult) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "column", "threshold", "blocking", "value", "result", "detail"]
    rows = [
        [
            f.threshold.metric,
            f.column,
            f"{f.threshold.sign} {f.threshold.threshold:g}",
            "yes" if f.threshold.blocking else "no (warning)",
            fmt(f.value),
            f.status,
            f.detail,
        ]
        for f in gate.findings
    ]
    return header, rows


# --- Markdown ----------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def data_markdown(tables: dict[str, pd.DataFrame], problems: list[str], min_group_size: int) -> str:
    """The data step's report: per set, group sizes, base rate and missing-value rate."""
    parts = ["## Data: groups and base rates\n"]
    parts.append(
        "Base rate: the share of labelled rows with the favourable label (the mean target for "
        "regression). Missing: the share of the group's rows with a missing value. "
        f"Groups under {min_group_size} rows are marked small.\n"
    )
    for name, table in tables.items():
        parts.append(f"### {name}\n")
        rows = [
            [
                str(r.group),
                str(int(r.rows)),
                fmt(float(r.share)),
                fmt(float(r.base_rate)),
                fmt(float(r.missing_rate)),
                "small" if r.small else "",
            ]
            for r in table.itertuples()
        ]
        header = ["group", "rows", "share", "base rate", "missing", "small"]
        parts.append(markdown_table(header, rows))
    if problems:
        parts.append("### Not computed\n")
        parts += [f"- {p}" for p in problems]
        parts.append("")
    return "\n".join(parts) + "\n"


def model_markdown(
    results: dict[str, GroupResult],
    gate: GateResult,
    problems: list[str],
    mitigation: str = "none",
    before: dict[str, GroupResult] | None = None,
    accuracy: tuple[float, float] | None = None,
) -> str:
    """The fairness step's tables in Markdown (the local run's report.md)."""
    parts = ["## Fairness on the held-out rows\n", f"Gate: **{gate.reason}**\n"]
    if gate.findings:
        parts.append(markdown_table(*gate_rows(gate)))
    parts += _mitigation_lines(mitigation, accuracy)
    for name, result in results.items():
        parts.append(f"### {name}\n")
        parts.append(markdown_table(*summary_rows(result, (before or {}).get(name))))
        parts.append(markdown_table(*group_rows(result)))
        parts += [f"- {note}" for note in result.notes]
        parts.append("")
    if problems:
        parts.append("### Not computed\n")
        parts += [f"- {p}" for p in problems]
    return "\n".join(parts) + "\n"


def _mitigation_lines(mitigation: str, accuracy: tuple[float, float] | None) -> list[str]:
    if mitigation == "none":
        return ["Mitigation: none (`bias.mitigation`).\n"]
    lines = [f"Mitigation: `{mitigation}`; each metric is shown before and after.\n"]
    if accuracy:
        old, new = accuracy
        lines.append(f"Accuracy before {old:.4f}, after {new:.4f}: a cost of {old - new:+.4f}.\n")
    return lines


# --- HTML --------------------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; }
.passed { color: #17632a; } .blocked { color: #a01010; }
.note { color: #555; font-size: 0.9em; }
"""


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def bar_chart(result: GroupResult, title: str) -> str | None:
    """Selection rate and TPR by group as a PNG data URI, with the bootstrap intervals as error
    bars; None when the table has neither rate."""
    import numpy as np

    plt = pyplot()
    table = result.table
    rates = [r for r in CHARTED if r in table.columns]
    if not rates:
        return None
    groups = [f"{g}\n(n={int(n)})" for g, n in zip(table.index, table["rows"], strict=True)]
    x = np.arange(len(groups))
    width = 0.8 / len(rates)
    figure, axes = plt.subplots(figsize=(max(4.5, 0.9 * len(groups) + 2), 3.2), dpi=100)
    for i, rate in enumerate(rates):
        values = table[rate].to_numpy(dtype=float)
        errors = None
        if f"{rate}_low" in table:
            low = table[f"{rate}_low"].to_numpy(dtype=float)
            high = table[f"{rate}_high"].to_numpy(dtype=float)
            errors = np.nan_to_num(np.vstack([values - low, high - values]).clip(min=0))
        axes.bar(
            x + (i - (len(rates) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            yerr=errors,
            capsize=3,
            label=RATE_NAMES[rate],
        )
    axes.set_xticks(
        x,
        groups,
        rotation=20 if len(groups) > 4 else 0,
        ha="right" if len(groups) > 4 else "center",
    )
    axes.set_ylim(0, 1.25)
    axes.set_title(title)
    axes.legend(loc="upper center", ncols=len(rates), fontsize="small")
    return figure_png_data_uri(figure)


def model_html(
    results: dict[str, GroupResult],
    gate: GateResult,
    problems: list[str],
    mitigation: str = "none",
    before: dict[str, GroupResult] | None = None,
    accuracy: tuple[float, float] | None = None,
    title: str = "Fairness report",
) -> str:
    """A self-contained HTML page: the gate, then per set its summary metrics, its per-group
    table (with 95% bootstrap intervals) and a bar chart of selection rate and TPR."""
    state = "passed" if gate.passed else "blocked"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='{state}'><b>Gate: {html.escape(gate.reason)}</b></p>",
    ]
    if gate.findings:
        parts.append(html_table(*gate_rows(gate)))
    for line in _mitigation_lines(mitigation, accuracy):
        parts.append(f"<p>{html.escape(line.strip()).replace('`', '')}</p>")
    parts.append(
        "<p class='note'>Numbers in brackets are 95% bootstrap intervals: a small group's rate is "
        "an estimate, not an exact value. Small groups are shown but left out of the summary "
        "metrics.</p>"
    )
    for name, result in results.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(html_table(*summary_rows(result, (before or {}).get(name))))
        parts.append(html_table(*group_rows(result)))
        chart = bar_chart(result, f"{name}: selection rate and TPR by group")
        if chart:
            parts.append(f"<img alt='selection rate and TPR by {html.escape(name)}' src='{chart}'>")
        parts += [f"<p class='note'>{html.escape(note)}</p>" for note in result.notes]
    if problems:
        parts.append("<h2>Not computed</h2><ul>")
        parts += [f"<li>{html.escape(p)}</li>" for p in problems]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
