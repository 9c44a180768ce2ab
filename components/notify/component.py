"""KFP component: the training pipeline's exit task, which alerts when the run failed."""

from kfp import dsl

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def notify(
    status: dsl.PipelineTaskFinalStatus,
    model_name: str,
    alerts_config: dict,
    run_id: str = "",
    job_id: str = "",
) -> str:
    """Sends a `training_failed` alert when the training run failed; nothing otherwise.

    Runs as the dsl.ExitHandler's exit task, after every other step, whatever became of them.
    An alert that cannot be delivered is a line in the log: this step never fails on it.

    Args:
        status: the run's final status (Kubeflow fills it in).
        model_name: the model the run trains.
        alerts_config: the run config's `alerts:` section: webhook, timeout, retries, events.
        run_id: the run's id, shown in the alert.
        job_id: Kubeflow's job id, new for each execution: a resumed run that fails again
            alerts again instead of reusing this step's earlier result.

    Returns:
        The alert's line ("" when the run did not fail).
    """
    from components.common.alerts import send_alert
    from components.common.step import step_summary
    from components.notify.logic import failure_alert

    final = {
        "state": status.state,
        "pipeline_job_resource_name": status.pipeline_job_resource_name,
        "pipeline_task_name": status.pipeline_task_name,
        "error_code": status.error_code,
        "error_message": status.error_message,
    }
    alert = failure_alert(final, model_name, run_id)
    if alert is None:
        step_summary("notify", f"the run ended {status.state}: no alert")
        return ""
    summary, fields = alert
    return send_alert(alerts_config, "training_failed", summary, fields).line()
