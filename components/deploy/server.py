"""The KServe model server for one registered model version, or for a registry alias.

    python -m components.deploy.server --model_dir DIR_OR_URI [--http_port 8080] [--host 127.0.0.1]
    python -m components.deploy.server --model_store URI --model_name NAME [--alias champion]
        [--max_batch_rows 10000] [--max_body_bytes 10485760]

It serves the KServe SDK's own REST app, V1 (`/v1/models/NAME:predict`) and V2 (the Open
Inference Protocol, `/v2/models/NAME/infer`), with one worker and no gRPC, bound to `--host`:
127.0.0.1 unless told otherwise, where the stock `kserve.ModelServer` always binds 0.0.0.0.

What it serves:
  --model_dir DIR_OR_URI   one version folder: a path, file://, or s3:// / gs:// (downloaded into
                           a temporary folder first); every file's SHA-256 is checked before the
                           model is unpickled.
  --model_store URI        the registry (a path, file://, s3://, gs://) and --model_name NAME:
  --alias champion         serve the version this alias (or a version like v3) names. On SIGHUP
                           (which therefore does not end this server), or `POST /admin/reload`
                           from this machine, the alias is read again and a new version is
                           loaded in the background and swapped in at once; requests in flight
                           finish on the version they started with. The answer is {"version",
                           "previous", "changed", "alias"}; a version that cannot be loaded (a
                           checksum differs, it is missing) is refused with HTTP 409, a failure
                           of the store with 500, and the old version keeps serving.

Every request is validated before the model sees it: a client's mistake is an HTTP 400 naming
the field and the row, never a 500, and the server keeps serving:
  - a missing or unknown feature, a value of the wrong type, a string for a number;
  - ±Infinity anywhere, and null or NaN (a missing value, which the model imputes) in a feature
    whose schema entry says `"nullable": false`; NaN and Infinity are not JSON, so a V1 body
    holding them is refused naming the row and the feature;
  - an empty batch, a body that is not JSON;
  - HTTP 413 for more rows than --max_batch_rows (env MLPIPE_MAX_BATCH_ROWS, default 10000),
    and for a body over --max_body_bytes (env MLPIPE_MAX_BODY_BYTES, default 10 MiB), refused
    before it is read in full.

Class probabilities, when asked: V1 `{"instances": [...], "return_probabilities": true}` adds
"probabilities" (one list per row, in the order of "classes") and "classes"; V2
`"parameters": {"return_probabilities": true}` (or asking for the output "probabilities") adds an
FP64 output "probabilities" of shape [rows, classes] whose parameters hold "classes" as a JSON
array in a string (V2 parameters are scalars). Every answer names the model version.

Every feature of the schema is required, sensitive columns included: a model with fairness
post-processing (bias.mitigation threshold_optimizer) reads each row's group from its sensitive
column, and refuses a group it was not fitted with, also with a 400.
"""

import argparse
import asyncio
import ipaddress
import json
import logging
import math
import numbers
import os
import shutil
import signal
import sys
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.common.errors import PipelineInputError
from components.common.schema import MISSING_CATEGORY, NUMERIC, feature_names
from components.deploy.logic import (
    LOOPBACK,
    load_model_folder,
    local_model_folder,
    model_folder,
    read_model_metadata,
)


def _import_kserve(read_command_line: bool):
    """Import kserve, which parses `sys.argv` when `kserve.model_server` is first imported.

    Run as a program, that command line is ours and meant for it. Imported as a library (by
    tests, by the pipeline), the host program's arguments are not, and an ambiguous prefix among
    them would even make argparse exit the process; so it sees an empty command line instead.
    """
    if read_command_line or "kserve.model_server" in sys.modules:
        import kserve

        return kserve
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
    finally:
        sys.argv = saved
    return kserve


kserve = _import_kserve(read_command_line=__name__ == "__main__")
InvalidInput = kserve.errors.InvalidInput

OUTPUT_NAME = "predictions"
PROBABILITIES_OUTPUT = "probabilities"
# The V1 body field and the V2 request parameter that ask for class probabilities.
PROBABILITIES_FIELD = "return_probabilities"
INTEGER_DATATYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
# FP16 is left out: KServe refuses it in JSON anyway.
NUMERIC_DATATYPES = INTEGER_DATATYPES | {"FP32", "FP64"}
# A categorical value is cast to a string before encoding, so numbers and booleans are fine too.
CATEGORICAL_DATATYPES = NUMERIC_DATATYPES | {"BYTES", "BOOL"}
# Error messages list the expected features, up to this many.
LISTED_NAMES = 12

