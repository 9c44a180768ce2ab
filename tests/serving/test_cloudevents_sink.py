"""The CloudEvents sink for KServe's payload logger, over HTTP as the logger talks to it.

Each test runs the sink's app under uvicorn on 127.0.0.1 (in a thread, stopped by its handle;
one test runs the real program and stops it with SIGTERM), posts events with `requests` as
KServe's logger sends them (binary mode: ce-* headers, the payload as the body), and reads the
lake back with `read_prediction_log`. Expiry runs on a clock the test moves, not on sleeps.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import uvicorn

from components.common.prediction_log import read_prediction_log
from serving.cloudevents_sink import (
    REQUEST_EVENT,
    RESPONSE_EVENT,
    CloudEventsSink,
    Joiner,
    create_app,
    main,
    parse_event,
)

ROOT = Path(__file__).parents[2]
MODEL = "arrests-release"
ROWS = [{"age": 31, "sex": "F", "colour": "White"}, {"age": 22, "sex": "M", "colour": "Black"}]
# This project's server, V1 with "return_probabilities": true.
V1_RESPONSE = {
    "predictions": ["Yes", "No"],
    "probabilities": [[0.25, 0.75], [0.9, 0.1]],
    "classes": ["No", "Yes"],
    "model_version": "v3",
}


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def headers(kind: str, request_id: str, model: str = MODEL, **extra) -> dict:
    """The headers KServe's logger sends with a binary-mode event."""
    found = {
        "ce-specversion": "1.0",
        "ce-id": request_id,
        "ce-type": REQUEST_EVENT if kind == "request" else RESPONSE_EVENT,
        "ce-source": f"http://localhost:9081/v1/models/{model}:predict",
        "ce-inferenceservicename": model,
        "ce-namespace": "mlpipe",
        "ce-component": "predictor",
        "ce-endpoint": "default",
        "ce-time": "2026-12-03T06:00:00Z",
        "content-type": "application/json",
    }
    found.update({f"ce-{key}": value for key, value in extra.items()})
    return found


class RunningSink:
    def __init__(self, lake: Path, **options):
        self.lake = lake
        self.clock = Clock()
        max_body = options.pop("max_body_bytes", 10_000)
        self.sink = CloudEventsSink(
            str(lake), clock=self.clock, log_options={"flush_seconds": 60.0}, **options
        )
        config = uvicorn.Config(
            create_app(self.sink, max_body),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the sink did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def post(self, kind: str, request_id: str, body, **header_options) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body)
        return requests.post(
            f"{self.url}/",
            data=data,
            headers=headers(kind, request_id, **header_options),
            timeout=10,
        )

    def stats(self) -> dict:
        return requests.get(f"{self.url}/stats", timeout=10).json()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(30)

    def rows(self, model: str = MODEL):
        """Stop the sink (which flushes the log) and read the lake back."""
        self.stop()
        frame, skipped = read_prediction_log(str(self.lake), model)
        assert skipped == []
        return frame


@pytest.fixture
def start(tmp_path):
    started: list[RunningSink] = []

    def _start(**options) -> RunningSink:
        sink = RunningSink(tmp_path / "lake", **options)
        started.append(sink)
        return sink

    yield _start
    for sink in started:
        sink.stop()


# --- Joined and written ------------------------------------------------------------------------


def test_request_then_response_is_one_row_per_instance(start):
    sink = start()
    assert sink.post("request", "req-1", {"instances": ROWS}).status_code == 202
    assert sink.post("response", "req-1", V1_RESPONSE).status_code == 202
    frame = sink.rows()
    assert frame["request_id"].tolist() == ["req-1", "req-1"]
    assert frame["row"].tolist() == [0, 1]
    assert frame["model_version"].tolist() == ["v3", "v3"]
    assert frame["age"].tolist() == [31.0, 22.0]
    assert frame["sex"].tolist() == ["F", "M"]
    assert frame["colour"].tolist() == ["White", "Black"]
    assert frame["prediction"].tolist() == ["Yes", "No"]
    assert frame["probability_No"].tolist() == [0.25, 0.9]
    assert frame["probability_Yes"].tolist() == [0.75, 0.1]


