"""End to end: the checked-in compiled YAML, loaded back and run under kfp.local, and `mlpipe run`
as a user runs it, ending with a served model that answers the printed curl."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from kfp import components, local

from components.common.registry import ModelRegistry
from components.deploy.logic import read_model_metadata
from pipelines.config import load_config, pipeline_arguments
from pipelines.training_pipeline import COMPILED_PIPELINE
from tests.conftest import write_config
from tests.mlpipe_runs import fast_config

pytestmark = pytest.mark.e2e

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))


def _small_config(tmp_path, demo_lake, **overrides):
    return write_config(
        tmp_path / "run.yaml",
        **{
            "data.source": str(demo_lake),
            "output_root": str(tmp_path / "out"),
            "tuning.num_trials": 4,
            "tuning.families": ["logistic_regression", "hist_gradient_boosting"],
            # The demo's models score 0.72-0.74; the bar stays clear of that in tests.
            "evaluation.thresholds": {"roc_auc": 0.65},
            **overrides,
        },
    )


def test_the_compiled_yaml_runs_under_kfp_local(tmp_path, demo_lake):
    config = load_config(_small_config(tmp_path, demo_lake))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    pipeline = components.load_component_from_file(str(COMPILED_PIPELINE))

    pipeline(**pipeline_arguments(config))

    # No pipeline outputs (the steps are inside an exit handler): register's and the gate's own.
    (register_output,) = (tmp_path / "root").glob("*/register/executor_output.json")
    (gate_output,) = (tmp_path / "root").glob("*/gate/executor_output.json")
    outputs = json.loads(register_output.read_text())["parameterValues"]
    outputs["blessed"] = json.loads(gate_output.read_text())["parameterValues"]["Output"]
    version_dir = Path(outputs["model_uri"])
    assert outputs["version"] == "v1"
    assert version_dir == tmp_path / "out" / "models" / "arrests-release" / "v1"
    metadata = read_model_metadata(version_dir)
    assert metadata["data"]["rows"] == 5226
    assert metadata["data"]["content_hash"].startswith("sha256:")
    # The ingested table's own size and Arrow types (text as string, the year from its folders).
    (dataset,) = (tmp_path / "root").glob("*/ingest/dataset")
    assert metadata["data"]["bytes"] == dataset.stat().st_size
    assert metadata["data"]["schema"]["colour"] == "string"
    assert metadata["data"]["schema"]["year"] in ("int32", "int64")
    assert metadata["tuning"]["num_trials"] == 4
    # The arrests data is hard to predict; a working model still beats chance clearly.
    assert metadata["metrics"]["roc_auc"] > 0.65
    # The fairness step measured the model, the gate blessed it, and register recorded both.
    assert outputs["blessed"] is True
    assert metadata["deployable"] is True and metadata["fairness"]["gate"]["passed"] is True
    assert (
        metadata["gate"]["reason"] == "blessed: meets every threshold and there is no champion yet"
    )
    assert metadata["cv"]["folds"] == 3 and "roc_auc" in metadata["cv"]["scores"]
    assert metadata["config"]["model_name"] == "arrests-release" and metadata["kfp_run_id"]
    # Deployed, then promoted: the first blessed model is the champion.
    registry = ModelRegistry(str(tmp_path / "out" / "models"), "arrests-release")
    assert registry.aliases() == {"champion": "v1", "candidate": "v1"}
    # The edge model is part of the version, checksummed like the joblib file, with the held-out
    # rows the model server checks it on again (up to 1,000 of the 1,122 test rows).
    assert metadata["onnx"]["converted"] is True and metadata["onnx"]["parity_passed"] is True
    assert metadata["onnx"]["parity_rows"] == 1000
    assert set(metadata["files"]) == {
        "model.joblib",
        "model.onnx",
        "parity_rows.parquet",
        "reference.json",
    }
    # The training reference the monitor compares with: held-out metrics as evaluate's.
    reference = registry.reference("v1")
    assert reference["metrics"]["roc_auc"]["value"] == pytest.approx(metadata["metrics"]["roc_auc"])
    # The stable split's sides (seed 42): identical rows (2,543 distinct of 5,226) share a side.
    assert reference["rows"] == {"train": 4104, "test": 1122}
    edge = onnx.load_from_string(registry.verified_files("v1")["model.onnx"])
    features = {f["name"] for f in metadata["schema"]["features"]}
    assert {graph_input.name for graph_input in edge.graph.input} == features
    page = next((tmp_path / "root").glob("*/run-report/report")).read_text()
    assert "<section id='champion'>" in page and "no champion yet" in page.lower()
    summaries = metadata["fairness"]["summaries"]
    assert set(summaries) == {"colour", "sex", "age", "colour_x_sex"}
    assert 0 < summaries["colour"]["demographic_parity_ratio"]["value"] <= 1

    deploy_outputs = json.loads(
        next((tmp_path / "root").glob("*/deploy/executor_output.json")).read_text()
    )
    assert deploy_outputs["parameterValues"]["matches"] is True
    assert deploy_outputs["parameterValues"]["endpoint"].startswith("http://127.0.0.1:")
    bias_report = next((tmp_path / "root").glob("*/bias/report")).read_text()
    assert "### colour" in bias_report and "### age" in bias_report
    assert "[18, 25)" in bias_report and "### colour_x_sex" in bias_report
    fairness_page = next((tmp_path / "root").glob("*/fairness/report")).read_text()
    assert fairness_page.count("data:image/png;base64,") == 4
    assert "<h2>colour</h2>" in fairness_page and "[50, 120)" in fairness_page


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mlpipe_run_prints_a_curl_that_the_served_model_answers(tmp_path, demo_lake):
    # The quickest search: what is checked here is the console and the served model, not it.
    config = fast_config(tmp_path / "run.yaml", demo_lake, tmp_path / "out")
    port = _free_port()
    process = subprocess.Popen(
        [MLPIPE, "run", "--config", str(config), "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    printed = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            printed.append(line)
            if line.startswith("Serving the new model"):
                break
        text = "".join(printed)
        assert "Serving the new model" in text, text
        curl = next(line.split("try", 1)[1].strip() for line in printed if "  try " in line)
        assert f"http://127.0.0.1:{port}/v1/models/arrests-release:predict" in curl
        assert "report.md" in text and "arrests-release v1" in text
        # The console shows each step's summary, not kfp's executor dumps (those go to the log).
        assert "tune: best " in text and "deploy: arrests-release v1 answered" in text
        assert "executor_input" not in text

        answer = None
        for _ in range(60):  # the server may still be binding its socket
            result = subprocess.run(["sh", "-c", curl], capture_output=True, text=True, timeout=30)
            if result.returncode == 0 and result.stdout:
                answer = json.loads(result.stdout)
                break
            time.sleep(0.5)
        assert answer is not None, "the printed curl got no answer"
        assert answer["predictions"][0] in ("Yes", "No")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0
    report = next((tmp_path / "out" / "runs").glob("*/report.md")).read_text()
    assert "Held-out metrics" in report and "Data: groups and base rates" in report
    assert "Fairness on the held-out rows" in report
    assert next((tmp_path / "out" / "runs").glob("*/fairness.html")).is_file()


def _mlpipe_run(tmp_path, config, *extra):
    return subprocess.run(
        [MLPIPE, "run", "--config", str(config), "--no-serve", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_blocking_fairness_threshold_registers_but_does_not_deploy(tmp_path, reference):
    # Parity this strict no model of the arrests data meets: the gate must block it.
    strict = [{"metric": "demographic_parity_ratio", "threshold": 0.999, "columns": ["colour"]}]
    # The reference run's step cache, not its registry: the steps that the thresholds do not
    # feed (prepare, tune, train...) are reused, and there is no champion yet.
    shutil.copytree(reference.root / "cache", tmp_path / "out" / "cache")
    config = reference.config(
        tmp_path / "run.yaml", tmp_path / "out", **{"bias.thresholds": strict}
    )
    done = _mlpipe_run(tmp_path, config, "--require-blessed")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "fairness: blocked: demographic_parity_ratio for 'colour' = 0." in done.stdout
    assert "in group 'Black' vs" in done.stdout
    assert "gate: not blessed: blocked: demographic_parity_ratio" in done.stdout
    assert "not blessed" in done.stderr and "arrests-release v1" in done.stderr
    assert "deploy:" not in done.stdout and "promote:" not in done.stdout  # never started
    run_dir = next((tmp_path / "out" / "runs").glob("*"))
    assert not list(run_dir.glob("artifacts/*/deploy"))
    metadata = read_model_metadata(tmp_path / "out" / "models" / "arrests-release" / "v1")
    assert metadata["deployable"] is False
    assert metadata["fairness"]["gate"]["reason"].startswith("blocked: demographic_parity_ratio")
    assert "Fairness gate: blocked" in (run_dir / "report.md").read_text()
    registry = ModelRegistry(str(tmp_path / "out" / "models"), "arrests-release")
    assert registry.aliases() == {"candidate": "v1"}  # no champion: nothing was deployed


def test_a_weaker_challenger_is_registered_but_the_champion_stays(tmp_path, reference):
    # The first run is the session's reference run (tests/mlpipe_runs.py): its output root,
    # copied, holds the champion v1 it blessed and promoted.
    assert "gate: blessed" in reference.output
    assert "promote: arrests-release champion is now v1" in reference.output
    root = reference.copy_root(tmp_path / "out")
    config = reference.config(tmp_path / "run.yaml", root)
    # A deliberately weak search: one shallow, five-tree forest.
    weak = [
        "--set",
        "tuning.families=[random_forest]",
        "--set",
        "tuning.num_trials=1",
        "--set",
        "tuning.space.random_forest={n_estimators: 5, max_depth: 2}",
    ]
    second = _mlpipe_run(tmp_path, config, *weak)
    assert second.returncode == 0, second.stdout + second.stderr
    assert re.search(r"roc_auc \d\.\d{4} is worse than champion v1 \(\d\.\d{4}\)", second.stdout)
    assert "promote:" not in second.stdout
    assert "champion   v1  (unchanged; v2 is the candidate" in second.stdout
    registry = ModelRegistry(str(root / "models"), "arrests-release")
    assert registry.aliases() == {"champion": "v1", "candidate": "v2"}
    second_meta = registry.metadata("v2")
    assert second_meta["gate"]["blessed"] is False
    assert second_meta["tuning"]["params"]["max_depth"] == 2  # an int, as configured
    champion_check = next(c for c in second_meta["gate"]["checks"] if c["kind"] == "champion")
    assert champion_check["passed"] is False
    # The run's page says so, with the champion re-scored on the same test rows.
    page = (root / "runs" / second_meta["kfp_run_id"] / "report.html").read_text()
    assert "is worse than champion v1" in page and "<section id='champion'>" in page
    assert f"{registry.metadata('v1')['metrics']['roc_auc']:.4f}" in page
