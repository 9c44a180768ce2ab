"""The V1 and V2 protocols as this server speaks them: requests decoded and validated column by
column, the model's input built from them, and the outputs' datatypes.

Every request is validated before the model sees it: a client's mistake is an `InvalidInput`
(HTTP 400) naming the field and the row, never a 500, and the server keeps serving:
  - a missing or unknown feature, a value of the wrong type, a string for a number;
  - ±Infinity anywhere, and null or NaN (a missing value, which the model imputes) in a feature
    whose schema entry says `"nullable": false`;
  - an empty batch;
  - more rows than the server's --max_batch_rows: `PayloadTooLarge`, HTTP 413.
Every feature of the schema is required, sensitive columns included (a model with fairness
post-processing reads each row's group from its sensitive column).

Class probabilities, when asked: V1 `{"instances": [...], "return_probabilities": true}`; V2
`"parameters": {"return_probabilities": true}`, or naming the output "probabilities".
"""

import math
import numbers
import operator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from components.common.schema import MISSING_CATEGORY, NUMERIC, feature_names
from serving.kserve_compat import import_kserve

kserve = import_kserve()
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


class PayloadTooLarge(InvalidInput):
    """A request over one of the server's limits: HTTP 413, not 400.

    A subclass of InvalidInput, so that callers in process catch it with every other bad input.
    """

    status_code = 413


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
    name_set: frozenset[str]
    numeric: frozenset[str]
    # Features whose schema entry says "nullable": false; every other one may be missing.
    required: frozenset[str]

    @classmethod
    def of(cls, schema: dict) -> "_Features":
        names = feature_names(schema)
        return cls(
            names=names,
            name_set=frozenset(names),
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
    # The common case at C speed: every row an object of as many keys as there are features,
    # and each feature found in every row (so no other key either). Any other row is found
    # again, one by one, for its message (`_row_problem`).
    try:
        if set(map(type, rows)) != {dict} or set(map(len, rows)) != {len(features.names)}:
            raise KeyError
        columns = {name: list(map(operator.itemgetter(name), rows)) for name in features.names}
    except KeyError:
        for index, row in enumerate(rows):
            _row_problem(row, index, features)
        raise AssertionError("a row was refused, but none is wrong") from None
    for name, values in columns.items():
        _check_column(values, name in features.numeric, name not in features.required, name)
    return columns


def _row_problem(row, index: int, features: "_Features") -> None:
    """Raise the InvalidInput of a V1 row that is not an object of exactly the features."""
    where = f"instances[{index}]"
    if not isinstance(row, dict):
        raise InvalidInput(f"{where}: expected an object of feature values, got {_json_type(row)}")
    for key in row:
        if key not in features.name_set:
            raise InvalidInput(
                f"{where}: unknown feature '{key}' (expected {_names(features.names)})"
            )
    for name in features.names:
        if name not in row:
            raise InvalidInput(f"{where}: feature '{name}' is missing")


# The value types a column may hold without a closer look: numbers for a numeric feature, text
# and numbers for a categorical one (bool is not int here: `type(True) is bool`). Floats are
# then checked for infinity (and NaN, which a non-nullable feature refuses) with numpy.
_PLAIN_NUMERIC = frozenset({int, float})
_PLAIN_CATEGORICAL = frozenset({str, int, float})
_NONE = type(None)


def _first_problem(values: list, numeric: bool, nullable: bool) -> tuple[int, str] | None:
    """The first bad value of a column, (its row, what is wrong), or None.

    The types of all values are collected at once (`set(map(type, values))`) and the floats
    checked with numpy; only a column that may hold a problem is walked value by value
    (`_value_problem`), to name the first row that has one.
    """
    kinds = set(map(type, values))
    plain = _PLAIN_NUMERIC if numeric else _PLAIN_CATEGORICAL
    suspect = bool(kinds - plain - {_NONE}) or (_NONE in kinds and not nullable)
    if not suspect and float in kinds:
        if numeric:  # ints and floats (and null: NaN), all converted at once
            floats = np.array(values, dtype=np.float64)
        else:
            floats = np.array([v for v in values if type(v) is float], dtype=np.float64)
        finite = np.isfinite(floats)
        # null (NaN here) is fine where the feature is nullable; infinity never
        suspect = not (finite | np.isnan(floats)).all() if nullable else not finite.all()
    if not suspect:
        return None
    for index, value in enumerate(values):
        problem = _value_problem(value, numeric, nullable)
        if problem:
            return index, problem
    return None


def _check_column(values: list, numeric: bool, nullable: bool, name: str) -> None:
    """Validate one V1 column; the first bad value's message names its row and the feature."""
    found = _first_problem(values, numeric, nullable)
    if found:
        raise InvalidInput(f"instances[{found[0]}]: feature '{name}' {found[1]}")


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
    data = tensor.data
    # A flat JSON array (the usual columnar tensor) is taken as it is; nested arrays are
    # flattened, and a binary tensor's numpy array becomes a list.
    flat = type(data) is list and list not in set(map(type, data))
    values = data if flat else _flatten(data, name)
    if len(values) != shape[0]:
        raise InvalidInput(f"input '{name}': shape {shape} but {len(values)} values in 'data'")
    if bytes in set(map(type, values)):  # at C speed: a generator here cost ~1 ms per 14k values
        values = list(values)
        for row, value in enumerate(values):
            if isinstance(value, bytes):
                try:
                    values[row] = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput(f"input '{name}', row {row}: not UTF-8 text") from None
    found = _first_problem(values, numeric, nullable)
    if found:
        raise InvalidInput(f"input '{name}', row {found[0]}: {found[1]}")
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


def arrays_from_columns(columns: dict[str, list], schema: dict) -> dict[str, np.ndarray]:
    """Validated columns as numpy arrays, as training builds the model's input
    (`as_model_input`): numbers float64 with NaN for null, so a batch of integers, or of nulls
    only, reaches the imputer and scaler as the numbers they expect; categories str objects,
    MISSING_CATEGORY for null and NaN. Both runtimes take these: the ONNX graph as its feed,
    scikit-learn as a DataFrame of them (`frame_from_arrays`)."""
    numeric = set(feature_names(schema, NUMERIC))
    data = {}
    for name in feature_names(schema):
        values = columns[name]
        if name in numeric:
            data[name] = np.array(values, dtype=np.float64)  # numpy reads None as NaN
        elif set(map(type, values)) == {str}:
            data[name] = np.array(values, dtype=object)
        else:
            # What as_model_input does with pandas (str of each value, the missing token for
            # null and NaN), in plain Python: for a few rows, pandas' per-column overhead is most
            # of a request's cost (about 2 ms against 0.1 ms for one row here).
            data[name] = np.array(
                [MISSING_CATEGORY if _is_missing(v) else str(v) for v in values], dtype=object
            )
    return data


def frame_from_arrays(arrays: dict[str, np.ndarray], schema: dict) -> pd.DataFrame:
    """`arrays_from_columns`' arrays as the scikit-learn model's input DataFrame."""
    return pd.DataFrame(arrays, columns=feature_names(schema))


def frame_from_columns(columns: dict[str, list], schema: dict) -> pd.DataFrame:
    """Validated columns as the model's input, exactly as training built it (`as_model_input`)."""
    return frame_from_arrays(arrays_from_columns(columns, schema), schema)


def _flag(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{field}: expected true or false, got {_json_type(value)}")
    return value


def v1_wants_probabilities(payload: dict) -> bool:
    """Whether a V1 body asks for class probabilities ("return_probabilities": true)."""
    return _flag(payload.get(PROBABILITIES_FIELD, False), f"field '{PROBABILITIES_FIELD}'")


def requested_v2_outputs(request) -> tuple[bool, bool]:
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


def output_datatype(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Predictions as a numpy array KServe can encode, and their V2 datatype."""
    if values.dtype.kind == "b":
        return values, "BOOL"
    if values.dtype.kind in "iu":
        return values.astype(np.int64), "INT64"
    if values.dtype.kind == "f":
        return values.astype(np.float64), "FP64"
    # Strings: KServe's JSON encoder for BYTES expects Python objects, not a numpy str array.
    return values.astype(object), "BYTES"


def label_datatype(schema: dict) -> str:
    """The V2 datatype of a model's predictions, from its schema (for the model's metadata)."""
    if schema["task"] == "regression":
        return "FP64"
    classes = schema.get("classes") or []
    if classes and all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    return "BYTES"