DEFAULT_MAX_BATCH_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_BATCH_ROWS_ENV = "MLPIPE_MAX_BATCH_ROWS"
MAX_BODY_BYTES_ENV = "MLPIPE_MAX_BODY_BYTES"
DEFAULT_ALIAS = "champion"
ADMIN_RELOAD_PATH = "/admin/reload"
# Where the body-limit middleware leaves the request body, for the error handlers to explain
# a body that is not JSON (KServe's own message does not say which value is wrong).
BODY_SCOPE_KEY = "mlpipe.body"


class PayloadTooLarge(InvalidInput):
    """A request over one of the server's limits: HTTP 413, not 400.

    A subclass of InvalidInput, so that callers in process catch it with every other bad input.
    """

    status_code = 413


class ReloadRefused(RuntimeError):
    """A reload that could not load the alias's version: the old version keeps serving."""

    status_code = 409


class ReloadFailed(RuntimeError):
    """A reload that failed for a reason that is not the registry's content (HTTP 500)."""

    status_code = 500


def _say(message: str) -> None:
    """One line on the server's stderr, whatever the log level (as the `serving ...` line)."""
    print(message, file=sys.stderr, flush=True)


# --- Validation: every check raises InvalidInput (HTTP 400) with a one-line message -----------


def _json_type(value) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, str | bytes):
        return "string"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > LISTED_NAMES else "")


@dataclass(frozen=True)
class _Features:
    """What validation needs of a schema, worked out once per request."""

    names: list[str]
    numeric: frozenset[str]
    # Features whose schema entry says "nullable": false; every other one may be missing.
    required: frozenset[str]

    @classmethod
    def of(cls, schema: dict) -> "_Features":
        return cls(
            names=feature_names(schema),
            numeric=frozenset(feature_names(schema, NUMERIC)),
            required=frozenset(
                f["name"] for f in schema["features"] if f.get("nullable", True) is False
            ),
        )


