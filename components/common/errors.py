"""Errors that are the user's to fix: they are reported as one line, never as a traceback."""


class PipelineInputError(Exception):
    """Bad input: a config key, a data file, a column or a request field.

    The message must name the thing that is wrong (file, column, key or field)
    and say what was expected, in one line.
    """


class StepFailed(Exception):
    """A pipeline step failed; the message is that step's one-line error."""

    run_id = ""  # the local run that failed, which `mlpipe run --resume` continues
