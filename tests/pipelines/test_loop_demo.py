"""`make loop` end to end: the demonstration of the whole loop (pipelines/loop_demo.py) on its own
config, moved to a temporary output root and a free port. Train on 2023, serve, shifted 2024
traffic and its labels, the monitor's retrain naming the shifted features, an incremental update
that the gate blesses and the server swaps to with no failed request, then `ok`.

Every process the demo starts (kfp.local's steps, Ray, the model server in its own session) is
recorded by PID while it runs and stopped by PID afterwards, even when the test fails."""

import json
import re
import socket
import sys
from pathlib import Path

import pytest
import yaml

from components.common.registry import ModelRegistry
from tests.mlpipe_runs import MlpipeRun

pytestmark = [pytest.mark.e2e, pytest.mark.server, pytest.mark.ray]

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "loop.yaml"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_make_loop_closes_the_loop(tmp_path):
    config = yaml.safe_load(CONFIG.read_text())
    root = tmp_path / "loop"
    config["output_root"] = str(root)
    config["data"]["source"] = str(root / "data" / "loans")
    config["serving"]["port"] = _free_port()
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(config))

    demo = MlpipeRun(
        tmp_path, "--config", str(path), program=(sys.executable, "-m", "pipelines.loop_demo")
    )
    try:
        code = demo.wait(timeout=900)
        output = demo.output
        assert code == 0, output
        lines = {}
        for line in output.splitlines():
            step, _, text = line.partition(" ")
            lines.setdefault(step, []).append(text.strip())
        # The shifted features are named, and the decision is retrain.
        (first, second) = lines["monitor"]
        assert first.startswith("v1: retrain")
        for feature in ("income", "credit_score", "utilization"):
            assert f"{feature} (PSI" in first
        assert lines["retrain"] == ["incremental: retraining.mode is incremental"]
        assert lines["candidate"][0].startswith("v2 in ")
        assert "by partial_fit on 1200 labelled predictions" in lines["candidate"][0]
        assert lines["gate"][0].startswith("blessed")
        assert lines["promote"] == ["loans-default champion is now v2"]
        assert lines["reload"] == [
            f"server at http://127.0.0.1:{config['serving']['port']} serves v2"
        ]
        during = lines["traffic"][1]
        assert during.endswith("0 failed") and int(during.split()[0]) > 0
        assert second.startswith("v2: ok")
        assert lines["done"][0].startswith("the loop closed in")
        # The registry: v2 is the champion, an incremental child of v1, started by the monitor,
        # and it beat v1 on the new rows that neither had trained on.
        registry = ModelRegistry(str(root / "models"), "loans-default")
        assert registry.aliases()["champion"] == "v2"
        training = registry.metadata("v2")["training"]
        assert training["mode"] == "incremental" and training["trigger"] == "monitor"
        assert training["parent"] == "v1" and training["rule"] == "partial_fit"
        assert training["log_rows"] == 1200 and training["update"]["epochs"] == 10
        gate = registry.metadata("v2")["gate"]
        (versus,) = [check for check in gate["checks"] if check["kind"] == "champion"]
        scores = re.search(r"roc_auc ([\d.]+) against champion v1 ([\d.]+)", versus["detail"])
        candidate, champion = float(scores[1]), float(scores[2])
        assert candidate > champion + 0.1, versus["detail"]
        assert json.loads(json.dumps(registry.metadata("v1")["training"]))["mode"] == "full"
    finally:
        demo.stop()
    assert demo.leftovers() == []
