import numpy as np
import pandas as pd
import pytest

from components.common.errors import PipelineInputError
from components.common.schema import MISSING_CATEGORY, as_model_input
from components.prepare.logic import describe_split, fit_preprocessor, split_table
from tests.conftest import make_loans


def test_split_is_reproducible_and_near_test_size(loans, loans_schema):
    # A hash rule gives each row its side on its own: test_size (and each class's share) holds
    # in expectation, within a few standard deviations (about 9 rows of 400 here).
    train, test = split_table(loans, loans_schema, 0.25, seed=7)
    again_train, _ = split_table(loans, loans_schema, 0.25, seed=7)
    assert 70 <= len(test) <= 130 and len(train) + len(test) == 400
    assert train.equals(again_train)
    overall = (loans["approved"] == "yes").mean()
    assert abs((test["approved"] == "yes").mean() - overall) < 0.15


def test_split_drops_rows_without_a_label(loans, loans_schema):
    loans.loc[:9, "approved"] = None
    train, test = split_table(loans, loans_schema, 0.25, seed=7)
    assert len(train) + len(test) == len(loans) - 10


def test_a_class_with_one_row_cannot_be_stratified(loans, loans_schema):
    loans.loc[0, "approved"] = "maybe"
    with pytest.raises(PipelineInputError, match="a class has 1 row"):
        split_table(loans, loans_schema, 0.25, seed=7)


def test_preprocessor_imputes_scales_and_encodes(loans, loans_schema):
    train, test = split_table(loans, loans_schema, 0.25, seed=7)
    transform = fit_preprocessor(train, loans_schema)
    out = transform.transform(as_model_input(test, loans_schema))
    names = list(transform.get_feature_names_out())
    assert not np.isnan(out).any()
    # Numerics are centred on the training rows.
    income = out[:, names.index("income")]
    assert abs(income.mean()) < 0.3
    # Missing categories are a category of their own, not an error.
    assert f"region_{MISSING_CATEGORY}" in names
    assert {"group_a", "group_b"} <= set(names)


def test_unknown_categories_at_serving_time_encode_as_zeros(loans, loans_schema):
    transform = fit_preprocessor(loans, loans_schema)
    row = loans.head(1).assign(region="atlantis")
    out = transform.transform(as_model_input(row, loans_schema))
    names = list(transform.get_feature_names_out())
    region_columns = [i for i, n in enumerate(names) if n.startswith("region_")]
    assert out[0, region_columns].sum() == 0


def test_model_input_needs_every_feature(loans, loans_schema):
    with pytest.raises(PipelineInputError, match="column 'region' \\(a feature\\)"):
        as_model_input(loans.drop(columns="region"), loans_schema)


# --- split strategies, on real files --------------------------------------------------------


def _read(path):
    from components.common.lake_source import resolve_source
    from components.ingest.logic import read_source

    frame, _ = read_source(resolve_source(str(path)))
    return frame


@pytest.fixture
def customers(tmp_path):
    """make_loans with a customer id (several rows each), read back from a Parquet file."""
    frame = make_loans(rows=300, seed=4)
    rng = np.random.default_rng(4)
    frame["customer"] = [f"c{i:02d}" for i in rng.integers(0, 40, len(frame))]
    frame.to_parquet(tmp_path / "customers.parquet", index=False)
    frame = _read(tmp_path / "customers.parquet")
    from components.validate.logic import validate_table

    return frame, validate_table(frame, "approved", "classification", ["group"], {})


def test_random_split_draws_rows_without_stratifying(loans, loans_schema):
    numbered = loans.assign(row=np.arange(len(loans)))
    train, test = split_table(numbered, loans_schema, 0.25, seed=7, strategy="random")
    # Every row once, each side in the table's order.
    assert sorted([*train["row"], *test["row"]]) == list(range(len(loans)))
    assert train["row"].is_monotonic_increasing and test["row"].is_monotonic_increasing
    assert train.drop(columns="row").equals(loans.iloc[train["row"]].reset_index(drop=True))
    again, _ = split_table(numbered, loans_schema, 0.25, seed=7, strategy="random")
    assert again.equals(train)
    other, _ = split_table(numbered, loans_schema, 0.25, seed=8, strategy="random")
    assert not other.equals(train)
    # Stratified is the same hash rule (each class keeps its share in expectation).
    stratified, _ = split_table(numbered, loans_schema, 0.25, seed=7)
    assert stratified.equals(train)


def test_group_split_keeps_every_group_on_one_side(customers):
    frame, schema = customers
    train, test = split_table(
        frame, schema, 0.25, seed=5, strategy="group", group_column="customer"
    )
    assert not set(train["customer"]) & set(test["customer"])
    assert len(train) + len(test) == len(frame)
    assert 0 < test["customer"].nunique() < frame["customer"].nunique()
    # A group's side is its own: without a third of the groups, the rest stay where they were.
    kept = frame[~frame["customer"].isin(sorted(set(frame["customer"]))[::3])]
    kept_train, kept_test = split_table(
        kept, schema, 0.25, seed=5, strategy="group", group_column="customer"
    )
    assert set(kept_test["customer"]) == set(test["customer"]) & set(kept["customer"])
    assert set(kept_train["customer"]) == set(train["customer"]) & set(kept["customer"])
    summary = describe_split(train, test, "group", "customer")
    assert summary == (
        f"group split by 'customer': {train['customer'].nunique()} groups in training, "
        f"{test['customer'].nunique()} in test, none in both"
    )


