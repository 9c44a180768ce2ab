"""The monitor's HTML page (components/common/templates/monitor.html.j2): the decision and its
reasons, the window, per feature drift, a chart per drifted column (the reference's share of each
bin or category against the window's) and the performance over time."""

import numpy as np
import pandas as pd

from components.common.charts import figure_png_data_uri, pyplot
from components.common.drift import category_counts
from components.common.pages import render_page
from components.common.profile import present_numbers, present_text
from components.common.schema import NUMERIC

# Categories drawn per chart: the reference's most frequent ones, then "others".
MAX_CHART_CATEGORIES = 12


def shares(summary: dict, values: pd.Series) -> tuple[list[str], list[float], list[float]]:
    """Bin or category labels, the reference's shares and the window's, for one column."""
    if summary["kind"] == NUMERIC:
        edges = summary["edges"]
        numbers = present_numbers(values)
        codes = np.searchsorted(np.asarray(edges, dtype=float), numbers, side="right")
        counts = np.bincount(codes, minlength=len(edges) + 1)
        window = (counts / max(numbers.size, 1)).tolist()
        bounds = ["-inf", *(f"{edge:.3g}" for edge in edges), "inf"]
        labels = [f"[{low}, {high})" for low, high in zip(bounds, bounds[1:], strict=False)]
        return labels, list(summary["shares"]), window
    text = present_text(values)
    observed, _ = category_counts(summary, text)
    window = (observed / max(len(text), 1)).tolist()
    labels = [*summary["shares"], "(others)"]
    reference = [*summary["shares"].values(), summary["other_share"]]
    if len(labels) > MAX_CHART_CATEGORIES + 1:
        cut = MAX_CHART_CATEGORIES
        labels = [*labels[:cut], "(others)"]
        reference = [*reference[:cut], float(sum(reference[cut:]))]
        window = [*window[:cut], float(sum(window[cut:]))]
    return labels, reference, window


def shares_chart(name: str, labels: list[str], reference: list[float], window: list[float]) -> str:
    """Grouped bars: the reference's and the window's share per bin; a PNG data URI."""
    plt = pyplot()
    x = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(max(4.5, 0.55 * len(labels) + 2), 3.2), dpi=100)
    axes.bar(x - 0.2, reference, 0.4, label="reference")
    axes.bar(x + 0.2, window, 0.4, label="window")
    axes.set_xticks(x, labels, rotation=35, ha="right", fontsize="small")
    axes.set_ylabel("share of rows")
    axes.set_title(name)
    axes.legend(fontsize="small")
    return figure_png_data_uri(figure)


def performance_chart(daily: list[dict], metric: str, reference: dict | None) -> str | None:
    """The metric per day with its interval (realized and estimated days as two series), and
    the reference's value and interval as a band; a PNG data URI, or None without any day."""
    if not daily:
        return None
    plt = pyplot()
    days = sorted({point["date"] for point in daily})
    position = {day: index for index, day in enumerate(days)}
    figure, axes = plt.subplots(figsize=(max(4.5, 0.6 * len(days) + 2), 3.2), dpi=100)
    for method, label in (("realized", "realized (labels)"), ("cbpe", "estimated (CBPE)")):
        points = [point for point in daily if point.get("method") == method]
        if not points:
            continue
        values = np.array([point["value"] for point in points], dtype=float)
        low = np.array([np.nan if p.get("low") is None else p["low"] for p in points])
        high = np.array([np.nan if p.get("high") is None else p["high"] for p in points])
        errors = np.nan_to_num(np.vstack([values - low, high - values]).clip(min=0))
        x = [position[point["date"]] for point in points]
        axes.errorbar(x, values, yerr=errors, marker="o", capsize=3, label=label)
    if reference and reference.get("value") is not None:
        axes.axhline(reference["value"], color="grey", linestyle="--", label="reference")
        if reference.get("low") is not None and reference.get("high") is not None:
            axes.axhspan(reference["low"], reference["high"], color="grey", alpha=0.15)
    axes.set_xticks(range(len(days)), days, rotation=30, ha="right")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per day (UTC)")
    axes.legend(fontsize="small")
    return figure_png_data_uri(figure)


def _number(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def monitor_page(result: dict, profile: dict, frame: pd.DataFrame) -> str:
    """The page for a monitor result (monitor.json's content)."""
    summaries = {**profile["features"], **profile.get("outputs", {})}
    charts = []
    for name in result["drifted"]:
        labels, reference, window = shares(summaries[name], frame[name])
        charts.append(
            {
                "name": name,
                "uri": shares_chart(name, labels, reference, window),
                "alt": f"{name}: the reference's and the window's share per bin",
            }
        )
    header = [
        "column",
        "kind",
        "rows",
        "PSI",
        "test",
        "p (BH)",
        "null-rate change",
        "unseen",
        "drifted",
    ]

    def rows(columns: list[dict]) -> list[list]:
        return [
            [
                column["name"],
                column["kind"],
                column["rows"],
                _number(column["psi"]),
                column["test"],
                "" if column["p_adjusted"] is None else f"{column['p_adjusted']:.3g}",
                _number(column["null_rate_change"]),
                _number(column["unseen_share"]),
                {"text": "yes", "class": "block"} if column["drifted"] else "no",
            ]
            for column in columns
        ]

    perf = result["performance"]
    measured = [
        [
            method,
            _number(entry.get("value")),
            _number(entry.get("low")),
            _number(entry.get("high")),
            entry.get("rows", ""),
            entry.get("reason", ""),
        ]
        for method in ("realized", "estimated")
        if (entry := perf.get(method))
    ]
    if perf.get("reference"):
        ref = perf["reference"]
        measured.insert(
            0,
            [
                "reference (held-out)",
                _number(ref.get("value")),
                _number(ref.get("low")),
                _number(ref.get("high")),
                ref.get("rows", ""),
                "",
            ],
        )
    model = result["model"]
    return render_page(
        "monitor.html.j2",
        title=f"Monitor: {model['name']} {model['version']}",
        subtitle=f"{result['window']['source']}: {result['window']['description']}",
        result=result,
        features={"header": header, "rows": rows(result["features"])},
        outputs={"header": header, "rows": rows(result["prediction_drift"])},
        charts=charts,
        performance={
            "header": ["", perf["metric"], "low", "high", "rows", "note"],
            "rows": measured,
        },
        performance_chart=performance_chart(
            perf.get("daily") or [], perf["metric"], perf.get("reference")
        ),
    )
