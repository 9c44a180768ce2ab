"""Ingest + validate + prepare at 1e5, 1e6 and 1e7 rows, against a bare pyarrow.dataset scan.

    .venv/bin/python -m benchmarks.ingest_scale --data-dir /var/tmp/mlpipe-scale \\
        --output benchmarks/results/ingest_scale.json
    .venv/bin/python -m benchmarks.ingest_scale --smoke          # CI: two tiny sizes

For each size, the synthetic lake (components.ingest.synthetic: 21 columns, Hive-partitioned by
region) is generated once into --data-dir and reused by later runs (not timed). Then, each in a
fresh Python process so that peak memory is the measurement's own:

- bare: `pyarrow.dataset.dataset(lake, partitioning="hive").to_table(columns=...)`, the physical
  limit of reading those files;
- ours: the stage functions the components call, in order: ingest (`resolve_source`,
  `read_source`, `content_hash`), validate (`validate_table`, then `check_contract` against a
  contract inferred from the same data, as a run with a reviewed contract does), prepare
  (`split_table` and `fit_preprocessor`, what the prepare step does). Two more phases are timed
  on their own and left out of the total: the contract's inference (a run does either inference
  or checking), and the fitted transform applied to the training rows (`transform_train`: the
  dense float64 matrix that tune and train build next, in their own steps). `peak_rss_mb` is the
  peak of the counted phases; `peak_rss_mb_with_transform` the process's own, which includes it.

Both read the same columns: every column but `postcode` by default. `postcode` (1,000 values) is
left out because the model's one-hot encoding makes a dense float64 matrix, which for 1,000
categories is 8 GB per million rows; --all-columns keeps it. Import time is not counted; artifact
files between steps are not written (kfp.local and a cluster add that on top).

Each measurement runs --repeats times (default 5), bare and ours alternating, each time in a fresh
process, after one untimed scan that puts the files in the page cache: both start from the same
state (warm files, a new process's memory), and the run with the median time counts, with every
repeat's time in `all_seconds` and the highest peak of the repeats. Five, not three: on this VM
the first process to touch several GB of memory after a pause pays for it (about 2 s more at 10
million rows), and with three repeats the median was then the slower of the other two. (Before
fresh processes, the scan was repeated three times inside one process and the median taken, so
the scan that counted ran in a process that had read the files before, and ours ran once in a
process that had not.)

Peak memory is each process's own maximum resident set (getrusage), and per phase the maximum
sampled every 50 ms. A watchdog kills a measurement whose memory passes --memory-limit-gb (so
that a run cannot push a shared machine out of memory) and records it as failed, with the phases
it finished. `ingest_validate` is the part before prepare, reported on its own (with its ratio to
the scan and its linearity) because it finishes even where prepare does not.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.output import load_average, write_results

SIZES = (100_000, 1_000_000, 10_000_000)
SMOKE_SIZES = (2_000, 6_000)
SEED = 0
PARTITIONS = 8
TEST_SIZE = 0.2
EXCLUDED = ("postcode",)
REPEATS = 5
# Timed, but not part of ingest + validate + prepare (see the docstring).
UNCOUNTED = ("validate.infer_contract", "training.transform_train")
TARGETS = {"ours_over_bare_at_most": 3.0, "peak_rss_mb_at_most": 8192}


def lake_for(rows: int, data_dir: Path, partitions: int) -> tuple[Path, float | None]:
    """The lake of `rows` rows, generated unless an earlier run left it; and how long that took."""
    from components.ingest.synthetic import generate

    lake = data_dir / f"synthetic-rows={rows}-seed={SEED}-partitions={partitions}"
    if lake.exists():
        return lake, None
    started = time.perf_counter()
    generate(rows, lake, seed=SEED, partitions=partitions)
    return lake, round(time.perf_counter() - started, 2)


# --- the measured work (runs in a child process) -------------------------------------------------


class _Sampler:
    """The process's resident memory, sampled in a thread: the peak since the last `mark`."""

    def __init__(self):
        import psutil

        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def mark(self) -> float:
        peak = max(self._peak, self._process.memory_info().rss)
        self._peak = 0
        return round(peak / 2**20, 1)

    def stop(self):
        self._stop.set()
        self._thread.join()


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def measure_bare(lake: str, columns: list[str]) -> dict:
    """One scan, in this fresh process, as ours runs in one (see the driver's repeats)."""
    import pyarrow.dataset as ds

    started = time.perf_counter()
    table = ds.dataset(lake, format="parquet", partitioning="hive").to_table(columns=columns)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": table.num_rows, "peak_rss_mb": _peak_rss_mb()}


