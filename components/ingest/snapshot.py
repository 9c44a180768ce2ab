"""ETL snapshots: extract a source, apply declared transforms, load an immutable Parquet snapshot.

A snapshot is a folder `<snapshot_root>/<snapshot_id>/` holding `data.parquet` and
`manifest.json` (id, source, spec, rows, schema, creation time, each file's SHA-256). It is never
changed once written: a run that yields the same snapshot reuses the folder.

The content address. `snapshot_id` is the first 16 hex digits of a SHA-256 over the canonical JSON
of {format version, the spec (with the source made absolute and any database password removed),
the content hash of the resulting table (column names, dtypes and every value; see
`components.ingest.logic.content_hash`)}. So the same input with the same spec gives the same id on
any machine and run; a change to the spec or to any value, column or type of the result gives a new
id. A change to the input that the transforms remove (a row a filter drops, a column dropped)
leaves the result, and so the id, unchanged: the snapshot is the same data. The table is hashed
rather than the source's bytes because a SQL query has no bytes to hash and a CSV re-saved with
other quoting holds the same data; the manifest still records the source's files with their
fingerprints for lineage.

Errors a user can cause raise PipelineInputError in one line that names the file, the column, the
transform (by its index in `transforms`) or the database URL (without its password). Nothing is
written until the table is complete; the files are written into a temporary folder under
`snapshot_root` and renamed into place, and the temporary folder is removed on any error.
"""

import codecs
import hashlib
import json
import operator
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from components.common.binning import bin_values
from components.common.errors import PipelineInputError
from components.common.io import write_json
from components.common.lake_files import parquet_files
from components.common.lake_source import Source, lake_files, resolve_source
from components.common.secrets import redact_url
from components.common.settings.etl import (
    CsvOptions,
    Derivation,
    EtlSpec,
    SqlSource,
    load_spec,
    step_kind,
)
from components.ingest.logic import content_hash, read_source

# Part of the content address: bump it when the canonical form or the transforms' meaning changes.
SNAPSHOT_FORMAT = 2  # 2: the table hash of columns' bytes (content_hash), not of pandas' row hashes
DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"
TEMP_PREFIX = ".tmp-"
# Delimiters worth suggesting when a CSV file reads as one column.
LIKELY_DELIMITERS = (",", ";", "\t", "|")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_COMPARE = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class SnapshotResult:
    """A snapshot on disk: `created` is False when an identical one was already there."""

    snapshot_id: str
    uri: str  # file:// URI of the snapshot folder
    path: Path  # the snapshot folder
    rows: int
    bytes: int  # size of the data file
    schema: list[dict] = field(default_factory=list)  # [{"name": ..., "type": ...}] (Arrow types)
    content_hash: str = ""  # of the table, as ingest computes it
    created: bool = True

    @property
    def data_path(self) -> Path:
        return self.path / DATA_FILE

    @property
    def columns(self) -> list[str]:
        return [column["name"] for column in self.schema]


