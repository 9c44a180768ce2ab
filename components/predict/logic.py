"""A batch prediction job: read a source as ingest reads it, check it against the model, score
every row, and commit the scored lake (and the prediction log's copy) atomically.

    predict_batch(job, payload) -> the job's record (also the partition's _job.json)

The input is any source ingest reads (components.common.lake_source): a Parquet lake folder, a
Parquet or CSV file, local or on an object store, with column projection (the model's features
and the key columns only are read), data.filters, and a watermark: `since` (a watermark from an
earlier read), or, with since_last_job, the watermark the last job committed to this output.

Two engines, one scoring code (components.predict.batch):

- local: the input is streamed as Arrow record batches of `batch_rows` rows (pyarrow's dataset
  scanner), each scored and written before the next is read: memory holds a few batches, not
  the input;
- ray: Ray Data (components.predict.ray_engine), on `ray.address` or an embedded Ray on
  127.0.0.1.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as ds

from components.common.errors import PipelineInputError
from components.common.lake_source import (
    NothingNew,
    Source,
    files_since,
    filter_expression,
    is_text,
    parquet_dataset,
    resolve_source,
)
from components.common.ray_cluster import cluster_address
from components.common.schema import feature_names
from components.common.secrets import redact_url
from components.predict.batch import PartWriter, score_table
from components.predict.input_check import ContractCounts, check_columns
from components.predict.output import DATA, LOG, OutputLake, new_job_id, publish_log_files
from components.predict.scoring import ModelPayload, load_model

ENGINES = ("auto", "local", "ray")
# Rows per output file (a reader's unit), and per prediction-log file.
OUTPUT_FILE_ROWS = 1_000_000
LOG_FILE_ROWS = 500_000


@dataclass
class BatchJob:
    """What to score and where to write it (the run config's predict, data, contract and ray
    sections, and the command's --input and --output)."""

    input_uri: str
    output_uri: str
    key_columns: list[str] = field(default_factory=list)
    batch_rows: int = 65_536
    engine: str = "auto"
    since: dict | None = None
    since_last_job: bool = False
    filters: list = field(default_factory=list)
    na_values: list[str] = field(default_factory=list)
    log_uri: str = ""  # the prediction log; empty: not written
    contract: dict | None = None
    severity: dict = field(default_factory=dict)
    null_rate_margin: float = 0.0
    ray_address: str = ""
    ray_num_cpus: int = 2
    ray_timeout_s: float = 30.0


def chosen_engine(job: BatchJob) -> str:
    """ray when asked for, or with auto when a cluster address is configured; else local."""
    if job.engine not in ENGINES:
        raise PipelineInputError(
            f"predict.engine '{job.engine}': expected one of {', '.join(ENGINES)}"
        )
    if job.engine == "auto":
        return "ray" if cluster_address(job.ray_address) else "local"
    return job.engine


def input_dataset(source: Source, files: list[str] | None, na_values: list[str]) -> ds.Dataset:
    """The source as a pyarrow dataset, scanned in batches: Parquet (a lake's `files`, or the
    file) or a CSV file (`na_values` read as missing, as ingest reads it)."""
    if source.format == "parquet":
        dataset = parquet_dataset(source, files)
        # Text read as dictionaries, as ingest reads it: a code per row, each string once (the
        # model's input and the log are made from the codes).
        text = [field.name for field in dataset.schema if is_text(field.type)]
        return parquet_dataset(source, files, dictionary_columns=text) if text else dataset
    import pyarrow.csv as pacsv

    nulls = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", *na_values]
    csv = ds.CsvFileFormat(
        convert_options=pacsv.ConvertOptions(null_values=nulls, strings_can_be_null=True)
    )
    try:
        return ds.dataset(source.path, filesystem=source.fs, format=csv)
    except (pa.ArrowInvalid, OSError) as error:
        raise PipelineInputError(f"data source '{source.uri}': cannot read CSV: {error}") from None


def predict_batch(
    job: BatchJob, payload: ModelPayload, job_id: str | None = None, now: datetime | None = None
) -> dict:
    """Score `job.input_uri` with the version in `payload` into `job.output_uri`.

    Returns:
        The job's record: job id, partition URI, model (name, version, runtime), engine, rows,
        files read, the watermark, and the contract's warnings ({rule: {column: rows}}).

    Raises:
        PipelineInputError: one line: the input, the output, a column, a contract rule set to
            block, or the Ray cluster; nothing is left in the output.
    """
    now = now or datetime.now(UTC)
    job_id = job_id or new_job_id(now)
    engine = chosen_engine(job)
    metadata = payload.metadata
    model_name, version, schema = metadata["name"], metadata["version"], metadata["schema"]
    where = f"input '{redact_url(job.input_uri)}' (model {model_name} {version})"
    output = OutputLake(job.output_uri)
    output.check(job_id)
    source = resolve_source(job.input_uri)
    since = job.since
    if since is None and job.since_last_job:
        since = output.last_watermark()
    try:
        watermark, files = files_since(source, since)
    except NothingNew as nothing:
        # A scheduled job on a lake that did not grow: done, nothing written (not a failure).
        return {
            "job_id": job_id,
            "time": now.isoformat(timespec="seconds"),
            "input": redact_url(job.input_uri),
            "model": {"name": model_name, "version": version, "runtime": payload.runtime},
            "engine": engine,
            "rows": 0,
            "partition": "",
            "nothing_new": str(nothing),
        }
    dataset = input_dataset(source, files, job.na_values)
    check_columns(dataset.schema, schema, job.key_columns, where)
    columns = list(dict.fromkeys([*job.key_columns, *feature_names(schema)]))
    counts = ContractCounts(
        job.contract, job.severity, job.null_rate_margin, columns=feature_names(schema)
    )
    staging = output.staging(job_id)
    try:
        if engine == "ray":
            from components.predict.ray_engine import score_with_ray

            rows = score_with_ray(
                job, source, files, columns, payload, output, staging, job_id, now, counts
            )
        else:
            rows = _score_locally(
                job, dataset, source, columns, payload, output, staging, job_id, now, counts
            )
        if rows == 0:
            raise PipelineInputError(f"{where}: no rows to score (after data.filters)")
        counts.check_blocking(where)
        record = {
            "job_id": job_id,
            "time": now.isoformat(timespec="seconds"),
            "input": redact_url(job.input_uri),
            "files_read": len(files) if files is not None else 1,
            "incremental": since is not None,
            "model": {"name": model_name, "version": version, "runtime": payload.runtime},
            "engine": engine,
            "rows": rows,
            "key_columns": job.key_columns,
            "contract_warnings": counts.warnings(),
            "watermark": watermark,
        }
        record["partition"] = output.commit(job_id, record, watermark)
        if job.log_uri:
            record["log_files"] = publish_log_files(
                output, job_id, job.log_uri, model_name, now.date().isoformat()
            )
    finally:
        output.discard(job_id)
    return record


def _score_locally(
    job: BatchJob,
    dataset: ds.Dataset,
    source: Source,
    columns: list[str],
    payload: ModelPayload,
    output: OutputLake,
    staging: str,
    job_id: str,
    now: datetime,
    counts: ContractCounts,
) -> int:
    """Stream the dataset in record batches; score and write each before reading the next."""
    model = load_model(payload)
    data = PartWriter(output.fs, f"{staging}/{DATA}", max_rows=OUTPUT_FILE_ROWS)
    log = PartWriter(output.fs, f"{staging}/{LOG}", f"{job_id}-", max_rows=LOG_FILE_ROWS)
    expression = filter_expression([list(f) for f in job.filters], source.uri)
    try:
        for index, batch in enumerate(
            _batches(dataset, columns, expression, job.batch_rows, source)
        ):
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            scored, logged, received = score_table(
                model, table, job.key_columns, f"batch-{job_id}-{index}", now
            )
            counts.add(received)
            data.write(scored)
            if job.log_uri:
                log.write(logged)
    finally:
        data.close()
        log.close()
    return data.rows


def _batches(dataset: ds.Dataset, columns: list[str], expression, batch_rows: int, source: Source):
    """The dataset's record batches, one file at a time: a scanner over the whole dataset reads
    ahead across files as fast as it can (hundreds of MB while the first batches are scored), a
    file's scanner holds that file's batches at most."""
    try:
        for fragment in dataset.get_fragments(filter=expression):
            scanner = ds.Scanner.from_fragment(
                fragment,
                schema=dataset.schema,
                columns=columns,
                filter=expression,
                batch_size=batch_rows,
            )
            yield from scanner.to_batches()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise PipelineInputError(f"data source '{source.uri}': cannot read it: {error}") from None


def run_job(
    model_name: str,
    model_store_uri: str,
    model_ref: str,
    input_uri: str,
    output_uri: str,
    data: dict,
    since_watermark: str,
    contract: dict,
    reviewed_contract: str,
    ray: dict,
    serving: dict,
    predict: dict,
) -> dict:
    """A batch job from the run config's sections, as the pipeline's parameters carry them (the
    same arguments for `mlpipe predict` in process and for the pipeline's step).

    Args:
        model_ref: a version (v3) or an alias (champion, candidate).
        input_uri: the source to score; empty: data.source.
        output_uri: the scored lake; empty: predict.output.
        data: the `data:` section (filters, na_values).
        since_watermark: a watermark's JSON text (data.since_watermark), or empty.
        contract, reviewed_contract: the `contract:` section and the reviewed contract's JSON.
        ray, serving, predict: those sections (serving: the prediction log).

    Returns:
        The job's record (predict_batch).
    """
    import json

    from components.common.registry import ModelRegistry
    from components.common.settings.parse import parse_section
    from components.common.settings.sections import (
        ContractConfig,
        DataConfig,
        PredictConfig,
        RayConfig,
        ServingConfig,
    )
    from components.predict.scoring import read_payload

    data_ = parse_section(DataConfig, data, "data")
    contract_ = parse_section(ContractConfig, contract, "contract")
    ray_ = parse_section(RayConfig, ray, "ray")
    serving_ = parse_section(ServingConfig, serving, "serving")
    predict_ = parse_section(PredictConfig, predict, "predict")
    input_uri = input_uri or data_.source
    output_uri = output_uri or predict_.output
    if not input_uri:
        raise PipelineInputError("predict: no input (give --input, or data.source)")
    if not output_uri:
        raise PipelineInputError("predict: no output (give --output, or predict.output)")
    job = BatchJob(
        input_uri=input_uri,
        output_uri=output_uri,
        key_columns=predict_.key_columns,
        batch_rows=predict_.batch_rows,
        engine=predict_.engine,
        since=json.loads(since_watermark) if since_watermark else None,
        since_last_job=predict_.since_last_job,
        filters=[list(f) for f in data_.filters],
        na_values=data_.na_values,
        log_uri=serving_.prediction_log if predict_.log_predictions else "",
        contract=json.loads(reviewed_contract) if reviewed_contract else None,
        severity=contract_.severity,
        null_rate_margin=contract_.null_rate_margin,
        ray_address=ray_.address,
        ray_num_cpus=ray_.num_cpus,
        ray_timeout_s=ray_.connect_timeout_seconds,
    )
    payload = read_payload(ModelRegistry(model_store_uri, model_name), model_ref, predict_.runtime)
    return predict_batch(job, payload)
