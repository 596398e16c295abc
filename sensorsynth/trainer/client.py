"""Talking to the queue from a program or the CLI: submit, watch, list, cancel, fetch.

Requests follow the ZeroMQ Guide's Lazy Pirate: send, wait ``timeout_s`` for the answer that echoes this
request's ``req``, and on silence close the socket, open a new one and send again, ``retries`` times. That
is safe for every request: a submit carries the job id the client chose, so a resent one returns the job
the first one made. Watching re-sends ``watch`` every second (the queue answers with the job each time, and
pushes every change in between), so a watcher rides out a restart of the queue.

``keys`` (a :class:`~.keys.PeerKeys`, or a keys folder) makes every socket a CURVE client of the queue:
needed when the queue has keys. Without keys the socket's routing id is ``u<uid>.<random>``: on a keyless
loopback queue that is what names this client as the owner of its jobs (so the same user's commands share
them), and the trainer's own user is its admin.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Callable

import zmq

from ..protocol import trainer as wire
from .keys import PeerKeys, peer_keys

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


class TrainerUnavailable(ConnectionError):
    """Nothing answered at the endpoint."""


class RequestRefused(Exception):
    """The queue answered with an ``error`` message."""

    def __init__(self, error: wire.ErrorMsg) -> None:
        super().__init__(error.message)
        self.code = error.code
        self.error = error


class TrainerClient:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout_s: float = 10.0, retries: int = 3,
                 context: zmq.Context | None = None, keys: PeerKeys | str | os.PathLike[str] | None = None,
                 identity: str | None = None) -> None:
        self.endpoint = endpoint
        self.keys = peer_keys(keys, "client")
        self.identity = identity or (None if self.keys else f"u{os.getuid()}.{uuid.uuid4().hex[:12]}")
        self.timeout_s = timeout_s
        self.retries = retries
        self.ctx = context or zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None  # handshake events: a refused key is said, not guessed
        self.handshake: str | None = None  # "auth" (the key was refused) or "protocol" (keys vs no keys)

    def __enter__(self) -> "TrainerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self._read_handshakes()
            if self.monitor is not None:
                self.sock.disable_monitor()
                self.monitor.close(0)
                self.monitor = None
            self.sock.close(0)
            self.sock = None

    def _read_handshakes(self) -> None:
        """Note how the last handshakes with the queue went (CURVE refusals are otherwise silent)."""
        from zmq.utils.monitor import recv_monitor_message

        while self.monitor is not None:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.handshake = "auth"
            elif event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self.handshake = self.handshake or "protocol"
            elif event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshake = None

    def _socket(self) -> zmq.Socket:
        if self.sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a queue that is not there
            sock.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            if self.identity:
                sock.setsockopt(zmq.ROUTING_ID, self.identity.encode())
            if self.keys is not None:
                self.keys.apply(sock)
            self.monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                   | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                   | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            sock.connect(self.endpoint)
            self.sock = sock
        return self.sock

    def _send(self, message: Any, *files: bytes) -> bool:
        try:
            self._socket().send_multipart(wire.encode(message, *files))
            return True
        except zmq.Again:
            return False

    def _receive(self, timeout_s: float) -> tuple[Any, list[bytes]] | None:
        sock = self._socket()
        if not sock.poll(int(max(0.0, timeout_s) * 1000)):
            return None
        frames = sock.recv_multipart()
        try:
            return wire.decode(frames, wire.TO_CLIENT)
        except wire.WireError:
            return None

    def request(self, message: Any, *files: bytes) -> tuple[Any, list[bytes]]:
        """Send ``message`` and return the answer to it (Lazy Pirate: resend on silence)."""
        message = message.model_copy(update={"req": uuid.uuid4().hex[:12]})
        for _ in range(self.retries):
            deadline = time.monotonic() + self.timeout_s
            if self._send(message, *files):
                while (left := deadline - time.monotonic()) > 0:
                    got = self._receive(left)
                    if got is None:
                        break
                    reply, reply_files = got
                    if getattr(reply, "req", None) != message.req:
                        continue  # a push, or the answer to an earlier try
                    if reply.type == "error":
                        raise RequestRefused(reply)
                    return reply, reply_files
            self.close()  # a fresh socket: the old one may hold a half-dead connection
        if self.handshake == "auth":
            where = self.keys.where if self.keys else "none"
            raise TrainerUnavailable(f"the trainer at {self.endpoint} refused this client's key ({where}): it is "
                                     "not allowed there (on the trainer: `sensorsynth trainer keys add-client NAME`, "
                                     "or `keys list`)")
        if self.handshake == "protocol":
            raise TrainerUnavailable(f"the trainer at {self.endpoint} " + (
                "has no keys, and this client was given some: use --keys none" if self.keys else
                "uses CURVE keys: give --keys with a bundle from `sensorsynth trainer keys add-client NAME`"))
        keys = (f"; with the keys in {self.keys.where}: are they allowed there (sensorsynth trainer keys list)?"
                if self.keys else "; if it uses CURVE keys, give --keys")
        raise TrainerUnavailable(f"no answer from the trainer at {self.endpoint} (tried {self.retries} times, "
                                 f"{self.timeout_s:g} s each); is `sensorsynth trainer` running{keys}")

    # --------------------------------------------------------------------------------------- requests

    def hello(self) -> wire.Welcome:
        return self.request(wire.Hello())[0]

    def submit(self, audio: bytes, name: str, *, clip_name: str = "clip", settings: dict[str, Any] | None = None,
               spec: dict[str, Any] | None = None, replace: bool = False, job_id: str | None = None) -> wire.JobInfo:
        message = wire.Submit(job_id=job_id or uuid.uuid4().hex, name=name, clip_name=clip_name,
                              settings=settings or {}, spec=spec or {}, replace=replace)
        return self.request(message, audio)[0].job

    def job(self, ref: str) -> wire.JobInfo:
        return self.request(wire.Watch(job_id=ref))[0].job

    def list(self, limit: int = 50, states: list[str] | None = None) -> wire.JobsMsg:
        return self.request(wire.ListJobs(limit=limit, states=states))[0]  # type: ignore[arg-type]

    def cancel(self, ref: str) -> wire.JobInfo:
        return self.request(wire.CancelRequest(job_id=ref))[0].job

    def fetch(self, ref: str) -> tuple[wire.ResultMsg, bytes]:
        reply, files = self.request(wire.Fetch(job_id=ref))
        return reply, files[0]

    def watch(self, job_id: str, on_update: Callable[[wire.JobInfo], None] | None = None, *,
              timeout_s: float | None = None, every_s: float = 1.0,
              on_silence: Callable[[float], None] | None = None) -> wire.JobInfo:
        """Follow a job until it ends and return its last state; ``on_update`` gets every change (progress
        included). ``on_silence(seconds)`` is told when the queue has not answered for a while (it keeps
        trying until ``timeout_s``, if given, has passed: then TimeoutError)."""
        start = last_heard = time.monotonic()
        next_watch = 0.0
        silent_after = max(3 * every_s, self.timeout_s)
        told_silent = False
        while True:
            now = time.monotonic()
            if timeout_s is not None and now - start > timeout_s:
                raise TimeoutError(f"job {job_id[:8]} did not finish within {timeout_s:g} s")
            if now >= next_watch:
                next_watch = now + every_s
                self._send(wire.Watch(job_id=job_id, req="watch"))
            if now - last_heard > silent_after:
                if on_silence is not None and not told_silent:
                    on_silence(now - last_heard)
                told_silent = True
                self.close()
                last_heard = now  # give the fresh socket its own chance
            got = self._receive(min(0.25, max(0.0, next_watch - time.monotonic())))
            if got is None:
                continue
            reply, _ = got
            if reply.type == "error" and reply.code in ("unknown_job", "ambiguous_job", "forbidden"):
                raise RequestRefused(reply)
            if reply.type != "job" or reply.job.id != job_id and not reply.job.id.startswith(job_id):
                continue
            last_heard = time.monotonic()
            told_silent = False
            if on_update is not None:
                on_update(reply.job)
            if reply.job.state in wire.TERMINAL:
                return reply.job


def subscribe(endpoint: str, topics: tuple[str, ...] = ("job", "instrument"),
              context: zmq.Context | None = None, keys: Any = None) -> zmq.Socket:
    """A SUB socket on the queue's announcements; read with :func:`read_event`. With keys, only an admin key
    is let in (announcements name every job)."""
    sock = (context or zmq.Context.instance()).socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, 4 * wire.MAX_HEADER_BYTES)  # a job record: a submit header and a little more
    if (pk := peer_keys(keys, "client")) is not None:
        pk.apply(sock)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(endpoint)
    return sock


def read_event(sock: zmq.Socket, timeout_s: float) -> Any | None:
    if not sock.poll(int(timeout_s * 1000)):
        return None
    topic, *frames = sock.recv_multipart()
    try:
        return wire.decode(frames, wire.EVENT)[0]
    except wire.WireError:
        return None
