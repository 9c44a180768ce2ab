"""Labels that arrive later (components.common.labels): each kind of invalid pair, the policy
(refuse the whole input, or skip_invalid), the labels lake (types, atomic appends, files cut
short), labels files, and joining labels to the prediction log on (request_id, row)."""

from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.errors import PipelineInputError
from components.common.labels import (
    ALREADY_LABELLED,
    AMBIGUOUS_ROW,
    BAD_ROW,
    DUPLICATE_IN_INPUT,
    NO_LABEL,
    NO_REQUEST_ID,
    NOT_A_NUMBER,
    REUSED_REQUEST_ID,
    UNKNOWN_REQUEST_ID,
    UNKNOWN_ROW,
    UNKNOWN_VERSION,
    WRONG_CLASS,
    LabelsLakeUnavailable,
    add_labels,
    attach_labels,
    read_labels,
    read_labels_file,
)
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


# Checking and appending (add_labels).

CLASSES = {"task": "classification", "classes": [0, 1]}
REGRESSION = {"task": "regression"}


def pairs(*rows) -> pd.DataFrame:
    """(request_id, row, label) tuples as a labels file gives them (row None: left out)."""
    return pd.DataFrame(rows, columns=["request_id", "row", "label"], dtype=object)


def add(tmp_path, given, schemas=None, **options):
    schemas = {"v1": CLASSES} if schemas is None else schemas
    return add_labels(
        given,
        labels_uri=str(tmp_path / "labels"),
        log_uri=str(tmp_path / "log"),
        model_name=MODEL,
        schema_for=schemas.get,
        clock=lambda: NOW,
        **options,
    )


def stored(tmp_path) -> list:
    frame, skipped = read_labels(str(tmp_path / "labels"), MODEL)
    assert skipped == []
    return sorted(zip(frame["request_id"], frame["row"], frame["label"], strict=True))


@pytest.fixture
def logged(tmp_path):
    write_log(tmp_path / "log")
    return tmp_path


@pytest.mark.parametrize(
    ("given", "kind", "example"),
    [
        (("ghost", 0, 1), UNKNOWN_REQUEST_ID, "ghost#0"),
        (("a", 2, 1), UNKNOWN_ROW, "a#2"),
        (("a", None, 1), AMBIGUOUS_ROW, "a"),
        (("b", 0, 2), WRONG_CLASS, "b#0"),
        (("b", 0, "one"), WRONG_CLASS, "b#0"),
        (("b", 0, ""), NO_LABEL, "b#0"),
        (("b", "1.5", 1), BAD_ROW, "b"),
        (("b", -1, 1), BAD_ROW, "b"),
        ((None, 0, 1), NO_REQUEST_ID, "pair 2"),
    ],
)
def test_an_invalid_pair_refuses_the_whole_input_naming_its_kind(logged, given, kind, example):
    outcome = add(logged, pairs(("a", 1, 1), given))
    assert outcome.refused == {kind: 1}
    assert outcome.examples == {kind: [example]}
    assert outcome.appended == 0 and outcome.path is None
    assert "nothing written" in outcome.line() and "1 valid one" in outcome.line()
    assert not (logged / "labels").exists()


def test_a_row_left_out_means_row_0_of_a_one_row_request(logged):
    outcome = add(logged, pairs(("b", None, 1), ("a", "1", "0")))
    assert (outcome.appended, outcome.refused) == (2, {})
    assert stored(logged) == [("a", 1, 0), ("b", 0, 1)]


def test_a_pair_given_twice_is_refused_both_times(logged):
    outcome = add(logged, pairs(("b", None, 1), ("b", 0, 1), ("a", 0, 1)), skip_invalid=True)
    assert outcome.refused == {DUPLICATE_IN_INPUT: 2}
    assert stored(logged) == [("a", 0, 1)]


def test_a_pair_already_in_the_lake_is_refused(logged):
    assert add(logged, pairs(("b", 0, 1))).appended == 1
    outcome = add(logged, pairs(("b", 0, 0), ("a", 0, 1)))
    assert outcome.refused == {ALREADY_LABELLED: 1} and outcome.appended == 0
    assert stored(logged) == [("b", 0, 1)]


def test_skip_invalid_appends_the_valid_pairs_and_reports_the_rest(logged):
    outcome = add(logged, pairs(("a", 0, 1), ("ghost", 0, 1), ("b", 0, 7)), skip_invalid=True)
    assert outcome.appended == 1
    assert outcome.refused == {UNKNOWN_REQUEST_ID: 1, WRONG_CLASS: 1}
    line = outcome.line()
    assert "2 of 3 labels refused" in line and "the other 1 appended" in line
    assert stored(logged) == [("a", 0, 1)]


def test_a_version_without_a_schema_is_refused_not_guessed(logged):
    outcome = add(logged, pairs(("a", 0, 1)), schemas={})
    assert outcome.refused == {UNKNOWN_VERSION: 1}


def test_a_regression_label_must_be_a_finite_number(tmp_path):
    with PredictionLog(str(tmp_path / "log"), MODEL, clock=lambda: NOW) as log:
        for name in ("r0", "r1", "r2", "r3", "r4"):
            log.record(name, "v1", {"age": [30]}, [1.5])
    given = pairs(
        ("r0", 0, "2.5"), ("r1", 0, 3), ("r2", 0, "abc"), ("r3", 0, "inf"), ("r4", 0, True)
    )
    outcome = add(tmp_path, given, schemas={"v1": REGRESSION}, skip_invalid=True)
    assert outcome.refused == {NOT_A_NUMBER: 3}
    assert outcome.examples[NOT_A_NUMBER] == ["r2#0", "r3#0", "r4#0"]
    assert stored(tmp_path) == [("r0", 0, 2.5), ("r1", 0, 3.0)]


