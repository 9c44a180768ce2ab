"""The KServe model server for one registered model version.

    python -m components.deploy.server --model_dir DIR [--http_port 8080] [--host 127.0.0.1]

It serves the KServe SDK's own REST app, V1 (`/v1/models/NAME:predict`) and V2 (the Open
Inference Protocol, `/v2/models/NAME/infer`), with one worker and no gRPC, bound to `--host`:
127.0.0.1 unless told otherwise, where the stock `kserve.ModelServer` always binds 0.0.0.0.

Every request is validated before the model sees it: a client's mistake is an HTTP 400 naming
the field and the row, never a 500.

Every feature of the schema is required, sensitive columns included: a model with fairness
post-processing (bias.mitigation threshold_optimizer) reads each row's group from its sensitive
column, and refuses a group it was not fitted with, also with a 400.
"""

import argparse
import logging
import math
import numbers
import os
import signal
import sys
import uuid
import warnings

import numpy as np
import pandas as pd

from components.common.errors import PipelineInputError
from components.deploy.logic import (
    LOOPBACK,
    load_model_folder,
    model_folder,
    read_model_metadata,
)
from components.prepare.logic import as_model_input, feature_names
from components.validate.logic import NUMERIC


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
INTEGER_DATATYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
# FP16 is left out: KServe refuses it in JSON anyway.
NUMERIC_DATATYPES = INTEGER_DATATYPES | {"FP32", "FP64"}
# A categorical value is cast to a string before encoding, so numbers and booleans are fine too.
CATEGORICAL_DATATYPES = NUMERIC_DATATYPES | {"BYTES", "BOOL"}
# Error messages list the expected features, up to this many.
LISTED_NAMES = 12


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


def _value_problem(value, numeric: bool) -> str | None:
    """What is wrong with one feature value, or None if it is acceptable.

    Null is fine for either kind: the model imputes missing values.
    """
    if value is None:
        return None
    kind = _json_type(value)
    if numeric:
        if kind != "number":
            return f"must be a number or null, got {kind} {_shown(value)}"
        if isinstance(value, numbers.Real) and math.isinf(value):
            return f"must be a finite number, got {value}"
        return None
    if kind not in ("string", "number", "boolean"):
        return f"must be a string, number or null, got {kind}"
    return None


def columns_from_instances(payload, schema: dict) -> dict[str, list]:
    """Validate a V1 request body and return its values column by column.

    Args:
        payload: the decoded body, expected to be {"instances": [{feature: value, ...}, ...]}.
        schema: the model's feature schema.

    Raises:
        InvalidInput: naming the field (and the row) that is wrong.
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
    features = feature_names(schema)
    numeric = set(feature_names(schema, NUMERIC))
    columns: dict[str, list] = {name: [] for name in features}
    for index, row in enumerate(rows):
        where = f"instances[{index}]"
        if not isinstance(row, dict):
            raise InvalidInput(
                f"{where}: expected an object of feature values, got {_json_type(row)}"
            )
        for key in row:
            if key not in columns:
                raise InvalidInput(
                    f"{where}: unknown feature '{key}' (expected {_names(features)})"
                )
        for name in features:
            if name not in row:
                raise InvalidInput(f"{where}: feature '{name}' is missing")
            problem = _value_problem(row[name], name in numeric)
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


def _tensor_values(tensor, numeric: bool) -> list:
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
        problem = _value_problem(value, numeric)
        if problem:
            raise InvalidInput(f"input '{name}', row {row}: {problem}")
    return values


def columns_from_tensors(request, schema: dict) -> dict[str, list]:
    """Validate a V2 request (one tensor per feature) and return its values column by column.

    Raises:
        InvalidInput: naming the input (and the row) that is wrong.
    """
    features = feature_names(schema)
    numeric = set(feature_names(schema, NUMERIC))
    if not request.inputs:
        raise InvalidInput(
            f"field 'inputs' is empty: send one tensor per feature ({_names(features)})"
        )
    columns: dict[str, list] = {}
    for tensor in request.inputs:
        if tensor.name not in features:
            raise InvalidInput(
                f"input '{tensor.name}' is not a feature (expected {_names(features)})"
            )
        if tensor.name in columns:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        columns[tensor.name] = _tensor_values(tensor, tensor.name in numeric)
    for name in features:
        if name not in columns:
            raise InvalidInput(f"input for feature '{name}' is missing (one tensor per feature)")
    first = features[0]
    for name in features[1:]:
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
    data = {}
    for name in feature_names(schema):
        values = columns[name]
        if name in numeric:
            data[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
        else:
            data[name] = pd.Series(values, dtype=object)
    return as_model_input(pd.DataFrame(data), schema)


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


class TabularModel(kserve.Model):
    """A registered scikit-learn Pipeline served by KServe, for V1 and V2 requests.

    Args:
        name: the model's name on the server (the URL path).
        model_dir: the registered model folder (model.joblib and metadata.json).
    """

    def __init__(self, name: str, model_dir: str | os.PathLike):
        super().__init__(name)
        self.model_dir = model_folder(model_dir)
        self.model = None
        self.metadata: dict = {}
        self.schema: dict = {}
        self.version: str | None = None

    def load(self) -> bool:
        """Load the Pipeline and metadata; refuse an incomplete folder.

        Raises:
            PipelineInputError: naming the folder and the missing or unreadable file.
        """
        self.model, self.metadata = load_model_folder(self.model_dir)
        self.schema = self.metadata["schema"]
        self.version = str(self.metadata["version"])
        self.ready = True
        return self.ready

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
            V1: {"predictions": [...], "model_version": VERSION}.
            V2: an InferResponse with one output, "predictions", and the model version.

        Raises:
            InvalidInput: the request is malformed (HTTP 400), naming the field and the row.
        """
        if not self.ready:
            raise kserve.errors.ModelNotReady(self.name)
        if isinstance(payload, kserve.InferRequest):
            columns = columns_from_tensors(payload, self.schema)
        else:
            columns = columns_from_instances(payload, self.schema)
        try:
            predictions = np.asarray(self.model.predict(frame_from_columns(columns, self.schema)))
        except PipelineInputError as error:
            # A model with fairness post-processing decides by the sensitive column's group:
            # a group it was not fitted with is the client's to fix (components.bias.mitigation).
            raise InvalidInput(str(error)) from None
        if isinstance(payload, kserve.InferRequest):
            return self._infer_response(payload, predictions)
        return {"predictions": predictions.tolist(), "model_version": self.version}

    def _infer_response(self, request, predictions: np.ndarray):
        values, datatype = _output_datatype(predictions)
        output = kserve.InferOutput(name=OUTPUT_NAME, shape=list(values.shape), datatype=datatype)
        output.set_data_from_numpy(values, binary_data=request.use_binary_outputs)
        return kserve.InferResponse(
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=[output],
            model_version=self.version,
        )


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


