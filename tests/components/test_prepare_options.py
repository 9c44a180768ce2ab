"""Every `prepare:` option, on tables written to Parquet or CSV and read back through ingest.

Each option's effect is checked against scikit-learn or numbers computed here by hand from the
training rows, and the served pipeline (fit_model) is pickled, reloaded and fed rows it never saw.
"""

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

from components.common.errors import PipelineInputError
from components.common.lake_source import resolve_source
from components.common.schema import MISSING_CATEGORY, as_model_input, feature_names
from components.common.settings.prepare import (
    PrepareOptions,
    SplitOptions,
    parse_prepare_options,
)
from components.common.transformers import NumericImputer
from components.ingest.logic import read_source
from components.prepare.logic import (
    build_preprocessor,
    drop_outlier_rows,
    fit_preprocessor,
    split_table,
)
from components.train.logic import fit_model
from components.validate.logic import validate_table
from tests.conftest import make_loans

CITIES = ["paris", "lyon", "nice", "brest", "albi"]


def make_table(rows: int = 320, seed: int = 0) -> pd.DataFrame:
    """make_loans plus a skewed amount, a correlated one, a signup date and a rare-ish city."""
    rng = np.random.default_rng(seed + 1)
    frame = make_loans(rows, seed)
    frame["debt"] = rng.gamma(2.0, 5.0, rows)
    frame.loc[rng.choice(rows, 12, replace=False), "debt"] = np.nan
    frame["balance"] = frame["debt"] * 2 + 1
    frame["signup"] = pd.Timestamp("2021-01-01") + pd.to_timedelta(
        rng.integers(0, 730, rows), unit="D"
    )
    frame["city"] = rng.choice(CITIES, rows, p=[0.5, 0.3, 0.14, 0.04, 0.02])
    return frame


def through_file(frame: pd.DataFrame, folder, fmt: str) -> pd.DataFrame:
    """The frame as ingest reads it back from a real Parquet or CSV file."""
    path = folder / f"table.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    read, _ = read_source(resolve_source(str(path)))
    return read


@pytest.fixture(params=["parquet"])
def data(request, tmp_path):
    """(schema, train, test) of the table read from a file, split 75/25."""
    frame = through_file(make_table(), tmp_path, request.param)
    schema = validate_table(frame, "approved", "classification", ["group"], {})
    train, test = split_table(frame, schema, 0.25, seed=3)
    return schema, train, test


def transformed(options: dict, schema: dict, train: pd.DataFrame, rows: pd.DataFrame):
    """The fitted transform's output on `rows`, as a frame named by its output columns."""
    transform = fit_preprocessor(train, schema, options)
    out = transform.transform(as_model_input(rows, schema))
    return pd.DataFrame(out, columns=transform.get_feature_names_out(), index=rows.index)


def with_rows(test: pd.DataFrame, *changes: dict) -> pd.DataFrame:
    """The test rows, then per change ({column: value}) a copy of the first with those values."""
    rows = pd.concat([test, *[test.head(1)] * len(changes)], ignore_index=True)
    for offset, change in enumerate(changes):
        for name, value in change.items():
            # Through object and back, so that a None or NaN keeps the column's own type.
            column = rows[name].astype(object)
            column.iloc[len(test) + offset] = value
            rows[name] = column.infer_objects()
    return rows


def one_row(test: pd.DataFrame, **values) -> pd.DataFrame:
    return with_rows(test, values).tail(1).reset_index(drop=True)


# --- defaults -------------------------------------------------------------------------------


def test_no_options_build_exactly_the_former_transform(data):
    schema, train, test = data
    numeric = feature_names(schema, "numeric")
    categorical = feature_names(schema, "categorical")
    former = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numeric,
            ),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical,
            ),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    # The same estimator but for the imputer's class: NumericImputer is SimpleImputer with a
    # median that selects instead of sorting; its output is held to SimpleImputer's below.
    same = clone(former)
    same.transformers[0][1].steps[0] = ("impute", NumericImputer(strategy="median"))
    assert joblib.hash(build_preprocessor(schema)) == joblib.hash(same)
    assert joblib.hash(build_preprocessor(schema, {})) == joblib.hash(same)
    features = as_model_input(train, schema)
    np.testing.assert_array_equal(
        fit_preprocessor(train, schema, {}).transform(as_model_input(test, schema)),
        former.fit(features).transform(as_model_input(test, schema)),
    )


