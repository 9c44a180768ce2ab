"""Deploy: the KServe model server (in process and as a real server on 127.0.0.1) and its clients."""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import joblib
import pandas as pd
import pytest
import requests
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from components.common.errors import PipelineInputError
from components.common.schema import as_model_input
from components.deploy.logic import (
    LocalModelServer,
    ModelServerError,
    curl_example,
    predict_v1,
    predict_v2,
    smoke_test,
    to_json_rows,
)
from components.prepare.logic import build_preprocessor
from components.register.logic import METADATA_FILE, MODEL_FILE, sha256_file
from serving.model import TabularModel
from serving.protocol import InvalidInput
from tests.conftest import make_parole

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "parole"
VERSION = "v3"
FEATURES = ["age", "checks", "sex", "colour"]
SCHEMA = {
    "target": "released",
    "task": "classification",
    "classes": ["No", "Yes"],
    "features": [
        {"name": "age", "kind": "numeric"},
        {"name": "checks", "kind": "numeric"},
        {"name": "sex", "kind": "categorical"},
        {"name": "colour", "kind": "categorical"},
    ],
}


class ModelFolder(NamedTuple):
    path: Path
    pipeline: Pipeline
    sample: pd.DataFrame  # feature rows to send, with missing values among them

    def expected(self, rows: pd.DataFrame | None = None) -> list:
        rows = self.sample if rows is None else rows
        return self.pipeline.predict(as_model_input(rows, SCHEMA)).tolist()


def _write_metadata(folder: Path) -> None:
    """metadata.json as register writes it: the model file's SHA-256 is what loading checks."""
    files = {MODEL_FILE: sha256_file(folder / MODEL_FILE)}
    metadata = {"name": NAME, "version": VERSION, "schema": SCHEMA, "metrics": {}, "files": files}
    (folder / METADATA_FILE).write_text(json.dumps(metadata))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> ModelFolder:
    frame = make_parole()
    pipeline = Pipeline([("prep", build_preprocessor(SCHEMA)), ("model", LogisticRegression())])
    pipeline.fit(as_model_input(frame, SCHEMA), frame["released"])
    folder = tmp_path_factory.mktemp("store") / NAME / VERSION
    folder.mkdir(parents=True)
    joblib.dump(pipeline, folder / MODEL_FILE)
    _write_metadata(folder)
    sample = frame.loc[:24, FEATURES]
    result = ModelFolder(folder, pipeline, sample)
    # Both labels among the expected answers, so that "matches" cannot pass by a constant model.
    assert set(result.expected()) == {"Yes", "No"}
    assert sample.isna().any().any()
    return result


@pytest.fixture(scope="module")
def loaded(model_folder) -> TabularModel:
    model = TabularModel(NAME, model_folder.path)
    model.load()
    return model


def _rows(model_folder, count: int = 3) -> list[dict]:
    return to_json_rows(model_folder.sample.head(count))


def _v2_body(model_folder, rows: int = 3) -> dict:
    sample = model_folder.sample.head(rows)
    inputs = []
    for name in FEATURES:
        numeric = name in ("age", "checks")
        data = [None if pd.isna(v) else (float(v) if numeric else str(v)) for v in sample[name]]
        datatype = "FP64" if numeric else "BYTES"
        inputs.append({"name": name, "shape": [rows], "datatype": datatype, "data": data})
    return {"inputs": inputs}


def _infer_request(body: dict):
    import kserve

    inputs = [
        kserve.InferInput(t["name"], t["shape"], t["datatype"], data=t["data"])
        for t in body["inputs"]
    ]
    return kserve.InferRequest(model_name=NAME, infer_inputs=inputs, request_id="r1")


# --- The model object, no server ---------------------------------------------------------------


def test_v1_predictions_equal_the_pipeline(loaded, model_folder):
    response = loaded.predict({"instances": to_json_rows(model_folder.sample)})
    assert response["predictions"] == model_folder.expected()
    assert response["model_version"] == VERSION


