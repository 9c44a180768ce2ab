"""KFP components: register the model as a version in the model store, and promote it."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    dataset: Input[Dataset],
    schema: Input[Artifact],
    best: Input[Artifact],
    evaluation: Input[Artifact],
    fairness: Input[Artifact],
    decision: Input[Artifact],
    onnx_model: Input[Model],
    train: Input[Dataset],
    test: Input[Dataset],
    plan: Input[Artifact],
    model_store_uri: str,
    model_name: str,
    positive_class: str,
    run_config: str,
    run_id: str,
) -> NamedTuple("RegisterOutputs", [("model_uri", str), ("version", str)]):
    """Writes model.joblib and metadata.json (lineage) as the next version, the candidate.

    Every run's model is registered, blessed or not, with the gate's decision and reason in its
    metadata; it becomes the `candidate`. Only a blessed model that passed deployment becomes
    the `champion` (the promote step).

    Args:
        model: the served model.
        dataset: the ingested table (its source URI, content hash, rows and watermark).
        schema: the schema that validate wrote (the server checks requests against it).
        best: the tuning result.
        evaluation: the held-out metrics, CV scores and threshold.
        fairness: the fairness step's summary.
        decision: the gate's decision.
        onnx_model: the edge export; stored in the version as model.onnx (checksummed like the
            model) when the model could be converted, with parity_rows.parquet (up to 1,000
            held-out rows, on which the model server checks the graph again when it loads the
            version) when its parity passed.
        train: the training rows: their features' profile goes into the version's reference,
            and their metadata's split record into metadata.json `split`.
        test: the held-out rows: a proven graph's parity sample; the model's answers on them
            and its metrics with intervals go into the reference (reference.json, checksummed like the model; a version is
            registered without it, and the summary says why, when building it fails).
        plan: the run's plan: recorded as the version's `training` (full or incremental, the
            trigger, the parent version, the partitions added, how the model was updated).
        model_store_uri: the model store's root (a path, file://, s3:// or gs://).
        model_name: the model's name in the store.
        positive_class: the positive class of a binary task; empty: the second sorted class.
        run_config: the run's configuration (JSON text), recorded as given.
        run_id: the KFP run id.

    Returns:
        The version folder's URI and the version, for example v3.
    """
    import json
    from pathlib import Path
    from typing import NamedTuple

    import joblib

    from components.common.io import read_frame, read_json
    from components.common.registry import ModelRegistry
    from components.common.retraining import training_lineage
    from components.common.step import step_summary, user_errors
    from components.register.logic import edge_files, lineage, training_reference

    gate_decision = read_json(decision.path)
    schema_dict = read_json(schema.path)
    metadata = lineage(
        schema_dict,
        dict(dataset.metadata),
        read_json(best.path),
        read_json(evaluation.path),
        read_json(fairness.path),
        gate_decision,
        json.loads(run_config) if run_config else {},
        run_id,
        dict(train.metadata).get("split"),
    )
    metadata["training"] = training_lineage(read_json(plan.path), model.metadata.get("update"))
    with user_errors("register"):
        registry = ModelRegistry(model_store_uri, model_name)
        edge, metadata["onnx"] = edge_files(
            dict(onnx_model.metadata),
            lambda: Path(onnx_model.path).read_bytes(),
            lambda: read_frame(test.path),
            schema_dict,
        )
        with open(model.path, "rb") as handle:
            model_bytes = handle.read()
        # A run that was killed after registering and then resumed finds its own version
        # instead of registering the same model twice.
        registered, again = registry.find_registered(run_id, model_bytes), True
        reference_line = ""
        if registered is None:
            reference_files, metadata["reference"], reference_line = training_reference(
                lambda: (
                    read_frame(train.path),
                    read_frame(test.path),
                    schema_dict,
                    joblib.load(model.path),
                ),
                positive_class,
            )
            files = {**edge, **reference_files}
            registered, again = registry.register_pickled(model_bytes, metadata, files), False
        registry.set_alias("candidate", registered.version, gate_decision["reason"])
    blessed = "blessed" if gate_decision["blessed"] else "not blessed, not deployed"
    already = ", registered by this run before it was resumed" if again else ""
    reference_line = f"; {reference_line}" if reference_line else ""
    step_summary(
        "register",
        f"{model_name} {registered.version} at {registered.uri} "
        f"(candidate; {blessed}{already}){reference_line}",
    )
    outputs = NamedTuple("RegisterOutputs", [("model_uri", str), ("version", str)])
    return outputs(registered.uri, registered.version)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def promote(
    model_store_uri: str,
    model_name: str,
    version: str,
    run_id: str,
    alerts_config: dict,
) -> str:
    """Makes a blessed, deployed version the champion (the alias moves atomically), and sends a
    `new_champion` alert.

    Args:
        model_store_uri: the model store's root.
        model_name: the model's name in the store.
        version: the version to promote.
        run_id: the KFP run id, recorded as the reason.
        alerts_config: the run config's `alerts:` section. An alert that cannot be delivered is
            a line in the log, never a failed promotion.

    Returns:
        The version that was champion before ("" when there was none).
    """
    from components.common.alerts import send_alert
    from components.common.errors import PipelineInputError
    from components.common.registry import ModelRegistry
    from components.common.step import step_summary, user_errors
    from components.common.vocabulary import primary_metric

    with user_errors("promote"):
        registry = ModelRegistry(model_store_uri, model_name)
        previous = registry.aliases().get("champion", "")
        registry.promote(version, f"blessed and deployed by run {run_id}".strip())
    was = f" (was {previous})" if previous else " (the first champion)"
    step_summary("promote", f"{model_name} champion is now {version}{was}")
    try:  # the metrics make the alert useful; a store that cannot show them costs only them
        metadata = registry.metadata(version)
    except (PipelineInputError, OSError):
        metadata = {}
    metrics = metadata.get("metrics") or {}
    schema = metadata.get("schema") or {}
    # The line shows the metric the gate compares champions on; the body carries them all.
    main = primary_metric(schema.get("task", ""), len(schema.get("classes") or []))
    shown = f"{main} {metrics[main]:.4g}" if isinstance(metrics.get(main), int | float) else ""
    send_alert(
        alerts_config,
        "new_champion",
        f"{model_name} {version} is the new champion{was}" + (f": {shown}" if shown else ""),
        {
            "model": model_name,
            "version": version,
            "previous": previous,
            "run_id": run_id,
            "metrics": metrics,
        },
    )
    return previous