def test_time_split_puts_the_newest_partitions_in_test(demo_lake):
    frame = _read(demo_lake)  # a Hive-partitioned lake: year comes from the folder names
    from components.validate.logic import validate_table

    schema = validate_table(frame, "released", "classification", ["colour"], {})
    train, test = split_table(frame, schema, 0.2, seed=0, strategy="time", time_column="year")
    assert train["year"].max() < test["year"].min()
    # Whole years on each side, the number of newest years whose share is nearest 0.2.
    counts = frame["year"].value_counts().sort_index(ascending=False)
    shares = counts.cumsum()[:-1] / len(frame)
    newest = shares.index[: int(np.argmin(np.abs(shares - 0.2))) + 1]
    assert set(test["year"]) == set(newest)
    assert len(test) == counts[newest].sum()
    assert describe_split(train, test, "time", "", "year") == (
        f"time split by 'year': training up to {train['year'].max()}, "
        f"test from {test['year'].min()}"
    )


def test_time_split_never_splits_a_timestamp(tmp_path):
    # Three days of 50, 30 and 20 rows: the newest day alone (20%) is nearer 0.3 than two (50%).
    days = ["2024-03-01"] * 50 + ["2024-03-02"] * 30 + ["2024-03-03"] * 20
    frame = pd.DataFrame({"day": days, "x": np.arange(100.0), "label": ["a", "b"] * 50}).sample(
        frac=1, random_state=0
    )
    frame.to_csv(tmp_path / "days.csv", index=False)
    frame = _read(tmp_path / "days.csv")
    from components.validate.logic import validate_table

    schema = validate_table(frame, "label", "classification", [], {})
    train, test = split_table(frame, schema, 0.3, seed=0, strategy="time", time_column="day")
    assert set(test["day"]) == {"2024-03-03"} and len(test) == 20
    assert set(train["day"]) == {"2024-03-01", "2024-03-02"}


def test_time_split_reads_dates_written_as_text(tmp_path):
    # Not ISO 8601: text order (01/..., 02/..., 12/...) is not time order.
    dates = pd.date_range("2023-01-01", periods=120, freq="3D")
    frame = pd.DataFrame(
        {"when": dates.strftime("%m/%d/%Y"), "x": np.arange(120.0), "label": ["a", "b"] * 60}
    )
    frame.to_csv(tmp_path / "when.csv", index=False)
    frame = _read(tmp_path / "when.csv")
    from components.validate.logic import validate_table

    schema = validate_table(frame, "label", "classification", [], {})
    train, test = split_table(frame, schema, 0.25, seed=0, strategy="time", time_column="when")
    assert len(test) == 30
    assert pd.to_datetime(train["when"]).max() < pd.to_datetime(test["when"]).min()
    assert set(test["x"]) == set(np.arange(90.0, 120.0))


@pytest.mark.parametrize(
    ("kwargs", "edit", "message"),
    [
        ({"strategy": "shuffle"}, None, "split.strategy: Input should be"),
        ({"strategy": "group"}, None, "split: strategy group needs group_column"),
        ({"strategy": "time"}, None, "split: strategy time needs time_column"),
        ({"group_column": "customer"}, None, "group_column is only used by strategy group"),
        ({"strategy": "group", "group_column": "shop"}, None, "split.group_column: column 'shop'"),
        ({"strategy": "time", "time_column": "approved"}, None, "column 'approved' is the target"),
        (
            {"strategy": "group", "group_column": "region"},
            None,
            "split.group_column: column 'region' has \\d+ labelled rows without a group",
        ),
        (
            {"strategy": "group", "group_column": "customer"},
            lambda f: f.assign(customer="c00"),
            "split.group_column: column 'customer' has 1 group",
        ),
        (
            {"strategy": "time", "time_column": "customer"},
            None,
            "split.time_column: column 'customer' holds values that are neither numbers nor dates",
        ),
        (
            {"strategy": "time", "time_column": "age"},
            lambda f: f.assign(age=30),
            "split.time_column: column 'age' has one value",
        ),
        (
            {"strategy": "time", "time_column": "age"},
            lambda f: f.assign(age=np.where(f["approved"] == "yes", 1, 2)),
            "split.strategy time: the training rows hold one class of 'approved'",
        ),
    ],
)
def test_bad_split_settings_are_one_line_naming_the_key(customers, kwargs, edit, message):
    frame, schema = customers
    frame = edit(frame) if edit else frame
    with pytest.raises(PipelineInputError, match=message) as caught:
        split_table(frame, schema, 0.25, 0, **kwargs)
    assert "\n" not in str(caught.value)


