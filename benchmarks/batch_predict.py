"""Batch predictions: rows/s of a whole job against raw in-process predict on the same rows, peak
memory against the input's size, and Ray Data on two loopback nodes against one.

    .venv/bin/python -m benchmarks.batch_predict --data-dir /var/tmp/mlpipe-batch \\
        --output benchmarks/results/batch_predict.json
    .venv/bin/python -m benchmarks.batch_predict --smoke          # CI: tiny sizes, no Ray,
                                                                  # in one process

The model: the project's preprocessor and a logistic regression (components.prepare,
components.train) fitted on 20,000 rows of the synthetic table (components.ingest.synthetic:
every column but `postcode`, whose 1,000 values are an ID more than a feature), exported to ONNX
with its parity checked (components.export) and registered with both files, as a pipeline run
registers it. The input: the synthetic lake (Hive-partitioned by region) of each size, generated
once into --data-dir (not timed).

Per size, each measurement in a fresh Python process (peak memory is the process's own maximum
resident set, getrusage), alternating, --repeats times, the median time counting:

- job_onnx / job_sklearn: `predict_batch` (components.predict.logic), the local engine with that
  runtime: the lake streamed in record batches of 65,536 rows, scored, written as the output lake
  and the prediction log, committed. Everything counted: reading, checks, scoring, writing;
- raw_onnx / raw_sklearn: the limit: the same rows already in memory (read before the clock
  starts) as the model's input, and the model's labels and probabilities in one call
  (`predict_onnx`, or scikit-learn's `predict` and `predict_proba`). Peak memory: the whole
  input in memory, which is what a job must not need.

`job_over_raw` is the job's rows/s over the raw call's of the same runtime (target at least 0.8).
`peak_growth` is the job's peak at the largest size over its peak at the smallest (flat: about 1).

Ray: the same job with the Ray engine (ONNX), on a ray.cluster_utils.Cluster on 127.0.0.1 with
one node of two CPUs, then two such nodes (Ray's start and the cluster's are not counted; Ray
Data's planning and actor start are). It says what the second node bought; on a machine of two
cores the second node's CPUs are the same cores, so this measures what spreading costs, not
what more machines would give.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.output import load_average, write_results

SIZES = (500_000, 2_000_000, 5_000_000)
SMOKE_SIZES = (5_000, 20_000)
RAY_ROWS = 2_000_000
NODE_CPUS = 2
TRAIN_ROWS = 20_000
SMOKE_TRAIN_ROWS = 2_000
TARGET_RATIO = 0.8
KINDS = ("job_onnx", "raw_onnx", "job_sklearn", "raw_sklearn")
MODEL = "synthetic-default"
EXCLUDED = ("postcode",)


def _lake(data_dir: Path, rows: int) -> Path:
    from components.ingest.synthetic import generate

    lake = data_dir / f"lake-{rows}"
    if not (lake / "_complete").exists():
        shutil.rmtree(lake, ignore_errors=True)
        generate(rows, lake, seed=1)
        (lake / "_complete").write_text("")
    return lake


def _register(store: Path, train_rows: int = TRAIN_ROWS) -> dict:
    """The model, fitted and registered with its ONNX graph; returns its schema."""
    from components.common.registry import ONNX_FILE, ModelRegistry
    from components.export.logic import check_parity, export_onnx
    from components.ingest.logic import text_as_categories
    from components.ingest.synthetic import TARGET, make_table
    from components.prepare.logic import fit_preprocessor, split_table
    from components.train.logic import fit_model
    from components.validate.logic import validate_table

    frame = text_as_categories(make_table(train_rows, seed=0).to_pandas())
    frame = frame.drop(columns=list(EXCLUDED))
    frame[TARGET] = frame[TARGET].astype(str)
    schema = validate_table(frame, TARGET, "classification", [], {})
    train, test = split_table(frame, schema, 0.25, seed=1)
    model = fit_model(
        train,
        schema,
        fit_preprocessor(train, schema),
        {"family": "logistic_regression", "params": {"C": 1.0}},
        0,
    )
    data = export_onnx(model, schema)
    parity = check_parity(model, data, test, schema)
    registry = ModelRegistry(str(store), MODEL)
    version = registry.register(
        model, {"schema": schema, "onnx": {"parity_passed": parity["passed"]}}, {ONNX_FILE: data}
    )
    registry.promote(version.version)
    return schema


def _child(kind: str, lake: str, store: str, scratch: str, ray_address: str) -> dict:
    """One measurement, in this (fresh) process."""
    from components.common.registry import ModelRegistry, unpickle_model
    from components.predict.scoring import load_model, read_payload

    registry = ModelRegistry(store, MODEL)
    if kind.startswith("job") or kind.startswith("ray"):
        from components.predict.logic import BatchJob, predict_batch

        runtime = "sklearn" if kind == "job_sklearn" else "onnx"
        payload = read_payload(registry, "champion", runtime)
        job = BatchJob(
            lake,
            f"{scratch}/out",
            log_uri=f"{scratch}/log",
            engine="ray" if kind.startswith("ray") else "local",
            ray_address=ray_address,
        )
        started = time.perf_counter()
        record = predict_batch(job, payload)
        seconds = time.perf_counter() - started
        rows = record["rows"]
    else:
        import pyarrow.dataset as ds

        from components.common.schema import as_model_input, feature_names
        from components.predict.scoring import received_features

        payload = read_payload(registry, "champion", kind.removeprefix("raw_"))
        model = load_model(payload)
        names = feature_names(model.schema)
        table = ds.dataset(lake, partitioning="hive").to_table(columns=names)
        frame = received_features(table, model.schema)
        del table
        if kind == "raw_sklearn":  # scikit-learn's predict on its input, made beforehand
            fitted = unpickle_model(payload.data, MODEL)
            frame = as_model_input(frame, model.schema)
            started = time.perf_counter()
            labels = fitted.predict(frame)
        else:  # the graph's run (labels and probabilities are its outputs) on the DataFrame
            started = time.perf_counter()
            labels, _ = model.predict(frame)
        seconds = time.perf_counter() - started
        rows = len(labels)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(seconds, 3), "rows": rows, "peak_rss_mb": round(peak_mb, 1)}


def run_child(
    kind: str, lake: Path, store: Path, ray_address: str = "", in_process: bool = False
) -> dict:
    """One measurement in a fresh process (in this one for --smoke, whose figures are not
    measurements: a fresh Python and its imports per call cost more than CI should pay)."""
    with tempfile.TemporaryDirectory(prefix="mlpipe-batch-bench-") as scratch:
        if in_process:
            return {"ok": True, **_child(kind, str(lake), str(store), scratch, ray_address)}
        command = [
            sys.executable,
            "-m",
            "benchmarks.batch_predict",
            "--child",
            kind,
            "--lake",
            str(lake),
            "--store",
            str(store),
            "--scratch",
            scratch,
            "--ray-address",
            ray_address,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"ok": False, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return {"ok": True, **json.loads(done.stdout.strip().splitlines()[-1])}


def _median_run(
    kind: str, lake: Path, store: Path, repeats: int, ray_address: str = "", in_process=False
) -> dict:
    runs = [run_child(kind, lake, store, ray_address, in_process) for _ in range(repeats)]
    failed = [run for run in runs if not run["ok"]]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda run: run["seconds"])
    median = dict(ordered[len(ordered) // 2])
    median["all_seconds"] = [run["seconds"] for run in runs]
    median["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
    median["rows_per_second"] = round(median["rows"] / median["seconds"])
    return median


def _ray_scaling(lake: Path, store: Path, repeats: int) -> dict:
    """The Ray engine on one loopback node of NODE_CPUS CPUs, then on two such nodes (a node of
    one CPU cannot run the engine: its one actor holds the CPU that reading needs)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback (the FACTS' recipe)
    from ray.cluster_utils import Cluster

    results = {}
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": NODE_CPUS})
        try:
            for _ in range(nodes - 1):
                cluster.add_node(num_cpus=NODE_CPUS)
            cluster.wait_for_nodes()
            results[f"{nodes}_node"] = _median_run(
                "ray_onnx", lake, store, repeats, cluster.address
            )
        finally:
            cluster.shutdown()
    one, two = results["1_node"], results["2_node"]
    if one["ok"] and two["ok"]:
        results["two_over_one"] = round(two["rows_per_second"] / one["rows_per_second"], 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="/var/tmp/mlpipe-batch")
    parser.add_argument("--output")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat, no Ray")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-rows", type=int, default=RAY_ROWS)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--child", choices=(*KINDS, "ray_onnx"), help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--ray-address", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.lake, args.store, args.scratch, args.ray_address)))
        return 0

    before = os.getloadavg()
    sizes = args.sizes or (SMOKE_SIZES if args.smoke else SIZES)
    repeats = 1 if args.smoke else args.repeats
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = data_dir / f"models-{os.getpid()}"
    _register(store, SMOKE_TRAIN_ROWS if args.smoke else TRAIN_ROWS)
    runs = []
    try:
        for rows in sorted(sizes):
            lake = _lake(data_dir, rows)
            # Alternating kinds, repeat by repeat: other work on the machine falls on each.
            measured = {
                kind: _median_run(kind, lake, store, repeats, in_process=args.smoke)
                for kind in KINDS
            }
            run = {"rows": rows, **measured}
            for runtime in ("onnx", "sklearn"):
                job, raw = measured[f"job_{runtime}"], measured[f"raw_{runtime}"]
                if job["ok"] and raw["ok"]:
                    run[f"job_over_raw_{runtime}"] = round(
                        job["rows_per_second"] / raw["rows_per_second"], 2
                    )
            runs.append(run)
        ray = None
        if not (args.smoke or args.no_ray):
            ray = {
                "rows": args.ray_rows,
                **_ray_scaling(_lake(data_dir, args.ray_rows), store, repeats),
            }
    finally:
        shutil.rmtree(store, ignore_errors=True)
    first, last = runs[0], runs[-1]
    growth = {
        kind: round(last[kind]["peak_rss_mb"] / first[kind]["peak_rss_mb"], 2)
        for kind in KINDS
        if last[kind]["ok"] and first[kind]["ok"]
    }
    results = {
        "command": "python -m benchmarks.batch_predict " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "shared": "2 cores shared with other engineers' work during the run",
            "load_average": load_average(before),
        },
        "settings": {
            "train_rows": TRAIN_ROWS,
            "excluded_columns": list(EXCLUDED),
            "repeats": repeats,
        },
        "targets": {"job_over_raw_at_least": TARGET_RATIO},
        "runs": runs,
        "peak_growth_largest_over_smallest": growth,
        "met": {
            runtime: all(run.get(f"job_over_raw_{runtime}", 0) >= TARGET_RATIO for run in runs)
            for runtime in ("onnx", "sklearn")
        },
        "ray": ray,
    }
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
