"""The serving benchmark's smoke mode, so that it cannot rot: it checks what was measured, that
every server answered the same predictions as the model in-process, and that every server
process it started is gone afterwards (never how fast anything was)."""

import json

import psutil
import pytest

from benchmarks.serving import main

pytestmark = pytest.mark.server

TARGETS = {
    "single_row_p50",
    "single_row_throughput",
    "batch_1000_rows",
    "v2_columnar_batch_report",
    "soak_zero_errors",
    "soak_memory_flat",
    "prediction_log_throughput_at_least_95pct_of_off",
}


def _still_running(record: dict) -> bool:
    """The recorded process is alive (the same process: a reused PID has another start time)."""
    try:
        process = psutil.Process(record["pid"])
        return process.create_time() == record["create_time"] and process.status() not in (
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )
    except psutil.NoSuchProcess:
        return False


def test_smoke_mode_measures_each_server_and_stops_them(tmp_path):
    output = tmp_path / "serving.json"
    assert main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["command"].endswith(f"--smoke --output {output}")
    assert results["data"]["file"] is None  # the demo data: never needs ../shared

    (family,) = results["models"]
    entry = results["models"][family]
    raw = entry["raw"]
    assert 0 < raw["single_row_ms"]["p50"] <= raw["single_row_ms"]["p99"]
    assert raw["batch"]["rows"] == 1000 and raw["batch"]["rows_per_s"] > 0
    for name in ("ours", "ours_sklearn", "ours_v2", "fastapi", "floor"):
        server = entry["servers"][name]
        # Each server's answers to the 1,000-row batch equal model.predict in-process (the
        # floor answers a constant: nothing to compare).
        matches = None if name == "floor" else True
        assert server["parity"] == {"rows": 1000, "matches": matches}, name
        sequential = server["single_row_sequential_ms"]
        assert 0 < sequential["p50"] <= sequential["p99"], name
        assert sequential["requests_per_rep"][0] > 0, name
        assert server["throughput_rps"]["median"] > 0, name
        assert server["batch"]["rows_per_s"] > 0, name
        assert server["errors"] == 0, server["error_samples"]
    assert "--smoke" in entry["servers"]["mlserver"]["error"]
    # Ours serves the graph the benchmark registered as the pipeline does; --runtime sklearn not.
    assert entry["onnx"]["parity_passed"] is True and entry["onnx"]["parity_rows"] > 0
    assert entry["servers"]["ours"]["platform"] == "onnxruntime_onnx"
    assert entry["servers"]["ours_sklearn"]["platform"] == "sklearn"
    profile = entry["profile"]["single_row"]
    assert profile["runtime"] == "onnx"
    assert set(profile["ours_ms"]) == {
        "json_decode",
        "validate",
        "arrays",
        "predict",
        "json_encode",
    }

    soak = results["soak"]
    assert soak["connections"] == 50 and soak["seconds"] == 3
    assert soak["requests"] > 0 and soak["errors"] == 0, soak["error_samples"]
    assert soak["latency_ms"]["p50"] <= soak["latency_ms"]["p99"]
    assert sum(window["requests"] for window in soak["windows"]) == soak["requests"]
    assert len(soak["rss_mb"]["samples"]) >= 3
    assert soak["rss_mb"]["max"] >= max(soak["rss_mb"]["start"], soak["rss_mb"]["end"])

    # The prediction log, on beside off: every answered row written, nothing dropped.
    logged = results["prediction_log"]["by_model"][family]
    assert logged["errors"] == 0
    assert logged["throughput_rps"]["off"] > 0 and logged["throughput_rps"]["on"] > 0
    assert logged["answered_rows"] > 0
    assert logged["written_at_shutdown"] == logged["rows_in_lake"] == logged["answered_rows"]
    assert logged["dropped_at_shutdown"] == 0 and logged["nothing_dropped"] is True

    targets = results["targets"]
    assert set(targets) == TARGETS
    for name, target in targets.items():
        if name == "single_row_throughput":  # MLServer is not run in smoke mode
            assert target["met"] is None and "mlserver was not measured: --smoke" in target["why"]
        elif name == "v2_columnar_batch_report":
            assert target["met"] is None
            assert 0 < target["by_model"][family]["json_decoding_share"] < 1
        else:
            assert isinstance(target["met"], bool), name
            assert target["met"] or target["why"], name  # a miss says why
    servers = entry["servers"]
    ours = servers["ours"]["single_row_sequential_ms"]["p50"]
    floor = servers["floor"]["single_row_sequential_ms"]["p50"]
    p50 = targets["single_row_p50"]["by_model"][family]
    assert p50["met"] == (ours <= 1.0 and ours <= floor + 0.3)
    batch = targets["batch_1000_rows"]["by_model"][family]
    assert batch["ours_over_best_peer"] == round(
        servers["ours"]["batch"]["rows_per_s"] / servers["fastapi"]["batch"]["rows_per_s"], 3
    )

    # Ours (twice: auto and sklearn), FastAPI and the floor for the measurements, ours again
    # for the soak, and ours with the prediction log off and on.
    roles = [record["role"] for record in results["processes"]]
    assert roles.count("ours") == 3 and roles.count("fastapi") == 1
    assert roles.count("ours_sklearn") == 1 and roles.count("floor") == 1
    assert roles.count("ours_logged") == 1
    assert not [r for r in results["processes"] if _still_running(r)]
