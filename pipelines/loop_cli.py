"""`mlpipe loop`: monitor -> retrain when the monitor says so -> gate -> promote -> reload.

One pass (`--once`), or one every `--every` (10m, 1h, 30s) until Ctrl-C or SIGTERM:

1. the monitor, in this process, as `mlpipe monitor` runs it (components.monitor.logic);
2. on `retrain`: the training pipeline under kfp.local (pipelines.local_run), incremental or full
   as `retraining.*` says (components.common.retraining.mode_after_monitor), with trigger
   `monitor`; its plan may still fall back to full, or find nothing new (then nothing is
   registered);
3. the gate blesses the candidate or not; a blessed one is deployed and promoted by the run
   itself, as every training run does;
4. a new champion: the running server is told to reload the alias (`--server URL`: POST
   /admin/reload with the token in MLPIPE_ADMIN_TOKEN), so it swaps with no failed request.

One loop at a time per model: a second one beside it, on the same output root, refuses with the
first one's process id (an advisory lock on a file in the output root, released by the kernel
when the first process ends however it ends).

On a cluster the same loop is the monitoring pipeline (pipelines/monitoring_pipeline.py) as a
recurring run: `mlpipe submit --pipeline monitoring --schedule CRON`.
"""

import contextlib
import fcntl
import os
import re
import signal
import threading
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from components.common.errors import PipelineInputError, StepFailed
from pipelines.cli_options import add_set_option

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

ADMIN_TOKEN_ENV = "MLPIPE_ADMIN_TOKEN"
EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
RELOAD_TIMEOUT_SECONDS = 30.0


def parse_every(text: str) -> float:
    """'10m' -> 600.0; a number alone is seconds.

    Raises:
        PipelineInputError: not a positive duration.
    """
    match = EVERY.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise PipelineInputError(
            f"--every '{text}': expected a positive duration such as 30s, 10m, 1h"
        )
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


