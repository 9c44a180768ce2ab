"""Labels that arrive later: checked against the prediction log, kept in a labels lake.

A prediction is answered now and its truth is known later (a loan repaid, a claim found to be
fraud). A label names one answered row by the request's id and the row's place in its request,
(request_id, row), as the prediction log records them (`components.common.prediction_log`). A
pair without a row means row 0, and is refused as ambiguous when that request had more rows.

The labels lake sits beside the log, in the same layout:

    <labels_uri>/model=<name>/date=<YYYY-MM-DD>/part-<time>-<uuid>.parquet

with the columns request_id (string), row (int64), label and time (when it was added, UTC). The
label column takes the type of the model's classes (int64, bool, string, float64; text when the
classes are of mixed types) and float64 for a regression model, the same in every file.

`add_labels` checks each pair before anything is written, and every pair it does not keep is
counted under one kind (`KINDS`) and named among the first few of that kind: a missing request
id or label, a row that is not a whole number from 0, a pair given twice in the input, a request
id (or row) the log does not have, a row left out of a request of several rows, a request id the
log holds twice (a client that reused it), a version whose schema is not in the registry, a
class the version does not know, a regression label that is not a finite number, and a pair the
lake already has a label for. By default one invalid pair refuses the whole input (nothing is
written); with skip_invalid the valid pairs are appended and the rest reported.

Each append is one file, written under a temporary name and renamed (locally) or with one PUT (an
object store), by the prediction log's own `put_file`: a reader never sees half of it. Appends in
one process are serialised, so two of them cannot both add the same pair; two processes appending
the same pair at the same moment can (the lake has no lock), and `attach_labels` then keeps the
earlier label.
"""

import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common.errors import PipelineInputError
from components.common.prediction_log import (
    lake_filesystem,
    lake_parts,
    parquet_bytes,
    put_file,
)
from components.common.registry import check_model_name
from components.common.retry import one_line
from components.common.secrets import redact_url

LABEL_COLUMNS = ("request_id", "row", "label", "time")
KEY = ["request_id", "row"]
# Each kind of pair that is not kept, in the order the checks run (a pair counts once, under
# the first kind it fails).
NO_REQUEST_ID = "no request id"
BAD_ROW = "row not a whole number from 0"
DUPLICATE_IN_INPUT = "given more than once"
UNKNOWN_REQUEST_ID = "unknown request id"
UNKNOWN_ROW = "unknown row"
AMBIGUOUS_ROW = "no row, and the request had several"
REUSED_REQUEST_ID = "request id used by several requests"
NO_LABEL = "no label"
UNKNOWN_VERSION = "answering version has no schema"
WRONG_CLASS = "not one of the model's classes"
NOT_A_NUMBER = "not a finite number"
ALREADY_LABELLED = "already labelled"
KINDS = (
    NO_REQUEST_ID,
    BAD_ROW,
    DUPLICATE_IN_INPUT,
    UNKNOWN_REQUEST_ID,
    UNKNOWN_ROW,
    AMBIGUOUS_ROW,
    REUSED_REQUEST_ID,
    NO_LABEL,
    UNKNOWN_VERSION,
    WRONG_CLASS,
    NOT_A_NUMBER,
    ALREADY_LABELLED,
)
# How many offending pairs a report names per kind.
EXAMPLES = 3
LABEL_FILE_SUFFIXES = (".csv", ".parquet", ".pq")

# One append at a time in this process: the check against the lake and the write are one step.
_append_lock = threading.Lock()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LabelsLakeUnavailable(PipelineInputError):
    """The labels lake could not be written (a full disk, a store that is down): nothing was."""


# --- Reading a lake ---------------------------------------------------------------------------


def _read_partition(
    uri: str,
    model_name: str,
    columns: list[str] | None = None,
    request_ids: set[str] | None = None,
) -> tuple[list[pd.DataFrame], list[str]]:
    """Each readable file of one model's partition of a lake, as a frame; and one line per file
    skipped, naming it (the same lines as `read_prediction_log`).

    Args:
        uri: the lake (a folder or fsspec URI).
        model_name: its model=<name> partition is read.
        columns: read only these columns (a file without one of them is skipped and named).
        request_ids: keep only the rows of these request ids (filtered per file, so a large
            log is never held whole).
    """
    fs, parts, skipped = lake_parts(uri, model_name)
    wanted = None if request_ids is None else pa.array(sorted(request_ids), pa.string())
    frames: list[pd.DataFrame] = []
    for path, shown in parts:
        try:
            with fs.open(path, "rb") as handle:
                table = pq.read_table(handle, columns=columns)
        except Exception as error:
            skipped.append(f"{shown}: not readable as Parquet ({one_line(error)}), skipped")
            continue
        if wanted is not None:
            ids = pc.cast(table["request_id"], pa.string())
            table = table.filter(pc.is_in(ids, value_set=wanted))
        if table.num_rows:
            frames.append(table.to_pandas())
    return frames, skipped


