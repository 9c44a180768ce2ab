"""The model registry: immutable versions, checksums, and the champion/candidate aliases.

A store is any fsspec URI: a local folder (the default), file://, s3:// or gs:// (where KServe's
storageUri points on a cluster). Layout:

    <store>/<name>/v<N>/model.joblib     the model, as KServe's scikit-learn runtime loads it
    <store>/<name>/v<N>/model.onnx       the same model for edge clients (when convertible)
    <store>/<name>/v<N>/parity_rows.parquet  held-out rows the server re-checks model.onnx on
    <store>/<name>/v<N>/reference.json   its training reference (components.common.reference)
    <store>/<name>/v<N>/metadata.json    lineage, and the SHA-256 of every other file
    <store>/<name>/v<N>/.claim           object stores only: the run that holds number N
    <store>/<name>/aliases/<alias>.json  {"version", "updated", "reason", "history": [...]}

A version exists once its metadata.json does: that file is written last. Two runs registering
at once never share a version number. Locally a version is assembled under a temporary name and
renamed into place (the rename fails when the number is taken, and the run takes the next). On
an object store, which cannot rename a folder, a run first claims the number by creating
<name>/v<N>/.claim only if it is absent (S3: If-None-Match: *; GCS: ifGenerationMatch=0 through
gcsfs's mode="create", which gcsfs calls experimental and which is not tested here); the run
that loses takes N+1, and only the claim's holder writes into v<N>. A claimed number whose run
died before its metadata.json is a gap in the numbers, not a version.

An alias is written to a temporary file and renamed over the old one under a lock, so
concurrent promotions on a folder serialise and a reader never sees half an alias. Object
stores put whole objects atomically; there a concurrent promotion is last-writer-wins (the alias
is never broken, but the history may miss one move).

Nothing is unpickled before its checksum is verified: a pickle is code.

Every call on an object store goes through `_remote`, which retries transient faults (a refused
connection, a timeout, an HTTP 5xx or SlowDown: the store restarting) with the backoff of
`components.common.retry`, and then fails with one line naming the store. A local folder's
errors (a missing file, a full disk) are not retried: they are deterministic.
"""

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import fsspec

from components.common import retry
from components.common.errors import PipelineInputError

MODEL_FILE = "model.joblib"
# The edge export of the same model, when it could be converted (components/export).
ONNX_FILE = "model.onnx"
# A sample of held-out feature rows stored with a proven model.onnx: the model server checks the
# graph against model.joblib on them when it loads the version (serving.runtime).
PARITY_ROWS_FILE = "parity_rows.parquet"
# The version's training reference (profile and held-out metrics); absent in older versions.
REFERENCE_FILE = "reference.json"
METADATA_FILE = "metadata.json"
# Created, only if absent, before anything else of an object-store version: who holds v<N>.
CLAIM_FILE = ".claim"
MAX_CLAIM_ATTEMPTS = 100
ALIASES_DIR = "aliases"
ALIASES = ("champion", "candidate")
VERSION_PATTERN = re.compile(r"^v(\d+)$")
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
RECORDED_PACKAGES = ("kfp-mlpipe", "scikit-learn", "pandas", "numpy", "kfp", "ray", "kserve")
REMOTE_PROTOCOLS = ("s3", "gs", "gcs")


class ModelIntegrityError(PipelineInputError):
    """A registered file does not match its recorded SHA-256: it is not loaded."""


