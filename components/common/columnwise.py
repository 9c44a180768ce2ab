"""Work on a table one column at a time, on every core.

A table's columns are independent arrays, and numpy's and pandas' per-array work (taking rows,
hashing, selecting a median) runs without Python's lock: threads over the columns use every core
of the step's container, where one call on the whole table uses one. On 10 million rows, taking
8 million of them column by column on two cores takes a sixth of `DataFrame.take`'s time
(benchmarks/ingest_scale.py).
"""

import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

Item = TypeVar("Item")
Result = TypeVar("Result")

# More threads than this gain nothing on per-column work that is bound by memory bandwidth.
MAX_THREADS = 4


# The CPU limit of this process's container: cgroup v2's "<quota> <period>" (or "max <period>"),
# else cgroup v1's quota (-1: none) and period, in microseconds.
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs this process's cgroup may use (a pod's CPU limit), or None: no limit, or no
    cgroup file to read."""
    try:
        if (root / "cpu.max").exists():
            quota, period = (root / "cpu.max").read_text(encoding="ascii").split()[:2]
        else:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text(encoding="ascii").strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text(encoding="ascii").strip()
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def thread_count() -> int:
    """How many threads columnwise uses: the cores this process may run on, within its
    container's CPU limit (rounded up), at most MAX_THREADS (the cap keeps a pod on a large node
    from starting a thread per node core where the limit cannot be read)."""
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may run on (cpusets)
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, min(cores, MAX_THREADS))


def columnwise(function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """`[function(item) for item in items]`, on a thread per core; the results in order, and the
    first error raised as it is."""
    items = list(items)
    threads = min(thread_count(), len(items))
    if threads <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(threads, thread_name_prefix="columnwise") as pool:
        return list(pool.map(function, items))


def take_rows(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """The rows at `positions`, in that order, numbered from 0: each column taken once.

    `DataFrame.take` is one thread and, for rows in random order (a shuffled split), several
    times slower than each column's own `take`.
    """
    positions = np.asarray(positions, dtype=np.intp)
    columns = [frame.iloc[:, i].array for i in range(frame.shape[1])]  # the frame: this thread's
    taken = columnwise(lambda values: values.take(positions), columns)
    rows = pd.DataFrame(dict(enumerate(taken)), index=pd.RangeIndex(len(positions)), copy=False)
    rows.columns = frame.columns
    return rows
