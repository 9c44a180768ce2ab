"""The data contract: what the data looked like when a person last reviewed it.

On a first run the contract is inferred from the data (column kinds, nullability, value ranges,
category sets, a minimum row count) and saved as an artifact; a user reviews it, commits it and
names it in the run config. Every later run checks the new data against it with pandera and lists
each anomaly with the column, the expectation and what was observed. Whether an anomaly blocks
the run or is only a warning is set per kind.
"""

import math

import numpy as np
import pandas as pd
import pandera.pandas as pa

from components.common.categoricals import occurring_categories
from components.common.columnwise import columnwise
from components.common.schema import CATEGORICAL, NUMERIC
from components.common.settings.contract import BLOCK, CONTRACT_VERSION, DEFAULT_SEVERITY
from components.validate.logic import column_kind, missing_counts

# A categorical column with more distinct values than this keeps no category set (an ID, free text).
MAX_CATEGORIES = 200
# How many offending values an anomaly quotes.
EXAMPLES = 5


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def infer_contract(frame: pd.DataFrame, row_floor: float = 0.5) -> dict:
    """A contract that this data meets exactly.

    Args:
        frame: the data as ingested.
        row_floor: the expected minimum row count, as a share of this data's rows.
    """
    columns = {}
    for name in frame.columns:
        values = frame[name]
        missing = values.isna()  # once per column: on text columns it is a scan of every value
        dtype = values.dtype
        entry: dict = {
            "kind": column_kind(values),
            # Of the values: text is "object" whether it came as strings or as categories.
            "dtype": str(
                dtype.categories.dtype if isinstance(dtype, pd.CategoricalDtype) else dtype
            ),
            "nullable": bool(missing.any()),
            "max_null_rate": _rate_ceiling(float(missing.mean())),
        }
        if entry["kind"] == NUMERIC and not missing.all():
            entry["min"], entry["max"] = map(_plain, _extremes(values))
        elif entry["kind"] == CATEGORICAL:
            # A categorical's unused categories and missing values never count; other values
            # are taken without the missing ones.
            text = isinstance(dtype, pd.CategoricalDtype) and _all_text(values)
            present = values if text else values[~missing]
            categories = _categories(present)
            if categories is not None:
                entry["categories"] = categories
        columns[str(name)] = entry
    return {
        "version": CONTRACT_VERSION,
        "rows": {"min": int(math.floor(len(frame) * row_floor))},
        "columns": columns,
    }


def _extremes(values: pd.Series) -> tuple:
    """The lowest and highest present value of a numeric column (missing when none is)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf" and len(values):
        # fmin and fmax skip NaN (missing) without the copy of the present values that
        # Series.min makes.
        array = values.to_numpy()
        return np.fmin.reduce(array), np.fmax.reduce(array)
    return values.min(), values.max()


def _rate_ceiling(rate: float) -> float:
    """The rate to 6 decimals, rounded up: data must meet the contract inferred from it, and
    116 missing of 6,000 (0.0193333...) rounded to nearest (0.019333) would break it."""
    # The inner round absorbs float noise: 0.02 * 1e6 is 20000.000000000004, not above 20000.
    return math.ceil(round(rate * 1e6, 6)) / 1e6


def _all_text(values: pd.Series) -> bool:
    """Values that are all str (missing ones aside): str() would change nothing. Ingest gives
    text as categoricals of strings (components.ingest.logic.text_as_categories); a frame made
    in-process may hold them as objects."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.cat.categories
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
        "string",
        "empty",
    )


def _categories(present: pd.Series) -> list[str] | None:
    """The sorted category set of a column's present values as strings, or None when there are
    more than MAX_CATEGORIES."""
    if isinstance(present.dtype, pd.CategoricalDtype) and _all_text(present):
        # The categories that occur, found from the codes: no string per row.
        distinct = occurring_categories(present)
        return sorted(distinct.tolist()) if len(distinct) <= MAX_CATEGORIES else None
    if _all_text(present):
        # Text needs no str(): find the distinct values first, on the hashed column, instead of
        # converting every row (the same set, at a fraction of the cost on millions of rows).
        distinct = pd.unique(present.to_numpy())
        return sorted(distinct.tolist()) if len(distinct) <= MAX_CATEGORIES else None
    if present.nunique() > MAX_CATEGORIES:
        return None
    return sorted(present.astype(str).unique().tolist())


