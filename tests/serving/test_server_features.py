"""The model server's hardening: probabilities, missing and non-finite values, request limits,
every bad input over HTTP, and following the champion alias (admin route and SIGHUP) under load.

Real servers run on 127.0.0.1, each started and stopped (its process group) by the test.
"""

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import joblib
import numpy as np
import pandas as pd
import pytest
import requests
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from components.common.errors import PipelineInputError
from components.common.registry import MODEL_FILE, ModelRegistry
from components.common.schema import as_model_input
from components.deploy.logic import ServerProcess, to_json_rows
from components.prepare.logic import build_preprocessor
from serving.cli import build_parser, main
from serving.http_app import (
    ADMIN_RELOAD_PATH,
    ADMIN_TOKEN_ENV,
    describe_bad_json,
    harden_app,
    read_admin_token,
)
from serving.model import ReloadRefused, TabularModel
from serving.protocol import DEFAULT_MAX_BATCH_ROWS, InvalidInput, PayloadTooLarge
from tests.conftest import make_parole

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "parole"
FEATURES = ["age", "checks", "sex", "colour"]
# 'checks' was never missing in training: its schema entry forbids null and NaN.
SCHEMA = {
    "target": "released",
    "task": "classification",
    "classes": ["No", "Yes"],
    "features": [
        {"name": "age", "kind": "numeric"},
        {"name": "checks", "kind": "numeric", "nullable": False},
        {"name": "sex", "kind": "categorical"},
        {"name": "colour", "kind": "categorical"},
    ],
}
REGRESSION_SCHEMA = {**SCHEMA, "target": "score", "task": "regression", "classes": None}
MAX_ROWS = 50
MAX_BYTES = 20_000
# The reload-under-load clients: at most this many requests each, and this long to see a switch.
# Bounded, and ended early by the test once both versions answered: room for the refused admin
# requests that come before the reload (400 could run out before it on a fast machine).
MAX_REQUESTS = 4000
SWITCH_DEADLINE_S = 20.0
# The admin token the servers under test get in their environment, and a wrong one.
TOKEN = "test-admin-token-0123456789abcdef"
WRONG_TOKEN = "test-admin-token-0123456789abcdeX"


def _fit(estimator, schema: dict = SCHEMA) -> Pipeline:
    frame = make_parole(with_score=True)
    pipeline = Pipeline([("prep", build_preprocessor(schema)), ("model", estimator)])
    return pipeline.fit(as_model_input(frame, schema), frame[schema["target"]])


class Models(NamedTuple):
    first: Pipeline  # registered as v1
    second: Pipeline  # registered as v2: a different model, so answers tell them apart
    sample: pd.DataFrame  # feature rows to send, with missing values in 'age' and 'colour'

    def expected(self, pipeline: Pipeline, rows: pd.DataFrame | None = None) -> list:
        rows = self.sample if rows is None else rows
        return pipeline.predict(as_model_input(rows, SCHEMA)).tolist()

    def probabilities(self, pipeline: Pipeline) -> np.ndarray:
        return pipeline.predict_proba(as_model_input(self.sample, SCHEMA))


@pytest.fixture(scope="module")
def models() -> Models:
    result = Models(
        _fit(LogisticRegression()),
        _fit(DecisionTreeClassifier(max_depth=2, random_state=0)),
        make_parole(with_score=True).loc[:24, FEATURES],
    )
    assert result.sample["age"].isna().any() and result.sample["colour"].isna().any()
    # Both labels among v1's answers, and v1 and v2 disagree somewhere on the sample.
    assert set(result.expected(result.first)) == {"Yes", "No"}
    assert result.expected(result.first) != result.expected(result.second)
    return result


def _registry(root: Path, *pipelines, schema: dict = SCHEMA) -> ModelRegistry:
    registry = ModelRegistry(str(root / "store"), NAME)
    for pipeline in pipelines:
        registry.register(pipeline, {"schema": schema})
    return registry


@pytest.fixture
def registry(tmp_path, models) -> ModelRegistry:
    """A store with v1 and v2; the champion is v1."""
    registry = _registry(tmp_path, models.first, models.second)
    registry.promote("v1")
    return registry


def _tamper(registry: ModelRegistry, version: str) -> None:
    """Replace a version's model file: it no longer matches the SHA-256 in its metadata."""
    joblib.dump(_fit(LogisticRegression(C=0.01)), Path(registry.uri(version)) / MODEL_FILE)


def _v2_body(rows: pd.DataFrame, **extra) -> dict:
    inputs = []
    for name in FEATURES:
        numeric = name in ("age", "checks")
        data = [None if pd.isna(v) else (float(v) if numeric else str(v)) for v in rows[name]]
        datatype = "FP64" if numeric else "BYTES"
        inputs.append({"name": name, "shape": [len(data)], "datatype": datatype, "data": data})
    return {"inputs": inputs, **extra}


def _infer_request(body: dict):
    import kserve
    from kserve.protocol.infer_type import RequestedOutput

    inputs = [
        kserve.InferInput(t["name"], t["shape"], t["datatype"], data=t["data"])
        for t in body["inputs"]
    ]
    outputs = [RequestedOutput(o["name"]) for o in body.get("outputs", [])]
    return kserve.InferRequest(
        model_name=NAME,
        infer_inputs=inputs,
        request_id="r1",
        parameters=body.get("parameters"),
        request_outputs=outputs or None,
    )


