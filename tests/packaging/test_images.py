"""The two images, checked without Docker: each Dockerfile's structure, and (slow) the build
stage's install, run as written in a fresh virtualenv.

- docker/Dockerfile: the component image, every pipeline step runs in it;
- docker/serving.Dockerfile: the serving image, the KServe predictor.
"""

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCKERFILES = {
    "component": (ROOT / "docker" / "Dockerfile", "pipelines.cli"),
    "serving": (ROOT / "docker" / "serving.Dockerfile", "serving"),
}
# What the image needs of the repository: the package's sources and its build metadata.
CONTEXT = {"pyproject.toml", "constraints.txt", "README.md", "components", "pipelines", "serving"}
BASE = re.compile(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)
    # Each RUN's flags (--mount=...), in the order of the stage's RUN instructions.
    run_flags: list[list[str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse(path: Path) -> list[Stage]:
    """A Dockerfile's stages and their instructions (comments dropped, continuations joined)."""
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: a continuation runs off the end"
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line in logical:
        instruction, _, args = line.strip().partition(" ")
        instruction, args = instruction.upper(), " ".join(args.split())
        if instruction == "ARG" and not stages:  # before the first FROM: for FROM lines only
            name, _, default = args.partition("=")
            global_args[name] = default
        elif instruction == "FROM":
            base, *rest = args.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m.group(1)], base)
            name = rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{path}: {instruction} before FROM"
            if instruction == "RUN":
                flags = []
                while args.startswith("--"):
                    flag, _, args = args.partition(" ")
                    flags.append(flag)
                stages[-1].run_flags.append(flags)
            stages[-1].instructions.append((instruction, args))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    env = {}
    for args in stage.args("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


@pytest.fixture(params=list(DOCKERFILES), ids=list(DOCKERFILES))
def image(request):
    path, module = DOCKERFILES[request.param]
    return path, parse(path), module


def test_multi_stage_on_one_pinned_base(image):
    path, stages, _ = image
    assert len(stages) >= 2, "a build stage and a runtime stage"
    assert stages[0].name == "build"
    for stage in stages:
        assert BASE.fullmatch(stage.base), f"{path}: base {stage.base} is not an exact version"
        assert not stage.base.split("@")[0].endswith(":latest")
    bases = {stage.base for dockerfile, _ in DOCKERFILES.values() for stage in parse(dockerfile)}
    assert len(bases) == 1, f"the images and stages share one base: {bases}"
    # Both stages take it from the one build argument, which the tests set to a local base.
    froms = [line for line in path.read_text().splitlines() if line.startswith("FROM ")]
    assert [line.split()[1] for line in froms] == ["${BASE_IMAGE}"] * len(stages)


def test_build_stage_is_the_same_in_both_images():
    build = [parse(path)[0] for path, _ in DOCKERFILES.values()]
    assert build[0] == build[1]


def test_dependencies_come_from_the_lock_and_the_project_as_a_wheel(image):
    path, stages, _ = image
    text = path.read_text()
    assert "pip install -U" not in text and "--upgrade" not in text
    assert ":latest" not in text
    runs = " && ".join(stages[0].args("RUN"))
    installs = [cmd for cmd in re.split(r"&&|;", runs) if " pip install " in cmd]
    assert len(installs) == 2, "the dependencies, then the project"
    for command in installs:
        assert "-c constraints.txt" in command, command
        assert "--no-deps" not in command, command
    # First the project's own dependencies (a layer cached until pyproject.toml or the lock
    # changes), then the project as a wheel, with the same pins.
    assert '["project"]["dependencies"]' in runs and "-r requirements.txt" in installs[0]
    assert ".whl" in installs[-1], f"the project goes in as a wheel: {installs[-1]}"
    assert "pip wheel --no-deps" in runs
    assert env_of(stages[0]).get("PIP_NO_CACHE_DIR") == "1"


def test_every_pip_step_gets_the_build_secrets_and_only_those(image):
    """pip's settings and CA bundle come in as build secrets (docker/build_images.py passes the
    machine's own) on each RUN that runs pip, mounted only while it runs; nothing else is
    mounted and no ARG carries them."""
    path, stages, _ = image
    secrets = [
        "--mount=type=secret,id=pip.conf,target=/etc/pip.conf",
        "--mount=type=secret,id=pip-ca,target=/run/secrets/pip-ca",
    ]
    for stage in stages:
        for args, flags in zip(stage.args("RUN"), stage.run_flags, strict=True):
            assert flags == (secrets if " pip " in args else []), f"{path}: RUN {args[:40]}"
        assert not stage.args("ARG"), f"{path}: a build argument in a stage"


def test_copies_only_what_the_package_needs(image):
    path, stages, _ = image
    copied = set()
    for stage in stages:
        for args in stage.args("COPY") + stage.args("ADD"):
            if args.startswith("--from"):
                continue
            *sources, _ = args.split()
            copied |= set(sources)
    assert copied == CONTEXT, f"{path}: copies {sorted(copied)}"
    ignore = Path(f"{path}.dockerignore").read_text().split()
    assert {line[1:] for line in ignore if line.startswith("!")} == CONTEXT


def test_final_stage_has_no_build_tools_or_caches_and_runs_as_non_root(image):
    path, stages, module = image
    final = stages[-1]
    assert not final.args("ADD")
    for args in final.args("COPY"):
        assert args == "--from=build /opt/venv /opt/venv", f"{path}: final stage copies {args}"
    for args in final.args("RUN"):
        assert "pip " not in args, f"{path}: no installs in the final stage: {args}"
        assert not BUILD_TOOLS.search(args), f"{path}: build tools in the final stage: {args}"
    users = final.args("USER")
    assert users, f"{path}: the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric, non-root user (Kubernetes can verify it)"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    assert env_of(final)["PATH"].startswith("/opt/venv/bin:")


def test_no_image_pins_ray_to_loopback(image):
    """The RayCluster's pods run the component image: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    their Ray would bind to loopback and no worker could join the head. Only the embedded Ray
    that a step starts itself sets it (tests/components/test_tune_cluster.py)."""
    path, stages, _ = image
    for stage in stages:
        assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env_of(stage), path


def test_entrypoint_runs_a_module(image):
    path, stages, module = image
    (entrypoint,) = stages[-1].args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", module]
    assert importlib.util.find_spec(module) is not None


def test_serving_image_serves_on_all_interfaces_by_default():
    """The serving image's default arguments are valid for the server and bind 0.0.0.0 (inside a
    container; the server's own default stays 127.0.0.1)."""
    from serving.cli import build_parser

    path, _ = DOCKERFILES["serving"]
    (cmd,) = parse(path)[-1].args("CMD")
    args = build_parser().parse_args(json.loads(cmd))
    assert (args.model_dir, args.http_port, args.host) == ("/mnt/models", 8080, "0.0.0.0")
    assert build_parser().parse_args(["--model_dir", "x"]).host == "127.0.0.1"
    assert "8080" in parse(path)[-1].args("EXPOSE")


def _build_context(stage: Stage, into: Path) -> None:
    """Copy what the build stage's COPY lines copy (less caches, as .dockerignore says)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for args in stage.args("COPY"):
        *sources, destination = args.split()
        for source in sources:
            target = (
                into / destination / source if destination.endswith("/") else into / destination
            )
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=ignore)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)


@pytest.mark.slow
def test_build_stage_install_works_in_a_fresh_virtualenv(tmp_path):
    """Run the build stage's RUN lines as written, with its ENV, in a copy of the build context:
    the project installs as a wheel with every dependency from the lock, and imports."""
    stage = parse(DOCKERFILES["component"][0])[0]
    env = {**os.environ, **env_of(stage)}
    # Two of the stage's settings are for the image only, and cost this test most of its time:
    # no pip cache (which keeps the image small; here pip may reuse the wheels that `make
    # install` just downloaded or built) and byte-compiling every module (which only speeds up
    # the image's start). What is installed, and from which pins, is the same.
    env.pop("PIP_NO_CACHE_DIR", None)
    env["PIP_COMPILE"] = "0"
    venv, wheels, source = tmp_path / "venv", tmp_path / "wheels", tmp_path / "src"
    env.update(VENV=str(venv), WHEELS=str(wheels))
    # `python` is the interpreter running the tests (3.11 like the image's).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("VIRTUAL_ENV", None)
    source.mkdir()
    _build_context(stage, source)
    for command in stage.args("RUN"):
        result = subprocess.run(
            ["bash", "-c", command], cwd=source, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"

    python = venv / "bin" / "python"
    check = "import components, pipelines, serving, importlib.util as u; "
    check += "assert u.find_spec('pipelines.cli') and u.find_spec('serving.cli')"
    subprocess.run([python, "-c", check], check=True, cwd=tmp_path, timeout=120)
    subprocess.run([python, "-m", "pip", "check"], check=True, capture_output=True, timeout=120)

    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], check=True, capture_output=True
    )
    installed = {
        p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed.stdout)
    }
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert installed["kfp-mlpipe"] == version
    for line in (ROOT / "constraints.txt").read_text().splitlines()[1:]:
        name, _, pinned = line.partition("==")
        name = name.lower().replace("_", "-")
        if name in installed:
            assert installed[name] == pinned, f"{name} {installed[name]} is not the lock's {pinned}"
    # Installed from the wheel, not in place from the sources.
    direct = next((venv / "lib").glob("python3.*/site-packages/kfp_mlpipe-*.dist-info"))
    assert (
        not (direct / "direct_url.json").exists()
        or '"editable": true' not in (direct / "direct_url.json").read_text()
    )
