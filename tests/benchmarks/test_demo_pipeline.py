"""The benchmark's smoke mode, so that it cannot rot (it asserts what it measured, not how fast)."""

import json
from pathlib import Path

import pytest

from benchmarks.demo_pipeline import main

pytestmark = pytest.mark.e2e


def test_smoke_mode_times_both_paths_and_writes_results(tmp_path):
    output = tmp_path / "results.json"
    config = str(Path(__file__).parents[2] / "configs" / "arrests.yaml")
    assert main(["--smoke", "--config", config, "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["config"]["num_trials"] == 2
    assert results["kfp_local_seconds"] > 0 and results["in_process_seconds"] > 0
    assert results["kfp_local_over_in_process"] == pytest.approx(
        results["kfp_local_seconds"] / results["in_process_seconds"], rel=0.05
    )
