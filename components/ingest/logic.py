"""Ingest: read the configured data source into one table, with its row count and content hash.

A source is a Hive-partitioned Parquet lake (a folder such as year=1997/...), a Parquet file or a
CSV file, on any filesystem fsspec reaches: a local path or file://, s3:// (s3fs; credentials
and endpoint from the environment or the pod's Secret, never from the run config), gs:// (with
gcsfs installed). A lake can be read incrementally: the watermark records every file consumed
(with its size and ETag or modification time), and a later read takes only what is new or changed.

On an object store, the look at the source and the read (listing and Parquet/CSV reading, as one)
are retried on transient faults (components.common.retry): a store that restarts mid-read is read
again from the start, and one that stays away fails with one line after the retries.
"""

import hashlib
import json
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.common.categoricals import COUNT_ROWS, occurring_categories
from components.common.columnwise import columnwise
from components.common.errors import PipelineInputError

# The source's resolution and listing are shared with batch predictions (components/predict).
from components.common.lake_source import (
    Source,
    files_since,
    filter_expression,
    is_text,
    parquet_dataset,
    reading_parquet,
    retried,
)


def read_source(
    source: Source,
    na_values: list[str] | None = None,
    columns: list[str] | None = None,
    filters: list | None = None,
    since: dict | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Read the source into a DataFrame, and say what was read.

    Args:
        source: what `resolve_source` returned.
        na_values: extra strings that mean "missing" in CSV files (for example "?").
        columns: read only these columns (Parquet; pushed down to the scan).
        filters: rows to keep, as [column, operator, value] triples, e.g. [["year", ">=", 2000]]
            (Parquet; partition columns prune whole folders).
        since: a watermark from an earlier read: only files that are new or changed since then
            are read.

    Returns:
        The table, and the watermark of this read: every file of the source with its
        fingerprint (a later read with it as `since` takes only what came after).

    Raises:
        PipelineInputError: the data cannot be read, nothing is left to read, or no rows remain.
    """
    # The listing and the read as one: a retry lists again, so the watermark names exactly
    # the files read.
    return retried("read", source.uri, _read_source, source, na_values, columns, filters, since)


def _read_source(
    source: Source,
    na_values: list[str] | None,
    columns: list[str] | None,
    filters: list | None,
    since: dict | None,
) -> tuple[pd.DataFrame, dict]:
    """`read_source`, once: a transient fault is raised as it is, for `retried`."""
    watermark, files_read = files_since(source, since)
    if source.format == "parquet":
        dataset = parquet_dataset(source, files_read)
        missing = [c for c in (columns or []) if c not in dataset.schema.names]
        if missing:
            raise PipelineInputError(f"data.columns: column '{missing[0]}' is not in the data")
        text = [f.name for f in dataset.schema if is_text(f.type)]
        if text:
            dataset = parquet_dataset(source, files_read, dictionary_columns=text)
        with reading_parquet(source):
            table = dataset.to_table(
                columns=columns or None, filter=filter_expression(filters, source.uri)
            )
            # One block per column (no copy into 2-D blocks: about half the time on 10 million
            # rows, benchmarks/ingest_scale.py), each Arrow column freed once converted.
            frame = table.to_pandas(split_blocks=True, self_destruct=True)
            del table
            # Arrow's allocator keeps the converted columns' memory for its own later use, which
            # never comes: handed back, it is memory for the next steps' numpy arrays. On 10
            # million rows, the benchmark's peak is 1.3 GB lower (benchmarks/ingest_scale.py).
            pa.default_memory_pool().release_unused()
    else:
        try:
            with source.fs.open(source.path, "rb") as handle:
                frame = pd.read_csv(handle, skipinitialspace=True, na_values=na_values or None)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
            raise PipelineInputError(
                f"data source '{source.uri}': cannot read CSV: {error}"
            ) from None
        if columns:
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise PipelineInputError(f"data.columns: column '{missing[0]}' is not in the data")
            frame = frame[columns]
    if frame.empty:
        raise PipelineInputError(f"data source '{source.uri}': it has no rows")
    return text_as_categories(frame), watermark


def text_as_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as pandas categoricals of strings, every other column as plain values.

    Text is what a table holds most copies of: as categoricals, 10 million rows of a column keep
    one string per distinct value and an integer code per row, and counting, comparing, hashing
    and splitting work on the codes. Partition columns arrive as categoricals too; those of
    numbers (year=1997/) become plain numbers. CSV text columns are converted here, so both
    formats reach the later steps alike. Changes `frame` in place and returns it.
    """
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            categories = values.cat.categories
            if categories.dtype != object or pd.api.types.infer_dtype(categories) != "string":
                frame[column] = values.astype(categories.dtype)
        elif values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) == "string":
            frame[column] = values.astype("category")
    return frame


def parquet_schema(path: str) -> dict[str, str]:
    """Each column's Arrow type in a written Parquet file, from its footer; text is "string"
    whether it was written as a dictionary (a categorical) or not."""
    return {
        field.name: str(field.type.value_type if pa.types.is_dictionary(field.type) else field.type)
        for field in pq.read_schema(path)
    }


