"""The CPU kernels' choice between one worker and all of them (fastrnn/backends/_workers.py): a fixed
threshold where one is set, else the measured round trip between two threads."""
import math
import os

import numba
import numpy as np
import pytest

from fastrnn import config
from fastrnn.backends import _workers
from fastrnn.backends._numba_sync import ping_pong


@pytest.fixture
def adaptive(monkeypatch):
    monkeypatch.setattr(config, "PARALLEL_MIN_MACS", None)
    monkeypatch.setitem(_workers._state, "at", -math.inf)


def test_a_set_threshold_decides_alone(monkeypatch):
    monkeypatch.setattr(config, "PARALLEL_MIN_MACS", 1000)
    monkeypatch.setattr(_workers, "round_trip_ns", lambda: pytest.fail("measured despite a set threshold"))
    assert not _workers.split_step(999) and _workers.split_step(1000)


@pytest.mark.parametrize("ns, threshold", [(100.0, 15000), (400.0, 60000), (None, 32768)])
def test_threshold_follows_the_round_trip(adaptive, monkeypatch, ns, threshold):
    monkeypatch.setattr(_workers, "round_trip_ns", lambda: ns)
    assert not _workers.split_step(threshold - 1) and _workers.split_step(threshold)


def test_no_measurement_outside_the_uncertain_band(adaptive, monkeypatch):
    monkeypatch.setattr(_workers, "round_trip_ns", lambda: pytest.fail("measured a step whose answer is sure"))
    assert not _workers.split_step(_workers.SURE_SERIAL - 1)
    assert _workers.split_step(_workers.SURE_PARALLEL)


def test_round_trip_is_measured_at_most_every_interval(adaptive, monkeypatch):
    calls = []
    monkeypatch.setattr(_workers, "_measure", lambda: calls.append(1) or 123.0)
    assert _workers.round_trip_ns() == _workers.round_trip_ns() == 123.0
    assert len(calls) == 1
    monkeypatch.setitem(_workers._state, "at", -math.inf)
    _workers.round_trip_ns()
    assert len(calls) == 2


def test_measured_round_trip_is_plausible(adaptive):
    """Two Numba threads here: a finite round trip, between a few ns and a millisecond (a loaded machine)."""
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: nothing to measure")
    ns = _workers._measure()
    assert ns is not None and 1.0 < ns < 1e6


def test_one_thread_gives_no_measurement_and_no_hang():
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert _workers._measure() is None
        # the kernel itself, with both workers on the one thread: the waiting one gives up, then both stop
        token = np.zeros(2, np.int64)
        ping_pong(token, 8, 1000)
        assert token[1] > 0
    finally:
        numba.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_keeps_the_parents_measurement(adaptive):
    """A child of a process that measured (and so ran Numba's OpenMP threads) must not open a parallel
    region of its own (Numba terminates it): it takes the parent's value, however old."""
    parent = _workers.round_trip_ns()
    pid = os.fork()
    if pid == 0:                                   # the child: exit status 0 only if it took the parent's value
        _workers._state["at"] = -math.inf          # (stale: a parent would measure again here)
        os._exit(0 if _workers.round_trip_ns() == parent else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
