"""The run report: its sections and values from the steps' real outputs, escaping, offline
self-containment, and a render in headless Chromium as a person would open it."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    make_scorer,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import cross_validate, train_test_split

from components.report.logic import (
    RENDER_ERROR_CLASS,
    SECTIONS,
    read_optional_csv,
    read_optional_json,
    render_run_report,
    threshold_text,
    tuning_progress,
)
from tests.conftest import make_loans

HOSTILE = "<script>alert(1)</script>"
EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//""", re.I
)


# --- inputs, built the way the steps build them ---------------------------------------------


@pytest.fixture(scope="module")
def fairness_outputs():
    """The bias and fairness steps' real outputs for a model on a small loans table."""
    from components.bias.assess import assess_data, assess_model
    from components.bias.report import data_html, data_markdown, fairness_data
    from components.common.settings.sections import BiasConfig
    from components.validate.logic import validate_table

    class IncomeRule:
        """Approves above-median incomes: a model whose selection rate differs by group."""

        def predict(self, frame):
            return np.where(frame["income"].fillna(0) > 50, "yes", "no")

    loans = make_loans(rows=400)
    schema = validate_table(loans, "approved", "classification", ["group"], {})
    settings = BiasConfig(
        bootstrap=20,
        thresholds=[{"metric": "demographic_parity_ratio", "threshold": 0.99, "blocking": False}],
    )
    tables, notes = assess_data(loans, schema, ["group"], "yes", settings)
    assessment = assess_model(IncomeRule(), loans, schema, ["group"], "yes", settings, seed=0)
    return {
        "schema": schema,
        "data_bias_markdown": data_markdown(tables, notes, settings.min_group_size),
        "fairness_page": data_html(
            fairness_data(assessment.results, assessment.gate, assessment.problems)
        ),
        # As the fairness step writes its report_data artifact (JSON), and the report reads it.
        "fairness_data": json.loads(
            json.dumps(
                fairness_data(assessment.results, assessment.gate, assessment.problems),
                default=str,
            )
        ),
        "fairness_summary": json.loads(json.dumps(assessment.as_dict(), default=str)),
    }


def tuning_outputs() -> tuple[dict, pd.DataFrame]:
    """A best trial and a trials table with the tune step's columns (one stopped, one failed)."""
    trials = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3, 4],
            "trial_id": ["a", "b", "c", "d", "e"],
            "family": ["random_forest", "logistic_regression", "random_forest", "hgb", "hgb"],
            "params": [
                json.dumps({"n_estimators": 50}),
                json.dumps({"C": 1.0}),
                json.dumps({"n_estimators": 200}),
                json.dumps({"learning_rate": 0.1}),
                json.dumps({"learning_rate": 9.0}),
            ],
            # Trial 3 scored highest on the small budget it had before ASHA stopped it.
            "score": [0.71, 0.7532, 0.74, 0.76, np.nan],
            "score_std": [0.02, 0.0123, 0.03, 0.05, np.nan],
            "budget": [50, 1, 200, 20, np.nan],
            "status": ["done", "done", "done", "stopped", "failed"],
            "seconds": [0.8, 3.2, 1.5, 2.0, np.nan],
            "node": ["n1"] * 5,
            "pid": [1, 2, 3, 4, 5],
            "error": [None, None, None, None, "ValueError: learning_rate too large"],
        }
    )
    best = {
        "family": "logistic_regression",
        "params": {"C": 1.0},
        "metric": "roc_auc",
        "cv_score": 0.7532,
        "cv_std": 0.0123,
        "cv_folds": 3,
        "num_trials": 5,
        "failed_trials": 1,
        "stopped_trials": 1,
        "search": "random",
        "scheduler": "asha",
        "ray": "embedded (2 CPUs on 127.0.0.1)",
        "nodes": 1,
        "seconds": 4.1,
    }
    return best, trials


