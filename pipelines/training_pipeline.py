"""The training pipeline: ingest -> validate -> prepare -> bias -> tune -> train -> evaluate ->
fairness -> gate -> register, then deploy -> promote only when the gate blessed the model (it meets
the thresholds, is not worse than the champion, and passed the fairness gate). Compiled once into
pipelines/training_pipeline.yaml, which is the file that runs locally (kfp.local), is uploaded
in the Kubeflow dashboard, and is submitted by the SDK."""

from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl

from components.bias.component import bias, fairness
from components.deploy.component import deploy
from components.evaluate.component import evaluate, gate
from components.export.component import export_onnx_model
from components.ingest.component import ingest
from components.prepare.component import prepare
from components.register.component import promote, register
from components.report.component import run_report
from components.train.component import train
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
    etl_spec: str = "",
    snapshot_root: str = "",
    reviewed_contract: str = "",
    contract_severity: dict = {},
    unseen_category_rate: float = 0.0,
    null_rate_margin: float = 0.0,
    positive_class: str = "",
    sensitive_columns: list = [],
    column_types: dict = {},
    test_size: float = 0.2,
    seed: int = 42,
    prepare_options: dict = {},
    split_strategy: str = "stratified",
    group_column: str = "",
    time_column: str = "",
    model_families: list = ["logistic_regression", "random_forest", "hist_gradient_boosting"],
    num_trials: int = 16,
    cv_folds: int = 3,
    metric: str = "",
    search: str = "random",
    scheduler: str = "fifo",
    search_space: str = "{}",
    max_failures: int = 2,
    ray_cpus: int = 2,
    ray_address: str = "",
    ray_storage_path: str = "",
    ray_connect_timeout: int = 30,
    smoke_rows: int = 5,
    deploy_target: str = "local",
    deploy_namespace: str = "mlpipe",
    deploy_storage_uri: str = "",
    canary_traffic_percent: int = 0,
    gitops_repo: str = "",
    gitops_path: str = "apps/mlpipe",
    gitops_branch: str = "main",
    deploy_timeout_seconds: int = 600,
    bias_bands: dict = {},
    bias_intersections: list = [],
    bias_min_group_size: int = 30,
    bias_max_groups: int = 50,
    bias_bootstrap: int = 100,
    bias_thresholds: list = [],
    bias_mitigation: str = "none",
    bias_constraint: str = "demographic_parity",
    bias_mitigate_by: str = "",
    bias_on_not_computable: str = "warn",
    threshold_rule: str = "fixed",
    threshold: float = 0.5,
    target_precision: float = 0.9,
    gate_thresholds: dict = {},
    compare_metrics: list = [],
    gate_margin: float = 0.01,
    run_config: str = "",
) -> NamedTuple("TrainingOutputs", [("model_uri", str), ("version", str), ("blessed", bool)]):
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
        etl_spec: an ETL spec (JSON): extract, transform and load an immutable snapshot, and use
            it instead of `source_uri`.
        snapshot_root: where ETL snapshots are kept.
        reviewed_contract: a reviewed data contract (JSON); empty infers one from the data.
        contract_severity: "block" or "warn" per anomaly kind, over the defaults.
        unseen_category_rate: unseen categories are an anomaly only above this share of rows.
        null_rate_margin: a null rate is an anomaly only above the contract's plus this.
        positive_class: the favourable class for selection rates.
        sensitive_columns: columns that bias analysis groups by.
        column_types: declared column kinds (numeric/categorical) that validation enforces.
        test_size: the share of rows held out.
        seed: seeds the split, the search and the estimators.
        prepare_options: imputation, outliers, encoding, scaling, log transform and derived
            features (the run config's `prepare` section); empty: the defaults.
        split_strategy: stratified, random, group or time.
        group_column: the group split's column (no group on both sides).
        time_column: the time split's column (the newest rows are the test split).
        model_families: the families that tuning searches.
        num_trials: how many configurations tuning tries.
        cv_folds: folds of the cross-validation that scores each trial.
        metric: a scikit-learn scorer name; empty picks one for the task.
        search: random, or tpe (Optuna's TPE).
        scheduler: fifo, or asha (stops bad trials early).
        search_space: per-family overrides of the default search space (JSON).
        max_failures: retries of a trial whose worker died.
        ray_cpus: CPUs of the embedded Ray that tuning starts.
        ray_address: an existing Ray cluster's GCS address (host:6379); empty: RAY_ADDRESS in
            the tune step's environment, else an embedded Ray on 127.0.0.1.
        ray_storage_path: where Tune keeps the experiment (s3://... on a cluster); a rerun on the
            same inputs resumes it.
        ray_connect_timeout: seconds a Ray cluster address may take to answer.
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
        bias_bands: band edges of numeric sensitive columns, e.g. {"age": [0, 18, 25, 120]}.
        bias_intersections: pairs of sensitive columns to group by together.
        bias_min_group_size: smaller groups are flagged and left out of the summary metrics.
        bias_max_groups: a sensitive column with more groups is not computable.
        bias_bootstrap: bootstrap samples for the fairness metrics' 95% intervals.
        bias_thresholds: the fairness gate, [{metric, threshold, direction, blocking, columns}].
        bias_mitigation: none, reweighing, exponentiated_gradient or threshold_optimizer.
        bias_constraint: the fairness constraint of the last two.
        bias_mitigate_by: the sensitive column that mitigation balances.
        bias_on_not_computable: warn (go on, the metric marked not computable) or fail.
        threshold_rule: binary tasks: fixed, max_f1 or target_precision (the decision threshold).
        threshold: the fixed rule's threshold.
        target_precision: the precision the target_precision rule must reach.
        gate_thresholds: {metric: bound} a model must meet to be deployed.
        compare_metrics: metrics compared with the champion; empty: the task's primary metric.
        gate_margin: how much worse than the champion a new model may be.
        run_config: the run's configuration (JSON), recorded in the model version's metadata.

    Returns:
        The registered version's folder and its version, and whether the gate blessed it: every
        model is registered (as the candidate); only a blessed one is deployed and promoted.
    """
    ingest_task = ingest(
        source_uri=source_uri,
        na_values=na_values,
        columns=columns,
        filters=filters,
        since_watermark=since_watermark,
        etl_spec=etl_spec,
        snapshot_root=snapshot_root,
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
        reviewed_contract=reviewed_contract,
        contract_severity=contract_severity,
        unseen_category_rate=unseen_category_rate,
        null_rate_margin=null_rate_margin,
    )
    schema = validate_task.outputs["schema"]

    prepare_task = prepare(
        dataset=dataset,
        schema=schema,
        test_size=test_size,
        seed=seed,
        options=prepare_options,
        split_strategy=split_strategy,
        group_column=group_column,
        time_column=time_column,
    )

    bias_task = bias(
        dataset=dataset,
        schema=schema,
        sensitive_columns=sensitive_columns,
        positive_class=positive_class,
        bands=bias_bands,
        intersections=bias_intersections,
        min_group_size=bias_min_group_size,
        max_groups=bias_max_groups,
        on_not_computable=bias_on_not_computable,
    )

    tune_task = tune(
        train=prepare_task.outputs["train"],
        schema=schema,
        preprocessor=prepare_task.outputs["preprocessor"],
        model_families=model_families,
        num_trials=num_trials,
        cv_folds=cv_folds,
        metric=metric,
        ray_cpus=ray_cpus,
        seed=seed,
        search=search,
        scheduler=scheduler,
        search_space=search_space,
        max_failures=max_failures,
        ray_address=ray_address,
        ray_storage_path=ray_storage_path,
        ray_connect_timeout=ray_connect_timeout,
        split_strategy=split_strategy,
        group_column=group_column,
    ).after(bias_task)

    train_task = train(
        train=prepare_task.outputs["train"],
        schema=schema,
        preprocessor=prepare_task.outputs["preprocessor"],
        best=tune_task.outputs["best"],
        seed=seed,
        positive_class=positive_class,
        mitigation=bias_mitigation,
        constraint=bias_constraint,
        mitigate_by=bias_mitigate_by,
        bands=bias_bands,
        cv_folds=cv_folds,
        threshold_rule=threshold_rule,
        threshold=threshold,
        target_precision=target_precision,
        split_strategy=split_strategy,
        group_column=group_column,
    )

    evaluate_task = evaluate(
        model=train_task.outputs["model"],
        test=prepare_task.outputs["test"],
        schema=schema,
        cv=train_task.outputs["cv"],
        best=tune_task.outputs["best"],
        positive_class=positive_class,
    )

    # The edge model: the whole fitted pipeline as ONNX, checked row by row on the test split.
    export_task = export_onnx_model(
        model=train_task.outputs["model"],
        test=prepare_task.outputs["test"],
        schema=schema,
    )

    fairness_task = fairness(
        model=train_task.outputs["model"],
        baseline=train_task.outputs["baseline"],
        test=prepare_task.outputs["test"],
        schema=schema,
        sensitive_columns=sensitive_columns,
        positive_class=positive_class,
        bands=bias_bands,
        intersections=bias_intersections,
        min_group_size=bias_min_group_size,
        max_groups=bias_max_groups,
        bootstrap=bias_bootstrap,
        thresholds=bias_thresholds,
        mitigation=bias_mitigation,
        on_not_computable=bias_on_not_computable,
        seed=seed,
    ).after(evaluate_task)

    # The champion is re-scored on this run's test split; reading the registry's alias is
    # never a cache hit.
    gate_task = gate(
        test=prepare_task.outputs["test"],
        schema=schema,
        evaluation=evaluate_task.outputs["evaluation"],
        fairness=fairness_task.outputs["summary"],
        model_store_uri=model_store_uri,
        model_name=model_name,
        positive_class=positive_class,
        thresholds=gate_thresholds,
        compare_metrics=compare_metrics,
        margin=gate_margin,
    )
    gate_task.set_caching_options(False)

    # Registered either way, as the candidate, with the gate's decision and reason.
    register_task = register(
        model=train_task.outputs["model"],
        dataset=dataset,
        schema=schema,
        best=tune_task.outputs["best"],
        evaluation=evaluate_task.outputs["evaluation"],
        fairness=fairness_task.outputs["summary"],
        decision=gate_task.outputs["decision"],
        onnx_model=export_task.outputs["onnx_model"],
        model_store_uri=model_store_uri,
        model_name=model_name,
        run_config=run_config,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    register_task.set_caching_options(False)

    # One self-contained HTML page for the run: data, fairness, tuning, metrics, curves and the
    # champion comparison with the gate's decision.
    run_report(
        dataset=dataset,
        schema=schema,
        contract=validate_task.outputs["contract"],
        anomalies=validate_task.outputs["anomalies"],
        data_bias=bias_task.outputs["report"],
        fairness_data=fairness_task.outputs["report_data"],
        fairness_summary=fairness_task.outputs["summary"],
        best=tune_task.outputs["best"],
        trials=tune_task.outputs["trials"],
        evaluation=evaluate_task.outputs["evaluation"],
        gate=gate_task.outputs["decision"],
        model_name=model_name,
        version=register_task.outputs["version"],
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    ).set_caching_options(False)

    # Deployed, then made the champion, only when the gate blessed the model.
    with dsl.If(gate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712
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
        promote_task = promote(
            model_store_uri=model_store_uri,
            model_name=model_name,
            version=register_task.outputs["version"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).after(deploy_task)
        promote_task.set_caching_options(False)

    outputs = NamedTuple(
        "TrainingOutputs", [("model_uri", str), ("version", str), ("blessed", bool)]
    )
    return outputs(
        register_task.outputs["model_uri"],
        register_task.outputs["version"],
        gate_task.outputs["Output"],
    )


def compile_pipeline(output: str | Path = COMPILED_PIPELINE) -> Path:
    """Write the pipeline's IR YAML, the file to upload in the Kubeflow dashboard."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, package_path=str(output))
    return output
