"""Which runtime answers a loaded version: the proven ONNX graph (onnxruntime) or scikit-learn.

`--runtime auto` (the default) serves a version through its ONNX graph when the graph is proven
equal to model.joblib, and with scikit-learn otherwise, saying why; `--runtime onnx` refuses a
version without a proven graph (one line, exit 2 at start-up; a refused reload keeps the old
version); `--runtime sklearn` always uses model.joblib.

Proven means, each time the version is loaded: the register step recorded that the graph
passed parity on the held-out split (metadata "onnx": "parity_passed": true), the version holds
model.onnx and parity_rows.parquet (held-out rows, checksummed with the version like the
model), and on those rows this server's own ONNX path gives identical labels and probabilities
within 1e-5 of model.joblib's (regression: values within 1e-5, relative above 1; and in `auto`,
equal to float64 round-off, see FLOAT64_ROUND_OFF). A version registered before the sample was
stored has no proof, and is served by scikit-learn.

Both runtimes take the same validated request columns as numpy arrays
(`serving.protocol.arrays_from_columns`): the graph's feed is made of them directly, without a
DataFrame. The labels come back as model.joblib's own classes (their type too), and a tuned
threshold (FixedThresholdClassifier) decides as in scikit-learn: the graph computes its rule.
Rows the graph's probabilities cannot decide with certainty, those within the tolerance of the
decision (of the threshold, or a tie between the top two classes), are answered by
scikit-learn, so float32 rounding never turns a label: such rows are rare, and cost one
scikit-learn call for the request that has them.
"""

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from components.common.columnwise import thread_count
from components.common.errors import PipelineInputError
from components.common.onnx_runtime import (
    DEFAULT_ATOL,
    Answers,
    OnnxGraph,
    compare_answers,
    parity_failure_message,
    threshold_rule,
    top_two_within,
)
from components.common.registry import ONNX_FILE, PARITY_ROWS_FILE, read_verified
from components.common.retry import one_line
from components.common.schema import feature_names
from serving.protocol import arrays_from_columns, frame_from_arrays

RUNTIMES = ("auto", "onnx", "sklearn")
DEFAULT_RUNTIME = "auto"
# Where `python -m serving` and `mlpipe serve` read the runtime when no --runtime is given.
RUNTIME_ENV = "MLPIPE_RUNTIME"
# The V2 model metadata's "platform" of each runtime (the names Triton uses).
PLATFORMS = {"onnx": "onnxruntime_onnx", "sklearn": "sklearn"}
# A regression graph that `auto` serves gives scikit-learn's values to float64 round-off (a
# linear model's); one within the parity tolerance only (tree ensembles compute in float32,
# about 1e-7 relative) is served by scikit-learn in `auto`, so that a regression's answers do
# not change with the runtime (the deploy step compares them to 1e-9), and by the graph when
# asked for with `--runtime onnx`.
FLOAT64_ROUND_OFF = 1e-9
# onnxruntime's threads per request: one for a request of a few rows, which gains nothing from
# more (a forest's single row: 0.038 ms on one thread, 0.05 on two), while the server's event
# loop and the other requests need the cores. A request of at least PARALLEL_ROWS rows goes to a
# second session of the same graph with a thread per core (`columnwise.thread_count`: within the
# pod's CPU limit, at most 4; none with one core), which sleep between runs rather than spin: a
# 100-tree forest's 1,000 rows took 6.2 ms on one thread and 3.6 ms on two cores.
ONNX_THREADS = 1
PARALLEL_ROWS = 100

# (arrays, rows, with probabilities) -> (predictions, probabilities or None)
Answer = Callable[[dict[str, np.ndarray], int, bool], tuple[np.ndarray, np.ndarray | None]]


class RuntimeUnavailable(PipelineInputError):
    """`--runtime onnx` for a version whose ONNX graph is missing or not proven equal."""


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise PipelineInputError(
            f"--runtime (or {RUNTIME_ENV}) {runtime!r}: expected one of {', '.join(RUNTIMES)}"
        )
    return runtime


class SklearnAnswers:
    """model.joblib's answers: the arrays as a DataFrame, then predict (and predict_proba).

    Args:
        model: the fitted model.
        schema: the feature schema.
        make_both: returns `serving.model.both_answers(model)` (predict and predict_proba in
            one pass); called on the first request that wants probabilities.
    """

    def __init__(self, model, schema: dict, make_both: Callable[[], Callable]):
        self.model = model
        self.schema = schema
        self._make_both = make_both
        self._both = None

    def __call__(self, arrays: dict, rows: int, with_probabilities: bool):
        frame = frame_from_arrays(arrays, self.schema)
        if with_probabilities:
            if self._both is None:
                self._both = self._make_both()
            return self._both(frame)
        return np.asarray(self.model.predict(frame)), None


