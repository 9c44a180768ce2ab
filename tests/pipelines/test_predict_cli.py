"""`mlpipe predict` as a user runs it: the lines it prints, exit 0 with the partition written,
exit 2 and one line for each bad input, and nothing written then."""

import pandas as pd
import pytest
import yaml

from pipelines.cli import main
from tests.components.predict_fixtures import (
    MODEL,
    loans_to_score,
    register_loans_model,
    write_lake,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A store with v1 (the champion) and v2 (scikit-learn only), a lake, and a run config."""
    base = tmp_path_factory.mktemp("predict-cli")
    registry, _, _ = register_loans_model(base / "out" / "models")
    register_loans_model(base / "out" / "models", onnx=False, promote=False)  # v2
    lake = write_lake(loans_to_score(200), base / "lake")
    config = base / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name": MODEL,
                "data": {"source": str(lake)},
                "target": "approved",
                "output_root": str(base / "out"),
                "predict": {"key_columns": ["loan_id"]},
            }
        )
    )
    return base, config, lake


def predict(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_champion_scores_the_configs_source_into_a_new_partition(setup, capsys, tmp_path):
    _, config, lake = setup
    code, out, err = predict(capsys, "--config", config, "--output", tmp_path / "scored")
    assert code == 0, err
    assert f"Scored 200 rows of {lake} (2 files) with {MODEL} v1 (onnx, local engine)" in out
    [partition] = (tmp_path / "scored").glob("job=*")
    assert f"output     {partition}" in out
    assert sorted(pd.read_parquet(partition)["loan_id"]) == sorted(loans_to_score(200)["loan_id"])

    code, out, _ = predict(
        capsys, "--config", config, "--output", tmp_path / "scored", "--version", "v2"
    )
    assert code == 0 and f"with {MODEL} v2 (sklearn, local engine)" in out
    assert len(list((tmp_path / "scored").glob("job=*"))) == 2  # a partition per job, not mixed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--set", "predict.key_columns=[customer]"],
            "error: predict.key_columns: column 'customer' is not in the input",
        ),
        (["--set", "predict.key_colums=[loan_id]"], "unknown key 'predict.key_colums'"),
        (["--version", "v9"], f"error: model '{MODEL}': no version v9"),
        (["--alias", "candidate"], f"error: model '{MODEL}': no candidate yet"),
        (
            ["--input", "{base}/nowhere"],
            "error: data source '{base}/nowhere': no such file or folder",
        ),
        (["--output", "{lake}"], "error: output '{lake}': holds 'month=2026-10', which is not"),
        (
            ["--set", "predict.runtime=onnx", "--version", "v2"],
            "has no ONNX graph whose parity check passed",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(setup, capsys, tmp_path, arguments, message):
    base, config, lake = setup
    output = tmp_path / "scored"
    arguments = [a.format(base=base, lake=lake) for a in arguments]
    if "--output" not in arguments:
        arguments += ["--output", str(output)]
    code, out, err = predict(capsys, "--config", config, *arguments)
    assert code == 2, out
    assert message.format(base=base, lake=lake) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not output.exists() or list(output.iterdir()) == []


@pytest.mark.faults
def test_sigterm_mid_job_exits_130_and_leaves_no_partition_nor_staging(setup, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    base, config, _ = setup
    big = write_lake(loans_to_score(200_000, seed=5), tmp_path / "big")
    output = tmp_path / "scored"
    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "pipelines.cli", "predict", "--config", str(config)]
    command += ["--input", str(big), "--output", str(output), "--set", "predict.batch_rows=500"]
    process = subprocess.Popen(
        command,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # Stopped once it is writing: its staging folder holds a data file.
        while not list(output.glob(".staging-*/data/*.parquet")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert err.strip() == "interrupted"
    assert list(output.iterdir()) == []
