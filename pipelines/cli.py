"""mlpipe: run the pipeline locally, compile it for Kubeflow, submit it, or serve a model.

Errors are one line on stderr: exit code 2 for bad input (config, data, arguments), 1 for a
failed step or anything unexpected. --debug shows the traceback instead.
"""

import argparse
import os
import shlex
import socket
import sys
import traceback

from rich.console import Console
from rich.markup import escape

from components.common.errors import PipelineInputError, StepFailed
from pipelines.cli_options import add_set_option
from pipelines.feedback_cli import add_feedback_parser
from pipelines.loop_cli import add_loop_parser
from pipelines.models_cli import add_models_parser
from pipelines.monitor_cli import add_monitor_parser
from pipelines.predict_cli import add_predict_parser

# soft_wrap: paths and the curl line must stay copy-pasteable when the terminal is narrow.
console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FAILED = 1
# `mlpipe serve`'s prediction log: <output_root>/predictions of the default output_root.
DEFAULT_PREDICTION_LOG = "mlpipe-output/predictions"
# ... and its labels lake, which POST /admin/labels appends to: <output_root>/labels.
DEFAULT_LABELS = "mlpipe-output/labels"
EXIT_BAD_INPUT = 2
# What `mlpipe compile` and `mlpipe submit` take as --pipeline.
PIPELINES = ("training", "monitoring", "batch-prediction")


def _load_checked_config(path: str, check_data: bool = True, overrides: list | None = None):
    from pipelines.config import check_config, load_config

    config = load_config(path, overrides)
    check_config(config, path, check_data=check_data)
    return config


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PipelineInputError(
                f"cannot serve on {host}:{port}: {error.strerror} (set serving.port or --port)"
            ) from None


def _example_row(run) -> dict:
    """The first held-out row's features, as a client would send them."""
    from components.common.io import read_frame
    from components.common.schema import feature_names
    from components.deploy.logic import read_model_metadata, to_json_rows

    metadata = read_model_metadata(run.model_uri)
    test = sorted(run.artifacts_dir.glob("*/prepare/test"))[-1]
    features = read_frame(test)[feature_names(metadata["schema"])].head(1)
    return to_json_rows(features)[0]