def _is_missing(value) -> bool:
    """null, or a float NaN (V2 tensors may carry NaN: Python's JSON parser reads it)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _value_problem(value, numeric: bool, nullable: bool = True) -> str | None:
    """What is wrong with one feature value, or None if it is acceptable.

    A missing value (null, NaN) is fine unless the schema says the feature is never missing:
    the model imputes missing values as it did in training. Infinity never is.
    """
    # The common cases first, cheaply: this runs once per value of every request.
    kind = type(value)
    if (kind is str and not numeric) or kind is int:
        return None
    if kind is float and value - value == 0:  # finite: inf - inf and NaN - NaN are NaN
        return None
    if _is_missing(value):
        if nullable:
            return None
        return (
            f"is missing ({'NaN' if value is not None else 'null'}), which this feature does "
            "not allow (its schema says nullable: false)"
        )
    kind = _json_type(value)
    if isinstance(value, numbers.Real) and kind == "number" and math.isinf(value):
        return f"must be a finite number, got {value}"
    or_null = " or null" if nullable else ""
    if numeric:
        if kind != "number":
            return f"must be a number{or_null}, got {kind} {_shown(value)}"
        return None
    if kind not in ("string", "number", "boolean"):
        return f"must be a string, number{or_null}, got {kind}"
    return None


def _too_many_rows(count: int, max_rows: int | None, what: str) -> None:
    if max_rows is not None and count > max_rows:
        raise PayloadTooLarge(
            f"{what} has {count} rows, over this server's limit of {max_rows} rows per request "
            "(--max_batch_rows): send the rows in smaller batches"
        )


def columns_from_instances(payload, schema: dict, max_rows: int | None = None) -> dict[str, list]:
    """Validate a V1 request body and return its values column by column.

    Args:
        payload: the decoded body, expected to be {"instances": [{feature: value, ...}, ...]}.
        schema: the model's feature schema.
        max_rows: the most rows a request may hold (None: no limit).

    Raises:
        InvalidInput: naming the field (and the row) that is wrong.
        PayloadTooLarge: more rows than `max_rows` (HTTP 413).
    """
    if isinstance(payload, bytes | str):
        # KServe passes a body through undecoded when its Content-Type is not JSON.
        raise InvalidInput("request body: expected JSON, sent with Content-Type: application/json")
    if not isinstance(payload, dict):
        raise InvalidInput(
            f"request body: expected a JSON object like "
            f'{{"instances": [{{feature: value, ...}}]}}, got {_json_type(payload)}'
        )
    if "instances" not in payload:
        raise InvalidInput(
            "field 'instances' is missing: expected {\"instances\": [{feature: value, ...}, ...]}"
        )
    rows = payload["instances"]
    if not isinstance(rows, list):
        raise InvalidInput(f"field 'instances': expected a list of rows, got {_json_type(rows)}")
    if not rows:
        raise InvalidInput("field 'instances' is empty: send at least one row")
    _too_many_rows(len(rows), max_rows, "field 'instances'")
    features = _Features.of(schema)
    columns: dict[str, list] = {name: [] for name in features.names}
    for index, row in enumerate(rows):
        where = f"instances[{index}]"
        if not isinstance(row, dict):
            raise InvalidInput(
                f"{where}: expected an object of feature values, got {_json_type(row)}"
            )
        for key in row:
            if key not in columns:
                raise InvalidInput(
                    f"{where}: unknown feature '{key}' (expected {_names(features.names)})"
                )
        for name in features.names:
            if name not in row:
                raise InvalidInput(f"{where}: feature '{name}' is missing")
            problem = _value_problem(
                row[name], name in features.numeric, name not in features.required
            )
            if problem:
                raise InvalidInput(f"{where}: feature '{name}' {problem}")
            columns[name].append(row[name])
    return columns


def _flatten(data, name: str) -> list:
    """Tensor data as a flat list; V2 allows both flat and nested (row-major) JSON arrays."""
    if isinstance(data, np.ndarray):
        data = data.tolist()
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': 'data' must be an array, got {_json_type(data)}")
    flat: list = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], StopIteration)
        if item is StopIteration:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


def _tensor_values(tensor, numeric: bool, nullable: bool = True) -> list:
    """One V2 input tensor's values, checked against its feature's kind."""
    name = tensor.name
    kind = "numeric" if numeric else "categorical"
    allowed = NUMERIC_DATATYPES if numeric else CATEGORICAL_DATATYPES
    if tensor.datatype not in allowed:
        raise InvalidInput(
            f"input '{name}': datatype {tensor.datatype} does not fit a {kind} feature "
            f"(use {', '.join(sorted(allowed))})"
        )
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise InvalidInput(f"input '{name}': shape {shape}, expected [n] (one value per row)")
    values = _flatten(tensor.data, name)
    if len(values) != shape[0]:
        raise InvalidInput(f"input '{name}': shape {shape} but {len(values)} values in 'data'")
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = values[row] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"input '{name}', row {row}: not UTF-8 text") from None
        problem = _value_problem(value, numeric, nullable)
        if problem:
            raise InvalidInput(f"input '{name}', row {row}: {problem}")
    return values


def columns_from_tensors(request, schema: dict, max_rows: int | None = None) -> dict[str, list]:
    """Validate a V2 request (one tensor per feature) and return its values column by column.

    Raises:
        InvalidInput: naming the input (and the row) that is wrong.
        PayloadTooLarge: a tensor with more rows than `max_rows` (HTTP 413).
    """
    features = _Features.of(schema)
    if not request.inputs:
        raise InvalidInput(
            f"field 'inputs' is empty: send one tensor per feature ({_names(features.names)})"
        )
    columns: dict[str, list] = {}
    for tensor in request.inputs:
        if tensor.name not in features.names:
            raise InvalidInput(
                f"input '{tensor.name}' is not a feature (expected {_names(features.names)})"
            )
        if tensor.name in columns:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        shape = list(tensor.shape)
        if shape and isinstance(shape[0], int):
            _too_many_rows(shape[0], max_rows, f"input '{tensor.name}'")
        columns[tensor.name] = _tensor_values(
            tensor, tensor.name in features.numeric, tensor.name not in features.required
        )
    for name in features.names:
        if name not in columns:
            raise InvalidInput(f"input for feature '{name}' is missing (one tensor per feature)")
    first = features.names[0]
    for name in features.names[1:]:
        if len(columns[name]) != len(columns[first]):
            raise InvalidInput(
                f"inputs differ in length: '{first}' has {len(columns[first])} values, "
                f"'{name}' has {len(columns[name])}"
            )
    if not columns[first]:
        raise InvalidInput("the inputs are empty: send at least one row")
    return columns


def frame_from_columns(columns: dict[str, list], schema: dict) -> pd.DataFrame:
    """Validated columns as the model's input, exactly as training built it (`as_model_input`).

    Numeric columns become float64 with NaN for null, so a batch of integers, or of nulls only,
    reaches the imputer and scaler as the numbers they expect.
    """
    numeric = set(feature_names(schema, NUMERIC))
    names = feature_names(schema)
    data = {}
    for name in names:
        values = columns[name]
        if name in numeric:
            data[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
        else:
            # What as_model_input does with pandas (str of each value, the missing token for
            # null and NaN), in plain Python: for a few rows, pandas' per-column overhead is most
            # of a request's cost (about 2 ms against 0.1 ms for one row here).
            data[name] = np.array(
                [MISSING_CATEGORY if _is_missing(v) else str(v) for v in values], dtype=object
            )
    return pd.DataFrame(data, columns=names)


def _flag(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{field}: expected true or false, got {_json_type(value)}")
    return value


def _v1_wants_probabilities(payload: dict) -> bool:
    return _flag(payload.get(PROBABILITIES_FIELD, False), f"field '{PROBABILITIES_FIELD}'")


def _v2_outputs(request) -> tuple[bool, bool]:
    """(predictions, probabilities): which outputs a V2 request asks for.

    Probabilities are asked for by the request parameter `return_probabilities: true`, or by
    naming the output "probabilities" in "outputs"; a request that names its outputs gets only
    those (the Open Inference Protocol's rule).
    """
    parameters = request.parameters or {}
    wants = _flag(parameters.get(PROBABILITIES_FIELD, False), f"parameter '{PROBABILITIES_FIELD}'")
    if not request.request_outputs:
        return True, wants
    names = []
    for index, output in enumerate(request.request_outputs):
        if output.name not in (OUTPUT_NAME, PROBABILITIES_OUTPUT):
            raise InvalidInput(
                f"outputs[{index}]: unknown output '{output.name}' "
                f"(expected {OUTPUT_NAME} or {PROBABILITIES_OUTPUT})"
            )
        names.append(output.name)
    return OUTPUT_NAME in names, wants or PROBABILITIES_OUTPUT in names


def _output_datatype(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Predictions as a numpy array KServe can encode, and their V2 datatype."""
    if values.dtype.kind == "b":
        return values, "BOOL"
    if values.dtype.kind in "iu":
        return values.astype(np.int64), "INT64"
    if values.dtype.kind == "f":
        return values.astype(np.float64), "FP64"
    # Strings: KServe's JSON encoder for BYTES expects Python objects, not a numpy str array.
    return values.astype(object), "BYTES"


def _label_datatype(schema: dict) -> str:
    if schema["task"] == "regression":
        return "FP64"
    classes = schema.get("classes") or []
    if classes and all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    return "BYTES"


# --- The model --------------------------------------------------------------------------------


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
    """

    model: object
    metadata: dict
    schema: dict
    version: str
    folder: Path
    temporary: bool = False

    @classmethod
    def from_folder(cls, folder: Path, temporary: bool = False) -> "LoadedVersion":
        model, metadata = load_model_folder(folder)
        return cls(model, metadata, metadata["schema"], str(metadata["version"]), folder, temporary)

    def classes(self) -> list | None:
        """The class labels in predict_proba's column order, or None without probabilities."""
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
    """

    def __init__(
        self,
        name: str,
        model_dir: str | os.PathLike | None = None,
        *,
        registry=None,
        alias: str = DEFAULT_ALIAS,
        max_batch_rows: int | None = DEFAULT_MAX_BATCH_ROWS,
    ):
        super().__init__(name)
        if (model_dir is None) == (registry is None):
            raise ValueError("TabularModel: give either model_dir or registry")
        self.model_dir = None if model_dir is None else model_folder(model_dir)
        self._model_uri = None if model_dir is None else str(model_dir)
        self.registry = registry
        self.alias = alias
        self.max_batch_rows = max_batch_rows
        self._loaded: LoadedVersion | None = None
        # One reload at a time (SIGHUP and the admin route may race); predictions never wait.
        self._reload_lock = threading.Lock()

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

    def _load_version(self, version: str | None = None) -> LoadedVersion:
        if self.registry is None:
            folder = local_model_folder(self._model_uri)
            return LoadedVersion.from_folder(folder, temporary=folder != self.model_dir)
        uri = self.registry.uri(version)
        folder = local_model_folder(uri)
        return LoadedVersion.from_folder(folder, temporary=str(folder) != uri)

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
                _say(f"reload refused: {error}; still serving {previous}")
                raise ReloadRefused(f"{error}; still serving {previous}") from None
            except Exception as error:  # the store or the unpickling: report, keep serving
                _say(f"reload failed: {type(error).__name__}: {error}; still serving {previous}")
                raise ReloadFailed(
                    f"{type(error).__name__}: {error}; still serving {previous}"
                ) from error
            # The swap: a request in flight keeps the LoadedVersion it read at its start.
            self._loaded = loaded
            self.ready = True
            if current is not None:
                current.discard()
            _say(f"reloaded {self.name} {self.alias}: {previous} -> {loaded.version}")
            return self._reload_answer(loaded.version, previous, changed=True)

    def _reload_answer(self, version: str, previous: str | None, changed: bool) -> dict:
        return {"version": version, "previous": previous, "changed": changed, "alias": self.alias}

    def stop(self) -> None:
        super().stop()
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
        return [{"name": OUTPUT_NAME, "datatype": _label_datatype(self.schema), "shape": [-1]}]

    def predict(self, payload, headers: dict | None = None):
        """Predict for a V1 body (a dict) or a V2 `kserve.InferRequest`.

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
            want_predictions, want_probabilities = _v2_outputs(payload)
            columns = columns_from_tensors(payload, loaded.schema, self.max_batch_rows)
            field = f"parameter '{PROBABILITIES_FIELD}'"
        else:
            columns = columns_from_instances(payload, loaded.schema, self.max_batch_rows)
            want_predictions, want_probabilities = True, _v1_wants_probabilities(payload)
            field = f"field '{PROBABILITIES_FIELD}'"
        classes = None
        if want_probabilities:
            classes = loaded.classes()
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
        frame = frame_from_columns(columns, loaded.schema)
        try:
            predictions = np.asarray(loaded.model.predict(frame))
            probabilities = (
                np.asarray(loaded.model.predict_proba(frame), dtype=np.float64)
                if want_probabilities
                else None
            )
        except PipelineInputError as error:
            # A model with fairness post-processing decides by the sensitive column's group:
            # a group it was not fitted with is the client's to fix (components.common.mitigation).
            raise InvalidInput(str(error)) from None
        if is_v2:
            return self._infer_response(
                payload, loaded, predictions if want_predictions else None, probabilities, classes
            )
        response = {"predictions": predictions.tolist()}
        if probabilities is not None:
            response["probabilities"] = probabilities.tolist()
            response["classes"] = classes
        response["model_version"] = loaded.version
        return response

    def _infer_response(self, request, loaded, predictions, probabilities, classes):
        outputs = []
        if predictions is not None:
            values, datatype = _output_datatype(predictions)
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
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            model_version=loaded.version,
        )


