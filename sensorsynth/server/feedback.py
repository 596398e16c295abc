"""OSC feedback: what the engine applied, sent back out over UDP to the configured ``osc_feedback`` targets
(TouchDesigner, a lighting desk, another sensorsynth's monitor), stamped with when it sounds.

What goes out (docs/events.md has the table):

- every applied event, one message each, in a bundle whose OSC time tag is when the block holding the event's
  first sample leaves the renderer (events that sound at the same sample share a bundle):
  ``/sensorsynth/event/control ,iifs voice dim value source`` (one per dimension that fired),
  ``/sensorsynth/event/deform ,is f... voice source logits``, ``/sensorsynth/event/gain ,ifs voice gain source``,
  ``/sensorsynth/event/instrument ,iss voice name source``;
- the output level, ``/sensorsynth/level ,f... `` (rms dBFS per output channel, ``SILENCE_DBFS`` for silence),
  ``osc_feedback_level_hz`` times a second;
- whatever another part announces (:meth:`Feedback.announce`, e.g. a scene change), as a plain message.

Why it is safe to run: it only ever sends to the addresses in the configuration (validated at start: no
broadcast or multicast unless ``osc_feedback_allow_broadcast``; the kernel itself refuses a broadcast address on a
socket without ``SO_BROADCAST``), it never reads what comes back (a receiver cannot steer it), and what it
sends is bounded: one socket, non-blocking, a bounded backlog of events (drops counted) and a bounded
transport buffer (datagrams beyond it are dropped and counted, never queued without end), each datagram at
most ``MAX_DATAGRAM`` bytes. A receiver that is down costs nothing (the socket is not connected, so the
kernel does not even report its ICMP answers).

The encoder is sensorsynth's own, like the decoder in :mod:`.osc` (python-osc is the tests' independent
reader). Pure parts (target parsing, encoding, the bundle plan) are functions; :class:`Feedback` is the edge.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .events import Applied, mono_to_unix
from .osc import unix_to_ntp

log = logging.getLogger("sensorsynth.feedback")

PREFIX = "/sensorsynth"
MAX_DATAGRAM = 1400  # stays inside one Ethernet frame: no IP fragments for a lost piece to spoil
MAX_TARGETS = 16
MAX_BACKLOG = 2048  # events waiting to be sent
MAX_BUFFERED = 256 * 1024  # bytes the transport may hold when the socket is full; beyond, datagrams are dropped
SILENCE_DBFS = -144.0  # what the level says for digital silence (OSC has no "none" TouchDesigner reads)
IMMEDIATELY = 1  # the OSC time tag "now"


class TargetError(ValueError):
    """A feedback target that cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_target(text: str) -> Target:
    """``host:port`` (or ``[v6]:port``) → :class:`Target`; the host is a name or an address, the port 1..65535."""
    if not isinstance(text, str) or not text or len(text) > 300:
        raise TargetError(f"osc_feedback target must be 'host:port', got {text!r}")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TargetError(f"osc_feedback target must be 'host:port' with a port 1-65535, got {text!r}")
    if any(c.isspace() for c in host) or "/" in host:
        raise TargetError(f"osc_feedback target {text!r}: not a host name or address")
    return Target(host, int(port))


