"""The prediction log: every answered prediction, written off the request path to a Parquet lake.

A `PredictionLog` takes records on the request path (`record`, which never blocks and never
raises) into a bounded queue; one background thread writes them in batches to a Hive-partitioned
lake that the ingest step reads like any other:

    <uri>/model=<name>/date=<YYYY-MM-DD>/part-<time>-<uuid>.parquet

`uri` is a local folder, file://, s3:// or gs:// (fsspec; credentials from the environment).
A batch is written when `batch_rows` rows wait or `flush_seconds` passed since the oldest of them,
and on `flush()` and `close()`; a file holds at most `max_file_rows` rows. Each file is written
under a temporary name (`.part-....tmp`, which readers skip) and renamed into place, or, on an
object store, uploaded whole with one PUT: a file is never seen half-written by its final name.

Columns: request_id, row (the row's place in its request, from 0: a label names a request's
row by both), time (UTC), model_version, one per feature as received, prediction, and
probability_<class> per class when there are probabilities. The model's name is the `model=`
partition, not a column in the file: a file column with a partition's name makes pyarrow refuse
the whole lake (ingest reads partitions as dictionaries, the column is text). A feature whose
name is one of those columns (or `model`, `date`, `label`, `probability_...`) is written as
`feature_<name>`.

Value types. Each feature column takes one Arrow type per file, from its values in that batch:
numbers are float64 (JSON has one number type, and a feature sent as 3 and then as 3.5 must not
give an int64 file and a float64 file, which pyarrow cannot read as one lake), booleans are
bool, text is string, and a column with any other mix (text and numbers, booleans and numbers,
lists) is written as text, each value's str(). Once a writer has written a feature as text it
keeps writing it as text. The prediction keeps its own type (int64, float64, bool or string; a
mix is text). Missing values (None) are nulls; NaN stays NaN in a float column.

What is lost, and counted (`stats()`): records that find the queue full, records after
`close()`, and malformed records are `dropped`, never blocking or failing the request. A write
that fails (a full disk, a store that is down) is logged as one line and counted in
`write_errors`; its rows are not retried (a retry buffer would grow without bound while the
store is down) and are counted in `dropped`. A crash loses what was queued and not yet written:
at most `flush_seconds` of records (or `batch_rows` rows), plus whatever waited behind a write
in progress.
"""

import functools
import io
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import chain, repeat
from pathlib import Path
from urllib.parse import urlparse

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.common.retry import one_line
from components.common.secrets import redact_url

logger = logging.getLogger(__name__)

# Request ids longer than this, or with control characters, are replaced: they go into every
# log line and file of the request, and a caller must not be able to fill them with junk.
MAX_REQUEST_ID_CHARS = 128
FIXED_COLUMNS = ("request_id", "row", "time", "model_version")
PREDICTION = "prediction"
PROBABILITY_PREFIX = "probability_"
# Names a feature cannot keep: the fixed columns, the partitions (see the module docstring) and
# `label`, the column that monitoring joins from the labels lake.
RESERVED = frozenset({*FIXED_COLUMNS, PREDICTION, "model", "date", "label"})
TEMPORARY_SUFFIX = ".tmp"
LOCAL_SCHEMES = ("", "file")

_BOOL, _NUMBER, _INT, _FLOAT, _TEXT = "bool", "number", "int", "float", "text"
_ARROW_TYPES = {
    _BOOL: pa.bool_(),
    _NUMBER: pa.float64(),
    _INT: pa.int64(),
    _FLOAT: pa.float64(),
    _TEXT: pa.string(),
}


def request_id(headers: Mapping[str, str]) -> str:
    """The request's id: its `ce-id` header (CloudEvents, KServe's payload logger), else its
    `X-Request-Id`, else a new random id (`new_request_id`). Header names are matched
    case-insensitively; an id that is empty, longer than 128 characters or holds a control
    character is replaced by a new one."""
    found = {str(key).lower(): value for key, value in headers.items()}
    for name in ("ce-id", "x-request-id"):
        value = found.get(name)
        if value is None:
            continue
        value = str(value).strip()
        if value and len(value) <= MAX_REQUEST_ID_CHARS and value.isprintable():
            return value
        return new_request_id()  # a header that was sent but absurd: not the next header's id
    return new_request_id()


