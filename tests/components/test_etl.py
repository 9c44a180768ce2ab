"""ETL snapshots: real CSV, Parquet and SQLite sources, every transform, content addressing, and
every bad input as one line with nothing left behind."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Dataset

from components.common.errors import PipelineInputError
from components.common.io import read_frame
from components.common.settings.etl import load_spec
from components.ingest import snapshot
from components.ingest.component import ingest
from components.ingest.logic import content_hash
from components.ingest.snapshot import DATA_FILE, MANIFEST_FILE, run_etl, snapshot_metadata
from tests.conftest import full_plan

PEOPLE = pd.DataFrame(
    {
        "name": ["ann", "bob", "cid", "dan", "eve"],
        "age": [34, 17, 51, 29, 63],
        "income": [5000.0, 0.0, 7000.0, np.nan, 2500.0],
        "debt": [1000.0, 50.0, 0.0, 300.0, 500.0],
        "joined": ["2020-01-05", "2021-03-04", "2019-12-31", "2022-07-15", "2018-02-28"],
        "city": ["oslo", "rome", "oslo", None, "lima"],
        "active": ["yes", "no", "yes", "yes", "no"],
    }
)


@pytest.fixture
def people_csv(tmp_path):
    path = tmp_path / "people.csv"
    PEOPLE.to_csv(path, index=False)
    return path


@pytest.fixture
def root(tmp_path):
    return tmp_path / "snapshots"


def _spec(uri, *transforms, **extra):
    return {"source": {"uri": str(uri)}, "transforms": list(transforms), **extra}


def _left(root):
    """Everything under the snapshot root: a failed run must leave nothing, not even a temp."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --- sources -------------------------------------------------------------------------------------


def test_a_csv_becomes_a_snapshot_with_manifest_and_checksums(people_csv, root):
    result = run_etl(_spec(people_csv), root)
    assert result.created and result.rows == len(PEOPLE)
    assert _left(root) == [result.snapshot_id]
    assert result.path == root.resolve() / result.snapshot_id
    assert result.uri == result.path.as_uri()
    frame = pd.read_parquet(result.data_path)
    # Missing text comes back as None from Parquet, as NaN from read_csv: compare the rest.
    expected = pd.read_csv(people_csv)
    pd.testing.assert_frame_equal(frame.isna(), expected.isna())
    pd.testing.assert_frame_equal(frame.fillna(-1), expected.fillna(-1))
    assert result.bytes == result.data_path.stat().st_size
    assert result.content_hash == content_hash(frame)
    assert result.columns == list(PEOPLE.columns)
    assert dict((c["name"], c["type"]) for c in result.schema)["age"] == "int64"

    manifest = json.loads((result.path / MANIFEST_FILE).read_text())
    assert manifest["id"] == result.snapshot_id and manifest["rows"] == len(PEOPLE)
    assert manifest["schema"] == result.schema
    assert manifest["source"]["uri"] == people_csv.resolve().as_uri()
    assert list(manifest["source"]["files"]) == ["people.csv"]
    import hashlib

    digest = hashlib.sha256(result.data_path.read_bytes()).hexdigest()
    assert manifest["files"][DATA_FILE] == {"sha256": f"sha256:{digest}", "bytes": result.bytes}
    assert manifest["spec"]["source"]["uri"] == people_csv.resolve().as_uri()


def test_csv_options_delimiter_encoding_and_missing_markers(tmp_path, root):
    path = tmp_path / "semi.csv"
    path.write_bytes("name;city;score\nann;Zürich;?\nbob;Köln;3\n".encode("latin-1"))
    spec = _spec(path, csv={"delimiter": ";", "encoding": "latin-1", "na_values": ["?"]})
    frame = pd.read_parquet(run_etl(spec, root).data_path)
    assert frame["city"].tolist() == ["Zürich", "Köln"]
    assert frame["score"].isna().tolist() == [True, False]


