"""Contract test of `mlpipe submit` against the Kubeflow Pipelines v2beta1 REST API.

No KFP API server can run here, so this is a contract test, not an integration test: the real
kfp 2.17.0 client (`kfp.Client`, `kfp_server_api`) talks HTTP to `kfp_stub_server`, which serves
the routes that client calls, refuses (HTTP 400) any body that does not deserialize into the
client's own `kfp_server_api` models or any upload that is not a PipelineSpec, and keeps what it
received. What a real server then does with a run (scheduling, caching, the pods) is not tested.
"""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import kfp
import pytest
import requests

from components.common.errors import PipelineInputError
from pipelines.config import load_config, pipeline_arguments
from pipelines.kfp_resources import read_spec
from pipelines.submit import RunFailed, SubmitFailed, check_cron, submit_run
from tests.conftest import write_config
from tests.pipelines.kfp_stub_server import KfpStubServer

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
CRON = "0 0 3 * * *"


@pytest.fixture
def stub():
    server = KfpStubServer().start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.running, "the stub server's thread is still running"


@pytest.fixture
def kfp_env(tmp_path, monkeypatch):
    """No token, no proxy for loopback, and no ~/.config/kfp/context.json from this machine."""
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))


@pytest.fixture
def config_path(tmp_path) -> Path:
    # Submission does not read the data: an object-store URI is passed to the run as written.
    return write_config(tmp_path / "run.yaml", **{"data.source": "s3://bucket/lake"})


@pytest.fixture
def config(config_path):
    return load_config(config_path)