# --- extract -------------------------------------------------------------------------------------


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _first_undecodable(source: Source, encoding: str) -> tuple[int, int, bytes]:
    """Byte offset, line number and byte of the first byte that `encoding` cannot decode.

    pandas reports the position inside its read buffer, not the file, so the file is scanned
    again in chunks with an incremental decoder.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    fed = lines = 0
    with source.fs.open(source.path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                data = pending + chunk
                offset = fed - len(pending) + error.start
                line = lines + data[: error.start].count(b"\n") + 1
                return offset, line, data[error.start : error.start + 1]
            fed += len(chunk)
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:  # the file ends inside a multi-byte character
            return fed - len(pending), lines + 1, pending[:1]
    return -1, -1, b""


def _read_csv(source: Source, options: CsvOptions) -> pd.DataFrame:
    where = f"file '{source.uri}'"
    try:
        with source.fs.open(source.path, "rb") as handle:
            frame = pd.read_csv(
                handle,
                sep=options.delimiter,
                quotechar=options.quotechar,
                encoding=options.encoding,
                na_values=options.na_values or None,
                skipinitialspace=True,
            )
    except UnicodeDecodeError:
        offset, line, byte = _first_undecodable(source, options.encoding)
        raise PipelineInputError(
            f"{where}: not valid {options.encoding} at byte {offset} (line {line}, byte "
            f"0x{byte.hex()}); set csv.encoding to the file's encoding (e.g. latin-1)"
        ) from None
    except pd.errors.EmptyDataError:
        raise PipelineInputError(f"{where}: the file is empty (not even a header)") from None
    except pd.errors.ParserError as error:
        detail = _one_line(error).removeprefix("Error tokenizing data. C error: ")
        raise PipelineInputError(
            f"{where}: cannot parse CSV: {detail} (check quoting and csv.delimiter "
            f"{options.delimiter!r})"
        ) from None
    except OSError as error:
        raise PipelineInputError(f"{where}: cannot read it ({_one_line(error)})") from None
    if frame.shape[1] == 1:
        header = str(frame.columns[0])
        others = [d for d in LIKELY_DELIMITERS if d != options.delimiter and d in header]
        if others:
            raise PipelineInputError(
                f"{where}: one column found, named {header!r}: wrong csv.delimiter? the spec "
                f"says {options.delimiter!r} but the header holds {others[0]!r}"
            )
    return frame


def _check_lake_schemas(source: Source) -> None:
    """Every file of a lake must have the first file's columns and types (a partition written
    with another schema would otherwise be cast, or filled with nulls, without a word)."""
    files = sorted(parquet_files(source.fs, source.path))
    base = source.path.rstrip("/") + "/"
    reference, reference_name = None, ""
    for name in files:
        shown = name.removeprefix(base)
        try:
            with source.fs.open(name, "rb") as handle:
                schema = pq.read_schema(handle)
        except (pa.ArrowInvalid, OSError) as error:
            raise PipelineInputError(
                f"data source '{source.uri}': file '{shown}' is not readable Parquet "
                f"({_one_line(error)})"
            ) from None
        fields = {f.name: f.type for f in schema}
        if reference is None:
            reference, reference_name = fields, shown
            continue
        for column in sorted(set(reference) | set(fields)):
            theirs, ours = reference.get(column), fields.get(column)
            if theirs != ours:
                raise PipelineInputError(
                    f"data source '{source.uri}': file '{shown}' has a different schema from "
                    f"'{reference_name}': column '{column}' is {ours or 'missing'} there, "
                    f"{theirs or 'missing'} in '{reference_name}'"
                )


# The drivers installed with the project: a URL without a driver (postgresql://, mysql://) gets
# these, not SQLAlchemy's defaults (psycopg2, mysqlclient), which need C libraries to build.
SQL_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
SHIPPED_DRIVERS = "sqlite, postgresql+psycopg, mysql+pymysql, mariadb+pymysql"


def _with_shipped_driver(url):
    """`url` (a SQLAlchemy URL) with the installed driver when it names none."""
    driver = SQL_DRIVERS.get(url.drivername)
    return url.set(drivername=f"{url.drivername}+{driver}") if driver else url


def _read_sql(sql: SqlSource) -> tuple[pd.DataFrame, str]:
    """Run the query (or read the table); return the rows and the URL without its password."""
    from sqlalchemy import MetaData, Table, create_engine, select, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError

    try:
        url = make_url(sql.url)
    except ArgumentError:
        raise PipelineInputError(
            f"source.sql.url {redact_url(sql.url) if '://' in sql.url else '(not a URL)'!r}: "
            "not a database URL "
            "(e.g. sqlite:///path/to.db or postgresql://user@host/db)"
        ) from None
    shown = url.render_as_string(hide_password=True)
    if sql.password_env:
        # The password joins the URL here, in memory, for the driver only.
        password = os.environ.get(sql.password_env)
        if password is None:
            raise PipelineInputError(
                f"source.sql.password_env: the environment variable '{sql.password_env}' is "
                f"not set (database '{shown}'; set it, e.g. from a Kubernetes Secret)"
            )
        if url.get_backend_name() != "sqlite":  # SQLite has no passwords, and refuses one
            url = url.set(password=password)

    def clean(error: Exception) -> str:
        message = _one_line(getattr(error, "orig", None) or error)
        # Drivers may echo the connection string; never let the password out.
        return message.replace(url.password, "***") if url.password else message

    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        # SQLite creates a missing file on connect: check first, so nothing is written.
        if database not in ("", ":memory:") and not database.startswith("file:"):
            if not Path(database).is_file():
                raise PipelineInputError(
                    f"database '{shown}' cannot be reached: no such file '{database}'"
                )
    try:
        engine = create_engine(_with_shipped_driver(url))
    except (NoSuchModuleError, ImportError) as error:
        raise PipelineInputError(
            f"source.sql.url {shown!r}: no driver for '{url.drivername}' is installed "
            f"({clean(error)}); installed: {SHIPPED_DRIVERS}"
        ) from None
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as error:
            raise PipelineInputError(
                f"database '{shown}' cannot be reached ({clean(error)})"
            ) from None
        with connection:
            try:
                if sql.table:
                    table = Table(sql.table, MetaData(), autoload_with=connection)
                    statement = select(table)
                else:
                    statement = text(sql.query)
                frame = pd.read_sql(statement, connection)
            except NoSuchTableError:
                raise PipelineInputError(
                    f"database '{shown}': table '{sql.table}' does not exist"
                ) from None
            except SQLAlchemyError as error:
                what = f"table '{sql.table}'" if sql.table else "source.sql.query"
                raise PipelineInputError(
                    f"database '{shown}': {what} failed ({clean(error)})"
                ) from None
    finally:
        engine.dispose()
    return frame, shown


def extract(spec: EtlSpec) -> tuple[pd.DataFrame, dict]:
    """Read the source into a DataFrame, and describe what was read (for the manifest).

    Returns:
        The table, and the source's description: its URI (absolute) or redacted database URL
        with the table or query, and for files each file with its fingerprint.

    Raises:
        PipelineInputError: naming the file, the database or the column.
    """
    if spec.source.sql is not None:
        frame, shown = _read_sql(spec.source.sql)
        sql = spec.source.sql
        described = {
            "sql": {"url": shown, "table" if sql.table else "query": sql.table or sql.query}
        }
        where = f"database '{shown}'"
    else:
        source = resolve_source(spec.source.uri)
        if source.format == "csv":
            frame = _read_csv(source, spec.csv)
            files = lake_files(source)
        else:
            if source.is_lake:
                _check_lake_schemas(source)
            frame, read = read_source(source)
            files = read["files"]
            # The declared transforms work on text as strings, as a CSV source gives it.
            frame = frame.astype(
                {c: object for c, t in frame.dtypes.items() if isinstance(t, pd.CategoricalDtype)}
            )
        uri = spec.source.uri
        if isinstance(source.fs, LocalFileSystem):
            uri = "file://" + source.path  # one spelling per file, whatever the working folder
        described = {"uri": uri, "format": source.format, "files": files}
        where = f"data source '{spec.source.uri}'"
    missing = [c for c in spec.source.columns if c not in frame.columns]
    if missing:
        raise PipelineInputError(
            f"{where}: column '{missing[0]}' (source.columns) is not in the data "
            f"(it has {_listing(frame.columns)})"
        )
    if spec.source.columns:
        frame = frame[spec.source.columns]
    if frame.empty:
        raise PipelineInputError(f"{where}: it has no rows")
    return frame, described


# --- transform -----------------------------------------------------------------------------------


def _listing(columns, limit: int = 8) -> str:
    names = [repr(str(c)) for c in columns]
    more = f", … ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _integers(values: pd.Series) -> pd.Series:
    """Plain int64 when nothing is missing, else pandas' nullable Int64."""
    return values.astype("int64" if not values.isna().any() else "Int64")


