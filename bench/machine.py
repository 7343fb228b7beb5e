"""What the machine itself adds to a latency: idle-state wake-ups and stolen time.

Two effects that are the machine's, not a contender's, and that the HTTP
benchmark (#3) would otherwise charge to whichever server sleeps more often:

- **Idle-state wake-ups.** A core with nothing to run enters an idle state;
  waking it for the next packet or disk completion costs that state's exit
  latency. On a VM whose guest halt-polling is off (this project's machines:
  a Firecracker guest booted with ``haltpoll.guest_halt_poll_ns=0``), the idle
  state is a real HLT, a VM exit, and the host may run something else on the
  physical core meanwhile. Measured here with a ping-pong between two pinned
  processes, 0.3 ms apart: round trip p50 96 us / p99 1.4 ms with the idle
  state allowed, 23 us / 55 us with it held off. A server whose request waits
  on several wake-ups (client -> server, a Redis reply, an fsync completion)
  pays that several times; a no-op that answers at once pays it once.
- **Stolen time.** The host runs other guests on our cores; the kernel counts
  it as ``steal`` in ``/proc/stat``. A chunk with a lot of it measures the host.

The bench holds the idle states off for the whole run, for every contender
alike, through the kernel's PM QoS interface (``/dev/cpu_dma_latency``): the
request lasts while the file is open and ends with the process, so nothing is
left changed on the machine. This is what tuned's ``latency-performance``
profile does (``force_latency``) and what a bank would set on a latency-bound
scoring host. ``--no-idle-hold`` measures without it.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

PM_QOS_DEVICE = Path("/dev/cpu_dma_latency")
CPUIDLE = Path("/sys/devices/system/cpu/cpuidle")
HALT_POLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def idle_info() -> dict[str, Any]:
    """The machine's idle-state setup, for the results file."""
    return {
        "cpuidle_driver": _read(CPUIDLE / "current_driver"),
        "cpuidle_governor": _read(CPUIDLE / "current_governor_ro")
        or _read(CPUIDLE / "current_governor"),
        "guest_halt_poll_ns": _read(HALT_POLL_NS),
    }


@contextlib.contextmanager
def idle_states_held_off(enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Ask the kernel for a 0 us wake-up latency (PM QoS) while the block runs.

    Yields what was done, for the results file: ``{"held": True}`` or why not
    (not asked for, no such device, no permission). Never raises for a machine
    that cannot do it: the bench then runs, and says so, without it."""
    if not enabled:
        yield {"held": False, "reason": "--no-idle-hold"}
        return
    try:
        fd = os.open(PM_QOS_DEVICE, os.O_WRONLY)
    except OSError as exc:
        yield {"held": False, "reason": f"{PM_QOS_DEVICE}: {exc.strerror}"}
        return
    try:
        # The kernel takes a native 32-bit integer: the latency bound in us.
        os.write(fd, struct.pack("=i", 0))
        yield {"held": True, "device": str(PM_QOS_DEVICE), "max_wakeup_latency_us": 0}
    finally:
        os.close(fd)  # closing the file is what withdraws the request


def steal_ticks(cpus: Sequence[int]) -> int:
    """Ticks the host has stolen from ``cpus`` since boot (``/proc/stat``)."""
    wanted = {f"cpu{c}" for c in cpus}
    total = 0
    text = _read(Path("/proc/stat")) or ""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] in wanted and len(fields) > 8:
            total += int(fields[8])  # user nice system idle iowait irq softirq steal
    return total


def steal_share(before: int, after: int, seconds: float, ncpus: int) -> float:
    """Stolen share of ``ncpus`` cores over ``seconds`` of wall time."""
    if seconds <= 0 or ncpus <= 0:
        return 0.0
    return round((after - before) / USER_HZ / (seconds * ncpus), 4)