def _cv(model, x, y, scoring: dict) -> dict:
    """CV mean and std per metric, as the evaluation JSON carries them."""
    scores = cross_validate(model, x, y, cv=3, scoring=scoring)
    return {
        "folds": 3,
        "scores": {
            name: {
                "mean": float(np.mean(scores[f"test_{name}"])),
                "std": float(np.std(scores[f"test_{name}"])),
            }
            for name in scoring
        },
    }


def binary_evaluation() -> dict:
    """The evaluation JSON of a real binary model, its values computed with scikit-learn."""
    # Noisy enough that the scores are unremarkable (an AUC near 0.8) and a champion can beat it.
    x, y = make_classification(
        n_samples=600, n_features=6, n_informative=3, flip_y=0.15, class_sep=0.6, random_state=0
    )
    labels = np.array(["No", "Yes"])[y]
    x_train, x_test, y_train, y_test = train_test_split(x, labels, random_state=0, stratify=labels)
    model = LogisticRegression().fit(x_train, y_train)
    proba = model.predict_proba(x_test)[:, 1]
    predicted = np.where(proba >= 0.5, "Yes", "No")
    positive = y_test == "Yes"
    fpr, tpr, roc_thresholds = roc_curve(positive, proba)
    precision, recall, pr_thresholds = precision_recall_curve(positive, proba)
    fraction, mean_predicted = calibration_curve(positive, proba, n_bins=8)
    return {
        "task": "classification",
        "rows": len(y_test),
        "classes": ["No", "Yes"],
        "positive_class": "Yes",
        "threshold": {"rule": "fixed", "value": 0.5, "target_precision": None},
        "metrics": {
            "accuracy": accuracy_score(y_test, predicted),
            "balanced_accuracy": balanced_accuracy_score(y_test, predicted),
            "precision": precision_score(y_test, predicted, pos_label="Yes"),
            "recall": recall_score(y_test, predicted, pos_label="Yes"),
            "f1": f1_score(y_test, predicted, pos_label="Yes"),
            "roc_auc": roc_auc_score(positive, proba),
            "pr_auc": average_precision_score(positive, proba),
            "log_loss": log_loss(positive, proba),
            "brier": brier_score_loss(positive, proba),
        },
        "cv": _cv(
            LogisticRegression(),
            x_train,
            y_train,
            {"accuracy": "accuracy", "f1": make_scorer(f1_score, pos_label="Yes")},
        ),
        "confusion_matrix": {
            "labels": ["No", "Yes"],
            "matrix": confusion_matrix(y_test, predicted, labels=["No", "Yes"]).tolist(),
        },
        "curves": {
            "roc": {
                "fpr": fpr.tolist(),
                "tpr": tpr.tolist(),
                # roc_curve's first threshold is inf, which JSON carries as Infinity.
                "thresholds": roc_thresholds.tolist(),
            },
            "pr": {
                "precision": precision.tolist(),
                "recall": recall.tolist(),
                "thresholds": pr_thresholds.tolist(),
            },
            "calibration": {
                "mean_predicted": mean_predicted.tolist(),
                "fraction_positive": fraction.tolist(),
                "count": [10] * len(fraction),
            },
        },
        "residuals": {},
    }


def multiclass_evaluation() -> dict:
    x, y = make_classification(
        n_samples=450, n_features=6, n_informative=4, n_classes=3, random_state=1
    )
    labels = np.array(["low", "mid", "high"])[y]
    x_train, x_test, y_train, y_test = train_test_split(x, labels, random_state=0)
    model = LogisticRegression().fit(x_train, y_train)
    predicted = model.predict(x_test)
    return {
        "task": "classification",
        "rows": len(y_test),
        "classes": ["high", "low", "mid"],
        "positive_class": None,
        "threshold": None,
        "metrics": {
            "accuracy": accuracy_score(y_test, predicted),
            "f1": f1_score(y_test, predicted, average="macro"),
            "roc_auc_ovr": roc_auc_score(y_test, model.predict_proba(x_test), multi_class="ovr"),
        },
        "cv": {"folds": 3, "scores": {}},
        "confusion_matrix": {
            "labels": ["high", "low", "mid"],
            "matrix": confusion_matrix(y_test, predicted, labels=["high", "low", "mid"]).tolist(),
        },
        "curves": {},
        "residuals": {},
    }


