"""The model store on S3, for real: a moto S3 server on 127.0.0.1, started and stopped here."""

import json

import pytest
from sklearn.dummy import DummyClassifier

from components.common.registry import MODEL_FILE, ModelIntegrityError, ModelRegistry
from components.deploy.logic import load_model_folder, local_model_folder

pytestmark = pytest.mark.server

SCHEMA = {"target": "y", "task": "classification", "features": [{"name": "x", "kind": "numeric"}]}


@pytest.fixture
def bucket(s3, request):
    """A fresh bucket on the local S3 server."""
    name = f"models-{request.node.name.replace('_', '-')[:40].lower()}"
    s3.mkdir(name)
    return s3, f"s3://{name}"


def _model(answer):
    return DummyClassifier(strategy="constant", constant=answer).fit([[0], [1]], ["no", "yes"])


def test_versions_aliases_and_loading_on_s3(bucket, tmp_path):
    fs, store = bucket
    registry = ModelRegistry(store, "churn")
    first = registry.register(_model("no"), {"schema": SCHEMA})
    second = registry.register(_model("yes"), {"schema": SCHEMA})
    assert (first.version, second.version) == ("v1", "v2")
    assert second.uri == f"{store}/churn/v2"
    assert registry.versions() == ["v1", "v2"]
    registry.promote("v1")
    registry.promote("v2")
    assert registry.rollback()["version"] == "v1"
    model, metadata = registry.load("champion")
    assert metadata["version"] == "v1" and model.predict([[0]])[0] == "no"
    record = json.loads(fs.cat_file(f"{store[5:]}/churn/aliases/champion.json"))
    assert record["version"] == "v1"
    # The deploy step serves a verified local copy of a version in an object store.
    folder = local_model_folder(second.uri)
    served, served_meta = load_model_folder(folder)
    assert served_meta["version"] == "v2" and served.predict([[0]])[0] == "yes"


def test_a_tampered_object_is_refused(bucket):
    fs, store = bucket
    registry = ModelRegistry(store, "churn")
    version = registry.register(_model("no"), {"schema": SCHEMA})
    fs.pipe_file(f"{version.uri[5:]}/{MODEL_FILE}", b"not the registered bytes")
    with pytest.raises(ModelIntegrityError, match="does not match the registered"):
        registry.load("v1")
    with pytest.raises(ModelIntegrityError, match="does not match the registered"):
        local_model_folder(version.uri)


def test_a_version_without_metadata_is_not_a_version(bucket):
    fs, store = bucket
    registry = ModelRegistry(store, "churn")
    # An interrupted write: the model is there, metadata.json (written last) is not.
    fs.pipe_file(f"{store[5:]}/churn/v1/{MODEL_FILE}", b"partial")
    assert registry.versions() == []
    assert registry.register(_model("no"), {"schema": SCHEMA}).version == "v2"
