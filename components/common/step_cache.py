"""Content-keyed step results: the key, the completion marker, and the stores that keep them.

Kubeflow's own cache key is made of parameters and artifact *names*: new data behind the same
URI, or a changed image under the same tag, can reuse an old result. A step's key here is the
SHA-256 of what decides its outputs:

- the step's name and the source of its component function (the spec's embedded code);
- the code it imports: every file of the installed `components` package;
- the image it runs in, and the versions of the libraries that shape its results;
- its parameter values (less `run_id`, which names a run and decides nothing);
- the content hash of every input artifact's bytes, not its URI.

Every output artifact carries its content hash in its metadata (`CONTENT_HASH`), written only
once the step has succeeded: that is the completion marker. A step refuses an input without
one, or whose bytes no longer match it (a half-written file, a flipped byte).

A store keeps finished steps under their key: the output files and `entry.json` (parameters,
artifact metadata and each file's hash), written last and only if absent, so concurrent writers
of one key never mix their files and a reader never takes an entry that is still being written.
Restoring verifies every file's hash; an entry that fails is deleted and the step runs again.
"""

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from components.common.registry import package_versions
from components.common.registry import sha256_file as file_hash

# The completion marker in an artifact's metadata: the SHA-256 of its bytes.
CONTENT_HASH = "mlpipe_sha256"
# An output the step did not write (an optional report): hashed as this, restored as absent.
ABSENT = "absent"
ENTRY_FILE = "entry.json"
# Parameters that name a run rather than decide what a step computes.
IDENTITY_PARAMETERS = frozenset({"run_id"})
# Libraries whose version can change a step's numbers or files (and Python's own).
KEYED_LIBRARIES = (
    "kfp",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "scipy",
    "ray",
    "fairlearn",
    "skl2onnx",
    "onnxruntime",
    "joblib",
)