def regression_evaluation() -> dict:
    x, y = make_regression(n_samples=300, n_features=4, noise=10.0, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, random_state=0)
    predicted = LinearRegression().fit(x_train, y_train).predict(x_test)
    mse = mean_squared_error(y_test, predicted)
    return {
        "task": "regression",
        "rows": len(y_test),
        "classes": None,
        "positive_class": None,
        "threshold": None,
        "metrics": {
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "mae": mean_absolute_error(y_test, predicted),
            "r2": r2_score(y_test, predicted),
        },
        "cv": _cv(LinearRegression(), x_train, y_train, {"r2": "r2"}),
        "curves": {},
        "residuals": {"predicted": predicted.tolist(), "residual": (y_test - predicted).tolist()},
    }


def not_blessed_gate(evaluation: dict) -> dict:
    ours = evaluation["metrics"]["roc_auc"]
    champion = {name: value + 0.05 for name, value in evaluation["metrics"].items()}
    champion["log_loss"] = evaluation["metrics"]["log_loss"] - 0.1  # lower is better here
    return {
        "blessed": False,
        "reason": (
            f"not blessed: roc_auc {ours:.2f} is worse than champion v1 "
            f"({champion['roc_auc']:.2f}) by more than the margin 0.01"
        ),
        "margin": 0.01,
        "checks": [
            {"kind": "threshold", "name": "roc_auc >= 0.70", "passed": True, "detail": "ok"},
            {"kind": "champion", "name": "roc_auc vs v1", "passed": False, "detail": "-0.05"},
        ],
        "champion": {"version": "v1", "metrics": champion, "error": None},
    }


@pytest.fixture(scope="module")
def binary_inputs(fairness_outputs) -> dict:
    best, trials = tuning_outputs()
    evaluation = binary_evaluation()
    return {
        "model_name": "loans",
        "version": "v2",
        "run_id": "20261123-170012-a1b2c3",
        "dataset": {
            "source_uri": "s3://lake/loans",
            "rows": 400,
            "content_hash": "9f86d081884c7d65",
            "bytes": 12345,
        },
        "schema": fairness_outputs["schema"],
        "anomalies": [
            {
                "kind": "unseen_category",
                "column": "region",
                "expectation": "one of east, north",
                "observed": "south (33% of rows)",
                "severity": "warn",
            }
        ],
        "contract_inferred": False,
        "data_bias_markdown": fairness_outputs["data_bias_markdown"],
        "fairness_data": fairness_outputs["fairness_data"],
        "fairness_summary": fairness_outputs["fairness_summary"],
        "best": best,
        "trials": trials,
        "evaluation": evaluation,
        "gate": not_blessed_gate(evaluation),
    }


@pytest.fixture(scope="module")
def binary_page(binary_inputs) -> str:
    return render_run_report(**binary_inputs)


