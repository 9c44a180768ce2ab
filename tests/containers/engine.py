"""What the container tests share: podman with the project's settings, the build script as a
user runs it, and containers that the test removes by ID whatever happens.

The tests use podman (make podman installs it), also where a Docker engine exists: its Docker
API service is what kfp.local's DockerRunner talks to here (tests/containers/podman_compat.py).
"""

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "docker" / "build_images.py"
# Generous bounds for one command on 2 shared cores; they only keep a hung engine from hanging CI.
COMMAND_SECONDS = 120
BUILD_SECONDS = 1800


def load_build_script():
    """docker/build_images.py as a module (docker/ is no package: it would hide the docker SDK)."""
    spec = importlib.util.spec_from_file_location("mlpipe_build_images", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_podman() -> None:
    """Skip without podman; under CI=true fail instead, since a skip there would hide it."""
    if shutil.which("podman"):
        return
    message = "no podman on PATH (make podman installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def podman_env() -> dict[str, str]:
    return load_build_script().engine_env("podman", dict(os.environ))


def podman_run(
    *args: str, timeout: float = COMMAND_SECONDS, env: dict | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """`podman ARGS`, with `env` added to its environment (a value given as `--env NAME` is
    read from there, never from the arguments), and `stdin` as its input."""
    return subprocess.run(
        ["podman", *args],
        env={**podman_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
    )


def podman(*args: str, timeout: float = COMMAND_SECONDS, check: bool = True, **kwargs) -> str:
    """`podman ARGS`; its stdout. A failure names the command and shows podman's error."""
    result = podman_run(*args, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])}: exit {result.returncode}\n{result.stderr}"
        )
    return result.stdout


def run_build(*args: str, env: dict[str, str] | None = None, timeout: float = BUILD_SECONDS):
    """docker/build_images.py as `make images` runs it (the project importable, as in .venv)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def container(*run_args: str, env: dict | None = None):
    """`podman run --detach RUN_ARGS`; yields the container's ID and removes it by that ID on
    the way out, whether the test passed or not."""
    container_id = podman("run", "--detach", *run_args, env=env).strip()
    try:
        yield container_id
    finally:
        podman("rm", "--force", "--time", "0", container_id, check=False)