def check_address(ip: str, allow_broadcast: bool) -> str:
    """The resolved address of a target, or TargetError: broadcast and multicast go to every machine on a
    network, so they need ``osc_feedback_allow_broadcast``; unspecified addresses (0.0.0.0) go nowhere."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    if addr.is_unspecified:
        raise TargetError(f"{ip} is not an address to send to")
    wide = addr.is_multicast or (addr.version == 4 and addr == ipaddress.IPv4Address("255.255.255.255"))
    if wide and not allow_broadcast:
        raise TargetError(f"{ip} is a broadcast or multicast address: it reaches every machine of the network; "
                          "set osc_feedback_allow_broadcast = true if that is meant")
    return ip


# ----------------------------------------------------------------------------------------------- encoding
_ZEROS = (b"\0\0\0\0", b"\0\0\0", b"\0\0", b"\0")
_I32 = struct.Struct(">i")
_F32 = struct.Struct(">f")
_F32_MAX = float(np.finfo(np.float32).max)


def _string(s: str) -> bytes:
    b = s.replace("\0", "").encode("utf-8")
    return b + _ZEROS[len(b) % 4]


def encode_message(address: str, *args: Any) -> bytes:
    """An OSC message: ints (and bools) as ``i``, floats ``f`` (clamped to float32's range), strings ``s``,
    anything else as its ``str``."""
    tags = [","]
    data = []
    for a in args:
        if isinstance(a, (bool, int, np.integer)) and -(1 << 31) <= int(a) < (1 << 31):
            tags.append("i")
            data.append(_I32.pack(int(a)))
        elif isinstance(a, (float, np.floating)):
            tags.append("f")
            data.append(_F32.pack(max(-_F32_MAX, min(_F32_MAX, float(a)))))
        else:
            tags.append("s")
            data.append(_string(str(a)))
    return _string(address) + _string("".join(tags)) + b"".join(data)


def encode_bundles(tag: int, messages: Sequence[bytes], max_bytes: int = MAX_DATAGRAM) -> list[bytes]:
    """``messages`` in as few bundles of time tag ``tag`` as fit ``max_bytes`` each (a message too large for
    any bundle is left out: the caller's messages are small by construction)."""
    head = b"#bundle\0" + struct.pack(">Q", tag)
    out: list[bytes] = []
    parts: list[bytes] = []
    size = len(head)
    for m in messages:
        piece = struct.pack(">i", len(m)) + m
        if len(head) + len(piece) > max_bytes:
            continue
        if size + len(piece) > max_bytes:
            out.append(head + b"".join(parts))
            parts, size = [], len(head)
        parts.append(piece)
        size += len(piece)
    if parts:
        out.append(head + b"".join(parts))
    return out


_CONTROL_HEAD = _string(PREFIX + "/event/control") + _string(",iifs")
_IIF = struct.Struct(">iif")


@functools.lru_cache(maxsize=1024)
def _source(name: str) -> bytes:
    """A source name as an OSC string (cached: the same few sources play again and again)."""
    return _string(name)


def event_messages(ev: Applied) -> list[bytes]:
    """The OSC messages of one applied event (control: one per dimension that fired). The control message,
    the one that comes by the thousand, is packed from a precomputed head: its values are finite float32
    already (the engine checked them)."""
    if ev.kind == "control":
        values = ev.values if isinstance(ev.values, np.ndarray) else np.asarray(ev.values, np.float32)
        src, vals = _source(ev.source), values.tolist()
        return [_CONTROL_HEAD + _IIF.pack(ev.voice, d, vals[d]) + src for d in np.flatnonzero(values).tolist()]
    if ev.kind == "deform":
        return [encode_message(PREFIX + "/event/deform", ev.voice, ev.source, *(float(x) for x in ev.values))]
    if ev.kind == "gain":
        return [encode_message(PREFIX + "/event/gain", ev.voice, float(ev.values[0]), ev.source)]
    if ev.kind == "instrument":
        return [encode_message(PREFIX + "/event/instrument", ev.voice, ev.name or "", ev.source)]
    return []


def plan_bundles(events: Iterable[Applied], tag_of) -> list[bytes]:
    """Datagrams for ``events``: the events of one sample share a bundle stamped ``tag_of(sample)`` (an NTP
    time tag), in the order they were applied."""
    by_sample: dict[int, list[bytes]] = {}
    for ev in events:
        by_sample.setdefault(ev.sample, []).extend(event_messages(ev))
    out: list[bytes] = []
    for sample, messages in by_sample.items():
        if messages:
            out.extend(encode_bundles(tag_of(sample), messages))
    return out


def level_message(levels: Sequence[float | None]) -> bytes:
    """``/sensorsynth/level`` with one rms dBFS per output channel (silence: ``SILENCE_DBFS``)."""
    return encode_message(PREFIX + "/level", *(SILENCE_DBFS if v is None else float(v) for v in levels))


# ----------------------------------------------------------------------------------------------- the edge
class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "Feedback") -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr) -> None:  # nothing that comes back is read
        self.owner.stats["ignored_replies"] += 1

    def error_received(self, exc: Exception) -> None:  # what the kernel reports for a send (rare: unconnected)
        self.owner.stats["errors"] += 1