def _output(outputs, name: str):
    return next(o for o in outputs if (o["name"] if isinstance(o, dict) else o.name) == name)


# --- The model object, no server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, models) -> TabularModel:
    registry = _registry(tmp_path_factory.mktemp("loaded"), models.first)
    model = TabularModel(NAME, registry.uri("v1"), max_batch_rows=MAX_ROWS)
    model.load()
    return model


def test_v1_probabilities_equal_predict_proba(loaded, models):
    body = {"instances": to_json_rows(models.sample), "return_probabilities": True}
    response = loaded.predict(body)
    assert response["predictions"] == models.expected(models.first)
    assert response["classes"] == ["No", "Yes"] == models.first.classes_.tolist()
    np.testing.assert_allclose(
        response["probabilities"], models.probabilities(models.first), rtol=0, atol=1e-9
    )
    assert response["model_version"] == "v1"
    # Not asked: not given.
    assert "probabilities" not in loaded.predict({"instances": to_json_rows(models.sample)})


def test_v2_probabilities_are_a_second_output(loaded, models):
    body = _v2_body(models.sample, parameters={"return_probabilities": True})
    response = loaded.predict(_infer_request(body))
    assert [o.name for o in response.outputs] == ["predictions", "probabilities"]
    probabilities = _output(response.outputs, "probabilities")
    assert probabilities.datatype == "FP64" and probabilities.shape == [len(models.sample), 2]
    assert json.loads(probabilities.parameters["classes"]) == ["No", "Yes"]
    values = np.asarray(probabilities.data, dtype=float).reshape(probabilities.shape)
    np.testing.assert_allclose(values, models.probabilities(models.first), rtol=0, atol=1e-9)
    assert _output(response.outputs, "predictions").data == models.expected(models.first)
    # Naming the output asks for it too, and then only the named outputs come back.
    only = loaded.predict(
        _infer_request(_v2_body(models.sample, outputs=[{"name": "probabilities"}]))
    )
    assert [o.name for o in only.outputs] == ["probabilities"]
    with pytest.raises(InvalidInput, match=r"outputs\[0\]: unknown output 'scores'"):
        loaded.predict(_infer_request(_v2_body(models.sample, outputs=[{"name": "scores"}])))


@pytest.mark.parametrize("kind", ["regression", "no predict_proba"])
def test_probabilities_are_refused_for_a_model_without_them(tmp_path, models, kind):
    if kind == "regression":
        registry = _registry(
            tmp_path, _fit(LinearRegression(), REGRESSION_SCHEMA), schema=REGRESSION_SCHEMA
        )
        reason = "a regression model"
    else:
        registry = _registry(tmp_path, _fit(LinearSVC()))
        reason = "a Pipeline without predict_proba"
    model = TabularModel(NAME, registry.uri("v1"))
    model.load()
    rows = to_json_rows(models.sample.head(3))
    assert len(model.predict({"instances": rows})["predictions"]) == 3
    with pytest.raises(InvalidInput, match=f"field 'return_probabilities': .*{reason}"):
        model.predict({"instances": rows, "return_probabilities": True})
    body = _v2_body(models.sample.head(3), parameters={"return_probabilities": True})
    with pytest.raises(InvalidInput, match=f"parameter 'return_probabilities': .*{reason}"):
        model.predict(_infer_request(body))


def test_missing_values_follow_the_schema_and_infinity_never_passes(loaded, models):
    rows = to_json_rows(models.sample.head(3))
    # 'age' may be missing: the model imputes it, as the in-process pipeline does with NaN.
    rows[1]["age"] = None
    expected = models.sample.head(3).copy()
    expected.loc[expected.index[1], "age"] = np.nan
    assert loaded.predict({"instances": rows})["predictions"] == models.expected(
        models.first, expected
    )
    body = _v2_body(models.sample.head(3))
    body["inputs"][0]["data"][1] = float("nan")  # V2 JSON parsed by Python may carry NaN
    assert _output(loaded.predict(_infer_request(body)).outputs, "predictions").data == (
        models.expected(models.first, expected)
    )
    # 'checks' may not (nullable: false), whether null or NaN.
    rows[2]["checks"] = None
    with pytest.raises(InvalidInput, match=r"instances\[2\]: feature 'checks' is missing \(null\)"):
        loaded.predict({"instances": rows})
    body["inputs"][1]["data"][0] = float("nan")
    with pytest.raises(InvalidInput, match=r"input 'checks', row 0: is missing \(NaN\)"):
        loaded.predict(_infer_request(body))
    # Infinity, in any feature.
    for feature, value in (("age", float("inf")), ("colour", float("-inf"))):
        rows = to_json_rows(models.sample.head(2))
        rows[1][feature] = value
        with pytest.raises(InvalidInput, match=rf"instances\[1\]: feature '{feature}' .*finite"):
            loaded.predict({"instances": rows})