# --- numeric --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("median", lambda train: np.nanmedian(train["income"])),
        ("mean", lambda train: np.nanmean(train["income"])),
        ("constant", lambda train: 7.0),
    ],
)
def test_numeric_imputation_fills_from_training_rows(data, strategy, expected):
    schema, train, test = data
    options = {"numeric": {"impute": strategy, "fill_value": 7, "scale": "none"}}
    # The test rows' own statistics must not leak in: make them very different.
    shifted = test.assign(income=test["income"] + 1000)
    out = transformed(options, schema, train, with_rows(shifted, {"income": np.nan}))
    assert out["income"].iloc[-1] == pytest.approx(expected(train))
    assert out["income"].iloc[-1] < 500


@pytest.mark.parametrize(
    ("scale", "scaler"),
    [("standard", StandardScaler), ("minmax", MinMaxScaler), ("robust", RobustScaler)],
)
def test_scaling_matches_scikit_learn(data, scale, scaler):
    schema, train, test = data
    out = transformed({"numeric": {"scale": scale}}, schema, train, test)
    for column in ("income", "age", "debt"):
        imputer = SimpleImputer(strategy="median").fit(train[[column]])
        reference = scaler().fit(imputer.transform(train[[column]]))
        expected = reference.transform(imputer.transform(test[[column]]))[:, 0]
        np.testing.assert_allclose(out[column], expected)


def test_no_scaling_leaves_values_as_they_are(data):
    schema, train, test = data
    out = transformed({"numeric": {"scale": "none"}}, schema, train, test)
    present = test["age"].notna()
    np.testing.assert_array_equal(out["age"][present], test["age"][present])


def test_numeric_missing_indicator_comes_from_the_imputer(data):
    schema, train, test = data
    options = {"numeric": {"missing_indicator": True, "scale": "none"}}
    out = transformed(options, schema, train, test)
    np.testing.assert_array_equal(out["missingindicator_income"], test["income"].isna())
    np.testing.assert_array_equal(out["missingindicator_debt"], test["debt"].isna())
    # Age had no missing training value: no indicator, and a missing age at serving is imputed.
    assert "missingindicator_age" not in out.columns
    row = transformed(options, schema, train, one_row(test, age=np.nan))
    assert np.isfinite(row.to_numpy(dtype=float)).all()
    # With scaling, the indicator is scaled like its column group (as scikit-learn would).
    scaled = transformed({"numeric": {"missing_indicator": True}}, schema, train, test)
    reference = StandardScaler().fit(train[["income"]].isna())
    np.testing.assert_allclose(
        scaled["missingindicator_income"], reference.transform(test[["income"]].isna())[:, 0]
    )


# --- categorical ----------------------------------------------------------------------------


def test_most_frequent_imputation_uses_the_training_mode(data):
    schema, train, test = data
    options = {"categorical": {"impute": "most_frequent"}}
    out = transformed(options, schema, train, one_row(test, region=None))
    mode = train["region"].dropna().value_counts().idxmax()
    assert out[f"region_{mode}"].iloc[0] == 1
    assert f"region_{MISSING_CATEGORY}" not in out.columns


def test_constant_imputation_is_a_category_of_its_own(data):
    schema, train, test = data
    options = {"categorical": {"impute": "constant", "fill_value": "unknown"}}
    out = transformed(options, schema, train, test)
    np.testing.assert_array_equal(out["region_unknown"], test["region"].isna())
    assert f"region_{MISSING_CATEGORY}" not in out.columns


def test_categorical_missing_indicator(data):
    schema, train, test = data
    options = {"categorical": {"impute": "most_frequent", "missing_indicator": True}}
    out = transformed(options, schema, train, test)
    np.testing.assert_array_equal(out["missingindicator_region"], test["region"].isna())
    assert "missingindicator_city" not in out.columns  # no missing city in training


def test_ordinal_encoding_matches_scikit_learn_and_unknown_is_minus_one(data):
    schema, train, test = data
    options = {"categorical": {"encode": "ordinal"}}
    rows = with_rows(test, {"region": "atlantis"})
    out = transformed(options, schema, train, rows)
    reference = OrdinalEncoder().fit(as_model_input(train, schema)[["region", "city"]])
    expected = reference.transform(as_model_input(test, schema)[["region", "city"]])
    np.testing.assert_array_equal(out[["region", "city"]].iloc[:-1], expected)
    assert out["region"].iloc[-1] == -1


