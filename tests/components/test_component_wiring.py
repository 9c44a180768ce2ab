"""Each KFP component body, called through `.python_func` with artifacts in a temporary folder, as
the pipeline wires it: its config sections as dicts, its inputs the previous steps' outputs.

The stages' logic has its own tests; these check the wiring (which section key reaches which
argument, what each step writes and records), fast and without kfp.local. Together they run
the chain once: plan -> ingest -> validate -> prepare -> bias -> tune -> train -> evaluate ->
export -> fairness -> gate -> register -> deploy -> promote, on a small loans table; then the
plan of an incremental run, and tune and train updating that champion.
"""

import json
from pathlib import Path

import joblib
import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from components.bias.component import bias, fairness
from components.common.registry import ModelRegistry
from components.deploy.component import deploy
from components.evaluate.component import evaluate, gate
from components.export.component import export_onnx_model
from components.ingest.component import ingest
from components.plan.component import plan
from components.prepare.component import prepare
from components.register.component import promote, register
from components.train.component import train
from components.tune.component import tune
from components.validate.component import validate
from tests.conftest import make_loans

SPLIT = {"test_size": 0.25, "seed": 3}
BIAS = {
    "bootstrap": 0,
    "min_group_size": 5,
    "thresholds": [
        {"metric": "demographic_parity_ratio", "threshold": 0.0, "direction": "at_least"}
    ],
    "mitigation": "none",
    "mitigate_by": "group",
}
# The alerts these steps send are tested in test_alerts.py; here they are off.
NO_ALERTS = {"events": []}
TUNING = {
    "families": ["logistic_regression"],
    "num_trials": 2,
    "cv_folds": 2,
    "space": "{}",
}