def test_response_then_request_v2_is_joined(start):
    """V2 as this project's server speaks it: one tensor per feature, the outputs
    `predictions` and `probabilities` with the classes as a JSON array in a string."""
    sink = start()
    response = {
        "model_name": MODEL,
        "model_version": "v4",
        "id": "req-2",
        "outputs": [
            {"name": "predictions", "shape": [2], "datatype": "BYTES", "data": ["No", "Yes"]},
            {
                "name": "probabilities",
                "shape": [2, 2],
                "datatype": "FP64",
                "data": [0.6, 0.4, 0.3, 0.7],
                "parameters": {"classes": json.dumps(["No", "Yes"])},
            },
        ],
    }
    request = {
        "id": "req-2",
        "inputs": [
            {"name": "age", "shape": [2], "datatype": "INT64", "data": [40, 50]},
            {"name": "sex", "shape": [2, 1], "datatype": "BYTES", "data": [["F"], ["M"]]},
        ],
    }
    assert sink.post("response", "req-2", response).status_code == 202
    assert sink.stats()["pending"] == 1
    assert sink.post("request", "req-2", request).status_code == 202
    stats = sink.stats()
    assert (stats["joined"], stats["pending"], stats["dropped"]) == (1, 0, 0)
    frame = sink.rows()
    assert frame[["age", "sex", "prediction", "model_version"]].values.tolist() == [
        [40.0, "F", "No", "v4"],
        [50.0, "M", "Yes", "v4"],
    ]
    assert frame["probability_Yes"].tolist() == [0.4, 0.7]


def test_kserve_sklearn_runtime_lists_are_named_f0_and_version_is_empty(start):
    """KServe's own runtime: V1 rows as lists, {"predictions": [...]} with no version."""
    sink = start()
    sink.post("request", "a", {"instances": [[1.5, 2], [3.5, 4]]})
    sink.post("response", "a", {"predictions": [0, 1]})
    frame = sink.rows()
    assert frame[["f0", "f1", "prediction"]].values.tolist() == [[1.5, 2, 0], [3.5, 4, 1]]
    assert frame["model_version"].tolist() == ["", ""]
    assert not [c for c in frame.columns if c.startswith("probability_")]


