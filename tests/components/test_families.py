"""The model families' vocabulary, written out as data, agrees with scikit-learn's estimators;
the SGD family gives probabilities where the server needs them."""

import numpy as np
import pytest

from components.common.errors import PipelineInputError
from components.common.families import (
    FAMILIES,
    HYPERPARAMETERS,
    SCORER_NAMES,
    check_metric,
    check_space_overrides,
    estimator_class,
)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_written_hyperparameters_are_the_estimators_own(family):
    expected = set()
    for path in FAMILIES[family][0].values():
        expected |= set(estimator_class(path)().get_params())
    assert set(HYPERPARAMETERS[family]) == expected


def test_the_written_scorer_names_are_scikit_learns_own():
    from sklearn.metrics import get_scorer_names

    assert SCORER_NAMES == set(get_scorer_names())


def test_a_metric_that_is_no_scorer_is_named():
    check_metric("roc_auc")
    with pytest.raises(PipelineInputError, match=r"tuning.metric: 'roc-auc' is not a scikit-learn"):
        check_metric("roc-auc")


def test_an_unknown_hyperparameter_is_named_with_its_key():
    with pytest.raises(PipelineInputError, match=r"tuning.space.random_forest.max_dept: unknown"):
        check_space_overrides({"random_forest": {"max_dept": 3}})


def test_the_sgd_family_fits_the_tasks_loss_and_takes_the_seed():
    from components.common.families import make_estimator

    classifier = make_estimator("sgd_linear", {"alpha": 1e-3}, "classification", seed=7)
    regressor = make_estimator("sgd_linear", {"alpha": 1e-3}, "regression", seed=7)
    assert type(classifier).__name__ == "SGDClassifier" and classifier.loss == "log_loss"
    assert type(regressor).__name__ == "SGDRegressor" and regressor.loss == "squared_error"
    assert classifier.random_state == regressor.random_state == 7
    assert hasattr(classifier, "predict_proba")  # the server, the gate and the reference need it


def test_the_sgd_familys_loss_cannot_be_searched():
    with pytest.raises(
        PipelineInputError, match=r"^tuning.space.sgd_linear.loss: fixed by the task"
    ):
        check_space_overrides({"sgd_linear": {"loss": {"choice": ["hinge", "log_loss"]}}})
    check_space_overrides({"sgd_linear": {"alpha": {"loguniform": [1e-5, 1e-2]}}})


def test_a_served_sgd_pipeline_answers_as_scikit_learn(loans):
    from components.common.schema import as_model_input
    from components.prepare.logic import fit_preprocessor
    from components.train.logic import fit_model
    from components.validate.logic import validate_table
    from serving.model import predict_with_probabilities

    schema = validate_table(loans, "approved", "classification", ["group"], {})
    model = fit_model(
        loans,
        schema,
        fit_preprocessor(loans, schema),
        {"family": "sgd_linear", "params": {"alpha": 1e-3}},
        seed=0,
    )
    assert type(model.steps[-1][1]).__name__ == "SGDClassifier"
    features = as_model_input(loans, schema)
    labels, probabilities = predict_with_probabilities(model, features)
    assert labels.tolist() == model.predict(features).tolist()
    np.testing.assert_allclose(probabilities, model.predict_proba(features))


@pytest.mark.parametrize(
    "mitigation", ["reweighing", "exponentiated_gradient", "threshold_optimizer"]
)
def test_the_sgd_family_takes_every_bias_mitigation(loans, mitigation):
    from components.common.schema import as_model_input
    from components.prepare.logic import fit_preprocessor
    from components.train.logic import fit_mitigated
    from components.validate.logic import validate_table

    schema = validate_table(loans, "approved", "classification", ["group"], {})
    best = {"family": "sgd_linear", "params": {"alpha": 1e-3}}
    model, baseline = fit_mitigated(
        loans,
        schema,
        fit_preprocessor(loans, schema),
        best,
        0,
        mitigation,
        "demographic_parity",
        "group",
        {},
        "",
    )
    probabilities = model.predict_proba(as_model_input(loans, schema))
    assert probabilities.shape == (len(loans), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert model is not baseline
