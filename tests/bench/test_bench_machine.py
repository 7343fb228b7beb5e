"""The bench's machine settings (bench/machine.py): the idle-state hold is real
(the kernel reports it while held and forgets it after), and stolen time is
read per core from /proc/stat."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from bench.machine import PM_QOS_DEVICE, idle_states_held_off, steal_share, steal_ticks


def _current_latency_bound_us() -> int:
    # Reading the device gives the kernel's aggregate request over every holder.
    with PM_QOS_DEVICE.open("rb") as f:
        return int(struct.unpack("=i", f.read(4))[0])


def test_the_idle_hold_is_in_force_while_held_and_withdrawn_after() -> None:
    if not os.access(PM_QOS_DEVICE, os.W_OK):
        # a machine that cannot hold (no device, not root): the bench runs, and says why
        with idle_states_held_off() as hold:
            assert hold["held"] is False
            assert str(PM_QOS_DEVICE) in hold["reason"]
        return
    before = _current_latency_bound_us()
    with idle_states_held_off() as hold:
        assert hold["held"] is True
        assert _current_latency_bound_us() == 0
    assert _current_latency_bound_us() == before


def test_no_idle_hold_when_not_asked_for_and_says_so() -> None:
    with idle_states_held_off(enabled=False) as hold:
        assert hold == {"held": False, "reason": "--no-idle-hold"}


def test_an_unusable_device_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.machine.PM_QOS_DEVICE", Path("/nonexistent/cpu_dma_latency"))
    with idle_states_held_off() as hold:
        assert hold["held"] is False
        assert "/nonexistent/cpu_dma_latency" in hold["reason"]


def test_steal_is_read_per_core_and_shared_over_wall_time() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert steal_ticks(cpus) >= steal_ticks(cpus[:1]) >= 0
    assert steal_ticks([10_000]) == 0  # no such core: nothing stolen from it
    hz = os.sysconf("SC_CLK_TCK")
    # hz ticks stolen over 2 s of 2 cores is a quarter of their time
    assert steal_share(0, hz, 2.0, 2) == 0.25
    assert steal_share(0, hz, 0.0, 2) == 0.0
