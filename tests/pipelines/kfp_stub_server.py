"""A stand-in for the Kubeflow Pipelines v2beta1 REST API, for contract tests.

It is not a KFP server (no scheduling, no authorization, no storage beyond memory). It serves the
routes that kfp 2.17.0's `kfp.Client` calls for `pipelines.submit`, found in
`kfp/client/client.py` and `kfp_server_api/api/*_service_api.py`:

    GET  /apis/v2beta1/healthz
    GET  /apis/v2beta1/experiments                       POST /apis/v2beta1/experiments
    GET  /apis/v2beta1/pipelines
    POST /apis/v2beta1/pipelines/upload                  (multipart, file field `uploadfile`)
    POST /apis/v2beta1/pipelines/upload_version          (multipart, file field `uploadfile`)
    GET  /apis/v2beta1/pipelines/{id}/versions           GET /apis/v2beta1/pipelines/{id}/versions/{id}
    POST /apis/v2beta1/runs                              GET /apis/v2beta1/runs/{id}
    POST /apis/v2beta1/recurringruns

and checks what it receives against the published client's own description of the API:

- a JSON body must deserialize into its `kfp_server_api` model (`V2beta1Experiment`, `V2beta1Run`,
  `V2beta1RecurringRun`) with no unknown field (at any depth), every value of the model's type,
  enum values from the model's allowed list, the fields the model calls "Required input" present,
  and none of those it calls "Output" (the server sets them);
- an uploaded file must parse as a `PipelineSpec` proto (unknown fields refused), any further YAML
  documents as a `PlatformSpec`;
- query parameters must be ones the route takes, and a list filter must fit `V2beta1Filter`;
- a run or recurring run must reference exactly one pipeline source; a pipeline version reference
  must name a version of that pipeline; its parameters must be declared by that version's spec,
  with the declared types, and every required one given; a recurring run needs a trigger with one
  schedule and max_concurrency in [1, 10], as the API documents.

Anything else is answered with HTTP 400 (404 for an unknown route or id, 409 for a duplicate name)
and a grpc-gateway style JSON error, and is kept in `rejected`. Everything received is kept in
`received`. `GET /runs/{id}` reports `run_state`.

Faults: `fail_next(method, route, count, status)` answers the next `count` requests to a route
with that status (503: an API server restarting) before serving it again; status None drops the
connection without an answer instead. Faulted requests are in `received` and `faulted`.
"""

import email.parser
import email.policy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import kfp_server_api
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

PREFIX = "/apis/v2beta1"
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# int64 fields: strings in the generated models, numbers or numeric strings in protojson.
_INT64 = {
    ("V2beta1RecurringRun", "max_concurrency"),
    ("V2beta1PeriodicSchedule", "interval_second"),
}
# Server-set fields whose model docstring has no "Output." to say so.
_ALSO_OUTPUT = {"state", "error", "run_details", "status", "storage_state"}
# backend/api/v2beta1/filter.proto: the numbers of Predicate.Operation.
_OPERATIONS = {
    0: "OPERATION_UNSPECIFIED",
    1: "EQUALS",
    2: "NOT_EQUALS",
    3: "GREATER_THAN",
    5: "GREATER_THAN_EQUALS",
    6: "LESS_THAN",
    7: "LESS_THAN_EQUALS",
    8: "IN",
    9: "IS_SUBSTRING",
}
_PARAMETER_TYPES = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "LIST": (list,),
    "STRUCT": (dict,),
}
_TERMINAL = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}
_LIST_QUERY = {"page_token", "page_size", "sort_by", "filter"}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


@dataclass
class Received:
    """One request as the stub received it."""

    method: str
    path: str
    query: dict
    headers: dict  # names in lowercase
    body: dict | None = None  # a JSON body
    filename: str | None = None  # an uploaded file's name
    spec: dict | None = None  # an uploaded file's pipeline spec (first YAML document)


@dataclass
class _Store:
    experiments: dict = field(default_factory=dict)
    pipelines: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    recurring_runs: dict = field(default_factory=dict)


# --- checks against the kfp_server_api models --------------------------------------------------


