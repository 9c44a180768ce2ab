"""The model server writes the prediction log: request ids in and out, one row per predicted row
with its features, prediction, probabilities and version, flushed on SIGTERM and on reload, and
a log that cannot be written never failing a request but showing in its counters.

The model object is tested in process; real servers run on 127.0.0.1, each started and stopped
(SIGTERM to its PID) by the test.
"""

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from components.common.prediction_log import PredictionLog, read_prediction_log
from components.common.registry import ModelRegistry
from components.common.schema import as_model_input
from components.deploy.logic import to_json_rows
from serving.cli import LABELS_ENV, PREDICTION_LOG_ENV, build_parser
from serving.http_app import PredictionLogMetrics
from serving.model import TabularModel, predict_with_probabilities
from tests.conftest import make_parole
from tests.serving.test_server_features import (
    FEATURES,
    NAME,
    REGRESSION_SCHEMA,
    SCHEMA,
    TOKEN,
    Server,
    _bearer,
    _fit,
    _http,
    _infer_request,
    _v2_body,
)

UUID_HEX = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """Feature rows to send, with missing values in 'age' and 'colour'."""
    return make_parole(with_score=True).loc[:9, FEATURES]


@pytest.fixture(scope="module")
def pipelines() -> dict:
    return {
        "v1": _fit(LogisticRegression()),
        "v2": _fit(DecisionTreeClassifier(max_depth=2, random_state=0)),
    }


def _store(root: Path, *pipelines, schema: dict = SCHEMA) -> ModelRegistry:
    registry = ModelRegistry(str(root / "store"), NAME)
    for pipeline in pipelines:
        registry.register(pipeline, {"schema": schema})
    registry.promote("v1")
    return registry


def _read(uri) -> pd.DataFrame:
    frame, skipped = read_prediction_log(str(uri), NAME)
    assert skipped == []
    return frame


# --- One pass where it is exact -----------------------------------------------------------------


def _threshold(pipeline: Pipeline, threshold: float) -> FixedThresholdClassifier:
    frame = make_parole(with_score=True)
    wrapped = FixedThresholdClassifier(
        FrozenEstimator(pipeline), threshold=threshold, pos_label="Yes"
    )
    return wrapped.fit(as_model_input(frame, SCHEMA), frame[SCHEMA["target"]])


@pytest.mark.parametrize(
    "make",
    [
        lambda: _fit(LogisticRegression()),
        lambda: _fit(RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0)),
        lambda: _fit(HistGradientBoostingClassifier(max_iter=20, random_state=0)),
        lambda: _fit(DecisionTreeClassifier(max_depth=3, random_state=0)),
        # Thresholds at a row's own probability: the rule's >= decides it.
        lambda: "threshold",
    ],
    ids=["logistic", "forest", "hist_gradient_boosting", "tree", "fixed_threshold"],
)
def test_one_pass_answers_equal_predict_and_predict_proba(make):
    frame = as_model_input(make_parole(with_score=True), SCHEMA)
    models = [make()]
    if models[0] == "threshold":
        forest = _fit(RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0))
        scores = forest.predict_proba(frame)[:, 1]
        models = [_threshold(forest, t) for t in (0.3, float(np.median(scores)), scores[5])]
    for model in models:
        predictions, probabilities = predict_with_probabilities(model, frame)
        assert predictions.tolist() == model.predict(frame).tolist()
        np.testing.assert_array_equal(probabilities, model.predict_proba(frame))
        assert probabilities.dtype == np.float64


# --- The model object, no server -----------------------------------------------------------------


@pytest.fixture
def logged(tmp_path, pipelines):
    """v1 served from its folder, logging into tmp_path/log; the log is closed afterwards."""
    registry = _store(tmp_path, pipelines["v1"])
    model = TabularModel(NAME, registry.uri("v1"), prediction_log=str(tmp_path / "log"))
    model.load()
    yield model
    model.close_prediction_log()


