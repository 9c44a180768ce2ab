"""How every step runs: `python3 -m components.common.step_runner`, in the compiled spec where
Kubeflow's lightweight components run `python3 -m kfp.dsl.executor_main` (see use_step_runner).
It takes the same arguments and runs the component function with Kubeflow's own Executor,
and around it:

1. checks every input artifact's completion marker and content hash (step_cache.check_input):
   a half-written or altered input stops the step, naming it;
2. computes the step's content key and, when a store holds that key, restores the outputs from
   it (every file's hash checked) instead of running the function. The stores:
   - this run's own finished steps (MLPIPE_RUN_STEPS), which `mlpipe run --resume` reads: any
     step, including those that read or change the world (ingest, register), so a resumed run
     neither reads a grown lake again nor registers twice;
   - the step cache shared by runs (MLPIPE_STEP_CACHE: a folder, s3:// or gs://), for steps whose
     outputs follow from their inputs alone (not EXTERNAL_STEPS);
3. otherwise runs the function; when it crashes, removes what it wrote, so nothing half-written
   is left (a step that stops on a user error keeps what explains it, unmarked); when it
   succeeds, marks each output with its content hash and stores the result;
4. turns an unexpected error into one line naming the step (the traceback stays in its log).
"""

import argparse
import errno
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from kfp.dsl import executor as kfp_executor
from kfp.dsl import utils as kfp_utils

from components.common.image import COMPONENT_IMAGE
from components.common.secrets import redact_text
from components.common.step import report_step_error, step_summary
from components.common.step_cache import (
    CONTENT_HASH,
    CorruptInput,
    StepStore,
    check_input,
    code_version,
    content_hash,
    library_versions,
    remove_path,
    step_key,
)

MODULE = "components.common.step_runner"
KFP_EXECUTOR = "python3 -m kfp.dsl.executor_main"
# Finished steps shared between runs: a folder or an fsspec URI. Unset: no shared cache.
STEP_CACHE_ENV = "MLPIPE_STEP_CACHE"
# This run's finished steps (and a record of how each step ran), for --resume.
RUN_STEPS_ENV = "MLPIPE_RUN_STEPS"
# Which run this is, recorded with what it stores ("reused from run ...").
RUN_ID_ENV = "MLPIPE_RUN_ID"
# The image's digest, when the image sets it: a rebuilt image under the same tag is a new key.
IMAGE_DIGEST_ENV = "MLPIPE_IMAGE_DIGEST"
# Steps that read or change what is not among their inputs (the lake, the registry, the model
# server): never taken from the shared cache. The pipeline turns Kubeflow's cache off for the
# same steps (a test holds the two lists together).
EXTERNAL_STEPS = frozenset(
    {
        "plan",
        "ingest",
        "gate",
        "register",
        "run-report",
        "deploy",
        "promote",
        "notify",
        "monitor",
        "batch-predict",
    }
)


def use_step_runner(component):
    """Make a lightweight component run through this module; returns the component."""
    container = component.component_spec.implementation.container
    # The executor's module stays named in the command (--wraps): kfp.local's SubprocessRunner
    # runs only commands that name it, and it tells a reader of the spec what runs inside.
    runner = f"python3 -m {MODULE} --wraps {KFP_EXECUTOR.split()[-1]}"
    command = [part.replace(KFP_EXECUTOR, runner) for part in container.command]
    if command == list(container.command):
        raise RuntimeError(f"{component.name}: no '{KFP_EXECUTOR}' in its command to replace")
    container.command = command
    return component


def step_name(function_name: str) -> str:
    """The step's name as Kubeflow names its task: export_onnx_model -> export-onnx-model."""
    return function_name.replace("_", "-")


class _MarkingExecutor(kfp_executor.Executor):
    """Kubeflow's Executor, which marks each output with its content hash once the function
    has returned: an output without the mark was not finished."""

    def write_executor_output(self, func_output=None):
        for artifact in self.output_artifacts.values():
            artifact.metadata[CONTENT_HASH] = content_hash(artifact.path)
        return super().write_executor_output(func_output)

    def write_restored(self, entry: dict) -> None:
        for name, artifact in self.output_artifacts.items():
            artifact.metadata = dict(entry["artifacts"][name]["metadata"])
        self.excutor_output = {}
        if entry["parameters"]:
            self.excutor_output["parameterValues"] = dict(entry["parameters"])
        kfp_executor.Executor.write_executor_output(self)


def _stores(step: str) -> list[tuple[StepStore, str]]:
    stores = []
    if os.environ.get(RUN_STEPS_ENV):
        stores.append((StepStore(os.environ[RUN_STEPS_ENV]), "resumed"))
    if os.environ.get(STEP_CACHE_ENV) and step not in EXTERNAL_STEPS:
        stores.append((StepStore(os.environ[STEP_CACHE_ENV]), "cache"))
    return stores


