"""Which run `--resume` continues, called directly: a run that does not exist is named with the
runs that do; a run whose process still runs is refused (two processes in one run folder would
write each other's steps)."""

import os

import psutil
import pytest

from components.common.errors import PipelineInputError
from components.common.io import write_json
from pipelines.local_run import ARGUMENTS_FILE, STATE_FILE, find_run_dir


def _run(root, run_id: str, **state):
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    write_json(run_dir / ARGUMENTS_FILE, {"model_name": "m"})
    if state:
        write_json(run_dir / STATE_FILE, state)
    return run_dir


def test_a_run_that_stopped_is_found(tmp_path):
    run_dir = _run(tmp_path, "20261202-101010-aaaaaa", state="interrupted")
    assert find_run_dir(tmp_path, "20261202-101010-aaaaaa") == run_dir.resolve()


@pytest.mark.parametrize("run_id", ["20261202-999999-ffffff", "../runs", ".", ""])
def test_an_unknown_run_is_named_with_the_runs_there_are(tmp_path, run_id):
    _run(tmp_path, "20261202-101010-aaaaaa", state="failed")
    _run(tmp_path, "20261202-111111-bbbbbb", state="finished")
    with pytest.raises(PipelineInputError) as error:
        find_run_dir(tmp_path, run_id)
    assert str(error.value) == (
        f"--resume {run_id}: no such run in {(tmp_path / 'runs').resolve()} (runs that can be "
        "resumed: 20261202-101010-aaaaaa, 20261202-111111-bbbbbb)"
    )


def test_a_run_whose_process_still_runs_is_refused(tmp_path):
    started = psutil.Process().create_time()
    _run(tmp_path, "20261202-101010-aaaaaa", state="running", pid=os.getpid(), pid_started=started)
    with pytest.raises(PipelineInputError, match=r"the run is still running \(process \d+\)"):
        find_run_dir(tmp_path, "20261202-101010-aaaaaa")


def test_a_run_whose_process_died_can_be_resumed(tmp_path):
    # A SIGKILL leaves "running" behind; the process is gone.
    dead = 2**22 + 12345  # above the largest pid_max, 4,194,304: no such process
    run_dir = _run(tmp_path, "20261202-101010-aaaaaa", state="running", pid=dead, pid_started=1.0)
    assert find_run_dir(tmp_path, "20261202-101010-aaaaaa") == run_dir.resolve()


def test_a_run_whose_pid_another_process_took_can_be_resumed(tmp_path):
    started = psutil.Process().create_time() - 60  # this PID, but not the process that ran
    run_dir = _run(
        tmp_path, "20261202-101010-aaaaaa", state="running", pid=os.getpid(), pid_started=started
    )
    assert find_run_dir(tmp_path, "20261202-101010-aaaaaa") == run_dir.resolve()
