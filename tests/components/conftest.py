"""Helpers for the tests that start Ray: its processes are this test process's descendants,
found by PID, never by name across the machine."""

import psutil


def descendants(root: psutil.Process | None = None) -> list[psutil.Process]:
    """Every descendant of `root` (this process when None)."""
    return (root or psutil.Process()).children(recursive=True)


def descendant_pids() -> set[int]:
    """PIDs of this process's descendants: take them before a test starts Ray."""
    return {proc.pid for proc in descendants()}


def new_descendants(before: set[int]) -> list[psutil.Process]:
    """This process's descendants that were not among `before` (the Ray a test started)."""
    return [proc for proc in descendants() if proc.pid not in before]


def still_running(processes) -> list[psutil.Process]:
    """Those of `processes` that still run: not exited, and not a zombie."""
    running = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                running.append(proc)
        except psutil.NoSuchProcess:
            pass
    return running
