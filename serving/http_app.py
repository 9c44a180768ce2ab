"""What this server adds to KServe's FastAPI app: a request body limit, its own error answers,
and the admin route that reloads the model.

- A body over --max_body_bytes (env MLPIPE_MAX_BODY_BYTES, default 10 MiB) is refused with HTTP
  413 before it is read in full, and a body nested deeper than MAX_JSON_DEPTH (64) levels of
  arrays and objects with HTTP 400, before any JSON parser sees it (`BodyLimit`, `json_depth`).
- A predict or infer route asked with another method than POST answers 405 with `Allow: POST`.
- Every `InvalidInput` is HTTP 400 (413 for the limits) with {"error": ...}; a V1 body that is
  not JSON is explained, naming the row and the feature of a NaN or Infinity (which are not
  JSON: `describe_bad_json`); a V2 body that FastAPI refuses gets 400 and {"error": ...} too,
  not FastAPI's 422 and {"detail": [...]}.
- `POST /admin/reload` reloads the alias the model follows (`TabularModel.reload`): 200 with
  its answer, 409 or 500 with {"error", "version", "changed": false}.
- Every answer of a predict or infer route carries `X-Request-Id` (`RequestIdHeader`): the
  model sets it on an answer (the id its prediction log records); an error gets the id the
  client sent (`ce-id`, else `X-Request-Id`) or a new one.
- `GET /v2/models/NAME/prediction-log` shows the prediction log's counters (read-only, so not
  under /admin/: it changes nothing), and `/metrics` has them for Prometheus
  (`PredictionLogMetrics`): rows written and dropped, files, writes failed, rows queued.

The admin token. Where the client comes from proves nothing: in a KServe pod the queue-proxy
and agent sidecars connect from 127.0.0.1, so every outside request looks local. A route that
changes the server's state (under ADMIN_PREFIXES: `/admin/...`, and KServe's own model
repository routes `/v2/repository/models/NAME/load|unload`) therefore answers only a request
that carries `Authorization: Bearer <token>` (`AdminGuard`, checked before the body is read):

- the token is read once, at start, from the environment variable MLPIPE_ADMIN_TOKEN
  (`read_admin_token`; on a cluster it comes from the Secret `mlpipe-admin-token`), never from
  the command line, and is never logged; at least 16 visible ASCII characters, e.g.
  `python -c 'import secrets; print(secrets.token_urlsafe(32))'`;
- none configured (unset or blank): those routes are off, HTTP 403 saying how to turn them on;
- a missing or wrong token: HTTP 401 with `WWW-Authenticate: Bearer`, the same answer for both;
  compared in constant time (`hmac.compare_digest`).
SIGHUP reloads as before: a signal needs the rights of the process's own user.
"""

import asyncio
import hmac
import json
import logging
import math
import os
import re

from components.common.errors import PipelineInputError
from components.common.prediction_log import request_id
from serving.model import REQUEST_ID_HEADER, ReloadFailed, ReloadRefused, TabularModel
from serving.protocol import InvalidInput

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
ADMIN_RELOAD_PATH = "/admin/reload"
# The read-only route of the prediction log's counters, for a model NAME.
PREDICTION_LOG_PATH = "/v2/models/{name}/prediction-log"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()
ADMIN_TOKEN_ENV = "MLPIPE_ADMIN_TOKEN"
MIN_ADMIN_TOKEN_CHARS = 16
# Every route that changes the server's state starts with one of these: a new one (the label
# feedback route, say) goes under /admin/ or is added here, and needs the token too.
ADMIN_PREFIXES = ("/admin/", "/v2/repository/")
# Where the body-limit middleware leaves the request body, for the error handlers to explain
# a body that is not JSON (KServe's own message does not say which value is wrong).
BODY_SCOPE_KEY = "mlpipe.body"
# The deepest JSON body accepted. A V1 body is 3 levels deep, a V2 body 4 plus the rank of its
# tensors; a deeper one is refused before any parser sees it (Python's json module recurses once
# per level, and a body 100,000 levels deep would end in RecursionError, an HTTP 500).
MAX_JSON_DEPTH = 64
# The V2 binary extension: a JSON header of this many bytes, then raw tensor bytes (not JSON).
_BINARY_HEADER_LENGTH = b"inference-header-content-length"
# A JSON string, escapes included (the unrolled form: linear, no backtracking).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# The routes that take a request body, and the one method they answer.
_POST_ONLY = re.compile(
    r"^/v1/models/[^/]+:(?:predict|explain)$|^/v2/models/[^/]+(?:/versions/[^/]+)?/infer$"
)


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


