"""The server process: load the model, bind KServe's REST app to one address, handle signals.

`serve()` serves V1 (`/v1/models/NAME:predict`) and V2, the Open Inference Protocol
(`/v2/models/NAME/infer`), with one worker and no gRPC, bound to `host`: 127.0.0.1 unless told
otherwise, where the stock `kserve.ModelServer` always binds 0.0.0.0. It runs in the foreground;
SIGINT and SIGTERM stop it gracefully with exit code 0, and a server that follows a registry
alias reloads it on SIGHUP (which therefore does not end it), or on `POST /admin/reload` with the
admin token from MLPIPE_ADMIN_TOKEN (off without one). A client's bad request is logged
as one WARNING line, not as a server ERROR with a traceback.

With `prediction_log` (a folder, s3:// or gs:// URI), every answered prediction is recorded in
that Parquet lake (`components.common.prediction_log`); the log is flushed after a reload and
closed when the server stops (SIGINT, SIGTERM), within a few seconds, with one line:
"prediction log: N rows written to URI, M dropped". Its counters are at
`GET /v2/models/NAME/prediction-log` and in `/metrics`. With a prediction log and `labels` (the
labels lake), `POST /admin/labels` takes labels for the logged rows (`serving.labels_route`).
"""

import logging
import os
import signal
import threading

from components.common.errors import PipelineInputError
from components.common.model_files import read_model_metadata
from serving.http_app import (
    DEFAULT_MAX_BODY_BYTES,
    PredictionLogMetrics,
    harden_app,
    read_admin_token,
)
from serving.kserve_compat import (
    RestServer,
    describe_platform,
    ignore_kserve_warnings,
    import_kserve,
    new_rest_app,
    v1_predict_handler,
)
from serving.model import DEFAULT_ALIAS, ReloadFailed, ReloadRefused, TabularModel, say
from serving.protocol import DEFAULT_MAX_BATCH_ROWS, InvalidInput
from serving.runtime import DEFAULT_RUNTIME, RUNTIME_ENV

kserve = import_kserve()

# The address a server binds unless told otherwise: this machine only.
LOOPBACK = "127.0.0.1"


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
    kserve_log = logging.getLogger("kserve")
    if not any(isinstance(f, _RejectedRequestFilter) for f in kserve_log.filters):
        kserve_log.addFilter(_RejectedRequestFilter())
    ignore_kserve_warnings()
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
            say("SIGHUP before the model was loaded: ignored")
            return
        threading.Thread(target=self._reload, name="mlpipe-reload", daemon=True).start()


def _configure_app(
    app, model: TabularModel, max_body_bytes, admin_token, labels, v1_predict=None
) -> None:
    """This server's additions to KServe's app; the labels route with a log and a labels lake."""
    from serving.labels_route import add_labels_route

    harden_app(app, model, max_body_bytes, admin_token, v1_predict)
    log = model.prediction_log
    if labels and log is not None:
        add_labels_route(app, model, labels, str(log.uri), prediction_log=log)


def _model_server(model: TabularModel, port: int):
    """The kserve.ModelServer holding the loaded `model` (its model registry and data plane),
    with this server's logging and the V2 metadata's platform. Logging is set first: building
    the app looks at the trace log's level."""
    model_server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1)
    _quiet_logging()
    model_server.register_model(model)
    describe_platform(model_server, model.name, lambda: model.answering_runtime.platform)
    return model_server


