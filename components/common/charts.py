"""Charts in the run's pages: matplotlib on the Agg backend (no display), each figure turned into
a PNG data URI (so a page needs no file next to it) and closed (so that drawing many pages does
not pile up open figures). matplotlib is imported only when a chart is drawn."""

import base64
import io


def pyplot():
    """matplotlib's pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(figure) -> bytes:
    """The figure as PNG bytes (laid out tight); the figure is closed."""
    plt = pyplot()
    try:
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def figure_png_data_uri(figure) -> str:
    """The figure as a `data:image/png;base64,...` URI; the figure is closed."""
    return "data:image/png;base64," + base64.b64encode(figure_png(figure)).decode("ascii")


def group_rates_chart(
    groups: list[str], rows: list[int], series: list[dict], title: str
) -> str | None:
    """Rates by group as grouped bars (the fairness step's selection rate and TPR), with the
    bootstrap intervals as error bars; a PNG data URI, or None without any series.

    Args:
        groups: the group labels; `rows` their sizes, shown under each label.
        series: each {"name", "value": [rate per group], "low": [bound] or None, "high": ...},
            NaN for a rate that is not defined (drawn as 0, without an error bar).
        title: the chart's title.
    """
    if not series:
        return None
    import numpy as np

    plt = pyplot()
    labels = [f"{g}\n(n={int(n)})" for g, n in zip(groups, rows, strict=True)]
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    figure, axes = plt.subplots(figsize=(max(4.5, 0.9 * len(labels) + 2), 3.2), dpi=100)
    for i, entry in enumerate(series):
        values = np.asarray(entry["value"], dtype=float)
        errors = None
        if entry.get("low") is not None and entry.get("high") is not None:
            low = np.asarray(entry["low"], dtype=float)
            high = np.asarray(entry["high"], dtype=float)
            errors = np.nan_to_num(np.vstack([values - low, high - values]).clip(min=0))
        axes.bar(
            x + (i - (len(series) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            yerr=errors,
            capsize=3,
            label=entry["name"],
        )
    axes.set_xticks(
        x,
        labels,
        rotation=20 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    axes.set_ylim(0, 1.25)
    axes.set_title(title)
    axes.legend(loc="upper center", ncols=len(series), fontsize="small")
    return figure_png_data_uri(figure)
