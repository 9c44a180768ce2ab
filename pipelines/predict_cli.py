"""`mlpipe predict`: score a lake, a file or an s3:// source with a registered version, here.

It runs the batch-prediction pipeline's one step (components.predict.logic.run_job) in this
process with the arguments the compiled pipeline (pipelines/batch_prediction_pipeline.yaml) gets
(`batch_prediction_arguments`, which `mlpipe submit --pipeline batch-prediction` sends too).
"""

import signal
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False, soft_wrap=True)
DEFAULT_ALIAS = "champion"


def batch_prediction_arguments(
    config,
    input_uri: str = "",
    output_uri: str = "",
    model_ref: str = DEFAULT_ALIAS,
    resolve_paths: bool = True,
) -> dict:
    """The batch-prediction pipeline's parameters for a checked run config.

    Args:
        input_uri: the source to score (default: data.source).
        output_uri: the scored lake (default: predict.output, <output_root>/batch-predictions).
        model_ref: a version (v3) or an alias (champion).
        resolve_paths: make local paths absolute (local runs); a cluster run passes URIs as given.
    """
    from pipelines.config import pipeline_arguments, section_parameter

    def local(uri: str) -> str:
        if resolve_paths and uri and "://" not in uri:
            return str(Path(uri).expanduser().resolve())
        return uri

    training = pipeline_arguments(config, resolve_paths)
    output = local(output_uri or config.batch_output_uri)
    return {
        "model_name": training["model_name"],
        "model_store_uri": training["model_store_uri"],
        "model_ref": model_ref,
        "input_uri": local(input_uri or config.data.source),
        "output_uri": output,
        "data": training["data"],
        "since_watermark": training["since_watermark"],
        "contract": training["contract"],
        "reviewed_contract": training["reviewed_contract"],
        "ray": training["ray"],
        "serving": training["serving"],
        "predict": section_parameter(config.predict, output=output),
    }


def describe(record: dict, seconds: float) -> list[str]:
    """What a job did, in a few lines for the terminal."""
    model = record["model"]
    if record.get("nothing_new"):
        return [f"Nothing to score, nothing written: {record['nothing_new']}"]
    lines = [
        f"Scored {record['rows']:,} rows of {record['input']} ({record['files_read']} files"
        f"{', new since the watermark' if record['incremental'] else ''}) with {model['name']} "
        f"{model['version']} ({model['runtime']}, {record['engine']} engine) in {seconds:.1f} s",
        f"output     {record['partition']}",
    ]
    if "log_files" in record:
        lines.append(f"logged     {record['log_files']} prediction-log files")
    for rule, columns in sorted(record["contract_warnings"].items()):
        counted = ", ".join(f"{column} {rows:,} rows" for column, rows in sorted(columns.items()))
        lines.append(f"contract   warn {rule}: {counted}")
    return lines


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_predict(args) -> int:
    import os

    from pipelines.cli import _load_checked_config

    config = _load_checked_config(args.config, check_data=False, overrides=args.set)
    # Before Ray is imported: a driver that joins a cluster keeps Ray's normal networking
    # (components.predict pins only an embedded Ray to loopback).
    if config.ray.address:
        os.environ.setdefault("RAY_ADDRESS", config.ray.address)
    from components.predict.logic import run_job

    arguments = batch_prediction_arguments(
        config, args.input or "", args.output or "", args.version or args.alias
    )
    started = time.monotonic()
    # SIGTERM as Ctrl-C: the job removes its staging folder (and stops an embedded Ray) on
    # the way out, and the command exits 130 with one line.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        record = run_job(**arguments)
    finally:
        signal.signal(signal.SIGTERM, previous)
    for line in describe(record, time.monotonic() - started):
        console.print(escape(line))
    return 0


def add_predict_parser(commands) -> None:
    from pipelines.cli_options import add_set_option

    predict = commands.add_parser(
        "predict", help="score a lake, file or s3:// source with a registered model version"
    )
    predict.add_argument("--config", required=True, help="the run config YAML")
    predict.add_argument(
        "--input",
        help="the source: a Parquet lake folder, a Parquet or CSV file (default: data.source)",
    )
    predict.add_argument(
        "--output",
        help="the scored lake; each job adds a partition job=<id> "
        "(default: predict.output, <output_root>/batch-predictions)",
    )
    which = predict.add_mutually_exclusive_group()
    which.add_argument("--version", help="a registered version, e.g. v3")
    which.add_argument(
        "--alias", default=DEFAULT_ALIAS, help=f"an alias (default: {DEFAULT_ALIAS})"
    )
    add_set_option(predict, "predict.key_columns=[id]")
    predict.set_defaults(handler=cmd_predict)