def test_a_parquet_file_and_a_hive_lake(tmp_path, root):
    file = tmp_path / "people.parquet"
    PEOPLE.to_parquet(file, index=False)
    frame = pd.read_parquet(run_etl(_spec(file), root).data_path)
    pd.testing.assert_frame_equal(frame, PEOPLE)

    lake = tmp_path / "lake"
    for city, part in PEOPLE.dropna(subset=["city"]).groupby("city"):
        (lake / f"city={city}").mkdir(parents=True)
        part.drop(columns="city").to_parquet(lake / f"city={city}" / "part-0.parquet")
    result = run_etl(_spec(lake, {"filter": ["city", "==", "oslo"]}), root)
    frame = pd.read_parquet(result.data_path)
    assert sorted(frame["name"]) == ["ann", "cid"]
    assert frame["city"].tolist() == ["oslo", "oslo"]  # the partition is a plain column
    manifest = json.loads((result.path / MANIFEST_FILE).read_text())
    assert sorted(manifest["source"]["files"]) == [
        f"city={c}/part-0.parquet" for c in ("lima", "oslo", "rome")
    ]


@pytest.fixture
def people_db(tmp_path):
    path = tmp_path / "people.db"
    with sqlite3.connect(path) as connection:
        PEOPLE.to_sql("people", connection, index=False)
    return path


def test_a_sqlite_table_and_a_query(people_db, root):
    url = f"sqlite:///{people_db}"
    by_table = run_etl({"source": {"sql": {"url": url, "table": "people"}}}, root)
    with sqlite3.connect(people_db) as connection:
        expected = pd.read_sql("SELECT * FROM people", connection)
    pd.testing.assert_frame_equal(pd.read_parquet(by_table.data_path), expected)

    query = "SELECT name, age FROM people WHERE age >= 30 ORDER BY age"
    by_query = run_etl({"source": {"sql": {"url": url, "query": query}}}, root)
    frame = pd.read_parquet(by_query.data_path)
    assert frame.to_dict("list") == {"name": ["ann", "cid", "eve"], "age": [34, 51, 63]}
    assert by_query.snapshot_id != by_table.snapshot_id
    manifest = json.loads((by_query.path / MANIFEST_FILE).read_text())
    assert manifest["source"] == {"sql": {"url": url, "query": query}}


def test_source_columns_keep_only_those(people_csv, root):
    spec = {"source": {"uri": str(people_csv), "columns": ["age", "name"]}}
    assert run_etl(spec, root).columns == ["age", "name"]


# --- transforms ----------------------------------------------------------------------------------


def _run(people_csv, root, *transforms) -> pd.DataFrame:
    return pd.read_parquet(run_etl(_spec(people_csv, *transforms), root).data_path)


def test_rename_and_drop(people_csv, root):
    frame = _run(people_csv, root, {"rename": {"city": "town"}}, {"drop": ["joined", "debt"]})
    assert list(frame.columns) == ["name", "age", "income", "town", "active"]


def test_casts(people_csv, root):
    frame = _run(
        people_csv,
        root,
        {"cast": {"age": "float64", "debt": "int64", "name": "string", "active": "bool"}},
        {"cast": {"joined": "datetime"}},
    )
    assert frame["age"].dtype == np.float64 and frame["debt"].dtype == np.int64
    assert frame["debt"].tolist() == [1000, 50, 0, 300, 500]
    assert frame["active"].tolist() == [True, False, True, True, False]
    assert frame["joined"].tolist() == list(pd.to_datetime(PEOPLE["joined"]))
    # int64 with a missing value stays integer (pandas' nullable Int64), not float.
    frame = _run(people_csv, root, {"cast": {"income": "int64"}})
    assert str(frame["income"].dtype) == "Int64" and frame["income"].isna().sum() == 1


@pytest.mark.parametrize(
    ("condition", "names"),
    [
        (["age", "==", 34], ["ann"]),
        (["age", "!=", 34], ["bob", "cid", "dan", "eve"]),
        (["age", "<", 30], ["bob", "dan"]),
        (["age", "<=", 29], ["bob", "dan"]),
        (["age", ">", 51], ["eve"]),
        (["age", ">=", 51], ["cid", "eve"]),
        (["city", "in", ["oslo", "lima"]], ["ann", "cid", "eve"]),
        # A missing value matches no condition, not even 'not in' (as in SQL).
        (["city", "not in", ["oslo"]], ["bob", "eve"]),
        (["city", "!=", "oslo"], ["bob", "eve"]),
    ],
)
def test_filters(people_csv, root, condition, names):
    frame = _run(people_csv, root, {"filter": condition})
    assert frame["name"].tolist() == names
    # The same rows pandas' own query selects (missing values aside).
    column, op, value = condition
    expected = PEOPLE.query(f"{column} {op} @value") if op not in ("in", "not in") else None
    if expected is not None:
        assert frame["name"].tolist() == expected.dropna(subset=[column])["name"].tolist()


