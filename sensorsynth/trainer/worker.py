"""A worker: one DEALER socket to the queue, one fit at a time in a thread, heartbeats both ways.

The network loop runs in the main thread and never waits on the fit: it forwards progress (at most every
``progress_s``), answers heartbeats and turns ``cancel_job`` into the fit's cancel token (torch releases
the GIL in its kernels, so the loop keeps its beat while a fit runs). A result is held until the queue
acknowledges it, and resent meanwhile: over a reconnection, and over a restart of the queue. A queue silent
for ``liveness`` heartbeats is presumed gone: the socket is closed and reopened (same identity), with a
back-off, and ``ready`` tells the new queue which run this worker holds, as in the Guide's Paranoid Pirate.

The worker chooses its own device and threads (``--device``, ``--threads``); a job's settings cannot.
With ``keys`` (a worker key from the queue's keys folder) it is a CURVE client of the queue, and its id
starts with its key's fingerprint: the queue takes worker messages only from worker keys, and a run's
result only from the worker (key and id) it gave the run to.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import zmq

from ..instrument.settings import Progress
from ..protocol import trainer as wire
from .keys import PeerKeys, fingerprint

log = logging.getLogger("sensorsynth.worker")


def machine_cores() -> int:
    """Cores this process may use (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sensorsynth")
    except Exception:
        return "unknown"


@dataclass
class WorkerOptions:
    connect: str
    threads: int | None = None
    device: str = "cpu"
    machine: str | None = None
    heartbeat_s: float = 1.0
    liveness: int = 5
    progress_s: float = 0.25
    max_backoff_s: float = 32.0
    keys: PeerKeys | None = None


def run_job(assign: wire.Assign, audio: bytes, threads: int, device: str, token: Any,
            on_progress: Callable[[Progress], None]) -> tuple[str, Any]:
    """Fit one job; ("done", (final_loss, wall_s, instrument bytes)) or ("failed", (kind, reason)).

    Shared with the Ray backend, so a job fails the same way wherever it runs: unusable audio, settings or
    spec are the submitter's (``bad_input``); anything else is ``internal``."""
    from ..audio import AudioInputError
    from ..instrument.pipeline import Cancelled, InvalidResult, fit_clip, make_settings, make_spec
    from ..instrument_file import dumps

    try:
        settings = make_settings({**assign.settings, "threads": threads, "device": device})
        spec = make_spec(assign.spec)
        instrument = fit_clip(audio, settings, spec, name=assign.name, clip_name=assign.clip_name, cancel=token,
                              on_progress=on_progress)
        blob = dumps(instrument)
        return "done", (instrument.manifest.final_loss, float(instrument.manifest.training.get("wall_time_s", 0)), blob)
    except Cancelled as exc:
        return "failed", ("cancelled", str(exc) or "cancelled")
    except AudioInputError as exc:
        return "failed", ("bad_input", str(exc))
    except InvalidResult as exc:
        return "failed", ("internal", str(exc))
    except ValueError as exc:  # the fitter refusing the settings, spec or audio
        return "failed", ("bad_input", f"cannot fit {assign.clip_name}: {exc}")
    except Exception as exc:  # a bug or the machine (out of memory, CUDA): the queue decides
        log.error("job %s failed:\n%s", assign.job_id[:8], traceback.format_exc())
        return "failed", ("internal", f"{type(exc).__name__}: {exc}")


class Worker:
    def __init__(self, options: WorkerOptions, *, context: zmq.Context | None = None) -> None:
        self.o = options
        self.ctx = context or zmq.Context.instance()
        self.threads = options.threads or machine_cores()
        self.info = wire.WorkerInfo(
            id=(f"w-{fingerprint(options.keys.public)}-{uuid.uuid4().hex[:12]}" if options.keys
                else f"w-{uuid.uuid4().hex[:16]}"), host=socket.gethostname()[:255],
            machine=(options.machine or socket.gethostname())[:255], pid=os.getpid(), device=options.device,
            threads=self.threads, cores=machine_cores(), version=_version(),
        )
        self.sock: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None  # handshake events: a refused key is logged as such
        self.job: wire.JobKey | None = None  # the run held: fitting, or its outcome not yet acknowledged
        self.token: Any = None
        self.thread: threading.Thread | None = None
        self.events: queue.Queue[tuple[wire.JobKey, str, Any]] = queue.Queue()
        self.outbox: list[bytes] | None = None  # done/failed frames, until acknowledged
        self.outbox_sent = 0.0
        self.last_heard = 0.0
        self.last_beat = 0.0
        self.last_progress = 0.0
        self.pending_progress: Progress | None = None
        self.backoff = options.heartbeat_s
        self.jobs_done = 0
        self.told_forbidden = False

    # ------------------------------------------------------------------------------------------ socket

    def _open(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self.info.id.encode())
        sock.setsockopt(zmq.RECONNECT_IVL, 200)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.MAXMSGSIZE, 1024 * 1024 * 1024)  # the queue's own bound is lower; this is a backstop
        if self.o.keys is not None:
            self.o.keys.apply(sock)
        self.monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        sock.connect(self.o.connect)
        self.sock = sock
        self.last_heard = time.monotonic()
        self._send(wire.Ready(worker=self.info, job=self.job))
        if self.outbox is not None:
            self._send_outbox()

    def _close(self) -> None:
        if self.sock is not None:
            self._report_handshakes()
            if self.monitor is not None:
                self.sock.disable_monitor()
                self.monitor.close(0)
                self.monitor = None
            self.sock.close(0)
            self.sock = None

    def _report_handshakes(self) -> None:
        """CURVE refusals are silent on the wire: say so when the queue refused this worker's key (or keys)."""
        from zmq.utils.monitor import recv_monitor_message

        while self.monitor is not None:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                where = self.o.keys.where if self.o.keys else "none"
                log.error("the queue at %s refused this worker's key (%s): allow it there with `sensorsynth trainer "
                          "keys add-worker NAME`", self.o.connect, where)
            else:
                log.error("the queue at %s %s", self.o.connect, "has no keys: start this worker with --keys none"
                          if self.o.keys else "uses CURVE keys: start this worker with --keys (a bundle from "
                          "`sensorsynth trainer keys add-worker NAME`)")
            return

    def _send(self, message: Any, *files: bytes) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send_multipart(wire.encode(message, *files), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected yet or the queue is not reading: heartbeats and resends cover it

    def _send_outbox(self) -> None:
        if self.sock is not None and self.outbox is not None:
            try:
                self.sock.send_multipart(self.outbox, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
            self.outbox_sent = time.monotonic()

    # ------------------------------------------------------------------------------------------- loop

    def run(self, should_stop: Callable[[], bool]) -> int:
        """Serve jobs until ``should_stop()``; then give back the run held (``bye``) and return 0."""
        log.info("worker %s: %s, %d threads (%d cores), queue %s", self.info.id, self.info.device, self.threads,
                 self.info.cores, self.o.connect)
        poller = zmq.Poller()
        timeout_s = self.o.heartbeat_s * self.o.liveness
        try:
            while not should_stop():
                if self.sock is None:
                    self._open()
                    poller = zmq.Poller()
                    poller.register(self.sock, zmq.POLLIN)
                events = dict(poller.poll(50))
                if self.sock in events:
                    while True:
                        try:
                            frames = self.sock.recv_multipart(zmq.NOBLOCK)  # type: ignore[union-attr]
                        except zmq.Again:
                            break
                        self.last_heard = time.monotonic()
                        self.backoff = self.o.heartbeat_s
                        self._handle(frames)
                self._drain_fit()
                now = time.monotonic()
                if now - self.last_beat >= self.o.heartbeat_s:
                    self.last_beat = now
                    self._send(wire.Heartbeat(job=self.job))
                if self.outbox is not None and now - self.outbox_sent >= timeout_s / 2:
                    self._send_outbox()
                if now - self.last_heard > timeout_s:
                    log.warning("the queue at %s is silent; reconnecting in %.1f s", self.o.connect, self.backoff)
                    self._close()
                    deadline = time.monotonic() + self.backoff
                    while time.monotonic() < deadline and not should_stop():
                        time.sleep(0.05)
                        self._drain_fit()
                    self.backoff = min(self.backoff * 2, self.o.max_backoff_s)
        finally:
            self._leave()
        return 0

    def _leave(self) -> None:
        """Stop the fit and give its run back (``bye``: the queue requeues it at once, not counted as lost);
        an outcome already made is delivered first if the queue takes it within two seconds."""
        stopped = False
        if self.thread is not None and self.thread.is_alive():
            self.token.cancel("the worker is shutting down")
            self.thread.join(5)
            stopped = True
        self._drain_fit()
        if self.outbox is not None and not stopped and self.sock is not None:
            self._send_outbox()
            deadline = time.monotonic() + 2
            while self.outbox is not None and time.monotonic() < deadline:
                if self.sock.poll(100):
                    try:
                        self._handle(self.sock.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        pass
        if self.sock is not None:
            self._send(wire.Bye(job=self.job))
            self.sock.setsockopt(zmq.LINGER, 1000)
        self._close()

    # ---------------------------------------------------------------------------------------- messages

    def _handle(self, frames: list[bytes]) -> None:
        try:
            message, files = wire.decode(frames, wire.TO_WORKER)
        except wire.WireError as exc:
            log.warning("the queue sent something unreadable: %s", exc.message)
            return
        if message.type == "assign":
            self._assign(message, files[0])
        elif message.type == "cancel_job":
            key = wire.JobKey(job_id=message.job_id, attempt=message.attempt)
            if self.job == key:
                if self.thread is not None and self.thread.is_alive():
                    log.info("job %s: cancel", key.job_id[:8])
                    self.token.cancel("cancelled by request")
                else:  # its outcome is waiting for an ack the queue no longer wants
                    self.job, self.outbox = None, None
                    self._send(wire.Heartbeat(job=None))
        elif message.type == "ack":
            if self.job == wire.JobKey(job_id=message.job_id, attempt=message.attempt) and self.outbox is not None:
                self.job, self.outbox = None, None
                self._send(wire.Heartbeat(job=None))  # idle: the queue may assign at once
        elif message.type == "reconnect":
            self._send(wire.Ready(worker=self.info, job=self.job))
            self._send_outbox()
        elif message.type == "error":
            if message.code != "forbidden":
                log.warning("the queue refused a message: %s", message.message)
            elif not self.told_forbidden:  # said once: it repeats on every heartbeat until the key is allowed
                self.told_forbidden = True
                log.error("the queue does not take this worker's key as a worker (%s); allow it there with "
                          "`sensorsynth trainer keys add-worker NAME`", message.message)

    def _assign(self, message: wire.Assign, audio: bytes) -> None:
        key = wire.JobKey(job_id=message.job_id, attempt=message.attempt)
        if self.job is not None:
            if self.job != key:  # the queue is out of date: tell it what this worker holds
                self._send(wire.Heartbeat(job=self.job))
            return
        from ..instrument.settings import CancelToken

        log.info("job %s attempt %d: %s (%s, %d bytes)", key.job_id[:8], key.attempt, message.name,
                 message.clip_name, len(audio))
        self.job = key
        self.token = CancelToken()
        self.pending_progress = None
        self.last_progress = 0.0
        token = self.token

        def work() -> None:
            outcome = run_job(message, audio, self.threads, self.o.device, token,
                              lambda p: self.events.put((key, "progress", p)))
            self.events.put((key, *outcome))

        self.thread = threading.Thread(target=work, name=f"fit-{key.job_id[:8]}", daemon=True)
        self.thread.start()

    def _drain_fit(self) -> None:
        """Forward what the fit thread reported: progress (throttled), then its outcome."""
        while True:
            try:
                key, kind, payload = self.events.get_nowait()
            except queue.Empty:
                break
            if key != self.job:
                continue
            if kind == "progress":
                self.pending_progress = payload
            elif kind == "done":
                final_loss, wall_s, blob = payload
                self._flush_progress(force=True)
                self.outbox = wire.encode(wire.Done(job_id=key.job_id, attempt=key.attempt, final_loss=final_loss,
                                                    wall_s=wall_s), blob)
                self.jobs_done += 1
                log.info("job %s: done in %.1f s, final loss %s", key.job_id[:8], wall_s, final_loss)
                self._send_outbox()
            else:
                failure, reason = payload
                self.outbox = wire.encode(wire.Failed(job_id=key.job_id, attempt=key.attempt, kind=failure,
                                                      reason=reason[:4000]))
                log.info("job %s: %s: %s", key.job_id[:8], failure, reason)
                self._send_outbox()
        self._flush_progress()

    def _flush_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.pending_progress is None or self.job is None:
            return
        if force or now - self.last_progress >= self.o.progress_s:
            self._send(wire.ProgressMsg(job_id=self.job.job_id, attempt=self.job.attempt,
                                        progress=self.pending_progress))
            self.pending_progress = None
            self.last_progress = now
