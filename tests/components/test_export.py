"""Edge export: the fitted pipeline as ONNX answers as scikit-learn does, row by row; what cannot
be converted is refused by name; the README's client runs with onnxruntime and numpy alone."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import onnx
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset, Markdown, Model
from onnx import numpy_helper
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)
from threadpoolctl import threadpool_limits

from components.common.errors import PipelineInputError
from components.common.io import write_frame, write_json
from components.common.mitigation import ExponentiatedGradientModel, ThresholdOptimizedModel
from components.common.onnx_runtime import (
    load_session,
    onnx_inputs,
    parity_failure_message,
    predict_onnx,
)
from components.common.schema import as_model_input
from components.export.component import export_onnx_model
from components.export.logic import (
    NotConvertible,
    check_parity,
    export_onnx,
    export_report_markdown,
    refuse_unproven_threshold,
)
from components.prepare.logic import fit_preprocessor, split_table
from components.train.logic import fit_mitigated, fit_model
from components.validate.logic import validate_table
from tests.conftest import make_loans

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "examples" / "onnx_client.py"
CLASSIFIERS = {
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 25, "max_depth": 8},
    "hist_gradient_boosting": {"max_iter": 30, "max_leaf_nodes": 15},
    "sgd_linear": {"alpha": 1e-3, "penalty": "elasticnet", "l1_ratio": 0.2},
}
REGRESSORS = {
    "linear_regression": {"alpha": 0.1},
    "random_forest": {"n_estimators": 25, "max_depth": 8},
    "hist_gradient_boosting": {"max_iter": 30, "max_leaf_nodes": 15},
    "sgd_linear": {"alpha": 1e-4},
}


@pytest.fixture(scope="module", autouse=True)
def one_native_thread():
    """Boosting's OpenMP threads stall when other work loads a 2-core machine; these small fits
    need one."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def loans_split():
    frame = make_loans(800, seed=0)
    schema = validate_table(frame, "approved", "classification", ["group"], {})
    train, test = split_table(frame, schema, 0.25, seed=1)
    return schema, train, test, fit_preprocessor(train, schema)


@pytest.fixture(scope="module")
def classifiers(loans_split):
    """family -> (fitted Pipeline, its ONNX bytes)."""
    schema, train, _, preprocessor = loans_split
    exported = {}
    for family, params in CLASSIFIERS.items():
        model = fit_model(train, schema, preprocessor, {"family": family, "params": params}, 0)
        exported[family] = (model, export_onnx(model, schema))
    return exported


@pytest.fixture(scope="module")
def regression_split():
    rng = np.random.default_rng(5)
    rows = 600
    frame = pd.DataFrame(
        {"x": rng.normal(0, 2, rows), "z": rng.integers(0, 50, rows).astype(float)}
    )
    frame["kind"] = rng.choice(["p", "q", "r"], rows)
    frame["price"] = (
        40 * frame["x"] + frame["z"] + frame["kind"].map({"p": 100.0, "q": -50.0, "r": 0.0})
    ) + rng.normal(0, 5, rows)
    frame.loc[rng.choice(rows, 30, replace=False), "x"] = np.nan
    frame.loc[rng.choice(rows, 30, replace=False), "kind"] = None
    schema = validate_table(frame, "price", "regression", [], {})
    train, test = split_table(frame, schema, 0.25, seed=0)
    return schema, train, test, fit_preprocessor(train, schema)


