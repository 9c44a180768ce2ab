"""The reference benchmark's smoke mode, so that it cannot rot (it checks what it measured and
that both bootstraps computed the same numbers, never how fast)."""

import json

from benchmarks.reference import main


def test_smoke_mode_measures_the_bootstrap_the_build_and_the_size(tmp_path):
    output = tmp_path / "reference.json"
    assert main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["command"].endswith(f"--smoke --output {output}")
    bootstrap = results["bootstrap"]
    assert bootstrap["resamples"] == 20 and bootstrap["held_out_rows"] == 500
    assert bootstrap["max_abs_difference"] < 1e-9 and results["met"]["same_numbers_as_sklearn"]
    assert bootstrap["reference_seconds"] > 0 and bootstrap["sklearn_per_resample_seconds"] > 0
    for entry in (*results["build"].values(), *results["size"].values()):
        assert entry["bytes"] > 0 and 0 < entry["samples_share"] < 1 and entry["seconds"] > 0
    assert results["size"]["numeric_20_features"]["features"] == 20
