"""Column-wise request validation: a bad value anywhere in a large batch is still named by its
row and feature, and good batches become the arrays training would build."""

import math

import numpy as np
import pandas as pd
import pytest

from components.common.schema import MISSING_CATEGORY, as_model_input
from serving.protocol import InvalidInput, arrays_from_columns, columns_from_instances

SCHEMA = {
    "target": "y",
    "task": "classification",
    "features": [
        {"name": "age", "kind": "numeric"},
        {"name": "checks", "kind": "numeric", "nullable": False},
        {"name": "colour", "kind": "categorical"},
    ],
}
ROWS = 1000
BAD = 700


def _rows() -> list[dict]:
    return [
        {"age": i % 50 + 0.5 if i % 7 else None, "checks": i, "colour": ["a", "b", None][i % 3]}
        for i in range(ROWS)
    ]


@pytest.mark.parametrize(
    ("feature", "value", "problem"),
    [
        ("age", "old", "must be a number or null, got string 'old'"),
        ("age", True, "must be a number or null, got boolean True"),
        ("age", math.inf, "must be a finite number, got inf"),
        (
            "checks",
            None,
            "is missing (null), which this feature does not allow (its schema says nullable: false)",
        ),
        (
            "checks",
            math.nan,
            "is missing (NaN), which this feature does not allow (its schema says nullable: false)",
        ),
        ("colour", [1], "must be a string, number or null, got array"),
        ("colour", -math.inf, "must be a finite number, got -inf"),
    ],
)
def test_a_bad_value_deep_in_a_batch_names_its_row_and_feature(feature, value, problem):
    rows = _rows()
    rows[BAD][feature] = value
    with pytest.raises(InvalidInput) as caught:
        columns_from_instances({"instances": rows}, SCHEMA)
    assert str(caught.value) == f"instances[{BAD}]: feature '{feature}' {problem}"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"age": 1, "checks": 1}, "instances[700]: feature 'colour' is missing"),
        ({"age": 1, "checks": 1, "colour": "a", "x": 2}, "instances[700]: unknown feature 'x'"),
        ([1, 2, 3], "instances[700]: expected an object of feature values, got array"),
    ],
)
def test_a_row_of_other_features_is_named(row, message):
    rows = _rows()
    rows[BAD] = row
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        columns_from_instances({"instances": rows}, SCHEMA)


def test_good_columns_become_what_training_builds():
    """Numbers float64 with NaN for null, categories str with the missing token; booleans and
    numbers in a categorical feature as their text: equal to as_model_input's frame."""
    rows = _rows()
    rows[3]["colour"], rows[4]["colour"] = True, 2.5
    columns = columns_from_instances({"instances": rows}, SCHEMA)
    assert columns["checks"] == list(range(ROWS))  # as received, for the prediction log
    arrays = arrays_from_columns(columns, SCHEMA)
    expected = as_model_input(pd.DataFrame(rows), SCHEMA)
    np.testing.assert_array_equal(arrays["age"], expected["age"].to_numpy(dtype=float))
    assert arrays["checks"].dtype == np.float64
    assert arrays["colour"].tolist() == expected["colour"].tolist()
    assert arrays["colour"][2] == MISSING_CATEGORY and arrays["colour"][3] == "True"


@pytest.mark.parametrize(
    ("feature", "value", "problem"),
    [
        ("age", "old", "must be a number or null, got string 'old'"),
        ("checks", None, "is missing (null), which this feature does not allow"),
        ("colour", math.inf, "must be a finite number, got inf"),
    ],
)
def test_a_bad_value_deep_in_a_v2_tensor_names_its_input_and_row(feature, value, problem):
    import kserve

    from serving.protocol import columns_from_tensors

    rows = _rows()
    rows[BAD][feature] = value
    inputs = []
    for spec in SCHEMA["features"]:
        data = [row[spec["name"]] for row in rows]
        datatype = "FP64" if spec["kind"] == "numeric" else "BYTES"
        inputs.append(kserve.InferInput(spec["name"], [ROWS], datatype, data=data))
    request = kserve.InferRequest(model_name="m", infer_inputs=inputs, request_id="r")
    with pytest.raises(InvalidInput) as caught:
        columns_from_tensors(request, SCHEMA)
    assert str(caught.value).startswith(f"input '{feature}', row {BAD}: {problem}")
