"""PeriodicThread repeats until stopped and survives a failing call; PerProcess makes each
object once and starts empty in a forked child."""
from __future__ import annotations

import os
import threading

import pytest

from perflib.threads import PerProcess, PeriodicThread


def test_periodic_thread_goes_on_after_a_failure_and_stops():
    calls, third = [], threading.Event()

    def tick():
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("one bad reading")
        if len(calls) == 3:
            third.set()

    thread = PeriodicThread(tick, 0.001, "test-periodic")
    thread.start()
    thread.start()  # a second start changes nothing
    assert third.wait(10)
    thread.stop()
    stopped_at = len(calls)
    assert not thread.running and stopped_at >= 3
    thread.stop()  # stopping twice is harmless
    assert len(calls) == stopped_at


def test_per_process_makes_each_object_once_and_replaces_a_stale_one():
    registry: PerProcess[list] = PerProcess()
    first = registry.get("a", list)
    assert registry.get("a", list) is first
    first.append("closed")
    fresh = registry.get("a", list, stale=lambda item: "closed" in item)
    assert fresh is not first and registry.values() == [fresh]
    assert registry.clear() == [fresh] and registry.values() == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_per_process_starts_empty_in_a_forked_child():
    registry: PerProcess[object] = PerProcess()
    registry.get("engine", object)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports how many objects it inherited
        os.write(write, str(len(registry.values())).encode())
        os._exit(0)
    os.close(write)
    assert os.read(read, 16) == b"0"
    os.waitpid(pid, 0)
    assert len(registry.values()) == 1