class Steps:
    """The artifacts of one chain of steps, by name, under one folder."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, kind, name: str):
        return kind(uri=str(self.root / name))


@pytest.fixture(scope="module")
def steps(tmp_path_factory) -> Steps:
    root = tmp_path_factory.mktemp("wiring")
    make_loans(rows=300).to_parquet(root / "loans.parquet", index=False)
    return Steps(root)


def _plan(steps, name: str, mode: str) -> tuple[str, Artifact]:
    planned = steps(Artifact, name)
    decided = plan.python_func(
        model_name="loans",
        model_store_uri=str(steps.root / "store"),
        training_mode=mode,
        trigger="manual",
        retraining_config={},
        data_config={"source": str(steps.root / "loans.parquet")},
        serving_config={},
        since_watermark="",
        plan=planned,
    )
    return decided, planned


@pytest.fixture(scope="module")
def planned(steps):
    return _plan(steps, "plan.json", "full")[1]


@pytest.fixture(scope="module")
def ingested(steps, planned):
    dataset = steps(Dataset, "dataset")
    ingest.python_func(
        data_config={"source": str(steps.root / "loans.parquet"), "columns": [], "filters": []},
        plan=planned,
        dataset=dataset,
    )
    return dataset


@pytest.fixture(scope="module")
def validated(steps, ingested):
    outputs = {
        "schema": steps(Artifact, "schema.json"),
        "contract": steps(Artifact, "contract.yaml"),
        "anomalies": steps(Artifact, "anomalies.json"),
        "report": steps(Markdown, "validate.md"),
    }
    validate.python_func(
        dataset=ingested,
        target="approved",
        task="classification",
        sensitive_columns=["group"],
        column_types={"region": "categorical"},
        contract_config={"severity": {"unseen_category": "block"}},
        reviewed_contract="",
        **outputs,
    )
    return outputs


@pytest.fixture(scope="module")
def prepared(steps, ingested, validated):
    outputs = {
        "train": steps(Dataset, "train"),
        "test": steps(Dataset, "test"),
        "preprocessor": steps(Model, "preprocessor"),
    }
    prepare.python_func(
        dataset=ingested,
        schema=validated["schema"],
        prepare_config={"numeric": {"scale": "minmax"}},
        split_config=SPLIT,
        **outputs,
    )
    return outputs


@pytest.fixture(scope="module")
def tuned(steps, validated, prepared, planned):
    outputs = {
        "best": steps(Artifact, "best.json"),
        "trials": steps(Dataset, "trials.csv"),
        "metrics": steps(Metrics, "tune-metrics"),
        "report": steps(Markdown, "tune.md"),
    }
    tune.python_func(
        train=prepared["train"],
        schema=validated["schema"],
        preprocessor=prepared["preprocessor"],
        tuning_config=TUNING,
        ray_config={"num_cpus": 1},
        split_config=SPLIT,
        plan=planned,
        **outputs,
    )
    return outputs


@pytest.fixture(scope="module")
def trained(steps, validated, prepared, tuned, planned):
    outputs = {
        "model": steps(Model, "model.joblib"),
        "baseline": steps(Model, "baseline.joblib"),
        "cv": steps(Artifact, "cv.json"),
    }
    train.python_func(
        train=prepared["train"],
        schema=validated["schema"],
        preprocessor=prepared["preprocessor"],
        best=tuned["best"],
        positive_class="yes",
        bias_config=BIAS,
        tuning_config=TUNING,
        evaluation_config={"threshold_rule": "fixed", "threshold": 0.4},
        split_config=SPLIT,
        plan=planned,
        **outputs,
    )
    return outputs


@pytest.fixture(scope="module")
def evaluated(steps, validated, prepared, tuned, trained):
    outputs = {
        "evaluation": steps(Artifact, "evaluation.json"),
        "metrics": steps(Metrics, "evaluate-metrics"),
        "classification_metrics": steps(ClassificationMetrics, "classification"),
        "report": steps(Markdown, "evaluate.md"),
    }
    evaluate.python_func(
        model=trained["model"],
        test=prepared["test"],
        schema=validated["schema"],
        cv=trained["cv"],
        best=tuned["best"],
        positive_class="yes",
        **outputs,
    )
    return outputs


@pytest.fixture(scope="module")
def exported(steps, validated, prepared, trained):
    outputs = {
        "onnx_model": steps(Model, "model.onnx"),
        "parity": steps(Artifact, "parity.json"),
        "report": steps(Markdown, "export.md"),
    }
    export_onnx_model.python_func(
        model=trained["model"], test=prepared["test"], schema=validated["schema"], **outputs
    )
    return outputs


@pytest.fixture(scope="module")
def fair(steps, validated, prepared, trained):
    outputs = {
        "metrics": steps(Metrics, "fairness-metrics"),
        "report": steps(HTML, "fairness.html"),
        "tables": steps(Markdown, "fairness.md"),
        "summary": steps(Artifact, "fairness.json"),
        "report_data": steps(Artifact, "fairness-data.json"),
    }
    passed = fairness.python_func(
        model=trained["model"],
        baseline=trained["baseline"],
        test=prepared["test"],
        schema=validated["schema"],
        sensitive_columns=["group"],
        positive_class="yes",
        bias_config=BIAS,
        split_config=SPLIT,
        **outputs,
    )
    return passed, outputs


def _gate(steps, validated, prepared, trained, evaluated, fair, evaluation_config, name):
    outputs = {
        "decision": steps(Artifact, f"{name}.json"),
        "metrics": steps(Metrics, f"{name}-metrics"),
    }
    blessed = gate.python_func(
        model=trained["model"],
        test=prepared["test"],
        schema=validated["schema"],
        evaluation=evaluated["evaluation"],
        fairness=fair[1]["summary"],
        model_store_uri=str(steps.root / "store"),
        model_name="loans",
        positive_class="yes",
        evaluation_config=evaluation_config,
        alerts_config=NO_ALERTS,
        **outputs,
    )
    return blessed, json.loads(Path(outputs["decision"].path).read_text())


@pytest.fixture(scope="module")
def gated(steps, validated, prepared, trained, evaluated, fair):
    return _gate(
        steps,
        validated,
        prepared,
        trained,
        evaluated,
        fair,
        {"thresholds": {"roc_auc": 0.5}},
        "gate",
    )


@pytest.fixture(scope="module")
def registered(
    steps, ingested, validated, prepared, tuned, evaluated, exported, fair, gated, trained, planned
):
    result = register.python_func(
        model=trained["model"],
        dataset=ingested,
        schema=validated["schema"],
        best=tuned["best"],
        evaluation=evaluated["evaluation"],
        fairness=fair[1]["summary"],
        decision=steps(Artifact, "gate.json"),
        onnx_model=exported["onnx_model"],
        train=prepared["train"],
        test=prepared["test"],
        plan=planned,
        model_store_uri=str(steps.root / "store"),
        model_name="loans",
        positive_class="yes",
        run_config=json.dumps({"model_name": "loans"}),
        run_id="run-1",
    )
    return result


def test_ingest_reads_the_data_sections_source_and_records_it(steps, ingested):
    frame = pd.read_parquet(ingested.path)
    assert len(frame) == 300 and "approved" in frame.columns
    assert ingested.metadata["source_uri"] == str(steps.root / "loans.parquet")
    assert ingested.metadata["rows"] == 300 and ingested.metadata["content_hash"]


def test_validate_writes_the_schema_and_infers_a_contract(validated):
    schema = json.loads(Path(validated["schema"].path).read_text())
    assert schema["target"] == "approved" and schema["classes"] == ["no", "yes"]
    assert {f["name"] for f in schema["features"]} == {"income", "age", "region", "group"}
    assert validated["contract"].metadata["inferred"] is True
    assert json.loads(Path(validated["anomalies"].path).read_text()) == []


def test_validate_takes_the_contract_sections_severity(steps, ingested, validated):
    # A reviewed contract that the data breaks, with unseen categories made blocking: the step
    # ends with one line naming the column (exit 1), as a run would.
    contract = json.loads(
        json.dumps(__import__("yaml").safe_load(Path(validated["contract"].path).read_text()))
    )
    contract["columns"]["region"]["categories"] = ["north"]
    with pytest.raises(SystemExit) as stopped:
        validate.python_func(
            dataset=ingested,
            target="approved",
            task="classification",
            sensitive_columns=[],
            column_types={},
            contract_config={"severity": {"unseen_category": "block"}},
            reviewed_contract=json.dumps(contract),
            schema=steps(Artifact, "schema-2.json"),
            contract=steps(Artifact, "contract-2.yaml"),
            anomalies=steps(Artifact, "anomalies-2.json"),
            report=steps(Markdown, "validate-2.md"),
        )
    assert stopped.value.code == 1
    anomalies = json.loads(Path(steps.root / "anomalies-2.json").read_text())
    assert [(a["kind"], a["column"], a["severity"]) for a in anomalies] == [
        ("unseen_category", "region", "block")
    ]


def test_prepare_splits_by_the_split_section(prepared):
    train_rows = len(pd.read_parquet(prepared["train"].path))
    test_rows = len(pd.read_parquet(prepared["test"].path))
    # split.test_size 0.25 of 300 rows, by the stable hash rule (a quarter in expectation).
    assert train_rows + test_rows == 300 and 55 <= test_rows <= 95
    assert prepared["train"].metadata["split_strategy"] == "stratified"
    assert prepared["test"].metadata["split"]["seed"] == SPLIT["seed"]
    transform = joblib.load(prepared["preprocessor"].path)
    scalers = [type(step).__name__ for step in transform.named_transformers_["numeric"]]
    assert "MinMaxScaler" in scalers  # prepare.numeric.scale reached the transform


def test_bias_takes_the_bias_section(steps, ingested, validated, capsys):
    report = steps(Markdown, "bias.md")
    bias.python_func(
        dataset=ingested,
        schema=validated["schema"],
        sensitive_columns=["group"],
        positive_class="yes",
        bias_config={"min_group_size": 1000},
        report=report,
    )
    assert "group" in Path(report.path).read_text()
    # Every group of 300 rows is under bias.min_group_size 1000, so each is flagged small.
    assert "2 small" in capsys.readouterr().out


def test_a_bad_key_in_a_section_is_one_line_naming_it(steps, ingested, validated, capsys):
    with pytest.raises(SystemExit) as stopped:
        bias.python_func(
            dataset=ingested,
            schema=validated["schema"],
            sensitive_columns=["group"],
            positive_class="yes",
            bias_config={"min_group_sise": 10},
            report=steps(Markdown, "bias-bad.md"),
        )
    assert stopped.value.code == 1
    assert "bias: bias.min_group_sise: unknown key" in capsys.readouterr().err


@pytest.mark.ray
def test_tune_searches_the_tuning_sections_families(tuned):
    best = json.loads(Path(tuned["best"].path).read_text())
    assert best["family"] == "logistic_regression" and best["num_trials"] == 2
    assert len(pd.read_csv(tuned["trials"].path)) == 2


@pytest.mark.ray
def test_train_applies_the_evaluation_sections_threshold(trained):
    model = joblib.load(trained["model"].path)
    assert model.threshold == 0.4
    cv = json.loads(Path(trained["cv"].path).read_text())
    assert cv["threshold"] == {"rule": "fixed", "value": 0.4}
    assert trained["model"].metadata["mitigation"] == "none"


@pytest.mark.ray
def test_evaluate_scores_the_held_out_rows(evaluated, prepared):
    result = json.loads(Path(evaluated["evaluation"].path).read_text())
    assert result["rows"] == len(pd.read_parquet(prepared["test"].path))
    assert 0 <= result["metrics"]["roc_auc"] <= 1


@pytest.mark.ray
def test_fairness_checks_the_bias_sections_thresholds(fair):
    passed, outputs = fair
    summary = json.loads(Path(outputs["summary"].path).read_text())
    assert passed is True and summary["gate"]["passed"] is True
    assert [f["metric"] for f in summary["gate"]["findings"]] == ["demographic_parity_ratio"]
    # The run report renders the fairness section from this data, the page from the same.
    data = json.loads(Path(outputs["report_data"].path).read_text())
    assert "group" in json.dumps(data) and "group" in Path(outputs["report"].path).read_text()


@pytest.mark.ray
def test_gate_takes_the_evaluation_sections_thresholds(
    steps, validated, prepared, trained, evaluated, fair, gated
):
    blessed, decision = gated
    assert blessed is True and decision["champion"] is None
    refused, decision = _gate(
        steps,
        validated,
        prepared,
        trained,
        evaluated,
        fair,
        {"thresholds": {"roc_auc": 0.999}},
        "gate-2",
    )
    assert refused is False and "0.999" in decision["reason"]


@pytest.mark.ray
def test_export_writes_the_tuned_threshold_into_the_graph(exported):
    # train wrapped the model in its 0.4 threshold: the graph decides by it, proven on every
    # held-out row, and says so in its metadata.
    import onnx

    assert exported["onnx_model"].metadata["converted"] is True
    assert exported["onnx_model"].metadata["parity_passed"] is True
    parity = json.loads(Path(exported["parity"].path).read_text())
    assert parity["passed"] and parity["label_mismatches"] == 0
    graph = onnx.load_from_string(Path(exported["onnx_model"].path).read_bytes())
    rule = json.loads({p.key: p.value for p in graph.metadata_props}["decision_threshold"])
    assert rule["threshold"] == 0.4 and rule["labels"] == ["no", "yes"]


@pytest.mark.ray
def test_register_writes_the_next_version_as_the_candidate(steps, prepared, evaluated, registered):
    assert registered.version == "v1"
    registry = ModelRegistry(str(steps.root / "store"), "loans")
    assert registry.aliases() == {"candidate": "v1"}
    metadata = registry.metadata("v1")
    assert metadata["kfp_run_id"] == "run-1" and metadata["config"] == {"model_name": "loans"}
    assert metadata["training"]["mode"] == "full" and metadata["training"]["parent"] is None
    assert metadata["gate"]["blessed"] is True and metadata["onnx"]["converted"] is True
    # The proven graph, and held-out rows for the model server to prove it again on.
    assert metadata["onnx"]["parity_rows"] == min(1000, len(pd.read_parquet(prepared["test"].path)))
    assert {"model.onnx", "parity_rows.parquet"} <= set(metadata["files"])
    # The split record, from the training rows' metadata, for the gate's later re-scoring.
    assert metadata["split"] == prepared["train"].metadata["split"]
    assert metadata["split"]["rule"] == "hash-v1" and metadata["split"]["seed"] == SPLIT["seed"]
    # The training reference: the training split's features, the held-out answers and metrics.
    reference = registry.reference("v1")
    assert metadata["reference"]["stored"] is True
    assert reference["rows"] == {
        "train": len(pd.read_parquet(prepared["train"].path)),
        "test": len(pd.read_parquet(prepared["test"].path)),
    }
    assert reference["positive_class"] == "yes"
    assert set(reference["profile"]["features"]) == {"income", "age", "region", "group"}
    evaluation = json.loads(Path(evaluated["evaluation"].path).read_text())
    assert reference["metrics"]["roc_auc"]["value"] == pytest.approx(
        evaluation["metrics"]["roc_auc"]
    )


@pytest.mark.ray
@pytest.mark.server
def test_deploy_serves_the_version_and_promote_makes_it_champion(steps, prepared, registered):
    predictions = steps(Dataset, "predictions")
    result = deploy.python_func(
        model_uri=registered.model_uri,
        test=prepared["test"],
        serving_config={"smoke_rows": 3},
        deploy_config={"target": "local"},
        predictions=predictions,
    )
    assert result.matches is True and result.rollout == "local"
    assert len(pd.read_parquet(predictions.path)) == 3
    previous = promote.python_func(
        model_store_uri=str(steps.root / "store"),
        model_name="loans",
        version=registered.version,
        run_id="run-1",
        alerts_config=NO_ALERTS,
    )
    assert previous == ""
    assert ModelRegistry(str(steps.root / "store"), "loans").aliases()["champion"] == "v1"


@pytest.mark.ray
@pytest.mark.server
def test_an_incremental_plan_reaches_tune_and_train_which_update_the_champion(
    steps, validated, prepared, registered
):
    registry = ModelRegistry(str(steps.root / "store"), "loans")
    if registry.aliases().get("champion") != "v1":
        registry.promote("v1")
    # The champion was trained on a file, not a lake: nothing to read "since": full, said so.
    decided, planned = _plan(steps, "plan-2.json", "incremental")
    fallback = json.loads(Path(planned.path).read_text())
    assert decided == "full" and "not a lake" in fallback["reason"]
    # An incremental plan as a lake's would be: tune takes the champion's configuration, and
    # train updates the champion (logistic regression: refit on the rows it is given).
    incremental = {
        **fallback,
        "mode": "incremental",
        "parent": "v1",
        "parent_tuning": registry.metadata("v1")["tuning"],
        "parent_threshold": registry.metadata("v1")["threshold"],
        "model_store_uri": str(steps.root / "store"),
        "model_name": "loans",
    }
    Path(planned.path).write_text(json.dumps(incremental))
    best, trials = steps(Artifact, "best-2.json"), steps(Dataset, "trials-2.csv")
    tune.python_func(
        train=prepared["train"],
        schema=validated["schema"],
        preprocessor=prepared["preprocessor"],
        tuning_config={**TUNING, "families": ["random_forest"]},
        ray_config={"num_cpus": 1},
        split_config=SPLIT,
        plan=planned,
        best=best,
        trials=trials,
        metrics=steps(Metrics, "tune-metrics-2"),
        report=steps(Markdown, "tune-2.md"),
    )
    chosen = json.loads(Path(best.path).read_text())
    assert chosen["family"] == "logistic_regression" and chosen["incremental_of"] == "v1"
    assert chosen["params"] == registry.metadata("v1")["tuning"]["params"]
    assert pd.read_csv(trials.path).empty
    model, cv = steps(Model, "model-2.joblib"), steps(Artifact, "cv-2.json")
    train.python_func(
        train=prepared["train"],
        schema=validated["schema"],
        preprocessor=prepared["preprocessor"],
        best=best,
        positive_class="yes",
        bias_config=BIAS,
        tuning_config=TUNING,
        evaluation_config={"threshold_rule": "fixed", "threshold": 0.4},
        split_config=SPLIT,
        plan=planned,
        model=model,
        baseline=steps(Model, "baseline-2.joblib"),
        cv=cv,
    )
    assert model.metadata["update"]["rule"] == "refit_window"
    assert model.metadata["update"]["rows"] == len(pd.read_parquet(prepared["train"].path))
    # The champion's threshold is kept, and there is no CV (the gate judges the update).
    assert joblib.load(model.path).threshold == 0.4
    assert json.loads(Path(cv.path).read_text())["folds"] == 0