def test_filter_on_dates_after_a_cast(people_csv, root):
    frame = _run(
        people_csv,
        root,
        {"cast": {"joined": "datetime"}},
        {"filter": ["joined", ">=", "2020-01-01"]},
    )
    assert frame["name"].tolist() == ["ann", "bob", "dan"]


def test_derived_columns(people_csv, root):
    frame = _run(
        people_csv,
        root,
        {"cast": {"joined": "datetime"}},
        {"derive": {"name": "debt_ratio", "ratio": ["debt", "income"]}},
        {"derive": {"name": "joined_year", "date_part": ["joined", "year"]}},
        {"derive": {"name": "joined_dow", "date_part": ["joined", "dayofweek"]}},
        {"derive": {"name": "band", "bins": {"column": "age", "edges": [0, 18, 40, 60]}}},
        {
            "derive": {
                "name": "named_band",
                "bins": {"column": "age", "edges": [0, 40, 120], "labels": ["young", "older"]},
            }
        },
        {"derive": {"name": "who", "concat": ["name", "city"], "separator": "@"}},
    )
    ratio = frame["debt_ratio"].tolist()
    # 50 / 0 and 300 / missing are missing, not infinite.
    assert ratio[0] == pytest.approx(0.2) and ratio[2] == 0 and ratio[4] == pytest.approx(0.2)
    assert np.isnan(ratio[1]) and np.isnan(ratio[3])
    dates = pd.to_datetime(PEOPLE["joined"])
    assert frame["joined_year"].tolist() == dates.dt.year.tolist()
    assert frame["joined_dow"].tolist() == dates.dt.dayofweek.tolist()
    assert frame["joined_year"].dtype == np.int64
    # Left-closed bands, as pandas.cut(right=False) makes them; 63, at or above the last edge,
    # is in the open end bin (components.common.binning), not missing.
    assert frame["band"].tolist() == ["[18, 40)", "[0, 18)", "[40, 60)", "[18, 40)", ">= 60"]
    expected = pd.cut(PEOPLE["age"], [0, 18, 40, 60], right=False).astype(str).tolist()
    assert frame["band"].tolist()[:4] == expected[:4]
    assert frame["named_band"].tolist() == ["young", "young", "older", "young", "older"]
    assert frame["who"].tolist() == ["ann@oslo", "bob@rome", "cid@oslo", None, "eve@lima"]


# --- content addressing --------------------------------------------------------------------------


def test_same_input_and_spec_give_the_same_snapshot_and_reuse_it(people_csv, root, monkeypatch):
    spec = _spec(people_csv, {"filter": ["age", ">", 20]})
    first = run_etl(spec, root)
    written = (first.data_path.stat().st_mtime_ns, first.data_path.read_bytes())
    monkeypatch.chdir(people_csv.parent)
    # The same file by a relative path is the same source.
    again = run_etl(_spec("people.csv", {"filter": ["age", ">", 20]}), root)
    assert again.snapshot_id == first.snapshot_id and not again.created
    assert (again.rows, again.bytes, again.schema) == (first.rows, first.bytes, first.schema)
    assert (first.data_path.stat().st_mtime_ns, first.data_path.read_bytes()) == written
    assert _left(root) == [first.snapshot_id]