def read_labels(labels_uri: str, model_name: str) -> tuple[pd.DataFrame, list[str]]:
    """One model's labels from the labels lake, skipping what cannot be read.

    Args:
        labels_uri: the labels lake (a folder, file://, s3:// or gs://).
        model_name: the model whose partition (model=<name>) is read.

    Returns:
        The labels (request_id, row, label, time) in the order they were added; and one line
        per file skipped, naming it: a temporary file (a write that never finished) or a file
        that is not readable Parquet (cut short).
    """
    frames, skipped = _read_partition(labels_uri, model_name, columns=list(LABEL_COLUMNS))
    if not frames:
        empty = {
            "request_id": pd.Series(dtype=object),
            "row": pd.Series(dtype="int64"),
            "label": pd.Series(dtype=object),
            "time": pd.Series(dtype="datetime64[us, UTC]"),
        }
        return pd.DataFrame(empty), skipped
    frame = pd.concat(frames, ignore_index=True, sort=False)
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    return frame[list(LABEL_COLUMNS)], skipped


def attach_labels(log_frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The prediction log with each row's label: a left join on (request_id, row).

    Args:
        log_frame: prediction log rows (`read_prediction_log`), with request_id and row.
        labels: `read_labels`' frame (request_id, row, label; time is not joined).

    Returns:
        The log's rows in their order, with a `label` column: None where no label came (NaN
        for a regression model's float labels). Should the lake hold two labels for one row (two processes appended at the same
        moment), the earlier one is used.

    Raises:
        PipelineInputError: the log already has a `label` column (a feature of that name).
    """
    if "label" in log_frame.columns:
        raise PipelineInputError(
            "prediction log: it has a column 'label' (a feature of that name); "
            "the labels cannot be joined beside it"
        )
    for column in KEY:
        if column not in log_frame.columns:
            raise PipelineInputError(f"prediction log: no column '{column}' to join labels on")
    known = labels[[*KEY, "label"]]
    if "time" in labels.columns:
        known = labels.sort_values("time", kind="stable")[[*KEY, "label"]]
    known = known.drop_duplicates(KEY, keep="first").astype({"request_id": str, "row": "int64"})
    keep_type = not pd.api.types.is_float_dtype(known["label"].dtype)
    if keep_type:
        # Classes keep their type (1 stays 1, not 1.0 beside an int prediction): an object
        # column, None for a row without a label.
        known = known.astype({"label": object})
    joined = log_frame.astype({"request_id": str, "row": "int64"}).merge(
        known, on=KEY, how="left", sort=False, validate="many_to_one"
    )
    if keep_type:
        joined["label"] = joined["label"].where(joined["label"].notna(), None)
    joined.index = log_frame.index
    return joined


# --- Pairs as given -----------------------------------------------------------------------------

# A row that was given but is not a whole number from 0 (told apart from a row left out, None).
_BAD_ROW = object()


def read_labels_file(path: str) -> pd.DataFrame:
    """A labels file as given: CSV or Parquet with the columns request_id and label, and row
    when a request had several rows. CSV values are read as text (an id "007" stays "007", a
    class "NA" stays "NA"); the label is matched to the model's classes later.

    Args:
        path: a .csv, .parquet or .pq file (a local path or an fsspec URI).

    Returns:
        Its request_id, label and (when present) row columns, as read.

    Raises:
        PipelineInputError: naming the file, when it is missing, not readable, not CSV or
            Parquet, has no rows, or lacks a column.
    """
    shown = redact_url(str(path))
    suffix = Path(urlparse(str(path)).path).suffix.lower()
    if suffix not in LABEL_FILE_SUFFIXES:
        raise PipelineInputError(
            f"labels file {shown}: expected a .csv or .parquet file of request_id,label[,row]"
        )
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        else:
            frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise PipelineInputError(f"labels file {shown}: not found") from None
    except Exception as error:  # a file cut short, not CSV or Parquet at all, unreadable bytes
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise PipelineInputError(
            f"labels file {shown}: not readable as {kind} ({one_line(error)})"
        ) from None
    frame.columns = [str(column).strip() for column in frame.columns]
    for column in ("request_id", "label"):
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns)) or "none"
            raise PipelineInputError(
                f"labels file {shown}: no column '{column}' (expected request_id, label and "
                f"optionally row; found: {found})"
            )
    if frame.empty:
        raise PipelineInputError(f"labels file {shown}: no labels in it")
    return frame[[c for c in ("request_id", "row", "label") if c in frame.columns]]


def pairs_from_records(records, where: str = "labels") -> pd.DataFrame:
    """Pairs given as JSON objects ({"request_id", "label", "row"?}, as the HTTP route takes
    them) as the frame `add_labels` takes.

    Raises:
        PipelineInputError: naming `where` and the first entry that is not such an object.
    """
    if not isinstance(records, list) or not records:
        raise PipelineInputError(f"{where}: expected a non-empty list of {{request_id, label}}")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or "request_id" not in record or "label" not in record:
            raise PipelineInputError(
                f"{where}[{index}]: expected an object with request_id, label and optionally row"
            )
    return pd.DataFrame(
        {
            "request_id": [record["request_id"] for record in records],
            "row": [record.get("row") for record in records],
            "label": [record["label"] for record in records],
        },
        dtype=object,
    )


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    return value is pd.NA or value is pd.NaT


def _request_id(value) -> str | None:
    if _missing(value):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # an id column Parquet stored as float
    return str(value).strip()


def _row(value):
    """A given row as an int, None when left out, _BAD_ROW when not a whole number from 0."""
    if _missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        return _BAD_ROW
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return _BAD_ROW
    if not math.isfinite(number) or not number.is_integer() or number < 0:
        return _BAD_ROW
    return int(number)


def _text(value) -> str:
    """A value's text form, which a label and a class are matched by (1, 1.0 and "1" alike)."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value).strip()


