"""Evaluation metrics against scikit-learn on fixed data, the threshold rules, and the gate."""

import math

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from components.common.errors import PipelineInputError
from components.common.metrics import (
    binary_metrics,
    choose_threshold,
    evaluate_model,
    multiclass_metrics,
    out_of_fold,
    regression_metrics,
)
from components.common.schema import as_model_input
from components.evaluate.gate import decide
from components.prepare.logic import fit_preprocessor, split_table
from components.train.logic import fit_model, fit_with_threshold

BEST = {"family": "logistic_regression", "params": {"C": 1.0}}

# Fixed data: 12 rows, labels and scores chosen so that every metric is non-trivial.
Y = np.array(["no", "yes", "yes", "no", "yes", "no", "yes", "yes", "no", "no", "yes", "no"])
SCORES = np.array([0.1, 0.8, 0.35, 0.4, 0.9, 0.65, 0.55, 0.2, 0.3, 0.05, 0.7, 0.5])


def test_binary_metrics_equal_scikit_learn_on_fixed_data():
    got = binary_metrics(Y, SCORES, "yes", threshold=0.5)
    truth, predicted = Y == "yes", SCORES >= 0.5
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(truth, predicted))
    assert got["precision"] == pytest.approx(skm.precision_score(truth, predicted))
    assert got["recall"] == pytest.approx(skm.recall_score(truth, predicted))
    assert got["f1"] == pytest.approx(skm.f1_score(truth, predicted))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, SCORES))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(truth, SCORES))
    assert got["log_loss"] == pytest.approx(skm.log_loss(truth, SCORES))
    assert got["brier"] == pytest.approx(skm.brier_score_loss(truth, SCORES))
    # The threshold moves the label metrics and nothing else.
    stricter = binary_metrics(Y, SCORES, "yes", threshold=0.75)
    assert stricter["recall"] == pytest.approx(2 / 6) and stricter["precision"] == 1.0
    assert stricter["roc_auc"] == got["roc_auc"] and stricter["brier"] == got["brier"]


def test_multiclass_and_regression_metrics_equal_scikit_learn():
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    probabilities = rng.dirichlet([1, 1, 1], size=60)
    y = np.array(classes, dtype=object)[rng.integers(0, 3, 60)]
    got = multiclass_metrics(y, probabilities, classes)
    predicted = np.array(classes, dtype=object)[probabilities.argmax(axis=1)]
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert got["f1"] == pytest.approx(skm.f1_score(y, predicted, average="macro"))
    assert got["roc_auc_ovr"] == pytest.approx(
        skm.roc_auc_score(y, probabilities, multi_class="ovr", labels=classes)
    )
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, probabilities, labels=classes))

    truth, guess = rng.normal(size=50), rng.normal(size=50)
    regression = regression_metrics(truth, guess)
    assert regression["mse"] == pytest.approx(skm.mean_squared_error(truth, guess))
    assert regression["rmse"] == pytest.approx(math.sqrt(regression["mse"]))
    assert regression["mae"] == pytest.approx(skm.mean_absolute_error(truth, guess))
    assert regression["r2"] == pytest.approx(skm.r2_score(truth, guess))


def test_max_f1_picks_the_best_threshold_by_brute_force():
    truth = Y == "yes"
    chosen = choose_threshold(truth, SCORES, "max_f1", 0.5, 0.9)
    best = max(SCORES, key=lambda t: skm.f1_score(truth, SCORES >= t))
    assert skm.f1_score(truth, SCORES >= chosen) == pytest.approx(
        skm.f1_score(truth, SCORES >= best)
    )


def test_target_precision_reaches_it_with_the_most_recall():
    truth = Y == "yes"
    chosen = choose_threshold(truth, SCORES, "target_precision", 0.5, 0.75)
    assert skm.precision_score(truth, SCORES >= chosen) >= 0.75
    # Every lower threshold misses the precision: none keeps more recall at that precision.
    lower = [t for t in SCORES if t < chosen]
    assert all(skm.precision_score(truth, SCORES >= t) < 0.75 for t in lower)
    assert choose_threshold(truth, SCORES, "fixed", 0.42, 0.75) == 0.42


def test_an_unreachable_target_precision_is_a_clear_error():
    truth = np.array([True, False, True, False])
    scores = np.array([0.2, 0.9, 0.3, 0.8])  # ranked backwards: precision never reaches 0.99
    with pytest.raises(PipelineInputError, match="target_precision 0.99: no threshold"):
        choose_threshold(truth, scores, "target_precision", 0.5, 0.99)


@pytest.fixture
def fitted(loans, loans_schema):
    train, test = split_table(loans, loans_schema, 0.25, seed=1)
    preprocessor = fit_preprocessor(train, loans_schema)
    return fit_model(train, loans_schema, preprocessor, BEST, seed=1), preprocessor, train, test