def content_hash(frame: pd.DataFrame) -> str:
    """A SHA-256 of the table's column names, value types and values, independent of file layout
    and of how text is held.

    Each column is hashed on its own, from its values' bytes, the columns on every core; the
    table's hash is that of the names and types, the row count and every column's hash, in
    order:

    - numbers, booleans and times: the bytes of the array (little-endian);
    - text, and any categorical: the distinct values that occur, sorted, then each row's position
      among them (-1 where missing). Text read as categories, the same text read as strings, and
      categories in another order or with unused ones give one hash;
    - values that cannot be categories (lists): each one's pickle;
    - anything else (pandas' nullable and Arrow-backed types): pandas' row hashes.

    Until this definition, the hash was a SHA-256 of pandas' 64-bit row hashes: a pandas detail,
    and four times slower on 10 million rows (benchmarks/ingest_scale.py).
    """
    dtypes = [
        (str(c), str(t.categories.dtype if isinstance(t, pd.CategoricalDtype) else t))
        for c, t in frame.dtypes.items()
    ]
    digest = hashlib.sha256()
    digest.update(repr(dtypes).encode())
    digest.update(len(frame).to_bytes(8, "little"))
    for column_digest in columnwise(_column_digest, [values for _, values in frame.items()]):
        digest.update(column_digest)
    return "sha256:" + digest.hexdigest()


def _column_digest(values: pd.Series) -> bytes:
    kind = values.dtype
    if isinstance(kind, np.dtype) and kind.kind in "biufmM":
        return _digest(b"array", np.ascontiguousarray(values.to_numpy(), kind.newbyteorder("<")))
    if isinstance(kind, pd.DatetimeTZDtype):  # the instants; the zone is in the type
        return _digest(b"array", np.ascontiguousarray(values.array.asi8, "<i8"))
    if pd.api.types.is_object_dtype(kind):
        try:
            values = values.astype("category")
        except TypeError:  # unhashable values (lists, arrays, from Parquet list columns)
            pickles = (hashlib.sha256(pickle.dumps(value, protocol=5)).digest() for value in values)
            return _digest(b"pickles", np.frombuffer(b"".join(pickles), dtype=np.uint8))
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = values.cat.categories
        occurring = occurring_categories(values)
        used = occurring.tolist()
        try:
            ordered = sorted(used)
        except TypeError:  # values of several types
            ordered = sorted(used, key=lambda value: (type(value).__name__, repr(value)))
        position = {value: index for index, value in enumerate(ordered)}
        # Each code's position among the sorted values that occur; the last entry is for -1.
        # The narrowest integer that holds them, a function of the values: fewer bytes to hash.
        width = next(w for w in ("<i1", "<i2", "<i4", "<i8") if len(used) <= np.iinfo(w).max)
        renumber = np.full(len(categories) + 1, -1, dtype=width)
        renumber[categories.get_indexer(occurring)] = [position[value] for value in used]
        codes = values.cat.codes.to_numpy()
        # Renumbered a slice at a time: the hash reads the same bytes as of the whole column,
        # without a copy of it (and the wide copy of the codes that numpy's take makes).
        slices = range(0, len(codes), COUNT_ROWS)
        return _digest(
            repr(ordered).encode(), *(renumber[codes[s : s + COUNT_ROWS]] for s in slices)
        )
    return _digest(b"rows", pd.util.hash_pandas_object(values, index=False).to_numpy())


def _digest(header: bytes, *arrays: np.ndarray) -> bytes:
    """The SHA-256 of the header's length and bytes, then of the arrays' bytes, in order."""
    digest = hashlib.sha256(len(header).to_bytes(8, "little") + header)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))  # bytes, no copy
    return digest.digest()


def _bytes_of(fingerprint_text: str) -> int:
    """The size a lake fingerprint ("size:stamp") records."""
    size = fingerprint_text.split(":", 1)[0]
    return int(size) if size.isdigit() else 0


def read_planned(
    source: Source,
    plan: dict,
    na_values: list[str] | None,
    columns: list[str] | None,
    filters: list | None,
) -> tuple[pd.DataFrame, dict | None, dict]:
    """Read what the run's plan (components.common.retraining.plan_training) says to read.

    A full run reads the source (all of it, or what its since_watermark leaves); an incremental
    run reads the lake's files new since the champion's watermark (or its window) and adds the
    prediction log's labelled rows, or reads the log alone when the lake has nothing new.

    Returns:
        The table; the watermark to record (the lake's files as listed now, or the champion's
        when the lake was not read); and what was read: files_read, bytes_read (the lake files'
        sizes) and log_rows.

    Raises:
        PipelineInputError: as read_source; or nothing at all to read.
    """
    since_text = plan.get("since_watermark") or ""
    since = json.loads(since_text) if since_text else None
    frames, watermark, files_read, bytes_read = [], plan.get("watermark"), 0, 0
    if plan.get("read_lake", True):
        frame, watermark = read_source(source, na_values, columns, filters, since)
        seen = (since or {}).get("files", {})
        read = [mark for name, mark in watermark.get("files", {}).items() if seen.get(name) != mark]
        files_read, bytes_read = len(read), sum(_bytes_of(mark) for mark in read)
        frames.append(frame)
    log_rows = 0
    if plan.get("log"):
        from components.common.retraining import labelled_log_rows

        logged = labelled_log_rows(plan["log"], plan["log"]["model"], plan["log"]["target"])
        if columns:
            logged = logged[[c for c in logged.columns if c in columns]]
        log_rows = len(logged)
        frames.append(logged)
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        raise PipelineInputError(
            f"data source '{source.uri}': nothing to read for this {plan.get('mode')} run"
        )
    frame = frames[0] if len(frames) == 1 else _combined(frames)
    return (
        frame,
        watermark,
        {"files_read": files_read, "bytes_read": bytes_read, "log_rows": log_rows},
    )


def _combined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The lake's rows and the log's as one table: categoricals as values first (their
    categories differ), then text as categories again, as a read gives it."""
    plain = [
        frame.astype(
            {c: object for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)}
        )
        for frame in frames
    ]
    return text_as_categories(pd.concat(plain, ignore_index=True, sort=False))