class OnnxAnswers:
    """The graph's answers, in model.joblib's terms.

    Args:
        graph: the loaded graph, on ONNX_THREADS threads.
        model: the fitted scikit-learn model it was exported from (its classes, its threshold).
        schema: the feature schema.
        sklearn: model.joblib's answers, for the rows the graph cannot decide with certainty.
        atol: the parity tolerance of the probabilities.
        parallel_graph: the same graph on every core, for requests of PARALLEL_ROWS rows or more
            (None: `graph` answers every request).
    """

    def __init__(
        self,
        graph: OnnxGraph,
        model,
        schema: dict,
        sklearn: SklearnAnswers,
        atol,
        parallel_graph: OnnxGraph | None = None,
    ):
        self.graph = graph
        self.parallel_graph = parallel_graph
        self.schema = schema
        self.sklearn = sklearn
        self.atol = atol
        self.classification = schema["task"] == "classification"
        self.rule = threshold_rule(model)
        if self.classification:
            self.classes = np.asarray(model.classes_)
            numeric = self.classes.dtype.kind in "iu"
            keys = self.classes.astype(np.int64) if numeric else self._text(self.classes)
            self._order = np.argsort(keys, kind="stable")
            self._sorted_keys = keys[self._order]
            self._numeric = numeric

    @staticmethod
    def _text(values: np.ndarray) -> np.ndarray:
        return np.asarray([str(v) for v in values.tolist()], dtype=object)

    def _class_index(self, labels: np.ndarray) -> np.ndarray:
        """The position in model.classes_ of each graph label; -1 for one it does not hold."""
        if self._numeric and labels.dtype.kind in "iu":
            keys = labels.astype(np.int64)
        else:
            keys = self._text(labels)
        # np.minimum, not np.clip: the same here (searchsorted is never below 0), without
        # np.clip's Python-level dispatch, which cost more than the search for a single row.
        found = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._order) - 1)
        index = self._order[found]
        index[self._sorted_keys[found] != keys] = -1
        return index

    def graphs(self) -> list[OnnxGraph]:
        """Every session that may answer: the one-thread graph, and the parallel one."""
        return [self.graph] + ([self.parallel_graph] if self.parallel_graph is not None else [])

    def raw(
        self, arrays: dict, rows: int, graph: OnnxGraph | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The graph alone: (predictions, probabilities, class index or None for regression).

        Args:
            graph: the session to run (default: the parallel one for PARALLEL_ROWS rows or
                more, else the one-thread one).
        """
        if graph is None:
            parallel = self.parallel_graph is not None and rows >= PARALLEL_ROWS
            graph = self.parallel_graph if parallel else self.graph
        first, second = graph.run(arrays, rows)
        if not self.classification:
            return np.asarray(first, dtype=np.float64), None, None
        index = self._class_index(first)
        predictions = self.classes[np.maximum(index, 0)]
        return predictions, np.asarray(second, dtype=np.float64), index

    def undecided(self, probabilities: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Rows whose label the probabilities cannot vouch for: within `atol` of the tuned
        threshold, or the top two classes within 2 * atol of each other; and any label the
        model does not know, or a probability that is not finite."""
        if self.rule is not None:
            column, threshold = self.rule[0], self.rule[1]
            close = np.abs(probabilities[:, column] - threshold) <= self.atol
        elif probabilities.shape[1] == 2:
            close = np.abs(probabilities[:, 1] - probabilities[:, 0]) <= 2 * self.atol
        else:
            close = top_two_within(probabilities, 2 * self.atol)
        return close | (index < 0) | ~np.isfinite(probabilities).all(axis=1)

    def __call__(self, arrays: dict, rows: int, with_probabilities: bool):
        predictions, probabilities, index = self.raw(arrays, rows)
        if not self.classification:
            return predictions, None
        undecided = self.undecided(probabilities, index)
        if undecided.any():
            subset = {name: values[undecided] for name, values in arrays.items()}
            sk_predictions, sk_probabilities = self.sklearn(subset, int(undecided.sum()), True)
            predictions = predictions.copy()
            predictions[undecided] = sk_predictions
            probabilities[undecided] = sk_probabilities
        return predictions, probabilities


@dataclass(frozen=True)
class Runtime:
    """The runtime that answers a loaded version.

    Attributes:
        name: "onnx" or "sklearn".
        reason: why: the parity re-check's figures, or why the graph is not used.
        answer: (arrays, rows, with probabilities) -> (predictions, probabilities or None).
        parity: the load-time parity check's result (`compare_answers`), or None.
    """

    name: str
    reason: str
    answer: Answer
    parity: dict | None = None

    @property
    def platform(self) -> str:
        return PLATFORMS[self.name]

    def describe(self) -> str:
        return f"runtime {self.name} ({self.reason})"


def _columns_of(frame) -> dict[str, list]:
    """A frame's feature columns as a request's validated columns (null for missing)."""
    import pandas as pd

    return {
        name: [None if pd.isna(value) else value for value in frame[name].tolist()]
        for name in frame.columns
    }


def parity_on_rows(onnx: OnnxAnswers, sklearn: SklearnAnswers, frame, schema: dict) -> dict:
    """This server's ONNX path (the graph alone, no scikit-learn for undecided rows) against
    model.joblib on `frame`'s rows, both fed as requests feed them (`compare_answers`), for
    each session that may answer (a forest's trees may be summed in another order on several
    threads): the first that fails, else the one with the largest difference."""
    arrays = arrays_from_columns(_columns_of(frame[feature_names(schema)]), schema)
    rows = len(frame)
    with_probabilities = schema["task"] == "classification"
    sk_first, sk_probabilities = sklearn(arrays, rows, with_probabilities)
    results = []
    for graph in onnx.graphs():
        onnx_first, onnx_probabilities, _ = onnx.raw(arrays, rows, graph)
        result = compare_answers(
            Answers(np.asarray(sk_first), sk_probabilities),
            Answers(onnx_first, onnx_probabilities),
            schema["task"],
            onnx.atol,
        )
        if not result["passed"]:
            return result
        results.append(result)
    return max(results, key=lambda r: (r.get("max_rel_diff", 0.0), r["max_abs_diff"]))


def _why_no_graph(model, metadata: dict) -> str | None:
    """Why this version has no graph to try, or None."""
    record = metadata.get("onnx") or {}
    files = metadata.get("files") or {}
    if ONNX_FILE not in files:
        reason = record.get("reason")
        return f"no {ONNX_FILE}" + (f": {reason}" if reason else "")
    if record.get("parity_passed") is not True:
        passed = record.get("parity_passed")
        return f"the export's parity check did not pass (onnx.parity_passed: {passed!r})"
    if PARITY_ROWS_FILE not in files:
        return f"no {PARITY_ROWS_FILE} (registered before the server re-checked parity)"
    if metadata["schema"]["task"] == "classification" and not hasattr(model, "predict_proba"):
        return "a classifier without predict_proba: no probabilities to vouch for its labels"
    return None


def choose_runtime(
    requested: str,
    model,
    metadata: dict,
    folder,
    make_both: Callable[[], Callable],
    atol: float = DEFAULT_ATOL,
) -> Runtime:
    """The runtime for a version being loaded (see the module's docstring).

    Args:
        requested: auto, onnx or sklearn.
        model: the version's fitted model (model.joblib).
        metadata: its metadata.json.
        folder: the local version folder (its files are verified against their SHA-256).
        make_both: returns `serving.model.both_answers(model)`.

    Raises:
        RuntimeUnavailable: `requested` is onnx and the graph is missing or not proven.
        ModelIntegrityError: model.onnx or parity_rows.parquet does not match its checksum.
    """
    import pandas as pd

    schema = metadata["schema"]
    sklearn = SklearnAnswers(model, schema, make_both)
    if check_runtime(requested) == "sklearn":
        return Runtime("sklearn", "chosen with --runtime sklearn", sklearn)
    why_not = _why_no_graph(model, metadata)
    if why_not is None:
        # A file that does not match its checksum is refused with the version, as model.joblib.
        files = read_verified(str(folder), metadata, only=(ONNX_FILE, PARITY_ROWS_FILE))
        try:
            graph = OnnxGraph.from_bytes(files[ONNX_FILE], threads=ONNX_THREADS)
            cores = thread_count()  # within the pod's CPU limit
            parallel = (
                OnnxGraph.from_bytes(files[ONNX_FILE], threads=cores, spin=False)
                if cores > 1
                else None
            )
            onnx = OnnxAnswers(graph, model, schema, sklearn, atol, parallel)
            rows = pd.read_parquet(io.BytesIO(files[PARITY_ROWS_FILE]))
            parity = parity_on_rows(onnx, sklearn, rows, schema)
        except Exception as error:  # onnxruntime's own errors, a sample without a feature, ...
            why_not = f"the graph could not be checked: {one_line(error)}"
        else:
            if parity["rows"] == 0:
                why_not = f"{PARITY_ROWS_FILE} holds no rows"
            elif not parity["passed"]:
                why_not = parity_failure_message(parity, "parity row")
            elif requested == "auto" and parity.get("max_rel_diff", 0.0) > FLOAT64_ROUND_OFF:
                why_not = (
                    f"its values differ from scikit-learn's by up to {parity['max_rel_diff']:.2g} "
                    "(relative; the graph computes in float32), within the parity tolerance but "
                    "not scikit-learn's float64 values; --runtime onnx serves it"
                )
            else:
                reason = (
                    f"parity re-checked on {parity['rows']} held-out rows: "
                    f"{parity['tolerance']}, largest difference {parity['max_abs_diff']:.2g}"
                )
                return Runtime("onnx", reason, onnx, parity)
    if requested == "onnx":
        version = metadata.get("version", "?")
        raise RuntimeUnavailable(
            f"--runtime onnx: version {version} has no ONNX graph proven equal to "
            f"scikit-learn ({why_not}); serve it with --runtime auto or sklearn"
        )
    return Runtime("sklearn", f"not ONNX: {why_not}", sklearn)
