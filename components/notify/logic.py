"""What the training pipeline's exit task says when a run failed: which step, and its error.

Kubeflow's `PipelineTaskFinalStatus` names the exit handler's group ("exit-handler-1"), not the
step inside it that failed, and its message is generic ("Task exit-handler-1 failed."). Locally
the failing step's own one-line error is at hand: every step writes it to the file that
MLPIPE_ERROR_FILE names (components.common.step.report_step_error), and the exit task runs in
the same environment. So the alert names that step and error when the file holds them, and the
final status's task and message otherwise (on a cluster).
"""

import os

from components.common.step import ERROR_FILE_ENV

# Final states that are not a failure: a run that succeeded, or that someone stopped.
NOT_FAILED_STATES = frozenset({"SUCCEEDED", "CANCELED", "CANCELLED", "CANCELING", "SKIPPED"})


def run_failed(status: dict) -> bool:
    """Whether the exit handler's final status is a failure (any state but those above)."""
    return str(status.get("state") or "").upper() not in NOT_FAILED_STATES


def failed_step(environ=None) -> tuple[str, str] | None:
    """(step, error) from the failing step's one-line error (MLPIPE_ERROR_FILE), if written."""
    environ = os.environ if environ is None else environ
    path = environ.get(ERROR_FILE_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            line = handle.readline().strip()
    except OSError:  # no step wrote it (a crash before it could): the final status says
        return None
    step, colon, error = line.partition(": ")
    return (step, error) if colon and step and " " not in step else None


def failure_alert(
    status: dict, model_name: str, run_id: str = "", environ=None
) -> tuple[str, dict] | None:
    """The `training_failed` alert's summary and fields, or None when the run did not fail.

    Args:
        status: the exit task's PipelineTaskFinalStatus as a dict (state,
            pipeline_job_resource_name, pipeline_task_name, error_code, error_message).
        model_name: the model the run trains.
        run_id: the run's id, shown in the alert.
        environ: where MLPIPE_ERROR_FILE is looked up; by default os.environ.

    Returns:
        (summary, fields) with fields model, run_id, task, error, state and job.
    """
    if not run_failed(status):
        return None
    found = failed_step(environ)
    if found:
        task, error = found
    else:
        task = str(status.get("pipeline_task_name") or "the pipeline")
        error = str(status.get("error_message") or f"final state {status.get('state')}")
    error = " ".join(error.split())
    where = f"run {run_id} of {model_name}" if run_id else model_name
    summary = f"training {where} failed in {task}: {error}"
    fields = {
        "model": model_name,
        "run_id": run_id,
        "task": task,
        "error": error,
        "state": str(status.get("state") or ""),
        "job": str(status.get("pipeline_job_resource_name") or ""),
    }
    return summary, fields
