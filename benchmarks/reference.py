"""The training reference (components.common.reference): how long building it takes, how large
reference.json is, and its bootstrap against scikit-learn's own metric functions.

    .venv/bin/python -m benchmarks.reference --output benchmarks/results/reference.json

1. bootstrap: the 95% intervals of a binary model's nine held-out metrics on 6,000 rows, 200
   resamples, two ways on the same resamples: the reference's weighted sums (all resamples at
   once) and the peer, scikit-learn's metric functions called on each resample's rows (what
   metrics._binary_metrics does for the evaluation). Their largest difference in any resample's
   metric says the two compute the same numbers; the ratio is the speed-up. Target: the
   reference's whole bootstrap well under a second.
2. build: build_reference end to end (profile, predictions, metrics, intervals) on the demo's
   data (Toronto arrests, 80/20 split) and on 6,000 held-out rows of 20 numeric features.
3. size: reference.json's bytes for the demo and for 20 numeric features x 100,000 rows (80,000
   training, 20,000 held-out), and how much of it is the numeric columns' samples (1,000 values
   each, kept for the Kolmogorov-Smirnov test of drift).

--smoke runs small sizes and 20 resamples, for CI.
"""

import argparse
import os
import platform
import sys
import time

import numpy as np
import pandas as pd

from benchmarks.output import load_average, write_results

SEED = 0


def fitted(train: pd.DataFrame, schema: dict):
    """Imputation, one-hot encoding and a logistic regression, on as_model_input rows."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from components.common.schema import as_model_input

    numeric = [f["name"] for f in schema["features"] if f["kind"] == "numeric"]
    categorical = [f["name"] for f in schema["features"] if f["kind"] == "categorical"]
    preprocess = make_column_transformer(
        (SimpleImputer(), numeric), (OneHotEncoder(handle_unknown="ignore"), categorical)
    )
    model = make_pipeline(preprocess, LogisticRegression(max_iter=1000))
    return model.fit(as_model_input(train, schema), train[schema["target"]])


def numeric_table(rows: int, features: int) -> tuple[pd.DataFrame, dict]:
    """`features` standard normal columns and a binary label that depends on two of them."""
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows) for i in range(features)})
    score = frame["x0"] + frame["x1"] + rng.normal(size=rows)
    frame["y"] = np.where(score > 0, "yes", "no")
    schema = {
        "target": "y",
        "task": "classification",
        "features": [{"name": f"x{i}", "kind": "numeric"} for i in range(features)],
    }
    return frame, schema


def demo_table() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The demo's arrests data, shuffled and split 80/20 (as the demo config splits it)."""
    from sklego.datasets import load_arrests

    frame = load_arrests(as_frame=True).sample(frac=1, random_state=42).reset_index(drop=True)
    numeric, categorical = ["year", "age", "checks"], ["colour", "sex", "employed", "citizen"]
    schema = {
        "target": "released",
        "task": "classification",
        "features": [{"name": n, "kind": "numeric"} for n in numeric]
        + [{"name": n, "kind": "categorical"} for n in categorical],
    }
    cut = int(len(frame) * 0.8)
    return frame.iloc[:cut], frame.iloc[cut:], schema


