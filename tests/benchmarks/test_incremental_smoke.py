"""The incremental benchmark's smoke mode, so that it cannot rot (it checks what it recorded,
not how fast anything was)."""

import json
import statistics

import pytest

from benchmarks.incremental import (
    FAMILIES,
    SMOKE_PARTITIONS,
    SMOKE_ROWS_PER_PARTITION,
    main,
)


def test_smoke_mode_times_both_sides_for_every_family(tmp_path):
    output = tmp_path / "results.json"
    assert main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert "--smoke" in results["command"]
    assert results["settings"]["rows"] == SMOKE_PARTITIONS * SMOKE_ROWS_PER_PARTITION
    assert set(results["families"]) == set(FAMILIES)
    rules = {family: entry["rule"] for family, entry in results["families"].items()}
    assert rules == {
        "sgd_linear": "partial_fit",
        "random_forest": "warm_start",
        "hist_gradient_boosting": "refit_window",
    }
    for entry in results["families"].values():
        full, incremental = entry["full"], entry["incremental"]
        # Full retraining reads every partition; the update reads only the new one.
        assert full["rows"] == SMOKE_PARTITIONS * SMOKE_ROWS_PER_PARTITION
        assert incremental["rows"] == incremental["details"]["rows"] == SMOKE_ROWS_PER_PARTITION
        assert 0 < incremental["bytes_read"] < full["bytes_read"]
        assert full["seconds"] == pytest.approx(statistics.median(full["all_seconds"]), abs=1e-3)
        assert entry["ratio"] == pytest.approx(
            incremental["seconds"] / full["seconds"], rel=0.05, abs=0.01
        )
        assert entry["met"] == (entry["ratio"] <= 0.3)
    trees = results["families"]["random_forest"]["incremental"]["details"]
    assert trees["trees_after"] > trees["trees_before"]
    assert results["target"]["met"] == all(e["met"] for e in results["families"].values())
