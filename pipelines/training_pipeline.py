"""The training pipeline: ingest -> validate -> prepare -> bias -> tune -> train -> evaluate ->
fairness -> gate -> register, then deploy -> promote only when the gate blessed the model (it meets
the thresholds, is not worse than the champion, and passed the fairness gate), all inside an exit
handler whose exit task (notify) alerts when the run failed. Compiled once into
pipelines/training_pipeline.yaml, which is the file that runs locally (kfp.local), is uploaded
in the Kubeflow dashboard, and is submitted by the SDK."""

import ast
from pathlib import Path

from kfp import compiler, dsl

from components.bias.component import bias as bias_step
from components.bias.component import fairness as fairness_step
from components.common.settings.resources import ResourcesConfig
from components.common.settings.sections import section_defaults
from components.common.step_runner import use_step_runner
from components.deploy.component import deploy as deploy_step
from components.evaluate.component import evaluate as evaluate_step
from components.evaluate.component import gate as gate_step
from components.export.component import export_onnx_model
from components.ingest.component import ingest as ingest_step
from components.notify.component import notify as notify_step
from components.plan.component import plan as plan_step
from components.prepare.component import prepare as prepare_step
from components.register.component import promote as promote_step
from components.register.component import register as register_step
from components.report.component import run_report
from components.train.component import train as train_step
from components.tune.component import tune as tune_step
from components.validate.component import validate as validate_step
from pipelines.pod_settings import for_the_cluster

# Every step runs through components.common.step_runner: it checks its inputs' content hashes,
# marks its outputs, and reuses a finished step with the same content key (code, parameters,
# the bytes of its inputs) from the run's own record (--resume) or the shared step cache.
for _step in (
    plan_step,
    ingest_step,
    validate_step,
    prepare_step,
    bias_step,
    tune_step,
    train_step,
    evaluate_step,
    export_onnx_model,
    fairness_step,
    gate_step,
    register_step,
    run_report,
    deploy_step,
    promote_step,
    notify_step,
):
    use_step_runner(_step)

PIPELINE_NAME = "mlpipe-training"
COMPILED_PIPELINE = Path(__file__).with_name("training_pipeline.yaml")


def _training_steps(
    model_name,
    model_store_uri,
    data,
    since_watermark,
    serving,
    retraining,
    training_mode,
    trigger,
    **parameters,
):
    """The training DAG (inside the pipeline's exit handler): the plan, then, unless it found
    nothing new to retrain on, the steps."""
    # Reads the registry and the lake: never a cache hit.
    plan_task = plan_step(
        model_name=model_name,
        model_store_uri=model_store_uri,
        training_mode=training_mode,
        trigger=trigger,
        retraining_config=retraining,
        data_config=data,
        serving_config=serving,
        since_watermark=since_watermark,
    )
    plan_task.set_caching_options(False)
    for_the_cluster(plan_task, parameters["resources"])
    with dsl.If(plan_task.outputs["Output"] != "skip", name="something-to-train-on"):
        _steps_after_plan(
            plan_task.outputs["plan"],
            model_name=model_name,
            model_store_uri=model_store_uri,
            data=data,
            serving=serving,
            **parameters,
        )


