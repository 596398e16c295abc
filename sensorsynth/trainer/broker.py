"""The queue: one ZeroMQ ROUTER socket that clients and workers talk to, a PUB socket that announces, and
the SQLite store underneath. One thread, one loop; every decision is a pure function of :mod:`.jobs` or
:mod:`.schedule`, and every change is committed before anyone is told about it.

Reliability is the ZeroMQ Guide's Paranoid Pirate, with the queue's memory on disk:

- workers and the queue exchange heartbeats every ``heartbeat_s``; a worker silent for ``liveness``
  heartbeats is dead, and the run it held goes back to the queue (after ``max_losses`` such losses the job
  fails, so a job that kills workers cannot go round forever);
- a worker reports the run it holds in every heartbeat; a run the queue does not expect is cancelled on that
  worker, and a run the queue expects but the worker does not report (after a grace) is requeued;
- a queue restarted while jobs were running keeps them ``running`` for ``orphan_grace_s``: their workers
  reconnect (same identity), say which run they hold in ``ready``, and are adopted; runs nobody claims in
  time are requeued. Results sent while the queue was down are resent by their worker until acknowledged,
  and the state machine accepts each (job, attempt) once.

Who may do what (docs/trainer-security.md): every message is from a :class:`Peer`, named by its CURVE
public key (ZAP's User-Id) when the queue has keys, else by its routing id on loopback. Worker messages are
taken only from worker peers, and a run's ``progress``/``done``/``failed`` only from the peer that holds it.
Clients see, watch, cancel and fetch only their own jobs, by full id; admins every job. What a peer may ask
for is bounded before anything is stored: frames, steps, jobs per client, audio held, and finished jobs are
forgotten by the retention rule (:meth:`Store.prune`).

(Longer than most modules: it is the one place that knows the wire, the workers, the clients and the store
together; each handler is short, and every decision is in :mod:`.jobs`, :mod:`.schedule` or a small method.)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import zmq

from ..instrument.settings import Progress, make_settings, make_spec
from ..instrument_file import write_instrument
from ..protocol import trainer as wire
from . import jobs as J
from .access import WORKER_MESSAGES, Peer, identify, may_replace, may_see, may_send
from .jobs import Job
from .keys import ANNOUNCE_DOMAIN, QUEUE_DOMAIN, ServerKeys, fingerprint
from .schedule import Slot, plan
from .store import Store

log = logging.getLogger("sensorsynth.trainer")

MiB = 1024 * 1024


@dataclass
class BrokerConfig:
    bind: str = "tcp://127.0.0.1:5555"
    pub: str | None = None
    models: Path = Path("models")
    heartbeat_s: float = 1.0
    liveness: int = 5
    max_losses: int = 3
    max_audio_bytes: int = 64 * MiB
    max_result_bytes: int = 32 * MiB
    watch_s: float = 10.0
    orphan_grace_s: float | None = None  # default: two worker timeouts
    keys: ServerKeys | None = None  # CURVE: required (by the command) whenever the queue listens beyond loopback
    local_admin_uid: int | None = field(default_factory=os.getuid)  # keyless loopback: this uid's clients are admin
    max_steps: int = 20_000  # remote settings: a job may not ask for more optimiser steps than this
    max_active_per_client: int = 8  # queued + running jobs one client may have
    max_queue_bytes: int = 1024 * MiB  # audio held for queued and running jobs, all clients together
    max_watchers: int = 16  # clients following one job at once
    keep_s: float = 7 * 86400.0  # retention: finished jobs (and their results) are forgotten after this long,
    keep_jobs: int = 1000  # beyond the newest this many finished jobs,
    keep_result_bytes: int = 1024 * MiB  # or once the results kept pass this many bytes
    prune_every_s: float = 60.0

    @property
    def worker_timeout_s(self) -> float:
        return self.heartbeat_s * self.liveness

    @property
    def max_message_bytes(self) -> int:
        """A frame beyond this closes the sender's connection unread (ZMQ_MAXMSGSIZE): what the largest
        accepted clip (or result) needs, so memory is bounded before a byte is read."""
        return max(self.max_audio_bytes, self.max_result_bytes, wire.MAX_HEADER_BYTES)


@dataclass
class WorkerEntry:
    identity: bytes
    info: wire.WorkerInfo
    last_seen: float
    owner: str = ""  # the peer (key) that said ready: only it may speak for this worker
    job: wire.JobKey | None = None  # the run the queue gave it (until the worker says it has let go)
    assigned_at: float = 0.0
    last_assigned: float = 0.0


class Backend(Protocol):
    """Somewhere else to run fits (Ray): the queue offers it queued jobs after its own workers."""

    worker_id: str

    def capacity(self) -> int: ...
    def start(self, job: Job, audio: bytes) -> None: ...
    def cancel(self, key: wire.JobKey) -> None: ...
    def poll(self) -> list[tuple[str, wire.JobKey, Any, bytes | None]]: ...
    def status(self) -> list[wire.WorkerStatus]: ...
    def close(self) -> None: ...


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sensorsynth")
    except Exception:
        return "unknown"


class Broker:
    def __init__(
        self,
        config: BrokerConfig,
        store: Store,
        *,
        backend: Backend | None = None,
        context: zmq.Context | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.backend = backend
        self.clock, self.wall = clock, wall
        self.ctx = context or zmq.Context.instance()
        self.workers: dict[str, WorkerEntry] = {}  # by worker id
        self.progress: dict[str, Progress] = {}
        self.watchers: dict[str, dict[bytes, float]] = {}  # job id -> client identity -> until
        self.orphans: dict[str, float] = {}  # running jobs nobody holds (after a restart) -> deadline
        self.router: zmq.Socket | None = None
        self.publisher: zmq.Socket | None = None
        self.endpoint = ""
        self.pub_endpoint: str | None = None
        self._next_heartbeat = 0.0
        self._next_prune = 0.0
        self._rejected = 0  # submissions kept as failed since the last prune
        self._dirty = True  # something changed that may allow a dispatch
        self.refused: dict[str, int] = {}  # refusals by kind (counted; logged the first and every 100th time)
        grace = config.orphan_grace_s if config.orphan_grace_s is not None else 2 * config.worker_timeout_s + 1
        now = clock()
        for job in store.in_state("running"):
            self.orphans[job.id] = now + grace
        if self.orphans:
            log.info("%d job(s) were running when the queue stopped; waiting %.0f s for their workers",
                     len(self.orphans), grace)

    # ------------------------------------------------------------------------------------------ sockets

    def bind(self) -> str:
        keys = self.config.keys
        if keys is not None and keys.auth is None:
            keys.start(self.ctx)
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        # a worker reconnecting under its id replaces its old pipe; with keys, a peer could take over another's
        # pipe (and be sent its audio) by claiming its id, so there a duplicate id is refused instead
        router.setsockopt(zmq.ROUTER_HANDOVER, 0 if keys is not None else 1)
        router.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        if keys is not None:
            keys.serve(router, QUEUE_DOMAIN)
        router.bind(self.config.bind)
        self.router = router
        self.endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        if self.config.pub:
            pub = self.ctx.socket(zmq.PUB)
            pub.setsockopt(zmq.LINGER, 0)
            pub.setsockopt(zmq.MAXMSGSIZE, 1024)  # subscribers send only subscriptions
            if keys is not None:
                keys.serve(pub, ANNOUNCE_DOMAIN)  # announcements name every job: admins only
            pub.bind(self.config.pub)
            self.publisher = pub
            self.pub_endpoint = pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        return self.endpoint

    def close(self) -> None:
        for sock in (self.router, self.publisher):
            if sock is not None:
                sock.close(0)
        self.router = self.publisher = None
        if self.backend is not None:
            self.backend.close()
        if self.config.keys is not None:
            self.config.keys.stop()

    def _send(self, identity: bytes, message: Any, *files: bytes) -> None:
        assert self.router is not None
        try:
            self.router.send_multipart([identity, *wire.encode(message, *files)], flags=zmq.NOBLOCK)
        except zmq.Again:  # that peer's queue is full: it is not reading; heartbeats will sort it out
            log.warning("dropped a %s message: the peer is not reading", getattr(message, "type", "?"))

    def _publish(self, topic: str, message: Any) -> None:
        if self.publisher is not None:
            try:
                self.publisher.send_multipart([topic.encode(), *wire.encode(message)], flags=zmq.NOBLOCK)
            except zmq.Again:
                pass

    # --------------------------------------------------------------------------------------------- loop

    def run(self, should_stop: Callable[[], bool], on_tick: Callable[[], None] | None = None) -> None:
        """Serve until ``should_stop()``; ``on_tick`` runs a few times a second (local worker upkeep)."""
        if self.router is None:
            self.bind()
        assert self.router is not None
        self.deliver_pending()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        tick_every = min(0.1, self.config.heartbeat_s / 4)
        next_tick = 0.0
        while not should_stop():
            events = dict(poller.poll(int(tick_every * 1000)))
            if self.router in events:
                for _ in range(100):  # then tick, even under a flood
                    if not self.receive():
                        break
            now = self.clock()
            if now >= next_tick:
                next_tick = now + tick_every
                self.tick()
                if on_tick is not None:
                    on_tick()

    def receive(self) -> bool:
        """Read and handle one waiting message (False when none is waiting). With keys, the sender's public
        key comes from ZAP (the frame's User-Id), never from the message."""
        assert self.router is not None
        try:
            frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        user_id = None
        if self.config.keys is not None:
            try:
                user_id = frames[-1].get("User-Id")
            except (zmq.ZMQError, AttributeError):
                user_id = None
        self.handle([f.bytes for f in frames], user_id)
        return True

    def peer(self, identity: bytes, user_id: str | None) -> Peer | None:
        """Who sent a message, or None when its key is no longer allowed."""
        keys = self.config.keys
        return identify(identity, user_id, keys.ring.roles if keys is not None else None,
                        self.config.local_admin_uid)

    def _refuse(self, what: str, detail: str) -> None:
        count = self.refused.get(what, 0) + 1
        self.refused[what] = count
        if count == 1 or count % 100 == 0:
            log.warning("refused %s (%d so far): %s", what, count, detail)

    def handle(self, frames: list[bytes], user_id: str | None = None) -> None:
        """One message from a client or a worker; never raises (one bad message must not stop the queue)."""
        if len(frames) < 2:
            return
        identity, body = frames[0], frames[1:]
        try:
            message, files = wire.decode(body, wire.TO_QUEUE)
        except wire.WireError as exc:
            self._refuse(f"a malformed message ({exc.code})", exc.message)
            self.router.send_multipart([identity, *exc.reply()], flags=zmq.NOBLOCK)  # type: ignore[union-attr]
            return
        peer = self.peer(identity, user_id)
        if peer is None or not may_send(peer, message.type):
            what = "a worker" if message.type in WORKER_MESSAGES else "a client"
            self._refuse(f"{message.type} from a peer that is not {what}", f"{peer.owner if peer else user_id}")
            error = wire.ErrorMsg(code="forbidden", message=f"{message.type}: this key may not act as {what}"
                                  if peer is not None else f"{message.type}: this key is no longer allowed",
                                  ref=message.type, req=getattr(message, "req", None))
            self._send(identity, error)
            return
        assert peer is not None
        handler = getattr(self, f"_on_{message.type}")
        try:
            handler(identity, peer, message, *files)
        except Exception as exc:  # a bug, or the disk: say so, keep serving
            log.exception("while handling %s", message.type)
            if message.type in ("hello", "submit", "watch", "list", "cancel", "fetch"):
                error = wire.ErrorMsg(code="internal", message=f"{type(exc).__name__}: {exc}", ref=message.type,
                                      req=getattr(message, "req", None))
                self._send(identity, error)

    def tick(self) -> None:
        now = self.clock()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_s
            for entry in self.workers.values():
                self._send(entry.identity, wire.Heartbeat())
        self._expire_workers(now)
        self._expire_orphans(now)
        if now >= self._next_prune:
            self._next_prune = now + self.config.prune_every_s
            self.prune()
        if self.backend is not None:
            self._poll_backend()
        self.dispatch()
        for job_id in list(self.watchers):
            live = {k: until for k, until in self.watchers[job_id].items() if until > now}
            if live:
                self.watchers[job_id] = live
            else:
                del self.watchers[job_id]

    def prune(self) -> int:
        """Apply the retention rule (see BrokerConfig: keep_s, keep_jobs, keep_result_bytes)."""
        c = self.config
        gone = self.store.prune(self.wall() - c.keep_s, c.keep_jobs, c.keep_result_bytes)
        if gone:
            log.info("forgot %d finished job(s) under the retention rule", gone)
        return gone

    # ------------------------------------------------------------------------------------------ changes

    def _changed(self, job: Job) -> None:
        """Tell the job's watchers and the PUB socket; forget progress of jobs that are not running."""
        if job.state != "running":
            self.progress.pop(job.id, None)
        message = wire.JobMsg(job=job.info(self.progress.get(job.id)))
        for identity in self.watchers.get(job.id, {}):
            self._send(identity, message)
        if job.terminal:
            self.watchers.pop(job.id, None)
        self._publish("job", message)
        self._dirty = True

    def _save(self, new: Job, old: Job) -> bool:
        if not self.store.save(new, old):
            log.warning("job %s changed under us; kept the stored state", old.id)
            return False
        self._changed(new)
        return True

    def _lose(self, key: wire.JobKey, reason: str) -> None:
        job = self.store.get(key.job_id)
        if job is None or job.state != "running" or job.attempt != key.attempt:
            return
        new = J.lose(job, key.attempt, self.wall(), reason=reason, max_losses=self.config.max_losses)
        log.warning("job %s (%s) attempt %d lost: %s -> %s", job.id[:8], job.name, key.attempt, reason, new.state)
        self._save(new, job)

    def _expire_workers(self, now: float) -> None:
        for worker_id, entry in list(self.workers.items()):
            if now - entry.last_seen > self.config.worker_timeout_s:
                del self.workers[worker_id]
                log.warning("worker %s (%s pid %s) is silent: gone", worker_id, entry.info.host, entry.info.pid)
                if entry.job is not None:
                    self._lose(entry.job, f"worker {entry.info.host} pid {entry.info.pid} stopped answering")
                self._dirty = True

    def _expire_orphans(self, now: float) -> None:
        for job_id, deadline in list(self.orphans.items()):
            if now >= deadline:
                del self.orphans[job_id]
                job = self.store.get(job_id)
                if job is not None and job.state == "running":
                    self._lose(wire.JobKey(job_id=job_id, attempt=job.attempt),
                               "no worker claimed it after the queue restarted")

    # ------------------------------------------------------------------------------------------ dispatch

    def dispatch(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        queued = self.store.in_state("queued")
        if not queued:
            return
        slots = [
            Slot(worker=w.info.id, machine=w.info.machine, threads=w.info.threads, cores=w.info.cores,
                 idle=w.job is None, last_assigned=w.last_assigned)
            for w in self.workers.values()
        ]
        started = set()
        for job_id, worker_id in plan([j.id for j in queued], slots):
            job = next(j for j in queued if j.id == job_id)
            self._start(job, worker_id)
            started.add(job_id)
        if self.backend is not None:
            room = self.backend.capacity()
            for job in queued:
                if room <= 0:
                    break
                if job.id not in started:
                    self._start(job, self.backend.worker_id)
                    room -= 1

    def _start(self, job: Job, worker_id: str) -> None:
        audio = self.store.audio(job.id)
        now = self.wall()
        new = J.assign(job, worker_id, now)
        if audio is None:  # cannot happen unless the database was edited by hand
            self._save(J.fail(new, new.attempt, now, reason="its audio is missing from the queue",
                              failure="internal"), job)
            return
        if not self._save(new, job):
            return
        key = wire.JobKey(job_id=job.id, attempt=new.attempt)
        assign = wire.Assign(job_id=job.id, attempt=new.attempt, name=job.name, clip_name=job.clip_name,
                             settings=job.settings, spec=job.spec)
        if self.backend is not None and worker_id == self.backend.worker_id:
            self.backend.start(new, audio)
        else:
            entry = self.workers[worker_id]
            entry.job, entry.assigned_at, entry.last_assigned = key, self.clock(), self.clock()
            self._send(entry.identity, assign, audio)
        log.info("job %s (%s) attempt %d -> %s", job.id[:8], job.name, new.attempt, worker_id)

    # ----------------------------------------------------------------------------------------- workers

    def _entry(self, identity: bytes, peer: Peer) -> WorkerEntry | None:
        """The worker behind ``identity``, if ``peer`` is the one that registered it."""
        entry = self.workers.get(identity.decode("ascii", "replace"))
        if entry is None or entry.owner != peer.owner:
            return None
        entry.last_seen = self.clock()
        return entry

    def _on_ready(self, identity: bytes, peer: Peer, msg: wire.Ready) -> None:
        if msg.worker.id.encode() != identity:
            log.warning("a worker's id %s does not match its socket identity; refused", msg.worker.id)
            return
        if self.config.keys is not None:  # the id names the key, so a job's recorded worker names its key too
            expected = f"w-{fingerprint(peer.key or '')}"
            if not msg.worker.id.startswith(expected):
                self._refuse("a worker id not made from its key", msg.worker.id)
                self._send(identity, wire.ErrorMsg(code="forbidden", ref="ready",
                                                   message=f"ready: a worker with this key must use an id "
                                                   f"starting {expected}"))
                return
        old = self.workers.get(msg.worker.id)
        if old is not None and old.owner != peer.owner:
            self._refuse("ready under another worker's id", msg.worker.id)
            return
        entry = WorkerEntry(identity=identity, info=msg.worker, last_seen=self.clock(), owner=peer.owner)
        if old is not None:
            entry.job, entry.assigned_at, entry.last_assigned = old.job, old.assigned_at, old.last_assigned
        else:
            log.info("worker %s joined: %s pid %s, %s, %d threads of %d cores", msg.worker.id, msg.worker.host,
                     msg.worker.pid, msg.worker.device, msg.worker.threads, msg.worker.cores)
        self.workers[msg.worker.id] = entry
        self._reconcile(entry, msg.job, ready=True)
        self._send(identity, wire.Heartbeat())
        self._dirty = True

    def _on_heartbeat(self, identity: bytes, peer: Peer, msg: wire.Heartbeat) -> None:
        entry = self._entry(identity, peer)
        if entry is None:
            self._send(identity, wire.Reconnect(reason="unknown worker: send ready"))
            return
        self._reconcile(entry, msg.job, ready=False)

    def _reconcile(self, entry: WorkerEntry, held: wire.JobKey | None, *, ready: bool) -> None:
        """Make the queue's idea of what ``entry`` runs agree with what it says it holds."""
        assigned = entry.job
        if held is not None and held != assigned:
            job = self.store.get(held.job_id)
            if job is not None and job.state == "running" and job.attempt == held.attempt and assigned is None \
                    and job.worker == entry.info.id and not self._held_by_other(job.id, entry):
                # adopted (the queue restarted): only by the worker the run was given to, so a peer that
                # learnt a job id cannot claim its run and complete it
                entry.job, entry.assigned_at = held, self.clock()
                self.orphans.pop(job.id, None)
                log.info("job %s attempt %d adopted from worker %s", job.id[:8], held.attempt, entry.info.id)
                return
            if job is not None and job.state == "done" and job.attempt == held.attempt:
                self._send(entry.identity, wire.Ack(job_id=held.job_id, attempt=held.attempt))
            else:
                self._send(entry.identity, wire.CancelJob(job_id=held.job_id, attempt=held.attempt))
        if assigned is not None and held != assigned:
            job = self.store.get(assigned.job_id)
            still_running = job is not None and job.state == "running" and job.attempt == assigned.attempt
            settled = ready or self.clock() - entry.assigned_at > self.config.worker_timeout_s
            if not still_running:
                entry.job = None  # cancelled or finished: the worker has let go
                self._dirty = True
            elif settled:
                entry.job = None
                self._lose(assigned, f"worker {entry.info.host} pid {entry.info.pid} no longer holds it")

    def _held_by_other(self, job_id: str, entry: WorkerEntry) -> bool:
        return any(w is not entry and w.job is not None and w.job.job_id == job_id for w in self.workers.values())

    def _on_progress(self, identity: bytes, peer: Peer, msg: wire.ProgressMsg) -> None:
        entry = self._entry(identity, peer)
        key = wire.JobKey(job_id=msg.job_id, attempt=msg.attempt)
        if entry is None or entry.job != key:
            return
        self._progress(key, msg.progress)

    def _progress(self, key: wire.JobKey, progress: Progress) -> None:
        job = self.store.get(key.job_id)
        if job is None or job.state != "running" or job.attempt != key.attempt:
            return
        self.progress[key.job_id] = progress
        message = wire.JobMsg(job=job.info(progress))
        for identity in self.watchers.get(job.id, {}):
            self._send(identity, message)
        self._publish("job", message)

    def _holder(self, identity: bytes, peer: Peer, key: wire.JobKey, what: str) -> WorkerEntry | None | bool:
        """The entry of the worker that holds ``key`` when ``peer`` is it; False when the run is live but
        held by someone else (refused, not acknowledged); None when the run is stale (acknowledged: it
        changes nothing, and the worker may stop resending)."""
        entry = self._entry(identity, peer)
        if entry is not None and entry.job == key:
            return entry
        job = self.store.get(key.job_id)
        if job is not None and job.state == "running" and job.attempt == key.attempt:
            self._refuse(f"{what} from a peer that does not hold the run",
                         f"job {key.job_id[:8]} attempt {key.attempt} from {peer.owner[:24]}")
            self._send(identity, wire.ErrorMsg(code="forbidden", ref=what,
                                               message=f"{what}: this worker does not hold job {key.job_id} "
                                               f"attempt {key.attempt}"))
            return False
        return None

    def _on_done(self, identity: bytes, peer: Peer, msg: wire.Done, blob: bytes) -> None:
        key = wire.JobKey(job_id=msg.job_id, attempt=msg.attempt)
        entry = self._holder(identity, peer, key, "done")
        if entry is False:
            return
        if entry is not None:
            self._finish_done(key, msg.final_loss, blob)
            entry.job = None
            self._dirty = True
        self._send(identity, wire.Ack(job_id=msg.job_id, attempt=msg.attempt))

    def _finish_done(self, key: wire.JobKey, final_loss: float | None, blob: bytes) -> None:
        """Accept a result once: validate it, commit it, then write it to the models folder."""
        job = self.store.get(key.job_id)
        if job is None or job.state != "running" or job.attempt != key.attempt:
            return  # stale or repeated: acknowledged, changes nothing
        now = self.wall()
        reason = self._check_result(job, blob)
        if reason is not None:
            self._save(J.fail(job, key.attempt, now, reason=reason, failure="internal"), job)
            return
        new = J.complete(job, key.attempt, now, final_loss=final_loss, result_path=None)
        if not self.store.complete(new, job, blob):
            return
        log.info("job %s (%s) done, attempt %d", job.id[:8], job.name, key.attempt)
        self.orphans.pop(job.id, None)
        new = self._deliver(new) or new
        self._changed(new)

    def _check_result(self, job: Job, blob: bytes) -> str | None:
        from ..instrument_file import InstrumentFileError, loads

        if len(blob) > self.config.max_result_bytes:
            return f"the result is {len(blob)} bytes, more than the queue keeps ({self.config.max_result_bytes})"
        try:
            loads(blob, f"the result of job {job.id[:8]}")
        except InstrumentFileError as exc:
            return f"the worker sent an unusable instrument: {exc}"
        return None

    def _on_failed(self, identity: bytes, peer: Peer, msg: wire.Failed) -> None:
        key = wire.JobKey(job_id=msg.job_id, attempt=msg.attempt)
        entry = self._holder(identity, peer, key, "failed")
        if entry is False:
            return
        if entry is not None:
            self._finish_failed(key, msg.kind, msg.reason, entry.info.id)
            entry.job = None
            self._dirty = True
        self._send(identity, wire.Ack(job_id=msg.job_id, attempt=msg.attempt))

    def _finish_failed(self, key: wire.JobKey, kind: str, reason: str, worker: str) -> None:
        job = self.store.get(key.job_id)
        if job is None or job.state != "running" or job.attempt != key.attempt:
            return
        now = self.wall()
        if kind == "cancelled":  # the worker stopped it without being asked (shutting down): run it again
            self._save(J.release(job, key.attempt, now, reason=f"worker {worker} stopped: {reason}"), job)
            return
        log.info("job %s (%s) failed (%s): %s", job.id[:8], job.name, kind, reason)
        self._save(J.fail(job, key.attempt, now, reason=reason, failure=kind), job)

    def _on_bye(self, identity: bytes, peer: Peer, msg: wire.Bye) -> None:
        entry = self._entry(identity, peer)
        if entry is None:
            return
        del self.workers[entry.info.id]
        log.info("worker %s left", entry.info.id)
        key = entry.job
        if key is not None:
            job = self.store.get(key.job_id)
            if job is not None and job.state == "running" and job.attempt == key.attempt:
                self._save(J.release(job, key.attempt, self.wall(), reason=f"worker {entry.info.id} left"), job)
        self._dirty = True

    # ---------------------------------------------------------------------------------------- backend

    def _poll_backend(self) -> None:
        assert self.backend is not None
        for kind, key, payload, blob in self.backend.poll():
            if kind == "progress":
                self._progress(key, payload)
            elif kind == "done":
                self._finish_done(key, payload, blob or b"")
            elif kind == "failed":
                failure, reason = payload
                self._finish_failed(key, failure, reason, self.backend.worker_id)
            elif kind == "lost":
                self._lose(key, str(payload))
            self._dirty = True

    # ----------------------------------------------------------------------------------------- results

    def deliver_pending(self) -> None:
        """Write results committed but not yet written (the queue stopped in between)."""
        for job in self.store.undelivered():
            new = self._deliver(job)
            if new is not None:
                self._changed(new)

    def _deliver(self, job: Job) -> Job | None:
        """Write the instrument to models/NAME.instrument atomically (a temp name a player ignores, then a
        rename), mark it delivered, announce it. Returns the job with its result path."""
        blob = self.store.result(job.id)
        if blob is None:
            return None
        folder = self.config.models
        target = folder / f"{job.name}.instrument"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if target.exists() and not job.replace and target.read_bytes() != blob:
                # it appeared after the job was accepted: keep both
                target = folder / f"{job.name}-{job.id[:8]}.instrument"
            write_instrument(folder, target.name[: -len(".instrument")], blob, job.id, replace=True)
        except OSError as exc:
            log.error("job %s: cannot write %s (%s); the result stays in the queue (sensorsynth submit -o "
                      "or fetch)", job.id[:8], target, exc)
            return None
        self.store.delivered(job.id, str(target))
        self._publish("instrument", wire.InstrumentEvent(name=target.stem, path=str(target), job_id=job.id))
        log.info("job %s: wrote %s", job.id[:8], target)
        return replace(job, result_path=str(target))

    # ----------------------------------------------------------------------------------------- clients

    def _resolve(self, job_id: str, req: str | None, what: str, peer: Peer) -> Job:
        """The job ``job_id`` (the full id), if ``peer`` submitted it or is an admin."""
        job = self.store.get(job_id)
        if job is None:
            raise wire.WireError("unknown_job", f"no job {job_id}", what, req)
        if not may_see(peer, job.owner):
            self._refuse(f"{what} of another client's job", f"job {job_id[:8]} by {peer.owner[:24]}")
            raise wire.WireError("forbidden", f"job {job_id} was submitted by another client", what, req)
        return job

    def _reply_error(self, identity: bytes, exc: wire.WireError) -> None:
        self.router.send_multipart([identity, *exc.reply()], flags=zmq.NOBLOCK)  # type: ignore[union-attr]

    def _on_hello(self, identity: bytes, peer: Peer, msg: wire.Hello) -> None:
        c = self.config
        limits = wire.Limits(max_audio_bytes=c.max_audio_bytes, max_message_bytes=c.max_message_bytes,
                             max_result_bytes=c.max_result_bytes, max_steps=c.max_steps,
                             max_active_jobs=c.max_active_per_client)
        self._send(identity, wire.Welcome(req=msg.req, version=_version(), limits=limits))

    def _on_submit(self, identity: bytes, peer: Peer, msg: wire.Submit, audio: bytes) -> None:
        existing = self.store.get(msg.job_id)
        if existing is not None and existing.owner != peer.owner:
            return self._reply_error(identity, wire.WireError(
                "forbidden", f"job id {msg.job_id} is taken by another client's job", "submit", msg.req))
        if existing is None:
            busy = self._busy(peer, len(audio))
            if busy is not None:
                self._refuse("a submission over a queue bound", busy)
                return self._reply_error(identity, wire.WireError("limit", busy, "submit", msg.req))
            now = self.wall()
            job = J.new_job(msg.job_id, msg.name, msg.clip_name, now, settings=msg.settings, spec=msg.spec,
                            replace=msg.replace, audio_bytes=len(audio), owner=peer.owner)
            reason = self._refusal(msg, audio, peer)
            if reason is not None:
                job = J.rejected(job, reason, now)
                log.info("job %s (%s) refused: %s", job.id[:8], job.name, reason)
                self._rejected += 1
                if self._rejected >= 100:  # a flood of refused submissions: apply the retention rule now
                    self._rejected = 0
                    self.prune()
            else:
                log.info("job %s (%s) queued: %s, %d bytes", job.id[:8], job.name, msg.clip_name, len(audio))
            existing = self.store.add(job, None if job.terminal else audio)
            self._changed(existing)
        self._send(identity, wire.JobMsg(req=msg.req, job=existing.info(self.progress.get(existing.id))))

    def _busy(self, peer: Peer, audio_bytes: int) -> str | None:
        """Why a submission cannot even be kept (nothing is stored): the client's own queue is full, or the
        audio held for all queued jobs would pass the queue's disk bound."""
        c = self.config
        active = self.store.active_count(peer.owner)
        if active >= c.max_active_per_client:
            return (f"you have {active} jobs queued or running, the most this trainer takes from one client; "
                    "submit again when one has finished")
        held = self.store.audio_bytes()
        if held + audio_bytes > c.max_queue_bytes:
            return (f"the queue holds {held / MiB:.0f} MiB of audio, and this clip would pass its "
                    f"{c.max_queue_bytes / MiB:.0f} MiB; submit again later")
        return None

    def _refusal(self, msg: wire.Submit, audio: bytes, peer: Peer) -> str | None:
        """Why a submission cannot run (it is then kept as a failed job), or None."""
        if not wire.valid_name(msg.name):
            return f"bad name {msg.name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        if len(audio) > self.config.max_audio_bytes:
            return (f"the audio is {len(audio) / MiB:.1f} MiB; this trainer accepts at most "
                    f"{self.config.max_audio_bytes / MiB:.1f} MiB")
        if not audio:
            return "the audio is empty (0 bytes)"
        try:
            settings = make_settings(msg.settings)
            make_spec(msg.spec)  # within FitLimits (pipeline.check_spec): the model's size and memory
        except ValueError as exc:
            return str(exc)
        if settings.steps > self.config.max_steps:
            return (f"bad settings: steps: {settings.steps} steps; this trainer runs at most "
                    f"{self.config.max_steps} per job")
        target = self.config.models / f"{msg.name}.instrument"
        exists, active = target.exists(), self.store.active_with_name(msg.name)
        if not msg.replace:
            if exists:
                return f"{target} already exists (submit with --replace to overwrite it)"
            if active:
                return f"another job is already fitting {msg.name!r} (submit with --replace to overwrite it)"
        elif (exists or active) and not may_replace(peer, self.store.last_owner(msg.name), [j.owner for j in active]):
            return (f"{msg.name!r} was made by someone else: only its maker or an admin key may replace it "
                    "(choose another name)")
        return None

    def _on_watch(self, identity: bytes, peer: Peer, msg: wire.Watch) -> None:
        try:
            job = self._resolve(msg.job_id, msg.req, "watch", peer)
        except wire.WireError as exc:
            return self._reply_error(identity, exc)
        if not job.terminal:
            watchers = self.watchers.setdefault(job.id, {})
            if identity in watchers or len(watchers) < self.config.max_watchers:
                watchers[identity] = self.clock() + self.config.watch_s
        self._send(identity, wire.JobMsg(req=msg.req, job=job.info(self.progress.get(job.id))))

    def _on_list(self, identity: bytes, peer: Peer, msg: wire.ListJobs) -> None:
        now = self.clock()
        owner = None if peer.admin else peer.owner
        infos = [j.info(self.progress.get(j.id)) for j in self.store.jobs(msg.limit, msg.states, owner)]
        workers = [
            wire.WorkerStatus(id=w.info.id, host=w.info.host, machine=w.info.machine, pid=w.info.pid,
                              device=w.info.device, threads=w.info.threads, cores=w.info.cores, job=w.job,
                              last_seen_s=round(now - w.last_seen, 2))
            for w in self.workers.values()
        ]
        if self.backend is not None:
            workers += self.backend.status()
        if self.config.keys is not None and not peer.admin:  # hosts, pids and others' jobs are the operator's
            workers = [w.model_copy(update={"host": "", "machine": "", "pid": None,
                                            "job": w.job if w.job and w.job.job_id in {i.id for i in infos}
                                            else None}) for w in workers]
        self._send(identity, wire.JobsMsg(req=msg.req, jobs=infos, workers=workers))

    def _on_cancel(self, identity: bytes, peer: Peer, msg: wire.CancelRequest) -> None:
        try:
            job = self._resolve(msg.job_id, msg.req, "cancel", peer)
        except wire.WireError as exc:
            return self._reply_error(identity, exc)
        if job.terminal:
            error = wire.WireError("finished", f"job {job.id[:8]} ({job.name}) is already {job.state}", "cancel", msg.req)
            return self._reply_error(identity, error)
        key = job.key
        new = J.cancel(job, self.wall())
        if self._save(new, job):
            log.info("job %s (%s) cancelled", job.id[:8], job.name)
            self.orphans.pop(job.id, None)
            if key is not None:
                self._stop_run(key)
        self._send(identity, wire.JobMsg(req=msg.req, job=new.info()))

    def _stop_run(self, key: wire.JobKey) -> None:
        """Tell whoever runs ``key`` to stop; its slot stays taken until it says it has let go."""
        for entry in self.workers.values():
            if entry.job == key:
                self._send(entry.identity, wire.CancelJob(job_id=key.job_id, attempt=key.attempt))
        if self.backend is not None:
            self.backend.cancel(key)

    def _on_fetch(self, identity: bytes, peer: Peer, msg: wire.Fetch) -> None:
        try:
            job = self._resolve(msg.job_id, msg.req, "fetch", peer)
        except wire.WireError as exc:
            return self._reply_error(identity, exc)
        blob = self.store.result(job.id) if job.state == "done" else None
        if blob is None:
            error = wire.WireError("not_done", f"job {job.id[:8]} ({job.name}) is {job.state}, it has no result",
                                   "fetch", msg.req)
            return self._reply_error(identity, error)
        self._send(identity, wire.ResultMsg(req=msg.req, job_id=job.id, name=job.name), blob)
