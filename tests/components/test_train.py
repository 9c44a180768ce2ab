import pytest

from components.common.schema import as_model_input
from components.prepare.logic import fit_preprocessor, split_table
from components.train.logic import fit_model

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
