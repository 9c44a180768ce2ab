"""POST /admin/labels (serving.labels_route) on a FastAPI app with a stand-in model: appended
labels, refusals with their counts, the request limits, the admin token, a live prediction log
flushed first, and each row checked against the version that answered it."""

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from sklearn.dummy import DummyClassifier

from components.common.labels import read_labels
from components.common.prediction_log import PredictionLog
from components.common.registry import ModelRegistry
from serving.http_app import AdminGuard
from serving.labels_route import ADMIN_LABELS_PATH, MAX_LABELS, add_labels_route

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

NAME = "arrests-release"
TOKEN = "a-test-token-of-32-characters-xx"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEMA = {"task": "classification", "classes": [0, 1], "features": []}


def stand_in(version: str = "v1", schema: dict = SCHEMA, registry=None):
    return SimpleNamespace(name=NAME, version=version, schema=schema, registry=registry)


@pytest.fixture
def lakes(tmp_path):
    """The log has request "one" (one row) and "two" (two rows), answered by v1."""
    log_uri = str(tmp_path / "predictions")
    with PredictionLog(log_uri, NAME) as log:
        log.record("one", "v1", {"age": [30]}, [0])
        log.record("two", "v1", {"age": [40, 50]}, [1, 0])
    return log_uri, str(tmp_path / "labels")


def client(model, lakes, prediction_log=None):
    from starlette.testclient import TestClient  # here: its import warns about httpx

    app = FastAPI()
    app.add_middleware(AdminGuard, token=TOKEN)
    log_uri, labels_uri = lakes
    add_labels_route(app, model, labels_uri, log_uri, prediction_log=prediction_log)
    return TestClient(app, client=("127.0.0.1", 40000))


def stored(lakes) -> list:
    frame, _ = read_labels(lakes[1], NAME)
    return sorted(zip(frame["request_id"], frame["row"], frame["label"], strict=True))


def test_valid_labels_are_appended_as_the_class_type(lakes):
    body = {
        "labels": [{"request_id": "one", "label": "1"}, {"request_id": "two", "row": 1, "label": 0}]
    }
    with client(stand_in(), lakes) as http:
        response = http.post(ADMIN_LABELS_PATH, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["pairs"], answer["appended"], answer["refused"]) == (2, 2, {})
    assert stored(lakes) == [("one", 0, 1), ("two", 1, 0)]


def test_an_invalid_pair_is_refused_with_the_counts_and_nothing_is_written(lakes):
    body = {
        "labels": [
            {"request_id": "one", "label": 2},
            {"request_id": "ghost", "label": 1},
            {"request_id": "two", "row": 0, "label": 1},
        ]
    }
    with client(stand_in(), lakes) as http:
        response = http.post(ADMIN_LABELS_PATH, json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["appended"] == 0
    assert answer["refused"] == {"unknown request id": 1, "not one of the model's classes": 1}
    assert answer["examples"]["unknown request id"] == ["ghost"]
    assert "nothing written" in answer["error"]
    assert stored(lakes) == []


def test_skip_invalid_appends_the_valid_pairs_and_counts_the_rest(lakes):
    body = {
        "labels": [{"request_id": "one", "label": 1}, {"request_id": "one", "label": 0}]
        + [{"request_id": "two", "row": 1, "label": 1}],
        "skip_invalid": True,
    }
    with client(stand_in(), lakes) as http:
        response = http.post(ADMIN_LABELS_PATH, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["refused"] == {"given more than once": 2}
    assert stored(lakes) == [("two", 1, 1)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"pairs": []}', 'expected {"labels"'),
        (b'{"labels": [{"request_id": "one"}]}', "field 'labels'[0]: expected an object"),
        (b'{"labels": [{"request_id": "one", "label": 1}], "skip_invalid": "yes"}', "skip_invalid"),
    ],
)
def test_a_malformed_body_is_400_naming_the_field(lakes, body, message):
    with client(stand_in(), lakes) as http:
        response = http.post(ADMIN_LABELS_PATH, content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_more_than_the_limit_of_pairs_is_413(lakes):
    body = {"labels": [{"request_id": "one", "label": 1}] * (MAX_LABELS + 1)}
    with client(stand_in(), lakes) as http:
        response = http.post(ADMIN_LABELS_PATH, json=body, headers=AUTH)
    assert response.status_code == 413
    assert f"{MAX_LABELS:,}" in response.json()["error"]
    assert stored(lakes) == []


def test_the_route_needs_the_admin_token(lakes):
    with client(stand_in(), lakes) as http:
        response = http.post(
            ADMIN_LABELS_PATH, json={"labels": [{"request_id": "one", "label": 1}]}
        )
    assert response.status_code == 401
    assert stored(lakes) == []


def test_a_live_prediction_log_is_flushed_so_a_fresh_request_can_be_labelled(lakes):
    log_uri, _ = lakes
    # Nothing would be written for an hour, or 1,000 rows, without the route's flush.
    with PredictionLog(log_uri, NAME, flush_seconds=3600) as live:
        live.record("fresh", "v1", {"age": [60]}, [1])
        with client(stand_in(), lakes, prediction_log=live) as http:
            body = {"labels": [{"request_id": "fresh", "label": 1}]}
            response = http.post(ADMIN_LABELS_PATH, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert stored(lakes) == [("fresh", 0, 1)]


def test_each_row_is_checked_against_the_version_that_answered_it(tmp_path, lakes):
    """The log's rows were answered by v1 (classes 0, 1); the server now serves v2 (classes
    "low", "high"): a v1 row takes v1's classes, read from the registry."""
    registry = ModelRegistry(str(tmp_path / "models"), NAME)
    registry.register(DummyClassifier().fit([[0], [1]], [0, 1]), {"schema": SCHEMA})
    v2_schema = {"task": "classification", "classes": ["high", "low"], "features": []}
    model = stand_in(version="v2", schema=v2_schema, registry=registry)
    body = {
        "labels": [
            {"request_id": "one", "label": "low"},
            {"request_id": "two", "row": 0, "label": 1},
        ]
    }
    with client(model, lakes) as http:
        response = http.post(ADMIN_LABELS_PATH, json={**body, "skip_invalid": True}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["examples"] == {"not one of the model's classes": ["one"]}
    assert stored(lakes) == [("two", 0, 1)]