# Bodies up to this size are counted with bytes.count (a few microseconds for a single row);
# larger ones with numpy, which scans a 300 KB body several times faster.
_SMALL_BODY_BYTES = 16_384


def json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without parsing it.

    Brackets inside strings do not count. A body with no more opening brackets than `limit`
    cannot be deeper, and is answered at once (a V1 body has about one per row). Otherwise the
    brackets and quotes are located with numpy, not byte by byte in Python: a bracket is
    inside a string when an odd number of quotes precede it. A body with a backslash (an escaped
    quote may be among them) has its strings cut out by a regular expression first. The
    brackets after an unterminated string are not counted: every parser reads them as part of
    that string, and refuses the body without nesting into them.

    Returns:
        The depth, or a number at most `limit` when it is known not to exceed it.
    """
    if len(body) <= _SMALL_BODY_BYTES and body.count(b"[") + body.count(b"{") <= limit:
        return 0
    import numpy as np

    def opening(data):
        # '[' is 0x5B and '{' 0x7B, ']' 0x5D and '}' 0x7D: with bit 0x20 set, each pair is one.
        return np.flatnonzero((data | 0x20) == ord("{"))

    data = np.frombuffer(body, dtype=np.uint8)
    opens = opening(data)
    if len(opens) <= limit:
        return 0
    if b"\\" in body:
        data = np.frombuffer(_JSON_STRING.sub(b"", body), dtype=np.uint8)
        opens = opening(data)
    closes = np.flatnonzero((data | 0x20) == ord("}"))
    quotes = np.flatnonzero(data == ord('"'))
    if len(quotes):
        opens = opens[np.searchsorted(quotes, opens) % 2 == 0]
        closes = closes[np.searchsorted(quotes, closes) % 2 == 0]
    if not len(opens):
        return 0
    positions = np.concatenate((opens, closes))
    steps = np.repeat(np.array([1, -1], dtype=np.int64), (len(opens), len(closes)))
    return int(np.cumsum(steps[np.argsort(positions, kind="stable")]).max())


def _too_deep(limit: int = MAX_JSON_DEPTH) -> str:
    return (
        f"request body: nested deeper than {limit} levels of arrays and objects; "
        'a request is {"instances": [{feature: value}]} (V1) or {"inputs": [...]} (V2)'
    )


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
    if json_depth(body) > MAX_JSON_DEPTH:
        return _too_deep()
    try:
        payload = json.loads(text)  # Python's parser reads NaN, Infinity and 1e999 (as inf)
    except RecursionError:  # not reached after the depth check; kept as the last line of defence
        return _too_deep()
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


def read_admin_token(environ=None) -> str | None:
    """The admin token, from the environment variable MLPIPE_ADMIN_TOKEN (only there).

    Args:
        environ: the environment to read (default: this process's).

    Returns:
        The token, or None when it is unset or blank: the admin routes are off.

    Raises:
        PipelineInputError: the token is shorter than 16 characters, or holds a character that
            is not visible ASCII (it is sent in an HTTP header). The message never quotes it.
    """
    token = (os.environ if environ is None else environ).get(ADMIN_TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < MIN_ADMIN_TOKEN_CHARS or not all("!" <= c <= "~" for c in token):
        raise PipelineInputError(
            f"{ADMIN_TOKEN_ENV}: the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} "
            "visible ASCII characters (this one is not; it is not shown), e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


async def _send_json(send, status: int, content: dict, headers: tuple = ()) -> None:
    """Answer from a middleware, before the app: {"error": ...} and `Connection: close` (the
    rest of the body, if any, is not read: this connection is done)."""
    logging.getLogger("kserve").warning("rejected request (HTTP %d): %s", status, content["error"])
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers", ()) if key == name), None)


class BodyLimit:
    """ASGI middleware: refuse what no route should parse, before it is parsed.

    - A predict or infer route asked with any method but POST: HTTP 405 with `Allow: POST`
      (KServe would answer a GET on `/v1/models/NAME:predict` with 404, reading it as the
      readiness route of a model called "NAME:predict").
    - A request body over `max_bytes` (None: no limit): HTTP 413. A declared Content-Length over
      the limit is refused before a byte of the body is read; a body without one (chunked) is
      counted as it arrives and refused once it passes the limit.
    - A body nested deeper than `max_depth` levels of arrays and objects: HTTP 400
      (`json_depth`). With the V2 binary extension, only the JSON header is counted.

    A body within the limits is handed on whole, and kept in the scope for the error handlers.
    """

    def __init__(self, app, max_bytes: int | None, max_depth: int = MAX_JSON_DEPTH):
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def _too_large(self, size: str) -> dict:
        return {
            "error": f"request body: {size}, over this server's limit of {self.max_bytes} bytes "
            "(--max_body_bytes): send fewer rows per request"
        }

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if method != "POST" and _POST_ONLY.match(path):
            error = f"{path}: method {method} not allowed; send the request with POST"
            await _send_json(send, 405, {"error": error}, ((b"allow", b"POST"),))
            return
        length = _header(scope, b"content-length")
        limit = self.max_bytes
        if limit is not None and length and length.isdigit() and int(length) > limit:
            await _send_json(send, 413, self._too_large(f"{int(length)} bytes"))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                await _send_json(send, 413, self._too_large(f"more than {limit} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        json_part = body
        header_length = _header(scope, _BINARY_HEADER_LENGTH)
        if header_length is not None and header_length.isdigit():
            json_part = body[: int(header_length)]
        if json_depth(json_part, self.max_depth) > self.max_depth:
            await _send_json(send, 400, {"error": _too_deep(self.max_depth)})
            return
        scope[BODY_SCOPE_KEY] = body
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        await self.app(scope, replay, send)


class RequestIdHeader:
    """ASGI middleware: every answer of a predict or infer route carries `X-Request-Id`.

    A successful answer has it from the model (the id in the prediction log); an error answer
    (a bad body, a model not ready, a limit) gets the client's `ce-id` or `X-Request-Id`, or a
    new random id, so that a client can quote it whatever happened.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _POST_ONLY.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(key.lower() == _REQUEST_ID_KEY for key, _ in headers):
                    sent = {
                        key.decode("latin-1"): value.decode("latin-1")
                        for key, value in scope.get("headers", ())
                    }
                    headers.append((_REQUEST_ID_KEY, request_id(sent).encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class PredictionLogMetrics:
    """A Prometheus collector of a model's prediction log counters, for KServe's `/metrics`
    (prometheus_client's default registry): `mlpipe_prediction_log_rows_written_total`,
    `..._rows_dropped_total`, `..._files_written_total`, `..._write_errors_total` and the gauge
    `mlpipe_prediction_log_rows_queued`, each labelled with the model's name."""

    COUNTERS = (
        ("rows_written", "written", "rows written to the prediction log"),
        ("rows_dropped", "dropped", "rows not logged: queue full, write failed, malformed"),
        ("files_written", "files", "files written to the prediction log"),
        ("write_errors", "write_errors", "prediction log writes that failed"),
    )

    def __init__(self, model: TabularModel):
        self.model = model

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.model.prediction_log_stats()
        for name, key, documentation in self.COUNTERS:
            family = CounterMetricFamily(
                f"mlpipe_prediction_log_{name}", documentation, labels=["model_name"]
            )
            family.add_metric([self.model.name], stats[key])
            yield family
        queued = GaugeMetricFamily(
            "mlpipe_prediction_log_rows_queued",
            "rows waiting to be written to the prediction log",
            labels=["model_name"],
        )
        queued.add_metric([self.model.name], stats["queued"])
        yield queued


class AdminGuard:
    """ASGI middleware: a request to a route under ADMIN_PREFIXES passes only with
    `Authorization: Bearer <token>`; with no token configured, those routes are off (403).

    It runs before the body is read, so a client without the token cannot make the server read
    or parse anything.
    """

    def __init__(self, app, token: str | None):
        self.app = app
        self._token = token.encode("ascii") if token else None

    def _authorized(self, scope) -> bool:
        scheme, _, credentials = (_header(scope, b"authorization") or b"").partition(b" ")
        # Compared even when the scheme is wrong: the time taken says nothing either way.
        same = hmac.compare_digest(credentials.strip(), self._token)
        return same and scheme.lower() == b"bearer"

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(ADMIN_PREFIXES):
            await self.app(scope, receive, send)
            return
        if self._token is None:
            error = (
                f"{path}: off, this server has no admin token: set {ADMIN_TOKEN_ENV} in its "
                "environment (from a Kubernetes Secret on a cluster) and send "
                "'Authorization: Bearer <token>'; or send the server SIGHUP to reload"
            )
            await _send_json(send, 403, {"error": error})
            return
        if not self._authorized(scope):
            error = f"{path}: needs a valid 'Authorization: Bearer <token>' header"
            await _send_json(send, 401, {"error": error}, ((b"www-authenticate", b"Bearer"),))
            return
        await self.app(scope, receive, send)


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


def harden_app(
    app,
    model: TabularModel,
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
    admin_token: str | None = None,
    v1_predict=None,
):
    """Add the body limit, this server's error answers, the admin token check, the request
    id header, `POST /admin/reload` and `GET /v2/models/NAME/prediction-log` to a FastAPI app.

    Call it after KServe has added its own exception handlers, so that these replace them
    (`kserve_compat.RestServer` calls it then, as its `configure_app`).

    Args:
        app: the FastAPI app (KServe's, or any FastAPI app in tests).
        model: the served model, which the admin route reloads.
        max_body_bytes: the largest request body (None: no limit).
        admin_token: the token the admin routes require (`read_admin_token`); None: they are
            off.
        v1_predict: KServe's V1 predict handler (`kserve_compat.v1_predict_handler`): the
            model's V1 predict route is then answered by it without FastAPI's router
            (`serving.fast_route`), unless the app has middlewares of KServe's (a timing or
            access log) that the route would pass by; None: by the app's own route.
    """
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    # Middlewares the app already has are KServe's own (its timing log when KSERVE_LOGLEVEL
    # turns the kserve.trace log on, an access log with --access_log_format): the fast route
    # would pass them by, so with any of them the predict route stays the app's.
    kserve_middlewares = [m.cls.__name__ for m in app.user_middleware]
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    # Added last, so it runs first: no body is read for a request without the token.
    app.add_middleware(AdminGuard, token=admin_token)
    # Outermost: also the answers the middlewares above give carry the request's id.
    app.add_middleware(RequestIdHeader)
    if v1_predict is not None and kserve_middlewares:
        logging.getLogger("kserve").info(
            "V1 predict through FastAPI's router: KServe's %s would be passed by",
            ", ".join(kserve_middlewares),
        )
    elif v1_predict is not None:
        from serving.fast_route import FastV1Predict

        # Outermost of all: it has its own RequestIdHeader and BodyLimit around KServe's handler.
        app.add_middleware(
            FastV1Predict,
            predict=v1_predict,
            model_name=model.name,
            max_body_bytes=max_body_bytes,
        )
    app.add_exception_handler(InvalidInput, _invalid_input_handler)
    app.add_exception_handler(RequestValidationError, _request_validation_handler)

    async def admin_reload(request: Request) -> JSONResponse:
        # AdminGuard has checked the token.
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

    async def prediction_log(request: Request) -> JSONResponse:
        return JSONResponse(content=model.prediction_log_stats())

    app.add_api_route(PREDICTION_LOG_PATH.format(name=model.name), prediction_log, methods=["GET"])
