"""Bias analysis: groups, data metrics and model metrics against hand-computed values, the gate,
and bad input (missing column, zero positives, too many groups, regression)."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    selection_rate,
)

from components.bias.assess import assess_data, assess_model
from components.bias.gate import apply_gate, parse_thresholds
from components.bias.logic import Problems, checked_group_sets, group_sets
from components.bias.metrics import (
    bootstrap_intervals,
    data_metrics,
    model_metrics,
    true_positive_rate,
)
from components.bias.report import (
    data_html,
    data_markdown,
    fairness_data,
    fmt,
    model_markdown,
)
from components.common.errors import PipelineInputError
from components.common.groups import make_grouping, positive_label, sensitive_groups
from components.common.settings.sections import BiasConfig

SCHEMA = {"target": "label", "task": "classification", "classes": ["no", "yes"]}

# Eight held-out rows, hand-computed per group:
#   a: truth 1 1 0 0, predicted 1 0 1 0 -> selection 2/4, accuracy 2/4, TPR 1/2, FPR 1/2, precision 1/2
#   b: truth 1 0 0 0, predicted 1 0 0 0 -> selection 1/4, accuracy 4/4, TPR 1/1, FPR 0/3, precision 1/1
# So: demographic parity difference 0.25, ratio 0.5; equal opportunity difference 0.5;
# equalized odds difference max(0.5, 0.5) = 0.5; accuracy difference 0.5.
HELD_OUT = pd.DataFrame(
    {
        "group": list("aaaabbbb"),
        "label": ["yes", "yes", "no", "no", "yes", "no", "no", "no"],
    }
)
PREDICTED = np.array(["yes", "no", "yes", "no", "yes", "no", "no", "no"])


def _model_results(frame=HELD_OUT, predicted=PREDICTED, schema=SCHEMA, n_boot=0, min_size=1):
    sets = group_sets(frame, ["group"])
    positive = positive_label(schema, "")
    return model_metrics(
        frame[schema["target"]].to_numpy(), predicted, schema, positive, sets, min_size, n_boot, 0
    )


def test_model_metrics_per_group_equal_hand_computed_values():
    table = _model_results()["group"].table
    expected = {
        "a": {"rows": 4, "positives": 2, "selection_rate": 0.5, "accuracy": 0.5},
        "b": {"rows": 4, "positives": 1, "selection_rate": 0.25, "accuracy": 1.0},
    }
    for group, values in expected.items():
        for name, value in values.items():
            assert table.loc[group, name] == pytest.approx(value), (group, name)
    assert table.loc["a", "precision"] == pytest.approx(0.5)
    assert table.loc["b", "precision"] == pytest.approx(1.0)
    assert table.loc["a", "tpr"] == pytest.approx(0.5) and table.loc["b", "tpr"] == 1.0
    assert table.loc["a", "fpr"] == pytest.approx(0.5) and table.loc["b", "fpr"] == 0.0


def test_summary_metrics_equal_hand_computed_values_and_fairlearns_own():
    summaries = _model_results()["group"].summaries
    truth, predicted = HELD_OUT["label"] == "yes", PREDICTED == "yes"
    groups = HELD_OUT["group"]
    hand = {
        "demographic_parity_difference": 0.25,
        "demographic_parity_ratio": 0.5,
        "disparate_impact_ratio": 0.5,
        "equal_opportunity_difference": 0.5,
        "equalized_odds_difference": 0.5,
        "accuracy_difference": 0.5,
    }
    for name, value in hand.items():
        assert summaries[name].value == pytest.approx(value), name
    fairlearn_values = {
        "demographic_parity_difference": demographic_parity_difference,
        "demographic_parity_ratio": demographic_parity_ratio,
        "equal_opportunity_difference": equal_opportunity_difference,
        "equalized_odds_difference": equalized_odds_difference,
    }
    for name, function in fairlearn_values.items():
        expected = function(truth, predicted, sensitive_features=groups)
        assert summaries[name].value == pytest.approx(expected), name
    ratio = summaries["demographic_parity_ratio"]
    assert ratio.low == ("b", 0.25) and ratio.high == ("a", 0.5)


def test_bootstrap_gives_intervals_around_each_group_rate(loans, loans_schema):
    predicted = np.where(loans["income"].fillna(50) > 50, "yes", "no")
    sets = group_sets(loans, ["group"])
    results = model_metrics(
        loans["approved"].to_numpy(), predicted, loans_schema, "yes", sets, 30, 40, 0
    )
    table = results["group"].table
    for group in table.index:
        low, rate, high = (table.loc[group, k] for k in ("tpr_low", "tpr", "tpr_high"))
        assert low <= rate <= high and high - low > 0.01
    low, high = results["group"].summaries["demographic_parity_ratio"].ci
    assert 0 <= low <= high


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_bootstrap_intervals_are_fairlearns_statistics_of_the_same_resamples(kind):
    """The numpy bootstrap against MetricFrame recomputed on each of the same resamples: the
    per-group intervals, and those of max - min and min / max over the groups. The small group
    "c" has resamples without positives, where its TPR is undefined (NaN), as in the step."""
    rng = np.random.default_rng(3)
    rows = 400
    groups = rng.choice(["a", "b", "c"], rows, p=[0.6, 0.35, 0.05])
    if kind == "binary":
        truth, predicted = rng.random(rows) < 0.4, rng.random(rows) < 0.5
        rates = {"selection_rate": selection_rate, "tpr": true_positive_rate}
    elif kind == "multiclass":
        truth, predicted = rng.choice(["x", "y", "z"], rows), rng.choice(["x", "y", "z"], rows)
        rates = {"accuracy": lambda t, p: float(np.mean(t == p))}
    else:
        truth, predicted = rng.normal(size=rows), rng.normal(size=rows)
        rates = {"mae": lambda t, p: float(np.mean(np.abs(t - p)))}
    n_boot, seed = 30, 11
    intervals = bootstrap_intervals(truth, predicted, groups, kind, n_boot, seed)

    draws = np.random.default_rng(seed)  # the resamples bootstrap_intervals draws
    per_group, differences, ratios = [], [], []
    for _ in range(n_boot):
        taken = draws.integers(0, rows, size=rows)
        frame = MetricFrame(
            metrics=rates,
            y_true=truth[taken],
            y_pred=predicted[taken],
            sensitive_features=pd.Series(groups[taken], name="g"),
        )
        per_group.append(frame.by_group.reindex(["a", "b", "c"]).astype(float))
        differences.append(frame.difference())
        ratios.append(frame.ratio())
    for rate in rates:
        expected = np.quantile([table[rate].to_numpy() for table in per_group], [0.025, 0.975], 0)
        for bound in range(2):
            assert intervals.by_group[bound][rate].to_numpy() == pytest.approx(
                expected[bound], nan_ok=True
            )
        for got, samples in ((intervals.difference, differences), (intervals.ratio, ratios)):
            expected = np.quantile([s[rate] for s in samples], [0.025, 0.975])
            assert [got[0][rate], got[1][rate]] == pytest.approx(expected, nan_ok=True), rate


def test_a_group_without_positives_has_no_tpr_and_a_note_not_a_nan_or_zero():
    frame = pd.concat([HELD_OUT, pd.DataFrame({"group": ["c", "c"], "label": ["no", "no"]})])
    result = _model_results(frame, np.append(PREDICTED, ["yes", "no"]))["group"]
    assert math.isnan(result.table.loc["c", "tpr"])
    assert fmt(result.table.loc["c", "tpr"]) == "n/a"
    assert any("c has no positive labels" in note for note in result.notes)
    # Equal opportunity compares a and b only; the FPR of c (1/2) still counts.
    assert result.summaries["equal_opportunity_difference"].value == pytest.approx(0.5)


def test_a_ratio_with_a_zero_denominator_is_not_computable_with_the_reason():
    result = _model_results(predicted=np.array(["no"] * 8))["group"]
    ratio = result.summaries["demographic_parity_ratio"]
    assert ratio.value is None and "0/0" in ratio.reason
    assert result.summaries["demographic_parity_difference"].value == 0.0


def test_small_groups_are_shown_but_left_out_of_the_summaries():
    result = _model_results(min_size=5)["group"]
    assert result.table["small"].all()
    assert result.summaries["demographic_parity_ratio"].value is None
    assert any("fewer than 5 held-out rows" in note for note in result.notes)


def test_regression_reports_mae_per_group():
    frame = pd.DataFrame({"group": ["a", "a", "b", "b"], "y": [1.0, 3.0, 10.0, 10.0]})
    schema = {"target": "y", "task": "regression"}
    result = _model_results(frame, np.array([2.0, 2.0, 7.0, 13.0]), schema)["group"]
    assert result.table.loc["a", "mae"] == pytest.approx(1.0)
    assert result.table.loc["b", "mae"] == pytest.approx(3.0)
    assert result.summaries["mae_difference"].value == pytest.approx(2.0)
    assert result.summaries["mae_ratio"].value == pytest.approx(1 / 3)
    assert "demographic_parity_ratio" not in result.summaries


def test_data_metrics_count_sizes_base_rates_and_missing_values():
    frame = pd.DataFrame(
        {
            "group": ["a", "a", "a", "a", "b", "b"],
            "income": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0],
            "label": ["yes", "yes", "yes", "no", None, "no"],
        }
    )
    table = data_metrics(frame, SCHEMA, group_sets(frame, ["group"]), "yes", 3)["group"]
    table = table.set_index("group")
    assert table.loc["a", "rows"] == 4 and table.loc["b", "rows"] == 2
    assert table.loc["a", "share"] == pytest.approx(4 / 6)
    assert table.loc["a", "base_rate"] == pytest.approx(0.75)
    assert table.loc["b", "base_rate"] == 0.0  # the unlabelled row does not count as "no"
    assert table.loc["a", "missing_rate"] == pytest.approx(0.25)
    assert table.loc["b", "missing_rate"] == pytest.approx(0.5)
    assert list(table["small"]) == [False, True]


def test_declared_bands_and_quartile_bands(arrests):
    bands = sensitive_groups(arrests, "age", {"age": [0, 18, 25, 35, 50, 120]})
    assert bands.value_counts()["[18, 25)"] == 2475
    assert set(bands) == {"[0, 18)", "[18, 25)", "[25, 35)", "[35, 50)", "[50, 120)"}
    quartiles = sensitive_groups(arrests, "age")
    assert quartiles.nunique() == 4 and quartiles.value_counts().min() > len(arrests) * 0.15
    # A fixed grouping puts unseen values in the open end bands.
    grouping = make_grouping(arrests, "age", {})
    assert list(grouping.labels(pd.DataFrame({"age": [5, 99]}))) == ["< 18", ">= 27"]


def test_outside_the_bands_are_the_open_end_bands_and_missing_a_group_of_its_own():
    # components.common.binning's rule, as the ETL's and prepare's bins.
    frame = pd.DataFrame({"age": [10, 130, -1, 120, None]})
    assert list(sensitive_groups(frame, "age", {"age": [0, 18, 120]})) == [
        "[0, 18)",
        ">= 120",
        "< 0",
        ">= 120",
        "missing",
    ]


def test_intersections_group_by_two_columns():
    frame = pd.DataFrame({"a": ["x", "y"], "b": ["m", "f"]})
    sets = group_sets(frame, ["a"], intersections=[["a", "b"]])
    assert list(sets) == ["a", "a_x_b"] and list(sets["a_x_b"]) == ["x & m", "y & f"]


def test_bands_on_a_text_column_are_refused_by_key():
    with pytest.raises(PipelineInputError, match=r"bias.bands.group: column 'group' holds"):
        sensitive_groups(HELD_OUT, "group", {"group": [0, 1]})


def test_a_missing_sensitive_column_is_named():
    with pytest.raises(PipelineInputError, match="column 'race' \\(a sensitive column\\)"):
        group_sets(HELD_OUT, ["race"])


def test_a_column_with_hundreds_of_groups_is_left_out_or_fails_as_configured():
    frame = pd.DataFrame({"zip": [f"z{i}" for i in range(300)], "label": ["yes", "no"] * 150})
    problems = Problems("warn")
    assert checked_group_sets(frame, ["zip"], {}, [], 50, problems) == {}
    assert "'zip' has 300 groups, more than bias.max_groups 50" in problems.messages[0]
    with pytest.raises(PipelineInputError, match="300 groups.*on_not_computable is fail"):
        checked_group_sets(frame, ["zip"], {}, [], 50, Problems("fail"))


def test_an_unknown_positive_class_is_named():
    with pytest.raises(PipelineInputError, match="positive_class 'maybe'.*classes: no, yes"):
        positive_label(SCHEMA, "maybe")


# --- The gate ----------------------------------------------------------------------------------


def test_a_blocking_breach_names_the_metric_the_group_and_the_value():
    thresholds = parse_thresholds([{"metric": "demographic_parity_ratio", "threshold": 0.8}])
    gate = apply_gate(_model_results(), thresholds, "classification", "yes", Problems())
    assert not gate.passed
    assert gate.reason == (
        "blocked: demographic_parity_ratio for 'group' = 0.500 breaks >= 0.8 "
        "(selection_rate 0.250 in group 'b' vs 0.500 in 'a')"
    )


def test_a_warning_threshold_reports_and_passes():
    thresholds = parse_thresholds(
        [
            {"metric": "equalized_odds_difference", "threshold": 0.1, "blocking": False},
            {"metric": "accuracy_difference", "threshold": 0.6},
        ]
    )
    gate = apply_gate(_model_results(), thresholds, "classification", "yes", Problems())
    assert gate.passed
    assert gate.reason.startswith("passed with 1 warning: equalized_odds_difference for 'group'")
    assert [f.status for f in gate.findings] == ["broken", "met"]


def test_a_classification_metric_on_regression_is_not_checked_or_fails_as_configured():
    frame = pd.DataFrame({"group": ["a", "a", "b", "b"], "y": [1.0, 3.0, 10.0, 10.0]})
    schema = {"target": "y", "task": "regression"}
    results = _model_results(frame, np.array([2.0, 2.0, 7.0, 13.0]), schema)
    thresholds = parse_thresholds([{"metric": "demographic_parity_ratio", "threshold": 0.8}])
    problems = Problems("warn")
    gate = apply_gate(results, thresholds, "regression", None, problems)
    assert gate.passed and gate.findings[0].status == "not checked"
    assert "demographic_parity_ratio is for classification (the task is regression)" in gate.reason
    with pytest.raises(PipelineInputError, match="is for classification.*is fail"):
        apply_gate(results, thresholds, "regression", None, Problems("fail"))


def test_a_blocking_threshold_on_a_set_the_run_does_not_have_fails_the_step():
    # The issue: 'GROUP' for 'group' made a blocking gate check nothing, and it passed.
    thresholds = parse_thresholds(
        [{"metric": "demographic_parity_ratio", "threshold": 0.8, "columns": ["GROUP"]}]
    )
    for on_not_computable in ("warn", "fail"):
        with pytest.raises(
            PipelineInputError,
            match=r"^bias.thresholds\[0\].columns: column 'GROUP' is not a sensitive column or "
            r"intersection of this run \(have: group\); a blocking threshold must check",
        ):
            apply_gate(
                _model_results(), thresholds, "classification", "yes", Problems(on_not_computable)
            )


def test_a_blocking_threshold_without_any_set_fails_the_step():
    thresholds = parse_thresholds([{"metric": "demographic_parity_ratio", "threshold": 0.8}])
    with pytest.raises(PipelineInputError, match=r"bias.thresholds\[0\]: no sensitive column"):
        apply_gate({}, thresholds, "classification", "yes", Problems(), sets=[])


def test_a_warning_threshold_on_an_unknown_set_is_a_warning_not_a_pass():
    thresholds = parse_thresholds(
        [
            {
                "metric": "demographic_parity_ratio",
                "threshold": 0.8,
                "blocking": False,
                "columns": ["GROUP"],
            }
        ]
    )
    problems = Problems("warn")
    gate = apply_gate(_model_results(), thresholds, "classification", "yes", problems)
    assert gate.passed
    assert gate.reason == (
        "passed with 1 warning: demographic_parity_ratio for 'GROUP' not checked: "
        "not a sensitive column or intersection of this run"
    )
    assert "bias.thresholds[0].columns: column 'GROUP' is not" in problems.messages[0]
    with pytest.raises(PipelineInputError, match="column 'GROUP'.*on_not_computable is fail"):
        apply_gate(_model_results(), thresholds, "classification", "yes", Problems("fail"))


def test_a_threshold_on_a_set_left_out_as_not_computable_is_not_checked():
    # 'zip' had too many groups (checked_group_sets left it out): a warning, never a silent pass.
    thresholds = parse_thresholds(
        [{"metric": "demographic_parity_ratio", "threshold": 0.1, "columns": ["zip"]}]
    )
    gate = apply_gate(
        _model_results(), thresholds, "classification", "yes", Problems(), sets=["group", "zip"]
    )
    assert gate.passed and [f.status for f in gate.findings] == ["not checked"]
    assert gate.reason.startswith("passed with 1 warning: demographic_parity_ratio for 'zip'")


def test_assess_model_refuses_a_blocking_threshold_on_a_misspelt_column(loans, loans_schema):
    settings = BiasConfig(
        bootstrap=0,
        thresholds=[{"metric": "demographic_parity_ratio", "threshold": 0.8, "columns": ["Group"]}],
    )
    with pytest.raises(PipelineInputError, match=r"bias.thresholds\[0\].columns: column 'Group'"):
        assess_model(_Fixed(), loans, loans_schema, ["group"], "yes", settings, seed=0)


def test_assess_model_warns_of_a_threshold_on_a_set_left_out(loans, loans_schema):
    # 400 zip codes, more than max_groups: left out, so the threshold on it is not checked.
    frame = loans.assign(zip=[f"z{i}" for i in range(len(loans))])
    settings = BiasConfig(
        bootstrap=0,
        thresholds=[{"metric": "demographic_parity_ratio", "threshold": 0.8, "columns": ["zip"]}],
    )
    result = assess_model(_Fixed(), frame, loans_schema, ["group", "zip"], "yes", settings, seed=0)
    assert result.gate.passed and set(result.results) == {"group"}
    assert result.gate.reason.startswith(
        "passed with 1 warning: demographic_parity_ratio for 'zip'"
    )
    assert "'zip' has 400 groups" in result.problems[0]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"metric": "parity", "threshold": 0.8}, r"thresholds\[0\].metric: unknown metric"),
        ({"metric": "demographic_parity_ratio"}, r"thresholds\[0\].threshold: missing"),
        ({"metric": "demographic_parity_ratio", "threshold": "high"}, "expected a number"),
        (
            {"metric": "demographic_parity_ratio", "threshold": 0.8, "direction": "up"},
            r"thresholds\[0\].direction",
        ),
        ({"metric": "demographic_parity_ratio", "threshold": 0.8, "bogus": 1}, "bogus: unknown"),
    ],
)
def test_bad_thresholds_name_the_entry_and_key(entry, message):
    with pytest.raises(PipelineInputError, match=message):
        parse_thresholds([entry])


# --- The steps end to end, and their reports ---------------------------------------------------


class _Fixed:
    """A 'model' that answers from a column, to test the step function without fitting."""

    def predict(self, features):
        return np.where(features["income"].fillna(0) > 50, "yes", "no")


def test_assess_model_writes_metrics_gate_and_reports(loans, loans_schema):
    settings = BiasConfig(
        bands={"age": [18, 30, 50, 80]},
        intersections=[["group", "region"]],
        bootstrap=20,
        thresholds=[{"metric": "demographic_parity_ratio", "threshold": 0.1, "blocking": True}],
    )
    result = assess_model(_Fixed(), loans, loans_schema, ["group", "age"], "yes", settings, seed=0)
    assert set(result.results) == {"group", "age", "group_x_region"}
    assert result.gate.passed
    metrics = result.kfp_metrics()
    assert metrics["fairness_passed"] == 1.0
    assert (
        "demographic_parity_ratio_age" in metrics and "equalized_odds_difference_group" in metrics
    )
    assert all(not math.isnan(v) for v in metrics.values())
    page = data_html(fairness_data(result.results, result.gate, result.problems))
    assert page.count("data:image/png;base64,") == 3 and "<h2>group_x_region</h2>" in page
    text_only = re.sub(r"data:image/png;base64,[^']+", "", page)
    assert "nan" not in text_only.lower()
    text = model_markdown(result.results, result.gate, result.problems)
    assert "### age" in text and "[30, 50)" in text


def test_assess_data_reports_groups_and_notes(loans, loans_schema):
    settings = BiasConfig(bands={"age": [18, 30, 50, 80]}, min_group_size=150)
    tables, notes = assess_data(loans, loans_schema, ["group", "age"], "yes", settings)
    assert tables["group"]["rows"].sum() == len(loans)
    text = data_markdown(tables, notes, 150)
    assert "### group" in text and "### age" in text and "small" in text
