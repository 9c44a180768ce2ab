"""Register: the lineage a model version records, and writing it into the registry.

The registry itself (versions, checksums, aliases) is components.common.registry; this module
assembles what a pipeline run knows about the model into its metadata.json.
"""

from components.common.errors import PipelineInputError
from components.common.registry import (
    METADATA_FILE,
    MODEL_FILE,
    ONNX_FILE,
    PARITY_ROWS_FILE,
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
    "edge_files",
    "lineage",
    "parity_rows",
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


# The most held-out rows stored for the server's parity check: enough to cover the data's
# variety, few enough that loading a version checks them in well under a second.
PARITY_SAMPLE_ROWS = 1000


def parity_rows(test, schema: dict, rows: int = PARITY_SAMPLE_ROWS) -> tuple[bytes, int]:
    """Up to `rows` held-out rows, evenly spaced over the test split, with the feature columns
    only (as received: missing values stay missing), as Parquet bytes; and how many rows."""
    import io

    import numpy as np

    from components.common.schema import feature_names

    if len(test) == 0:
        raise PipelineInputError("test dataset: no rows to store for the ONNX parity check")
    picked = np.unique(np.linspace(0, len(test) - 1, min(rows, len(test))).astype(int))
    sample = test.iloc[picked][feature_names(schema)].reset_index(drop=True)
    buffer = io.BytesIO()
    sample.to_parquet(buffer, index=False)
    return buffer.getvalue(), len(sample)


def edge_files(onnx_metadata: dict, read_onnx, read_test, schema: dict) -> tuple[dict, dict]:
    """The version's edge files and its metadata "onnx" record.

    Args:
        onnx_metadata: the export step's artifact metadata (converted, reason, opset,
            parity_passed, max_abs_diff).
        read_onnx: returns the graph's bytes (called only for a converted graph).
        read_test: returns the held-out rows (called only for a graph whose parity passed).
        schema: the feature schema.

    Returns:
        ({"model.onnx": bytes, "parity_rows.parquet": bytes} for a graph that passed parity,
        only model.onnx for one that did not, {} without a graph), and the record, with
        "parity_rows" (how many rows were stored) when the sample is stored.
    """
    record = {
        key: onnx_metadata.get(key)
        for key in ("converted", "reason", "opset", "parity_passed", "max_abs_diff")
        if key in onnx_metadata
    }
    if not onnx_metadata.get("converted"):
        return {}, record
    files = {ONNX_FILE: read_onnx()}
    if onnx_metadata.get("parity_passed") is True:
        files[PARITY_ROWS_FILE], record["parity_rows"] = parity_rows(read_test(), schema)
    return files, record


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
