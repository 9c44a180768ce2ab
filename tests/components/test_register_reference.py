"""The register step and the training reference, through the component's `.python_func` with its
artifacts in tmp_path: stored with the version, never blocking a registration, and bad input
still stopping the step with one line."""

import json

import joblib
import pytest
from kfp.dsl import Artifact, Dataset, Model
from sklearn.linear_model import LogisticRegression

from components.common.registry import REFERENCE_FILE, ModelRegistry
from components.common.schema import as_model_input
from components.register.component import register
from tests.components.test_reference import LOANS_SCHEMA, fitted, loans_split
from tests.conftest import full_plan


class BrokenProbabilities:
    """A fitted model whose predict_proba fails as a library bug would (not bad input)."""

    classes_ = ["no", "yes"]

    def predict(self, features):
        return ["yes"] * len(features)

    def predict_proba(self, features):
        raise RuntimeError("predict_proba exploded")


def run_register(tmp_path, model, test_frame=None) -> ModelRegistry:
    """register.python_func on a loans model; returns the store's registry."""
    train, test = loans_split(400)
    if test_frame is not None:
        test = test_frame(test)
    joblib.dump(model, tmp_path / "model.joblib")
    train.to_parquet(tmp_path / "train.parquet", index=False)
    test.to_parquet(tmp_path / "test.parquet", index=False)
    files = {
        "schema.json": LOANS_SCHEMA,
        "best.json": {"family": "logistic_regression"},
        "evaluation.json": {"metrics": {"roc_auc": 0.8}},
        "fairness.json": {"gate": {"passed": True}},
        "gate.json": {"blessed": True, "reason": "blessed: test", "checks": []},
    }
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    (tmp_path / "model.onnx").write_bytes(b"")
    onnx_model = Model(uri=str(tmp_path / "model.onnx"))
    onnx_model.metadata["converted"] = False
    register.python_func(
        model=Model(uri=str(tmp_path / "model.joblib")),
        dataset=Dataset(uri=str(tmp_path / "loans.parquet")),
        schema=Artifact(uri=str(tmp_path / "schema.json")),
        best=Artifact(uri=str(tmp_path / "best.json")),
        evaluation=Artifact(uri=str(tmp_path / "evaluation.json")),
        fairness=Artifact(uri=str(tmp_path / "fairness.json")),
        decision=Artifact(uri=str(tmp_path / "gate.json")),
        onnx_model=onnx_model,
        train=Dataset(uri=str(tmp_path / "train.parquet")),
        test=Dataset(uri=str(tmp_path / "test.parquet")),
        plan=full_plan(tmp_path / "plan.json"),
        model_store_uri=str(tmp_path / "store"),
        model_name="loans",
        positive_class="yes",
        run_config="{}",
        run_id="run-1",
    )
    return ModelRegistry(str(tmp_path / "store"), "loans")


@pytest.fixture(scope="module")
def loans_model():
    train, _ = loans_split(400)
    return fitted(train, LOANS_SCHEMA, LogisticRegression(max_iter=1000))


def test_the_version_stores_its_reference_and_the_summary_says_so(tmp_path, capsys, loans_model):
    registry = run_register(tmp_path, loans_model)
    reference = registry.reference("v1")
    assert reference["rows"] == {"train": 300, "test": 100}
    metadata = registry.metadata("v1")
    size = (tmp_path / "store" / "loans" / "v1" / REFERENCE_FILE).stat().st_size
    assert metadata["reference"] == {"stored": True, "bytes": size}
    assert f"reference {size / 1024:.0f} KB" in capsys.readouterr().out


def test_a_reference_that_fails_to_build_does_not_block_the_version(tmp_path, capsys):
    registry = run_register(tmp_path, BrokenProbabilities())
    assert registry.versions() == ["v1"] and registry.aliases() == {"candidate": "v1"}
    assert registry.reference("v1") is None
    record = registry.metadata("v1")["reference"]
    assert record["stored"] is False
    assert "RuntimeError: predict_proba exploded" in record["reason"]
    out = capsys.readouterr().out
    assert "loans v1" in out and "no reference: building it failed (RuntimeError" in out


def test_bad_input_stops_the_step_with_one_line_and_registers_nothing(
    tmp_path, capsys, loans_model
):
    with pytest.raises(SystemExit) as stopped:
        run_register(tmp_path, loans_model, lambda test: test.drop(columns=["income"]))
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("register: column 'income' (a feature) is not in the data")
    assert ModelRegistry(str(tmp_path / "store"), "loans").versions() == []


def test_the_reference_profiles_what_the_served_model_answers(tmp_path, loans_model):
    registry = run_register(tmp_path, loans_model)
    reference = registry.reference("v1")
    _, test = loans_split(400)
    answers = loans_model.predict(as_model_input(test, LOANS_SCHEMA))
    shares = reference["profile"]["outputs"]["prediction"]["shares"]
    assert shares["yes"] == pytest.approx((answers == "yes").mean())
