"""The drift quality benchmark's smoke mode, so that it cannot rot: our detector and the
estimate always run; Evidently's part runs when the full benchmark has made its scratch venv,
else it skips saying why (it never makes the whole benchmark skip)."""

import json

import pytest

from benchmarks.drift_quality import (
    DEFAULT_VENV,
    SHIFTED,
    SMOKE_SIZES,
    ensure_evidently_venv,
    main,
)


def _run(tmp_path, *arguments, windows: int = 3):
    output = tmp_path / "results.json"
    arguments = ["--smoke", "--windows", str(windows), *arguments, "--output", str(output)]
    assert main(arguments) == 0
    return json.loads(output.read_text())


def test_our_detector_and_the_estimate_are_measured_on_every_window(tmp_path):
    results = _run(tmp_path, "--no-evidently")
    assert "--smoke" in results["command"] and results["machine"]["cpus"] >= 1
    assert "--no-evidently" in results["evidently_venv_error"]
    assert [entry["rows"] for entry in results["sizes"]] == list(SMOKE_SIZES)
    for entry in results["sizes"]:
        assert entry["windows"] == {"none": 3, "shift": 3, "relation": 3}
        assert "evidently" not in entry
        ours = entry["ours"]
        assert 0 <= ours["false_alarm_share"] <= 1 and 0 <= ours["power"] <= 1
        # The shift windows take the shifted features in turn, each shifted to about PSI 0.2.
        assert set(ours["power_by_feature"]) == set(SHIFTED[:3])
        assert 0.15 < ours["shifted_psi_median"] < 0.3
        for kind in ("none", "shift", "relation"):
            estimate = entry["estimate_accuracy"][kind]
            assert estimate["windows"] == 3
            assert 0 <= estimate["mean_absolute_error"] <= estimate["max_absolute_error"]
    targets = {target["target"]: target for target in results["targets"]}
    assert any("false alarms" in name for name in targets)
    assert results["missed"] == [t["target"] for t in results["targets"] if not t["met"]]


def test_evidently_judges_the_same_windows_in_its_own_venv(tmp_path):
    # Making the venv installs about 1 GB in 80 s: `make test` uses one that the full
    # benchmark made, as the serving benchmark's smoke mode leaves MLServer out.
    if not (DEFAULT_VENV / "bin" / "python").exists():
        pytest.skip(
            f"no Evidently venv at {DEFAULT_VENV}: `python -m benchmarks.drift_quality` makes it"
        )
    try:
        ensure_evidently_venv(DEFAULT_VENV)
    except Exception as error:  # no package index, no venv module: say so, ours still ran
        pytest.skip(f"Evidently's scratch venv cannot be made: {error}")
    # One window of each kind at the first size: Evidently takes seconds a window.
    results = _run(tmp_path, "--evidently-windows", "1", "--evidently-windows", "0", windows=1)
    assert results["evidently_venv_error"] is None
    first, second = results["sizes"]
    theirs = first["evidently"]
    assert theirs["windows"] == {"none": 1, "shift": 1}
    assert len(theirs["methods"]) == 20  # every feature judged
    assert theirs["false_alarm_share_any_column"] in (0.0, 1.0)
    assert second["evidently"]["windows"] == {"none": 0, "shift": 0}
    compared = [t["target"] for t in results["targets"] if "Evidently" in t["target"]]
    assert len(compared) == 1 and f"{SMOKE_SIZES[0]:,} rows" in compared[0]
