"""Deploy locally: serve a registered model version with KServe on 127.0.0.1 and check it.

The server itself is the `serving` package (`python -m serving`), started here as a subprocess,
so the process that asks for a deployment never imports the KServe server stack. The clients speak the two
protocols KServe serves: V1 (`/v1/models/NAME:predict`, a JSON object per row) and V2, the Open
Inference Protocol (`/v2/models/NAME/infer`, one tensor per feature column).
"""

import datetime as dt
import ipaddress
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests

import components
from components.common.errors import PipelineInputError
from components.common.model_files import (
    load_model_folder,
    local_model_folder,
    model_folder,
    read_model_metadata,
)
from components.common.schema import as_model_input, feature_names

LOOPBACK = "127.0.0.1"
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# The model server's prediction log (serving.cli --prediction_log), as its environment names it.
PREDICTION_LOG_ENV = "MLPIPE_PREDICTION_LOG"
# How much of the server's output an error message quotes when the server fails to start.
OUTPUT_TAIL_LINES = 15


class ModelServerError(RuntimeError):
    """The model server answered a request with an error status."""

    def __init__(self, endpoint: str, status: int, body: str):
        super().__init__(f"POST {endpoint}: HTTP {status}: {body}")
        self.endpoint = endpoint
        self.status = status
        self.body = body


# --- HTTP clients ----------------------------------------------------------------------------


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _session(url: str) -> requests.Session:
    session = requests.Session()
    # A proxy from the environment must never see, or break, a call to a server on this machine.
    session.trust_env = not _is_loopback(url)
    return session


def _post(endpoint: str, payload: dict) -> dict:
    with _session(endpoint) as session:
        response = session.post(endpoint, json=payload, timeout=REQUEST_TIMEOUT_S)
    if response.status_code != 200:
        raise ModelServerError(endpoint, response.status_code, response.text.strip())
    return response.json()


