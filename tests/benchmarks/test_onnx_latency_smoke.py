"""The ONNX latency benchmark's smoke mode, so that it cannot rot (it checks what it measured and
that the two answers agreed, never how fast)."""

import json

import pytest

from benchmarks.onnx_latency import main


def test_smoke_mode_times_every_family_and_writes_results(tmp_path):
    output = tmp_path / "onnx_latency.json"
    assert main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["command"].endswith(f"--smoke --output {output}")
    assert results["settings"]["calls"] == 30
    families = results["families"]
    assert set(families) == {"logistic_regression", "random_forest", "hist_gradient_boosting"}
    for family, entry in families.items():
        assert entry["parity"]["passed"] and entry["parity"]["label_mismatches"] == 0, family
        sklearn_ms, onnx_ms = entry["sklearn_predict_proba_ms"], entry["onnx_run_ms"]
        assert 0 < sklearn_ms["p50"] <= sklearn_ms["p90"]
        assert 0 < onnx_ms["p50"] <= onnx_ms["p90"]
        assert entry["onnx_over_sklearn"] == pytest.approx(
            onnx_ms["p50"] / sklearn_ms["p50"], rel=0.01
        )
        assert results["ratios"][family] == entry["onnx_over_sklearn"]
        assert results["met"][family] == (entry["onnx_over_sklearn"] <= 0.2)
    assert results["data"]["train_rows"] > 0 and results["data"]["test_rows"] > 0