def section(page: str, section_id: str) -> str:
    match = re.search(rf"<section id='{section_id}'>(.*?)</section>", page, flags=re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


# --- logic ----------------------------------------------------------------------------------


def test_every_section_is_present_in_order(binary_page):
    ids = re.findall(r"<section id='([a-z]+)'>\s*<h2>([^<]+)</h2>", binary_page)
    assert ids == list(SECTIONS)
    assert binary_page.startswith("<!DOCTYPE html>") and binary_page.rstrip().endswith("</html>")
    assert f"class='{RENDER_ERROR_CLASS}'" not in binary_page


def test_the_steps_values_appear(binary_page, binary_inputs):
    evaluation = binary_inputs["evaluation"]
    metrics = section(binary_page, "metrics")
    assert f">{evaluation['metrics']['roc_auc']:.4f}<" in metrics
    accuracy = evaluation["cv"]["scores"]["accuracy"]
    assert f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}" in metrics
    assert "CV mean ± std (3 folds)" in metrics
    assert "Decision threshold 0.500: a fixed threshold." in metrics
    # CV covers two of nine metrics; the others say so rather than show a made-up spread.
    assert metrics.count("not scored") == len(evaluation["metrics"]) - 2

    data = section(binary_page, "data")
    for text in ("s3://lake/loans", "9f86d081884c7d65", ">400<", ">12345<", "unseen_category"):
        assert text in data
    assert "<td>income</td><td>numeric</td>" in data
    # The bias step's Markdown tables are HTML tables here.
    assert "<th>base rate</th>" in data

    fairness = section(binary_page, "fairness")
    reason = binary_inputs["fairness_summary"]["gate"]["reason"]
    assert reason and reason.replace("'", "&#39;") in fairness
    assert "<th>selection rate</th>" in fairness and "data:image/png;base64," in fairness
    assert "<h1" not in fairness  # the fairness page's own title is not repeated

    tuning = section(binary_page, "tuning")
    rows = re.findall(r"<tr><td class='num'>(\d+)</td><td class='num'>(\d+)</td>", tuning)
    # Ranked by score, best first; the failed trial (no score) last.
    assert [trial for _, trial in rows] == ["3", "1", "2", "0", "4"]
    assert "0.7532 ± 0.0123" in tuning and "{&#34;C&#34;: 1.0}" in tuning
    assert "ValueError: learning_rate too large" in tuning
    assert tuning.count("<img ") == 1

    curves = section(binary_page, "curves")
    for alt in ("ROC curve", "precision-recall curve", "calibration curve", "confusion matrix"):
        assert f"alt='{alt}'" in curves
    matrix = evaluation["confusion_matrix"]["matrix"]
    assert f"<td>No</td><td class='num'>{matrix[0][0]}</td><td class='num'>{matrix[0][1]}</td>" in (
        curves
    )


def test_not_blessed_shows_its_reason_at_the_top(binary_page, binary_inputs):
    reason = binary_inputs["gate"]["reason"]
    assert reason.startswith("not blessed: ")
    decision = section(binary_page, "decision")
    # The verdict is said once, then the gate's reason.
    verdict = "Not blessed: " + reason.removeprefix("not blessed: ")
    assert f"<p class='verdict not-blessed'>{verdict}</p>" in decision
    # The reason comes before any other section.
    assert binary_page.index(verdict) < binary_page.index("<section id='data'>")
    assert "<td class='failed'>failed</td>" in decision


def test_the_champion_table_compares_both_models(binary_page, binary_inputs):
    champion = section(binary_page, "champion")
    ours = binary_inputs["evaluation"]["metrics"]
    theirs = binary_inputs["gate"]["champion"]["metrics"]
    assert "<th>candidate v2</th><th>champion v1</th>" in champion
    roc = (
        f"<td>roc_auc</td><td class='num'>{ours['roc_auc']:.4f}</td>"
        f"<td class='num'>{theirs['roc_auc']:.4f}</td>"
        f"<td class='num'>{ours['roc_auc'] - theirs['roc_auc']:+.4f}</td><td class='worse'>"
    )
    assert roc in champion
    # A higher log loss is worse even though the difference is positive.
    assert f"<td class='num'>{ours['log_loss'] - theirs['log_loss']:+.4f}</td>" in champion
    assert re.search(
        r"<td>log_loss</td>(<td class='num'>[^<]*</td>){3}<td class='worse'>", champion
    )
    assert "margin 0.0100" in champion


def test_the_champion_table_shows_the_candidate_on_the_champions_rows(binary_inputs):
    # The champion trained on some test rows: the gate scored both models on the rest.
    gate = binary_inputs["gate"]
    subset = {**binary_inputs["evaluation"]["metrics"], "roc_auc": 0.5123}
    champion = {**gate["champion"], "candidate_metrics": subset, "rows": 40, "rows_excluded": 60}
    page = render_run_report(**{**binary_inputs, "gate": {**gate, "champion": champion}})
    assert "<td>roc_auc</td><td class='num'>0.5123</td>" in section(page, "champion")