def measure_ours(
    lake: str, columns: list[str], target: str, sensitive: list[str], progress=None
) -> dict:
    from components.common.lake_source import resolve_source
    from components.common.schema import as_model_input
    from components.ingest.logic import content_hash, read_source
    from components.prepare.logic import fit_preprocessor, split_table
    from components.validate.contract import blocking, check_contract, infer_contract
    from components.validate.logic import validate_table

    phases: dict[str, dict] = {}
    sampler = _Sampler()
    clock = [time.perf_counter()]

    def phase(name: str):
        now = time.perf_counter()
        phases[name] = {"seconds": round(now - clock[0], 3), "peak_rss_mb": sampler.mark()}
        clock[0] = now
        if progress:  # what was done so far, in case the watchdog stops the rest
            progress({"phases": phases})

    try:
        frame, _ = read_source(resolve_source(lake), columns=columns)
        phase("ingest.read_source")
        content_hash(frame)
        phase("ingest.content_hash")
        schema = validate_table(frame, target, "classification", sensitive, {})
        phase("validate.validate_table")
        contract = infer_contract(frame)
        phase("validate.infer_contract")
        anomalies = check_contract(frame, contract)
        phase("validate.check_contract")
        train, test = split_table(frame, schema, TEST_SIZE, SEED)
        del frame
        phase("prepare.split_table")
        preprocessor = fit_preprocessor(train, schema)
        phase("prepare.fit_preprocessor")
        # The process's peak so far (exact, from the kernel): that of the counted phases.
        counted_peak = _peak_rss_mb()
        matrix = preprocessor.transform(as_model_input(train, schema))
        phase("training.transform_train")
    finally:
        sampler.stop()
    # Inference and checking are the two ways a run validates: count the one a reviewed
    # contract takes (checking) in the total, report inference on its own. The transform is
    # the next steps' work.
    counted = {n: p for n, p in phases.items() if n not in UNCOUNTED}
    stages = {
        stage: round(sum(p["seconds"] for n, p in counted.items() if n.startswith(stage + ".")), 3)
        for stage in ("ingest", "validate", "prepare")
    }
    return {
        "seconds": sum(stages.values()),
        "stage_seconds": stages,
        "rows": len(train) + len(test),
        "peak_rss_mb": counted_peak,
        "peak_rss_mb_with_transform": _peak_rss_mb(),
        "phases": phases,
        "blocking_anomalies": len(blocking(anomalies)),
        "features_out": int(matrix.shape[1]),
    }


def child_main(args) -> int:
    columns = args.columns.split(",")
    if args.child == "bare":
        result = measure_bare(args.lake, columns)
    else:
        result = measure_ours(
            args.lake,
            columns,
            args.target,
            args.sensitive.split(","),
            progress=lambda partial: Path(args.result).write_text(json.dumps(partial)),
        )
    Path(args.result).write_text(json.dumps(result))
    return 0


# --- the driver ----------------------------------------------------------------------------------


