"""A sink for KServe's payload logger: its CloudEvents, joined, written as the prediction log.

An InferenceService served by one of KServe's own runtimes does not run this project's server,
so nothing in it writes the prediction log. Its `spec.predictor.logger` (mode: all) makes KServe's
agent send every request and every response to this sink as CloudEvents:

    python -m serving.cloudevents_sink --log URI [--host 127.0.0.1] [--port 8080]

(`--log` defaults to $MLPIPE_PREDICTION_LOG.) The sink joins each request with its response and
writes them with `PredictionLog`, in the same lake layout as the server writes:
`<URI>/model=<ce-inferenceservicename>/date=<YYYY-MM-DD>/part-*.parquet`, one row per instance.

What it accepts (`POST /`), as KServe's logger (pkg/logger/worker.go) sends it:
  - binary mode: the headers `ce-specversion`, `ce-id`, `ce-type`, `ce-source` (required),
    `ce-inferenceservicename` (the model's name: required here), `ce-namespace`, `ce-component`,
    `ce-endpoint`, `ce-time`; the body is the request or the response as JSON. Structured mode
    (`Content-Type: application/cloudevents+json`, the same attributes in a JSON envelope) too.
  - `ce-type` `org.kubeflow.serving.inference.request` or `...inference.response`; request and
    response share their `ce-id` (the request id) and are joined on it (with the model and
    component), whichever arrives first. An event of another component than the predictor (a
    transformer's) is accepted and counted as `ignored`: its payloads are not the model's.
  - V1 requests `{"instances": [...]}`: rows of {feature: value}, or lists of values (the feature
    names are then unknown: columns f0, f1, ..., logged once per model); V2 requests
    `{"inputs": [tensor, ...]}`: a column per one-column tensor, by its name; one tensor of k
    columns (KServe's sklearn runtime sends `input-0`, shape [rows, k]) gives f0..f<k-1> as V1
    lists do, several give <name>_0, <name>_1, ....
  - V1 responses `{"predictions": [...]}` (KServe's runtimes), plus `probabilities`, `classes`
    and `model_version` as this project's server adds them; V2 responses whose outputs are
    `predictions` (else the first output) and `probabilities` (its classes in
    `parameters.classes`). The version is the response's `model_version`, else empty.

Answers: 202 once an event is taken (its rows are written later, in batches); 400 with a one-line
error for a malformed event (no JSON, a missing attribute, a payload that is neither V1 nor V2,
binary tensor data); 413 for a body over --max_body_bytes. `GET /healthz` answers 200 while
serving; `GET /stats` gives the counts.

What is lost, and counted in `/stats` (and logged as one line): a half whose partner does not
arrive within --ttl_seconds (`expired`); the oldest half when --max_pending halves wait
(`overflow`); a half replaced by a second one with the same id (`duplicate`); a pair whose
request and response have different row counts (`mismatched`); pairs of models beyond
--max_models (`models`); halves still waiting at shutdown (`shutdown`); and what the prediction
log itself drops (`log_dropped`, rows). KServe's logger sends a response only for an answer with
status 200: the request half of a refused request (a 400 from the model) waits alone and is
counted as `expired`. SIGTERM and SIGINT stop the sink gracefully: everything joined is flushed
to the lake before the process exits with code 0.

One replica only: a request and its response must reach the same sink to be joined.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import fsspec
import uvicorn
from cloudevents.exceptions import GenericException
from cloudevents.http import from_http
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from components.common.errors import PipelineInputError
from components.common.prediction_log import MAX_REQUEST_ID_CHARS, PredictionLog
from components.common.retry import one_line
from components.common.secrets import redact_url
from serving.protocol import OUTPUT_NAME, PROBABILITIES_OUTPUT

logger = logging.getLogger(__name__)

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
EVENT_KINDS = {REQUEST_EVENT: "request", RESPONSE_EVENT: "response"}
# The component whose payloads are the model's (KServe's logger sets ce-component).
PREDICTOR = "predictor"
LOG_ENV = "MLPIPE_PREDICTION_LOG"
LOOPBACK = "127.0.0.1"
DEFAULT_TTL_SECONDS = 60.0
DEFAULT_MAX_PENDING = 10_000
DEFAULT_MAX_MODELS = 100
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# The longest model name: a Kubernetes object name (an InferenceService's).
MAX_MODEL_CHARS = 253
DROP_REASONS = ("expired", "overflow", "duplicate", "mismatched", "models", "shutdown")


class MalformedEvent(ValueError):
    """An event the sink cannot take; the message is one line naming the header or field."""


@dataclass(frozen=True)
class Inputs:
    """A request's features: {column: [one value per row]} or a list of {feature: value} rows."""

    features: dict | list
    rows: int
    unnamed: bool = False  # lists of values: the columns are named f0, f1, ...