def test_hostile_strings_are_escaped(binary_inputs):
    hostile = dict(binary_inputs)
    hostile["model_name"] = HOSTILE
    hostile["schema"] = {
        **binary_inputs["schema"],
        "features": [{"name": HOSTILE, "kind": "numeric"}],
    }
    hostile["anomalies"] = [
        {
            "kind": "new_column",
            "column": HOSTILE,
            "expectation": "absent",
            "observed": "<b>present</b>",
            "severity": "warn",
        }
    ]
    hostile["data_bias_markdown"] = (
        f"### {HOSTILE}\n\n| group | rows |\n|---|---|\n| {HOSTILE} | 3 |\n\n"
        "[click](https://evil.example/) ![x](http://evil.example/x.png) <https://evil.example>\n"
    )
    hostile["gate"] = {**binary_inputs["gate"], "reason": "<img src=x onerror=alert(1)>"}
    trials = binary_inputs["trials"].copy()
    trials.loc[0, "family"] = HOSTILE
    hostile["trials"] = trials
    page = render_run_report(**hostile)
    assert "<script" not in page.lower()
    assert "<img src=x" not in page and "<b>present</b>" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for section_id in ("data", "tuning"):
        assert escaped in section(page, section_id)
    assert page.count(escaped) >= 6  # title, heading, feature, anomaly, bias table, trial
    assert "&lt;img src=x onerror=alert(1)&gt;" in section(page, "decision")
    assert not EXTERNAL.search(page)
    assert "evil.example" in page  # kept as text, never as a link or an image


ONERROR = "<img src=x onerror=alert(1)>"


def test_hostile_groups_and_columns_are_escaped_in_both_pages(binary_inputs):
    """A category value and a sensitive column's name that are markup reach the fairness page
    and the run report as text: the fairness data carries them, the templates escape them."""
    from components.bias.assess import assess_model
    from components.bias.report import data_html, fairness_data
    from components.common.settings.sections import BiasConfig
    from components.validate.logic import validate_table

    class IncomeRule:
        def predict(self, frame):
            return np.where(frame["income"].fillna(0) > 50, "yes", "no")

    loans = make_loans(rows=400).rename(columns={"region": HOSTILE})
    loans["group"] = loans["group"].replace({"a": ONERROR})
    schema = validate_table(loans, "approved", "classification", ["group", HOSTILE], {})
    settings = BiasConfig(bootstrap=0)
    result = assess_model(IncomeRule(), loans, schema, ["group", HOSTILE], "yes", settings, 0)
    data = json.loads(json.dumps(fairness_data(result.results, result.gate, result.problems)))
    fairness_page = data_html(fairness_data(result.results, result.gate, result.problems))
    report = render_run_report(**{**binary_inputs, "fairness_data": data})
    for page, where in ((fairness_page, fairness_page), (report, section(report, "fairness"))):
        assert "<script" not in page.lower() and "<img src=x" not in page
        assert "onerror=alert(1)" in where  # shown, as text
        assert "&lt;img src=x onerror=alert(1)&gt;" in where
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in where
        assert all(
            s.startswith("data:image/png;base64,") for s in re.findall(r"src='([^']*)'", page)
        )


@pytest.mark.parametrize("variant", ["binary", "multiclass", "regression"])
def test_no_variant_points_off_the_page(binary_inputs, variant):
    inputs = dict(binary_inputs)
    if variant != "binary":
        evaluation = multiclass_evaluation() if variant == "multiclass" else regression_evaluation()
        inputs["evaluation"], inputs["gate"] = evaluation, None
    page = render_run_report(**inputs)
    assert not EXTERNAL.search(page)
    assert "<script" not in page.lower() and "@import" not in page and "@font-face" not in page
    assert "<link" not in page.lower()
    # Every image is inline data.
    sources = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def test_a_multiclass_model_has_a_confusion_matrix_and_no_binary_curves(binary_inputs):
    evaluation = multiclass_evaluation()
    page = render_run_report(**{**binary_inputs, "evaluation": evaluation, "gate": None})
    curves = section(page, "curves")
    assert "alt='confusion matrix'" in curves and "alt='ROC curve'" not in curves
    assert "<th>actual \\ predicted</th><th>high</th><th>low</th><th>mid</th>" in curves
    metrics = section(page, "metrics")
    assert f">{evaluation['metrics']['roc_auc_ovr']:.4f}<" in metrics
    assert "CV mean" not in metrics and "Decision threshold" not in metrics
    assert "No decision: the gate did not run." in section(page, "decision")
    assert "Not run: no gate result." in section(page, "champion")


