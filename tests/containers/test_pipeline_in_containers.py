"""The compiled training pipeline (the checked-in pipelines/training_pipeline.yaml, the file a
user uploads) under kfp.local's DockerRunner: every step in the built project image, as its
non-root user, with no network, on the demo data, end to end through register."""

import os
from pathlib import Path

import pytest

from components.common.registry import ModelRegistry
from pipelines.config import load_config, pipeline_arguments
from pipelines.demo_data import write_arrests_lake
from pipelines.local_run import without_retries
from tests.containers.engine import ROOT, podman_run
from tests.containers.podman_compat import keep_containers_until_read
from tests.mlpipe_runs import MODEL, fast_config

pytestmark = [pytest.mark.container, pytest.mark.e2e]

COMPILED = ROOT / "pipelines" / "training_pipeline.yaml"


def chown_tree(path: Path, uid: int) -> None:
    for folder, _, files in os.walk(path):
        os.chown(folder, uid, uid)
        for name in files:
            os.chown(Path(folder) / name, uid, uid)


def test_compiled_pipeline_runs_every_step_in_the_image(
    component_image, docker_api, workdir, monkeypatch
):
    from docker.types import Mount
    from kfp import components, local

    lake, _ = write_arrests_lake(workdir / "data" / "arrests")
    # The smallest search that still trains, gates and registers (tests/mlpipe_runs.py).
    config = load_config(
        fast_config(workdir / "run.yaml", lake, workdir / "out", **{"tuning.num_trials": 1})
    )
    arguments = {**pipeline_arguments(config), "training_mode": "full", "trigger": "manual"}
    artifacts = workdir / "artifacts"
    artifacts.mkdir()
    chown_tree(workdir, 10001)

    monkeypatch.setenv("DOCKER_HOST", docker_api)
    local.init(
        runner=local.DockerRunner(
            network_mode="none",
            # On a cluster a step's command replaces the image's ENTRYPOINT (the CLI); DockerRunner
            # passes it as the arguments (CMD) instead, so the entrypoint only runs it.
            entrypoint=["/usr/bin/env", "--"],
            # The data, the registry and the outputs, at the paths the arguments name.
            mounts=[Mount(target=str(workdir), source=str(workdir), type="bind")],
        ),
        pipeline_root=str(artifacts),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_text(without_retries(COMPILED))
    with keep_containers_until_read() as started:
        pipeline(**arguments)

    # One container per step that ran, each from the project image.
    ran = {path.parent.name for path in artifacts.glob("*/*/executor_output.json")}
    assert {"ingest", "tune", "train", "register", "deploy", "promote", "notify"} <= ran, ran
    assert len(started) == len(ran)
    images = {container.attrs["Config"]["Image"] for container in started}
    assert images in ({component_image}, {f"localhost/{component_image}"}), images
    # The shim removed each once its status was read.
    left = [c.id for c in started if podman_run("container", "exists", c.id).returncode == 0]
    assert not left, left
    registry = ModelRegistry(arguments["model_store_uri"], MODEL)
    assert registry.versions() == ["v1"]
    files = registry.metadata("v1")["files"]
    assert "model.joblib" in files
    for name in files:
        assert (Path(arguments["model_store_uri"]) / MODEL / "v1" / name).is_file(), name
    # Written by the image's user, not by root: the steps ran as 10001.
    assert (Path(arguments["model_store_uri"]) / MODEL / "v1").stat().st_uid == 10001