def _steps_after_plan(
    plan,
    model_name,
    model_store_uri,
    target,
    task,
    positive_class,
    sensitive_columns,
    column_types,
    data,
    contract,
    reviewed_contract,
    prepare,
    split,
    tuning,
    ray,
    bias,
    evaluation,
    serving,
    deploy,
    alerts,
    run_config,
    resources,
    **_,
):
    """Ingest to promote, as the plan says (full or incremental)."""
    ingest_task = ingest_step(data_config=data, plan=plan)
    # A data lake grows between runs: reading it again is never a cache hit.
    ingest_task.set_caching_options(False)
    dataset = ingest_task.outputs["dataset"]

    validate_task = validate_step(
        dataset=dataset,
        target=target,
        task=task,
        sensitive_columns=sensitive_columns,
        column_types=column_types,
        contract_config=contract,
        reviewed_contract=reviewed_contract,
    )
    schema = validate_task.outputs["schema"]

    prepare_task = prepare_step(
        dataset=dataset, schema=schema, prepare_config=prepare, split_config=split
    )

    bias_task = bias_step(
        dataset=dataset,
        schema=schema,
        sensitive_columns=sensitive_columns,
        positive_class=positive_class,
        bias_config=bias,
    )

    tune_task = tune_step(
        train=prepare_task.outputs["train"],
        schema=schema,
        preprocessor=prepare_task.outputs["preprocessor"],
        tuning_config=tuning,
        ray_config=ray,
        split_config=split,
        plan=plan,
    ).after(bias_task)

    train_task = train_step(
        train=prepare_task.outputs["train"],
        schema=schema,
        preprocessor=prepare_task.outputs["preprocessor"],
        best=tune_task.outputs["best"],
        positive_class=positive_class,
        bias_config=bias,
        tuning_config=tuning,
        evaluation_config=evaluation,
        split_config=split,
        plan=plan,
    )

    evaluate_task = evaluate_step(
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

    fairness_task = fairness_step(
        model=train_task.outputs["model"],
        baseline=train_task.outputs["baseline"],
        test=prepare_task.outputs["test"],
        schema=schema,
        sensitive_columns=sensitive_columns,
        positive_class=positive_class,
        bias_config=bias,
        split_config=split,
    ).after(evaluate_task)

    # The champion is re-scored on this run's test split; reading the registry's alias is
    # never a cache hit.
    gate_task = gate_step(
        model=train_task.outputs["model"],
        test=prepare_task.outputs["test"],
        schema=schema,
        evaluation=evaluate_task.outputs["evaluation"],
        fairness=fairness_task.outputs["summary"],
        model_store_uri=model_store_uri,
        model_name=model_name,
        positive_class=positive_class,
        evaluation_config=evaluation,
        alerts_config=alerts,
    )
    gate_task.set_caching_options(False)

    # Registered either way, as the candidate, with the gate's decision and reason.
    register_task = register_step(
        model=train_task.outputs["model"],
        dataset=dataset,
        schema=schema,
        best=tune_task.outputs["best"],
        evaluation=evaluate_task.outputs["evaluation"],
        fairness=fairness_task.outputs["summary"],
        decision=gate_task.outputs["decision"],
        onnx_model=export_task.outputs["onnx_model"],
        train=prepare_task.outputs["train"],
        test=prepare_task.outputs["test"],
        plan=plan,
        model_store_uri=model_store_uri,
        model_name=model_name,
        positive_class=positive_class,
        run_config=run_config,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    register_task.set_caching_options(False)

    # One self-contained HTML page for the run: data, fairness, tuning, metrics, curves and the
    # champion comparison with the gate's decision.
    report_task = run_report(
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
    )
    report_task.set_caching_options(False)

    # Deployed, then made the champion, only when the gate blessed the model.
    with dsl.If(gate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712
        deploy_task = deploy_step(
            model_uri=register_task.outputs["model_uri"],
            test=prepare_task.outputs["test"],
            serving_config=serving,
            deploy_config=deploy,
        )
        deploy_task.set_caching_options(False)
        promote_task = promote_step(
            model_store_uri=model_store_uri,
            model_name=model_name,
            version=register_task.outputs["version"],
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            alerts_config=alerts,
        ).after(deploy_task)
        promote_task.set_caching_options(False)

    for task_ in (
        ingest_task,
        validate_task,
        prepare_task,
        bias_task,
        tune_task,
        train_task,
        evaluate_task,
        export_task,
        fairness_task,
        gate_task,
        register_task,
        report_task,
        deploy_task,
        promote_task,
    ):
        for_the_cluster(task_, resources)


def build_training_pipeline(resources: ResourcesConfig | None = None):
    """The training pipeline (a KFP GraphComponent), its steps' pods given the run config's
    `resources:` over the defaults (components.common.settings.resources); None: the defaults,
    as in the checked-in spec.

    KFP builds a pipeline's graph when the decorator runs, so pods that differ need a pipeline
    built anew: this function is that decorator's call.
    """

    # Each section of the run config is one parameter (a dict), checked inside each step by the
    # section's own model (components.common.settings): a new key is one field there. The defaults
    # below are those models' own, so the dashboard's run form shows every key with its default.
    def training_pipeline(
        model_name: str,
        model_store_uri: str,
        target: str,
        task: str = "classification",
        positive_class: str = "",
        sensitive_columns: list = [],
        column_types: dict = {},
        data: dict = section_defaults("data"),
        since_watermark: str = "",
        contract: dict = section_defaults("contract"),
        reviewed_contract: str = "",
        prepare: dict = section_defaults("prepare"),
        split: dict = section_defaults("split"),
        tuning: dict = section_defaults("tuning"),
        ray: dict = section_defaults("ray"),
        bias: dict = section_defaults("bias"),
        evaluation: dict = section_defaults("evaluation"),
        serving: dict = section_defaults("serving"),
        deploy: dict = section_defaults("deploy"),
        alerts: dict = section_defaults("alerts"),
        retraining: dict = section_defaults("retraining"),
        training_mode: str = "full",
        trigger: str = "manual",
        run_config: str = "",
    ):
        """Trains, registers and deploys a tabular model.

        Args:
            model_name: the model's name in the store and on the model server.
            model_store_uri: the model store's root.
            target: the label column.
            task: classification or regression.
            positive_class: the favourable class for selection rates.
            sensitive_columns: columns that bias analysis groups by.
            column_types: declared column kinds (numeric/categorical) that validation enforces.
            data: the run config's `data:` section: the source (a Parquet lake folder, a Parquet or
                CSV file) and how to read it, or an ETL spec and where snapshots are kept.
            since_watermark: an earlier run's watermark (JSON, the contents of the file
                `data.since_watermark` names): read only new or changed files.
            contract: the run config's `contract:` section: severities and tolerances.
            reviewed_contract: the reviewed data contract (JSON, the contents of the file
                `contract.path` names); empty infers one from the data.
            prepare: the run config's `prepare:` section: imputation, outliers, encoding, scaling,
                log transform and derived features.
            split: the run config's `split:` section: test_size, seed (of the split, the search and
                the estimators), strategy (stratified, random, group or time) and its column.
            tuning: the run config's `tuning:` section: families, trials, folds, metric, search,
                scheduler, space (JSON text), retries.
            ray: the run config's `ray:` section: the embedded Ray's CPUs, or a cluster's address,
                the experiment's storage, the connect timeout.
            bias: the run config's `bias:` section: bands, intersections, group sizes, bootstrap,
                the fairness gate's thresholds, mitigation.
            evaluation: the run config's `evaluation:` section: the decision threshold's rule, the
                gate's thresholds, compared metrics and margin.
            serving: the run config's `serving:` section: smoke_rows, the held-out rows that deploy
                sends to the model server.
            deploy: the run config's `deploy:` section: target (local, kserve or gitops), namespace,
                storage_uri, canary, GitOps repository, timeout.
            alerts: the run config's `alerts:` section: the webhook (or the environment variable
                that holds it), timeout, retries and the events that alert.
            retraining: the run config's `retraining:` section: what an incremental run reads and
                when it falls back to full (components.common.retraining).
            training_mode: full (ingest everything, search, fit) or incremental (update the
                champion with what is new since its watermark); empty: `retraining.mode`.
            trigger: what started the run: manual, monitor or schedule (recorded in the lineage).
            run_config: the run's configuration (JSON), recorded in the model version's metadata.

        Every model is registered (as the candidate); only a blessed one is deployed and promoted.
        The whole run sits in a dsl.ExitHandler whose exit task (notify) alerts when it failed. A
        pipeline with an exit handler around its steps cannot return their outputs (Kubeflow allows
        pipeline outputs only from top-level tasks): the version is register's output, and whether
        it was blessed, the gate's.
        """
        # Runs last, whatever became of the steps; job_id is new for each execution, so a resumed
        # run that fails again alerts again.
        notify_task = notify_step(
            model_name=model_name,
            alerts_config=alerts,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        notify_task.set_caching_options(False)
        for_the_cluster(notify_task, resources)
        # The steps are a function called here, not an indented block, so that they read as before.
        with dsl.ExitHandler(notify_task, name="training"):
            _training_steps(**locals())

    return dsl.pipeline(
        name=PIPELINE_NAME, description="Tabular training pipeline with Ray Tune and KServe."
    )(training_pipeline)


training_pipeline = build_training_pipeline()


def _sorted(value):
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def stable_header(text: str) -> str:
    """The compiled file with the dict defaults of its comment header in sorted key order.

    KFP writes that header from the spec's protobuf structs, whose key order changes from one
    process to the next; the spec below it is sorted. Sorted here, the same pipeline always
    compiles to the same bytes, which the golden test and the manifests' version name rely on.
    """
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            break
        name, marker, default = line.partition(": dict [Default: ")
        if marker and default.endswith("]"):
            value = ast.literal_eval(default[:-1])
            lines[index] = f"{name}{marker}{_sorted(value)!r}]"
    return "\n".join(lines)


def compile_pipeline(
    output: str | Path = COMPILED_PIPELINE, resources: ResourcesConfig | None = None
) -> Path:
    """Write the pipeline's IR YAML, the file to upload in the Kubeflow dashboard; `resources`:
    the run config's section (None: the defaults)."""
    built = build_training_pipeline(resources) if resources and resources.root else None
    return write_spec(built or training_pipeline, output)


def write_spec(pipeline, output: str | Path) -> Path:
    """Compile `pipeline` (a built pipeline) to `output`, its header made stable (stable_header);
    every pipeline's compile_pipeline ends here."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, package_path=str(output))
    output.write_text(stable_header(output.read_text(encoding="utf-8")), encoding="utf-8")
    return output
