"""The monitoring pipeline's compiled spec: golden comparison, its one never-cached step through
the step runner, its parameters; and the checked-in file itself run under kfp.local."""

import json
from datetime import UTC, datetime, timedelta

import yaml
from kfp import components, local

from components.common.image import COMPONENT_IMAGE
from components.common.settings.sections import SECTIONS
from pipelines.config import load_config
from pipelines.monitor_cli import monitoring_arguments
from pipelines.monitoring_pipeline import COMPILED_PIPELINE, PIPELINE_NAME, compile_pipeline
from tests.components.monitor_fixtures import MODEL, champion, rows, write_log

SECTION_PARAMETERS = ("data", "serving", "evaluation", "monitoring", "alerts")


def test_checked_in_spec_equals_a_fresh_compile(tmp_path):
    fresh = compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert fresh == COMPILED_PIPELINE.read_text(), (
        "pipelines/monitoring_pipeline.yaml is stale: run `make compile` and commit the diff"
    )


def test_the_monitor_runs_through_the_step_runner_never_cached_on_the_project_image():
    from components.common.step_runner import EXTERNAL_STEPS

    spec = yaml.safe_load(COMPILED_PIPELINE.read_text())
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME == "mlpipe-monitoring"
    tasks = spec["root"]["dag"]["tasks"]
    assert list(tasks) == ["monitor"]
    assert tasks["monitor"]["cachingOptions"] == {}
    assert "monitor" in EXTERNAL_STEPS
    [executor] = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == COMPONENT_IMAGE
    command = " ".join(executor["container"]["command"])
    assert "python3 -m components.common.step_runner --wraps kfp.dsl.executor_main" in command
    assert "pip install" not in command
    # The decision is the pipeline's output, for a retraining pipeline's dsl.If.
    outputs = spec["root"]["outputDefinitions"]["parameters"]
    assert outputs == {"Output": {"parameterType": "STRING"}}


def test_each_section_is_one_parameter_with_its_models_defaults():
    parameters = yaml.safe_load(COMPILED_PIPELINE.read_text())["root"]["inputDefinitions"][
        "parameters"
    ]
    top_level = {"model_name", "model_store_uri", "positive_class"}
    assert set(parameters) == top_level | set(SECTION_PARAMETERS)
    for name in SECTION_PARAMETERS:
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
