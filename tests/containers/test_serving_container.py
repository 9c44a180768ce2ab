"""The serving image run the way the InferenceService in manifests/ runs it: its arguments and
environment, the image's non-root user, a read-only root filesystem, every capability dropped,
and no network but its own loopback, where a client in the same container talks to it."""

import json
import os
import shutil
import time

import pandas as pd
import pytest
import yaml

from tests.containers.engine import ROOT, container, podman, podman_run

pytestmark = [pytest.mark.container, pytest.mark.server]

INFERENCE_SERVICE = ROOT / "manifests" / "base" / "inferenceservice.yaml"
# Kubernetes' default terminationGracePeriodSeconds (the InferenceService sets none).
GRACE_SECONDS = 30
READY_SECONDS = 120
# The client, run inside the server's container: the project's own V1 and V2 client functions
# (components.deploy.logic), the rows on stdin as a typed table.
CLIENT = """
import io, json, sys
import pandas as pd
from components.deploy.logic import predict_v1, predict_v2, to_json_rows
url, name = sys.argv[1], sys.argv[2]
frame = pd.read_json(io.StringIO(sys.stdin.read()), orient="table")
print(json.dumps({"v1": predict_v1(url, name, to_json_rows(frame)),
                  "v2": predict_v2(url, name, frame)}))
"""
READY = """
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
except Exception as error:
    sys.exit(f"not ready: {error}")
"""


def predictor() -> dict:
    (spec,) = yaml.safe_load(INFERENCE_SERVICE.read_text())["spec"]["predictor"]["containers"]
    return spec


def environment(spec: dict) -> dict[str, str]:
    """The container's environment as KServe would set it: plain values as written, a Secret's
    value (here the admin token) made up for the test."""
    env = {}
    for variable in spec["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = "test-admin-token-0123456789"
    return env


def state(container_id: str) -> dict:
    return json.loads(podman("inspect", "--format", "{{json .State}}", container_id))


def logs(container_id: str) -> str:
    result = podman_run("logs", container_id)
    return result.stdout + result.stderr


def in_container(container_id: str, *command: str, stdin: str | None = None):
    return podman_run("exec", "--interactive", container_id, *command, stdin=stdin)


def test_serving_image_runs_as_the_inference_service_does(serving_image, reference, tmp_path):
    from components.common.schema import NUMERIC, feature_names
    from components.deploy.logic import to_json_rows
    from serving.model import TabularModel

    spec = predictor()
    (port,) = [p["containerPort"] for p in spec["ports"]]
    security = spec["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"] and security["runAsNonRoot"]
    assert not security["allowPrivilegeEscalation"]
    assert security["readOnlyRootFilesystem"]  # hence --read-only below
    # KServe's storage initializer puts the version in /mnt/models before the server starts.
    # (Its files belong to the pod's user; the registry keeps its folders private, 0700.)
    version = shutil.copytree(reference.root / "models" / "arrests-release" / "v1", tmp_path / "v1")
    for path in [version, *version.iterdir()]:
        os.chown(path, 10001, 10001)
    env = environment(spec)
    run_args = [
        "--read-only",
        "--read-only-tmpfs=false",  # as Kubernetes' readOnlyRootFilesystem: no tmpfs either
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",  # allowPrivilegeEscalation: false
        "--network=none",
        f"--volume={version}:/mnt/models:ro",
        # The values come from podman's environment, not its arguments (one is a Secret's).
        *[f"--env={name}" for name in env],
    ]
    with container(*run_args, serving_image, *spec["args"], env=env) as container_id:
        ready_url = f"http://127.0.0.1:{port}{spec['readinessProbe']['httpGet']['path']}"
        deadline = time.monotonic() + READY_SECONDS
        while in_container(container_id, "python", "-c", READY, ready_url).returncode != 0:
            assert state(container_id)["Running"], f"the server stopped:\n{logs(container_id)}"
            assert time.monotonic() < deadline, f"not ready in time:\n{logs(container_id)}"
            time.sleep(1)

        assert in_container(container_id, "id", "-u").stdout.strip() != "0"
        assert in_container(container_id, "touch", "/tmp/x").returncode != 0, "a writable root"

        model = TabularModel("arrests-release", str(version))
        model.load()
        rows = pd.read_parquet(reference.lake)[feature_names(model.schema)].head(8)
        # As the schema types them (the lake's partition column reads back as a category).
        numeric = feature_names(model.schema, NUMERIC)
        rows = rows.astype({name: float for name in numeric})
        expected = model.predict({"instances": to_json_rows(rows)})["predictions"]
        client = [f"http://127.0.0.1:{port}", "arrests-release"]
        answered = in_container(
            container_id, "python", "-c", CLIENT, *client, stdin=rows.to_json(orient="table")
        )
        assert answered.returncode == 0, answered.stderr
        predictions = json.loads(answered.stdout)
        assert predictions["v1"] == expected
        assert predictions["v2"] == expected

        podman("kill", "--signal", "TERM", container_id)
        # `podman wait` returns the exit code once the server has stopped; within the grace period
        # or the timeout fails the test.
        code = podman("wait", container_id, timeout=GRACE_SECONDS).strip()
        assert code == "0", logs(container_id)