def run_child(kind: str, lake: Path, columns: list[str], limit_gb: float, timeout: float) -> dict:
    """One measurement in a fresh process, watched for memory and time."""
    import psutil

    from components.ingest.synthetic import SENSITIVE, TARGET

    with tempfile.TemporaryDirectory() as scratch:
        result_file = Path(scratch) / "result.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks.ingest_scale",
            "--child",
            kind,
            "--lake",
            str(lake),
            "--columns",
            ",".join(columns),
            "--target",
            TARGET,
            "--sensitive",
            ",".join(SENSITIVE),
            "--result",
            str(result_file),
        ]
        root = Path(__file__).resolve().parents[1]
        process = subprocess.Popen(command, cwd=root, stderr=subprocess.PIPE, text=True)
        failure, watched_peak = None, 0
        started = time.monotonic()
        try:
            watched = psutil.Process(process.pid)
            while process.poll() is None:
                try:
                    watched_peak = max(watched_peak, watched.memory_info().rss)
                except psutil.NoSuchProcess:
                    break
                if watched_peak > limit_gb * 2**30:
                    failure = f"killed: resident memory passed {limit_gb} GB"
                elif time.monotonic() - started > timeout:
                    failure = f"killed: ran longer than {timeout} s"
                if failure:
                    process.kill()
                    break
                time.sleep(0.1)
            _, stderr = process.communicate()
        finally:
            if process.poll() is None:  # interrupted: stop our own child, by its handle
                process.kill()
                process.wait()
        if failure is None and process.returncode != 0:
            failure = f"exit {process.returncode}: " + " | ".join(stderr.strip().splitlines()[-3:])
        if failure:
            partial = json.loads(result_file.read_text()) if result_file.exists() else {}
            return {
                "ok": False,
                "error": failure,
                "peak_rss_mb": round(watched_peak / 2**20, 1),
                "completed_phases": partial.get("phases", {}),
            }
        result = json.loads(result_file.read_text())
    result["ok"] = True
    result["seconds"] = round(result["seconds"], 3)
    result["rows_per_second"] = round(result["rows"] / result["seconds"])
    return result


