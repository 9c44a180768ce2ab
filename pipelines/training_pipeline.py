"""The training pipeline: ingest -> validate -> prepare -> bias -> tune -> train -> evaluate ->
register -> deploy. Compiled once into pipelines/training_pipeline.yaml, which is the file that
runs locally (kfp.local), is uploaded in the Kubeflow dashboard, and is submitted by the SDK."""

from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl

from components.bias.component import bias
from components.deploy.component import deploy
from components.ingest.component import ingest
from components.prepare.component import prepare
from components.register.component import register
from components.train.component import evaluate, train
from components.tune.component import tune
from components.validate.component import validate

PIPELINE_NAME = "mlpipe-training"
COMPILED_PIPELINE = Path(__file__).with_name("training_pipeline.yaml")


# List and dict defaults are how KFP declares a parameter's default; nothing mutates them.
@dsl.pipeline(name=PIPELINE_NAME, description="Tabular training pipeline with Ray Tune and KServe.")
def training_pipeline(
    source_uri: str,
    target: str,
    model_name: str,
    model_store_uri: str,
    task: str = "classification",
    na_values: list = [],
    columns: list = [],
    filters: list = [],
    since_watermark: str = "",
    positive_class: str = "",
    sensitive_columns: list = [],
    column_types: dict = {},
    test_size: float = 0.2,
    seed: int = 42,
    model_families: list = ["logistic_regression", "random_forest", "hist_gradient_boosting"],
    num_trials: int = 16,
    cv_folds: int = 3,
    metric: str = "",
    ray_cpus: int = 2,
    smoke_rows: int = 5,
    deploy_target: str = "local",
    deploy_namespace: str = "mlpipe",
    deploy_storage_uri: str = "",
    canary_traffic_percent: int = 0,
    gitops_repo: str = "",
    gitops_path: str = "apps/mlpipe",
    gitops_branch: str = "main",
    deploy_timeout_seconds: int = 600,
) -> NamedTuple("TrainingOutputs", [("model_uri", str), ("version", str)]):
    """Trains, registers and deploys a tabular model.

    Args:
        source_uri: the data: a Parquet lake folder (Hive-partitioned), a Parquet or CSV file.
        target: the label column.
        model_name: the model's name in the store and on the model server.
        model_store_uri: the model store's root.
        task: classification or regression.
        na_values: extra missing-value markers in CSV files.
        columns: read only these columns (empty: all).
        filters: rows to keep, as [column, operator, value] triples (empty: all).
        since_watermark: an earlier run's watermark (JSON): read only new or changed files.
        positive_class: the favourable class for selection rates.
        sensitive_columns: columns that bias analysis groups by.
        column_types: declared column kinds (numeric/categorical) that validation enforces.
        test_size: the share of rows held out.
        seed: seeds the split, the search and the estimators.
        model_families: the families that tuning searches.
        num_trials: how many configurations tuning tries.
        cv_folds: folds of the cross-validation that scores each trial.
        metric: a scikit-learn scorer name; empty picks one for the task.
        ray_cpus: CPUs of the Ray that tuning starts.
        smoke_rows: held-out rows that deploy sends to the model server.
        deploy_target: local (smoke test only), kserve (apply an InferenceService) or gitops
            (commit it to a Git repository).
        deploy_namespace: the InferenceService's namespace.
        deploy_storage_uri: the model store as KServe reads it (s3://, gs://, pvc://).
        canary_traffic_percent: 1-99 for a canary rollout; 0 sends all traffic to the new model.
        gitops_repo: the GitOps repository URL (deploy_target gitops).
        gitops_path: the folder in that repository for the InferenceService.
        gitops_branch: the branch to push.
        deploy_timeout_seconds: how long to wait for the InferenceService to be Ready.

    Returns:
        The registered version's folder and its version.
    """
    ingest_task = ingest(
        source_uri=source_uri,
        na_values=na_values,
        columns=columns,
        filters=filters,
        since_watermark=since_watermark,
    )
    # A data lake grows between runs: reading it again is never a cache hit.
    ingest_task.set_caching_options(False)
    dataset = ingest_task.outputs["dataset"]

    validate_task = validate(
        dataset=dataset,
        target=target,
        task=task,
        sensitive_columns=sensitive_columns,
        column_types=column_types,
    )
    schema = validate_task.outputs["schema"]

    prepare_task = prepare(dataset=dataset, schema=schema, test_size=test_size, seed=seed)

    bias_task = bias(
        dataset=dataset,
        schema=schema,
        sensitive_columns=sensitive_columns,
        positive_class=positive_class,
    )

    tune_task = tune(
        train=prepare_task.outputs["train"],
        schema=schema,
        model_families=model_families,
        num_trials=num_trials,
        cv_folds=cv_folds,
        metric=metric,
        ray_cpus=ray_cpus,
        seed=seed,
    ).after(bias_task)

    train_task = train(
        train=prepare_task.outputs["train"],
        schema=schema,
        preprocessor=prepare_task.outputs["preprocessor"],
        best=tune_task.outputs["best"],
        seed=seed,
    )

    evaluate_task = evaluate(
        model=train_task.outputs["model"],
        test=prepare_task.outputs["test"],
        schema=schema,
        best=tune_task.outputs["best"],
        sensitive_columns=sensitive_columns,
        positive_class=positive_class,
    )

    register_task = register(
        model=train_task.outputs["model"],
        dataset=dataset,
        schema=schema,
        best=tune_task.outputs["best"],
        metrics=evaluate_task.outputs["metrics"],
        model_store_uri=model_store_uri,
        model_name=model_name,
        test_size=test_size,
        seed=seed,
    )

    deploy_task = deploy(
        model_uri=register_task.outputs["model_uri"],
        test=prepare_task.outputs["test"],
        smoke_rows=smoke_rows,
        target=deploy_target,
        namespace=deploy_namespace,
        storage_uri=deploy_storage_uri,
        canary_traffic_percent=canary_traffic_percent,
        gitops_repo=gitops_repo,
        gitops_path=gitops_path,
        gitops_branch=gitops_branch,
        timeout_seconds=deploy_timeout_seconds,
    )
    deploy_task.set_caching_options(False)

    outputs = NamedTuple("TrainingOutputs", [("model_uri", str), ("version", str)])
    return outputs(register_task.outputs["model_uri"], register_task.outputs["version"])


def compile_pipeline(output: str | Path = COMPILED_PIPELINE) -> Path:
    """Write the pipeline's IR YAML, the file to upload in the Kubeflow dashboard."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, package_path=str(output))
    return output
