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

import threading
from datetime import UTC, datetime
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common.errors import PipelineInputError
from components.common.prediction_log import (
    TEMPORARY_SUFFIX,
    lake_filesystem,
)
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
    fs, root, local = lake_filesystem(uri)
    scheme = "" if local else f"{urlparse(uri).scheme}://"
    base = f"{root}/model={model_name}"
    fs.invalidate_cache()  # a live lake grows: never trust an earlier listing
    found = sorted(fs.find(base)) if fs.exists(base) else []
    wanted = None if request_ids is None else pa.array(sorted(request_ids), pa.string())
    frames: list[pd.DataFrame] = []
    skipped: list[str] = []
    for path in found:
        name = path.rsplit("/", 1)[-1]
        shown = redact_url(scheme + path)
        if name.startswith(".") or name.endswith(TEMPORARY_SUFFIX):
            skipped.append(f"{shown}: a temporary file (a write that did not finish), skipped")
            continue
        if not name.endswith(".parquet"):
            skipped.append(f"{shown}: not a .parquet file, skipped")
            continue
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
