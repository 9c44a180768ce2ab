"""A run's own work in the registry: found again when a killed run is resumed (no second
version of the same model), and undone by Ctrl-C without undoing another run's work."""

from components.common.registry import ModelRegistry


def _register(registry: ModelRegistry, run_id: str, model: bytes) -> str:
    return registry.register_pickled(model, {"kfp_run_id": run_id}).version


def test_a_run_finds_the_version_it_registered_with_the_same_model(tmp_path):
    registry = ModelRegistry(str(tmp_path), "m")
    _register(registry, "run-a", b"model a")
    _register(registry, "run-b", b"model b")

    assert registry.find_registered("run-a", b"model a").version == "v1"
    assert registry.find_registered("run-b", b"model b").version == "v2"
    assert registry.find_registered("run-a", b"model b") is None  # another model
    assert registry.find_registered("run-c", b"model a") is None  # another run
    assert registry.find_registered("", b"model a") is None  # no run id: never matches


def test_undoing_a_run_keeps_what_another_run_did_at_the_same_time(tmp_path):
    registry = ModelRegistry(str(tmp_path), "m")
    _register(registry, "earlier", b"model 0")
    registry.promote("v1")
    snapshot = registry.snapshot()

    ours = _register(registry, "stopped", b"model 1")  # v2
    registry.set_alias("candidate", ours, "candidate")
    registry.promote(ours)
    theirs = _register(registry, "concurrent", b"model 2")  # v3
    registry.set_alias("candidate", theirs, "candidate")

    undone = registry.restore(snapshot, "stopped")

    assert undone == ["removed v2", "champion back to v1"]
    assert registry.versions() == ["v1", "v3"]
    assert registry.aliases() == {"champion": "v1", "candidate": "v3"}


def test_undoing_without_a_run_id_puts_everything_back(tmp_path):
    registry = ModelRegistry(str(tmp_path), "m")
    _register(registry, "earlier", b"model 0")
    snapshot = registry.snapshot()
    _register(registry, "stopped", b"model 1")
    _register(registry, "concurrent", b"model 2")

    registry.restore(snapshot)

    assert registry.versions() == ["v1"]
