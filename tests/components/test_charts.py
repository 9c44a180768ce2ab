"""The one chart helper the report, bias and tune steps share."""

import base64

import pandas as pd

from components.common.charts import figure_png_data_uri, pyplot


def test_a_figure_becomes_a_png_data_uri_and_is_closed():
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(2, 1.5), dpi=50)
    axes.plot([0, 1], [1, 0])
    before = len(plt.get_fignums())
    uri = figure_png_data_uri(figure)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix) :]).startswith(b"\x89PNG\r\n\x1a\n")
    assert len(plt.get_fignums()) == before - 1  # closed, not left open


def test_the_tune_report_draws_its_chart_with_it():
    from components.tune.logic import tune_report

    trials = pd.DataFrame(
        {
            "trial": [0, 1, 2],
            "family": ["rf", "rf", "lr"],
            "score": [0.7, 0.75, 0.72],
            "status": ["done", "stopped", "done"],
            "seconds": [1.0, 2.0, 3.0],
            "error": [None, None, None],
        }
    )
    best = {
        "num_trials": 3,
        "search": "random",
        "scheduler": "asha",
        "ray": "local",
        "nodes": 1,
        "seconds": 3,
        "family": "lr",
        "params": {"C": 1.0},
        "metric": "roc_auc",
        "cv_score": 0.72,
        "cv_std": 0.01,
        "cv_folds": 3,
    }
    report = tune_report(best, trials)
    assert report.count("](data:image/png;base64,iVBOR") == 1
