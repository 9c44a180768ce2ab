"""The CLI as a user meets it: one-line errors with the right exit codes, nothing half-written."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_config

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))


def mlpipe(*args, cwd, timeout=120):
    return subprocess.run([MLPIPE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"tuning.bogus": 3}, "unknown key 'tuning.bogus'"),
        ({"target": "outcome"}, "column 'outcome' is not in the data source"),
        ({"data.source": "nowhere/lake"}, "data source 'nowhere/lake': no such file or folder"),
        # The issue: a blocking threshold on 'COLOUR' (the column is 'colour') switched the
        # fairness gate off, and the run deployed.
        (
            {
                "bias.thresholds": [
                    {
                        "metric": "demographic_parity_ratio",
                        "threshold": 0.8,
                        "blocking": True,
                        "columns": ["COLOUR"],
                    }
                ]
            },
            "key 'bias.thresholds[0].columns': column 'COLOUR' is not a sensitive column",
        ),
    ],
)
def test_run_with_a_bad_config_exits_2_and_writes_nothing(tmp_path, demo_lake, overrides, fragment):
    config = write_config(
        tmp_path / "run.yaml",
        **({"data.source": str(demo_lake), "output_root": "out"} | overrides),
    )
    result = mlpipe("run", "--config", str(config), "--no-serve", cwd=tmp_path)
    assert_one_line_error(result, 2, str(config), fragment)
    assert not (tmp_path / "out").exists()


def test_a_failing_step_is_one_line_naming_the_step_and_column(tmp_path, demo_lake):
    # Passes the config checks (the column exists) but not validation (it holds strings).
    config = write_config(
        tmp_path / "run.yaml",
        **{"data.source": str(demo_lake), "output_root": "out", "columns": {"sex": "numeric"}},
    )
    result = mlpipe("run", "--config", str(config), "--no-serve", cwd=tmp_path)
    assert_one_line_error(
        result, 1, "pipeline step failed: validate: column 'sex': declared numeric but holds"
    )
    assert not (tmp_path / "out" / "models").exists()


def test_a_blocking_contract_anomaly_stops_the_run_naming_column_and_values(tmp_path, demo_lake):
    # The shipped contract was reviewed on 1997-2000; the lake now holds 2001-2002 too.
    config = write_config(
        tmp_path / "run.yaml",
        **{
            "data.source": str(demo_lake),
            "output_root": "out",
            "contract.severity": {"out_of_range": "block"},
        },
    )
    result = mlpipe("run", "--config", str(config), "--no-serve", cwd=tmp_path)
    assert_one_line_error(
        result,
        1,
        "validate: column 'year': out of range: expected values in [1997, 2000], observed",
        "'2001', '2002'",
    )
    anomalies = json.loads(
        next((tmp_path / "out").glob("runs/*/artifacts/*/validate/anomalies")).read_text()
    )
    assert [a["kind"] for a in anomalies] == ["out_of_range"]


def test_contract_command_infers_a_contract_that_the_run_then_accepts(tmp_path, demo_lake):
    config = write_config(tmp_path / "run.yaml", **{"data.source": str(demo_lake)})
    result = mlpipe("contract", "--config", str(config), "--output", "contract.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    contract = yaml.safe_load((tmp_path / "contract.yaml").read_text())
    assert contract["columns"]["year"]["max"] == 2002
    assert contract["columns"]["colour"]["categories"] == ["Black", "White"]


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_submit_to_a_host_that_does_not_answer_fails_fast(tmp_path, demo_lake):
    config = write_config(tmp_path / "run.yaml", **{"data.source": str(demo_lake)})
    host = f"http://127.0.0.1:{_unused_port()}"
    result = mlpipe(
        "submit", "--config", str(config), "--host", host, "--timeout", "2", cwd=tmp_path
    )
    assert_one_line_error(result, 2, f"host '{host}' does not answer")


def test_serve_a_folder_that_is_not_a_model(tmp_path):
    result = mlpipe("serve", "--model-dir", str(tmp_path), cwd=tmp_path)
    assert_one_line_error(result, 2, f"model folder '{tmp_path}': model.joblib is missing")


def test_compile_writes_the_same_spec_as_the_checked_in_one(tmp_path):
    result = mlpipe("compile", "--output", "spec.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    checked_in = Path(__file__).parents[2] / "pipelines" / "training_pipeline.yaml"
    assert (tmp_path / "spec.yaml").read_text() == checked_in.read_text()


def test_compile_with_a_config_takes_its_resources_and_names_a_step_that_is_not_one(tmp_path):
    good = write_config(tmp_path / "good.yaml", resources={"train": {"limits": {"memory": "6Gi"}}})
    result = mlpipe("compile", "--config", str(good), "--output", "spec.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    spec = next(yaml.safe_load_all((tmp_path / "spec.yaml").read_text()))
    train = spec["deploymentSpec"]["executors"]["exec-train"]
    assert train["container"]["resources"]["resourceMemoryLimit"] == "6Gi"

    bad = write_config(tmp_path / "bad.yaml", resources={"trian": {"limits": {"memory": "6Gi"}}})
    result = mlpipe("compile", "--config", str(bad), "--output", "bad-spec.yaml", cwd=tmp_path)
    assert_one_line_error(result, 2, "bad.yaml: key 'resources.trian'")
    assert not (tmp_path / "bad-spec.yaml").exists()


def test_demo_data_writes_a_year_partitioned_lake(tmp_path):
    config = write_config(tmp_path / "run.yaml", **{"data.source": "lake"})
    result = mlpipe("demo-data", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    years = sorted(p.name for p in (tmp_path / "lake").iterdir())
    assert years == [f"year={y}" for y in range(1997, 2003)]
    assert "5226 rows" in result.stdout


def test_resume_of_a_run_that_does_not_exist_names_it(tmp_path, demo_lake):
    config = write_config(
        tmp_path / "run.yaml", **{"data.source": str(demo_lake), "output_root": "out"}
    )
    result = mlpipe(
        "run",
        "--config",
        str(config),
        "--no-serve",
        "--resume",
        "20260101-000000-abcdef",
        cwd=tmp_path,
    )
    assert_one_line_error(
        result,
        2,
        "--resume 20260101-000000-abcdef: no such run in ",
        "(runs that can be resumed: none)",
    )
    assert not (tmp_path / "out" / "runs").exists()
