"""Batch predictions (components/predict): both runtimes give the model's answers, the server's
answers, the watermark scores only what is new, a failed job leaves nothing, and bad input is one
line naming what is wrong."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from components.common.errors import PipelineInputError
from components.common.prediction_log import read_prediction_log
from components.common.registry import MODEL_FILE, ONNX_FILE, ModelIntegrityError
from components.common.schema import as_model_input
from components.predict import batch as batch_module
from components.predict.input_check import ContractCounts
from components.predict.logic import BatchJob, predict_batch
from components.predict.output import JOB_FILE, WATERMARK_FILE
from components.predict.scoring import choose_runtime, read_payload
from tests.components.predict_fixtures import (
    MODEL,
    loans_to_score,
    register_loans_model,
    write_lake,
)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """(registry, fitted model, schema) of v1, the champion, with its ONNX graph."""
    return register_loans_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def lake(tmp_path) -> Path:
    return write_lake(loans_to_score(600), tmp_path / "lake")


def job(lake: Path, tmp_path: Path, **options) -> BatchJob:
    defaults = {"key_columns": ["loan_id"], "batch_rows": 128, "log_uri": str(tmp_path / "log")}
    return BatchJob(str(lake), str(tmp_path / "out"), **{**defaults, **options})


def scored(tmp_path: Path) -> pd.DataFrame:
    """Every partition of the output, by loan id."""
    frame = pd.read_parquet(tmp_path / "out")
    return frame.sort_values("loan_id").reset_index(drop=True)


def leftovers(tmp_path: Path) -> list[str]:
    """What a job left in the output and the log (the lake aside)."""
    return sorted(
        str(path.relative_to(tmp_path))
        for folder in ("out", "log")
        if (tmp_path / folder).exists()
        for path in (tmp_path / folder).rglob("*")
    )


# --- which runtime --------------------------------------------------------------------------


def test_onnx_only_where_the_version_has_a_graph_whose_parity_passed():
    proven = {"files": {MODEL_FILE: "a", ONNX_FILE: "b"}, "onnx": {"parity_passed": True}}
    assert choose_runtime(proven) == "onnx"
    assert choose_runtime(proven, "sklearn") == "sklearn"
    failed = {**proven, "onnx": {"parity_passed": False}}
    assert choose_runtime(failed) == "sklearn"
    unexported = {"files": {MODEL_FILE: "a"}, "onnx": {"converted": False}}
    assert choose_runtime(unexported) == "sklearn"
    with pytest.raises(PipelineInputError, match="has no ONNX graph whose parity check passed"):
        choose_runtime({**failed, "name": "loans", "version": "v2"}, "onnx")


# --- both runtimes, the model's and the server's answers -----------------------------------


@pytest.mark.parametrize("runtime", ["sklearn", "onnx"])
def test_every_row_is_scored_once_with_the_models_answer(registered, lake, tmp_path, runtime):
    registry, model, schema = registered
    record = predict_batch(job(lake, tmp_path), read_payload(registry, "champion", runtime))

    assert record["model"] == {"name": MODEL, "version": "v1", "runtime": runtime}
    assert record["rows"] == 600 and record["engine"] == "local"
    out = scored(tmp_path)
    rows = loans_to_score(600).sort_values("loan_id").reset_index(drop=True)
    assert out["loan_id"].tolist() == rows["loan_id"].tolist()
    assert set(out.columns) == {
        "loan_id",
        "prediction",
        "probability_no",
        "probability_yes",
        "model_version",
        "job",
    }
    assert (out["model_version"] == "v1").all()
    features = as_model_input(rows, schema)
    expected = model.predict_proba(features)
    tolerance = 0 if runtime == "sklearn" else 1e-5  # float32 inside the graph
    np.testing.assert_allclose(
        out[["probability_no", "probability_yes"]], expected, atol=tolerance, rtol=0
    )
    if runtime == "sklearn":
        assert out["prediction"].tolist() == model.predict(features).tolist()
    else:  # a label may differ only where the probability is within float32 of the threshold
        differ = out["prediction"].to_numpy() != model.predict(features)
        assert np.all(np.abs(expected[differ, 1] - 0.5) < 1e-5)


def test_the_batch_answers_are_the_servers_for_the_same_rows(registered, lake, tmp_path):
    from serving.model import TabularModel

    registry, _, schema = registered
    predict_batch(job(lake, tmp_path), read_payload(registry, "champion", "sklearn"))
    out = scored(tmp_path)
    sample = loans_to_score(600).sort_values("loan_id").reset_index(drop=True).iloc[::13]
    server = TabularModel(MODEL, registry.uri("v1"))
    server.load()
    rows = json.loads(sample[[f["name"] for f in schema["features"]]].to_json(orient="records"))
    answer = server.predict({"instances": rows, "return_probabilities": True})
    ours = out.loc[sample.index]
    assert ours["prediction"].tolist() == answer["predictions"]
    assert answer["classes"] == ["no", "yes"]
    probabilities = np.array(answer["probabilities"])
    np.testing.assert_allclose(
        ours[["probability_no", "probability_yes"]], probabilities, atol=1e-12
    )


def test_the_scored_rows_are_in_the_prediction_log_for_the_monitor(registered, lake, tmp_path):
    registry, _, _ = registered
    record = predict_batch(job(lake, tmp_path), read_payload(registry, "champion"))

    logged, skipped = read_prediction_log(str(tmp_path / "log"), MODEL)
    assert skipped == [] and record["log_files"] >= 1
    assert len(logged) == 600 and (logged["model_version"] == "v1").all()
    out = scored(tmp_path)
    assert sorted(logged["prediction"]) == sorted(out["prediction"])
    assert {"income", "age", "region", "group", "probability_yes"} <= set(logged.columns)
    # Each batch is a request of its own; rows are numbered within it, as the server's are.
    assert (
        logged.groupby("request_id")["row"].apply(lambda r: sorted(r) == list(range(len(r)))).all()
    )


# --- the watermark ----------------------------------------------------------------------------


def test_since_last_job_scores_only_the_files_new_since_the_last_job(registered, tmp_path):
    registry, _, _ = registered
    rows = loans_to_score(400)
    lake = write_lake(rows, tmp_path / "lake")
    payload = read_payload(registry, "champion")
    first = predict_batch(job(lake, tmp_path, since_last_job=True), payload)
    assert first["rows"] == 400 and not first["incremental"]
    watermark = json.loads((tmp_path / "out" / WATERMARK_FILE).read_text())
    assert sorted(watermark["files"]) == [
        "month=2026-10/part-0.parquet",
        "month=2026-11/part-0.parquet",
    ]

    december = loans_to_score(50, seed=9).assign(month="2026-12")
    december["loan_id"] += 10_000
    write_lake(december, lake)
    second = predict_batch(job(lake, tmp_path, since_last_job=True), payload)
    assert second["rows"] == 50 and second["incremental"] and second["files_read"] == 1
    partition = pd.read_parquet(second["partition"])
    assert sorted(partition["loan_id"]) == sorted(december["loan_id"])

    third = predict_batch(job(lake, tmp_path, since_last_job=True), payload)
    assert third["rows"] == 0 and third["partition"] == "" and "nothing new" in third["nothing_new"]
    assert len(list((tmp_path / "out").glob("job=*"))) == 2  # the third wrote nothing


# --- atomic output ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_job_that_fails_mid_write_leaves_no_output_and_no_log(
    registered, lake, tmp_path, monkeypatch, fault
):
    registry, _, _ = registered
    write = batch_module.PartWriter.write
    calls = []

    def failing(self, table):
        calls.append(table.num_rows)
        if len(calls) == 3:  # after two batches were written
            raise fault
        write(self, table)

    monkeypatch.setattr(batch_module.PartWriter, "write", failing)
    with pytest.raises(type(fault)):
        predict_batch(job(lake, tmp_path), read_payload(registry, "champion"))
    assert len(calls) == 3
    assert leftovers(tmp_path) == []  # no partition, no staging folder, no log file


def test_a_finished_partition_holds_its_record_and_appears_whole(registered, lake, tmp_path):
    registry, _, _ = registered
    record = predict_batch(job(lake, tmp_path), read_payload(registry, "champion"))
    partition = Path(record["partition"])
    assert partition.name == f"job={record['job_id']}"
    assert json.loads((partition / JOB_FILE).read_text())["rows"] == 600
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


# --- bad input --------------------------------------------------------------------------------


def test_an_input_with_none_of_the_models_features_is_refused(registered, tmp_path):
    registry, _, _ = registered
    pd.DataFrame({"loan_id": [1, 2], "colour": ["a", "b"]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(PipelineInputError, match="none of the model's 4 features is in the input"):
        predict_batch(job(tmp_path / "other.parquet", tmp_path), read_payload(registry, "v1"))
    assert leftovers(tmp_path) == []


def test_a_missing_feature_and_a_missing_key_column_are_named(registered, tmp_path):
    registry, _, _ = registered
    rows = loans_to_score(20)
    rows.drop(columns=["age"]).to_parquet(tmp_path / "no-age.parquet")
    payload = read_payload(registry, "v1")
    with pytest.raises(PipelineInputError, match=r"column 'age' \(a feature\) is missing"):
        predict_batch(job(tmp_path / "no-age.parquet", tmp_path), payload)
    rows.to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(PipelineInputError, match="predict.key_columns: column 'customer'"):
        predict_batch(job(tmp_path / "rows.parquet", tmp_path, key_columns=["customer"]), payload)


def test_a_type_that_cannot_be_cast_names_the_column(registered, tmp_path):
    registry, _, _ = registered
    payload = read_payload(registry, "v1")
    rows = loans_to_score(20)
    rows.assign(age=pd.Timestamp("2026-01-01")).to_parquet(tmp_path / "dates.parquet")
    with pytest.raises(
        PipelineInputError, match=r"column 'age' \(a numeric feature\) is timestamp"
    ):
        predict_batch(job(tmp_path / "dates.parquet", tmp_path), payload)
    text = rows.assign(income=rows["income"].astype(str))
    text.loc[7, "income"] = "forty"
    text.to_parquet(tmp_path / "text.parquet")
    with pytest.raises(
        PipelineInputError, match=r"column 'income' \(a numeric feature\): value 'forty'"
    ):
        predict_batch(job(tmp_path / "text.parquet", tmp_path), payload)
    assert leftovers(tmp_path) == []
    # Numbers written as text are cast, as the server casts JSON numbers.
    numbers = rows.assign(age=rows["age"].astype(str))
    numbers.to_parquet(tmp_path / "numbers.parquet")
    assert predict_batch(job(tmp_path / "numbers.parquet", tmp_path), payload)["rows"] == 20


def test_an_output_holding_other_data_is_refused_and_left_as_it_was(registered, lake, tmp_path):
    registry, _, _ = registered
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scores.parquet").write_bytes(b"someone else's")
    with pytest.raises(
        PipelineInputError, match="holds 'scores.parquet', which is not a batch-prediction"
    ):
        predict_batch(job(lake, tmp_path), read_payload(registry, "v1"))
    assert leftovers(tmp_path) == ["out/scores.parquet"]


def test_a_job_id_already_written_is_refused(registered, lake, tmp_path):
    registry, _, _ = registered
    payload = read_payload(registry, "v1")
    predict_batch(job(lake, tmp_path), payload, job_id="nightly-1")
    with pytest.raises(PipelineInputError, match="job nightly-1 is already there"):
        predict_batch(job(lake, tmp_path), payload, job_id="nightly-1")


@pytest.mark.parametrize("runtime", ["sklearn", "onnx"])
def test_a_version_whose_checksum_fails_is_not_loaded(tmp_path, runtime):
    registry, _, _ = register_loans_model(tmp_path / "models")
    name = MODEL_FILE if runtime == "sklearn" else ONNX_FILE
    path = Path(registry.uri("v1")) / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=f"{name}: SHA-256 .* does not match"):
        read_payload(registry, "champion", runtime)


# --- the data contract --------------------------------------------------------------------------

CONTRACT = {
    "version": 1,
    "columns": {
        "age": {"kind": "numeric", "nullable": False, "min": 18, "max": 60},
        "region": {
            "kind": "categorical",
            "nullable": True,
            "max_null_rate": 0.1,
            "categories": ["north", "south"],
        },
    },
}


def test_rows_that_break_a_warn_rule_are_counted_per_column(registered, lake, tmp_path):
    registry, _, _ = registered
    record = predict_batch(job(lake, tmp_path, contract=CONTRACT), read_payload(registry, "v1"))
    rows = loans_to_score(600)
    assert record["contract_warnings"] == {
        "out_of_range": {"age": int((rows["age"] > 60).sum())},
        "unseen_category": {"region": int((rows["region"] == "east").sum())},
    }


def test_a_block_rule_broken_stops_the_job_before_anything_is_committed(registered, lake, tmp_path):
    registry, _, _ = registered
    options = {"contract": CONTRACT, "severity": {"out_of_range": "block"}}
    with pytest.raises(
        PipelineInputError,
        match=r"column 'age' breaks the contract's out_of_range rule in \d+ of 600 rows",
    ):
        predict_batch(job(lake, tmp_path, **options), read_payload(registry, "v1"))
    assert leftovers(tmp_path) == []


def test_contract_counts_add_up_across_batches_and_workers():
    first, second = ContractCounts(CONTRACT), ContractCounts(CONTRACT)
    first.add(pd.DataFrame({"age": [17.0, 30.0, np.nan], "region": ["east", None, "north"]}))
    second.add(pd.DataFrame({"age": [61.0, 61.0], "region": ["south", "west"]}))
    first.merge(second.as_dict())
    assert first.rows == 5
    assert first.counts == {
        "out_of_range": {"age": 3},
        "unseen_category": {"region": 2},
        "null_rate": {"age": 1, "region": 1},
    }
    # null_rate blocks by default: a null in a column the contract says is never null.
    with pytest.raises(PipelineInputError, match="column 'age' breaks the contract's null_rate"):
        first.check_blocking("input")
    assert "null_rate" not in first.warnings()


def test_a_cluster_address_that_does_not_answer_fails_within_the_timeout(
    registered, lake, tmp_path
):
    import socket
    import time

    registry, _, _ = registered
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = {"engine": "ray", "ray_address": f"127.0.0.1:{port}", "ray_timeout_s": 2}
    started = time.monotonic()
    with pytest.raises(
        PipelineInputError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"
    ):
        predict_batch(job(lake, tmp_path, **options), read_payload(registry, "v1"))
    assert time.monotonic() - started < 30
    assert leftovers(tmp_path) == []


def test_arrow_labels_keep_numbers_and_make_anything_else_text():
    from components.predict.scoring import arrow_labels

    assert arrow_labels(np.array([0, 1])).type == pa.int64()
    assert arrow_labels(np.array(["no", "yes"], dtype=object)).to_pylist() == ["no", "yes"]


def test_onnx_probabilities_are_named_by_the_models_classes_in_its_order(tmp_path):
    """Integer classes sort differently as text (10 before 2): each probability column must be
    its class's in both runtimes."""
    from components.common.registry import ModelRegistry
    from components.export.logic import check_parity, export_onnx
    from components.prepare.logic import fit_preprocessor, split_table
    from components.train.logic import fit_model
    from components.validate.logic import validate_table
    from tests.conftest import make_loans

    frame = make_loans(600, seed=4)
    frame["tier"] = np.select([frame["age"] < 35, frame["age"] < 55], [2, 10], 1)
    frame = frame.drop(columns=["approved"])
    schema = validate_table(frame, "tier", "classification", [], {})
    train, test = split_table(frame, schema, 0.25, seed=1)
    params = {"family": "logistic_regression", "params": {"C": 1.0}}
    model = fit_model(train, schema, fit_preprocessor(train, schema), params, 0)
    graph = export_onnx(model, schema)
    assert check_parity(model, graph, test, schema)["passed"]
    registry = ModelRegistry(str(tmp_path / "models"), "tiers")
    registry.register(
        model, {"schema": schema, "onnx": {"parity_passed": True}}, {ONNX_FILE: graph}
    )
    rows = frame.drop(columns=["tier"]).assign(loan_id=np.arange(len(frame)))
    rows.to_parquet(tmp_path / "rows.parquet")
    outputs = {}
    for runtime in ("sklearn", "onnx"):
        out = tmp_path / runtime
        job = BatchJob(str(tmp_path / "rows.parquet"), str(out), key_columns=["loan_id"])
        predict_batch(job, read_payload(registry, "v1", runtime))
        outputs[runtime] = pd.read_parquet(out).sort_values("loan_id").reset_index(drop=True)
    columns = [f"probability_{c}" for c in (1, 2, 10)]
    for runtime, out in outputs.items():
        assert [c for c in out.columns if c.startswith("probability_")] == columns, runtime
    np.testing.assert_allclose(outputs["onnx"][columns], outputs["sklearn"][columns], atol=1e-5)
    np.testing.assert_allclose(
        outputs["sklearn"][columns], model.predict_proba(as_model_input(rows, schema)), atol=0
    )


def test_filters_prune_partitions_and_a_partition_column_can_be_a_key(registered, lake, tmp_path):
    registry, _, _ = registered
    options = {"filters": [["month", "==", "2026-11"]], "key_columns": ["loan_id", "month"]}
    record = predict_batch(job(lake, tmp_path, **options), read_payload(registry, "v1"))
    rows = loans_to_score(600)
    november = rows[rows["month"] == "2026-11"]
    assert record["rows"] == len(november) == 300
    out = scored(tmp_path)
    assert out["loan_id"].tolist() == sorted(november["loan_id"])
    assert set(out["month"]) == {"2026-11"}