# --- What a label must be -----------------------------------------------------------------------


class _LabelRule:
    """How one version's schema turns a label as given into the label kept, or a kind of error."""

    def __init__(self, schema: dict):
        self.regression = schema.get("task") == "regression"
        classes = list(schema.get("classes") or [])
        types = {type(c) for c in classes}
        # Kept as the classes' own type; as text when they are of several types.
        self.mixed = len(types) > 1
        self.exact: dict[str, object] = {}
        for value in classes:
            self.exact.setdefault(_text(value), str(value) if self.mixed else value)
        folded: dict[str, list] = {}
        for text, value in self.exact.items():
            folded.setdefault(text.casefold(), []).append(value)
        # "true" for True, "yes" for "Yes": only when no other class folds the same way.
        self.folded = {text: values[0] for text, values in folded.items() if len(values) == 1}

    def __call__(self, label) -> tuple[object, str | None]:
        """(the label to keep, None) or (None, the kind of error)."""
        if self.regression:
            if isinstance(label, bool | np.bool_):
                return None, NOT_A_NUMBER
            try:
                number = float(label.strip()) if isinstance(label, str) else float(label)
            except (TypeError, ValueError):
                return None, NOT_A_NUMBER
            return (number, None) if math.isfinite(number) else (None, NOT_A_NUMBER)
        text = _text(label)
        candidates = [text]
        if isinstance(label, str):
            try:
                candidates.append(_text(float(text)))  # "1.0" for the class 1
            except ValueError:
                pass
        for candidate in candidates:
            if candidate in self.exact:
                return self.exact[candidate], None
        for candidate in candidates:
            if candidate.casefold() in self.folded:
                return self.folded[candidate.casefold()], None
        return None, WRONG_CLASS


def schemas_from_registry(registry) -> Callable[[str | None], dict | None]:
    """The schema of each version that answered, read once per version from the registry
    (`ModelRegistry.metadata(version)["schema"]`); None for a version it does not have."""
    cache: dict[str, dict | None] = {}

    def schema_for(version: str | None) -> dict | None:
        if version is None:
            return None
        if version not in cache:
            try:
                cache[version] = registry.metadata(version).get("schema")
            except PipelineInputError:
                cache[version] = None
        return cache[version]

    return schema_for


# --- Checking and appending ---------------------------------------------------------------------


