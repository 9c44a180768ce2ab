"""What every benchmark does at the end: record the machine's load around the run, print the
results as JSON and write them, atomically, to the results file named by --output."""

import json
import os

from components.common.io import write_text


def load_average(before: tuple[float, float, float]) -> dict:
    """The 1, 5 and 15-minute load averages before the run (`os.getloadavg()` then) and now: on a
    shared machine they say how much other work ran beside the measurement."""
    return {
        "before": [round(x, 2) for x in before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(results: dict, output: str | None) -> None:
    """Print the results as JSON, and write them to `output` when one is given."""
    text = json.dumps(results, indent=2) + "\n"
    print(text, end="")
    if output:
        write_text(output, text)
