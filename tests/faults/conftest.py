"""The fault tests' fixture: `mlpipe run`s that are stopped by PID when the test ends."""

from pathlib import Path

import pytest

from tests.mlpipe_runs import MlpipeRun


@pytest.fixture
def start_run():
    """Start `mlpipe run`s; each is stopped by PID when the test ends, whatever happened."""
    started: list[MlpipeRun] = []

    def start(cwd: Path, *args: str, **options) -> MlpipeRun:
        run = MlpipeRun(cwd, *args, **options)
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()