def test_v1_rows_are_logged_with_probabilities_the_client_did_not_ask_for(
    logged, tmp_path, sample, pipelines
):
    headers: dict = {}
    response = logged.predict(
        {"instances": to_json_rows(sample)}, {"ce-id": "event-7", "x-request-id": "x"}, headers
    )
    assert headers == {"X-Request-Id": "event-7"}  # ce-id comes first
    assert "probabilities" not in response  # not asked for: not answered
    logged.close_prediction_log()
    frame = _read(tmp_path / "log")
    expected = pipelines["v1"].predict(as_model_input(sample, SCHEMA))
    assert frame["request_id"].tolist() == ["event-7"] * len(sample)
    assert frame["row"].tolist() == list(range(len(sample)))
    assert set(frame["model_version"]) == {"v1"}
    assert frame["prediction"].tolist() == expected.tolist() == response["predictions"]
    probabilities = pipelines["v1"].predict_proba(as_model_input(sample, SCHEMA))
    np.testing.assert_allclose(frame[["probability_No", "probability_Yes"]], probabilities)
    # Every feature as received: a missing value stays missing.
    pd.testing.assert_series_equal(
        frame["age"], sample["age"].reset_index(drop=True), check_names=False
    )
    assert frame["colour"].isna().tolist() == sample["colour"].isna().tolist()
    assert frame["sex"].tolist() == sample["sex"].tolist()


def test_v2_id_is_the_header_then_the_body_id_then_new(logged, tmp_path, sample):
    body = _v2_body(sample.iloc[:2])
    request = _infer_request(body)  # its body id is "r1"
    assert logged.predict(request, {}).id == "r1"
    assert logged.predict(request, {"X-Request-Id": "from-header"}).id == "from-header"
    request.id = None
    generated = logged.predict(request, {}).id
    assert UUID_HEX.match(generated)
    logged.close_prediction_log()
    frame = _read(tmp_path / "log")
    assert (
        frame["request_id"].tolist() == ["r1", "r1", "from-header", "from-header"] + [generated] * 2
    )
    assert frame["row"].tolist() == [0, 1] * 3


def test_an_absurd_id_is_replaced(logged):
    headers: dict = {}
    logged.predict({"instances": [{"age": 30, "checks": 1, "sex": "F", "colour": "red"}]},
                   {"x-request-id": "a\nb"}, headers)  # fmt: skip
    assert UUID_HEX.match(headers["X-Request-Id"])


def test_regression_is_logged_without_probabilities(tmp_path, sample):
    registry = _store(
        tmp_path, _fit(LinearRegression(), REGRESSION_SCHEMA), schema=REGRESSION_SCHEMA
    )
    with PredictionLog(str(tmp_path / "log"), NAME) as log:
        model = TabularModel(NAME, registry.uri("v1"), prediction_log=log)
        model.load()
        response = model.predict({"instances": to_json_rows(sample)})
    frame = _read(tmp_path / "log")
    assert frame["prediction"].tolist() == pytest.approx(response["predictions"])
    assert not [c for c in frame.columns if c.startswith("probability_")]


def test_logging_off_records_nothing_and_still_returns_an_id(tmp_path, pipelines, sample):
    registry = _store(tmp_path, pipelines["v1"])
    model = TabularModel(NAME, registry.uri("v1"))
    model.load()
    headers: dict = {}
    model.predict({"instances": to_json_rows(sample)}, {}, headers)
    assert UUID_HEX.match(headers["X-Request-Id"])
    assert model.prediction_log is None
    assert model.prediction_log_stats()["enabled"] is False
    model.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_counters_are_prometheus_metrics(logged, sample):
    logged.predict({"instances": to_json_rows(sample)})
    logged.close_prediction_log()
    families = {f.name: f for f in PredictionLogMetrics(logged).collect()}
    written = families["mlpipe_prediction_log_rows_written"].samples[0]
    assert written.labels == {"model_name": NAME} and written.value == len(sample)
    assert families["mlpipe_prediction_log_rows_dropped"].samples[0].value == 0
    assert families["mlpipe_prediction_log_rows_queued"].type == "gauge"


