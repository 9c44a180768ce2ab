"""What makes ingest and prepare fit 10 million rows in memory and time
(benchmarks/ingest_scale.py), held to the results of the plain way: text as categoricals from
ingest, hashes and row takes column by column on every core, a random split that reads each
side in row order, and a preprocessor fit that never builds the whole output matrix nor
a string per row for an encoder."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.impute import SimpleImputer

import components.common.columnwise as columnwise
import components.common.schema as schema
import components.ingest.logic as ingest_logic
import components.prepare.fitting as fitting
from components.common.columnwise import take_rows
from components.common.lake_source import resolve_source
from components.common.schema import as_model_input
from components.common.stable_split import hashed_is_test, row_hashes
from components.common.transformers import NumericImputer
from components.ingest.logic import content_hash, read_source
from components.prepare.logic import build_preprocessor, fit_preprocessor, split_table
from components.validate.contract import check_contract, infer_contract
from components.validate.logic import validate_table
from tests.components.test_prepare_options import DERIVED, make_table

EVERY_OPTION = {
    "numeric": {"impute": "mean", "missing_indicator": True, "scale": "robust"},
    "categorical": {"rare_min_frequency": 20, "missing_indicator": True},
    "outliers": {"method": "iqr", "action": "clip"},
    "log_transform": ["debt"],
    "derived": DERIVED,
    "columns": {"city": {"encode": "ordinal"}, "income": {"scale": "minmax"}},
}


@pytest.fixture
def table(tmp_path):
    frame = make_table(rows=3000, seed=5)
    frame.loc[::7, "city"] = None  # missing text, for the token and the indicators
    path = tmp_path / "table.parquet"
    frame.to_parquet(path, index=False)
    ingested, _ = read_source(resolve_source(str(path)))
    return frame, ingested


def test_ingest_reads_text_as_categoricals_with_the_same_values_and_hash(table):
    frame, ingested = table
    assert isinstance(ingested["city"].dtype, pd.CategoricalDtype)
    assert ingested["city"].astype(object).where(ingested["city"].notna(), None).tolist() == (
        frame["city"].tolist()
    )
    # Numbers stay numbers; the hash does not depend on how the text is held.
    assert ingested["age"].dtype == frame["age"].dtype
    assert content_hash(ingested) == content_hash(ingested.astype({"city": object}))


def test_the_contract_of_categoricals_is_the_contract_of_strings(table):
    _, ingested = table
    as_text = ingested.astype(
        {c: object for c, t in ingested.dtypes.items() if isinstance(t, pd.CategoricalDtype)}
    )
    assert infer_contract(ingested) == infer_contract(as_text)
    contract = infer_contract(ingested)
    contract["columns"]["city"]["categories"].remove("paris")
    found = check_contract(ingested, contract)
    assert found == check_contract(as_text, contract)
    assert [(a["kind"], a["column"]) for a in found] == [("unseen_category", "city")]


def test_model_input_of_categoricals_equals_that_of_strings(table):
    _, ingested = table
    schema = validate_table(ingested, "approved", "classification", ["group"], {})
    as_text = ingested.astype({"city": object})
    pd.testing.assert_frame_equal(as_model_input(ingested, schema), as_model_input(as_text, schema))


def test_split_keeps_each_row_once_with_its_values(table):
    _, ingested = table
    ingested.loc[ingested.index[:40], "approved"] = np.nan  # unlabelled rows are dropped
    schema = validate_table(ingested, "approved", "classification", ["group"], {})
    train, test = split_table(ingested, schema, 0.25, seed=1)
    assert list(train.index) == list(range(len(train)))
    assert len(train) + len(test) == len(ingested) - 40
    both = pd.concat([train, test])
    labelled = ingested.dropna(subset=["approved"])
    assert sorted(map(tuple, both.astype(str).values)) == sorted(
        map(tuple, labelled.astype(str).values)
    )


@pytest.mark.parametrize(
    ("options", "in_chunks"),
    [
        ({}, [True]),
        # Clipping before every imputer; then two encoders that count (rare categories) and the
        # categorical indicator, which no chunked fit takes either.
        (EVERY_OPTION, [False] * 6),
        ({"categorical": {"encode": "ordinal", "missing_indicator": True}}, [True, False]),
        (
            {
                "numeric": {"missing_indicator": True, "scale": "minmax"},
                "columns": {
                    "income": {"impute": "constant", "fill_value": -1},
                    "debt": {"impute": "mean"},  # a mean is not taken column by column
                },
            },
            [True, True, False],
        ),
    ],
    ids=["defaults", "every-option", "ordinal-without-grouping", "indicators-minmax-constant"],
)
def test_fit_without_output_is_the_plain_fit(table, options, in_chunks, monkeypatch):
    _, ingested = table
    # A layout sample smaller than the rarest category's first appearance: the layout must come
    # from the branches fitted on every row, not from the sample.
    monkeypatch.setattr(fitting, "LAYOUT_ROWS", 5)
    # Chunks of 100 of the 2,250 training rows, the last one shorter, for the scalers.
    monkeypatch.setattr(fitting, "CHUNK_ROWS", 100)
    chunked = []
    fit_in_chunks = fitting._fit_in_chunks
    monkeypatch.setattr(
        fitting,
        "_fit_in_chunks",
        lambda branch, part: chunked.append(fit_in_chunks(branch, part)) or chunked[-1],
    )
    schema = validate_table(ingested, "approved", "classification", ["group"], {})
    train, test = split_table(ingested, schema, 0.25, seed=3)
    assert set(train["city"].iloc[:5].dropna()) < set(train["city"].dropna())

    lean = fit_preprocessor(train, schema, options)
    plain = build_preprocessor(schema, options).fit(as_model_input(train, schema))

    rows = as_model_input(test, schema)
    assert list(lean.get_feature_names_out()) == list(plain.get_feature_names_out())
    # A mean and variance learnt chunk by chunk are the whole rows' to within rounding.
    np.testing.assert_allclose(lean.transform(rows), plain.transform(rows), rtol=1e-12, atol=1e-12)
    # The same estimator to clone (tune and train refit a clone of prepare's transform).
    assert repr(clone(lean).get_params()) == repr(clone(plain).get_params())
    refit = clone(lean).fit(as_model_input(train, schema))
    np.testing.assert_array_equal(refit.transform(rows), plain.transform(rows))
    # Which branches (other than encoders fitted on one row per value) were fitted in chunks: a
    # NumericImputer with a median or a constant first, then steps with partial_fit.
    # (The branches are fitted on threads, in no fixed order.)
    assert sorted(branch is not None for branch in chunked) == sorted(in_chunks)


def test_a_categorical_label_splits_as_its_strings(table):
    # Stratification numbers the classes in sorted order, whatever order a categorical's
    # categories are in: the same rows go to each side as with plain strings.
    frame, _ = table
    labels = frame["approved"].astype(str)
    as_text = frame.assign(approved=labels.astype(object))
    as_categories = frame.assign(approved=pd.Categorical(labels, categories=["yes", "no"]))
    schema = validate_table(as_text, "approved", "classification", ["group"], {})
    for seed in (1, 2):
        text_train, text_test = split_table(as_text, schema, 0.25, seed)
        category_train, category_test = split_table(as_categories, schema, 0.25, seed)
        pd.testing.assert_series_equal(text_train["income"], category_train["income"])
        pd.testing.assert_series_equal(text_test["income"], category_test["income"])


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
@pytest.mark.parametrize("keep_empty_features", [False, True])
@pytest.mark.parametrize("add_indicator", [False, True])
def test_numeric_imputer_is_simple_imputer_with_a_faster_median(keep_empty_features, add_indicator):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(1001, 5))
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, 2] = np.nan  # a column without any value
    X[:500, 4] = 3.0  # ties, and an even count of values in a column
    X[500, 4] = np.nan
    for strategy in ("median", "mean", "most_frequent", "constant"):
        settings = {
            "strategy": strategy,
            "add_indicator": add_indicator,
            "keep_empty_features": keep_empty_features,
        }
        ours, theirs = NumericImputer(**settings).fit(X), SimpleImputer(**settings).fit(X)
        np.testing.assert_array_equal(  # float: NaN equals NaN only outside object arrays
            ours.statistics_.astype(float), theirs.statistics_.astype(float)
        )
        np.testing.assert_array_equal(ours.transform(X), theirs.transform(X))
        assert list(ours.get_feature_names_out()) == list(theirs.get_feature_names_out())


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf - inf, as in numpy
def test_numeric_imputers_median_is_numpys():
    # Odd and even counts, ties, infinities, signed zeros, float32: the same value. (Of a tie of
    # -0.0 and 0.0, the one that lands in the middle is the selection's choice, as in numpy.)
    rng = np.random.default_rng(6)
    imputer = NumericImputer()
    for _ in range(300):
        count = int(rng.integers(1, 60))
        values = rng.choice([-np.inf, -2.5, -0.0, 0.0, 1e-300, 3.0, 7.25, np.inf], count)
        if rng.random() < 0.5:
            values = rng.normal(size=count)
        if rng.random() < 0.3:
            values = values.astype(np.float32)
        expected = np.median(values)
        ours = imputer._median(values.copy())
        assert np.array_equal(ours, expected, equal_nan=True), (values, ours, expected)
        assert isinstance(ours, float)


@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
@pytest.mark.parametrize("keep_empty_features", [False, True])
@pytest.mark.parametrize("add_indicator", [False, True])
def test_numeric_imputer_fitted_column_by_column_is_simple_imputers_fit(
    keep_empty_features, add_indicator
):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1001, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, 2] = np.nan  # a column without any value
    X[0, 1], X[1:, 3] = np.nan, 7.0  # missing in the first row only; no missing value at all
    frame = pd.DataFrame(X, columns=["a", "b", "empty", "full"]).assign(
        count=rng.integers(0, 9, len(X))  # integers, which SimpleImputer makes floats of
    )
    for strategy, fill_value in (("median", None), ("constant", -1.5)):
        settings = {
            "strategy": strategy,
            "fill_value": fill_value,
            "add_indicator": add_indicator,
            "keep_empty_features": keep_empty_features,
        }
        ours = NumericImputer(**settings)
        assert ours.fits_by_column(frame)
        theirs = SimpleImputer(**settings).fit(frame)
        ours.fit(frame)
        np.testing.assert_array_equal(  # float: NaN equals NaN only outside object arrays
            ours.statistics_.astype(float), theirs.statistics_.astype(float)
        )
        assert ours.statistics_.dtype == theirs.statistics_.dtype
        np.testing.assert_array_equal(ours.transform(frame), theirs.transform(frame))
        assert list(ours.get_feature_names_out()) == list(theirs.get_feature_names_out())
        assert ours._fill_dtype == theirs._fill_dtype == np.float64
        if add_indicator:
            np.testing.assert_array_equal(ours.indicator_.features_, theirs.indicator_.features_)
        # Filling an array in place is its transform when it keeps every column (here: when
        # the column without values is kept) and adds no indicator.
        assert ours.fills_in_place() == (keep_empty_features and not add_indicator)
        if ours.fills_in_place():
            rows = frame.to_numpy(dtype=np.float64, copy=True)
            np.testing.assert_array_equal(ours.fill(rows), theirs.transform(frame))
    # What it leaves to SimpleImputer's fit: other strategies, arrays, other types.
    assert not NumericImputer(strategy="mean").fits_by_column(frame)
    assert not NumericImputer().fits_by_column(X)
    assert not NumericImputer().fits_by_column(frame.astype(np.float32))
    assert not NumericImputer().fits_by_column(frame[["count"]])  # integers only
    assert not NumericImputer().fits_by_column(frame.iloc[:0])


def test_csv_and_parquet_text_reach_later_steps_alike(tmp_path):
    frame = make_table(rows=200, seed=2)
    frame.loc[::9, "city"] = None
    frame = frame.drop(columns=["signup"])  # dates: CSV gives text, Parquet datetimes
    # Short decimals: pandas' CSV parser does not round-trip every float's last bit.
    frame[["income", "debt", "balance"]] = frame[["income", "debt", "balance"]].round(2)
    frame.to_csv(tmp_path / "table.csv", index=False)
    frame.to_parquet(tmp_path / "table.parquet", index=False)
    from_csv, _ = read_source(resolve_source(str(tmp_path / "table.csv")))
    from_parquet, _ = read_source(resolve_source(str(tmp_path / "table.parquet")))
    for read in (from_csv, from_parquet):
        assert isinstance(read["city"].dtype, pd.CategoricalDtype)
        assert pd.api.types.is_float_dtype(read["income"])
    assert content_hash(from_csv) == content_hash(from_parquet)
    schema = validate_table(from_csv, "approved", "classification", ["group"], {})
    assert schema == validate_table(from_parquet, "approved", "classification", ["group"], {})
    pd.testing.assert_frame_equal(
        as_model_input(from_csv, schema), as_model_input(from_parquet, schema)
    )


def test_the_content_hash_follows_the_values_not_how_they_are_held(monkeypatch):
    rng = np.random.default_rng(8)
    frame = pd.DataFrame(
        {
            "number": rng.normal(size=500),
            "count": rng.integers(0, 9, 500),
            "text": pd.Categorical(rng.choice(["a", "b", None], 500)),
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 9, 500), "D"),
            "zoned": pd.date_range("2024-01-01", periods=500, freq="h", tz="Europe/Paris"),
            "flag": rng.random(500) < 0.5,
            "codes": pd.Categorical(rng.choice([3, 1, 2], 500)),
            "nullable": pd.array(rng.integers(0, 3, 500), dtype="Int64"),
            "lists": [[i % 3] for i in range(500)],  # unhashable: each value's pickle
        }
    )
    frame.loc[::7, "number"] = np.nan
    reference = content_hash(frame)
    # The same values, held otherwise: strings, categories in another order, unused ones; and
    # hashed on any number of threads.
    text = frame["text"]
    for same in (
        frame.assign(text=text.astype(object)),
        frame.assign(text=text.cat.set_categories(["b", "zzz", "a"])),
        frame.assign(codes=frame["codes"].cat.reorder_categories([3, 2, 1])),
    ):
        assert content_hash(same) == reference
    for threads in (1, 3):
        monkeypatch.setattr(columnwise, "thread_count", lambda threads=threads: threads)
        assert content_hash(frame) == reference
    monkeypatch.setattr(ingest_logic, "COUNT_ROWS", 7)  # text renumbered 7 rows at a time
    assert content_hash(frame) == reference
    monkeypatch.undo()
    # Any one value changed, a value missing, a row moved, a name or a type: another hash.
    row = frame.loc[3]
    other = {
        "number": row["number"] + 1,
        "count": row["count"] + 1,
        "text": "a" if row["text"] != "a" else "b",
        "when": row["when"] + pd.Timedelta("1D"),
        "zoned": row["zoned"] + pd.Timedelta("1h"),
        "flag": not row["flag"],
        "codes": 1 if row["codes"] != 1 else 2,
        "nullable": row["nullable"] + 1,
        "lists": [99],
    }
    changed = []
    for column, value in other.items():
        edited = frame.copy()
        edited.at[3, column] = value
        changed.append(edited)
    changed += [
        frame.assign(text=text.where(text != "a")),
        frame.iloc[::-1].reset_index(drop=True),
        frame.rename(columns={"count": "counts"}),
        frame.astype({"count": "int32"}),
        frame.iloc[:-1],
    ]
    hashes = [content_hash(edited) for edited in changed]
    assert reference not in hashes and len(set(hashes)) == len(hashes)


def test_take_rows_is_dataframe_take_renumbered():
    rng = np.random.default_rng(9)
    frame = pd.DataFrame(
        {
            "number": rng.normal(size=300),
            "text": pd.Categorical(rng.choice(["a", "b", None], 300)),
            "count": pd.array(rng.integers(0, 5, 300), dtype="Int64"),
            "when": pd.date_range("2024-01-01", periods=300, tz="UTC"),
            "word": rng.choice(["x", "y"], 300).astype(object),
        },
        index=rng.permutation(300),  # not 0..n-1: the rows are taken by position
    )
    frame.columns = ["number", "text", "count", "when", "number"]  # a repeated name
    positions = rng.permutation(300)[:200]
    pd.testing.assert_frame_equal(
        take_rows(frame, positions), frame.take(positions).reset_index(drop=True)
    )


def test_every_row_is_equally_likely_on_the_test_side():
    # Over 2,000 seeds, each of 40 rows is a test row about a quarter of the time: no row or
    # place in the table is favoured by the hash rule (components.common.stable_split).
    frame = pd.DataFrame({"number": np.arange(40) * 1.5, "text": [f"r{i % 7}" for i in range(40)]})
    seeds = 2000
    times_in_test = np.zeros(len(frame))
    for seed in range(seeds):
        times_in_test += hashed_is_test(row_hashes(frame, ["number", "text"], seed), 0.25)
    share = times_in_test / seeds
    # 0.25 of 2,000 draws: a standard deviation of about 0.01; 5 of them is 0.05.
    assert np.abs(share - 0.25).max() < 0.05


def test_an_encoder_fitted_on_the_codes_knows_the_strings_a_plain_fit_knows():
    # Categories that read as one string, one that reads as the missing token, unused ones and
    # missing values: the categorical the fit uses holds as_model_input's strings, row by row.
    values = pd.Series(
        pd.Categorical(
            [1, "1", schema.MISSING_CATEGORY, None, "b", 1],
            categories=[1, "1", schema.MISSING_CATEGORY, "b", "unused"],
        )
    )
    coded = schema.coded_with_token(values)
    assert coded.astype(object).tolist() == schema.text_with_token(values).tolist()
    assert list(coded.cat.categories) == sorted(set(coded.astype(object)) | {"unused"})
    distinct = fitting._distinct_rows(pd.DataFrame({"c": coded, "d": coded.iloc[:2]}))
    assert sorted(distinct["c"]) == ["1", schema.MISSING_CATEGORY, "b"]
    assert distinct["d"].iloc[0] == "1" and pd.isna(distinct["d"].iloc[1])  # missing occurs too


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"columns": {"income": {"impute": "constant", "fill_value": -1}}},  # a one-column branch
        {"numeric": {"scale": "minmax"}},
    ],
)
def test_the_fit_leaves_the_training_rows_as_they_were(table, options):
    # The chunked fit fills missing values in arrays of its own, never in the table's columns.
    _, ingested = table
    schema = validate_table(ingested, "approved", "classification", ["group"], {})
    train, _ = split_table(ingested, schema, 0.25, seed=3)
    assert train["income"].isna().any()
    before = train.copy(deep=True)
    fit_preprocessor(train, schema, options)
    pd.testing.assert_frame_equal(train, before)