def _local_path(uri: str) -> str:
    """A local folder as an absolute path (the server and the monitor agree on it); a URI as is."""
    from pathlib import Path

    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def cmd_run(args) -> int:
    from components.deploy.logic import curl_example
    from pipelines.local_run import RunInterrupted, run_pipeline

    config = _load_checked_config(args.config, overrides=args.set)
    host = args.host or config.serving.host
    port = args.port or config.serving.port
    if not args.no_serve:
        _check_port_free(host, port)
    console.print(
        f"[bold]mlpipe[/]: running [cyan]{config.model_name}[/] on kfp.local "
        f"(data {config.data.source or 'an ETL snapshot'}, {config.tuning.num_trials} trials, "
        f"{config.ray.num_cpus} CPUs for Ray)"
    )

    def started(run_id, run_dir) -> None:
        what = "resuming run" if args.resume else "run"
        console.print(f"{what} {run_id}  ({run_dir})")

    try:
        run = run_pipeline(
            config,
            verbose=args.verbose,
            resume=args.resume or "",
            use_cache=not args.no_cache,
            on_start=started,
            training_mode=args.mode,
            trigger=args.trigger,
        )
    except RunInterrupted as stop:  # its processes are gone and the registry put back
        return _interrupted(stop, _resume_command(args, stop.run_id))
    except StepFailed as failure:
        errors.print(f"[bold red]error[/]: pipeline step failed: {escape(str(failure))}")
        if failure.run_id:  # on stdout: the error stays one line on stderr
            console.print(
                "after a fix, continue with: " + escape(_resume_command(args, failure.run_id))
            )
        return EXIT_FAILED
    url = f"http://{host}:{port}"
    if run.skipped:  # an incremental run with nothing new: said so, nothing registered
        console.print(
            f"\n[bold]Run {run.run_id}[/]: nothing registered: {escape(run.plan['reason'])}"
        )
        return 0
    console.print(f"\n[bold green]Run {run.run_id} finished[/] in {run.seconds:.0f} s")
    if run.plan is not None:
        console.print(f"  training   {escape(run.plan['mode'])}: {escape(run.plan['reason'])}")
    origins = list((run.steps or {}).values())
    reused = len(origins) - origins.count("ran")
    if reused:
        console.print(
            f"  steps      {origins.count('ran')} ran, {reused} reused with the same content key "
            f"({origins.count('cache')} from the step cache, {origins.count('resumed')} "
            "from this run)"
        )
    console.print(f"  artifacts  {run.artifacts_dir}")
    console.print(f"  report     {run.report}")
    console.print(f"  log        {run.log}")
    contract = sorted(run.artifacts_dir.glob("*/validate/contract"))
    if contract and not config.contract.path:
        console.print(
            f"  contract   {contract[-1]}  (inferred: review it, commit it, set contract.path)"
        )
    console.print(f"  pipeline   {run.pipeline_file}  (upload this file in the Kubeflow dashboard)")
    console.print(f"  model      {config.model_name} {run.model_version}  ({run.model_uri})")
    # The deploy step's smoke traffic is logged there too (with serving.log_predictions), so
    # the line is shown also with --no-serve.
    prediction_log = (
        _local_path(config.prediction_log_uri) if config.serving.log_predictions else None
    )
    if prediction_log is not None:
        console.print(
            f"  requests   {prediction_log}  (the prediction log: mlpipe monitor reads it)"
        )
    if run.html_report is not None:
        console.print(f"  page       {run.html_report}  (the run report: open it in a browser)")
    if run.onnx_model is not None:
        console.print(
            f"  edge       {run.onnx_model}  (ONNX; examples/onnx_client.py predicts with "
            "onnxruntime alone)"
        )
    console.print(
        f"  loop       mlpipe loop --config {args.config} --server URL  (monitor, retrain when "
        "it says so, promote, reload; `make loop` shows it once on drifted data)"
    )
    fairness_page = f"  ({run.fairness_report})" if run.fairness_report else ""
    console.print(f"  fairness   {escape(run.fairness_reason)}{fairness_page}")
    champion = run.champion or "none"
    if run.blessed:
        console.print(f"  gate       [bold green]{escape(run.reason)}[/]")
        console.print(f"  champion   {champion}  (deployed and promoted)")
    else:
        console.print(f"  gate       [bold red]{escape(run.reason)}[/]")
        console.print(
            f"  champion   {champion}  (unchanged; {run.model_version} is the candidate: "
            f"mlpipe models promote {run.model_version} --config {args.config} to override)"
        )
        if args.require_blessed:
            errors.print(
                f"[bold red]not blessed[/]: {config.model_name} {run.model_version} was "
                "registered as the candidate, not deployed"
            )
            return EXIT_FAILED
    if not run.champion:
        if args.no_serve:
            return 0
        errors.print(
            f"[bold red]nothing to serve[/]: {config.model_name} has no champion yet "
            f"({run.model_version} was not blessed)"
        )
        return EXIT_FAILED
    if args.no_serve:
        console.print(
            f"  serve it   mlpipe serve --model-store {config.model_store_uri} "
            f"--name {config.model_name}  (the champion; SIGHUP re-reads the alias)"
        )
        return 0
    console.print(
        f"  endpoint   {url}/v1/models/{config.model_name}:predict  (and V2: "
        f"{url}/v2/models/{config.model_name}/infer)"
    )
    console.print("  try        " + escape(curl_example(url, config.model_name, _example_row(run))))
    which = "the new model" if run.blessed else f"the champion {run.champion}"
    console.print(
        f"\nServing {which} until Ctrl-C (the champion alias: after `mlpipe models promote`, "
        f"kill -HUP {os.getpid()} to switch, or POST /admin/reload with 'Authorization: Bearer "
        "$MLPIPE_ADMIN_TOKEN' if that variable is set here)."
    )
    return _serve(
        host,
        port,
        model_store=config.model_store_uri,
        name=config.model_name,
        prediction_log=None if args.no_prediction_log else prediction_log,
        labels=_local_path(config.labels_uri),
    )


def _serve(host: str, port: int, **where) -> int:
    from serving.server import serve

    serve(host=host, port=port, **where)
    return 0


