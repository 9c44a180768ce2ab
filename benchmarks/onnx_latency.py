"""Single-row latency of the exported ONNX graph (onnxruntime) against the scikit-learn pipeline.

    .venv/bin/python -m benchmarks.onnx_latency --output benchmarks/results/onnx_latency.json

For each model family (logistic regression, a 100-tree random forest, 100 rounds of histogram
gradient boosting), fitted behind the project's preprocessor on the Adult data's 80 % training
split (stratified, seed 42): the p50 (and p90) of single-row calls, after a warm-up, of

1. scikit-learn: `pipeline.predict_proba(one_row_dataframe)` (the row already as_model_input),
   its native thread pools (OpenMP, BLAS) limited to one thread: one row gains nothing from more,
   and on a shared machine their spinning threads only add noise;
2. ONNX: `session.run(None, feed)` on the exported graph (the feed already built), onnxruntime on
   one CPU thread, as on a small edge device;
3. for reference, ONNX from the raw one-row DataFrame (onnx_inputs, then run): what a Python
   client that starts from pandas pays.

Calls alternate between the two on the same held-out rows (a different row each call), so that
load from other work on the machine falls on both. The ratio onnx/sklearn (p50) has a target of
at most 0.2. The parity check on the whole held-out split is reported with it.

Without ../shared/data/adult.csv it falls back to the synthetic loans table of the tests, and
says so in the results. --smoke runs 1,000 rows, small models and 30 calls, for CI.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.output import load_average, write_results

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult.csv"
SEED = 42
TARGET_RATIO = 0.2
FAMILIES = {
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 100, "max_depth": 16, "min_samples_leaf": 1},
    "hist_gradient_boosting": {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31},
}
SMOKE_FAMILIES = {
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 10, "max_depth": 6},
    "hist_gradient_boosting": {"max_iter": 10, "max_leaf_nodes": 8},
}


def load_data(path: Path, rows: int | None):
    """(schema, train, test, description): the Adult data, else the tests' loans table."""
    import pandas as pd

    from components.prepare.logic import split_table
    from components.validate.logic import validate_table

    if path.exists():
        frame = pd.read_csv(path, skipinitialspace=True, na_values=["?"])
        if rows:
            frame = frame.sample(rows, random_state=SEED)
        target, sensitive = "Salary", ["sex", "race", "age"]
        data = {"file": path.name}
    else:
        from tests.conftest import make_loans

        frame = make_loans(rows or 5000, seed=SEED)
        target, sensitive = "approved", ["group"]
        data = {"file": None, "note": f"{path} is absent: the synthetic loans table of the tests"}
    schema = validate_table(frame, target, "classification", sensitive, {})
    train, test = split_table(frame, schema, 0.2, seed=SEED)
    data.update(rows=len(frame), train_rows=len(train), test_rows=len(test))
    return schema, train, test, data


def _ms(seconds: list[float]) -> dict:
    values = np.asarray(seconds) * 1000
    return {q: round(float(np.percentile(values, int(q[1:]))), 4) for q in ("p50", "p90")}


def time_family(model, data: bytes, test, schema, calls: int, warmup: int) -> dict:
    """Alternate single-row calls of scikit-learn and onnxruntime on the same rows."""
    from components.common.onnx_runtime import load_session, onnx_inputs
    from components.common.schema import as_model_input

    session = load_session(data, threads=1)
    picked = test.sample(min(len(test), calls + warmup), random_state=SEED, replace=False)
    picked = picked.reset_index(drop=True)
    raw_rows = [picked.iloc[[i % len(picked)]] for i in range(calls + warmup)]
    frames = [as_model_input(row, schema) for row in raw_rows]
    feeds = [onnx_inputs(row, schema) for row in raw_rows]
    sklearn_s, onnx_s, onnx_frame_s = [], [], []
    clock = time.perf_counter
    for i in range(calls + warmup):
        started = clock()
        expected = model.predict_proba(frames[i])
        sklearn_took = clock() - started
        started = clock()
        _, got = session.run(None, feeds[i])
        onnx_took = clock() - started
        started = clock()
        session.run(None, onnx_inputs(raw_rows[i], schema))
        onnx_frame_took = clock() - started
        if not np.allclose(expected, got, atol=1e-5):  # a fast wrong answer is no answer
            raise RuntimeError(f"row {i}: onnx {got} != scikit-learn {expected}")
        if i >= warmup:
            sklearn_s.append(sklearn_took)
            onnx_s.append(onnx_took)
            onnx_frame_s.append(onnx_frame_took)
    sklearn_ms, onnx_ms = _ms(sklearn_s), _ms(onnx_s)
    return {
        "sklearn_predict_proba_ms": sklearn_ms,
        "onnx_run_ms": onnx_ms,
        "onnx_from_dataframe_ms": _ms(onnx_frame_s),
        "onnx_over_sklearn": round(onnx_ms["p50"] / sklearn_ms["p50"], 4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--calls", type=int, default=500, help="timed calls per family")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="1,000 rows, small models, 30 calls")
    args = parser.parse_args(argv)
    if args.smoke:
        args.calls, args.warmup = 30, 5
    families = SMOKE_FAMILIES if args.smoke else FAMILIES

    import onnxruntime
    import skl2onnx
    import sklearn
    from threadpoolctl import threadpool_limits

    from components.export.logic import TARGET_OPSET, check_parity, export_onnx
    from components.prepare.logic import fit_preprocessor
    from components.train.logic import fit_model

    load_before = os.getloadavg()
    schema, train, test, data = load_data(Path(args.data), 1000 if args.smoke else None)
    results: dict = {
        "command": ".venv/bin/python -m benchmarks.onnx_latency"
        + (" --smoke" if args.smoke else "")
        + (f" --output {args.output}" if args.output else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "data": data,
        "settings": {
            "calls": args.calls,
            "warmup": args.warmup,
            "onnxruntime_threads": 1,
            "sklearn_native_threads": 1,
            "opset": TARGET_OPSET,
            "seed": SEED,
        },
        "target": {"onnx_over_sklearn_p50_at_most": TARGET_RATIO},
        "families": {},
    }
    preprocessor = fit_preprocessor(train, schema)
    for family, params in families.items():
        print(f"{family} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        model = fit_model(train, schema, preprocessor, {"family": family, "params": params}, SEED)
        fit_seconds = time.perf_counter() - started
        onnx_bytes = export_onnx(model, schema)
        parity = check_parity(model, onnx_bytes, test, schema)
        entry = {
            "params": params,
            "fit_seconds": round(fit_seconds, 2),
            "onnx_bytes": len(onnx_bytes),
            "parity": {
                key: parity[key]
                for key in ("passed", "rows", "label_mismatches", "max_abs_diff", "differing")
            },
        }
        with threadpool_limits(1):
            entry.update(time_family(model, onnx_bytes, test, schema, args.calls, args.warmup))
        results["families"][family] = entry
    ratios = {f: e["onnx_over_sklearn"] for f, e in results["families"].items()}
    results["ratios"] = ratios
    results["met"] = {f: r <= TARGET_RATIO for f, r in ratios.items()}
    results["load_average"] = load_average(load_before)
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
