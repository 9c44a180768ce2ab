"""The synthetic lake: deterministic by seed, written in chunks, with the properties scale tests
rely on (partitions, missing values, outliers, rare and many-valued categories, a learnable
target, sensitive attributes)."""

import math

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from components.common.drift import compare
from components.common.errors import PipelineInputError
from components.common.lake_source import resolve_source
from components.common.profile import profile_frame
from components.ingest import synthetic
from components.ingest.logic import read_source
from components.ingest.synthetic import COLUMNS, PARTITION, SENSITIVE, TARGET, generate
from components.validate.contract import check_contract, infer_contract

ROWS, CHUNK = 20_000, 6_000


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "lake"
    info = generate(ROWS, path, seed=7, partitions=4, chunk_rows=CHUNK)
    return path, info


@pytest.fixture(scope="module")
def frame(lake):
    return ds.dataset(lake[0], partitioning="hive").to_table().to_pandas()


def _partition_tables(path):
    return {
        p.relative_to(path).as_posix(): pq.read_table(p) for p in sorted(path.rglob("*.parquet"))
    }


def test_the_lake_is_hive_partitioned_with_one_row_group_per_chunk(lake, frame):
    path, info = lake
    assert info["files"] == [f"{PARTITION}=r0{i}/part-0.parquet" for i in range(4)]
    assert len(frame) == ROWS == info["rows"]
    assert sorted(frame[PARTITION].unique()) == ["r00", "r01", "r02", "r03"]
    assert list(frame.columns) == [*COLUMNS, PARTITION] == info["columns"]
    assert len(COLUMNS) >= 20
    for file in info["files"]:
        # Written chunk by chunk: the whole table never had to be in memory.
        assert pq.ParquetFile(path / file).metadata.num_row_groups == math.ceil(ROWS / CHUNK)
    # Our own ingest reads it as a lake, region and all.
    ingested, _ = read_source(resolve_source(str(path)))
    assert len(ingested) == ROWS
    assert ingested[PARTITION].cat.categories.tolist() == ["r00", "r01", "r02", "r03"]


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_values(lake, tmp_path):
    path, _ = lake
    generate(ROWS, tmp_path / "again", seed=7, partitions=4, chunk_rows=CHUNK)
    for name, table in _partition_tables(path).items():
        assert (tmp_path / "again" / name).read_bytes() == (path / name).read_bytes()
        assert pq.read_table(tmp_path / "again" / name).equals(table)
    generate(ROWS, tmp_path / "other", seed=8, partitions=4, chunk_rows=CHUNK)
    other = ds.dataset(tmp_path / "other", partitioning="hive").to_table()
    assert not other.column("income").equals(
        ds.dataset(path, partitioning="hive").to_table().column("income")
    )


def test_a_smaller_run_is_a_prefix_of_a_larger_one(lake, tmp_path):
    path, _ = lake
    generate(2 * CHUNK, tmp_path / "small", seed=7, partitions=4, chunk_rows=CHUNK)
    big = _partition_tables(path)
    for name, table in _partition_tables(tmp_path / "small").items():
        assert big[name].slice(0, table.num_rows).equals(table)


def test_missing_values_are_a_few_percent_in_features_and_none_in_the_target(frame):
    shares = frame.isna().mean()
    assert shares[TARGET] == 0 and shares["sex"] == 0 and shares[PARTITION] == 0
    features = [c for c in COLUMNS if c not in synthetic.COMPLETE]
    assert len(features) >= 15
    for column in features:
        assert 0.01 <= shares[column] <= 0.06, column
    assert 0.02 <= shares[features].mean() <= 0.05


def test_skewed_numbers_with_outliers(frame):
    income = frame["income"].dropna()
    assert income.mean() > income.median()  # skewed to the right
    # A few incomes far outside the bulk: over 20 times the median, and past Tukey's fence.
    q1, q3 = income.quantile([0.25, 0.75])
    far = income > q3 + 3 * (q3 - q1)
    assert 0 < far.mean() < 0.02 and income.max() > 20 * income.median()
    assert (frame["balance"] < -20_000).sum() > 0  # data-entry errors, negative
    assert frame["transaction_amount"].max() > 20 * frame["transaction_amount"].median()


def test_categories_rare_and_many_valued_and_sensitive_attributes(frame):
    products = frame["product"].value_counts(normalize=True)
    rare = products[products < 0.005]
    assert len(rare) >= 2 and set(rare.index) >= {"p10", "p11"}
    assert frame["postcode"].nunique() > 200  # more than a contract keeps a category set for
    assert set(frame["sex"]) == {"female", "male", "other"}
    assert list(SENSITIVE) == ["sex", "age"]
    assert 18 <= frame["age"].min() and frame["age"].max() <= 95


def test_the_target_is_learnable_from_the_features(frame):
    numeric = ["income", "debt", "credit_score", "late_payments", "utilization", "age"]
    features = frame[numeric].fillna(frame[numeric].median())
    features = features.assign(ratio=features["debt"] / features["income"])
    train_x, test_x, train_y, test_y = train_test_split(
        features, frame[TARGET], test_size=0.3, random_state=0, stratify=frame[TARGET]
    )
    model = LogisticRegression(max_iter=2000).fit(
        (train_x - train_x.mean()) / train_x.std(), train_y
    )
    scores = model.predict_proba((test_x - train_x.mean()) / train_x.std())[:, 1]
    assert roc_auc_score(test_y, scores) > 0.65
    assert 0.1 < frame[TARGET].mean() < 0.5
    # The sensitive attribute has an effect of its own, for bias analysis to find.
    rates = frame.groupby("sex")[TARGET].mean()
    assert rates["male"] > rates["female"]


