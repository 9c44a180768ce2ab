"""The monitor speed benchmark's smoke mode, so that it cannot rot (it checks what it recorded,
not how fast anything was)."""

import json
import statistics

import pytest

from benchmarks.monitor_speed import FILES, SMOKE_ROWS_PER_FILE, main


def test_smoke_mode_times_both_paths_over_the_same_log(tmp_path):
    output = tmp_path / "results.json"
    assert main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert "--smoke" in results["command"]
    assert results["settings"]["rows"] == FILES * SMOKE_ROWS_PER_FILE
    assert results["settings"]["features"] == 20
    bare, monitored = results["bare"], results["monitored"]
    assert len(bare["all_seconds"]) == len(monitored["all_seconds"]) == 2
    assert bare["seconds"] == pytest.approx(statistics.median(bare["all_seconds"]), abs=1e-3)
    assert monitored["seconds"] == pytest.approx(
        statistics.median(monitored["all_seconds"]), abs=1e-3
    )
    assert results["ratio"] == pytest.approx(monitored["seconds"] / bare["seconds"], rel=0.05)
    # The window and its reference come from the same generator: nothing drifts.
    assert monitored["flagged"] == []
    assert results["target"]["met"] == (results["ratio"] <= 3.0)