def test_more_rows_than_the_limit_is_413(loaded, models):
    rows = to_json_rows(models.sample.head(1)) * (MAX_ROWS + 1)
    with pytest.raises(
        PayloadTooLarge, match=f"{MAX_ROWS + 1} rows.*limit of {MAX_ROWS}"
    ) as caught:
        loaded.predict({"instances": rows})
    assert caught.value.status_code == 413 and isinstance(caught.value, InvalidInput)
    frame = pd.concat([models.sample.head(1)] * (MAX_ROWS + 1))
    with pytest.raises(PayloadTooLarge, match=f"input 'age' has {MAX_ROWS + 1} rows"):
        loaded.predict(_infer_request(_v2_body(frame)))
    assert len(loaded.predict({"instances": rows[:MAX_ROWS]})["predictions"]) == MAX_ROWS


BAD_JSON = {
    "NaN in a V1 row": (
        b'{"instances": [{"age": 1}, {"age": NaN}]}',
        "instances[1]: feature 'age' is NaN, which is not JSON",
    ),
    "Infinity in a V1 row": (
        b'{"instances": [{"checks": -Infinity}]}',
        "instances[0]: feature 'checks' must be a finite number, got -Infinity",
    ),
    "overflow in a V2 tensor": (
        b'{"inputs": [{"name": "age", "data": [1, 1e999]}]}',
        "input 'age', row 1 must be a finite number, got Infinity",
    ),
    "NaN elsewhere": (b'{"parameters": {"x": [NaN]}}', "field 'parameters.x[0]' is NaN"),
    "truncated": (b'{"instances": [', "not valid JSON (Expecting value at line 1 column 16)"),
    "empty": (b"  ", "request body is empty"),
    "not UTF-8": (b'{"a": "\xff"}', "not UTF-8"),
}


