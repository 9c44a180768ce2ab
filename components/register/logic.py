"""Register: write an immutable, versioned model folder into the model store.

Layout: <store>/<name>/v<N>/{model.joblib, metadata.json}. A version folder is assembled under a
temporary name and renamed into place, so a reader never sees half a version, and two runs
registering at once get different numbers instead of overwriting each other.
"""

import datetime as dt
import hashlib
import os
import platform
import re
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import joblib

from components.common.errors import PipelineInputError
from components.common.io import write_json

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
VERSION_PATTERN = re.compile(r"^v(\d+)$")
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
RECORDED_PACKAGES = ("kfp-mlpipe", "scikit-learn", "pandas", "numpy", "kfp", "ray", "kserve")


def check_model_name(name: str) -> None:
    """Model names become URL paths and Kubernetes names: lowercase DNS labels only."""
    if not NAME_PATTERN.match(name):
        raise PipelineInputError(
            f"model name '{name}': use lowercase letters, digits and '-' (a DNS label, at most 63)"
        )


def store_path(model_store_uri: str) -> Path:
    path = model_store_uri.removeprefix("file://")
    if "://" in path:
        raise PipelineInputError(
            f"model store '{model_store_uri}': only local paths and file:// are supported"
        )
    return Path(path).expanduser().resolve()


def existing_versions(model_root: Path) -> list[int]:
    if not model_root.is_dir():
        return []
    return sorted(
        int(m.group(1)) for p in model_root.iterdir() if (m := VERSION_PATTERN.match(p.name))
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def register_model(model, model_store_uri: str, name: str, metadata: dict) -> Path:
    """Write `model` and its metadata as the next version of `name`; return the version folder.

    Args:
        model: the fitted scikit-learn Pipeline to serve.
        model_store_uri: the store's root (a local path or file:// URI).
        name: the model's name in the store.
        metadata: lineage to record (schema, data, tuning, metrics); name, version, creation
            time, file checksums and package versions are added here.
    """
    check_model_name(name)
    model_root = store_path(model_store_uri) / name
    model_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_root))
    try:
        joblib.dump(model, staging / MODEL_FILE)
        files = {MODEL_FILE: sha256_file(staging / MODEL_FILE)}
        record = {
            **metadata,
            "name": name,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": files,
            "packages": package_versions(),
        }
        number = (existing_versions(model_root) or [0])[-1] + 1
        while True:
            record["version"] = f"v{number}"
            write_json(staging / METADATA_FILE, record)
            try:
                os.rename(staging, model_root / f"v{number}")
                return model_root / f"v{number}"
            except OSError:
                if not (model_root / f"v{number}").exists():
                    raise
                number += 1  # another run took this number first
    finally:
        if staging.exists():
            shutil.rmtree(staging)
