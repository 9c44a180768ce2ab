import pytest

from components.common.errors import PipelineInputError
from components.validate.logic import validate_table


def test_schema_lists_features_with_kinds_and_classes(arrests):
    schema = validate_table(arrests, "released", "classification", ["colour"], {"age": "numeric"})
    kinds = {f["name"]: f["kind"] for f in schema["features"]}
    assert kinds == {
        "colour": "categorical",
        "year": "numeric",
        "age": "numeric",
        "sex": "categorical",
        "employed": "categorical",
        "citizen": "categorical",
        "checks": "numeric",
    }
    assert schema["classes"] == ["No", "Yes"]
    assert schema["missing_labels"] == 0


def test_a_declared_categorical_overrides_the_dtype(arrests):
    schema = validate_table(arrests, "released", "classification", [], {"year": "categorical"})
    assert {"name": "year", "kind": "categorical", "nullable": False} in schema["features"]


def test_features_record_whether_the_data_had_missing_values(arrests):
    frame = arrests.copy()
    frame.loc[3, "age"] = None
    schema = validate_table(frame, "released", "classification", [], {})
    nullable = {f["name"]: f["nullable"] for f in schema["features"]}
    assert nullable["age"] is True
    assert not any(v for name, v in nullable.items() if name != "age")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "outcome"}, "column 'outcome' \\(the target\\) is not in the data"),
        ({"sensitive_columns": ["gender"]}, "column 'gender' \\(a sensitive column\\)"),
        ({"column_types": {"sex": "numeric"}}, "column 'sex': declared numeric but holds object"),
        ({"column_types": {"height": "numeric"}}, "column 'height' \\(declared numeric\\)"),
        ({"column_types": {"age": "text"}}, "column 'age': declared type 'text'"),
        ({"task": "ranking"}, "task 'ranking'"),
        ({"task": "regression"}, "column 'released' \\(the target\\) holds object values"),
    ],
)
def test_wrong_columns_and_types_are_named(arrests, kwargs, message):
    args = {
        "target": "released",
        "task": "classification",
        "sensitive_columns": [],
        "column_types": {},
    } | kwargs
    with pytest.raises(PipelineInputError, match=message):
        validate_table(arrests, **args)


def test_a_single_class_target_is_refused(arrests):
    only_yes = arrests[arrests["released"] == "Yes"]
    with pytest.raises(PipelineInputError, match="has one class \\('Yes'\\)"):
        validate_table(only_yes, "released", "classification", [], {})


def test_an_all_missing_column_is_refused(arrests):
    broken = arrests.assign(employed=None)
    with pytest.raises(PipelineInputError, match="column 'employed' has no values"):
        validate_table(broken, "released", "classification", [], {})


def test_unlabelled_rows_are_counted(arrests):
    partly = arrests.copy()
    partly.loc[:9, "released"] = None
    assert validate_table(partly, "released", "classification", [], {})["missing_labels"] == 10
