"""The model store on S3, for real: a moto S3 server on 127.0.0.1, started and stopped here."""

import json

import pytest
from sklearn.dummy import DummyClassifier

from components.common.registry import (
    CLAIM_FILE,
    MODEL_FILE,
    ModelIntegrityError,
    ModelRegistry,
)
from components.deploy.logic import load_model_folder, local_model_folder
from tests.components.test_register import (
    assert_each_run_kept_its_version,
    race_two_registrations,
)

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


def test_two_registrations_racing_on_s3_get_distinct_intact_versions(bucket, monkeypatch):
    fs, store = bucket
    results = race_two_registrations(monkeypatch, store)
    assert sorted(v.version for v in results.values()) == ["v1", "v2"]
    registry = ModelRegistry(store, "churn")
    assert registry.versions() == ["v1", "v2"]
    assert_each_run_kept_its_version(registry, results)
    # Each number was claimed once, by the run that wrote it.
    assert all(fs.exists(f"{store[5:]}/churn/{v}/{CLAIM_FILE}") for v in ("v1", "v2"))


def test_a_claimed_number_is_skipped_and_not_a_version(bucket):
    fs, store = bucket
    registry = ModelRegistry(store, "churn")
    # A run that claimed v1 and has not written it yet (or died): v1 is not a version, and
    # the next registration neither lists it as one nor writes into it.
    fs.pipe_file(f"{store[5:]}/churn/v1/{CLAIM_FILE}", b"{}")
    assert registry.versions() == []
    assert registry.register(_model("no"), {"schema": SCHEMA}).version == "v2"
    assert registry.versions() == ["v2"]
    assert not fs.exists(f"{store[5:]}/churn/v1/{MODEL_FILE}")