def test_v2_predictions_equal_the_pipeline(loaded, model_folder):
    body = _v2_body(model_folder, rows=len(model_folder.sample))
    response = loaded.predict(_infer_request(body))
    (output,) = response.outputs
    assert (output.name, output.datatype) == ("predictions", "BYTES")
    assert output.data == model_folder.expected()
    assert response.model_version == VERSION and response.id == "r1"


def test_metadata_lists_one_input_per_feature(loaded):
    inputs = loaded.get_input_types()
    assert [(t["name"], t["datatype"]) for t in inputs] == [
        ("age", "FP64"),
        ("checks", "FP64"),
        ("sex", "BYTES"),
        ("colour", "BYTES"),
    ]
    assert loaded.get_output_types() == [
        {"name": "predictions", "datatype": "BYTES", "shape": [-1]}
    ]


def _v1_case(change):
    def build(rows):
        change(rows)
        return {"instances": rows}

    return build


BAD_V1 = {
    "body is a list": (lambda rows: rows, r"request body"),
    "no instances": (lambda rows: {"rows": rows}, r"'instances' is missing"),
    "instances not a list": (lambda rows: {"instances": rows[0]}, r"'instances'.*list"),
    "empty batch": (lambda rows: {"instances": []}, r"'instances' is empty"),
    "row not an object": (lambda rows: {"instances": [rows[0], [1, 2]]}, r"instances\[1\]"),
    "missing feature": (
        _v1_case(lambda rows: rows[1].pop("checks")),
        r"instances\[1\]: feature 'checks' is missing",
    ),
    "unknown feature": (
        _v1_case(lambda rows: rows[0].update(height=180)),
        r"instances\[0\]: unknown feature 'height'",
    ),
    "string for a number": (
        _v1_case(lambda rows: rows[2].update(age="forty")),
        r"instances\[2\]: feature 'age' must be a number",
    ),
    "boolean for a number": (
        _v1_case(lambda rows: rows[0].update(checks=True)),
        r"feature 'checks' must be a number",
    ),
    "object for a category": (
        _v1_case(lambda rows: rows[0].update(colour={"r": 1})),
        r"feature 'colour' must be a string",
    ),
}


@pytest.mark.parametrize("build, message", BAD_V1.values(), ids=BAD_V1.keys())
def test_bad_v1_requests_raise_invalid_input(loaded, model_folder, build, message):
    with pytest.raises(InvalidInput, match=message):
        loaded.predict(build(_rows(model_folder)))


def _tensor(body: dict, name: str) -> dict:
    return next(t for t in body["inputs"] if t["name"] == name)


def _drop_tensor(body, name):
    body["inputs"].remove(_tensor(body, name))


BAD_V2 = {
    "unknown input": (
        lambda b: b["inputs"].append({**_tensor(b, "sex"), "name": "height"}),
        r"input 'height' is not a feature",
    ),
    "missing tensor": (lambda b: _drop_tensor(b, "colour"), r"feature 'colour' is missing"),
    "unequal lengths": (
        lambda b: _tensor(b, "sex").update(shape=[2], data=["F", "M"]),
        r"differ in length.*'sex' has 2",
    ),
    "string in a numeric tensor": (
        lambda b: _tensor(b, "age")["data"].__setitem__(1, "old"),
        r"input 'age', row 1: must be a number",
    ),
    "BYTES for a numeric feature": (
        lambda b: _tensor(b, "checks").update(datatype="BYTES", data=["1", "2", "3"]),
        r"input 'checks': datatype BYTES",
    ),
    "shape and data disagree": (
        lambda b: _tensor(b, "colour").update(shape=[4]),
        r"input 'colour': shape \[4\] but 3 values",
    ),
    "duplicate input": (
        lambda b: b["inputs"].append(dict(_tensor(b, "age"))),
        r"input 'age' is given more than once",
    ),
}


