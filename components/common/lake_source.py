"""A data source as ingest reads it, shared with batch predictions: resolving a URI (a Parquet
lake folder, a Parquet or CSV file; local, file://, s3://, gs://), its files and their
fingerprints, a Parquet dataset over them with Hive partitions, column names, filters, and the
files a watermark leaves to read.

On an object store, the look at the source and the read are retried on transient faults
(components.common.retry): a store that restarts mid-read is read again from the start, and one
that stays away fails with one line after the retries.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from components.common import retry
from components.common.errors import PipelineInputError
from components.common.lake_files import fingerprint, fingerprints, parquet_files

TABULAR_SUFFIXES = (".parquet", ".csv")
# Object stores and local files; anything else (ftp://, http://) is refused before any connection.
SUPPORTED_SCHEMES = ("file", "s3", "gs", "gcs")
REMOTE_SCHEMES = ("s3", "gs", "gcs")


class NothingNew(PipelineInputError):
    """A watermark's read of a lake finds no file new or changed since it."""


@dataclass(frozen=True)
class Source:
    """A resolved data source."""

    uri: str
    fs: fsspec.AbstractFileSystem
    path: str  # in the filesystem's own form (no scheme)
    format: str  # "parquet" or "csv"
    is_lake: bool  # a folder of Parquet files


def _filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    scheme = urlparse(uri).scheme
    if len(scheme) <= 1:  # a bare path (or a Windows drive letter)
        return fsspec.filesystem("file"), str(Path(uri).expanduser().resolve())
    if scheme not in SUPPORTED_SCHEMES:
        raise PipelineInputError(
            f"data source '{uri}': scheme '{scheme}://' is not supported "
            "(use a local path, file://, s3:// or gs://)"
        )
    try:
        # A fresh instance: credentials and endpoint are read from the environment as it is now.
        fs, path = fsspec.core.url_to_fs(uri, skip_instance_cache=True)
    except (ImportError, ValueError) as error:
        raise PipelineInputError(
            f"data source '{uri}': scheme '{scheme}://' is not supported here ({error})"
        ) from None
    return fs, path


def _unreachable(uri: str, error: Exception) -> PipelineInputError:
    return PipelineInputError(
        f"data source '{uri}': cannot reach it ({type(error).__name__}: {error})"
    )


def _is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in REMOTE_SCHEMES


def retried(what: str, uri: str, function, *args, **kwargs):
    """`function(*args, **kwargs)`, retried on transient faults for an object store; the fault
    that outlasts the retries is one line naming the source. Local files are not retried: their
    errors are deterministic (a network mount's timeout is reported at once)."""
    remote = _is_remote(uri)
    try:
        if not remote:
            return function(*args, **kwargs)
        return retry.retry_transient(f"{what} {uri}", function, *args, **kwargs)
    except Exception as error:
        if not retry.is_transient(error):
            raise
        tries = f" after {retry.ATTEMPTS} attempts" if remote else ""
        raise PipelineInputError(
            f"data source '{uri}': cannot reach it{tries} ({retry.one_line(error)})"
        ) from None


def resolve_source(uri: str) -> Source:
    """Check that `uri` names a readable source and say what it is, without reading it.

    Raises:
        PipelineInputError: the scheme is not supported, the location does not exist or cannot
            be reached, or it is neither a Parquet/CSV file nor a folder of Parquet files.
    """
    fs, path = _filesystem(uri)

    def look() -> bool:
        try:
            fs.invalidate_cache()  # a live lake grows; never trust an earlier listing
            if not fs.exists(path):
                raise PipelineInputError(f"data source '{uri}': no such file or folder")
            is_dir = fs.isdir(path)
            if is_dir and not parquet_files(fs, path):
                raise PipelineInputError(f"data source '{uri}': the folder holds no .parquet files")
        except PipelineInputError:
            raise
        except Exception as error:  # each filesystem raises its own errors: one line for any
            if retry.is_transient(error):
                raise  # for _retried to try again
            raise _unreachable(uri, error) from None
        return is_dir

    is_dir = retried("look at", uri, look)
    if is_dir:
        return Source(uri=uri, fs=fs, path=path, format="parquet", is_lake=True)
    suffix = Path(path).suffix.lower()
    if suffix not in TABULAR_SUFFIXES:
        raise PipelineInputError(
            f"data source '{uri}': unsupported file type '{suffix}' (use .parquet or .csv)"
        )
    return Source(uri=uri, fs=fs, path=path, format=suffix.lstrip("."), is_lake=False)


