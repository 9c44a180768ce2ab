"""What every KFP component body shares: turning a user error into one line and an exit code."""

import contextlib
import os
import sys

from components.common.errors import PipelineInputError

# The local runner sets this so that it can show the failing step's message as its last line.
ERROR_FILE_ENV = "MLPIPE_ERROR_FILE"
# Marks a step's one-line summary in its log, so a console can show just those lines.
SUMMARY_MARK = "[mlpipe] "


def step_summary(step: str, message: str) -> None:
    """Print the step's one-line summary (what it read, decided or wrote)."""
    print(f"{SUMMARY_MARK}{step}: {message}", flush=True)


def report_step_error(step: str, message: str) -> None:
    """Print the one-line error and hand it to the local runner, if one is listening."""
    line = f"{step}: {message}"
    print(f"{SUMMARY_MARK}ERROR {line}", file=sys.stderr, flush=True)
    error_file = os.environ.get(ERROR_FILE_ENV)
    if error_file:
        try:
            with open(error_file, "w", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError:  # a full disk: the line above still reaches the runner's console
            pass


@contextlib.contextmanager
def user_errors(step: str):
    """Inside a component body: a PipelineInputError ends the step with one line, exit code 1."""
    try:
        yield
    except PipelineInputError as error:
        report_step_error(step, str(error))
        raise SystemExit(1) from None