# --- the KFP component ----------------------------------------------------------------------


def _run_component(tmp_path, frame, schema, **parameters):
    import json

    from kfp.dsl import Artifact, Dataset, Model

    from components.prepare.component import prepare

    frame.to_parquet(tmp_path / "dataset.parquet", index=False)
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    outputs = {
        "train": Dataset(uri=str(tmp_path / "out" / "train")),
        "test": Dataset(uri=str(tmp_path / "out" / "test")),
        "preprocessor": Model(uri=str(tmp_path / "out" / "preprocessor")),
    }
    result = prepare.python_func(
        dataset=Dataset(uri=str(tmp_path / "dataset.parquet")),
        schema=Artifact(uri=str(tmp_path / "schema.json")),
        **outputs,
        prepare_config=parameters.get("prepare_config", {}),
        split_config={"test_size": 0.25, "seed": 3, **parameters.get("split_config", {})},
    )
    return result, outputs


def test_component_applies_options_and_split_strategy(tmp_path, customers, capsys):
    import joblib

    frame, schema = customers
    options = {
        "exclude": ["customer"],
        "outliers": {"method": "quantile", "action": "drop", "quantiles": [0.0, 0.9]},
        "derived": [{"name": "age_band", "bins": {"column": "age", "edges": [18, 40, 60]}}],
    }
    result, outputs = _run_component(
        tmp_path,
        frame,
        schema,
        prepare_config=options,
        split_config={"strategy": "group", "group_column": "customer"},
    )
    train = pd.read_parquet(outputs["train"].path)
    test = pd.read_parquet(outputs["test"].path)
    assert (result.train_rows, result.test_rows) == (len(train), len(test))
    assert not set(train["customer"]) & set(test["customer"])
    dropped = outputs["train"].metadata["outlier_rows_dropped"]
    assert dropped > 0 and len(train) + len(test) + dropped == len(frame)
    transform = joblib.load(outputs["preprocessor"].path)
    names = list(transform.get_feature_names_out())
    assert "age_band_[18, 40)" in names and not any(n.startswith("customer") for n in names)
    assert transform.transform(as_model_input(test, schema)).shape == (len(test), len(names))
    out = capsys.readouterr().out
    assert (
        f"[mlpipe] prepare: {len(train)} training rows, {len(test)} test rows (group split" in out
    )
    assert f"; {dropped} training rows dropped as outliers" in out


def test_component_defaults_are_the_former_step(tmp_path, customers, capsys):
    import joblib

    frame, schema = customers
    result, outputs = _run_component(tmp_path, frame, schema)
    expected_train, _ = split_table(frame, schema, 0.25, 3)
    train = pd.read_parquet(outputs["train"].path)
    pd.testing.assert_frame_equal(train, expected_train)
    transform = joblib.load(outputs["preprocessor"].path)
    assert joblib.hash(transform) == joblib.hash(fit_preprocessor(expected_train, schema))
    out = capsys.readouterr().out
    assert f"[mlpipe] prepare: {len(train)} training rows, {result.test_rows} test rows\n" in out


def test_component_records_the_split_in_both_sides_metadata(tmp_path, customers):
    frame, schema = customers
    _, outputs = _run_component(tmp_path, frame, schema)
    record = outputs["train"].metadata["split"]
    assert record == outputs["test"].metadata["split"]
    assert record == {
        "strategy": "stratified",
        "seed": 3,
        "test_size": 0.25,
        "key_columns": [],
        "group_column": "",
        "time_column": "",
        "time_cutoff": None,
        "hashed_columns": sorted(set(frame.columns) - {"approved"}),
        "rule": "hash-v1",
    }
    timed = frame.assign(day=np.arange(len(frame)) // 10)
    (tmp_path / "time").mkdir()
    _, outputs = _run_component(
        tmp_path / "time", timed, schema, split_config={"strategy": "time", "time_column": "day"}
    )
    train = pd.read_parquet(outputs["train"].path)
    record = outputs["train"].metadata["split"]
    assert record["time_cutoff"] == train["day"].max() == 22 and record["hashed_columns"] == []


def test_component_bad_option_is_one_line_and_exit_1(tmp_path, customers, capsys):
    frame, schema = customers
    with pytest.raises(SystemExit) as caught:
        _run_component(tmp_path, frame, schema, prepare_config={"log_transform": ["region"]})
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "[mlpipe] ERROR prepare: prepare.log_transform: column 'region' is not numeric"
    ]
    assert not (tmp_path / "out" / "train").exists()


def test_the_component_takes_its_config_sections_as_one_struct_each(tmp_path):
    import yaml
    from kfp import compiler

    from components.prepare.component import prepare

    compiler.Compiler().compile(prepare, package_path=str(tmp_path / "prepare.yaml"))
    spec = yaml.safe_load((tmp_path / "prepare.yaml").read_text())
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert {name: p["parameterType"] for name, p in parameters.items()} == {
        "prepare_config": "STRUCT",
        "split_config": "STRUCT",
    }
