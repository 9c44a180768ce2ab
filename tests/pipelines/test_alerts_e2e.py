"""End to end: a local `mlpipe run` whose step fails sends one `training_failed` alert, naming
the step and its error, to a receiver on 127.0.0.1; the webhook's path is shown nowhere."""

import pytest

from tests.alert_receiver import receiver
from tests.mlpipe_runs import MlpipeRun, fast_config, only_run_dir

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_a_failed_local_run_delivers_one_training_failed_alert(tmp_path, demo_lake):
    config = fast_config(tmp_path / "run.yaml", demo_lake, tmp_path / "out")
    with receiver([200], path="/services/T0/B0/XOXB-SECRET") as hook:
        run = MlpipeRun(
            tmp_path,
            "--config",
            str(config),
            "--no-serve",
            fault="raise:ingest",  # the first step fails: a failed run in seconds
            extra_env={"MLPIPE_ALERT_WEBHOOK_URL": hook.url, "NO_PROXY": "127.0.0.1,localhost"},
        )
        try:
            assert run.wait() == 1, run.output
        finally:
            run.stop()

    (body,) = hook.bodies
    assert body["event"] == "training_failed"
    assert body["model"] == "arrests-release"
    assert body["task"] == "ingest"
    assert body["error"] == ("RuntimeError: injected fault in ingest (traceback in the run's log)")
    run_dir = only_run_dir(tmp_path / "out")
    assert body["run_id"] == run_dir.name
    assert body["text"].startswith(
        f"mlpipe training_failed arrests-release: training run {run_dir.name}"
    )
    # The run still fails as before, naming the step; the alert is a line of its log.
    assert "error: pipeline step failed: ingest: RuntimeError: injected fault" in run.output
    log = (run_dir / "pipeline.log").read_text()
    assert "alert training_failed" in log and "delivered to http://127.0.0.1:" in log
    shown = run.output + log + (run_dir / "arguments.json").read_text()
    assert "XOXB-SECRET" not in shown
