"""The prediction log (components.common.prediction_log): request ids, the lake it writes (partitions,
types, batching, rotation), its bounded queue, closing, failed writes, files a killed process
left behind, and one round trip through a real S3 server (moto) on 127.0.0.1.

Every log a test starts is closed by the `make_log` fixture, whatever the test's outcome.
"""

import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.common.lake_source import resolve_source
from components.common.prediction_log import PredictionLog, read_prediction_log, request_id
from components.ingest.logic import read_source

MODEL = "parole"
DAY_ONE = datetime(2026, 3, 1, 23, 59, 58, tzinfo=UTC)
DAY_TWO = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)
# How long a test waits for something the writer thread must do before failing (not a speed
# requirement: on a loaded machine it is met in a fraction of it).
PATIENCE = 15.0


class Clock:
    """An injected clock: the time of the next record, set by the test; each reading moves it on
    by a millisecond, so records are in a known order."""

    def __init__(self, now: datetime = DAY_ONE):
        self.now = now

    def __call__(self) -> datetime:
        now, self.now = self.now, self.now + timedelta(milliseconds=1)
        return now


@pytest.fixture
def make_log():
    logs = []

    def make(uri, **options) -> PredictionLog:
        log = PredictionLog(str(uri), MODEL, **options)
        logs.append(log)
        return log

    try:
        yield make
    finally:
        for log in logs:
            log.close(timeout=PATIENCE)


def parquet_files(root) -> list:
    return sorted(root.rglob("*.parquet"))


def wait_until(condition, what: str) -> None:
    end = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"not within {PATIENCE} s: {what}")
        time.sleep(0.02)


# Request ids.


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"ce-id": "ce-1", "X-Request-Id": "xr-1"}, "ce-1"),
        ({"CE-ID": "ce-2", "x-request-id": "xr-2"}, "ce-2"),
        ({"X-Request-Id": "xr-3"}, "xr-3"),
        ({"x-REQUEST-id": "xr-4", "content-type": "application/json"}, "xr-4"),
    ],
)
def test_request_id_takes_ce_id_then_x_request_id_whatever_the_case(headers, expected):
    assert request_id(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"ce-id": ""},
        {"ce-id": "   "},
        {"X-Request-Id": "x" * 129},
        {"X-Request-Id": "abc\ndef"},
        {"ce-id": "abc\x00", "X-Request-Id": "fine"},
    ],
)
def test_request_id_is_a_new_uuid_without_a_usable_header(headers):
    first, second = request_id(headers), request_id(headers)
    assert len(first) == 32 and int(first, 16) >= 0  # 128 random bits in hex, as uuid4().hex
    assert first != second
    assert "fine" not in first  # an absurd ce-id is replaced, not passed over


def test_request_id_keeps_an_id_of_128_characters():
    assert request_id({"ce-id": "a" * 128}) == "a" * 128


# The lake.


def test_records_round_trip_with_types_probabilities_and_date_partitions(tmp_path, make_log):
    clock = Clock(DAY_ONE)
    log = make_log(tmp_path / "lake", clock=clock, flush_seconds=60)
    assert log.record(
        "req-1",
        "v3",
        {"age": [31, 47.5], "sex": ["F", "M"], "colour": ["red", None], "married": [True, False]},
        ["Yes", "No"],
        probabilities=[[0.25, 0.75], [0.9, 0.1]],
        classes=["No", "Yes"],
    )
    clock.now = DAY_TWO
    assert log.record(
        "req-2", "v4", [{"age": 22, "sex": "F", "colour": "blue", "married": True}], ["No"]
    )
    assert log.flush(timeout=PATIENCE)
    assert log.stats() == {"written": 3, "dropped": 0, "files": 2, "queued": 0, "write_errors": 0}

    files = parquet_files(tmp_path / "lake")
    folders = sorted(str(f.parent.relative_to(tmp_path / "lake")) for f in files)
    assert folders == [f"model={MODEL}/date=2026-03-01", f"model={MODEL}/date=2026-03-02"]
    assert all(f.name.startswith("part-2026030") for f in files)
    # The model is the partition, not a column of the file (pyarrow refuses a lake that has both).
    assert "model" not in pq.read_schema(files[0]).names

    frame, problems = read_prediction_log(str(tmp_path / "lake"), MODEL)
    assert problems == []
    assert list(frame["request_id"]) == ["req-1", "req-1", "req-2"]
    # A label names a row by its request and its place in it.
    assert list(frame["row"]) == [0, 1, 0]
    assert list(frame["model"]) == [MODEL] * 3
    assert list(frame["model_version"]) == ["v3", "v3", "v4"]
    assert list(frame["time"]) == [pd.Timestamp(DAY_ONE)] * 2 + [pd.Timestamp(DAY_TWO)]
    assert str(frame["time"].dt.tz) == "UTC"
    assert frame["age"].tolist() == [31.0, 47.5, 22.0]
    assert frame["age"].dtype == "float64"
    assert frame["sex"].tolist() == ["F", "M", "F"]
    assert frame["colour"].tolist()[:2] == ["red", None]
    assert frame["married"].tolist() == [True, False, True]
    assert frame["prediction"].tolist() == ["Yes", "No", "No"]
    assert frame["probability_No"].tolist()[:2] == [0.25, 0.9]
    assert frame["probability_Yes"].tolist()[:2] == [0.75, 0.1]
    assert frame["probability_Yes"].isna().tolist()[2]  # asked for none

    later, _ = read_prediction_log(str(tmp_path / "lake"), MODEL, since=DAY_TWO)
    assert list(later["request_id"]) == ["req-2"]


