"""The steps that alert, called through `.python_func` with a real receiver on 127.0.0.1: the gate
when the fairness gate blocks, promote when a new champion is made, and the training pipeline's
exit task (notify) when the run failed. An alert that cannot be delivered never fails them."""

import json

import pytest
from kfp.dsl import Artifact, Dataset, Metrics, Model, PipelineTaskFinalStatus

from components.common import alerts
from components.common.registry import ModelRegistry
from components.common.step import ERROR_FILE_ENV
from components.evaluate.component import gate
from components.notify.component import notify
from components.register.component import promote
from tests.alert_receiver import free_port, receiver


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch):
    monkeypatch.setattr(alerts, "BACKOFF_SECONDS", 0.01)
    # The receiver is on loopback: a proxy in the environment must not stand in between.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # A webhook in the developer's own environment must not receive the tests' alerts.
    monkeypatch.delenv("MLPIPE_ALERT_WEBHOOK_URL", raising=False)


def alerts_section(url: str, **overrides) -> dict:
    return {"webhook_url": url, "timeout_seconds": 2.0, "retries": 1, **overrides}


def _artifact(kind, path, content=None):
    if content is not None:
        path.write_text(json.dumps(content))
    return kind(uri=str(path))


def run_gate(tmp_path, fairness_gate: dict, alerts_config: dict) -> tuple[bool, dict]:
    evaluation = {"task": "classification", "classes": ["no", "yes"], "metrics": {"roc_auc": 0.9}}
    decision = _artifact(Artifact, tmp_path / "decision.json")
    blessed = gate.python_func(
        test=_artifact(Dataset, tmp_path / "test.parquet"),  # read only when there is a champion
        model=_artifact(Model, tmp_path / "model.joblib"),  # the same
        schema=_artifact(Artifact, tmp_path / "schema.json", {}),
        evaluation=_artifact(Artifact, tmp_path / "evaluation.json", evaluation),
        fairness=_artifact(Artifact, tmp_path / "fairness.json", {"gate": fairness_gate}),
        model_store_uri=str(tmp_path / "store"),
        model_name="loans",
        positive_class="yes",
        evaluation_config={},
        alerts_config=alerts_config,
        decision=decision,
        metrics=_artifact(Metrics, tmp_path / "metrics"),
    )
    return blessed, json.loads((tmp_path / "decision.json").read_text())


BLOCKED = {
    "passed": False,
    "reason": "demographic_parity_ratio for 'group' = 0.50 breaks >= 0.8",
    "findings": [
        {
            "metric": "demographic_parity_ratio",
            "column": "group",
            "threshold": 0.8,
            "direction": "at_least",
            "blocking": True,
            "status": "broken",
            "value": 0.5,
            "detail": "",
        },
        {
            "metric": "equalized_odds_difference",
            "column": "group",
            "threshold": 0.2,
            "direction": "at_most",
            "blocking": False,
            "status": "broken",
            "value": 0.3,
            "detail": "",
        },
    ],
}


def test_gate_alerts_when_the_fairness_gate_blocks(tmp_path):
    with receiver([200]) as hook:
        blessed, decision = run_gate(tmp_path, BLOCKED, alerts_section(hook.url))
    assert blessed is False and decision["reason"] == f"not blessed: {BLOCKED['reason']}"
    (body,) = hook.bodies
    assert body["event"] == "fairness_blocked" and body["model"] == "loans"
    assert body["reason"] == BLOCKED["reason"]
    # Only the findings that block; a warning is not why deployment stopped.
    assert [f["metric"] for f in body["findings"]] == ["demographic_parity_ratio"]
    assert "demographic_parity_ratio for 'group'" in body["text"]


def test_gate_sends_nothing_when_the_fairness_gate_passed(tmp_path):
    passed = {"passed": True, "reason": "passed", "findings": []}
    with receiver([200]) as hook:
        blessed, _ = run_gate(tmp_path, passed, alerts_section(hook.url))
    assert blessed is True
    assert hook.requests == []


def test_gate_decides_the_same_when_the_receiver_is_down(tmp_path, capsys):
    down = alerts_section(f"http://127.0.0.1:{free_port()}/hook")
    blessed, decision = run_gate(tmp_path, BLOCKED, down)
    assert blessed is False and decision["reason"] == f"not blessed: {BLOCKED['reason']}"
    err = capsys.readouterr().err
    assert "alert fairness_blocked" in err and "NOT delivered" in err


