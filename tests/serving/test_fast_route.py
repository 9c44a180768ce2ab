"""The fast V1 route (`serving.fast_route`) answers exactly as KServe's own route does.

Two copies of the server's app (`serving.server.in_process_app`: KServe's app with this
server's additions) serve the same model in process: one with the fast route, one without. Every request, good and bad, goes to both, and the status, body and headers must
be the same. The real server runs with the fast route, so every HTTP test of the server in
tests/serving covers it as well.
"""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from components.deploy.logic import to_json_rows
from serving.model import TabularModel
from serving.server import in_process_app
from tests.serving.test_server_features import FEATURES, SCHEMA, _fit, _registry

NAME = "parole"
MAX_BYTES = 20_000
MAX_ROWS = 50
PREDICT = f"/v1/models/{NAME}:predict"
# Headers that differ between two answers for reasons of their own: the time, and a CloudEvent
# answer's own new id.
UNCOMPARED = {"date", "ce-time", "ce-id"}

pytestmark = pytest.mark.filterwarnings(
    # Starlette's TestClient still runs on httpx, which this Starlette deprecates.
    "ignore:Using `httpx` with `starlette.testclient`",
    "ignore:ORJSONResponse is deprecated",
)


def _app(model: TabularModel, fast: bool, calls: list | None = None):
    """The server's app for `model` (`in_process_app`), with or without the fast route. With
    `fast`, each call of the fast route's handler is appended to `calls` (so that a test knows
    the fast route answered)."""
    import serving.server

    handler_of = serving.server.v1_predict_handler

    def counting_handler(model_server):
        handler = handler_of(model_server)

        async def counted(model_name, request):
            calls.append(model_name)
            return await handler(model_name, request)

        return counted

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serving.server, "v1_predict_handler", counting_handler)
        return in_process_app(model, max_body_bytes=MAX_BYTES, fast_route=fast)


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    from starlette.testclient import TestClient

    from tests.conftest import make_parole

    registry = _registry(tmp_path_factory.mktemp("fast"), _fit(LogisticRegression()))
    registry.promote("v1")
    model = TabularModel(NAME, registry=registry, max_batch_rows=MAX_ROWS)
    model.load()
    rows = to_json_rows(make_parole(with_score=True).loc[:9, FEATURES])
    client = ("127.0.0.1", 40000)
    calls: list = []
    # raise_server_exceptions=False: a 500 is an answer to compare, as a client sees it.
    with (
        TestClient(
            _app(model, fast=True, calls=calls), client=client, raise_server_exceptions=False
        ) as fast,
        TestClient(_app(model, fast=False), client=client, raise_server_exceptions=False) as slow,
    ):
        yield model, rows, fast, slow, calls
    model.stop()


def _answer(response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in UNCOMPARED}
    return response.status_code, response.content, headers


def _both(clients, method: str, path: str, **request) -> tuple:
    _, _, fast, slow, _ = clients
    return _answer(fast.request(method, path, **request)), _answer(
        slow.request(method, path, **request)
    )


def _requests(rows: list[dict]) -> dict[str, dict]:
    """name -> request keyword arguments; each carries its own X-Request-Id, so that both apps
    answer with the same id."""
    wrong_type = [{**rows[0], "age": "old"}]
    missing = [{k: v for k, v in rows[0].items() if k != "checks"}]
    json_headers = {"content-type": "application/json"}
    cloud_event = {
        "ce-specversion": "1.0",
        "ce-id": "event-7",
        "ce-source": "tests",
        "ce-type": "org.kubeflow.serving.inference.request",
        "content-type": "application/json",
    }
    cases = {
        "rows": {"json": {"instances": rows}},
        "probabilities": {"json": {"instances": rows, "return_probabilities": True}},
        "a string for a number": {"json": {"instances": wrong_type}},
        "a missing feature": {"json": {"instances": missing}},
        "an unknown feature": {"json": {"instances": [{**rows[0], "colr": "red"}]}},
        "no instances": {"json": {"rows": rows}},
        "instances not a list": {"json": {"instances": rows[0]}},
        "a list body": {"json": [1, 2]},
        "NaN": {"content": '{"instances": [{"age": NaN}]}', "headers": json_headers},
        "not JSON": {"content": b'{"instances": [', "headers": json_headers},
        "empty": {"content": b"", "headers": json_headers},
        "not UTF-8": {"content": b'{"instances": ["\xff"]}', "headers": json_headers},
        # Within the body limit, deeper than the depth limit.
        "too deep": {"content": b"[" * 9_000 + b"]" * 9_000, "headers": json_headers},
        "too many rows": {"json": {"instances": rows * 6}},
        "too many bytes": {"json": {"instances": rows * 60}},
        "text/plain": {
            "content": json.dumps({"instances": rows}),
            "headers": {"content-type": "text/plain"},
        },
        "a CloudEvent": {"json": {"instances": rows}, "headers": cloud_event},
        "a CloudEvent of a bad row": {"json": {"instances": wrong_type}, "headers": cloud_event},
    }
    for number, case in enumerate(cases.values()):
        case["headers"] = {"x-request-id": f"request-{number}", **case.get("headers", {})}
    return cases