@pytest.mark.parametrize("rare", [10, 10.0, 0.04])
def test_rare_categories_share_the_infrequent_column(data, rare):
    """10.0 is how a count arrives through a pipeline's dict parameter (a protobuf Struct)."""
    schema, train, test = data
    options = {"categorical": {"rare_min_frequency": rare}}
    threshold = rare if rare >= 1 else rare * len(train)
    counts = train["city"].value_counts()
    rare_cities = set(counts[counts < threshold].index)
    assert rare_cities and rare_cities < set(CITIES)  # the data must actually exercise this
    rows = with_rows(test, {"city": "oslo"})
    out = transformed(options, schema, train, rows)
    assert not any(f"city_{c}" in out.columns for c in rare_cities)
    expected = rows["city"].isin(rare_cities | {"oslo"}).astype(float)
    np.testing.assert_array_equal(out["city_infrequent_sklearn"], expected)
    # Frequent cities keep their own column.
    frequent = next(c for c in CITIES if c not in rare_cities)
    np.testing.assert_array_equal(out[f"city_{frequent}"], rows["city"] == frequent)


def test_rare_categories_with_ordinal_encoding(data):
    schema, train, test = data
    options = {"categorical": {"encode": "ordinal", "rare_min_frequency": 10}}
    counts = train["city"].value_counts()
    rare_cities = counts[counts < 10].index
    out = transformed(options, schema, train, test)
    codes = out["city"][test["city"].isin(rare_cities)]
    assert len(codes) and codes.nunique() == 1  # every rare city has the one infrequent code


# --- outliers -------------------------------------------------------------------------------


def _iqr_bounds(values: pd.Series, k: float) -> tuple[float, float]:
    q1, q3 = np.nanquantile(values, [0.25, 0.75])
    return q1 - k * (q3 - q1), q3 + k * (q3 - q1)


def test_iqr_clipping_learns_bounds_from_training_rows(data):
    schema, train, test = data
    options = {
        "numeric": {"scale": "none"},
        "outliers": {"method": "iqr", "iqr_k": 1.0, "columns": ["debt"]},
    }
    low, high = _iqr_bounds(train["debt"], 1.0)
    rows = with_rows(test, {"debt": 1e6, "income": 1e6}, {"debt": -1e6})
    out = transformed(options, schema, train, rows)
    assert out["debt"].iloc[-2] == pytest.approx(high)
    assert out["debt"].iloc[-1] == pytest.approx(low)
    present = rows["debt"].notna()
    np.testing.assert_allclose(out["debt"][present], rows["debt"][present].clip(low, high))
    # income is not in outliers.columns: untouched.
    assert out["income"].iloc[-2] == 1e6


def test_quantile_clipping_per_column_override(data):
    schema, train, test = data
    options = {
        "numeric": {"scale": "none"},
        "columns": {"income": {"outliers": {"method": "quantile", "quantiles": [0.1, 0.9]}}},
    }
    low, high = np.nanquantile(train["income"], [0.1, 0.9])
    out = transformed(options, schema, train, test)
    present = test["income"].notna()
    np.testing.assert_allclose(out["income"][present], test["income"][present].clip(low, high))
    assert out["debt"].max() == test["debt"].max()  # the other columns have no rule


def test_drop_removes_training_rows_outside_the_bounds_only(data):
    schema, train, test = data
    options = {
        "numeric": {"scale": "none"},
        "outliers": {
            "method": "quantile",
            "action": "drop",
            "quantiles": [0.05, 0.95],
            "columns": ["debt"],
        },
    }
    low, high = np.nanquantile(train["debt"], [0.05, 0.95])
    outside = (train["debt"] < low) | (train["debt"] > high)
    kept, dropped = drop_outlier_rows(train, schema, options)
    assert dropped == outside.sum() > 0
    assert len(kept) == len(train) - dropped
    assert kept["debt"].dropna().between(low, high).all()
    assert kept["debt"].isna().sum() == train["debt"].isna().sum()  # missing is no outlier
    # Serving never drops or clips: an extreme value passes through the fitted transform.
    out = transformed(options, schema, kept, one_row(test, debt=1e6))
    assert out["debt"].iloc[0] == 1e6


