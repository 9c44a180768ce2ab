"""The reviewed data contract that `contract.path` names: its format, checked when the run
config is loaded (validate infers and checks contracts: components.validate.contract)."""

from components.common.errors import PipelineInputError
from components.common.vocabulary import CATEGORICAL, NUMERIC

CONTRACT_VERSION = 1
# What an anomaly of each kind does when contract.severity does not say: shared by the validate
# step and batch predictions, which count the rows of a `warn` rule and stop on a `block` one.
BLOCK, WARN = "block", "warn"
DEFAULT_SEVERITY = {
    "missing_column": BLOCK,
    "new_column": WARN,
    "type_change": BLOCK,
    "out_of_range": WARN,
    "unseen_category": WARN,
    "null_rate": BLOCK,
    "too_few_rows": BLOCK,
}


def check_contract_format(contract, where: str) -> None:
    """A contract file a person edited: fail early, naming the field, if it is malformed."""
    if not isinstance(contract, dict) or contract.get("version") != CONTRACT_VERSION:
        raise PipelineInputError(f"{where}: expected a contract with version: {CONTRACT_VERSION}")
    if not isinstance(contract.get("columns"), dict) or not contract["columns"]:
        raise PipelineInputError(f"{where}: 'columns' must map column names to expectations")
    for name, entry in contract["columns"].items():
        if not isinstance(entry, dict) or entry.get("kind") not in (NUMERIC, CATEGORICAL):
            raise PipelineInputError(
                f"{where}: columns.{name}.kind must be {NUMERIC} or {CATEGORICAL}"
            )
        if "min" in entry and "max" in entry and entry["min"] > entry["max"]:
            raise PipelineInputError(
                f"{where}: columns.{name}: min {entry['min']} > max {entry['max']}"
            )
