"""The monitoring pipeline's compiled spec: golden comparison, its never-cached monitor through
the step runner, the training pipeline nested behind dsl.If(retrain), its parameters; and the
checked-in file itself run under kfp.local: a `warn` that retrains nothing, and a `retrain` that
runs the nested pipeline's plan, which finds nothing new to train on."""

import json
from datetime import UTC, datetime, timedelta

import yaml
from kfp import components, local

from components.common.image import COMPONENT_IMAGE
from components.common.registry import ModelRegistry
from components.common.settings.sections import SECTIONS
from pipelines.config import load_config
from pipelines.kfp_resources import read_spec
from pipelines.monitor_cli import monitoring_arguments
from pipelines.monitoring_pipeline import COMPILED_PIPELINE, PIPELINE_NAME, compile_pipeline
from tests.components.monitor_fixtures import MODEL, champion, rows, write_log

SECTION_PARAMETERS = ("data", "serving", "evaluation", "monitoring", "alerts", "retraining")
# The training pipeline's sections, for the nested retraining.
TRAINING_SECTIONS = ("contract", "prepare", "split", "tuning", "ray", "bias", "deploy")


def test_checked_in_spec_equals_a_fresh_compile(tmp_path):
    fresh = compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert fresh == COMPILED_PIPELINE.read_text(), (
        "pipelines/monitoring_pipeline.yaml is stale: run `make compile` and commit the diff"
    )


def test_the_monitor_runs_through_the_step_runner_never_cached_on_the_project_image():
    from components.common.step_runner import EXTERNAL_STEPS

    spec = read_spec(COMPILED_PIPELINE)[0]
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME == "mlpipe-monitoring"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"monitor", "condition-1"}
    assert tasks["monitor"]["cachingOptions"] == {}
    assert "monitor" in EXTERNAL_STEPS
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {COMPONENT_IMAGE}
    executor = spec["deploymentSpec"]["executors"]["exec-monitor"]
    command = " ".join(executor["container"]["command"])
    assert "python3 -m components.common.step_runner --wraps kfp.dsl.executor_main" in command
    assert "pip install" not in command
    # The decision is the pipeline's output.
    outputs = spec["root"]["outputDefinitions"]["parameters"]
    assert outputs == {"Output": {"parameterType": "STRING"}}


def test_retrain_runs_the_training_pipeline_nested_with_the_mode_the_monitor_chose():
    spec = read_spec(COMPILED_PIPELINE)[0]
    condition = spec["root"]["dag"]["tasks"]["condition-1"]
    assert condition["dependentTasks"] == ["monitor"]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--monitor-Output'] == 'retrain'"
    )
    inside = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inside) == {"retraining-mode", "mlpipe-training"}
    assert inside["retraining-mode"]["cachingOptions"] == {}
    training = inside["mlpipe-training"]["inputs"]["parameters"]
    assert training["training_mode"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "retraining-mode"}
    }
    assert training["trigger"] == {"runtimeValue": {"constant": "monitor"}}
    # The whole training pipeline, its own exit handler and plan included.
    assert (
        "comp-exit-handler-1" in spec["components"]
        and "exec-plan" in spec["deploymentSpec"]["executors"]
    )


def test_each_section_is_one_parameter_with_its_models_defaults():
    parameters = read_spec(COMPILED_PIPELINE)[0]["root"]["inputDefinitions"]["parameters"]
    top_level = {"model_name", "model_store_uri", "positive_class", "target", "task"}
    top_level |= {"sensitive_columns", "column_types", "reviewed_contract", "run_config"}
    assert set(parameters) == top_level | set(SECTION_PARAMETERS) | set(TRAINING_SECTIONS)
    for name in SECTION_PARAMETERS + TRAINING_SECTIONS:
        model = SECTIONS[name]
        assert parameters[name]["parameterType"] == "STRUCT"
        assert model.model_validate(parameters[name]["defaultValue"]) == model()