def new_request_id() -> str:
    """A new request id: 128 random bits as 32 hex digits, the length of a UUID's hex.

    From Python's `random`, not `uuid.uuid4()`: an id names a request, it guards nothing, and
    uuid4's read of the OS's random source (a system call) was about 3 % of the server's time
    per single-row request, measured with py-spy under load. The generator is seeded from the
    OS at start and again in a forked child (the random module does that itself), so two
    workers do not repeat each other's ids.
    """
    return f"{random.getrandbits(128):032x}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def lake_filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str, bool]:
    """(filesystem, path in its own form, whether it is local) for a folder or fsspec URI."""
    scheme = urlparse(uri).scheme
    if len(scheme) <= 1:  # a bare path (or a Windows drive letter)
        return fsspec.filesystem("file"), str(Path(uri).expanduser().resolve()), True
    # A fresh instance: credentials and endpoint are read from the environment as it is now.
    fs, path = fsspec.core.url_to_fs(uri, skip_instance_cache=True)
    return fs, path.rstrip("/"), scheme in LOCAL_SCHEMES


@functools.lru_cache(maxsize=4096)
def _column_name(feature: str) -> str:
    feature = str(feature)
    if feature in RESERVED or feature.startswith(PROBABILITY_PREFIX):
        return f"feature_{feature}"
    return feature


@dataclass(frozen=True)
class _Record:
    """One `record` call: `rows` predictions of one request, as handed over (not copied)."""

    request_id: str
    time: datetime
    model_version: str | None
    features: dict | list
    predictions: list
    probabilities: object
    classes: object
    rows: int


def _row_count(features, predictions) -> int:
    """The number of rows of a record, or ValueError saying why it is malformed."""
    rows = len(predictions)
    if isinstance(features, Mapping):
        columns = features.values()
        if set(map(type, columns)) == {list}:  # the server's columns, checked at C speed
            lengths = set(map(len, columns))
        else:
            lengths = {len(v) if _is_sequence(v) else None for v in columns}
        if lengths == {None} and rows == 1:
            return rows  # one row as {feature: value}
        if lengths - {rows}:
            raise ValueError(f"features: columns of {sorted(map(str, lengths))} rows, not {rows}")
    elif isinstance(features, list | tuple):
        if len(features) != rows:
            raise ValueError(f"features: {len(features)} rows for {rows} predictions")
    else:
        raise ValueError(f"features: a dict or a list of rows, not {type(features).__name__}")
    return rows


def _is_sequence(values) -> bool:
    """A column of values (a list, tuple or array), not one value (numpy scalars included)."""
    return isinstance(values, list | tuple) or getattr(values, "ndim", 0) >= 1


def _as_list(values) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _record_columns(record: _Record) -> dict[str, list]:
    """A record's features, prediction and probabilities as columns of `record.rows` values."""
    rows = record.rows
    columns: dict[str, list] = {}
    features = record.features
    if isinstance(features, Mapping):
        for name, values in features.items():
            if type(values) is list:  # the server's columns: taken as they are (not changed)
                columns[_column_name(name)] = values
                continue
            sequence = _is_sequence(values)
            columns[_column_name(name)] = _as_list(values) if sequence else [values]
    else:
        for index, row in enumerate(features):
            for name, value in row.items():
                columns.setdefault(_column_name(name), [None] * rows)[index] = value
    columns[PREDICTION] = _as_list(record.predictions)
    if record.probabilities is not None:
        classes = _as_list(record.classes)
        matrix = record.probabilities
        if getattr(matrix, "ndim", None) == 2 and matrix.shape == (rows, len(classes)):
            # A numpy matrix (the server's): a column at a time.
            for position, label in enumerate(classes):
                columns[f"{PROBABILITY_PREFIX}{label}"] = matrix[:, position].tolist()
            return columns
        probabilities = _as_list(matrix)
        if len(probabilities) != rows or any(len(p) != len(classes) for p in probabilities):
            raise ValueError(f"probabilities: expected {rows} rows of {len(classes)} classes")
        for position, label in enumerate(classes):
            columns[f"{PROBABILITY_PREFIX}{label}"] = [p[position] for p in probabilities]
    return columns


