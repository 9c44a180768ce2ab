"""Performance on a window (components.common.performance): the realized metric from labels with
a bootstrap interval, and the label-free estimate (CBPE) that agrees with it on data from a
calibrated model but cannot see a change of the label relation."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, mean_absolute_error, roc_auc_score

from components.common.errors import PipelineInputError
from components.common.metrics import binary_metrics
from components.common.performance import estimate_performance, realized_performance

BINARY = ["no", "yes"]
THREE = ["a", "b", "c"]


def calibrated_binary(rows: int, seed: int):
    """Probabilities of a calibrated binary model and labels drawn from them."""
    rng = np.random.default_rng(seed)
    positive = rng.beta(2, 2, rows)
    labels = np.where(rng.random(rows) < positive, "yes", "no")
    predictions = np.where(positive >= 0.5, "yes", "no")
    return labels, predictions, np.column_stack([1 - positive, positive])


def calibrated_multiclass(rows: int, seed: int):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet([1, 1, 1], rows)
    drawn = (rng.random(rows)[:, None] > probabilities.cumsum(axis=1)[:, :-1]).sum(axis=1)
    labels = np.array(THREE)[drawn]
    predictions = np.array(THREE)[probabilities.argmax(axis=1)]
    return labels, predictions, probabilities


@pytest.mark.parametrize(
    ("classes", "metric"),
    [
        (BINARY, "accuracy"),
        (BINARY, "f1"),
        (BINARY, "balanced_accuracy"),
        (BINARY, "roc_auc"),
        (BINARY, "log_loss"),
        (BINARY, "brier"),
        (THREE, "accuracy"),
        (THREE, "f1"),
        (THREE, "roc_auc_ovr"),
    ],
)
def test_the_estimate_holds_the_realized_value_on_a_calibrated_model(classes, metric):
    draw = calibrated_binary if classes == BINARY else calibrated_multiclass
    inside = 0
    windows = 20
    for seed in range(windows):
        labels, predictions, probabilities = draw(1000, seed)
        realized = realized_performance(
            labels, predictions, probabilities, classes, metric, bootstrap=0
        )
        estimate = estimate_performance(probabilities, classes, metric)
        assert estimate["method"] == "cbpe" and estimate["rows"] == 1000
        assert estimate["low"] <= estimate["value"] <= estimate["high"]
        inside += estimate["low"] <= realized["value"] <= estimate["high"]
    # A 95% interval: 20 windows leave room for a few misses, not for a biased estimate.
    assert inside >= 16


def test_the_estimate_of_a_binary_confusion_metric_follows_the_threshold():
    _, _, probabilities = calibrated_binary(2000, 0)
    everything_positive = estimate_performance(probabilities, BINARY, "recall", threshold=0.0)
    assert everything_positive["value"] == pytest.approx(1.0)
    precision = estimate_performance(probabilities, BINARY, "precision", threshold=0.0)
    assert precision["value"] == pytest.approx(probabilities[:, 1].mean())
    default = estimate_performance(probabilities, BINARY, "recall")
    assert default["value"] < 0.9


def test_the_estimate_cannot_see_a_change_of_the_label_relation():
    labels, predictions, probabilities = calibrated_binary(4000, 1)
    # The same features and probabilities, but the labels now mean the opposite.
    flipped = np.where(labels == "yes", "no", "yes")
    estimate = estimate_performance(probabilities, BINARY, "accuracy")
    before = realized_performance(labels, predictions, probabilities, BINARY, "accuracy")
    after = realized_performance(flipped, predictions, probabilities, BINARY, "accuracy")
    assert estimate["low"] <= before["value"] <= estimate["high"]
    assert after["value"] < estimate["low"] - 0.2


def test_the_positive_class_and_the_order_of_classes_are_respected():
    labels, predictions, probabilities = calibrated_binary(2000, 2)
    as_no = realized_performance(
        labels, predictions, probabilities, BINARY, "recall", positive_class="no", bootstrap=0
    )
    is_no = labels == "no"
    assert as_no["value"] == pytest.approx(float(np.mean(predictions[is_no] == "no")))
    estimated_no = estimate_performance(probabilities, BINARY, "recall", positive_class="no")
    estimated_yes = estimate_performance(probabilities, BINARY, "recall")
    assert estimated_no["value"] != pytest.approx(estimated_yes["value"])


def test_the_realized_value_is_evaluations_value():
    labels, predictions, probabilities = calibrated_binary(3000, 3)
    expected = binary_metrics(labels, probabilities[:, 1], "yes", 0.5)
    for metric in ("accuracy", "f1", "roc_auc", "pr_auc", "log_loss", "brier"):
        realized = realized_performance(
            labels, predictions, probabilities, BINARY, metric, bootstrap=0
        )
        assert realized["value"] == pytest.approx(expected[metric]), metric
        assert realized["method"] == "realized" and realized["low"] is None


def test_realized_intervals_hold_the_value_and_shrink_with_rows():
    widths = []
    for rows in (300, 3000):
        labels, predictions, probabilities = calibrated_binary(rows, 4)
        realized = realized_performance(labels, predictions, probabilities, BINARY, "roc_auc")
        assert realized["low"] <= realized["value"] <= realized["high"]
        assert realized["value"] == pytest.approx(
            roc_auc_score(labels == "yes", probabilities[:, 1])
        )
        assert realized["level"] == 0.95 and realized["rows"] == rows
        widths.append(realized["high"] - realized["low"])
    assert widths[1] < widths[0] / 2


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    labels, predictions, probabilities = calibrated_binary(500, 5)
    first = realized_performance(labels, predictions, probabilities, BINARY, "accuracy", seed=7)
    again = realized_performance(labels, predictions, probabilities, BINARY, "accuracy", seed=7)
    other = realized_performance(labels, predictions, probabilities, BINARY, "accuracy", seed=8)
    assert first == again
    assert (first["low"], first["high"]) != (other["low"], other["high"])


def test_unlabelled_rows_are_left_out_and_labels_match_classes_as_text():
    y_true = [1, 0, None, 1, float("nan"), 0]
    predictions = [1, 1, 0, 1, 0, 0]
    realized = realized_performance(y_true, predictions, None, ["0", "1"], "f1", bootstrap=0)
    assert realized["rows"] == 4
    assert realized["value"] == pytest.approx(f1_score([1, 0, 1, 0], [1, 1, 1, 0]))


def test_no_labelled_rows_or_one_class_give_no_value_with_a_reason():
    probabilities = np.array([[0.2, 0.8], [0.6, 0.4]])
    nothing = realized_performance([None, None], ["yes", "no"], probabilities, BINARY, "accuracy")
    assert (
        nothing["value"] is None
        and nothing["rows"] == 0
        and "no labelled rows" in nothing["reason"]
    )
    one_class = realized_performance(
        ["yes", "yes"], ["yes", "no"], probabilities, BINARY, "roc_auc"
    )
    assert one_class["value"] is None and "one class" in one_class["reason"]


def test_regression_is_realized_but_not_estimated():
    realized = realized_performance([1.0, 2.0, 4.0, None], [1.5, 2.0, 3.0, 9.0], None, None, "mae")
    assert realized["value"] == pytest.approx(mean_absolute_error([1, 2, 4], [1.5, 2, 3]))
    assert realized["rows"] == 3
    estimate = estimate_performance(None, None, "r2")
    assert estimate["value"] is None and "regression" in estimate["reason"]
    assert estimate["method"] == "cbpe"


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: realized_performance(["yes"], ["yes"], None, BINARY, "accuracyy"), "accuracyy"),
        (lambda: realized_performance([1.0], [1.0], None, None, "roc_auc"), "roc_auc"),
        (lambda: estimate_performance([[0.2, 0.3, 0.5]], THREE, "roc_auc"), "roc_auc"),
        (lambda: realized_performance(["yes", "no"], ["yes"], None, BINARY, "f1"), "predictions"),
        (lambda: realized_performance(["maybe"], ["yes"], None, BINARY, "f1"), "maybe"),
        (
            lambda: realized_performance(["yes"], ["yes"], [[0.5, 0.5, 0]], BINARY, "roc_auc"),
            "shape",
        ),
        (lambda: estimate_performance([[0.5, 1.5]], BINARY, "accuracy"), "probabilities"),
        (lambda: estimate_performance([[0.5, 0.5]], BINARY, "f1", positive_class="x"), "x"),
        (lambda: estimate_performance([[0.5, 0.5]], BINARY, "f1", threshold=2), "threshold"),
        (lambda: realized_performance(["yes"], ["yes"], None, BINARY, "roc_auc"), "probabilities"),
    ],
)
def test_bad_inputs_are_one_line_errors_that_name_the_input(call, named):
    with pytest.raises(PipelineInputError) as error:
        call()
    assert named in str(error.value) and "\n" not in str(error.value)
