"""The benchmark's smoke mode, so that it cannot rot (it asserts what it measured, not how fast).

Both of its paths run on the smallest search the demo data allows (the fault tests' quick
config): that the pipeline itself runs and makes the right model under kfp.local is
tests/pipelines/test_local_run.py's to check; what is this script's own is that it times both
paths and writes their figures."""

import json

import pytest

from benchmarks.demo_pipeline import main
from tests.mlpipe_runs import fast_config

pytestmark = pytest.mark.e2e


def test_smoke_mode_times_both_paths_and_writes_results(tmp_path):
    output = tmp_path / "results.json"
    # The benchmark puts the demo data and the outputs in a scratch folder of its own.
    config = fast_config(tmp_path / "run.yaml", tmp_path / "unused", tmp_path / "unused")
    assert main(["--smoke", "--config", str(config), "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["config"]["num_trials"] == 2
    assert results["kfp_local_seconds"] > 0 and results["in_process_seconds"] > 0
    assert results["kfp_local_over_in_process"] == pytest.approx(
        results["kfp_local_seconds"] / results["in_process_seconds"], rel=0.05
    )
