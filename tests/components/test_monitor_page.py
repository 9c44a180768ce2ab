"""The monitor's HTML page opened in a real browser (Chromium through Playwright), offline, as
the run report's page is (tests/components/test_report.py): every section visible, every chart
loaded, no script error, nothing fetched from the network."""

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from components.monitor.logic import monitor
from tests.components.monitor_fixtures import (
    MODEL,
    NOW,
    champion,
    rows,
    write_labels,
    write_log,
)
from tests.components.test_report import browser, inspect_page  # noqa: F401 (fixture)

SECTIONS = [
    ("decision", "Decision"),
    ("window", "Window"),
    ("drift", "Drift"),
    ("performance", "Performance"),
    ("alerts", "Alerts"),
]


@pytest.fixture(scope="module")
def retrain_page(tmp_path_factory) -> Path:
    """A retrain result over two days of labelled traffic: three drifted features, the metric
    per day, an alert that was not sent, a category that looks like HTML."""
    root = tmp_path_factory.mktemp("monitor-page")
    champion(root / "models")
    frame = rows(1200, seed=2, shift=0.8, shift_x2=0.8, colors=["red", "red", "<b>blue</b>"])
    write_log(root / "log", frame.iloc[:600], NOW - timedelta(days=1, hours=2), name="day1")
    write_log(root / "log", frame.iloc[600:].reset_index(drop=True), NOW - timedelta(hours=2))
    write_labels(root / "labels", frame.iloc[600:].reset_index(drop=True))
    run = monitor(
        model_name=MODEL,
        model_store_uri=str(root / "models"),
        monitoring={"metric": "accuracy"},
        evaluation={},
        serving={"prediction_log": str(root / "log"), "labels": str(root / "labels")},
        data={},
        alerts={},
        state_uri=str(root / "state"),
        positive_class="yes",
        now=NOW,
        environ={},
    )
    assert run.decision == "retrain"
    return Path(run.html_path)


def test_the_page_shows_the_decision_its_reasons_and_the_alert(retrain_page):
    html = retrain_page.read_text()
    assert "<b>blue</b>" not in html  # a category is data, drawn in a chart, never markup
    assert "<li>3 features drifted (at least 3): x1 (PSI" in html
    assert "<p class='verdict not-blessed' id='decision-value'>retrain</p>" in html
    assert "monitor_retrain" in html  # the alert's outcome line


def test_the_page_renders_cleanly_in_chromium(browser, retrain_page, tmp_path):  # noqa: F811
    from matplotlib.image import imread

    shot = tmp_path / "monitor.png"
    found = inspect_page(browser, retrain_page, shot)
    assert found["headings"] == {sid: (heading, True) for sid, heading in SECTIONS}
    assert found["console_errors"] == []
    assert found["page_errors"] == []
    assert found["requests"] == []
    # A chart per drifted column (x1, x2, color and the outputs) and the metric per day.
    assert len(found["images"]) >= 4
    assert all(width > 0 for _, width in found["images"]), found["images"]
    pixels = (imread(shot)[..., :3] * 255).astype(np.uint32)
    colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])
    assert len(colours) > 200  # text, tables and charts, not a blank page
