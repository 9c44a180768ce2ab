"""How long the command line takes to answer: `mlpipe --help` and `mlpipe models list`, each a
fresh process, against the peer in the same run: a bare `python -c pass` in the same virtualenv
(what any Python command costs before it imports anything).

    .venv/bin/python -m benchmarks.cli_startup --output benchmarks/results/cli_startup.json
    .venv/bin/python -m benchmarks.cli_startup --smoke    # CI: 2 repeats

`models list` reads the run config (every key checked, as every command does) and lists a model
store with three registered versions, made for the run in a temporary folder. The target: both
commands under 0.5 s on our machines. The runs of the three commands alternate, so that load on
a shared machine weighs on each alike; each figure is the median.
"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.output import load_average, write_results

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5


def _store_with_versions(folder: Path) -> Path:
    """A run config whose model store holds three versions, with their aliases."""
    from sklearn.dummy import DummyClassifier

    from components.common.registry import ModelRegistry

    config = yaml.safe_load((ROOT / "configs" / "arrests.yaml").read_text(encoding="utf-8"))
    config["model_store"] = str(folder / "models")
    registry = ModelRegistry(config["model_store"], config["model_name"])
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    for index in range(3):
        metrics = {"roc_auc": 0.7 + index / 100}
        gate = {"blessed": index != 1, "reason": "a reason", "checks": []}
        version = registry.register(model, {"metrics": metrics, "gate": gate})
    registry.promote(version.version, "benchmark")
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="2 repeats: checks it runs")
    parser.add_argument("--output", help="the results file (JSON)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    repeats = 2 if args.smoke else args.repeats
    load_before = os.getloadavg()
    python = sys.executable
    mlpipe = str(Path(python).with_name("mlpipe"))
    with tempfile.TemporaryDirectory() as folder:
        config = _store_with_versions(Path(folder))
        commands = {
            "python -c pass": [python, "-c", "pass"],
            "mlpipe --help": [mlpipe, "--help"],
            "mlpipe models list": [mlpipe, "models", "list", "--config", str(config)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                times[name].append(_seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians["python -c pass"]
    results = {
        "command": " ".join(["python -m benchmarks.cli_startup", *map(shlex.quote, argv)]),
        "repeats": repeats,
        "median_s": {name: round(value, 3) for name, value in medians.items()},
        "over_bare_python": {
            name: round(value / floor, 2) for name, value in medians.items() if value != floor
        },
        "target_s": TARGET_S,
        "met": {name: medians[name] < TARGET_S for name in ("mlpipe --help", "mlpipe models list")},
        "load_average": load_average(load_before),
    }
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