def test_a_regression_model_has_a_residual_plot_and_lower_error_wins(binary_inputs):
    evaluation = regression_evaluation()
    champion = {**evaluation["metrics"], "mse": evaluation["metrics"]["mse"] + 50.0}
    gate = {
        "blessed": True,
        "reason": "blessed: mse better than champion v3",
        "margin": 0.0,
        "checks": [],
        "champion": {"version": "v3", "metrics": champion, "error": None},
    }
    page = render_run_report(**{**binary_inputs, "evaluation": evaluation, "gate": gate})
    curves = section(page, "curves")
    assert "alt='residuals against predicted values'" in curves
    assert "ROC" not in curves and "confusion" not in curves
    metrics = section(page, "metrics")
    assert f">{evaluation['metrics']['rmse']:.4f}<" in metrics
    r2 = evaluation["cv"]["scores"]["r2"]
    assert f"{r2['mean']:.4f} ± {r2['std']:.4f}" in metrics
    assert "class='verdict blessed'" in section(page, "decision")
    assert re.search(
        r"<td>mse</td>(<td class='num'>[^<]*</td>){2}<td class='num'>-50.0000</td>"
        r"<td class='better'>better</td>",
        section(page, "champion"),
    )


def test_without_inputs_each_section_says_it_did_not_run():
    page = render_run_report(model_name="loans", version="v1")
    for section_id, _ in SECTIONS:
        body = section(page, section_id)
        assert "Not run" in body or "No decision" in body, section_id
    assert "run id not recorded" in page


def test_the_first_model_has_no_champion(binary_inputs):
    gate = {**binary_inputs["gate"], "blessed": True, "reason": "blessed", "champion": None}
    page = render_run_report(**{**binary_inputs, "gate": gate})
    assert "No champion yet: this is the first model." in section(page, "champion")


def test_a_champion_that_could_not_be_scored_says_why(binary_inputs):
    gate = {
        **binary_inputs["gate"],
        "champion": {"version": "v1", "metrics": {}, "error": "column 'age' missing"},
    }
    page = render_run_report(**{**binary_inputs, "gate": gate})
    champion = section(page, "champion")
    assert "Champion v1 could not be scored" in champion and "column &#39;age&#39;" in champion


def test_an_inferred_contract_and_no_anomalies_are_said(binary_inputs):
    page = render_run_report(**{**binary_inputs, "anomalies": [], "contract_inferred": True})
    data = section(page, "data")
    assert "No anomalies: the data meets the contract." in data
    assert "inferred one from its data" in data


def test_a_malformed_input_costs_only_its_section(binary_inputs):
    broken = {**binary_inputs["evaluation"], "metrics": ["not", "a", "mapping"]}
    page = render_run_report(**{**binary_inputs, "evaluation": broken})
    assert f"class='{RENDER_ERROR_CLASS}'" in section(page, "metrics")
    assert "AttributeError" in section(page, "metrics")
    for section_id in ("decision", "data", "fairness", "tuning"):
        assert f"class='{RENDER_ERROR_CLASS}'" not in section(page, section_id)


def test_the_tuning_curve_counts_only_finished_trials_as_best_so_far():
    _, trials = tuning_outputs()
    progress = tuning_progress(trials)
    # In order of finishing; the failed trial has no score and is not on the curve.
    assert progress["trial"].tolist() == [0, 2, 3, 1]
    assert progress["order"].tolist() == [1, 2, 3, 4]
    # Trial 3's 0.76 was on a smaller budget (stopped early): the best stays at 0.74.
    assert progress["best_so_far"].tolist() == [0.71, 0.74, 0.74, 0.7532]
    # With no finished trial at all, every score counts.
    stopped = trials.assign(status="stopped")
    assert tuning_progress(stopped)["best_so_far"].tolist() == [0.71, 0.74, 0.76, 0.76]


