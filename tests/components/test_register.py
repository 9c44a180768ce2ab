"""The model registry: versions, lineage, checksums, aliases under concurrency, and the CLI."""

import json
import multiprocessing
import threading
from pathlib import Path

import pytest
from sklearn.dummy import DummyClassifier

from components.common.errors import PipelineInputError
from components.common.registry import (
    METADATA_FILE,
    MODEL_FILE,
    ModelIntegrityError,
    ModelRegistry,
    registry_for_version_uri,
    sha256_file,
)
from components.deploy.logic import load_model_folder
from components.register.logic import lineage, register_model
from pipelines.cli import main

SCHEMA = {"target": "y", "task": "classification", "features": [{"name": "x", "kind": "numeric"}]}


def _model(answer: str = "yes"):
    return DummyClassifier(strategy="constant", constant=answer).fit([[0], [1]], ["no", "yes"])


def test_versions_count_up_and_record_lineage(tmp_path):
    first = register_model(_model(), str(tmp_path), "churn", {"metrics": {"accuracy": 0.5}})
    second = register_model(_model(), f"file://{tmp_path}", "churn", {})
    assert (first.version, second.version) == ("v1", "v2")
    folder = Path(first.uri)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["version"] == "v1" and metadata["name"] == "churn"
    assert metadata["metrics"] == {"accuracy": 0.5}
    assert metadata["files"][MODEL_FILE] == sha256_file(folder / MODEL_FILE)
    assert metadata["packages"]["scikit-learn"] and "git_commit" in metadata
    # Nothing but the version folders is left in the store.
    assert sorted(p.name for p in (tmp_path / "churn").iterdir()) == ["v1", "v2"]


def test_lineage_records_data_config_metrics_and_the_gate():
    gate = {
        "blessed": False,
        "reason": "not blessed: x",
        "checks": [],
        "champion": {"version": "v1"},
    }
    record = lineage(
        {"target": "y"},
        {"source_uri": "s3://lake/t", "content_hash": "sha256:ab", "rows": 10, "watermark": "{}"},
        {"family": "random_forest"},
        {"metrics": {"roc_auc": 0.8}, "cv": {"folds": 3}, "threshold": {"rule": "fixed"}},
        {"gate": {"passed": True}},
        gate,
        {"model_name": "m"},
        "run-123",
    )
    assert record["data"] == {
        "source_uri": "s3://lake/t",
        "content_hash": "sha256:ab",
        "rows": 10,
        "watermark": "{}",
    }
    assert record["metrics"] == {"roc_auc": 0.8} and record["cv"] == {"folds": 3}
    assert record["deployable"] is False and record["gate"]["reason"] == "not blessed: x"
    assert record["champion_at_registration"] == "v1" and record["kfp_run_id"] == "run-123"
    assert record["config"] == {"model_name": "m"}


def _register_in_child(store: str, queue) -> None:
    queue.put(register_model(_model(), store, "race", {}).version)


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


def race_two_registrations(monkeypatch, store: str) -> dict:
    """Two threads register at once (models answering "no" and "yes"), both seeing the same
    versions before either writes (a barrier right after each lists the taken numbers), so both
    pick the same next number: a real collision, not one left to timing."""
    barrier = threading.Barrier(2, timeout=30)
    listed = threading.local()
    taken_numbers = ModelRegistry._taken_numbers

    def listed_together(self):
        numbers = taken_numbers(self)
        if not getattr(listed, "once", False):  # only the first listing of each thread waits
            listed.once = True
            barrier.wait()
        return numbers

    monkeypatch.setattr(ModelRegistry, "_taken_numbers", listed_together)
    results, errors = {}, []

    def register(answer):
        try:
            registry = ModelRegistry(store, "churn")
            results[answer] = registry.register(_model(answer), {"schema": SCHEMA, "run": answer})
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=register, args=(answer,)) for answer in ("no", "yes")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(results) == 2
    return results


def assert_each_run_kept_its_version(registry: ModelRegistry, results: dict) -> None:
    """Each version holds its own run's model and lineage, checksums verified: neither run
    wrote into the other's version."""
    for answer, version in results.items():
        model, metadata = registry.load(version.version)
        assert metadata["run"] == answer and metadata["version"] == version.version
        assert model.predict([[0]])[0] == answer
        assert set(registry.verified_files(version.version)) == {MODEL_FILE}


