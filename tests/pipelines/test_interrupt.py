"""Ctrl-C and SIGTERM stop `mlpipe run` within seconds: every process the run started (the
steps, the tune step's Ray) is gone, the registry is as it was, and the last line says how to
resume. The issue: SIGINT was ignored and the run went on to move the champion alias;
SIGTERM left the tune step and its Ray running for about 30 s.

Each test stops what it started by PID (psutil handles recorded while the run ran), in
`finally`, even when it fails; never by name."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from sklearn.dummy import DummyClassifier

from components.common.registry import ModelRegistry
from pipelines.local_run import stop_descendants
from tests.conftest import write_config

MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
MODEL = "arrests-release"


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


class Run:
    """`mlpipe run` in its own session, its output read line by line as it comes."""

    def __init__(self, tmp_path: Path, config: Path, ignore_sigint: bool = False):
        self.argv = ["run", "--config", str(config), "--no-serve"]
        # A shell starts a background job with SIGINT ignored; Python then keeps it ignored.
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        self.process = subprocess.Popen(
            [MLPIPE, *self.argv],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=ignore,
        )
        self.handle = psutil.Process(self.process.pid)
        self.lines: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def descendants(self) -> list[psutil.Process]:
        """The run's descendants now; every one is also kept in `seen` for the cleanup."""
        try:
            found = self.handle.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for process in found:
            self.seen.setdefault(process.pid, process)
        return found

    def wait_for_ray(self, timeout: float = 120) -> list[psutil.Process]:
        """Once the tune step started and its Ray is up (a raylet among the descendants, and
        two seconds for it to start workers), the descendants."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "\n".join(self.lines)
            if any("tune: started" in line for line in self.lines):
                if any(_name(p) == "raylet" for p in self.descendants()):
                    time.sleep(2)
                    return self.descendants()
            time.sleep(0.2)
        raise AssertionError("the tune step's Ray did not start:\n" + "\n".join(self.lines))

    def kill_everything(self) -> None:
        """By PID: the run and every descendant it was seen with."""
        self.descendants()
        for process in [self.handle, *self.seen.values()]:
            try:
                process.kill()  # psutil checks the PID was not reused
            except psutil.NoSuchProcess:
                pass
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        self.process.stdout.close()


def stop_and_measure(run: Run, send) -> tuple[int, float, float, list[psutil.Process]]:
    """Record the descendants, send the signal; the exit code, seconds to exit, seconds until
    the last recorded descendant is gone, and those still running after 15 s."""
    before = run.wait_for_ray()
    sent = time.monotonic()
    send()
    code = run.process.wait(timeout=15)
    exited = time.monotonic() - sent
    while (alive := [p for p in before if _running(p)]) and time.monotonic() - sent < 15:
        time.sleep(0.1)
    gone = time.monotonic() - sent
    run._reader.join(timeout=5)
    return code, exited, gone, alive


def _config(tmp_path: Path, demo_lake: Path) -> Path:
    return write_config(
        tmp_path / "run.yaml",
        **{
            "data.source": str(demo_lake),
            "output_root": str(tmp_path / "out"),
            "tuning.num_trials": 8,
            "tuning.families": ["logistic_regression", "random_forest"],
            "evaluation.thresholds": {"roc_auc": 0.65},
        },
    )


def _store_files(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def assert_stopped_cleanly(run: Run, code: int, exited: float, gone: float, alive, expected: int):
    output = "\n".join(run.lines)
    assert code == expected, output
    assert exited < 10, f"exited {exited:.1f} s after the signal"
    assert not alive, f"still running: {[(p.pid, p.name()) for p in alive]}"
    assert gone < 10, f"the last process was gone {gone:.1f} s after the signal"
    assert "Traceback" not in output
    last = run.lines[-1]
    assert last.startswith("interrupted: stopped "), output
    assert "the registry is as it was" in last
    (started,) = [line for line in run.lines if line.startswith("run ")]
    run_id = started.split()[1]
    config = run.argv[run.argv.index("--config") + 1]
    assert last.endswith(
        f"resume with: mlpipe run --config {config} --resume {run_id} --no-serve"
    ), last


@pytest.mark.e2e
def test_ctrl_c_in_a_background_job_stops_the_run_and_its_ray(tmp_path, demo_lake):
    # The case: started with SIGINT ignored (as `mlpipe run ... &` from a script is),
    # Ctrl-C to the whole process group was ignored and the run registered and promoted.
    run = Run(tmp_path, _config(tmp_path, demo_lake), ignore_sigint=True)
    try:
        outcome = stop_and_measure(run, lambda: os.killpg(run.process.pid, signal.SIGINT))
        assert_stopped_cleanly(run, *outcome, expected=130)
        registry = ModelRegistry(str(tmp_path / "out" / "models"), MODEL)
        assert registry.versions() == [] and registry.aliases() == {}
        assert not (tmp_path / "out" / "models" / MODEL).exists()
    finally:
        run.kill_everything()


@pytest.mark.e2e
def test_ctrl_c_keeps_an_existing_champion_and_its_alias_files_byte_for_byte(tmp_path, demo_lake):
    store = tmp_path / "out" / "models"
    registry = ModelRegistry(str(store), MODEL)
    model = DummyClassifier(strategy="constant", constant="Yes").fit([[0], [1]], ["No", "Yes"])
    registry.register(model, {})
    registry.set_alias("candidate", "v1", "registered")
    registry.promote("v1", "first")
    before = _store_files(store)
    run = Run(tmp_path, _config(tmp_path, demo_lake))
    try:
        outcome = stop_and_measure(run, lambda: os.killpg(run.process.pid, signal.SIGINT))
        assert_stopped_cleanly(run, *outcome, expected=130)
        assert registry.versions() == ["v1"]
        assert registry.aliases() == {"champion": "v1", "candidate": "v1"}
        assert _store_files(store) == before
    finally:
        run.kill_everything()


@pytest.mark.e2e
def test_sigterm_to_the_parent_alone_stops_the_tune_step_and_its_ray(tmp_path, demo_lake):
    # The issue: SIGTERM stopped the parent but left the tune step and Ray running for ~30 s.
    run = Run(tmp_path, _config(tmp_path, demo_lake))
    try:
        outcome = stop_and_measure(run, lambda: run.process.send_signal(signal.SIGTERM))
        assert_stopped_cleanly(run, *outcome, expected=143)
        registry = ModelRegistry(str(tmp_path / "out" / "models"), MODEL)
        assert registry.versions() == [] and registry.aliases() == {}
    finally:
        run.kill_everything()


def test_stop_descendants_kills_what_ignores_sigterm_and_spares_older_processes():
    older = psutil.Popen(["sleep", "60"])  # there before the "run": not the run's to stop
    spare = frozenset(p.pid for p in psutil.Process().children(recursive=True))
    # A step that ignores SIGTERM, as its child does (the disposition is inherited).
    stubborn = psutil.Popen(["sh", "-c", "trap '' TERM; sleep 60 & wait"])
    started = [stubborn]
    try:
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            started = [stubborn, *stubborn.children()]
            time.sleep(0.05)
        sent = time.monotonic()
        assert stop_descendants(spare, grace=1.0) == 2
        assert 1.0 <= time.monotonic() - sent < 5
        assert not [p for p in started if _running(p)]
        assert _running(older)
    finally:
        for process in [older, *started]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        older.wait(timeout=5)