def odd_rows(test: pd.DataFrame) -> pd.DataFrame:
    """Rows that serving meets: an unseen category, missing numbers, missing categories."""
    rows = test.head(4).copy().reset_index(drop=True)
    rows["age"] = rows["age"].astype(float)
    rows.loc[0, "region"] = "west"  # never seen in training
    rows.loc[1, "income"] = np.nan
    rows.loc[2, "region"] = None
    rows.loc[3, ["income", "age", "region", "group"]] = [np.nan, np.nan, None, None]
    return rows


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_each_classifier_family_matches_scikit_learn_on_every_test_row(
    family, classifiers, loans_split
):
    schema, _, test, _ = loans_split
    model, data = classifiers[family]
    result = check_parity(model, data, test, schema)
    assert result["passed"], result["differing_rows"][:3]
    assert result["rows"] == len(test)
    assert result["label_mismatches"] == 0 and result["differing_rows"] == []
    assert result["max_abs_diff"] <= 1e-5
    # Independently of check_parity: the graph's own outputs against scikit-learn's.
    labels, probabilities = predict_onnx(load_session(data), test, schema)
    features = as_model_input(test, schema)
    assert labels.tolist() == model.predict(features).tolist()
    np.testing.assert_allclose(probabilities, model.predict_proba(features), atol=1e-5, rtol=0)


def test_the_test_split_holds_missing_values_so_parity_covers_them(loans_split):
    _, _, test, _ = loans_split
    assert test["income"].isna().any() and test["region"].isna().any()


@pytest.mark.parametrize("family", sorted(REGRESSORS))
def test_each_regressor_family_matches_scikit_learn(family, regression_split):
    schema, train, test, preprocessor = regression_split
    best = {"family": family, "params": REGRESSORS[family]}
    model = fit_model(train, schema, preprocessor, best, 0)
    data = export_onnx(model, schema)
    result = check_parity(model, data, test, schema)
    assert result["passed"], result["differing_rows"][:3]
    assert result["label_mismatches"] is None
    values, probabilities = predict_onnx(load_session(data), test, schema)
    assert probabilities is None
    expected = model.predict(as_model_input(test, schema))
    assert np.abs(expected).max() > 10  # the relative part of the tolerance is exercised
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_unseen_categories_and_missing_values_predict_as_in_scikit_learn(
    family, classifiers, loans_split
):
    schema, _, test, _ = loans_split
    model, data = classifiers[family]
    rows = odd_rows(test)
    labels, probabilities = predict_onnx(load_session(data), rows, schema)
    features = as_model_input(rows, schema)
    assert labels.tolist() == model.predict(features).tolist()
    np.testing.assert_allclose(probabilities, model.predict_proba(features), atol=1e-5, rtol=0)
    assert check_parity(model, data, rows, schema)["passed"]


def test_the_graph_takes_one_input_per_feature_and_gives_probabilities_as_a_tensor(
    classifiers, loans_split
):
    schema, _, test, _ = loans_split
    model, data = classifiers["random_forest"]
    session = load_session(data)
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs == {
        "income": ("tensor(double)", [None, 1]),
        "age": ("tensor(double)", [None, 1]),
        "region": ("tensor(string)", [None, 1]),
        "group": ("tensor(string)", [None, 1]),
    }
    outputs = session.get_outputs()
    assert [o.name for o in outputs] == ["label", "probabilities"]
    assert outputs[1].type.startswith("tensor(")  # no ZipMap: not a sequence of maps
    feed = onnx_inputs(test, schema)
    assert feed["region"].dtype == object and feed["income"].dtype == np.float64
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == ["no", "yes"] == model.classes_.tolist()
    assert meta["missing_category"] == "__missing__"


def test_columns_named_unlike_identifiers_keep_their_names_as_graph_inputs():
    # skl2onnx renames "education-num" to "education_num", and "label" (its output's name) to
    # "label1"; the export gives a column its own name back wherever that name is free.
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "education-num": rng.normal(size=300),
            "marital status": rng.choice(["a", "b"], 300),
            "label": rng.normal(size=300),
        }
    )
    frame["y"] = np.where(frame["education-num"] + frame["label"] > 0, "p", "q")
    schema = validate_table(frame, "y", "classification", [], {})
    train, test = split_table(frame, schema, 0.25, seed=0)
    best = {"family": "random_forest", "params": {"n_estimators": 10}}
    model = fit_model(train, schema, fit_preprocessor(train, schema), best, 0)
    data = export_onnx(model, schema)
    session = load_session(data)
    assert [i.name for i in session.get_inputs()] == ["education-num", "marital status", "label1"]
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    assert json.loads(session.get_modelmeta().custom_metadata_map["inputs"])["label"] == "label1"
    assert check_parity(model, data, test, schema)["passed"]


