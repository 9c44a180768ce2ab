import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, roc_auc_score

from components.prepare.logic import as_model_input, fit_preprocessor, split_table
from components.train.logic import evaluate_model, fit_model

BEST = {"family": "logistic_regression", "params": {"C": 1.0}}


@pytest.fixture
def fitted(loans, loans_schema):
    train, test = split_table(loans, loans_schema, 0.25, seed=1)
    model = fit_model(train, loans_schema, fit_preprocessor(train, loans_schema), BEST, seed=1)
    return model, test


def test_the_served_model_is_one_pipeline_with_the_fitted_preprocessor(fitted, loans_schema):
    model, test = fitted
    assert [name for name, _ in model.steps] == ["prep", "model"]
    predictions = model.predict(as_model_input(test, loans_schema))
    assert set(predictions) <= {"yes", "no"}


def test_classification_metrics_match_scikit_learn(fitted, loans_schema):
    model, test = fitted
    result = evaluate_model(model, test, loans_schema)
    features = as_model_input(test, loans_schema)
    y_true = test["approved"]
    y_pred = model.predict(features)
    metrics = result["metrics"]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["f1"] == pytest.approx(f1_score(y_true, y_pred, pos_label="yes"))
    assert metrics["roc_auc"] == pytest.approx(
        roc_auc_score(y_true == "yes", model.predict_proba(features)[:, 1])
    )
    matrix = np.array(result["confusion_matrix"]["matrix"])
    assert result["confusion_matrix"]["labels"] == ["no", "yes"]
    assert matrix.sum() == len(test)
    assert np.trace(matrix) == pytest.approx(metrics["accuracy"] * len(test))
    roc = result["roc"]
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == 1
    assert all(np.isfinite(roc["thresholds"]))


def test_regression_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "kind": rng.choice(["p", "q"], 200)})
    frame["y"] = (
        3 * frame["x"] + np.where(frame["kind"] == "p", 1.0, -1.0) + rng.normal(0, 0.1, 200)
    )
    schema = {
        "target": "y",
        "task": "regression",
        "features": [{"name": "x", "kind": "numeric"}, {"name": "kind", "kind": "categorical"}],
    }
    train, test = split_table(frame, schema, 0.25, seed=0)
    best = {"family": "linear_regression", "params": {"alpha": 0.01}}
    model = fit_model(train, schema, fit_preprocessor(train, schema), best, seed=0)
    metrics = evaluate_model(model, test, schema)["metrics"]
    expected = mean_squared_error(test["y"], model.predict(as_model_input(test, schema)))
    assert metrics["mse"] == pytest.approx(expected)
    assert metrics["rmse"] == pytest.approx(np.sqrt(expected))
    assert metrics["r2"] > 0.95
