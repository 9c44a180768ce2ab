import pandas as pd
import pytest

from components.common.errors import PipelineInputError
from components.common.lake_source import resolve_source, source_columns
from components.ingest.logic import content_hash, read_source


def test_reads_a_hive_partitioned_lake_with_the_partition_column(demo_lake, arrests):
    frame, watermark = read_source(resolve_source(str(demo_lake)))
    assert len(frame) == len(arrests)
    assert sorted(watermark["files"]) == [f"year={y}/part-0.parquet" for y in range(1997, 2003)]
    assert set(frame.columns) == set(arrests.columns)
    # The year comes back from the folder names as plain integers, not a categorical.
    assert pd.api.types.is_integer_dtype(frame["year"])
    assert sorted(frame["year"].unique()) == sorted(arrests["year"].unique())


def test_a_text_partition_column_comes_back_as_categories_of_its_folders(tmp_path):
    frame = pd.DataFrame({"region": ["north", "south", "north", "east"], "x": [1.0, 2, 3, 4]})
    frame.to_parquet(tmp_path / "lake", partition_cols=["region"], index=False)
    lake = tmp_path / "lake"
    read, _ = read_source(resolve_source(str(lake)), filters=[["region", "!=", "east"]])
    assert isinstance(read["region"].dtype, pd.CategoricalDtype)
    assert sorted(zip(read["region"].astype(str), read["x"], strict=True)) == [
        ("north", 1.0),
        ("north", 3.0),
        ("south", 2.0),
    ]
    # Its hash is that of the same text read from a file.
    frame.drop(index=3).sort_values("region").to_parquet(tmp_path / "flat.parquet", index=False)
    flat, _ = read_source(resolve_source(str(tmp_path / "flat.parquet")), columns=["x", "region"])
    assert content_hash(read.sort_values("region", kind="stable").reset_index(drop=True)) == (
        content_hash(flat)
    )


def test_file_uri_and_bare_path_are_the_same_source(demo_lake):
    by_uri, by_path = resolve_source(f"file://{demo_lake}"), resolve_source(str(demo_lake))
    assert by_uri.path == by_path.path == str(demo_lake.resolve())
    assert by_uri.format == by_path.format == "parquet" and by_uri.is_lake


def test_reads_csv_with_extra_missing_markers(tmp_path):
    path = tmp_path / "adult.csv"
    path.write_text("age, workclass, income\n39, State-gov, <=50K\n50, ?, >50K\n")
    frame, _ = read_source(resolve_source(str(path)), na_values=["?"])
    assert list(frame.columns) == ["age", "workclass", "income"]
    assert frame["workclass"].tolist()[0] == "State-gov"
    assert pd.isna(frame["workclass"].tolist()[1])


def test_source_columns_reads_only_the_schema(demo_lake):
    assert "released" in source_columns(resolve_source(str(demo_lake)))


@pytest.mark.parametrize(
    ("make_uri", "message"),
    [
        (lambda tmp: str(tmp / "missing"), "no such file or folder"),
        (lambda tmp: "ftp://host/lake", "scheme 'ftp://' is not supported"),
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


def test_columns_and_filters_are_pushed_down(demo_lake, arrests):
    frame, _ = read_source(
        resolve_source(str(demo_lake)),
        columns=["released", "age", "year"],
        filters=[["year", ">=", 2001], ["age", "<", 30]],
    )
    expected = arrests[(arrests["year"] >= 2001) & (arrests["age"] < 30)]
    assert list(frame.columns) == ["released", "age", "year"]
    assert len(frame) == len(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"columns": ["salary"]}, "data.columns: column 'salary' is not in the data"),
        ({"filters": [["year", ">="]]}, "data.filters"),
    ],
)
def test_bad_projection_or_filter_is_named(demo_lake, kwargs, message):
    with pytest.raises(PipelineInputError, match=message):
        read_source(resolve_source(str(demo_lake)), **kwargs)


def _add_partition(lake, year, frame):
    folder = lake / f"year={year}"
    folder.mkdir()
    frame.drop(columns="year").to_parquet(folder / "part-0.parquet", index=False)


def test_incremental_read_takes_only_new_and_changed_files(demo_lake, arrests):
    source = resolve_source(str(demo_lake))
    _, first = read_source(source)
    new_rows = arrests[arrests["year"] == 2002].assign(year=2003)
    _add_partition(demo_lake, 2003, new_rows)

    frame, second = read_source(resolve_source(str(demo_lake)), since=first)
    assert len(frame) == len(new_rows)
    assert set(frame["year"]) == {2003}
    assert set(second["files"]) == set(first["files"]) | {"year=2003/part-0.parquet"}

    # A rewritten file counts as changed; untouched files stay out.
    rewritten = arrests[arrests["year"] == 1997].head(10).drop(columns="year")
    rewritten.to_parquet(demo_lake / "year=1997" / "part-0.parquet", index=False)
    frame, _ = read_source(resolve_source(str(demo_lake)), since=second)
    assert len(frame) == 10 and set(frame["year"]) == {1997}


def test_nothing_new_since_the_watermark_is_a_clear_error(demo_lake):
    source = resolve_source(str(demo_lake))
    _, watermark = read_source(source)
    with pytest.raises(PipelineInputError, match="nothing new since the given watermark"):
        read_source(source, since=watermark)


def test_a_partition_with_a_different_schema_is_an_error(demo_lake, arrests):
    odd = arrests[arrests["year"] == 2002].drop(columns="year").assign(age="forty")
    folder = demo_lake / "year=2004"
    folder.mkdir()
    odd.to_parquet(folder / "part-0.parquet", index=False)
    with pytest.raises(PipelineInputError, match="cannot read Parquet"):
        read_source(resolve_source(str(demo_lake)))
