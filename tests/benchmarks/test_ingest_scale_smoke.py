"""The scale benchmark's smoke mode, so that it cannot rot (it checks what it recorded, not how
fast anything was)."""

import json

import pytest

from benchmarks.ingest_scale import SMOKE_SIZES, main, run_child


def test_smoke_mode_measures_both_paths_per_size_and_writes_results(tmp_path):
    output = tmp_path / "results.json"
    data_dir = tmp_path / "lakes"
    # Three repeats (the default is five): enough to check the median, and quicker in CI.
    arguments = ["--smoke", "--repeats", "3", "--data-dir", str(data_dir), "--output", str(output)]
    assert main(arguments) == 0
    results = json.loads(output.read_text())
    assert "--smoke" in results["command"]
    assert results["machine"]["cpus"] >= 1 and results["machine"]["ram_gb"] > 0
    assert "postcode" in results["settings"]["excluded_columns"]
    assert [run["rows"] for run in results["runs"]] == sorted(SMOKE_SIZES)
    for run in results["runs"]:
        bare, ours = run["bare"], run["ours"]
        assert bare["ok"] and ours["ok"], run
        assert bare["rows"] == ours["rows"] == run["rows"]  # both read every row
        # Each in fresh processes, three times; the median run counts.
        assert len(bare["all_seconds"]) == len(ours["all_seconds"]) == 3
        assert bare["seconds"] == sorted(bare["all_seconds"])[1]
        assert ours["seconds"] == sorted(ours["all_seconds"])[1]
        assert ours["rows_per_second"] == round(run["rows"] / ours["seconds"])
        assert run["ours_over_bare"] == pytest.approx(ours["seconds"] / bare["seconds"], rel=0.02)
        assert ours["seconds"] == pytest.approx(sum(ours["stage_seconds"].values()), abs=0.01)
        assert set(ours["phases"]) == {
            "ingest.read_source",
            "ingest.content_hash",
            "validate.validate_table",
            "validate.infer_contract",
            "validate.check_contract",
            "prepare.split_table",
            "prepare.fit_preprocessor",
            "training.transform_train",
        }
        # The data meets the contract inferred from it. The peak is the process's own up to the
        # end of prepare; the transform after it only adds to the process's final peak.
        assert ours["blocking_anomalies"] == 0
        counted = [p for n, p in ours["phases"].items() if not n.startswith("training.")]
        assert ours["peak_rss_mb"] >= max(p["peak_rss_mb"] for p in counted) * 0.9
        assert ours["peak_rss_mb_with_transform"] >= ours["peak_rss_mb"]
        assert ours["stage_seconds"]["prepare"] == pytest.approx(
            ours["phases"]["prepare.split_table"]["seconds"]
            + ours["phases"]["prepare.fit_preprocessor"]["seconds"],
            abs=0.01,
        )
        before_prepare = run["ingest_validate"]
        assert before_prepare["ok"] and 0 < before_prepare["seconds"] < ours["seconds"]
        assert before_prepare["seconds"] == pytest.approx(
            ours["stage_seconds"]["ingest"] + ours["stage_seconds"]["validate"], abs=0.01
        )
    for kind in ("ours", "ingest_validate", "bare"):
        line = results["linearity"][kind]
        assert line["between_rows"] == sorted(SMOKE_SIZES)
        assert isinstance(line["loglog_slope"], float)
    assert set(results["met_at_largest"]) == {"rows", "ratio", "peak_rss"}
    # Lakes are generated once and kept for the next run.
    assert len(list(data_dir.iterdir())) == len(SMOKE_SIZES)


def test_the_watchdog_stops_a_measurement_that_passes_the_memory_limit(tmp_path):
    from components.ingest.synthetic import COLUMNS, generate

    lake = tmp_path / "lake"
    generate(2000, lake, partitions=2)
    result = run_child("ours", lake, list(COLUMNS), limit_gb=0.01, timeout=120)
    assert not result["ok"]
    assert result["error"] == "killed: resident memory passed 0.01 GB"