def test_a_changed_value_or_spec_gives_a_new_snapshot(people_csv, root):
    first = run_etl(_spec(people_csv), root)
    changed = PEOPLE.copy()
    changed.loc[2, "income"] = 7001.0
    changed.to_csv(people_csv, index=False)
    second = run_etl(_spec(people_csv), root)
    assert second.snapshot_id != first.snapshot_id and second.created
    third = run_etl(_spec(people_csv, {"drop": ["debt"]}), root)
    assert len({first.snapshot_id, second.snapshot_id, third.snapshot_id}) == 3
    # The earlier snapshot is untouched: immutable.
    assert pd.read_parquet(first.data_path)["income"][2] == 7000.0
    assert sorted(_left(root)) == sorted([first.snapshot_id, second.snapshot_id, third.snapshot_id])


def test_a_change_that_the_transforms_remove_keeps_the_snapshot(people_csv, root):
    spec = _spec(people_csv, {"filter": ["age", ">=", 18]})
    first = run_etl(spec, root)
    changed = PEOPLE.copy()
    changed.loc[1, "income"] = 1.0  # bob is 17: the filter drops his row
    changed.to_csv(people_csv, index=False)
    assert run_etl(spec, root).snapshot_id == first.snapshot_id


def test_a_snapshot_folder_without_manifest_is_an_error(people_csv, root):
    result = run_etl(_spec(people_csv), root)
    (result.path / MANIFEST_FILE).unlink()
    with pytest.raises(PipelineInputError, match="manifest.json is missing"):
        run_etl(_spec(people_csv), root)


# --- errors --------------------------------------------------------------------------------------


def _fails(spec, root, *fragments):
    with pytest.raises(PipelineInputError) as caught:
        run_etl(spec, root)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert _left(root) == []
    return message


def test_a_missing_file_and_a_refused_scheme(tmp_path, root):
    _fails(_spec(tmp_path / "nope.csv"), root, "nope.csv", "no such file or folder")
    _fails(_spec("ftp://host/data.csv"), root, "ftp://host/data.csv", "not supported")


def test_bad_quoting_names_the_file_and_row(tmp_path, root):
    path = tmp_path / "quotes.csv"
    path.write_text('a,b,c\n1,"x,2\n3,y,4\n')
    _fails(_spec(path), root, "quotes.csv", "EOF inside string starting at row 1")
    path.write_text("a,b,c\n1,2,3\n4,5,6,7\n")
    _fails(_spec(path), root, "quotes.csv", "Expected 3 fields in line 3, saw 4")


def test_a_wrong_delimiter_is_named(tmp_path, root):
    path = tmp_path / "semi.csv"
    path.write_text("name;age;city\nann;34;oslo\n")
    _fails(_spec(path), root, "semi.csv", "one column found", "wrong csv.delimiter", "';'")


def test_a_wrong_encoding_names_the_byte_offset(tmp_path, root):
    path = tmp_path / "latin.csv"
    text = "name,city\nann,oslo\nbob,Zürich\n"
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index("ü".encode("latin-1"))
    _fails(_spec(path), root, "latin.csv", f"not valid utf-8 at byte {offset} (line 3, byte 0xfc)")


def test_the_encoding_offset_is_found_past_the_first_megabyte(tmp_path, root):
    path = tmp_path / "big.csv"
    head = b"a,b\n" + b"1,x\n" * 300_000  # 1.2 MB: the bad byte is in the scanner's second chunk
    path.write_bytes(head + b"2,\xff\n")
    _fails(_spec(path), root, f"at byte {len(head) + 2} (line 300002, byte 0xff)")


def test_an_empty_file_and_a_header_without_rows(tmp_path, root):
    path = tmp_path / "empty.csv"
    path.write_text("")
    _fails(_spec(path), root, "empty.csv", "empty")
    path.write_text("a,b\n")
    _fails(_spec(path), root, "empty.csv", "it has no rows")


def test_corrupt_parquet_file_and_a_corrupt_file_in_a_lake(tmp_path, root):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    _fails(_spec(path), root, "broken.parquet", "cannot read Parquet")
    lake = tmp_path / "lake"
    (lake / "year=2001").mkdir(parents=True)
    (lake / "year=2002").mkdir()
    PEOPLE.to_parquet(lake / "year=2001" / "part-0.parquet")
    (lake / "year=2002" / "part-0.parquet").write_bytes(b"PAR1 garbage")
    _fails(_spec(lake), root, "'year=2002/part-0.parquet' is not readable Parquet")


