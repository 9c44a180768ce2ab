import numpy as np
import pytest

from components.common.errors import PipelineInputError
from components.prepare.logic import (
    MISSING_CATEGORY,
    as_model_input,
    fit_preprocessor,
    split_table,
)


def test_split_is_stratified_and_reproducible(loans, loans_schema):
    train, test = split_table(loans, loans_schema, 0.25, seed=7)
    again_train, _ = split_table(loans, loans_schema, 0.25, seed=7)
    assert len(test) == 100 and len(train) == 300
    assert train.equals(again_train)
    overall = (loans["approved"] == "yes").mean()
    assert abs((test["approved"] == "yes").mean() - overall) < 0.02
    assert abs((train["approved"] == "yes").mean() - overall) < 0.02


def test_split_drops_rows_without_a_label(loans, loans_schema):
    loans.loc[:9, "approved"] = None
    train, test = split_table(loans, loans_schema, 0.25, seed=7)
    assert len(train) + len(test) == len(loans) - 10


def test_a_class_with_one_row_cannot_be_stratified(loans, loans_schema):
    loans.loc[0, "approved"] = "maybe"
    with pytest.raises(PipelineInputError, match="a class has 1 row"):
        split_table(loans, loans_schema, 0.25, seed=7)


def test_preprocessor_imputes_scales_and_encodes(loans, loans_schema):
    train, test = split_table(loans, loans_schema, 0.25, seed=7)
    transform = fit_preprocessor(train, loans_schema)
    out = transform.transform(as_model_input(test, loans_schema))
    names = list(transform.get_feature_names_out())
    assert not np.isnan(out).any()
    # Numerics are centred on the training rows.
    income = out[:, names.index("income")]
    assert abs(income.mean()) < 0.3
    # Missing categories are a category of their own, not an error.
    assert f"region_{MISSING_CATEGORY}" in names
    assert {"group_a", "group_b"} <= set(names)


def test_unknown_categories_at_serving_time_encode_as_zeros(loans, loans_schema):
    transform = fit_preprocessor(loans, loans_schema)
    row = loans.head(1).assign(region="atlantis")
    out = transform.transform(as_model_input(row, loans_schema))
    names = list(transform.get_feature_names_out())
    region_columns = [i for i, n in enumerate(names) if n.startswith("region_")]
    assert out[0, region_columns].sum() == 0


def test_model_input_needs_every_feature(loans, loans_schema):
    with pytest.raises(PipelineInputError, match="column 'region' \\(a feature\\)"):
        as_model_input(loans.drop(columns="region"), loans_schema)