def in_process_app(
    model: TabularModel,
    *,
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
    admin_token: str | None = None,
    labels: str | None = None,
    fast_route: bool = True,
):
    """The ASGI app `serve` serves for a loaded `model`, to call in process without a socket
    (tests, benchmarks): KServe's app with this server's additions.

    Args:
        fast_route: False: the model's V1 predict route too is answered through FastAPI's
            router (`serving.fast_route`), to compare the two.
    """
    model_server = _model_server(model, port=0)
    predict = v1_predict_handler(model_server) if fast_route else None
    return new_rest_app(
        model_server,
        lambda app: _configure_app(app, model, max_body_bytes, admin_token, labels, predict),
    )


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
    prediction_log: str | None = None,
    labels: str | None = None,
    runtime: str | None = None,
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
            on SIGHUP or `POST /admin/reload` (which needs the token in MLPIPE_ADMIN_TOKEN:
            see `serving.http_app`).
        alias: champion, candidate, or a version such as v3.
        max_batch_rows: the most rows per request (HTTP 413 above it); None: no limit.
        max_body_bytes: the largest request body (HTTP 413 above it); None: no limit.
        prediction_log: record every answered prediction in this lake (a folder, s3://,
            gs://); None: off.
        labels: the labels lake that `POST /admin/labels` appends to (with the admin token);
            the route is there only with a prediction log, whose rows the labels name.
        runtime: auto (the version's ONNX graph when it is proven equal to model.joblib, else
            scikit-learn), onnx (refuse a version without a proven graph) or sklearn
            (`serving.runtime`); None: the environment's MLPIPE_RUNTIME, else auto. The start-up line and the V2 model metadata's "platform" say
            which one answers.

    Raises:
        PipelineInputError: the model folder is incomplete, a checksum differs, the alias names
            no version, the model cannot be loaded, MLPIPE_ADMIN_TOKEN is too short, or
            `runtime` is onnx and the version has no proven ONNX graph.
    """
    from components.common.registry import ModelRegistry

    runtime = runtime or os.environ.get(RUNTIME_ENV) or DEFAULT_RUNTIME
    shutdown = _Shutdown()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, shutdown)
    # From the environment only (MLPIPE_ADMIN_TOKEN): a bad one stops the server before it loads.
    admin_token = read_admin_token()

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
            prediction_log=prediction_log,
            runtime=runtime,
        )
    elif model_dir is not None:
        if not name and "://" in str(model_dir) and not str(model_dir).startswith("file://"):
            # The name is in the version's URI: <store>/<name>/v<N>.
            name = str(model_dir).rstrip("/").rsplit("/", 2)[-2]
        model = TabularModel(
            name or read_model_metadata(model_dir)["name"],
            model_dir,
            max_batch_rows=max_batch_rows,
            prediction_log=prediction_log,
            runtime=runtime,
        )
    else:
        raise PipelineInputError("give --model_dir or --model_store")
    if model.registry is not None:
        # Before loading: a SIGHUP during start-up must not end the process (its default
        # action). A server of one folder keeps that default: it has nothing to reload.
        signal.signal(signal.SIGHUP, _ReloadOnHangup(model))
    try:
        model.load()
    except BaseException:
        model.close_prediction_log()  # nothing recorded yet; its writer thread ends
        raise

    # The ModelServer supplies the model registry and data plane; its own start() is not used,
    # because its REST server binds 0.0.0.0 and it would start gRPC on [::].
    model_server = _model_server(model, port)
    rest_server = RestServer(
        model_server,
        host,
        port,
        configure_app=lambda app: _configure_app(
            app, model, max_body_bytes, admin_token, labels, v1_predict_handler(model_server)
        ),
        rest_options=rest_options,
    )
    shutdown.server = rest_server.uvicorn_server
    following = f" ({alias} of {model_store})" if model_store is not None else ""
    url = _display_url(rest_server.scheme, host, port)
    say(
        f"serving {model.name} {model.version}{following} at {url}; "
        f"{model.answering_runtime.describe()}"
    )
    if model.prediction_log is not None:
        say(f"prediction log: {model.prediction_log_stats()['uri']}")
    from prometheus_client import REGISTRY

    metrics = PredictionLogMetrics(model)
    REGISTRY.register(metrics)  # KServe's /metrics serves this registry
    try:
        rest_server.run()
    finally:
        REGISTRY.unregister(metrics)
        model.stop()  # closes the prediction log: what is queued is written, bounded