def test_the_compiled_yaml_runs_under_kfp_local(tmp_path):
    root = tmp_path / "out"
    champion(root / "models")
    start = datetime.now(UTC) - timedelta(hours=1)
    write_log(root / "predictions", rows(800, seed=2, shift_x2=0.8), start)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "model_name": MODEL,
                "data": {"source": str(tmp_path / "lake")},
                "target": "y",
                "positive_class": "yes",
                "output_root": str(root),
                "monitoring": {"metric": "accuracy"},
            }
        )
    )
    arguments = monitoring_arguments(load_config(config_file))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    pipeline = components.load_component_from_file(str(COMPILED_PIPELINE))

    outputs = pipeline(**arguments).outputs

    assert outputs == {"Output": "warn"}
    (result,) = (tmp_path / "root").glob("*/monitor/result")
    written = json.loads(result.read_text())
    assert written["decision"] == "warn" and written["drifted"] == ["x2"]
    (page,) = (tmp_path / "root").glob("*/monitor/report")
    assert "<p class='verdict unknown warn' id='decision-value'>warn</p>" in page.read_text()
    (executor_output,) = (tmp_path / "root").glob("*/monitor/executor_output.json")
    [metrics] = json.loads(executor_output.read_text())["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["rows"] == 800 and metrics["metadata"]["drifted_features"] == 1
    assert 0 < metrics["metadata"]["accuracy"] < 1
    # The state under <output_root>/monitoring: this run's folder and the moved watermark.
    state = root / "monitoring" / MODEL
    assert json.loads((state / "watermark.json").read_text())["last_record_time"]
    assert len(list((state / "runs").iterdir())) == 1


def test_a_retrain_decision_runs_the_nested_training_which_plans_and_finds_nothing_new(tmp_path):
    # The champion was trained on the whole lake, and the log's rows have no labels: the nested
    # training pipeline's plan says "skip", so nothing is trained or registered; the wiring from
    # the monitor's decision through the mode step into the nested pipeline is what runs.
    lake = tmp_path / "lake" / "month=01"
    lake.mkdir(parents=True)
    rows(50, seed=1)[["x1", "x2", "y"]].to_parquet(lake / "part-0.parquet", index=False)
    from fsspec.implementations.local import LocalFileSystem

    from components.common.lake_files import fingerprints

    watermark = {"files": fingerprints(LocalFileSystem(), str(tmp_path / "lake"))}
    root = tmp_path / "out"
    champion(root / "models", data_watermark=watermark)
    start = datetime.now(UTC) - timedelta(hours=1)
    write_log(root / "predictions", rows(800, seed=2, shift=1.5, shift_x2=1.5), start)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "model_name": MODEL,
                "data": {"source": str(tmp_path / "lake")},
                "target": "y",
                "positive_class": "yes",
                "output_root": str(root),
                "monitoring": {"metric": "accuracy", "retrain": {"drifted_features": 1}},
                "retraining": {"mode": "incremental"},
            }
        )
    )
    arguments = monitoring_arguments(load_config(config_file))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    pipeline = components.load_component_from_file(str(COMPILED_PIPELINE))

    outputs = pipeline(**arguments).outputs

    assert outputs == {"Output": "retrain"}
    (mode,) = (tmp_path / "root").glob("*/retraining-mode/executor_output.json")
    assert json.loads(mode.read_text())["parameterValues"]["Output"] == "incremental"
    (plan,) = (tmp_path / "root").glob("*/plan/plan")
    planned = json.loads(plan.read_text())
    assert planned["mode"] == "skip" and planned["trigger"] == "monitor"
    assert planned["requested"] == "incremental" and planned["parent"] == "v1"
    assert not list((tmp_path / "root").glob("*/ingest")) and not list(
        (tmp_path / "root").glob("*/register")
    )
    assert ModelRegistry(str(root / "models"), MODEL).versions() == ["v1"]
