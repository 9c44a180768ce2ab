"""Build the project's two images (docker/Dockerfile, docker/serving.Dockerfile) with whatever
container engine this machine has: `docker` when its engine answers, else `podman`.

    python docker/build_images.py [--engine docker|podman] [--base-image auto|pinned|local|NAME]

`make images` runs this; tests/containers builds the images with it too, so a test builds
exactly what a user builds. What it does besides `ENGINE build`:

- podman: the settings in docker/containers.conf (CONTAINERS_CONF), unless the caller set
  their own: podman's default limits and crun fail on our CI machines.
- the base image: the Dockerfiles' pinned upstream Python image (`pinned`), or a Debian bookworm
  base made here with debootstrap from the Debian mirror apt uses (`local`, for machines that
  reach no registry), or any image NAME. `auto` (the default) takes the pinned one when it is
  present or can be pulled, else the local one, and says so.
- pip's settings: this machine's own (`pip config list`, the PIP_* variables included) go into
  the build as the secret `pip.conf`, its CA bundle (pip's `cert`) as the secret `pip-ca`: a
  company mirror and its certificate work in the build as they do here, and nothing of them is
  stored in an image layer. A package index or wheel folder on this machine's disk (file://) is
  mounted read-only into the build at the same path (podman only: `docker build` cannot mount).

Bad input, in one line each: no engine (exit 2, naming the engines looked for), an engine that
cannot run a container (its first error; exit 2), a base image that is missing (exit 2), a build
that fails (the step that failed, and where the whole log is; exit 1).
"""

import argparse
import configparser
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "docker"
ENGINES = ("docker", "podman")
CONTAINERS_CONF = DOCKER_DIR / "containers.conf"
# The locally made base: Debian bookworm (Python 3.11, like the wheels of the lock), `python`
# and its venv module; debootstrap's minimal variant, so no apt lists or package files.
LOCAL_BASE = "localhost/mlpipe-base:bookworm"
LOCAL_BASE_SUITE = "bookworm"
LOCAL_BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3")
# Appended, not prepended: this folder's name must not hide the docker SDK from anything later.
sys.path.append(str(ROOT))
from components.common.image import COMPONENT_IMAGE, SERVING_IMAGE  # noqa: E402

# Each Dockerfile and the name the compiled pipeline and the manifests give its image.
IMAGES = (("Dockerfile", COMPONENT_IMAGE), ("serving.Dockerfile", SERVING_IMAGE))
# pip's settings whose value is a file that must reach the build as a secret.
CA_KEYS = {"cert"}
PIP_CA_TARGET = "/run/secrets/pip-ca"
DIGEST_LABEL = "io.github.kfp-mlpipe.context-digest"
PROBE_SECONDS = 60
PULL_SECONDS = 120


class BuildError(Exception):
    """One line for the user; `code` is the exit status (2: the input, 1: the build)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


@dataclass
class Engine:
    name: str
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        return [self.name, *args]

    def run(self, *args: str, timeout: float = PROBE_SECONDS) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


def first_error(text: str) -> str:
    """The first line that says what went wrong (else the last line), stripped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if re.match(r"(?i)(error|fatal)\b|.*\b(error|failed|denied|not permitted)\b", line):
            return line
    return lines[-1] if lines else "(no output)"


def engine_env(name: str, environ: dict[str, str]) -> dict[str, str]:
    env = dict(environ)
    if name == "podman":
        env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def find_engine(requested: str = "", environ: dict[str, str] | None = None) -> Engine:
    """The engine to build with: `requested`, else docker if its engine answers, else podman."""
    environ = dict(os.environ if environ is None else environ)
    names = [requested] if requested else list(ENGINES)
    found = [name for name in names if shutil.which(name, path=environ.get("PATH"))]
    if not found:
        raise BuildError(f"no container engine: looked for {', '.join(names)} on PATH")
    errors = []
    for name in found:
        engine = Engine(name, engine_env(name, environ))
        try:
            answer = engine.run("info")
        except subprocess.TimeoutExpired:
            errors.append(f"{name} info: no answer in {PROBE_SECONDS} s")
            continue
        if answer.returncode == 0:
            return engine
        errors.append(f"{name} info: {first_error(answer.stderr + answer.stdout)}")
    raise BuildError("no working container engine: " + "; ".join(errors))


