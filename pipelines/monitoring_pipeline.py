"""The monitoring pipeline: the monitor (components/monitor) compares a window of new data (the
prediction log, or the lake's new partitions) with the champion's reference and decides ok, warn
or retrain; on `retrain`, the training pipeline itself runs, nested (`dsl.If`), incremental or
full as `retraining.*` says, with trigger `monitor`. Compiled once into
pipelines/monitoring_pipeline.yaml, the file that `mlpipe submit --pipeline monitoring --schedule
CRON` runs on a cluster as a recurring run (one at a time, no catch-up), and that a test runs
under kfp.local; the monitor's decision is the pipeline's output."""

from pathlib import Path

from kfp import dsl

from components.common.settings.resources import ResourcesConfig
from components.common.settings.sections import section_defaults
from components.common.step_runner import use_step_runner
from components.monitor.component import monitor as monitor_step
from components.monitor.component import retraining_mode as retraining_mode_step
from pipelines.pod_settings import for_the_cluster
from pipelines.training_pipeline import (
    build_training_pipeline,
    training_pipeline,
    write_spec,
)

use_step_runner(monitor_step)
use_step_runner(retraining_mode_step)

PIPELINE_NAME = "mlpipe-monitoring"
COMPILED_PIPELINE = Path(__file__).with_name("monitoring_pipeline.yaml")


def build_monitoring_pipeline(resources: ResourcesConfig | None = None):
    """The monitoring pipeline (a KFP GraphComponent), its pods and those of the training it
    nests given the run config's `resources:` (None: the defaults, as in the checked-in spec);
    see build_training_pipeline."""
    training = (
        build_training_pipeline(resources) if resources and resources.root else training_pipeline
    )

    def monitoring_pipeline(
        model_name: str,
        model_store_uri: str,
        positive_class: str = "",
        data: dict = section_defaults("data"),
        serving: dict = section_defaults("serving"),
        evaluation: dict = section_defaults("evaluation"),
        monitoring: dict = section_defaults("monitoring"),
        alerts: dict = section_defaults("alerts"),
        retraining: dict = section_defaults("retraining"),
        target: str = "",
        task: str = "classification",
        sensitive_columns: list = [],
        column_types: dict = {},
        contract: dict = section_defaults("contract"),
        reviewed_contract: str = "",
        prepare: dict = section_defaults("prepare"),
        split: dict = section_defaults("split"),
        tuning: dict = section_defaults("tuning"),
        ray: dict = section_defaults("ray"),
        bias: dict = section_defaults("bias"),
        deploy: dict = section_defaults("deploy"),
        run_config: str = "",
    ) -> str:
        """Monitors the champion once, and retrains when the monitor says `retrain`.

        Args:
            model_name: the model's name in the store.
            model_store_uri: the model store's root.
            positive_class: the positive class of a binary task (the target and the task are the
                champion's, from its schema).
            data: the run config's `data:` section: the lake (monitoring.source lake).
            serving: the `serving:` section: `prediction_log` and `labels`, the logs' URIs.
            evaluation: the `evaluation:` section: compare_metrics names the default metric.
            monitoring: the `monitoring:` section: source, window, features, thresholds, the warn
                and retrain rules, and `state`, where the watermark and the results are kept (on a
                cluster, an s3:// or gs:// URI).
            alerts: the `alerts:` section: the webhook (or the environment variable naming it) and
                the events that alert.
            retraining: the `retraining:` section: incremental or full, and when to fall back.
            target, task, sensitive_columns, column_types, contract, reviewed_contract, prepare,
                split, tuning, ray, bias, deploy, run_config: the training pipeline's parameters
                of the same names, for the retraining (see pipelines/training_pipeline.py).

        Returns:
            The decision: ok, warn or retrain.
        """
        task_ = monitor_step(
            model_name=model_name,
            model_store_uri=model_store_uri,
            positive_class=positive_class,
            data_config=data,
            serving_config=serving,
            evaluation_config=evaluation,
            monitoring_config=monitoring,
            alerts_config=alerts,
        )
        # It reads the log, the lake, the registry and the watermark: never a cache hit.
        task_.set_caching_options(False)
        for_the_cluster(task_, resources)
        with dsl.If(task_.outputs["Output"] == "retrain", name="retrain"):
            mode_task = retraining_mode_step(
                result=task_.outputs["result"], retraining_config=retraining
            )
            mode_task.set_caching_options(False)
            for_the_cluster(mode_task, resources)
            training(
                model_name=model_name,
                model_store_uri=model_store_uri,
                target=target,
                task=task,
                positive_class=positive_class,
                sensitive_columns=sensitive_columns,
                column_types=column_types,
                data=data,
                contract=contract,
                reviewed_contract=reviewed_contract,
                prepare=prepare,
                split=split,
                tuning=tuning,
                ray=ray,
                bias=bias,
                evaluation=evaluation,
                serving=serving,
                deploy=deploy,
                alerts=alerts,
                retraining=retraining,
                training_mode=mode_task.outputs["Output"],
                trigger="monitor",
                run_config=run_config,
            )
        return task_.outputs["Output"]

    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="Drift and performance monitoring of the champion: ok, warn or retrain.",
    )(monitoring_pipeline)


monitoring_pipeline = build_monitoring_pipeline()


def compile_pipeline(
    output: str | Path = COMPILED_PIPELINE, resources: ResourcesConfig | None = None
) -> Path:
    """Write the monitoring pipeline's IR YAML; `resources`: the run config's section (None: the
    defaults)."""
    built = build_monitoring_pipeline(resources) if resources and resources.root else None
    return write_spec(built or monitoring_pipeline, output)
