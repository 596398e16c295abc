"""Real ``sensorsynth trainer`` / ``worker`` / ``submit`` processes for the end-to-end tests."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
# quick beats so a dead worker is noticed in about 2.4 s; generous liveness so a busy 2-core machine
# (two fits, the queue and the test itself) does not declare a live worker dead
BEAT = ["--heartbeat-s", "0.3", "--liveness", "8"]
# the tests' "long" fits are tiny models given many steps, so that something is running to cancel (the
# server's Record test asks for 200000); the trainer's own bound (20000 by default) is tested in test_security
LONG_FITS = ["--max-steps", "200000"]


_EPHEMERAL_BELOW = 32768  # Linux's default ip_local_port_range starts here


def free_port() -> int:
    """A port P with P and P + 1 free (the trainer binds its PUB socket at P + 1), below the ephemeral range:
    a port the kernel hands out to outgoing connections (a worker reconnecting while the queue restarts) can
    be taken between the check and the bind, which one below the range never is."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randrange(20000, _EPHEMERAL_BELOW - 1)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports below the ephemeral range")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@dataclass
class Proc:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"did not stop within {timeout} s after {sig}:\n{self.output()}") from None


@dataclass
class Cluster:
    """A folder with a queue database and a models folder, and the processes started on it."""

    root: Path
    port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)
    trainer: Proc | None = None
    pub: str | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log = self.root / f"{name}-{time.monotonic_ns()}.log"
        with open(log, "w") as handle:  # the child keeps its own copy of the handle
            proc = subprocess.Popen([sys.executable, "-m", "sensorsynth", *args], stdout=handle,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root, env=_env())
        p = Proc(proc, log)
        self.procs.append(p)
        return p

    def start_trainer(self, *extra: str, workers: int = 0, timeout: float = 120.0) -> Proc:
        ready = self.root / f"ready-{time.monotonic_ns()}.json"
        p = self._spawn("trainer", ["trainer", "--bind", self.endpoint, "--db", str(self.root / "queue.db"),
                                    "--models", str(self.models), "--workers", str(workers), "--threads", "1",
                                    "--ready-file", str(ready), *BEAT, *LONG_FITS, *extra])
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if not p.alive():
                raise AssertionError(f"the trainer exited with {p.proc.returncode}:\n{p.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the trainer was not ready within {timeout} s:\n{p.output()}")
            time.sleep(0.05)
        self.pub = json.loads(ready.read_text())["pub"]
        self.trainer = p
        return p

    def start_serve(self, models: Path, timeout: float = 120.0) -> tuple[Proc, str]:
        """`sensorsynth serve MODELS` with the null output on free ports; (process, its http://... URL)."""
        ready = self.root / f"serve-ready-{time.monotonic_ns()}.json"
        p = self._spawn("serve", ["serve", str(models), "--output", "null", "--host", "127.0.0.1", "--osc-port", "0",
                                  "--ws-port", "0", "--ready-file", str(ready)])
        wait_for(lambda: ready.exists() or not p.alive(), timeout, "serve to listen")
        if not ready.exists():
            raise AssertionError(f"serve exited with {p.proc.returncode}:\n{p.output()}")
        return p, f"http://127.0.0.1:{json.loads(ready.read_text())['ws_port']}"

    def start_worker(self, *extra: str) -> Proc:
        return self._spawn("worker", ["worker", "--connect", self.endpoint, "--threads", "1", *BEAT, *extra])

    def submit(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sensorsynth", "submit", "--connect", self.endpoint, *args],
                              capture_output=True, text=True, timeout=timeout, cwd=self.root, env=_env())

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sensorsynth", *args, "--connect", self.endpoint],
                              capture_output=True, text=True, timeout=timeout, cwd=self.root, env=_env())

    def client(self):
        from sensorsynth.trainer.client import TrainerClient

        return TrainerClient(self.endpoint, timeout_s=5)

    def wait_workers(self, count: int, timeout: float = 60.0) -> list:
        with self.client() as client:
            def enough() -> list | None:
                workers = client.list().workers
                return workers if len(workers) >= count else None

            return wait_for(enough, timeout, f"{count} workers")

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.output()}" for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                p.proc.kill()
                p.proc.wait()


def wait_for(probe: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
