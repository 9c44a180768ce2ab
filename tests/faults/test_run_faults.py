"""Faults a run must survive, each with its expected outcome and a check that nothing is lost or
corrupted: a step that raises, Ctrl-C at each stage, a full disk, a flipped byte, two runs at
once on one output root. (SIGKILL in each step: test_kill_and_resume.py; an object store that
goes away: tests/components/test_object_store_faults.py.)"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from components.common.errors import PipelineInputError
from components.common.registry import ModelRegistry
from tests.mlpipe_runs import (
    MLPIPE,
    MODEL,
    assert_step_store_is_whole,
    cached_file,
    fast_config,
    finished_steps,
    model_digest,
    only_run_dir,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def _files(root: Path) -> dict[str, bytes]:
    """The registry's files, byte for byte (an empty folder holds no version and no alias; the
    aliases' lock file stays, as another run may hold it)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_a_step_that_raises_fails_the_run_naming_it_and_promotes_nothing(
    tmp_path, reference, start_run
):
    # A store with champion v1; the steps before deploy come from its cache in seconds.
    root = reference.copy_root(tmp_path / "out")
    aliases = _files(root / "models" / MODEL / "aliases")
    config = reference.config(tmp_path / "run.yaml", root)
    run = start_run(tmp_path, "--config", str(config), "--no-serve", fault="raise:deploy")

    assert run.wait() == 1, run.output
    run_dir = root / "runs" / run.run_id
    assert (
        "error: pipeline step failed: deploy: RuntimeError: injected fault in deploy (traceback "
        "in the run's log)" in run.output
    )
    assert f"continue with: mlpipe run --config {config} --resume {run_dir.name}" in run.output
    assert "Traceback" not in run.output
    assert "Traceback" in (run_dir / "pipeline.log").read_text()
    registry = ModelRegistry(str(root / "models"), MODEL)
    # Registered as the candidate, as every model is; never promoted.
    assert registry.aliases() == {"champion": "v1", "candidate": "v2"}
    assert _files(root / "models" / MODEL / "aliases")["champion.json"] == aliases["champion.json"]
    assert json.loads((run_dir / "state.json").read_text())["state"] == "failed"
    # The failed step left no output behind for a resumed run or a later step to read.
    assert not [
        p for p in (run_dir / "artifacts").glob("*/deploy/*") if p.name != "executor_output.json"
    ]
    assert {"register", "gate", "train"} <= finished_steps(run_dir)
    assert "deploy" not in finished_steps(run_dir) and "promote" not in finished_steps(run_dir)


# The product's stages: ingestion, preparation, training, deployment (whose rollback removes
# the version that register wrote in the same resumed execution).
STAGES = ("ingest", "prepare", "tune", "deploy")


def test_ctrl_c_at_each_stage_stops_the_run_and_resume_finishes_it(tmp_path, demo_lake, start_run):
    root = tmp_path / "out"
    config = str(fast_config(tmp_path / "run.yaml", demo_lake, root))
    args = ["--config", config, "--no-serve"]
    for number, step in enumerate(STAGES):
        resume = ["--resume", only_run_dir(root).name] if number else []
        registry_before = _files(root / "models")
        run = start_run(tmp_path, *args, *resume, fault=f"sigint:{step}")

        assert run.wait(timeout=120) == 130, f"Ctrl-C in {step}:\n{run.output}"
        run_dir = only_run_dir(root)
        assert not run.leftovers(), f"Ctrl-C in {step} left {run.leftovers()}"
        assert "Traceback" not in run.output
        last = run.lines[-1]
        assert last.startswith("interrupted: stopped ") and "the registry is as it was" in last
        assert last.endswith(
            f"resume with: mlpipe run --config {config} --resume {run_dir.name} --no-serve"
        ), last
        assert _files(root / "models") == registry_before, f"Ctrl-C in {step}"
        assert json.loads((run_dir / "state.json").read_text())["state"] == "interrupted"
        assert step not in finished_steps(run_dir)

    final = start_run(tmp_path, *args, "--resume", only_run_dir(root).name)
    assert final.wait() == 0, final.output
    registry = ModelRegistry(str(root / "models"), MODEL)
    assert registry.versions() == ["v1"]
    assert registry.aliases() == {"candidate": "v1", "champion": "v1"}
    assert_step_store_is_whole(only_run_dir(root) / "steps")


