"""The served model's V1 predict route, answered by KServe's own handler without FastAPI's router.

A single-row prediction through the ONNX graph costs under 0.1 ms; measured under load, FastAPI's
route matching, dependency solving and its per-route middleware stack cost about a fifth of the
server's time per request, more than the prediction itself. `FastV1Predict`, the outermost ASGI
middleware, therefore answers exactly one route, `POST /v1/models/<the served model>:predict`,
by calling KServe's own V1 handler (`kserve_compat.v1_predict_handler`): the same decoding
(JSON or CloudEvent), readiness check, data plane, `kserve.Model.__call__` (with its Prometheus
histograms), encoding and response class as KServe's route. Around it run this server's own
`RequestIdHeader` and `BodyLimit` (the body and depth limits), as on every other route, and an
exception becomes the answer the app's exception handler for it gives (`InvalidInput` 400 naming
the row and field, `ModelNotReady` 503, ...); anything without a handler of its own goes on to
Starlette's ServerErrorMiddleware (HTTP 500), as from any route.

Every other request (another method, path or model name, V2, the admin and metadata routes) goes
to the app unchanged. tests/serving/test_fast_route.py sends the same requests, good and bad,
through this route and through KServe's, and compares status, body and headers.
"""

from starlette.requests import Request

from serving.http_app import BodyLimit, RequestIdHeader

# The keys under which Starlette keeps the handlers that ServerErrorMiddleware, not the
# exception middleware, runs: an exception with only these is left to propagate to it.
_SERVER_ERROR_KEYS = (500, Exception)


def _handler_for(handlers: dict, error: Exception):
    """The app's exception handler for `error` (by its class's MRO), or None."""
    for cls in type(error).__mro__:
        if cls in _SERVER_ERROR_KEYS:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


class FastV1Predict:
    """ASGI middleware: `POST /v1/models/NAME:predict` for the model NAME, by KServe's handler.

    Args:
        app: the rest of the app, which answers every other request.
        predict: KServe's V1 predict handler (`kserve_compat.v1_predict_handler`).
        model_name: the served model's name.
        max_body_bytes: the body limit (`BodyLimit`); None: none.
    """

    def __init__(self, app, predict, model_name: str, max_body_bytes: int | None):
        self.app = app
        self.path = f"/v1/models/{model_name}:predict"
        self.model_name = model_name
        self._predict = predict
        self._answer = RequestIdHeader(BodyLimit(self._v1_predict, max_bytes=max_body_bytes))

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path") == self.path
        ):
            await self._answer(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _v1_predict(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await self._predict(self.model_name, request)
        except Exception as error:
            handler = _handler_for(scope["app"].exception_handlers, error)
            if handler is None:
                raise
            response = await handler(request, error)
        await response(scope, receive, send)