@pytest.mark.parametrize(
    ("classes", "given", "kept", "arrow_type"),
    [
        ([0, 1], ["1", 0.0], [1, 0], pa.int64()),
        (["No", "Yes"], ["yes", "No"], ["Yes", "No"], pa.string()),
        ([False, True], ["true", False], [True, False], pa.bool_()),
        ([0, "maybe"], ["0", "maybe"], ["0", "maybe"], pa.string()),  # mixed: kept as text
    ],
)
def test_a_label_is_matched_by_its_text_and_kept_as_the_class(
    tmp_path, classes, given, kept, arrow_type
):
    with PredictionLog(str(tmp_path / "log"), MODEL, clock=lambda: NOW) as log:
        log.record("x", "v1", {"age": [30, 40]}, [classes[0], classes[1]])
    schema = {"task": "classification", "classes": classes}
    outcome = add(tmp_path, pairs(("x", 0, given[0]), ("x", 1, given[1])), {"v1": schema})
    assert outcome.refused == {}
    assert stored(tmp_path) == [("x", 0, kept[0]), ("x", 1, kept[1])]
    assert [type(value) for _, _, value in stored(tmp_path)] == [type(k) for k in kept]
    [written] = (tmp_path / "labels").rglob("*.parquet")
    assert pq.read_schema(written).field("label").type == arrow_type


def test_appends_keep_one_label_type_so_the_lake_reads_as_one_dataset(logged):
    add(logged, pairs(("a", 0, "1")))
    add(logged, pairs(("b", 0, 0.0)))
    table = pq.read_table(str(logged / "labels"))  # pyarrow refuses files of different types
    assert table.schema.field("label").type == pa.int64()
    assert sorted(table["label"].to_pylist()) == [0, 1]


def test_a_failed_write_leaves_nothing_under_any_name(logged, monkeypatch):
    import components.common.prediction_log as prediction_log

    def full_disk(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prediction_log.os, "replace", full_disk)
    with pytest.raises(LabelsLakeUnavailable, match="labels lake .*: cannot write .*No space"):
        add(logged, pairs(("a", 0, 1)))
    assert [p for p in (logged / "labels").rglob("*") if p.is_file()] == []


def test_a_write_that_never_finished_is_skipped_and_named(logged):
    add(logged, pairs(("a", 0, 1)))
    [written] = (logged / "labels").rglob("*.parquet")
    (written.parent / f".{written.name}.tmp").write_bytes(written.read_bytes()[:30])
    frame, skipped = read_labels(str(logged / "labels"), MODEL)
    assert len(frame) == 1
    assert len(skipped) == 1 and ".tmp: a temporary file" in skipped[0]


def test_append_read_attach_round_trip(logged):
    add(logged, pairs(("a", 1, 1), ("b", None, "0")))
    log, _ = read_prediction_log(str(logged / "log"), MODEL)
    labels, _ = read_labels(str(logged / "labels"), MODEL)
    assert list(labels.columns) == ["request_id", "row", "label", "time"]
    assert set(labels["time"]) == {pd.Timestamp(NOW)}
    joined = attach_labels(log, labels)
    assert joined["label"].tolist() == [None, 1, 0]
    assert joined["prediction"].tolist() == log["prediction"].tolist()


def test_only_the_asked_request_ids_of_the_log_are_read(logged, monkeypatch):
    """A big log is filtered per file: rows of other requests are never turned into frames."""
    import components.common.labels as labels

    seen = []
    original = labels._read_partition

    def spy(*args, **kwargs):
        frames, skipped = original(*args, **kwargs)
        seen.extend(frame["request_id"].tolist() for frame in frames)
        return frames, skipped

    monkeypatch.setattr(labels, "_read_partition", spy)
    add(logged, pairs(("b", 0, 1)))
    assert seen == [["b"]]


# Labels files.


def test_a_csv_keeps_ids_and_labels_as_text(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n007,NA\n")
    frame = read_labels_file(str(path))
    assert frame.to_dict("records") == [{"request_id": "007", "label": "NA"}]


def test_a_parquet_labels_file_is_read(tmp_path):
    path = tmp_path / "labels.parquet"
    pd.DataFrame({"request_id": ["a"], "row": [1], "label": [1]}).to_parquet(path)
    assert read_labels_file(str(path)).to_dict("records") == [
        {"request_id": "a", "row": 1, "label": 1}
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("labels.csv", "request_id,outcome\na,1\n", "no column 'label'"),
        ("labels.csv", "request_id,label\n", "no labels in it"),
        ("labels.parquet", "PAR1 cut short", "not readable as Parquet"),
        ("labels.json", "[]", "expected a .csv or .parquet file"),
        ("missing.csv", None, "not found"),
    ],
)
def test_a_bad_labels_file_is_one_line_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(PipelineInputError, match=message) as caught:
        read_labels_file(str(path))
    assert str(caught.value).startswith(f"labels file {path}: ")
    assert "\n" not in str(caught.value)


def test_a_request_id_the_log_holds_twice_is_refused_as_reused(tmp_path):
    """A client that sent the same X-Request-Id twice: which answer a label is for is unknown."""
    with PredictionLog(str(tmp_path / "log"), MODEL, clock=lambda: NOW) as log:
        log.record("same", "v1", {"age": [30]}, [0])
        log.record("same", "v1", {"age": [40]}, [1])
    outcome = add(tmp_path, pairs(("same", 0, 1)))
    assert outcome.refused == {REUSED_REQUEST_ID: 1}