class StoreUnavailable(PipelineInputError):
    """The object store kept failing transiently through every retry (down, or overloaded)."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    uri: str


def check_model_name(name: str) -> None:
    """Model names become URL paths and Kubernetes names: lowercase DNS labels only."""
    if not NAME_PATTERN.match(name):
        raise PipelineInputError(
            f"model name '{name}': use lowercase letters, digits and '-' (a DNS label, at most 63)"
        )


def version_storage_uri(storage_prefix: str, name: str, version: str) -> str:
    """Where KServe reads a version: the model store as the cluster sees it, e.g.
    s3://mlpipe-models or pvc://mlpipe-models, then <name>/<version>."""
    if "://" not in storage_prefix:
        raise PipelineInputError(
            f"deploy.storage_uri '{storage_prefix}': expected a URI KServe can read, "
            "such as s3://bucket/models, gs://bucket/models or pvc://claim-name/models"
        )
    return f"{storage_prefix.rstrip('/')}/{name}/{version}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """Python's version and each package's ("not installed" when it is not)."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = package_version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def git_commit(start: str | os.PathLike = ".") -> str:
    """The checkout's commit (with "-dirty" when it has changes), or "" outside a checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(start), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("MLPIPE_GIT_COMMIT", "")
    return commit + ("-dirty" if dirty else "")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def split_uri(uri: str) -> tuple[str, str]:
    """(protocol, path) of a store URI; a bare path is a local folder."""
    if "://" not in uri:
        return "file", str(Path(uri).expanduser().resolve())
    protocol, path = uri.split("://", 1)
    if protocol == "file":
        return "file", str(Path(path).resolve())
    if protocol not in REMOTE_PROTOCOLS:
        raise PipelineInputError(
            f"model store '{uri}': unsupported scheme '{protocol}' "
            f"(use a path, file://, {', '.join(p + '://' for p in REMOTE_PROTOCOLS)})"
        )
    return protocol, path.rstrip("/")


class ModelRegistry:
    """One model's versions and aliases in a store.

    Args:
        store_uri: the store's root (a path, file://, s3:// or gs://).
        name: the model's name (a DNS label).
        storage_options: passed to fsspec for remote stores (credentials come from the
            environment, as s3fs and gcsfs read them, never from the run config).
    """

    def __init__(self, store_uri: str, name: str, storage_options: dict | None = None):
        check_model_name(name)
        self.name = name
        self.protocol, root = split_uri(store_uri)
        self.local = self.protocol == "file"
        self.fs = fsspec.filesystem(self.protocol, **(storage_options or {}))
        self.root = f"{root}/{name}"
        self.store_uri = store_uri

    # --- paths ----------------------------------------------------------------------------

    def uri(self, version: str) -> str:
        path = f"{self.root}/{version}"
        return path if self.local else f"{self.protocol}://{path}"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # --- calls on the store -----------------------------------------------------------------

    def _remote(self, what: str, function, *args, **kwargs):
        """`function(*args, **kwargs)`, retried on transient faults when the store is remote.

        After the last attempt the fault becomes a StoreUnavailable (a PipelineInputError: one
        line, no traceback), which is not transient itself, so a caller that is retried as a
        whole does not retry again what was already retried here.
        """
        if self.local:
            return function(*args, **kwargs)
        try:
            return retry.retry_transient(
                f"model store {self.store_uri}: {what}", function, *args, **kwargs
            )
        except Exception as error:
            if not retry.is_transient(error):
                raise
            raise StoreUnavailable(
                f"model store '{self.store_uri}': could not {what} after {retry.ATTEMPTS} "
                f"attempts ({retry.one_line(error)})"
            ) from None

    def _read(self, path: str) -> bytes:
        return self._remote(f"read {path}", self.fs.cat_file, path)

    def _write(self, path: str, data: bytes, **options) -> None:
        self._remote(f"write {path}", self.fs.pipe_file, path, data, **options)

    def _remove(self, path: str, recursive: bool = False) -> None:
        def remove():
            try:
                self.fs.rm(path, recursive=recursive)
            except FileNotFoundError:
                pass  # an earlier attempt removed it, and its answer was lost

        self._remote(f"remove {path}", remove)

    def _names(self, path: str) -> list[str] | None:
        """The names in a folder of the store, or None when it does not exist."""

        def names():
            try:
                entries = self.fs.ls(path, detail=False)
            except FileNotFoundError:
                return None
            return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries)

        return self._remote(f"list {path}", names)

    # --- versions -------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Complete versions (their metadata.json exists), oldest first."""

        def complete() -> list[int]:  # the listing and the looks, retried as one
            try:
                entries = self.fs.ls(self.root, detail=False)
            except FileNotFoundError:
                return []
            numbers = []
            for entry in entries:
                match = VERSION_PATTERN.match(entry.rstrip("/").rsplit("/", 1)[-1])
                if match and self.fs.exists(self._path(match.group(0), METADATA_FILE)):
                    numbers.append(int(match.group(1)))
            return numbers

        return [f"v{n}" for n in sorted(self._remote("list the versions", complete))]

    def _taken_numbers(self) -> list[int]:
        """Version numbers in use, complete or being written."""
        names = self._names(self.root) or []
        return sorted(int(m.group(1)) for n in names if (m := VERSION_PATTERN.match(n)))

    def resolve(self, ref: str) -> str:
        """A version (v3) or an alias (champion, candidate) as a version."""
        if VERSION_PATTERN.match(ref):
            if ref not in self.versions():
                raise PipelineInputError(
                    f"model '{self.name}': no version {ref} in {self.store_uri} "
                    f"(versions: {', '.join(self.versions()) or 'none'})"
                )
            return ref
        if ref in ALIASES:
            alias = self.alias(ref)
            if alias is None:
                raise PipelineInputError(f"model '{self.name}': no {ref} yet in {self.store_uri}")
            return alias["version"]
        raise PipelineInputError(
            f"'{ref}': expected a version like v3 or an alias ({', '.join(ALIASES)})"
        )

    def register(self, model, metadata: dict, extra_files: dict[str, bytes] | None = None):
        """Write `model` and its lineage as the next version; return it.

        Args:
            model: the fitted model (pickled with joblib as model.joblib).
            metadata: lineage (data, run config, tuning, metrics, fairness, gate); name,
                version, created time, file checksums, package versions and the git commit are
                added here.
            extra_files: more files of the version (for example model.onnx), checksummed too.
        """
        buffer = io.BytesIO()
        import joblib  # here: listing versions and aliases loads no ML library

        joblib.dump(model, buffer)
        return self.register_pickled(buffer.getvalue(), metadata, extra_files)

    def register_pickled(
        self, model_bytes: bytes, metadata: dict, extra_files: dict[str, bytes] | None = None
    ) -> ModelVersion:
        """As `register`, for a model already pickled with joblib (a pipeline step's artifact
        file): its bytes are stored as they are, not unpickled and pickled again."""
        files = {MODEL_FILE: model_bytes, **(extra_files or {})}
        record = {
            **metadata,
            "name": self.name,
            "created": _now(),
            "files": {name: sha256_bytes(data) for name, data in files.items()},
            "packages": package_versions(),
            "git_commit": metadata.get("git_commit") or git_commit(),
        }
        if self.local:
            return self._register_local(files, record)
        return self._register_remote(files, record)

    def _register_local(self, files: dict[str, bytes], record: dict) -> ModelVersion:
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
            number = (self._taken_numbers() or [0])[-1] + 1
            while True:
                record["version"] = f"v{number}"
                (staging / METADATA_FILE).write_text(
                    json.dumps(record, indent=2, sort_keys=True, default=str), encoding="utf-8"
                )
                try:
                    os.rename(staging, root / f"v{number}")
                    return ModelVersion(self.name, f"v{number}", self.uri(f"v{number}"))
                except OSError:
                    if not (root / f"v{number}").exists():
                        raise
                    number += 1  # another run took this number first
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    def _register_remote(self, files: dict[str, bytes], record: dict) -> ModelVersion:
        # Object stores have no rename of folders. The version number is claimed first with a
        # conditional create of v<N>/.claim (S3 If-None-Match: *, GCS ifGenerationMatch=0):
        # exactly one run creates it, the others take the next number. Only the claim's holder
        # writes into v<N>: its files first, metadata.json last, and a version without
        # metadata.json is invisible to versions() and load().
        number = (self._taken_numbers() or [0])[-1] + 1
        claim = json.dumps({"claimed": _now(), "by": uuid.uuid4().hex}).encode()
        for _ in range(MAX_CLAIM_ATTEMPTS):
            version = f"v{number}"
            try:
                # Retried on transient faults like every call here. When an attempt created the
                # claim but its answer was lost (a reset connection), the retry finds the claim
                # there (FileExistsError, the If-None-Match answer) and this run moves on to the
                # next number, leaving an orphan claim without metadata.json: a gap in the
                # numbers that versions() never shows, like a run that died after claiming.
                # Accepted: telling our own lost claim from another run's would need a read
                # back of the claim's "by", and a gap costs nothing.
                self._write(self._path(version, CLAIM_FILE), claim, mode="create")
            except FileExistsError:
                number += 1  # another run claimed this number first
                continue
            record["version"] = version
            # Plain puts: repeating one after a lost answer writes the same bytes again.
            for name, data in files.items():
                self._write(self._path(version, name), data)
            self._write(
                self._path(version, METADATA_FILE),
                json.dumps(record, indent=2, sort_keys=True, default=str).encode(),
            )
            return ModelVersion(self.name, version, self.uri(version))
        raise PipelineInputError(
            f"model '{self.name}': could not claim a version number in {self.store_uri} after "
            f"{MAX_CLAIM_ATTEMPTS} attempts (v{number - MAX_CLAIM_ATTEMPTS}..v{number - 1} "
            "were all taken by other runs)"
        )

    def metadata(self, ref: str) -> dict:
        version = self.resolve(ref)
        try:
            return json.loads(self._read(self._path(version, METADATA_FILE)))
        except (OSError, ValueError) as error:
            raise PipelineInputError(
                f"{self.uri(version)}/{METADATA_FILE}: not readable JSON ({error})"
            ) from None

    def verified_files(self, ref: str) -> dict[str, bytes]:
        """Every file of a version, each checked against its recorded SHA-256."""
        version = self.resolve(ref)
        metadata = self.metadata(version)
        return self._remote(f"read {version}", read_verified, self.uri(version), metadata, self.fs)

    def reference(self, ref: str) -> dict | None:
        """The training reference of a version or alias, its checksum verified; None for a
        version registered before references were stored.

        Raises:
            ModelIntegrityError: reference.json is missing or does not match its SHA-256.
            PipelineInputError: it is not a reference this mlpipe reads (one line, the key).
        """
        # Here, not at the top: listing versions and aliases loads no ML library.
        from components.common.reference import check_reference

        version = self.resolve(ref)
        metadata = self.metadata(version)
        if REFERENCE_FILE not in (metadata.get("files") or {}):
            return None
        where = f"{self.uri(version)}/{REFERENCE_FILE}"
        files = self._remote(
            f"read {version}",
            read_verified,
            self.uri(version),
            metadata,
            self.fs,
            (REFERENCE_FILE,),
        )
        try:
            reference = json.loads(files[REFERENCE_FILE])
        except ValueError as error:
            raise PipelineInputError(f"{where}: not readable JSON ({error})") from None
        check_reference(reference, where)
        return reference

    def load(self, ref: str) -> tuple[object, dict]:
        """The model and metadata of a version or alias, checksums verified before unpickling."""
        version = self.resolve(ref)
        metadata = self.metadata(version)
        files = self._remote(
            f"read {version}", read_verified, self.uri(version), metadata, self.fs, (MODEL_FILE,)
        )
        return unpickle_model(files[MODEL_FILE], f"{self.uri(version)}/{MODEL_FILE}"), metadata

    def download(self, ref: str, destination: str | os.PathLike) -> Path:
        """Copy a version's verified files into a local folder (for a server to load)."""
        version = self.resolve(ref)
        destination = Path(destination)
        destination.mkdir(parents=True, exist_ok=True)
        for name, data in self.verified_files(version).items():
            (destination / name).write_bytes(data)
        metadata = self._read(self._path(version, METADATA_FILE))
        (destination / METADATA_FILE).write_bytes(metadata)
        return destination

    # --- aliases --------------------------------------------------------------------------

    def alias(self, alias: str) -> dict | None:
        """The alias record, or None when the alias was never set."""
        self._check_alias(alias)
        try:
            return json.loads(self._read(self._path(ALIASES_DIR, f"{alias}.json")))
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise PipelineInputError(
                f"{self._path(ALIASES_DIR, alias)}.json: not readable JSON ({error})"
            ) from None

    def aliases(self) -> dict[str, str]:
        """alias -> version, for the aliases that are set."""
        return {a: record["version"] for a in ALIASES if (record := self.alias(a)) is not None}

    def set_alias(self, alias: str, version: str, reason: str) -> dict:
        """Point `alias` at `version`, keeping where it pointed before in its history."""
        self._check_alias(alias)
        version = self.resolve(version)
        with self._alias_lock():
            current = self.alias(alias)
            history = []
            if current is not None:
                previous = {k: current[k] for k in ("version", "updated", "reason") if k in current}
                history = [previous, *current.get("history", [])]
            record = {"version": version, "updated": _now(), "reason": reason, "history": history}
            self._write_alias(alias, record)
        return record

    def promote(self, version: str, reason: str = "promoted") -> dict:
        """Make `version` the champion (the candidate alias is left as it is)."""
        return self.set_alias("champion", version, reason)

    def rollback(self, alias: str = "champion", reason: str = "rolled back") -> dict:
        """Point `alias` back at the version it pointed to before its last move."""
        self._check_alias(alias)
        with self._alias_lock():
            current = self.alias(alias)
            if current is None or not current.get("history"):
                raise PipelineInputError(
                    f"model '{self.name}': {alias} has no earlier version to roll back to"
                )
            previous, *older = current["history"]
            self.resolve(previous["version"])
            record = {
                "version": previous["version"],
                "updated": _now(),
                "reason": f"{reason} (from {current['version']})",
                "history": older,
            }
            self._write_alias(alias, record)
        return record

    def _check_alias(self, alias: str) -> None:
        if alias not in ALIASES:
            raise PipelineInputError(f"alias '{alias}': expected one of {', '.join(ALIASES)}")

    @contextlib.contextmanager
    def _alias_lock(self):
        if not self.local:
            yield
            return
        folder = Path(self._path(ALIASES_DIR))
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write_alias(self, alias: str, record: dict) -> None:
        data = json.dumps(record, indent=2, sort_keys=True).encode()
        target = self._path(ALIASES_DIR, f"{alias}.json")
        if not self.local:
            self._write(target, data)  # one PUT: atomic on object stores (and repeatable)
            return
        temporary = Path(f"{target}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    # --- undoing a run ---------------------------------------------------------------------

    def snapshot(self) -> dict:
        """What `restore` puts back: the names in this model's folder and in its aliases folder,
        and each alias record's bytes (None for an alias that is not set)."""

        self.fs.invalidate_cache()  # another process (a run's step) may have written since
        records = {}
        for alias in ALIASES:
            try:
                records[alias] = self._read(self._path(ALIASES_DIR, f"{alias}.json"))
            except FileNotFoundError:
                records[alias] = None
        return {
            "model": self._names(self.root),
            "aliases": self._names(self._path(ALIASES_DIR)),
            "records": records,
        }

    def versions_of_run(self, run_id: str) -> list[str]:
        """The complete versions that run `run_id` registered (their lineage's kfp_run_id)."""
        found = []
        for version in self.versions():
            with contextlib.suppress(OSError, ValueError):
                if (
                    json.loads(self._read(self._path(version, METADATA_FILE))).get("kfp_run_id")
                    == run_id
                ):
                    found.append(version)
        return found

    def find_registered(self, run_id: str, model_bytes: bytes) -> ModelVersion | None:
        """The version that run `run_id` registered with exactly this model, if any."""
        if not run_id:
            return None
        digest = sha256_bytes(model_bytes)
        for version in self.versions_of_run(run_id):
            if self.metadata(version).get("files", {}).get(MODEL_FILE) == digest:
                return ModelVersion(self.name, version, self.uri(version))
        return None

    def restore(self, snapshot: dict, run_id: str = "") -> list[str]:
        """Undo what changed since `snapshot` (a stopped run's work, once its processes are
        gone): remove what was added to this model's folder (versions, half-written ones, the
        aliases' lock and temporary files) and write each alias record back byte for byte, or
        remove an alias that was not set. Returns what it undid, e.g. ["removed v2"].

        With `run_id`, only that run's work is undone, and another run's, going on at the same
        time, is kept: the versions whose lineage names the run are removed, and an alias is put
        back only when it points at one of them."""
        if run_id:
            return self._restore_run(snapshot, run_id)
        undone = []
        if snapshot["model"] is None:
            if self._remote(f"look for {self.root}", self.fs.exists, self.root):
                added = self.versions() + list(self.aliases())
                self._remove(self.root, recursive=True)
                undone += [f"removed {name}" for name in added]
            return undone
        current = self.snapshot()
        for name in sorted(set(current["model"] or []) - set(snapshot["model"])):
            self._remove(self._path(name), recursive=True)
            if VERSION_PATTERN.match(name) or name == ALIASES_DIR:
                undone.append(f"removed {name}")
        if snapshot["aliases"] is None:
            return undone
        for name in sorted(set(current["aliases"] or []) - set(snapshot["aliases"])):
            if name.removesuffix(".json") not in ALIASES:
                self._remove(self._path(ALIASES_DIR, name), recursive=True)
        for alias, data in snapshot["records"].items():
            target = self._path(ALIASES_DIR, f"{alias}.json")
            if current["records"][alias] == data:
                continue
            if data is None:
                self._remove(target)
                undone.append(f"removed {alias}")
            else:
                self._write(target, data)
                undone.append(f"{alias} back to {json.loads(data)['version']}")
        return undone

    def _restore_run(self, snapshot: dict, run_id: str) -> list[str]:
        self.fs.invalidate_cache()
        ours = [v for v in self.versions_of_run(run_id) if v not in (snapshot["model"] or [])]
        undone = []
        for alias, data in snapshot["records"].items():
            target = self._path(ALIASES_DIR, f"{alias}.json")
            try:
                current = json.loads(self._read(target))
            except (FileNotFoundError, ValueError):
                continue
            if current.get("version") not in ours:
                continue  # not this run's doing, or already as it was
            if data is None:
                self._remove(target)
                undone.append(f"removed {alias}")
            else:
                self._write(target, data)
                undone.append(f"{alias} back to {json.loads(data)['version']}")
        for version in ours:
            self._remove(self._path(version), recursive=True)
            undone.insert(0, f"removed {version}")
        return undone

    # --- comparing ------------------------------------------------------------------------

    def diff(self, first: str, second: str) -> dict:
        """Metrics and config of two versions side by side: {section: {key: (first, second)}}."""
        a, b = self.metadata(first), self.metadata(second)
        result = {}
        for section in ("metrics", "config", "tuning", "data", "gate"):
            left, right = _flatten(a.get(section) or {}), _flatten(b.get(section) or {})
            result[section] = {
                key: (left.get(key), right.get(key))
                for key in sorted(set(left) | set(right))
                if left.get(key) != right.get(key) or section == "metrics"
            }
        return result


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): json.dumps(value) if isinstance(value, list) else value}