def _anomaly(kind, column, expectation, observed, severity) -> dict:
    return {
        "kind": kind,
        "column": column,
        "expectation": expectation,
        "observed": observed,
        "severity": severity.get(kind, DEFAULT_SEVERITY[kind]),
    }


def _pandera_schema(contract: dict, frame: pd.DataFrame) -> pa.DataFrameSchema:
    """Range and category-set checks for the columns that are present and of the expected kind
    (missing columns and kind changes are reported on their own, before this)."""
    columns = {}
    for name, entry in contract["columns"].items():
        if name not in frame.columns or column_kind(frame[name]) != entry["kind"]:
            continue
        if entry["kind"] == NUMERIC and "min" in entry and "max" in entry:
            check = pa.Check.in_range(entry["min"], entry["max"])
        elif entry["kind"] == CATEGORICAL and "categories" in entry:
            check = pa.Check.isin(entry["categories"])
        else:
            continue
        # Nulls are the null-rate check's business; pandera's checks skip them.
        columns[name] = pa.Column(nullable=True, checks=[check])
    return pa.DataFrameSchema(columns, strict=False)


def check_contract(
    frame: pd.DataFrame,
    contract: dict,
    severity: dict[str, str] | None = None,
    unseen_category_rate: float = 0.0,
    null_rate_margin: float = 0.0,
) -> list[dict]:
    """Every way `frame` departs from `contract`.

    Args:
        frame: the new data.
        contract: from `infer_contract`, possibly edited by a person.
        severity: "block" or "warn" per anomaly kind, over DEFAULT_SEVERITY.
        unseen_category_rate: unseen categories are an anomaly only above this share of rows.
        null_rate_margin: a null rate is an anomaly only above the contract's rate plus this.

    Returns:
        The anomalies: kind, column, expectation, observed, severity ("block" or "warn").
    """
    severity = severity or {}
    anomalies = []
    expected_rows = contract.get("rows", {}).get("min", 0)
    if len(frame) < expected_rows:
        anomalies.append(
            _anomaly(
                "too_few_rows",
                None,
                f"at least {expected_rows} rows",
                f"{len(frame)} rows",
                severity,
            )
        )
    expected = contract["columns"]
    for name in expected:
        if name not in frame.columns:
            anomalies.append(_anomaly("missing_column", name, "present", "missing", severity))
    for name in frame.columns:
        if name not in expected:
            anomalies.append(
                _anomaly(
                    "new_column",
                    str(name),
                    "not in the contract",
                    f"{frame[name].dtype} values",
                    severity,
                )
            )
    present = [name for name in expected if name in frame.columns]
    missing_of = dict(zip(present, missing_counts(frame, present), strict=True))
    for name, entry in expected.items():
        if name not in frame.columns:
            continue
        values = frame[name]
        kind = column_kind(values)
        if kind != entry["kind"]:
            anomalies.append(
                _anomaly(
                    "type_change",
                    name,
                    f"{entry['kind']} values",
                    f"{kind} ({values.dtype})",
                    severity,
                )
            )
            continue
        missing = missing_of[name]
        null_rate = missing / len(frame) if len(frame) else 0.0
        allowed = float(entry.get("max_null_rate", 0.0)) + null_rate_margin
        if not entry.get("nullable", True) and null_rate > 0 or null_rate > allowed + 1e-12:
            anomalies.append(
                _anomaly(
                    "null_rate",
                    name,
                    f"null rate at most {allowed:.4f}",
                    f"{null_rate:.4f} ({missing} rows)",
                    severity,
                )
            )
    anomalies += _range_and_category_anomalies(frame, contract, severity, unseen_category_rate)
    return anomalies


def _meets_for_certain(values: pd.Series, entry: dict) -> bool:
    """Whether every present value is in the entry's range or category set, told from the
    column's extremes or from which of its categories occur (their codes): no check of each
    row. False sends the column to pandera, which finds the rows that fail; so does anything
    this cannot tell. On 10 million rows that meet their contract, this is a fraction of
    pandera's time (benchmarks/ingest_scale.py); tests/components/test_contract.py holds the two
    to the same anomalies."""
    if column_kind(values) != entry["kind"]:
        return False
    try:
        if entry["kind"] == NUMERIC and "min" in entry and "max" in entry:
            low, high = _extremes(values)
            return bool(pd.isna(low) or (entry["min"] <= low and high <= entry["max"]))
        if "categories" in entry and isinstance(values.dtype, pd.CategoricalDtype):
            if not _all_text(values):
                return False  # compared as str(), which pandera's frame below holds
            allowed = set(entry["categories"])
            # Every category allowed, used or not: no row to look at. Else those that occur.
            if set(values.cat.categories) <= allowed:
                return True
            return set(occurring_categories(values)) <= allowed
    except TypeError:  # a bound a person wrote that does not compare with the values
        return False
    return False