@pytest.fixture(scope="module")
def threshold_optimized(loans_split):
    """The served model of bias.mitigation threshold_optimizer."""
    schema, train, _, preprocessor = loans_split
    best = {"family": "logistic_regression", "params": {"C": 1.0}}
    model, _ = fit_mitigated(
        train, schema, preprocessor, best, 0, "threshold_optimizer", "demographic_parity",
        "group", {}, "yes",
    )  # fmt: skip
    assert isinstance(model, ThresholdOptimizedModel)
    return model


def test_a_threshold_optimized_model_is_not_convertible(threshold_optimized, loans_split):
    schema = loans_split[0]
    model = threshold_optimized
    with pytest.raises(NotConvertible, match="ThresholdOptimizedModel") as caught:
        export_onnx(model, schema)
    assert str(caught.value).startswith("not convertible: ThresholdOptimizedModel")
    assert "threshold_optimizer" in str(caught.value)
    assert isinstance(caught.value, PipelineInputError)  # one line if it ever goes unhandled


def test_a_pipeline_around_exponentiated_gradient_names_the_model_step(loans_split):
    schema, _, _, preprocessor = loans_split
    mitigated = ExponentiatedGradientModel(LogisticRegression(), "demographic_parity", "yes")
    model = Pipeline([("prep", preprocessor), ("model", mitigated)])
    with pytest.raises(NotConvertible) as caught:
        export_onnx(model, schema)
    assert caught.value.step == "model"
    assert caught.value.class_name == "ExponentiatedGradientModel"
    assert "at step 'model'" in str(caught.value)


class ClipOutliers(TransformerMixin, BaseEstimator):
    """A custom step, as a project might add: no ONNX converter exists for it."""

    def fit(self, X, y=None):
        self.low_, self.high_ = np.percentile(X, [1, 99], axis=0)
        return self

    def transform(self, X):
        return np.clip(X, self.low_, self.high_)


def _logistic(schema, train, numeric, categorical):
    prep = ColumnTransformer(
        [("numeric", numeric, ["income", "age"]), ("categorical", categorical, ["region", "group"])]
    )
    model = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=1000))])
    return model.fit(as_model_input(train, schema), train["approved"])


def _impute_scale(impute=None, scale=None):
    impute = impute or SimpleImputer(strategy="median")
    return Pipeline([("impute", impute), ("scale", scale or StandardScaler())])


def _one_hot(**options):
    return OneHotEncoder(handle_unknown=options.pop("handle_unknown", "ignore"), **options)


def _impute_encode(imputer):
    return Pipeline([("impute", imputer), ("encode", _one_hot())])


@pytest.mark.parametrize(
    "numeric, categorical, step, class_name",
    [
        (
            Pipeline([("impute", SimpleImputer()), ("log", FunctionTransformer(np.log1p))]),
            _one_hot(),
            "prep/numeric/log",
            "FunctionTransformer",
        ),
        (
            Pipeline([("impute", SimpleImputer()), ("clip", ClipOutliers())]),
            _one_hot(),
            "prep/numeric/clip",
            "ClipOutliers",
        ),
        (
            # An unseen category is an error in scikit-learn, which the graph cannot raise.
            _impute_scale(),
            _one_hot(handle_unknown="error", min_frequency=0.2),
            "prep/categorical",
            "OneHotEncoder",
        ),
        (
            _impute_scale(),
            _impute_encode(SimpleImputer(strategy="most_frequent")),  # NaN as the missing value
            "prep/categorical/impute",
            "SimpleImputer",
        ),
    ],
    ids=[
        "log transform",
        "outlier clipping",
        "rare grouping, unseen an error",
        "string imputer on NaN",
    ],
)
def test_a_step_that_cannot_be_converted_is_refused_by_name(
    numeric, categorical, step, class_name, loans_split
):
    schema, train, _, _ = loans_split
    # Incomes made positive, so that the log transform fits in scikit-learn.
    model = _logistic(schema, train.assign(income=train["income"].abs()), numeric, categorical)
    with pytest.raises(NotConvertible) as caught:
        export_onnx(model, schema)
    assert (caught.value.step, caught.value.class_name) == (step, class_name)
    assert f"{class_name} at step '{step}'" in str(caught.value)