def content_hash(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes; of a folder, of its files' relative paths and hashes;
    ABSENT when there is nothing at `path`."""
    path = Path(path)
    if path.is_file():
        return file_hash(path)
    if not path.is_dir():
        return ABSENT
    digest = hashlib.sha256(b"folder\n")
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{file_hash(item)}\n".encode())
    return digest.hexdigest()


def code_version() -> str:
    """The SHA-256 of every file of the installed `components` package (code and templates)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for item in sorted(root.rglob("*")):
        if item.is_file() and item.suffix in {".py", ".j2", ".json", ".yaml"}:
            digest.update(f"{item.relative_to(root).as_posix()}\0{file_hash(item)}\n".encode())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    return package_versions(KEYED_LIBRARIES)


def step_key(
    step: str,
    source: str,
    image: str,
    code: str,
    libraries: dict[str, str],
    parameters: dict,
    input_hashes: dict[str, str],
) -> str:
    """The key of one execution of a step: equal keys mean equal outputs."""
    material = {
        "step": step,
        "source": hashlib.sha256(source.encode()).hexdigest(),
        "image": image,
        "code": code,
        "libraries": libraries,
        "parameters": {k: v for k, v in parameters.items() if k not in IDENTITY_PARAMETERS},
        "inputs": input_hashes,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


class CorruptInput(Exception):
    """An input artifact has no completion marker, or its bytes no longer match it."""


def check_input(name: str, path: str | os.PathLike, metadata: dict) -> str:
    """The input's content hash, once its bytes are checked against its completion marker."""
    expected = (metadata or {}).get(CONTENT_HASH)
    if not expected:
        raise CorruptInput(
            f"input '{name}' ({path}) has no completion marker: the step that wrote it did not "
            "finish"
        )
    actual = content_hash(path)
    if actual != expected:
        raise CorruptInput(
            f"input '{name}' ({path}) does not match its content hash (expected "
            f"{expected[:12]}, found {actual[:12]}): it changed after its step finished"
        )
    return actual


def _copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy a file or folder; a file on the same filesystem is hard-linked (no step writes into
    a finished file: writers replace files, and hashes are checked on every read)."""
    source, destination = Path(source), Path(destination)
    if source.is_dir():
        shutil.copytree(source, destination, copy_function=_link_or_copy, dirs_exist_ok=True)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    _link_or_copy(source, destination)


def _link_or_copy(source, destination) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(destination)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)


def remove_path(path: str | os.PathLike) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class StepStore:
    """Finished steps under their keys, in a folder or an fsspec URI (s3://, gs://).

    Layout: `<root>/<key[:2]>/<key>/entry.json` and the files of the writer that won,
    `<root>/<key[:2]>/<key>/<writer>/<artifact>`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = str(root)
        self.fs, self.path = fsspec.core.url_to_fs(self.root)
        self.local = isinstance(self.fs, LocalFileSystem)

    def _key_dir(self, key: str) -> str:
        return f"{self.path}/{key[:2]}/{key}"

    def get(self, key: str) -> dict | None:
        """The entry stored under `key`, or None (absent, or unreadable: a miss, never an
        error)."""
        try:
            entry = json.loads(self.fs.cat_file(f"{self._key_dir(key)}/{ENTRY_FILE}"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def restore(self, entry: dict, destinations: dict[str, str]) -> bool:
        """Copy the entry's files to `destinations` (artifact name -> path) and check each
        against its hash. False, with nothing left at the destinations and the entry deleted,
        when any file is missing or differs."""
        key_dir = self._key_dir(entry["key"])
        try:
            for name, destination in destinations.items():
                stored = entry["artifacts"][name]
                remove_path(destination)
                if stored["hash"] != ABSENT:
                    source = f"{key_dir}/{stored['file']}"
                    if self.local:
                        _copy(source, destination)
                    else:
                        self.fs.get(source, destination, recursive=True)
                if content_hash(destination) != stored["hash"]:
                    raise ValueError(f"{name} does not match its hash")
        except (OSError, KeyError, ValueError):
            for destination in destinations.values():
                remove_path(destination)
            self.delete(entry["key"])
            return False
        return True

    def put(
        self,
        key: str,
        step: str,
        artifacts: dict[str, tuple[str, dict]],
        parameters: dict,
        origin_run: str = "",
    ) -> bool:
        """Store a finished step: `artifacts` maps each output's name to its path and its
        metadata (with CONTENT_HASH); `origin_run` is the run that computed it. False when
        another writer stored the key first."""
        key_dir = self._key_dir(key)
        writer = uuid.uuid4().hex[:12]
        entry = {
            "key": key,
            "step": step,
            "origin_run": origin_run,
            "parameters": parameters,
            "artifacts": {},
        }
        try:
            for name, (path, metadata) in artifacts.items():
                digest = metadata[CONTENT_HASH]
                stored = {"hash": digest, "metadata": metadata, "file": f"{writer}/{name}"}
                if digest != ABSENT:
                    target = f"{key_dir}/{writer}/{name}"
                    if self.local:
                        _copy(path, target)
                    else:
                        self.fs.put(path, target, recursive=Path(path).is_dir())
                entry["artifacts"][name] = stored
            created = self._create_entry(key_dir, json.dumps(entry, sort_keys=True).encode())
        except BaseException:
            self._discard(f"{key_dir}/{writer}")
            self._remove_if_empty(key_dir)
            raise
        if not created:
            self._discard(f"{key_dir}/{writer}")
        return created

    def _remove_if_empty(self, key_dir: str) -> None:
        """A key's folder, and its prefix folder, once nothing is in them (rmdir refuses a
        folder that another writer has put something in)."""
        if self.local:
            for folder in (key_dir, key_dir.rsplit("/", 1)[0]):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)

    def _create_entry(self, key_dir: str, data: bytes) -> bool:
        target = f"{key_dir}/{ENTRY_FILE}"
        if not self.local:
            try:
                self.fs.pipe_file(target, data, mode="create")
            except FileExistsError:
                return False
            return True
        # Written whole under a private name, then linked to its name: link fails when the
        # name exists, so exactly one writer's entry is ever there, and never half of one.
        staging = f"{key_dir}/.{ENTRY_FILE}.{uuid.uuid4().hex[:12]}"
        Path(key_dir).mkdir(parents=True, exist_ok=True)
        try:
            with open(staging, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(staging, target)
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)

    def _discard(self, path: str) -> None:
        with contextlib.suppress(OSError):
            if self.local:
                remove_path(path)
            else:
                self.fs.rm(path, recursive=True)

    def delete(self, key: str) -> None:
        self._discard(self._key_dir(key))
