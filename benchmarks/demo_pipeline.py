"""How long the demo pipeline takes under kfp.local, against the same stages called in-process.

    .venv/bin/python -m benchmarks.demo_pipeline --output benchmarks/results/demo_pipeline.json

The peer is the identical stage logic called from one Python process (no KFP, no subprocess per
step, no artifact files between steps): the difference is what Kubeflow's local executor costs.
Both run in this one process, one after the other, on the same data and config. --smoke runs a
tiny search for CI.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import joblib

from benchmarks.output import write_results
from components.bias.assess import assess_data, assess_model
from components.common.lake_source import resolve_source
from components.common.metrics import evaluate_model
from components.common.registry import ModelRegistry
from components.common.settings.sections import BiasConfig
from components.deploy.logic import smoke_test
from components.evaluate.gate import decide
from components.ingest.logic import content_hash, read_source
from components.prepare.logic import build_preprocessor, fit_preprocessor, split_table
from components.report.logic import render_run_report
from components.train.logic import fit_model, fit_with_threshold
from components.tune.logic import tune_model
from components.validate.contract import check_contract
from components.validate.logic import validate_table
from pipelines.config import RunConfig, load_config, reviewed_contract_text
from pipelines.demo_data import write_arrests_lake
from pipelines.local_run import run_pipeline


def run_in_process(config: RunConfig) -> str:
    """The pipeline's stages as plain calls, in the pipeline's order, with the same settings;
    returns the model folder."""
    frame, _ = read_source(resolve_source(config.data.source), config.data.na_values)
    schema = validate_table(
        frame, config.target, config.task, config.sensitive_columns, config.columns
    )
    reviewed = json.loads(reviewed_contract_text(config.contract.path) or "null")
    if reviewed:
        check_contract(frame, reviewed, config.contract.severity)
    train, test = split_table(frame, schema, config.split.test_size, config.split.seed)
    preprocessor = fit_preprocessor(train, schema)
    bias = config.bias
    settings = BiasConfig(
        bands=bias.bands,
        intersections=[list(pair) for pair in bias.intersections],
        min_group_size=bias.min_group_size,
        max_groups=bias.max_groups,
        bootstrap=bias.bootstrap,
        thresholds=bias.thresholds_as_dicts(),
        mitigation=bias.mitigation,
        on_not_computable=bias.on_not_computable,
    )
    assess_data(frame, schema, config.sensitive_columns, config.positive_class, settings)
    best, _ = tune_model(
        train,
        schema,
        config.tuning.families,
        config.tuning.num_trials,
        config.tuning.cv_folds,
        config.tuning.metric,
        config.ray.num_cpus,
        config.split.seed,
        search=config.tuning.search,
        scheduler=config.tuning.scheduler,
        space=config.tuning.space,
        max_failures=config.tuning.max_failures,
        preprocessor=build_preprocessor(schema),
    )
    model = fit_model(train, schema, preprocessor, best, config.split.seed)
    evaluation = config.evaluation
    model, cv = fit_with_threshold(
        model,
        train,
        schema,
        preprocessor,
        best,
        config.split.seed,
        config.tuning.cv_folds,
        config.positive_class,
        evaluation.threshold_rule,
        evaluation.threshold,
        evaluation.target_precision,
        config.bias.mitigation,
    )
    scores = evaluate_model(model, test, schema, config.positive_class)
    fairness = assess_model(
        model,
        test,
        schema,
        config.sensitive_columns,
        config.positive_class,
        settings,
        config.split.seed,
    )
    registry = ModelRegistry(config.model_store_uri, config.model_name)
    champion = None
    if (version := registry.aliases().get("champion")) is not None:
        champion_model, _ = registry.load(version)
        champion = {
            "version": version,
            "metrics": evaluate_model(champion_model, test, schema, config.positive_class)[
                "metrics"
            ],
        }
    decision = decide(
        scores["metrics"],
        evaluation.thresholds,
        evaluation.compare_metrics or ["roc_auc"],
        evaluation.margin,
        champion,
        fairness.gate.as_dict(),
    )
    lineage = {"schema": schema, "data": {"content_hash": content_hash(frame)}, "tuning": best}
    registered = registry.register(model, {**lineage, "metrics": scores["metrics"], "cv": cv})
    registry.set_alias("candidate", registered.version, decision["reason"])
    render_run_report(
        config.model_name, registered.version, schema=schema, evaluation=scores, gate=decision
    )
    if decision["blessed"]:
        smoke_test(registered.uri, test.head(config.serving.smoke_rows))
        registry.promote(registered.version)
    return registered.uri


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/arrests.yaml")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--smoke", action="store_true", help="2 trials, for CI")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-") as scratch:
        config = load_config(args.config)
        config.output_root = scratch
        config.data.source = str(Path(scratch) / "data" / "arrests")
        if args.smoke:
            config.tuning.num_trials = 2
        write_arrests_lake(config.data.source)

        started = time.perf_counter()
        run = run_pipeline(config)
        kfp_local_s = time.perf_counter() - started

        started = time.perf_counter()
        run_in_process(config)
        in_process_s = time.perf_counter() - started
        joblib.load(Path(run.model_uri) / "model.joblib")  # the kfp.local run produced a model

    results = {
        "command": "python -m benchmarks.demo_pipeline " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {"file": args.config, "num_trials": config.tuning.num_trials},
        "kfp_local_seconds": round(kfp_local_s, 1),
        "in_process_seconds": round(in_process_s, 1),
        "kfp_local_over_in_process": round(kfp_local_s / in_process_s, 2),
    }
    write_results(results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
