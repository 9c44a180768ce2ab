"""Labels that arrive later (components.common.labels): reading the labels lake, skipping a file
cut short, and joining labels to the prediction log on (request_id, row)."""

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from components.common.labels import attach_labels, read_labels
from components.common.prediction_log import PredictionLog, read_prediction_log

MODEL = "parole"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def write_log(uri) -> None:
    """Request "a" answered two rows, "b" one."""
    with PredictionLog(str(uri), MODEL, clock=lambda: NOW) as log:
        log.record("a", "v1", {"age": [30, 40]}, [0, 1], [[0.6, 0.4], [0.2, 0.8]], [0, 1])
        log.record("b", "v1", {"age": [50]}, [1], [[0.3, 0.7]], [0, 1])


def write_labels_file(folder, name: str, request_ids, rows, labels) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "request_id": pa.array(request_ids, pa.string()),
            "row": pa.array(rows, pa.int64()),
            "label": pa.array(labels, pa.int64()),
            "time": pa.array([NOW] * len(rows), pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, folder / name)


def test_read_labels_of_an_empty_lake_is_an_empty_frame_with_the_columns(tmp_path):
    frame, skipped = read_labels(str(tmp_path / "labels"), MODEL)
    assert list(frame.columns) == ["request_id", "row", "label", "time"]
    assert frame.empty and skipped == []


def test_a_truncated_labels_file_is_skipped_and_named(tmp_path):
    day = tmp_path / "labels" / f"model={MODEL}" / "date=2026-03-01"
    write_labels_file(day, "part-1.parquet", ["a"], [1], [1])
    (day / "part-2.parquet").write_bytes((day / "part-1.parquet").read_bytes()[:40])
    frame, skipped = read_labels(str(tmp_path / "labels"), MODEL)
    assert frame[["request_id", "row", "label"]].values.tolist() == [["a", 1, 1]]
    assert len(skipped) == 1 and "part-2.parquet" in skipped[0] and "skipped" in skipped[0]


def test_attach_labels_joins_on_request_id_and_row_and_keeps_the_class_type(tmp_path):
    write_log(tmp_path / "log")
    write_labels_file(
        tmp_path / "labels" / f"model={MODEL}" / "date=2026-03-01",
        "part-1.parquet",
        ["a", "b"],
        [1, 0],
        [1, 0],
    )
    log, _ = read_prediction_log(str(tmp_path / "log"), MODEL)
    labels, _ = read_labels(str(tmp_path / "labels"), MODEL)
    joined = attach_labels(log, labels)
    assert len(joined) == len(log)
    keys = zip(joined["request_id"], joined["row"], strict=True)
    by_row = dict(zip(keys, joined["label"], strict=True))
    assert by_row == {("a", 0): None, ("a", 1): 1, ("b", 0): 0}
    assert all(type(v) is int for v in by_row.values() if v is not None)
