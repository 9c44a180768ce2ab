"""What the tests that run `mlpipe run` as a user does share: a small, quick run config, one
reference run, and `mlpipe run` in its own session whose every process is recorded by PID while
it runs and stopped by PID afterwards, even when the test fails. The fixtures are in
tests/conftest.py (reference) and tests/faults/conftest.py (start_run)."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from components.common.registry import ModelRegistry
from components.common.step_cache import ENTRY_FILE, content_hash
from pipelines.demo_data import write_arrests_lake
from tests.conftest import write_config

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
HOOKS = Path(__file__).parent / "faults" / "hooks"
MODEL = "arrests-release"
# The steps as kfp.local runs them.
STEPS = (
    "plan",
    "ingest",
    "validate",
    "prepare",
    "bias",
    "tune",
    "train",
    "evaluate",
    "fairness",
    "gate",
    "export_onnx_model",
    "register",
    "deploy",
    "promote",
    "run_report",
    "notify",
)


def fast_config(path: Path, lake: Path, output_root: Path, **overrides) -> Path:
    """The demo's data and checks, with the smallest search: a run takes about 30 s."""
    return write_config(
        path,
        **{
            "data.source": str(lake),
            "output_root": str(output_root),
            "tuning.num_trials": 2,
            "tuning.families": ["logistic_regression"],
            "tuning.cv_folds": 2,
            "bias.bootstrap": 20,
            "evaluation.thresholds": {"roc_auc": 0.65},
            **overrides,
        },
    )


class MlpipeRun:
    """`mlpipe run` (or another `program`) in its own session (its own process group), output
    collected as it comes, and every descendant recorded while it runs."""

    def __init__(
        self,
        cwd: Path,
        *args: str,
        fault: str = "",
        extra_env: dict | None = None,
        program: tuple[str, ...] = (MLPIPE, "run"),
    ):
        env = {**os.environ, **(extra_env or {})}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HOOKS), *filter(None, [env.get("PYTHONPATH", "")])]
        )
        env["MLPIPE_TEST_FAULT"] = fault
        self.process = subprocess.Popen(
            [*program, *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.handle = psutil.Process(self.process.pid)
        self.seen: dict[int, psutil.Process] = {}
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _record(self) -> None:
        try:
            for process in self.handle.children(recursive=True):
                self.seen.setdefault(process.pid, process)
        except psutil.NoSuchProcess:
            pass

    def wait(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            self._record()
            if time.monotonic() > deadline:
                raise AssertionError("mlpipe run did not end:\n" + self.output)
            time.sleep(0.1)
        self._reader.join(timeout=10)
        return self.process.returncode

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def run_id(self) -> str:
        """The id `mlpipe run` printed first ("run ID (folder)" or "resuming run ID (...)")."""
        for line in self.lines:
            if line.startswith(("run ", "resuming run ")):
                return line.removeprefix("resuming ").split()[1]
        raise AssertionError("no run id printed:\n" + self.output)

    def leftovers(self) -> list[psutil.Process]:
        alive = []
        for process in self.seen.values():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        return alive

    def stop(self) -> None:
        """By PID: the run and every process it was seen with."""
        self._record()
        for process in [self.handle, *self.seen.values()]:
            try:
                process.kill()  # psutil checks that the PID was not reused
            except psutil.NoSuchProcess:
                pass
        try:
            self.process.wait(timeout=10)
        finally:
            self._reader.join(timeout=5)
            self.process.stdout.close()


def only_run_dir(output_root: Path) -> Path:
    (run_dir,) = (output_root / "runs").iterdir()
    return run_dir


def finished_steps(run_dir: Path) -> set[str]:
    return {p.stem for p in (run_dir / "steps" / "record").glob("*.json")}


def model_digest(output_root: Path, version: str) -> str:
    registry = ModelRegistry(str(output_root / "models"), MODEL)
    return registry.metadata(version)["files"]["model.joblib"]


def assert_step_store_is_whole(root: Path) -> None:
    """Every entry of a step store is complete: its entry file reads, and every file it lists
    has the bytes of its hash; nothing else is left (no writer's files without an entry)."""
    for key_dir in root.glob("??/*"):
        entry = json.loads((key_dir / ENTRY_FILE).read_text())
        writers = {p.name for p in key_dir.iterdir() if p.is_dir()}
        listed = {a["file"].split("/")[0] for a in entry["artifacts"].values()}
        assert writers <= listed, f"{key_dir}: files of a writer without an entry: {writers}"
        for artifact in entry["artifacts"].values():
            if artifact["hash"] != "absent":
                assert content_hash(key_dir / artifact["file"]) == artifact["hash"], key_dir


class Reference:
    """One uninterrupted run of the fast config with the step cache on: `output` is what it
    printed, `digest` its model's, `root` its output root (registry, step cache, runs)."""

    RECORD = "reference.json"

    def __init__(self, base: Path):
        self.lake = base / "data" / "arrests"
        self.root = base / "out"
        record = base / self.RECORD
        if record.exists():  # made by another test process (tests/conftest.py: reference)
            made = json.loads(record.read_text())
            self.output, self.digest = made["output"], made["digest"]
            return
        write_arrests_lake(self.lake)
        run = MlpipeRun(
            base, "--config", str(self.config(base / "run.yaml", self.root)), "--no-serve"
        )
        try:
            code = run.wait()
        finally:
            run.stop()
        assert code == 0, run.output
        self.output = run.output
        self.digest = model_digest(self.root, "v1")
        record.write_text(json.dumps({"output": self.output, "digest": self.digest}))

    def config(self, path: Path, output_root: Path, **overrides) -> Path:
        return fast_config(path, self.lake, output_root, **overrides)

    def copy_root(self, destination: Path) -> Path:
        """Its output root (registry, step cache, runs) as a copy of its own: files, not links."""
        shutil.copytree(self.root, destination)
        return destination


def cached_file(cache: Path, step: str, artifact: str) -> Path:
    """The stored file of one output of one step in a step store."""
    for entry_file in cache.glob(f"??/*/{ENTRY_FILE}"):
        entry = json.loads(entry_file.read_text())
        if entry["step"] == step:
            return entry_file.parent / entry["artifacts"][artifact]["file"]
    raise AssertionError(f"no {step} in {cache}")