def test_threshold_rules_are_explained():
    assert threshold_text(None) == ""
    line = threshold_text({"rule": "target_precision", "value": 0.63, "target_precision": 0.9})
    assert line == (
        "Decision threshold 0.630: the lowest threshold that reaches the target precision (0.900)."
    )
    assert "maximises F1" in threshold_text({"rule": "max_f1", "value": 0.4})


def test_the_fairness_section_shows_what_the_fairness_page_shows(binary_page, fairness_outputs):
    """Both pages render the fairness step's data with the same macros: the same tables and as
    many charts, the sets' headings one level down in the run report."""
    page = fairness_outputs["fairness_page"]
    fairness = section(binary_page, "fairness")
    tables = re.findall(r"<table>.*?</table>", page, flags=re.S)
    assert len(tables) >= 3 and tables == re.findall(r"<table>.*?</table>", fairness, flags=re.S)
    assert "<h2>group</h2>" in page and "<h3>group</h3>" in fairness
    assert page.count("<img ") == fairness.count("<img ") == 1
    assert "<h1>Fairness report</h1>" in page


def test_optional_readers_treat_an_empty_file_as_not_written(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    assert read_optional_json(empty) is None and read_optional_csv(tmp_path / "absent") is None
    (tmp_path / "x.json").write_text('{"a": 1}')
    assert read_optional_json(tmp_path / "x.json") == {"a": 1}


# --- the KFP component ----------------------------------------------------------------------


def test_the_component_writes_the_page_from_artifact_files(tmp_path, binary_inputs, capsys):
    from kfp.dsl import HTML, Artifact, Dataset, Markdown

    from components.report.component import run_report

    def artifact(kind, name, text=None, metadata=None):
        path = tmp_path / name
        if text is not None:
            path.write_text(text, encoding="utf-8")
        return kind(uri=str(path), metadata=metadata or {})

    inputs = binary_inputs
    inputs["trials"].to_csv(tmp_path / "trials.csv", index=False)
    report = artifact(HTML, "out/report.html")
    run_report.python_func(
        dataset=artifact(Dataset, "dataset", "", inputs["dataset"]),
        schema=artifact(Artifact, "schema", json.dumps(inputs["schema"])),
        contract=artifact(Artifact, "contract", "columns: {}\n", {"inferred": True}),
        anomalies=artifact(Artifact, "anomalies", json.dumps(inputs["anomalies"])),
        data_bias=artifact(Markdown, "bias.md", inputs["data_bias_markdown"]),
        fairness_data=artifact(Artifact, "fairness.json", json.dumps(inputs["fairness_data"])),
        fairness_summary=artifact(Artifact, "summary", json.dumps(inputs["fairness_summary"])),
        best=artifact(Artifact, "best", json.dumps(inputs["best"])),
        trials=Dataset(uri=str(tmp_path / "trials.csv")),
        # The evaluation step wrote nothing: its sections say so, the rest renders.
        evaluation=artifact(Artifact, "evaluation", ""),
        gate=artifact(Artifact, "gate", json.dumps(inputs["gate"])),
        model_name="loans",
        version="v2",
        report=report,
        run_id="run-7",
    )
    page = Path(report.path).read_text(encoding="utf-8")
    assert "run run-7" in page and "s3://lake/loans" in page
    assert "inferred one from its data" in section(page, "data")
    assert "Not run: no evaluation." in section(page, "metrics")
    assert "<th>selection rate</th>" in section(page, "fairness")
    out = capsys.readouterr().out
    assert "[mlpipe] report: loans v2: not blessed: roc_auc" in out


def test_the_component_compiles_with_its_inputs(tmp_path):
    import yaml
    from kfp import compiler

    from components.report.component import run_report

    path = tmp_path / "run_report.yaml"
    compiler.Compiler().compile(run_report, package_path=str(path))
    spec = yaml.safe_load(path.read_text())
    inputs = spec["root"]["inputDefinitions"]
    assert set(inputs["artifacts"]) == {
        "dataset",
        "schema",
        "contract",
        "anomalies",
        "data_bias",
        "fairness_data",
        "fairness_summary",
        "best",
        "trials",
        "evaluation",
        "gate",
    }
    assert set(inputs["parameters"]) == {"model_name", "version", "run_id"}
    assert inputs["parameters"]["run_id"]["defaultValue"] == ""
    assert (
        spec["root"]["outputDefinitions"]["artifacts"]["report"]["artifactType"]["schemaTitle"]
        == "system.HTML"
    )


# --- in a real browser ----------------------------------------------------------------------


def _browser_or_skip() -> str:
    """Chromium's path; without it or Playwright the test is skipped, except in CI (CI=true),
    where `make` installs Chromium and a missing browser must fail the run."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed"
    executable = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )
    if reason is None and executable is None:
        reason = "Chromium is not installed (apt-get install chromium)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return executable


@pytest.fixture(scope="module")
def browser():
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            # Stops the browser process this fixture started, even when a test failed.
            chromium.close()


def inspect_page(browser, path: Path, screenshot: Path | None = None) -> dict:
    """Open a file offline as a reader would, and report what went wrong.

    Every request that is not for the file itself (or inline data) is recorded and aborted, so
    nothing leaves the machine and any reach for the network shows up.

    Returns:
        console_errors, page_errors, requests (attempted off-page URLs), images (src prefix and
        naturalWidth of each <img>), and headings (section id -> (text, visible)).
    """
    found = {"console_errors": [], "page_errors": [], "requests": []}
    context = browser.new_context(offline=True)
    try:
        page = context.new_page()

        def off_page(url: str) -> bool:
            return not url.startswith(("file:", "data:", "about:"))

        def refuse(route):
            found["requests"].append(route.request.url)
            route.abort()

        page.route(off_page, refuse)
        page.on(
            "console",
            lambda message: (
                found["console_errors"].append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: found["page_errors"].append(str(error)))
        page.goto(path.resolve().as_uri(), wait_until="load")
        found["images"] = page.evaluate(
            "Array.from(document.images).map(i => [i.src.slice(0, 30), i.naturalWidth])"
        )
        found["headings"] = {
            sid: (
                page.locator(f"section#{sid} > h2").inner_text(),
                page.locator(f"section#{sid} > h2").is_visible(),
            )
            for sid in page.evaluate(
                "Array.from(document.querySelectorAll('section')).map(s=>s.id)"
            )
        }
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        context.close()
    return found


def test_the_report_renders_cleanly_in_chromium(browser, binary_page, tmp_path):
    from matplotlib.image import imread

    path = tmp_path / "report.html"
    path.write_text(binary_page, encoding="utf-8")
    shot = tmp_path / "report.png"
    found = inspect_page(browser, path, shot)
    assert found["headings"] == {sid: (heading, True) for sid, heading in SECTIONS}
    assert found["console_errors"] == []
    assert found["page_errors"] == []
    assert found["requests"] == []
    # Tuning curve, ROC, PR, calibration, confusion matrix and the fairness chart: all loaded.
    assert len(found["images"]) >= 6
    assert all(width > 0 for _, width in found["images"]), found["images"]
    pixels = (imread(shot)[..., :3] * 255).astype(np.uint32)
    colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])
    assert len(colours) > 200  # text, tables and charts, not a blank page


def test_the_browser_check_catches_script_errors_and_network_use(browser, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><section id='x'><h2>X</h2></section>"
        "<script>function (</script></body></html>"
    )
    found = inspect_page(browser, broken)
    assert found["page_errors"], "a syntax error in an inline script went unnoticed"

    external = tmp_path / "external.html"
    external.write_text(
        "<!DOCTYPE html><html><body><h2>Y</h2>"
        "<img alt='x' src='https://example.invalid/x.png'></body></html>"
    )
    found = inspect_page(browser, external)
    assert found["requests"] == ["https://example.invalid/x.png"]
    assert found["images"] == [["https://example.invalid/x.png", 0]]
    assert found["console_errors"]  # the failed load is reported too
