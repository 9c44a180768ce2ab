"""The served model: a registered scikit-learn Pipeline as a `kserve.Model`, and its hot reload.

A server of one version folder (`model_dir`: a path, file://, or s3:// / gs://, downloaded into
a temporary folder first) loads it once; every file's SHA-256 is checked before the model is
unpickled. A server of a registry alias (`registry` and `alias`, e.g. champion) reads the alias
again on `reload()` (SIGHUP, or `POST /admin/reload` with the admin token): a new version is loaded
in the background and swapped in at once, and requests in flight finish on the version they
started with. The answer is {"version", "previous", "changed", "alias"}; a version that cannot
be loaded (a checksum differs, it is missing) is refused (`ReloadRefused`, HTTP 409), a failure
of the store is `ReloadFailed` (500), and the old version keeps serving.

What answers a version is chosen when it loads (`serving.runtime`, `--runtime auto|onnx|sklearn`):
its ONNX graph through onnxruntime where it is proven equal to model.joblib on the held-out rows
stored with it, else scikit-learn; both take the same validated numpy columns, so validation,
the prediction log and reload behave alike on both.

Every answer names the model version and carries the request's id: V2 in the response `id`,
V1 in the header `X-Request-Id` (`components.common.prediction_log.request_id`: the `ce-id`
header, else `X-Request-Id`, else, for V2, the body's `id`, else a new random id).

With a prediction log (`prediction_log`: a folder, s3:// or gs:// URI), every answered request is
recorded after the model answered, off the request path (`PredictionLog.record` never blocks and
never raises): its id, the version that answered, every feature as received, the predictions, and
the class probabilities whenever the model has them, asked for or not (the monitor's label-free
performance estimate reads them). A classifier then answers both from one pass where that is
exactly its own rule (`predict_with_probabilities`). The log is flushed after a reload (the old
version's rows are written) and closed by `stop()`.

V2 class probabilities are an FP64 output
"probabilities" of shape [rows, classes] whose parameters hold "classes" as a JSON array in a
string (V2 parameters are scalars).
"""

import functools
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.errors import PipelineInputError
from components.common.model_files import load_model_folder, local_model_folder, model_folder
from components.common.onnx_runtime import threshold_rule
from components.common.prediction_log import PredictionLog, request_id
from components.common.schema import NUMERIC, feature_names
from components.common.secrets import redact_url
from serving.kserve_compat import import_kserve
from serving.protocol import (
    DEFAULT_MAX_BATCH_ROWS,
    OUTPUT_NAME,
    PROBABILITIES_FIELD,
    PROBABILITIES_OUTPUT,
    InvalidInput,
    arrays_from_columns,
    columns_from_instances,
    columns_from_tensors,
    label_datatype,
    output_datatype,
    requested_v2_outputs,
    v1_wants_probabilities,
)
from serving.runtime import DEFAULT_RUNTIME, Runtime, check_runtime, choose_runtime

kserve = import_kserve()

DEFAULT_ALIAS = "champion"
REQUEST_ID_HEADER = "X-Request-Id"
# How long a reload waits for the prediction log's flush, and shutdown for its close: bounded,
# so that a store that is down cannot hold up a reload or keep a stopping pod alive.
FLUSH_TIMEOUT_S = 5.0
# Classifiers whose predict() is, in scikit-learn's own code, `classes_.take(argmax(proba))`:
# for these the prediction is derived from predict_proba exactly, and the model runs once.
_ARGMAX_OF_PROBA = {
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
}


class ReloadRefused(RuntimeError):
    """A reload that could not load the alias's version: the old version keeps serving."""

    status_code = 409


class ReloadFailed(RuntimeError):
    """A reload that failed for a reason that is not the registry's content (HTTP 500)."""

    status_code = 500


def say(message: str) -> None:
    """One line on the server's stderr, whatever the log level (as the `serving ...` line)."""
    print(message, file=sys.stderr, flush=True)