def check_runs_containers(engine: Engine, image: str) -> None:
    """Run `true` in `image`: an engine that can build but not run fails here, in one line."""
    result = engine.run("run", "--rm", "--network=none", "--entrypoint", "true", image)
    if result.returncode != 0:
        raise BuildError(
            f"{engine.name} cannot run a container: {first_error(result.stderr + result.stdout)}"
        )


def pinned_base(dockerfile: Path = DOCKER_DIR / "Dockerfile") -> str:
    """The Dockerfile's default base (its `ARG BASE_IMAGE=...`)."""
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ARG BASE_IMAGE="):
            return line.partition("=")[2].strip()
    raise BuildError(f"{dockerfile}: no ARG BASE_IMAGE=... line")


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources or one-line sources.list)."""
    candidates = []
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if re.match(r"^\w[\w-]*:", line)
            )
            suites = fields.get("Suites", "").split()
            if any(not s.endswith("-security") for s in suites) and "Types" in fields:
                candidates += fields.get("URIs", "").split()
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and not parts[2].endswith("-security"):
                    candidates.append(parts[1])
    mirrors = [uri for uri in candidates if not uri.rstrip("/").endswith("-security")]
    if not mirrors:
        raise BuildError(f"--base-image local: no Debian mirror in {sources}/sources.list*")
    return mirrors[0]


def make_local_base(engine: Engine, log) -> None:
    """Debian bookworm with Python 3.11 and venv, made with debootstrap, imported as LOCAL_BASE."""
    if not shutil.which("debootstrap"):
        raise BuildError(
            f"--base-image local: {LOCAL_BASE} is missing and debootstrap is not installed "
            "(apt-get install debootstrap)"
        )
    mirror = apt_mirror()
    log(f"making the base image {LOCAL_BASE} with debootstrap from {mirror} (about 1.5 min)")
    with tempfile.TemporaryDirectory(prefix="mlpipe-base-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        result = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(LOCAL_BASE_PACKAGES)}",
                LOCAL_BASE_SUITE,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BuildError(f"debootstrap: {first_error(result.stdout + result.stderr)}")
        # Downloaded packages and apt's lists are not part of the image (as in Docker's Debian).
        tar = subprocess.Popen(
            [
                "tar",
                "-C",
                str(rootfs),
                "--exclude=./var/cache/apt/archives/*.deb",
                "--exclude=./var/lib/apt/lists/*",
                "-c",
                ".",
            ],
            stdout=subprocess.PIPE,
        )
        imported = subprocess.run(
            engine.command("import", "-", LOCAL_BASE),
            stdin=tar.stdout,
            env=engine.env,
            capture_output=True,
            text=True,
        )
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise BuildError(f"{engine.name} import: {first_error(imported.stderr)}")


def resolve_base(engine: Engine, requested: str, log) -> str:
    """The base image to build from, present in the engine's store."""
    pinned = pinned_base()
    if requested == "local":
        if not image_id(engine, LOCAL_BASE):
            make_local_base(engine, log)
        return LOCAL_BASE
    name = pinned if requested in ("pinned", "auto") else requested
    if image_id(engine, name):
        return name
    try:
        pulled = engine.run("pull", name, timeout=PULL_SECONDS)
        error = "" if pulled.returncode == 0 else first_error(pulled.stderr + pulled.stdout)
    except subprocess.TimeoutExpired:
        error = f"no answer in {PULL_SECONDS} s"
    if not error:
        return name
    if requested == "auto":
        log(f"the pinned base {name} cannot be pulled ({error}); building FROM {LOCAL_BASE}")
        return resolve_base(engine, "local", log)
    raise BuildError(f"base image {name}: missing, and cannot be pulled: {error}")


