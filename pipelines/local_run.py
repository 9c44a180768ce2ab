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
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from kfp import components, local

from components.common.errors import StepFailed
from components.common.io import read_json
from components.common.registry import ONNX_FILE, ModelRegistry
from components.common.secrets import redact_text, redact_url
from components.common.step import ERROR_FILE_ENV, SUMMARY_MARK
from pipelines.config import RunConfig, pipeline_arguments
from pipelines.training_pipeline import compile_pipeline

# kfp.local's own line when a step starts, its colour codes removed.
TASK_STARTED = re.compile(r"Executing task '([^']+)'")
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


class _StepLogFilter(io.TextIOBase):
    """Stands in for stdout while kfp.local streams step logs: keeps all, echoes the summaries.

    Whole lines only, each with any URL's password hidden (kfp.local logs every step's
    parameters; the run config refuses a password in a URL, this is the second line)."""

    def __init__(self, log_file, console, verbose: bool):
        self._log, self._console, self._verbose = log_file, console, verbose
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            line = redact_text(line)
            self._log.write(line + "\n")
            if self._verbose:
                self._console.write(line + "\n")
            elif SUMMARY_MARK in line:
                self._console.write(line.split(SUMMARY_MARK, 1)[1] + "\n")
            elif started := TASK_STARTED.search(ANSI_CODES.sub("", line)):
                self._console.write(f"{started.group(1)}: started\n")
            self._console.flush()
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._console.flush()

    def finish(self) -> None:
        """Write what is left of an unfinished last line."""
        if self._pending:
            self._log.write(redact_text(self._pending))
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


def new_run_dir(output_root: str | Path) -> tuple[str, Path]:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp}-{secrets.token_hex(3)}"
    return run_id, Path(output_root).resolve() / "runs" / run_id


def _find_output(artifacts_dir: Path, task: str, name: str) -> Path | None:
    matches = sorted(artifacts_dir.glob(f"*/{task}/{name}"))
    return matches[-1] if matches else None


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


def run_pipeline(config: RunConfig, verbose: bool = False) -> LocalRun:
    """Compile the pipeline into a new run folder and run that file under kfp.local.

    Args:
        config: the checked run config.
        verbose: echo every line of every step's log, not only the steps' summaries.

    Returns:
        The run; a model that the gate did not bless is no error here (its steps all succeeded,
        deploy and promote were skipped): `blessed` is False and `reason` says why.

    Raises:
        StepFailed: a step failed; its one-line error is the message.
    """
    started = time.monotonic()
    run_id, run_dir = new_run_dir(config.output_root)
    artifacts_dir = run_dir / "artifacts"
    artifacts_dir.mkdir(parents=True)
    pipeline_file = compile_pipeline(run_dir / "pipeline.yaml")
    error_file = run_dir / "error.txt"

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
    pipeline = components.load_component_from_file(str(pipeline_file))
    previous = os.environ.get(ERROR_FILE_ENV)
    os.environ[ERROR_FILE_ENV] = str(error_file)
    log_path = run_dir / "pipeline.log"
    try:
        with (
            open(log_path, "w", encoding="utf-8") as log_file,
            contextlib.redirect_stdout(step_log := _StepLogFilter(log_file, sys.stdout, verbose)),
        ):
            try:
                outputs = pipeline(**pipeline_arguments(config)).outputs
            finally:
                step_log.finish()
    except RuntimeError as error:
        if error_file.exists():
            raise StepFailed(redact_text(error_file.read_text(encoding="utf-8").strip())) from None
        raise StepFailed(redact_text(str(error).splitlines()[0])) from None
    finally:
        if previous is None:
            os.environ.pop(ERROR_FILE_ENV, None)
        else:
            os.environ[ERROR_FILE_ENV] = previous
        shutil.rmtree(run_dir / "workspace", ignore_errors=True)

    run = LocalRun(
        run_id=run_id,
        run_dir=run_dir,
        artifacts_dir=artifacts_dir,
        pipeline_file=pipeline_file,
        report=run_dir / "report.md",
        log=log_path,
        model_uri=outputs["model_uri"],
        model_version=outputs["version"],
        seconds=time.monotonic() - started,
        blessed=bool(outputs["blessed"]),
    )
    decision = _find_output(artifacts_dir, "gate", "decision")
    if decision is not None:
        run.reason = read_json(decision)["reason"]
    fairness_summary = _find_output(artifacts_dir, "fairness", "summary")
    if fairness_summary is not None:
        run.fairness_reason = read_json(fairness_summary)["gate"]["reason"]
    if run.blessed and _find_output(artifacts_dir, "promote", "executor_output.json") is None:
        # kfp.local takes a dsl.If branch as false when it cannot resolve the condition's value.
        raise StepFailed("deploy: did not run although the gate blessed the model")
    run.champion = (
        ModelRegistry(config.model_store_uri, config.model_name).aliases().get("champion", "")
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
