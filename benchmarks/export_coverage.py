"""The share of the configurations a run can produce whose model exports to ONNX with parity.

    .venv/bin/python -m benchmarks.export_coverage --output benchmarks/results/export_coverage.json

Enumerates, for both tasks, every model family of the search space (components.common.families:
each family's estimator for the task, its hyperparameters drawn from the family's default space,
a fresh draw per configuration) crossed with prepare's option groups as the tests exercise them
(defaults, each imputation, scaling, encoding, rare grouping, indicator, outlier, log, override
and derived-feature option, and all the convertible ones at once); then, for classification,
the tuned thresholds (evaluation.threshold_rule max_f1, 3 folds) and the bias mitigations.

Each configuration is fitted on a small synthetic table (the tests' loans table, 600 rows, with
a skewed region so that rare grouping groups something, and a date column for the date parts),
exported with components.export, and checked as the export step checks it (check_parity, then
refuse_unproven_threshold and refuse_tied_rows) on the held-out split plus awkward rows: an
unseen and an infrequent region, missing values, a zero denominator, values on the bins' edges
and outside them. Outcomes: exported (parity passed), refused (NotConvertible, with its one-line
reason), parity_failed (a graph that answers differently: a bug) or error.

The share is exported / configurations, leaving out the two bias mitigations that draw at random
per row (exponentiated_gradient, threshold_optimizer: no ONNX operator reproduces the draw);
those are run with logistic regression only, to record their reason. --smoke: 300 rows, the
classification families on two option groups with small models, for CI.
"""

import argparse
import math
import os
import platform
import shlex
import sys
import time
import warnings

import numpy as np

from benchmarks.output import load_average, write_results

SEED = 7
ROWS, SMOKE_ROWS = 600, 300
RANDOM_DRAW_MITIGATIONS = ("exponentiated_gradient", "threshold_optimizer")
RATIO = {"name": "income_per_year", "ratio": ["income", "age"]}
BINS = {"name": "age_band", "bins": {"column": "age", "edges": [25, 40, 65]}}
BINS_NUMERIC = {**BINS, "name": "age_code", "kind": "numeric"}
# prepare's option groups, as tests/components/test_export.py and test_prepare_options.py set them.
OPTION_GROUPS = {
    "defaults": {},
    "numeric mean+indicator+minmax": {
        "numeric": {"impute": "mean", "missing_indicator": True, "scale": "minmax"}
    },
    "numeric constant+robust": {
        "numeric": {"impute": "constant", "fill_value": -1, "scale": "robust"}
    },
    "numeric no scaling": {"numeric": {"scale": "none"}},
    "categorical most_frequent": {"categorical": {"impute": "most_frequent"}},
    "categorical missing indicator": {"categorical": {"missing_indicator": True}},
    "ordinal": {"categorical": {"encode": "ordinal"}},
    "ordinal+rare share": {"categorical": {"encode": "ordinal", "rare_min_frequency": 0.08}},
    "one-hot+rare share": {"categorical": {"rare_min_frequency": 0.08}},
    "one-hot+rare count": {"categorical": {"rare_min_frequency": 40}},
    "exclude": {"exclude": ["age"]},
    "outliers iqr clip": {"outliers": {"method": "iqr", "action": "clip"}},
    "outliers quantile clip+log": {
        "outliers": {"method": "quantile", "action": "clip"},
        "log_transform": ["income"],
    },
    "outliers drop": {"outliers": {"method": "iqr", "action": "drop"}},
    "log transform": {"log_transform": ["income"]},
    "per-column overrides": {
        "columns": {"age": {"scale": "robust"}, "region": {"encode": "ordinal"}}
    },
    "derived ratio": {"derived": [RATIO]},
    "derived bins": {"derived": [BINS]},
    "derived bins numeric": {"derived": [BINS_NUMERIC]},
    "derived date part": {"derived": [{"name": "opened_month", "date_part": ["opened", "month"]}]},
    "derived date part categorical": {
        "derived": [
            {"name": "opened_day", "date_part": ["opened", "dayofweek"], "kind": "categorical"}
        ]
    },
    "all convertible at once": {
        "numeric": {"missing_indicator": True},
        "categorical": {"rare_min_frequency": 0.08, "missing_indicator": True},
        "outliers": {"method": "iqr", "action": "clip"},
        "log_transform": ["income"],
        "derived": [RATIO, BINS, BINS_NUMERIC],
    },
}
SMOKE_GROUPS = ("defaults", "all convertible at once")


