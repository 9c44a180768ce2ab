"""The command-line start-up benchmark's smoke mode, so that it cannot rot (it checks what it
measured, never how fast)."""

import json

from benchmarks.cli_startup import main


def test_smoke_mode_times_each_command_against_bare_python(tmp_path):
    output = tmp_path / "cli_startup.json"
    assert main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["repeats"] == 2
    medians = results["median_s"]
    assert set(medians) == {"python -c pass", "mlpipe --help", "mlpipe models list"}
    assert all(value > 0 for value in medians.values())
    assert set(results["over_bare_python"]) == {"mlpipe --help", "mlpipe models list"}
    for name, met in results["met"].items():
        assert met == (medians[name] < results["target_s"])