# --- The HTTP layer: body limit, error answers, the admin route -------------------------------


def _first_non_finite(payload) -> tuple[tuple, float] | None:
    """The path to the first NaN or ±Infinity in a decoded JSON document, and the value."""
    stack: list[tuple[tuple, object]] = [((), payload)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path, value
        if isinstance(value, dict):
            stack.extend((path + (key,), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(
                (path + (index,), item) for index, item in reversed(list(enumerate(value)))
            )
    return None


def _where(payload, path: tuple) -> str:
    """A JSON path as the validation messages name places: a V1 row's feature, a V2 input's row."""
    if len(path) == 3 and path[0] == "instances" and isinstance(path[1], int):
        return f"instances[{path[1]}]: feature '{path[2]}'"
    if len(path) >= 4 and path[0] == "inputs" and path[2] == "data":
        tensor = payload["inputs"][path[1]]
        name = tensor.get("name", path[1]) if isinstance(tensor, dict) else path[1]
        return f"input '{name}', row {path[3]}"
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"field '{dotted}'"


def describe_bad_json(body: bytes) -> str | None:
    """Why a request body is not JSON, naming the row and feature of a NaN or Infinity.

    KServe parses V1 bodies with orjson, which refuses the NaN and Infinity tokens that Python's
    json.dumps writes by default, with a message that names a character offset only.

    Returns:
        One line, or None if Python's parser finds nothing wrong either.
    """
    if not body.strip():
        return 'request body is empty: expected JSON like {"instances": [{feature: value}]}'
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"request body: not UTF-8 text (byte {error.start})"
    try:
        payload = json.loads(text)  # Python's parser reads NaN, Infinity and 1e999 (as inf)
    except json.JSONDecodeError as error:
        return (
            f"request body: not valid JSON ({error.msg} at line {error.lineno} "
            f"column {error.colno})"
        )
    found = _first_non_finite(payload)
    if found is None:
        return None
    path, value = found
    where = _where(payload, path)
    if math.isnan(value):
        return f"{where} is NaN, which is not JSON: send null for a missing value"
    return f"{where} must be a finite number, got {'' if value > 0 else '-'}Infinity"


def _is_loopback_client(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return address.is_loopback or bool(mapped and mapped.is_loopback)


async def _send_json(send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of an oversized body is not read: this connection is done.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with HTTP 413 before it is parsed.

    A declared Content-Length over the limit is refused before a byte of the body is read; a
    body without one (chunked) is counted as it arrives and refused once it passes the limit.
    A body within the limit is handed on whole, and kept in the scope for the error handlers.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> dict:
        return {
            "error": f"request body: {size}, over this server's limit of {self.max_bytes} bytes "
            "(--max_body_bytes): send fewer rows per request"
        }

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_json(send, 413, self._too_large(f"{int(value)} bytes"))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_json(send, 413, self._too_large(f"more than {self.max_bytes} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope[BODY_SCOPE_KEY] = body
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)


def _rejected(status: int, message: str):
    from fastapi.responses import JSONResponse

    logging.getLogger("kserve").warning("rejected request (HTTP %d): %s", status, message)
    return JSONResponse(status_code=status, content={"error": message})


async def _invalid_input_handler(request, error):
    """KServe's InvalidInput answer (400, {"error": ...}), with 413 for the limits, and a
    message that names the row and feature when a V1 body holds NaN or Infinity."""
    message = str(error)
    if message.startswith("Unrecognized request format"):
        body = request.scope.get(BODY_SCOPE_KEY)
        message = (describe_bad_json(body) if body is not None else None) or message
    return _rejected(getattr(error, "status_code", 400), message)


# V2's body is typed `InferenceRequest | bytes`: pydantic names the union's member in each
# problem's location, and reports the `bytes` member's failure too, which says nothing useful.
_UNION_MEMBERS = ("body", "InferenceRequest", "bytes")


def _loc(location) -> str:
    parts = [p for p in location if p not in _UNION_MEMBERS]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


async def _request_validation_handler(request, error):
    """FastAPI answers a V2 body that is not JSON, or not an inference request, with 422 and
    its own shape ({"detail": [...]}); clients of this server get 400 and {"error": ...}."""
    problems = error.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        body = request.scope.get(BODY_SCOPE_KEY, b"")
        return _rejected(400, describe_bad_json(body) or "request body: not valid JSON")
    problems = [p for p in problems if "bytes" not in p.get("loc", ())[1:2]] or problems
    first = problems[0] if problems else {"loc": (), "msg": "not an inference request"}
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    field = _loc(first.get("loc", ())) or "request body"
    return _rejected(400, f"field '{field}': {first.get('msg')}{more}")


def harden_app(app, model: TabularModel, max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES):
    """Add the body limit, this server's error answers and `POST /admin/reload` to a FastAPI app.

    Call it after KServe has added its own exception handlers (RESTServer.create_application),
    so that these replace them.

    Args:
        app: the FastAPI app (KServe's `kserve.model_server.app`).
        model: the served model, which the admin route reloads.
        max_body_bytes: the largest request body (None: no limit).
    """
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    if max_body_bytes is not None:
        app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(InvalidInput, _invalid_input_handler)
    app.add_exception_handler(RequestValidationError, _request_validation_handler)

    async def admin_reload(request: Request) -> JSONResponse:
        client = request.client.host if request.client else None
        if not _is_loopback_client(client):
            return JSONResponse(
                status_code=403,
                content={
                    "error": f"{ADMIN_RELOAD_PATH}: allowed from this machine only "
                    f"(127.0.0.1 or ::1), not from {client}; or send the server SIGHUP"
                },
            )
        try:
            # In a worker thread: requests go on being answered while the new version loads.
            answer = await asyncio.to_thread(model.reload)
        except (ReloadRefused, ReloadFailed) as error:
            return JSONResponse(
                status_code=error.status_code,
                content={"error": str(error), "version": model.version, "changed": False},
            )
        return JSONResponse(content=answer)

    app.add_api_route(ADMIN_RELOAD_PATH, admin_reload, methods=["POST"], tags=["admin"])


# --- The server -------------------------------------------------------------------------------


class _RejectedRequestFilter(logging.Filter):
    """KServe logs every InvalidInput (400) and ModelNotFound (404) as an ERROR with a
    traceback. A client's bad request is not a server fault: log it as one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, InvalidInput | kserve.errors.ModelNotFound):
            record.msg, record.args, record.exc_info = "rejected request: %s", (error,), None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _quiet_logging() -> None:
    """Warnings and errors only, unless KSERVE_LOGLEVEL asks for more; no access log."""
    logging.getLogger("kserve").addFilter(_RejectedRequestFilter())
    # KServe 0.21 answers with ORJSONResponse, which this FastAPI deprecates with a warning on
    # the first requests; it is KServe's to change, and says nothing about this server.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    if "KSERVE_LOGLEVEL" in os.environ:
        return
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _Shutdown:
    """The SIGINT/SIGTERM handler: stop serving gracefully, exit code 0.

    While serving, uvicorn handles both signals itself; when it is done it restores the
    handlers it found and raises the signal again. With Python's defaults, that would kill the
    process by SIGTERM or raise KeyboardInterrupt after a clean shutdown. This handler only
    asks uvicorn to exit, which is harmless then and, before uvicorn starts, makes it stop right
    after startup. Before there is a server at all, there is nothing to drain: exit at once.
    """

    def __init__(self):
        self.server = None  # the uvicorn.Server, once it exists

    def __call__(self, signum, frame) -> None:
        if self.server is None:
            raise SystemExit(0)
        self.server.should_exit = True


class _ReloadOnHangup:
    """The SIGHUP handler of a server that follows an alias: reload it in a thread of its own,
    so that the event loop (on this, the main thread) goes on answering requests."""

    def __init__(self, model: TabularModel):
        self.model = model

    def _reload(self) -> None:
        try:
            self.model.reload()
        except (ReloadRefused, ReloadFailed):
            pass  # reload() has logged why, and the old version goes on serving

    def __call__(self, signum, frame) -> None:
        if not self.model.ready:
            _say("SIGHUP before the model was loaded: ignored")
            return
        threading.Thread(target=self._reload, name="mlpipe-reload", daemon=True).start()


def _display_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def serve(
    model_dir: str | os.PathLike | None = None,
    host: str = LOOPBACK,
    port: int = 8080,
    name: str | None = None,
    *,
    rest_options: dict | None = None,
    model_store: str | None = None,
    alias: str = DEFAULT_ALIAS,
    max_batch_rows: int | None = DEFAULT_MAX_BATCH_ROWS,
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Serve a registered model version in the foreground until SIGINT or SIGTERM.

    Args:
        model_dir: the registered model folder, or an s3:// or gs:// version URI; or None with
            `model_store`.
        host: the address to bind; 127.0.0.1 keeps the server private to this machine.
        port: the HTTP port.
        name: the model's name in URLs; by default the name in metadata.json. With
            `model_store`, the model's name in the store (required).
        rest_options: more keyword arguments for KServe's RESTServer (event_loop,
            timeout_keep_alive, access_log_format, ssl_certfile, ssl_keyfile).
        model_store: serve the version `alias` names in this registry, and read the alias again
            on SIGHUP or `POST /admin/reload`.
        alias: champion, candidate, or a version such as v3.
        max_batch_rows: the most rows per request (HTTP 413 above it); None: no limit.
        max_body_bytes: the largest request body (HTTP 413 above it); None: no limit.

    Raises:
        PipelineInputError: the model folder is incomplete, a checksum differs, the alias names
            no version, or the model cannot be loaded.
    """
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer
    from uvicorn.importer import import_from_string

    from components.common.registry import ModelRegistry

    shutdown = _Shutdown()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, shutdown)

    if model_store is not None:
        if model_dir is not None:
            raise PipelineInputError("give --model_dir or --model_store, not both")
        if not name:
            raise PipelineInputError(
                f"--model_store '{model_store}': --model_name is required (the model's name "
                "in the store)"
            )
        model = TabularModel(
            name,
            registry=ModelRegistry(model_store, name),
            alias=alias,
            max_batch_rows=max_batch_rows,
        )
    elif model_dir is not None:
        if not name and "://" in str(model_dir) and not str(model_dir).startswith("file://"):
            # The name is in the version's URI: <store>/<name>/v<N>.
            name = str(model_dir).rstrip("/").rsplit("/", 2)[-2]
        model = TabularModel(
            name or read_model_metadata(model_dir)["name"],
            model_dir,
            max_batch_rows=max_batch_rows,
        )
    else:
        raise PipelineInputError("give --model_dir or --model_store")
    if model.registry is not None:
        # Before loading: a SIGHUP during start-up must not end the process (its default
        # action). A server of one folder keeps that default: it has nothing to reload.
        signal.signal(signal.SIGHUP, _ReloadOnHangup(model))
    model.load()

    class _Server(RESTServer):
        def create_application(self):
            super().create_application()
            harden_app(import_from_string(FASTAPI_APP_IMPORT_STRING), model, max_body_bytes)

    # The ModelServer supplies the model registry and data plane; its own start() is not used,
    # because its REST server binds 0.0.0.0 and it would start gRPC on [::].
    model_server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1)
    _quiet_logging()
    model_server.register_model(model)
    rest_server = _Server(
        FASTAPI_APP_IMPORT_STRING,
        model_server.dataplane,
        model_server.model_repository_extension,
        port,
        workers=1,
        **(rest_options or {}),
    )
    # uvicorn.Server binds to config.host at startup, and RESTServer's server holds this very
    # Config object, so changing it here is enough.
    rest_server.config.host = host
    shutdown.server = rest_server._server
    scheme = "https" if rest_server.config.ssl_certfile else "http"
    following = f" ({alias} of {model_store})" if model_store is not None else ""
    _say(f"serving {model.name} {model.version}{following} at {_display_url(scheme, host, port)}")
    try:
        rest_server.run()
    finally:
        model.stop()


def _limit(env: str):
    """An argparse type: a positive integer, from the command line or from `env`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(
                f"expected a positive integer (from the command line or {env}), got {text!r}"
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """KServe's own server flags, plus what to serve, --host and the request limits."""
    parser = argparse.ArgumentParser(
        prog="python -m components.deploy.server",
        description="Serve a registered model version with KServe (V1 and V2 REST, no gRPC).",
        # The module's docstring says what is served, what is refused, and how to reload.
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[kserve.model_server.parser],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model_dir",
        help="the registered model folder (a path, file://, or an s3:// or gs:// version URI)",
    )
    source.add_argument(
        "--model_store",
        help="serve the version --alias names in this registry (with --model_name); "
        f"SIGHUP or POST {ADMIN_RELOAD_PATH} (from this machine) reads the alias again",
    )
    parser.add_argument(
        "--alias",
        help=f"with --model_store: {DEFAULT_ALIAS} (the default), candidate, or a version such "
        "as v3",
    )
    parser.add_argument(
        "--host", default=LOOPBACK, help="the address to bind (0.0.0.0 only inside a container)"
    )
    parser.add_argument(
        "--max_batch_rows",
        type=_limit(MAX_BATCH_ROWS_ENV),
        default=os.environ.get(MAX_BATCH_ROWS_ENV, str(DEFAULT_MAX_BATCH_ROWS)),
        help=f"the most rows per request, HTTP 413 above (env {MAX_BATCH_ROWS_ENV}, "
        f"default {DEFAULT_MAX_BATCH_ROWS})",
    )
    parser.add_argument(
        "--max_body_bytes",
        type=_limit(MAX_BODY_BYTES_ENV),
        default=os.environ.get(MAX_BODY_BYTES_ENV, str(DEFAULT_MAX_BODY_BYTES)),
        help=f"the largest request body in bytes, HTTP 413 above (env {MAX_BODY_BYTES_ENV}, "
        f"default {DEFAULT_MAX_BODY_BYTES}: 10 MiB)",
    )
    # --model_name comes from KServe's parser; None means "the name in metadata.json".
    # gRPC defaults to off here: `--enable_grpc true` is refused rather than ignored.
    parser.set_defaults(model_name=None, enable_grpc=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the server; a bad model folder or store is one `error: ...` line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # KServe flags this server cannot honour are refused, not silently ignored.
    if args.enable_grpc:
        parser.error("--enable_grpc: this server serves REST only")
    if args.workers != 1:
        parser.error("--workers: this server runs one worker")
    if args.model_store and not args.model_name:
        parser.error("--model_store needs --model_name (the model's name in the store)")
    if args.alias and not args.model_store:
        parser.error("--alias goes with --model_store (--model_dir serves one folder)")
    rest_options = {
        key: getattr(args, key)
        for key in (
            "event_loop",
            "timeout_keep_alive",
            "access_log_format",
            "ssl_certfile",
            "ssl_keyfile",
        )
    }
    try:
        serve(
            args.model_dir,
            host=args.host,
            port=args.http_port,
            name=args.model_name,
            rest_options=rest_options,
            model_store=args.model_store,
            alias=args.alias or DEFAULT_ALIAS,
            max_batch_rows=args.max_batch_rows,
            max_body_bytes=args.max_body_bytes,
        )
    except PipelineInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
