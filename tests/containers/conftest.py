"""The container tests' shared fixtures: the two images, built once per session from docker/
(FROM a Debian bookworm base made here), and podman's Docker API service for kfp.local."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.containers.engine import podman, podman_env, require_podman, run_build

BUILT_LINE = re.compile(r"^(?:built|up to date) (\S+) FROM (\S+): ([\d.]+) GB in (\d+) s$", re.M)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, dict]:
    """Both images, built by docker/build_images.py as `make images BASE_IMAGE=local` builds
    them; for each tag its size and build time, as the script reported them. Under
    pytest-xdist the first test process builds under a lock; the others then find every layer
    in podman's build cache and only re-tag."""
    from filelock import FileLock

    require_podman()
    shared = tmp_path_factory.getbasetemp().parent
    with FileLock(str(shared / "container-images.lock")):
        started = time.monotonic()
        result = run_build("--engine", "podman", "--base-image", "local", "--quiet")
        seconds = time.monotonic() - started
    assert result.returncode == 0, f"the image build failed: {result.stderr.strip()}"
    built = {
        tag: {"base": base, "gigabytes": float(size), "seconds": int(took)}
        for tag, base, size, took in BUILT_LINE.findall(result.stdout)
    }
    assert len(built) == 2, result.stdout
    # Recorded for the README's figures (first build and cached): where the session's temp is.
    record = shared / "container-images.json"
    record.write_text(json.dumps({"seconds": round(seconds, 1), "images": built}, indent=2))
    print(f"container images: {json.dumps(built)} ({seconds:.0f} s)")
    return built


@pytest.fixture(scope="session")
def component_image(images) -> str:
    from components.common.image import COMPONENT_IMAGE

    return COMPONENT_IMAGE


@pytest.fixture(scope="session")
def serving_image(images) -> str:
    from components.common.image import SERVING_IMAGE

    return SERVING_IMAGE


@pytest.fixture(scope="session")
def docker_api(tmp_path_factory) -> str:
    """podman's Docker-compatible API on a socket of this session's own, for the docker SDK that
    kfp.local's DockerRunner uses; stopped by its PID at the end of the session."""
    import docker

    require_podman()
    socket = tmp_path_factory.mktemp("podman-api") / "podman.sock"
    url = f"unix://{socket}"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        env=podman_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if service.poll() is not None:
                raise AssertionError(f"podman system service: {service.stderr.read().decode()}")
            if socket.exists():
                client = docker.DockerClient(base_url=url)
                try:
                    client.ping()
                    break
                except docker.errors.DockerException:
                    pass
                finally:
                    client.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"podman system service did not answer on {url} in 30 s")
            time.sleep(0.2)
        yield url
    finally:
        service.terminate()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        service.stderr.close()


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder the images' user (10001) can write, bind-mounted at the same path."""
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 10001, 10001)
    return work


def size_of(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).strip())
