"""Run the compiled pipeline on this machine with Kubeflow's own local executor.

kfp.local's SubprocessRunner runs each component as a subprocess of this Python, in this
environment (use_venv=False: the project is already installed here, as it is in the image).
The spec that runs is the compiled YAML file, loaded back: the file a user uploads to the
dashboard is the file that ran.
"""

import contextlib
import datetime as dt
import io
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from kfp import components, local

from components.common.errors import PipelineInputError, StepFailed
from components.common.io import read_json, write_json
from components.common.registry import ONNX_FILE, ModelRegistry
from components.common.secrets import redact_text, redact_url
from components.common.step import ERROR_FILE_ENV, SUMMARY_MARK
from components.common.step_cache import StepStore
from components.common.step_runner import RUN_ID_ENV, RUN_STEPS_ENV, STEP_CACHE_ENV
from pipelines.config import RunConfig, pipeline_arguments
from pipelines.kfp_resources import read_spec
from pipelines.training_pipeline import compile_pipeline

# kfp.local's own line when a step starts, its colour codes removed.
TASK_STARTED = re.compile(r"Executing task '([^']+)'")
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")
# After SIGTERM, how long a run's processes (steps, Ray) get before SIGKILL.
STOP_GRACE_SECONDS = 3.0
# In a run's folder: the pipeline's arguments (what --resume runs again), its state, and the
# steps it finished (the step runner's store and its record of how each step ran).
ARGUMENTS_FILE = "arguments.json"
STATE_FILE = "state.json"
STEPS_DIR = "steps"
# In the output root: finished steps shared by runs (components.common.step_cache).
STEP_CACHE_DIR = "cache"
# Steps whose work the registry rollback undoes: a resumed run must do it again.
REGISTRY_STEPS = ("register", "deploy", "promote")


class _StepLogFilter(io.TextIOBase):
    """Stands in for stdout while kfp.local streams step logs: keeps all, echoes the summaries.

    Whole lines only, each with any URL's password hidden (kfp.local logs every step's
    parameters; the run config refuses a password in a URL, this is the second line)."""

    def __init__(self, log_file, console, verbose: bool):
        self._log, self._console, self._verbose = log_file, console, verbose
        self._pending = ""
        self.log_error: OSError | None = None
        self.last_error = ""  # the last step error line seen, without its mark

    def _to_log(self, text: str) -> None:
        """Best effort: on a full disk the log stops and the console goes on, so the step's
        own one-line error still reaches the user."""
        if self.log_error is None:
            try:
                self._log.write(text)
            except OSError as error:
                self.log_error = error

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            line = redact_text(line)
            self._to_log(line + "\n")
            if f"{SUMMARY_MARK}ERROR " in line:
                self.last_error = line.split(f"{SUMMARY_MARK}ERROR ", 1)[1]
            if self._verbose:
                self._console.write(line + "\n")
            elif SUMMARY_MARK in line:
                self._console.write(line.split(SUMMARY_MARK, 1)[1] + "\n")
            elif started := TASK_STARTED.search(ANSI_CODES.sub("", line)):
                self._console.write(f"{started.group(1)}: started\n")
            self._console.flush()
        return len(text)

    def flush(self) -> None:
        if self.log_error is None:
            try:
                self._log.flush()
            except OSError as error:
                self.log_error = error
        self._console.flush()

    def finish(self) -> None:
        """Write what is left of an unfinished last line."""
        if self._pending:
            self._to_log(redact_text(self._pending))
            self._pending = ""
        self.flush()


@dataclass
class LocalRun:
    run_id: str
    run_dir: Path
    artifacts_dir: Path
    pipeline_file: Path
    report: Path
    log: Path
    model_uri: str
    model_version: str
    seconds: float
    # The gate: a model that is not blessed is registered (the candidate) but neither deployed
    # nor promoted; `reason` says why, and `champion` is the version serving stays on.
    blessed: bool = True
    reason: str = ""
    champion: str = ""
    fairness_reason: str = ""
    fairness_report: Path | None = None
    html_report: Path | None = None
    onnx_model: Path | None = None
    # How each step ran: "ran", "cache" (the shared step cache) or "resumed" (this run's own
    # finished steps, after --resume).
    steps: dict[str, str] | None = None
    # The plan (components.common.retraining): full, incremental or skip, and why.
    plan: dict | None = None
    # The gate's decision (its checks: thresholds, the champion comparison, fairness).
    gate: dict | None = None

    @property
    def skipped(self) -> bool:
        """Nothing new to retrain on: no step ran after the plan, nothing was registered."""
        return bool(self.plan) and self.plan["mode"] == "skip"