def test_records_of_different_layouts_in_one_file_keep_each_value_in_its_row(tmp_path, make_log):
    """One batch of records with different features (a reload to a version with another
    schema), probabilities as a numpy matrix, as lists, and none: every value in its row."""
    log = make_log(tmp_path / "lake", clock=Clock(DAY_ONE), flush_seconds=600)
    classes = ["No", "Yes"]
    assert log.record(
        "a",
        "v1",
        {"age": [30, 40], "sex": ["F", "M"]},
        np.array(["No", "Yes"]),
        np.array([[0.8, 0.2], [0.3, 0.7]]),
        classes,
    )
    assert log.record("b", "v2", {"age": [50], "income": [1.5]}, ["Yes"])
    assert log.record("c", "v2", {"income": [2.5], "age": [60]}, ["No"], [[0.6, 0.4]], classes)
    assert log.flush(timeout=PATIENCE)
    assert len(parquet_files(tmp_path / "lake")) == 1
    frame, _ = read_prediction_log(str(tmp_path / "lake"), MODEL)
    assert frame["request_id"].tolist() == ["a", "a", "b", "c"]
    assert frame["row"].tolist() == [0, 1, 0, 0]
    assert frame["model_version"].tolist() == ["v1", "v1", "v2", "v2"]
    assert frame["age"].tolist() == [30.0, 40.0, 50.0, 60.0]
    assert (
        frame["sex"].tolist()[:2] == ["F", "M"] and frame["sex"].isna().tolist()[2:] == [True] * 2
    )
    assert frame["income"].isna().tolist()[:2] == [True] * 2
    assert frame["income"].tolist()[2:] == [1.5, 2.5]
    assert frame["prediction"].tolist() == ["No", "Yes", "Yes", "No"]
    assert frame["probability_Yes"].tolist()[:2] == [0.2, 0.7]
    assert (
        frame["probability_Yes"].isna().tolist()[2] and frame["probability_Yes"].tolist()[3] == 0.4
    )


def test_a_feature_whose_type_changes_does_not_stop_the_writer_and_ingest_reads_the_lake(
    tmp_path, make_log
):
    log = make_log(tmp_path / "lake", clock=Clock(), flush_seconds=60)
    for rows in ({"checks": [3], "zone": [7]}, {"checks": [3.5], "zone": ["7b"]}):
        assert log.record("r", "v1", rows, [1])
        assert log.flush(timeout=PATIENCE)
    assert log.record("r", "v1", {"checks": [1], "zone": [8]}, [0])  # text once, text now
    assert log.flush(timeout=PATIENCE)
    assert log.stats()["written"] == 3 and log.stats()["write_errors"] == 0

    frame, problems = read_prediction_log(str(tmp_path / "lake"), MODEL)
    assert problems == []
    assert frame["checks"].tolist() == [3.0, 3.5, 1.0]
    assert frame["prediction"].tolist() == [1, 1, 0]
    types = [pq.read_schema(f).field("zone").type for f in parquet_files(tmp_path / "lake")]
    assert sorted(map(str, types)) == ["double", "string", "string"]
    # The numbers alone (as the ingest step reads every lake) are one type across files.
    source = resolve_source(str(tmp_path / "lake"))
    table, _ = read_source(source, columns=["checks", "model", "date"])
    assert sorted(table["checks"].tolist()) == [1.0, 3.0, 3.5]
    assert set(table["model"]) == {MODEL}


def test_nothing_is_written_below_batch_rows_until_flush(tmp_path, make_log):
    log = make_log(tmp_path / "lake", clock=Clock(), batch_rows=10, flush_seconds=600)
    assert log.record("r", "v1", {"age": [1, 2, 3]}, [0, 1, 0])
    time.sleep(0.5)  # time for a writer that wrongly writes at once to do it
    assert parquet_files(tmp_path / "lake") == []
    assert log.stats()["queued"] == 3
    assert log.flush(timeout=PATIENCE)
    assert len(parquet_files(tmp_path / "lake")) == 1
    assert log.stats()["queued"] == 0


