"""Ingest: read the configured data source into one table, with its row count and content hash."""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from components.common.errors import PipelineInputError

SUPPORTED_SCHEMES = ("", "file")
TABULAR_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class Source:
    """A resolved data source: a local Parquet lake (folder), a Parquet file or a CSV file."""

    uri: str
    path: Path
    format: str  # "parquet" or "csv"


def resolve_source(uri: str) -> Source:
    """Check that `uri` names a readable source and say what it is, without reading it.

    Raises:
        PipelineInputError: the scheme is not supported, the path does not exist,
            or it is neither a Parquet/CSV file nor a folder of Parquet files.
    """
    parsed = urlparse(uri)
    # A bare path such as /data/x or ./data/x parses with an empty scheme; so does a Windows drive.
    scheme = parsed.scheme if len(parsed.scheme) > 1 else ""
    if scheme not in SUPPORTED_SCHEMES:
        raise PipelineInputError(
            f"data source '{uri}': scheme '{scheme}://' is not supported "
            "(use a local path or file://)"
        )
    path = Path(parsed.path if scheme == "file" else uri).expanduser()
    if not path.exists():
        raise PipelineInputError(f"data source '{uri}': no such file or folder")
    if path.is_dir():
        if not any(path.rglob("*.parquet")):
            raise PipelineInputError(f"data source '{uri}': the folder holds no .parquet files")
        return Source(uri=uri, path=path.resolve(), format="parquet")
    suffix = path.suffix.lower()
    if suffix not in TABULAR_SUFFIXES:
        raise PipelineInputError(
            f"data source '{uri}': unsupported file type '{suffix}' (use .parquet or .csv)"
        )
    return Source(uri=uri, path=path.resolve(), format=suffix.lstrip("."))


def _parquet_dataset(source: Source) -> ds.Dataset:
    try:
        # Hive partitioning turns folders such as year=1997/ back into a column.
        return ds.dataset(source.path, format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, OSError) as error:
        raise PipelineInputError(
            f"data source '{source.uri}': cannot read Parquet: {error}"
        ) from None


def source_columns(source: Source) -> list[str]:
    """The column names of a source, read from its schema or header only."""
    if source.format == "parquet":
        return list(_parquet_dataset(source).schema.names)
    try:
        return list(pd.read_csv(source.path, nrows=0, skipinitialspace=True).columns)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise PipelineInputError(f"data source '{source.uri}': cannot read CSV: {error}") from None


def read_source(source: Source, na_values: list[str] | None = None) -> pd.DataFrame:
    """Read the whole source into a DataFrame.

    Args:
        source: what `resolve_source` returned.
        na_values: extra strings that mean "missing" in CSV files (for example "?").
    """
    if source.format == "parquet":
        try:
            frame = _parquet_dataset(source).to_table().to_pandas()
        except (pa.ArrowInvalid, OSError) as error:
            raise PipelineInputError(
                f"data source '{source.uri}': cannot read Parquet: {error}"
            ) from None
    else:
        try:
            frame = pd.read_csv(source.path, skipinitialspace=True, na_values=na_values or None)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
            raise PipelineInputError(
                f"data source '{source.uri}': cannot read CSV: {error}"
            ) from None
    if frame.empty:
        raise PipelineInputError(f"data source '{source.uri}': it has no rows")
    # Partition columns come back as pandas categoricals; downstream steps want plain values.
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(frame[column].cat.categories.dtype)
    return frame


def content_hash(frame: pd.DataFrame) -> str:
    """A SHA-256 of the table's columns, dtypes and values, independent of file layout."""
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return "sha256:" + digest.hexdigest()