def test_cli_flag_and_its_environment_default(monkeypatch):
    monkeypatch.delenv(PREDICTION_LOG_ENV, raising=False)
    assert build_parser().parse_args(["--model_dir", "m"]).prediction_log is None
    monkeypatch.setenv(PREDICTION_LOG_ENV, "s3://bucket/log")
    assert build_parser().parse_args(["--model_dir", "m"]).prediction_log == "s3://bucket/log"
    args = build_parser().parse_args(["--model_dir", "m", "--prediction_log", "/tmp/x"])
    assert args.prediction_log == "/tmp/x"


# --- Real servers on 127.0.0.1 --------------------------------------------------------------------


class LoggingServer(Server):
    """A model server whose environment has no MLPIPE_PREDICTION_LOG or MLPIPE_LABELS: only its
    flags decide."""

    def __init__(self, *args: str, token: str | None = None):
        super().__init__(*args, token=token)
        self.env.pop(PREDICTION_LOG_ENV, None)
        self.env.pop(LABELS_ENV, None)

    def stats(self) -> dict:
        with _http() as http:
            return http.get(f"{self.url}/v2/models/{NAME}/prediction-log", timeout=10).json()


@pytest.mark.server
def test_ids_come_back_and_sigterm_flushes_every_row(tmp_path, pipelines, sample):
    registry = _store(tmp_path, pipelines["v1"])
    log = tmp_path / "log"
    v1 = {"instances": to_json_rows(sample)}
    with LoggingServer("--model_dir", registry.uri("v1"), "--prediction_log", str(log)) as server:
        with _http() as http:
            answers = [
                http.post(server.predict_url(), json=v1, headers={"ce-id": "ce-1"}, timeout=30),
                http.post(server.predict_url(), json=v1, headers={"X-Request-Id": "x-2"}),
                http.post(server.predict_url(), json=v1, timeout=30),
                http.post(server.infer_url(), json=_v2_body(sample, id="body-4"), timeout=30),
                http.post(server.infer_url(), json=_v2_body(sample), headers={"ce-id": "ce-5"}),
                # Refused (a feature missing): an id comes back, nothing is logged.
                http.post(server.predict_url(), json={"instances": [{"age": 1}]}, timeout=30),
            ]
            metrics = http.get(f"{server.url}/metrics", timeout=10).text
        stats = server.stats()
        pid = server.process.pid
    output = server.last_output
    assert [a.status_code for a in answers] == [200] * 5 + [400]
    ids = [a.headers.get("X-Request-Id") for a in answers]
    assert ids[:2] == ["ce-1", "x-2"] and UUID_HEX.match(ids[2]) and UUID_HEX.match(ids[5])
    assert [answers[3].json()["id"], answers[4].json()["id"]] == ["body-4", "ce-5"]
    assert ids[3:5] == ["body-4", "ce-5"]
    assert stats["enabled"] is True and stats["uri"] == str(log)
    assert stats["written"] + stats["queued"] == 5 * len(sample) and stats["dropped"] == 0
    assert f'mlpipe_prediction_log_rows_dropped_total{{model_name="{NAME}"}} 0.0' in metrics

    # SIGTERM wrote what was queued (flush_seconds had not passed): after the process exited.
    assert not _alive(pid)
    frame = _read(log)
    assert len(frame) == 5 * len(sample)
    assert frame.groupby("request_id", sort=False).size().to_dict() == {
        i: len(sample) for i in [*ids[:3], "body-4", "ce-5"]
    }
    assert set(frame["model_version"]) == {"v1"}
    expected = pipelines["v1"].predict(as_model_input(sample, SCHEMA)).tolist()
    assert frame["prediction"].tolist() == expected * 5
    assert frame[["probability_No", "probability_Yes"]].notna().all().all()
    assert f"prediction log: {5 * len(sample)} rows written to {log}, 0 dropped" in output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.server
