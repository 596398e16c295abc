"""The trainer's own workers: ``sensorsynth worker`` processes next to the queue, restarted if they die.

They are separate processes, not threads, for the same reasons a remote worker is: a fit that crashes or
runs out of memory takes only its worker down (the queue requeues its job), and each process sets its own
torch threads. They connect over loopback like any other worker; the queue treats them no differently.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("sensorsynth.trainer")


def local_endpoint(bound: str) -> str:
    """Where a worker on this machine reaches a queue bound at ``bound`` (``tcp://*:5555`` → 127.0.0.1)."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if bound.startswith(wildcard):
            return "tcp://127.0.0.1:" + bound[len(wildcard):]
    if bound.startswith("tcp://[::]:"):
        return "tcp://[::1]:" + bound[len("tcp://[::]:"):]
    return bound


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: float = 0.0


@dataclass
class LocalWorkers:
    count: int
    connect: str
    threads: int
    device: str = "cpu"
    heartbeat_s: float = 1.0
    liveness: int = 5
    log_level: str = "info"
    keys: str | None = None  # the queue's keys folder: its workers use its local-worker bundle
    children: list[_Child] = field(default_factory=list)

    def command(self) -> list[str]:
        keys = ["--keys", self.keys] if self.keys else ["--keys", "none"]
        return [sys.executable, "-m", "sensorsynth", "worker", "--connect", self.connect, "--threads",
                str(self.threads), "--device", self.device, "--heartbeat-s", str(self.heartbeat_s), "--liveness",
                str(self.liveness), "--log-level", self.log_level, "--parent", str(os.getpid()), *keys]

    def start(self) -> None:
        self.children = [_Child(i) for i in range(self.count)]
        self.poll()

    def poll(self) -> None:
        """Start children that are not running (a crashed one waits 1, 2, 4 ... 30 s before it returns)."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                continue
            if child.proc is not None:
                code = child.proc.returncode
                log.warning("local worker %d (pid %d) exited with %s; restarting", child.index, child.proc.pid, code)
                uptime = now - child.started
                child.restarts = 0 if uptime > 60 else child.restarts + 1
                child.next_start = now + min(30.0, 2.0 ** max(0, child.restarts - 1)) if child.restarts else now
                child.proc = None
            if now >= child.next_start:
                child.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
                child.started = now

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None]

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (each gives its job back to the queue), then SIGKILL whatever is left after ``timeout_s``."""
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in live:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("local worker pid %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait(5)
        self.children = []


def default_threads(workers: int, cores: int) -> int:
    """Each of ``workers`` local workers gets an equal share of the cores (at least one)."""
    return max(1, cores // max(1, workers))