def _qualified_name(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def both_answers(model) -> Callable:
    """A function of a frame giving a classifier's (predict(frame), predict_proba(frame)),
    paying for the model once where the prediction is provably the model's own rule applied to
    the probabilities. Built once per loaded version: the per-request work is only the calls.

    - a random forest or extra-trees classifier (alone or as a Pipeline's last step): predict
      is argmax of predict_proba in scikit-learn's code;
    - a FixedThresholdClassifier over predict_proba (the project's tuned threshold): predict
      is the threshold rule on the positive column;
    - any other Pipeline: its preprocessing runs once, then the last step's predict and
      predict_proba (for a logistic regression, the prediction is not derived: its predict
      thresholds the decision function, which the rounded probabilities cannot always tell);
    - anything else (the fairness-mitigated models, whose predict draws per row): both calls.
    """
    from sklearn.pipeline import Pipeline

    rule = threshold_rule(model)
    if rule is not None:
        column, threshold, positive, negative = rule
        classes = np.asarray(model.classes_)

        def thresholded(frame):
            probabilities = np.asarray(model.predict_proba(frame), dtype=np.float64)
            chosen = np.where(probabilities[:, column] >= threshold, positive, negative)
            return classes[chosen], probabilities

        return thresholded
    head, final = None, model
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        head, final = model[:-1], model.steps[-1][1]
    argmax = _qualified_name(final) in _ARGMAX_OF_PROBA and getattr(final, "n_outputs_", 1) == 1
    if head is None and not argmax:

        def separately(frame):
            predictions = np.asarray(model.predict(frame))
            return predictions, np.asarray(model.predict_proba(frame), dtype=np.float64)

        return separately
    classes = np.asarray(final.classes_)

    def once(frame):
        features = frame if head is None else head.transform(frame)
        probabilities = np.asarray(final.predict_proba(features), dtype=np.float64)
        if argmax:
            return classes.take(np.argmax(probabilities, axis=1)), probabilities
        return np.asarray(final.predict(features)), probabilities

    return once


def predict_with_probabilities(model, frame) -> tuple[np.ndarray, np.ndarray]:
    """`both_answers(model)(frame)`: (predictions, probabilities as float64 of shape
    (rows, classes)), equal to model.predict(frame) and model.predict_proba(frame)."""
    return both_answers(model)(frame)


def _request_id(headers: dict | None, body_id: str | None = None) -> str:
    """The request's id (`request_id`); a V2 body's `id` counts after the headers."""
    headers = headers or {}
    if body_id and not any(str(key).lower() in ("ce-id", "x-request-id") for key in headers):
        return request_id({"x-request-id": body_id})
    return request_id(headers)


@dataclass(frozen=True)
class LoadedVersion:
    """One loaded model version. Immutable: a reload replaces the whole object in one
    assignment, so a request holds one consistent model, schema and version from start to end.

    Attributes:
        model: the fitted scikit-learn Pipeline (or a wrapper with predict).
        metadata: the version's metadata.json.
        schema: metadata["schema"].
        version: the version's name, e.g. "v3".
        folder: the local folder it was loaded from.
        temporary: the folder is a downloaded copy, removed when this version is replaced.
        runtime: what answers: the proven ONNX graph or scikit-learn (`serving.runtime`).
    """

    model: object
    metadata: dict
    schema: dict
    version: str
    folder: Path
    temporary: bool = False
    runtime: Runtime | None = None

    @classmethod
    def from_folder(
        cls, folder: Path, temporary: bool = False, runtime: str = DEFAULT_RUNTIME
    ) -> "LoadedVersion":
        """Load the version, and choose its runtime (auto, onnx, sklearn: `choose_runtime`).

        Raises:
            PipelineInputError: the folder is incomplete, a checksum differs, or `runtime` is
                onnx and the version has no proven graph (`RuntimeUnavailable`).
        """
        model, metadata = load_model_folder(folder)
        chosen = choose_runtime(runtime, model, metadata, folder, lambda: both_answers(model))
        version = str(metadata["version"])
        return cls(model, metadata, metadata["schema"], version, folder, temporary, chosen)

    @functools.cached_property
    def classes(self) -> list | None:
        """The class labels in predict_proba's column order, or None without probabilities
        (computed once: every logged request reads it)."""
        if self.schema["task"] != "classification" or not hasattr(self.model, "predict_proba"):
            return None
        classes = getattr(self.model, "classes_", None)
        return None if classes is None else np.asarray(classes).tolist()

    def discard(self) -> None:
        """Remove the downloaded copy; the model itself stays usable (it is in memory)."""
        if self.temporary:
            shutil.rmtree(self.folder, ignore_errors=True)


class TabularModel(kserve.Model):
    """A registered scikit-learn Pipeline served by KServe, for V1 and V2 requests.

    Args:
        name: the model's name on the server (the URL path).
        model_dir: the registered model folder (model.joblib and metadata.json), or an s3:// or
            gs:// version URI (downloaded and verified when loaded). Leave it out with `registry`.
        registry: serve the version `alias` names in this registry instead, and follow the
            alias on `reload()`.
        alias: an alias (champion, candidate) or a version (v3) of `registry`.
        max_batch_rows: the most rows one request may hold (None: no limit).
        prediction_log: record every answered prediction in this log: a URI (a folder, s3://,
            gs://) or a `PredictionLog`; None: nothing is recorded.
        runtime: auto (the proven ONNX graph where there is one, else scikit-learn), onnx (a
            version without a proven graph is refused) or sklearn (`serving.runtime`).

    Attributes:
        prediction_log: the `PredictionLog`, or None.
    """

    def __init__(
        self,
        name: str,
        model_dir: str | os.PathLike | None = None,
        *,
        registry=None,
        alias: str = DEFAULT_ALIAS,
        max_batch_rows: int | None = DEFAULT_MAX_BATCH_ROWS,
        prediction_log: "str | os.PathLike | PredictionLog | None" = None,
        runtime: str = DEFAULT_RUNTIME,
    ):
        # KServe passes predict() a dict for the response's headers: V1's X-Request-Id.
        super().__init__(name, return_response_headers=True)
        if (model_dir is None) == (registry is None):
            raise ValueError("TabularModel: give either model_dir or registry")
        self.model_dir = None if model_dir is None else model_folder(model_dir)
        self._model_uri = None if model_dir is None else str(model_dir)
        self.registry = registry
        self.alias = alias
        self.max_batch_rows = max_batch_rows
        self.runtime = check_runtime(runtime)
        self._loaded: LoadedVersion | None = None
        # One reload at a time (SIGHUP and the admin route may race); predictions never wait.
        self._reload_lock = threading.Lock()
        if prediction_log is None or isinstance(prediction_log, PredictionLog):
            self.prediction_log = prediction_log
        else:
            self.prediction_log = PredictionLog(str(prediction_log), name)
        self._log_closed = False

    # The current version's parts; each request reads `self._loaded` once and uses only that.
    @property
    def loaded(self) -> LoadedVersion | None:
        return self._loaded

    @property
    def model(self):
        return self._loaded.model if self._loaded else None

    @property
    def metadata(self) -> dict:
        return self._loaded.metadata if self._loaded else {}

    @property
    def schema(self) -> dict:
        return self._loaded.schema if self._loaded else {}

    @property
    def version(self) -> str | None:
        return self._loaded.version if self._loaded else None

    @property
    def answering_runtime(self) -> Runtime | None:
        """The runtime that answers the current version (onnx or sklearn, and why)."""
        return self._loaded.runtime if self._loaded else None

    def _load_version(self, version: str | None = None) -> LoadedVersion:
        if self.registry is None:
            folder = local_model_folder(self._model_uri)
            temporary = folder != self.model_dir
        else:
            uri = self.registry.uri(version)
            folder = local_model_folder(uri)
            temporary = str(folder) != uri
        try:
            return LoadedVersion.from_folder(folder, temporary, self.runtime)
        except BaseException:
            if temporary:  # a downloaded copy of a version that is not served
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def load(self) -> bool:
        """Load the Pipeline and metadata; refuse an incomplete folder or a changed file.

        Raises:
            PipelineInputError: naming the folder and the missing or unreadable file, the file
                whose SHA-256 differs, or the alias that names no version.
        """
        version = self.registry.resolve(self.alias) if self.registry is not None else None
        self._loaded = self._load_version(version)
        self.ready = True
        return self.ready

    def reload(self) -> dict:
        """Read the alias again; load and swap in the version it names now, if it changed.

        The new version is loaded while the old one keeps answering; then one assignment makes
        it current, so no request fails and each is answered by one version only.

        Returns:
            {"version": now served, "previous": served before, "changed": bool, "alias": ...}.

        Raises:
            ReloadRefused: no registry to follow (a --model_dir server), or the version cannot
                be used (a checksum differs, a file or the version is missing); the old version
                keeps serving.
            ReloadFailed: anything else went wrong loading it; the old version keeps serving.
        """
        if self.registry is None:
            raise ReloadRefused(
                f"this server serves the folder '{self._model_uri}' (--model_dir); start it with "
                "--model_store, --model_name and --alias to follow an alias"
            )
        with self._reload_lock:
            current = self._loaded
            previous = current.version if current else None
            try:
                version = self.registry.resolve(self.alias)
                if version == previous:
                    return self._reload_answer(version, previous, changed=False)
                loaded = self._load_version(version)
            except PipelineInputError as error:
                say(f"reload refused: {error}; still serving {previous}")
                raise ReloadRefused(f"{error}; still serving {previous}") from None
            except Exception as error:  # the store or the unpickling: report, keep serving
                say(f"reload failed: {type(error).__name__}: {error}; still serving {previous}")
                raise ReloadFailed(
                    f"{type(error).__name__}: {error}; still serving {previous}"
                ) from error
            # The swap: a request in flight keeps the LoadedVersion it read at its start.
            self._loaded = loaded
            self.ready = True
            if current is not None:
                current.discard()
            say(
                f"reloaded {self.name} {self.alias}: {previous} -> {loaded.version}; "
                f"{loaded.runtime.describe()}"
            )
            self._flush_prediction_log()
            return self._reload_answer(loaded.version, previous, changed=True)

    def _reload_answer(self, version: str, previous: str | None, changed: bool) -> dict:
        return {"version": version, "previous": previous, "changed": changed, "alias": self.alias}

    def _flush_prediction_log(self) -> None:
        """Write what the log holds now (after a swap: the old version's rows), bounded."""
        if self.prediction_log is not None and not self.prediction_log.flush(FLUSH_TIMEOUT_S):
            say(f"prediction log: not flushed within {FLUSH_TIMEOUT_S:g} s; still writing")

    def prediction_log_stats(self) -> dict:
        """The prediction log's state, as the server's route and metrics show it.

        Returns:
            {"model", "enabled", "uri" (redacted, or None), "written", "dropped", "files",
            "queued", "write_errors"} (the counters are 0 with the log off).
        """
        log = self.prediction_log
        counts = (
            log.stats()
            if log is not None
            else dict.fromkeys(("written", "dropped", "files", "queued", "write_errors"), 0)
        )
        uri = None if log is None else redact_url(str(log.uri))
        return {"model": self.name, "enabled": log is not None, "uri": uri, **counts}

    def close_prediction_log(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Write what is queued and stop the log's writer, within `timeout` seconds; then one
        line: "prediction log: N rows written to URI, M dropped". Calling it again does
        nothing."""
        if self.prediction_log is None or self._log_closed:
            return
        self._log_closed = True
        finished = self.prediction_log.close(timeout)
        stats = self.prediction_log_stats()
        lost = stats["dropped"] + stats["queued"]
        unfinished = "" if finished else f" (not finished within {timeout:g} s)"
        say(
            f"prediction log: {stats['written']} rows written to {stats['uri']}, {lost} dropped"
            f"{unfinished}"
        )

    def stop(self) -> None:
        super().stop()
        self.close_prediction_log()
        if self._loaded is not None:
            self._loaded.discard()

    def get_input_types(self) -> list[dict]:
        """The V2 metadata of the inputs: one 1-D tensor per feature."""
        numeric = set(feature_names(self.schema, NUMERIC))
        return [
            {"name": name, "datatype": "FP64" if name in numeric else "BYTES", "shape": [-1]}
            for name in feature_names(self.schema)
        ]

    def get_output_types(self) -> list[dict]:
        if not self.schema:
            return []
        return [{"name": OUTPUT_NAME, "datatype": label_datatype(self.schema), "shape": [-1]}]

    def predict(self, payload, headers: dict | None = None, response_headers: dict | None = None):
        """Predict for a V1 body (a dict) or a V2 `kserve.InferRequest`.

        Args:
            payload: the decoded body.
            headers: the request's headers (the request id's source).
            response_headers: KServe's dict of headers for the answer: `X-Request-Id` is set.

        Returns:
            V1: {"predictions": [...], "model_version": VERSION}, plus "probabilities" and
                "classes" when the body has "return_probabilities": true.
            V2: an InferResponse with the output "predictions" (and "probabilities" when asked
                for), and the model version.

        Raises:
            InvalidInput: the request is malformed (HTTP 400), naming the field and the row.
            PayloadTooLarge: more rows than max_batch_rows (HTTP 413).
        """
        loaded = self._loaded  # read once: a reload during this request does not change it
        if loaded is None or not self.ready:
            raise kserve.errors.ModelNotReady(self.name)
        is_v2 = isinstance(payload, kserve.InferRequest)
        if is_v2:
            want_predictions, want_probabilities = requested_v2_outputs(payload)
            columns = columns_from_tensors(payload, loaded.schema, self.max_batch_rows)
            field = f"parameter '{PROBABILITIES_FIELD}'"
        else:
            columns = columns_from_instances(payload, loaded.schema, self.max_batch_rows)
            want_predictions, want_probabilities = True, v1_wants_probabilities(payload)
            field = f"field '{PROBABILITIES_FIELD}'"
        log = self.prediction_log
        classes = loaded.classes if want_probabilities or log is not None else None
        if want_probabilities:
            if classes is None:
                reason = (
                    "a regression model"
                    if loaded.schema["task"] == "regression"
                    else f"a {type(loaded.model).__name__} without predict_proba"
                )
                raise InvalidInput(
                    f"{field}: model '{self.name}' {loaded.version} is {reason}; it gives no "
                    "class probabilities"
                )
        arrays = arrays_from_columns(columns, loaded.schema)
        rows = len(next(iter(arrays.values())))
        try:
            # Probabilities when asked for, or logged; the ONNX graph gives them anyway.
            predictions, probabilities = loaded.runtime.answer(arrays, rows, classes is not None)
        except PipelineInputError as error:
            # A model with fairness post-processing decides by the sensitive column's group:
            # a group it was not fitted with is the client's to fix (components.common.mitigation).
            raise InvalidInput(str(error)) from None
        rid = _request_id(headers, payload.id if is_v2 else None)
        if response_headers is not None:
            response_headers[REQUEST_ID_HEADER] = rid
        if log is not None:
            # After the model answered; the columns are this request's own, not changed later.
            log.record(rid, loaded.version, columns, predictions, probabilities, classes)
        if not want_probabilities:
            probabilities = None
        if is_v2:
            return self._infer_response(
                payload,
                loaded,
                predictions if want_predictions else None,
                probabilities,
                classes,
                rid,
            )
        response = {"predictions": predictions.tolist()}
        if probabilities is not None:
            response["probabilities"] = probabilities.tolist()
            response["classes"] = classes
        response["model_version"] = loaded.version
        return response

    def _infer_response(self, request, loaded, predictions, probabilities, classes, rid):
        outputs = []
        if predictions is not None:
            values, datatype = output_datatype(predictions)
            output = kserve.InferOutput(
                name=OUTPUT_NAME, shape=list(values.shape), datatype=datatype
            )
            output.set_data_from_numpy(values, binary_data=request.use_binary_outputs)
            outputs.append(output)
        if probabilities is not None:
            output = kserve.InferOutput(
                name=PROBABILITIES_OUTPUT,
                shape=list(probabilities.shape),
                datatype="FP64",
                # V2 parameters are scalars: the labels travel as one JSON array in a string.
                parameters={"classes": json.dumps(classes)},
            )
            output.set_data_from_numpy(probabilities, binary_data=request.use_binary_outputs)
            outputs.append(output)
        return kserve.InferResponse(
            response_id=rid,
            model_name=self.name,
            infer_outputs=outputs,
            model_version=loaded.version,
        )