def lake_files(source: Source) -> dict[str, str]:
    """Every Parquet file of the source, relative to it, with its fingerprint."""
    if not source.is_lake:
        info = source.fs.info(source.path)
        return {Path(source.path).name: fingerprint(info)}
    return fingerprints(source.fs, source.path)


def parquet_dataset(
    source: Source, files: list[str] | None = None, dictionary_columns: list[str] | None = None
) -> ds.Dataset:
    # Text columns named here are read as dictionaries (codes and the distinct values), as
    # Parquet stores them: no Python string per row (benchmarks/ingest_scale.py).
    format = ds.ParquetFileFormat(
        read_options=ds.ParquetReadOptions(dictionary_columns=dictionary_columns or [])
    )
    # Hive partitioning turns folders such as year=1997/ back into a column; as a dictionary,
    # one value per folder, not a string per row (text_as_categories makes numbers of numbers).
    partitioning = ds.HivePartitioning.discover(infer_dictionary=True)
    with reading_parquet(source):
        if files is None:
            return ds.dataset(
                source.path, filesystem=source.fs, format=format, partitioning=partitioning
            )
        base = source.path.rstrip("/")
        return ds.dataset(
            [f"{base}/{name}" for name in files],
            filesystem=source.fs,
            format=format,
            partitioning=partitioning,
            partition_base_dir=base,
        )


@contextlib.contextmanager
def reading_parquet(source: Source):
    """Arrow's errors while reading a Parquet source, as one line naming it; a transient fault
    (a lost connection) is raised as it is, for `retried` to try again."""
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
        if retry.is_transient(error):
            raise
        raise PipelineInputError(
            f"data source '{source.uri}': cannot read Parquet: {error}"
        ) from None


def source_columns(source: Source) -> list[str]:
    """The column names of a source, read from its schema or header only."""
    return retried("read the columns of", source.uri, _source_columns, source)


def _source_columns(source: Source) -> list[str]:
    if source.format == "parquet":
        return list(parquet_dataset(source).schema.names)
    try:
        with source.fs.open(source.path, "rb") as handle:
            return list(pd.read_csv(handle, nrows=0, skipinitialspace=True).columns)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise PipelineInputError(f"data source '{source.uri}': cannot read CSV: {error}") from None


def filter_expression(filters: list, uri: str):
    if not filters:
        return None
    try:
        return pq.filters_to_expression([tuple(f) for f in filters])
    except (TypeError, ValueError, pa.ArrowInvalid) as error:
        raise PipelineInputError(
            f"data.filters {filters!r}: expected [column, operator, value] triples ({error})"
        ) from None


def is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def files_since(source: Source, since: dict | None) -> tuple[dict, list[str] | None]:
    """The watermark of a read of `source` now, and the lake's files to read.

    Returns:
        {"source_uri", "files": every Parquet file with its fingerprint}, and the files to read
        (relative to the lake): those new or changed since `since`, or every file listed; None
        for a single file (read whole).

    Raises:
        NothingNew: nothing new since `since`.
    """
    try:
        files = lake_files(source) if source.format == "parquet" else {}
    except Exception as error:
        if retry.is_transient(error):
            raise
        raise _unreachable(source.uri, error) from None
    watermark = {"source_uri": source.uri, "files": files}
    selected = None
    if since and source.format == "parquet":
        seen = since.get("files", {})
        selected = [name for name, mark in files.items() if seen.get(name) != mark]
        if not selected:
            raise NothingNew(
                f"data source '{source.uri}': nothing new since the given watermark "
                f"({len(files)} files, all read before)"
            )
    # A single file that changed is read whole; a lake reads just its new or changed files,
    # or every file listed above: exactly the files the watermark records, even while the
    # lake grows (and the folder is listed once).
    return watermark, ((selected or list(files)) if source.is_lake else None)
