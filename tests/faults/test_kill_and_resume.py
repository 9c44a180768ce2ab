"""SIGKILL in the middle of each step, then `mlpipe run --resume`: the run ends with the model an
uninterrupted run makes, registered once, and nothing the killed steps half-wrote is read.

One chain: the run is killed in a step, resumed, killed in the next unfinished step on resume,
and so on through every step; then a last resume finishes it. A kill goes to the run's whole
process group (the runner, the step, the step's Ray), as a power cut or the OOM killer would,
0.3 s into the step's function, or as the function returns when it is quicker (its outputs
written and marked, the run's record of it not yet)."""

import json

import pytest

from components.common.registry import ModelRegistry
from tests.mlpipe_runs import (
    MODEL,
    STEPS,
    assert_step_store_is_whole,
    finished_steps,
    model_digest,
    only_run_dir,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def test_sigkill_in_each_step_then_resume_makes_the_uninterrupted_model(
    tmp_path, reference, start_run
):
    root = tmp_path / "out"
    config = str(reference.config(tmp_path / "run.yaml", root))
    args = ["--config", config, "--no-serve"]
    killed_in = []
    for step in STEPS:
        run_dir = only_run_dir(root) if killed_in else None
        if run_dir is not None and step.replace("_", "-") in finished_steps(run_dir):
            continue  # finished on the way to an earlier victim
        resume = ["--resume", run_dir.name] if run_dir is not None else []
        run = start_run(tmp_path, *args, *resume, fault=f"kill:{step}")
        code = run.wait()
        assert code == -9, f"killed in {step}, yet exited {code}:\n{run.output}"
        killed_in.append(step)
        assert step.replace("_", "-") not in finished_steps(only_run_dir(root))
        run.stop()  # Ray's processes, if any outlived the kill: by PID

    run_dir = only_run_dir(root)
    final = start_run(tmp_path, *args, "--resume", run_dir.name)
    assert final.wait() == 0, final.output

    assert killed_in, "no step was killed"
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"
    # Registered once, although register was killed after writing its version.
    registry = ModelRegistry(str(root / "models"), MODEL)
    assert registry.versions() == ["v1"]
    assert registry.aliases() == {"candidate": "v1", "champion": "v1"}
    assert model_digest(root, "v1") == reference.digest
    assert registry.metadata("v1")["kfp_run_id"] == run_dir.name
    # The last resume ran only what had never finished; the rest came from the run's record.
    origins = {
        p.stem: json.loads(p.read_text())["origin"]
        for p in (run_dir / "steps" / "record").glob("*.json")
    }
    assert set(origins) == {step.replace("_", "-") for step in STEPS}
    assert "resumed" in origins.values()
    assert_step_store_is_whole(run_dir / "steps")
    assert_step_store_is_whole(root / "cache")
