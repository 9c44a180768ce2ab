"""The monitor (components.monitor): each decision rule, bad input, the window's sources, the
watermark, labels and the label-free estimate, as `monitor()` returns and writes them."""

import json
from datetime import timedelta
from pathlib import Path

import pytest

from components.common.errors import PipelineInputError
from components.monitor import logic
from components.monitor.logic import monitor
from tests.components.monitor_fixtures import (
    MODEL,
    NOW,
    champion,
    rows,
    write_labels,
    write_log,
)


@pytest.fixture
def world(tmp_path):
    champion(tmp_path / "models")
    return tmp_path


def run(root: Path, now=NOW, **monitoring):
    return monitor(
        model_name=MODEL,
        model_store_uri=str(root / "models"),
        monitoring={"metric": "accuracy", **monitoring},
        evaluation={},
        serving={"prediction_log": str(root / "log"), "labels": str(root / "labels")},
        data={"source": str(root / "lake")},
        alerts={},
        state_uri=str(root / "state"),
        positive_class="yes",
        now=now,
        environ={},
    )


def test_a_window_like_the_training_data_is_ok_and_written_whole(world):
    write_log(world / "log", rows(1500, seed=2), NOW - timedelta(hours=3))
    result = run(world)
    assert result.decision == "ok", result.result["reasons"]
    assert result.result["drifted"] == []
    assert result.result["window"]["rows"] == 1500
    written = json.loads(Path(result.json_path).read_text())
    assert written["decision"] == "ok" and written["model"]["version"] == "v1"
    assert (
        "<p class='verdict blessed' id='decision-value'>ok</p>"
        in Path(result.html_path).read_text()
    )
    runs = list((world / "state" / MODEL / "runs").iterdir())
    assert [p.name for p in runs] == [Path(result.folder).name]  # no temporary folder left
    assert written["alerts"] == []


def test_only_the_champions_own_answers_are_judged(world):
    # The window spans a promotion: the previous version answered shifted traffic first. Its
    # answers are left out (their outputs are not this model's), and the window says how many.
    import pandas as pd

    write_log(world / "log", rows(1500, seed=2), NOW - timedelta(hours=3))
    write_log(world / "log", rows(800, seed=5, shift=2.0), NOW - timedelta(hours=4), name="old")
    old = next((world / "log").rglob("old.parquet"))
    pd.read_parquet(old).assign(model_version="v0").to_parquet(old, index=False)
    result = run(world)
    assert result.decision == "ok", result.result["reasons"]
    assert result.result["window"]["rows"] == 1500
    assert (
        "800 rows answered by other versions than v1 left out"
        in (result.result["window"]["description"])
    )


def test_one_drifted_feature_warns_naming_it_and_alerts(world, capsys):
    write_log(world / "log", rows(1500, seed=2, shift_x2=0.8), NOW - timedelta(hours=3))
    result = run(world)
    assert result.decision == "warn"
    assert result.result["drifted"] == ["x2"]
    assert any("x2 (PSI" in reason for reason in result.result["reasons"])
    assert len(result.result["alerts"]) == 1 and "monitor_warn" in result.result["alerts"][0]
    # The chart of the drifted feature is on the page.
    html = Path(result.html_path).read_text()
    assert "x2: the reference&#39;s and the window&#39;s share per bin" in html


def test_prediction_drift_alone_warns_and_can_be_switched_off(world):
    # x1 moves, and the predictions with it; drifted_features 0 leaves the outputs as the rule.
    write_log(world / "log", rows(1500, seed=2, shift=0.7), NOW - timedelta(hours=3))
    result = run(world, warn={"drifted_features": 0, "prediction_drift": True})
    assert result.decision == "warn"
    assert any("outputs drifted" in reason for reason in result.result["reasons"])
    assert "prediction" in result.result["drifted"]


def test_three_drifted_features_retrain(world):
    frame = rows(1500, seed=2, shift=0.8, shift_x2=0.8, colors=["red", "red", "blue"])
    write_log(world / "log", frame, NOW - timedelta(hours=3))
    result = run(world)
    assert result.decision == "retrain"
    assert {"x1", "x2", "color"} <= set(result.result["drifted"])
    assert "3 features drifted" in result.result["reasons"][0]
    assert "monitor_retrain" in result.result["alerts"][0]