@functools.cache
def _kind_of_type(kind: type) -> str | None:
    """The kind of every value of a type (numpy's scalars by their names)."""
    if kind is type(None):
        return None
    if issubclass(kind, bool) or kind.__name__ == "bool_":
        return _BOOL
    if issubclass(kind, int) or kind.__name__.startswith(("int", "uint")):
        return _INT
    if issubclass(kind, float) or kind.__name__.startswith("float"):
        return _FLOAT
    if issubclass(kind, str):
        return _TEXT
    return "other"


def _value_kind(value) -> str | None:
    return _kind_of_type(type(value))


def _column_kind(values: list, numbers_as_float: bool) -> str | None:
    """The one kind a column's values are written as (see the module docstring)."""
    # By the values' types, collected at C speed: a kind depends on the type alone.
    kinds = {_kind_of_type(kind) for kind in set(map(type, values))} - {None}
    if not kinds:
        return None
    if kinds <= {_INT, _FLOAT}:
        return _NUMBER if numbers_as_float or _FLOAT in kinds else _INT
    if len(kinds) == 1 and kinds != {"other"}:
        return kinds.pop()
    return _TEXT


def _arrow_column(values: list, kind: str | None) -> pa.Array:
    if kind is None:
        return pa.nulls(len(values), pa.string())
    if kind != _TEXT:
        try:
            if kind in (_NUMBER, _FLOAT):
                try:  # Python's ints and floats convert at C speed
                    return pa.array(values, type=pa.float64())
                except (TypeError, ValueError, OverflowError, pa.ArrowException):
                    values = [None if value is None else float(value) for value in values]
            return pa.array(values, type=_ARROW_TYPES[kind])
        except (TypeError, ValueError, OverflowError, pa.ArrowException):
            pass  # an int beyond int64, a numpy oddity: written as text rather than lost
    return pa.array([None if value is None else str(value) for value in values], pa.string())