@dataclass(frozen=True)
class Outputs:
    """A response's predictions, with probabilities (rows of `classes` order) if it had any."""

    predictions: list
    probabilities: list | None = None
    classes: list | None = None
    model_version: str = ""


@dataclass(frozen=True)
class InferenceEvent:
    """One half of an exchange: a request's inputs or a response's outputs."""

    model: str
    request_id: str
    component: str
    kind: str  # "request" or "response"
    payload: Inputs | Outputs

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model, self.component, self.request_id


# --- Parsing -------------------------------------------------------------------------------


def _json_body(data) -> object:
    if isinstance(data, Mapping | list):
        return data  # structured mode: the envelope's "data" is already JSON
    if data is None or data in (b"", ""):
        raise MalformedEvent("the event has no data: expected the request or response as JSON")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedEvent(f"the event's data is not JSON ({one_line(error)})") from None


def _flatten(data) -> list:
    """A tensor's values in row-major order, whether sent flat or nested."""
    if not isinstance(data, list):
        return [data]
    flat = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _tensor(tensor, where: str) -> tuple[str, int, int, list]:
    """(name, rows, columns, values in row-major order) of a V2 tensor."""
    if not isinstance(tensor, Mapping):
        raise MalformedEvent(f"{where}: expected a tensor object, got {type(tensor).__name__}")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedEvent(f"{where}: 'name' is missing")
    if "data" not in tensor:
        raise MalformedEvent(
            f"{where} ('{name}'): no 'data' (binary tensor data is not supported: send JSON)"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise MalformedEvent(f"{where} ('{name}'): 'shape' must be a list of sizes, got {shape!r}")
    values = _flatten(tensor["data"])
    if math.prod(shape) != len(values):
        raise MalformedEvent(
            f"{where} ('{name}'): shape {shape} holds {math.prod(shape)} values, data has "
            f"{len(values)}"
        )
    rows = shape[0] if shape else 1
    columns = math.prod(shape[1:]) if len(shape) > 1 else 1
    return name, rows, columns, values


def _rows_of(values: list, rows: int, columns: int) -> list:
    """Row-major values as one value per row (one column) or one list per row."""
    if columns == 1:
        return values
    return [values[row * columns : (row + 1) * columns] for row in range(rows)]


def parse_request(body) -> Inputs:
    """A V1 or V2 inference request's features.

    Raises:
        MalformedEvent: neither V1 `instances` nor V2 `inputs`, no rows, or an unreadable tensor.
    """
    if not isinstance(body, Mapping):
        raise MalformedEvent(f"request: expected a JSON object, got {type(body).__name__}")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise MalformedEvent("request: 'instances' must be a non-empty list of rows")
        if all(isinstance(row, Mapping) for row in instances):
            return Inputs([dict(row) for row in instances], len(instances))
        if any(isinstance(row, Mapping) for row in instances):
            raise MalformedEvent("request: 'instances' mixes {feature: value} rows and lists")
        rows = [row if isinstance(row, list) else [row] for row in instances]
        features = [{f"f{index}": value for index, value in enumerate(row)} for row in rows]
        return Inputs(features, len(rows), unnamed=True)
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise MalformedEvent(
            "request: expected V1 'instances' or V2 'inputs' (a non-empty list of tensors)"
        )
    tensors = [_tensor(tensor, f"request: inputs[{i}]") for i, tensor in enumerate(inputs)]
    counts = {rows for _, rows, _, _ in tensors}
    if len(counts) != 1:
        raise MalformedEvent(f"request: the inputs have different row counts {sorted(counts)}")
    (rows,) = counts
    if rows == 0:
        raise MalformedEvent("request: the inputs have no rows")
    features: dict[str, list] = {}
    unnamed = False
    for name, _, columns, values in tensors:
        if columns == 1:
            features[name] = values
            continue
        # One matrix of features (KServe's sklearn runtime) is named as V1 lists are.
        unnamed = len(tensors) == 1
        prefix = "f" if unnamed else f"{name}_"
        for column in range(columns):
            features[f"{prefix}{column}"] = values[column::columns]
    return Inputs(features, rows, unnamed=unnamed)


def _classes(found, width: int, where: str) -> list:
    if isinstance(found, str):  # this project's server: a JSON array in a string
        try:
            found = json.loads(found)
        except ValueError:
            raise MalformedEvent(f"{where}: 'classes' is not a JSON array") from None
    if found is None:
        return list(range(width))  # no labels given: the columns' positions
    if not isinstance(found, list) or len(found) != width:
        raise MalformedEvent(f"{where}: expected {width} classes, got {found!r}"[:200])
    return found


def parse_response(body) -> Outputs:
    """A V1 or V2 inference response's predictions, probabilities and model version.

    Raises:
        MalformedEvent: neither V1 `predictions` nor V2 `outputs`, or unreadable probabilities.
    """
    if not isinstance(body, Mapping):
        raise MalformedEvent(f"response: expected a JSON object, got {type(body).__name__}")
    version = body.get("model_version")
    version = "" if version is None else str(version)
    if "predictions" in body:
        predictions = body["predictions"]
        if not isinstance(predictions, list):
            raise MalformedEvent("response: 'predictions' must be a list, one per row")
        probabilities = body.get(PROBABILITIES_OUTPUT)
        if probabilities is None:
            return Outputs(predictions, model_version=version)
        if not isinstance(probabilities, list) or not all(
            isinstance(row, list) for row in probabilities
        ):
            raise MalformedEvent("response: 'probabilities' must be a list of rows")
        width = len(probabilities[0]) if probabilities else 0
        classes = _classes(body.get("classes"), width, "response")
        return Outputs(predictions, probabilities, classes, version)
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise MalformedEvent(
            "response: expected V1 'predictions' or V2 'outputs' (a non-empty list of tensors)"
        )
    named = {}
    for index, tensor in enumerate(outputs):
        name, rows, columns, values = _tensor(tensor, f"response: outputs[{index}]")
        named[name] = (tensor, rows, columns, values)
    if OUTPUT_NAME in named:
        chosen = OUTPUT_NAME
    else:  # KServe's runtimes name it output-0
        others = [name for name in named if name != PROBABILITIES_OUTPUT]
        if not others:
            raise MalformedEvent(f"response: no '{OUTPUT_NAME}' output")
        chosen = others[0]
    _, rows, columns, values = named[chosen]
    predictions = _rows_of(values, rows, columns)
    if PROBABILITIES_OUTPUT not in named:
        return Outputs(predictions, model_version=version)
    tensor, p_rows, width, values = named[PROBABILITIES_OUTPUT]
    where = f"response: output '{PROBABILITIES_OUTPUT}'"
    if p_rows != rows:
        raise MalformedEvent(f"{where}: {p_rows} rows for {rows} predictions")
    classes = _classes((tensor.get("parameters") or {}).get("classes"), width, where)
    probabilities = [values[row * width : (row + 1) * width] for row in range(rows)]
    return Outputs(predictions, probabilities, classes, version)


def _attribute(event, name: str, required: bool = True) -> str:
    value = event.get(name)
    if value is None or str(value).strip() == "":
        if required:
            raise MalformedEvent(f"attribute '{name}' (header ce-{name}) is missing")
        return ""
    return str(value).strip()


def parse_event(headers: Mapping[str, str], body: bytes) -> InferenceEvent:
    """One CloudEvent (binary or structured mode) as the half of an exchange it carries.

    Raises:
        MalformedEvent: not a CloudEvent, not a KServe inference event, a missing or unusable
            id or model name, or a payload that is neither V1 nor V2.
    """
    try:
        event = from_http(headers, body, data_unmarshaller=lambda data: data)
    except GenericException as error:
        raise MalformedEvent(f"not a CloudEvent: {one_line(error)}") from None
    kind = EVENT_KINDS.get(_attribute(event, "type"))
    if kind is None:
        raise MalformedEvent(
            f"attribute 'type' is '{event.get('type')}', expected {REQUEST_EVENT} or "
            f"{RESPONSE_EVENT}"[:300]
        )
    request_id = _attribute(event, "id")
    if len(request_id) > MAX_REQUEST_ID_CHARS or not request_id.isprintable():
        raise MalformedEvent(
            f"attribute 'id' must be at most {MAX_REQUEST_ID_CHARS} printable characters"
        )
    model = _attribute(event, "inferenceservicename")
    if len(model) > MAX_MODEL_CHARS or "/" in model or "=" in model or not model.isprintable():
        raise MalformedEvent(f"attribute 'inferenceservicename' '{model[:60]}' is not a model name")
    component = _attribute(event, "component", required=False)
    body = _json_body(event.data)
    payload = parse_request(body) if kind == "request" else parse_response(body)
    return InferenceEvent(model, request_id, component, kind, payload)


# --- Joining -------------------------------------------------------------------------------


@dataclass
class _Half:
    event: InferenceEvent
    arrived: float


class Joiner:
    """Requests and responses waiting for their other half, at most `max_pending`, each for at
    most `ttl_seconds`; what leaves unjoined is counted by reason (`dropped`).

    Args:
        ttl_seconds: how long a half waits for its partner.
        max_pending: the most halves waiting; one more drops the oldest.
        clock: seconds, monotonic.
    """

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ttl_seconds <= 0 or max_pending < 1:
            raise ValueError("joiner: ttl_seconds must be above 0 and max_pending at least 1")
        self.ttl_seconds = ttl_seconds
        self.max_pending = max_pending
        self.clock = clock
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.joined = 0
        self._pending: OrderedDict[tuple, _Half] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event: InferenceEvent) -> tuple[Inputs, Outputs] | None:
        """Keep a half until its partner comes; with the partner here, the joined pair."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            key = event.key
            waiting = self._pending.get(key)
            if waiting is not None and waiting.event.kind != event.kind:
                del self._pending[key]
                self.joined += 1
                pair = {event.kind: event.payload, waiting.event.kind: waiting.event.payload}
                return pair["request"], pair["response"]
            if waiting is not None:
                # The same half twice (a retried send): keep the newer one.
                del self._pending[key]
                self._drop("duplicate", [waiting])
            while len(self._pending) >= self.max_pending:
                _, oldest = self._pending.popitem(last=False)
                self._drop("overflow", [oldest])
            self._pending[key] = _Half(event, now)
            return None

    def expire(self) -> int:
        """Drop the halves that waited longer than ttl_seconds; how many."""
        with self._lock:
            return self._expire(self.clock())

    def drain(self) -> int:
        """Drop every waiting half (at shutdown); how many."""
        with self._lock:
            halves = list(self._pending.values())
            self._pending.clear()
            self._drop("shutdown", halves)
            return len(halves)

    def _expire(self, now: float) -> int:
        expired = []
        while self._pending:
            key, half = next(iter(self._pending.items()))
            if now - half.arrived <= self.ttl_seconds:
                break  # oldest first: the rest are younger
            del self._pending[key]
            expired.append(half)
        self._drop("expired", expired)
        return len(expired)

    def _drop(self, reason: str, halves: list[_Half]) -> None:
        if not halves:
            return
        self.dropped[reason] += len(halves)
        first = halves[0].event
        logger.warning(
            "cloudevents sink: %d unmatched half(s) dropped (%s), e.g. the %s of model %s id %s",
            len(halves),
            reason,
            first.kind,
            first.model,
            first.request_id,
        )


# --- The sink ------------------------------------------------------------------------------


@dataclass
class _Counts:
    received: int = 0
    malformed: int = 0
    ignored: int = 0
    extra: dict = field(default_factory=lambda: {"mismatched": 0, "models": 0})


class CloudEventsSink:
    """Joined KServe payload-logger events, recorded in one `PredictionLog` per model.

    Args:
        uri: the prediction log lake (a folder, file://, s3:// or gs://).
        ttl_seconds: how long a half waits for its partner.
        max_pending: the most halves waiting.
        max_models: the most models (one writer thread each); pairs of more are dropped.
        log_options: more keyword arguments for each PredictionLog (batch_rows, flush_seconds,
            max_queue, ...).
        clock: the joiner's clock (monotonic seconds).
    """

    def __init__(
        self,
        uri: str,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_models: int = DEFAULT_MAX_MODELS,
        log_options: dict | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.uri = uri
        self.max_models = max_models
        self.log_options = dict(log_options or {})
        self.joiner = Joiner(ttl_seconds, max_pending, clock)
        self._counts = _Counts()
        self._logs: dict[str, PredictionLog] = {}
        self._warned_unnamed: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    def handle(self, headers: Mapping[str, str], body: bytes) -> None:
        """Take one event; its pair, once complete, is queued for writing.

        Raises:
            MalformedEvent: see `parse_event`; counted as malformed.
        """
        try:
            event = parse_event(headers, body)
        except MalformedEvent:
            with self._lock:
                self._counts.malformed += 1
            raise
        with self._lock:
            self._counts.received += 1
            if event.component not in ("", PREDICTOR):
                self._counts.ignored += 1
                return
        pair = self.joiner.add(event)
        if pair is not None:
            self._record(event, *pair)

    def _record(self, event: InferenceEvent, inputs: Inputs, outputs: Outputs) -> None:
        if inputs.rows != len(outputs.predictions):
            self._count_extra("mismatched")
            logger.warning(
                "cloudevents sink: model %s id %s: %d rows in the request, %d predictions in the "
                "response: dropped",
                event.model,
                event.request_id,
                inputs.rows,
                len(outputs.predictions),
            )
            return
        log = self._log(event.model)
        if log is None:
            return
        if inputs.unnamed and event.model not in self._warned_unnamed:
            self._warned_unnamed.add(event.model)
            logger.warning(
                "cloudevents sink: model %s: the requests carry lists of values, not named "
                "features: columns f0, f1, ... (send {feature: value} rows to keep the names)",
                event.model,
            )
        log.record(
            event.request_id,
            outputs.model_version,
            inputs.features,
            outputs.predictions,
            outputs.probabilities,
            outputs.classes,
        )

    def _log(self, model: str) -> PredictionLog | None:
        with self._lock:
            log = self._logs.get(model)
            if log is not None or self._closed:
                return log
            if len(self._logs) >= self.max_models:
                self._counts.extra["models"] += 1
                logger.warning(
                    "cloudevents sink: model %s: more than %d models, its predictions dropped",
                    model,
                    self.max_models,
                )
                return None
            log = self._logs[model] = PredictionLog(self.uri, model, **self.log_options)
            return log

    def _count_extra(self, reason: str) -> None:
        with self._lock:
            self._counts.extra[reason] += 1

    def expire(self) -> int:
        return self.joiner.expire()

    def stats(self) -> dict:
        """What the sink received, joined, dropped (by reason) and wrote.

        Returns:
            {"received", "malformed", "ignored", "joined", "pending", "dropped",
            "dropped_by_reason", "written", "queued", "log_dropped", "write_errors"}:
            events taken, refused (400), and of another component; pairs joined; halves
            waiting; halves and pairs lost in the sink (total and by reason); and the
            prediction logs' rows written, waiting, dropped, and failed writes.
        """
        self.joiner.expire()
        with self._lock:
            logs = [log.stats() for log in self._logs.values()]
            by_reason = dict(self.joiner.dropped)
            for reason, count in self._counts.extra.items():
                by_reason[reason] += count
            return {
                "received": self._counts.received,
                "malformed": self._counts.malformed,
                "ignored": self._counts.ignored,
                "joined": self.joiner.joined,
                "pending": len(self.joiner),
                "dropped": sum(by_reason.values()),
                "dropped_by_reason": by_reason,
                "written": sum(s["written"] for s in logs),
                "queued": sum(s["queued"] for s in logs),
                "log_dropped": sum(s["dropped"] for s in logs),
                "write_errors": sum(s["write_errors"] for s in logs),
            }

    def close(self, timeout: float = 30.0) -> None:
        """Drop the halves still waiting (counted), write everything joined, stop the writers."""
        self.joiner.drain()
        with self._lock:
            self._closed = True
            logs = list(self._logs.values())
        for log in logs:
            log.close(timeout)


# --- HTTP ----------------------------------------------------------------------------------


async def _read_body(request: Request, max_body_bytes: int | None) -> bytes | None:
    """The body, or None when it is larger than max_body_bytes (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if max_body_bytes is not None and declared.isdigit() and int(declared) > max_body_bytes:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if max_body_bytes is not None and size > max_body_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    sink: CloudEventsSink, max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The sink's HTTP app: POST / (events), GET /healthz, GET /stats. Its shutdown closes the
    sink (flushing the prediction logs)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async def expire_now_and_then():
            # Unmatched halves are counted as they expire even when no event arrives.
            while True:
                await asyncio.sleep(min(sink.joiner.ttl_seconds, 5.0))
                sink.expire()

        task = asyncio.create_task(expire_now_and_then())
        try:
            yield
        finally:
            task.cancel()
            sink.close()
            stats = sink.stats()
            logger.warning(
                "cloudevents sink: stopped: %d events, %d pairs joined, %d rows written, "
                "%d halves/pairs dropped, %d rows dropped by the log",
                stats["received"],
                stats["joined"],
                stats["written"],
                stats["dropped"],
                stats["log_dropped"],
            )

    app = FastAPI(title="mlpipe CloudEvents sink", lifespan=lifespan, openapi_url=None)

    @app.post("/")
    async def receive(request: Request) -> Response:
        body = await _read_body(request, max_body_bytes)
        if body is None:
            return JSONResponse(
                {"error": f"the body is larger than {max_body_bytes} bytes"}, status_code=413
            )
        try:
            sink.handle(request.headers, body)
        except MalformedEvent as error:
            logger.warning("cloudevents sink: event refused: %s", error)
            return JSONResponse({"error": str(error)}, status_code=400)
        return Response(status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict:
        return sink.stats()

    return app


def check_log_uri(uri: str) -> None:
    """Raise PipelineInputError (one line, the URI redacted) if fsspec cannot write there."""
    if not uri:
        raise PipelineInputError(f"--log: no prediction log URI (give --log or set {LOG_ENV})")
    try:
        fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError) as error:
        raise PipelineInputError(f"--log '{redact_url(uri)}': {one_line(error)}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.cloudevents_sink",
        description="Receive KServe payload-logger CloudEvents and write the prediction log.",
    )
    parser.add_argument(
        "--log",
        default=os.environ.get(LOG_ENV, ""),
        help=f"the prediction log lake (a folder, s3://, gs://); default ${LOG_ENV}",
    )
    parser.add_argument(
        "--host", default=LOOPBACK, help="the address to bind (0.0.0.0 only inside a container)"
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--ttl_seconds", type=float, default=DEFAULT_TTL_SECONDS)
    parser.add_argument("--max_pending", type=int, default=DEFAULT_MAX_PENDING)
    parser.add_argument("--max_models", type=int, default=DEFAULT_MAX_MODELS)
    parser.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument(
        "--flush_seconds", type=float, default=5.0, help="the longest a joined row waits"
    )
    parser.add_argument("--batch_rows", type=int, default=1_000)
    return parser


class _Shutdown:
    """SIGINT/SIGTERM: ask uvicorn to stop (its lifespan shutdown flushes the logs), exit 0.

    uvicorn handles both signals itself while serving, and re-raises them once done; this
    handler, installed first, then only asks again, so the process ends with code 0.
    """

    def __init__(self, server: uvicorn.Server):
        self.server = server

    def __call__(self, signum, frame) -> None:
        self.server.should_exit = True


def main(argv: list[str] | None = None) -> int:
    """Run the sink in the foreground until SIGINT or SIGTERM; 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        check_log_uri(args.log)
        sink = CloudEventsSink(
            args.log,
            ttl_seconds=args.ttl_seconds,
            max_pending=args.max_pending,
            max_models=args.max_models,
            log_options={"flush_seconds": args.flush_seconds, "batch_rows": args.batch_rows},
        )
    except (PipelineInputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(sink, args.max_body_bytes),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    shutdown = _Shutdown(server)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, shutdown)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"cloudevents sink at http://{host}:{args.port}, writing {redact_url(args.log)}",
        flush=True,
    )
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