@pytest.mark.parametrize(
    "numeric, categorical",
    [
        (
            _impute_scale(SimpleImputer(strategy="mean", add_indicator=True), MinMaxScaler()),
            _one_hot(),
        ),
        (
            _impute_scale(SimpleImputer(strategy="constant", fill_value=0.0), RobustScaler()),
            _one_hot(min_frequency=0.2),
        ),
        (_impute_scale(), _one_hot(handle_unknown="infrequent_if_exist", min_frequency=0.2)),
        (_impute_scale(), OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)),
        (
            _impute_scale(),
            _impute_encode(SimpleImputer(strategy="most_frequent", missing_values="__missing__")),
        ),
    ],
    ids=[
        "indicator+minmax",
        "constant+robust+min_frequency",
        "infrequent if exist",
        "ordinal",
        "string imputer",
    ],
)
def test_other_preprocessing_options_convert_with_parity(numeric, categorical, loans_split):
    schema, train, test, _ = loans_split
    model = _logistic(schema, train, numeric, categorical)
    rows = pd.concat([test, odd_rows(test)], ignore_index=True)
    result = check_parity(model, export_onnx(model, schema), rows, schema)
    assert result["passed"], result["differing_rows"][:3]


@pytest.mark.parametrize(
    "options, refused",
    [
        ({"numeric": {"impute": "mean", "missing_indicator": True, "scale": "minmax"}}, None),
        ({"numeric": {"impute": "constant", "fill_value": -1, "scale": "robust"}}, None),
        ({"categorical": {"encode": "ordinal", "rare_min_frequency": 0.35}}, None),
        ({"categorical": {"impute": "most_frequent"}}, None),
        ({"exclude": ["age"]}, None),
        ({"outliers": {"method": "iqr", "action": "clip"}}, None),
        ({"outliers": {"method": "quantile", "action": "clip"}, "log_transform": ["income"]}, None),
        ({"log_transform": ["income"]}, None),
        ({"categorical": {"rare_min_frequency": 0.35}}, None),
        ({"categorical": {"missing_indicator": True}}, None),
        ({"derived": [{"name": "per_year", "ratio": ["income", "age"]}]}, None),
        (
            {
                "derived": [
                    {"name": "age_band", "bins": {"column": "age", "edges": [30, 50]}},
                    {
                        "name": "age_code",
                        "bins": {"column": "age", "edges": [30, 50]},
                        "kind": "numeric",
                    },
                ]
            },
            None,
        ),
        (
            # region is no date: every month is missing, but the step is refused all the same.
            {"derived": [{"name": "m", "date_part": ["region", "month"], "kind": "categorical"}]},
            ("prep/derive", "DerivedFeatures"),
        ),
    ],
    ids=[
        "mean+indicator+minmax",
        "constant+robust",
        "ordinal+rare",
        "categorical most_frequent",
        "exclude",
        "clip outliers",
        "clip quantiles+log transform",
        "log transform",
        "one-hot rare",
        "categorical indicator",
        "derived ratio",
        "derived bins",
        "derived date part",
    ],
)
def test_the_prepare_options_either_export_with_parity_or_are_refused_by_step(
    options, refused, loans_split
):
    """The project's own preprocessor (the run config's `prepare:` section), family by family
    of options: what converts matches scikit-learn, unseen category included; the rest is
    refused naming its step, never a crash and never a wrong graph."""
    schema, train, test, _ = loans_split
    train = train.assign(income=train["income"].abs())  # log(1 + x) needs x >= 0
    preprocessor = fit_preprocessor(train, schema, options)
    # Boosting (float32 trees behind float64 preprocessing) where the graph is checked; the
    # cheapest family where only the refusal is.
    best = {"family": "hist_gradient_boosting", "params": {"max_iter": 20}}
    if refused:
        best = {"family": "logistic_regression", "params": {}}
    model = fit_model(train, schema, preprocessor, best, 0)
    if refused:
        with pytest.raises(NotConvertible) as caught:
            export_onnx(model, schema)
        assert (caught.value.step, caught.value.class_name) == refused
        return
    rows = pd.concat([test, odd_rows(test)], ignore_index=True)
    result = check_parity(model, export_onnx(model, schema), rows, schema)
    assert result["passed"], result["differing_rows"][:3]