def test_a_realized_metric_drop_with_labels_retrains_naming_the_metric(world):
    frame = rows(1500, seed=2)
    frame["y"] = frame["y"].map({"yes": "no", "no": "yes"})  # the label relation turned over
    write_log(world / "log", frame, NOW - timedelta(hours=3))
    write_labels(world / "labels", frame)
    result = run(world)
    performance = result.result["performance"]
    assert performance["realized"]["rows"] == 1500
    assert performance["realized"]["value"] < 0.5
    assert result.decision == "retrain"
    assert any(r.startswith("accuracy (realized)") for r in result.result["reasons"])
    assert (
        performance["daily"]
        and performance["daily"][0]["date"] == (NOW - timedelta(hours=3)).date().isoformat()
    )


def test_too_few_labels_give_no_realized_metric_and_the_estimate_decides(world):
    frame = rows(1500, seed=2)
    write_log(world / "log", frame, NOW - timedelta(hours=3))
    # Five labels, all wrong: as a realized metric they would retrain.
    labelled = frame.head(5).copy()
    labelled["y"] = labelled["y"].map({"yes": "no", "no": "yes"})
    write_labels(world / "labels", labelled)
    result = run(world, min_labels=100)
    performance = result.result["performance"]
    assert performance["realized"]["value"] is None
    assert performance["realized"]["rows"] == 5
    assert "fewer than monitoring.min_labels (100)" in performance["realized"]["reason"]
    assert result.decision == "ok", result.result["reasons"]
    assert any("accuracy (estimated)" in reason for reason in result.result["reasons"])
    # The same five labels count once the minimum allows them.
    assert run(world, min_labels=5, window_days=1).result["performance"]["realized"]["rows"] == 5


def test_without_labels_the_performance_is_estimated(world):
    write_log(world / "log", rows(1500, seed=2), NOW - timedelta(hours=3))
    result = run(world)
    performance = result.result["performance"]
    assert "realized" not in performance
    assert performance["estimated"]["value"] is not None
    assert performance["estimated"]["low"] <= performance["estimated"]["value"]
    assert result.result["window"]["labelled_rows"] == 0


def test_a_small_window_is_not_enough_data_never_an_alarm(world):
    write_log(world / "log", rows(50, seed=2, shift=3.0, shift_x2=3.0), NOW - timedelta(hours=3))
    result = run(world)
    assert result.decision == "ok"
    assert result.result["verdict"] == "not enough data"
    assert result.result["reasons"][0].startswith("not enough data: 50 rows")
    assert result.result["alerts"] == []


def test_a_feature_the_champion_does_not_have_is_one_line(world):
    write_log(world / "log", rows(500, seed=2), NOW - timedelta(hours=3))
    with pytest.raises(PipelineInputError, match="monitoring.features: 'age' is not a feature"):
        run(world, features=["x1", "age"])


def test_monitoring_only_the_named_features(world):
    write_log(world / "log", rows(1500, seed=2, shift_x2=0.8), NOW - timedelta(hours=3))
    result = run(world, features=["x1"])
    assert [f["name"] for f in result.result["features"]] == ["x1"]
    assert "x2" not in result.result["drifted"]


def test_a_log_without_a_feature_of_the_champion_names_it_and_the_log(world):
    write_log(world / "log", rows(500, seed=2).drop(columns=["x2"]), NOW - timedelta(hours=3))
    with pytest.raises(PipelineInputError, match=r"prediction log '.*log': column 'x2'"):
        run(world)
    assert not (world / "state" / MODEL / "runs").exists()


def test_an_empty_window_is_bad_input_naming_it(world):
    with pytest.raises(
        PipelineInputError, match=r"prediction log '.*log': no records of model 'churn'"
    ):
        run(world)


def test_a_truncated_log_file_is_reported_and_skipped(world):
    write_log(world / "log", rows(500, seed=2), NOW - timedelta(hours=3))
    day = world / "log" / f"model={MODEL}" / f"date={(NOW - timedelta(hours=3)).date()}"
    (day / "part-cut.parquet").write_bytes((day / "part-0.parquet").read_bytes()[:300])
    (day / ".part-x.parquet.tmp").write_bytes(b"PAR1")
    result = run(world)
    skipped = result.result["window"]["files_skipped"]
    assert any("part-cut.parquet: not readable as Parquet" in line for line in skipped)
    assert any(".part-x.parquet.tmp: a temporary file" in line for line in skipped)
    assert result.result["window"]["rows"] == 500


