"""Predict one row with the exported ONNX model, using onnxruntime and numpy alone.

Run it beside model.onnx (the export step's `onnx_model` artifact):  python onnx_client.py
"""

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
# The row to predict, by feature name; None where a value is missing.
row = {
    "colour": "White",
    "year": 2002,
    "age": 21,
    "sex": "Male",
    "employed": "Yes",
    "citizen": "Yes",
    "checks": 3,
}

# One input per feature, shape [1, 1]: strings for categories ("__missing__" when missing),
# float64 for numbers (NaN when missing).
feed = {}
for graph_input in session.get_inputs():
    value = row.get(graph_input.name)
    if graph_input.type == "tensor(string)":
        text = "__missing__" if value is None else str(value)
        feed[graph_input.name] = np.array([[text]], dtype=object)
    else:
        number = np.nan if value is None else value
        feed[graph_input.name] = np.array([[number]], dtype=np.float64)

label, probabilities = session.run(None, feed)  # probabilities: classes in sorted order
print("label:", label[0])
print("probabilities:", probabilities[0].tolist())
