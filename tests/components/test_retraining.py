"""The retraining plan (components.common.retraining): full or incremental, what an incremental run
reads (the lake's new files, its window, the labelled log), its fallbacks and refusals; the mode a
monitor's `retrain` starts; and ingest's read of a plan, whose bytes are counted."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from components.common.errors import PipelineInputError
from components.common.lake_files import fingerprints
from components.common.lake_source import resolve_source
from components.common.registry import ModelRegistry
from components.common.retraining import (
    incrementals_in_a_row,
    labelled_log_rows,
    mode_after_monitor,
    plan_training,
    training_lineage,
)
from components.ingest.logic import read_planned
from tests.components.monitor_fixtures import MODEL, rows, write_labels, write_log

SCHEMA = {
    "target": "y",
    "task": "classification",
    "classes": ["no", "yes"],
    "features": [{"name": "x1", "kind": "numeric"}, {"name": "x2", "kind": "numeric"}],
}


def _partition(lake: Path, month: int, seed: int) -> Path:
    folder = lake / f"month={month:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    rows(200, seed=seed)[["x1", "x2", "y"]].to_parquet(folder / "part-0.parquet", index=False)
    return folder / "part-0.parquet"


@pytest.fixture
def world(tmp_path):
    """A lake of three monthly partitions and a champion trained on all of them."""
    lake = tmp_path / "lake"
    for month in (1, 2, 3):
        _partition(lake, month, seed=month)
    return tmp_path, lake


def _champion(
    tmp_path: Path,
    lake: Path,
    family: str = "sgd_linear",
    watermark: bool = True,
    mitigation: str = "none",
    parent_training: dict | None = None,
) -> ModelRegistry:
    registry = ModelRegistry(str(tmp_path / "models"), MODEL)
    train = rows(300, seed=0)
    model = LogisticRegression().fit(train[["x1", "x2"]], train["y"])
    data = {"watermark": {"source_uri": str(lake), "files": fingerprints(*_fs(lake))}}
    metadata = {
        "schema": SCHEMA,
        "data": data if watermark else {},
        "tuning": {"family": family, "params": {"alpha": 0.01}},
        "config": {"bias": {"mitigation": mitigation}},
        "threshold": {"value": 0.5, "rule": "fixed"},
    }
    if parent_training:
        metadata["training"] = parent_training
    version = registry.register(model, metadata)
    registry.promote(version.version)
    return registry


def _fs(lake: Path):
    import fsspec

    return fsspec.filesystem("file"), str(lake)


def _plan(tmp_path, lake, mode="incremental", retraining=None, serving=None, **kw):
    return plan_training(
        str(tmp_path / "models"),
        MODEL,
        mode,
        kw.pop("trigger", "manual"),
        retraining or {},
        {"source": str(lake)},
        serving or {},
        **kw,
    )


def test_a_full_run_reads_what_its_own_watermark_leaves(world):
    tmp_path, lake = world
    plan = _plan(tmp_path, lake, mode="full", since_watermark='{"files": {}}')
    assert plan["mode"] == "full" and plan["since_watermark"] == '{"files": {}}'
    assert plan["reason"] == "full retraining: all the data, with a search"


def test_incremental_without_a_champion_is_one_line_naming_the_model(world):
    tmp_path, lake = world
    with pytest.raises(PipelineInputError, match=f"model '{MODEL}' has no champion") as error:
        _plan(tmp_path, lake)
    assert "\n" not in str(error.value)


def test_nothing_new_is_a_skip_that_says_so(world):
    tmp_path, lake = world
    _champion(tmp_path, lake)
    plan = _plan(tmp_path, lake)
    assert plan["mode"] == "skip" and plan["parent"] == "v1"
    assert "nothing new since champion v1's training watermark (3 lake files" in plan["reason"]


def test_partial_fit_reads_only_the_new_partition_and_records_what_was_added(world):
    tmp_path, lake = world
    _champion(tmp_path, lake)
    _partition(lake, 4, seed=4)
    plan = _plan(tmp_path, lake, trigger="monitor")
    assert plan["mode"] == "incremental" and plan["rule"] == "partial_fit"
    assert plan["parent"] == "v1" and plan["partitions_added"] == ["month=04"]
    assert plan["parent_tuning"]["params"] == {"alpha": 0.01}
    assert plan["trigger"] == "monitor"
    # ingest, given this plan, reads the one new file: its bytes, not the lake's.
    frame, watermark, read = read_planned(resolve_source(str(lake)), plan, None, None, None)
    new_file = lake / "month=04" / "part-0.parquet"
    assert read == {"files_read": 1, "bytes_read": new_file.stat().st_size, "log_rows": 0}
    assert len(frame) == 200
    # and records the whole lake as the new version's watermark, for the next update.
    assert sorted(watermark["files"]) == [f"month={m:02d}/part-0.parquet" for m in (1, 2, 3, 4)]


def test_a_family_that_refits_reads_its_window_of_partitions(world):
    tmp_path, lake = world
    _champion(tmp_path, lake, family="hist_gradient_boosting")
    _partition(lake, 4, seed=4)
    plan = _plan(tmp_path, lake, retraining={"window_partitions": 2})
    assert plan["rule"] == "refit_window" and plan["window"] == ["month=03", "month=04"]
    frame, _, read = read_planned(resolve_source(str(lake)), plan, None, None, None)
    assert read["files_read"] == 2 and len(frame) == 400


def test_a_family_that_cannot_update_falls_back_as_configured(world):
    tmp_path, lake = world
    _champion(tmp_path, lake, family="logistic_regression")
    _partition(lake, 4, seed=4)
    plan = _plan(tmp_path, lake, retraining={"window_partitions": 0})
    assert plan["mode"] == "full" and plan["requested"] == "incremental"
    assert "instead of incremental" in plan["reason"]
    assert "retraining.window_partitions is 0" in plan["reason"]
    with pytest.raises(PipelineInputError, match="retraining.fallback is refuse"):
        _plan(tmp_path, lake, retraining={"window_partitions": 0, "fallback": "refuse"})


def test_a_mitigated_champion_and_a_champion_without_a_lake_are_retrained_in_full(world):
    tmp_path, lake = world
    _champion(tmp_path, lake, mitigation="reweighing")
    _partition(lake, 4, seed=4)
    assert "mitigated (reweighing)" in _plan(tmp_path, lake)["reason"]
    other = tmp_path / "other"
    other.mkdir()
    _champion(other, lake, watermark=False)
    plan = _plan(other, lake)
    assert plan["mode"] == "full" and "not a lake" in plan["reason"]


def test_after_full_every_incrementals_in_a_row_the_next_is_full(world):
    tmp_path, lake = world
    registry = _champion(tmp_path, lake)
    for _ in range(2):  # v2, v3: each an incremental update of the one before
        parent = registry.aliases()["champion"]
        _champion(tmp_path, lake, parent_training={"mode": "incremental", "parent": parent})
    assert incrementals_in_a_row(registry, "v3") == 2
    _partition(lake, 4, seed=4)
    assert _plan(tmp_path, lake, retraining={"full_every": 3})["mode"] == "incremental"
    plan = _plan(tmp_path, lake, retraining={"full_every": 2})
    assert plan["mode"] == "full" and "2 incremental versions in a row" in plan["reason"]


def test_the_labelled_log_is_new_data_even_when_the_lake_has_none(world):
    tmp_path, lake = world
    registry = _champion(tmp_path, lake)
    created = datetime.fromisoformat(registry.metadata("v1")["created"])
    log, labels = tmp_path / "log", tmp_path / "labels"
    answered = rows(150, seed=11)
    write_log(log, rows(50, seed=10), created - timedelta(hours=1), name="before")
    write_log(log, answered, created + timedelta(seconds=1), name="after")
    write_labels(labels, answered.head(120), name="after")
    serving = {"prediction_log": str(log), "labels": str(labels)}
    plan = _plan(tmp_path, lake, serving=serving)
    # Only rows answered after the champion was registered, and only those with a label.
    assert plan["mode"] == "incremental" and plan["log_rows"] == 120
    assert plan["read_lake"] is False and plan["watermark"]["files"]
    frame, watermark, read = read_planned(resolve_source(str(lake)), plan, None, None, None)
    assert read == {"files_read": 0, "bytes_read": 0, "log_rows": 120}
    assert list(frame.columns) == ["x1", "x2", "color", "y"]
    assert frame["y"].tolist() == answered["y"].head(120).tolist()
    assert watermark == plan["watermark"]


def test_a_logged_feature_named_label_gets_its_name_back(tmp_path):
    log, labels = tmp_path / "log", tmp_path / "labels"
    answered = rows(5, seed=3).rename(columns={"x2": "feature_label"})
    write_log(log, answered, datetime(2026, 12, 1, tzinfo=UTC))
    write_labels(labels, answered)
    got = labelled_log_rows(
        {"uri": str(log), "labels": str(labels), "since": ""}, MODEL, target="outcome"
    )
    assert list(got.columns) == ["x1", "label", "color", "outcome"]
    assert len(got) == 5


def test_the_mode_a_retrain_decision_starts():
    changed = {"decision": "retrain", "relation_changed": True}
    assert mode_after_monitor(changed, {})[0] == "full"
    assert mode_after_monitor(changed, {"full_on_relation_change": False})[0] == "incremental"
    drifted = {"decision": "retrain", "relation_changed": False}
    assert mode_after_monitor(drifted, {}) == ("incremental", "retraining.mode is incremental")
    assert mode_after_monitor(drifted, {"mode": "full"})[0] == "full"
    assert mode_after_monitor({"decision": "warn"}, {})[0] == ""
    with pytest.raises(PipelineInputError, match="retraining.mode"):
        mode_after_monitor(drifted, {"mode": "incremenal"})


def test_the_lineage_names_mode_trigger_parent_and_partitions(world):
    tmp_path, lake = world
    _champion(tmp_path, lake)
    _partition(lake, 4, seed=4)
    plan = _plan(tmp_path, lake, trigger="schedule")
    lineage = training_lineage(plan, {"rule": "partial_fit", "rows": 150})
    assert json.loads(json.dumps(lineage))["parent"] == "v1"
    assert lineage["mode"] == "incremental" and lineage["trigger"] == "schedule"
    assert lineage["partitions_added"] == ["month=04"] and lineage["update"]["rows"] == 150


def test_an_unknown_trigger_or_mode_is_refused(world):
    tmp_path, lake = world
    with pytest.raises(PipelineInputError, match="trigger: 'cron'"):
        _plan(tmp_path, lake, mode="full", trigger="cron")
    with pytest.raises(PipelineInputError, match="mode: 'partial'"):
        _plan(tmp_path, lake, mode="partial")
