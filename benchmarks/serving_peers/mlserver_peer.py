"""The MLServer peer: its own virtualenv, its settings for our model file, and V2 pandas requests.

MLServer 1.7.1 cannot share a virtualenv with kserve 0.21 (their fastapi/starlette pins
conflict), so it runs from a scratch venv made here with `python -m venv` and pip, outside the
project's dependencies. scikit-learn, pandas and numpy are pinned there to this environment's
versions, so that the same joblib file unpickles into the same objects on both sides.
"""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from components.deploy.logic import LOOPBACK

MLSERVER_VERSION = "1.7.1"
# httptools: without it MLServer's uvicorn parses HTTP with h11, about 10 % slower.
EXTRA_PACKAGES = ["httptools"]
# Ours to the MLServer venv: the same versions, so the pickle loads the same objects.
SAME_AS_HERE = ["scikit-learn", "pandas", "numpy", "scipy", "joblib"]
INSTALL_TIMEOUT_S = 1200


def requirements() -> list[str]:
    """The pip requirements of the MLServer venv."""
    pinned = [f"{name}=={importlib.metadata.version(name)}" for name in SAME_AS_HERE]
    return [
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-sklearn=={MLSERVER_VERSION}",
        *EXTRA_PACKAGES,
        *pinned,
    ]


def _installed(venv: Path) -> dict[str, str] | None:
    """{distribution: version} in the venv for each requirement, or None if it is unusable."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    names = [r.split("==")[0] for r in requirements()]
    script = (
        "import importlib.metadata as m, json, sys\n"
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", script, *names],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)


def ensure_venv(venv: str | Path) -> dict:
    """Make (or reuse) the MLServer venv.

    Returns:
        {"venv", "packages": {name: version}, "created": bool}.

    Raises:
        RuntimeError: the venv could not be made or pip failed; the message quotes pip's tail.
    """
    venv = Path(venv)
    wanted = {r.split("==")[0]: r.split("==")[1] for r in requirements() if "==" in r}
    found = _installed(venv)
    if found and all(found.get(name) == version for name, version in wanted.items()):
        return {"venv": str(venv), "packages": found, "created": False}
    commands = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements()],
    ]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
            raise RuntimeError(f"{' '.join(command[:4])} ... failed ({done.returncode}): {tail}")
    found = _installed(venv)
    if not found:
        raise RuntimeError(f"{venv}: installed, but its packages cannot be read back")
    return {"venv": str(venv), "packages": found, "created": True}


def write_repository(
    repo: str | Path,
    name: str,
    model_file: str | Path,
    version: str,
    http_port: int,
    grpc_port: int,
) -> Path:
    """Write MLServer's settings.json and <name>/model-settings.json for our joblib file.

    One process: `parallel_workers: 0` runs inference in the server process itself, on its
    event loop (the default, 1, would send each request to a separate worker process). Every
    listener on 127.0.0.1; the metrics server off (neither peer has one running); the access
    log off (`debug: false`), as it is in ours and in the FastAPI peer.

    Returns:
        The repository folder, for `mlserver start`.
    """
    repo = Path(repo)
    (repo / name).mkdir(parents=True, exist_ok=True)
    settings = {
        "host": LOOPBACK,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "parallel_workers": 0,
        "debug": False,
        "metrics_endpoint": None,
        "load_models_at_startup": True,
    }
    model_settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(Path(model_file).resolve()), "version": version},
    }
    (repo / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    (repo / name / "model-settings.json").write_text(
        json.dumps(model_settings, indent=2), encoding="utf-8"
    )
    return repo


def _json_value(value):
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def v2_pandas_body(frame: pd.DataFrame) -> dict:
    """A V2 request that MLServer's sklearn runtime decodes into this very DataFrame.

    `"content_type": "pd"` makes it decode the inputs as the columns of one DataFrame (with
    their names), which our ColumnTransformer needs; each string column says `str`, so its
    values arrive as Python strings, not bytes.
    """
    inputs = []
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_integer_dtype(values):
            tensor = {"datatype": "INT64"}
        elif pd.api.types.is_float_dtype(values):
            tensor = {"datatype": "FP64"}
        else:
            tensor = {"datatype": "BYTES", "parameters": {"content_type": "str"}}
        data = [_json_value(v) for v in values.tolist()]
        inputs.append({"name": str(name), "shape": [len(values)], **tensor, "data": data})
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def v2_predictions(body: dict) -> list:
    """The sklearn runtime's `predict` output of a V2 response."""
    for output in body["outputs"]:
        if output["name"] == "predict":
            return output["data"]
    raise RuntimeError(f"MLServer response has no 'predict' output: {sorted(body)}")
