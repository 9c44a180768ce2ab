"""KFP component: score a source with a registered version (components.predict.logic)."""

from kfp import dsl
from kfp.dsl import Artifact, Metrics, Output

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def batch_predict(
    model_name: str,
    model_store_uri: str,
    model_ref: str,
    input_uri: str,
    output_uri: str,
    data_config: dict,
    since_watermark: str,
    contract_config: dict,
    reviewed_contract: str,
    ray_config: dict,
    serving_config: dict,
    predict_config: dict,
    job: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Scores every row of a source with a registered version, into a new partition of the
    scored lake, committed whole; the rows also go to the prediction log.

    It reads the world (the source, the registry, the output's watermark): never served from a
    cache (components.common.step_runner.EXTERNAL_STEPS, and Kubeflow's cache is off for it).

    Args:
        model_name: the model in the store.
        model_store_uri: the model store's root.
        model_ref: a version (v3) or an alias (champion).
        input_uri: the source (a Parquet lake folder, a Parquet or CSV file; s3://, gs://);
            empty: data.source.
        output_uri: the scored lake; empty: predict.output.
        data_config: the run config's `data:` section (filters, na_values).
        since_watermark: a watermark's JSON (data.since_watermark), or empty.
        contract_config: the `contract:` section (severity, null_rate_margin).
        reviewed_contract: the reviewed contract's JSON, or empty (nothing counted).
        ray_config: the `ray:` section (address, num_cpus, connect_timeout_seconds).
        serving_config: the `serving:` section (prediction_log).
        predict_config: the `predict:` section (key_columns, engine, runtime, batch_rows,
            since_last_job, log_predictions).
        job: the job's record (JSON): partition, rows, model, engine, contract warnings,
            watermark.
        metrics: rows scored, and rows per contract warning.

    Returns:
        The partition's URI; empty when the input had nothing new since the last job.
    """
    import os

    # Before Ray is imported (components.predict pins an embedded Ray to loopback, which a
    # driver joining a cluster must not be): a cluster's address, as the tune step does.
    if ray_config.get("address"):
        os.environ.setdefault("RAY_ADDRESS", str(ray_config["address"]))

    from components.common.io import write_json
    from components.common.step import step_summary, user_errors
    from components.predict.logic import run_job

    with user_errors("batch-predict"):
        record = run_job(
            model_name=model_name,
            model_store_uri=model_store_uri,
            model_ref=model_ref,
            input_uri=input_uri,
            output_uri=output_uri,
            data=data_config,
            since_watermark=since_watermark,
            contract=contract_config,
            reviewed_contract=reviewed_contract,
            ray=ray_config,
            serving=serving_config,
            predict=predict_config,
        )
    write_json(job.path, record)
    metrics.log_metric("rows", record["rows"])
    if record.get("nothing_new"):
        step_summary("batch-predict", f"nothing to score, nothing written: {record['nothing_new']}")
        return ""
    for rule, columns in record["contract_warnings"].items():
        metrics.log_metric(f"contract_{rule}_rows", sum(columns.values()))
    model = record["model"]
    step_summary(
        "batch-predict",
        f"{record['rows']} rows scored with {model['name']} {model['version']} "
        f"({model['runtime']}, {record['engine']}) into {record['partition']}",
    )
    return record["partition"]
