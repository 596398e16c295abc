"""The trainer's security findings (issue 19), each as a test on real ZeroMQ sockets on 127.0.0.1: the queue
in-process with a hand-driven clock (as test_broker), and with CURVE keys made by the real key commands.
Each of these fails on the queue before keys, owners and bounds: a third peer completed a running job, any
peer could say ``ready`` and be given audio, a 3-character prefix cancelled someone else's job, and so on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from sensorsynth.protocol import trainer as wire
from sensorsynth.trainer import keys as K
from sensorsynth.trainer.client import read_event, subscribe

from .helpers import tiny_instrument_bytes
from .test_broker import Peer, Rig, assigns


def silent(peer: Peer, rig: Rig, seconds: float = 1.0, adapter: Any = wire.TO_CLIENT) -> list:
    """Pump the queue for ``seconds``; whatever ``peer`` received meanwhile (expected: nothing)."""
    got: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rig.pump()
        got += peer.inbox(adapter)
    return got


def replies(peer: Peer, rig: Rig, req: str) -> Any:
    return rig.expect(peer, lambda m: getattr(m, "req", None) == req, wire.TO_CLIENT)[0]


def worker_peer(rig: Rig, keys: K.PeerKeys | None = None, wid: str | None = None) -> Peer:
    """A stand-in worker that says ready (its id made from its key, as the real worker makes it)."""
    wid = wid or (f"w-{K.fingerprint(keys.public)}-t{time.monotonic_ns() % 10**9}" if keys else
                  f"w-t{time.monotonic_ns() % 10**9}")
    peer = Peer(rig.ctx, rig.endpoint, wid, keys=keys)
    peer.info = wire.WorkerInfo(id=wid, host="h", machine="m", pid=1, threads=1, cores=2)
    peer.send(wire.Ready(worker=peer.info))
    return peer


# ------------------------------------------------------------------------------- without keys (loopback)


def test_a_third_peers_done_is_refused_and_the_workers_result_lands(rig: Rig) -> None:
    worker, client = rig.worker(), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    job = rig.submit(client, "guitar")
    [(assign, _)] = assigns(worker, rig)
    rogue = worker_peer(rig)  # a peer that joined as a worker too, but was never given this run
    forged = tiny_instrument_bytes("forged")
    rogue.send(wire.Done(job_id=job.id, attempt=1, final_loss=0.0), forged)
    rogue.send(wire.ProgressMsg(job_id=job.id, attempt=1, progress={"stage": "full", "step": 9, "steps": 9}))
    rogue.send(wire.Failed(job_id=job.id, attempt=1, kind="bad_input", reason="forged"))
    got = [m for m, _ in silent(rogue, rig, 1.0, wire.TO_WORKER)]
    refusals = [m for m in got if m.type == "error"]
    assert [r.ref for r in refusals] == ["done", "failed"] and refusals[0].code == "forbidden"
    assert "does not hold job" in refusals[0].message
    assert not [m for m in got if m.type == "ack"]  # not acknowledged: nothing was accepted
    assert rig.store.get(job.id).state == "running" and not (rig.config.models / "guitar.instrument").exists()
    assert rig.broker.refused  # counted
    real = tiny_instrument_bytes("guitar")
    worker.send(wire.Done(job_id=job.id, attempt=1, final_loss=0.5), real)
    assert rig.expect(worker, "ack")
    assert (rig.config.models / "guitar.instrument").read_bytes() == real
    assert rig.store.get(job.id).state == "done"


def test_cancel_watch_and_fetch_need_the_full_id_and_the_submitter(rig: Rig) -> None:
    worker, owner, other = rig.worker(), Peer(rig.ctx, rig.endpoint), Peer(rig.ctx, rig.endpoint)
    rig.pump()
    job = rig.submit(owner, "mine")
    for message in (wire.CancelRequest, wire.Fetch, wire.Watch):  # a prefix is refused at the door
        other.sock.send_multipart([f'{{"v": 1, "type": "{message.model_fields["type"].default}", '
                                   f'"job_id": "{job.id[:3]}", "req": "p"}}'.encode()])
        error = replies(other, rig, "p")
        assert (error.type, error.code) == ("error", "bad_schema") and "job_id" in error.message
    for message, req in ((wire.CancelRequest, "c"), (wire.Watch, "w"), (wire.Fetch, "f")):
        other.send(message(job_id=job.id, req=req))
        error = replies(other, rig, req)
        assert (error.type, error.code) == ("error", "forbidden"), error
        assert "another client" in error.message
    other.send(wire.ListJobs(req="l"))
    assert replies(other, rig, "l").jobs == []  # it does not see the job either
    assert rig.store.get(job.id).state == "running" and job.id not in rig.broker.watchers
    [(assign, _)] = assigns(worker, rig)
    worker.send(wire.Done(job_id=job.id, attempt=1), tiny_instrument_bytes("mine"))
    rig.expect(worker, "ack")
    other.send(wire.Fetch(job_id=job.id, req="f2"))
    assert replies(other, rig, "f2").code == "forbidden"
    owner.send(wire.Fetch(job_id=job.id, req="f3"))
    rig.pump()
    [(result, files)] = [(m, f) for m, f in owner.inbox(wire.TO_CLIENT) if getattr(m, "req", None) == "f3"]
    assert result.type == "result" and files[0] == tiny_instrument_bytes("mine")
    # the trainer's own user is the admin on keyless loopback: it sees and cancels every job
    operator = Peer(rig.ctx, rig.endpoint, f"u{os.getuid()}.operator")
    second = rig.submit(other, "theirs")
    operator.send(wire.ListJobs(req="all"))
    assert {j.id for j in replies(operator, rig, "all").jobs} == {job.id, second.id}
    operator.send(wire.CancelRequest(job_id=second.id, req="oc"))
    assert replies(operator, rig, "oc").job.state == "cancelled"


def test_a_queue_per_client_and_for_all_clients(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_active_per_client=2, max_queue_bytes=10_000)
    try:
        greedy, polite = Peer(rig.ctx, rig.endpoint), Peer(rig.ctx, rig.endpoint)
        first = [rig.submit(greedy, f"g{i}") for i in range(2)]
        assert [j.state for j in first] == ["queued", "queued"]
        greedy.send(wire.Submit(job_id="a" * 32, name="g2", req="third"), b"RIFF-some-audio")
        error = replies(greedy, rig, "third")
        assert (error.type, error.code) == ("error", "limit") and "2 jobs queued or running" in error.message
        assert rig.store.get("a" * 32) is None  # nothing was kept for it
        assert rig.submit(polite, "p0").state == "queued"  # one client's bound is not everyone's
        greedy.send(wire.CancelRequest(job_id=first[0].id, req="c"))
        replies(greedy, rig, "c")
        assert rig.submit(greedy, "g3").state == "queued"  # room again once one has ended
        polite.send(wire.Submit(job_id="b" * 32, name="big", req="big"), b"x" * 9_990)
        full = replies(polite, rig, "big")
        assert full.code == "limit" and "MiB of audio" in full.message  # the disk bound of the whole queue
    finally:
        rig.close()


def test_oversize_and_extra_frames_are_refused_and_the_queue_goes_on(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_audio_bytes=100_000, max_result_bytes=100_000)
    try:
        assert rig.config.max_message_bytes == 100_000  # the largest clip, not twice it plus a margin
        assert rig.broker.router.getsockopt(zmq.MAXMSGSIZE) == 100_000
        big = Peer(rig.ctx, rig.endpoint)
        big.send(wire.Submit(job_id="c" * 32, name="big", req="big"), b"x" * 100_001)
        assert silent(big, rig, 1.0) == []  # dropped unread: its connection is closed, nothing allocated
        assert rig.store.get("c" * 32) is None
        many = Peer(rig.ctx, rig.endpoint)
        many.sock.send_multipart([wire.Hello(req="h").model_dump_json().encode(), *[b"x"] * 50])
        error = rig.expect(many, "error", wire.TO_CLIENT)[0]
        assert error.code == "frames" and "no message has more than 2" in error.message
        fine = Peer(rig.ctx, rig.endpoint)
        fine.send(wire.Hello(req="ok"))
        welcome = replies(fine, rig, "ok")
        assert welcome.limits.max_audio_bytes == 100_000 and welcome.limits.max_steps == 20_000
    finally:
        rig.close()


def test_the_command_line_refuses_too_much_before_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sensorsynth submit` against a live queue (in a thread): a clip over the trainer's limit and steps over
    its bound are refused with the trainer's figures, before the audio is sent."""
    from sensorsynth.cli import main

    from .helpers import GUITAR

    rig = Rig(tmp_path, max_audio_bytes=1000)
    stop = threading.Event()
    thread = threading.Thread(target=rig.broker.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        assert main(["submit", str(GUITAR), "--connect", rig.endpoint, "--keys", "none"]) == 2
        assert "the trainer accepts at most 0.0 MiB" in capsys.readouterr().err
        rig.config.max_audio_bytes = 64 * 2**20
        assert main(["submit", str(GUITAR), "--connect", rig.endpoint, "--steps", "1000000", "--keys", "none"]) == 2
        assert "1000000 steps; the trainer runs at most 20000 per job" in capsys.readouterr().err
        assert rig.store.jobs() == []
    finally:
        stop.set()
        thread.join(5)
        rig.close()


# ---------------------------------------------------------------------------------------------- with keys


@pytest.fixture
def keyed(tmp_path: Path):
    """A queue with CURVE keys made by the key commands' functions: this machine's worker and admin bundles,
    two client bundles, and one more worker."""
    folder = tmp_path / "keys"
    K.init(folder)
    for role, name in (("clients", "alice"), ("clients", "bob"), ("workers", "box2")):
        K.add(folder, role, name)
    rig = Rig(tmp_path, keys=K.ServerKeys.load(folder), pub=f"tcp://127.0.0.1:{_free()}")
    rig.keys = {name: K.PeerKeys.load(folder / "issued" / name) for name in ("alice", "bob", "box2")}
    rig.keys["admin"] = K.PeerKeys.load(folder, "client")
    rig.keys["local"] = K.PeerKeys.load(folder, "worker")
    rig.folder = folder
    yield rig
    rig.close()


def _free() -> int:
    from .procs import free_port

    return free_port()


@pytest.mark.slow
def test_an_unauthenticated_client_gets_nothing_and_cannot_read_announcements(keyed: Rig) -> None:
    stranger_keys = K.PeerKeys(keyed.keys["alice"].server_public, *zmq.curve_keypair(), where="nowhere")
    for peer in (Peer(keyed.ctx, keyed.endpoint),  # no keys at all
                 Peer(keyed.ctx, keyed.endpoint, keys=stranger_keys)):  # a key the queue does not know
        for message in (wire.Hello(req="h"), wire.ListJobs(req="l")):
            try:  # once its handshake has failed, the socket has no connection to send on at all
                peer.sock.send_multipart(wire.encode(message), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        assert silent(peer, keyed, 1.0) == []
    pub = keyed.broker.pub_endpoint
    readers = {name: subscribe(pub, context=keyed.ctx, keys=keyed.keys.get(name)) for name in ("admin", "alice", None)}
    time.sleep(0.5)  # let the subscriptions arrive (each handshake is checked by ZAP)
    alice = Peer(keyed.ctx, keyed.endpoint, keys=keyed.keys["alice"])
    job = keyed.submit(alice, "announced")
    heard = {name: read_event(sock, 1.0) for name, sock in readers.items()}
    assert heard["admin"] is not None and heard["admin"].job.id == job.id  # the operator's feed
    assert heard["alice"] is None and heard[None] is None  # a client key and no key hear nothing
    for sock in readers.values():
        sock.close(0)


def test_a_rogue_worker_without_a_worker_key_gets_nothing(keyed: Rig) -> None:
    alice = Peer(keyed.ctx, keyed.endpoint, keys=keyed.keys["alice"])
    job = keyed.submit(alice, "secret-take")
    rogue = worker_peer(keyed, keyed.keys["alice"])  # a client key saying ready
    refusal = keyed.expect(rogue, "error")[0]
    assert refusal.code == "forbidden" and "may not act as a worker" in refusal.message
    keyed.now += 1.0
    keyed.pump()
    assert not any(m.type == "assign" for m, _ in rogue.inbox()) and keyed.broker.workers == {}
    box2 = keyed.keys["box2"]
    impostor = worker_peer(keyed, box2, wid="w-000000000000-x")  # a worker key, but an id not made from it
    assert keyed.expect(impostor, "error")[0].code == "forbidden"
    real = worker_peer(keyed, box2)
    [(assign, audio)] = assigns(real, keyed)
    assert assign.job_id == job.id and audio == b"RIFF-some-audio"
    assert keyed.store.get(job.id).worker == real.id
    # the admin bundle cannot fit jobs either, and a worker key cannot submit or list
    worker_as_client = Peer(keyed.ctx, keyed.endpoint, keys=keyed.keys["local"])
    worker_as_client.send(wire.ListJobs(req="l"))
    assert replies(worker_as_client, keyed, "l").code == "forbidden"


def test_keys_own_jobs_and_an_admin_key_owns_them_all(keyed: Rig) -> None:
    alice = Peer(keyed.ctx, keyed.endpoint, keys=keyed.keys["alice"])
    bob = Peer(keyed.ctx, keyed.endpoint, keys=keyed.keys["bob"])
    admin = Peer(keyed.ctx, keyed.endpoint, keys=keyed.keys["admin"])
    worker = worker_peer(keyed, keyed.keys["local"])
    job = keyed.submit(alice, "cello")
    [(assign, _)] = assigns(worker, keyed)
    worker.send(wire.Done(job_id=job.id, attempt=1), tiny_instrument_bytes("cello"))
    keyed.expect(worker, "ack")
    assert (keyed.config.models / "cello.instrument").exists()
    for message, req in ((wire.Fetch, "f"), (wire.CancelRequest, "c"), (wire.Watch, "w")):
        bob.send(message(job_id=job.id, req=req))
        assert replies(bob, keyed, req).code == "forbidden"
    bob.send(wire.ListJobs(req="l"))
    listing = replies(bob, keyed, "l")
    assert listing.jobs == [] and all(w.host == "" and w.pid is None for w in listing.workers)
    # replace: not over someone else's instrument; its maker and an admin may
    assert "made by someone else" in keyed.submit(bob, "cello", replace=True).reason
    assert keyed.submit(alice, "cello", replace=True).state == "queued"
    admin.send(wire.ListJobs(req="all"))
    everything = replies(admin, keyed, "all")
    assert {j.name for j in everything.jobs} == {"cello"} and len(everything.jobs) == 3
    assert everything.workers[0].host == "h"
    assert keyed.submit(admin, "cello", replace=True).state == "queued"


def test_a_removed_key_is_refused_at_its_next_message(keyed: Rig) -> None:
    bob = Peer(keyed.ctx, keyed.endpoint, keys=keyed.keys["bob"])
    bob.send(wire.Hello(req="1"))
    assert replies(bob, keyed, "1").type == "welcome"
    assert K.remove(keyed.folder, "bob")
    time.sleep(0.6)  # the ring looks at the folders at most twice a second
    bob.send(wire.ListJobs(req="2"))
    error = replies(bob, keyed, "2")
    assert error.code == "forbidden" and "no longer allowed" in error.message


# ------------------------------------------------------------------------------------ real processes


@pytest.mark.slow
def test_submit_and_a_worker_on_two_machines_with_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two "machines" on 127.0.0.1: the trainer (keys forced on, with its own local worker) and a worker with a
    bundle from `keys add-worker` as real processes, `submit` as a process with a bundle from `keys add-client`;
    the key commands, `jobs` and `fetch` in-process. A tiny job fits end to end; no keys, or another client's
    keys, get nothing."""
    import json

    from sensorsynth.cli import main
    from sensorsynth.trainer.client import TrainerClient

    from .helpers import TINY_SPEC, clip_bytes
    from .procs import Cluster, wait_for

    keys = tmp_path / "trainer-keys"

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    assert run("trainer", "keys", "init", "--keys", str(keys))[0] == 0
    for role, name in (("worker", "box2"), ("client", "laptop"), ("client", "other")):
        code, out, err = run("trainer", "keys", f"add-{role}", name, "--keys", str(keys))
        assert code == 0 and f"issued/{name}" in out, err
    listed = run("trainer", "keys", "list", "--keys", str(keys))[1]
    assert all(name in listed for name in ("box2", "laptop", "other", "local-worker", "admin"))
    cluster = Cluster(tmp_path)
    try:
        trainer = cluster.start_trainer("--keys", str(keys), workers=1)
        assert f"CURVE keys {keys}" in trainer.output()
        cluster.start_worker("--keys", str(keys / "issued" / "box2"))
        keyless = cluster.start_worker("--keys", "none")  # a worker that was given no keys: told why, not let in
        with TrainerClient(cluster.endpoint, timeout_s=5, keys=keys) as admin:  # the operator, on the trainer's box
            wait_for(lambda: len(admin.list().workers) == 2, 90, "the local and the remote worker")
            wait_for(lambda: "uses CURVE keys: start this worker with --keys" in keyless.output(), 60,
                     "the keyless worker to say why it is not let in")
            assert len(admin.list().workers) == 2
        assert keyless.stop() == 0
        (tmp_path / "take.wav").write_bytes(clip_bytes())
        laptop, other = str(keys / "issued" / "laptop"), str(keys / "issued" / "other")
        out = tmp_path / "mine.instrument"
        spec = [arg for key, value in TINY_SPEC.items() for arg in ("--spec", f"{key}={value}")]
        done = cluster.submit("take.wav", "--name", "duo", "--wait", "-o", str(out), "--steps", "30", "--set",
                              "init=random", "--set", "frozen_steps=2", *spec, "--keys", laptop)
        assert done.returncode == 0, done.stderr + cluster.logs()
        assert out.exists() and (cluster.models / "duo.instrument").read_bytes() == out.read_bytes()
        at = ["--connect", cluster.endpoint]
        code, _, err = run("jobs", *at, "--keys", "none")
        assert code == 1 and "give --keys" in err
        mine = json.loads(run("jobs", "--json", *at, "--keys", laptop)[1])["jobs"]
        assert [j["name"] for j in mine] == ["duo"]
        assert json.loads(run("jobs", "--json", *at, "--keys", other)[1])["jobs"] == []
        job_id = mine[0]["id"]
        code, _, err = run("fetch", job_id, "-o", str(tmp_path / "stolen.instrument"), *at, "--keys", other)
        assert code == 2 and "submitted by another client" in err and not (tmp_path / "stolen.instrument").exists()
        code, _, err = run("cancel", job_id, *at, "--keys", other)
        assert code == 2 and "submitted by another client" in err
        assert run("fetch", job_id, "-o", str(tmp_path / "again.instrument"), *at, "--keys", laptop)[0] == 0
        assert (tmp_path / "again.instrument").read_bytes() == out.read_bytes()
        assert cluster.trainer.stop() == 0
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


@pytest.mark.slow
def test_the_servers_record_flow_through_a_trainer_with_keys(tmp_path: Path) -> None:
    """`serve --trainer` as a client of a trainer with keys (a client bundle given by SENSORSYNTH_TRAINER_KEYS):
    an uploaded clip is fitted and fetched into the server's own folder (the trainer writes into another)."""
    import json as _json

    from websockets.sync.client import connect

    from ..server.conftest import launch
    from .helpers import TINY_SPEC, clip_bytes
    from .procs import Cluster

    keys = tmp_path / "trainer-keys"
    K.init(keys)
    K.add(keys, "clients", "server")
    cluster = Cluster(tmp_path / "trainer")
    cluster.root.mkdir()
    server = None
    try:
        cluster.start_trainer("--keys", str(keys), workers=1)
        fit = [a for k, v in {"steps": 30, "init": "random", "frozen_steps": 2}.items()
               for a in ("--record-fit", f"{k}={v}")]
        fit += [a for k, v in TINY_SPEC.items() for a in ("--record-fit", f"spec.{k}={v}")]
        server = launch(tmp_path, "--trainer", cluster.endpoint, *fit, record=False,
                        env={"SENSORSYNTH_TRAINER_KEYS": str(keys / "issued" / "server")})
        data = clip_bytes(1.0)
        with connect(f"ws://127.0.0.1:{server.ws_port}/ws", open_timeout=10, max_size=None) as ws:
            def expect(test: Any, timeout: float) -> dict:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    try:
                        raw = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
                    except TimeoutError:
                        continue
                    if isinstance(raw, str) and test(message := _json.loads(raw)):
                        return message
                raise AssertionError(f"nothing matched within {timeout} s")

            ws.send(_json.dumps({"type": "hello"}))
            assert expect(lambda m: m["type"] == "welcome", 10)["record"]["available"]
            ws.send(_json.dumps({"type": "upload", "name": "keyed", "size": len(data)}))
            ws.send(data)
            end = expect(lambda m: m["type"] == "fit" and m["state"] in ("done", "failed", "cancelled"), 120)
        assert end["state"] == "done" and end["instrument"] == "keyed", end
        assert (server.models / "keyed.instrument").exists()
    except BaseException:
        print(cluster.logs())
        if server is not None:
            print(server.log_path.read_text())
        raise
    finally:
        if server is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        cluster.close()


@pytest.mark.slow
def test_a_refused_key_is_said_not_guessed(keyed: Rig) -> None:
    """CURVE refusals are silent on the wire; the client reads its socket's handshake events and says which
    it was: a key the trainer does not know, or no keys for a trainer that requires them."""
    from sensorsynth.trainer.client import TrainerClient, TrainerUnavailable

    stop = threading.Event()
    thread = threading.Thread(target=keyed.broker.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        stranger = K.PeerKeys(keyed.keys["alice"].server_public, *zmq.curve_keypair(), where="stranger-keys")
        with pytest.raises(TrainerUnavailable, match=r"refused this client's key \(stranger-keys\)"):
            with TrainerClient(keyed.endpoint, timeout_s=1, retries=1, keys=stranger, context=keyed.ctx) as c:
                c.hello()
        with pytest.raises(TrainerUnavailable, match="uses CURVE keys: give --keys"):
            with TrainerClient(keyed.endpoint, timeout_s=1, retries=1, context=keyed.ctx) as c:
                c.hello()
        with TrainerClient(keyed.endpoint, timeout_s=5, keys=keyed.keys["alice"], context=keyed.ctx) as c:
            assert c.hello().type == "welcome"
    finally:
        stop.set()
        thread.join(5)