def _display_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def serve(
    model_dir: str | os.PathLike,
    host: str = LOOPBACK,
    port: int = 8080,
    name: str | None = None,
    *,
    rest_options: dict | None = None,
) -> None:
    """Serve a registered model version in the foreground until SIGINT or SIGTERM.

    Args:
        model_dir: the registered model folder.
        host: the address to bind; 127.0.0.1 keeps the server private to this machine.
        port: the HTTP port.
        name: the model's name in URLs; by default the name in metadata.json.
        rest_options: more keyword arguments for KServe's RESTServer (event_loop,
            timeout_keep_alive, access_log_format, ssl_certfile, ssl_keyfile).

    Raises:
        PipelineInputError: the model folder is incomplete or its model cannot be loaded.
    """
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    shutdown = _Shutdown()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, shutdown)

    model = TabularModel(name or read_model_metadata(model_dir)["name"], model_dir)
    model.load()

    # The ModelServer supplies the model registry and data plane; its own start() is not used,
    # because its REST server binds 0.0.0.0 and it would start gRPC on [::].
    model_server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1)
    _quiet_logging()
    model_server.register_model(model)
    rest_server = RESTServer(
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
    print(
        f"serving {model.name} {model.version} at {_display_url(scheme, host, port)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        rest_server.run()
    finally:
        model.stop()


def build_parser() -> argparse.ArgumentParser:
    """KServe's own server flags, plus --model_dir and --host."""
    parser = argparse.ArgumentParser(
        prog="python -m components.deploy.server",
        description="Serve a registered model version with KServe (V1 and V2 REST, no gRPC).",
        parents=[kserve.model_server.parser],
    )
    parser.add_argument("--model_dir", required=True, help="the registered model folder")
    parser.add_argument(
        "--host", default=LOOPBACK, help="the address to bind (0.0.0.0 only inside a container)"
    )
    # --model_name comes from KServe's parser; None means "the name in metadata.json".
    # gRPC defaults to off here: `--enable_grpc true` is refused rather than ignored.
    parser.set_defaults(model_name=None, enable_grpc=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the server; a bad model folder is one `error: ...` line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # KServe flags this server cannot honour are refused, not silently ignored.
    if args.enable_grpc:
        parser.error("--enable_grpc: this server serves REST only")
    if args.workers != 1:
        parser.error("--workers: this server runs one worker")
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
        )
    except PipelineInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
