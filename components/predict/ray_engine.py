"""The Ray engine: Ray Data reads the input's Parquet files, `map_batches` scores them on a pool
of actors (each builds the model once, from the verified bytes the driver read), and
`write_parquet` writes the scored rows into the job's staging folder; the job then commits it
as the local engine's output is committed (components.predict.logic).

The same code runs on an embedded Ray on 127.0.0.1 (ray.address empty, RAY_ADDRESS unset) and
on a cluster (ray.address, the KubeRay cluster the tune step uses): the address is probed with a
deadline first, so one that does not answer fails with one line instead of Ray's minutes of
retries (components.common.ray_cluster). On a cluster the input, the output and the prediction
log must be URIs every node reaches (s3://, gs://), and the nodes run the project's image.

Each actor writes its batches' prediction-log rows and contract counts beside the data, in the
staging folder; the driver adds the counts up, and the commit publishes the log files.
"""

import json
import re
import uuid
from datetime import datetime

import pyarrow as pa

from components.common.errors import PipelineInputError
from components.common.lake_source import Source, filter_expression
from components.common.prediction_log import lake_filesystem, put_file
from components.common.ray_cluster import ray_session
from components.common.schema import feature_names
from components.predict.batch import score_table
from components.predict.input_check import ContractCounts
from components.predict.output import COUNTS, DATA, LOG
from components.predict.scoring import ModelPayload, load_model


class ScoreBatches:
    """Ray Data's callable class: the model is built once per actor, then every batch it is
    given is scored; its log rows and counts are written into the staging folder."""

    def __init__(
        self,
        payload: ModelPayload,
        key_columns: list[str],
        staging_uri: str,
        job_id: str,
        when: datetime,
        log: bool,
        contract: dict | None,
        severity: dict,
        null_rate_margin: float,
        features: list[str],
    ):
        # One onnxruntime / BLAS thread per actor: Ray gives each actor its CPU.
        self.model = load_model(payload, threads=1)
        self.key_columns = key_columns
        self.fs, self.staging, self.local = lake_filesystem(staging_uri)
        self.job_id = job_id
        self.when = when
        self.log = log
        self.counts_of = lambda: ContractCounts(contract, severity, null_rate_margin, features)

    def __call__(self, table: pa.Table) -> pa.Table:
        batch_id = uuid.uuid4().hex[:12]
        scored, logged, received = score_table(
            self.model, table, self.key_columns, f"batch-{self.job_id}-{batch_id}", self.when
        )
        counts = self.counts_of()
        counts.add(received)
        if self.log:
            self._put(LOG, f"part-{self.job_id}-{batch_id}.parquet", _parquet(logged))
        self._put(COUNTS, f"{batch_id}.json", json.dumps(counts.as_dict()).encode())
        return scored

    def _put(self, folder: str, name: str, data: bytes) -> None:
        put_file(
            self.fs, self.local, f"{self.staging}/{folder}", f"{self.staging}/{folder}/{name}", data
        )


def _parquet(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="lz4")
    return sink.getvalue().to_pybytes()


def _cause(error: BaseException) -> str | None:
    """The message of the PipelineInputError a Ray task raised, if that is what failed: through
    Ray's wrappers (their causes), else from the remote traceback Ray's message carries."""
    seen = set()
    current = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PipelineInputError):
            return str(current)
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    found = re.findall(
        r"(?m)^\s*(?:[\w.]+\.)?(?:PipelineInputError|ModelIntegrityError): (.+)$", str(error)
    )
    return found[-1].strip() if found else None


def score_with_ray(
    job,
    source: Source,
    files: list[str] | None,
    columns: list[str],
    payload: ModelPayload,
    output,
    staging: str,
    job_id: str,
    now: datetime,
    counts: ContractCounts,
) -> int:
    """Score the input with Ray Data into <staging>/data; returns the rows scored.

    Raises:
        PipelineInputError: a CSV input, the cluster does not answer, or a batch's bad input.
    """
    if source.format != "parquet":
        raise PipelineInputError(
            f"data source '{source.uri}': the ray engine reads Parquet; score a CSV file with "
            "predict.engine local"
        )
    base = source.path.rstrip("/")
    paths = [f"{base}/{name}" for name in files] if files is not None else [source.path]
    staging_uri = output.uri_of(staging.rsplit("/", 1)[-1])
    with ray_session(job.ray_num_cpus, job.ray_address, job.ray_timeout_s):
        import ray.data
        from ray.data.datasource.partitioning import Partitioning

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        filters = filter_expression([list(f) for f in job.filters], source.uri)
        options = {"filter": filters} if filters is not None else {}
        dataset = ray.data.read_parquet(
            paths,
            filesystem=_arrow_filesystem(source),
            columns=columns,
            partitioning=Partitioning("hive", base_dir=base) if source.is_lake else None,
            **options,
        )
        features = feature_names(payload.metadata["schema"])
        scored = dataset.map_batches(
            ScoreBatches,
            fn_constructor_kwargs={
                "payload": payload,
                "key_columns": job.key_columns,
                "staging_uri": staging_uri,
                "job_id": job_id,
                "when": now,
                "log": bool(job.log_uri),
                "contract": job.contract,
                "severity": job.severity,
                "null_rate_margin": job.null_rate_margin,
                "features": features,
            },
            batch_format="pyarrow",
            batch_size=job.batch_rows,
            # From one actor up to one per CPU: a pool that starts at every CPU leaves none for
            # listing and reading the files, and waits for ever. A cluster needs two CPUs in all
            # (a node of one CPU alone waits: its actor holds the CPU the reads need).
            compute=ray.data.ActorPoolStrategy(
                min_size=1, max_size=max(1, int(ray.cluster_resources().get("CPU", 1)))
            ),
        )
        try:
            scored.write_parquet(output.uri_of(staging.rsplit("/", 1)[-1], DATA))
        except Exception as error:
            cause = _cause(error)
            if cause is not None:
                raise PipelineInputError(cause) from None
            raise
    rows = 0
    output.fs.invalidate_cache()
    for entry in output.fs.ls(f"{staging}/{COUNTS}", detail=False):
        reported = json.loads(output.fs.cat_file(entry))
        counts.merge(reported)
        rows += reported["rows"]
    return rows


def _arrow_filesystem(source: Source):
    """The source's filesystem as pyarrow takes it (fsspec's, wrapped)."""
    import pyarrow.fs as pafs

    return pafs.PyFileSystem(pafs.FSSpecHandler(source.fs))
