"""Register: the lineage a model version records, and writing it into the registry.

The registry itself (versions, checksums, aliases) is components.common.registry; this module
assembles what a pipeline run knows about the model into its metadata.json.
"""

from components.common.errors import PipelineInputError
from components.common.registry import (
    METADATA_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    ModelRegistry,
    ModelVersion,
    check_model_name,
    sha256_file,
)
from components.common.retry import one_line
from components.common.secrets import redacted

__all__ = [
    "METADATA_FILE",
    "MODEL_FILE",
    "ModelVersion",
    "check_model_name",
    "lineage",
    "register_model",
    "sha256_file",
    "training_reference",
]


def lineage(
    schema: dict,
    dataset_metadata: dict,
    tuning: dict,
    evaluation: dict,
    fairness: dict | None,
    gate: dict,
    config: dict,
    run_id: str = "",
    split: dict | None = None,
) -> dict:
    """The metadata.json fields that say where a version came from and how good it is.

    Args:
        schema: the feature schema (the server checks requests against it).
        dataset_metadata: the ingested Dataset artifact's metadata (source URI, content hash,
            rows, bytes, Arrow schema, watermark or snapshot id).
        tuning: the best trial.
        evaluation: the evaluation JSON (held-out metrics, CV, threshold).
        fairness: the fairness step's summary, or None.
        gate: the gate's decision.
        config: the run's parameters (the pipeline arguments this run was given).
        run_id: the KFP run id, when there is one.
        split: the split record of the training rows (components.common.stable_split.
            split_record, from the train Dataset's metadata): the gate re-scores this version,
            once it is the champion, only on rows this record says it never trained on. None
            (a run from before the record): no `split` field.
    """
    # Any URL's password hidden (the config is refused with one, this is the second line).
    return redacted(
        {
            "schema": schema,
            "data": {
                key: dataset_metadata.get(key)
                for key in (
                    "source_uri",
                    "content_hash",
                    "rows",
                    "bytes",
                    "schema",
                    "watermark",
                    "snapshot_id",
                )
                if dataset_metadata.get(key) is not None
            },
            "config": config,
            "tuning": tuning,
            "metrics": evaluation.get("metrics", {}),
            "cv": evaluation.get("cv"),
            "threshold": evaluation.get("threshold"),
            "fairness": fairness,
            "gate": {key: gate[key] for key in ("blessed", "reason", "checks") if key in gate},
            "champion_at_registration": (gate.get("champion") or {}).get("version"),
            "deployable": bool(gate.get("blessed")),
            "kfp_run_id": run_id,
            **({"split": split} if split else {}),
        }
    )


def register_model(model, model_store_uri: str, name: str, metadata: dict) -> ModelVersion:
    """Write `model` and `metadata` as the next version of `name` in the store."""
    return ModelRegistry(model_store_uri, name).register(model, metadata)


def training_reference(load_inputs, positive_class: str = "") -> tuple[dict[str, bytes], dict, str]:
    """The version's reference.json, or why there is none.

    A reference never keeps a model from being registered: an unexpected failure while building
    it (a model whose predict_proba raises, a library's bug) is reported, and the version is
    registered without one. Bad input is the user's to fix, as in every other step.

    Args:
        load_inputs: returns (train, test, schema, model): the prepare step's splits, the
            schema, the served model; called here, so that a failure to read them is caught too.
        positive_class: the run's positive class (empty: the second sorted class).

    Returns:
        The files to register with the version ({"reference.json": bytes}, or {}), the
        metadata's "reference" record ({"stored", "bytes"} or {"stored": False, "reason"}), and
        a line for the step's summary.

    Raises:
        PipelineInputError: the splits or the schema are bad input (one line, the step stops).
    """
    # Imported here: the reference loads numpy, pandas and scikit-learn's metrics.
    from components.common.reference import build_reference, reference_json

    try:
        train, test, schema, model = load_inputs()
        data = reference_json(build_reference(train, test, schema, model, positive_class))
    except PipelineInputError:
        raise
    except Exception as error:  # any other failure: registered without a reference, said so
        reason = f"building it failed ({one_line(error)})"
        return {}, {"stored": False, "reason": reason}, f"no reference: {reason}"
    record = {"stored": True, "bytes": len(data)}
    return {REFERENCE_FILE: data}, record, f"reference {len(data) / 1024:.0f} KB"
