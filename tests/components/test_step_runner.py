"""The step runner, called as Kubeflow calls it (its command-line arguments, an executor input),
on small components: it marks outputs, reuses a finished step by content, refuses an input that
has no marker or has changed, removes what a failed step wrote, and names the step in one line."""

import json
import textwrap
from pathlib import Path

import pytest

from components.common import step_runner
from components.common.step import ERROR_FILE_ENV
from components.common.step_cache import CONTENT_HASH, content_hash

COMPONENTS = textwrap.dedent(
    """
    from kfp.dsl import *

    def repeat(data: Input[Dataset], times: int, counter: str, out: Output[Dataset]) -> int:
        import pathlib
        with open(counter, "a") as handle:  # one character per execution of the function
            handle.write("x")
        text = pathlib.Path(data.path).read_text()
        pathlib.Path(out.path).write_text(text * times)
        out.metadata["times"] = times
        return len(text) * times

    def promote(model_name: str, run_id: str, counter: str) -> str:
        with open(counter, "a") as handle:
            handle.write("x")
        return f"{model_name} by {run_id}"

    def boom(data: Input[Dataset], out: Output[Dataset]):
        import pathlib
        pathlib.Path(out.path).write_text("half of an output")
        raise ValueError("something no user input explains")
    """
)


class Steps:
    """Runs the components above through step_runner.main, as kfp.local would."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.module = tmp_path / "ephemeral_component.py"
        self.module.write_text(COMPONENTS)
        self.counter = tmp_path / "counter"
        self.counter.touch()
        self.executions = 0

    def dataset(self, name: str, text: str, marked: bool = True) -> dict:
        path = self.tmp / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        metadata = {CONTENT_HASH: content_hash(path)} if marked else {}
        return {"name": name, "uri": str(path), "metadata": metadata}

    def run(self, function: str, parameters: dict, inputs: dict, outputs: list[str], returns=()):
        self.executions += 1
        task = self.tmp / "runs" / str(self.executions) / function
        executor_input = {
            "inputs": {
                "parameterValues": parameters,
                "artifacts": {
                    name: {"artifacts": [{**a, "type": {"schemaTitle": "system.Dataset"}}]}
                    for name, a in inputs.items()
                },
            },
            "outputs": {
                "artifacts": {
                    name: {
                        "artifacts": [
                            {
                                "name": name,
                                "uri": str(task / name),
                                "type": {"schemaTitle": "system.Dataset"},
                            }
                        ]
                    }
                    for name in outputs
                },
                "parameters": {name: {"outputFile": str(task / name)} for name in returns},
                "outputFile": str(task / "executor_output.json"),
            },
        }
        step_runner.main(
            [
                "--wraps",
                "kfp.dsl.executor_main",
                "--component_module_path",
                str(self.module),
                "--function_to_execute",
                function,
                "--executor_input",
                json.dumps(executor_input),
            ]
        )
        return json.loads((task / "executor_output.json").read_text()), task

    def ran(self) -> int:
        return len(self.counter.read_text())


@pytest.fixture
def steps(tmp_path, monkeypatch):
    monkeypatch.setenv(step_runner.STEP_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(step_runner.RUN_STEPS_ENV, str(tmp_path / "run-steps"))
    monkeypatch.setenv(step_runner.RUN_ID_ENV, "run-1")
    monkeypatch.setenv(ERROR_FILE_ENV, str(tmp_path / "error.txt"))
    return Steps(tmp_path)


def _repeat(steps: Steps, text: str = "ab", times: int = 3, **input_options):
    return steps.run(
        "repeat",
        {"times": times, "counter": str(steps.counter)},
        {"data": steps.dataset("data", text, **input_options)},
        ["out"],
        returns=["Output"],
    )


def test_an_output_is_marked_with_its_content_hash(steps):
    output, task = _repeat(steps)
    out = output["artifacts"]["out"]["artifacts"][0]
    assert (task / "out").read_text() == "ababab"
    assert out["metadata"] == {"times": 3, CONTENT_HASH: content_hash(task / "out")}
    assert output["parameterValues"] == {"Output": 6}


def test_the_same_inputs_are_restored_from_the_cache_without_running(steps, monkeypatch):
    first, _ = _repeat(steps)
    monkeypatch.setenv(step_runner.RUN_STEPS_ENV, str(steps.tmp / "another-run"))
    second, task = _repeat(steps)
    assert steps.ran() == 1
    assert (task / "out").read_text() == "ababab"
    assert second["parameterValues"] == first["parameterValues"]
    assert (
        second["artifacts"]["out"]["artifacts"][0]["metadata"]
        == (first["artifacts"]["out"]["artifacts"][0]["metadata"])
    )
    record = json.loads((steps.tmp / "another-run" / "record" / "repeat.json").read_text())
    assert record["origin"] == "cache"


@pytest.mark.parametrize("change", [{"text": "abc"}, {"times": 4}])
def test_new_input_data_or_a_new_parameter_runs_the_step(steps, change):
    _repeat(steps)
    _, task = _repeat(steps, **change)
    assert steps.ran() == 2
    assert (task / "out").read_text() == change.get("text", "ab") * change.get("times", 3)


def test_the_key_is_the_inputs_content_not_their_location(steps):
    _repeat(steps)
    moved = steps.dataset("elsewhere", "ab")  # the same bytes under another name and URI
    steps.run(
        "repeat",
        {"times": 3, "counter": str(steps.counter)},
        {"data": moved},
        ["out"],
        returns=["Output"],
    )
    assert steps.ran() == 1


def test_an_input_without_a_marker_is_refused_in_one_line(steps):
    with pytest.raises(SystemExit) as stopped:
        _repeat(steps, marked=False)
    assert stopped.value.code == 1
    assert steps.ran() == 0
    error = (steps.tmp / "error.txt").read_text().strip()
    assert error.startswith("repeat: input 'data' (") and "no completion marker" in error


def test_a_step_that_reads_or_changes_the_world_is_never_taken_from_the_cache(steps, monkeypatch):
    parameters = {"model_name": "m", "run_id": "kfp-1", "counter": str(steps.counter)}
    first, _ = steps.run("promote", parameters, {}, [], returns=["Output"])
    monkeypatch.setenv(step_runner.RUN_STEPS_ENV, str(steps.tmp / "another-run"))
    monkeypatch.setenv(step_runner.RUN_ID_ENV, "run-2")
    second, _ = steps.run("promote", parameters, {}, [], returns=["Output"])
    assert steps.ran() == 2
    # Locally the run's id is mlpipe's, which a resumed run keeps, not kfp.local's.
    assert first["parameterValues"] == {"Output": "m by run-1"}
    assert second["parameterValues"] == {"Output": "m by run-2"}


def test_a_resumed_run_takes_its_own_finished_steps_even_those_that_change_the_world(
    steps, monkeypatch
):
    parameters = {"model_name": "m", "run_id": "kfp-1", "counter": str(steps.counter)}
    steps.run("promote", parameters, {}, [], returns=["Output"])
    monkeypatch.delenv(step_runner.STEP_CACHE_ENV)
    again, _ = steps.run("promote", {**parameters, "run_id": "kfp-2"}, {}, [], returns=["Output"])
    assert steps.ran() == 1
    assert again["parameterValues"] == {"Output": "m by run-1"}


def test_a_flipped_byte_in_a_finished_output_is_found_and_the_step_runs_again(steps, monkeypatch):
    _, first_task = _repeat(steps)
    # In place, as a disk error would: the cache shares the file (a hard link) and must see it.
    with open(first_task / "out", "r+b") as handle:
        handle.write(b"A")
    monkeypatch.setenv(step_runner.RUN_STEPS_ENV, str(steps.tmp / "another-run"))
    _, task = _repeat(steps)
    assert steps.ran() == 2
    assert (task / "out").read_text() == "ababab"


def test_a_step_that_raises_leaves_no_output_and_one_line_naming_it(steps, capsys):
    with pytest.raises(SystemExit) as stopped:
        steps.run("boom", {}, {"data": steps.dataset("data", "ab")}, ["out"])
    assert stopped.value.code == 1
    (task,) = (steps.tmp / "runs").glob("*/boom")
    assert not (task / "out").exists()
    error = (steps.tmp / "error.txt").read_text().strip()
    assert error == (
        "boom: ValueError: something no user input explains (traceback in the run's log)"
    )
    assert "Traceback" in capsys.readouterr().err  # the log keeps it for whoever debugs


def test_use_step_runner_replaces_the_executor_in_a_components_command():
    from kfp import dsl

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def noop() -> str:
        return ""

    before = " ".join(noop.component_spec.implementation.container.command)
    step_runner.use_step_runner(noop)
    after = " ".join(noop.component_spec.implementation.container.command)
    assert "python3 -m kfp.dsl.executor_main" in before
    assert "python3 -m components.common.step_runner --wraps kfp.dsl.executor_main" in after
    with pytest.raises(RuntimeError, match="no 'python3 -m kfp.dsl.executor_main'"):
        step_runner.use_step_runner(noop)


def test_a_step_that_stops_on_a_user_error_keeps_what_explains_it_unmarked(steps):
    steps.module.write_text(
        steps.module.read_text()
        + textwrap.dedent(
            """
            def check(data: Input[Dataset], anomalies: Output[Dataset]):
                import pathlib
                from components.common.errors import PipelineInputError
                from components.common.step import user_errors
                pathlib.Path(anomalies.path).write_text('[{"kind": "out_of_range"}]')
                with user_errors("check"):
                    raise PipelineInputError("column 'year': out of range")
            """
        )
    )
    with pytest.raises(SystemExit) as stopped:
        steps.run("check", {}, {"data": steps.dataset("data", "ab")}, ["anomalies"])
    assert stopped.value.code == 1
    (task,) = (steps.tmp / "runs").glob("*/check")
    assert json.loads((task / "anomalies").read_text()) == [{"kind": "out_of_range"}]
    assert not (task / "executor_output.json").exists()  # no marker: never a finished output
    assert (steps.tmp / "error.txt").read_text().strip() == "check: column 'year': out of range"