def test_evaluate_model_reports_what_the_served_model_predicts(fitted, loans_schema):
    model, _, _, test = fitted
    result = evaluate_model(model, test, loans_schema, "yes")
    features = as_model_input(test, loans_schema)
    truth = test["approved"] == "yes"
    scores = model.predict_proba(features)[:, 1]
    predicted = model.predict(features) == "yes"
    assert result["positive_class"] == "yes" and result["threshold"]["value"] == 0.5
    assert result["metrics"]["f1"] == pytest.approx(skm.f1_score(truth, predicted))
    assert result["metrics"]["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, scores))
    matrix = np.array(result["confusion_matrix"]["matrix"])
    assert result["confusion_matrix"]["labels"] == ["no", "yes"] and matrix.sum() == len(test)
    curves = result["curves"]
    assert curves["roc"]["fpr"][0] == 0 and curves["roc"]["tpr"][-1] == 1
    assert all(np.isfinite(curves["roc"]["thresholds"]))
    assert curves["pr"]["recall"][0] == 1 and len(curves["pr"]["precision"]) <= 200
    fraction, mean_predicted = calibration_curve(truth, scores, n_bins=10)
    assert curves["calibration"]["fraction_positive"] == pytest.approx(fraction.tolist())
    assert curves["calibration"]["mean_predicted"] == pytest.approx(mean_predicted.tolist())
    assert sum(curves["calibration"]["count"]) == len(test)


def test_a_chosen_threshold_is_applied_by_the_served_model_and_survives_pickling(
    fitted, loans_schema, tmp_path
):
    model, preprocessor, train, test = fitted
    served, cv = fit_with_threshold(
        model, train, loans_schema, preprocessor, BEST, 1, 3, "yes", "max_f1", 0.5, 0.9, "none"
    )
    threshold = cv["threshold"]["value"]
    assert cv["threshold"]["rule"] == "max_f1" and threshold != 0.5
    joblib.dump(served, tmp_path / "m.joblib")
    loaded = joblib.load(tmp_path / "m.joblib")
    features = as_model_input(test, loans_schema)
    scores = model.predict_proba(features)[:, 1]
    expected = np.where(scores >= threshold, "yes", "no")
    assert (loaded.predict(features) == expected).all()
    result = evaluate_model(loaded, test, loans_schema, "yes", "max_f1")
    assert result["threshold"] == {"rule": "max_f1", "value": pytest.approx(threshold)}
    assert result["metrics"]["recall"] == pytest.approx(
        skm.recall_score(test["approved"] == "yes", expected == "yes")
    )


def test_cross_validation_gives_a_mean_and_spread_per_metric(fitted, loans_schema):
    model, preprocessor, train, _ = fitted
    _, cv = fit_with_threshold(
        model, train, loans_schema, preprocessor, BEST, 1, 4, "yes", "fixed", 0.5, 0.9, "none"
    )
    assert cv["folds"] == 4 and cv["threshold"] == {"rule": "fixed", "value": 0.5}
    auc = cv["scores"]["roc_auc"]
    assert 0.5 < auc["mean"] <= 1 and 0 < auc["std"] < 0.2
    assert set(cv["scores"]) >= {"accuracy", "f1", "roc_auc", "log_loss", "brier"}


def test_out_of_fold_scores_every_training_row_once(loans, loans_schema):
    fits = []

    def fit(rows):
        fits.append(len(rows))
        return fit_model(rows, loans_schema, fit_preprocessor(rows, loans_schema), BEST, 0)

    folds = out_of_fold(fit, loans, loans_schema, 5, 0, "yes")
    assert len(fits) == 5 and all(size == len(loans) * 4 // 5 for size in fits)
    assert not np.isnan(folds.scores).any()
    held = np.concatenate(folds.held_out)
    assert sorted(held.tolist()) == list(range(len(loans)))


def test_regression_evaluation_has_residuals_and_no_threshold():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "kind": rng.choice(["p", "q"], 200)})
    frame["y"] = 3 * frame["x"] + np.where(frame["kind"] == "p", 1.0, -1.0)
    schema = {
        "target": "y",
        "task": "regression",
        "features": [{"name": "x", "kind": "numeric"}, {"name": "kind", "kind": "categorical"}],
    }
    train, test = split_table(frame, schema, 0.25, seed=0)
    preprocessor = fit_preprocessor(train, schema)
    best = {"family": "linear_regression", "params": {"alpha": 0.01}}
    model = fit_model(train, schema, preprocessor, best, seed=0)
    result = evaluate_model(model, test, schema)
    predicted = model.predict(as_model_input(test, schema))
    assert result["metrics"]["mse"] == pytest.approx(skm.mean_squared_error(test["y"], predicted))
    assert result["residuals"]["residual"] == pytest.approx((test["y"] - predicted).tolist())
    _, cv = fit_with_threshold(
        model, train, schema, preprocessor, best, 0, 3, "", "fixed", 0.5, 0.9, "none"
    )
    assert cv["threshold"] is None and cv["scores"]["r2"]["mean"] > 0.95
    with pytest.raises(PipelineInputError, match="binary classification only"):
        fit_with_threshold(
            model, train, schema, preprocessor, best, 0, 3, "", "max_f1", 0.5, 0.9, "none"
        )


# --- The gate -----------------------------------------------------------------------------

CANDIDATE = {"roc_auc": 0.86, "log_loss": 0.40, "f1": 0.7}
FAIR = {"passed": True, "reason": "passed"}


