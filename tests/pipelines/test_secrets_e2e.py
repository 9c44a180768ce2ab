"""End to end: a whole `mlpipe run` on a database whose password comes from the environment
writes it nowhere: not in any file under the run's folders (pipeline.log, the parameters, the
artifacts, the snapshot's manifest, the model version's metadata.json, the reports), nor on the
console."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config

pytestmark = pytest.mark.e2e

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
SECRET = "TopSecret123"


def test_a_database_password_from_the_environment_reaches_no_file_and_no_console(tmp_path):
    from sklego.datasets import load_arrests

    database = tmp_path / "arrests.db"
    with sqlite3.connect(database) as connection:
        load_arrests(as_frame=True).to_sql("arrests", connection, index=False)
    config = write_config(
        tmp_path / "run.yaml",
        **{
            "data.source": None,
            "data.etl": {
                "source": {
                    "sql": {
                        "url": f"sqlite:///{database}",
                        "table": "arrests",
                        "password_env": "DB_PASSWORD",
                    }
                }
            },
            "contract.path": "",  # inferred from this table
            "output_root": str(tmp_path / "out"),
            # The quickest search and fairness check (as tests/mlpipe_runs.py's fast_config):
            # every step still runs and writes its files, which is what is searched here.
            "tuning.num_trials": 2,
            "tuning.families": ["logistic_regression"],
            "tuning.cv_folds": 2,
            "bias.bootstrap": 20,
            "evaluation.thresholds": {"roc_auc": 0.6},
        },
    )
    assert SECRET not in config.read_text()
    # The secret is in the run's environment, as a Kubernetes Secret would put it there; the
    # GitOps token too (deploy.target local does not use it: it must not leak either).
    env = {**os.environ, "DB_PASSWORD": SECRET, "GITOPS_TOKEN": SECRET}
    result = subprocess.run(
        [MLPIPE, "run", "--config", str(config), "--no-serve", "--verbose"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ETL snapshot" in result.stdout

    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    names = {p.name for p in written}
    # The places the issue names were written, so searching them means something.
    assert {"pipeline.log", "metadata.json", "manifest.json", "report.md"} <= names, names
    log = next((tmp_path / "out" / "runs").glob("*/pipeline.log")).read_text()
    assert "DB_PASSWORD" in log  # the variable's name travels in the parameters; its value not
    leaks = [str(p) for p in written if SECRET.encode() in p.read_bytes()]
    assert leaks == []
    assert SECRET not in result.stdout + result.stderr
