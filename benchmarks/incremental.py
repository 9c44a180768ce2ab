"""Incremental update against full retraining, after one new partition of the synthetic lake.

    .venv/bin/python -m benchmarks.incremental --output benchmarks/results/incremental.json
    .venv/bin/python -m benchmarks.incremental --smoke   # CI: 4 partitions of 1,000 rows

The lake holds PARTITIONS monthly partitions (`month=2026-MM/part-0.parquet`, ROWS_PER_PARTITION
synthetic rows each, `components.ingest.synthetic.make_table`). A champion of each family is
fitted, untimed, on all partitions but the last; the last is the new data. Then, alternating,
REPEATS times per family:

- full: read the whole lake (pyarrow, to pandas), fit the preprocessor (prepare's
  fit_preprocessor) and the champion's estimator with the champion's parameters on every row. No
  search and no cross-validation: the cheapest full retraining, so the ratio is conservative.
- incremental: read the new partition only, then `update_model` with the family's rule:
  sgd_linear's partial_fit (retraining.epochs' default passes, as the train step makes), random_forest's warm_start (new trees in proportion to the new rows,
  at least 10), and hist_gradient_boosting's refit of a window of one partition.

The figure is the ratio of the medians per family (target <= 0.3x).
"""

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sklearn
from threadpoolctl import threadpool_limits

from benchmarks.output import load_average, write_results
from components.common.incremental import update_model
from components.common.settings.sections import RetrainingConfig
from components.common.update_rules import update_rule
from components.ingest.synthetic import TARGET, make_table
from components.prepare.logic import fit_preprocessor
from components.train.logic import fit_model
from components.validate.logic import validate_table

PARTITIONS = 12
ROWS_PER_PARTITION = 25_000
SMOKE_PARTITIONS = 4
SMOKE_ROWS_PER_PARTITION = 1_000
REPEATS = 3
SMOKE_REPEATS = 1
MAX_RATIO = 0.3
SEED = 42
PARTITION_COLUMN = "month"
# The champion's parameters per family: mid-range values of each default search space.
FAMILIES = {
    "sgd_linear": {"alpha": 1e-4, "penalty": "l2"},
    "random_forest": {"n_estimators": 100, "max_depth": 12, "min_samples_leaf": 5},
    "hist_gradient_boosting": {"max_iter": 150, "max_leaf_nodes": 31, "learning_rate": 0.1},
}
# Smoke mode: the same rules, small models, so that CI pays seconds.
SMOKE_FAMILIES = {
    "sgd_linear": FAMILIES["sgd_linear"],
    "random_forest": {"n_estimators": 10, "max_depth": 4},
    "hist_gradient_boosting": {"max_iter": 10, "max_leaf_nodes": 8},
}


def write_lake(root: Path, partitions: int, rows: int) -> list[Path]:
    """One Parquet file per month; each month's rows are another chunk of the same generator."""
    files = []
    for number in range(partitions):
        folder = root / f"{PARTITION_COLUMN}=2026-{number + 1:02d}"
        folder.mkdir(parents=True)
        files.append(folder / "part-0.parquet")
        pq.write_table(make_table(rows, seed=SEED, number=number), files[-1])
    return files


def read(paths: list[Path]) -> pd.DataFrame:
    """The rows of these partition files, as a pipeline step reads a lake into pandas."""
    return pa.concat_tables(pq.read_table(path) for path in paths).to_pandas()


def full_retraining(files: list[Path], schema: dict, family: str, params: dict):
    started = time.perf_counter()
    train = read(files)
    preprocessor = fit_preprocessor(train, schema)
    fit_model(train, schema, preprocessor, {"family": family, "params": params}, SEED)
    return time.perf_counter() - started, len(train)


def incremental_update(new_file: Path, champion, schema: dict, family: str, params: dict):
    started = time.perf_counter()
    new = read([new_file])
    # As the train step calls it: partial_fit makes the run config's default passes.
    epochs = RetrainingConfig().epochs
    _, details = update_model(champion, new, schema, family, params, SEED, epochs=epochs)
    return time.perf_counter() - started, details


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--smoke", action="store_true", help="4 partitions of 1,000 rows, 1 repeat")
    parser.add_argument("--repeats", type=int, help=f"timed repeats (default {REPEATS})")
    args = parser.parse_args(argv)
    partitions = SMOKE_PARTITIONS if args.smoke else PARTITIONS
    rows = SMOKE_ROWS_PER_PARTITION if args.smoke else ROWS_PER_PARTITION
    repeats = args.repeats or (SMOKE_REPEATS if args.smoke else REPEATS)
    load_before = os.getloadavg()
    results: dict = {
        "command": " ".join([".venv/bin/python -m benchmarks.incremental", *argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "note": (
                "one process, one native thread (threadpoolctl) on both sides; the files are "
                "in the page cache after the first read"
            ),
        },
        "settings": {
            "partitions": partitions,
            "rows_per_partition": rows,
            "rows": partitions * rows,
            "repeats": repeats,
            "seed": SEED,
            "target_ratio": MAX_RATIO,
        },
        "families": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="mlpipe-incremental-"))
    # One native thread on both sides: boosting's OpenMP threads stall on a loaded shared machine,
    # and the ratio compares the same work, not the same parallelism.
    limits = threadpool_limits(1)
    try:
        files = write_lake(workdir / "lake", partitions, rows)
        old, new_file = files[:-1], files[-1]
        sizes = {
            "full": sum(f.stat().st_size for f in files),
            "incremental": new_file.stat().st_size,
        }
        old_rows = read(old)
        schema = validate_table(old_rows, TARGET, "classification", [], {})
        preprocessor = fit_preprocessor(old_rows, schema)
        for family, params in (SMOKE_FAMILIES if args.smoke else FAMILIES).items():
            champion = fit_model(
                old_rows, schema, preprocessor, {"family": family, "params": params}, SEED
            )
            full_times, incremental_times = [], []
            for _ in range(repeats):
                seconds, full_rows = full_retraining(files, schema, family, params)
                full_times.append(seconds)
                seconds, details = incremental_update(new_file, champion, schema, family, params)
                incremental_times.append(seconds)
            full = statistics.median(full_times)
            incremental = statistics.median(incremental_times)
            ratio = incremental / full
            results["families"][family] = {
                "rule": update_rule(family),
                "params": params,
                "full": {
                    "seconds": round(full, 3),
                    "all_seconds": [round(s, 3) for s in full_times],
                    "rows": full_rows,
                    "bytes_read": sizes["full"],
                },
                "incremental": {
                    "seconds": round(incremental, 3),
                    "all_seconds": [round(s, 3) for s in incremental_times],
                    "rows": details["rows"],
                    "bytes_read": sizes["incremental"],
                    "details": details,
                },
                "ratio": round(ratio, 3),
                "met": ratio <= MAX_RATIO,
            }
        ratios = {family: entry["ratio"] for family, entry in results["families"].items()}
        results["target"] = {
            "target": f"incremental <= {MAX_RATIO}x full retraining, per family",
            "measured": ratios,
            "met": all(entry["met"] for entry in results["families"].values()),
        }
    finally:
        limits.restore_original_limits()
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_average"] = load_average(load_before)
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