def new_run_dir(output_root: str | Path) -> tuple[str, Path]:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{secrets.token_hex(3)}"
    return run_id, Path(output_root).resolve() / "runs" / run_id


def find_run_dir(output_root: str | Path, run_id: str) -> Path:
    """The folder of an earlier run to resume; a clear error when there is none."""
    runs = Path(output_root).resolve() / "runs"
    run_dir = runs / run_id
    if "/" in run_id or run_id in ("", ".", "..") or not (run_dir / ARGUMENTS_FILE).is_file():
        known = sorted(p.parent.name for p in runs.glob(f"*/{ARGUMENTS_FILE}"))
        raise PipelineInputError(
            f"--resume {run_id}: no such run in {runs} (runs that can be resumed: "
            f"{', '.join(known[-5:]) or 'none'})"
        )
    state = _read_state(run_dir)
    pid = state.get("pid")
    if state.get("state") == "running" and _same_process(pid, state.get("pid_started")):
        raise PipelineInputError(
            f"--resume {run_id}: the run is still running (process {pid}); stop it first"
        )
    return run_dir


def _write_state(run_dir: Path, state: str, **details) -> None:
    """Best effort: on a full disk the run's own error says more than this file could."""
    with contextlib.suppress(OSError):
        write_json(run_dir / STATE_FILE, {"state": state, **details})


def _same_process(pid, started) -> bool:
    """Whether process `pid`, started at `started`, still runs (a PID can be reused)."""
    try:
        return isinstance(pid, int) and psutil.Process(pid).create_time() == started
    except (psutil.Error, ValueError):
        return False