def test_two_registrations_racing_on_a_folder_get_distinct_intact_versions(tmp_path, monkeypatch):
    results = race_two_registrations(monkeypatch, str(tmp_path))
    assert sorted(v.version for v in results.values()) == ["v1", "v2"]
    registry = ModelRegistry(str(tmp_path), "churn")
    assert registry.versions() == ["v1", "v2"]
    assert_each_run_kept_its_version(registry, results)
    assert sorted(p.name for p in (tmp_path / "churn").iterdir()) == ["v1", "v2"]


@pytest.mark.parametrize("name", ["Churn", "churn_model", "-churn", ""])
def test_model_names_must_be_dns_labels(tmp_path, name):
    with pytest.raises(PipelineInputError, match="use lowercase letters"):
        register_model(_model(), str(tmp_path), name, {})
    assert not any(tmp_path.iterdir())


def test_promote_and_rollback_move_the_champion_and_keep_history(tmp_path):
    registry = ModelRegistry(str(tmp_path), "churn")
    for answer in ("no", "yes", "no"):
        registry.register(_model(answer), {})
    assert registry.aliases() == {}
    registry.promote("v1", "first")
    registry.promote("v3", "better")
    assert registry.alias("champion")["version"] == "v3"
    assert [h["version"] for h in registry.alias("champion")["history"]] == ["v1"]
    model, metadata = registry.load("champion")
    assert metadata["version"] == "v3" and model.predict([[0]])[0] == "no"
    rolled = registry.rollback()
    assert rolled["version"] == "v1" and "from v3" in rolled["reason"]
    assert registry.resolve("champion") == "v1"
    with pytest.raises(PipelineInputError, match="no earlier version to roll back to"):
        registry.rollback()
    with pytest.raises(PipelineInputError, match="no version v9"):
        registry.promote("v9")
    with pytest.raises(PipelineInputError, match="alias 'production'"):
        registry.set_alias("production", "v1", "")


def _promote_many(store: str, version: str, times: int) -> None:
    registry = ModelRegistry(store, "race")
    for _ in range(times):
        registry.promote(version, f"by {version}")


def _read_many(store: str, times: int, queue) -> None:
    registry = ModelRegistry(store, "race")
    seen = set()
    for _ in range(times):
        seen.add(registry.resolve("champion"))  # raises on a half-written alias
    queue.put(sorted(seen))


def test_two_processes_promoting_at_once_never_leave_a_broken_alias(tmp_path):
    registry = ModelRegistry(str(tmp_path), "race")
    registry.register(_model("no"), {})
    registry.register(_model("yes"), {})
    registry.promote("v1", "start")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    times = 60
    workers = [
        context.Process(target=_promote_many, args=(str(tmp_path), "v1", times)),
        context.Process(target=_promote_many, args=(str(tmp_path), "v2", times)),
        context.Process(target=_read_many, args=(str(tmp_path), 300, queue)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert set(queue.get(timeout=5)) <= {"v1", "v2"}
    record = registry.alias("champion")
    # The lock serialises read-modify-write: every one of the 120 moves is in the history.
    assert len(record["history"]) == 2 * times
    assert record["version"] in {"v1", "v2"}
    assert not list((tmp_path / "race" / "aliases").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "replace"])
def test_a_tampered_model_file_is_refused_before_unpickling(tmp_path, damage):
    registry = ModelRegistry(str(tmp_path), "churn")
    version = registry.register(_model(), {"schema": SCHEMA})
    path = Path(version.uri) / MODEL_FILE
    data = path.read_bytes()
    if damage == "flip":
        path.write_bytes(data[:-20] + bytes([data[-20] ^ 1]) + data[-19:])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # a different, perfectly valid pickle in its place
        other = ModelRegistry(str(tmp_path / "other"), "churn").register(_model("no"), {})
        path.write_bytes((Path(other.uri) / MODEL_FILE).read_bytes())
    with pytest.raises(ModelIntegrityError, match=r"model.joblib: SHA-256 .* does not match"):
        registry.load("v1")
    with pytest.raises(ModelIntegrityError, match="refusing to load it"):
        load_model_folder(version.uri)


def test_a_metadata_without_checksums_is_refused(tmp_path):
    registry = ModelRegistry(str(tmp_path), "churn")
    version = registry.register(_model(), {})
    meta_path = Path(version.uri) / METADATA_FILE
    metadata = json.loads(meta_path.read_text())
    del metadata["files"]
    meta_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelIntegrityError, match="does not list model.joblib"):
        registry.load("v1")