def test_the_watermark_takes_the_next_run_past_what_was_monitored(world):
    write_log(world / "log", rows(300, seed=2), NOW - timedelta(hours=3), name="first")
    assert run(world).result["window"]["rows"] == 300
    watermark = world / "state" / MODEL / "watermark.json"
    moved_to = json.loads(watermark.read_text())["last_record_time"]
    with pytest.raises(PipelineInputError, match="no records"):
        run(world, now=NOW + timedelta(hours=1))
    assert json.loads(watermark.read_text())["last_record_time"] == moved_to
    write_log(world / "log", rows(250, seed=3), NOW - timedelta(hours=1), name="second")
    second = run(world, now=NOW + timedelta(hours=2))
    assert second.result["window"]["rows"] == 250


def test_the_watermark_moves_only_after_the_results_are_written(world, monkeypatch):
    write_log(world / "log", rows(300, seed=2), NOW - timedelta(hours=3))

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logic, "write_run", full_disk)
    with pytest.raises(OSError):
        run(world)
    assert not (world / "state" / MODEL / "watermark.json").exists()


def test_window_days_reads_the_last_days_only(world):
    write_log(world / "log", rows(300, seed=2), NOW - timedelta(days=5), name="old")
    write_log(world / "log", rows(400, seed=3), NOW - timedelta(hours=5), name="new")
    result = run(world, window_days=1)
    assert result.result["window"]["rows"] == 400
    assert "the last 1 days" in result.result["window"]["description"]


def test_no_champion_is_one_line(tmp_path):
    with pytest.raises(PipelineInputError, match="model 'churn' has no champion"):
        run(tmp_path)


def test_lake_source_reads_files_added_since_training_and_scores_them(tmp_path):
    from components.common.lake_source import resolve_source
    from components.ingest.logic import read_source

    lake = tmp_path / "lake"
    (lake / "day=1").mkdir(parents=True)
    (lake / "day=2").mkdir(parents=True)
    old = lake / "day=1" / "a.parquet"
    rows(800, seed=5)[["x1", "x2", "y"]].to_parquet(old, index=False)
    # The watermark of the champion's training read, as ingest records it.
    _, watermark = read_source(resolve_source(str(lake)))
    champion(tmp_path / "models", data_watermark=watermark)
    new = lake / "day=2" / "b.parquet"
    rows(700, seed=6, shift_x2=1.0)[["x1", "x2", "y"]].to_parquet(new, index=False)
    (lake / "day=2" / "cut.parquet").write_bytes(new.read_bytes()[:200])
    result = run(tmp_path, source="lake")
    window = result.result["window"]
    assert any("cut.parquet: not readable as Parquet" in line for line in window["files_skipped"])
    assert window["source"] == "lake" and window["rows"] == 700 and window["labelled_rows"] == 700
    assert "x2" in result.result["drifted"]
    assert result.result["performance"]["realized"]["rows"] == 700
    # The lake is not the log: no watermark of the monitor's own.
    assert not (tmp_path / "state" / MODEL / "watermark.json").exists()


def test_an_undelivered_alert_is_a_report_entry_never_a_failure(world):
    import socket

    with socket.socket() as closed:  # a port nothing listens on once this closes
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    write_log(world / "log", rows(1500, seed=2, shift_x2=0.8), NOW - timedelta(hours=3))
    result = monitor(
        model_name=MODEL,
        model_store_uri=str(world / "models"),
        monitoring={"metric": "accuracy"},
        evaluation={},
        serving={"prediction_log": str(world / "log"), "labels": str(world / "labels")},
        data={},
        alerts={"webhook_url": f"http://127.0.0.1:{port}/hook", "retries": 0},
        state_uri=str(world / "state"),
        now=NOW,
        environ={},
    )
    assert result.decision == "warn"
    [line] = result.result["alerts"]
    assert "NOT delivered to http://127.0.0.1" in line
    assert (world / "state" / MODEL / "watermark.json").exists()