def test_a_partition_with_a_different_schema_names_file_and_column(tmp_path, root):
    lake = tmp_path / "lake"
    for year in (2001, 2002):
        (lake / f"year={year}").mkdir(parents=True)
    PEOPLE.to_parquet(lake / "year=2001" / "part-0.parquet")
    PEOPLE.assign(age=PEOPLE["age"].astype(str)).to_parquet(lake / "year=2002" / "part-0.parquet")
    _fails(
        _spec(lake),
        root,
        "file 'year=2002/part-0.parquet' has a different schema",
        "column 'age' is string there, int64 in 'year=2001/part-0.parquet'",
    )


def test_a_sqlite_file_that_does_not_exist_is_not_created(tmp_path, root):
    missing = tmp_path / "missing.db"
    spec = {"source": {"sql": {"url": f"sqlite:///{missing}", "table": "people"}}}
    _fails(spec, root, f"database 'sqlite:///{missing}' cannot be reached", "no such file")
    assert not missing.exists()


def test_a_database_that_cannot_be_opened(tmp_path, root):
    # SQLite's URI form skips the file check above, so the connection itself fails.
    url = f"sqlite:///file:{tmp_path}/no/such/folder.db?mode=ro&uri=true"
    spec = {"source": {"sql": {"url": url, "table": "people"}}}
    _fails(spec, root, "cannot be reached (unable to open database file)")


def test_a_file_that_is_not_a_database(tmp_path, root):
    fake = tmp_path / "fake.db"
    fake.write_text("not sqlite at all " * 100)
    spec = {"source": {"sql": {"url": f"sqlite:///{fake}", "table": "people"}}}
    _fails(spec, root, f"database 'sqlite:///{fake}'", "file is not a database")


def test_a_missing_table_and_a_bad_query(people_db, root):
    url = f"sqlite:///{people_db}"
    _fails({"source": {"sql": {"url": url, "table": "nobody"}}}, root, "table 'nobody'", url)
    spec = {"source": {"sql": {"url": url, "query": "SELECT wage FROM people"}}}
    _fails(spec, root, "source.sql.query failed", "no such column: wage")


def test_a_database_url_never_shows_its_password(root, monkeypatch):
    # The password from the environment reaches the driver, never the error that echoes the URL.
    monkeypatch.setenv("DB_PASSWORD", "s3cret")
    sql = {"url": "mysql+pymysql://ana@127.0.0.1:1/db", "table": "t", "password_env": "DB_PASSWORD"}
    message = _fails({"source": {"sql": sql}}, root, "ana@127.0.0.1:1/db")
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "place", "shown"),
    [
        ("postgresql://scott:TopSecret123@db.example/sales", "in the URL", "scott:***@db.example"),
        ("postgresql://scott:Top@Secret123@db/s", "in the URL", "postgresql://scott:***@db/s"),
        ("postgresql://scott@db/s?password=TopSecret123", "'password' parameter", "password=***"),
    ],
)
def test_a_password_in_the_database_url_is_refused_without_showing_it(root, url, place, shown):
    message = _fails(
        {"source": {"sql": {"url": url, "table": "t"}}},
        root,
        "key 'source.sql.url': put the password in the environment, not",
        place,
        shown,
    )
    assert "TopSecret123" not in message and "Secret123" not in message


def test_the_password_comes_from_the_named_environment_variable(people_db, root, monkeypatch):
    url = f"sqlite:///{people_db}"
    sql = {"url": url, "table": "people", "password_env": "DB_PASSWORD"}
    _fails({"source": {"sql": sql}}, root, "password_env", "'DB_PASSWORD' is not set")

    monkeypatch.setenv("DB_PASSWORD", "TopSecret123")  # SQLite has no password: not passed on
    with_env = run_etl({"source": {"sql": sql}}, root)
    without = run_etl({"source": {"sql": {"url": url, "table": "people"}}}, root)
    # Where the password comes from is not part of the data: the same snapshot.
    assert with_env.snapshot_id == without.snapshot_id
    written = [p.read_bytes() for p in root.rglob("*") if p.is_file()]
    assert written and not any(b"TopSecret123" in content for content in written)


