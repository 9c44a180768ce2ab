"""Every use of KServe beyond its public model API, in one place: a KServe upgrade changes this file.

The rest of `serving` uses only what KServe documents for a custom model: `kserve.Model`, the
V2 request and response types (`InferRequest`, `InferOutput`, `InferResponse`), `kserve.errors`
and `kserve.ModelServer` to register a model. What this module wraps, as of KServe 0.21:

- `kserve.model_server` parses `sys.argv` when it is first imported (`import_kserve`);
- its module-level argparse parser, which the server's own parser extends (`server_flags`);
- `kserve.protocol.rest.server.RESTServer`, its `create_application` hook, the FastAPI app found
  by `kserve.constants.constants.FASTAPI_APP_IMPORT_STRING`, and the ModelServer's `dataplane`
  and `model_repository_extension` that it is built from (`RestServer`);
- the uvicorn `Config` the REST server holds (`config.host`, `config.ssl_certfile`) and its
  private uvicorn server (`_server`);
- its TimingMiddleware, left out while the `kserve.trace` log it writes is off
  (`_drop_silent_timing`);
- the data plane's `model_metadata`, whose "platform" KServe leaves empty (`describe_platform`);
- `kserve.protocol.rest.v1_endpoints.V1Endpoints.predict`, KServe's own V1 predict handler,
  which the fast route calls without FastAPI's router (`v1_predict_handler`);
- RESTServer's `_add_middlewares`, `_register_endpoints` and `_add_exception_handlers`, to
  build the same app anew for use in process (`new_rest_app`);
- the deprecation warning KServe 0.21's answers raise under this FastAPI (`ignore_kserve_warnings`).

The stock `kserve.ModelServer.start()` is not used: its REST server binds 0.0.0.0 and it would
start gRPC on [::]; this server binds the address it is given, and serves REST only.
"""

import sys
import warnings


def import_kserve(read_command_line: bool = False):
    """Import kserve, which parses `sys.argv` when `kserve.model_server` is first imported.

    Run as a program (`python -m serving`), that command line is ours and meant for it. Imported
    as a library (by tests, by `mlpipe serve`, by the pipeline), the host program's arguments
    are not, and an ambiguous prefix among them would even make argparse exit the process; so
    it sees an empty command line instead. Every module of `serving` gets kserve from here.
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


def server_flags():
    """KServe's own model-server flags (--http_port, --model_name, --workers, ...), as an
    argparse parser to use as a parent: `kserve.model_server.parser`."""
    return import_kserve().model_server.parser


def ignore_kserve_warnings() -> None:
    """KServe 0.21 answers with ORJSONResponse, which this FastAPI deprecates with a warning on
    the first requests; it is KServe's to change, and says nothing about this server."""
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")


def describe_platform(model_server, name: str, platform) -> None:
    """Make the V2 model metadata (`GET /v2/models/NAME`) of model `name` say its platform,
    `platform()` (called per request: a reload may change it), where KServe answers ""."""
    dataplane = model_server.dataplane
    metadata_of = dataplane.model_metadata

    async def model_metadata(model_name: str):
        metadata = await metadata_of(model_name)
        if model_name == name:
            metadata = {**metadata, "platform": platform()}
        return metadata

    dataplane.model_metadata = model_metadata


def v1_predict_handler(model_server):
    """KServe's own V1 predict handler for the models of `model_server`,
    `V1Endpoints.predict(model_name, request)`: decode the body (JSON or CloudEvent), check the
    model is ready, run it through the data plane, encode the answer. It takes a Starlette
    Request and returns a Starlette Response, so that `serving.fast_route` can call it for one
    route without FastAPI's router in between."""
    from kserve.protocol.rest.v1_endpoints import V1Endpoints

    return V1Endpoints(model_server.dataplane).predict


def _drop_silent_timing(app) -> None:
    """Leave out KServe's TimingMiddleware when its log line would be dropped.

    It measures every request (two `getrusage` calls and a second route match) only to write
    one INFO line to the `kserve.trace` logger, which this server keeps at WARNING unless
    KSERVE_LOGLEVEL asks for more; measured here, a fifth of a single-row request's time in the
    server process. Starlette builds the middleware stack at the first request, so removing it
    from `user_middleware` before then is enough.
    """
    import logging

    from timing_asgi import TimingMiddleware

    if logging.getLogger("kserve.trace").isEnabledFor(logging.INFO):
        return
    app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]


def new_rest_app(model_server, configure_app):
    """KServe's REST app for the models of `model_server`, built as `RestServer` builds the one
    it serves (KServe's middlewares, endpoints and exception handlers, then `configure_app`),
    on a new FastAPI app: to call in process, without a socket (tests, benchmarks). KServe's own
    app is one module-level object, which can be built only once per process."""
    from fastapi import FastAPI
    from fastapi.responses import ORJSONResponse
    from kserve.protocol.rest.server import RESTServer

    rest = RESTServer(
        "kserve.model_server:app",
        model_server.dataplane,
        model_server.model_repository_extension,
        0,
    )
    app = FastAPI(
        title="KServe ModelServer",
        docs_url=None,
        redoc_url=None,
        default_response_class=ORJSONResponse,
    )
    rest._add_middlewares(app)
    _drop_silent_timing(app)
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    configure_app(app)
    return app


class RestServer:
    """KServe's REST app (V1 and V2) for the models of a `kserve.ModelServer`, bound to `host`.

    Args:
        model_server: the ModelServer holding the registered models (its data plane and model
            repository answer the requests).
        host: the address to bind.
        port: the HTTP port.
        configure_app: called with the FastAPI app after KServe has added its own routes and
            exception handlers, so that what it adds replaces them.
        rest_options: more keyword arguments for KServe's RESTServer (event_loop,
            timeout_keep_alive, access_log_format, ssl_certfile, ssl_keyfile).

    Attributes:
        uvicorn_server: the uvicorn.Server that will serve; setting its `should_exit` stops it
            gracefully (before it starts: right after its startup).
        scheme: "https" with a certificate, else "http".
    """

    def __init__(self, model_server, host: str, port: int, *, configure_app, rest_options=None):
        from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
        from kserve.protocol.rest.server import RESTServer
        from uvicorn.importer import import_from_string

        class _Server(RESTServer):
            def _add_middlewares(self, app):
                super()._add_middlewares(app)
                _drop_silent_timing(app)

            def create_application(self):
                super().create_application()
                configure_app(import_from_string(FASTAPI_APP_IMPORT_STRING))

        self._rest = _Server(
            FASTAPI_APP_IMPORT_STRING,
            model_server.dataplane,
            model_server.model_repository_extension,
            port,
            workers=1,
            **(rest_options or {}),
        )
        # uvicorn.Server binds to config.host at startup, and RESTServer's server holds this very
        # Config object, so changing it here is enough.
        self._rest.config.host = host
        self.uvicorn_server = self._rest._server
        self.scheme = "https" if self._rest.config.ssl_certfile else "http"

    def run(self) -> None:
        """Serve in the foreground until the uvicorn server is asked to exit."""
        self._rest.run()