def _subprocess_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KFP_TOKEN" and not k.startswith("KF_")}
    env.update(HOME=str(tmp_path), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def _tasks_caching(spec: dict) -> dict:
    """Every task's caching, in the root DAG and the groups' (the exit handler's, the If's)."""
    dags = [spec["root"], *spec.get("components", {}).values()]
    return {
        name: bool(task.get("cachingOptions", {}).get("enableCache"))
        for dag in dags
        for name, task in dag.get("dag", {}).get("tasks", {}).items()
    }


def test_first_submit_creates_the_experiment_uploads_the_pipeline_and_runs_that_version(
    stub, kfp_env, config, monkeypatch
):
    monkeypatch.setenv("KFP_TOKEN", "t0ken")
    made = submit_run(config, stub.host, experiment="exp", service_account="mlpipe-pipeline")

    assert stub.rejected == []
    assert len(stub.calls("POST", "/experiments")) == 1
    assert stub.calls("POST", "/experiments")[0].body["display_name"] == "exp"
    [upload] = stub.calls("POST", "/pipelines/upload")
    assert upload.query["name"] == "mlpipe-training"
    assert {r.headers.get("authorization") for r in stub.received[1:]} == {"Bearer t0ken"}
    assert stub.calls("POST", "/pipelines/upload_version") == []

    [run] = stub.calls("POST", "/runs")
    assert run.body["pipeline_version_reference"] == {
        "pipeline_id": made.pipeline_id,
        "pipeline_version_id": made.version_id,
    }
    assert "pipeline_spec" not in run.body  # the run refers to the stored version
    assert run.body["experiment_id"] == made.experiment_id
    assert run.body["service_account"] == "mlpipe-pipeline"
    assert run.body["display_name"] == f"{config.model_name}-training"
    assert run.body["runtime_config"]["parameters"] == {
        **pipeline_arguments(config, resolve_paths=False),
        "training_mode": "full",
        "trigger": "manual",
    }
    assert made.run_id == stub.store.runs[made.run_id]["run_id"]
    assert made.url == f"{stub.host}/#/runs/details/{made.run_id}"


def test_second_submit_reuses_the_experiment_and_uploads_a_second_version(stub, kfp_env, config):
    first = submit_run(config, stub.host)
    second = submit_run(config, stub.host)
    third = submit_run(config, stub.host)

    assert stub.rejected == []
    assert len(stub.calls("POST", "/experiments")) == 1
    assert first.experiment_id == second.experiment_id == third.experiment_id
    assert len(stub.calls("POST", "/pipelines/upload")) == 1
    [version_upload] = stub.calls("POST", "/pipelines/upload_version")
    assert version_upload.query["pipelineid"] == first.pipeline_id
    assert version_upload.query["name"] == second.version_name
    assert second.version_name.startswith("v") and second.version_uploaded
    assert second.version_id != first.version_id
    # The same spec again: the version named by its digest is reused, not uploaded again.
    assert (third.version_id, third.version_uploaded) == (second.version_id, False)
    runs = [r.body["pipeline_version_reference"] for r in stub.calls("POST", "/runs")]
    assert [r["pipeline_version_id"] for r in runs] == [
        first.version_id,
        second.version_id,
        second.version_id,
    ]


def test_caching_is_off_in_every_task_unless_enabled(stub, kfp_env, config, tmp_path):
    from pipelines.training_pipeline import compile_pipeline

    off = submit_run(config, stub.host)
    on = submit_run(config, stub.host, enable_caching=True)

    # The run API has no caching switch for a stored version: the referenced spec carries it.
    assert set(_tasks_caching(stub.version_spec(off.version_id)).values()) == {False}
    compiled, _ = read_spec(compile_pipeline(tmp_path / "compiled.yaml"))
    assert _tasks_caching(stub.version_spec(on.version_id)) == _tasks_caching(compiled)
    assert _tasks_caching(compiled)["ingest"] is False  # never cached, even when enabled
    assert on.version_name != off.version_name


def test_recurring_run_carries_the_cron_one_at_a_time_and_no_catchup(stub, kfp_env, config):
    made = submit_run(config, stub.host, schedule=CRON, service_account="mlpipe-pipeline")

    assert stub.rejected == []
    assert stub.calls("POST", "/runs") == []
    [recurring] = stub.calls("POST", "/recurringruns")
    body = recurring.body
    assert body["trigger"] == {"cron_schedule": {"cron": CRON}}
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["service_account"] == "mlpipe-pipeline"
    assert body["pipeline_version_reference"]["pipeline_version_id"] == made.version_id
    # A scheduled run's versions say so in their lineage (metadata.json training.trigger).
    assert body["runtime_config"]["parameters"] == {
        **pipeline_arguments(config, resolve_paths=False),
        "training_mode": "full",
        "trigger": "schedule",
    }
    assert made.run_id is None
    assert made.url == f"{stub.host}/#/recurringrun/details/{made.recurring_run_id}"


def test_a_scheduled_incremental_retraining(stub, kfp_env, config):
    submit_run(config, stub.host, schedule=CRON, training_mode="incremental")
    [recurring] = stub.calls("POST", "/recurringruns")
    parameters = recurring.body["runtime_config"]["parameters"]
    assert (parameters["training_mode"], parameters["trigger"]) == ("incremental", "schedule")
    assert parameters["retraining"]["mode"] == "incremental"


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ("0 3 * * *", "for this crontab line use '0 0 3 * * *'"),
        ("every day", "expected six cron fields"),
        ("0 0 3 * * * *", "expected six cron fields"),
    ],
)
def test_a_cron_kfp_would_misread_is_refused_before_the_host_is_asked(
    stub, kfp_env, config, schedule, fragment
):
    with pytest.raises(PipelineInputError, match=re.escape(fragment)):
        submit_run(config, stub.host, schedule=schedule)
    assert stub.received == []


def test_cron_descriptors_and_six_fields_pass():
    assert check_cron("@daily") == "@daily"
    assert check_cron("@every 6h") == "@every 6h"
    assert check_cron(" 0  30 2 ? * MON-FRI ") == "0 30 2 ? * MON-FRI"


def test_wait_returns_the_final_state_and_refuses_a_schedule(stub, kfp_env, config):
    made = submit_run(config, stub.host, wait=True, poll_seconds=0.01)
    assert made.state == "SUCCEEDED"
    assert [r.path for r in stub.calls("GET", "/runs/*")] == [f"/apis/v2beta1/runs/{made.run_id}"]
    with pytest.raises(PipelineInputError, match="use one of them"):
        submit_run(config, stub.host, wait=True, schedule=CRON)


def test_wait_on_a_failed_run_raises_with_the_run_and_its_state(stub, kfp_env, config):
    stub.run_state = "FAILED"
    with pytest.raises(RunFailed) as caught:
        submit_run(config, stub.host, wait=True, poll_seconds=0.01)
    [run_id] = stub.store.runs
    assert (caught.value.run_id, caught.value.state) == (run_id, "FAILED")