def cmd_serve(args) -> int:
    from components.deploy.logic import read_model_metadata

    if bool(args.model_dir) == bool(args.model_store):
        raise PipelineInputError("mlpipe serve: give --model-dir, or --model-store with --name")
    _check_port_free(args.host, args.port)
    prediction_log = None if args.no_prediction_log else _local_path(args.prediction_log)
    labels = _local_path(args.labels)
    logged = (
        f"; the prediction log: {prediction_log}"
        if prediction_log
        else "; the prediction log is off"
    )
    if args.model_dir:
        if "://" not in args.model_dir:
            read_model_metadata(args.model_dir)  # a clear error before the server starts
        console.print(
            f"Serving {args.model_dir} at http://{args.host}:{args.port} until Ctrl-C{logged}."
        )
        return _serve(
            args.host,
            args.port,
            model_dir=args.model_dir,
            prediction_log=prediction_log,
            labels=labels,
        )
    if not args.name:
        raise PipelineInputError("mlpipe serve: --model-store needs --name")
    console.print(
        f"Serving {args.name} {args.alias} from {args.model_store} at "
        f"http://{args.host}:{args.port} until Ctrl-C (SIGHUP re-reads the alias){logged}."
    )
    return _serve(
        args.host,
        args.port,
        model_store=args.model_store,
        name=args.name,
        alias=args.alias,
        prediction_log=prediction_log,
        labels=labels,
    )


def cmd_compile(args) -> int:
    if args.pipeline == "monitoring":
        from pipelines.monitoring_pipeline import compile_pipeline
    elif args.pipeline == "batch-prediction":
        from pipelines.batch_prediction_pipeline import compile_pipeline
    else:
        from pipelines.training_pipeline import compile_pipeline

    resources = None
    if args.config:  # only its `resources:` reach the spec; the rest are run parameters
        resources = _load_checked_config(args.config, check_data=False).resources
    module = args.pipeline.replace("-", "_")
    output = compile_pipeline(args.output or f"{module}_pipeline.yaml", resources=resources)
    submit = "mlpipe submit" + (
        f" --pipeline {args.pipeline}" if args.pipeline != "training" else ""
    )
    console.print(
        f"Compiled the {args.pipeline} pipeline to {output}; upload it in the Kubeflow dashboard "
        f"(Pipelines > Upload pipeline) or submit it with `{submit}`."
    )
    return 0


def cmd_submit(args) -> int:
    from pipelines.submit import SubmitFailed, submit_run

    def show(made) -> None:  # once the run exists: where to find it, before --wait follows it
        kind = "recurring run" if made.recurring_run_id else "run"
        created = made.recurring_run_id or made.run_id
        uploaded = "uploaded now" if made.version_uploaded else "already there"
        console.print(f"Created {kind} {created} on {args.host}")
        if made.recurring_run_id:
            console.print(f"  recurring run  {created}  (cron '{args.schedule}')")
        else:
            console.print(f"  run            {created}")
        console.print(
            f"  version        {made.version_id}  ('{made.version_name}' of pipeline "
            f"{made.pipeline_name}, {uploaded})"
        )
        console.print(f"  experiment     {made.experiment_id}  ({args.experiment})")
        console.print(f"  details        {made.url}")

    config = _load_checked_config(args.config, check_data=False, overrides=args.set)
    try:
        made = submit_run(
            config,
            args.host,
            experiment=args.experiment,
            run_name=args.run_name,
            namespace=args.namespace,
            service_account=args.service_account,
            enable_caching=args.enable_caching,
            wait=args.wait,
            timeout=args.timeout,
            run_timeout=args.run_timeout,
            schedule=args.schedule,
            pipeline_name=args.pipeline_name or None,
            on_created=show,
            pipeline=args.pipeline,
            training_mode=args.mode,
        )
    except SubmitFailed as error:  # the server refused, or the followed run did not succeed
        if args.debug:
            traceback.print_exc()
        errors.print(f"[bold red]error[/]: {escape(str(error))}")
        return EXIT_FAILED
    if made.state:
        console.print(f"Run {made.run_id} {made.state}")
    return 0


def cmd_pipeline_resources(args) -> int:
    from pipelines.kfp_resources import write_pipeline_resources

    names = {"name": args.pipeline_name} if args.pipeline_name else {}
    if args.config:
        names["resources"] = _load_checked_config(args.config, check_data=False).resources
    pipeline, version = write_pipeline_resources(args.output, namespace=args.namespace, **names)
    console.print(
        f"Wrote {pipeline['kind']} {pipeline['metadata']['name']} and {version['kind']} "
        f"{version['metadata']['name']} (namespace {args.namespace}) to {args.output}"
    )
    return 0


