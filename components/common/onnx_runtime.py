"""Running an exported ONNX graph (see components.export.logic for how it is made) with
onnxruntime: the graph's feed built from numpy columns or a DataFrame, its labels and
probabilities, and the parity check of a graph against the scikit-learn model it came from.

Shared by the export step (the parity check on the held-out split), the model server (the same
check when it loads a version, and its answers) and batch predictions, which is why it lives
here and not in the export stage. onnxruntime is imported when a session is made.

A model with a tuned decision threshold (scikit-learn's FixedThresholdClassifier over
predict_proba, see components.common.metrics.with_threshold) is exported with scikit-learn's
rule in the graph: its `label` is the positive class where probabilities[:, column] >=
threshold. The graph's metadata `decision_threshold` says so: {"threshold", "column", "labels":
[negative, positive]}.
"""

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.common.errors import PipelineInputError
from components.common.schema import NUMERIC, as_model_input

DEFAULT_ATOL = 1e-5
MAX_DIFFERING_ROWS = 20
# The graph metadata key of a tuned threshold's rule (absent: the graph's own labels).
THRESHOLD_KEY = "decision_threshold"


def load_session(onnx_bytes: bytes, threads: int = 0, spin: bool = True):
    """An onnxruntime session on the CPU; threads 0 lets onnxruntime choose. spin=False: the
    session's threads sleep between runs instead of spinning, leaving the cores to the rest of
    the process (onnxruntime spins by default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def threshold_rule(model) -> tuple[int, float, int, int] | None:
    """The (positive column, threshold, positive index, negative index) of a scikit-learn
    FixedThresholdClassifier that thresholds its estimator's predict_proba, else None.

    Its predict() is `classes_[score >= threshold]` with score = predict_proba[:, positive]
    (`sklearn.metrics._scorer._threshold_scores_to_class_labels`).
    """
    from sklearn.model_selection import FixedThresholdClassifier

    if type(model) is not FixedThresholdClassifier or model.pos_label is None:
        return None
    estimator = getattr(model, "estimator_", None)
    if model.response_method not in ("auto", "predict_proba") or not hasattr(
        estimator, "predict_proba"
    ):
        return None  # "auto" takes predict_proba when the estimator has it
    if isinstance(model.threshold, str):
        return None  # "auto": 0.5 for probabilities; not used by this project, not derived
    classes = np.asarray(model.classes_)
    inner = np.asarray(estimator.classes_)
    if len(classes) != 2 or not np.array_equal(classes, inner):
        return None
    positive = int(np.flatnonzero(classes == model.pos_label)[0])
    negative = int(np.flatnonzero(classes != model.pos_label)[0])
    return positive, float(model.threshold), positive, negative


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


class OnnxGraph:
    """A loaded graph: its session, which graph input each feature feeds, and its tuned
    threshold's rule (None: the graph's own labels).

    Args:
        session: an onnxruntime session of an exported graph (`load_session`).
    """

    def __init__(self, session):
        self.session = session
        meta = session.get_modelmeta().custom_metadata_map
        names = json.loads(meta.get("inputs", "{}"))
        wanted = {graph_input.name for graph_input in session.get_inputs()}
        # feature -> graph input; skl2onnx may leave out an input that no step reads.
        self.inputs = {feature: name for feature, name in names.items() if name in wanted}
        rule = meta.get(THRESHOLD_KEY)
        self.threshold = json.loads(rule) if rule else None  # applied in the graph already

    @classmethod
    def from_bytes(cls, onnx_bytes: bytes, threads: int = 0, spin: bool = True) -> "OnnxGraph":
        return cls(load_session(onnx_bytes, threads, spin))

    def run(self, columns: dict[str, np.ndarray], rows: int):
        """The graph's (first output as 1-d, second output or None) for per-feature 1-d arrays
        (numbers float64 with NaN, categories str objects with MISSING_CATEGORY)."""
        feed = {
            graph_name: np.asarray(columns[feature]).reshape(rows, 1)
            for feature, graph_name in self.inputs.items()
        }
        outputs = self.session.run(None, feed)
        first = np.asarray(outputs[0]).reshape(rows, -1)[:, 0]
        second = np.asarray(outputs[1]) if len(outputs) > 1 else None
        return first, second


def predict_onnx(session_or_graph, frame: pd.DataFrame, schema: dict):
    """Run the exported graph on a DataFrame.

    Args:
        session_or_graph: an onnxruntime session (`load_session`) or an `OnnxGraph`.

    Returns:
        (labels, probabilities) for classification, (values, None) for regression; labels and
        values as 1-d arrays, probabilities as [N, classes].
    """
    graph = session_or_graph
    if not isinstance(graph, OnnxGraph):
        graph = OnnxGraph(session_or_graph)
    feed = {name: values.ravel() for name, values in onnx_inputs(frame, schema).items()}
    first, second = graph.run(feed, len(frame))
    if schema["task"] != "classification":
        return first, None
    return first, second


# --- Parity: the graph against scikit-learn ---------------------------------------------------


def _plain(value):
    """A JSON-friendly Python value."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Answers:
    """One runtime's answers on the same rows: labels or values, and probabilities or None."""

    first: np.ndarray
    probabilities: np.ndarray | None