def test_clipping_and_the_log_transform_match_scikit_learn_at_their_edges(loans_split):
    """The project's converters on the values where they act: beyond either clipping bound,
    negative (log1p_nonnegative takes 0), zero, missing; and the transformed columns
    themselves, not only the model's answers, equal scikit-learn's."""
    schema, train, test, _ = loans_split
    train = train.assign(income=train["income"].abs())
    options = {"outliers": {"method": "iqr", "action": "clip"}, "log_transform": ["income"]}
    preprocessor = fit_preprocessor(train, schema, options)
    best = {"family": "logistic_regression", "params": {}}
    model = fit_model(train, schema, preprocessor, best, 0)
    edges = [-50.0, 0.0, 1e6, -1e6, np.nan, 1e-12, 55.0, 1e300]
    rows = test.iloc[: len(edges)].assign(income=edges, age=[18, 80, 5, 200, 40, 41, 42, 43])
    rows = pd.concat([rows, test], ignore_index=True)
    result = check_parity(model, export_onnx(model, schema), rows, schema)
    assert result["passed"], result["differing_rows"][:3]
    numeric = model.named_steps["prep"].named_transformers_["numeric"]
    assert [name for name, _ in numeric.steps][:2] == ["clip", "log"]
    # The numeric branch alone, as its own graph: its columns equal scikit-learn's.
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    columns = list(numeric.feature_names_in_)
    branch = Pipeline(numeric.steps[:2])
    from sklearn.preprocessing import FunctionTransformer

    from components.export.logic import _log_converter, _same_width_shape

    graph = convert_sklearn(
        branch,
        initial_types=[("x", DoubleTensorType([None, len(columns)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        custom_conversion_functions={FunctionTransformer: _log_converter},
        custom_shape_calculators={FunctionTransformer: _same_width_shape},
    )
    values = rows[columns].to_numpy(dtype=float)
    (onnx_values,) = load_session(graph.SerializeToString()).run(None, {"x": values})
    expected = branch.transform(rows[columns])
    np.testing.assert_allclose(onnx_values, expected, rtol=1e-12, equal_nan=True)


def test_the_categorical_missing_indicator_flags_the_token_as_scikit_learn_does(loans_split):
    """prepare's categorical_missing branch: 1 where a flagged column holds the missing token,
    in the graph as in scikit-learn, on rows with missing and unseen categories."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    from components.export.logic import _register_project_transformers

    schema, train, test, _ = loans_split
    preprocessor = fit_preprocessor(train, schema, {"categorical": {"missing_indicator": True}})
    _, indicator, columns = next(
        branch for branch in preprocessor.transformers_ if branch[0] == "categorical_missing"
    )
    _register_project_transformers()
    graph = convert_sklearn(
        indicator,
        initial_types=[("x", StringTensorType([None, len(columns)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    rows = as_model_input(pd.concat([test, odd_rows(test)], ignore_index=True), schema)
    values = rows[columns].to_numpy(dtype=object)
    (flags,) = load_session(graph.SerializeToString()).run(None, {"x": values})
    expected = indicator.transform(rows[columns]).astype(float)
    assert expected.any() and flags.dtype == np.float64
    np.testing.assert_array_equal(flags, expected)


def _corrupt(data: bytes) -> bytes:
    """Shift the largest floating-point initializer (the model's coefficients) by 0.3."""
    graph = onnx.load_from_string(data)
    floats = [i for i in graph.graph.initializer if i.data_type in (1, 11)]
    target = max(floats, key=lambda i: numpy_helper.to_array(i).size)
    values = numpy_helper.to_array(target)
    target.CopyFrom(numpy_helper.from_array(values + 0.3, target.name))
    return graph.SerializeToString()


def test_a_corrupted_graph_fails_parity_and_names_the_first_row(classifiers, loans_split):
    schema, _, test, _ = loans_split
    model, data = classifiers["logistic_regression"]
    corrupted = _corrupt(data)
    result = check_parity(model, corrupted, test, schema)
    assert not result["passed"]
    labels, probabilities = predict_onnx(load_session(corrupted), test, schema)
    expected = model.predict_proba(as_model_input(test, schema))
    differs = np.abs(probabilities - expected).max(axis=1) > 1e-5
    assert result["differing"] == differs.sum() > 0
    first = int(np.flatnonzero(differs)[0])
    assert result["differing_rows"][0]["row"] == first
    assert len(result["differing_rows"]) == min(20, differs.sum())
    message = parity_failure_message(result)
    assert f"first: test row {first}:" in message and "\n" not in message
    assert "**failed**" in export_report_markdown(result)


def _thresholded(loans_split, family: str, params: dict, threshold: float):
    from components.common.metrics import with_threshold

    schema, train, _, preprocessor = loans_split
    model = fit_model(train, schema, preprocessor, {"family": family, "params": params}, 0)
    features = as_model_input(train, schema)
    return with_threshold(model, threshold, "yes", features, train["approved"])


def test_a_tuned_threshold_is_exported_with_its_rule_in_the_graph(loans_split):
    """The graph's own label output thresholds at 0.3, as scikit-learn's predict does: an edge
    client reading `label` gets the served model's labels."""
    schema, _, test, _ = loans_split
    model = _thresholded(loans_split, "logistic_regression", {}, 0.3)
    data = export_onnx(model, schema)
    assert check_parity(model, data, test, schema)["passed"]
    session = load_session(data)
    labels, probabilities = predict_onnx(session, test, schema)
    features = as_model_input(test, schema)
    assert labels.tolist() == model.predict(features).tolist()
    # Rows between 0.3 and 0.5: the threshold, not the argmax, made them "yes".
    between = (probabilities[:, 1] >= 0.3) & (probabilities[:, 1] < 0.5)
    assert between.any() and (labels[between] == "yes").all()
    rule = json.loads(session.get_modelmeta().custom_metadata_map["decision_threshold"])
    assert rule == {"threshold": 0.3, "column": 1, "labels": ["no", "yes"]}


def test_a_threshold_that_forest_probabilities_tie_is_skipped_not_failed(
    tmp_path, loans_split, capsys
):
    """A forest's probabilities are vote shares: at a threshold of exactly 0.3, float32 rounding
    in the graph decides some rows differently; the export is skipped with that reason."""
    schema, _, test, _ = loans_split
    model = _thresholded(loans_split, "random_forest", {"n_estimators": 100}, 0.3)
    result = check_parity(model, export_onnx(model, schema), test, schema)
    assert not result["passed"]
    with pytest.raises(NotConvertible, match="tuned threshold 0.3: .* test rows differ"):
        refuse_unproven_threshold(model, result)
    artifacts = _artifacts(tmp_path, model, test, schema)
    export_onnx_model.python_func(**artifacts)  # returns: the run goes on
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert parity["converted"] is False and parity["class"] == "FixedThresholdClassifier"
    assert "export: skipped: not convertible: FixedThresholdClassifier" in capsys.readouterr().out


def test_a_graph_that_differs_only_on_tied_rows_is_skipped_and_any_other_difference_fails():
    """Half the votes each: scikit-learn takes the first class, float32 may take the other. Such
    rows alone skip the export (the server answers with scikit-learn); a label that differs
    where scikit-learn is sure still fails parity and the run."""
    from components.common.onnx_runtime import Answers, compare_answers
    from components.export.logic import refuse_tied_rows

    sklearn_proba = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    sklearn = Answers(np.array(["no", "no", "yes"]), sklearn_proba)
    graph_proba = sklearn_proba.astype(np.float32)
    tie_flipped = compare_answers(
        sklearn, Answers(np.array(["yes", "no", "yes"]), graph_proba), "classification"
    )
    assert not tie_flipped["passed"] and tie_flipped["tied_label_mismatches"] == 1
    with pytest.raises(NotConvertible, match="1 of 3 test rows are ties"):
        refuse_tied_rows(tie_flipped)

    sure_flipped = compare_answers(
        sklearn, Answers(np.array(["yes", "yes", "yes"]), graph_proba), "classification"
    )
    assert sure_flipped["differing"] == 2 and sure_flipped["tied_label_mismatches"] == 1
    refuse_tied_rows(sure_flipped)  # not only ties: parity's failure stands
    agreeing = compare_answers(sklearn, Answers(sklearn.first, graph_proba), "classification")
    assert agreeing["passed"] and agreeing["tied_label_mismatches"] == 0
    refuse_tied_rows(agreeing)


def _artifacts(tmp_path: Path, model, test: pd.DataFrame, schema: dict) -> dict:
    joblib.dump(model, tmp_path / "model.joblib")
    write_frame(tmp_path / "test.parquet", test)
    write_json(tmp_path / "schema.json", schema)
    return {
        "model": Model(uri=str(tmp_path / "model.joblib")),
        "test": Dataset(uri=str(tmp_path / "test.parquet")),
        "schema": Artifact(uri=str(tmp_path / "schema.json")),
        "onnx_model": Model(uri=str(tmp_path / "out" / "model.onnx")),
        "parity": Artifact(uri=str(tmp_path / "out" / "parity.json")),
        "report": Markdown(uri=str(tmp_path / "out" / "report.md")),
    }


def test_the_component_writes_the_graph_its_parity_and_a_report(
    tmp_path, classifiers, loans_split, capsys
):
    schema, _, test, _ = loans_split
    model, _ = classifiers["hist_gradient_boosting"]
    artifacts = _artifacts(tmp_path, model, test, schema)
    export_onnx_model.python_func(**artifacts)
    onnx_file = tmp_path / "out" / "model.onnx"
    labels, _ = predict_onnx(load_session(onnx_file.read_bytes()), test, schema)
    assert labels.tolist() == model.predict(as_model_input(test, schema)).tolist()
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert parity["converted"] and parity["passed"] and parity["rows"] == len(test)
    assert artifacts["onnx_model"].metadata["converted"] is True
    assert "passed" in (tmp_path / "out" / "report.md").read_text()
    assert "[mlpipe] export: ONNX" in capsys.readouterr().out


def test_the_component_skips_a_mitigated_model_without_failing_the_run(
    tmp_path, threshold_optimized, loans_split, capsys
):
    schema, _, test, _ = loans_split
    artifacts = _artifacts(tmp_path, threshold_optimized, test, schema)
    export_onnx_model.python_func(**artifacts)  # returns: the run goes on
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b""
    assert artifacts["onnx_model"].metadata["converted"] is False
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert parity["converted"] is False and "ThresholdOptimizedModel" in parity["reason"]
    assert (
        "Skipped: not convertible: ThresholdOptimizedModel"
        in (tmp_path / "out" / "report.md").read_text()
    )
    assert "[mlpipe] export: skipped: not convertible" in capsys.readouterr().out


def test_the_component_fails_on_a_parity_failure_with_one_line(
    tmp_path, classifiers, loans_split, capsys, monkeypatch
):
    import components.export.logic as logic

    schema, _, test, _ = loans_split
    model, data = classifiers["logistic_regression"]
    monkeypatch.setattr(logic, "export_onnx", lambda *_: _corrupt(data))
    with pytest.raises(SystemExit) as caught:
        export_onnx_model.python_func(**_artifacts(tmp_path, model, test, schema))
    assert caught.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert "export: ONNX parity failed on" in errors[0] and "first: test row" in errors[0]
    assert json.loads((tmp_path / "out" / "parity.json").read_text())["passed"] is False


def _client_imports() -> set[str]:
    tree = ast.parse(CLIENT.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


def _client_row() -> dict:
    tree = ast.parse(CLIENT.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "row":
            return ast.literal_eval(node.value)
    raise AssertionError("examples/onnx_client.py has no `row = {...}`")


def test_the_readme_client_predicts_one_row_with_onnxruntime_alone(tmp_path, arrests):
    assert _client_imports() == {"numpy", "onnxruntime"}
    schema = validate_table(arrests, "released", "classification", ["colour", "sex"], {})
    train, _ = split_table(arrests, schema, 0.2, seed=0)
    best = {"family": "logistic_regression", "params": {"C": 1.0}}
    model = fit_model(train, schema, fit_preprocessor(train, schema), best, 0)
    (tmp_path / "model.onnx").write_bytes(export_onnx(model, schema))
    # Packages the client must not need: importing any of them fails in the subprocess.
    blocked = tmp_path / "blocked"
    for package in ("sklearn", "skl2onnx", "pandas", "joblib", "components"):
        (blocked / package).mkdir(parents=True)
        (blocked / package / "__init__.py").write_text(f"raise ImportError('{package} blocked')")
    completed = subprocess.run(
        [sys.executable, str(CLIENT)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(blocked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    printed = dict(line.split(": ", 1) for line in completed.stdout.strip().splitlines())
    row = pd.DataFrame([_client_row()])
    features = as_model_input(row, schema)
    assert printed["label"] == model.predict(features)[0]
    np.testing.assert_allclose(
        json.loads(printed["probabilities"]), model.predict_proba(features)[0], atol=1e-5
    )


def test_the_readme_shows_the_client_that_the_tests_run():
    root = Path(__file__).resolve().parents[2]
    client = (root / "examples" / "onnx_client.py").read_text()
    code = client.split('"""', 2)[2].strip()
    assert code in (root / "README.md").read_text(), (
        "README's ONNX snippet drifted from the example"
    )


def test_a_multiclass_sgd_classifier_matches_scikit_learn():
    # SGD's multiclass probabilities are its one-vs-rest sigmoids normalised to sum to 1: the
    # graph must do the same, not a softmax.
    rng = np.random.default_rng(11)
    rows = 600
    frame = pd.DataFrame({"x": rng.normal(0, 1, rows), "kind": rng.choice(["p", "q"], rows)})
    score = frame["x"] + (frame["kind"] == "p") + rng.normal(0, 0.5, rows)
    frame["tier"] = np.select([score < 0, score < 1], ["low", "mid"], "high")
    frame.loc[rng.choice(rows, 20, replace=False), "x"] = np.nan
    schema = validate_table(frame, "tier", "classification", [], {})
    train, test = split_table(frame, schema, 0.25, seed=0)
    best = {"family": "sgd_linear", "params": {"alpha": 1e-3}}
    model = fit_model(train, schema, fit_preprocessor(train, schema), best, 0)
    assert len(model.classes_) == 3
    data = export_onnx(model, schema)
    result = check_parity(model, data, test, schema)
    assert result["passed"], result["differing_rows"][:3]
    labels, probabilities = predict_onnx(load_session(data), test, schema)
    features = as_model_input(test, schema)
    assert labels.tolist() == model.predict(features).tolist()
    np.testing.assert_allclose(probabilities, model.predict_proba(features), atol=1e-5, rtol=0)
