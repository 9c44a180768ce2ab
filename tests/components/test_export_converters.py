"""The export's converters for derived features and one-hot rare grouping
(components.export.converters): each graph computes what scikit-learn computes on the values
where they act (zero denominators, missing values, bin edges, values outside every bin, unseen
and infrequent categories), alone and inside the exported model; a date part is refused by name.
"""

import numpy as np
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder
from threadpoolctl import threadpool_limits

from components.common.onnx_runtime import load_session
from components.common.transformers import DerivedFeatures, derive
from components.export.converters import convert_one_hot_encoder, one_hot_shape
from components.export.logic import (
    TARGET_OPSET,
    NotConvertible,
    _register_project_transformers,
    check_parity,
    export_onnx,
)
from components.prepare.logic import fit_preprocessor, split_table
from components.train.logic import fit_model
from components.validate.logic import validate_table
from tests.conftest import make_loans

INF = float("inf")
DERIVED = [
    {"name": "per_year", "ratio": ["income", "age"], "kind": "numeric"},
    {"name": "age_code", "bins": {"column": "age", "edges": [18, 40, 65]}, "kind": "numeric"},
    {"name": "age_band", "bins": {"column": "age", "edges": [18, 40, 65]}, "kind": "categorical"},
    # Infinite edges are the open ends themselves (components.common.binning).
    {
        "name": "rich",
        "bins": {"column": "income", "edges": [-INF, 60.5, INF]},
        "kind": "categorical",
    },
]
# Each pair: a zero denominator of each sign of numerator, 0/0, a missing operand, values on
# every edge, below the first and above the last, infinities, and a ratio that overflows.
INCOME = [5.0, -3.0, 0.0, np.nan, 7.0, 60.5, 60.49, 1e300, INF, -INF, 2.0, 0.0, 50.0, 9.0]
AGE = [0.0, 0.0, 0.0, 30.0, np.nan, 18.0, 40.0, 1e-300, 65.0, 17.999, 64.999, -0.0, 200.0, -5.0]


@pytest.fixture(scope="module", autouse=True)
def one_native_thread():
    with threadpool_limits(1):
        yield


def test_ratios_and_bins_in_the_graph_equal_derive_value_by_value():
    """DerivedFeatures as a graph of its own: each derived column equals derive's, NaN where
    derive gives NaN, the same label (the missing token included) for a categorical bin."""
    _register_project_transformers()
    frame = pd.DataFrame({"income": INCOME, "age": AGE})
    step = DerivedFeatures(DERIVED).fit(frame)
    inputs = [(name, DoubleTensorType([None, 1])) for name in frame.columns]
    graph = convert_sklearn(step, initial_types=inputs, target_opset=TARGET_OPSET)
    feed = {name: frame[[name]].to_numpy() for name in frame.columns}
    names = [output.name for output in graph.graph.output]
    outputs = dict(zip(names, load_session(graph.SerializeToString()).run(None, feed), strict=True))
    with np.errstate(over="ignore"):  # 1e300 / 1e-300: derive's overflow, a missing ratio
        expected = {feature["name"]: derive(frame, feature) for feature in DERIVED}
    for name in ("per_year", "age_code"):
        assert outputs[name].dtype == np.float64 and outputs[name].shape == (len(frame), 1)
        np.testing.assert_array_equal(outputs[name].ravel(), expected[name])
    for name in ("age_band", "rich"):
        assert outputs[name].ravel().tolist() == expected[name].tolist()
    # The awkward values are there: missing ratios, every bin, the missing label.
    assert np.isnan(expected["per_year"][:5]).all()
    assert set(expected["age_code"][~np.isnan(expected["age_code"])]) == {0, 1, 2, 3}
    assert {"< 18", "[18, 40)", "[40, 65)", ">= 65", "__missing__"} <= set(expected["age_band"])