def _model(name: str):
    return getattr(kfp_server_api.models, name)


def _field_doc(klass, attribute: str) -> str:
    lines = [line.strip() for line in (getattr(klass, attribute).__doc__ or "").splitlines()]
    lines = [line for line in lines if line]
    return lines[1] if len(lines) > 1 else ""


def _output_only(klass) -> set[str]:
    documented = {a for a in klass.openapi_types if _field_doc(klass, a).startswith("Output")}
    return documented | (_ALSO_OUTPUT & set(klass.openapi_types))


def _required(klass) -> set[str]:
    return {a for a in klass.openapi_types if _field_doc(klass, a).startswith("Required input")}


def check_model(data, type_name: str, where: str = "body", owner: str = "") -> list[str]:
    """What in `data` does not fit the kfp_server_api type `type_name` (empty: it fits)."""
    if data is None:
        return []
    if type_name.startswith("list["):
        if not isinstance(data, list):
            return [f"{where}: expected a list, got {type(data).__name__}"]
        inner = type_name[5:-1]
        return [p for i, item in enumerate(data) for p in check_model(item, inner, f"{where}[{i}]")]
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            return [f"{where}: expected an object, got {type(data).__name__}"]
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return [p for k, v in data.items() for p in check_model(v, inner, f"{where}.{k}")]
    if type_name == "object":
        return []
    leaf = where.rsplit(".", 1)[-1]
    if (owner, leaf) in _INT64:
        ok = (isinstance(data, int) and not isinstance(data, bool)) or (
            isinstance(data, str) and re.fullmatch(r"-?\d+", data)
        )
        return [] if ok else [f"{where}: expected an int64, got {data!r}"]
    primitive = {"str": str, "bool": bool, "int": int, "float": (int, float), "datetime": str}
    if type_name in primitive:
        wrong = not isinstance(data, primitive[type_name]) or (
            type_name in ("int", "float") and isinstance(data, bool)
        )
        return [f"{where}: expected {type_name}, got {data!r}"] if wrong else []
    klass = _model(type_name)
    if not klass.openapi_types:  # an enum
        allowed = getattr(klass, "allowable_values", [])
        return [] if data in allowed else [f"{where}: {data!r} is not one of {allowed}"]
    if not isinstance(data, dict):
        return [f"{where}: expected a {type_name} object, got {type(data).__name__}"]
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    problems = []
    for key, value in data.items():
        if key not in by_json:
            problems.append(f"{where}.{key}: not a field of {type_name}")
            continue
        attribute = by_json[key]
        problems += check_model(
            value, klass.openapi_types[attribute], f"{where}.{key}", owner=type_name
        )
    return problems


class _Response:
    def __init__(self, payload):
        self.data = json.dumps(payload)


def check_create_body(data, type_name: str) -> list[str]:
    """A create request's body: fits the model, has its required inputs, none of its outputs."""
    if not isinstance(data, dict):
        return [f"body: expected a {type_name} object"]
    problems = check_model(data, type_name)
    klass = _model(type_name)
    json_key = klass.attribute_map
    problems += [
        f"body.{json_key[a]}: required" for a in _required(klass) if not data.get(json_key[a])
    ]
    problems += [
        f"body.{json_key[a]}: set by the server, not by a request"
        for a in _output_only(klass)
        if json_key[a] in data
    ]
    if not problems:
        try:  # the client library's own decoder, datetimes included
            kfp_server_api.ApiClient().deserialize(_Response(data), type_name)
        except Exception as error:  # anything it cannot take is a bad body
            problems.append(f"body: {type_name} does not deserialize: {error}")
    return problems


