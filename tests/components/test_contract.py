import numpy as np
import pandas as pd
import pytest

from components.common.errors import PipelineInputError
from components.common.settings.contract import check_contract_format
from components.validate.contract import (
    anomalies_markdown,
    blocking,
    check_contract,
    describe,
    infer_contract,
)


@pytest.fixture
def reviewed(arrests):
    """The contract as inferred from the older partitions, 1997-2000."""
    return infer_contract(arrests[arrests["year"] <= 2000])


def _by_kind(anomalies):
    return {(a["kind"], a["column"]): a for a in anomalies}


def test_inferred_contract_describes_the_data(arrests):
    contract = infer_contract(arrests)
    assert contract["rows"] == {"min": len(arrests) // 2}
    age = contract["columns"]["age"]
    assert (age["kind"], age["min"], age["max"]) == (
        "numeric",
        arrests["age"].min(),
        arrests["age"].max(),
    )
    assert contract["columns"]["colour"]["categories"] == ["Black", "White"]
    assert contract["columns"]["released"]["nullable"] is False
    # Data always meets the contract inferred from it.
    assert check_contract(arrests, contract) == []


def test_each_kind_of_anomaly_names_column_expectation_and_observation(arrests, reviewed):
    new = arrests[arrests["year"] > 2000].copy()
    new.loc[new.index[:3], "colour"] = "Purple"
    new.loc[new.index[:40], "age"] = np.nan
    new = new.drop(columns="citizen").assign(officer="x", checks=new["checks"].astype(str))
    anomalies = _by_kind(check_contract(new, reviewed))

    assert anomalies[("too_few_rows", None)]["observed"] == f"{len(new)} rows"
    assert anomalies[("missing_column", "citizen")]["severity"] == "block"
    assert anomalies[("new_column", "officer")]["severity"] == "warn"
    assert anomalies[("type_change", "checks")]["expectation"] == "numeric values"
    assert anomalies[("null_rate", "age")]["observed"].endswith("(40 rows)")
    year = anomalies[("out_of_range", "year")]
    assert year["expectation"] == "values in [1997, 2000]"
    assert year["observed"].startswith(f"{len(new)} rows outside")
    assert "'Purple'" in anomalies[("unseen_category", "colour")]["observed"]
    assert describe(anomalies[("missing_column", "citizen")]) == (
        "column 'citizen': missing column: expected present, observed missing"
    )


def test_severity_and_thresholds_are_configurable(arrests, reviewed):
    new = arrests[arrests["year"] > 2000].copy()
    new.loc[new.index[:3], "colour"] = "Purple"  # 0.2% of rows
    relaxed = check_contract(
        new,
        reviewed,
        severity={"too_few_rows": "warn", "out_of_range": "block"},
        unseen_category_rate=0.01,
    )
    kinds = {a["kind"]: a["severity"] for a in relaxed}
    assert "unseen_category" not in kinds  # below the 1% threshold
    assert kinds == {"too_few_rows": "warn", "out_of_range": "block"}
    assert [a["kind"] for a in blocking(relaxed)] == ["out_of_range"]


def test_null_rate_margin_tolerates_a_little_more_missing(arrests):
    frame = arrests.copy()
    frame.loc[frame.index[:100], "age"] = np.nan  # about 1.9%
    contract = infer_contract(frame)
    more = arrests.copy()
    more.loc[more.index[:150], "age"] = np.nan  # about 2.9%
    assert [a["kind"] for a in check_contract(more, contract)] == ["null_rate"]
    assert check_contract(more, contract, null_rate_margin=0.02) == []


def test_high_cardinality_columns_keep_no_category_set():
    frame = pd.DataFrame({"id": [f"u{i}" for i in range(500)], "y": [0, 1] * 250})
    assert "categories" not in infer_contract(frame)["columns"]["id"]


@pytest.mark.parametrize(
    ("contract", "message"),
    [
        ({"version": 2, "columns": {}}, "expected a contract with version: 1"),
        ({"version": 1, "columns": {}}, "'columns' must map"),
        ({"version": 1, "columns": {"a": {"kind": "text"}}}, "columns.a.kind must be"),
        (
            {"version": 1, "columns": {"a": {"kind": "numeric", "min": 5, "max": 1}}},
            "columns.a: min 5 > max 1",
        ),
    ],
)
def test_a_malformed_contract_file_is_named(contract, message):
    with pytest.raises(PipelineInputError, match=message):
        check_contract_format(contract, "contract.yaml")


def test_the_report_lists_blocking_anomalies_first(arrests, reviewed):
    new = arrests[arrests["year"] > 2000].drop(columns="citizen")
    text = anomalies_markdown(check_contract(new, reviewed), inferred=False)
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| block") or line.startswith("| warn")
    ]
    assert rows[0].startswith("| block") and rows[-1].startswith("| warn")
    assert "No anomalies" in anomalies_markdown([], inferred=True)
    assert "contract.path" in anomalies_markdown([], inferred=True)


def test_columns_told_to_meet_the_contract_from_extremes_and_codes_get_pandera_s_verdict(
    monkeypatch,
):
    # Columns whose extremes or occurring categories show they meet the contract skip pandera's
    # row checks; every column that breaks it still reaches pandera. Both ways find the same
    # anomalies, with the same counts and examples.
    import components.validate.contract as contract_module

    rng = np.random.default_rng(11)
    rows = 400
    frame = pd.DataFrame(
        {
            "inside": rng.uniform(0, 10, rows),
            "above": rng.uniform(0, 10, rows),
            "below": rng.integers(0, 10, rows),
            "empty": np.full(rows, np.nan),
            "known": pd.Categorical(rng.choice(["a", "b", None], rows), categories=["a", "b", "z"]),
            "allowed": pd.Categorical(rng.choice(["a", "b"], rows), categories=["a", "b"]),
            "unseen": pd.Categorical(rng.choice(["a", "b", "c"], rows)),
            "numbers_as_categories": pd.Categorical(rng.choice([1, 2], rows)),
            "words": rng.choice(["x", "y"], rows).astype(object),
        }
    )
    frame.loc[::50, "inside"] = np.nan
    contract = infer_contract(frame)
    columns = contract["columns"]
    columns["above"]["max"] = 9.0
    columns["below"]["min"] = 1
    columns["empty"].update({"min": 0, "max": 1})
    columns["known"]["categories"] = ["a", "b"]  # 'z' is unused: no anomaly
    columns["allowed"]["categories"] = ["a", "b", "c"]  # every category allowed, 'c' unseen
    columns["unseen"]["categories"] = ["a", "b"]
    columns["numbers_as_categories"]["categories"] = ["1"]
    columns["words"]["categories"] = ["x"]

    told = []
    meets_for_certain = contract_module._meets_for_certain

    def spy(values, entry):
        certain = meets_for_certain(values, entry)
        told.extend([values.name] if certain else [])
        return certain

    monkeypatch.setattr(contract_module, "_meets_for_certain", spy)
    found = check_contract(frame, contract)
    assert sorted(told) == ["allowed", "empty", "inside", "known"]  # no row check for these
    monkeypatch.setattr(contract_module, "_meets_for_certain", lambda values, entry: False)
    assert found == check_contract(frame, contract)
    assert sorted((a["kind"], a["column"]) for a in found) == [
        ("out_of_range", "above"),
        ("out_of_range", "below"),
        ("unseen_category", "numbers_as_categories"),
        ("unseen_category", "unseen"),
        ("unseen_category", "words"),
    ]