def _local_path(token: str) -> Path | None:
    """The path on this machine that a pip setting's value names (a file:// URL or a path)."""
    if token.startswith("file://"):
        return Path(unquote(urlparse(token).path))
    if token.startswith("/"):
        return Path(token)
    return None


def pip_settings(python: str, environ: dict[str, str]) -> dict[str, dict[str, str]]:
    """This machine's pip configuration as pip itself reads it: files, then PIP_* variables."""
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=PROBE_SECONDS,
    )
    files: dict[str, dict[str, str]] = {}
    from_env: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip().strip("'\"")
        if key.startswith(":env:."):
            from_env[key.removeprefix(":env:.")] = value
        else:
            section, _, option = key.partition(".")
            files.setdefault(section, {})[option] = value
    files.setdefault("global", {}).update(from_env)
    return files


def build_secrets(
    engine: Engine, settings: dict[str, dict[str, str]], scratch: Path, log
) -> list[str]:
    """The build's arguments that carry pip's settings: secrets, and read-only mounts."""
    args: list[str] = []
    mounts: set[Path] = set()
    config = configparser.ConfigParser(interpolation=None)
    for section, options in settings.items():
        config[section] = {}
        for option, value in options.items():
            if option in CA_KEYS:
                if Path(value).is_file():
                    args += ["--secret", f"id=pip-ca,src={value}"]
                    config[section][option] = PIP_CA_TARGET
                continue
            kept = []
            for token in value.split():
                path = _local_path(token)
                if path is None:
                    kept.append(token)
                    continue
                if not path.exists():
                    continue
                if engine.name != "podman":
                    log(f"note: {engine.name} build cannot mount {token} (pip setting {option})")
                    continue
                # A PEP 503 "simple" index links its files as ../../files/...: mount its parent.
                mounts.add(path.parent if path.name == "simple" else path)
                kept.append(token)
            if kept:
                config[section][option] = " ".join(kept)
    conf = scratch / "pip.conf"
    with conf.open("w") as handle:
        config.write(handle)
    args += ["--secret", f"id=pip.conf,src={conf}"]
    for path in sorted(mounts):
        args += ["--volume", f"{path}:{path}:ro"]
    return args


def image_size(engine: Engine, image: str) -> int:
    result = engine.run("image", "inspect", "--format", "{{.Size}}", image)
    return int(result.stdout.strip() or 0)