@pytest.mark.parametrize("change, message", BAD_V2.values(), ids=BAD_V2.keys())
def test_bad_v2_requests_raise_invalid_input(loaded, model_folder, change, message):
    body = _v2_body(model_folder)
    change(body)
    with pytest.raises(InvalidInput, match=message):
        loaded.predict(_infer_request(body))


@pytest.mark.parametrize("removed", [MODEL_FILE, METADATA_FILE])
def test_incomplete_folder_is_refused_naming_the_file(model_folder, tmp_path, removed):
    folder = tmp_path / "v1"
    shutil.copytree(model_folder.path, folder)
    (folder / removed).unlink()
    model = TabularModel(NAME, folder)
    with pytest.raises(PipelineInputError, match=f"'{folder}': {removed} is missing"):
        model.load()
    assert not model.ready


def test_json_rows_are_plain_json(model_folder):
    rows = to_json_rows(model_folder.sample)
    json.dumps(rows, allow_nan=False)  # NaN would make this raise
    assert rows[3]["age"] is None and rows[5]["colour"] is None and rows[12]["colour"] is None
    assert type(rows[0]["checks"]) is int and type(rows[0]["age"]) is float


# --- A real server on 127.0.0.1 -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(model_folder):
    # The context manager stops the server in teardown, whatever the tests did.
    with LocalModelServer(model_folder.path) as server:
        yield server


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only: no proxy from the environment
    return session


@pytest.mark.server
def test_health_readiness_and_metadata(served):
    with _http() as http:
        for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{NAME}/ready"):
            assert http.get(served.url + path, timeout=10).status_code == 200, path
        metadata = http.get(f"{served.url}/v2/models/{NAME}", timeout=10).json()
    assert [t["name"] for t in metadata["inputs"]] == FEATURES
    assert served.url.startswith("http://127.0.0.1:") and served.model_name == NAME


@pytest.mark.server
def test_v1_over_http_matches_in_process(served, model_folder):
    rows = to_json_rows(model_folder.sample)
    assert predict_v1(served.url, NAME, rows) == model_folder.expected()
    with _http() as http:
        body = http.post(
            f"{served.url}/v1/models/{NAME}:predict", json={"instances": rows[:2]}, timeout=30
        ).json()
    assert body["model_version"] == VERSION


@pytest.mark.server
def test_v2_over_http_matches_in_process(served, model_folder):
    assert predict_v2(served.url, NAME, model_folder.sample) == model_folder.expected()
    with _http() as http:
        body = http.post(
            f"{served.url}/v2/models/{NAME}/infer", json=_v2_body(model_folder), timeout=30
        ).json()
    assert body["model_version"] == VERSION
    assert body["outputs"][0]["datatype"] == "BYTES"


BAD_HTTP = {
    "v1 body is a list": ("v1", BAD_V1["body is a list"][0], "request body"),
    "v1 no instances": ("v1", BAD_V1["no instances"][0], "instances"),
    "v1 instances not a list": ("v1", BAD_V1["instances not a list"][0], "instances"),
    "v1 empty batch": ("v1", BAD_V1["empty batch"][0], "instances"),
    "v1 row not an object": ("v1", BAD_V1["row not an object"][0], "instances[1]"),
    "v1 missing feature": ("v1", BAD_V1["missing feature"][0], "'checks'"),
    "v1 unknown feature": ("v1", BAD_V1["unknown feature"][0], "'height'"),
    "v1 string for a number": ("v1", BAD_V1["string for a number"][0], "'age'"),
    "v2 unknown input": ("v2", BAD_V2["unknown input"][0], "'height'"),
    "v2 missing tensor": ("v2", BAD_V2["missing tensor"][0], "'colour'"),
    "v2 unequal lengths": ("v2", BAD_V2["unequal lengths"][0], "'sex'"),
    "v2 string in a numeric tensor": ("v2", BAD_V2["string in a numeric tensor"][0], "'age'"),
    "v2 BYTES for a numeric feature": ("v2", BAD_V2["BYTES for a numeric feature"][0], "'checks'"),
}