def timed(function, repeats: int) -> tuple[float, object]:
    """The best of `repeats` wall-clock times (the least disturbed by other work), and the
    result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_bootstrap(rows: int, resamples: int, repeats: int) -> dict:
    from components.common.metrics import _binary_metrics
    from components.common.reference import _binary_resampled, resample_counts
    from components.common.schema import as_model_input

    frame, schema = numeric_table(rows * 5, 20)
    train, test = frame.iloc[: rows * 4], frame.iloc[rows * 4 :]
    model = fitted(train, schema)
    features = as_model_input(test, schema)
    is_positive = test["y"].to_numpy() == "yes"
    scores = model.predict_proba(features)[:, list(model.classes_).index("yes")]
    predicted = model.predict(features) == "yes"
    counts = resample_counts(len(test), resamples, np.random.default_rng(SEED))
    weighted = _binary_resampled(is_positive, predicted, scores)

    def ours():
        return weighted(counts)

    def peer():
        per_resample = []
        for row in counts.astype(int):
            picked = np.repeat(np.arange(len(test)), row)
            per_resample.append(
                _binary_metrics(is_positive[picked], predicted[picked], scores[picked])
            )
        return {name: np.array([m[name] for m in per_resample]) for name in per_resample[0]}

    ours_seconds, ours_values = timed(ours, repeats)
    peer_seconds, peer_values = timed(peer, 1)
    difference = max(
        float(np.nanmax(np.abs(ours_values[name] - peer_values[name]))) for name in peer_values
    )
    return {
        "held_out_rows": len(test),
        "resamples": resamples,
        "metrics": list(peer_values),
        "reference_seconds": round(ours_seconds, 4),
        "sklearn_per_resample_seconds": round(peer_seconds, 4),
        "speedup": round(peer_seconds / ours_seconds, 1),
        "max_abs_difference": difference,
    }


def bench_build(train, test, schema, positive: str, resamples: int, repeats: int) -> dict:
    from components.common.reference import build_reference, reference_json

    model = fitted(train, schema)
    seconds, reference = timed(
        lambda: build_reference(train, test, schema, model, positive, bootstrap=resamples),
        repeats,
    )
    data = reference_json(reference)
    without_samples = json_without_samples(reference)
    return {
        "train_rows": len(train),
        "held_out_rows": len(test),
        "features": len(schema["features"]),
        "seconds": round(seconds, 4),
        "bytes": len(data),
        "kilobytes": round(len(data) / 1024, 1),
        "samples_share": round(1 - without_samples / len(data), 3),
    }


def json_without_samples(reference: dict) -> int:
    """reference.json's bytes with every numeric column's sample emptied."""
    import copy

    from components.common.reference import reference_json

    stripped = copy.deepcopy(reference)
    for section in ("features", "outputs"):
        for summary in stripped["profile"][section].values():
            if "sample" in summary:
                summary["sample"] = []
    return len(reference_json(stripped))


def sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="write the results JSON here")
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    args = parser.parse_args(argv)
    before = os.getloadavg()
    smoke = args.smoke
    resamples = 20 if smoke else 200
    repeats = 1 if smoke else 3
    held_out = 500 if smoke else 6000
    wide_rows = 5000 if smoke else 100_000

    results: dict = {
        "command": ".venv/bin/python -m benchmarks.reference"
        + (" --smoke" if smoke else "")
        + (f" --output {args.output}" if args.output else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit-learn": sklearn_version(),
        },
        "settings": {"resamples": resamples, "repeats": repeats, "smoke": smoke},
    }
    results["bootstrap"] = bench_bootstrap(held_out, resamples, repeats)
    demo_train, demo_test, demo_schema = demo_table()
    results["build"] = {
        "demo": bench_build(demo_train, demo_test, demo_schema, "Yes", resamples, repeats),
    }
    frame, schema = numeric_table(held_out * 5, 20)
    results["build"]["numeric_20"] = bench_build(
        frame.iloc[: held_out * 4], frame.iloc[held_out * 4 :], schema, "yes", resamples, repeats
    )
    frame, schema = numeric_table(wide_rows, 20)
    cut = wide_rows * 4 // 5
    results["size"] = {
        "demo": results["build"]["demo"],
        "numeric_20_features": bench_build(
            frame.iloc[:cut], frame.iloc[cut:], schema, "yes", resamples, 1
        ),
    }
    results["met"] = {
        "bootstrap_under_a_second": results["bootstrap"]["reference_seconds"] < 1.0,
        "same_numbers_as_sklearn": results["bootstrap"]["max_abs_difference"] < 1e-9,
    }
    results["load_average"] = load_average(before)
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
