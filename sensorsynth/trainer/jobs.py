"""A job's life as pure functions: each takes a Job and returns the next one, or raises.

    queued ──assign──▶ running ──complete──▶ done
      │                  │  │  └──fail─────▶ failed
      │                  │  └─lose (worker died; requeued, or failed after max_losses)──▶ queued | failed
      │                  └─release (worker left cleanly)──▶ queued
      └──────cancel──────┴──────────────────▶ cancelled
    (a submission that cannot run is created failed: wrong settings, too large, name taken)

Every transition out of ``running`` names the attempt it is about. An attempt that is not the current
one is stale (:class:`StaleAttempt`): a worker presumed dead that comes back with a result, a result sent
twice, a queue restarted between a result and its acknowledgement. That is what makes completion
idempotent: a job completes once, whatever arrives how often.

No clock and no I/O here: ``now`` is passed in, and :mod:`.store` persists what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..protocol.trainer import TERMINAL, JobInfo, JobKey


class IllegalTransition(ValueError):
    """The job's state does not allow this (e.g. cancelling a job that is done)."""


class StaleAttempt(IllegalTransition):
    """A message about an attempt that is not the job's current run."""


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    clip_name: str
    state: str
    created: float
    settings: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    replace: bool = False
    attempt: int = 0
    losses: int = 0
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    reason: str | None = None
    failure: str | None = None
    final_loss: float | None = None
    result_path: str | None = None
    audio_bytes: int = 0
    owner: str = ""  # who submitted it: "key:<z85 public key>" with CURVE, "local:..." on keyless loopback

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def key(self) -> JobKey | None:
        """The current run, while there is one."""
        return JobKey(job_id=self.id, attempt=self.attempt) if self.state == "running" else None

    def info(self, progress: Any = None) -> JobInfo:
        return JobInfo(
            id=self.id, name=self.name, clip_name=self.clip_name, state=self.state,  # type: ignore[arg-type]
            attempt=self.attempt, losses=self.losses, created=self.created, started=self.started,
            finished=self.finished, worker=self.worker, progress=progress if self.state == "running" else None,
            reason=self.reason, failure=self.failure, final_loss=self.final_loss,  # type: ignore[arg-type]
            result_path=self.result_path, audio_bytes=self.audio_bytes, settings=self.settings, spec=self.spec,
        )


def new_job(job_id: str, name: str, clip_name: str, now: float, *, settings: dict[str, Any],
            spec: dict[str, Any], replace: bool = False, audio_bytes: int = 0, owner: str = "") -> Job:
    return Job(id=job_id, name=name, clip_name=clip_name, state="queued", created=now, settings=settings,
               spec=spec, replace=replace, audio_bytes=audio_bytes, owner=owner)


def rejected(job: Job, reason: str, now: float) -> Job:
    """A submission that cannot run: it is kept, failed, so the submitter (and ``jobs``) see why."""
    return replace(job, state="failed", failure="bad_input", reason=reason, finished=now)


def _running(job: Job, attempt: int, what: str) -> None:
    if job.state != "running" or job.attempt != attempt:
        current = f"attempt {job.attempt}, {job.state}"
        raise StaleAttempt(f"job {job.id}: {what} for attempt {attempt}, but the job is at {current}")


def assign(job: Job, worker: str, now: float) -> Job:
    if job.state != "queued":
        raise IllegalTransition(f"job {job.id} is {job.state}, only a queued job can be assigned")
    return replace(job, state="running", attempt=job.attempt + 1, worker=worker, started=now)


def complete(job: Job, attempt: int, now: float, *, final_loss: float | None, result_path: str | None) -> Job:
    _running(job, attempt, "a result")
    return replace(job, state="done", finished=now, final_loss=final_loss, result_path=result_path, reason=None)


def fail(job: Job, attempt: int, now: float, *, reason: str, failure: str) -> Job:
    _running(job, attempt, "a failure")
    return replace(job, state="failed", finished=now, reason=reason, failure=failure)


def lose(job: Job, attempt: int, now: float, *, reason: str, max_losses: int) -> Job:
    """The worker running it died or vanished: back to the queue, or failed once that has happened
    ``max_losses`` times (a job that kills every worker it touches must not go round forever)."""
    _running(job, attempt, "a lost worker")
    losses = job.losses + 1
    if losses >= max_losses:
        return replace(job, state="failed", losses=losses, finished=now, failure="lost",
                       reason=f"{reason}; gave up after {losses} lost attempts")
    return replace(job, state="queued", losses=losses, worker=None, reason=reason)


def release(job: Job, attempt: int, now: float, *, reason: str) -> Job:
    """The worker gave it back (it is shutting down): back to the queue, not counted as lost."""
    _running(job, attempt, "a release")
    return replace(job, state="queued", worker=None, reason=reason)


def cancel(job: Job, now: float, *, reason: str = "cancelled by request") -> Job:
    if job.terminal:
        raise IllegalTransition(f"job {job.id} is already {job.state}")
    return replace(job, state="cancelled", finished=now, reason=reason)
