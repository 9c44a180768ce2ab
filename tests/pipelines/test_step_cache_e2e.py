"""The step cache as a user meets it: `mlpipe run` again with the same data and config reuses
every step that does not read or change the world; a changed parameter runs again exactly the
steps downstream of it; the reused run's model is the same model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.common.registry import ModelRegistry
from components.common.step_runner import EXTERNAL_STEPS as ALL_EXTERNAL_STEPS
from tests.mlpipe_runs import STEPS as FUNCTIONS
from tests.mlpipe_runs import model_digest

pytestmark = pytest.mark.e2e

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
STEPS = {step.replace("_", "-") for step in FUNCTIONS}  # as kfp names the tasks
# The training pipeline's (the monitor is the monitoring pipeline's).
EXTERNAL_STEPS = ALL_EXTERNAL_STEPS & STEPS
# What the training split feeds, directly or through another step's outputs.
DOWNSTREAM_OF_PREPARE = {"prepare", "tune", "train", "evaluate", "export-onnx-model", "fairness"}


def _run(tmp_path: Path, config: Path, *extra: str) -> tuple[str, dict[str, str]]:
    result = subprocess.run(
        [MLPIPE, "run", "--config", str(config), "--no-serve", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split("\nrun ", 1)[1].split()[0]
    root = Path(yaml.safe_load(config.read_text())["output_root"])
    records = root / "runs" / run_id / "steps" / "record"
    origins = {p.stem: json.loads(p.read_text())["origin"] for p in records.glob("*.json")}
    assert set(origins) == STEPS
    return result.stdout, origins


def test_a_rerun_reuses_finished_steps_and_a_change_reruns_exactly_whats_downstream(
    tmp_path, reference
):
    # The reference run's output root: its registry and step cache, as after a first run.
    root = reference.copy_root(tmp_path / "out")
    config = reference.config(tmp_path / "run.yaml", root)

    output, second = _run(tmp_path, config)
    assert {s for s, origin in second.items() if origin == "ran"} == EXTERNAL_STEPS
    assert {s for s, origin in second.items() if origin == "cache"} == STEPS - EXTERNAL_STEPS
    assert "steps      8 ran, 8 reused with the same content key" in output
    assert "validate: reused from run" in output

    _, third = _run(tmp_path, config, "--set", "split.test_size=0.25")
    assert {s for s, origin in third.items() if origin == "ran"} == (
        EXTERNAL_STEPS | DOWNSTREAM_OF_PREPARE
    )
    assert {s for s, origin in third.items() if origin == "cache"} == {"validate", "bias"}

    registry = ModelRegistry(str(root / "models"), "arrests-release")
    assert registry.versions() == ["v1", "v2", "v3"]
    # The cached run's model is the first run's; the changed split made another.
    assert model_digest(root, "v2") == reference.digest != model_digest(root, "v3")


def test_no_cache_runs_every_step(tmp_path, reference):
    root = reference.copy_root(tmp_path / "out")
    _, origins = _run(tmp_path, reference.config(tmp_path / "run.yaml", root), "--no-cache")
    assert set(origins.values()) == {"ran"}
    assert model_digest(root, "v2") == reference.digest  # the same model, computed again
