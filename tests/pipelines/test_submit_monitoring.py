"""`mlpipe submit --pipeline monitoring --schedule CRON` against the KFP API stub (a contract
test, as tests/pipelines/test_submit_contract.py's for the training pipeline): the monitoring
spec, its own arguments and pipeline name, on a recurring schedule."""

from pipelines.config import load_config
from pipelines.kfp_resources import read_spec
from pipelines.monitor_cli import monitoring_arguments
from pipelines.monitoring_pipeline import PIPELINE_NAME, compile_pipeline
from pipelines.submit import submit_run
from tests.pipelines import test_submit_contract as contract

CRON = contract.CRON
# The training submission's fixtures: the stub server, no token or context, the run config.
stub, kfp_env, config_path, config = (
    contract.stub,
    contract.kfp_env,
    contract.config_path,
    contract.config,
)


def test_a_scheduled_monitoring_run_uploads_the_monitoring_spec_with_its_arguments(
    stub, kfp_env, config, tmp_path
):
    made = submit_run(config, stub.host, schedule=CRON, pipeline="monitoring")

    assert stub.rejected == []  # the stub checks the arguments against the uploaded spec
    [upload] = stub.calls("POST", "/pipelines/upload")
    assert upload.query["name"] == PIPELINE_NAME == "mlpipe-monitoring"
    assert made.pipeline_name == "mlpipe-monitoring"
    [recurring] = stub.calls("POST", "/recurringruns")
    body = recurring.body
    assert body["trigger"] == {"cron_schedule": {"cron": CRON}}
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["display_name"] == f"{config.model_name}-monitoring"
    parameters = body["runtime_config"]["parameters"]
    assert parameters == monitoring_arguments(config, resolve_paths=False)
    assert parameters["monitoring"]["source"] == "prediction_log"
    # The training pipeline's parameters too, for the retraining nested behind dsl.If(retrain);
    # a retraining reads what its plan says, not a watermark given at submission.
    assert parameters["tuning"]["families"] and parameters["retraining"]["mode"] == "incremental"
    assert "since_watermark" not in parameters
    uploaded = stub.version_spec(made.version_id)
    assert uploaded["pipelineInfo"]["name"] == "mlpipe-monitoring"
    compiled, _ = read_spec(compile_pipeline(tmp_path / "monitoring.yaml"))
    assert uploaded["root"]["dag"]["tasks"].keys() == compiled["root"]["dag"]["tasks"].keys()


def test_training_and_monitoring_are_two_pipelines_on_the_host(stub, kfp_env, config):
    training = submit_run(config, stub.host)
    monitoring = submit_run(config, stub.host, schedule=CRON, pipeline="monitoring")
    assert stub.rejected == []
    assert len(stub.calls("POST", "/pipelines/upload")) == 2
    assert training.pipeline_id != monitoring.pipeline_id


def test_the_cli_submits_the_monitoring_pipeline_on_a_schedule(stub, kfp_env, config_path, capsys):
    from pipelines.cli import main

    code = main(
        [
            "submit",
            "--config",
            str(config_path),
            "--host",
            stub.host,
            "--pipeline",
            "monitoring",
            "--schedule",
            CRON,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    [recurring_id] = stub.store.recurring_runs
    assert f"Created recurring run {recurring_id}" in out
    assert "of pipeline mlpipe-monitoring" in out
    assert (
        load_config(config_path).model_name
        in stub.calls("POST", "/recurringruns")[0].body["display_name"]
    )