def registry_with_a_version(tmp_path) -> ModelRegistry:
    registry = ModelRegistry(str(tmp_path / "store"), "loans")
    registry.register(
        {"a": "model"},
        {
            "schema": {"task": "classification", "classes": ["no", "yes"]},
            "metrics": {"roc_auc": 0.91234, "accuracy": 0.8},
        },
    )
    return registry


def test_promote_alerts_the_new_champion_with_its_metrics(tmp_path):
    registry = registry_with_a_version(tmp_path)
    with receiver([200]) as hook:
        previous = promote.python_func(
            model_store_uri=str(tmp_path / "store"),
            model_name="loans",
            version="v1",
            run_id="run-7",
            alerts_config=alerts_section(hook.url),
        )
    assert previous == "" and registry.aliases()["champion"] == "v1"
    (body,) = hook.bodies
    assert body["event"] == "new_champion"
    assert (body["model"], body["version"], body["previous"], body["run_id"]) == (
        "loans",
        "v1",
        "",
        "run-7",
    )
    assert body["metrics"] == {"roc_auc": 0.91234, "accuracy": 0.8}
    assert body["text"] == (
        "mlpipe new_champion loans: loans v1 is the new champion (the first champion): "
        "roc_auc 0.9123"
    )


def test_promote_promotes_when_the_receiver_answers_500(tmp_path, capsys):
    registry = registry_with_a_version(tmp_path)
    with receiver([500]) as hook:
        promote.python_func(
            model_store_uri=str(tmp_path / "store"),
            model_name="loans",
            version="v1",
            run_id="run-7",
            alerts_config=alerts_section(hook.url),
        )
    assert registry.aliases()["champion"] == "v1"
    assert len(hook.requests) == 2  # the first attempt and one retry
    assert "NOT delivered" in capsys.readouterr().err


def failed(message="Task exit-handler-1 failed.") -> PipelineTaskFinalStatus:
    return PipelineTaskFinalStatus(
        state="FAILED",
        pipeline_job_resource_name="local-pipeline-exit-handler-1",
        pipeline_task_name="exit-handler-1",
        error_code=1,
        error_message=message,
    )


def test_notify_names_the_failed_step_and_its_error(tmp_path, monkeypatch):
    # Each step writes its one-line error to this file; the exit task reads it.
    error_file = tmp_path / "error.txt"
    error_file.write_text("train: the target column 'approved' has one class\n")
    monkeypatch.setenv(ERROR_FILE_ENV, str(error_file))
    with receiver([200]) as hook:
        line = notify.python_func(
            status=failed(),
            model_name="loans",
            alerts_config=alerts_section(hook.url),
            run_id="20261203-1",
            job_id="42",
        )
    (body,) = hook.bodies
    assert body["event"] == "training_failed"
    assert (body["task"], body["error"]) == ("train", "the target column 'approved' has one class")
    assert body["run_id"] == "20261203-1" and body["state"] == "FAILED"
    assert body["summary"] == (
        "training run 20261203-1 of loans failed in train: "
        "the target column 'approved' has one class"
    )
    assert "delivered" in line


def test_notify_falls_back_to_the_final_status_without_the_error_file(monkeypatch):
    monkeypatch.delenv(ERROR_FILE_ENV, raising=False)
    with receiver([200]) as hook:
        notify.python_func(
            status=failed("Task train failed: OOMKilled"),
            model_name="loans",
            alerts_config=alerts_section(hook.url),
        )
    (body,) = hook.bodies
    assert (body["task"], body["error"]) == ("exit-handler-1", "Task train failed: OOMKilled")


@pytest.mark.parametrize("state", ["SUCCEEDED", "CANCELED"])
def test_notify_sends_nothing_when_the_run_did_not_fail(state, capsys):
    status = PipelineTaskFinalStatus(state, "job", "exit-handler-1", None, None)
    with receiver([200]) as hook:
        line = notify.python_func(
            status=status, model_name="loans", alerts_config=alerts_section(hook.url)
        )
    assert line == "" and hook.requests == []
    assert f"the run ended {state}: no alert" in capsys.readouterr().out


def test_notify_finishes_when_the_receiver_hangs(monkeypatch):
    monkeypatch.delenv(ERROR_FILE_ENV, raising=False)
    with receiver(["hang"]) as hook:
        line = notify.python_func(
            status=failed(),
            model_name="loans",
            alerts_config=alerts_section(hook.url, timeout_seconds=0.2, retries=0),
        )
    assert "NOT delivered" in line and "no answer within 0.2 s" in line
    assert len(hook.requests) == 1
