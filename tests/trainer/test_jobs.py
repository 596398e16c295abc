"""The job state machine and the scheduler: pure functions, every transition and refusal."""

from __future__ import annotations

import pytest

from sensorsynth.trainer import jobs as J
from sensorsynth.trainer.schedule import Slot, plan

ID = "ab" * 16


def queued() -> J.Job:
    return J.new_job(ID, "cello", "take.wav", 100.0, settings={"steps": 3}, spec={}, audio_bytes=10)


def test_the_happy_path() -> None:
    job = J.assign(queued(), "w1", 101.0)
    assert (job.state, job.attempt, job.worker, job.started) == ("running", 1, "w1", 101.0)
    assert job.key is not None and job.key.attempt == 1
    done = J.complete(job, 1, 105.0, final_loss=0.5, result_path="models/cello.instrument")
    assert (done.state, done.finished, done.final_loss) == ("done", 105.0, 0.5)
    assert done.terminal and done.key is None
    assert done.info().state == "done"


def test_completion_is_accepted_once_and_only_for_the_current_attempt() -> None:
    first = J.assign(queued(), "w1", 1.0)
    requeued = J.lose(first, 1, 2.0, reason="w1 died", max_losses=3)
    assert (requeued.state, requeued.losses, requeued.worker) == ("queued", 1, None)
    second = J.assign(requeued, "w2", 3.0)
    assert second.attempt == 2
    with pytest.raises(J.StaleAttempt):  # w1 comes back from the dead with a result
        J.complete(second, 1, 4.0, final_loss=None, result_path=None)
    done = J.complete(second, 2, 4.0, final_loss=None, result_path=None)
    with pytest.raises(J.StaleAttempt):  # the same result again
        J.complete(done, 2, 5.0, final_loss=None, result_path=None)


def test_a_job_that_keeps_losing_workers_fails() -> None:
    job = queued()
    for attempt in (1, 2):
        job = J.lose(J.assign(job, "w", 0.0), attempt, 0.0, reason="died", max_losses=3)
        assert job.state == "queued"
    job = J.lose(J.assign(job, "w", 0.0), 3, 9.0, reason="died", max_losses=3)
    assert (job.state, job.failure, job.finished) == ("failed", "lost", 9.0)
    assert "gave up after 3 lost attempts" in job.reason


def test_release_is_not_a_loss_and_cancel_and_fail() -> None:
    running = J.assign(queued(), "w", 0.0)
    released = J.release(running, 1, 1.0, reason="w left")
    assert (released.state, released.losses) == ("queued", 0)
    assert J.cancel(released, 2.0).state == "cancelled"
    cancelled = J.cancel(running, 2.0)
    assert cancelled.state == "cancelled" and cancelled.reason == "cancelled by request"
    with pytest.raises(J.IllegalTransition, match="already cancelled"):
        J.cancel(cancelled, 3.0)
    with pytest.raises(J.StaleAttempt):
        J.fail(cancelled, 1, 3.0, reason="x", failure="internal")
    failed = J.fail(running, 1, 3.0, reason="silent", failure="bad_input")
    assert (failed.state, failed.failure) == ("failed", "bad_input")
    with pytest.raises(J.IllegalTransition):
        J.assign(failed, "w", 4.0)
    rejected = J.rejected(queued(), "too large", 5.0)
    assert (rejected.state, rejected.failure, rejected.reason) == ("failed", "bad_input", "too large")


def test_the_scheduler_never_overbooks_a_machine() -> None:
    jobs = ["j1", "j2", "j3", "j4"]
    slots = [
        Slot("a1", "box", threads=1, cores=2, idle=True),
        Slot("a2", "box", threads=1, cores=2, idle=True),
        Slot("a3", "box", threads=1, cores=2, idle=True),  # three workers, two cores: two fits at most
        Slot("g1", "gpu", threads=4, cores=4, idle=True),
    ]
    out = plan(jobs, slots)
    assert len(out) == 3
    per_machine = [w[0] for _, w in out]
    assert per_machine.count("a") == 2 and per_machine.count("g") == 1
    busy = [Slot("a1", "box", 1, 2, idle=False), Slot("a2", "box", 1, 2, idle=True), Slot("a3", "box", 1, 2, idle=True)]
    assert plan(jobs, busy) == [("j1", "a2")]
    # a worker with more threads than cores still works, alone
    big = [Slot("b1", "small", threads=8, cores=2, idle=True), Slot("b2", "small", threads=8, cores=2, idle=True)]
    assert plan(jobs, big) == [("j1", "b1")]
    assert plan([], slots) == [] and plan(jobs, []) == []
    # the longest-idle worker goes first
    fair = [Slot("x", "m1", 1, 1, idle=True, last_assigned=5.0), Slot("y", "m2", 1, 1, idle=True, last_assigned=1.0)]
    assert plan(["j"], fair) == [("j", "y")]


def test_who_may_do_what() -> None:
    """The access rules alone (sensorsynth.trainer.access): roles by key, owners by key or by the user id a
    keyless loopback client names, the trainer's own user as the keyless admin."""
    from sensorsynth.trainer.access import identify, may_replace, may_see, may_send

    roles = {"K1": frozenset({"worker"}), "K2": frozenset({"client"}), "K3": frozenset({"admin"})}
    ring = lambda key: roles.get(key, frozenset())  # noqa: E731
    worker, client, admin = (identify(b"x", k, ring, 1000) for k in ("K1", "K2", "K3"))
    assert identify(b"x", "K9", ring, 1000) is None and identify(b"x", None, ring, 1000) is None
    assert may_send(worker, "done") and not may_send(worker, "submit") and may_send(worker, "hello")
    assert may_send(client, "cancel") and not may_send(client, "ready")
    assert may_send(admin, "list") and not may_send(admin, "done")
    assert (client.owner, client.key) == ("key:K2", "K2")
    assert may_see(client, "key:K2") and not may_see(client, "key:K4") and may_see(admin, "key:K4")
    assert may_replace(client, "key:K2", []) and not may_replace(client, None, [])
    assert not may_replace(client, "key:K2", ["key:K4"]) and may_replace(admin, None, ["key:K4"])
    mine, theirs, me = (identify(i, None, None, 1000) for i in (b"u1001.abc", b"u1002.def", b"u1000.x"))
    assert mine.owner == "local:u1001" and identify(b"u1001.zzz", None, None, 1000).owner == mine.owner
    assert not mine.admin and not may_see(mine, theirs.owner) and me.admin and may_see(me, theirs.owner)
    anonymous = identify(b"\x00\x80\x00\x00\x29", None, None, 1000)
    assert anonymous.owner == "local:0080000029" and anonymous.worker and not anonymous.admin
