"""The bias reports: Markdown for the data step; for the model, its report data (JSON: the gate,
the tables, the numbers of a bar chart of selection rate and TPR by group), the self-contained
HTML page rendered from it (components.common.pages) that the Kubeflow dashboard shows, and the
same tables in Markdown for the local run's report.md. The run report renders its fairness
section from the same data, never from this page's HTML."""

import math

import pandas as pd

from components.bias.gate import GateResult
from components.bias.metrics import GroupResult
from components.common.pages import fairness_context, render_page
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


# --- the report's data, and its HTML page ---------------------------------------------------


def _bounds(table: pd.DataFrame, column: str) -> list | None:
    if column not in table:
        return None
    return [None if pd.isna(v) else float(v) for v in table[column]]


def chart_data(result: GroupResult, name: str) -> dict | None:
    """The numbers of a set's chart: selection rate and TPR by group with their intervals;
    None when the table has neither rate."""
    table = result.table
    rates = [r for r in CHARTED if r in table.columns]
    if not rates:
        return None
    return {
        "title": f"{name}: selection rate and TPR by group",
        "alt": f"selection rate and TPR by {name}",
        "groups": [str(g) for g in table.index],
        "rows": [int(n) for n in table["rows"]],
        "series": [
            {
                "name": RATE_NAMES[rate],
                "value": _bounds(table, rate),
                "low": _bounds(table, f"{rate}_low"),
                "high": _bounds(table, f"{rate}_high"),
            }
            for rate in rates
        ],
    }


def _table(header: list[str], rows: list[list[str]]) -> dict:
    return {"header": header, "rows": rows}


def fairness_data(
    results: dict[str, GroupResult],
    gate: GateResult,
    problems: list[str],
    mitigation: str = "none",
    before: dict[str, GroupResult] | None = None,
    accuracy: tuple[float, float] | None = None,
    title: str = "Fairness report",
) -> dict:
    """What the fairness page shows, as data (JSON): the gate and its findings, the mitigation
    lines, per set its summary and per-group tables (text, rates with their 95% intervals), the
    numbers of its chart and its notes, and what could not be computed. The fairness page and
    the run report's fairness section both render it (components.common.pages)."""
    return {
        "title": title,
        "gate": {
            "passed": bool(gate.passed),
            "reason": gate.reason,
            "findings": _table(*gate_rows(gate)),
        },
        "mitigation": [
            line.strip().replace("`", "") for line in _mitigation_lines(mitigation, accuracy)
        ],
        "sets": [
            {
                "name": name,
                "summary": _table(*summary_rows(result, (before or {}).get(name))),
                "groups": _table(*group_rows(result)),
                "chart": chart_data(result, name),
                "notes": list(result.notes),
            }
            for name, result in results.items()
        ],
        "problems": list(problems),
    }


def data_html(data: dict) -> str:
    """The fairness step's own page (its `report` artifact), from its report data."""
    return render_page(
        "fairness.html.j2", title=data["title"], subtitle="", fairness=fairness_context(data)
    )
