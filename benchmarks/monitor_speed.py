"""Monitoring speed: a 1,000,000-row prediction-log window against its reference, and a bare
pyarrow scan of the same files.

    .venv/bin/python -m benchmarks.monitor_speed --output benchmarks/results/monitor_speed.json
    .venv/bin/python -m benchmarks.monitor_speed --smoke   # CI: 10 files of 2,000 rows

The window is a prediction log written in the log's own layout and types
(components.common.prediction_log: `model=<name>/date=<day>/part-*.parquet`, FILES files of
ROWS_PER_FILE rows; request_id, row, time, model_version, the 20 synthetic features with numbers
as float64, prediction, probability_0 and probability_1). Alternating, REPEATS times:

- bare: `pyarrow.dataset.dataset(<the model's folder>).to_table()`, the floor of any reading;
- monitored: `read_prediction_log(...)` then `drift.compare(reference, window)`, the work the
  monitor does on a window (every feature and output column profiled and tested).

The reference is `profile_frame` of REFERENCE_ROWS synthetic rows with their predictions and
probabilities, made before the timing. The figure is the ratio of the medians (target <= 3x).
"""

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from benchmarks.output import load_average, write_results
from components.common.drift import compare
from components.common.prediction_log import read_prediction_log
from components.common.profile import profile_frame
from components.ingest.synthetic import (
    FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    feature_schema,
    make_table,
)

MODEL = "bench"
FILES = 10
ROWS_PER_FILE = 100_000
SMOKE_ROWS_PER_FILE = 2_000
REFERENCE_ROWS = 50_000
REPEATS = 5
SMOKE_REPEATS = 2
MAX_RATIO = 3.0
CLASSES = ["0", "1"]
SCHEMA = feature_schema(tuple(CLASSES))


def outputs(table: pa.Table, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in model's probability of class 1 (from the label, with noise) and its labels."""
    rng = np.random.default_rng(seed)
    label = table[TARGET].to_numpy()
    positive = np.clip(0.25 + 0.35 * (label - 0.25) + rng.normal(0, 0.15, len(label)), 0, 1)
    return positive, np.where(positive >= 0.5, "1", "0")


def log_table(number: int, rows: int, start: datetime) -> pa.Table:
    """One file of the prediction log, as the writer types it (numbers float64)."""
    table = make_table(rows, seed=3, number=number)
    positive, predicted = outputs(table, number)
    columns = {
        "request_id": pa.array([f"req-{number}-{i}" for i in range(rows)]),
        "row": pa.array(np.zeros(rows, dtype=np.int64)),
        "time": pa.array(
            np.datetime64(start, "us") + np.arange(rows) * np.timedelta64(10, "ms"),
            pa.timestamp("us", tz="UTC"),
        ),
        "model_version": pa.array(["v1"] * rows),
    }
    for name in FEATURES:
        column = table[name]
        columns[name] = column.cast(pa.float64()) if name in NUMERIC_FEATURES else column
    columns["prediction"] = pa.array(predicted)
    columns["probability_0"] = pa.array(1 - positive)
    columns["probability_1"] = pa.array(positive)
    return pa.table(columns)


def write_lake(root: Path, files: int, rows: int) -> Path:
    """The log's layout: model=<name>/date=<day>/part-*.parquet, a day per two files."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for number in range(files):
        moment = start + timedelta(days=number // 2, hours=number % 2)
        folder = root / f"model={MODEL}" / f"date={moment.date().isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        table = log_table(number, rows, moment.replace(tzinfo=None))
        pq.write_table(table, folder / f"part-{moment:%H%M%S}-{number:04d}.parquet")
    return root


def reference_profile() -> dict:
    table = make_table(REFERENCE_ROWS, seed=1)
    positive, predicted = outputs(table, 0)
    frame = table.select(FEATURES).to_pandas()
    return profile_frame(
        frame,
        SCHEMA,
        predictions=predicted,
        probabilities=np.column_stack([1 - positive, positive]),
    )


def bare_scan(root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    table = ds.dataset(root / f"model={MODEL}", format="parquet", partitioning="hive").to_table()
    return time.perf_counter() - started, table.num_rows


def monitored(root: Path, reference: dict) -> tuple[dict, int, list[str]]:
    started = time.perf_counter()
    window, skipped = read_prediction_log(str(root), MODEL)
    read = time.perf_counter()
    result = compare(reference, window)
    done = time.perf_counter()
    seconds = {"read": read - started, "compare": done - read, "total": done - started}
    return seconds, len(window), result.drifted + skipped


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--smoke", action="store_true", help="10 files of 2,000 rows, 2 repeats")
    parser.add_argument("--repeats", type=int, help=f"timed repeats (default {REPEATS})")
    args = parser.parse_args(argv)
    rows_per_file = SMOKE_ROWS_PER_FILE if args.smoke else ROWS_PER_FILE
    repeats = args.repeats or (SMOKE_REPEATS if args.smoke else REPEATS)
    load_before = os.getloadavg()
    results: dict = {
        "command": " ".join([".venv/bin/python -m benchmarks.monitor_speed", *argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pyarrow": pa.__version__,
            "note": "one process; the files are in the page cache after the first read",
        },
        "settings": {
            "files": FILES,
            "rows_per_file": rows_per_file,
            "rows": FILES * rows_per_file,
            "features": len(FEATURES),
            "reference_rows": REFERENCE_ROWS,
            "repeats": repeats,
            "target_ratio": MAX_RATIO,
        },
    }
    workdir = Path(tempfile.mkdtemp(prefix="mlpipe-monitor-speed-"))
    try:
        root = write_lake(workdir / "log", FILES, rows_per_file)
        reference = reference_profile()
        results["lake_bytes"] = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        # One untimed round of each: imports, the page cache.
        bare_scan(root)
        monitored(root, reference)
        bare_times, runs = [], []
        for _ in range(repeats):
            seconds, bare_rows = bare_scan(root)
            bare_times.append(seconds)
            seconds, monitored_rows, flagged = monitored(root, reference)
            runs.append(seconds)
        expected = FILES * rows_per_file
        if bare_rows != expected or monitored_rows != expected:
            raise RuntimeError(f"read {bare_rows} and {monitored_rows} rows of {expected}")
        bare = statistics.median(bare_times)
        total = statistics.median(run["total"] for run in runs)
        results.update(
            bare={"seconds": round(bare, 3), "all_seconds": [round(s, 3) for s in bare_times]},
            monitored={
                "seconds": round(total, 3),
                "read_seconds": round(statistics.median(run["read"] for run in runs), 3),
                "compare_seconds": round(statistics.median(run["compare"] for run in runs), 3),
                "all_seconds": [round(run["total"], 3) for run in runs],
                "flagged": flagged,
            },
            ratio=round(total / bare, 2),
        )
        results["target"] = {
            "target": f"monitored <= {MAX_RATIO}x a bare pyarrow scan",
            "measured": results["ratio"],
            "met": results["ratio"] <= MAX_RATIO,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_average"] = load_average(load_before)
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
