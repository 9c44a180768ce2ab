"""The input against the model: its features and the job's key columns must be there, in types
that can be cast; and the rows against the reviewed data contract, counted rule by rule.

A missing feature, a key column that is not in the input, or a type that cannot become the
feature's kind stops the job with one line naming the column. A rule of the contract that only
warns (out_of_range and unseen_category by default) is counted per column and reported; a rule
set to block stops the job before its output is committed, naming the column.
"""

import pyarrow as pa

from components.common.errors import PipelineInputError
from components.common.schema import NUMERIC, feature_names
from components.common.settings.contract import BLOCK, DEFAULT_SEVERITY

# The contract's rules that a row can break on its own; the others (a missing or new column, a
# type change, too few rows) are about the whole input, and a missing feature is an error here.
ROW_RULES = ("out_of_range", "unseen_category", "null_rate")


def check_columns(input_schema: pa.Schema, schema: dict, key_columns: list[str], where: str):
    """The input has every feature of the model and every key column, in a castable type.

    Args:
        input_schema: the input's Arrow schema (Parquet footer, or a CSV's inferred types).
        schema: the model version's schema.
        key_columns: predict.key_columns.
        where: how the input and model are named in messages, e.g. "input 'lake/' (model v3)".

    Raises:
        PipelineInputError: one line naming the first column that is missing or of a type that
            cannot be cast.
    """
    names = set(input_schema.names)
    features = feature_names(schema)
    present = [name for name in features if name in names]
    if not present:
        shown = ", ".join(features[:5]) + (", ..." if len(features) > 5 else "")
        raise PipelineInputError(
            f"{where}: none of the model's {len(features)} features is in the input "
            f"(expected {shown})"
        )
    for name in features:
        if name not in names:
            raise PipelineInputError(f"{where}: column '{name}' (a feature) is missing")
    for name in key_columns:
        if name not in names:
            raise PipelineInputError(
                f"predict.key_columns: column '{name}' is not in the input ({where})"
            )
    for name in feature_names(schema, NUMERIC):
        kind = input_schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_decimal(kind)
            or pa.types.is_null(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
        ):
            raise PipelineInputError(
                f"{where}: column '{name}' (a numeric feature) is {kind}, which cannot be cast "
                "to a number"
            )


class ContractCounts:
    """Rows that break each row rule of a reviewed contract, per column, over a whole job.

    Args:
        contract: the reviewed contract (contract.path), or None: nothing is counted.
        severity: contract.severity (block or warn per kind, over the defaults).
        null_rate_margin: contract.null_rate_margin.
        columns: the columns checked (the model's features).
    """

    def __init__(
        self,
        contract: dict | None,
        severity: dict | None = None,
        null_rate_margin: float = 0.0,
        columns: list[str] | None = None,
    ):
        entries = (contract or {}).get("columns", {})
        self.entries = {
            name: entry for name, entry in entries.items() if columns is None or name in columns
        }
        self.severity = {**DEFAULT_SEVERITY, **(severity or {})}
        self.null_rate_margin = null_rate_margin
        self.rows = 0
        self.counts: dict[str, dict[str, int]] = {rule: {} for rule in ROW_RULES}

    def add(self, frame) -> None:
        """Count one batch: `frame` holds the features as received (numbers as float64)."""
        self.rows += len(frame)
        for name, entry in self.entries.items():
            if name not in frame.columns:
                continue
            values = frame[name]
            present = values.notna()
            broken = {"null_rate": int((~present).sum())}
            if entry.get("kind") == NUMERIC and ("min" in entry or "max" in entry):
                low, high = entry.get("min", float("-inf")), entry.get("max", float("inf"))
                broken["out_of_range"] = int((present & ((values < low) | (values > high))).sum())
            elif "categories" in entry:
                allowed = {str(category) for category in entry["categories"]}
                text = values[present].astype(str)
                broken["unseen_category"] = int((~text.isin(allowed)).sum())
            for rule, count in broken.items():
                if count:
                    self.counts[rule][name] = self.counts[rule].get(name, 0) + count

    def merge(self, other: dict) -> None:
        """Add counts reported elsewhere (a Ray worker's `as_dict`)."""
        self.rows += other["rows"]
        for rule, columns in other["counts"].items():
            for name, count in columns.items():
                self.counts[rule][name] = self.counts[rule].get(name, 0) + count

    def as_dict(self) -> dict:
        return {"rows": self.rows, "counts": self.counts}

    def _breaks(self, rule: str, name: str, count: int) -> bool:
        if rule != "null_rate":
            return count > 0
        entry = self.entries[name]
        allowed = float(entry.get("max_null_rate", 0.0)) + self.null_rate_margin
        rate = count / max(self.rows, 1)
        return (not entry.get("nullable", True) and count > 0) or rate > allowed + 1e-12

    def warnings(self) -> dict[str, dict[str, int]]:
        """{rule: {column: rows}} for the rules that only warn (and are broken)."""
        return {
            rule: dict(columns)
            for rule, columns in self.counts.items()
            if self.severity.get(rule) != BLOCK and columns
        }

    def check_blocking(self, where: str) -> None:
        """Stop the job, naming the column, when a rule set to block is broken.

        Raises:
            PipelineInputError: one line: the rule, the column and the rows.
        """
        for rule, columns in self.counts.items():
            if self.severity.get(rule) != BLOCK:
                continue
            for name, count in sorted(columns.items()):
                if self._breaks(rule, name, count):
                    raise PipelineInputError(
                        f"{where}: column '{name}' breaks the contract's {rule} rule in "
                        f"{count} of {self.rows} rows (contract.severity.{rule} is block)"
                    )
