"""A registered model version's folder: finding it, checking its metadata, loading its model.

Shared by the deploy step (its smoke test loads the model in process to compare with the
server's answers) and by the model server (`serving`), which loads the same folder to serve it.
"""

import os
import tempfile
from pathlib import Path

from components.common.errors import PipelineInputError
from components.common.io import read_json
from components.common.registry import (
    METADATA_FILE,
    MODEL_FILE,
    read_verified,
    registry_for_version_uri,
    unpickle_model,
)
from components.common.schema import FEATURE_KINDS, TASKS


def model_folder(model_dir: str | os.PathLike) -> Path:
    """A model folder given as a path or a file:// URI (as the register step reports it)."""
    return Path(str(model_dir).removeprefix("file://"))


def local_model_folder(model_uri: str | os.PathLike) -> Path:
    """A local folder holding the version: the folder itself, or a verified copy of a version in
    an object store (s3://, gs://), downloaded into a new temporary folder."""
    if "://" not in str(model_uri) or str(model_uri).startswith("file://"):
        return model_folder(model_uri)
    registry, version = registry_for_version_uri(str(model_uri))
    return registry.download(version, tempfile.mkdtemp(prefix=f"mlpipe-{version}-"))


def read_model_metadata(model_dir: str | os.PathLike) -> dict:
    """Check a registered model folder and return its metadata.

    Args:
        model_dir: a version folder written by the register step.

    Returns:
        The parsed metadata.json, with at least name, version and the feature schema.

    Raises:
        PipelineInputError: naming the folder and the file or field that is missing or wrong.
    """
    folder = model_folder(model_dir)
    try:
        if not folder.is_dir():
            raise PipelineInputError(f"model folder '{model_dir}': not a directory")
        for required in (MODEL_FILE, METADATA_FILE):
            if not (folder / required).is_file():
                raise PipelineInputError(f"model folder '{model_dir}': {required} is missing")
    except OSError as error:
        # A folder this process may not enter (a pod's user that does not own the volume's
        # files): is_file raises rather than answering False.
        raise PipelineInputError(
            f"model folder '{model_dir}': {error.strerror or error} (uid {os.getuid()})"
        ) from None
    try:
        metadata = read_json(folder / METADATA_FILE)
    except (OSError, ValueError) as error:
        raise PipelineInputError(
            f"model folder '{model_dir}': {METADATA_FILE} is not readable JSON ({error})"
        ) from None
    _check_metadata(metadata, f"model folder '{model_dir}': {METADATA_FILE}")
    return metadata


def _check_metadata(metadata, where: str) -> None:
    """The fields the server relies on; a hand-edited or foreign file fails here, not mid-request."""
    if not isinstance(metadata, dict):
        raise PipelineInputError(f"{where}: expected a JSON object")
    for key in ("name", "version"):
        if not isinstance(metadata.get(key), str) or not metadata[key]:
            raise PipelineInputError(f"{where}: field '{key}' is missing or not a string")
    schema = metadata.get("schema")
    if not isinstance(schema, dict):
        raise PipelineInputError(f"{where}: field 'schema' is missing or not an object")
    if schema.get("task") not in TASKS:
        raise PipelineInputError(f"{where}: schema.task must be one of {', '.join(TASKS)}")
    features = schema.get("features")
    if not isinstance(features, list) or not features:
        raise PipelineInputError(f"{where}: schema.features is missing or empty")
    for index, feature in enumerate(features):
        if (
            not isinstance(feature, dict)
            or not isinstance(feature.get("name"), str)
            or feature.get("kind") not in FEATURE_KINDS
        ):
            raise PipelineInputError(
                f"{where}: schema.features[{index}] must be {{name, kind}} with kind "
                f"{' or '.join(FEATURE_KINDS)}"
            )


def load_model_folder(model_dir: str | os.PathLike) -> tuple:
    """The fitted model and the metadata of a registered model folder.

    The model file's SHA-256 is checked against metadata.json before it is unpickled.

    Raises:
        PipelineInputError: the folder is incomplete, a checksum differs (ModelIntegrityError),
            or model.joblib cannot be loaded.
    """
    metadata = read_model_metadata(model_dir)
    folder = model_folder(model_dir)
    files = read_verified(str(folder), metadata, only=(MODEL_FILE,))
    model = unpickle_model(files[MODEL_FILE], f"model folder '{model_dir}': {MODEL_FILE}")
    return model, metadata