def test_diff_shows_metrics_side_by_side_and_changed_config(tmp_path):
    registry = ModelRegistry(str(tmp_path), "churn")
    registry.register(_model(), {"metrics": {"f1": 0.5}, "config": {"tuning": {"trials": 4}}})
    registry.register(_model(), {"metrics": {"f1": 0.6}, "config": {"tuning": {"trials": 8}}})
    diff = registry.diff("v1", "v2")
    assert diff["metrics"] == {"f1": (0.5, 0.6)}
    assert diff["config"] == {"tuning.trials": (4, 8)}


def test_version_uri_gives_back_its_registry(tmp_path):
    version = ModelRegistry(str(tmp_path), "churn").register(_model(), {})
    registry, name = registry_for_version_uri(version.uri)
    assert (registry.name, name) == ("churn", "v1")
    with pytest.raises(PipelineInputError, match="unsupported scheme 'ftp'"):
        ModelRegistry("ftp://host/store", "churn")


def test_models_cli_lists_promotes_rolls_back_and_diffs(tmp_path, capsys):
    store = str(tmp_path)
    registry = ModelRegistry(store, "churn")
    registry.register(_model(), {"metrics": {"roc_auc": 0.7}, "gate": {"blessed": True}})
    registry.register(_model(), {"metrics": {"roc_auc": 0.8}, "gate": {"blessed": False}})
    where = ["--store", store, "--name", "churn"]
    assert main(["models", "promote", "v1", *where]) == 0
    assert main(["models", "promote", "v2", *where]) == 0
    assert "champion v1 -> v2" in capsys.readouterr().out
    assert main(["models", "list", *where]) == 0
    listing = capsys.readouterr().out
    assert "v1" in listing and "champion" in listing and "roc_auc=0.8000" in listing
    assert main(["models", "rollback", *where]) == 0
    assert "champion v2 -> v1" in capsys.readouterr().out
    assert main(["models", "diff", "v1", "v2", *where]) == 0
    diff = capsys.readouterr().out
    assert "0.7000" in diff and "0.8000" in diff
    assert main(["models", "show", "champion", *where]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v1"


def test_models_cli_errors_are_one_line(tmp_path, capsys):
    where = ["--store", str(tmp_path), "--name", "churn"]
    assert main(["models", "promote", "v3", *where]) == 2
    err = capsys.readouterr().err.strip()
    assert "no version v3" in err and "\n" not in err
    assert main(["models", "list"]) == 2
    assert "give --config, or both --store and --name" in capsys.readouterr().err


def test_rollback_with_deploy_commits_the_previous_champion_by_gitops(tmp_path, capsys):
    import subprocess

    import yaml

    from tests.conftest import write_config

    def git(*args, cwd):
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    bare = tmp_path / "gitops.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    git("clone", "--quiet", str(bare), str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("apps\n")
    git("add", "README.md", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "seed", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:main", cwd=seed)

    store = tmp_path / "models"
    registry = ModelRegistry(str(store), "arrests-release")
    registry.register(_model("no"), {"schema": SCHEMA})
    registry.register(_model("yes"), {"schema": SCHEMA})
    config = write_config(
        tmp_path / "run.yaml",
        model_store=str(store),
        **{
            "deploy.target": "gitops",
            "deploy.storage_uri": "s3://mlpipe-models",
            "deploy.gitops_repo": f"file://{bare}",
        },
    )
    assert main(["models", "promote", "v1", "--config", str(config), "--deploy"]) == 0
    assert main(["models", "promote", "v2", "--config", str(config), "--deploy"]) == 0
    assert main(["models", "rollback", "--config", str(config), "--deploy"]) == 0
    out = capsys.readouterr().out
    assert "champion v2 -> v1" in out and "rolled out v1 by gitops: git:" in out
    pushed = yaml.safe_load(git("show", "main:apps/mlpipe/arrests-release.yaml", cwd=bare))
    (container,) = pushed["spec"]["predictor"]["containers"]
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["STORAGE_URI"]["value"] == "s3://mlpipe-models/arrests-release/v1"
    # The admin token comes from its Secret, never as a value in the committed manifest.
    assert "value" not in env["MLPIPE_ADMIN_TOKEN"]
    # Without a cluster target there is nothing to roll out: one line, exit 2.
    local = write_config(tmp_path / "local.yaml", model_store=str(store))
    assert main(["models", "rollback", "--config", str(local), "--deploy"]) == 2
    assert "deploy.target is local" in capsys.readouterr().err
    assert registry.resolve("champion") == "v1"  # checked before the alias moved


def _files(root: Path) -> dict[str, bytes | None]:
    """Every path under `root`, with each file's bytes (None for a folder)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_restore_undoes_a_stopped_runs_version_and_alias_moves_byte_for_byte(tmp_path):
    # What an interrupted `mlpipe run` must undo: its register step wrote v2 and the candidate,
    # its promote step moved the champion, and a killed step left a half-written version.
    registry = ModelRegistry(str(tmp_path), "churn")
    registry.register(_model("no"), {})
    registry.promote("v1", "first")
    before_files = _files(tmp_path)
    snapshot = registry.snapshot()

    registry.register(_model("yes"), {})
    registry.set_alias("candidate", "v2", "registered")
    registry.promote("v2", "better")
    (tmp_path / "churn" / ".staging-killed").mkdir()
    (tmp_path / "churn" / ".staging-killed" / MODEL_FILE).write_bytes(b"half")
    (tmp_path / "churn" / "aliases" / "champion.json.abc.tmp").write_bytes(b"{")

    assert sorted(registry.restore(snapshot)) == [
        "champion back to v1",
        "removed candidate",
        "removed v2",
    ]
    assert _files(tmp_path) == before_files
    assert registry.versions() == ["v1"] and registry.aliases() == {"champion": "v1"}
    assert registry.restore(snapshot) == []  # nothing left to undo


def test_restore_removes_a_model_folder_that_did_not_exist(tmp_path):
    registry = ModelRegistry(str(tmp_path), "churn")
    snapshot = registry.snapshot()
    registry.register(_model(), {})
    registry.promote("v1", "first")
    assert sorted(registry.restore(snapshot)) == ["removed champion", "removed v1"]
    assert list(tmp_path.iterdir()) == []


def test_a_proven_graph_is_registered_with_its_parity_sample(tmp_path):
    """edge_files: the graph and up to 1,000 held-out feature rows (evenly spread, missing
    values kept) for a graph whose parity passed; the graph alone for one that did not; nothing
    without one. Every stored file is checksummed with the version."""
    import io

    import numpy as np
    import pandas as pd

    from components.common.registry import ONNX_FILE, PARITY_ROWS_FILE
    from components.register.logic import edge_files

    test = pd.DataFrame({"x": np.arange(2500.0), "y": ["no", "yes"] * 1250})
    test.loc[3, "x"] = np.nan
    passed = {"converted": True, "parity_passed": True, "max_abs_diff": 1e-7}
    files, record = edge_files(passed, lambda: b"graph", lambda: test, SCHEMA)
    assert set(files) == {ONNX_FILE, PARITY_ROWS_FILE} and files[ONNX_FILE] == b"graph"
    sample = pd.read_parquet(io.BytesIO(files[PARITY_ROWS_FILE]))
    assert list(sample.columns) == ["x"] and len(sample) == record["parity_rows"] == 1000
    assert sample["x"].iloc[0] == 0 and sample["x"].iloc[-1] == 2499  # spread over the split
    assert record["parity_passed"] is True and record["max_abs_diff"] == 1e-7

    small = test.iloc[:5]
    files, record = edge_files(passed, lambda: b"graph", lambda: small, SCHEMA)
    sample = pd.read_parquet(io.BytesIO(files[PARITY_ROWS_FILE]))
    assert record["parity_rows"] == 5 and np.isnan(sample["x"].iloc[3])

    def unread():
        raise AssertionError("the test split is read only for a proven graph")

    failed = {"converted": True, "parity_passed": False}
    files, record = edge_files(failed, lambda: b"graph", unread, SCHEMA)
    assert set(files) == {ONNX_FILE} and "parity_rows" not in record
    skipped = {"converted": False, "reason": "not convertible: X"}
    assert edge_files(skipped, unread, unread, SCHEMA) == ({}, skipped)

    files, record = edge_files(passed, lambda: b"graph", lambda: test, SCHEMA)
    version = ModelRegistry(str(tmp_path), "churn").register(_model(), {"onnx": record}, files)
    metadata = json.loads((Path(version.uri) / METADATA_FILE).read_text())
    assert metadata["files"][PARITY_ROWS_FILE] == sha256_file(Path(version.uri) / PARITY_ROWS_FILE)