def test_a_batch_is_written_when_flush_seconds_pass_or_batch_rows_wait(tmp_path, make_log):
    by_time = make_log(tmp_path / "by_time", clock=Clock(), batch_rows=10, flush_seconds=0.3)
    assert by_time.record("r", "v1", {"age": [1]}, [0])
    wait_until(lambda: by_time.stats()["files"] == 1, "the batch written after flush_seconds")

    by_rows = make_log(tmp_path / "by_rows", clock=Clock(), batch_rows=4, flush_seconds=600)
    for index in range(4):
        assert by_rows.record("r", "v1", {"age": [index]}, [0])
    wait_until(lambda: by_rows.stats()["written"] == 4, "the batch written at batch_rows")
    assert len(parquet_files(tmp_path / "by_rows")) == 1


def test_a_record_that_arrives_during_a_write_is_written_within_flush_seconds(
    tmp_path, make_log, monkeypatch
):
    """A record handed over while the writer is busy does not wake it (rows are still
    queued); it must still be written once flush_seconds pass, with no later record."""
    log = make_log(tmp_path / "lake", clock=Clock(), batch_rows=100, flush_seconds=0.3)
    writing = threading.Event()
    put = log._put

    def slow_put(*args):
        writing.set()
        time.sleep(0.5)
        put(*args)

    monkeypatch.setattr(log, "_put", slow_put)
    assert log.record("first", "v1", {"age": [1]}, [0])
    assert writing.wait(PATIENCE)  # the writer is writing "first"
    assert log.record("during", "v1", {"age": [2]}, [1])
    wait_until(lambda: log.stats()["written"] == 2, "the record handed over during a write")
    assert log.stats()["files"] == 2


def test_max_file_rows_bounds_the_rows_of_each_file(tmp_path, make_log):
    log = make_log(tmp_path / "lake", clock=Clock(), max_file_rows=4, flush_seconds=600)
    assert log.record("big", "v1", {"age": list(range(7))}, [0] * 7)
    assert log.record("small", "v1", {"age": [7, 8, 9]}, [1] * 3)
    assert log.flush(timeout=PATIENCE)
    rows = [pq.read_metadata(f).num_rows for f in parquet_files(tmp_path / "lake")]
    assert sorted(rows) == [2, 4, 4]
    frame, _ = read_prediction_log(str(tmp_path / "lake"), MODEL)
    assert sorted(frame["age"]) == list(range(10))


def test_a_full_queue_drops_and_counts_records_without_blocking(tmp_path, make_log, monkeypatch):
    log = make_log(tmp_path / "lake", clock=Clock(), max_queue=2, batch_rows=1)
    writing, release = threading.Event(), threading.Event()
    put = log._put

    def held_put(*args):
        writing.set()
        release.wait(PATIENCE)
        put(*args)

    monkeypatch.setattr(log, "_put", held_put)
    answers, errors = [], []

    def requests():
        try:
            answers.append(log.record("first", "v1", {"age": [0]}, [0]))
            writing.wait(PATIENCE)  # the writer holds the first record, the queue is empty
            for index in range(1, 6):
                answers.append(log.record(f"r{index}", "v1", {"age": [index, index]}, [0, 0]))
        except Exception as error:  # record must never raise
            errors.append(error)

    # A daemon: were record to block for good, the test fails instead of hanging the session.
    caller = threading.Thread(target=requests, daemon=True)
    try:
        caller.start()
        caller.join(PATIENCE)
        assert not caller.is_alive(), "record blocked on a full queue"
        assert errors == []
        assert writing.is_set()
        assert answers == [True, True, True, False, False, False]
        assert log.stats()["dropped"] == 6  # three records of two rows
        assert log.stats()["queued"] == 5
    finally:
        release.set()
    assert log.close(timeout=PATIENCE)
    # Two files: the first record's, then the two that waited meanwhile, written together.
    assert log.stats() == {"written": 5, "dropped": 6, "files": 2, "queued": 0, "write_errors": 0}


def test_close_writes_everything_queued_and_can_be_called_twice(tmp_path, make_log):
    log = make_log(tmp_path / "lake", clock=Clock(), batch_rows=100, flush_seconds=600)
    for index in range(5):
        assert log.record(f"r{index}", "v1", {"age": [index]}, [index % 2])
    assert log.close(timeout=PATIENCE)
    assert log.close(timeout=PATIENCE)
    assert not log.record("late", "v1", {"age": [9]}, [1])
    assert not log.flush(timeout=1)
    assert log.stats() == {"written": 5, "dropped": 1, "files": 1, "queued": 0, "write_errors": 0}
    frame, _ = read_prediction_log(str(tmp_path / "lake"), MODEL)
    assert list(frame["request_id"]) == [f"r{index}" for index in range(5)]