def test_the_data_meets_the_contract_inferred_from_it(frame):
    # 6,000 rows: null rates such as 116/6000 have more decimals than the contract keeps.
    sample = frame.head(6000)
    contract = infer_contract(sample)
    assert check_contract(sample, contract) == []
    assert "categories" not in contract["columns"]["postcode"]  # too many values to list
    assert contract["columns"]["product"]["categories"] == [f"p{i:02d}" for i in range(12)]


def test_bad_arguments_and_an_occupied_folder(tmp_path):
    with pytest.raises(PipelineInputError, match="partitions"):
        generate(10, tmp_path / "a", partitions=0)
    with pytest.raises(PipelineInputError, match="rows"):
        generate(0, tmp_path / "a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(PipelineInputError, match="already exists and is not empty"):
        generate(10, tmp_path / "full")


def test_an_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real = synthetic._chunk

    def failing(seed, number, rows, regions):
        if number == 1:
            raise KeyboardInterrupt
        return real(seed, number, rows, regions)

    monkeypatch.setattr(synthetic, "_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        generate(300, tmp_path / "lake", chunk_rows=100)
    assert list(tmp_path.iterdir()) == []


# --- Known changes for drift benchmarks -----------------------------------------------------


def _profile_of(table, features):
    schema = {
        "task": "classification",
        "features": [
            {"name": name, "kind": "numeric" if name in NUMBERS else "categorical"}
            for name in features
        ],
    }
    return profile_frame(table.to_pandas(), schema)


NUMBERS = {"income", "balance"}


@pytest.mark.parametrize("feature", ["income", "balance", "channel", "marital_status"])
def test_a_shift_has_about_the_psi_asked_for_and_leaves_the_rest_alone(feature):
    reference = _profile_of(synthetic.make_table(50_000, seed=1), [feature])
    plain = synthetic.make_table(50_000, seed=2)
    shifted = synthetic.make_table(50_000, seed=2, shifts={feature: 0.2})
    window = shifted.to_pandas()
    drift = compare(reference, window[[feature]], alpha=0.05, min_psi=0.1)
    assert drift.column(feature).psi == pytest.approx(0.2, abs=0.03)
    assert drift.drifted == [feature]
    unshifted = compare(reference, plain.to_pandas()[[feature]])
    assert unshifted.column(feature).psi < 0.01 and unshifted.drifted == []
    for name in plain.column_names:
        if name not in (feature, TARGET):
            assert shifted[name].equals(plain[name]), name
    # Missing values stay missing.
    assert shifted[feature].null_count == plain[feature].null_count


def test_a_shift_keeps_the_label_relation():
    # Labels are drawn from the shifted values: a higher debt raises the default rate.
    plain = synthetic.make_table(40_000, seed=4).to_pandas()
    shifted = synthetic.make_table(40_000, seed=4, shifts={"debt": 0.5}).to_pandas()
    assert shifted[TARGET].mean() > plain[TARGET].mean() + 0.01


def test_a_changed_label_relation_keeps_the_features_and_changes_the_labels():
    plain = synthetic.make_table(40_000, seed=3)
    changed = synthetic.make_table(40_000, seed=3, relation="changed")
    for name in plain.column_names:
        if name != TARGET:
            assert changed[name].equals(plain[name]), name
    frame, other = plain.to_pandas(), changed.to_pandas()
    # The credit score lowered the chance of default; now it raises it.
    assert frame["credit_score"].corr(frame[TARGET]) < -0.05
    assert other["credit_score"].corr(other[TARGET]) > 0.05


def test_the_default_rows_are_unchanged_by_the_new_options(lake, tmp_path):
    path, _ = lake
    generate(ROWS, tmp_path / "same", seed=7, partitions=4, chunk_rows=CHUNK, relation="reference")
    assert _partition_tables(tmp_path / "same") == _partition_tables(path)
    shifted = generate(
        ROWS, tmp_path / "shifted", seed=7, partitions=4, chunk_rows=CHUNK, shifts={"income": 0.2}
    )
    frame = ds.dataset(shifted["path"], partitioning="hive").to_table().to_pandas()
    original = ds.dataset(path, partitioning="hive").to_table().to_pandas()
    assert frame["income"].median() > original["income"].median()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"shifts": {"nope": 0.2}}, "nope"),
        ({"shifts": {TARGET: 0.2}}, TARGET),
        ({"shifts": {"income": 0}}, "income"),
        ({"shifts": {"age": 0.2}}, "age"),
        ({"relation": "other"}, "relation"),
    ],
)
def test_bad_changes_are_one_line_errors(arguments, named):
    with pytest.raises(PipelineInputError) as error:
        synthetic.make_table(100, **arguments)
    assert named in str(error.value) and "\n" not in str(error.value)