@contextlib.contextmanager
def loop_lock(output_root: str, model_name: str):
    """Hold the model's loop lock for the block; another holder: one line naming its pid.

    Raises:
        PipelineInputError: another loop holds the lock.
    """
    root = Path(output_root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".loop-{model_name}.lock"
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise PipelineInputError(
                f"mlpipe loop: another loop is running for model '{model_name}' (pid {holder}, "
                f"lock {path}); stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the file releases the lock


def reload_server(url: str, environ=None) -> str:
    """Ask the model server at `url` to re-read the champion alias; one line saying what it did.

    Raises:
        PipelineInputError: no token in MLPIPE_ADMIN_TOKEN, the server cannot be reached, or it
            refused.
    """
    import requests  # here, not at the top: every `mlpipe` command imports this module

    environ = os.environ if environ is None else environ
    token = (environ.get(ADMIN_TOKEN_ENV) or "").strip()
    if not token:
        raise PipelineInputError(
            f"--server: set {ADMIN_TOKEN_ENV} (the server's admin token) to reload it"
        )
    address = url.rstrip("/") + "/admin/reload"
    try:
        answer = requests.post(
            address,
            headers={"Authorization": f"Bearer {token}"},
            timeout=RELOAD_TIMEOUT_SECONDS,
        )
    except requests.RequestException as error:
        raise PipelineInputError(
            f"--server {url}: cannot reach the model server ({type(error).__name__})"
        ) from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200:
        raise PipelineInputError(
            f"--server {url}: reload refused, HTTP {answer.status_code}: "
            f"{body.get('error', answer.text[:200])}"
        )
    return f"server at {url} serves {body.get('version', '?')}" + (
        "" if body.get("changed", True) else " (unchanged)"
    )


class _Stop:
    """SIGINT/SIGTERM between passes: wake the wait and end the loop."""

    def __init__(self):
        self.event = threading.Event()
        self.signum = 0

    def __call__(self, signum, frame):
        self.signum = signum
        self.event.set()
        raise KeyboardInterrupt


def one_pass(config, args, print_line, steps_to=None) -> dict:
    """Monitor once and retrain when told to; the pass's outcome.

    Args:
        steps_to: a text file for the retraining's step lines (each step's start and summary);
            None shows them here, as `mlpipe run` does.

    Returns:
        {"decision", "mode", "version", "promoted", "reloaded"}.
    """
    from components.common.retraining import mode_after_monitor
    from pipelines.local_run import run_pipeline
    from pipelines.monitor_cli import monitor_once

    outcome = {"decision": "", "mode": "", "version": "", "promoted": False, "reloaded": ""}
    result = monitor_once(config).result
    outcome["decision"] = result["decision"]
    window = result["window"]
    print_line(
        "monitor",
        f"{result['model']['version']}: {result['decision']} on {window['rows']} rows "
        f"({window['labelled_rows']} labelled): {'; '.join(result['reasons'])}",
    )
    if result["decision"] != "retrain":
        return outcome
    mode, why = mode_after_monitor(result, config.retraining.model_dump())
    outcome["mode"] = mode
    print_line("retrain", f"{mode}: {why}")
    with contextlib.redirect_stdout(steps_to) if steps_to else contextlib.nullcontext():
        trained = run_pipeline(config, training_mode=mode, trigger="monitor")
    if trained.skipped:
        print_line("retrain", f"nothing registered: {trained.plan['reason']}")
        return outcome
    outcome["version"] = trained.model_version
    plan = trained.plan or {}
    print_line(
        "candidate",
        f"{trained.model_version} in {trained.seconds:.0f} s: {plan.get('reason', mode)}",
    )
    compared = [
        check["detail"]
        for check in (trained.gate or {}).get("checks", [])
        if check["kind"] == "champion" and check["passed"]
    ]
    print_line("gate", trained.reason + (f" ({'; '.join(compared)})" if compared else ""))
    if not trained.blessed:
        return outcome
    outcome["promoted"] = True
    print_line("promote", f"{config.model_name} champion is now {trained.champion}")
    if args.server:
        outcome["reloaded"] = reload_server(args.server)
        print_line("reload", outcome["reloaded"])
    return outcome


def cmd_loop(args) -> int:
    from pipelines.cli import _load_checked_config
    from pipelines.local_run import RunInterrupted

    config = _load_checked_config(args.config, overrides=args.set)
    every = parse_every(args.every) if not args.once else 0.0

    def print_line(step: str, text: str) -> None:
        console.print(f"{step:<10} {escape(text)}")

    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with loop_lock(config.output_root, config.model_name):
            while True:
                try:
                    one_pass(config, args, print_line)
                except (PipelineInputError, StepFailed) as error:
                    if args.once:
                        raise
                    # A pass that cannot run (no records yet, a step that failed) is one
                    # line; the next pass tries again.
                    errors.print(f"[bold red]error[/]: {escape(str(error))}")
                if args.once:
                    return 0
                print_line("wait", f"next pass in {args.every}")
                stop.event.wait(every)
    except KeyboardInterrupt:
        signum = stop.signum or signal.SIGINT
        errors.print(f"loop stopped ({signal.Signals(signum).name})")
        return 128 + signum
    except RunInterrupted as interrupted:  # during a retraining: its own handler stopped it
        undone = ", ".join(interrupted.undone) or "nothing to undo"
        registry = (
            f"the registry could not be put back ({interrupted.error})"
            if interrupted.error
            else f"the registry is as it was ({undone})"
        )
        errors.print(
            f"loop stopped ({signal.Signals(interrupted.signum).name}) during a retraining: "
            f"stopped {interrupted.stopped} processes; {registry}"
        )
        return 128 + interrupted.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_loop_parser(commands) -> None:
    loop = commands.add_parser(
        "loop",
        help="monitor, retrain when the monitor says so, gate, promote, reload the server",
    )
    loop.add_argument("--config", required=True, help="the run config YAML")
    when = loop.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one pass, then exit")
    when.add_argument(
        "--every", default="10m", help="the time between passes (30s, 10m, 1h; default 10m)"
    )
    loop.add_argument(
        "--server",
        metavar="URL",
        help="the running model server (http://127.0.0.1:8080): told to reload the champion "
        "after a promotion (its admin token from MLPIPE_ADMIN_TOKEN)",
    )
    add_set_option(loop, "retraining.mode=full")
    loop.set_defaults(handler=cmd_loop)
