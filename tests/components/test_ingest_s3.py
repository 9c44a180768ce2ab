"""The data lake on S3, for real: a moto S3 server on 127.0.0.1, started and stopped here."""

import socket

import pytest

from components.common import retry
from components.common.errors import PipelineInputError
from components.common.lake_source import resolve_source
from components.ingest.logic import read_source

pytestmark = pytest.mark.server


@pytest.fixture
def s3_lake(s3, demo_lake, request):
    bucket = f"lake-{request.node.name.replace('_', '-')[:40].lower()}"
    s3.mkdir(bucket)
    s3.put(str(demo_lake), f"{bucket}/arrests", recursive=True)
    return f"s3://{bucket}/arrests"


def test_reads_a_partitioned_lake_from_s3(s3_lake, arrests):
    source = resolve_source(s3_lake)
    assert source.is_lake and source.format == "parquet"
    frame, watermark = read_source(source, filters=[["year", "==", 1999]])
    assert len(frame) == (arrests["year"] == 1999).sum()
    assert len(watermark["files"]) == 6
    # Each object is fingerprinted by its size and ETag.
    sizes = {name: mark.split(":", 1) for name, mark in watermark["files"].items()}
    assert all(int(size) > 0 and etag not in ("", "None") for size, etag in sizes.values())


def test_incremental_read_from_s3_takes_only_new_objects(s3, s3_lake, arrests, tmp_path):
    _, first = read_source(resolve_source(s3_lake))
    new_rows = arrests[arrests["year"] == 2002].drop(columns="year")
    local = tmp_path / "part-0.parquet"
    new_rows.to_parquet(local, index=False)
    s3.put(str(local), f"{s3_lake.removeprefix('s3://')}/year=2003/part-0.parquet")

    frame, second = read_source(resolve_source(s3_lake), since=first)
    assert len(frame) == len(new_rows) and set(frame["year"]) == {2003}
    with pytest.raises(PipelineInputError, match="nothing new since the given watermark"):
        read_source(resolve_source(s3_lake), since=second)


def test_a_missing_bucket_or_prefix_is_named(s3):
    s3.mkdir("empty-bucket")
    with pytest.raises(PipelineInputError, match="'s3://empty-bucket/nothing': no such file"):
        resolve_source("s3://empty-bucket/nothing")


def test_an_endpoint_that_does_not_answer_is_one_line(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    # Retried as a store that is restarting would be (test_object_store_faults.py), quickly here.
    monkeypatch.setattr(retry, "ATTEMPTS", 2)
    monkeypatch.setattr(retry, "BASE_SECONDS", 0.01)
    with pytest.raises(PipelineInputError, match="'s3://bucket/lake': cannot reach it") as caught:
        resolve_source("s3://bucket/lake")
    assert "\n" not in str(caught.value) and "after 2 attempts" in str(caught.value)
