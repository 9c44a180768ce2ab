"""Faults during tuning: a trial that raises, a worker process killed mid-trial, a driver that dies.

Every Ray process here is started by the test (or by the code under test, which stops it), on
127.0.0.1, and stopped by handle or PID; the killed processes are our own descendants, found by
PID, never by name across the machine.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from components.prepare.logic import build_preprocessor
from components.tune.logic import tune_model
from tests.components.conftest import descendants

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ray
def test_a_trial_that_raises_is_recorded_as_failed_and_tuning_goes_on(loans, loans_schema):
    best, trials = tune_model(
        loans,
        loans_schema,
        ["random_forest"],
        num_trials=6,
        cv_folds=2,
        metric="roc_auc",
        num_cpus=2,
        seed=0,
        # A name that exists with a value scikit-learn rejects: only known when the trial fits.
        space={"random_forest": {"n_estimators": 20, "max_features": {"choice": ["sqrt", "most"]}}},
        max_failures=0,
        preprocessor=build_preprocessor(loans_schema),
    )
    failed = trials[trials["status"] == "failed"]
    done = trials[trials["status"] == "done"]
    assert len(failed) >= 1 and len(done) >= 1 and len(trials) == 6
    assert failed["error"].str.contains("max_features").all(), failed["error"].tolist()
    assert done["error"].isna().all()
    assert best["failed_trials"] == len(failed)
    assert json.loads(trials.loc[done.index[0], "params"])["max_features"] == "sqrt"


def _trial_workers(root: psutil.Process) -> list[psutil.Process]:
    """Our Ray's trial actors: descendants of this process whose title names the trainable."""
    found = []
    for proc in descendants(root):
        try:
            if "ImplicitFunc" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


@pytest.mark.ray
def test_a_worker_killed_mid_trial_is_retried_and_the_run_completes(loans, loans_schema):
    me = psutil.Process()
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_worker():
        # Wait for a trial actor, give it a moment to be inside its trial, then SIGKILL it.
        while not stop.is_set() and not killed:
            workers = _trial_workers(me)
            if workers:
                time.sleep(0.5)
                try:
                    workers[0].send_signal(signal.SIGKILL)
                    killed.append(workers[0].pid)
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    try:
        best, trials = tune_model(
            loans,
            loans_schema,
            ["random_forest"],
            num_trials=4,
            cv_folds=2,
            metric="roc_auc",
            num_cpus=2,
            seed=0,
            # A few seconds per trial: the kill, half a second after the worker appears, must
            # land inside its first trial, or the worker may have finished one already.
            space={"random_forest": {"n_estimators": 1000}},
            max_failures=2,
            preprocessor=build_preprocessor(loans_schema),
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no trial worker appeared to kill"
    assert len(trials) == 4 and (trials["status"] == "done").all(), trials
    assert best["failed_trials"] == 0
    # The killed worker delivered no final result: another process finished its trial.
    assert killed[0] not in set(trials["pid"])


DRIVER = """
import sys
from tests.conftest import make_loans
from components.validate.logic import validate_table
from components.prepare.logic import build_preprocessor
from components.tune.logic import tune_model

loans = make_loans()
schema = validate_table(loans, "approved", "classification", ["group"], {})
tune_model(loans, schema, ["random_forest"], 8, 2, "roc_auc", 1, 0,
           space={"random_forest": {"n_estimators": 300}}, storage_path=sys.argv[1],
           preprocessor=build_preprocessor(schema))
"""


def _finished_in_state(storage: Path) -> int:
    """Trials that the last saved experiment state records as finished."""
    states = sorted(storage.glob("tune-*/experiment_state-*.json"))
    if not states:
        return 0
    try:
        text = states[-1].read_text(encoding="utf-8")
    except OSError:
        return 0
    return text.count("TERMINATED")


@pytest.mark.ray
def test_a_run_whose_driver_died_resumes_without_redoing_finished_trials(
    tmp_path, loans, loans_schema
):
    storage = tmp_path / "tune"
    # Save the experiment state every second (Ray's default is every 10 s or more).
    env = os.environ | {"TUNE_GLOBAL_CHECKPOINT_S": "1", "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(storage)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while _finished_in_state(storage) < 2 and driver.poll() is None:
            assert time.monotonic() < deadline, "the driver never saved two finished trials"
            time.sleep(0.2)
        assert driver.poll() is None, "the driver finished before it could be killed"
        family = descendants(psutil.Process(driver.pid))
        died_at = time.time()
        driver.send_signal(signal.SIGKILL)  # the driver dies without a word
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        # Its Ray goes too: every process it started, by PID.
        for proc in family:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=30)

    best, trials = tune_model(
        loans,
        loans_schema,
        ["random_forest"],
        8,
        2,
        "roc_auc",
        1,
        0,
        space={"random_forest": {"n_estimators": 300}},
        storage_path=str(storage),
        preprocessor=build_preprocessor(loans_schema),
    )
    assert best["resumed"] is True
    assert len(trials) == 8 and (trials["status"] == "done").all()
    # Trials finished before the driver died kept their results (and their times): not redone.
    before = trials["seconds"] < 0
    assert before.sum() >= 2, trials[["trial_id", "seconds"]]
    assert (trials.loc[~before, "seconds"] > 0).all()
    assert died_at > 0