def test_a_drop_rule_that_leaves_no_training_row_is_an_error(data):
    schema, train, _ = data
    # balance = 2 * debt + 1: the lowest debts and the highest balances are different rows.
    options = {
        "columns": {
            "debt": {"outliers": {"method": "quantile", "action": "drop", "quantiles": [0, 0.1]}},
            "balance": {
                "outliers": {"method": "quantile", "action": "drop", "quantiles": [0.9, 1]}
            },
        }
    }
    train = train.dropna(subset=["debt"])
    with pytest.raises(PipelineInputError, match="would remove every training row"):
        drop_outlier_rows(train, schema, options)


# --- log transform --------------------------------------------------------------------------


def test_log_transform_before_imputation(data):
    schema, train, test = data
    options = {"log_transform": ["debt"], "numeric": {"scale": "none"}}
    rows = with_rows(test, {"debt": -5.0})
    out = transformed(options, schema, train, rows)
    present = test["debt"].notna().to_numpy()
    np.testing.assert_allclose(out["debt"].iloc[:-1][present], np.log1p(test["debt"][present]))
    # Missing: the median of the training rows' log values; negative at serving: log(1 + 0).
    np.testing.assert_allclose(
        out["debt"].iloc[:-1][~present], np.nanmedian(np.log1p(train["debt"]))
    )
    assert out["debt"].iloc[-1] == 0.0
    # Only debt is logged.
    income = test["income"].notna().to_numpy()
    np.testing.assert_array_equal(out["income"].iloc[:-1][income], test["income"][income])


def test_log_transform_refuses_negative_training_values(data):
    schema, train, _ = data
    train = train.assign(debt=train["debt"] - 3)
    with pytest.raises(
        PipelineInputError, match="prepare.log_transform: column 'debt' has negative"
    ):
        fit_preprocessor(train, schema, {"log_transform": ["debt"]})


# --- per-column overrides -------------------------------------------------------------------


def test_per_column_overrides_replace_the_kind_settings(data):
    schema, train, _ = data
    options = {"columns": {"age": {"scale": "minmax"}, "region": {"encode": "ordinal"}}}
    out = transformed(options, schema, train, train)
    assert out["age"].min() == 0 and out["age"].max() == 1
    assert out["income"].mean() == pytest.approx(0, abs=1e-9)
    assert out["income"].std(ddof=0) == pytest.approx(1)
    assert "region" in out.columns and not any(c.startswith("region_") for c in out.columns)
    assert {"group_a", "group_b"} <= set(out.columns)


def test_excluded_features_are_not_encoded_but_still_required(data):
    schema, train, test = data
    out = transformed({"exclude": ["city", "debt"]}, schema, train, test)
    assert "debt" not in out.columns and not any(c.startswith("city_") for c in out.columns)
    with pytest.raises(PipelineInputError, match="column 'city' \\(a feature\\)"):
        as_model_input(test.drop(columns="city"), schema)


# --- derived features -----------------------------------------------------------------------

DERIVED = [
    {"name": "debt_ratio", "ratio": ["debt", "income"]},
    {"name": "signup_month", "date_part": ["signup", "month"]},
    {"name": "signup_year", "date_part": ["signup", "year"], "kind": "categorical"},
    {"name": "age_band", "bins": {"column": "age", "edges": [0, 30, 50, 120]}},
    {"name": "age_bin", "bins": {"column": "age", "edges": [0, 30, 50, 120]}, "kind": "numeric"},
]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_derived_features_are_computed_inside_the_transform(tmp_path, fmt):
    # Parquet keeps the signup column as datetimes; CSV gives text: the parts must agree.
    frame = through_file(make_table(), tmp_path, fmt)
    schema = validate_table(frame, "approved", "classification", ["group"], {})
    train, test = split_table(frame, schema, 0.25, seed=3)
    options = {"derived": DERIVED, "numeric": {"scale": "none"}}
    test = with_rows(test, {"income": 0.0}, {"signup": None, "age": np.nan})
    out = transformed(options, schema, train, test)

    # The server receives raw features only; the transform derives the rest.
    assert not {f["name"] for f in DERIVED} & set(feature_names(schema))
    ratio = test["debt"] / test["income"]
    finite = np.isfinite(ratio)
    np.testing.assert_allclose(out["debt_ratio"][finite], ratio[finite])
    train_ratio = train["debt"] / train["income"]
    median = np.nanmedian(train_ratio[np.isfinite(train_ratio)])
    # A zero denominator is missing, then imputed like any missing value.
    assert out["debt_ratio"].iloc[-2] == pytest.approx(median)

    dates = pd.to_datetime(test["signup"])
    known = dates.notna().to_numpy()
    np.testing.assert_array_equal(out["signup_month"][known], dates.dt.month[known])
    for year in (2021, 2022):
        np.testing.assert_array_equal(
            out[f"signup_year_{year}"][known], (dates.dt.year == year)[known]
        )
    # A missing date was never seen in training: all zeros, not an error.
    year_columns = [c for c in out.columns if c.startswith("signup_year_")]
    assert len(year_columns) == 2 and (out[year_columns].iloc[-1] == 0).all()
    # The raw date is not itself a category (one per day): only its parts are features.
    assert "signup" not in out.columns
    assert not any(c.startswith("signup_20") for c in out.columns)

    age = test["age"]
    np.testing.assert_array_equal(out["age_band_[30, 50)"], (age >= 30) & (age < 50))
    np.testing.assert_array_equal(out["age_band_[0, 30)"], age < 30)
    np.testing.assert_array_equal(
        out["age_bin"][age.notna()], np.digitize(age.dropna(), [0, 30, 50, 120])
    )


