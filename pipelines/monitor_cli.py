"""`mlpipe monitor`: monitor the champion once, here, and say what was decided.

It runs the monitoring pipeline's one step, the monitor (components.monitor.logic), in this
process with the arguments the compiled pipeline (pipelines/monitoring_pipeline.yaml) gets
(`monitoring_arguments`, which `mlpipe submit --pipeline monitoring` sends too): under kfp.local
the same run costs kfp's import, a second Python and the step's imports again, for nothing the
user sees (a test runs the compiled file under kfp.local).
"""

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from pipelines.cli_options import add_set_option

console = Console(highlight=False, soft_wrap=True)

# Exit codes: any decision is a successful run (0); --fail-on makes one at least that severe 3.
EXIT_DECISION = 3
SEVERITY = {"ok": 0, "warn": 1, "retrain": 2}


def monitoring_arguments(config, resolve_paths: bool = True) -> dict:
    """The monitoring pipeline's parameters for a checked run config (pipelines.config.RunConfig).

    Args:
        resolve_paths: make local paths absolute (local runs); a cluster run passes URIs as given.
    """
    from pipelines.config import pipeline_arguments, section_parameter

    training = pipeline_arguments(config, resolve_paths)
    state = config.monitoring_state_uri
    if resolve_paths and "://" not in state:
        state = str(Path(state).expanduser().resolve())
    # Everything the training pipeline takes, for the retraining nested in the monitoring
    # pipeline, but the data watermark: a retraining reads what its plan says.
    skipped = ("since_watermark",)
    return {
        **{key: value for key, value in training.items() if key not in skipped},
        "monitoring": section_parameter(config.monitoring, state=state),
    }


def monitor_once(config):
    """The monitor, once, in this process, with the monitoring pipeline's arguments."""
    from components.monitor.logic import monitor

    arguments = monitoring_arguments(config)
    return monitor(
        model_name=arguments["model_name"],
        model_store_uri=arguments["model_store_uri"],
        monitoring=arguments["monitoring"],
        evaluation=arguments["evaluation"],
        serving=arguments["serving"],
        data=arguments["data"],
        alerts=arguments["alerts"],
        state_uri=arguments["monitoring"]["state"],
        positive_class=arguments["positive_class"],
    )


def cmd_monitor(args) -> int:
    from pipelines.cli import _load_checked_config

    overrides = list(args.set)
    if args.source:
        overrides.append(f"monitoring.source={args.source}")
    if args.window_days is not None:
        overrides.append(f"monitoring.window_days={args.window_days}")
    config = _load_checked_config(args.config, check_data=False, overrides=overrides)
    run = monitor_once(config)
    result = run.result
    window = result["window"]
    model = result["model"]
    console.print(
        f"Monitored {model['name']} {model['version']}: {window['rows']} rows "
        f"({window['labelled_rows']} labelled) from {window['source']}, {escape(window['description'])}"
    )
    for line in window["files_skipped"]:
        console.print(f"  skipped: {escape(line)}")
    console.print(f"decision   {result['decision']}")
    for reason in result["reasons"]:
        console.print(f"  - {escape(reason)}")
    for line in result["alerts"]:
        console.print(f"  {escape(line)}")
    console.print(f"result     {run.json_path}")
    console.print(f"report     {run.html_path}")
    if args.fail_on and SEVERITY[result["decision"]] >= SEVERITY[args.fail_on]:
        return EXIT_DECISION
    return 0


def add_monitor_parser(commands) -> None:
    monitor = commands.add_parser(
        "monitor", help="compare new data with the champion's reference: ok, warn or retrain"
    )
    monitor.add_argument("--config", required=True, help="the run config YAML")
    monitor.add_argument(
        "--source",
        choices=("prediction_log", "lake"),
        help="the window: the served requests, or the lake's files added since the champion's "
        "training (default: monitoring.source)",
    )
    monitor.add_argument(
        "--window-days",
        type=float,
        metavar="N",
        help="the log's last N days; 0: everything since the last monitor run "
        "(default: monitoring.window_days)",
    )
    add_set_option(monitor, "monitoring.min_psi=0.2")
    monitor.add_argument(
        "--fail-on",
        choices=("warn", "retrain"),
        help=f"exit {EXIT_DECISION} when the decision is at least this (default: exit 0 for any)",
    )
    monitor.set_defaults(handler=cmd_monitor)
