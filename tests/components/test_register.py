import json
import multiprocessing

import pytest
from sklearn.dummy import DummyClassifier

from components.common.errors import PipelineInputError
from components.register.logic import (
    METADATA_FILE,
    MODEL_FILE,
    register_model,
    sha256_file,
)


def _model():
    return DummyClassifier().fit([[0], [1]], ["no", "yes"])


def test_versions_count_up_and_record_lineage(tmp_path):
    first = register_model(_model(), str(tmp_path), "churn", {"metrics": {"accuracy": 0.5}})
    second = register_model(_model(), f"file://{tmp_path}", "churn", {})
    assert (first.name, second.name) == ("v1", "v2")
    metadata = json.loads((first / METADATA_FILE).read_text())
    assert metadata["version"] == "v1" and metadata["name"] == "churn"
    assert metadata["metrics"] == {"accuracy": 0.5}
    assert metadata["files"][MODEL_FILE] == sha256_file(first / MODEL_FILE)
    assert metadata["packages"]["scikit-learn"]
    # Nothing but the version folders is left in the store.
    assert sorted(p.name for p in (tmp_path / "churn").iterdir()) == ["v1", "v2"]


def _register_in_child(store: str, queue) -> None:
    queue.put(register_model(_model(), store, "race", {}).name)


def test_concurrent_registrations_get_distinct_versions(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_register_in_child, args=(str(tmp_path), queue)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert all(worker.exitcode == 0 for worker in workers)
    names = sorted(queue.get(timeout=5) for _ in workers)
    assert names == ["v1", "v2", "v3", "v4"]
    for name in names:
        assert json.loads((tmp_path / "race" / name / METADATA_FILE).read_text())["version"] == name


@pytest.mark.parametrize("name", ["Churn", "churn_model", "-churn", ""])
def test_model_names_must_be_dns_labels(tmp_path, name):
    with pytest.raises(PipelineInputError, match="use lowercase letters"):
        register_model(_model(), str(tmp_path), name, {})
    assert not any(tmp_path.iterdir())
