"""The batch-prediction benchmark's smoke mode, so that it cannot rot (it checks what it recorded,
never how fast anything was)."""

import json

from benchmarks.batch_predict import KINDS, SMOKE_SIZES, main


def test_smoke_mode_measures_the_job_and_raw_predict_per_size_and_writes_results(tmp_path):
    output = tmp_path / "batch_predict.json"
    assert main(["--smoke", "--data-dir", str(tmp_path / "lakes"), "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert "--smoke" in results["command"] and results["ray"] is None
    assert [run["rows"] for run in results["runs"]] == sorted(SMOKE_SIZES)
    for run in results["runs"]:
        for kind in KINDS:
            measured = run[kind]
            assert measured["ok"], measured
            assert measured["rows"] == run["rows"]  # every row scored, by each
            assert measured["rows_per_second"] == round(run["rows"] / measured["seconds"])
        for runtime in ("onnx", "sklearn"):
            ratio = (
                run[f"job_{runtime}"]["rows_per_second"] / run[f"raw_{runtime}"]["rows_per_second"]
            )
            assert run[f"job_over_raw_{runtime}"] == round(ratio, 2)
    assert set(results["peak_growth_largest_over_smallest"]) == set(KINDS)
    assert results["met"] == {
        runtime: all(r[f"job_over_raw_{runtime}"] >= 0.8 for r in results["runs"])
        for runtime in ("onnx", "sklearn")
    }