@pytest.fixture(scope="module")
def loans_split():
    frame = make_loans(600, seed=3)
    frame["age"] = frame["age"].astype(float)
    schema = validate_table(frame, "approved", "classification", ["group"], {})
    train, test = split_table(frame, schema, 0.25, seed=1)
    return schema, train, test


def awkward_rows(test: pd.DataFrame) -> pd.DataFrame:
    """Test rows whose income and age are the values above (infinities made large numbers:
    scikit-learn's scaler refuses an infinite feature), and an unseen region."""
    rows = test.iloc[np.arange(len(INCOME)) % len(test)].reset_index(drop=True)
    rows = rows.assign(income=np.clip(INCOME, -1e6, 1e6), age=AGE)
    rows.loc[0, "region"] = "west"
    return pd.concat([rows, test], ignore_index=True)


@pytest.mark.parametrize("family", ["logistic_regression", "hist_gradient_boosting"])
def test_a_model_with_derived_features_exports_with_parity_on_awkward_rows(family, loans_split):
    schema, train, test = loans_split
    preprocessor = fit_preprocessor(train, schema, {"derived": DERIVED})
    params = {"max_iter": 20} if family == "hist_gradient_boosting" else {}
    model = fit_model(train, schema, preprocessor, {"family": family, "params": params}, 0)
    rows = awkward_rows(test)
    result = check_parity(model, export_onnx(model, schema), rows, schema)
    assert result["passed"], result["differing_rows"][:3]
    assert result["rows"] == len(rows)


def test_a_date_part_is_refused_naming_the_derived_feature():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=120),
            "signed": pd.date_range("2024-01-01", periods=120, freq="D").astype(str),
        }
    )
    frame["y"] = np.where(frame["x"] > 0, "p", "q")
    schema = validate_table(frame, "y", "classification", [], {})
    options = {
        "derived": [
            {"name": "x_band", "bins": {"column": "x", "edges": [-1.0, 1.0]}},
            {"name": "signed_month", "date_part": ["signed", "month"]},
        ]
    }
    preprocessor = fit_preprocessor(frame, schema, options)
    best = {"family": "logistic_regression", "params": {}}
    model = fit_model(frame, schema, preprocessor, best, 0)
    with pytest.raises(NotConvertible) as caught:
        export_onnx(model, schema)
    assert (caught.value.step, caught.value.class_name) == ("prep/derive", "DerivedFeatures")
    message = str(caught.value)
    assert "derived feature 'signed_month' (date_part month of 'signed')" in message
    assert "\n" not in message


def _skewed_categories(rows: int, seed: int) -> pd.DataFrame:
    """`city` has frequent and rare values; `kind` none that are rare at the thresholds below."""
    rng = np.random.default_rng(seed)
    cities = rng.choice(["a", "b", "c", "d", "e"], rows, p=[0.5, 0.3, 0.12, 0.05, 0.03])
    kinds = rng.choice(["x", "y", "__missing__"], rows, p=[0.5, 0.3, 0.2])
    return pd.DataFrame({"city": cities, "kind": kinds})


# Frequent, infrequent ("d", "e"), unseen ("zz", "", "q") and missing-token values in each column.
PROBE = pd.DataFrame(
    {
        "city": ["a", "b", "c", "d", "e", "zz", "__missing__", ""],
        "kind": ["x", "y", "__missing__", "q", "x", "x", "", "y"],
    }
)


