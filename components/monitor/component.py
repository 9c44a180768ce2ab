"""KFP component: monitor the champion once (components.monitor.logic)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def monitor(
    model_name: str,
    model_store_uri: str,
    positive_class: str,
    data_config: dict,
    serving_config: dict,
    evaluation_config: dict,
    monitoring_config: dict,
    alerts_config: dict,
    result: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> str:
    """Compares a window of new data with the champion's reference and decides ok, warn or
    retrain; alerts on warn and retrain; moves the watermark once the result is written.

    It reads the world (the log, the lake, the registry, the watermark): never served from a
    cache (components.common.step_runner.EXTERNAL_STEPS, and Kubeflow's cache is off for it).

    The decision is the plain return value ("Output"), not a NamedTuple field: kfp.local (2.17)
    silently takes a dsl.If on a NamedTuple field as false.

    Args:
        model_name: the model in the store.
        model_store_uri: the model store's root.
        positive_class: the positive class of a binary task.
        data_config: the run config's `data:` section (the lake, for monitoring.source lake).
        serving_config: the `serving:` section: the prediction log's and labels' URIs.
        evaluation_config: the `evaluation:` section (compare_metrics: the default metric).
        monitoring_config: the `monitoring:` section: source, window, thresholds, rules, and
            `state`, where the monitor keeps its watermark and each run's results.
        alerts_config: the `alerts:` section: the webhook and the events that alert.
        result: monitor.json: decision, reasons, window, per-feature drift, performance.
        report: the HTML page (charts of the drifted columns, performance per day).
        metrics: rows, drifted features, the metric (realized, else estimated).

    Returns:
        The decision: ok, warn or retrain.
    """
    from components.common.io import write_json, write_text
    from components.common.step import step_summary, user_errors
    from components.monitor.decision import chosen_performance
    from components.monitor.logic import monitor as monitor_once

    with user_errors("monitor"):
        run = monitor_once(
            model_name=model_name,
            model_store_uri=model_store_uri,
            monitoring=monitoring_config,
            evaluation=evaluation_config,
            serving=serving_config,
            data=data_config,
            alerts=alerts_config,
            state_uri=monitoring_config.get("state", ""),
            positive_class=positive_class,
        )
    outcome = run.result
    write_json(result.path, outcome)
    write_text(report.path, run.html)
    metrics.log_metric("rows", outcome["window"]["rows"])
    features = [c for c in outcome["features"] if c["drifted"]]
    metrics.log_metric("drifted_features", len(features))
    measured = chosen_performance(outcome["performance"])
    if measured:
        metrics.log_metric(outcome["performance"]["metric"], measured["value"])
    for line in outcome["window"]["files_skipped"] + outcome["alerts"]:
        step_summary("monitor", line)
    step_summary("monitor", f"{outcome['decision']}: {'; '.join(outcome['reasons'])}")
    step_summary("monitor", f"results in {run.folder}")
    return outcome["decision"]


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def retraining_mode(result: Input[Artifact], retraining_config: dict) -> str:
    """The retraining that the monitor's `retrain` decision starts: the run config's
    `retraining.mode`, or full when the labels show the relation changed and
    `retraining.full_on_relation_change` is on (components.common.retraining).

    Args:
        result: the monitor's monitor.json.
        retraining_config: the run config's `retraining:` section.

    Returns:
        full or incremental (the training pipeline's plan may still fall back to full, and
        says why).
    """
    from components.common.io import read_json
    from components.common.retraining import mode_after_monitor
    from components.common.step import step_summary, user_errors

    with user_errors("retraining-mode"):
        mode, why = mode_after_monitor(read_json(result.path), retraining_config)
    step_summary("retraining-mode", why)
    return mode or "incremental"