@pytest.mark.server
@pytest.mark.parametrize("protocol, change, field", BAD_HTTP.values(), ids=BAD_HTTP.keys())
def test_bad_requests_get_400_naming_the_field(served, model_folder, protocol, change, field):
    if protocol == "v1":
        endpoint = f"{served.url}/v1/models/{NAME}:predict"
        body = change(_rows(model_folder))
    else:
        endpoint = f"{served.url}/v2/models/{NAME}/infer"
        body = _v2_body(model_folder)
        change(body)
    with _http() as http:
        response = http.post(endpoint, json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]
    # The server is unharmed: a valid request right after is answered.
    assert predict_v1(served.url, NAME, _rows(model_folder)) == model_folder.expected()[:3]


@pytest.mark.server
def test_client_error_carries_the_server_message(served, model_folder):
    rows = _rows(model_folder)
    rows[0]["age"] = "forty"
    with pytest.raises(ModelServerError, match=r"HTTP 400.*feature 'age'") as caught:
        predict_v1(served.url, NAME, rows)
    assert caught.value.status == 400


@pytest.mark.server
def test_server_listens_on_loopback_only(served):
    psutil = pytest.importorskip("psutil")
    process = psutil.Process(served.pid)
    # psutil 6 renamed connections() to net_connections().
    connections = getattr(process, "net_connections", process.connections)(kind="inet")
    listening = [c for c in connections if c.status == psutil.CONN_LISTEN]
    assert listening, "the server process listens on nothing"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    # One port, the HTTP one: no gRPC listener.
    assert {c.laddr.port for c in listening} == {served.port}


@pytest.mark.server
def test_curl_example_runs_against_the_server(served, model_folder):
    row = to_json_rows(model_folder.sample.head(1))[0]
    row["colour"] = "it's red"  # a quote in the JSON must survive sh quoting
    command = curl_example(served.url, NAME, row)
    assert "\n" not in command
    assert json.loads(shlex.split(command)[shlex.split(command).index("-d") + 1]) == {
        "instances": [row]
    }
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    expected = model_folder.expected(pd.DataFrame([row]))
    assert json.loads(done.stdout) == {"predictions": expected, "model_version": VERSION}


@pytest.mark.server
def test_smoke_test_matches_in_process(model_folder):
    rows = make_parole().head(20)  # with the target column, which is ignored
    result = smoke_test(model_folder.path, rows)
    assert result["v1_matches"] and result["v2_matches"]
    assert result["predictions"] == model_folder.expected(rows)
    assert (result["model_name"], result["version"]) == (NAME, VERSION)
    assert result["endpoint"].startswith("http://127.0.0.1:")


@pytest.mark.server
def test_smoke_traffic_lands_in_the_prediction_log(model_folder, tmp_path, monkeypatch):
    from components.common.prediction_log import read_prediction_log

    rows = make_parole().head(7)
    # The argument decides, not a variable this process happens to have.
    monkeypatch.setenv("MLPIPE_PREDICTION_LOG", str(tmp_path / "not-this"))
    smoke_test(model_folder.path, rows, prediction_log=str(tmp_path / "log"))
    # The server was stopped by SIGTERM and wrote its log before it exited.
    frame, skipped = read_prediction_log(str(tmp_path / "log"), NAME)
    assert skipped == [] and len(frame) == 2 * len(rows)  # V1 and V2
    assert set(frame["model_version"]) == {VERSION}
    assert frame["prediction"].tolist() == model_folder.expected(rows) * 2
    assert frame["request_id"].nunique() == 2
    smoke_test(model_folder.path, rows)  # no log: nothing anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


@pytest.mark.server
def test_sigterm_stops_the_server_with_exit_code_0(model_folder):
    server = LocalModelServer(model_folder.path)
    with server:
        pid = server.pid
        assert server.process.poll() is None
    assert server.process.returncode == 0
    assert f"serving {NAME} {VERSION} at {server.url}" in server.last_output
    psutil = pytest.importorskip("psutil")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.server