def parse_filter(text: str | None) -> list[dict]:
    """A list filter's predicates, as the server's protojson decoder reads them (camelCase or
    snake_case names, enum names or numbers), checked against V2beta1Filter."""
    if not text:
        return []
    try:
        raw = json.loads(text)
    except ValueError:
        raise _bad(f"filter: not JSON: {text!r}") from None

    def snake(key: str) -> str:
        return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()

    if not isinstance(raw, dict):
        raise _bad(f"filter: expected a V2beta1Filter object: {text!r}")
    predicates = []
    for predicate in raw.get("predicates") or []:
        if not isinstance(predicate, dict):
            raise _bad(f"filter: a predicate is not an object: {predicate!r}")
        predicate = {snake(k): v for k, v in predicate.items()}
        if isinstance(predicate.get("operation"), int):
            predicate["operation"] = _OPERATIONS.get(predicate["operation"], "?")
        predicates.append(predicate)
    problems = check_model({**raw, "predicates": predicates}, "V2beta1Filter", "filter")
    if problems:
        raise _bad("; ".join(problems))
    return predicates


def _matches(item: dict, predicates: list[dict]) -> bool:
    for predicate in predicates:
        if predicate.get("operation") != "EQUALS" or "string_value" not in predicate:
            raise _bad(f"filter: the stub implements only EQUALS on strings, got {predicate}")
        if item.get(predicate["key"]) != predicate["string_value"]:
            return False
    return True


def parse_spec(filename: str, content: bytes) -> dict:
    """An uploaded pipeline package: its pipeline spec, checked against the PipelineSpec proto."""
    if not filename or not filename.endswith((".yaml", ".yml", ".json")):
        raise _bad(f"uploadfile: '{filename}' is not a .yaml, .yml or .json pipeline spec")
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        documents = [d for d in yaml.load_all(content.decode("utf-8"), Loader=loader) if d]
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise _bad(f"uploadfile: not YAML: {error}") from None
    if not documents or not isinstance(documents[0], dict):
        raise _bad("uploadfile: no pipeline spec in the file")
    try:
        json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
        for platform in documents[1:]:
            json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as error:
        raise _bad(f"uploadfile: not a KFP pipeline spec: {error}") from None
    if not documents[0].get("pipelineInfo", {}).get("name"):
        raise _bad("uploadfile: the pipeline spec has no pipelineInfo.name")
    return documents[0]


def check_parameters(spec: dict, parameters: dict) -> list[str]:
    """The run's parameters against the root inputs that the pipeline spec declares."""
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    problems = []
    for name, value in parameters.items():
        if name not in declared:
            problems.append(f"runtime_config.parameters.{name}: not a parameter of the pipeline")
            continue
        kind = declared[name].get("parameterType", "")
        types = _PARAMETER_TYPES.get(kind, ())
        wrong_bool = isinstance(value, bool) and kind != "BOOLEAN"
        if not isinstance(value, types) or wrong_bool:
            problems.append(
                f"runtime_config.parameters.{name}: {value!r} is not of the declared type {kind}"
            )
    for name, declaration in declared.items():
        optional = declaration.get("isOptional") or "defaultValue" in declaration
        if name not in parameters and not optional:
            problems.append(f"runtime_config.parameters.{name}: required by the pipeline")
    return problems


def _robfig_cron_v1(expression: str) -> bool:
    """What KFP's scheduled workflow controller parses (robfig/cron v1 `Parse`): a descriptor, or
    5 to 6 fields, seconds first, day of week optional."""
    if expression.startswith("@"):
        return expression in {
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        } or bool(re.fullmatch(r"@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", expression))
    fields = expression.split()
    return len(fields) in (5, 6) and all(re.fullmatch(r"[0-9A-Za-z*?/,-]+", f) for f in fields)


# --- the server ----------------------------------------------------------------------------------