def test_v2_feature_matrix_is_named_as_v1_lists(start):
    """KServe's sklearn runtime over V2: one tensor `input-0` of shape [rows, k], `output-0`."""
    sink = start()
    matrix = {"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}
    sink.post("request", "b", {"inputs": [matrix]})
    output = {"name": "output-0", "shape": [2], "datatype": "INT64", "data": [1, 0]}
    sink.post("response", "b", {"model_name": MODEL, "outputs": [output]})
    frame = sink.rows()
    assert frame[["f0", "f1", "f2", "prediction"]].values.tolist() == [[1, 2, 3, 1], [4, 5, 6, 0]]


def test_structured_mode_is_accepted(start):
    sink = start()
    for kind, data in (("request", {"instances": ROWS[:1]}), ("response", {"predictions": [1]})):
        envelope = {
            "specversion": "1.0",
            "id": "s-1",
            "type": REQUEST_EVENT if kind == "request" else RESPONSE_EVENT,
            "source": "http://localhost:9081",
            "inferenceservicename": MODEL,
            "component": "predictor",
            "datacontenttype": "application/json",
            "data": data,
        }
        answer = requests.post(
            f"{sink.url}/",
            data=json.dumps(envelope),
            headers={"content-type": "application/cloudevents+json"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
    frame = sink.rows()
    assert frame[["request_id", "age", "prediction"]].values.tolist() == [["s-1", 31.0, 1]]


def test_models_are_written_to_their_own_partitions(start):
    sink = start()
    for model in ("alpha", "beta"):
        sink.post("request", "same-id", {"instances": ROWS[:1]}, inferenceservicename=model)
        sink.post("response", "same-id", {"predictions": [model]}, inferenceservicename=model)
    assert sink.stats()["joined"] == 2
    sink.stop()
    for model in ("alpha", "beta"):
        assert sink.rows(model)["prediction"].tolist() == [model]


# --- Counted, never silent -------------------------------------------------------------------


def test_an_unmatched_half_expires_and_is_counted(start):
    sink = start(ttl_seconds=30)
    sink.post("request", "lonely", {"instances": ROWS})
    sink.clock.now += 29
    assert sink.stats()["pending"] == 1
    sink.clock.now += 2
    stats = sink.stats()
    assert (stats["pending"], stats["dropped"], stats["dropped_by_reason"]["expired"]) == (0, 1, 1)
    # Its partner, late, waits alone (and is not joined with nothing).
    sink.post("response", "lonely", V1_RESPONSE)
    assert sink.stats()["joined"] == 0
    assert len(sink.rows()) == 0


def test_overflowing_halves_are_counted(start):
    sink = start(max_pending=2)
    for request_id in ("one", "two", "three"):
        assert sink.post("request", request_id, {"instances": ROWS}).status_code == 202
    stats = sink.stats()
    assert (stats["pending"], stats["dropped_by_reason"]["overflow"]) == (2, 1)
    sink.post("response", "one", V1_RESPONSE)  # its request was the one dropped
    sink.post("response", "three", V1_RESPONSE)
    assert sink.rows()["request_id"].unique().tolist() == ["three"]


def test_mismatched_row_counts_and_duplicates_are_counted(start):
    sink = start()
    sink.post("request", "m", {"instances": ROWS})
    sink.post("response", "m", {"predictions": [1]})
    sink.post("request", "d", {"instances": ROWS[:1]})
    sink.post("request", "d", {"instances": ROWS[1:]})  # a retried send: the newer one is kept
    sink.post("response", "d", {"predictions": ["x"]})
    by_reason = sink.stats()["dropped_by_reason"]
    assert (by_reason["mismatched"], by_reason["duplicate"]) == (1, 1)
    frame = sink.rows()
    assert frame[["request_id", "age"]].values.tolist() == [["d", 22.0]]


def test_a_transformers_events_are_ignored(start):
    sink = start()
    sink.post("request", "t", {"instances": ROWS}, component="transformer")
    sink.post("response", "t", V1_RESPONSE, component="transformer")
    stats = sink.stats()
    assert (stats["received"], stats["ignored"], stats["pending"]) == (2, 2, 0)
    assert len(sink.rows()) == 0


@pytest.mark.parametrize(
    ("body", "header_options", "named"),
    [
        (b'{"instances": [', {}, "not JSON"),
        (b"", {}, "no data"),
        ({"rows": []}, {}, "'instances'"),
        ({"instances": []}, {}, "'instances'"),
        (
            {"inputs": [{"name": "age", "shape": [2], "datatype": "INT64", "data": [1]}]},
            {},
            "shape [2]",
        ),
        (
            {"inputs": [{"name": "age", "shape": [2], "datatype": "INT64"}]},
            {},
            "binary tensor data",
        ),
        ({"instances": ROWS}, {"type": "dev.example.other"}, "'type'"),
        ({"instances": ROWS}, {"inferenceservicename": ""}, "inferenceservicename"),
        ({"instances": ROWS}, {"inferenceservicename": "a/b"}, "inferenceservicename"),
        ({"instances": ROWS}, {"id": "x" * 200}, "'id'"),
    ],
)
def test_malformed_events_are_400_with_one_line(start, body, header_options, named):
    sink = start()
    answer = sink.post("request", "bad", body, **header_options)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert named in error and "\n" not in error
    stats = sink.stats()
    assert (stats["malformed"], stats["received"], stats["pending"]) == (1, 0, 0)


def test_a_request_without_cloudevents_headers_is_400(start):
    sink = start()
    answer = requests.post(f"{sink.url}/", json={"instances": ROWS}, timeout=10)
    assert answer.status_code == 400
    assert "not a CloudEvent" in answer.json()["error"]


def test_a_body_over_the_limit_is_413(start):
    sink = start(max_body_bytes=100)
    answer = sink.post("request", "big", {"instances": ROWS * 10})
    assert answer.status_code == 413
    assert sink.stats()["received"] == 0


def test_healthz(start):
    sink = start()
    assert requests.get(f"{sink.url}/healthz", timeout=10).json() == {"status": "ok"}


def test_joiner_keeps_at_most_max_pending_and_joins_either_order():
    clock = Clock()
    joiner = Joiner(ttl_seconds=5, max_pending=1, clock=clock)
    request = parse_event(headers("request", "j"), json.dumps({"instances": ROWS}).encode())
    response = parse_event(headers("response", "j"), json.dumps(V1_RESPONSE).encode())
    assert joiner.add(response) is None
    inputs, outputs = joiner.add(request)
    assert (inputs.rows, outputs.model_version, joiner.joined, len(joiner)) == (2, "v3", 1, 0)
    joiner.add(request)
    assert joiner.drain() == 1 and joiner.dropped["shutdown"] == 1


# --- The program -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_flushes_the_log_before_exit(tmp_path):
    """The real program, with a flush interval far beyond the test: only SIGTERM writes."""
    lake = tmp_path / "lake"
    port = _free_port()
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MLPIPE_PREDICTION_LOG": str(lake)}
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.cloudevents_sink", "--port", str(port)]
        + ["--flush_seconds", "3600"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                requests.get(f"{url}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.communicate()
                time.sleep(0.1)
        for kind, body in (("request", {"instances": ROWS}), ("response", V1_RESPONSE)):
            answer = requests.post(url, data=json.dumps(body), headers=headers(kind, "t-1"))
            assert answer.status_code == 202
        assert requests.get(f"{url}/stats", timeout=10).json()["written"] == 0
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "cloudevents sink at http://127.0.0.1" in out
    frame, skipped = read_prediction_log(str(lake), MODEL)
    assert skipped == []
    assert frame["prediction"].tolist() == ["Yes", "No"]


def test_no_log_uri_is_exit_2_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("MLPIPE_PREDICTION_LOG", raising=False)
    assert main(["--port", "1"]) == 2
    error = capsys.readouterr().err
    assert "MLPIPE_PREDICTION_LOG" in error and error.count("\n") == 1


def test_an_unknown_scheme_is_exit_2(capsys):
    assert main(["--log", "nosuchscheme://bucket/p", "--port", "1"]) == 2
    assert "--log 'nosuchscheme://bucket/p'" in capsys.readouterr().err