def test_server_that_cannot_load_the_model_reports_why(model_folder, tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(model_folder.path, folder)
    (folder / MODEL_FILE).write_bytes(b"not a pickle")
    server = LocalModelServer(folder, ready_timeout=30)
    # The file no longer matches its checksum: the server refuses it before unpickling.
    with pytest.raises(RuntimeError, match=r"exited with code 2(.|\n)*SHA-256 .* does not match"):
        server.start()
    assert server.process.poll() == 2
    _write_metadata(folder)  # now registered as is: it is checked, then fails to unpickle
    server = LocalModelServer(folder, ready_timeout=30)
    with pytest.raises(RuntimeError, match=r"exited with code 2(.|\n)*model\.joblib: could not"):
        server.start()
    assert server.process.poll() == 2


def test_cli_refuses_a_missing_model_dir_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--model_dir", "/nonexistent"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "/nonexistent" in lines[0] and "Traceback" not in done.stderr


def test_a_model_folder_this_user_may_not_enter_is_one_line_naming_it(tmp_path, monkeypatch):
    """As a pod's non-root user meets a volume of root's 0700 version folders (the container
    test met it). The tests run as root, who may enter any folder: the refusal is simulated
    where the operating system gives it."""
    from pathlib import Path as PathType

    from components.common.model_files import read_model_metadata

    def refused(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(PathType, "is_file", refused)
    with pytest.raises(PipelineInputError) as caught:
        read_model_metadata(tmp_path)
    assert str(caught.value).startswith(f"model folder '{tmp_path}': Permission denied (uid ")


# --- A model with fairness post-processing needs the sensitive column ---------------------------


@pytest.fixture(scope="module")
def fair_model_folder(tmp_path_factory, model_folder) -> Path:
    """The same data, served through ThresholdOptimizedModel: predictions depend on 'sex'."""
    from components.common.groups import Grouping
    from components.common.mitigation import ThresholdOptimizedModel

    frame = make_parole()
    model = ThresholdOptimizedModel(
        model_folder.pipeline, Grouping("sex"), "demographic_parity", "Yes"
    ).fit(as_model_input(frame, SCHEMA), frame["released"])
    folder = tmp_path_factory.mktemp("fair-store") / NAME / VERSION
    folder.mkdir(parents=True)
    joblib.dump(model, folder / MODEL_FILE)
    _write_metadata(folder)
    return folder


def test_a_fair_model_refuses_a_request_without_its_sensitive_column(fair_model_folder):
    model = TabularModel(NAME, fair_model_folder)
    model.load()
    rows = to_json_rows(make_parole().loc[:2, FEATURES])
    assert len(model.predict({"instances": rows})["predictions"]) == 3
    without = [{k: v for k, v in row.items() if k != "sex"} for row in rows]
    with pytest.raises(InvalidInput, match=r"instances\[0\]: feature 'sex' is missing"):
        model.predict({"instances": without})
    unknown = [{**row, "sex": "X"} for row in rows]
    with pytest.raises(InvalidInput, match="feature 'sex': group 'X' was not in the training"):
        model.predict({"instances": unknown})


@pytest.mark.server
def test_a_served_fair_model_answers_as_in_process_and_gives_400_without_the_column(
    fair_model_folder,
):
    rows = make_parole().head(20)
    result = smoke_test(fair_model_folder, rows)
    assert result["v1_matches"] and result["v2_matches"]
    with LocalModelServer(fair_model_folder) as server, _http() as http:
        body = [
            {k: v for k, v in row.items() if k != "sex"} for row in to_json_rows(rows[FEATURES])
        ]
        response = http.post(
            f"{server.url}/v1/models/{NAME}:predict", json={"instances": body}, timeout=30
        )
        assert response.status_code == 400 and "'sex' is missing" in response.json()["error"]
        unknown = [{**row, "sex": "X"} for row in to_json_rows(rows[FEATURES])]
        response = http.post(
            f"{server.url}/v1/models/{NAME}:predict", json={"instances": unknown}, timeout=30
        )
        assert response.status_code == 400 and "group 'X'" in response.json()["error"]