class KfpStubServer:
    """The stub: `start()` it (or use it as a context manager), point kfp.Client at `host`."""

    def __init__(self):
        self.received: list[Received] = []
        self.rejected: list[str] = []
        self.run_state = "SUCCEEDED"
        self.multi_user = False
        self.store = _Store()
        self.faulted: list[Received] = []
        self._faults: list[list] = []  # [method, route pattern, count left, status]
        self._count = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    @property
    def host(self) -> str:
        assert self._server is not None, "the stub is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "KfpStubServer":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                stub._handle(self, "GET")

            def do_POST(self):
                stub._handle(self, "POST")

            def do_DELETE(self):
                stub._handle(self, "DELETE")

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="kfp-stub-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # what the tests look at
    def calls(self, method: str, route: str) -> list[Received]:
        """Requests to `route` (a path under /apis/v2beta1, `*` for one path segment)."""
        pattern = re.compile(re.escape(PREFIX + route).replace(r"\*", "[^/]+") + "$")
        return [r for r in self.received if r.method == method and pattern.match(r.path)]

    def fail_next(self, method: str, route: str, count: int, status: int | None = 503) -> None:
        """Answer the next `count` requests to `route` (as in `calls`) with `status`, or drop
        their connections unanswered when status is None."""
        pattern = re.compile(re.escape(PREFIX + route).replace(r"\*", "[^/]+") + "$")
        with self._lock:
            self._faults.append([method, pattern, count, status])

    def _fault(self, received: Received) -> tuple[bool, int | None]:
        with self._lock:
            for fault in self._faults:
                method, pattern, left, status = fault
                if left > 0 and method == received.method and pattern.match(received.path):
                    fault[2] -= 1
                    self.faulted.append(received)
                    return True, status
        return False, None

    def version_spec(self, version_id: str) -> dict:
        return self.store.versions[version_id]["pipeline_spec"]

    # plumbing
    def _next(self, kind: str) -> tuple[str, str]:
        with self._lock:
            self._count += 1
            count = self._count
        when = (_EPOCH + timedelta(seconds=count)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kfp-stub/{kind}/{count}")), when

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        received = Received(
            method=method,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        with self._lock:
            self.received.append(received)
        faulted, fault_status = self._fault(received)
        if faulted and fault_status is None:
            request.close_connection = True  # no answer at all: the client sees the connection end
            return
        try:
            if faulted:
                raise ApiError(fault_status, f"injected fault: HTTP {fault_status} (kfp stub)")
            status, payload = 200, self._route(received, raw)
        except Exception as error:  # an ApiError is the answer; anything else is a stub bug
            status = error.status if isinstance(error, ApiError) else 500
            code = {400: 3, 404: 5, 409: 6, 503: 14}.get(status, 13)
            message = str(error) if isinstance(error, ApiError) else repr(error)
            payload = {"error": message, "code": code, "message": message, "details": []}
            if not faulted:  # an injected fault is no refusal of what the client sent
                with self._lock:
                    self.rejected.append(f"{method} {parts.path}: {status} {message}")
        data = json.dumps(payload).encode("utf-8")
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _route(self, received: Received, raw: bytes):
        routes = [
            ("GET", r"/healthz", set(), self._healthz),
            ("GET", r"/experiments", _LIST_QUERY | {"namespace"}, self._list_experiments),
            ("POST", r"/experiments", set(), self._create_experiment),
            ("GET", r"/pipelines", _LIST_QUERY | {"namespace"}, self._list_pipelines),
            (
                "POST",
                r"/pipelines/upload",
                {"name", "display_name", "description", "namespace", "tags"},
                self._upload,
            ),
            (
                "POST",
                r"/pipelines/upload_version",
                {"name", "display_name", "pipelineid", "description", "tags"},
                self._upload_version,
            ),
            ("GET", r"/pipelines/(?P<pid>[^/]+)/versions", _LIST_QUERY, self._list_versions),
            ("GET", r"/pipelines/(?P<pid>[^/]+)/versions/(?P<vid>[^/]+)", set(), self._version),
            ("POST", r"/runs", set(), self._create_run),
            ("GET", r"/runs/(?P<rid>[^/:]+)", {"experiment_id"}, self._get_run),
            ("POST", r"/recurringruns", set(), self._create_recurring_run),
        ]
        for method, route, query_keys, handler in routes:
            found = re.fullmatch(re.escape(PREFIX) + route, received.path)
            if method != received.method or not found:
                continue
            unknown = set(received.query) - query_keys
            if unknown:
                raise _bad(f"query parameters this route does not take: {sorted(unknown)}")
            return handler(received, raw, **found.groupdict())
        raise ApiError(404, f"no route {received.method} {received.path} (kfp stub)")

    def _json_body(self, received: Received, raw: bytes, type_name: str) -> dict:
        content_type = received.headers.get("content-type", "")
        if not content_type.startswith("application/json"):
            raise _bad(f"expected a JSON body, got Content-Type '{content_type}'")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise _bad("the body is not JSON") from None
        received.body = body
        problems = check_create_body(body, type_name)
        if problems:
            raise _bad("; ".join(problems))
        return body

    def _uploaded_file(self, received: Received, raw: bytes) -> tuple[str, dict]:
        content_type = received.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise _bad(f"expected multipart/form-data, got '{content_type}'")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                filename = part.get_filename() or ""
                spec = parse_spec(filename, part.get_payload(decode=True) or b"")
                received.filename, received.spec = filename, spec
                return filename, spec
        raise _bad("no multipart field 'uploadfile'")

    def _source(self, body: dict) -> dict:
        """The pipeline spec that a run or recurring run would run; checks its reference."""
        sources = [k for k in ("pipeline_spec", "pipeline_version_reference") if body.get(k)]
        if body.get("pipeline_version_id"):
            sources.append("pipeline_version_id (deprecated)")
        if len(sources) != 1:
            raise _bad(f"expected one pipeline source, got {sources or 'none'}")
        if body.get("pipeline_spec"):
            return body["pipeline_spec"]
        reference = body.get("pipeline_version_reference") or {}
        pipeline_id = reference.get("pipeline_id")
        version = self.store.versions.get(reference.get("pipeline_version_id") or "")
        if pipeline_id not in self.store.pipelines:
            raise _bad(f"pipeline_version_reference.pipeline_id: no pipeline {pipeline_id!r}")
        if version is None or version["pipeline_id"] != pipeline_id:
            raise _bad(
                "pipeline_version_reference.pipeline_version_id: no such version of "
                f"pipeline {pipeline_id}"
            )
        return version["pipeline_spec"]

    def _check_run_like(self, body: dict) -> None:
        spec = self._source(body)
        experiment_id = body.get("experiment_id")
        if experiment_id and experiment_id not in self.store.experiments:
            raise _bad(f"experiment_id: no experiment {experiment_id!r}")
        parameters = (body.get("runtime_config") or {}).get("parameters") or {}
        problems = check_parameters(spec, parameters)
        if problems:
            raise _bad("; ".join(problems))

    # routes
    def _healthz(self, received, raw):
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    def _list(self, items, received, key: str, namespace: bool = True):
        predicates = parse_filter(received.query.get("filter"))
        chosen = [item for item in items if _matches(item, predicates)]
        if namespace:
            wanted = received.query.get("namespace", "")
            chosen = [item for item in chosen if item.get("namespace", "") == wanted]
        if received.query.get("sort_by", "").endswith(" desc"):
            chosen.reverse()
        size = int(received.query.get("page_size") or 0) or len(chosen)
        page = chosen[:size]
        return {key: page, "total_size": len(chosen)} if page else {"total_size": 0}

    def _list_experiments(self, received, raw):
        return self._list(list(self.store.experiments.values()), received, "experiments")

    def _create_experiment(self, received, raw):
        body = self._json_body(received, raw, "V2beta1Experiment")
        namespace = body.get("namespace") or ""
        for experiment in self.store.experiments.values():
            if (experiment["display_name"], experiment["namespace"]) == (
                body["display_name"],
                namespace,
            ):
                raise ApiError(409, f"experiment '{body['display_name']}' already exists")
        experiment_id, now = self._next("experiment")
        experiment = {
            **body,
            "experiment_id": experiment_id,
            "namespace": namespace,
            "created_at": now,
            "storage_state": "AVAILABLE",
        }
        self.store.experiments[experiment_id] = experiment
        return experiment

    def _list_pipelines(self, received, raw):
        return self._list(list(self.store.pipelines.values()), received, "pipelines")

    def _add_version(self, pipeline_id: str, name: str, display_name: str, description, spec):
        for version in self.store.versions.values():
            if version["pipeline_id"] == pipeline_id and version["name"] == name:
                raise ApiError(409, "Failed to create a pipeline version")  # the server's words
        version_id, now = self._next("version")
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
            "name": name,
            "display_name": display_name,
            "description": description,
            "created_at": now,
            "pipeline_spec": spec,
        }
        self.store.versions[version_id] = version
        return version

    def _upload(self, received, raw):
        filename, spec = self._uploaded_file(received, raw)
        query = received.query
        name = query.get("name") or query.get("display_name") or filename.rsplit(".", 1)[0]
        namespace = query.get("namespace", "")
        for pipeline in self.store.pipelines.values():
            if (pipeline["name"], pipeline["namespace"]) == (name, namespace):
                raise ApiError(409, "Failed to create a pipeline and a pipeline version")
        pipeline_id, now = self._next("pipeline")
        pipeline = {
            "pipeline_id": pipeline_id,
            "name": name,
            "display_name": query.get("display_name") or name,
            "description": query.get("description", ""),
            "namespace": namespace,
            "created_at": now,
        }
        self.store.pipelines[pipeline_id] = pipeline
        # As the server does: the first version has the pipeline's name and description.
        self._add_version(
            pipeline_id, name, pipeline["display_name"], pipeline["description"], spec
        )
        return pipeline

    def _upload_version(self, received, raw):
        filename, spec = self._uploaded_file(received, raw)
        query = received.query
        pipeline_id = query.get("pipelineid", "")
        if pipeline_id not in self.store.pipelines:
            raise _bad(f"pipelineid: no pipeline {pipeline_id!r}")
        name = query.get("name") or query.get("display_name") or filename.rsplit(".", 1)[0]
        return self._add_version(
            pipeline_id, name, query.get("display_name") or name, query.get("description", ""), spec
        )

    def _list_versions(self, received, raw, pid):
        if pid not in self.store.pipelines:
            raise ApiError(404, f"no pipeline {pid}")
        versions = [v for v in self.store.versions.values() if v["pipeline_id"] == pid]
        return self._list(versions, received, "pipeline_versions", namespace=False)

    def _version(self, received, raw, pid, vid):
        version = self.store.versions.get(vid)
        if version is None or version["pipeline_id"] != pid:
            raise ApiError(404, f"no version {vid} of pipeline {pid}")
        return version

    def _create_run(self, received, raw):
        body = self._json_body(received, raw, "V2beta1Run")
        self._check_run_like(body)
        run_id, now = self._next("run")
        run = {
            **body,
            "run_id": run_id,
            "created_at": now,
            "state": "PENDING",
            "storage_state": "AVAILABLE",
        }
        self.store.runs[run_id] = run
        return run

    def _get_run(self, received, raw, rid):
        run = self.store.runs.get(rid)
        if run is None:
            raise ApiError(404, f"no run {rid}")
        run = {**run, "state": self.run_state}
        if self.run_state in _TERMINAL:
            run["finished_at"] = run["created_at"]
        return run

    def _create_recurring_run(self, received, raw):
        body = self._json_body(received, raw, "V2beta1RecurringRun")
        trigger = body.get("trigger") or {}
        schedules = [k for k in ("cron_schedule", "periodic_schedule") if trigger.get(k)]
        if len(schedules) != 1:
            raise _bad(f"trigger: expected one of cron_schedule, periodic_schedule: {schedules}")
        cron = (trigger.get("cron_schedule") or {}).get("cron")
        if trigger.get("cron_schedule") and not _robfig_cron_v1(cron or ""):
            raise _bad(f"trigger.cron_schedule.cron: not a cron expression: {cron!r}")
        if not 1 <= int(body["max_concurrency"]) <= 10:
            raise _bad(f"max_concurrency: {body['max_concurrency']} is not in [1, 10]")
        self._check_run_like(body)
        recurring_run_id, now = self._next("recurring-run")
        recurring_run = {
            **body,
            "recurring_run_id": recurring_run_id,
            "created_at": now,
            "updated_at": now,
            "status": "ENABLED" if body.get("mode", "ENABLE") == "ENABLE" else "DISABLED",
        }
        self.store.recurring_runs[recurring_run_id] = recurring_run
        return recurring_run