def context_digest(engine: Engine, dockerfile: str, base: str) -> str:
    """What an image is built from: the Dockerfile, the files its .dockerignore lets into the
    context, and the base image's ID. An image labelled with the same digest is up to date.

    podman's layer cache would rebuild nothing either, but to find that out it hashes the 1.5 GB
    virtualenv that the final stage copies: about 30 s per image, each time."""
    path = DOCKER_DIR / dockerfile
    ignore = Path(f"{path}.dockerignore").read_text().splitlines()
    allowed = sorted(line[1:] for line in ignore if line.startswith("!"))
    digest = hashlib.sha256()
    for part in (path.read_bytes(), "\n".join(ignore).encode()):
        digest.update(hashlib.sha256(part).digest())
    digest.update(engine.run("image", "inspect", "--format", "{{.Id}}", base).stdout.encode())
    for entry in allowed:
        files = [ROOT / entry] if (ROOT / entry).is_file() else sorted((ROOT / entry).rglob("*"))
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0")
                digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def built_from(engine: Engine, image: str) -> str:
    """The context digest an existing image was labelled with ("" if none or no image)."""
    result = engine.run(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{DIGEST_LABEL}"}}}}', image
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def image_id(engine: Engine, image: str) -> str:
    result = engine.run("image", "inspect", "--format", "{{.Id}}", image)
    return result.stdout.strip() if result.returncode == 0 else ""


def remove_replaced(engine: Engine, replaced: str, current: str) -> bool:
    """Remove the image a rebuild took the tag from, by its ID (its layers that the new image
    shares stay): without this every code change leaves another 1.5 GB image behind. An image
    that is still used (a container, another tag) is left alone."""
    if not replaced or replaced == current:
        return False
    return engine.run("image", "rm", replaced).returncode == 0


def failed_step(lines: list[str]) -> str:
    """The line of a build's log that names the step that failed."""
    for line in reversed(lines):
        if re.search(r'(?i)^error: building at step|failed to solve|^error\b.*"run ', line):
            return line.strip()
    return first_error("\n".join(lines))


def build_image(
    engine: Engine, dockerfile: str, tag: str, base: str, extra: list[str], quiet: bool, log
) -> float:
    """`ENGINE build` of one Dockerfile; the seconds it took. The log goes to the terminal (or,
    quiet, only to a file kept when the build fails)."""
    command = engine.command(
        "build",
        "--file",
        str(DOCKER_DIR / dockerfile),
        "--tag",
        tag,
        "--build-arg",
        f"BASE_IMAGE={base}",
        *(["--pull=never"] if engine.name == "podman" else []),
        *extra,
        str(ROOT),
    )
    env = dict(engine.env)
    if engine.name == "docker":
        env.setdefault("DOCKER_BUILDKIT", "1")  # RUN --mount=type=secret needs BuildKit
    log(f"$ {shlex.join(command)}")
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=400)
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"mlpipe-build-{Path(dockerfile).stem}-", suffix=".log", delete=False
    ) as saved:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        try:
            for line in process.stdout:
                saved.write(line)
                tail.append(line.rstrip("\n"))
                if not quiet:
                    print(line, end="", flush=True)
            code = process.wait()
        finally:
            if process.poll() is None:  # interrupted: the build stops with us
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    if code != 0:
        raise BuildError(
            f"{dockerfile}: {failed_step(list(tail))} (whole log: {saved.name})", code=1
        )
    os.unlink(saved.name)
    return time.monotonic() - started


def build_all(engine_name: str, base_image: str, quiet: bool, log) -> dict[str, dict]:
    """Both images; for each tag its base, size in bytes and build seconds."""
    engine = find_engine(engine_name)
    log(f"engine: {engine.name}")
    base = resolve_base(engine, base_image, log)
    check_runs_containers(engine, base)
    built = {}
    with tempfile.TemporaryDirectory(prefix="mlpipe-pip-") as scratch:
        extra = build_secrets(engine, pip_settings(sys.executable, engine.env), Path(scratch), log)
        for dockerfile, tag in IMAGES:
            digest = context_digest(engine, dockerfile, base)
            if built_from(engine, tag) == digest:
                seconds, verb = 0.0, "up to date"
            else:
                replaced = image_id(engine, tag)
                label = ["--label", f"{DIGEST_LABEL}={digest}"]
                seconds = build_image(engine, dockerfile, tag, base, extra + label, quiet, log)
                verb = "built"
                remove_replaced(engine, replaced, image_id(engine, tag))
            size = image_size(engine, tag)
            built[tag] = {"base": base, "bytes": size, "seconds": round(seconds, 1)}
            log(f"{verb} {tag} FROM {base}: {size / 1e9:.2f} GB in {seconds:.0f} s")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--engine", choices=ENGINES, default="", help="default: docker, else podman"
    )
    parser.add_argument(
        "--base-image",
        default="auto",
        help="auto (default), pinned (the Dockerfiles' own), local (Debian bookworm made "
        "with debootstrap) or an image name",
    )
    parser.add_argument("--quiet", action="store_true", help="no build log unless it fails")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        build_all(args.engine, args.base_image, args.quiet, log)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except subprocess.TimeoutExpired as timeout:
        command = shlex.join(timeout.cmd[:3]) if isinstance(timeout.cmd, list) else timeout.cmd
        print(f"error: {command} did not answer in {timeout.timeout:.0f} s", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
