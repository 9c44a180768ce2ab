import numpy as np
import pandas as pd
import pytest

from components.bias.logic import (
    data_bias,
    markdown_tables,
    model_bias,
    positive_label,
    sensitive_groups,
)
from components.common.errors import PipelineInputError

SCHEMA = {"target": "label", "task": "classification", "classes": ["no", "yes"]}


@pytest.fixture
def table() -> pd.DataFrame:
    # group a: 4 rows, 3 "yes"; group b: 2 rows, 1 "yes"
    return pd.DataFrame(
        {
            "group": ["a", "a", "a", "a", "b", "b"],
            "label": ["yes", "yes", "yes", "no", "yes", "no"],
        }
    )


def test_data_bias_counts_groups_and_base_rates(table):
    result = data_bias(table, SCHEMA, ["group"], "yes")["group"].set_index("group")
    assert result.loc["a", "rows"] == 4 and result.loc["b", "rows"] == 2
    assert result.loc["a", "share"] == pytest.approx(4 / 6)
    assert result.loc["a", "base_rate"] == pytest.approx(0.75)
    assert result.loc["b", "base_rate"] == pytest.approx(0.5)


def test_the_favourable_class_can_be_the_first(table):
    result = data_bias(table, SCHEMA, ["group"], "no")["group"].set_index("group")
    assert result.loc["a", "base_rate"] == pytest.approx(0.25)


def test_model_bias_selection_rate_accuracy_and_ratio(table):
    predictions = np.array(["yes", "yes", "no", "no", "no", "no"])
    tables, ratios = model_bias(table, predictions, SCHEMA, ["group"], "yes")
    result = tables["group"].set_index("group")
    # a: predicted yes 2 of 4, correct 3 of 4; b: predicted yes 0 of 2, correct 1 of 2
    assert result.loc["a", "selection_rate"] == pytest.approx(0.5)
    assert result.loc["a", "accuracy"] == pytest.approx(0.75)
    assert result.loc["b", "selection_rate"] == pytest.approx(0.0)
    assert result.loc["b", "accuracy"] == pytest.approx(0.5)
    assert result.loc["a", "rows"] == 4
    assert tables["group"]["rows"].dtype.kind == "i"
    assert ratios["group"]["accuracy"] == pytest.approx(0.5 / 0.75)
    assert ratios["group"]["selection_rate"] == pytest.approx(0.0)


def test_model_bias_for_regression_reports_error_per_group():
    frame = pd.DataFrame({"group": ["a", "a", "b"], "y": [1.0, 3.0, 10.0]})
    schema = {"target": "y", "task": "regression"}
    tables, _ = model_bias(frame, np.array([2.0, 2.0, 7.0]), schema, ["group"], "")
    result = tables["group"].set_index("group")
    assert result.loc["a", "mae"] == pytest.approx(1.0)
    assert result.loc["b", "mae"] == pytest.approx(3.0)
    assert result.loc["b", "mean_prediction"] == pytest.approx(7.0)


def test_numeric_sensitive_columns_are_banded(arrests):
    groups = sensitive_groups(arrests, "age")
    assert groups.nunique() == 4
    assert groups.value_counts().min() > len(arrests) * 0.15


def test_a_missing_sensitive_column_is_named(table):
    with pytest.raises(PipelineInputError, match="column 'race' \\(a sensitive column\\)"):
        data_bias(table, SCHEMA, ["race"], "yes")


def test_an_unknown_positive_class_is_named():
    with pytest.raises(PipelineInputError, match="positive_class 'maybe'.*classes: no, yes"):
        positive_label(SCHEMA, "maybe")


def test_markdown_has_a_section_per_column(table):
    text = markdown_tables("Data", data_bias(table, SCHEMA, ["group"], "yes"))
    assert "### group" in text
    assert "| a " in text and "0.750" in text