def test_gate_blesses_a_first_model_that_meets_the_thresholds():
    result = decide(CANDIDATE, {"roc_auc": 0.85, "log_loss": 0.5}, ["roc_auc"], 0.01, None, FAIR)
    assert result["blessed"] is True
    assert result["reason"] == "blessed: meets every threshold and there is no champion yet"
    assert [c["kind"] for c in result["checks"]] == ["threshold", "threshold", "fairness"]


def test_gate_refuses_a_model_below_an_absolute_threshold():
    result = decide(CANDIDATE, {"roc_auc": 0.9}, ["roc_auc"], 0.01, None, FAIR)
    assert result["blessed"] is False
    assert result["reason"] == "not blessed: 0.8600 does not reach 0.9"
    # Losses are bounded from above.
    losses = decide(CANDIDATE, {"log_loss": 0.3}, ["roc_auc"], 0.01, None, FAIR)
    assert losses["blessed"] is False and losses["checks"][0]["name"] == "log_loss <= 0.3"


def test_gate_refuses_a_model_worse_than_the_champion_by_more_than_the_margin():
    champion = {"version": "v3", "metrics": {"roc_auc": 0.88, "log_loss": 0.39}, "error": None}
    result = decide(CANDIDATE, {"roc_auc": 0.8}, ["roc_auc"], 0.01, champion, FAIR)
    assert result["blessed"] is False
    assert (
        "roc_auc 0.8600 is worse than champion v3 (0.8800) by more than the margin 0.01"
        in (result["reason"])
    )
    # Within the margin it passes; and a loss metric compares the other way round.
    within = decide(CANDIDATE, {}, ["roc_auc", "log_loss"], 0.025, champion, FAIR)
    assert within["blessed"] is True
    assert within["reason"] == "blessed: meets every threshold and is not worse than champion v3"
    worse_loss = decide(CANDIDATE, {}, ["log_loss"], 0.005, champion, FAIR)
    assert worse_loss["blessed"] is False


def test_gate_counts_the_fairness_gate_and_an_unscorable_champion():
    blocked = {"passed": False, "reason": "blocked: demographic_parity_ratio 0.5"}
    result = decide(CANDIDATE, {}, ["roc_auc"], 0.01, None, blocked)
    assert result["blessed"] is False and "demographic_parity_ratio 0.5" in result["reason"]
    broken = {"version": "v2", "metrics": {}, "error": "column 'age' is not in the data"}
    result = decide(CANDIDATE, {}, ["roc_auc"], 0.01, broken, FAIR)
    assert result["blessed"] is False and "could not be scored" in result["reason"]


def test_gate_names_a_metric_the_run_does_not_have():
    with pytest.raises(PipelineInputError, match="evaluation.thresholds.r2: this run has no"):
        decide(CANDIDATE, {"r2": 0.5}, ["roc_auc"], 0.01, None, FAIR)


def test_group_aware_folds_never_split_a_group(loans, loans_schema):
    from components.common.folds import cv_fold_rows

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, len(loans))  # 40 households
    folds = cv_fold_rows(loans["approved"], "classification", 4, 0, groups)
    assert len(folds) == 4
    for fit_rows, held_rows in folds:
        assert not set(groups[fit_rows]) & set(groups[held_rows])
    assert sorted(np.concatenate([held for _, held in folds]).tolist()) == list(range(len(loans)))
    # The threshold's out-of-fold scores come from the same kind of folds.
    model = fit_model(loans, loans_schema, fit_preprocessor(loans, loans_schema), BEST, 0)
    _, cv = fit_with_threshold(
        model,
        loans,
        loans_schema,
        fit_preprocessor(loans, loans_schema),
        BEST,
        0,
        4,
        "yes",
        "max_f1",
        0.5,
        0.9,
        "none",
        groups=groups,
    )
    assert cv["folds"] == 4 and 0 < cv["threshold"]["value"] < 1
    with pytest.raises(PipelineInputError, match="has 3 groups, fewer than the 4"):
        cv_fold_rows(loans["approved"], "classification", 4, 0, groups % 3)


@pytest.mark.parametrize("classes", [[0, 1], [0, 1, 2]])
def test_integer_labels_are_scored_like_text_ones(classes):
    # A lake's 0/1 (or 0/1/2) label column: scikit-learn's metrics refuse an object array of
    # integers ("unknown is not supported"), which evaluate once built from it.
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300)})
    frame["y"] = np.digitize(frame["x"] + rng.normal(scale=0.5, size=300), [0.0, 0.8])
    frame["y"] = frame["y"].clip(upper=len(classes) - 1)
    schema = {
        "target": "y",
        "task": "classification",
        "classes": [str(c) for c in classes],
        "features": [{"name": "x", "kind": "numeric"}],
    }
    model = LogisticRegression().fit(frame[["x"]], frame["y"])
    result = evaluate_model(model, frame, schema, "")
    assert result["confusion_matrix"]["labels"] == [str(c) for c in classes]
    assert np.asarray(result["confusion_matrix"]["matrix"]).sum() == 300
    assert result["metrics"]["accuracy"] > 0.6
