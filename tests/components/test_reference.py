"""The training reference (components.common.reference) and the registry's reference.json: the
profile drift.compare reads, the held-out metrics with bootstrap intervals, the checksum, and
versions registered before references were stored."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from components.common import drift
from components.common.errors import PipelineInputError
from components.common.metrics import (
    _binary_metrics,
    evaluate_model,
    multiclass_metrics,
    regression_metrics,
    with_threshold,
)
from components.common.reference import (
    _binary_resampled,
    _multiclass_resampled,
    _regression_resampled,
    build_reference,
    check_reference,
    reference_json,
)
from components.common.registry import (
    METADATA_FILE,
    REFERENCE_FILE,
    ModelIntegrityError,
    ModelRegistry,
)
from components.common.schema import as_model_input
from tests.conftest import make_loans

LOANS_SCHEMA = {
    "target": "approved",
    "task": "classification",
    "classes": ["no", "yes"],
    "features": [
        {"name": "income", "kind": "numeric"},
        {"name": "age", "kind": "numeric"},
        {"name": "region", "kind": "categorical"},
        {"name": "group", "kind": "categorical"},
    ],
}


def fitted(train: pd.DataFrame, schema: dict, estimator):
    """A served-model-like Pipeline: imputation and one-hot encoding, then `estimator`."""
    numeric = [f["name"] for f in schema["features"] if f["kind"] == "numeric"]
    categorical = [f["name"] for f in schema["features"] if f["kind"] == "categorical"]
    preprocess = make_column_transformer(
        (SimpleImputer(), numeric), (OneHotEncoder(handle_unknown="ignore"), categorical)
    )
    model = make_pipeline(preprocess, estimator)
    return model.fit(as_model_input(train, schema), train[schema["target"]])


def loans_split(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = make_loans(rows, seed)
    cut = rows * 3 // 4
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


@pytest.fixture(scope="module")
def loans_model():
    train, test = loans_split(800)
    return train, test, fitted(train, LOANS_SCHEMA, LogisticRegression(max_iter=1000))


@pytest.fixture(scope="module")
def loans_reference(loans_model):
    train, test, model = loans_model
    return build_reference(train, test, LOANS_SCHEMA, model, positive_class="yes")


def log_window(test: pd.DataFrame, model, schema: dict) -> pd.DataFrame:
    """The held-out rows as a prediction log holds them: features, prediction, probabilities."""
    features = as_model_input(test, schema)
    window = test[[f["name"] for f in schema["features"]]].copy()
    window["prediction"] = model.predict(features)
    for index, label in enumerate(model.classes_):
        window[f"probability_{label}"] = model.predict_proba(features)[:, index]
    return window


def test_a_classification_reference_profiles_train_features_and_test_answers(
    loans_model, loans_reference
):
    train, test, _ = loans_model
    reference = loans_reference
    assert reference["version"] == 1 and reference["task"] == "classification"
    assert reference["classes"] == ["no", "yes"] and reference["positive_class"] == "yes"
    assert reference["threshold"] == 0.5
    assert reference["rows"] == {"train": 600, "test": 200}
    profile = reference["profile"]
    assert set(profile["features"]) == {"income", "age", "region", "group"}
    # Features from the training split, answers from the held-out split.
    assert profile["rows"] == 600 and profile["features"]["income"]["rows"] == 600
    assert set(profile["outputs"]) == {"prediction", "probability_no", "probability_yes"}
    assert profile["outputs"]["prediction"]["rows"] == 200
    assert profile["outputs"]["probability_yes"]["kind"] == "numeric"
    check_reference(reference, "here")


def test_drift_compare_reads_the_profile_as_it_is(loans_model, loans_reference):
    _, test, model = loans_model
    same = log_window(test, model, LOANS_SCHEMA)
    result = drift.compare(loans_reference["profile"], same, min_rows=50)
    compared = {column.name for column in result.columns}
    assert {"income", "prediction", "probability_yes"} <= compared
    assert result.verdict == "no drift"
    shifted = same.assign(income=same["income"] + 40)
    assert "income" in drift.compare(loans_reference["profile"], shifted, min_rows=50).drifted


def test_metrics_equal_the_evaluation_and_their_intervals_contain_them(
    loans_model, loans_reference
):
    _, test, model = loans_model
    evaluation = evaluate_model(model, test, LOANS_SCHEMA, "yes")
    metrics = loans_reference["metrics"]
    assert list(metrics) == list(evaluation["metrics"])
    for name, metric in metrics.items():
        assert metric["value"] == pytest.approx(evaluation["metrics"][name]), name
        assert metric["low"] <= metric["value"] <= metric["high"], name
        assert metric["low"] < metric["high"] and metric["level"] == 0.95
        assert metric["rows"] == 200


def test_intervals_narrow_with_more_held_out_rows():
    widths = []
    for rows in (400, 4000):
        train, test = loans_split(rows)
        model = fitted(train, LOANS_SCHEMA, LogisticRegression(max_iter=1000))
        metrics = build_reference(train, test, LOANS_SCHEMA, model, metrics=["accuracy"])
        widths.append(
            metrics["metrics"]["accuracy"]["high"] - metrics["metrics"]["accuracy"]["low"]
        )
    # Ten times the rows: about a third of the width (1/sqrt(10)); half is a safe bound.
    assert widths[1] < widths[0] / 2


def test_the_same_seed_gives_the_same_intervals_and_another_seed_others(loans_model):
    train, test, model = loans_model
    first = build_reference(train, test, LOANS_SCHEMA, model, metrics=["f1"], seed=1)
    again = build_reference(train, test, LOANS_SCHEMA, model, metrics=["f1"], seed=1)
    other = build_reference(train, test, LOANS_SCHEMA, model, metrics=["f1"], seed=2)
    assert first == again and first["metrics"] != other["metrics"]


def test_the_model_threshold_is_recorded_and_applied(loans_model):
    train, test, model = loans_model
    features = as_model_input(train, LOANS_SCHEMA)
    strict = with_threshold(model, 0.8, "yes", features, train["approved"])
    reference = build_reference(train, test, LOANS_SCHEMA, strict, positive_class="yes")
    assert reference["threshold"] == 0.8
    yes_share = reference["profile"]["outputs"]["prediction"]["shares"].get("yes", 0)
    expected = np.mean(strict.predict(as_model_input(test, LOANS_SCHEMA)) == "yes")
    assert yes_share == pytest.approx(expected)


def test_a_regression_reference_profiles_numeric_predictions():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=500), "c": rng.choice(["a", "b"], 500)})
    frame["y"] = 3 * frame["x"] + np.where(frame["c"] == "a", 1.0, -1.0) + rng.normal(size=500)
    schema = {
        "target": "y",
        "task": "regression",
        "features": [{"name": "x", "kind": "numeric"}, {"name": "c", "kind": "categorical"}],
    }
    train, test = frame.iloc[:400], frame.iloc[400:]
    model = fitted(train, schema, LinearRegression())
    reference = build_reference(train, test, schema, model)
    assert reference["classes"] is None and reference["threshold"] is None
    assert set(reference["profile"]["outputs"]) == {"prediction"}
    assert reference["profile"]["outputs"]["prediction"]["kind"] == "numeric"
    assert set(reference["metrics"]) == {"mse", "rmse", "mae", "r2"}
    r2 = reference["metrics"]["r2"]
    assert r2["low"] <= r2["value"] <= r2["high"] and r2["value"] > 0.8
    window = test.assign(prediction=model.predict(as_model_input(test, schema)))
    assert drift.compare(reference["profile"], window, min_rows=50).verdict == "no drift"


def test_a_multiclass_reference_has_macro_metrics_with_intervals():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=600), "z": rng.normal(size=600)})
    frame["y"] = np.select([frame["x"] < -0.5, frame["x"] > 0.5], ["low", "high"], "mid")
    schema = {
        "target": "y",
        "task": "classification",
        "features": [{"name": "x", "kind": "numeric"}, {"name": "z", "kind": "numeric"}],
    }
    model = make_pipeline(LogisticRegression(max_iter=1000)).fit(
        frame[["x", "z"]].iloc[:450], frame["y"][:450]
    )
    reference = build_reference(frame.iloc[:450], frame.iloc[450:], schema, model)
    assert reference["positive_class"] is None and reference["threshold"] is None
    assert set(reference["profile"]["outputs"]) == {
        "prediction",
        "probability_high",
        "probability_low",
        "probability_mid",
    }
    auc = reference["metrics"]["roc_auc_ovr"]
    assert auc["low"] <= auc["value"] <= auc["high"]


def test_the_resampled_forms_equal_scikit_learn_when_every_row_counts_once():
    rng = np.random.default_rng(2)
    rows = 300
    ones = np.ones((1, rows))
    # Rounded scores: ties, which AUC and average precision must treat as scikit-learn does.
    scores = np.round(rng.random(rows), 2)
    is_positive = rng.random(rows) < scores
    predicted = scores >= 0.4
    expected = _binary_metrics(is_positive, predicted, scores)
    got = _binary_resampled(is_positive, predicted, scores)(ones)
    assert {k: float(v[0]) for k, v in got.items()} == pytest.approx(expected)

    classes = ["a", "b", "c"]
    probabilities = rng.dirichlet([1, 1, 1], rows)
    labels = np.array(classes, dtype=object)[rng.integers(0, 3, rows)]
    expected = multiclass_metrics(labels, probabilities, classes)
    got = _multiclass_resampled(labels, probabilities, classes)(ones)
    assert {k: float(v[0]) for k, v in got.items()} == pytest.approx(expected)

    truth, guess = rng.normal(size=rows), rng.normal(size=rows)
    got = _regression_resampled(truth, guess)(ones)
    assert {k: float(v[0]) for k, v in got.items()} == pytest.approx(
        regression_metrics(truth, guess)
    )


def test_an_unknown_metric_or_an_empty_split_is_one_line(loans_model):
    train, test, model = loans_model
    with pytest.raises(PipelineInputError, match="metric 'r2' is not a classification metric"):
        build_reference(train, test, LOANS_SCHEMA, model, metrics=["r2"])
    with pytest.raises(PipelineInputError, match="the test split has no rows"):
        build_reference(train, test.iloc[:0], LOANS_SCHEMA, model)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("metrics"), "key 'metrics' is missing"),
        (lambda r: r.update(version=2), "key 'version' is 2"),
        (lambda r: r["profile"]["features"].clear(), "key 'profile': key 'features' is empty"),
        (lambda r: r["metrics"]["f1"].pop("low"), "key 'metrics.f1.low' is missing"),
        (lambda r: r.update(threshold="high"), "key 'threshold' is 'high'"),
        (lambda r: r.update(rows={"train": 3}), "key 'rows' is not"),
    ],
)
def test_check_reference_names_the_key(loans_reference, change, message):
    reference = json.loads(reference_json(loans_reference))
    change(reference)
    with pytest.raises(PipelineInputError, match=f"^where: {message}"):
        check_reference(reference, "where")


def test_the_json_is_compact_and_has_no_nan(loans_model):
    train, test, model = loans_model
    # One class only in the held-out rows: ROC AUC is undefined (NaN), written as null.
    one_class = test[test["approved"] == "yes"]
    reference = build_reference(train, one_class, LOANS_SCHEMA, model)
    assert reference["metrics"]["roc_auc"]["value"] is None
    data = reference_json(reference)
    assert json.loads(data) == reference and b"NaN" not in data and b"\n" not in data


# --- In the registry --------------------------------------------------------------------------


def test_the_registry_stores_and_verifies_reference_json(tmp_path, loans_model, loans_reference):
    _, _, model = loans_model
    registry = ModelRegistry(str(tmp_path), "loans")
    version = registry.register(model, {}, {REFERENCE_FILE: reference_json(loans_reference)})
    assert registry.reference(version.version) == loans_reference
    assert registry.reference("v1") == registry.reference(version.version)
    path = Path(version.uri) / REFERENCE_FILE
    changed = json.loads(path.read_text())
    changed["metrics"]["f1"]["value"] = 0.99
    path.write_text(json.dumps(changed))
    with pytest.raises(ModelIntegrityError, match=r"reference.json: SHA-256 .* does not match"):
        registry.reference("v1")


def test_a_version_from_before_references_has_none(tmp_path, loans_model):
    _, _, model = loans_model
    registry = ModelRegistry(str(tmp_path), "loans")
    registry.register(model, {})
    assert registry.reference("v1") is None
    assert (
        REFERENCE_FILE
        not in json.loads((tmp_path / "loans" / "v1" / METADATA_FILE).read_text())["files"]
    )