def make_table(rows: int, task: str, seed: int = SEED):
    """The tests' loans table with region skewed (north 55 %, south 30 %, east 10 %, west 5 %)
    and a date column `opened` (text, some missing); regression's target `amount` replaces the
    label."""
    import pandas as pd

    from tests.conftest import make_loans

    rng = np.random.default_rng(seed)
    frame = make_loans(rows, seed=seed)
    present = frame["region"].notna()
    frame.loc[present, "region"] = rng.choice(
        ["north", "south", "east", "west"], int(present.sum()), p=[0.55, 0.3, 0.1, 0.05]
    )
    days = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, rows), unit="D")
    frame["opened"] = days.strftime("%Y-%m-%d").to_numpy(dtype=object)
    frame.loc[rng.choice(rows, rows // 20, replace=False), "opened"] = None
    if task == "regression":
        income = frame["income"].fillna(50)
        frame["amount"] = 3 * income + frame["age"] + rng.normal(0, 5, rows)
        frame = frame.drop(columns="approved")
    return frame


def awkward_rows(test):
    """Rows serving meets: an unseen and an infrequent region, missing values, age 0 (a zero
    denominator), ages on the bins' edges and outside them, an unparseable date."""
    rows = test.head(8).copy().reset_index(drop=True)
    rows["age"] = rows["age"].astype(float)
    rows["region"] = ["atlantis", "west", None, "north", "east", "south", "west", None]
    rows["age"] = [0.0, 25.0, 40.0, 65.0, 10.0, 99.0, np.nan, 24.999]
    rows.loc[[1, 6], "income"] = np.nan
    rows.loc[2, "opened"] = "not a date"
    return rows


def draw(spec, rng):
    """One value of a search-space entry (components.common.families' grammar)."""
    if not isinstance(spec, dict):
        return spec
    ((kind, values),) = spec.items()
    if kind == "choice":
        return values[int(rng.integers(len(values)))]
    low, high = values
    if kind == "randint":
        return int(rng.integers(low, high + 1))  # both ends included
    if kind == "loguniform":
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return min(max(float(f"{value:.4g}"), low), high)  # 4 digits: the results file's value


def sample_params(family: str, rng, smoke: bool) -> dict:
    from components.common.families import family_specs

    params = {name: draw(spec, rng) for name, spec in family_specs(family).items()}
    if smoke:  # small models: the smoke run checks the enumeration, not the space's far end
        for name in ("n_estimators", "max_iter"):
            if name in params:
                params[name] = min(params[name], 15)
    return params


def prepared(task: str, rows: int):
    from components.prepare.logic import split_table
    from components.validate.logic import validate_table

    frame = make_table(rows, task)
    target = "approved" if task == "classification" else "amount"
    schema = validate_table(frame, target, task, ["group"], {})
    train, test = split_table(frame, schema, 0.25, seed=SEED)
    return schema, train, test


def check_export(model, schema: dict, rows) -> dict:
    """The export step's verdict on `model` (components/export/component.py, without files)."""
    from components.export.logic import (
        NotConvertible,
        export_checked,
    )

    try:
        _, result = export_checked(model, schema, rows)
    except NotConvertible as error:
        return {"outcome": "refused", "reason": error.reason}
    if not result["passed"]:
        return {"outcome": "parity_failed", "differing": result["differing"], "rows": len(rows)}
    return {"outcome": "exported", "max_abs_diff": float(f"{result['max_abs_diff']:.3g}")}


def run_configuration(config: dict, data: dict, seed: int) -> dict:
    """Fit one configuration on its task's table and check its export."""
    import pandas as pd

    from components.prepare.logic import drop_outlier_rows, fit_preprocessor
    from components.train.logic import fit_mitigated, fit_model, fit_with_threshold

    schema, train, test = data[config["task"]]
    options = OPTION_GROUPS[config["prepare"]]
    best = {"family": config["family"], "params": config["params"]}
    started = time.perf_counter()
    try:
        train, _ = drop_outlier_rows(train, schema, options)
        preprocessor = fit_preprocessor(train, schema, options)
        if config["mitigation"] != "none":
            model, _ = fit_mitigated(
                train, schema, preprocessor, best, seed, config["mitigation"],
                "demographic_parity", "group", {}, "yes",
            )  # fmt: skip
        else:
            model = fit_model(train, schema, preprocessor, best, seed)
        if config["threshold_rule"] != "fixed":
            model, _ = fit_with_threshold(
                model, train, schema, preprocessor, best, seed, 3, "yes",
                config["threshold_rule"], 0.5, 0.9, "none",
            )  # fmt: skip
        rows = pd.concat([test, awkward_rows(test)], ignore_index=True)
        outcome = check_export(model, schema, rows)
    except Exception as error:  # a configuration that fails to fit or export is recorded
        outcome = {"outcome": "error", "reason": f"{type(error).__name__}: {error}"[:300]}
    return {**config, **outcome, "seconds": round(time.perf_counter() - started, 2)}


def configurations(smoke: bool) -> list[dict]:
    """Every configuration, each with its hyperparameters drawn (seeded) from the default space."""
    from components.common.families import FAMILIES

    rng = np.random.default_rng(SEED)
    groups = SMOKE_GROUPS if smoke else tuple(OPTION_GROUPS)
    tasks = ("classification",) if smoke else ("classification", "regression")
    plain = {"mitigation": "none", "threshold_rule": "fixed"}
    configs = []
    for task in tasks:
        families = sorted(f for f, (classes, _) in FAMILIES.items() if task in classes)
        for family in families:
            for group in groups:
                params = sample_params(family, rng, smoke)
                configs.append(
                    {"task": task, "family": family, "prepare": group, "params": params, **plain}
                )
    if smoke:
        return configs
    for family in sorted(f for f, (classes, _) in FAMILIES.items() if "classification" in classes):
        for extra in ({"threshold_rule": "max_f1"}, {"mitigation": "reweighing"}):
            params = sample_params(family, rng, smoke)
            configs.append(
                {"task": "classification", "family": family, "prepare": "defaults",
                 "params": params, **plain, **extra}
            )  # fmt: skip
    for mitigation in RANDOM_DRAW_MITIGATIONS:
        params = sample_params("logistic_regression", rng, smoke)
        configs.append(
            {"task": "classification", "family": "logistic_regression", "prepare": "defaults",
             "params": params, **plain, "mitigation": mitigation}
        )  # fmt: skip
    return configs


def summarize(results: list[dict]) -> dict:
    """Counts by outcome, the share that exports (random-draw mitigations left out), and the
    share by prepare option group and by family."""
    counted = [r for r in results if r["mitigation"] not in RANDOM_DRAW_MITIGATIONS]
    outcomes = {}
    for result in counted:
        outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1

    def share(rows: list[dict]) -> float:
        return round(sum(r["outcome"] == "exported" for r in rows) / len(rows), 4)

    by = {}
    for key in ("prepare", "family"):
        by[key] = {
            value: share([r for r in counted if r[key] == value])
            for value in dict.fromkeys(r[key] for r in counted)
        }
    return {
        "configurations": len(counted),
        "exported": outcomes.get("exported", 0),
        "share_exported": share(counted),
        "outcomes": outcomes,
        "share_by_prepare_group": by["prepare"],
        "share_by_family": by["family"],
        "not_exported": sorted(
            {
                f"{r['prepare']} / {r['mitigation']}: {r.get('reason', r['outcome'])}"
                for r in counted
                if r["outcome"] != "exported"
            }
        ),
        "left_out": [
            {"mitigation": r["mitigation"], "outcome": r["outcome"], "reason": r.get("reason")}
            for r in results
            if r["mitigation"] in RANDOM_DRAW_MITIGATIONS
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="300 rows, 2 option groups: CI")
    parser.add_argument("--output", help="the results file (JSON)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = SMOKE_ROWS if args.smoke else ROWS
    configs = configurations(args.smoke)
    with threadpool_limits(1), warnings.catch_warnings():
        # Convergence and "no observed values" warnings of individual fits are not results.
        warnings.simplefilter("ignore")
        data = {task: prepared(task, rows) for task in dict.fromkeys(c["task"] for c in configs)}
        results = [run_configuration(config, data, SEED) for config in configs]
    results_file = {
        "command": " ".join(
            [".venv/bin/python -m benchmarks.export_coverage", *map(shlex.quote, argv)]
        ),
        "rows": rows,
        **summarize(results),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": load_average(load_before),
        "results": results,
    }
    write_results(results_file, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