def test_a_run_that_does_not_finish_in_time_names_the_run(stub, kfp_env, config):
    stub.run_state = "RUNNING"
    with pytest.raises(RunFailed, match=r"run \S+ did not finish within 0 s"):
        submit_run(config, stub.host, wait=True, run_timeout=0, poll_seconds=0.01)


def test_a_refused_call_is_one_line_naming_the_call(stub, kfp_env, config):
    submit_run(config, stub.host)
    second = submit_run(config, stub.host)
    # Someone renamed that version in the UI: the name is taken, the display name differs.
    stub.store.versions[second.version_id]["display_name"] = "renamed"
    with pytest.raises(SubmitFailed) as caught:
        submit_run(config, stub.host)
    message = str(caught.value)
    assert "\n" not in message
    assert f"refused to upload the version '{second.version_name}'" in message
    assert "HTTP 409 Conflict: Failed to create a pipeline version" in message


# --- the stub's checks bite ----------------------------------------------------------------------


def _post(stub, route, body):
    return requests.post(f"{stub.host}/apis/v2beta1{route}", json=body, timeout=5)


def _parameters(body: dict) -> dict:
    return body["runtime_config"]["parameters"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param(
            lambda b: b.update(bogus=1), "body.bogus: not a field of V2beta1Run", id="unknown"
        ),
        pytest.param(
            lambda b: b.update(display_name=5), "body.display_name: expected str", id="type"
        ),
        pytest.param(lambda b: b.pop("display_name"), "body.display_name: required", id="required"),
        pytest.param(
            lambda b: b.update(state="SUCCEEDED"), "body.state: set by the server", id="output"
        ),
        pytest.param(
            lambda b: b["pipeline_version_reference"].update(pipeline_version_id="nope"),
            "no such version",
            id="version",
        ),
        pytest.param(
            lambda b: b.update(pipeline_spec={"x": 1}),
            "expected one pipeline source",
            id="two-sources",
        ),
        pytest.param(
            lambda b: _parameters(b).update(nope=1),
            "parameters.nope: not a parameter of the pipeline",
            id="unknown-parameter",
        ),
        pytest.param(
            lambda b: _parameters(b).update(tuning="16"),
            "parameters.tuning: '16' is not of the declared type STRUCT",
            id="parameter-type",
        ),
        pytest.param(
            lambda b: _parameters(b).pop("target"),
            "parameters.target: required by the pipeline",
            id="missing-parameter",
        ),
        pytest.param(
            lambda b: b["runtime_config"].update(parameter={}),
            "not a field of V2beta1RuntimeConfig",
            id="nested-unknown",
        ),
    ],
)
def test_the_stub_refuses_a_run_body_that_does_not_fit(stub, kfp_env, config, change, fragment):
    submit_run(config, stub.host)
    sent = stub.calls("POST", "/runs")[0].body
    assert _post(stub, "/runs", copy.deepcopy(sent)).status_code == 200  # the control
    body = copy.deepcopy(sent)
    change(body)
    answer = _post(stub, "/runs", body)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["message"]


def test_the_stub_refuses_bad_recurring_runs_and_uploads(stub, kfp_env, config, tmp_path):
    submit_run(config, stub.host, schedule=CRON)
    sent = stub.calls("POST", "/recurringruns")[0].body
    too_many = copy.deepcopy(sent) | {"max_concurrency": "11"}
    assert "not in [1, 10]" in _post(stub, "/recurringruns", too_many).json()["message"]
    no_trigger = {k: v for k, v in sent.items() if k != "trigger"}
    assert _post(stub, "/recurringruns", no_trigger).status_code == 400
    bad_mode = copy.deepcopy(sent) | {"mode": "ON"}
    assert "is not one of" in _post(stub, "/recurringruns", bad_mode).json()["message"]

    not_a_spec = tmp_path / "spec.yaml"
    not_a_spec.write_text("pipelineInfo: {name: x}\nbogus: 1\n")
    with not_a_spec.open("rb") as handle:
        answer = requests.post(
            f"{stub.host}/apis/v2beta1/pipelines/upload?name=other",
            files={"uploadfile": ("spec.yaml", handle, "application/octet-stream")},
            timeout=5,
        )
    assert answer.status_code == 400
    assert "not a KFP pipeline spec" in answer.json()["message"]


# --- the command line, end to end ----------------------------------------------------------------


