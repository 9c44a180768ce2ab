"""docker/build_images.py's own logic, without an engine: how this machine's pip settings reach
the build, which Debian mirror the local base comes from, and the one line a failure shows."""

from pathlib import Path

import pytest

from tests.containers.engine import load_build_script

build = load_build_script()


def secrets_of(engine: str, settings: dict, tmp_path: Path) -> tuple[list[str], str]:
    args = build.build_secrets(build.Engine(engine), settings, tmp_path, lambda message: None)
    return args, (tmp_path / "pip.conf").read_text()


def test_pip_settings_become_secrets_and_read_only_mounts(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("CERT")
    index = tmp_path / "mirror" / "simple"
    index.mkdir(parents=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    settings = {
        "global": {
            "cert": str(ca),
            "index-url": "https://mirror.example/simple",
            "extra-index-url": f"file://{index} file://{tmp_path}/gone/simple",
            "find-links": str(wheels),
            "timeout": "180",
        }
    }
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args, conf = secrets_of("podman", settings, scratch)
    assert ["--secret", f"id=pip-ca,src={ca}"] == args[:2]
    assert ["--secret", f"id=pip.conf,src={scratch / 'pip.conf'}"] == args[2:4]
    # A PEP 503 index's files are beside its simple/ folder: the parent is mounted.
    assert args[4:] == [
        "--volume",
        f"{index.parent}:{index.parent}:ro",
        "--volume",
        f"{wheels}:{wheels}:ro",
    ]
    assert "cert = /run/secrets/pip-ca" in conf
    assert "index-url = https://mirror.example/simple" in conf
    assert f"extra-index-url = file://{index}\n" in conf  # a path that does not exist is left out
    assert f"find-links = {wheels}" in conf and "timeout = 180" in conf
    assert "CERT" not in conf


def test_docker_builds_cannot_mount_so_local_indexes_are_left_out(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args, conf = secrets_of("docker", {"global": {"find-links": str(wheels)}}, scratch)
    assert "--volume" not in args and "find-links" not in conf


def test_env_settings_override_files(tmp_path):
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\ncat <<'EOF'\nglobal.timeout='60'\nglobal.cert='/a.pem'\n"
        ":env:.timeout='180'\ninstall.user='no'\nEOF\n"
    )
    python.chmod(0o755)
    settings = build.pip_settings(str(python), {})
    assert settings == {"global": {"timeout": "180", "cert": "/a.pem"}, "install": {"user": "no"}}


def test_the_debian_mirror_is_apt_s_own(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert build.apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://old.example/debian bookworm main\n"
    )
    assert build.apt_mirror(tmp_path) == "http://old.example/debian"
    (tmp_path / "sources.list").write_text("# nothing\n")
    with pytest.raises(build.BuildError, match="no Debian mirror"):
        build.apt_mirror(tmp_path)


def test_a_failed_build_is_named_by_its_step():
    log = [
        "[1/2] STEP 3/11: RUN python -m venv /opt/venv",
        "Error: [Errno 13] Permission denied: '/opt/venv'",
        'Error: building at STEP "RUN python -m venv "$VENV"": while running runtime: exit status 1',
    ]
    assert build.failed_step(log) == log[-1]
    docker = [
        "#7 ERROR: process did not complete",
        "ERROR: failed to solve: process ... exit code: 1",
    ]
    assert build.failed_step(docker) == docker[-1]


def test_first_error_skips_chatter():
    text = "Trying to pull x...\nError: initializing source: connection refused\nmore"
    assert build.first_error(text) == "Error: initializing source: connection refused"
    assert build.first_error("") == "(no output)"


class _FakeEngine(build.Engine):
    """Answers `image inspect` with a fixed base image ID."""

    def run(self, *args, timeout=0):
        import subprocess

        return subprocess.CompletedProcess(args, 0, stdout="sha256:base\n", stderr="")


def test_the_context_digest_follows_what_the_image_is_built_from(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "docker").mkdir(parents=True)
    (root / "docker" / "Dockerfile").write_text("FROM ${BASE_IMAGE}\nCOPY app ./app\n")
    (root / "docker" / "Dockerfile.dockerignore").write_text("*\n!app\n**/__pycache__\n")
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text("print(1)\n")
    monkeypatch.setattr(build, "ROOT", root)
    monkeypatch.setattr(build, "DOCKER_DIR", root / "docker")
    engine = _FakeEngine("podman")

    first = build.context_digest(engine, "Dockerfile", "base")
    (root / "notes.txt").write_text("not in the context")
    (root / "app" / "__pycache__").mkdir()
    (root / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert build.context_digest(engine, "Dockerfile", "base") == first
    (root / "app" / "main.py").write_text("print(2)\n")
    second = build.context_digest(engine, "Dockerfile", "base")
    assert second != first
    (root / "docker" / "Dockerfile").write_text("FROM ${BASE_IMAGE}\nCOPY app ./app/\n")
    assert build.context_digest(engine, "Dockerfile", "base") not in (first, second)


class _RecordingEngine(build.Engine):
    def __init__(self):
        super().__init__("podman")
        self.calls = []

    def run(self, *args, timeout=0):
        import subprocess

        self.calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout="", stderr="")


def test_a_rebuild_removes_the_image_it_replaced_by_id_and_only_that():
    engine = _RecordingEngine()
    assert build.remove_replaced(engine, "sha256:old", "sha256:new")
    assert engine.calls == [("image", "rm", "sha256:old")]  # no --force: an image in use stays
    assert not build.remove_replaced(engine, "sha256:same", "sha256:same")
    assert not build.remove_replaced(engine, "", "sha256:new")  # the first build
    assert len(engine.calls) == 1