def test_a_full_disk_fails_with_one_line_and_leaves_nothing_half_written(tmp_path, demo_lake):
    """The output root on a 256 KB tmpfs, in a mount namespace of the test's own (root, or
    user namespaces): the mount and everything on it go when the namespace ends."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    root, copy = tmp_path / "out", tmp_path / "copy"
    root.mkdir()
    config = fast_config(tmp_path / "run.yaml", demo_lake, root)
    script = (
        f'mount -t tmpfs -o size=256k tmpfs "{root}" && '
        f'"{MLPIPE}" run --config "{config}" --no-serve > "{tmp_path}/console.txt" 2>&1; '
        f'echo $? > "{tmp_path}/code"; cp -a "{root}/." "{copy}/"'
    )
    subprocess.run(["unshare", "--mount", "sh", "-c", script], check=True, timeout=300)

    console = (tmp_path / "console.txt").read_text()
    assert (tmp_path / "code").read_text().strip() == "1", console
    errors = [line for line in console.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, console
    assert errors[0].startswith("error: pipeline step failed: "), console
    assert "no space left on the device writing the step's outputs under " in errors[0]
    assert "[Errno 28] No space left on device" in errors[0]
    assert "Traceback" not in console
    # Nothing half-written: every artifact the run kept is marked and whole (the step
    # runner checks that a step's inputs match their marks), no temporary file is left,
    # the step store holds whole entries only, and nothing was registered.
    leftovers = [p for p in copy.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]
    assert not leftovers
    if (copy / "cache").exists():
        assert_step_store_is_whole(copy / "cache")
    assert ModelRegistry(str(copy / "models"), MODEL).versions() == []


def test_a_flipped_byte_is_found_by_its_hash_and_never_used(tmp_path, reference, start_run):
    root = reference.copy_root(tmp_path / "out")
    config = reference.config(tmp_path / "run.yaml", root)
    # A byte of the training split flips in the step cache, in place, as a disk error would.
    train = cached_file(root / "cache", "prepare", "train")
    with open(train, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0x01]))

    run = start_run(tmp_path, "--config", str(config), "--no-serve")
    assert run.wait() == 0, run.output
    assert "prepare: a stored result" in run.output and "failed its hash check" in run.output
    assert "validate: reused from run" in run.output  # untouched steps still come from cache
    assert model_digest(root, "v2") == reference.digest

    # A byte of a registered model flips: the registry refuses to unpickle it.
    model = root / "models" / MODEL / "v1" / "model.joblib"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(PipelineInputError, match="model.joblib"):
        ModelRegistry(str(root / "models"), MODEL).load("v1")


def test_two_runs_at_once_on_one_output_root_both_finish(tmp_path, reference, start_run):
    # A warm step cache, and a gate margin that neither has run with (train takes it, for its
    # threshold rule): both read the same cached entries, then write the same new keys (train,
    # evaluate, export, fairness) at the same time.
    root = reference.copy_root(tmp_path / "out")
    config = reference.config(tmp_path / "run.yaml", root, **{"evaluation.margin": 0.02})
    runs = [start_run(tmp_path, "--config", str(config), "--no-serve") for _ in range(2)]
    for run in runs:
        assert run.wait() == 0, run.output
        assert "tune: reused from run" in run.output and "train: reused" not in run.output

    registry = ModelRegistry(str(root / "models"), MODEL)
    assert registry.versions() == ["v1", "v2", "v3"]
    new_runs = {p.name for p in (root / "runs").iterdir()} - {registry.metadata("v1")["kfp_run_id"]}
    assert {registry.metadata(v)["kfp_run_id"] for v in ("v2", "v3")} == new_runs
    assert model_digest(root, "v2") == model_digest(root, "v3")
    assert_step_store_is_whole(root / "cache")
    for run_dir in (root / "runs").iterdir():
        if run_dir.name in new_runs:
            assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"
            assert_step_store_is_whole(run_dir / "steps")