def _is_number(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _strings(values: pd.Series) -> pd.Series:
    return values.astype(str).where(values.notna(), None).astype(object)


class _Step:
    """One transform at its index, and the errors that name it."""

    def __init__(self, index: int, kind: str, frame: pd.DataFrame):
        self.index, self.kind, self.frame = index, kind, frame

    def error(self, message: str) -> PipelineInputError:
        return PipelineInputError(f"transforms[{self.index}] ({self.kind}): {message}")

    def column(self, name: str) -> pd.Series:
        if name not in self.frame.columns:
            raise self.error(
                f"column '{name}' is not in the data (it has {_listing(self.frame.columns)})"
            )
        return self.frame[name]

    def bad_value(self, name: str, values: pd.Series, bad: pd.Series, target: str):
        first = bad.idxmax()  # the frame's index is the source's row number (1-based)
        value = values[first]
        value = value.item() if isinstance(value, np.generic) else value  # 1.5, not np.float64
        return self.error(
            f"column '{name}': cannot cast to {target}: row {first} holds {value!r} "
            f"({int(bad.sum())} bad values in all)"
        )


def _cast(step: _Step, name: str, target: str) -> pd.Series:
    values = step.column(name)
    present = values.notna()
    if target == "string":
        return _strings(values)
    if target in ("int64", "float64"):
        if pd.api.types.is_bool_dtype(values):
            numbers = values.astype("float64")
        else:
            numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        bad = present & numbers.isna()
        if target == "int64":
            bad |= numbers.notna() & (np.isinf(numbers) | (numbers != np.floor(numbers)))
        if bad.any():
            raise step.bad_value(name, values, bad, target)
        return _integers(numbers) if target == "int64" else numbers
    if target == "bool":
        if pd.api.types.is_bool_dtype(values):
            return values
        words = values.astype(str).str.strip().str.lower()
        # Numbers such as 1.0 read from CSV come through as "1.0".
        words = words.where(~words.isin(["1.0", "0.0"]), words.str[0])
        flags = words.map(lambda w: True if w in _TRUE else False if w in _FALSE else None)
        bad = present & flags.isna()
        if bad.any():
            raise step.bad_value(name, values, bad, target)
        flags = flags.where(present, None)
        return flags.astype("bool" if present.all() else "boolean")
    # datetime
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    if _is_number(values):
        raise step.error(
            f"column '{name}': cannot cast {values.dtype} numbers to datetime (only text dates)"
        )
    text = values.where(present, None).astype(object)
    try:
        # ISO 8601 first (fast); what it cannot read is tried as any format dateutil knows.
        parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
        retry = present & parsed.isna()
        if retry.any():
            parsed[retry] = pd.to_datetime(text[retry], errors="coerce", format="mixed")
    except (ValueError, TypeError) as error:  # e.g. mixed time zones
        raise step.error(f"column '{name}': cannot cast to datetime ({_one_line(error)})") from None
    bad = present & parsed.isna()
    if bad.any():
        raise step.bad_value(name, values, bad, target)
    return parsed


def _filter(step: _Step, column: str, op: str, value) -> pd.DataFrame:
    values = step.column(column)
    candidates = value if isinstance(value, list) else [value]
    if _is_number(values) and any(isinstance(v, str) for v in candidates):
        raise step.error(f"column '{column}' holds {values.dtype} numbers; {value!r} is text")
    if pd.api.types.is_datetime64_any_dtype(values) and op not in ("in", "not in"):
        value = pd.Timestamp(value)
    try:
        if op in ("in", "not in"):
            keep = values.isin(value)
            keep = ~keep if op == "not in" else keep
        else:
            keep = _COMPARE[op](values, value)
    except (TypeError, ValueError) as error:
        raise step.error(
            f"cannot compare column '{column}' ({values.dtype}) with {value!r} ({_one_line(error)})"
        ) from None
    # Missing values match no condition (as in a Parquet or SQL filter), not even '!='.
    keep = keep.fillna(False).astype(bool) & values.notna()
    return step.frame[keep]


def _derive(step: _Step, rule: Derivation) -> pd.Series:
    if rule.ratio:
        numerator, denominator = (step.column(c) for c in rule.ratio)
        for name, values in zip(rule.ratio, (numerator, denominator), strict=True):
            if not _is_number(values):
                raise step.error(f"ratio: column '{name}' holds {values.dtype} values, not numbers")
        result = numerator.astype("float64") / denominator.astype("float64")
        return result.replace([np.inf, -np.inf], np.nan)  # x / 0 is missing, not infinite
    if rule.date_part:
        name, part = rule.date_part
        values = step.column(name)
        if not pd.api.types.is_datetime64_any_dtype(values):
            raise step.error(
                f"date_part: column '{name}' holds {values.dtype} values; cast it to datetime first"
            )
        return _integers(getattr(values.dt, part).astype("float64"))
    if rule.bins:
        values = step.column(rule.bins.column)
        if not _is_number(values):
            raise step.error(
                f"bins: column '{rule.bins.column}' holds {values.dtype} values, not numbers"
            )
        # components.common.binning's rule, as prepare's derived bins and bias bands: [18, 25)
        # holds 18 but not 25; below and above the edges are the open bins "< 0" and ">= 120".
        banded = bin_values(values, rule.bins.edges, rule.bins.labels, missing=None)
        return pd.Series(banded, index=values.index, dtype=object)
    parts = [step.column(c) for c in rule.concat]
    joined = _strings(parts[0]).astype(object)
    missing = parts[0].isna()
    for values in parts[1:]:
        joined = joined.where(missing, joined + rule.separator + values.astype(str))
        missing |= values.isna()
    return joined.where(~missing, None)


def apply_transforms(frame: pd.DataFrame, transforms: list) -> pd.DataFrame:
    """Apply the declared transforms in order.

    The frame's index is taken as the source's row numbers (1-based) in errors.

    Raises:
        PipelineInputError: naming the transform's index and the column.
    """
    for index, transform in enumerate(transforms):
        kind = step_kind(transform)
        step = _Step(index, kind, frame)
        if kind == "rename":
            for old, new in transform.rename.items():
                step.column(old)
                if new in frame.columns and new not in transform.rename:
                    raise step.error(f"'{old}' -> '{new}': column '{new}' already exists")
            frame = frame.rename(columns=transform.rename)
        elif kind == "cast":
            frame = frame.copy()
            for name, target in transform.cast.items():
                frame[name] = _cast(step, name, target)
        elif kind == "filter":
            column, op, value = transform.filter
            frame = _filter(step, column, op, value)
            if frame.empty:
                raise step.error(f"{[column, op, value]!r} left no rows")
        elif kind == "derive":
            rule = transform.derive
            if rule.name in frame.columns:
                raise step.error(f"column '{rule.name}' already exists")
            frame = frame.copy()
            frame[rule.name] = _derive(step, rule)
        else:  # drop
            for name in transform.drop:
                step.column(name)
            frame = frame.drop(columns=transform.drop)
            if frame.shape[1] == 0:
                raise step.error("no columns are left")
    return frame


# --- load ----------------------------------------------------------------------------------------


def _canonical_spec(spec: EtlSpec, described: dict) -> dict:
    canonical = spec.model_dump(mode="json")
    if spec.source.sql is not None:
        canonical["source"]["sql"]["url"] = described["sql"]["url"]  # no password
        # Where the password comes from is not what the data is: the same id either way.
        canonical["source"]["sql"].pop("password_env", None)
    else:
        canonical["source"]["uri"] = described["uri"]
    return canonical


def snapshot_id_for(canonical_spec: dict, table_hash: str) -> str:
    """The content address: see the module's docstring."""
    payload = json.dumps(
        {"format": SNAPSHOT_FORMAT, "spec": canonical_spec, "table": table_hash},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _snapshot_root(snapshot_root: str | os.PathLike) -> Path:
    text = str(snapshot_root)
    scheme = urlparse(text).scheme
    if len(scheme) > 1 and scheme != "file":
        raise PipelineInputError(
            f"snapshot_root '{text}': must be a local folder (a path or file://), "
            "where a rename is atomic"
        )
    root = Path(text.removeprefix("file://")).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise PipelineInputError(f"snapshot_root '{text}': exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _from_manifest(folder: Path, created: bool) -> SnapshotResult:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PipelineInputError(
            f"snapshot '{folder}': its {MANIFEST_FILE} is missing or unreadable "
            f"({_one_line(error)}); remove the folder and run the ETL again"
        ) from None
    return SnapshotResult(
        snapshot_id=manifest["id"],
        uri=folder.as_uri(),
        path=folder,
        rows=manifest["rows"],
        bytes=manifest["files"][DATA_FILE]["bytes"],
        schema=manifest["schema"],
        content_hash=manifest["content_hash"],
        created=created,
    )


def run_etl(spec: dict | EtlSpec, snapshot_root: str | os.PathLike) -> SnapshotResult:
    """Extract, transform and load one snapshot, or reuse the identical one already there.

    Args:
        spec: an `EtlSpec` or the mapping it is read from.
        snapshot_root: a local folder; the snapshot goes to `<snapshot_root>/<snapshot_id>/`.

    Returns:
        Where the snapshot is and what it holds; `created` is False when it was reused.

    Raises:
        PipelineInputError: bad spec, source, data or transform, in one line. Nothing is left
            under `snapshot_root` by a failed run.
    """
    spec = load_spec(spec)
    root = _snapshot_root(snapshot_root)
    frame, described = extract(spec)
    frame.index = pd.RangeIndex(1, len(frame) + 1)  # row numbers for errors
    frame = apply_transforms(frame, spec.transforms).reset_index(drop=True)
    table_hash = content_hash(frame)
    canonical = _canonical_spec(spec, described)
    snapshot_id = snapshot_id_for(canonical, table_hash)
    final = root / snapshot_id
    if final.exists():
        return _from_manifest(final, created=False)

    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{snapshot_id}-", dir=root))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a snapshot is for others to read
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, staging / DATA_FILE)
        data_bytes = (staging / DATA_FILE).stat().st_size
        schema = [{"name": f.name, "type": str(f.type)} for f in table.schema]
        write_json(
            staging / MANIFEST_FILE,
            {
                "id": snapshot_id,
                "format": SNAPSHOT_FORMAT,
                "source": described,
                "spec": canonical,
                "rows": len(frame),
                "schema": schema,
                "content_hash": table_hash,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": {
                    DATA_FILE: {"sha256": _file_sha256(staging / DATA_FILE), "bytes": data_bytes}
                },
            },
        )
        try:
            os.rename(staging, final)
        except OSError:
            if not final.exists():
                raise
            # Another run wrote the same snapshot meanwhile: it is identical, keep that one.
            shutil.rmtree(staging, ignore_errors=True)
            return _from_manifest(final, created=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SnapshotResult(
        snapshot_id=snapshot_id,
        uri=final.as_uri(),
        path=final,
        rows=len(frame),
        bytes=data_bytes,
        schema=schema,
        content_hash=table_hash,
        created=True,
    )


def export_snapshot(result: SnapshotResult, path: str | os.PathLike) -> None:
    """Copy the snapshot's data file to `path` (an artifact's path), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        shutil.copyfile(result.data_path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def snapshot_metadata(result: SnapshotResult, spec: dict) -> dict:
    """The Dataset artifact's metadata for a snapshot, so lineage and caching work in Kubeflow."""
    source = spec.get("source", {})
    origin = redact_url(source.get("uri") or source.get("sql", {}).get("url", ""))
    return {
        "snapshot_id": result.snapshot_id,
        "source_uri": result.uri,
        "origin": origin,
        "rows": result.rows,
        "columns": result.columns,
        "schema": {column["name"]: column["type"] for column in result.schema},
        "bytes": result.bytes,
        "content_hash": result.content_hash,
        "created": result.created,
        "incremental": False,
    }
