"""docker/build_images.py (`make images`) on bad input: one line on stderr that says what is
wrong, a non-zero exit (2 for the input, 1 for a build that fails), and no traceback."""

import os
from pathlib import Path

import pytest

from tests.containers.engine import run_build


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_no_engine_names_the_engines_it_looked_for(tmp_path):
    result = run_build(env={"PATH": str(tmp_path)})
    assert result.returncode == 2
    assert one_error_line(result) == "error: no container engine: looked for docker, podman on PATH"


def test_an_asked_for_engine_that_is_missing_is_named(tmp_path):
    result = run_build("--engine", "docker", env={"PATH": str(tmp_path)})
    assert result.returncode == 2
    assert one_error_line(result) == "error: no container engine: looked for docker on PATH"


@pytest.mark.container
def test_an_engine_that_cannot_run_containers_gives_its_first_error(images, tmp_path):
    # The limit podman asks for by default on some machines: more open files than allowed.
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=2000000000:2000000000"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    result = run_build(
        "--engine",
        "podman",
        "--base-image",
        "local",
        env={**os.environ, "CONTAINERS_CONF": str(conf)},
    )
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("error: podman cannot run a container: ") and "rlimit" in line.lower()


@pytest.mark.container
def test_a_missing_base_image_is_named(images):
    result = run_build("--engine", "podman", "--base-image", "localhost/mlpipe-no-such-base:0")
    assert result.returncode == 2
    assert one_error_line(result).startswith(
        "error: base image localhost/mlpipe-no-such-base:0: missing, and cannot be pulled: "
    )


@pytest.mark.container
def test_a_failing_build_names_the_step_that_failed(serving_image):
    # The serving image runs as 10001, who cannot write /opt: the build's first RUN fails.
    result = run_build("--engine", "podman", "--base-image", serving_image, "--quiet")
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith('error: Dockerfile: Error: building at STEP "RUN python -m venv'), line
    log = Path(line.rpartition("whole log: ")[2].rstrip(")"))
    try:
        assert "exit status" in log.read_text()  # the build's own log, kept for the user
    finally:
        log.unlink()
