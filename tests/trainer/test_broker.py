"""The queue in-process, with real ZeroMQ sockets on 127.0.0.1 but a hand-driven clock: heartbeats, dead
workers, stale and repeated results, restarts with running jobs and undelivered results, cancel, bye."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from sensorsynth.protocol import trainer as wire
from sensorsynth.trainer.broker import Broker, BrokerConfig
from sensorsynth.trainer.store import Store

from .helpers import tiny_instrument_bytes
from .procs import free_port

_ids = itertools.count()


class Peer:
    """A DEALER standing in for a worker or a client."""

    def __init__(self, ctx: zmq.Context, endpoint: str, identity: str | None = None, keys: Any = None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 5000)  # a send with no connection to send on fails, never hangs
        if identity:
            self.sock.setsockopt(zmq.ROUTING_ID, identity.encode())
        if keys is not None:
            keys.apply(self.sock)
        self.sock.connect(endpoint)
        self.id = identity

    def send(self, message: Any, *files: bytes) -> None:
        self.sock.send_multipart(wire.encode(message, *files))

    def inbox(self, adapter: Any = wire.TO_WORKER) -> list[tuple[Any, list[bytes]]]:
        out = []
        while self.sock.poll(50):
            out.append(wire.decode(self.sock.recv_multipart(), adapter))
        return out


class Rig:
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.tmp = tmp_path
        self.ctx = zmq.Context()
        self.now = 0.0
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.config = BrokerConfig(bind=self.endpoint, models=tmp_path / "models", heartbeat_s=1.0, liveness=3,
                                   **config)
        self.start()

    def start(self) -> None:
        self.store = Store(self.tmp / "queue.db")
        self.broker = Broker(self.config, self.store, context=self.ctx, clock=lambda: self.now,
                             wall=lambda: 1000.0 + self.now)
        deadline = time.monotonic() + 5
        while True:  # the previous queue's socket is closed by ZeroMQ's I/O thread, a moment later
            try:
                self.broker.bind()
                break
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.broker.deliver_pending()

    def restart(self) -> None:
        """What a killed and restarted queue process sees: the same database, no memory."""
        self.broker.close()
        self.store.close()
        self.start()

    def pump(self) -> None:
        """Handle whatever arrives until the line has been quiet for a moment, ticking after each batch."""
        quiet = 0
        while quiet < 2:
            if self.broker.router.poll(20):
                quiet = 0
                while self.broker.receive():
                    pass
            else:
                quiet += 1
            self.broker.tick()

    def worker(self, machine: str = "m", threads: int = 1, cores: int = 2) -> Peer:
        wid = f"w-test{next(_ids)}"
        peer = Peer(self.ctx, self.endpoint, wid)
        peer.info = wire.WorkerInfo(id=wid, host="h", machine=machine, pid=1, threads=threads, cores=cores)
        peer.send(wire.Ready(worker=peer.info))
        deadline = time.monotonic() + 10
        while wid not in self.broker.workers:  # a loaded machine may take a while to connect
            assert time.monotonic() < deadline, "the worker never registered"
            self.pump()
        peer.inbox()  # its welcome heartbeat
        return peer

    def submit(self, client: Peer, name: str, audio: bytes = b"RIFF-some-audio", **fields: Any) -> wire.JobInfo:
        job_id = f"{next(_ids):032x}"
        client.send(wire.Submit(job_id=job_id, name=name, clip_name="take.wav", req=name, **fields), audio)
        return self.expect(client, lambda m: getattr(m, "req", None) == name, wire.TO_CLIENT)[0].job

    def expect(self, peer: Peer, match: Any, adapter: Any = wire.TO_WORKER) -> list[Any]:
        """Pump until ``peer`` has received messages of which at least one matches (a type or a test)."""
        test = match if callable(match) else (lambda m: m.type == match)
        deadline = time.monotonic() + 10
        while True:
            self.pump()
            found = [m for m, _ in peer.inbox(adapter) if test(m)]
            if found:
                return found
            assert time.monotonic() < deadline, f"{peer.id or 'client'} never got {match}"

    def close(self) -> None:
        self.broker.close()
        self.store.close()
        self.ctx.destroy(0)


def assigns(peer: Peer, rig: Rig | None = None) -> list[tuple[wire.Assign, bytes]]:
    """The assignments ``peer`` has received (waiting for at least one when given the rig)."""
    deadline = time.monotonic() + 10
    while True:
        found = [(m, f[0]) for m, f in peer.inbox() if m.type == "assign"]
        if found or rig is None:
            return found
        assert time.monotonic() < deadline, "no assignment arrived"
        rig.pump()


def of_type(messages: list[tuple[Any, list[bytes]]], kind: str) -> list[Any]:
    return [m for m, _ in messages if m.type == kind]


@pytest.mark.slow
def test_a_job_runs_and_completes_once(rig: Rig, tmp_path: Path) -> None:
    worker, client = rig.worker(), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    job = rig.submit(client, "cello", settings={"steps": 3})
    assert job.state == "queued"
    rig.pump()
    [(assign, audio)] = assigns(worker, rig)
    assert (assign.job_id, assign.attempt, assign.name, audio) == (job.id, 1, "cello", b"RIFF-some-audio")
    blob = tiny_instrument_bytes("cello")
    worker.send(wire.Done(job_id=job.id, attempt=1, final_loss=0.5), blob)
    acks = rig.expect(worker, "ack")
    assert [(a.job_id, a.attempt) for a in acks] == [(job.id, 1)]
    target = rig.config.models / "cello.instrument"
    assert target.read_bytes() == blob
    stamp = target.stat().st_mtime_ns
    stored = rig.store.get(job.id)
    assert (stored.state, stored.result_path, stored.final_loss) == ("done", str(target), 0.5)
    worker.send(wire.Done(job_id=job.id, attempt=1, final_loss=0.9), b"different bytes")  # resent
    assert rig.expect(worker, "ack")  # acknowledged again, so the worker stops resending
    assert target.stat().st_mtime_ns == stamp and rig.store.get(job.id).final_loss == 0.5
    assert not list(rig.config.models.glob(".*"))  # no temp files left


def test_a_silent_worker_is_dead_and_its_job_goes_to_another(rig: Rig) -> None:
    first, client = rig.worker(), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    job = rig.submit(client, "viola")
    rig.pump()
    assert assigns(first, rig)
    second = rig.worker()
    rig.pump()
    for _ in range(4):  # the second keeps beating, the first is silent
        rig.now += 1.0
        second.send(wire.Heartbeat())
        rig.pump()
    stored = rig.store.get(job.id)
    assert (stored.state, stored.attempt, stored.losses, stored.worker) == ("running", 2, 1, second.id)
    [(assign, _)] = assigns(second, rig)
    assert assign.attempt == 2
    first.send(wire.Done(job_id=job.id, attempt=1), tiny_instrument_bytes("viola"))  # back from the dead
    assert rig.expect(first, "ack") and rig.store.get(job.id).state == "running"
    first.send(wire.Heartbeat(job=wire.JobKey(job_id=job.id, attempt=1)))
    reconnect = rig.expect(first, "reconnect")
    assert reconnect  # it is unknown now: it must say ready again
    first.send(wire.Ready(worker=first.info, job=wire.JobKey(job_id=job.id, attempt=1)))
    cancels = rig.expect(first, "cancel_job")
    assert [(c.job_id, c.attempt) for c in cancels] == [(job.id, 1)]  # its stale run is stopped


def test_a_job_that_kills_its_workers_fails_after_max_losses(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_losses=2)
    try:
        client = Peer(rig.ctx, rig.endpoint)
        job = rig.submit(client, "bomb")
        for _ in range(2):
            rig.worker()
            rig.pump()
            rig.now += 10
            rig.pump()
        stored = rig.store.get(job.id)
        assert (stored.state, stored.failure, stored.losses) == ("failed", "lost", 2)
    finally:
        rig.close()


def test_a_restarted_queue_adopts_running_jobs_and_requeues_unclaimed_ones(rig: Rig) -> None:
    a, b, client = rig.worker(), rig.worker(), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    jobs = [rig.submit(client, n) for n in ("one", "two", "three")]
    rig.pump()
    held = {w.id: assigns(w, rig)[0][0] for w in (a, b)}
    assert {m.job_id for m in held.values()} == {jobs[0].id, jobs[1].id}
    rig.restart()
    key_a = wire.JobKey(job_id=held[a.id].job_id, attempt=1)
    for _ in range(50):  # a's socket reconnects to the new queue by itself; it beats until it is heard
        a.send(wire.Heartbeat(job=key_a))
        rig.pump()
        if of_type(a.inbox(), "reconnect"):
            break
    else:
        raise AssertionError("the restarted queue never asked the worker to reconnect")
    a.send(wire.Ready(worker=a.info, job=key_a))
    deadline = time.monotonic() + 10
    while key_a.job_id in rig.broker.orphans:  # adopted once its ready is read
        assert time.monotonic() < deadline, "the run was never adopted"
        rig.pump()
    rig.now += 2 * rig.config.worker_timeout_s + 2  # b never comes back
    a.send(wire.Heartbeat(job=key_a))
    rig.pump()
    adopted = rig.store.get(key_a.job_id)
    assert (adopted.state, adopted.attempt, adopted.losses) == ("running", 1, 0)
    lost = rig.store.get(held[b.id].job_id)
    assert (lost.state, lost.losses) == ("queued", 1)
    a.send(wire.Done(job_id=key_a.job_id, attempt=1), tiny_instrument_bytes("x"))
    rig.pump()
    assert rig.store.get(key_a.job_id).state == "done"
    assert rig.store.get(jobs[2].id).state in ("queued", "running")  # still there, not lost


def test_a_result_committed_but_not_written_is_written_on_restart(rig: Rig) -> None:
    from sensorsynth.trainer import jobs as J

    client = Peer(rig.ctx, rig.endpoint)
    job = rig.store.get(rig.submit(client, "late").id)
    running = J.assign(job, "w", 1.0)
    rig.store.save(running, job)
    rig.store.complete(J.complete(running, 1, 2.0, final_loss=None, result_path=None), running,
                       tiny_instrument_bytes("late"))
    assert not (rig.config.models / "late.instrument").exists()  # as if the queue died right here
    rig.restart()
    assert (rig.config.models / "late.instrument").exists()
    assert rig.store.get(job.id).result_path == str(rig.config.models / "late.instrument")


def test_cancel_keeps_the_slot_until_the_worker_lets_go(rig: Rig) -> None:
    worker, client = rig.worker(cores=1), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    first = rig.submit(client, "first")
    rig.pump()
    assert assigns(worker, rig)
    second = rig.submit(client, "second")
    client.send(wire.CancelRequest(job_id=first.id, req="c"))
    rig.pump()
    replies = [m for m, _ in client.inbox(wire.TO_CLIENT) if getattr(m, "req", None) == "c"]
    assert replies[0].job.state == "cancelled"
    assert [(c.job_id, c.attempt) for c in rig.expect(worker, "cancel_job")] == [(first.id, 1)]
    assert rig.store.get(second.id).state == "queued"  # the fit has not stopped yet
    worker.send(wire.Failed(job_id=first.id, attempt=1, kind="cancelled", reason="cancelled by request"))
    rig.pump()
    assert rig.store.get(first.id).state == "cancelled"
    assert [m.job_id for m, _ in assigns(worker, rig)] == [second.id]
    client.send(wire.CancelRequest(job_id=first.id, req="again"))
    rig.pump()
    [error] = [m for m, _ in client.inbox(wire.TO_CLIENT) if getattr(m, "req", None) == "again"]
    assert error.type == "error" and error.code == "finished"


def test_bye_gives_the_job_back_without_counting_a_loss(rig: Rig) -> None:
    worker, client = rig.worker(), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    job = rig.submit(client, "polite")
    rig.pump()
    assert assigns(worker, rig)
    worker.send(wire.Bye(job=wire.JobKey(job_id=job.id, attempt=1)))
    rig.pump()
    stored = rig.store.get(job.id)
    assert (stored.state, stored.losses) == ("queued", 0)
    assert rig.broker.workers == {}


def test_an_unusable_result_fails_the_job(rig: Rig) -> None:
    worker, client = rig.worker(), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    job = rig.submit(client, "broken")
    rig.pump()
    worker.send(wire.Done(job_id=job.id, attempt=1), b"not safetensors")
    rig.pump()
    stored = rig.store.get(job.id)
    assert (stored.state, stored.failure) == ("failed", "internal")
    assert "unusable instrument" in stored.reason
    assert not (rig.config.models / "broken.instrument").exists()


def test_submissions_that_cannot_run_are_kept_failed_with_a_reason(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_audio_bytes=1000)
    try:
        client = Peer(rig.ctx, rig.endpoint)
        (rig.config.models).mkdir(parents=True)
        (rig.config.models / "taken.instrument").write_bytes(b"x")
        cases = {
            "big": ({"audio": b"x" * 1001}, "this trainer accepts at most"),
            "empty": ({"audio": b""}, "empty"),
            "settings": ({"settings": {"steps": 0}}, "bad settings: steps"),
            "spec": ({"spec": {"n_oscillators": 10**6}}, "bad spec: n_oscillators"),
            "huge": ({"spec": {"n_resonances": 1000, "n_oscillators": 1000}}, "too large to fit"),
            "taken": ({}, "already exists"),
            "a..b": ({}, "bad name"),
            "long": ({"settings": {"steps": 20_001}}, "this trainer runs at most 20000 per job"),
        }
        for name, (fields, words) in cases.items():
            job = rig.submit(client, name, **fields)
            assert (job.state, job.failure) == ("failed", "bad_input"), name
            assert words in job.reason, (name, job.reason)
        # a file the trainer did not make: only an admin replaces it (on keyless loopback, the trainer's own
        # user is the admin)
        assert "made by someone else" in rig.submit(client, "taken", replace=True).reason
        operator = Peer(rig.ctx, rig.endpoint, f"u{os.getuid()}.op")
        assert rig.submit(operator, "taken", replace=True).state == "queued"
        assert rig.submit(client, "fine").state == "queued"
        assert "another job is already fitting" in rig.submit(client, "fine").reason
        assert rig.submit(client, "fine", replace=True).state == "queued"  # its maker may replace it
    finally:
        rig.close()


def test_a_resent_submit_returns_the_same_job_and_list_and_fetch(rig: Rig) -> None:
    client = Peer(rig.ctx, rig.endpoint)
    message = wire.Submit(job_id="f" * 32, name="once", clip_name="t.wav", req="1")
    client.send(message, b"audio")
    client.send(message.model_copy(update={"req": "2"}), b"audio")
    rig.pump()
    replies = [m for m, _ in client.inbox(wire.TO_CLIENT) if m.type == "job"]
    assert [r.job.id for r in replies] == ["f" * 32] * 2 and len(rig.store.jobs()) == 1
    client.send(wire.ListJobs(req="l"))
    client.send(wire.Fetch(job_id="f" * 32, req="f"))
    client.send(wire.Watch(job_id="0123" * 8, req="w"))
    client.send(wire.Hello(req="h"))
    rig.pump()
    got = {m.req: m for m, _ in client.inbox(wire.TO_CLIENT)}
    assert [j.name for j in got["l"].jobs] == ["once"]
    assert got["f"].type == "error" and got["f"].code == "not_done"
    assert got["w"].type == "error" and got["w"].code == "unknown_job"
    assert got["h"].type == "welcome" and got["h"].limits.max_audio_bytes == rig.config.max_audio_bytes
    client.sock.send_multipart([b'{"v": 1, "type": "nonsense"}'])
    rig.pump()
    [(error, _)] = client.inbox(wire.TO_CLIENT)
    assert error.code == "unknown_type"  # the connection stays up
    client.send(wire.Hello(req="still"))
    rig.pump()
    assert client.inbox(wire.TO_CLIENT)[0][0].req == "still"


def test_watchers_get_progress_pushed(rig: Rig) -> None:
    from sensorsynth.instrument.pipeline import Progress

    worker, client = rig.worker(), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    job = rig.submit(client, "watched")
    rig.pump()
    assert assigns(worker, rig)
    client.send(wire.Watch(job_id=job.id, req="w"))
    rig.pump()
    client.inbox(wire.TO_CLIENT)
    worker.send(wire.ProgressMsg(job_id=job.id, attempt=1, progress=Progress(stage="full", step=7, steps=9, loss=2.0)))
    rig.pump()
    pushes = [m for m, _ in client.inbox(wire.TO_CLIENT) if m.type == "job"]
    assert pushes and pushes[-1].job.progress.step == 7 and pushes[-1].req is None
    worker.send(wire.ProgressMsg(job_id=job.id, attempt=5, progress=Progress(stage="full", step=8, steps=9)))
    rig.pump()
    assert not client.inbox(wire.TO_CLIENT)  # a stale attempt's progress is dropped
    time.sleep(0)