@dataclass
class LabelOutcome:
    """What `add_labels` did with the pairs it was given.

    Attributes:
        source: what the pairs came from (a file, the HTTP route), for the report's line.
        pairs: how many were given.
        appended: how many were written to the labels lake (0 when refused as a whole).
        path: the file they were written to, or None.
        refused: {kind: count} of the pairs not kept, in `KINDS` order.
        examples: {kind: the first few of those pairs, as request_id#row}.
        skipped: lines naming log or lake files that could not be read while checking.
    """

    source: str
    pairs: int
    appended: int = 0
    path: str | None = None
    refused: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def reasons(self) -> str:
        """The refused pairs per kind, with the first few of each."""
        return "; ".join(
            f"{kind}: {count} (e.g. {', '.join(self.examples.get(kind, []))})"
            for kind, count in self.refused.items()
        )

    def line(self, skip_hint: str = "skip_invalid") -> str:
        """One line for a log, a report or an error message."""
        if not self.refused:
            return f"{self.source}: {_count(self.appended, 'label')} appended to {self.path}"
        refused = (
            f"{self.refused_total} of {_count(self.pairs, 'label')} refused ({self.reasons()})"
        )
        if self.appended:
            return f"{self.source}: {refused}; the other {self.appended} appended to {self.path}"
        valid = self.pairs - self.refused_total
        hint = f"; {skip_hint} appends the {_count(valid, 'valid one')}" if valid else ""
        return f"{self.source}: {refused}; nothing written{hint}"

    def as_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "appended": self.appended,
            "refused": dict(self.refused),
            "examples": {kind: list(ids) for kind, ids in self.examples.items()},
            "path": self.path,
            "skipped_files": list(self.skipped),
        }


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _shown_id(request_id: str | None, row, position: int) -> str:
    if request_id is None:
        return f"pair {position + 1}"
    if row is None or row is _BAD_ROW:
        return request_id
    return f"{request_id}#{row}"


def _answered(
    log_uri: str, model_name: str, request_ids: set[str]
) -> tuple[dict[str, dict[int, list]], list[str]]:
    """{request_id: {row: [the versions that answered it]}} for the ids asked about."""
    frames, skipped = _read_partition(
        log_uri, model_name, ["request_id", "row", "model_version"], request_ids
    )
    answered: dict[str, dict[int, list]] = {}
    for frame in frames:
        for request_id, row, version in zip(
            frame["request_id"], frame["row"], frame["model_version"], strict=True
        ):
            rows = answered.setdefault(str(request_id), {})
            rows.setdefault(int(row), []).append(None if _missing(version) else str(version))
    return answered, skipped


def _labelled(labels_uri: str, model_name: str, request_ids: set[str]):
    """The (request_id, row) pairs the labels lake already has, among the ids asked about."""
    frames, skipped = _read_partition(labels_uri, model_name, KEY, request_ids)
    keys = {
        (str(request_id), int(row))
        for frame in frames
        for request_id, row in zip(frame["request_id"], frame["row"], strict=True)
    }
    return keys, skipped


def _label_array(labels: list) -> pa.Array:
    """The label column: one Arrow type for the labels of one model (see the module docstring)."""
    if all(isinstance(label, bool) for label in labels):
        return pa.array(labels, pa.bool_())
    if all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
        return pa.array(labels, pa.int64())
    if all(isinstance(label, int | float) and not isinstance(label, bool) for label in labels):
        return pa.array([float(label) for label in labels], pa.float64())
    return pa.array([str(label) for label in labels], pa.string())


def _append(labels_uri: str, model_name: str, kept: list[tuple], now: datetime) -> str:
    """Write the kept (request_id, row, label) as one file of the lake; return its name."""
    fs, root, local = lake_filesystem(labels_uri)
    folder = f"{root}/model={model_name}/date={now.date().isoformat()}"
    path = f"{folder}/part-{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex}.parquet"
    shown = redact_url(path if local else f"{urlparse(labels_uri).scheme}://{path}")
    table = pa.table(
        {
            "request_id": pa.array([k[0] for k in kept], pa.string()),
            "row": pa.array([k[1] for k in kept], pa.int64()),
            "label": _label_array([k[2] for k in kept]),
            "time": pa.array([now] * len(kept), pa.timestamp("us", tz="UTC")),
        }
    )
    try:
        put_file(fs, local, folder, path, parquet_bytes(table))
    except Exception as error:  # a full disk, a store that is down: nothing half is left
        raise LabelsLakeUnavailable(
            f"labels lake {shown}: cannot write ({one_line(error)})"
        ) from None
    return shown


def _key(request_id: str, row: int | None) -> tuple[str, int]:
    """The (request_id, row) a pair names: a row left out is row 0."""
    return request_id, 0 if row is None else row