def top_two_within(probabilities: np.ndarray, tolerance: float) -> np.ndarray:
    """Rows whose two likeliest classes are within `tolerance` of each other: a tie that
    rounding decides (half of an even number of trees), in either runtime."""
    top_two = np.partition(np.asarray(probabilities, dtype=np.float64), -2, axis=1)[:, -2:]
    return (top_two[:, 1] - top_two[:, 0]) <= tolerance


def compare_answers(sklearn: Answers, onnx: Answers, task: str, atol: float = DEFAULT_ATOL) -> dict:
    """Compare two runtimes' answers row by row.

    Classification: labels must be identical and every probability within `atol`. Regression:
    |onnx - sklearn| <= atol * max(1, |sklearn|), an absolute tolerance for values up to 1 and a
    relative one above (tree ensembles compute in float32, whose relative error is about 6e-8).

    Returns:
        {"rows", "task", "atol", "tolerance", "label_mismatches" (None for regression),
        "tied_label_mismatches" (classification: label mismatches on rows whose probabilities
        agree and whose two likeliest classes are tied in scikit-learn), "max_abs_diff",
        "differing", "differing_rows": the first 20 rows that differ, each with its position and
        both runtimes' values, "passed"}.
    """
    rows = len(sklearn.first)
    result: dict = {"rows": rows, "task": task, "atol": atol}
    differing: list[dict] = []
    if task == "classification":
        sk_labels, onnx_labels = sklearn.first, onnx.first
        label_ok = np.array(
            [a == b for a, b in zip(sk_labels.tolist(), onnx_labels.tolist(), strict=True)],
            dtype=bool,
        )
        proba_diff = np.zeros(rows)
        sk_proba, onnx_proba = sklearn.probabilities, onnx.probabilities
        if sk_proba is not None and onnx_proba is not None:
            if sk_proba.shape != onnx_proba.shape:
                proba_diff[:] = np.inf
            else:
                diff = np.abs(np.asarray(sk_proba, dtype=np.float64) - onnx_proba.astype(float))
                proba_diff = diff.max(axis=1)
        bad = ~label_ok | ~(proba_diff <= atol)  # NaN differences count as differing
        # A tie: scikit-learn's two most probable classes within atol of each other (half of an
        # even number of trees), so the label is rounding's pick in either runtime.
        tied = np.zeros(rows, dtype=bool)
        if sk_proba is not None and np.ndim(sk_proba) == 2 and np.shape(sk_proba)[1] >= 2:
            tied = top_two_within(sk_proba, atol)
        result["tied_label_mismatches"] = int((~label_ok & (proba_diff <= atol) & tied).sum())
        for row in np.flatnonzero(bad)[:MAX_DIFFERING_ROWS]:
            entry = {
                "row": int(row),
                "sklearn_label": _plain(sk_labels[row]),
                "onnx_label": _plain(onnx_labels[row]),
                "max_abs_diff": float(proba_diff[row]),
            }
            if sk_proba is not None and onnx_proba is not None:
                entry["sklearn_probabilities"] = np.asarray(sk_proba[row], dtype=float).tolist()
                entry["onnx_probabilities"] = np.asarray(onnx_proba[row], dtype=float).tolist()
            differing.append(entry)
        result["label_mismatches"] = int((~label_ok).sum())
        result["max_abs_diff"] = float(proba_diff.max()) if rows else 0.0
        result["tolerance"] = f"identical labels; probabilities within {atol:g}"
    else:
        sk_values = np.asarray(sklearn.first, dtype=np.float64).ravel()
        values_diff = np.abs(sk_values - np.asarray(onnx.first, dtype=np.float64).ravel())
        bad = ~(values_diff <= atol * np.maximum(1.0, np.abs(sk_values)))
        for row in np.flatnonzero(bad)[:MAX_DIFFERING_ROWS]:
            differing.append(
                {
                    "row": int(row),
                    "sklearn": float(sk_values[row]),
                    "onnx": float(onnx.first[row]),
                    "abs_diff": float(values_diff[row]),
                }
            )
        result["label_mismatches"] = None
        result["max_abs_diff"] = float(values_diff.max()) if rows else 0.0
        relative = values_diff / np.maximum(1.0, np.abs(sk_values))
        result["max_rel_diff"] = float(relative.max()) if rows else 0.0
        result["tolerance"] = f"|onnx - sklearn| <= {atol:g} * max(1, |sklearn|)"
    result["differing"] = int(bad.sum())
    result["differing_rows"] = differing
    result["passed"] = not bool(bad.any())
    return result


def parity_failure_message(result: dict, row_name: str = "test row") -> str:
    """One line for a failed parity check, naming the first row that differs."""
    first = result["differing_rows"][0]
    if "sklearn_label" in first:
        detail = (
            f"scikit-learn says {first['sklearn_label']!r}, ONNX {first['onnx_label']!r}, "
            f"probabilities differ by up to {first['max_abs_diff']:.3g}"
        )
    else:
        detail = f"scikit-learn {first['sklearn']:.6g}, ONNX {first['onnx']:.6g}"
    return (
        f"ONNX parity failed on {result['differing']} of {result['rows']} {row_name}s "
        f"({result['tolerance']}); first: {row_name} {first['row']}: {detail}"
    )
