"""The batch-prediction pipeline's compiled spec: golden comparison, its one never-cached step
through the step runner with what its pod needs on a cluster; the checked-in file itself run
under kfp.local; and `mlpipe submit --pipeline batch-prediction --schedule CRON` against the KFP
API stub (a contract test, as tests/pipelines/test_submit_monitoring.py's)."""

import json

import pandas as pd
import pytest
import yaml
from kfp import components, local

from components.common.image import COMPONENT_IMAGE
from components.common.settings.sections import PredictConfig
from pipelines.batch_prediction_pipeline import COMPILED_PIPELINE, PIPELINE_NAME, compile_pipeline
from pipelines.config import load_config
from pipelines.kfp_resources import read_spec
from pipelines.pod_settings import OBJECT_STORE_SECRET, RAY_TOKEN_SECRET
from pipelines.predict_cli import batch_prediction_arguments
from pipelines.submit import submit_run
from tests.components.predict_fixtures import (
    MODEL,
    loans_to_score,
    register_loans_model,
    write_lake,
)
from tests.pipelines import test_submit_contract as contract

CRON = contract.CRON
stub, kfp_env, config_path, config = (
    contract.stub,
    contract.kfp_env,
    contract.config_path,
    contract.config,
)


def test_checked_in_spec_equals_a_fresh_compile(tmp_path):
    fresh = compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert fresh == COMPILED_PIPELINE.read_text(), (
        "pipelines/batch_prediction_pipeline.yaml is stale: run `make compile` and commit the diff"
    )


def test_the_step_runs_through_the_step_runner_never_cached_with_its_cluster_settings():
    from components.common.step_runner import EXTERNAL_STEPS

    spec, platform = read_spec(COMPILED_PIPELINE)
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME == "mlpipe-batch-prediction"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"batch-predict"} and tasks["batch-predict"]["cachingOptions"] == {}
    assert "batch-predict" in EXTERNAL_STEPS
    executor = spec["deploymentSpec"]["executors"]["exec-batch-predict"]
    assert executor["container"]["image"] == COMPONENT_IMAGE
    command = " ".join(executor["container"]["command"])
    assert "python3 -m components.common.step_runner --wraps kfp.dsl.executor_main" in command
    # The object store's credentials and KubeRay's token come from Secrets, never parameters.
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-batch-predict"
    ]["secretAsEnv"]
    assert {secret["secretName"] for secret in secrets} == {
        OBJECT_STORE_SECRET,
        RAY_TOKEN_SECRET,
    }
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert PredictConfig.model_validate(parameters["predict"]["defaultValue"]) == PredictConfig()


@pytest.mark.e2e
def test_the_compiled_yaml_scores_a_lake_under_kfp_local(tmp_path):
    root = tmp_path / "out"
    register_loans_model(root / "models")
    lake = write_lake(loans_to_score(300), tmp_path / "lake")
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "model_name": MODEL,
                "data": {"source": str(lake)},
                "target": "approved",
                "output_root": str(root),
                "predict": {"key_columns": ["loan_id"], "since_last_job": True},
            }
        )
    )
    arguments = batch_prediction_arguments(load_config(config_file))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    pipeline = components.load_component_from_file(str(COMPILED_PIPELINE))

    outputs = pipeline(**arguments).outputs

    partition = outputs["Output"]
    assert partition.startswith(str(root / "batch-predictions" / "job="))
    scored = pd.read_parquet(partition)
    assert sorted(scored["loan_id"]) == sorted(loans_to_score(300)["loan_id"])
    (job,) = (tmp_path / "root").glob("*/batch-predict/job")
    record = json.loads(job.read_text())
    assert record["rows"] == 300 and record["model"]["version"] == "v1"
    assert record["model"]["runtime"] == "onnx" and record["engine"] == "local"
    assert list((root / "predictions" / f"model={MODEL}").glob("date=*/part-*.parquet"))


def test_a_scheduled_batch_prediction_uploads_its_spec_with_its_arguments(
    stub, kfp_env, config, tmp_path
):
    made = submit_run(config, stub.host, schedule=CRON, pipeline="batch-prediction")

    assert stub.rejected == []  # the stub checks the arguments against the uploaded spec
    [upload] = stub.calls("POST", "/pipelines/upload")
    assert upload.query["name"] == PIPELINE_NAME
    assert made.pipeline_name == PIPELINE_NAME
    [recurring] = stub.calls("POST", "/recurringruns")
    body = recurring.body
    assert body["trigger"] == {"cron_schedule": {"cron": CRON}}
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["display_name"] == f"{config.model_name}-batch-prediction"
    parameters = body["runtime_config"]["parameters"]
    assert parameters == batch_prediction_arguments(config, resolve_paths=False)
    assert parameters["model_ref"] == "champion"
    assert parameters["input_uri"] == config.data.source  # as written: a URI the pod reads
    uploaded = stub.version_spec(made.version_id)
    assert uploaded["pipelineInfo"]["name"] == PIPELINE_NAME
    compiled, _ = read_spec(compile_pipeline(tmp_path / "batch.yaml"))
    assert uploaded["root"]["dag"]["tasks"].keys() == compiled["root"]["dag"]["tasks"].keys()
