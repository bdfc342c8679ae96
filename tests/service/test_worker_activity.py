"""What a worker sees of its siblings' activity (``service.worker_activity``).

Several ``WorkerActivity`` objects on one folder, each with a worker name of its own, stand for sibling workers
exactly: each maps its own file and reads the others'. The clock is the test's, so nothing waits on time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service import worker_activity as module
from service.admission import InflightLimit
from service.peers import PEER_DIR_ENV, WORKER_COUNT_ENV
from service.worker_activity import BUSY_SUFFIX, QUIET_S, WorkerActivity, worker_activity


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def workers(folder: Path, clock: Clock, *names: str) -> list[WorkerActivity]:
    return [WorkerActivity(folder, worker=name, clock=clock) for name in names]


def test_a_sibling_is_quiet_only_once_it_has_had_nothing_in_flight_for_the_quiet_period(tmp_path: Path) -> None:
    clock = Clock()
    me, sibling = workers(tmp_path, clock, "me", "sibling")
    assert not me.siblings_quiet()  # it has just started
    clock.now += QUIET_S * 1.5
    assert me.siblings_quiet()
    sibling.busy()
    clock.now += 10 * QUIET_S
    assert not me.siblings_quiet()  # busy for however long
    sibling.idle()
    assert not me.siblings_quiet()  # between two requests of its own client
    clock.now += QUIET_S / 2
    assert not me.siblings_quiet()
    clock.now += QUIET_S * 1.5
    assert me.siblings_quiet()


def test_its_own_requests_do_not_count_and_every_sibling_must_be_quiet(tmp_path: Path) -> None:
    clock = Clock()
    me, one, two = workers(tmp_path, clock, "me", "one", "two")
    clock.now += QUIET_S * 1.5
    me.busy()
    assert me.siblings_quiet()
    two.busy()
    assert not me.siblings_quiet()
    assert not one.siblings_quiet()  # me is busy too
    two.idle()
    me.idle()
    clock.now += QUIET_S * 1.5
    assert all(worker.siblings_quiet() for worker in (me, one, two))


def test_a_replaced_worker_stops_counting_once_its_file_is_gone(tmp_path: Path) -> None:
    """The supervisor deletes a dead worker's file when it replaces it; a busy one must not silence the rest."""
    clock = Clock()
    me, dead = workers(tmp_path, clock, "me", "dead")
    dead.busy()
    clock.now += QUIET_S * 1.5
    assert not me.siblings_quiet()
    (tmp_path / f"dead{BUSY_SUFFIX}").unlink()
    assert me.siblings_quiet()


def test_a_sibling_file_not_yet_written_counts_as_busy(tmp_path: Path) -> None:
    clock = Clock()
    (me,) = workers(tmp_path, clock, "me")
    (tmp_path / f"starting{BUSY_SUFFIX}").touch()  # created, not yet sized and stamped
    clock.now += QUIET_S * 1.5
    assert me.siblings_quiet()  # too short to read: skipped until it is
    (starting,) = workers(tmp_path, clock, "starting")
    starting.busy()
    assert not me.siblings_quiet()


def test_only_a_multi_worker_server_has_an_activity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module.worker_activity.cache_clear()
    monkeypatch.delenv(PEER_DIR_ENV, raising=False)
    try:
        assert worker_activity() is None
        module.worker_activity.cache_clear()
        monkeypatch.setenv(PEER_DIR_ENV, str(tmp_path))
        monkeypatch.setenv(WORKER_COUNT_ENV, "2")
        assert isinstance(worker_activity(), WorkerActivity)
        assert [path.suffix for path in tmp_path.iterdir()] == [BUSY_SUFFIX]
    finally:
        module.worker_activity.cache_clear()


def test_a_worker_is_alone_with_one_request_in_flight_and_quiet_siblings_only(tmp_path: Path) -> None:
    clock = Clock()
    me, sibling = workers(tmp_path, clock, "me", "sibling")
    policy = InflightLimit(0)
    me.watch(policy)
    clock.now += QUIET_S * 1.5
    assert me.alone()
    assert policy.admit()  # the lone request asking
    assert me.alone()
    assert policy.admit()  # another one: its body still arriving, say
    assert not me.alone()
    policy.release()
    assert me.alone()
    sibling.busy()
    assert not me.alone()
    policy.release()
    assert policy.watchers == [me]