def median_run(results: list[dict]) -> dict:
    """The repeat with the median time, with every repeat's time and the highest peak memory of
    them all; the first failure, when one failed."""
    failed = [r for r in results if not r["ok"]]
    if failed:
        return failed[0]
    chosen = dict(sorted(results, key=lambda r: r["seconds"])[len(results) // 2])
    chosen["all_seconds"] = [r["seconds"] for r in results]
    for key in ("peak_rss_mb", "peak_rss_mb_with_transform"):
        if key in chosen:
            chosen[key] = max(r[key] for r in results)
    return chosen


def linearity(runs: list[dict], kind: str) -> dict | None:
    """How time grows with rows: per-row time of the largest size over the next, and the slope
    of log(seconds) against log(rows) by least squares (1.0 is linear)."""
    import numpy as np

    points = [(r["rows"], r[kind]["seconds"]) for r in runs if r[kind].get("ok")]
    if len(points) < 2:
        return None
    points.sort()
    (small_rows, small_s), (big_rows, big_s) = points[-2], points[-1]
    rows, seconds = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return {
        "seconds_per_row_ratio": round((big_s / big_rows) / (small_s / small_rows), 3),
        "between_rows": [small_rows, big_rows],
        "loglog_slope": round(float(np.polyfit(rows, seconds, 1)[0]), 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", help=f"sizes (default {SIZES})")
    parser.add_argument("--smoke", action="store_true", help=f"sizes {SMOKE_SIZES}, for CI")
    parser.add_argument(
        "--data-dir", help="where lakes are generated and kept (default: a temp dir)"
    )
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--all-columns", action="store_true", help="keep postcode too")
    parser.add_argument("--memory-limit-gb", type=float, default=14.0)
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help="fresh-process runs per measurement"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    # The child process's own arguments.
    parser.add_argument("--child", choices=["bare", "ours"], help=argparse.SUPPRESS)
    for hidden in ("--lake", "--columns", "--target", "--sensitive", "--result"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    import numpy as np
    import pandas as pd
    import psutil
    import pyarrow
    import sklearn

    from components.ingest.synthetic import COLUMNS, PARTITION, SENSITIVE, TARGET

    sizes = list(args.rows or (SMOKE_SIZES if args.smoke else SIZES))
    excluded = [] if args.all_columns else list(EXCLUDED)
    columns = [c for c in (*COLUMNS, PARTITION) if c not in excluded]
    scratch = None if args.data_dir else tempfile.TemporaryDirectory(prefix="ingest-scale-")
    data_dir = Path(args.data_dir or scratch.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    runs = []
    try:
        for rows in sorted(sizes):
            lake, generate_seconds = lake_for(rows, data_dir, args.partitions)
            run_child("bare", lake, columns, args.memory_limit_gb, args.timeout)  # page cache
            bares, ours_runs = [], []
            for _ in range(args.repeats):
                bares.append(run_child("bare", lake, columns, args.memory_limit_gb, args.timeout))
                ours_runs.append(
                    run_child("ours", lake, columns, args.memory_limit_gb, args.timeout)
                )
                if not ours_runs[-1]["ok"]:  # stopped by the watchdog: it would be again
                    break
            bare, ours = median_run(bares), median_run(ours_runs)
            run = {
                "rows": rows,
                "lake_bytes": sum(p.stat().st_size for p in lake.rglob("*.parquet")),
                "generate_seconds": generate_seconds,
                "bare": bare,
                "ours": ours,
                "ours_over_bare": (
                    round(ours["seconds"] / bare["seconds"], 2)
                    if ours["ok"] and bare["ok"]
                    else None
                ),
            }
            # The part before prepare (ingest and validate, the contract checked), also when the
            # watchdog stopped prepare: from the phases that finished.
            phases = ours.get("phases") or ours.get("completed_phases") or {}
            counted = [
                p["seconds"]
                for n, p in phases.items()
                if n.split(".")[0] in ("ingest", "validate") and n not in UNCOUNTED
            ]
            finished = "validate.check_contract" in phases
            run["ingest_validate"] = {
                "ok": finished,
                "seconds": round(sum(counted), 3) if finished else None,
                "peak_rss_mb": (
                    max(
                        p["peak_rss_mb"]
                        for n, p in phases.items()
                        if n.split(".")[0] in ("ingest", "validate")
                    )
                    if finished
                    else None
                ),
            }
            run["ingest_validate_over_bare"] = (
                round(run["ingest_validate"]["seconds"] / bare["seconds"], 2)
                if finished and bare["ok"]
                else None
            )
            runs.append(run)
            print(json.dumps(run), flush=True)
    finally:
        if scratch is not None:
            scratch.cleanup()

    largest = runs[-1]
    results = {
        "command": "python -m benchmarks.ingest_scale " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "pyarrow": pyarrow.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "shared": "2 cores shared with other engineers' work during the run",
            "load_average": load_average(load_before),
        },
        "settings": {
            "seed": SEED,
            "partitions": args.partitions,
            "columns": columns,
            "excluded_columns": excluded,
            "target": TARGET,
            "sensitive": list(SENSITIVE),
            "test_size": TEST_SIZE,
            "memory_limit_gb": args.memory_limit_gb,
            "repeats": args.repeats,
        },
        "targets": TARGETS,
        "runs": runs,
        "linearity": {kind: linearity(runs, kind) for kind in ("ours", "ingest_validate", "bare")},
        "met_at_largest": {
            "rows": largest["rows"],
            "ratio": largest["ours_over_bare"] is not None
            and largest["ours_over_bare"] <= TARGETS["ours_over_bare_at_most"],
            "peak_rss": largest["ours"]["ok"]
            and largest["ours"]["peak_rss_mb"] < TARGETS["peak_rss_mb_at_most"],
        },
    }
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
