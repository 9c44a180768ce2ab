"""The monitor's window: the rows compared with the champion's reference.

Two sources:

- `prediction_log`: the served requests (components.common.prediction_log), the last
  `window_days` days, or (window_days 0) every record after the monitor's watermark, the time of
  the last record an earlier successful run monitored. Labels sent back later
  (components.common.labels) are joined on (request_id, row) when the labels lake exists.
- `lake`: the data source's Parquet files that are new or changed since the champion's training
  watermark (the files its training run read, with their fingerprints): drift before any
  traffic. The lake holds the target, so its rows are labelled; the champion scores them, so
  prediction drift and realized performance are measured too.

Files a reader skips (temporary, truncated) are returned as lines for the report, never an error.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from components.common.errors import PipelineInputError
from components.common.lake_files import fingerprints
from components.common.prediction_log import read_prediction_log
from components.common.profile import PREDICTION_COLUMN, probability_column
from components.common.schema import as_model_input
from components.common.secrets import redact_url

LABEL_COLUMN = "label"
TIME_COLUMN = "time"
WATERMARK_FILE = "watermark.json"


@dataclass
class Window:
    """The rows monitored and where they came from.

    Attributes:
        source: prediction_log or lake.
        uri: the log or lake read (any password hidden).
        frame: the rows: the champion's features, prediction, probability_<class> where there
            are any, `label` (missing where none came back) and `time` (the log's only).
        description: which rows, in words ("since 2026-12-01T10:00:00+00:00", "3 new files").
        skipped: one line per file a reader skipped.
        last_time: the latest record time (the log's), which the watermark moves to.
    """

    source: str
    uri: str
    frame: pd.DataFrame
    description: str
    skipped: list[str] = field(default_factory=list)
    last_time: datetime | None = None

    @property
    def first_time(self) -> datetime | None:
        if TIME_COLUMN not in self.frame or self.frame.empty:
            return None
        return pd.Timestamp(self.frame[TIME_COLUMN].min()).to_pydatetime()


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    if len(urlparse(uri).scheme) <= 1:
        return fsspec.filesystem("file"), str(Path(uri).expanduser().resolve())
    fs, path = fsspec.core.url_to_fs(uri, skip_instance_cache=True)
    return fs, path.rstrip("/")


def read_watermark(state_uri: str, model_name: str) -> datetime | None:
    """The time of the last record an earlier successful run monitored, or None."""
    fs, root = filesystem(state_uri)
    path = f"{root}/{model_name}/{WATERMARK_FILE}"
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "r") as handle:
            return datetime.fromisoformat(json.load(handle)["last_record_time"])
    except (ValueError, KeyError, TypeError) as error:
        raise PipelineInputError(
            f"{redact_url(path)}: not a monitor watermark ({type(error).__name__}: {error}); "
            "remove it to monitor the whole log"
        ) from None


def write_watermark(state_uri: str, model_name: str, last_time: datetime, run: str) -> None:
    """Move the watermark: one whole file (a temporary name renamed locally, one PUT remotely)."""
    fs, root = filesystem(state_uri)
    folder = f"{root}/{model_name}"
    payload = json.dumps({"last_record_time": last_time.isoformat(), "run": run}, indent=2)
    fs.makedirs(folder, exist_ok=True)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        staging = Path(folder) / f".{WATERMARK_FILE}.tmp"
        staging.write_text(payload, encoding="utf-8")
        staging.replace(Path(folder) / WATERMARK_FILE)
    else:
        fs.pipe_file(f"{folder}/{WATERMARK_FILE}", payload.encode("utf-8"))


def log_window(
    log_uri: str,
    labels_uri: str,
    model_name: str,
    window_days: float,
    state_uri: str,
    now: datetime | None = None,
    version: str = "",
) -> Window:
    """The prediction log's window (see the module docstring), labels attached.

    Args:
        version: the champion: only the rows it answered are judged (a window that spans a
            promotion also holds the previous champion's answers, whose outputs are not this
            model's); empty, or a log without model_version, keeps every row.
    """
    now = now or datetime.now(UTC)
    watermark = None
    if window_days > 0:
        since = now - timedelta(days=window_days)
        description = f"the last {window_days:g} days (since {since.isoformat(timespec='seconds')})"
    else:
        watermark = read_watermark(state_uri, model_name)
        since = watermark
        description = (
            f"records after the last monitor run's ({watermark.isoformat(timespec='seconds')})"
            if watermark
            else "the whole log (no earlier monitor run)"
        )
    frame, skipped = read_prediction_log(log_uri, model_name, since)
    if watermark is not None and len(frame):
        # read_prediction_log keeps records at `since`; the watermark's own record was monitored.
        frame = frame[pd.to_datetime(frame[TIME_COLUMN], utc=True) > pd.Timestamp(watermark)]
        frame = frame.reset_index(drop=True)
    if version and len(frame) and "model_version" in frame.columns:
        answered = frame["model_version"].astype(str) == version
        others = int((~answered).sum())
        if others:
            frame = frame[answered.to_numpy()].reset_index(drop=True)
            description += f"; {others} rows answered by other versions than {version} left out"
    if frame.empty:
        raise PipelineInputError(
            f"prediction log '{redact_url(log_uri)}': no records of model '{model_name}' in "
            f"the window ({description}); nothing to monitor"
        )
    frame = _with_labels(frame, labels_uri, model_name, skipped)
    last = pd.Timestamp(pd.to_datetime(frame[TIME_COLUMN], utc=True).max()).to_pydatetime()
    return Window("prediction_log", redact_url(log_uri), frame, description, skipped, last)


def _with_labels(
    frame: pd.DataFrame, labels_uri: str, model_name: str, skipped: list
) -> pd.DataFrame:
    """The log with a `label` column: the labels lake's, when it has this model's partition."""
    if labels_uri:
        fs, root = filesystem(labels_uri)
        if fs.exists(f"{root}/model={model_name}"):
            from components.common.labels import attach_labels, read_labels

            labels, label_skips = read_labels(labels_uri, model_name)
            skipped.extend(label_skips)
            return attach_labels(frame, labels)
    return frame.assign(**{LABEL_COLUMN: pd.Series([None] * len(frame), dtype=object)})


def lake_window(
    source_uri: str, training_watermark: dict | None, schema: dict, model, positive_class: str = ""
) -> Window:
    """The lake's files new or changed since the champion's training watermark, scored by it.

    Args:
        source_uri: the data source (a Parquet lake folder).
        training_watermark: the champion's `data.watermark` ({"files": {name: fingerprint}}).
        schema: the champion's schema (features, target, task).
        model: the champion, which predicts the rows (prediction drift, performance).

    Raises:
        PipelineInputError: the source is not a folder of Parquet files, the champion recorded
            no watermark, nothing is new, or a feature is missing.
    """
    shown = redact_url(source_uri)
    if not training_watermark or not isinstance(training_watermark.get("files"), dict):
        raise PipelineInputError(
            "monitoring.source lake: the champion recorded no data watermark (it was trained "
            "on a file or an ETL snapshot, not a lake); use monitoring.source prediction_log"
        )
    fs, root = filesystem(source_uri)
    if not fs.isdir(root):
        raise PipelineInputError(f"data source '{shown}': not a folder of Parquet files")
    fs.invalidate_cache()
    seen = training_watermark["files"]
    # The ingest step's rule (components.common.lake_files): a file whose fingerprint is not
    # the one the champion's training read recorded is new or rewritten since.
    selected = [name for name, mark in fingerprints(fs, root).items() if seen.get(name) != mark]
    skipped = []
    frames = []
    for name in selected:
        try:
            dataset = ds.dataset(
                f"{root}/{name}",
                filesystem=fs,
                format="parquet",
                partitioning=ds.HivePartitioning.discover(infer_dictionary=False),
            )
            frames.append(dataset.to_table().to_pandas())
        except (pa.ArrowInvalid, OSError) as error:
            skipped.append(f"{shown}/{name}: not readable as Parquet ({error}), skipped")
    if not frames or not sum(len(f) for f in frames):
        raise PipelineInputError(
            f"data source '{shown}': no new rows since the champion's training watermark "
            f"({len(seen)} files read then); nothing to monitor"
        )
    frame = pd.concat(frames, ignore_index=True, sort=False)
    check_features(frame, [f["name"] for f in schema["features"]], f"data source '{shown}'")
    inputs = as_model_input(frame, schema)
    window = frame[[f["name"] for f in schema["features"]]].copy()
    window[PREDICTION_COLUMN] = np.asarray(model.predict(inputs), dtype=object)
    if schema["task"] == "classification" and hasattr(model, "predict_proba"):
        probabilities = model.predict_proba(inputs)
        for position, label in enumerate(model.classes_):
            window[probability_column(label)] = probabilities[:, position]
    target = schema.get("target")
    window[LABEL_COLUMN] = frame[target].to_numpy() if target in frame else None
    description = f"{len(selected)} files new or changed since the champion's training watermark"
    return Window("lake", shown, window, description, skipped)


def check_features(frame: pd.DataFrame, names: list[str], where: str) -> None:
    """One line naming the first of the champion's features the window lacks."""
    for name in names:
        if name not in frame.columns:
            raise PipelineInputError(
                f"{where}: column '{name}' (a feature of the champion's schema) is missing; "
                "the log was written for another model or schema"
            )


def log_features(frame: pd.DataFrame, schema: dict) -> pd.DataFrame:
    """A log's features under their own names: the log writes a feature whose name is one of its
    own columns as feature_<name> (components.common.prediction_log)."""
    renames = {
        f"feature_{f['name']}": f["name"]
        for f in schema["features"]
        if f"feature_{f['name']}" in frame.columns and f["name"] not in frame.columns
    }
    return frame.rename(columns=renames) if renames else frame
