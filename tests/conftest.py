"""Shared fixtures: small tables with known properties, and the demo data."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def arrests() -> pd.DataFrame:
    from sklego.datasets import load_arrests

    return load_arrests(as_frame=True)


def make_loans(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """A synthetic table whose label depends on income and a category, with some missing values."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, rows)
    region = rng.choice(["north", "south", "east"], rows)
    group = rng.choice(["a", "b"], rows, p=[0.7, 0.3])
    score = 0.08 * (income - 50) + np.where(region == "north", 1.0, -0.5) + rng.normal(0, 1, rows)
    frame = pd.DataFrame(
        {
            "income": income,
            "age": rng.integers(18, 80, rows),
            "region": region,
            "group": group,
            "approved": np.where(score > 0, "yes", "no"),
        }
    )
    frame.loc[rng.choice(rows, rows // 20, replace=False), "income"] = np.nan
    frame.loc[rng.choice(rows, rows // 20, replace=False), "region"] = None
    return frame


@pytest.fixture
def loans() -> pd.DataFrame:
    return make_loans()


def make_parole(rows: int = 200, seed: int = 7, with_score: bool = False) -> pd.DataFrame:
    """The model servers' table: age (2 missing), checks, sex, colour (2 missing) and the label
    released ("Yes"/"No"); with_score adds the numeric score it is thresholded from (a
    regression target)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 70, rows).astype(float),
            "checks": rng.integers(0, 6, rows),
            "sex": rng.choice(["F", "M"], rows),
            "colour": rng.choice(["red", "green", "blue"], rows).astype(object),
        }
    )
    score = (
        0.06 * (frame["age"] - 40)
        - 0.5 * frame["checks"]
        + np.where(frame["sex"] == "F", 0.8, -0.2)
        + rng.normal(0, 1, rows)
    )
    frame["released"] = np.where(score > -0.8, "Yes", "No")
    if with_score:
        frame["score"] = score
    frame.loc[[3, 17], "age"] = np.nan
    frame.loc[[5, 12], "colour"] = None
    return frame


@pytest.fixture
def loans_schema(loans) -> dict:
    from components.validate.logic import validate_table

    return validate_table(loans, "approved", "classification", ["group"], {})


def write_config(path: Path, **overrides) -> Path:
    """A run config for the demo data, with keys replaced by `overrides` (None deletes a key)."""
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "arrests.yaml").read_text())
    for key, value in overrides.items():
        section = config
        *parents, leaf = key.split(".")
        for parent in parents:
            section = section.setdefault(parent, {})
        if value is None:
            section.pop(leaf, None)
        else:
            section[leaf] = value
    # The shipped config names its reviewed contract relative to the repository.
    contract = config.get("contract", {}).get("path")
    if contract and not Path(contract).is_absolute():
        config["contract"]["path"] = str(Path(__file__).parents[1] / contract)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def demo_lake(tmp_path) -> Path:
    from pipelines.demo_data import write_arrests_lake

    lake, _ = write_arrests_lake(tmp_path / "data" / "arrests")
    return lake


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto) on 127.0.0.1, stopped when the session ends."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """An s3fs filesystem on the local server; the product finds it through the environment,
    as it does on a cluster (credentials never come from the run config)."""
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, request):
    """One uninterrupted `mlpipe run` of the quick config with the step cache on, for the whole
    session: the model an interrupted run must end with, and a warm output root to copy (never
    to change). Under pytest-xdist the test processes share one: the first to need it makes it
    under a lock, in the folder they share, and the others read its record."""
    from filelock import FileLock

    from tests.mlpipe_runs import Reference

    if not hasattr(request.config, "workerinput"):  # one test process: no xdist worker
        return Reference(tmp_path_factory.mktemp("reference"))
    shared = tmp_path_factory.getbasetemp().parent / "reference"
    with FileLock(f"{shared}.lock"):
        shared.mkdir(exist_ok=True)
        return Reference(shared)


def full_plan(path: Path):
    """The plan artifact of a full run (components.common.retraining), as the plan step writes
    it: for the steps that read it (ingest, tune, train, register) called directly."""
    from kfp.dsl import Artifact

    from components.common.retraining import plan_training

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan_training("", "", "full", "manual", {}, {}, {})))
    return Artifact(uri=str(path))