def test_a_reload_flushes_the_old_versions_rows(tmp_path, pipelines, sample):
    registry = _store(tmp_path, pipelines["v1"], pipelines["v2"])
    log = tmp_path / "log"
    rows = {"instances": to_json_rows(sample)}
    args = ("--model_store", registry.store_uri, "--model_name", NAME, "--prediction_log", str(log))
    with LoggingServer(*args, token=TOKEN) as server, _http() as http:
        assert http.post(server.predict_url(), json=rows, timeout=30).status_code == 200
        registry.promote("v2")
        reload = http.post(f"{server.url}/admin/reload", headers=_bearer(TOKEN), timeout=60)
        assert reload.json()["changed"] is True
        # Written by the reload, not by the 5 s timer: read while the server still runs.
        assert _read(log)["model_version"].tolist() == ["v1"] * len(sample)
        assert http.post(server.predict_url(), json=rows, timeout=30).status_code == 200
    assert _read(log)["model_version"].tolist() == ["v1"] * len(sample) + ["v2"] * len(sample)


@pytest.mark.server
def test_a_log_that_cannot_be_written_never_fails_a_request(tmp_path, pipelines, sample):
    registry = _store(tmp_path, pipelines["v1"], pipelines["v2"])
    blocked = tmp_path / "log"
    blocked.write_text("a file where the log's folder should be")
    rows = {"instances": to_json_rows(sample)}
    args = ("--model_store", registry.store_uri, "--model_name", NAME)
    with LoggingServer(*args, "--prediction_log", str(blocked), token=TOKEN) as server:
        with _http() as http:
            statuses = [http.post(server.predict_url(), json=rows).status_code for _ in range(3)]
            registry.promote("v2")  # the reload's flush makes the write happen now
            http.post(f"{server.url}/admin/reload", headers=_bearer(TOKEN), timeout=60)
        stats = server.stats()
    assert statuses == [200] * 3
    assert stats["write_errors"] >= 1
    assert stats["dropped"] == 3 * len(sample) and stats["written"] == 0
    assert f"prediction log: 0 rows written to {blocked}, {3 * len(sample)} dropped" in (
        server.last_output
    )
    assert blocked.read_text() == "a file where the log's folder should be"


@pytest.mark.server
def test_without_the_flag_nothing_is_logged(tmp_path, pipelines, sample):
    registry = _store(tmp_path, pipelines["v1"])
    with LoggingServer("--model_dir", registry.uri("v1")) as server, _http() as http:
        answer = http.post(server.predict_url(), json={"instances": to_json_rows(sample)})
        assert answer.status_code == 200 and UUID_HEX.match(answer.headers["X-Request-Id"])
        stats = server.stats()
    assert stats == {
        "model": NAME,
        "enabled": False,
        "uri": None,
        "written": 0,
        "dropped": 0,
        "files": 0,
        "queued": 0,
        "write_errors": 0,
    }
    assert "prediction log" not in server.last_output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


# --- mlpipe serve ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), "mlpipe-output/predictions"),
        (("--prediction-log", "elsewhere/log"), "elsewhere/log"),
        (("--prediction-log", "s3://bucket/log"), "s3://bucket/log"),
        (("--no-prediction-log",), None),
    ],
)
def test_mlpipe_serve_logs_by_default(tmp_path, monkeypatch, pipelines, flags, expected):
    import serving.server
    from components.deploy.logic import free_port
    from pipelines import cli

    calls = []
    monkeypatch.setattr(serving.server, "serve", lambda **where: calls.append(where))
    monkeypatch.chdir(tmp_path)
    registry = _store(tmp_path, pipelines["v1"])
    port = str(free_port())
    assert cli.main(["serve", "--model-dir", registry.uri("v1"), "--port", port, *flags]) == 0
    if expected is not None and "://" not in expected:
        expected = str(tmp_path / expected)  # a folder: absolute, as the monitor will find it
    assert calls == [
        {
            "host": "127.0.0.1",
            "port": int(port),
            "model_dir": registry.uri("v1"),
            "prediction_log": expected,
            "labels": str(tmp_path / "mlpipe-output" / "labels"),
        }
    ]


