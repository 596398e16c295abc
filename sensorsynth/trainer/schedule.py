"""Which idle worker takes which queued job: first come, first served, never more fits on a machine than
it has cores for.

Each worker says how many threads it fits with and how many cores its machine has; workers that report the
same ``machine`` share those cores. A job goes to an idle worker only if the threads already fitting on its
machine plus its own stay within the cores, except on an idle machine, which always takes one fit (so a
worker asking for more threads than there are cores still gets work, alone). Pure: plain values in, a plan
out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Slot:
    worker: str
    machine: str
    threads: int
    cores: int
    idle: bool
    last_assigned: float = 0.0  # the longest-idle worker goes first, so work spreads over machines


def busy_threads(slots: Iterable[Slot]) -> dict[str, int]:
    """Threads fitting now on each machine."""
    busy: dict[str, int] = {}
    for slot in slots:
        if not slot.idle:
            busy[slot.machine] = busy.get(slot.machine, 0) + slot.threads
    return busy


def fits(slot: Slot, busy: dict[str, int]) -> bool:
    used = busy.get(slot.machine, 0)
    return used == 0 or used + slot.threads <= slot.cores


def plan(queued: Sequence[str], slots: Sequence[Slot]) -> list[tuple[str, str]]:
    """[(job id, worker id)] to start now, in queue order."""
    busy = busy_threads(slots)
    free = sorted((s for s in slots if s.idle), key=lambda s: (s.last_assigned, s.worker))
    out: list[tuple[str, str]] = []
    for job in queued:
        choice = next((s for s in free if fits(s, busy)), None)
        if choice is None:
            break
        free.remove(choice)
        busy[choice.machine] = busy.get(choice.machine, 0) + choice.threads
        out.append((job, choice.worker))
    return out
