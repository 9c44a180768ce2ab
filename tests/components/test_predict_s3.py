"""Batch predictions on S3, for real (a moto server on 127.0.0.1): the lake read from a bucket,
the scored partition and the prediction log written to one, complete, with no staging left."""

import json

import pandas as pd
import pytest

from components.common.prediction_log import read_prediction_log
from components.predict.logic import BatchJob, predict_batch
from components.predict.output import JOB_FILE
from components.predict.scoring import read_payload
from tests.components.predict_fixtures import (
    MODEL,
    loans_to_score,
    register_loans_model,
    write_lake,
)

pytestmark = pytest.mark.server


def test_a_lake_on_s3_is_scored_into_a_complete_partition_on_s3(s3, tmp_path):
    registry, _, _ = register_loans_model(tmp_path / "models")
    lake = write_lake(loans_to_score(700), tmp_path / "lake")
    s3.mkdir("batch")
    s3.put(str(lake), "batch/lake", recursive=True)
    job = BatchJob(
        "s3://batch/lake",
        "s3://batch/scored",
        key_columns=["loan_id"],
        batch_rows=256,
        log_uri="s3://batch/log",
    )
    record = predict_batch(job, read_payload(registry, "champion"))

    assert record["rows"] == 700 and record["partition"].startswith("s3://batch/scored/job=")
    s3.invalidate_cache()
    partition = record["partition"].removeprefix("s3://")
    assert json.loads(s3.cat_file(f"{partition}/{JOB_FILE}"))["rows"] == 700
    with s3.open(next(p for p in s3.find(partition) if p.endswith(".parquet")), "rb") as handle:
        assert {"loan_id", "prediction", "model_version"} <= set(pd.read_parquet(handle).columns)
    assert [p for p in s3.find("batch/scored") if "/.staging-" in p] == []
    logged, skipped = read_prediction_log("s3://batch/log", MODEL)
    assert skipped == [] and len(logged) == 700
