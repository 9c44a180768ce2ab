"""Where a batch job writes: the scored lake, one partition per job, committed whole or not at all.

    <output>/job=<job id>/part-NNNNN.parquet   the key columns, prediction, probability_<class>,
                                               model_version
    <output>/job=<job id>/_job.json            what the job read, with which version, what it
                                               counted (readers skip names starting with "_")
    <output>/_watermark.json                   the input files the last job read (since_last_job)

A job writes everything under a hidden staging folder, `<output>/.staging-<job id>/` (readers
skip names starting with "."): its data, and its prediction-log files. Only when every row is
scored does `commit` move the data folder to `job=<job id>` (locally one rename: the partition
appears whole), then the log files into the prediction log, then the watermark. A job that fails
or is stopped removes its staging folder; a job that is killed leaves it hidden, and no partition.
On an object store, which has no rename, the data files are copied into the partition and
`_job.json` is written last: there a reader must look for `_job.json` to know a partition is
complete (a killed copy can leave part of one).

An output that holds anything else than job partitions (a file, a folder of another layout) is
refused, naming what is there: one job's rows never mix with other data. A job id that is
already a partition is refused too.
"""

import json
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from components.common.errors import PipelineInputError
from components.common.prediction_log import lake_filesystem, put_file
from components.common.secrets import redact_url

JOB_PREFIX = "job="
STAGING_PREFIX = ".staging-"
DATA, LOG, COUNTS = "data", "log", "counts"
JOB_FILE = "_job.json"
WATERMARK_FILE = "_watermark.json"


def new_job_id(now: datetime | None = None) -> str:
    """A job's id: its start (UTC) and a random suffix, e.g. 20261203T154000Z-1a2b3c."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class OutputLake:
    """The scored lake at `uri` (a folder, file://, s3://, gs://)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root, self.local = lake_filesystem(uri)
        self.shown = redact_url(uri)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def uri_of(self, *parts: str) -> str:
        """A path under the lake as the user gave the lake (with its scheme)."""
        path = self._path(*parts)
        return path if self.local else f"{urlparse(self.uri).scheme}://{path}"

    def check(self, job_id: str) -> None:
        """Refuse an output that holds other data than job partitions, or this job's partition.

        Raises:
            PipelineInputError: one line naming the output and what is in the way.
        """
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return
        if not self.fs.isdir(self.root):
            raise PipelineInputError(f"output '{self.shown}': is a file, not a folder for a lake")
        for entry in self.fs.ls(self.root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith((JOB_PREFIX, STAGING_PREFIX)) or name == WATERMARK_FILE:
                continue
            raise PipelineInputError(
                f"output '{self.shown}': holds '{name}', which is not a batch-prediction job's "
                "partition (job=...); give an empty folder or an earlier job's output, never "
                "mixed with other data"
            )
        if self.fs.exists(self._path(f"{JOB_PREFIX}{job_id}")):
            raise PipelineInputError(
                f"output '{self.shown}': job {job_id} is already there; a job writes once"
            )

    def last_watermark(self) -> dict | None:
        """The watermark of the last job committed here, or None."""
        try:
            return json.loads(self.fs.cat_file(self._path(WATERMARK_FILE)))
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise PipelineInputError(
                f"output '{self.shown}': {WATERMARK_FILE} is not readable JSON ({error})"
            ) from None

    def staging(self, job_id: str) -> str:
        """The job's staging folder (created locally); its data, log and counts go inside."""
        path = self._path(f"{STAGING_PREFIX}{job_id}")
        if self.local:
            for part in (DATA, LOG, COUNTS):
                os.makedirs(f"{path}/{part}", exist_ok=True)
        return path

    def discard(self, job_id: str) -> None:
        """Remove the job's staging folder (a failed or stopped job); never raises."""
        path = self._path(f"{STAGING_PREFIX}{job_id}")
        try:
            if self.local:
                shutil.rmtree(path, ignore_errors=True)
            elif self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except Exception:  # cleanup of a job that already failed: its error is the one to show
            pass

    def commit(self, job_id: str, record: dict, watermark: dict | None) -> str:
        """Make the staged data the partition job=<id>; write its record and the watermark.

        Returns:
            The partition's URI.
        """
        staging = self._path(f"{STAGING_PREFIX}{job_id}")
        partition = self._path(f"{JOB_PREFIX}{job_id}")
        data = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
        if self.local:
            # The record goes in before the rename: the partition appears with it, whole.
            _write_local(f"{staging}/{DATA}/{JOB_FILE}", data)
            os.rename(f"{staging}/{DATA}", partition)
        else:
            self.fs.copy(f"{staging}/{DATA}", partition, recursive=True)
            self.fs.pipe_file(f"{partition}/{JOB_FILE}", data)
        if watermark is not None:
            text = json.dumps(watermark, indent=2, sort_keys=True).encode()
            if self.local:
                _write_local(self._path(WATERMARK_FILE), text)
            else:
                self.fs.pipe_file(self._path(WATERMARK_FILE), text)
        return self.uri_of(f"{JOB_PREFIX}{job_id}")


def _write_local(path: str, data: bytes) -> None:
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        Path(temporary).write_bytes(data)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def publish_log_files(
    output: OutputLake, job_id: str, log_uri: str, model_name: str, day: str
) -> int:
    """Move the job's staged prediction-log files into the prediction log's layout
    (<log>/model=<name>/date=<day>/part-....parquet); each appears whole (a rename on one local
    disk, else components.common.prediction_log.put_file). Returns the number of files."""
    staged = output._path(f"{STAGING_PREFIX}{job_id}", LOG)
    output.fs.invalidate_cache()
    if not output.fs.exists(staged):
        return 0
    names = sorted(e for e in output.fs.ls(staged, detail=False) if e.endswith(".parquet"))
    log_fs, log_root, log_local = lake_filesystem(log_uri)
    folder = f"{log_root}/model={model_name}/date={day}"
    for entry in names:
        target = f"{folder}/{entry.rsplit('/', 1)[-1]}"
        if log_local and output.local:
            os.makedirs(folder, exist_ok=True)
            try:
                os.replace(entry, target)
                continue
            except OSError:  # another disk: copied under a temporary name, then renamed
                pass
        put_file(log_fs, log_local, folder, target, output.fs.cat_file(entry))
    return len(names)
