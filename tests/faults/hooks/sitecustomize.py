"""Fault injection for tests/faults, in the steps' own processes: this folder goes first on the
PYTHONPATH of an `mlpipe run` that a test starts, and Python imports this module at start-up.

MLPIPE_TEST_FAULT=kill:<function>  SIGKILL the run's whole process group 0.3 s into that step's
                                   function, or as it returns if it is quicker: the run dies
                                   mid-step, as on a power cut or the OOM killer.
MLPIPE_TEST_FAULT=sigint:<function> the same, with SIGINT: Ctrl-C in a terminal.
MLPIPE_TEST_FAULT=raise:<function> that step's function raises, as a bug would.

Nothing here is imported by the product: only by processes whose environment a test set."""

import os
import sys

_fault = os.environ.get("MLPIPE_TEST_FAULT", "")
_action, _, _function = _fault.partition(":")
_argv = sys.argv
if _function and "--function_to_execute" in _argv:
    _index = _argv.index("--function_to_execute") + 1
    if _index < len(_argv) and _argv[_index] == _function:
        import signal
        import threading
        import time

        from kfp.dsl import executor as _executor

        _execute = _executor.Executor.execute

        _signal = signal.SIGINT if _action == "sigint" else signal.SIGKILL
        _sent = threading.Event()

        def _kill_the_run() -> None:
            if not _sent.is_set():
                _sent.set()
                os.killpg(os.getpgid(0), _signal)

        def _faulty_execute(self):
            if _action == "raise":
                raise RuntimeError(f"injected fault in {_function}")
            if _action in ("kill", "sigint"):
                threading.Timer(0.3, _kill_the_run).start()
                result = _execute(self)
                _kill_the_run()
                if _action == "sigint":
                    time.sleep(30)  # as a step still busy: the run's handler stops it
                return result
            return _execute(self)

        _executor.Executor.execute = _faulty_execute