def _json_value(value):
    """One cell as JSON: numpy scalars as Python ones, missing values (NaN, NA, NaT) as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, str | bytes | list | tuple | dict):
        return value
    if value is None or pd.isna(value):
        return None
    return value


def to_json_rows(frame: pd.DataFrame) -> list[dict]:
    """The rows of a feature table as JSON-safe dicts, ready for a V1 request.

    NaN becomes None (null): JSON has no NaN, and the model imputes missing values anyway.
    """
    return [
        {str(column): _json_value(value) for column, value in record.items()}
        for record in frame.to_dict(orient="records")
    ]


def _v2_tensor(name: str, values: pd.Series) -> dict:
    """One column as a V2 input tensor: numbers as INT64/FP64, anything else as strings."""
    is_number = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if is_number:
        datatype = "INT64" if pd.api.types.is_integer_dtype(values) else "FP64"
        data = [_json_value(v) for v in values]
    else:
        datatype = "BYTES"
        data = [None if _json_value(v) is None else str(v) for v in values]
    return {"name": str(name), "shape": [len(values)], "datatype": datatype, "data": data}


def predict_v1(url: str, model_name: str, rows: list[dict]) -> list:
    """Predict with the V1 protocol: `{"instances": [row, ...]}`.

    Args:
        url: the server's base URL, e.g. http://127.0.0.1:8080.
        model_name: the model's name on the server.
        rows: one JSON-safe dict of feature values per row (see `to_json_rows`).

    Returns:
        The predictions, one per row.

    Raises:
        ModelServerError: the server answered with an error status; its body is in the message.
    """
    body = _post(f"{url}/v1/models/{model_name}:predict", {"instances": rows})
    return body["predictions"]


def predict_v2(url: str, model_name: str, frame: pd.DataFrame) -> list:
    """Predict with the V2 (Open Inference) protocol: one tensor per column of `frame`.

    Returns:
        The data of the output tensor named "predictions", one value per row.

    Raises:
        ModelServerError: the server answered with an error status; its body is in the message.
    """
    inputs = [_v2_tensor(name, frame[name]) for name in frame.columns]
    body = _post(f"{url}/v2/models/{model_name}/infer", {"inputs": inputs})
    for output in body["outputs"]:
        if output["name"] == "predictions":
            return output["data"]
    names = [output["name"] for output in body["outputs"]]
    raise RuntimeError(f"V2 response from '{url}' has no 'predictions' output (got {names})")


def curl_example(url: str, model_name: str, row: dict) -> str:
    """A one-line curl command that sends `row` to the V1 predict endpoint, quoted for sh."""
    payload = json.dumps(
        {"instances": [{str(k): _json_value(v) for k, v in row.items()}]}, separators=(",", ":")
    )
    words = ["curl", "-sS", "-X", "POST"]
    if _is_loopback(url):
        words += ["--noproxy", "*"]  # same reason as in _session: a local call skips any proxy
    words += ["-H", "Content-Type: application/json", "-d", payload]
    words.append(f"{url}/v1/models/{model_name}:predict")
    return " ".join(shlex.quote(word) for word in words)


# --- The local server ------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """An HTTP server run as a subprocess on this machine, until it is stopped by its handle.

    Use as a context manager: entering starts the command and waits until every ready path
    answers 200; leaving stops it (SIGTERM to its PID, then SIGKILL after 10 s). The model
    server below is one; the benchmarks' peers (a FastAPI app, MLServer) are others.

    Args:
        command: the program and its arguments.
        port: the port it serves on; None: a free one, chosen at start (see `command_line`).
        ready_paths: paths that answer 200 once it is ready.
        host: the address it binds.
        ready_timeout: seconds it may take to become ready.
        env: its environment (default: ours, with this checkout importable).
        cwd: its working directory.
        what: how errors name it (default: the program).

    Attributes:
        process: the `subprocess.Popen`, once started.
        last_output: its last lines of output, kept when it stops.
    """

    def __init__(
        self,
        command: list | None = None,
        port: int | None = None,
        ready_paths: tuple | list = (),
        host: str = LOOPBACK,
        ready_timeout: float = 60.0,
        env: dict | None = None,
        cwd: str | os.PathLike | None = None,
        what: str = "",
    ):
        self.command = [str(part) for part in command or []]
        self.port = port
        self.ready_paths = tuple(ready_paths)
        self.host = host
        self.ready_timeout = ready_timeout
        self.env = env
        self.cwd = cwd
        self.what = what or (self.command[0] if self.command else "server")
        self.process: subprocess.Popen | None = None
        self.last_output = ""
        self._output = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def command_line(self) -> list[str]:
        """The command to run, once the port is known."""
        return self.command

    def start(self) -> None:
        """Start the server and wait until every ready path answers.

        Raises:
            RuntimeError: the server exited or was not ready in time; its last output is quoted.
        """
        if self.port is None:
            self.port = free_port(self.host)
        # A file, not a pipe: nobody reads a pipe while the server runs, and a full pipe would
        # block a chatty server.
        self._output = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.command_line(),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=_child_env() if self.env is None else self.env,
            cwd=self.cwd,
            # Its own session: a Ctrl+C in the terminal reaches us, and we stop it in order.
            start_new_session=True,
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        with _session(self.url) as session:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.what} exited with code {self.process.returncode} before it was "
                        f"ready; its output:\n{self.output_tail()}"
                    )
                if all(_answers_ok(session, self.url + path) for path in self.ready_paths):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.what} was not ready at {self.url} after "
                        f"{self.ready_timeout:g} s; its output:\n{self.output_tail()}"
                    )
                time.sleep(0.1)

    def output_tail(self, lines: int = OUTPUT_TAIL_LINES) -> str:
        """The last lines the server wrote (stdout and stderr together)."""
        if self._output is None or self._output.closed:
            return ""
        self._output.flush()
        self._output.seek(0)
        text = self._output.read().decode("utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server: SIGTERM to its PID, SIGKILL if it is still there after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._output is not None and not self._output.closed:
            self.last_output = self.output_tail()
            self._output.close()


class LocalModelServer(ServerProcess):
    """A KServe model server for one model folder, running as a subprocess on this machine.

    Args:
        model_dir: the registered model folder.
        host, port, ready_timeout: as ServerProcess's.
        prediction_log: the server records every answered prediction in this lake (a folder,
            s3://, gs://); None: it does not (whatever MLPIPE_PREDICTION_LOG says here). Stop it
            with `stop()` (SIGTERM): the server then writes what it has queued.

    Attributes:
        url: the base URL, e.g. http://127.0.0.1:8080.
        model_name: the model's name on the server (from metadata.json).
        version: the model version (from metadata.json).
        pid, process, last_output: as ServerProcess's.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        host: str = LOOPBACK,
        port: int | None = None,
        ready_timeout: float = 60.0,
        prediction_log: str | None = None,
    ):
        # Checked here so that a bad folder fails fast, without starting a process.
        metadata = read_model_metadata(model_dir)
        self.model_dir = model_folder(model_dir)
        self.model_name: str = metadata["name"]
        self.version: str = metadata["version"]
        self.prediction_log = prediction_log
        env = _child_env()
        # Only the argument decides whether this server logs, not a variable we happen to have.
        env.pop(PREDICTION_LOG_ENV, None)
        super().__init__(
            port=port,
            ready_paths=("/v2/health/ready", f"/v2/models/{self.model_name}/ready"),
            host=host,
            ready_timeout=ready_timeout,
            env=env,
            what=f"model server for '{self.model_dir}'",
        )

    def command_line(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "serving",
            "--model_dir",
            str(self.model_dir),
            "--http_port",
            str(self.port),
            "--host",
            self.host,
            *(["--prediction_log", str(self.prediction_log)] if self.prediction_log else []),
        ]