def test_the_datasets_origin_never_shows_a_password(people_db, root):
    result = run_etl(
        {"source": {"sql": {"url": f"sqlite:///{people_db}", "table": "people"}}}, root
    )
    # A spec from elsewhere than the checked config: the metadata still hides the password.
    for source in (
        {"uri": "https://u:TopSecret123@h/x.csv"},
        {"sql": {"url": "mysql://u:TopSecret123@h/d"}},
    ):
        origin = snapshot_metadata(result, {"source": source})["origin"]
        assert "TopSecret123" not in origin and "u:***@h" in origin


def test_sqlalchemy_gets_the_password_from_the_environment(monkeypatch):
    from sqlalchemy import create_engine

    import components.ingest.snapshot as snapshot
    from components.common.settings.etl import SqlSource

    seen = []

    def record(url, *args, **kwargs):
        seen.append(url)
        return create_engine("sqlite://")  # an empty in-memory database: no table 't'

    monkeypatch.setattr("sqlalchemy.create_engine", record)
    monkeypatch.setenv("PGPASS_FOR_TEST", "TopSecret123")
    sql = SqlSource(
        url="postgresql://scott@db.example/sales", table="t", password_env="PGPASS_FOR_TEST"
    )
    with pytest.raises(PipelineInputError) as caught:
        snapshot._read_sql(sql)
    assert seen[0].password == "TopSecret123" and seen[0].username == "scott"
    assert "TopSecret123" not in str(caught.value)


def test_a_transform_naming_a_missing_column(people_csv, root):
    _fails(
        _spec(people_csv, {"rename": {"city": "town"}}, {"cast": {"city": "string"}}),
        root,
        "transforms[1] (cast): column 'city' is not in the data",
        "'town'",
    )
    _fails(_spec(people_csv, {"drop": ["salary"]}), root, "transforms[0] (drop)", "'salary'")
    _fails(
        _spec(people_csv, {"derive": {"name": "r", "ratio": ["debt", "wage"]}}),
        root,
        "transforms[0] (derive): column 'wage'",
    )


def test_a_failed_cast_names_column_row_and_value(tmp_path, root):
    path = tmp_path / "ages.csv"
    path.write_text("name,age\nann,34\nbob,\ncid,fifty\ndan,x\n")
    _fails(
        _spec(path, {"cast": {"age": "int64"}}),
        root,
        "transforms[0] (cast): column 'age': cannot cast to int64: row 3 holds 'fifty'",
        "2 bad values",
    )
    path.write_text("name,when\nann,2020-01-01\nbob,someday\n")
    _fails(_spec(path, {"cast": {"when": "datetime"}}), root, "row 2 holds 'someday'")
    path.write_text("name,ok\nann,yes\nbob,maybe\n")
    _fails(_spec(path, {"cast": {"ok": "bool"}}), root, "cannot cast to bool: row 2 holds 'maybe'")
    path.write_text("name,n\nann,1.5\n")
    _fails(_spec(path, {"cast": {"n": "int64"}}), root, "row 1 holds 1.5")


def test_bad_transform_arguments(people_csv, root):
    _fails(
        _spec(people_csv, {"filter": ["name", ">", 3]}),
        root,
        "transforms[0] (filter): cannot compare column 'name'",
    )
    _fails(_spec(people_csv, {"filter": ["age", "==", "old"]}), root, "'old' is text")
    _fails(
        _spec(people_csv, {"derive": {"name": "y", "date_part": ["joined", "year"]}}),
        root,
        "cast it to datetime first",
    )
    _fails(
        _spec(people_csv, {"derive": {"name": "age", "concat": ["name", "city"]}}), root, "exists"
    )
    _fails(_spec(people_csv, {"rename": {"name": "age"}}), root, "column 'age' already exists")