@pytest.mark.parametrize(
    "encoder",
    [
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20, sparse_output=False),
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=0.1, sparse_output=False),
        OneHotEncoder(handle_unknown="ignore", min_frequency=20, sparse_output=False),
        OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=2, sparse_output=False),
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=20),
    ],
    ids=["one-hot count", "one-hot share", "one-hot ignore", "one-hot max_categories", "ordinal"],
)
def test_rare_grouping_encodes_unseen_infrequent_and_missing_as_scikit_learn(encoder):
    """The encoder's columns, as the ColumnTransformer hands them (one input each): an unseen
    city goes to city's infrequent column (all zeros with handle_unknown ignore), an unseen
    kind to all zeros (kind has no infrequent column); the ordinal encoder (skl2onnx's own
    converter) gives -1 for unseen and the one infrequent code for rare cities."""
    encoder.fit(_skewed_categories(300, seed=0))
    infrequent = encoder.infrequent_categories_
    assert len(infrequent[0]) >= 1 and {"d", "e"} & set(infrequent[0])
    graph = convert_sklearn(
        encoder,
        initial_types=[(name, StringTensorType([None, 1])) for name in PROBE.columns],
        target_opset=TARGET_OPSET,
        custom_conversion_functions={OneHotEncoder: convert_one_hot_encoder},
        custom_shape_calculators={OneHotEncoder: one_hot_shape},
    )
    feed = {name: PROBE[[name]].to_numpy(dtype=object) for name in PROBE.columns}
    (encoded,) = load_session(graph.SerializeToString()).run(None, feed)
    expected = encoder.transform(PROBE)
    assert encoded.shape == expected.shape
    np.testing.assert_array_equal(encoded, expected)
    if isinstance(encoder, OneHotEncoder) and encoder.handle_unknown != "ignore":
        city_infrequent = list(encoder.get_feature_names_out()).index("city_infrequent_sklearn")
        assert encoded[5, city_infrequent] == 1  # "zz", unseen
    if isinstance(encoder, OneHotEncoder) and infrequent[1] is None:
        kind_columns = [n.startswith("kind_") for n in encoder.get_feature_names_out()]
        assert not encoded[3, kind_columns].any()  # "q", unseen, no infrequent kind: zeros


def test_rare_grouping_reads_its_columns_from_one_input_as_after_an_imputer():
    """After a most_frequent imputer the encoder gets one [N, 2] input, not one per column."""
    encoder = OneHotEncoder(
        handle_unknown="infrequent_if_exist", min_frequency=20, sparse_output=False
    ).fit(_skewed_categories(300, seed=0))
    graph = convert_sklearn(
        encoder,
        initial_types=[("both", StringTensorType([None, 2]))],
        target_opset=TARGET_OPSET,
        custom_conversion_functions={OneHotEncoder: convert_one_hot_encoder},
        custom_shape_calculators={OneHotEncoder: one_hot_shape},
    )
    feed = {"both": PROBE.to_numpy(dtype=object)}
    (encoded,) = load_session(graph.SerializeToString()).run(None, feed)
    np.testing.assert_array_equal(encoded, encoder.transform(PROBE))


@pytest.mark.parametrize("encode", ["onehot", "ordinal"])
def test_prepare_rare_grouping_exports_with_parity_on_unseen_and_infrequent_rows(
    encode, loans_split
):
    """prepare's own categorical branch with rare_min_frequency, region skewed so that some of
    its values are rare; rows with an unseen, an infrequent and a missing region."""
    schema, train, test = loans_split
    pattern = ["n"] * 12 + ["s"] * 6 + ["e", "w"]  # 60 %, 30 %, 5 %, 5 %
    skew = {"region": lambda frame: np.resize(pattern, len(frame))}
    train, test = train.assign(**skew), test.assign(**skew)
    options = {"categorical": {"encode": encode, "rare_min_frequency": 0.1}}
    preprocessor = fit_preprocessor(train, schema, options)
    encoder = preprocessor.named_transformers_["categorical"]
    assert set(encoder.infrequent_categories_[0]) == {"e", "w"}  # region's; group has none
    best = {"family": "logistic_regression", "params": {}}
    model = fit_model(train, schema, preprocessor, best, 0)
    rows = test.head(4).copy()
    rows["region"] = ["never-seen", "w", None, "n"]
    rows = pd.concat([rows, test], ignore_index=True)
    result = check_parity(model, export_onnx(model, schema), rows, schema)
    assert result["passed"], result["differing_rows"][:3]