def read_verified(
    version_uri: str, metadata: dict, fs=None, only: tuple[str, ...] | None = None
) -> dict[str, bytes]:
    """The version's files, each checked against metadata["files"] before anyone uses it.

    Raises:
        ModelIntegrityError: a file is missing, unlisted, or its SHA-256 differs.
    """
    if fs is None:
        protocol, _ = split_uri(version_uri)
        fs = fsspec.filesystem(protocol)
    listed = metadata.get("files")
    if not isinstance(listed, dict) or MODEL_FILE not in listed:
        raise ModelIntegrityError(
            f"{version_uri}/{METADATA_FILE}: field 'files' does not list {MODEL_FILE} with its "
            "SHA-256; refusing to load an unverified model"
        )
    path = version_uri.split("://", 1)[-1]
    files = {}
    for name, expected in listed.items():
        if only is not None and name not in only:
            continue
        try:
            data = fs.cat_file(f"{path}/{name}")
        except FileNotFoundError:
            raise ModelIntegrityError(f"{version_uri}/{name}: missing") from None
        actual = sha256_bytes(data)
        if actual != expected:
            raise ModelIntegrityError(
                f"{version_uri}/{name}: SHA-256 {actual[:12]}… does not match the registered "
                f"{str(expected)[:12]}… (tampered or truncated); refusing to load it"
            )
        files[name] = data
    return files


def unpickle_model(data: bytes, where: str):
    try:
        import joblib  # here: listing versions and aliases loads no ML library

        model = joblib.load(io.BytesIO(data))
    except Exception as error:  # unpickling can raise almost anything: report it in one line
        raise PipelineInputError(
            f"{where}: could not be loaded ({type(error).__name__}: {error})"
        ) from None
    if not hasattr(model, "predict"):
        raise PipelineInputError(
            f"{where}: holds a {type(model).__name__}, not a fitted model with predict()"
        )
    return model


def registry_for_version_uri(version_uri: str) -> tuple[ModelRegistry, str]:
    """The registry and version of a version folder's URI (<store>/<name>/v<N>)."""
    protocol, path = split_uri(version_uri)
    store, name, version = path.rstrip("/").rsplit("/", 2)
    if not VERSION_PATTERN.match(version):
        raise PipelineInputError(f"'{version_uri}': not a model version folder (…/<name>/v<N>)")
    store_uri = store if protocol == "file" else f"{protocol}://{store}"
    return ModelRegistry(store_uri, name), version