def _read_state(run_dir: Path) -> dict:
    try:
        state = read_json(run_dir / STATE_FILE)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def step_origins(run_dir: Path) -> dict[str, str]:
    """How each step of the run's last execution ran: ran, cache or resumed."""
    origins = {}
    for record in sorted((run_dir / STEPS_DIR / "record").glob("*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            entry = read_json(record)
            origins[entry["step"]] = entry["origin"]
    return origins


def forget_steps(run_dir: Path, steps: tuple[str, ...]) -> None:
    """Drop steps from the run's finished steps, so that a resumed run does them again."""
    store = StepStore(run_dir / STEPS_DIR)
    for step in steps:
        record = run_dir / STEPS_DIR / "record" / f"{step}.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            store.delete(read_json(record)["key"])
            record.unlink()


def _find_output(artifacts_dir: Path, task: str, name: str) -> Path | None:
    matches = sorted(artifacts_dir.glob(f"*/{task}/{name}"))
    return matches[-1] if matches else None


def _output_parameters(artifacts_dir: Path, task: str) -> dict:
    """A finished step's output parameters (its executor_output.json)."""
    found = _find_output(artifacts_dir, task, "executor_output.json")
    if found is None:
        raise StepFailed(f"{task}: finished without its outputs")
    return read_json(found).get("parameterValues", {})


def _write_report(run: LocalRun, config: RunConfig) -> None:
    """One Markdown page for the run: the steps' own reports, in the pipeline's order."""
    parts = [
        f"# Run {run.run_id}: {config.model_name} {run.model_version}\n",
        f"Data: `{redact_url(config.data.source) or 'ETL snapshot'}`; target `{config.target}` ({config.task}).\n",
        f"Model: `{run.model_uri}`.\n",
        f"Gate: {run.reason or 'not run'}.\n",
        f"Fairness gate: {run.fairness_reason or 'not run'}.\n",
    ]
    for task in ("validate", "bias", "tune", "evaluate"):
        section = _find_output(run.artifacts_dir, task, "report")
        if section is not None:
            parts.append(section.read_text(encoding="utf-8"))
    fairness_tables = _find_output(run.artifacts_dir, "fairness", "tables")
    if fairness_tables is not None:
        parts.append(fairness_tables.read_text(encoding="utf-8"))
        if run.fairness_report is not None:
            parts.append(f"Charts: `{run.fairness_report.name}` beside this report.\n")
    run.report.write_text("\n".join(parts), encoding="utf-8")


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run: its processes are gone and the registry is as it was.

    Attributes:
        signum: the signal (SIGINT or SIGTERM).
        stopped: how many processes the run had started and this stopped.
        undone: what the registry rollback undid, e.g. ["removed v2", "champion back to v1"].
        error: why the rollback failed, or "" when it did not.
    """

    def __init__(self, signum: int, stopped: int, undone: list[str], error: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.stopped, self.undone, self.error = signum, stopped, undone, error
        self.run_id = ""  # set by run_pipeline: the run to resume


class _Stop(KeyboardInterrupt):
    """Raised in the main thread by the signal handler, once the run's processes are gone.

    A KeyboardInterrupt, so that subprocess.Popen's exit (kfp.local reads a step's output in
    `with Popen`) does not wait for the step."""

    def __init__(self, signum: int, stopped: int):
        super().__init__(signum)
        self.signum, self.stopped = signum, stopped


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_descendants(spare: frozenset[int] = frozenset(), grace: float = STOP_GRACE_SECONDS) -> int:
    """SIGTERM every descendant of this process but those in `spare` (the steps' shells and
    Pythons, Ray's gcs_server, raylet, dashboard and workers), SIGKILL those still running after
    `grace` seconds, and return how many there were. By PID, found through parent links, never
    by name; a process that appears while they stop (a worker a raylet was starting) is found
    and stopped too."""
    known: dict[int, psutil.Process] = {}

    def find_new() -> list[psutil.Process]:
        new = []
        for root in [psutil.Process(), *known.values()]:
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                if child.pid not in known and child.pid not in spare:
                    known[child.pid] = child
                    new.append(child)
        return new

    def send(processes, sig: int) -> None:
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)  # psutil checks the PID was not reused

    send(find_new(), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive := [p for p in known.values() if _running(p)]:
        if time.monotonic() >= deadline:
            send(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=0.1)
        send(find_new(), signal.SIGKILL if time.monotonic() >= deadline else signal.SIGTERM)
        if time.monotonic() >= deadline + grace:
            break  # a process that outlives SIGKILL this long is stuck in the kernel
    return len(known)


@contextlib.contextmanager
def _stop_on_signals(registry: ModelRegistry, run_id: str = ""):
    """While the run runs, Ctrl-C (SIGINT) and SIGTERM stop it: every process it started is
    stopped, then the registry is put back as it was before the run (with `run_id`: what that
    run did, and not another run's work at the same time), and RunInterrupted says so. The
    handlers are installed whatever the signals' dispositions were: a shell starts a
    background job with SIGINT ignored, and a run that ignored Ctrl-C went on to promote."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    snapshot = registry.snapshot()
    # Processes that were there before the run (in a test, say) are not the run's to stop.
    spare = frozenset(child.pid for child in psutil.Process().children(recursive=True))
    received: list[int] = []

    def handler(signum, frame):
        if received:
            return  # a second Ctrl-C while stopping: the first one is being handled
        received.append(signum)
        raise _Stop(signum, stop_descendants(spare))

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _Stop as stop:
        try:
            undone, error = registry.restore(snapshot, run_id), ""
        except Exception as failure:  # reported on the one line, never a traceback
            undone, error = [], f"{type(failure).__name__}: {failure}"
        raise RunInterrupted(stop.signum, stop.stopped, undone, error) from None
    finally:
        for sig, disposition in previous.items():
            signal.signal(sig, disposition)


def run_pipeline(
    config: RunConfig,
    verbose: bool = False,
    resume: str = "",
    use_cache: bool = True,
    on_start=None,
    training_mode: str = "full",
    trigger: str = "manual",
) -> LocalRun:
    """Compile the pipeline into a run folder and run that file under kfp.local.

    Each step reuses a finished result with the same content key (step_runner): from this
    run's own finished steps when resuming, else from the step cache in the output root.

    Ctrl-C (SIGINT) or SIGTERM stops the run: every process it started, Ray's included, then
    the registry is put back as it was; RunInterrupted is raised.

    Args:
        config: the checked run config.
        verbose: echo every line of every step's log, not only the steps' summaries.
        resume: an earlier run's id: run it again in its own folder with its own recorded
            arguments; its finished steps are reused once their files verify against their
            hashes, the others run.
        use_cache: reuse finished steps of other runs (the step cache); a run's own finished
            steps are always kept, so that it can be resumed.
        on_start: called with the run's id and folder before any step runs.
        training_mode: full, or incremental (update the champion with what is new; see
            components.common.retraining).
        trigger: what started the run (manual, monitor or schedule), recorded in the lineage.

    Returns:
        The run; a model that the gate did not bless is no error here (its steps all succeeded,
        deploy and promote were skipped): `blessed` is False and `reason` says why.

    Raises:
        StepFailed: a step failed; its one-line error is the message, `run_id` the run.
        RunInterrupted: SIGINT or SIGTERM stopped the run.
        PipelineInputError: `resume` names no run of this output root.
    """
    if resume:
        run_dir = find_run_dir(config.output_root, resume)
        run_id, arguments = resume, read_json(run_dir / ARGUMENTS_FILE)
    else:
        run_id, run_dir = new_run_dir(config.output_root)
        arguments = {
            **pipeline_arguments(config),
            "training_mode": training_mode,
            "trigger": trigger,
        }
        try:
            (run_dir / "artifacts").mkdir(parents=True)
            write_json(run_dir / ARGUMENTS_FILE, arguments)
        except OSError as error:  # a full disk or a read-only output_root: before any step
            shutil.rmtree(run_dir, ignore_errors=True)
            raise PipelineInputError(
                f"output_root: cannot write the run's folder {run_dir}: {error.strerror or error}"
            ) from None
    environment = {RUN_STEPS_ENV: str(run_dir / STEPS_DIR), RUN_ID_ENV: run_id}
    if use_cache:
        environment[STEP_CACHE_ENV] = str(Path(config.output_root).resolve() / STEP_CACHE_DIR)
    _write_state(run_dir, "running", pid=os.getpid(), pid_started=psutil.Process().create_time())
    if on_start is not None:
        on_start(run_id, run_dir)
    try:
        with (
            _environment(environment),
            # The run's own store and model, as recorded: a resumed run's, not the config's.
            _stop_on_signals(
                ModelRegistry(arguments["model_store_uri"], arguments["model_name"]), run_id
            ),
        ):
            run = _run_pipeline(config, run_id, run_dir, arguments, verbose)
    except RunInterrupted as stop:
        stop.run_id = run_id
        if not stop.error:  # the registry was put back: what those steps did is undone
            forget_steps(run_dir, REGISTRY_STEPS)
        _write_state(run_dir, "interrupted", signal=signal.Signals(stop.signum).name)
        raise
    except StepFailed as failure:
        failure.run_id = run_id
        _write_state(run_dir, "failed", error=str(failure))
        raise
    except BaseException:
        _write_state(run_dir, "failed")
        raise
    _write_state(run_dir, "finished", version=run.model_version)
    return run


@contextlib.contextmanager
def _log_file(path: Path):
    """The run's log, appended to (a resumed run adds to it); closing it never raises: on a full
    disk what could not be written is lost, and the step's error is shown all the same."""
    handle = open(path, "a", encoding="utf-8")
    try:
        yield handle
    finally:
        with contextlib.suppress(OSError):
            handle.close()


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for the steps (kfp.local's subprocesses inherit them)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def without_retries(pipeline_file: Path) -> str:
    """The compiled spec as kfp.local runs it here: the same, without Kubeflow's retries.

    kfp.local honours a task's retry policy, which on a cluster is for a pod that was evicted or
    lost its node (pipelines/pod_settings.py). Here a failed step is a user error (it must stop
    the run at once, in one line) or a crash that `mlpipe run --resume` picks up; the steps'
    own calls to the object store and the model server retry by themselves
    (components/common/retry.py). The file in the run folder, the one to upload, keeps them.
    """
    spec, platform = read_spec(pipeline_file)
    for dag in [spec["root"].get("dag", {})] + [
        component.get("dag", {}) for component in spec.get("components", {}).values()
    ]:
        for task in dag.get("tasks", {}).values():
            task.pop("retryPolicy", None)
    return yaml.safe_dump_all([spec, *([platform] if platform else [])], sort_keys=False)


def _run_pipeline(
    config: RunConfig, run_id: str, run_dir: Path, arguments: dict, verbose: bool
) -> LocalRun:
    started = time.monotonic()
    artifacts_dir = run_dir / "artifacts"
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    pipeline_file = compile_pipeline(run_dir / "pipeline.yaml", resources=config.resources)
    error_file = run_dir / "error.txt"
    error_file.unlink(missing_ok=True)

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(artifacts_dir),
        workspace_root=str(run_dir / "workspace"),
        raise_on_error=True,
    )
    # kfp.local warns when an image's name lacks "python": ours is this very environment, built
    # from the same lock, so the warning would only be noise.
    warnings.filterwarnings(
        "ignore", message="You may be attemping to run a task", category=RuntimeWarning
    )
    # The pods' requests and limits (pipelines/pod_settings.py) are for a cluster; kfp.local says
    # so once per task, which here is only noise.
    warnings.filterwarnings(
        "ignore", message=r"Task '.*': settings \[.*\] have no effect in the current local runner"
    )
    pipeline = components.load_component_from_text(without_retries(pipeline_file))
    log_path = run_dir / "pipeline.log"
    try:
        with (
            _environment({ERROR_FILE_ENV: str(error_file)}),
            _log_file(log_path) as log_file,
            contextlib.redirect_stdout(step_log := _StepLogFilter(log_file, sys.stdout, verbose)),
        ):
            try:
                pipeline(**arguments)
            finally:
                step_log.finish()
    except RuntimeError as error:
        written = error_file.read_text(encoding="utf-8").strip() if error_file.exists() else ""
        if written:
            raise StepFailed(redact_text(written)) from None
        if step_log.last_error:  # the step could not write the error file (a full disk)
            raise StepFailed(step_log.last_error) from None
        raise StepFailed(redact_text(str(error).splitlines()[0])) from None
    finally:
        shutil.rmtree(run_dir / "workspace", ignore_errors=True)

    planned = _find_output(artifacts_dir, "plan", "plan")
    plan = read_json(planned) if planned is not None else None
    run = LocalRun(
        run_id=run_id,
        run_dir=run_dir,
        artifacts_dir=artifacts_dir,
        pipeline_file=pipeline_file,
        report=run_dir / "report.md",
        log=log_path,
        model_uri="",
        model_version="",
        seconds=time.monotonic() - started,
        steps=step_origins(run_dir),
        plan=plan,
    )
    if run.skipped:  # nothing new to retrain on: no step ran after the plan
        run.blessed, run.reason, run.champion = False, plan["reason"], plan.get("parent", "")
        return run
    # The pipeline returns no outputs (its steps are inside an exit handler): register's and the
    # gate's own outputs say the version and whether it was blessed.
    registered = _output_parameters(artifacts_dir, "register")
    run.model_uri, run.model_version = registered["model_uri"], registered["version"]
    run.blessed = bool(_output_parameters(artifacts_dir, "gate")["Output"])
    decision = _find_output(artifacts_dir, "gate", "decision")
    if decision is not None:
        run.gate = read_json(decision)
        run.reason = run.gate["reason"]
    fairness_summary = _find_output(artifacts_dir, "fairness", "summary")
    if fairness_summary is not None:
        run.fairness_reason = read_json(fairness_summary)["gate"]["reason"]
    if run.blessed and _find_output(artifacts_dir, "promote", "executor_output.json") is None:
        # kfp.local takes a dsl.If branch as false when it cannot resolve the condition's value.
        raise StepFailed("deploy: did not run although the gate blessed the model")
    run.champion = (
        ModelRegistry(arguments["model_store_uri"], arguments["model_name"])
        .aliases()
        .get("champion", "")
    )
    fairness_html = _find_output(artifacts_dir, "fairness", "report")
    if fairness_html is not None:
        run.fairness_report = run_dir / "fairness.html"
        shutil.copyfile(fairness_html, run.fairness_report)
    edge = Path(run.model_uri) / ONNX_FILE
    if "://" not in run.model_uri and edge.is_file():
        run.onnx_model = edge
    run_html = _find_output(artifacts_dir, "run-report", "report")
    if run_html is not None:
        run.html_report = run_dir / "report.html"
        shutil.copyfile(run_html, run.html_report)
    _write_report(run, config)
    return run