def _range_and_category_anomalies(frame, contract, severity, unseen_category_rate) -> list[dict]:
    # Categories are compared as strings, as the model's encoder sees them. Only the columns
    # with a range or a category set are checked, so only those go into the frame that pandera
    # gets (not a copy of the whole table), and text columns are used as they are.
    candidates = [
        (name, frame[name], entry)  # the frame's columns read here, in this thread
        for name, entry in contract["columns"].items()
        if name in frame.columns and ("categories" in entry or "min" in entry)
    ]
    # Each column's extremes or occurring categories on a thread of its own: numpy's reductions
    # run without Python's lock.
    certain = columnwise(lambda candidate: _meets_for_certain(*candidate[1:]), candidates)
    checked = {}
    for (name, values, entry), sure in zip(candidates, certain, strict=True):
        if sure:
            continue
        if entry["kind"] == CATEGORICAL and not _all_text(values):
            values = values.astype(str).where(values.notna())
        checked[name] = values.array  # arrays, not Series: no alignment on a repeated index
    checked = pd.DataFrame(checked, index=frame.index, copy=False)
    try:
        # inplace: the frame is this function's own; pandera need not copy it again.
        _pandera_schema(contract, checked).validate(checked, lazy=True, inplace=True)
        return []
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    anomalies = []
    for (column, check), group in cases.groupby(["column", "check"], sort=True):
        entry = contract["columns"][column]
        values = group["failure_case"].dropna()
        share = len(group) / max(len(frame), 1)
        examples = ", ".join(map(repr, sorted(values.astype(str).unique())[:EXAMPLES]))
        # pandera names a failed check by its call, e.g. "in_range(1997, 2000)".
        if str(check).startswith("in_range"):
            anomalies.append(
                _anomaly(
                    "out_of_range",
                    column,
                    f"values in [{entry['min']}, {entry['max']}]",
                    f"{len(group)} rows outside (for example {examples})",
                    severity,
                )
            )
        elif str(check).startswith("isin") and share > unseen_category_rate:
            anomalies.append(
                _anomaly(
                    "unseen_category",
                    column,
                    f"one of {len(entry['categories'])} known categories"
                    + (
                        f" (unseen in at most {unseen_category_rate:.2%} of rows)"
                        if unseen_category_rate
                        else ""
                    ),
                    f"{len(group)} rows ({share:.2%}) with {examples}",
                    severity,
                )
            )
    return anomalies


def blocking(anomalies: list[dict]) -> list[dict]:
    return [a for a in anomalies if a["severity"] == BLOCK]


def describe(anomaly: dict) -> str:
    """One line: the column, the expectation, what was observed."""
    subject = f"column '{anomaly['column']}'" if anomaly["column"] else "the data"
    return (
        f"{subject}: {anomaly['kind'].replace('_', ' ')}: expected {anomaly['expectation']}, "
        f"observed {anomaly['observed']}"
    )


def anomalies_markdown(anomalies: list[dict], inferred: bool) -> str:
    lines = ["## Data contract\n"]
    if inferred:
        lines.append(
            "No contract was given, so this run inferred one from its data (the `contract` "
            "artifact). Review it, commit it, and name it in the run config (`contract.path`): "
            "later runs are then checked against it.\n"
        )
    if not anomalies:
        lines.append("No anomalies: the data meets the contract.\n")
        return "\n".join(lines) + "\n"
    lines += ["| severity | kind | column | expected | observed |", "|---|---|---|---|---|"]
    for a in sorted(anomalies, key=lambda a: (a["severity"] != BLOCK, a["kind"], str(a["column"]))):
        lines.append(
            f"| {a['severity']} | {a['kind']} | {a['column'] or ''} | {a['expectation']} | "
            f"{a['observed']} |"
        )
    return "\n".join(lines) + "\n\n"
