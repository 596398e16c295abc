"""Fits as Ray tasks: ``sensorsynth trainer --ray ADDRESS``.

The queue stays the front door and the record: jobs arrive over ZeroMQ, live in SQLite, and move through
the same states. Only the running moves: a queued job the queue's own workers do not take is started as a
Ray task (``num_cpus`` = its threads, ``num_gpus`` = 1 on CUDA), so Ray's scheduler, not this code, decides
which node runs it and keeps every node within its cores. No home-made cluster manager.

A small actor (the board) carries what a task reports while it runs (progress) and what the queue asks
of it (cancel): tasks post progress to it and poll it for cancellation through their CancelToken, and the
queue reads it a few times a second. A task returns plain values (the instrument's bytes, strings); Ray
moves them with its own serialisation, inside the cluster. A task that dies (its node, its worker process)
is reported lost and requeued like a dead ZeroMQ worker.

Ray is optional: ``pip install ray`` where the trainer runs and on every node (with sensorsynth).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..instrument.settings import CancelToken, Progress
from ..protocol import trainer as wire
from .jobs import Job
from .worker import run_job

log = logging.getLogger("sensorsynth.trainer")

WORKER_ID = "ray"


class RayUnavailable(RuntimeError):
    """Ray is not installed or the cluster cannot be reached."""


class Board:
    """The Ray actor between running tasks and the queue (plain strings in and out)."""

    def __init__(self) -> None:
        self.progress: dict[str, str] = {}
        self.cancelled: set[str] = set()

    def report(self, key: str, progress_json: str) -> None:
        self.progress[key] = progress_json

    def take(self) -> dict[str, str]:
        out, self.progress = self.progress, {}
        return out

    def cancel(self, key: str) -> None:
        self.cancelled.add(key)

    def is_cancelled(self, key: str) -> bool:
        return key in self.cancelled

    def forget(self, key: str) -> None:
        self.cancelled.discard(key)
        self.progress.pop(key, None)


def _key(job_id: str, attempt: int) -> str:
    return f"{job_id}:{attempt}"


def fit_task(assign_json: str, audio: bytes, threads: int, device: str, board: Any) -> dict[str, Any]:
    """What a Ray worker runs: the same :func:`~.worker.run_job` as a ZeroMQ worker."""
    import ray

    assign = wire.Assign.model_validate_json(assign_json)
    key = _key(assign.job_id, assign.attempt)
    token = CancelToken(poll=lambda: bool(ray.get(board.is_cancelled.remote(key))), poll_interval_s=0.5)
    last = [0.0]

    def on_progress(progress: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or progress.stage == "export":
            last[0] = now
            board.report.remote(key, progress.model_dump_json())

    kind, payload = run_job(assign, audio, threads, device, token, on_progress)
    if kind == "done":
        final_loss, wall_s, blob = payload
        return {"kind": "done", "final_loss": final_loss, "wall_s": wall_s, "instrument": blob}
    failure, reason = payload
    return {"kind": "failed", "failure": failure, "reason": reason}


class RayBackend:
    """Runs queued jobs on Ray, at most ``max_tasks`` at once."""

    worker_id = WORKER_ID

    def __init__(self, address: str, *, threads: int = 1, device: str = "cpu", max_tasks: int | None = None,
                 init_options: dict[str, Any] | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise RayUnavailable("--ray needs Ray: pip install ray (here and on every node)") from None
        self.ray = ray
        self.address = address
        self.threads = threads
        self.device = device
        options = {"log_to_driver": False, "include_dashboard": False, **(init_options or {})}
        self._owns = not ray.is_initialized()
        try:
            if self._owns:
                ray.init(address=None if address == "local" else address, **options)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's choice
            raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {exc}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.max_tasks = max_tasks or max(1, cpus // max(1, threads))
        self.board = ray.remote(num_cpus=0)(Board).remote()
        self.remote_fit = ray.remote(fit_task)
        self.running: dict[Any, tuple[wire.JobKey, float]] = {}  # ObjectRef -> (run, started)
        self.last_progress: dict[str, Progress] = {}
        self._next_board = 0.0
        log.info("Ray at %s: %d CPUs, up to %d fits at once, %d thread(s) each", address, cpus, self.max_tasks,
                 threads)

    def capacity(self) -> int:
        return self.max_tasks - len(self.running)

    def start(self, job: Job, audio: bytes) -> None:
        assign = wire.Assign(job_id=job.id, attempt=job.attempt, name=job.name, clip_name=job.clip_name,
                             settings=job.settings, spec=job.spec)
        gpus = 1 if self.device.startswith("cuda") else 0
        ref = self.remote_fit.options(num_cpus=self.threads, num_gpus=gpus, max_retries=0).remote(
            assign.model_dump_json(), audio, self.threads, self.device, self.board)
        self.running[ref] = (wire.JobKey(job_id=job.id, attempt=job.attempt), time.monotonic())

    def cancel(self, key: wire.JobKey) -> None:
        self.board.cancel.remote(_key(key.job_id, key.attempt))

    def poll(self) -> list[tuple[str, wire.JobKey, Any, bytes | None]]:
        ray = self.ray
        out: list[tuple[str, wire.JobKey, Any, bytes | None]] = []
        if self.running:
            ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
            for ref in ready:
                key, _started = self.running.pop(ref)
                self.board.forget.remote(_key(key.job_id, key.attempt))
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the task's worker or node died, or Ray cancelled it
                    out.append(("lost", key, f"the Ray task failed: {type(exc).__name__}: {str(exc)[:300]}", None))
                    continue
                if result.get("kind") == "done":
                    out.append(("done", key, result.get("final_loss"), result.get("instrument")))
                else:
                    out.append(("failed", key, (result.get("failure", "internal"), result.get("reason", "?")), None))
        now = time.monotonic()
        if self.running and now >= self._next_board:
            self._next_board = now + 0.25
            try:
                reports = ray.get(self.board.take.remote(), timeout=2)
            except Exception as exc:
                log.warning("cannot read the Ray progress board: %s", exc)
                reports = {}
            for key_text, progress_json in reports.items():
                job_id, attempt = key_text.split(":")
                progress = Progress.model_validate_json(progress_json)
                self.last_progress[job_id] = progress
                out.append(("progress", wire.JobKey(job_id=job_id, attempt=int(attempt)), progress, None))
        return out

    def status(self) -> list[wire.WorkerStatus]:
        busy = [key for key, _ in self.running.values()]
        return [wire.WorkerStatus(id=WORKER_ID, host=str(self.address), machine="ray", pid=None, device=self.device,
                                  threads=self.threads, cores=self.max_tasks * self.threads,
                                  job=busy[0] if busy else None, last_seen_s=0.0)]

    def close(self) -> None:
        for ref in list(self.running):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:
                pass
        self.running.clear()
        if self._owns:
            self.ray.shutdown()
