"""The Ray engine of batch predictions on an embedded Ray (127.0.0.1): the same rows, answers,
log and contract counts as the local engine, and a bad batch stops the job with its one line."""

import pandas as pd
import pytest

import components.predict  # noqa: F401  (keeps an embedded Ray on loopback: imported before ray)
from components.common.errors import PipelineInputError
from components.common.prediction_log import read_prediction_log
from components.predict.logic import BatchJob, predict_batch
from components.predict.ray_engine import _cause
from components.predict.scoring import read_payload
from tests.components.predict_fixtures import (
    MODEL,
    loans_to_score,
    register_loans_model,
    write_lake,
)

pytestmark = pytest.mark.ray

CONTRACT = {"version": 1, "columns": {"age": {"kind": "numeric", "min": 18, "max": 60}}}


def test_the_ray_engine_scores_as_the_local_engine(tmp_path):
    registry, _, _ = register_loans_model(tmp_path / "models")
    payload = read_payload(registry, "champion")
    rows = loans_to_score(3000)
    lake = write_lake(rows, tmp_path / "lake")
    records = {}
    for engine in ("local", "ray"):
        job = BatchJob(
            str(lake),
            str(tmp_path / engine),
            key_columns=["loan_id"],
            batch_rows=500,
            engine=engine,
            log_uri=str(tmp_path / f"log-{engine}"),
            contract=CONTRACT,
            ray_num_cpus=2,
        )
        records[engine] = predict_batch(job, payload)
    local, ray = records["local"], records["ray"]
    assert ray["engine"] == "ray" and ray["rows"] == local["rows"] == 3000
    assert ray["contract_warnings"] == local["contract_warnings"] != {}
    by_id = [
        pd.read_parquet(tmp_path / engine).sort_values("loan_id").reset_index(drop=True)
        for engine in ("local", "ray")
    ]
    pd.testing.assert_frame_equal(by_id[0].drop(columns="job"), by_id[1].drop(columns="job"))
    logged, skipped = read_prediction_log(str(tmp_path / "log-ray"), MODEL)
    assert skipped == [] and len(logged) == 3000


def test_a_batch_that_fails_on_a_ray_worker_is_the_jobs_one_line():
    """Ray's error for a failed batch carries the worker's traceback as text (this one is from a
    real run: a value that is not a number in a numeric feature); its last line is the job's."""
    message = (
        "ray::MapWorker(MapBatches(ScoreBatches)).submit() (pid=24866, ip=127.0.0.1)\n"
        '  File "components/predict/scoring.py", line 149, in as_numbers\n'
        "    raise PipelineInputError(\n"
        "components.common.errors.PipelineInputError: column 'income' (a numeric feature): "
        "value 'n/a!' cannot be cast to a number\n"
        "\nThe above exception was the direct cause of the following exception:\n"
        "ray.exceptions.UserCodeException: UDF failed to process a data block."
    )
    assert _cause(RuntimeError(message)) == (
        "column 'income' (a numeric feature): value 'n/a!' cannot be cast to a number"
    )
    wrapped = RuntimeError("UDF failed")
    wrapped.__cause__ = PipelineInputError("column 'age' (a feature) is missing")
    assert _cause(wrapped) == "column 'age' (a feature) is missing"
    assert _cause(RuntimeError("the object store is full")) is None
