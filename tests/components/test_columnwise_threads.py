"""How many threads the project's per-core work uses: the cores it may run on, within its
container's CPU limit (cgroup v2 `cpu.max`, or v1's quota and period)."""

import pytest

import components.common.columnwise as columnwise
from components.common.columnwise import cgroup_cpu_limit


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup files: no limit known
        ({"cpu.max": "garbage"}, None),
    ],
)
def test_the_cgroup_cpu_limit_is_read_from_v2_or_v1(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == expected


def test_a_cpu_limit_caps_the_threads(monkeypatch):
    monkeypatch.setattr(columnwise.os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.setattr(columnwise, "cgroup_cpu_limit", lambda: None)
    assert columnwise.thread_count() == columnwise.MAX_THREADS  # a large node: capped
    monkeypatch.setattr(columnwise, "cgroup_cpu_limit", lambda: 1.5)
    assert columnwise.thread_count() == 2  # a pod limited to 1.5 CPUs
    monkeypatch.setattr(columnwise, "cgroup_cpu_limit", lambda: 0.5)
    assert columnwise.thread_count() == 1
