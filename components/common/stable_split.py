"""The stable train/test split rule, shared by prepare (which splits) and the gate (which must
know which rows a registered model may have trained on).

A row's side depends on the row alone, never on the other rows of the table (TFX's example
splits): its key (the declared key columns, else every column but the target; the group column
for strategy group) is hashed with a key made from the seed, and the row is a test row when the
hash, as a fraction of 2**64, is below test_size. The same row lands on the same side in every
run, however the table grows, shrinks or is reordered; a model's split record
(`split_record`) is enough to tell, later, which rows it may have seen (`trained_on`).

Strategy time is the exception: the newest rows are the test rows, so its record keeps the
cutoff (the newest training time) instead.
"""

import numpy as np
import pandas as pd
from pandas.core.util.hashing import combine_hash_arrays
from pandas.util import hash_array, hash_pandas_object

from components.common.columnwise import columnwise
from components.common.errors import PipelineInputError
from components.common.transformers import parse_dates

RULE = "hash-v1"


def hash_key(seed: int) -> str:
    """The 16 characters pandas' SipHash takes as its key: the seed's 64 bits in hex."""
    return format(seed & 0xFFFF_FFFF_FFFF_FFFF, "016x")


def _normalised(values: pd.Series) -> pd.Series:
    """One representation per kind of value, so that the way a table was read (a lake's
    dictionary columns or a CSV's text, ints or floats, Int64, ns or us datetimes) does not
    change a row's hash."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        # pandas hashes a categorical of text as its values; one of numbers as floats, below.
        if not pd.api.types.is_numeric_dtype(dtype.categories.dtype):
            return values
        values = values.astype(float)
        dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) or dtype == np.float64:
        return values
    if pd.api.types.is_numeric_dtype(dtype):
        return pd.Series(values.to_numpy(dtype=float, na_value=np.nan), copy=False)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return pd.Series(pd.to_datetime(values, utc=True).dt.tz_localize(None).astype("M8[ns]"))
    return values


def _salt(seed: int) -> np.uint64:
    """64 bits from the seed: SipHash (keyed by the seed) of the seed's text."""
    key = hash_key(seed)
    return hash_pandas_object(pd.Series([key]), index=False, hash_key=key).to_numpy()[0]


def row_hashes(frame: pd.DataFrame, columns: list[str], seed: int) -> np.ndarray:
    """Each row's uint64 hash of `columns` (in sorted order of their names), salted by `seed`.

    `hash_pandas_object(normalised columns, index=False, hash_key=hash_key(seed))`, then XORed
    with 64 bits of the seed and mixed again (pandas' `hash_array` of the uint64s): pandas'
    hash_key keys only the hashing of text, so numbers alone would hash the same for every
    seed. Computed a column at a time on every core and combined as pandas combines a
    DataFrame's columns: on 10 million rows of 20 columns, the one call takes several times as
    long (a thread, and a copy of every column into a new frame).
    """
    key = hash_key(seed)

    def column_hash(name: str) -> np.ndarray:
        return hash_pandas_object(_normalised(frame[name]), index=False, hash_key=key).to_numpy()

    names = sorted(columns)
    hashes = columnwise(column_hash, names)
    combined = combine_hash_arrays(iter(hashes), len(hashes))
    return hash_array(combined ^ _salt(seed), hash_key=key)


def hashed_is_test(hashes: np.ndarray, test_size: float) -> np.ndarray:
    """True where a hash, as a fraction of 2**64, is below test_size."""
    return hashes < np.uint64(min(int(test_size * 2.0**64), 2**64 - 1))


def key_columns_of(frame_columns, target: str, key_columns: list[str], group_column: str = ""):
    """The columns a row's side is hashed from: the group column (strategy group), else the
    declared key columns, else every column but the target."""
    if group_column:
        return [group_column]
    if key_columns:
        return list(key_columns)
    return [name for name in frame_columns if name != target]


def times(values: pd.Series, column: str) -> pd.Series:
    """A time column as numbers or UTC timestamps.

    Raises:
        PipelineInputError: a value is neither a number nor a date (one line naming the column).
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    parsed = parse_dates(values.astype(str))
    if parsed.isna().any():
        example = values[parsed.isna().to_numpy()].iloc[0]
        raise PipelineInputError(
            f"split.time_column: column '{column}' holds values that are neither numbers "
            f"nor dates (for example {example!r})"
        )
    return parsed


def _cutoff_value(value):
    """A cutoff as JSON: a number as a number, a time as ISO 8601 text (UTC)."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


def split_record(
    strategy: str,
    seed: int,
    test_size: float,
    key_columns: list[str],
    group_column: str,
    time_column: str,
    train: pd.DataFrame | None = None,
    target: str = "",
) -> dict:
    """How a run split its rows, for the train/test artifacts' metadata and the registry.

    Args:
        strategy, seed, test_size, key_columns, group_column, time_column: the `split:` section.
        train: the training rows, before any are dropped as outliers: strategy time records
            their newest time as `time_cutoff`; the others, the columns the hash read.
        target: the label column (not part of a row's key).

    Returns:
        {strategy, seed, test_size, key_columns, group_column, time_column, time_cutoff,
        hashed_columns, rule}; time_cutoff is None unless strategy is time; hashed_columns
        (sorted) lets the rule be applied again after the table gains a column.
    """
    cutoff, hashed_columns = None, []
    if train is not None and strategy == "time" and len(train):
        cutoff = _cutoff_value(times(train[time_column], time_column).max())
    elif train is not None and strategy != "time":
        hashed_columns = key_columns_of(train.columns, target, key_columns, group_column)
    return {
        "strategy": strategy,
        "seed": int(seed),
        "test_size": float(test_size),
        "key_columns": list(key_columns),
        "group_column": group_column,
        "time_column": time_column,
        "time_cutoff": cutoff,
        "hashed_columns": sorted(hashed_columns),
        "rule": RULE,
    }


def trained_on(frame: pd.DataFrame, record: dict, target: str) -> np.ndarray:
    """True for the rows of `frame` that a model split by `record` may have trained on.

    Conservative: a row the model's rule puts on its training side counts as seen even if it
    arrived after the model was trained (a time split: any row at or before its cutoff).

    Args:
        frame: rows (this run's test rows).
        record: the model's split record (`split_record`).
        target: the label column (never part of a row's key).

    Raises:
        PipelineInputError: the record's rule is unknown, or a column it needs is not in `frame`
            (one line naming it).
    """
    if record.get("rule") != RULE:
        raise PipelineInputError(f"split record: unknown rule {record.get('rule')!r}")
    strategy = record["strategy"]
    if strategy == "time":
        column = record["time_column"]
        if column not in frame.columns:
            raise PipelineInputError(
                f"split record: column '{column}', its time column, is not in the data"
            )
        cutoff = record.get("time_cutoff")
        if cutoff is None:  # no training rows recorded: nothing could have been seen
            return np.zeros(len(frame), dtype=bool)
        values = times(frame[column], column)
        if isinstance(cutoff, str):
            values = pd.to_datetime(values, utc=True)
            cutoff = pd.Timestamp(cutoff)
            cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff
        return (values <= cutoff).fillna(False).to_numpy(dtype=bool)
    columns = record.get("hashed_columns") or key_columns_of(
        frame.columns, target, record.get("key_columns") or [], record.get("group_column", "")
    )
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise PipelineInputError(
            f"split record: column '{missing[0]}', which its rule hashes, is not in the data"
        )
    hashes = row_hashes(frame, columns, int(record["seed"]))
    return ~hashed_is_test(hashes, float(record["test_size"]))