def cmd_contract(args) -> int:
    import yaml

    from components.common.io import write_text
    from components.common.lake_source import resolve_source
    from components.ingest.logic import read_source
    from components.validate.contract import infer_contract
    from pipelines.config import load_config

    config = load_config(args.config)
    if not config.data.source:
        raise PipelineInputError(
            f"{args.config}: mlpipe contract reads data.source; with data.etl, infer the "
            "contract from the snapshot's data.parquet (its path is in the run's ingest metadata)"
        )
    frame, _ = read_source(
        resolve_source(config.data.source),
        na_values=config.data.na_values,
        columns=config.data.columns,
        filters=[list(f) for f in config.data.filters],
    )
    write_text(args.output, yaml.safe_dump(infer_contract(frame), sort_keys=False))
    console.print(
        f"Inferred a data contract from {len(frame)} rows of {config.data.source} into "
        f"{args.output}: review it, commit it, and set contract.path in the run config."
    )
    return 0


def cmd_demo_data(args) -> int:
    from pipelines.config import load_config
    from pipelines.demo_data import write_arrests_lake

    config = load_config(args.config)
    lake, rows = write_arrests_lake(config.data.source)
    console.print(f"Demo data: {rows} rows of Toronto arrests in the Parquet lake {lake}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlpipe",
        description="Kubeflow training pipeline: run locally, compile, submit, serve.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the whole pipeline locally (kfp.local), then serve")
    run.add_argument("--config", required=True, help="the run config YAML")
    run.add_argument("--no-serve", action="store_true", help="exit after the run")
    add_set_option(run)
    run.add_argument("--host", help="serve on this address (default: serving.host, 127.0.0.1)")
    run.add_argument("--port", type=int, help="serve on this port (default: serving.port)")
    run.add_argument(
        "--no-prediction-log",
        action="store_true",
        help="serve without writing the prediction log (default: serving.log_predictions "
        "into serving.prediction_log, <output_root>/predictions)",
    )
    run.add_argument("--verbose", action="store_true", help="show every line of every step's log")
    run.add_argument(
        "--mode",
        choices=("full", "incremental"),
        default="full",
        help="full: ingest everything, search, fit (default); incremental: update the champion "
        "with what is new since its training watermark (retraining.* in the config)",
    )
    run.add_argument(
        "--trigger",
        choices=("manual", "monitor", "schedule"),
        default="manual",
        help="what started this run, recorded in the new version's lineage",
    )
    run.add_argument(
        "--require-blessed", action="store_true", help="exit 1 when the gate does not bless it"
    )
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue a failed or interrupted run from its first unfinished step, with its own "
        "recorded arguments (finished steps are reused once their files verify)",
    )
    run.add_argument(
        "--no-cache",
        action="store_true",
        help="run every step, reusing nothing from earlier runs (the step cache)",
    )
    run.set_defaults(handler=cmd_run)

    compile_ = commands.add_parser("compile", help="write the pipeline's IR YAML for the dashboard")
    compile_.add_argument(
        "--pipeline", choices=PIPELINES, default="training", help="which pipeline to compile"
    )
    compile_.add_argument("--output", help="where to write it (default: <pipeline>_pipeline.yaml)")
    compile_.add_argument(
        "--config", help="a run config whose `resources:` set the pods' requests and limits"
    )
    compile_.set_defaults(handler=cmd_compile)

    submit = commands.add_parser("submit", help="create a run on a Kubeflow Pipelines host")
    submit.add_argument("--config", required=True, help="the run config YAML")
    submit.add_argument(
        "--host", required=True, help="the KFP API endpoint, e.g. http://localhost:8080"
    )
    add_set_option(submit)
    submit.add_argument("--experiment", default="mlpipe")
    submit.add_argument("--run-name")
    submit.add_argument("--namespace", help="the Kubeflow profile namespace (multi-user installs)")
    submit.add_argument(
        "--service-account", help="the Kubernetes service account the run's pods use"
    )
    submit.add_argument("--enable-caching", action="store_true")
    submit.add_argument(
        "--wait", action="store_true", help="follow the run; exit 1 unless it succeeds"
    )
    submit.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the host")
    submit.add_argument(
        "--run-timeout", type=float, default=3600.0, help="seconds that --wait follows the run"
    )
    submit.add_argument(
        "--schedule",
        metavar="CRON",
        help="a recurring run instead: six cron fields, seconds first, e.g. '0 0 3 * * *'",
    )
    submit.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="training",
        help="training, or monitoring: the monitor on a schedule (--schedule), retraining "
        "when it says retrain; or batch-prediction: data.source scored into predict.output",
    )
    submit.add_argument(
        "--mode",
        choices=("full", "incremental"),
        default="full",
        help="the training pipeline's run: full, or incremental (update the champion with what "
        "is new); with --schedule its lineage says trigger 'schedule'",
    )
    submit.add_argument(
        "--pipeline-name",
        help="the pipeline to add a version to (default: mlpipe-training or mlpipe-monitoring)",
    )
    submit.set_defaults(handler=cmd_submit)

    resources = commands.add_parser(
        "pipeline-resources",
        help="write the pipeline as KFP Kubernetes-native Pipeline/PipelineVersion resources",
    )
    resources.add_argument("--output", required=True, help="the multi-document YAML to write")
    resources.add_argument("--namespace", default="mlpipe", help="the resources' namespace")
    resources.add_argument("--pipeline-name", help="the Pipeline's name (default: mlpipe-training)")
    resources.add_argument(
        "--config", help="a run config whose `resources:` set the pods' requests and limits"
    )
    resources.set_defaults(handler=cmd_pipeline_resources)

    serve = commands.add_parser("serve", help="serve a registered model version with KServe")
    serve.add_argument("--model-dir", help="a version folder, e.g. .../models/NAME/v1 (or s3://…)")
    serve.add_argument("--model-store", help="or: a model store, serving the alias's version")
    serve.add_argument("--name", help="the model's name in the store")
    serve.add_argument("--alias", default="champion", help="champion, candidate or a version")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--prediction-log",
        default=DEFAULT_PREDICTION_LOG,
        metavar="URI",
        help="record every answered prediction in this Parquet lake (a folder, s3://, gs://; "
        f"default {DEFAULT_PREDICTION_LOG})",
    )
    serve.add_argument(
        "--no-prediction-log", action="store_true", help="do not write the prediction log"
    )
    serve.add_argument(
        "--labels",
        default=DEFAULT_LABELS,
        metavar="URI",
        help="the labels lake POST /admin/labels appends to, with the prediction log and "
        f"MLPIPE_ADMIN_TOKEN (default {DEFAULT_LABELS})",
    )
    serve.set_defaults(handler=cmd_serve)

    contract = commands.add_parser(
        "contract", help="infer a data contract from the config's data source, to review"
    )
    contract.add_argument("--config", required=True)
    contract.add_argument("--output", required=True, help="the contract YAML to write")
    contract.set_defaults(handler=cmd_contract)

    demo = commands.add_parser("demo-data", help="write the demo data lake named by a run config")
    demo.add_argument("--config", required=True)
    demo.set_defaults(handler=cmd_demo_data)
    add_models_parser(commands)
    add_feedback_parser(commands)
    add_monitor_parser(commands)
    add_predict_parser(commands)
    add_loop_parser(commands)
    return parser