@pytest.mark.parametrize("body, message", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_bad_json_is_explained(body, message):
    assert message in describe_bad_json(body)


def test_valid_json_needs_no_explaining():
    assert describe_bad_json(b'{"instances": [{"age": 1.5, "colour": null}]}') is None


def test_reload_swaps_versions_and_refuses_a_tampered_one(registry, models):
    model = TabularModel(NAME, registry=registry, alias="champion")
    model.load()
    rows = to_json_rows(models.sample)
    assert model.version == "v1"
    assert model.reload() == {
        "version": "v1",
        "previous": "v1",
        "changed": False,
        "alias": "champion",
    }
    in_flight = model.loaded  # what a request that started before the swap holds
    registry.promote("v2")
    assert model.reload() == {
        "version": "v2",
        "previous": "v1",
        "changed": True,
        "alias": "champion",
    }
    answer = model.predict({"instances": rows})
    assert answer == {"predictions": models.expected(models.second), "model_version": "v2"}
    # The old version is untouched by the swap: a request in flight finishes on it.
    assert in_flight.version == "v1"
    assert in_flight.model.predict(as_model_input(models.sample, SCHEMA)).tolist() == (
        models.expected(models.first)
    )
    registry.register(_fit(LogisticRegression(C=0.1)), {"schema": SCHEMA})
    _tamper(registry, "v3")
    registry.promote("v3")
    with pytest.raises(ReloadRefused, match=r"v3/model\.joblib: SHA-256 .*still serving v2"):
        model.reload()
    assert model.version == "v2" and model.predict({"instances": rows})["model_version"] == "v2"


def test_reload_refuses_a_version_that_is_gone_and_a_fixed_folder(registry, models):
    model = TabularModel(NAME, registry=registry)
    model.load()
    registry.promote("v2")
    shutil.rmtree(registry.uri("v2"))
    with pytest.raises(ReloadRefused, match=r"v2'?: not a directory.*still serving v1"):
        model.reload()
    assert (
        model.predict({"instances": to_json_rows(models.sample.head(2))})["model_version"] == "v1"
    )
    fixed = TabularModel(NAME, registry.uri("v1"))
    fixed.load()
    with pytest.raises(ReloadRefused, match=r"--model_dir"):
        fixed.reload()


def test_a_missing_alias_fails_the_load_naming_it(tmp_path, models):
    registry = _registry(tmp_path, models.first)  # nothing promoted
    model = TabularModel(NAME, registry=registry, alias="champion")
    with pytest.raises(PipelineInputError, match=f"model '{NAME}': no champion yet"):
        model.load()
    assert not model.ready


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# Starlette's TestClient still runs on httpx here, which this Starlette deprecates.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_admin_reload_needs_the_token_even_from_loopback(registry, caplog):
    """In a KServe pod the sidecars connect from 127.0.0.1: loopback proves nothing."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    model = TabularModel(NAME, registry=registry)
    model.load()
    app = FastAPI()
    harden_app(app, model, max_body_bytes=MAX_BYTES, admin_token=TOKEN)
    registry.promote("v2")
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        for headers in ({}, _bearer(WRONG_TOKEN), {"Authorization": TOKEN}, _bearer("")):
            response = local.post(ADMIN_RELOAD_PATH, headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer <token>" in response.json()["error"]
        # KServe's model repository routes (unload would stop the model) need it too.
        response = local.post(f"/v2/repository/models/{NAME}/unload")
        assert response.status_code == 401
    assert model.version == "v1"  # nothing was reloaded
    # The token works from anywhere, and the scheme is case-insensitive.
    with TestClient(app, client=("203.0.113.7", 40000)) as remote:
        response = remote.post(ADMIN_RELOAD_PATH, headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "version": "v2",
        "previous": "v1",
        "changed": True,
        "alias": "champion",
    }
    assert TOKEN not in caplog.text


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_admin_routes_are_off_without_a_token(registry):
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    model = TabularModel(NAME, registry=registry)
    model.load()
    app = FastAPI()
    harden_app(app, model, max_body_bytes=MAX_BYTES)  # no admin_token
    registry.promote("v2")
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        for headers in ({}, _bearer(TOKEN)):
            response = local.post(ADMIN_RELOAD_PATH, headers=headers)
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert "off" in error and ADMIN_TOKEN_ENV in error and "SIGHUP" in error
    assert model.version == "v1"


def test_the_admin_token_comes_from_the_environment_only():
    assert read_admin_token({}) is None
    assert read_admin_token({ADMIN_TOKEN_ENV: "   "}) is None
    assert read_admin_token({ADMIN_TOKEN_ENV: f" {TOKEN}\n"}) == TOKEN
    for bad in ("short-secret", "x" * 15, "é" * 20, "with a space in it, long"):
        with pytest.raises(PipelineInputError, match="at least 16 visible ASCII") as caught:
            read_admin_token({ADMIN_TOKEN_ENV: bad})
        assert bad not in str(caught.value)
    # No command-line flag takes it.
    flags = [flag for action in build_parser()._actions for flag in action.option_strings]
    assert "--model_store" in flags and not [flag for flag in flags if "token" in flag]


@pytest.mark.server
def test_alias_on_an_object_store_is_downloaded_verified_and_followed(models, s3):
    """s3:// through a moto server on 127.0.0.1: each version is a verified temporary copy, and
    the copy of the version a reload replaces is removed."""
    s3.mkdir("models-server")
    registry = ModelRegistry("s3://models-server", NAME, {"skip_instance_cache": True})
    registry.register(models.first, {"schema": SCHEMA})
    registry.register(models.second, {"schema": SCHEMA})
    registry.promote("v1")
    model = TabularModel(NAME, registry=registry)
    model.load()
    first_copy = model.loaded.folder
    assert model.loaded.temporary and (first_copy / MODEL_FILE).is_file()
    registry.promote("v2")
    assert model.reload()["changed"] is True
    assert not first_copy.exists() and (model.loaded.folder / MODEL_FILE).is_file()
    rows = to_json_rows(models.sample)
    assert model.predict({"instances": rows})["predictions"] == models.expected(models.second)
    model.stop()
    assert not model.loaded.folder.exists()


def test_cli_flags_and_their_environment_defaults(monkeypatch):
    help_text = build_parser().format_help()
    for flag in ("--model_store", "--alias", "--max_batch_rows", "--max_body_bytes"):
        assert flag in help_text
    args = build_parser().parse_args(["--model_dir", "x"])
    assert (args.max_batch_rows, args.max_body_bytes) == (DEFAULT_MAX_BATCH_ROWS, 10 * 1024 * 1024)
    monkeypatch.setenv("MLPIPE_MAX_BATCH_ROWS", "123")
    monkeypatch.setenv("MLPIPE_MAX_BODY_BYTES", "4567")
    args = build_parser().parse_args(["--model_store", "s", "--model_name", NAME])
    assert (args.max_batch_rows, args.max_body_bytes) == (123, 4567)
    assert (
        build_parser().parse_args(["--model_dir", "x", "--max_batch_rows", "7"]).max_batch_rows == 7
    )
    for argv in (
        ["--model_dir", "x", "--model_store", "s"],  # one or the other
        [],  # one of them is required
        ["--model_store", "s"],  # a store needs the model's name
        ["--model_dir", "x", "--alias", "v2"],  # an alias needs a store
        ["--model_dir", "x", "--max_batch_rows", "0"],
    ):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2, argv
    monkeypatch.setenv("MLPIPE_MAX_BATCH_ROWS", "lots")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model_dir", "x"])


# --- Real servers on 127.0.0.1 --------------------------------------------------------------------


class Server(ServerProcess):
    """`python -m serving ARGS` on a free loopback port, stopped by its handle
    (SIGTERM to its PID, then SIGKILL after 10 s) when the `with` block ends, whatever the test
    did."""

    def __init__(self, *args: str, ready_timeout: float = 60.0, token: str | None = None):
        # The admin token reaches the server through its environment only, as on a cluster.
        env = {k: v for k, v in os.environ.items() if k != ADMIN_TOKEN_ENV}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), env.get("PYTHONPATH"))))
        if token is not None:
            env[ADMIN_TOKEN_ENV] = token
        super().__init__(
            ready_paths=(f"/v2/models/{NAME}/ready",),
            ready_timeout=ready_timeout,
            env=env,
            cwd=REPO_ROOT,
            what="the model server",
        )
        self.args = args

    def command_line(self) -> list[str]:
        server = [sys.executable, "-m", "serving", *self.args]
        return [*server, "--http_port", str(self.port)]

    def log(self) -> str:
        return self.output_tail(lines=100_000)

    def predict_url(self) -> str:
        return f"{self.url}/v1/models/{NAME}:predict"

    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{NAME}/infer"


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only: no proxy from the environment
    return session


def _server(*args: str, ready_timeout: float = 60.0, token: str | None = None) -> Server:
    return Server(*args, ready_timeout=ready_timeout, token=token)


@pytest.fixture(scope="module")
def served(tmp_path_factory, models):
    """v1, served from its folder, with small limits to test them."""
    registry = _registry(tmp_path_factory.mktemp("served"), models.first)
    with _server(
        "--model_dir",
        registry.uri("v1"),
        "--max_batch_rows",
        str(MAX_ROWS),
        "--max_body_bytes",
        str(MAX_BYTES),
        token=TOKEN,
    ) as server:
        yield server


@pytest.mark.server
def test_both_protocols_give_probabilities_over_http(served, models):
    rows = to_json_rows(models.sample)
    expected = models.probabilities(models.first)
    with _http() as http:
        v1 = http.post(
            served.predict_url(), json={"instances": rows, "return_probabilities": True}, timeout=30
        )
        body = _v2_body(models.sample, parameters={"return_probabilities": True})
        v2 = http.post(served.infer_url(), json=body, timeout=30)
    assert v1.status_code == 200 and v2.status_code == 200, (v1.text, v2.text)
    v1, v2 = v1.json(), v2.json()
    assert v1["predictions"] == models.expected(models.first) and v1["classes"] == ["No", "Yes"]
    np.testing.assert_allclose(v1["probabilities"], expected, rtol=0, atol=1e-9)
    assert v1["model_version"] == "v1" and v2["model_version"] == "v1"
    assert _output(v2["outputs"], "predictions")["data"] == models.expected(models.first)
    output = _output(v2["outputs"], "probabilities")
    assert (output["datatype"], output["shape"]) == ("FP64", [len(rows), 2])
    assert json.loads(output["parameters"]["classes"]) == ["No", "Yes"]
    values = np.asarray(output["data"], dtype=float).reshape(output["shape"])
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-9)


@pytest.mark.server
def test_health_and_metadata_name_the_inputs(served):
    with _http() as http:
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert http.get(served.url + path, timeout=10).status_code == 200, path
        metadata = http.get(f"{served.url}/v2/models/{NAME}", timeout=10).json()
    assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [
        ("age", "FP64"),
        ("checks", "FP64"),
        ("sex", "BYTES"),
        ("colour", "BYTES"),
    ]


def _json_text(rows: list[dict]) -> str:
    return json.dumps({"instances": rows})


def _raw(text: str) -> dict:
    return {"data": text.encode(), "headers": {"Content-Type": "application/json"}}


def _v1(change):
    """A V1 request: three good rows, then `change(rows)`, sent as JSON."""

    def build(sample):
        rows = to_json_rows(sample.head(3))
        change(rows)
        return "v1", {"json": {"instances": rows}}

    return build


def _v2(change):
    def build(sample):
        body = _v2_body(sample.head(3))
        change(body)
        return "v2", {"json": body}

    return build


# NaN and Infinity are not JSON: a value is set to one of these markers, and the marker, quotes
# and all, becomes the bare token in the text sent.
TOKENS = {"<NaN>": "NaN", "<Infinity>": "Infinity", "<-Infinity>": "-Infinity"}


def _with_tokens(payload: dict) -> str:
    text = json.dumps(payload)
    for marker, token in TOKENS.items():
        text = text.replace(json.dumps(marker), token)
    return text


def _v1_raw(change):
    """A V1 request whose body is written as text: `change(rows)` may set a TOKENS marker."""

    def build(sample):
        rows = to_json_rows(sample.head(3))
        change(rows)
        return "v1", _raw(_with_tokens({"instances": rows}))

    return build


def _v2_raw(change):
    def build(sample):
        body = _v2_body(sample.head(3))
        change(body)
        return "v2", _raw(_with_tokens(body))

    return build


def _put(index: int, feature: str, value):
    return lambda rows: rows[index].__setitem__(feature, value)


def _tensor(body: dict, name: str) -> dict:
    return next(t for t in body["inputs"] if t["name"] == name)


def _chunks(data: bytes):
    # A generator body: requests sends it chunked, without Content-Length.
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


def _big_rows(sample) -> list[dict]:
    rows = to_json_rows(sample.head(1)) * 40  # under the row limit, over the byte limit
    for row in rows:
        row["colour"] = "x" * 600
    return rows


BAD_INPUTS = {
    "missing feature": (
        _v1(lambda rows: rows[1].pop("checks")),
        400,
        ["instances[1]", "feature 'checks' is missing"],
    ),
    "missing feature v2": (
        _v2(lambda b: b["inputs"].remove(_tensor(b, "colour"))),
        400,
        ["feature 'colour' is missing"],
    ),
    "extra feature": (
        _v1(_put(0, "height", 180)),
        400,
        ["instances[0]", "unknown feature 'height'"],
    ),
    "extra feature v2": (
        _v2(lambda b: b["inputs"].append({**_tensor(b, "sex"), "name": "height"})),
        400,
        ["input 'height' is not a feature"],
    ),
    "wrong type": (
        _v1(_put(2, "colour", {"r": 1})),
        400,
        ["instances[2]", "feature 'colour' must be a string"],
    ),
    "wrong type v2": (
        _v2(lambda b: _tensor(b, "checks").update(datatype="BYTES", data=["1", "2", "3"])),
        400,
        ["input 'checks'", "datatype BYTES"],
    ),
    "string for a number": (
        _v1(_put(1, "age", "forty")),
        400,
        ["instances[1]", "feature 'age' must be a number"],
    ),
    "string for a number v2": (
        _v2(lambda b: _tensor(b, "age")["data"].__setitem__(2, "old")),
        400,
        ["input 'age', row 2", "must be a number"],
    ),
    "null where the schema forbids it": (
        _v1(_put(1, "checks", None)),
        400,
        ["instances[1]", "feature 'checks' is missing (null)", "nullable: false"],
    ),
    "NaN where the schema forbids it v2": (
        _v2_raw(lambda b: _tensor(b, "checks")["data"].__setitem__(1, "<NaN>")),
        400,
        ["input 'checks', row 1", "missing (NaN)"],
    ),
    "NaN v1": (
        _v1_raw(_put(1, "age", "<NaN>")),
        400,
        ["instances[1]: feature 'age' is NaN", "send null"],
    ),
    "Infinity v1": (
        _v1_raw(_put(2, "checks", "<Infinity>")),
        400,
        ["instances[2]: feature 'checks' must be a finite number, got Infinity"],
    ),
    "-Infinity v2": (
        _v2_raw(lambda b: _tensor(b, "age")["data"].__setitem__(0, "<-Infinity>")),
        400,
        ["input 'age', row 0", "must be a finite number"],
    ),
    "empty batch": (
        lambda sample: ("v1", {"json": {"instances": []}}),
        400,
        ["'instances' is empty"],
    ),
    "empty batch v2": (
        _v2(lambda b: [t.update(shape=[0], data=[]) for t in b["inputs"]]),
        400,
        ["inputs are empty"],
    ),
    "over the row limit": (
        lambda sample: (
            "v1",
            {"json": {"instances": to_json_rows(sample.head(1)) * (MAX_ROWS + 1)}},
        ),
        413,
        [f"{MAX_ROWS + 1} rows", f"limit of {MAX_ROWS} rows"],
    ),
    "over the row limit v2": (
        lambda sample: ("v2", {"json": _v2_body(pd.concat([sample.head(1)] * (MAX_ROWS + 1)))}),
        413,
        ["input 'age'", f"{MAX_ROWS + 1} rows", f"limit of {MAX_ROWS} rows"],
    ),
    "body over the size limit": (
        lambda sample: ("v1", _raw(_json_text(_big_rows(sample)))),
        413,
        ["bytes", f"limit of {MAX_BYTES} bytes"],
    ),
    "chunked body over the size limit": (
        lambda sample: (
            "v1",
            {
                "data": _chunks(_json_text(_big_rows(sample)).encode()),
                "headers": {"Content-Type": "application/json"},
            },
        ),
        413,
        [f"more than {MAX_BYTES} bytes"],
    ),
    "invalid JSON": (
        lambda sample: ("v1", _raw(_json_text(to_json_rows(sample))[:-2])),
        400,
        ["request body: not valid JSON"],
    ),
    "invalid JSON v2": (
        lambda sample: ("v2", _raw(json.dumps(_v2_body(sample)).replace("[", "{", 1))),
        400,
        ["request body: not valid JSON"],
    ),
    "not an inference request v2": (
        lambda sample: ("v2", {"json": {"id": "1"}}),
        400,
        ["field 'inputs'", "required"],
    ),
    "probabilities flag not a boolean": (
        lambda sample: (
            "v1",
            {"json": {"instances": to_json_rows(sample), "return_probabilities": "yes"}},
        ),
        400,
        ["field 'return_probabilities': expected true or false"],
    ),
}


@pytest.mark.server
@pytest.mark.parametrize("build, status, fragments", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_every_bad_input_is_refused_and_the_server_keeps_serving(
    served, models, build, status, fragments
):
    sample = models.sample.iloc[[0, 3, 1]]  # the second row's 'age' is missing (null)
    assert sample["age"].isna().tolist() == [False, True, False]
    protocol, request = build(sample)
    endpoint = served.predict_url() if protocol == "v1" else served.infer_url()
    with _http() as http:
        response = http.post(endpoint, timeout=30, **request)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        for fragment in fragments:
            assert fragment in error, error
        # The same server answers a valid request right after.
        good = http.post(served.predict_url(), json={"instances": to_json_rows(sample)}, timeout=30)
    assert good.status_code == 200, good.text
    assert good.json() == {
        "predictions": models.expected(models.first, sample),
        "model_version": "v1",
    }


@pytest.mark.server
def test_admin_reload_on_a_folder_server_is_refused(served):
    with _http() as http:
        response = http.post(served.url + ADMIN_RELOAD_PATH, headers=_bearer(TOKEN), timeout=30)
    assert response.status_code == 409
    assert "--model_dir" in response.json()["error"] and response.json()["version"] == "v1"
    assert TOKEN not in " ".join(served.command_line()) and TOKEN not in served.log()


def _alias_server(registry: ModelRegistry):
    return _server(
        "--model_store",
        registry.store_uri,
        "--model_name",
        NAME,
        "--alias",
        "champion",
        token=TOKEN,
    )


class Client(threading.Thread):
    """Sends the sample again and again (V1 or V2) until told to stop or MAX_REQUESTS are sent;
    keeps the version of every answer and anything that was not a correct answer."""

    def __init__(self, server: Server, models: Models, protocol: str):
        super().__init__(daemon=True)
        self.server, self.models, self.protocol = server, models, protocol
        self.expected = {"v1": models.expected(models.first), "v2": models.expected(models.second)}
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def _one(self, http: requests.Session) -> None:
        if self.protocol == "v1":
            response = http.post(
                self.server.predict_url(),
                json={"instances": to_json_rows(self.models.sample)},
                timeout=30,
            )
        else:
            response = http.post(
                self.server.infer_url(), json=_v2_body(self.models.sample), timeout=30
            )
        if response.status_code != 200:
            self.failures.append(f"HTTP {response.status_code}: {response.text}")
            return
        body = response.json()
        version = body["model_version"]
        predictions = body["predictions"] if self.protocol == "v1" else body["outputs"][0]["data"]
        if predictions != self.expected.get(version):
            self.failures.append(f"{version} answered {predictions}")
        self.versions.append(version)

    def run(self) -> None:
        with _http() as http:
            for _ in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                try:
                    self._one(http)
                except Exception as error:  # a failed request is what this test looks for
                    self.failures.append(repr(error))

    def count(self, version: str) -> int:
        return self.versions.count(version)


def _wait_for(condition, what: str, clients) -> None:
    deadline = time.monotonic() + SWITCH_DEADLINE_S
    while not condition():
        alive = any(client.is_alive() for client in clients)
        assert alive and time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


@pytest.mark.server
def test_admin_reload_under_load_switches_versions_without_a_failed_request(registry, models):
    with _alias_server(registry) as server:
        clients = [Client(server, models, "v1"), Client(server, models, "v2")]
        try:
            for client in clients:
                client.start()
            _wait_for(lambda: all(c.count("v1") >= 10 for c in clients), "v1 answers", clients)
            registry.promote("v2")
            with _http() as http:
                # From loopback, like a sidecar's request in a pod, but without the token.
                refused = http.post(server.url + ADMIN_RELOAD_PATH, timeout=60)
                wrong = http.post(
                    server.url + ADMIN_RELOAD_PATH, headers=_bearer(WRONG_TOKEN), timeout=60
                )
                unload = http.post(f"{server.url}/v2/repository/models/{NAME}/unload", timeout=60)
                still = http.post(
                    server.predict_url(),
                    json={"instances": to_json_rows(models.sample)},
                    timeout=30,
                )
                reload = http.post(
                    server.url + ADMIN_RELOAD_PATH, headers=_bearer(TOKEN), timeout=60
                )
            _wait_for(lambda: all(c.count("v2") >= 10 for c in clients), "v2 answers", clients)
        finally:
            for client in clients:
                client.stop.set()
            for client in clients:
                client.join(timeout=60)
        with _http() as http:
            again = http.post(server.url + ADMIN_RELOAD_PATH, headers=_bearer(TOKEN), timeout=60)
        log = server.log()
    assert (refused.status_code, wrong.status_code, unload.status_code) == (401, 401, 401)
    assert refused.json() == wrong.json()  # a wrong token is told no more than a missing one
    assert still.status_code == 200 and still.json()["model_version"] == "v1"
    assert TOKEN not in log
    assert reload.status_code == 200, reload.text
    assert reload.json() == {
        "version": "v2",
        "previous": "v1",
        "changed": True,
        "alias": "champion",
    }
    assert again.json() == {
        "version": "v2",
        "previous": "v2",
        "changed": False,
        "alias": "champion",
    }
    for client in clients:
        assert client.failures == [], client.failures[:3]
        # Every answer before the switch is v1's, every one after it v2's: no going back.
        assert client.versions == sorted(client.versions)
        assert client.versions[0] == "v1" and client.versions[-1] == "v2"
    assert f"reloaded {NAME} champion: v1 -> v2" in log


@pytest.mark.server
def test_sighup_reloads_the_alias(registry, models):
    with _alias_server(registry) as server, _http() as http:
        rows = {"instances": to_json_rows(models.sample)}
        assert (
            http.post(server.predict_url(), json=rows, timeout=30).json()["model_version"] == "v1"
        )
        registry.promote("v2")
        os.kill(server.process.pid, signal.SIGHUP)
        answers = []
        deadline = time.monotonic() + SWITCH_DEADLINE_S
        while not answers or answers[-1]["model_version"] != "v2":
            assert time.monotonic() < deadline, f"still {answers[-1]}:\n{server.log()}"
            response = http.post(server.predict_url(), json=rows, timeout=30)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        assert server.process.poll() is None  # SIGHUP did not end the server
        log = server.log()
    assert answers[-1]["predictions"] == models.expected(models.second)
    assert f"reloaded {NAME} champion: v1 -> v2" in log


@pytest.mark.server
def test_a_tampered_version_is_refused_and_the_old_one_keeps_serving(registry, models):
    registry.promote("v2")
    with _alias_server(registry) as server, _http() as http:
        registry.register(_fit(LogisticRegression(C=0.1)), {"schema": SCHEMA})
        _tamper(registry, "v3")
        registry.promote("v3")
        response = http.post(server.url + ADMIN_RELOAD_PATH, headers=_bearer(TOKEN), timeout=60)
        rows = {"instances": to_json_rows(models.sample)}
        after = http.post(server.predict_url(), json=rows, timeout=30)
        log = server.log()
    assert response.status_code == 409
    body = response.json()
    assert "v3/model.joblib: SHA-256" in body["error"] and "still serving v2" in body["error"]
    assert (body["version"], body["changed"]) == ("v2", False)
    assert after.status_code == 200
    assert after.json() == {"predictions": models.expected(models.second), "model_version": "v2"}
    refused = [line for line in log.splitlines() if line.startswith("reload refused:")]
    assert len(refused) == 1 and "SHA-256" in refused[0]


def test_the_served_frame_equals_what_training_builds():
    """frame_from_columns builds the model input without pandas per column; it must equal
    as_model_input's result value for value, missing tokens and dtypes included."""
    from components.common.schema import as_model_input
    from serving.protocol import frame_from_columns

    schema = {
        "target": "y",
        "task": "classification",
        "features": [
            {"name": "age", "kind": "numeric"},
            {"name": "colour", "kind": "categorical"},
            {"name": "checks", "kind": "categorical"},
        ],
    }
    columns = {
        "age": [31, None, 2.5, float("nan")],
        "colour": ["red", None, float("nan"), "blue"],
        "checks": [3, 4.0, True, None],
    }
    expected = as_model_input(
        pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()}), schema
    )
    expected["age"] = expected["age"].astype(float)
    served = frame_from_columns(columns, schema)
    pd.testing.assert_frame_equal(served, expected)


