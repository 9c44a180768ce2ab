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