def _record(step: str, key: str, origin: str, seconds: float) -> None:
    """How the step ran in this run (ran, cache or resumed): what `mlpipe run` reports."""
    folder = os.environ.get(RUN_STEPS_ENV)
    if not folder or "://" in folder:
        return
    path = Path(folder) / "record" / f"{step}.json"
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    record = {"step": step, "key": key, "origin": origin, "seconds": round(seconds, 3)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(json.dumps(record), encoding="utf-8")
        os.replace(staging, path)
    except OSError as error:  # bookkeeping: the step's outputs are whole and marked already
        staging.unlink(missing_ok=True)
        step_summary(step, f"its record was not written ({error})")


def run_step(executor: _MarkingExecutor, step: str, source: str) -> None:
    started = time.monotonic()
    input_hashes = {}
    for name, artifact in executor.input_artifacts.items():
        if isinstance(artifact, list):
            hashes = [check_input(name, item.path, item.metadata) for item in artifact]
            input_hashes[name] = ",".join(hashes)
        else:
            input_hashes[name] = check_input(name, artifact.path, artifact.metadata)
    image = f"{COMPONENT_IMAGE}@{os.environ.get(IMAGE_DIGEST_ENV, '')}"
    parameters = executor.executor_input.get("inputs", {}).get("parameterValues", {})
    key = step_key(
        step, source, image, code_version(), library_versions(), parameters, input_hashes
    )
    outputs = {name: artifact.path for name, artifact in executor.output_artifacts.items()}
    stores = _stores(step)
    run_id = os.environ.get(RUN_ID_ENV, "")

    for store, origin in stores:
        entry = store.get(key)
        if entry is None:
            continue
        if not store.restore(entry, outputs):
            step_summary(step, f"a stored result (key {key[:12]}) failed its hash check: running")
            continue
        executor.write_restored(entry)
        if origin == "cache" and stores[0][1] == "resumed":
            _keep(stores[0][0], executor, key, step, run_id, entry.get("origin_run", ""))
        _record(step, key, origin, time.monotonic() - started)
        where = f"run {entry['origin_run']}" if entry.get("origin_run") else "an earlier run"
        step_summary(step, f"reused from {where} (same code, parameters and input data)")
        return

    try:
        executor.execute()
    except SystemExit:
        # The step stopped on a user error (components.common.step.user_errors) after writing
        # what explains it (validate's anomalies): whole files, kept for the user, and unmarked,
        # so that no later step or run takes them as a finished step's outputs.
        raise
    except BaseException:
        for path in outputs.values():  # a crash: nothing half-written is left for anyone
            remove_path(path)
        raise
    for store, _ in stores:
        _keep(store, executor, key, step, run_id)
    _record(step, key, "ran", time.monotonic() - started)


def _keep(
    store: StepStore, executor, key: str, step: str, run_id: str, origin_run: str = ""
) -> None:
    """Store the step's result; a store that cannot take it (full, unreachable) costs a
    re-run later, never this run: one line, and whatever it had half-written is removed."""
    artifacts = {
        name: (artifact.path, dict(artifact.metadata))
        for name, artifact in executor.output_artifacts.items()
    }
    parameters = executor.excutor_output.get("parameterValues", {})
    try:
        store.put(key, step, artifacts, parameters, origin_run=origin_run or run_id)
    except OSError as error:
        step_summary(step, f"not stored in {store.root} ({redact_text(str(error))})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one mlpipe step (Kubeflow's executor).")
    parser.add_argument("--component_module_path", required=True)
    parser.add_argument("--function_to_execute", required=True)
    parser.add_argument("--executor_input", required=True)
    parser.add_argument("--wraps", help="the Kubeflow executor module this runs in place of")
    args, _ = parser.parse_known_args(argv)
    step = step_name(args.function_to_execute)
    # The step's log starts as Kubeflow's executor starts it: what runs, and its executor input
    # (parameters and artifacts; a URL's password is hidden, and the run config refuses one).
    logging.basicConfig(
        stream=sys.stdout,
        format="[KFP Executor %(asctime)s %(levelname)s]: %(message)s",
        level=logging.INFO,
    )
    logging.info("Running %s through %s", args.function_to_execute, MODULE)
    logging.info("Got executor_input:\n%s", redact_text(args.executor_input))
    executor_input = None
    try:
        module_path = Path(args.component_module_path)
        module = kfp_utils.load_module(
            module_name=module_path.stem, module_directory=str(module_path.parent)
        )
        executor_input = json.loads(args.executor_input)
        parameters = executor_input.get("inputs", {}).get("parameterValues", {})
        if "run_id" in parameters and os.environ.get(RUN_ID_ENV):
            # Locally, a run is what `mlpipe run` names and --resume continues; kfp.local's
            # pipeline job id is new for each execution of the spec, a resumed one included.
            parameters["run_id"] = os.environ[RUN_ID_ENV]
        executor = _MarkingExecutor(executor_input, getattr(module, args.function_to_execute))
        run_step(executor, step, module_path.read_text(encoding="utf-8"))
    except CorruptInput as error:
        report_step_error(step, str(error))
        raise SystemExit(1) from None
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as error:  # a bug or a fault: one line; the traceback stays in the log
        traceback.print_exc()
        report_step_error(step, describe_failure(error, executor_input))
        raise SystemExit(1) from None


def describe_failure(error: BaseException, executor_input: dict | None) -> str:
    """The one line for an unexpected error: its type and message; a full disk says where."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        outputs = (executor_input or {}).get("outputs", {}).get("outputFile", "")
        where = f" writing the step's outputs under {Path(outputs).parent}" if outputs else ""
        return redact_text(f"no space left on the device{where} ({error})")
    return redact_text(f"{type(error).__name__}: {error}") + " (traceback in the run's log)"


if __name__ == "__main__":
    main(sys.argv[1:])
