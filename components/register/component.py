"""KFP component: register the evaluated model as a new version in the model store."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model

from components.common.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    dataset: Input[Dataset],
    schema: Input[Artifact],
    best: Input[Artifact],
    metrics: Input[Metrics],
    fairness: Input[Artifact],
    model_store_uri: str,
    model_name: str,
    test_size: float,
    seed: int,
) -> NamedTuple("RegisterOutputs", [("model_uri", str), ("version", str)]):
    """Writes model.joblib and metadata.json (lineage) as the next version of the model.

    Args:
        model: the fitted Pipeline.
        dataset: the ingested table (its source URI, row count and content hash are recorded).
        schema: the schema that validate wrote (the server checks requests against it).
        best: the tuning result.
        metrics: the held-out metrics.
        fairness: the fairness step's summary (JSON): the gate's findings and the summary
            metrics. It is recorded, and `deployable` says whether the gate passed; a model
            that broke a blocking threshold is registered, for the record, but not deployed.
        model_store_uri: the model store's root folder.
        model_name: the model's name in the store.
        test_size: recorded with the split seed.
        seed: recorded.

    Returns:
        The version folder's URI and the version, for example v3.
    """
    from typing import NamedTuple

    import joblib

    from components.common.io import read_json
    from components.common.step import step_summary, user_errors
    from components.register.logic import register_model

    fairness_summary = read_json(fairness.path)
    lineage = {
        "schema": read_json(schema.path),
        "data": {
            "source_uri": dataset.metadata.get("source_uri"),
            "content_hash": dataset.metadata.get("content_hash"),
            "rows": dataset.metadata.get("rows"),
            "test_size": test_size,
            "seed": seed,
        },
        "tuning": read_json(best.path),
        "metrics": dict(metrics.metadata),
        "fairness": fairness_summary,
        "deployable": bool(fairness_summary["gate"]["passed"]),
    }
    with user_errors("register"):
        version_dir = register_model(joblib.load(model.path), model_store_uri, model_name, lineage)
    deployable = "" if lineage["deployable"] else " (not deployable: the fairness gate blocked it)"
    step_summary("register", f"{model_name} {version_dir.name} at {version_dir}{deployable}")
    outputs = NamedTuple("RegisterOutputs", [("model_uri", str), ("version", str)])
    return outputs(str(version_dir), version_dir.name)
