import pandas as pd
import pytest

from components.common.errors import PipelineInputError
from components.ingest.logic import content_hash, read_source, resolve_source, source_columns


def test_reads_a_hive_partitioned_lake_with_the_partition_column(demo_lake, arrests):
    frame = read_source(resolve_source(str(demo_lake)))
    assert len(frame) == len(arrests)
    assert set(frame.columns) == set(arrests.columns)
    # The year comes back from the folder names as plain integers, not a categorical.
    assert pd.api.types.is_integer_dtype(frame["year"])
    assert sorted(frame["year"].unique()) == sorted(arrests["year"].unique())


def test_file_uri_and_bare_path_are_the_same_source(demo_lake):
    by_uri, by_path = resolve_source(f"file://{demo_lake}"), resolve_source(str(demo_lake))
    assert by_uri.path == by_path.path == demo_lake.resolve()
    assert by_uri.format == by_path.format == "parquet"


def test_reads_csv_with_extra_missing_markers(tmp_path):
    path = tmp_path / "adult.csv"
    path.write_text("age, workclass, income\n39, State-gov, <=50K\n50, ?, >50K\n")
    frame = read_source(resolve_source(str(path)), na_values=["?"])
    assert list(frame.columns) == ["age", "workclass", "income"]
    assert frame["workclass"].tolist()[0] == "State-gov"
    assert pd.isna(frame["workclass"].tolist()[1])


def test_source_columns_reads_only_the_schema(demo_lake):
    assert "released" in source_columns(resolve_source(str(demo_lake)))


@pytest.mark.parametrize(
    ("make_uri", "message"),
    [
        (lambda tmp: str(tmp / "missing"), "no such file or folder"),
        (lambda tmp: "s3://bucket/lake", "scheme 's3://' is not supported"),
        (lambda tmp: str((tmp / "x.json").resolve()), "unsupported file type '.json'"),
        (lambda tmp: str(tmp), "holds no .parquet files"),
    ],
)
def test_bad_sources_are_named(tmp_path, make_uri, message):
    (tmp_path / "x.json").write_text("{}")
    uri = make_uri(tmp_path)
    with pytest.raises(PipelineInputError, match=message) as caught:
        resolve_source(uri)
    assert uri in str(caught.value)


def test_an_empty_csv_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n")
    with pytest.raises(PipelineInputError, match="has no rows") as caught:
        read_source(resolve_source(str(path)))
    assert "empty.csv" in str(caught.value)


def test_a_corrupt_parquet_file_is_an_error_not_a_traceback(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(PipelineInputError, match="cannot read Parquet"):
        read_source(resolve_source(str(path)))


def test_content_hash_follows_values_not_layout(arrests):
    same = arrests.copy()
    changed = arrests.copy()
    changed.loc[0, "age"] += 1
    assert content_hash(arrests) == content_hash(same)
    assert content_hash(arrests) != content_hash(changed)
    assert content_hash(arrests).startswith("sha256:")