# --- mlpipe run ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "config_keys", "served_log", "shown"),
    [
        ((), {}, "out/predictions", True),
        (("--no-prediction-log",), {}, None, True),  # the smoke traffic is still logged
        ((), {"serving.log_predictions": False}, None, False),
        ((), {"serving.prediction_log": "s3://bucket/log"}, "s3://bucket/log", True),
        (("--no-serve",), {}, "no server", True),
    ],
    ids=["default", "flag_off", "config_off", "object_store", "no_serve"],
)
def test_mlpipe_run_serves_with_the_prediction_log_and_says_where(
    tmp_path, demo_lake, monkeypatch, capsys, flags, config_keys, served_log, shown
):
    from types import SimpleNamespace

    import pipelines.local_run
    import serving.server
    from components.deploy.logic import free_port
    from pipelines import cli
    from tests.conftest import write_config

    config = write_config(
        tmp_path / "run.yaml",
        **{"data.source": str(demo_lake), "output_root": "out", **config_keys},
    )
    run = SimpleNamespace(
        run_id="r1",
        seconds=1.0,
        steps={},
        artifacts_dir=tmp_path,
        report=tmp_path / "report.json",
        log=tmp_path / "log.txt",
        pipeline_file=tmp_path / "pipeline.yaml",
        model_version="v1",
        model_uri=str(tmp_path / "models" / "v1"),
        html_report=None,
        onnx_model=None,
        fairness_reason="no thresholds",
        fairness_report=None,
        champion="v1",
        blessed=True,
        reason="blessed",
        plan={"mode": "full", "reason": "full retraining: all the data, with a search"},
        skipped=False,
    )
    served = []
    monkeypatch.setattr(pipelines.local_run, "run_pipeline", lambda *a, **k: run)
    monkeypatch.setattr(serving.server, "serve", lambda **where: served.append(where))
    monkeypatch.setattr(cli, "_example_row", lambda run: {"age": 30})
    monkeypatch.chdir(tmp_path)
    port = str(free_port())
    assert cli.main(["run", "--config", str(config), "--port", port, *flags]) == 0
    output = capsys.readouterr().out
    uri = config_keys.get("serving.prediction_log") or str(tmp_path / "out" / "predictions")
    line = f"  requests   {uri}  (the prediction log: mlpipe monitor reads it)"
    assert (line in output) is shown
    if served_log == "no server":
        assert served == []
        return
    if served_log == "out/predictions":
        served_log = str(tmp_path / "out" / "predictions")
    assert [where["prediction_log"] for where in served] == [served_log]
    assert served[0]["labels"] == str(tmp_path / "out" / "labels")


@pytest.mark.server
def test_labels_for_logged_rows_are_taken_by_the_server(tmp_path, pipelines, sample):
    from components.common.labels import read_labels

    registry = _store(tmp_path, pipelines["v1"])
    log, labels = tmp_path / "log", tmp_path / "labels"
    args = ("--model_dir", registry.uri("v1"), "--prediction_log", str(log))
    with LoggingServer(*args, "--labels", str(labels), token=TOKEN) as server, _http() as http:
        rows = {"instances": to_json_rows(sample.iloc[:2])}
        answer = http.post(server.predict_url(), json=rows, headers={"X-Request-Id": "req-1"})
        assert answer.status_code == 200
        sent = {"labels": [{"request_id": "req-1", "row": 1, "label": "Yes"}]}
        taken = http.post(f"{server.url}/admin/labels", json=sent, headers=_bearer(TOKEN))
        # Not yet written by the log's timer: the route flushed it to find the row.
        assert taken.status_code == 200, taken.text
        unknown = {"labels": [{"request_id": "nobody", "label": "Yes"}]}
        refused = http.post(f"{server.url}/admin/labels", json=unknown, headers=_bearer(TOKEN))
        assert refused.status_code == 422, refused.text
    frame, _ = read_labels(str(labels), NAME)
    assert frame[["request_id", "row", "label"]].values.tolist() == [["req-1", 1, "Yes"]]


@pytest.mark.server
def test_without_a_prediction_log_there_is_no_labels_route(tmp_path, pipelines):
    registry = _store(tmp_path, pipelines["v1"])
    labels = tmp_path / "labels"
    with (
        LoggingServer(
            "--model_dir", registry.uri("v1"), "--labels", str(labels), token=TOKEN
        ) as server,
        _http() as http,
    ):
        sent = {"labels": [{"request_id": "req-1", "label": "Yes"}]}
        answer = http.post(f"{server.url}/admin/labels", json=sent, headers=_bearer(TOKEN))
    assert answer.status_code == 404
    assert not labels.exists()
