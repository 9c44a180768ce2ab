"""The model families' vocabulary, written out as data, agrees with scikit-learn's estimators."""

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