def test_derived_features_feed_other_options(data):
    schema, train, test = data
    options = {
        "derived": [{"name": "debt_share", "ratio": ["debt", "balance"]}],
        "log_transform": ["debt_share"],
        "columns": {"debt_share": {"scale": "none", "missing_indicator": True}},
    }
    out = transformed(options, schema, train, test)
    ratio = test["debt"] / test["balance"]
    present = ratio.notna()
    np.testing.assert_allclose(out["debt_share"][present], np.log1p(ratio[present]))
    np.testing.assert_array_equal(out["missingindicator_debt_share"], ratio.isna())


# --- bad options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"log_transform": ["region"]}, "prepare.log_transform: column 'region' is not numeric"),
        ({"log_transform": ["salary"]}, "prepare.log_transform: column 'salary' is not a feature"),
        ({"exclude": ["salary"]}, "prepare.exclude: column 'salary' is not a feature"),
        (
            {"exclude": ["debt"], "log_transform": ["debt"]},
            "prepare.log_transform: column 'debt' is excluded",
        ),
        ({"outliers": {"columns": ["debt"]}}, "prepare.outliers.columns: set prepare.outliers"),
        (
            {"outliers": {"method": "iqr", "columns": ["city"]}},
            "prepare.outliers.columns: column 'city' is not numeric",
        ),
        ({"columns": {"salary": {"scale": "none"}}}, "prepare.columns: column 'salary' is not"),
        (
            {"columns": {"age": {"encode": "ordinal"}}},
            "prepare.columns.age.encode: column 'age' is numeric",
        ),
        (
            {"columns": {"city": {"scale": "robust"}}},
            "prepare.columns.city.scale: column 'city' is categorical",
        ),
        (
            {"columns": {"age": {"impute": "most_frequent"}}},
            "prepare.columns.age.impute: 'most_frequent' does not fit numeric column 'age'",
        ),
        (
            {"columns": {"city": {"fill_value": 3}}},
            "prepare.columns.city.fill_value: expected a string",
        ),
        (
            {"derived": [{"name": "r", "ratio": ["debt", "city"]}]},
            "prepare.derived\\[0\\].ratio: column 'city' is categorical, not numeric",
        ),
        (
            {"derived": [{"name": "m", "date_part": ["age", "month"]}]},
            "prepare.derived\\[0\\].date_part: column 'age' is numeric, not a date",
        ),
        (
            {"derived": [{"name": "age", "bins": {"column": "debt", "edges": [0, 1]}}]},
            "prepare.derived\\[0\\].name: 'age' is already a feature",
        ),
        ({"numeric": {"scale": "log"}}, "prepare.numeric.scale: Input should be"),
        ({"categorical": {"encode": "target"}}, "prepare.categorical.encode: Input should be"),
        ({"categorical": {"rare_min_frequency": 1.5}}, "prepare.categorical.rare_min_frequency"),
        ({"numerics": {}}, "prepare.numerics: unknown key"),
        ({"columns": {"age": {"scael": "none"}}}, "prepare.columns.age.scael: unknown key"),
        ({"outliers": {"quantiles": [0.9, 0.1]}}, "prepare.outliers.quantiles: expected"),
        (
            {
                "derived": [
                    {"name": "x", "ratio": ["a", "b"], "bins": {"column": "a", "edges": [0, 1]}}
                ]
            },
            "prepare.derived.0: give exactly one of ratio, date_part or bins",
        ),
        (
            {"derived": [{"name": "b", "bins": {"column": "age", "edges": [5, 1]}}]},
            "prepare.derived.0.bins.edges: edges must be two or more increasing",
        ),
        (
            {"derived": [{"name": "m", "date_part": ["signup", "week"]}]},
            "prepare.derived.0.date_part.1: Input should be",
        ),
    ],
)
def test_bad_options_are_one_line_naming_the_key(data, options, message):
    schema, train, _ = data
    with pytest.raises(PipelineInputError, match=message) as caught:
        fit_preprocessor(train, schema, options)
    assert "\n" not in str(caught.value)