# --- Bodies no parser should see, methods no route takes ----------------------------------------

DEEP = 100_000
DEEP_BODIES = {
    "bare v1": ("v1", b"[" * DEEP + b"]" * DEEP),
    "in instances v1": ("v1", b'{"instances": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    "bare v2": ("v2", b"[" * DEEP + b"]" * DEEP),
    "in a tensor v2": (
        "v2",
        b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": '
        + b"[" * DEEP
        + b"]" * DEEP
        + b"}]}",
    ),
    "objects v1": ("v1", b'{"a":' * DEEP + b"1" + b"}" * DEEP),
}


def test_json_depth_counts_brackets_outside_strings():
    from serving.http_app import MAX_JSON_DEPTH, json_depth

    assert json_depth(b"[" * DEEP + b"]" * DEEP) == DEEP
    nested = b'{"instances": [' + b"[" * 100 + b"]" * 100 + b"]}"
    assert json_depth(nested) == 102
    # Brackets in strings do not count, escaped quotes included.
    hidden = b'{"x": "' + b"[" * 100 + b'", "y": "\\"' + b"{" * 100 + b'"}'
    assert json_depth(hidden) == 1
    assert json_depth(b'["\\\\"' + b"[" * 100 + b"]" * 100 + b"]") == 101
    assert json_depth(b'{"instances": [{"a": 1}]}') <= MAX_JSON_DEPTH
    assert "nested deeper than" in describe_bad_json(b"[" * DEEP + b"]" * DEEP)


@pytest.fixture(scope="module")
def roomy(tmp_path_factory, models):
    """v1, served from its folder with the default limits (a 10 MiB body)."""
    registry = _registry(tmp_path_factory.mktemp("roomy"), models.first)
    with _server("--model_dir", registry.uri("v1")) as server:
        yield server


@pytest.mark.server
def test_a_deeply_nested_body_is_a_400_and_the_server_keeps_serving(roomy, models):
    rows = {"instances": to_json_rows(models.sample.head(3))}
    with _http() as http:
        for what, (protocol, body) in DEEP_BODIES.items():
            url = roomy.predict_url() if protocol == "v1" else roomy.infer_url()
            response = http.post(url, timeout=60, **_raw(body.decode()))
            assert response.status_code == 400, (what, response.status_code, response.text)
            assert "nested deeper than 64 levels" in response.json()["error"], what
            good = http.post(roomy.predict_url(), json=rows, timeout=30)
            assert good.status_code == 200, (what, good.text)
            assert good.json()["predictions"] == models.expected(
                models.first, models.sample.head(3)
            )
    assert roomy.process.poll() is None
    assert "RecursionError" not in roomy.log()


@pytest.mark.server
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_predict_routes_answer_other_methods_with_405(roomy, method):
    with _http() as http:
        for url in (
            roomy.predict_url(),
            roomy.infer_url(),
            f"{roomy.url}/v2/models/{NAME}/versions/v1/infer",
        ):
            response = http.request(method, url, timeout=30)
            assert response.status_code == 405, (url, response.text)
            assert response.headers["allow"] == "POST"
            error = response.json()["error"]
            assert f"method {method} not allowed" in error and "POST" in error, error
        # The routes that do answer GET still do.
        assert http.get(f"{roomy.url}/v1/models/{NAME}", timeout=30).status_code == 200
        assert http.get(f"{roomy.url}/v2/models/{NAME}/ready", timeout=30).status_code == 200


@pytest.mark.server
def test_admin_routes_are_off_on_a_server_without_a_token(roomy, models):
    with _http() as http:
        for path in (ADMIN_RELOAD_PATH, f"/v2/repository/models/{NAME}/unload"):
            response = http.post(roomy.url + path, headers=_bearer(TOKEN), timeout=30)
            assert response.status_code == 403, response.text
            assert ADMIN_TOKEN_ENV in response.json()["error"]
        rows = {"instances": to_json_rows(models.sample.head(3))}
        assert http.post(roomy.predict_url(), json=rows, timeout=30).status_code == 200