class PredictionLog:
    """Batched, asynchronous writing of answered predictions to a Parquet lake.

    Args:
        uri: the lake: a local folder, file://, s3:// or gs://.
        model_name: the model's name: its partition, model=<name>.
        max_queue: the most `record` calls waiting for the writer; more are dropped (counted).
        batch_rows: write a file as soon as this many rows wait.
        flush_seconds: write what waits once its oldest row has waited this long.
        max_file_rows: the most rows in one file; a larger batch is split.
        clock: the time of each record (a datetime; naive is taken as UTC): its `time` column and
            its date partition.

    The writer is a daemon thread, so a forgotten log never keeps a process alive: call
    `close()` before the process ends (on SIGTERM), or what is queued is lost.
    """

    def __init__(
        self,
        uri: str,
        model_name: str,
        max_queue: int = 10_000,
        batch_rows: int = 1_000,
        flush_seconds: float = 5.0,
        max_file_rows: int = 100_000,
        clock: Callable[[], datetime] = _utc_now,
    ):
        if not model_name or "/" in model_name or "=" in model_name:
            raise ValueError(f"prediction log: model name '{model_name}' cannot be a partition")
        if min(max_queue, batch_rows, max_file_rows) < 1 or flush_seconds <= 0:
            raise ValueError("prediction log: sizes must be at least 1 and flush_seconds above 0")
        self.uri = uri
        self.model_name = model_name
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_file_rows = max_file_rows
        self.clock = clock
        self._fs, self._root, self._local = lake_filesystem(uri)
        self.max_queue = max_queue
        # What waits for the writer: records, and the markers of flush (an Event) and close
        # (None), in order. The writer is woken (`_wake`) only when it has something to do: the
        # first record after it wrote (to start the flush_seconds clock), batch_rows waiting, a
        # flush or a close; not by every record. A writer woken by every record competed with
        # the server's event loop for the GIL once per request.
        self._items: list = []
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards _items, the counters and _closed
        self._counts = dict.fromkeys(("written", "dropped", "files", "queued", "write_errors"), 0)
        self._closed = False
        # The writer's own: the kind each feature was last written as (text stays text).
        self._kinds: dict[str, str] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"mlpipe-prediction-log-{model_name}", daemon=True
        )
        self._thread.start()

    # The request path.

    def record(
        self,
        request_id: str,
        model_version: str | None,
        features: dict | list,
        predictions,
        probabilities=None,
        classes=None,
    ) -> bool:
        """Queue one request's predictions for writing; never blocks, never raises.

        Args:
            request_id: see `request_id`.
            model_version: the version that answered, e.g. "v3".
            features: {feature: [one value per row]}, {feature: value} for one row, or a list of
                {feature: value} rows; handed over, not copied: do not change it afterwards.
            predictions: one per row.
            probabilities: one list per row, in `classes`' order, or None.
            classes: the class labels of the probabilities' columns.

        Returns:
            True if queued; False if dropped (the queue is full, the log is closed or the record
            is malformed), which is counted in stats()["dropped"].
        """
        try:
            rows = _row_count(features, predictions)
            if probabilities is not None and classes is None:
                raise ValueError("probabilities without classes")
            item = _Record(
                str(request_id),
                _as_utc(self.clock()),
                None if model_version is None else str(model_version),
                features,
                predictions,
                probabilities,
                classes,
                rows,
            )
        except Exception as error:  # a caller's bug must not fail the request it logs
            logger.warning("prediction log: record %r dropped: %s", request_id, one_line(error))
            self._count(dropped=_safe_len(predictions))
            return False
        with self._lock:
            if self._closed or len(self._items) >= self.max_queue:
                self._counts["dropped"] += rows
                return False
            self._items.append(item)
            before = self._counts["queued"]
            self._counts["queued"] = before + rows
            wake = before == 0 or before + rows >= self.batch_rows
        if wake:
            self._wake.set()
        return True

    def _hand_over(self, marker) -> bool:
        """Queue a flush (an Event) or close (None) marker behind the records, and wake the
        writer. False if the writer has stopped."""
        with self._lock:
            self._items.append(marker)
        self._wake.set()
        return self._thread.is_alive()

    def stats(self) -> dict[str, int]:
        """{"written", "dropped", "files", "queued", "write_errors"}: rows written, rows dropped,
        files written, rows waiting to be written, and writes that failed."""
        with self._lock:
            return dict(self._counts)

    # Off the request path.

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything queued now, and wait until it is written (or failed and counted).

        Returns:
            False if that did not happen within `timeout` seconds, or the log is closed.
        """
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        if not self._hand_over(done):
            return False
        # Checked now and then: a flush that raced a close would otherwise wait for ever.
        end = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.1):
            if not self._thread.is_alive() or (end is not None and time.monotonic() > end):
                return done.is_set()
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write everything queued and stop the writer; later records are dropped. Calling it
        again does nothing.

        Returns:
            False if the writer did not finish within `timeout` seconds.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
        if first and self._thread.is_alive():
            self._hand_over(None)  # None: write what is queued and stop
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("prediction log: the writer did not stop within %ss", timeout)
            return False
        return True

    def __enter__(self) -> "PredictionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # The writer thread.

    def _count(self, **changes: int) -> None:
        with self._lock:
            for key, change in changes.items():
                self._counts[key] += change

    def _run(self) -> None:
        pending: list[_Record] = []
        pending_rows = 0
        deadline = None  # when the oldest pending row has waited flush_seconds
        while True:
            with self._lock:
                # Records handed over while this thread was writing did not wake it (rows were
                # still queued): they are taken now, and their flush_seconds start now.
                handed_over = bool(self._items)
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
            else:
                # Idle, it sleeps until a record wakes it; and looks again every flush_seconds
                # anyway, so that no record waits much longer than that, whatever happened.
                timeout = 0.0 if handed_over else self.flush_seconds
            self._wake.wait(timeout)
            with self._lock:
                self._wake.clear()
                items, self._items = self._items, []
            waiting: list[threading.Event] = []
            stop = False
            for item in items:
                if isinstance(item, _Record):
                    pending.append(item)
                    pending_rows += item.rows
                elif item is None:
                    stop = True
                else:
                    waiting.append(item)
            if pending and deadline is None:
                deadline = time.monotonic() + self.flush_seconds
            due = (
                stop
                or waiting
                or pending_rows >= self.batch_rows
                or (deadline is not None and time.monotonic() >= deadline)
            )
            if due and pending:
                try:
                    self._write_batch(pending)
                except Exception as error:  # a bug here must not end the writer, nor hide a loss
                    # (a bug: the rows of a date already written are counted twice in that case)
                    rows = sum(record.rows for record in pending)
                    logger.warning("prediction log: %d rows dropped: %s", rows, one_line(error))
                    self._count(write_errors=1, dropped=rows, queued=-rows)
                pending, pending_rows, deadline = [], 0, None
            for event in waiting:
                event.set()
            if stop:
                return

    def _write_batch(self, records: list[_Record]) -> None:
        """Write records as files, per date and at most max_file_rows each; never raises."""
        by_date: dict[date, list[_Record]] = {}
        for record in records:
            by_date.setdefault(record.time.date(), []).append(record)
        for day, day_records in by_date.items():
            table = self._table(day_records)
            for start in range(0, table.num_rows, self.max_file_rows):
                chunk = table.slice(start, self.max_file_rows)
                self._write_file(day, chunk)

    def _table(self, records: list[_Record]) -> pa.Table:
        """The records as one table; a malformed record is dropped (counted) and logged.

        Built column by column (`itertools.chain` over the records' own lists), not row by row:
        a server's records are mostly one row each, and this runs in the server's process."""
        kept: list[tuple[_Record, dict[str, list]]] = []
        names: dict[str, None] = dict.fromkeys(FIXED_COLUMNS)  # every column, in first-seen order
        layouts: set[tuple] = set()
        for record in records:
            try:
                values = _record_columns(record)
            except Exception as error:
                logger.warning(
                    "prediction log: record %r dropped: %s", record.request_id, one_line(error)
                )
                self._count(dropped=record.rows, queued=-record.rows)
                continue
            kept.append((record, values))
            layout = tuple(values)
            if layout not in layouts:  # records of one model version share one layout
                layouts.add(layout)
                names.update(dict.fromkeys(layout))
        total = sum(record.rows for record, _ in kept)

        def column(values_of) -> list:
            return list(chain.from_iterable(values_of(record, values) for record, values in kept))

        columns: dict[str, list] = {
            "request_id": column(lambda record, _: repeat(record.request_id, record.rows)),
            "row": column(lambda record, _: range(record.rows)),
            "time": column(lambda record, _: repeat(record.time, record.rows)),
            "model_version": column(lambda record, _: repeat(record.model_version, record.rows)),
        }
        for name in names:
            if name not in columns:
                columns[name] = column(
                    lambda record, values, name=name: (
                        values[name] if name in values else repeat(None, record.rows)
                    )
                )
        probabilities = sorted(n for n in columns if n.startswith(PROBABILITY_PREFIX))
        features = [n for n in columns if n not in (*FIXED_COLUMNS, PREDICTION, *probabilities)]
        arrays = {
            "request_id": pa.array(columns["request_id"], pa.string()),
            "row": pa.array(columns["row"], pa.int64()),
            "time": pa.array(columns["time"], pa.timestamp("us", tz="UTC")),
            "model_version": pa.array(columns["model_version"], pa.string()),
        }
        for name in features:
            kind = _column_kind(columns[name], numbers_as_float=True)
            if self._kinds.get(name) == _TEXT and kind is not None:
                kind = _TEXT  # a feature once written as text stays text in this writer
            if kind is not None:
                self._kinds[name] = kind
            arrays[name] = _arrow_column(columns[name], kind or self._kinds.get(name))
        if total:
            prediction = columns[PREDICTION]
            arrays[PREDICTION] = _arrow_column(prediction, _column_kind(prediction, False))
        for name in probabilities:
            arrays[name] = _arrow_column(columns[name], _FLOAT)
        return pa.table(arrays) if total else pa.table({})

    def _write_file(self, day: date, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        folder = f"{self._root}/model={self.model_name}/date={day.isoformat()}"
        first = table["time"][0].as_py()
        name = f"part-{first:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex}.parquet"
        path = f"{folder}/{name}"
        try:
            self._put(folder, path, parquet_bytes(table))
        except Exception as error:  # a full disk, a store that is down: count it, go on
            logger.warning(
                "prediction log: cannot write %s (%d rows dropped): %s",
                redact_url(self._shown(path)),
                table.num_rows,
                one_line(error),
            )
            self._count(write_errors=1, dropped=table.num_rows, queued=-table.num_rows)
            return
        self._count(written=table.num_rows, files=1, queued=-table.num_rows)

    def _put(self, folder: str, path: str, data: bytes) -> None:
        put_file(self._fs, self._local, folder, path, data)

    def _shown(self, path: str) -> str:
        """A path as the user gave the lake: with its scheme."""
        if self._local:
            return path
        return f"{urlparse(self.uri).scheme}://{path}"


def _safe_len(values) -> int:
    try:
        return len(values)
    except Exception:
        return 1


def put_file(
    fs: fsspec.AbstractFileSystem, local: bool, folder: str, path: str, data: bytes
) -> None:
    """Store one file's bytes at `path` (in `folder`) so that no reader sees part of it by that
    name: locally under a temporary name (`.<name>.tmp`, which readers skip) renamed into
    place, on an object store with one PUT.

    Args:
        fs, local: the lake's filesystem and whether it is local (`lake_filesystem`).
        folder: the folder of `path`, created locally when missing.
        path: the file, in the filesystem's own form.
        data: the file's bytes.
    """
    if not local:
        # One PUT (above s3fs's 50 MB a multipart upload, which also appears only when
        # complete): the object is there whole or not at all.
        fs.pipe_file(path, data)
        return
    os.makedirs(folder, exist_ok=True)
    temporary = f"{folder}/.{Path(path).name}{TEMPORARY_SUFFIX}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)  # no half file left under any name
        raise


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def lake_parts(
    uri: str, model_name: str
) -> tuple[fsspec.AbstractFileSystem, list[tuple[str, str]], list[str]]:
    """The Parquet files of one model's partition of a lake written like this one (the
    prediction log, the labels lake), listed afresh; and one line per file that is not one.

    Returns:
        The filesystem; (path, the path as shown: scheme included, any password hidden) per
        .parquet file, in name order (time order, as they are named); and one line per file
        skipped, naming it: a temporary file (a write that never finished) or not .parquet.
    """
    fs, root, local = lake_filesystem(uri)
    scheme = "" if local else f"{urlparse(uri).scheme}://"
    base = f"{root}/model={model_name}"
    fs.invalidate_cache()  # a live lake grows: never trust an earlier listing
    found = sorted(fs.find(base)) if fs.exists(base) else []
    parts: list[tuple[str, str]] = []
    skipped: list[str] = []
    for path in found:
        name = path.rsplit("/", 1)[-1]
        shown = redact_url(scheme + path)
        if name.startswith(".") or name.endswith(TEMPORARY_SUFFIX):
            skipped.append(f"{shown}: a temporary file (a write that did not finish), skipped")
        elif not name.endswith(".parquet"):
            skipped.append(f"{shown}: not a .parquet file, skipped")
        else:
            parts.append((path, shown))
    return fs, parts, skipped


def read_prediction_log(
    uri: str, model_name: str, since: datetime | date | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Read one model's prediction log into a table, skipping what cannot be read.

    Each file is read on its own, so one bad file costs only its rows, and files whose columns
    differ in type (see the module docstring) are combined by pandas (an int and a text column
    make an object column).

    Args:
        uri: the lake, as given to `PredictionLog`.
        model_name: the model whose partition (model=<name>) is read.
        since: only records at or after this time (a datetime; naive is UTC) or date.

    Returns:
        The records in time order, with a `model` column; and one line per file skipped,
        naming it: a temporary file (a write that never finished) or a file that is not
        readable Parquet (cut short by a killed process).
    """
    moment = None
    if isinstance(since, datetime):
        moment = _as_utc(since)
        since = moment.date()
    fs, parts, skipped = lake_parts(uri, model_name)
    tables: list[pa.Table] = []
    for path, shown in parts:
        partition = path.rsplit("/", 2)[-2]
        if since is not None and partition.startswith("date="):
            try:
                if date.fromisoformat(partition.removeprefix("date=")) < since:
                    continue
            except ValueError:
                pass  # a folder that is not a date: read it, the time filter below decides
        try:
            with fs.open(path, "rb") as handle:
                table = _read_file(handle)
        except Exception as error:
            skipped.append(f"{shown}: not readable as Parquet ({one_line(error)}), skipped")
            continue
        tables.append(table)
    tables = [table for table in tables if table.num_rows]
    if not tables:
        frame = pd.DataFrame(columns=[*FIXED_COLUMNS, PREDICTION])
    elif all(table.schema.equals(tables[0].schema) for table in tables[1:]):
        # The usual case, one schema: joined in Arrow and converted to pandas once, which takes
        # a fraction of the time of pandas' concat of a frame per file.
        frame = _as_pandas(pa.concat_tables(tables))
    else:
        frame = pd.concat([_as_pandas(table) for table in tables], ignore_index=True, sort=False)
    if moment is not None and len(frame):
        frame = frame[frame["time"] >= pd.Timestamp(moment)]
    if not frame["time"].is_monotonic_increasing:  # files are written in time order
        frame = frame.sort_values("time", kind="stable")
    frame.reset_index(drop=True, inplace=True)  # in place: no copy of a million rows
    if "model" not in frame.columns:  # the partition, as ingest reads it
        frame.insert(FIXED_COLUMNS.index("model_version"), "model", model_name)
    return frame, skipped


def _read_file(handle) -> pa.Table:
    """One log file, its text columns read as dictionaries (see _as_pandas); request ids, one
    per request, as they are."""
    schema = pq.read_schema(handle)
    handle.seek(0)
    text = [
        field.name
        for field in schema
        if pa.types.is_string(field.type) and field.name != FIXED_COLUMNS[0]
    ]
    return pq.read_table(handle, read_dictionary=text)


def _as_pandas(table: pa.Table) -> pd.DataFrame:
    """The table as pandas with text as object columns of str and None, as to_pandas() gives
    them. Text read as a dictionary converts to a pandas Categorical without making a Python
    string per row; taking its categories by code makes the object column (rows that hold the
    same text hold the same str): a million rows in tens of milliseconds, not seconds."""
    # split_blocks: a block per column, so replacing the text columns below copies nothing else.
    frame = table.to_pandas(split_blocks=True)
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            values = np.append(column.cat.categories.to_numpy(dtype=object), None)
            frame[name] = values[codes]  # code -1 (a null) takes the None at the end
    return frame