def test_a_filter_that_leaves_no_rows_is_named(people_csv, root):
    _fails(
        _spec(people_csv, {"filter": ["age", ">", 200]}),
        root,
        "transforms[0] (filter): ['age', '>', 200] left no rows",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": {"uri": "x.csv"}, "extra": 1}, "unknown key 'extra'"),
        ({"transforms": []}, "missing key 'source'"),
        ({"source": {}}, "exactly one of 'uri' or 'sql'"),
        ({"source": {"sql": {"url": "sqlite://"}}}, "exactly one of 'query' or 'table'"),
        ({"source": {"uri": "x"}, "transforms": [{"cast": {"a": "int"}}]}, "transforms.0.cast.a"),
        (
            {"source": {"uri": "x"}, "transforms": [{"rename": {"a": "b"}, "drop": ["c"]}]},
            "a transform is one key of rename, cast, filter, derive, drop",
        ),
        ({"source": {"uri": "x"}, "transforms": [{"filter": ["a", "in", 3]}]}, "needs a list"),
        ({"source": {"uri": "x"}, "transforms": [{"filter": ["a", "~", 3]}]}, "transforms.0"),
        (
            {
                "source": {"uri": "x"},
                "transforms": [{"derive": {"name": "b", "bins": {"column": "a", "edges": [3, 1]}}}],
            },  # noqa: E501
            "must increase strictly",
        ),
        (
            {"source": {"uri": "x"}, "transforms": [{"derive": {"name": "b"}}]},
            "exactly one of ratio, date_part, bins, concat",
        ),
        ({"source": {"uri": "x"}, "csv": {"encoding": "klingon"}}, "unknown encoding 'klingon'"),
    ],
)
def test_a_bad_spec_names_the_key(spec, message):
    with pytest.raises(PipelineInputError, match="etl spec") as caught:
        load_spec(spec)
    assert message in str(caught.value)


def test_snapshot_root_must_be_local(people_csv):
    with pytest.raises(PipelineInputError, match="snapshot_root 's3://bucket/snaps'"):
        run_etl(_spec(people_csv), "s3://bucket/snaps")


@pytest.mark.parametrize("breaks", ["write_table", "write_json"])
def test_a_failure_while_writing_leaves_nothing_behind(people_csv, root, monkeypatch, breaks):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    if breaks == "write_table":
        monkeypatch.setattr(snapshot.pq, "write_table", broken)
    else:
        monkeypatch.setattr(snapshot, "write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        run_etl(_spec(people_csv), root)
    assert _left(root) == []


# --- the KFP component ---------------------------------------------------------------------------


def _ingest_etl(spec, root, dataset):
    """The ingest step in its ETL mode, as the pipeline calls it (the data section a dict)."""
    ingest.python_func(
        data_config={"etl": spec, "snapshot_root": str(root)},
        plan=full_plan(Path(dataset.path).with_name("plan.json")),
        dataset=dataset,
    )


def test_the_component_hands_on_the_snapshot_like_ingest(people_csv, root, tmp_path):
    dataset = Dataset(uri=str(tmp_path / "artifacts" / "dataset"))
    spec = _spec(people_csv, {"cast": {"joined": "datetime"}})
    _ingest_etl(spec, root, dataset)
    frame = read_frame(dataset.path)
    result = run_etl(spec, root)  # reused: the same snapshot
    assert not result.created
    pd.testing.assert_frame_equal(frame, pd.read_parquet(result.data_path))
    meta = dataset.metadata
    assert meta["snapshot_id"] == result.snapshot_id
    assert meta["source_uri"] == result.uri and meta["origin"] == str(people_csv)
    assert meta["rows"] == len(PEOPLE) and meta["columns"] == list(PEOPLE.columns)
    assert meta["schema"]["joined"] == "timestamp[ns]"
    assert meta["bytes"] == Path(dataset.path).stat().st_size
    # The hash downstream steps (register) see is the one ingest would compute of this table.
    assert meta["content_hash"] == content_hash(frame)
    assert meta["created"] is True


def test_the_component_fails_with_one_line(tmp_path, root, capsys):
    dataset = Dataset(uri=str(tmp_path / "artifacts" / "dataset"))
    with pytest.raises(SystemExit) as caught:
        _ingest_etl(_spec(tmp_path / "nope.csv"), root, dataset)
    assert caught.value.code == 1
    assert "ingest: data source" in capsys.readouterr().err
    assert not (tmp_path / "artifacts" / "dataset").exists()