def _answers_ok(session: requests.Session, url: str) -> bool:
    try:
        return session.get(url, timeout=2.0).status_code == 200
    except requests.RequestException:
        return False  # not listening yet


def _child_env() -> dict:
    """Our environment, with this checkout importable: `python -m components...` must find the
    same code that started it, whatever the working directory."""
    env = dict(os.environ)
    root = str(Path(components.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# --- The smoke test --------------------------------------------------------------------------


def _same_predictions(expected: np.ndarray, served: list) -> bool:
    """Served predictions equal in-process ones (regression: up to float round-off)."""
    if len(served) != len(expected):
        return False
    if expected.dtype.kind == "f":
        served_values = np.array([np.nan if v is None else v for v in served], dtype=float)
        return bool(np.allclose(expected, served_values, rtol=1e-9, atol=1e-12, equal_nan=True))
    return expected.tolist() == list(served)


def smoke_test(
    model_dir: str | os.PathLike, rows: pd.DataFrame, prediction_log: str | None = None
) -> dict:
    """Serve the model locally, send `rows` by V1 and V2, and compare with in-process predictions.

    Args:
        model_dir: a registered model folder, local or in an object store.
        rows: a table holding at least the model's feature columns (others are ignored).
        prediction_log: the server logs the smoke traffic in this lake (None: it does not);
            the server is stopped with SIGTERM, so that it writes the log before it exits.

    Returns:
        {"endpoint", "model_name", "version", "predictions" (V1's), "v1_matches", "v2_matches"}.

    Raises:
        PipelineInputError: a bad model folder, no rows, or a feature column missing from `rows`.
        RuntimeError: the server failed to start, or its predictions differ from in-process ones.
    """
    if rows.empty:
        raise PipelineInputError("smoke test rows: the table is empty; send at least one row")
    model_dir = local_model_folder(model_dir)
    model, metadata = load_model_folder(model_dir)
    schema = metadata["schema"]
    expected = np.asarray(model.predict(as_model_input(rows, schema)))
    features = rows[feature_names(schema)]
    with LocalModelServer(model_dir, prediction_log=prediction_log) as server:
        v1 = predict_v1(server.url, server.model_name, to_json_rows(features))
        v2 = predict_v2(server.url, server.model_name, features)
        endpoint = server.url
    result = {
        "endpoint": endpoint,
        "model_name": metadata["name"],
        "version": metadata["version"],
        "predictions": v1,
        "v1_matches": _same_predictions(expected, v1),
        "v2_matches": _same_predictions(expected, v2),
    }
    if not (result["v1_matches"] and result["v2_matches"]):
        raise RuntimeError(
            f"served predictions for '{model_dir}' differ from in-process ones "
            f"(V1 matches: {result['v1_matches']}, V2 matches: {result['v2_matches']})"
        )
    return result