def test_every_request_is_answered_as_kserves_route_answers_it(clients):
    _, rows, _, _, calls = clients
    statuses = {}
    for name, request in _requests(rows).items():
        before = len(calls)
        fast, slow = _both(clients, "POST", PREDICT, **request)
        assert fast == slow, name
        statuses[name] = fast[0]
        # KServe's handler, called by the fast route, unless a limit refused the body first.
        assert len(calls) == before + (name not in ("too deep", "too many bytes")), name
    # The cases cover what they say: answers, client errors (with the row and field), limits.
    assert statuses["rows"] == statuses["probabilities"] == statuses["a CloudEvent"] == 200
    assert statuses["a string for a number"] == statuses["NaN"] == statuses["too deep"] == 400
    assert statuses["too many rows"] == statuses["too many bytes"] == 413


def test_the_answers_are_the_models(clients):
    model, rows, fast, _, _ = clients
    response = fast.post(PREDICT, json={"instances": rows, "return_probabilities": True})
    body = response.json()
    import pandas as pd

    from components.common.schema import as_model_input

    frame = as_model_input(pd.DataFrame(rows), SCHEMA)
    assert body["predictions"] == model.model.predict(frame).tolist()
    np.testing.assert_allclose(body["probabilities"], model.model.predict_proba(frame), atol=1e-12)
    assert body["model_version"] == "v1"
    assert len(response.headers["x-request-id"]) == 32  # a new id, none was sent
    error = fast.post(PREDICT, json={"instances": [{**rows[0], "age": "old"}]})
    assert error.status_code == 400
    assert "instances[0]" in error.json()["error"] and "'age'" in error.json()["error"]


def test_other_routes_and_methods_reach_the_app(clients):
    calls = clients[-1]
    before = len(calls)
    for method, path in (
        ("POST", "/v1/models/other:predict"),  # another model: KServe's 404
        ("GET", PREDICT),  # 405, with Allow: POST
        ("GET", f"/v1/models/{NAME}"),  # readiness
        ("GET", f"/v2/models/{NAME}"),  # V2 metadata
    ):
        fast, slow = _both(clients, method, path, headers={"x-request-id": "same"})
        assert fast == slow, (method, path)
    fast, _ = _both(clients, "GET", PREDICT)
    assert fast[0] == 405
    assert len(calls) == before  # none of them went the fast way


def test_a_model_fault_is_the_same_500_on_both(clients, monkeypatch):
    model, rows, _, _, _ = clients

    def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(model, "predict", broken)
    fast, slow = _both(
        clients, "POST", PREDICT, json={"instances": rows}, headers={"x-request-id": "r"}
    )
    assert fast == slow
    assert fast[0] == 500 and b"the model broke" in fast[1]


def test_with_kserves_timing_log_on_the_route_stays_fastapis(clients, monkeypatch):
    """KSERVE_LOGLEVEL=INFO keeps KServe's TimingMiddleware, which logs every request's time:
    the fast route would pass it by, so the predict route stays the app's, and is timed."""
    import logging

    from starlette.testclient import TestClient

    model, rows, _, _, _ = clients
    monkeypatch.setenv("KSERVE_LOGLEVEL", "INFO")
    trace = logging.getLogger("kserve.trace")
    level = trace.level
    trace.setLevel(logging.INFO)  # as KServe sets it from KSERVE_LOGLEVEL
    calls: list = []
    try:
        app = _app(model, fast=True, calls=calls)
    finally:
        trace.setLevel(level)
    assert "TimingMiddleware" in [m.cls.__name__ for m in app.user_middleware]
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        response = client.post(PREDICT, json={"instances": rows})
    assert response.status_code == 200
    assert calls == []  # not the fast route
