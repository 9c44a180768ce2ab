"""The batch-prediction pipeline: one step (components/predict) scores a source with a registered
version into a new partition of the scored lake. Compiled once into
pipelines/batch_prediction_pipeline.yaml, the file that `mlpipe submit --pipeline batch-prediction
--schedule CRON` runs on a cluster as a recurring run (one at a time, no catch-up; with
predict.since_last_job each run scores only the input's new files), and that a test runs under
kfp.local; `mlpipe predict` runs the same step in process."""

from pathlib import Path

from kfp import dsl

from components.common.settings.resources import ResourcesConfig
from components.common.settings.sections import PredictConfig, section_defaults
from components.common.step_runner import use_step_runner
from components.predict.component import batch_predict
from pipelines.pod_settings import for_the_cluster
from pipelines.training_pipeline import write_spec

use_step_runner(batch_predict)

PIPELINE_NAME = "mlpipe-batch-prediction"
COMPILED_PIPELINE = Path(__file__).with_name("batch_prediction_pipeline.yaml")


def build_batch_prediction_pipeline(resources: ResourcesConfig | None = None):
    """The batch-prediction pipeline (a KFP GraphComponent), its pod given the run config's
    `resources:` (None: the defaults, as in the checked-in spec); see build_training_pipeline."""

    def batch_prediction_pipeline(
        model_name: str,
        model_store_uri: str,
        model_ref: str = "champion",
        input_uri: str = "",
        output_uri: str = "",
        data: dict = section_defaults("data"),
        since_watermark: str = "",
        contract: dict = section_defaults("contract"),
        reviewed_contract: str = "",
        ray: dict = section_defaults("ray"),
        serving: dict = section_defaults("serving"),
        predict: dict = PredictConfig().model_dump(mode="json"),
    ) -> str:
        """Scores a source with a registered version.

        Args:
            model_name: the model's name in the store.
            model_store_uri: the model store's root.
            model_ref: a version (v3) or an alias (champion).
            input_uri: the source; empty: data.source.
            output_uri: the scored lake; empty: predict.output.
            data: the run config's `data:` section (source, filters, na_values).
            since_watermark: a watermark's JSON: score only the files new since it.
            contract: the `contract:` section; reviewed_contract: the reviewed contract's JSON.
            ray: the `ray:` section (address: the Ray cluster of the ray engine).
            serving: the `serving:` section (prediction_log).
            predict: the `predict:` section (key_columns, output, engine, runtime, batch_rows,
                since_last_job, log_predictions).

        Returns:
            The URI of the partition the run wrote.
        """
        task = batch_predict(
            model_name=model_name,
            model_store_uri=model_store_uri,
            model_ref=model_ref,
            input_uri=input_uri,
            output_uri=output_uri,
            data_config=data,
            since_watermark=since_watermark,
            contract_config=contract,
            reviewed_contract=reviewed_contract,
            ray_config=ray,
            serving_config=serving,
            predict_config=predict,
        )
        # It reads the source, the registry and the output's watermark: never a cache hit.
        task.set_caching_options(False)
        for_the_cluster(task, resources)
        return task.outputs["Output"]

    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="Batch predictions: score a lake, file or s3:// source with a registered "
        "version.",
    )(batch_prediction_pipeline)


batch_prediction_pipeline = build_batch_prediction_pipeline()


def compile_pipeline(
    output: str | Path = COMPILED_PIPELINE, resources: ResourcesConfig | None = None
) -> Path:
    """Write the batch-prediction pipeline's IR YAML; `resources`: the run config's section
    (None: the defaults)."""
    built = build_batch_prediction_pipeline(resources) if resources and resources.root else None
    return write_spec(built or batch_prediction_pipeline, output)
