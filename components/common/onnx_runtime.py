"""Running an exported ONNX graph (see components.export.logic for how it is made) with
onnxruntime: the graph's feed built from a DataFrame, and its labels and probabilities.

Shared by the export step (the parity check), the model server and batch predictions, which is
why it lives here and not in the export stage. onnxruntime is imported when a session is made.
"""

import json

import numpy as np
import pandas as pd

from components.common.errors import PipelineInputError
from components.common.schema import NUMERIC, as_model_input


def load_session(onnx_bytes: bytes, threads: int = 0):
    """An onnxruntime session on the CPU; threads 0 lets onnxruntime choose."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def onnx_inputs(frame: pd.DataFrame, schema: dict) -> dict[str, np.ndarray]:
    """The graph's feed for a DataFrame: per feature a [N, 1] array, float64 for numbers (NaN
    when missing), strings for categories (MISSING_CATEGORY when missing), as in training."""
    features = as_model_input(frame, schema)
    feed = {}
    for feature in schema["features"]:
        name = feature["name"]
        column = features[name]
        if feature["kind"] == NUMERIC:
            try:
                values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                raise PipelineInputError(
                    f"column '{name}' (numeric feature): holds values that are not numbers"
                ) from None
        else:
            values = column.to_numpy(dtype=object)
        feed[name] = values.reshape(-1, 1)
    return feed


def predict_onnx(session, frame: pd.DataFrame, schema: dict):
    """Run the exported graph on a DataFrame.

    Returns:
        (labels, probabilities) for classification, (values, None) for regression; labels and
        values as 1-d arrays, probabilities as [N, classes].
    """
    names = json.loads(session.get_modelmeta().custom_metadata_map.get("inputs", "{}"))
    wanted = {graph_input.name for graph_input in session.get_inputs()}
    feed = {}
    for feature, values in onnx_inputs(frame, schema).items():
        name = names.get(feature, feature)
        if name in wanted:  # skl2onnx may leave out an input that no step reads
            feed[name] = values
    outputs = session.run(None, feed)
    first = np.asarray(outputs[0]).reshape(len(frame), -1)[:, 0]
    if schema["task"] == "classification":
        probabilities = np.asarray(outputs[1]) if len(outputs) > 1 else None
        return first, probabilities
    return first, None