def test_a_malformed_record_is_dropped_and_counted_not_raised(tmp_path, make_log):
    log = make_log(tmp_path / "lake", clock=Clock(), flush_seconds=600)
    assert not log.record("r", "v1", {"age": [1, 2]}, [0])  # two rows, one prediction
    assert not log.record("r", "v1", {"age": [1]}, [0], probabilities=[[0.5, 0.5]])  # no classes
    assert log.record("r", "v1", {"age": [1]}, [0], probabilities=[[1.0]], classes=["a", "b"])
    assert log.flush(timeout=PATIENCE)
    assert log.stats() == {"written": 0, "dropped": 3, "files": 0, "queued": 0, "write_errors": 0}


def test_files_a_killed_writer_left_are_skipped_and_named(tmp_path, make_log):
    log = make_log(tmp_path / "lake", clock=Clock(), flush_seconds=600)
    assert log.record("good", "v1", {"age": [1, 2]}, [0, 1])
    assert log.close(timeout=PATIENCE)
    (good,) = parquet_files(tmp_path / "lake")
    data = good.read_bytes()
    cut = good.with_name("part-20260301T235959000000Z-cut.parquet")
    cut.write_bytes(data[: len(data) // 2])
    leftover = good.with_name(".part-20260301T235959000000Z-left.parquet.tmp")
    leftover.write_bytes(data[:10])

    frame, problems = read_prediction_log(str(tmp_path / "lake"), MODEL)
    assert list(frame["request_id"]) == ["good", "good"]
    assert len(problems) == 2
    assert any(str(cut) in line and "not readable as Parquet" in line for line in problems)
    assert any(str(leftover) in line and "temporary" in line for line in problems)
    assert all("\n" not in line for line in problems)


def test_a_failed_write_is_counted_and_the_next_batch_is_written(
    tmp_path, make_log, monkeypatch, caplog
):
    log = make_log(tmp_path / "lake", clock=Clock(), flush_seconds=600)
    put, failures = log._put, []

    def failing_once(*args):
        if not failures:
            failures.append(args[1])
            raise OSError(28, "No space left on device")
        put(*args)

    monkeypatch.setattr(log, "_put", failing_once)
    assert log.record("lost", "v1", {"age": [1, 2]}, [0, 1])
    assert log.flush(timeout=PATIENCE)
    assert log.stats() == {"written": 0, "dropped": 2, "files": 0, "queued": 0, "write_errors": 1}
    assert not list((tmp_path / "lake").rglob(".*.tmp"))
    (line,) = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert failures[0] in line and "No space left on device" in line

    assert log.record("kept", "v1", {"age": [3]}, [1])
    assert log.flush(timeout=PATIENCE)
    assert log.stats() == {"written": 1, "dropped": 2, "files": 1, "queued": 0, "write_errors": 1}
    frame, _ = read_prediction_log(str(tmp_path / "lake"), MODEL)
    assert list(frame["request_id"]) == ["kept"]


def test_the_real_local_write_leaves_no_temporary_file(tmp_path, make_log):
    log = make_log(tmp_path / "lake", clock=Clock(DAY_ONE + timedelta(hours=-1)))
    assert log.record("r", "v1", {"age": [1]}, [0])
    assert log.close(timeout=PATIENCE)
    names = [p.name for p in (tmp_path / "lake").rglob("*") if p.is_file()]
    assert len(names) == 1 and names[0].endswith(".parquet") and not names[0].startswith(".")


def test_an_s3_round_trip(s3, make_log):
    s3.mkdir("predictions")
    uri = "s3://predictions/lake"
    clock = Clock(DAY_ONE)
    log = make_log(uri, clock=clock, flush_seconds=600)
    assert log.record(
        "a", "v1", {"age": [30.5], "sex": ["F"]}, ["Yes"], [[0.2, 0.8]], ["No", "Yes"]
    )
    clock.now = DAY_TWO
    assert log.record("b", "v1", {"age": [40.0], "sex": ["M"]}, ["No"], [[0.6, 0.4]], ["No", "Yes"])
    assert log.close(timeout=PATIENCE)
    assert log.stats()["write_errors"] == 0 and log.stats()["files"] == 2

    s3.invalidate_cache()
    keys = sorted(s3.find("predictions/lake"))
    assert [k.rsplit("/", 1)[0] for k in keys] == [
        f"predictions/lake/model={MODEL}/date=2026-03-01",
        f"predictions/lake/model={MODEL}/date=2026-03-02",
    ]
    assert all(k.rsplit("/", 1)[1].startswith("part-") for k in keys)

    frame, problems = read_prediction_log(uri, MODEL)
    assert problems == []
    assert list(frame["request_id"]) == ["a", "b"]
    assert frame["probability_Yes"].tolist() == [0.8, 0.4]
    assert frame["sex"].tolist() == ["F", "M"]
