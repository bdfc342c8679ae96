"""``cpu_budget`` reads the cgroup CPU quota right, so ``CNNSERVE_WORKERS=auto`` does not oversubscribe a container.

Each test builds a fake cgroup tree and a fake ``/proc/self/cgroup`` under ``tmp_path`` and fixes the affinity mask.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cpus import cpu_budget


def _affinity(monkeypatch: pytest.MonkeyPatch, cpus: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)), raising=False)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _v2(tmp_path: Path, group: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A v2 tree with ``cpu.max`` files at the given relative directories, and a proc file naming ``group``."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for directory, text in limits.items():
        _write(root / directory / "cpu.max", text)
    return root, _write(tmp_path / "proc_cgroup", f"0::{group}\n")


def _v1(tmp_path: Path, mount: str, quota: str, period: str = "100000") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    _write(root / mount / "docker/abc/cpu.cfs_quota_us", quota)
    _write(root / mount / "docker/abc/cpu.cfs_period_us", period)
    return root, _write(tmp_path / "proc_cgroup", f"5:memory:/docker/abc\n4:{mount}:/docker/abc\n")


def test_v2_fractional_quota_rounds_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 8)
    budget = cpu_budget(*_v2(tmp_path, "/", {"": "250000 100000"}))
    assert (budget.affinity, budget.quota, budget.usable) == (8, 2.5, 2)
    assert budget.source == f"affinity 8 CPUs, cgroup v2 quota 2.5 CPUs ({tmp_path / 'cgroup' / 'cpu.max'})"


def test_v2_max_is_unlimited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 6)
    budget = cpu_budget(*_v2(tmp_path, "/app", {"app": "max 100000", "": "max 100000"}))
    assert (budget.quota, budget.usable, budget.source) == (None, 6, "affinity 6 CPUs, no cgroup quota")


def test_v2_falls_back_to_root_when_own_path_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 8)
    budget = cpu_budget(*_v2(tmp_path, "/kubepods/pod1/ctr", {"": "300000 100000"}))
    assert (budget.quota, budget.usable) == (3.0, 3)


def test_v2_tighter_parent_binds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 16)
    limits = {"a/b/c": "800000 100000", "a/b": "max 100000", "a": "200000 100000", "": "max 100000"}
    budget = cpu_budget(*_v2(tmp_path, "/a/b/c", limits))
    assert (budget.quota, budget.usable) == (2.0, 2)
    assert str(tmp_path / "cgroup" / "a" / "cpu.max") in budget.source


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_v1_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mount: str) -> None:
    _affinity(monkeypatch, 8)
    budget = cpu_budget(*_v1(tmp_path, mount, "150000"))
    assert (budget.quota, budget.usable) == (1.5, 1)
    assert "cgroup v1 quota 1.5 CPUs" in budget.source


def test_v1_mount_root_inside_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 8)
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct/cpu.cfs_quota_us", "400000")
    _write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000")
    budget = cpu_budget(root, _write(tmp_path / "proc_cgroup", "4:cpu,cpuacct:/docker/abc\n"))
    assert (budget.quota, budget.usable) == (4.0, 4)


def test_v1_minus_one_is_unlimited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 4)
    budget = cpu_budget(*_v1(tmp_path, "cpu,cpuacct", "-1"))
    assert (budget.quota, budget.usable) == (None, 4)


def test_quota_below_one_cpu_still_gives_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 8)
    budget = cpu_budget(*_v2(tmp_path, "/", {"": "50000 100000"}))
    assert (budget.quota, budget.usable) == (0.5, 1)


def test_affinity_smaller_than_quota_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _affinity(monkeypatch, 2)
    budget = cpu_budget(*_v2(tmp_path, "/", {"": "400000 100000"}))
    assert (budget.affinity, budget.quota, budget.usable) == (2, 4.0, 2)


@pytest.mark.parametrize("cpu_max", ["", "garbage", "100000", "abc 100000", "100000 0", "1 2 3", "-5 100000", "\udcff"])
def test_garbled_v2_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str) -> None:
    _affinity(monkeypatch, 3)
    root, proc = _v2(tmp_path, "/", {})
    (root / "cpu.max").write_bytes(cpu_max.encode(errors="surrogateescape"))
    assert (cpu_budget(root, proc).quota, cpu_budget(root, proc).usable) == (None, 3)


@pytest.mark.parametrize("proc", [None, "", "nonsense\n", "0::/\n", "3:cpu:\n"])
def test_missing_files_are_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: str | None) -> None:
    _affinity(monkeypatch, 5)
    proc_file = tmp_path / "proc_cgroup"
    if proc is not None:
        proc_file.write_text(proc)
    budget = cpu_budget(tmp_path / "no-such-root", proc_file)
    assert (budget.quota, budget.usable, budget.source) == (None, 5, "affinity 5 CPUs, no cgroup quota")


def test_no_sched_getaffinity_uses_cpu_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    budget = cpu_budget(tmp_path, tmp_path / "absent")
    assert (budget.affinity, budget.usable) == (7, 7)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity (Linux)")
def test_real_machine() -> None:
    budget = cpu_budget()
    assert 1 <= budget.usable <= len(os.sched_getaffinity(0))