def _resume_command(args, run_id: str) -> str:
    """The command that continues run `run_id` from its first unfinished step."""
    command = ["mlpipe", "run", "--config", args.config, "--resume", run_id]
    if args.no_serve:
        command.append("--no-serve")
    return shlex.join(command)


def _interrupted(stop, resume_command: str) -> int:
    """The one line after Ctrl-C or SIGTERM stopped a run; exit 128 + the signal (130, 143)."""
    if stop.error:
        registry = f"the registry could not be put back ({stop.error})"
    elif stop.undone:
        registry = f"the registry is as it was ({', '.join(stop.undone)})"
    else:
        registry = "the registry is as it was"
    errors.print(
        f"interrupted: stopped {stop.stopped} processes; {escape(registry)}; resume with: "
        + escape(resume_command)
    )
    return 128 + stop.signum


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except PipelineInputError as error:
        if args.debug:
            traceback.print_exc()
        errors.print(f"[bold red]error[/]: {escape(str(error))}")
        return EXIT_BAD_INPUT
    except StepFailed as error:
        if args.debug:
            traceback.print_exc()
        errors.print(f"[bold red]error[/]: pipeline step failed: {escape(str(error))}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    except Exception as error:  # the last resort: one line, the traceback only with --debug
        if args.debug:
            traceback.print_exc()
        errors.print(
            f"[bold red]error[/]: {type(error).__name__}: {escape(str(error))} "
            "(--debug shows the traceback)"
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