def _check_pair(
    request_id: str | None,
    row,
    label,
    answered: dict[str, dict[int, list]],
    rules: dict,
    schema_for: Callable[[str | None], dict | None],
) -> tuple[object, str | None]:
    """(the label to keep, None) for a valid pair, else (None, the first kind it fails) of the
    checks against the log and the answering version's schema. `rules` caches a `_LabelRule`
    per version."""
    if request_id is None:
        return None, NO_REQUEST_ID
    if row is _BAD_ROW:
        return None, BAD_ROW
    rows = answered.get(request_id)
    if rows is None:
        return None, UNKNOWN_REQUEST_ID
    if row is None and len(rows) > 1:
        return None, AMBIGUOUS_ROW
    versions = rows.get(0 if row is None else row)
    if versions is None:
        return None, UNKNOWN_ROW
    if len(versions) > 1:
        return None, REUSED_REQUEST_ID
    if _missing(label):
        return None, NO_LABEL
    version = versions[0]
    if version not in rules:
        schema = schema_for(version)
        rules[version] = _LabelRule(schema) if schema else None
    if rules[version] is None:
        return None, UNKNOWN_VERSION
    return rules[version](label)


def add_labels(
    pairs: pd.DataFrame,
    labels_uri: str,
    log_uri: str,
    model_name: str,
    schema_for: Callable[[str | None], dict | None],
    skip_invalid: bool = False,
    source: str = "labels",
    clock: Callable[[], datetime] = _utc_now,
) -> LabelOutcome:
    """Check label pairs against the prediction log, the model's schema and the labels lake,
    and append the valid ones to the lake as one file.

    Args:
        pairs: request_id, label and optionally row (`read_labels_file`, `pairs_from_records`).
        labels_uri: the labels lake.
        log_uri: the prediction log the pairs name rows of.
        model_name: the model's partition in both.
        schema_for: the schema (task, classes) of the version that answered, by its name, or
            None when it is not known (`schemas_from_registry`).
        skip_invalid: append the valid pairs when some are invalid; by default one invalid pair
            refuses them all and nothing is written.
        source: what the pairs came from, for the outcome's line.
        clock: the labels' time (and the lake's date partition).

    Returns:
        What was appended and what was refused, per kind (`LabelOutcome`); the caller decides
        how a refusal is reported.

    Raises:
        PipelineInputError: the model's name cannot be a partition.
        LabelsLakeUnavailable: the lake cannot be written (then nothing was).
    """
    check_model_name(model_name)
    given = list(
        zip(
            (_request_id(value) for value in pairs["request_id"]),
            (_row(value) for value in (pairs["row"] if "row" in pairs else [None] * len(pairs))),
            pairs["label"],
            strict=True,
        )
    )
    outcome = LabelOutcome(source=source, pairs=len(given))
    request_ids = {request_id for request_id, _, _ in given if request_id is not None}
    counts: dict[tuple, int] = {}
    for request_id, row, _ in given:
        if request_id is not None and row is not _BAD_ROW:
            counts[_key(request_id, row)] = counts.get(_key(request_id, row), 0) + 1
    rules: dict[str, _LabelRule | None] = {}
    with _append_lock:
        answered, skipped_log = _answered(log_uri, model_name, request_ids)
        labelled, skipped_lake = _labelled(labels_uri, model_name, request_ids)
        outcome.skipped = skipped_log + skipped_lake
        kept: list[tuple] = []
        refused: dict[str, list[str]] = {}
        for position, (request_id, row, label) in enumerate(given):
            if request_id is not None and row is not _BAD_ROW and counts[_key(request_id, row)] > 1:
                value, kind = None, DUPLICATE_IN_INPUT
            else:
                value, kind = _check_pair(request_id, row, label, answered, rules, schema_for)
            if kind is None and _key(request_id, row) in labelled:
                kind = ALREADY_LABELLED
            if kind is None:
                kept.append((*_key(request_id, row), value))
            else:
                refused.setdefault(kind, []).append(_shown_id(request_id, row, position))
        outcome.refused = {kind: len(refused[kind]) for kind in KINDS if kind in refused}
        outcome.examples = {kind: refused[kind][:EXAMPLES] for kind in outcome.refused}
        if kept and (skip_invalid or not refused):
            now = clock()
            now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
            outcome.path = _append(labels_uri, model_name, kept, now)
            outcome.appended = len(kept)
    return outcome