def test_options_models_reject_unknown_keys_and_keep_the_split_defaults():
    assert PrepareOptions().model_dump() == parse_prepare_options({}).model_dump()
    split = SplitOptions()
    assert (split.test_size, split.seed, split.strategy) == (0.2, 42, "stratified")
    with pytest.raises(ValueError, match="extra"):
        SplitOptions(test_size=0.3, shuffle=True)
    with pytest.raises(ValueError, match="less than 1"):
        SplitOptions(test_size=1.0)


# --- the served pipeline, end to end --------------------------------------------------------

EVERYTHING = {
    "numeric": {"impute": "mean", "scale": "robust", "missing_indicator": True},
    "categorical": {"rare_min_frequency": 10, "missing_indicator": True},
    "outliers": {"method": "iqr", "columns": ["income"]},
    "log_transform": ["debt"],
    "exclude": ["balance"],
    "columns": {
        "region": {"encode": "ordinal", "impute": "most_frequent"},
        "debt": {"outliers": {"method": "quantile", "action": "drop", "quantiles": [0, 0.98]}},
    },
    "derived": DERIVED,
}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("family", ["logistic_regression", "hist_gradient_boosting"])
def test_served_pipeline_round_trips_and_takes_unseen_input(tmp_path, fmt, family):
    frame = through_file(make_table(), tmp_path, fmt)
    schema = validate_table(frame, "approved", "classification", ["group"], {})
    # The options as a pipeline's dict parameter delivers them: JSON, every number a float.
    options = json.loads(json.dumps(EVERYTHING), parse_int=float)
    train, test = split_table(frame, schema, 0.25, seed=3)
    train, dropped = drop_outlier_rows(train, schema, options)
    assert dropped > 0
    preprocessor = fit_preprocessor(train, schema, options)
    params = {"max_iter": 20} if family == "hist_gradient_boosting" else {}
    model = fit_model(train, schema, preprocessor, {"family": family, "params": params}, seed=0)

    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    served = joblib.load(path)
    features = as_model_input(test, schema)
    np.testing.assert_array_equal(served.predict(features), model.predict(features))
    np.testing.assert_array_equal(served.predict_proba(features), model.predict_proba(features))
    accuracy = (served.predict(features) == test["approved"]).mean()
    assert accuracy > 0.6  # the label depends on income and region; the transform keeps them

    # What a client might send: unseen categories, missing everything, odd dates, extremes.
    strange = pd.DataFrame(
        {
            "income": [np.nan, 1e9, -50.0],
            "age": [np.nan, 200, 10],
            "region": [None, "atlantis", "north"],
            "group": ["c", None, "a"],
            "debt": [np.nan, -3.0, 1e9],
            "balance": [np.nan, 0.0, 1.0],
            "signup": [None, "not a date", "2031-02-29"],
            "city": ["oslo", None, "albi"],
        }
    )
    probabilities = served.predict_proba(as_model_input(strange, schema))
    assert probabilities.shape == (3, 2) and np.isfinite(probabilities).all()


def test_options_survive_the_config_round_trip(data):
    """The run config dumps its section to a pipeline parameter; every setting must survive."""
    schema, _, _ = data
    parsed = parse_prepare_options(EVERYTHING)
    assert PrepareOptions().model_dump(mode="json", exclude_defaults=True) == {}
    for dumped in (
        parsed.model_dump(mode="json"),
        parsed.model_dump(mode="json", exclude_defaults=True),
    ):
        again = json.loads(json.dumps(dumped))
        assert joblib.hash(build_preprocessor(schema, again)) == joblib.hash(
            build_preprocessor(schema, EVERYTHING)
        )
