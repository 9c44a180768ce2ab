"""`mlpipe run --mode incremental` as a user runs it, on the session's reference run (a champion
trained on the demo lake): with nothing new since the champion's watermark it says so, registers
nothing and exits 0; with no champion at all it is one line naming the model, exit 1 (the plan
step failed), and nothing is registered. The whole update path (new data, the gate, promotion)
runs in tests/pipelines/test_loop_demo.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from components.common.registry import ModelRegistry

pytestmark = pytest.mark.e2e

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))


def _incremental(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MLPIPE, "run", "--config", str(config), "--no-serve", "--mode", "incremental"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_nothing_new_since_the_champion_registers_nothing_and_says_so(tmp_path, reference):
    root = reference.copy_root(tmp_path / "out")
    result = _incremental(tmp_path, reference.config(tmp_path / "run.yaml", root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing registered: nothing new since champion v1's training watermark" in (
        result.stdout
    )
    assert ModelRegistry(str(root / "models"), "arrests-release").versions() == ["v1"]


def test_incremental_without_a_champion_is_one_line_naming_the_model(tmp_path, reference):
    root = tmp_path / "empty"
    result = _incremental(tmp_path, reference.config(tmp_path / "run.yaml", root))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "retraining.mode incremental: model 'arrests-release' has no champion" in line
    assert "Traceback" not in result.stdout + result.stderr
    assert ModelRegistry(str(root / "models"), "arrests-release").versions() == []