def _mlpipe(*args, tmp_path):
    return subprocess.run(
        [MLPIPE, *args],
        cwd=tmp_path,
        env=_subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_submit_prints_the_run_the_version_and_the_link(stub, config_path, tmp_path):
    result = _mlpipe(
        "submit",
        "--config",
        str(config_path),
        "--host",
        stub.host,
        "--service-account",
        "mlpipe-pipeline",
        "--wait",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    [run_id] = stub.store.runs
    [version_id] = stub.store.versions
    assert f"Created run {run_id} on {stub.host}" in result.stdout
    assert version_id in result.stdout
    assert f"{stub.host}/#/runs/details/{run_id}" in result.stdout
    assert f"Run {run_id} SUCCEEDED" in result.stdout
    assert stub.rejected == []


def test_cli_wait_on_a_failed_run_exits_1_naming_the_run_and_state(stub, config_path, tmp_path):
    stub.run_state = "FAILED"
    result = _mlpipe(
        "submit", "--config", str(config_path), "--host", stub.host, "--wait", tmp_path=tmp_path
    )
    assert result.returncode == 1, result.stderr
    [run_id] = stub.store.runs
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert f"run {run_id} ended in state FAILED" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_schedule_creates_a_recurring_run(stub, kfp_env, config_path, capsys):
    from pipelines.cli import main  # in-process: the two tests above pay for the start-up

    code = main(["submit", "--config", str(config_path), "--host", stub.host, "--schedule", CRON])
    out = capsys.readouterr().out
    assert code == 0
    [recurring_id] = stub.store.recurring_runs
    assert f"Created recurring run {recurring_id}" in out
    assert f"{stub.host}/#/recurringrun/details/{recurring_id}" in out
    assert "Experiment details" not in out  # kfp.Client's own prints are not ours to show


# --- faults: a server restarting is waited out, a refusal is not ---------------------------------


@pytest.fixture
def quick_retries(monkeypatch):
    from components.common import retry

    monkeypatch.setattr(retry, "BASE_SECONDS", 0.01)
    monkeypatch.setattr(retry, "CAP_SECONDS", 0.02)


def test_an_api_server_that_restarts_is_retried_and_runs_once(
    stub, kfp_env, config, quick_retries, capsys
):
    stub.fail_next("POST", "/experiments", 1, status=None)  # the connection ends unanswered
    stub.fail_next("GET", "/pipelines", 2, status=503)
    stub.fail_next("POST", "/runs", 2, status=503)  # 503: the run was certainly not created
    made = submit_run(config, stub.host, experiment="exp")

    assert stub.rejected == []
    assert len(stub.faulted) == 5
    assert len(stub.calls("POST", "/runs")) == 3
    assert list(stub.store.runs) == [made.run_id]
    assert len(stub.store.experiments) == 1
    retries = [line for line in capsys.readouterr().err.splitlines() if "; retry " in line]
    assert len(retries) == 5
    assert any("create the run" in line and "HTTP 503" in line for line in retries)


def test_a_bad_request_is_not_retried(stub, kfp_env, config, quick_retries):
    stub.fail_next("POST", "/runs", 1, status=400)
    with pytest.raises(SubmitFailed, match=r"refused to create the run .*HTTP 400") as caught:
        submit_run(config, stub.host)
    assert "attempts" not in str(caught.value)
    assert len(stub.calls("POST", "/runs")) == 1
    assert stub.store.runs == {}


@pytest.mark.parametrize("status", [500, None])
def test_a_run_the_server_may_have_created_is_not_created_twice(
    stub, kfp_env, config, quick_retries, status
):
    """After a 500 or a lost answer the run may exist: creating it again could start two."""
    stub.fail_next("POST", "/runs", 1, status=status)
    with pytest.raises(SubmitFailed, match="create the run") as caught:
        submit_run(config, stub.host)
    assert "\n" not in str(caught.value)
    assert len(stub.calls("POST", "/runs")) == 1


def test_an_api_server_that_stays_down_fails_in_one_line_after_the_retries(
    stub, kfp_env, config, quick_retries
):
    from components.common import retry

    stub.fail_next("GET", "/pipelines", 100, status=503)
    with pytest.raises(SubmitFailed) as caught:
        submit_run(config, stub.host)
    message = str(caught.value)
    assert "\n" not in message and "HTTP 503" in message
    assert f"after {retry.ATTEMPTS} attempts" in message
    assert len(stub.calls("GET", "/pipelines")) == retry.ATTEMPTS
