"""CPU time accounting for the benchmark's own processes.

The kernel on the benchmark machine has no IRQ time accounting (CONFIG_IRQ_TIME_ACCOUNTING
off), so softirq work (veth receive, XDP, netfilter, forwarding) is charged to whichever
task was running when it ran: on veth that is almost always the sender (wrk, a backend
server, HAProxy), because a veth transmit runs the receiving side's softirq inline on the
same CPU. Summing the exact run time (``/proc/<pid>/task/*/schedstat``, nanoseconds) of
every process in the lab plus the ksoftirqd threads therefore counts the load balancer's
work wherever it ran, and nothing from other users of the machine except what ksoftirqd
did for them. The LB's share is the total minus the same total for the direct run.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def task_runtime_ns(pid: int) -> int:
    """Run time of all threads of ``pid`` so far (0 if it is gone)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for t in tasks:
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def ksoftirqd_pids() -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().startswith("ksoftirqd/"):
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def children_cpu_ns() -> int:
    """User + system time of every child this process has waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((r.ru_utime + r.ru_stime) * 1e9)


def machine_busy_ns() -> int:
    """All non-idle CPU time of the machine (/proc/stat, includes other users)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
    return int((user + nice + system + irq + softirq + steal) * tick_ns)


@dataclass
class CpuSnapshot:
    per_pid: dict[int, int]
    children: int
    machine: int


@dataclass
class CpuUsage:
    lab_ns: int            # lab processes + ksoftirqd + waited-for load generators
    groups: dict[str, int]  # named subsets (e.g. "lb"), "ksoftirqd" and "children"
    machine_ns: int        # whole machine, for reference


class CpuMeter:
    """Measures CPU time over an interval for named groups of long-running processes plus
    short-lived load generators that are waited for inside the interval."""

    def __init__(self, groups: dict[str, Iterable[int]]) -> None:
        self.groups = {k: list(v) for k, v in groups.items()}
        self.groups["ksoftirqd"] = ksoftirqd_pids()
        self.pids = sorted({p for v in self.groups.values() for p in v})

    def snapshot(self) -> CpuSnapshot:
        return CpuSnapshot({p: task_runtime_ns(p) for p in self.pids}, children_cpu_ns(),
                           machine_busy_ns())

    def usage(self, before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
        delta = {p: max(0, after.per_pid.get(p, 0) - before.per_pid.get(p, 0))
                 for p in self.pids}
        groups = {k: sum(delta[p] for p in v) for k, v in self.groups.items()}
        groups["children"] = after.children - before.children
        lab = sum(delta.values()) + groups["children"]
        return CpuUsage(lab, groups, after.machine - before.machine)