class Feedback:
    """The OSC feedback sender (see the module's doc). ``engine`` is the running :class:`Engine`."""

    def __init__(self, engine, targets: Sequence[str], level_hz: float = 30.0, allow_broadcast: bool = False) -> None:
        if len(targets) > MAX_TARGETS:
            raise TargetError(f"at most {MAX_TARGETS} osc_feedback targets, got {len(targets)}")
        self.engine = engine
        self.targets = [parse_target(t) for t in targets]
        self.level_hz = float(level_hz)
        self.allow_broadcast = allow_broadcast
        self.addresses: list[tuple] = []  # resolved (family, sockaddr) per target
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._sub = None
        self._scheduled = False
        self._level_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = {"targets": [str(t) for t in self.targets], "events": 0, "datagrams": 0, "bytes": 0,
                      "dropped_events": 0, "dropped_datagrams": 0, "errors": 0, "ignored_replies": 0,
                      "announced": 0}  # fmt: skip

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Resolve and check every target, open one socket per address family, and listen to the engine."""
        loop = self._loop = asyncio.get_running_loop()
        for t in self.targets:
            try:
                infos = await loop.getaddrinfo(t.host, t.port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise TargetError(f"osc_feedback target {t}: cannot resolve {t.host}: {exc}") from None
            family, _, _, _, sockaddr = infos[0]
            check_address(sockaddr[0], self.allow_broadcast)
            self.addresses.append((family, sockaddr))
        for family in {f for f, _ in self.addresses}:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            if self.allow_broadcast and family == socket.AF_INET:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # this network only
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
            self._transports[family] = transport  # type: ignore[assignment]
        self._sub = self.engine.events.subscribe(maxlen=MAX_BACKLOG, wake=self._wake)
        if self.level_hz > 0:
            self._level_task = asyncio.create_task(self._level_loop(), name="osc-feedback-level")

    async def stop(self) -> None:
        if self._level_task is not None:
            self._level_task.cancel()
            try:
                await self._level_task
            except asyncio.CancelledError:
                pass
        if self._sub is not None:
            self._flush()  # what was applied before the stop still goes out
            self._sub.close()
            self._sub = None
        for tr in self._transports.values():
            tr.close()
        self._transports.clear()

    # ------------------------------------------------------------------ sending
    def _send(self, datagram: bytes) -> None:
        for family, sockaddr in self.addresses:
            tr = self._transports.get(family)
            if tr is None or tr.is_closing():
                continue
            if tr.get_write_buffer_size() > MAX_BUFFERED:
                self.stats["dropped_datagrams"] += 1
                continue
            tr.sendto(datagram, sockaddr)
            self.stats["datagrams"] += 1
            self.stats["bytes"] += len(datagram)

    def _wake(self) -> None:
        """The first event of a burst: send the burst once the loop has applied it (one flush per iteration)."""
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        sub = self._sub
        if sub is None:
            return
        events = sub.take()
        self.stats["dropped_events"] = sub.dropped
        if not events:
            return
        self.stats["events"] += len(events)
        now_mono, now_unix = time.monotonic_ns(), time.time()
        engine = self.engine

        def tag_of(sample: int) -> int:
            at = engine.sounding_ns(sample)
            return IMMEDIATELY if at is None else unix_to_ntp(mono_to_unix(at, now_mono, now_unix))

        for datagram in plan_bundles(events, tag_of):
            self._send(datagram)

    def announce(self, address: str, *args: Any) -> None:
        """Send one message to every target now (e.g. ``/sensorsynth/scene ,s name`` from the scenes): for
        other parts of the server that have news for the same listeners."""
        if not address.startswith("/"):
            raise ValueError(f"an OSC address starts with '/', got {address!r}")
        data = encode_message(address, *args)
        if len(data) > MAX_DATAGRAM:
            raise ValueError(f"{address}: {len(data)} bytes is more than one datagram ({MAX_DATAGRAM})")
        self.stats["announced"] += 1
        self._send(data)

    def levels(self) -> list[float | None]:
        """rms dBFS per output channel since the previous level message (the engine's per-channel meter, read
        as a reader of its own)."""
        return list(self.engine.channel_levels("osc_feedback"))

    async def _level_loop(self) -> None:
        period = 1.0 / self.level_hz
        while True:
            await asyncio.sleep(period)
            try:
                self._send(level_message(self.levels()))
            except Exception:  # noqa: BLE001 - a level problem must not end the levels
                log.exception("osc feedback level")

    def status(self) -> dict[str, Any]:
        return self.stats
