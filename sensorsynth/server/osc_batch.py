"""Batched OSC ingest: drain the UDP socket many datagrams per system call, and play the plain control messages
through compiled code straight into the renderer's inbox.

Why. Python's asyncio UDP path costs 40-50 µs a datagram here (a callback, a ``recvfrom`` with its buffer, the
decoder, a command object, the engine's checks, one inbox call): about 25,000 messages a second on one core,
and a sender faster than that loses the rest in the kernel. A control stream is the bulk of OSC traffic and its
messages are simple (``/sensorsynth/control ,ffff…``, ``/sensorsynth/control/<i> ,f``, optionally under
``/voice/<n>``), so:

- :class:`DatagramBatch` receives up to ``BATCH`` datagrams with one ``recvmmsg`` (Linux) into preallocated
  buffers, with their senders (``recvfrom`` in a loop elsewhere);
- :func:`sender_keys` (compiled) turns each sender into an integer, so the server applies its per-sender policy
  (allowed senders, token buckets) once per sender per batch, not once per datagram;
- :func:`ingest` (compiled) decodes the plain control messages of a batch, checks them exactly as the engine
  would (voice, count against the voice's instrument, finite, ≥ 0) and posts them to the inbox with
  ``kernel.inbox_push``, the same producer function the engine's own calls use. It stops at the first datagram
  it does not take (a bundle, another address, a value the engine would refuse, ...): the server hands that one
  to the general decoder (:class:`~sensorsynth.server.osc.OscDecoder`), whose rejection messages say why, then
  resumes. Order is kept: nothing after a datagram is applied before it.

The fast path changes no behaviour: what it accepts, the general path would have accepted with the same effect;
what it does not take goes the general way. ``tests/server/test_osc_batch.py`` checks both against each other.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import sys

import numpy as np
from numba import njit

from ..render import kernel as K

__all__ = ["BATCH", "LOOPBACK_V4", "RESULT_FIELDS", "DatagramBatch", "ingest", "sender_keys"]

BATCH = 64  # datagrams per recvmmsg
DATAGRAM_BYTES = 65536  # MAX_PACKET: no UDP datagram is larger
NAME_BYTES = 32  # sockaddr_in6 is 28 bytes
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
LOOPBACK_V4 = (1 << 32) | 0x7F000001  # sender key of 127.0.0.1
NO_KEY = -1

# what ingest() reports, in its `result` array
R_TAKEN, R_COMMANDS, R_PUSHED, R_FULL, R_STOP = range(5)
RESULT_FIELDS = ("taken", "commands", "pushed", "inbox_full", "stop")

_PREFIX = np.frombuffer(b"/sensorsynth/", np.uint8).copy()
_VOICE = np.frombuffer(b"voice/", np.uint8).copy()
_CONTROL = np.frombuffer(b"control", np.uint8).copy()


# ------------------------------------------------------------------------------------------ receiving
class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def _recvmmsg():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = _recvmmsg()


class DatagramBatch:
    """Preallocated buffers for ``BATCH`` datagrams and their senders, filled by :meth:`receive` from a
    non-blocking UDP socket: ``data[i, :lens[i]]`` is datagram i, ``names[i]`` its sender's sockaddr.

    ``recvmmsg`` (one system call, the GIL released) on Linux; elsewhere ``recvfrom_into`` in a loop."""

    def __init__(self, sock: socket.socket, size: int = BATCH, use_recvmmsg: bool = True) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.size = size
        self.data = np.zeros((size, DATAGRAM_BYTES), np.uint8)
        self.names = np.zeros((size, NAME_BYTES), np.uint8)
        self.lens = np.zeros(size, np.int64)
        self.truncated = 0
        self._hosts: dict[int, str] = {}  # sender key → the host's text
        self._fn = _RECVMMSG if use_recvmmsg else None
        if self._fn is not None:
            self._iov = (_IoVec * size)()
            self._hdrs = (_MMsgHdr * size)()
            for i in range(size):
                self._iov[i].base = self.data[i].ctypes.data
                self._iov[i].len = DATAGRAM_BYTES
                h = self._hdrs[i].hdr
                h.name = self.names[i].ctypes.data
                h.namelen = NAME_BYTES
                h.iov = ctypes.addressof(self._iov[i])
                h.iovlen = 1
            self._words = np.frombuffer(self._hdrs, np.uint32).reshape(size, ctypes.sizeof(_MMsgHdr) // 4)
            self._name_col = _MsgHdr.namelen.offset // 4
            self._flags_col = _MsgHdr.flags.offset // 4
            self._len_col = _MMsgHdr.len.offset // 4
            self._addr = ctypes.addressof(self._hdrs)
            self._collect = bound(_collect, (self._words, 0, self.lens, 0, 0, 0, NAME_BYTES, MSG_TRUNC))
        else:
            self._views = [memoryview(self.data[i]) for i in range(size)]

    @property
    def batched(self) -> bool:
        """True when one system call receives the whole batch."""
        return self._fn is not None

    def receive(self) -> int:
        """Datagrams received now (0 when none is waiting); raises OSError for a socket error."""
        if self._fn is not None:
            n = self._fn(self.fd, self._addr, self.size, MSG_DONTWAIT, None)
            if n < 0:
                e = ctypes.get_errno()
                if e in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return 0
                raise OSError(e, os.strerror(e))
            # lengths out of the headers, truncations counted, the name lengths reset for the next call
            self.truncated += self._collect(self._words, n, self.lens, self._name_col, self._len_col, self._flags_col,
                                            NAME_BYTES, MSG_TRUNC)
            return n
        n = 0
        while n < self.size:
            try:
                got, addr = self.sock.recvfrom_into(self._views[n])
            except (BlockingIOError, InterruptedError):
                break
            self.lens[n] = got
            self._store_name(n, addr)
            n += 1
        return n

    def _store_name(self, i: int, addr) -> None:
        """A sockaddr in the layout recvmmsg writes, from Python's address tuple (the fallback path)."""
        name = self.names[i]
        name[:] = 0
        if len(addr) == 2:
            name[0:2] = np.frombuffer(int(socket.AF_INET).to_bytes(2, sys.byteorder), np.uint8)
            name[2:4] = np.frombuffer(int(addr[1]).to_bytes(2, "big"), np.uint8)
            name[4:8] = np.frombuffer(socket.inet_pton(socket.AF_INET, addr[0]), np.uint8)
        else:
            name[0:2] = np.frombuffer(int(socket.AF_INET6).to_bytes(2, sys.byteorder), np.uint8)
            name[2:4] = np.frombuffer(int(addr[1]).to_bytes(2, "big"), np.uint8)
            name[8:24] = np.frombuffer(socket.inet_pton(socket.AF_INET6, addr[0].split("%", 1)[0]), np.uint8)

    def datagram(self, i: int) -> bytes:
        return self.data[i, : self.lens[i]].tobytes()

    def sender(self, i: int, key: int | None = None) -> tuple[str, int]:
        """Datagram i's sender as Python's socket module gives it: (host, port). With its ``key`` (from
        :func:`sender_keys`) the host's text is remembered, not decoded again."""
        name = self.names[i]
        if key is not None:
            host = self._hosts.get(key)
            if host is not None:
                return host, (int(name[2]) << 8) | int(name[3])
            if len(self._hosts) >= 4096:
                self._hosts.clear()
            host, port = self.sender(i)
            self._hosts[key] = host
            return host, port
        family = int.from_bytes(name[0:2].tobytes(), sys.byteorder)
        port = int.from_bytes(name[2:4].tobytes(), "big")
        if family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, name[4:8].tobytes()), port
        if family == socket.AF_INET6:
            return socket.inet_ntop(socket.AF_INET6, name[8:24].tobytes()), port
        return "?", port


# ------------------------------------------------------------------------------------------ compiled
def bound(dispatcher, example_args: tuple):
    """The compiled entry point of ``dispatcher`` for the types of ``example_args`` (compiled, or loaded from
    numba's cache, now): calling it skips numba's per-call type dispatch, a microsecond or more for a function
    of many arrays, which a lone datagram's batch would pay several times. Another numba: the dispatcher."""
    dispatcher.compile(tuple(dispatcher.typeof_pyval(a) for a in example_args))
    try:
        sig = tuple(dispatcher.typeof_pyval(a) for a in example_args)
        return dispatcher.overloads[sig].entry_point
    except (KeyError, AttributeError):
        return dispatcher


@njit(cache=True, error_model="numpy")
def _collect(words, n, lens, name_col, len_col, flags_col, name_bytes, trunc_flag) -> int:
    """After recvmmsg: each datagram's length into ``lens``, its name length reset for the next call; returns
    how many were truncated (none can be: the buffers hold the largest datagram; counted all the same)."""
    truncated = 0
    for i in range(n):
        lens[i] = words[i, len_col]
        words[i, name_col] = name_bytes
        if words[i, flags_col] & trunc_flag:
            truncated += 1
    return truncated


@njit(cache=True, error_model="numpy")
def sender_keys(names: np.ndarray, n: int, keys: np.ndarray, af_inet: int, af_inet6: int, big_endian: bool) -> int:
    """keys[i] = an integer naming datagram i's sender address (IPv4, and IPv4-mapped IPv6: 2**32 + the address;
    IPv6: a 62-bit hash of the address with bit 62 set; NO_KEY otherwise). Returns how many are not 127.0.0.1
    (as ``127.0.0.1`` or ``::ffff:127.0.0.1``) nor ``::1``."""
    others = 0
    for i in range(n):
        name = names[i]
        if big_endian:  # sa_family is in the host's byte order
            family = (np.int64(name[0]) << 8) | np.int64(name[1])
        else:
            family = np.int64(name[0]) | (np.int64(name[1]) << 8)
        key = np.int64(NO_KEY)
        if family == af_inet:
            key = (np.int64(1) << 32) | (np.int64(name[4]) << 24) | (np.int64(name[5]) << 16) | (
                np.int64(name[6]) << 8) | np.int64(name[7])
        elif family == af_inet6:
            mapped = True
            for b in range(8, 18):
                if name[b] != 0:
                    mapped = False
            if mapped and name[18] == 0xFF and name[19] == 0xFF:
                key = (np.int64(1) << 32) | (np.int64(name[20]) << 24) | (np.int64(name[21]) << 16) | (
                    np.int64(name[22]) << 8) | np.int64(name[23])
            else:
                h = np.uint64(14695981039346656037)
                loop1 = name[23] == 1
                for b in range(8, 24):
                    h = (h ^ np.uint64(name[b])) * np.uint64(1099511628211)
                    if b < 23 and name[b] != 0:
                        loop1 = False
                if loop1:
                    key = np.int64(2)  # ::1
                else:
                    key = np.int64(h >> np.uint64(2)) | (np.int64(1) << 62)
        keys[i] = key
        if key != LOOPBACK_V4 and key != 2:
            others += 1
    return others


@njit(cache=True, inline="always")
def _match(d, p: int, word) -> bool:
    for i in range(word.size):
        if d[p + i] != word[i]:
            return False
    return True


@njit(cache=True, inline="always")
def _digits(d, p: int, end: int) -> tuple[int, int]:
    """(value, next position) of the decimal digits at p (1 to 6 of them), or (-1, p) when there are none or
    too many (the general decoder then says why)."""
    v = 0
    q = p
    while q < end and 48 <= d[q] <= 57:
        v = v * 10 + (d[q] - 48)
        q += 1
        if q - p > 6:
            return -1, p
    if q == p:
        return -1, p
    return v, q


@njit(cache=True, inline="always")
def _flush(acc, pending, voice_k, generation, t_play, ib_state, ib_slots, ib_pool, result, v) -> None:
    """Post voice v's summed vector (one inbox message), and clear it."""
    k = voice_k[v]
    if K.inbox_push(ib_state, ib_slots, ib_pool, K.EV_CONTROL, v, t_play, generation, acc[v, :k]):
        result[R_PUSHED] += 1
    else:
        result[R_FULL] += 1
    for j in range(k):
        acc[v, j] = 0.0
    pending[v] = 0


@njit(cache=True, error_model="numpy")
def ingest(data, lens, allowed, start, n, voice_k, voice_ok, generation, t_play,
           ib_state, ib_slots, ib_pool, bits, vec, acc, pending, touched, result) -> None:
    """Decode and post the plain control messages of datagrams [start, n), in order; stop at the first
    allowed datagram that is not one (``result[R_STOP]`` = its index, or n when all were taken).

    ``allowed[i]``: 1 when the sender policy let datagram i through (0: already counted as refused; skipped).
    ``voice_k[v]``: control dimensions of voice v's instrument as the inbox producer knows it; ``voice_ok[v]``:
    1 when OSC may play voice v. ``t_play``: the sample the events play at (asap: the renderer's time).
    ``bits``/``vec``: scratch, uint32 and its float32 view, ≥ the largest K. ``touched[v]`` counts voice v's
    commands. ``result``: see R_*; counts are added to.

    Coalescing. Every event taken here plays at the same sample (``t_play``), and a control event's burst is
    linear in its vector (``kernel.add_burst``: v_k · attack_k), so the events of one voice are summed
    (``acc[v]``) and posted as one inbox message when the call returns: the same excitation, one burst instead
    of hundreds a block (a sender at 100,000 messages a second would otherwise ask the audio thread for ~300
    bursts a block). In ``noise = "fresh"`` mode the summed burst has one noise draw instead of several. A sum
    that would leave float32 is posted as it stood and a new one begins."""
    result[R_STOP] = n
    n_voices = voice_k.size
    for i in range(start, n):
        if allowed[i] == 0:
            continue
        d = data[i]
        end = lens[i]
        stop = False
        # the address: /sensorsynth/[voice/<n>/]control[/<i>], then its null and padding
        if end < 24 or end & 3 or not _match(d, 0, _PREFIX):
            stop = True
        p = 13
        voice = 0
        if not stop and _match(d, p, _VOICE):
            voice, p = _digits(d, p + 6, end)
            if voice < 0 or voice >= n_voices or p >= end or d[p] != 47:  # '/'
                stop = True
            p += 1
        if not stop and (p + 7 > end or not _match(d, p, _CONTROL)):
            stop = True
        p += 7
        index = -1
        if not stop and p < end and d[p] == 47:
            index, p = _digits(d, p + 1, end)
            if index < 0:
                stop = True
        if not stop and (p >= end or d[p] != 0):
            stop = True
        q = (p + 4) & ~3  # the address's null, padded to 4
        if not stop:
            for b in range(p, q):
                if b >= end or d[b] != 0:
                    stop = True
        # the type tags: ',' and f × count, null, padding
        if not stop and (q >= end or d[q] != 44):
            stop = True
        count = 0
        a = 0
        if not stop:
            t = q + 1
            while t < end and d[t] == 102:  # 'f'
                t += 1
            count = t - q - 1
            if t >= end or d[t] != 0 or count == 0:
                stop = True
            a = (t + 4) & ~3
            if not stop:
                for b in range(t, a):
                    if b >= end or d[b] != 0:
                        stop = True
            if not stop and a + 4 * count != end:
                stop = True
        k = 0
        if not stop:
            k = voice_k[voice]
            if voice_ok[voice] == 0 or k <= 0 or (index < 0 and count != k) or (
                    index >= 0 and (count != 1 or index >= k)):
                stop = True  # the general path says why (voice_taken, wrong_count, bad_index, ...)
        if not stop:
            for j in range(count):
                o = a + 4 * j
                bits[j] = (np.uint32(d[o]) << 24) | (np.uint32(d[o + 1]) << 16) | (np.uint32(d[o + 2]) << 8) | (
                    np.uint32(d[o + 3]))
            for j in range(count):
                v = vec[j]
                if not (v >= 0.0 and v - v == 0.0):  # NaN, inf and negatives: the general path refuses them
                    stop = True
        if stop:
            result[R_STOP] = i
            break
        result[R_TAKEN] += 1
        result[R_COMMANDS] += 1
        touched[voice] += 1
        if index >= 0:
            v = vec[0]
            if v == 0.0:  # a channel at 0 adds nothing (the engine's rule): a command, nothing posted
                continue
            s = acc[voice, index] + v
            if not (s - s == 0.0):
                _flush(acc, pending, voice_k, generation, t_play, ib_state, ib_slots, ib_pool, result, voice)
                s = v
            acc[voice, index] = s
        else:
            over = False
            for j in range(k):
                s = acc[voice, j] + vec[j]
                if not (s - s == 0.0):
                    over = True
            if over:
                _flush(acc, pending, voice_k, generation, t_play, ib_state, ib_slots, ib_pool, result, voice)
            for j in range(k):
                acc[voice, j] += vec[j]
        pending[voice] = 1
    for v in range(n_voices):
        if pending[v]:
            _flush(acc, pending, voice_k, generation, t_play, ib_state, ib_slots, ib_pool, result, v)


# ------------------------------------------------------------------------------------------ the engine's side
class ControlLane:
    """What :func:`ingest` needs from the engine for one batch, and what it hands back: the fast path of
    ``Engine.submit`` for plain control messages (the engine's own checks, as arrays).

    ``ready()`` (from the service) says whether the lane may run now: not while anyone listens to the applied
    events (a monitor page, ``osc_feedback``, MIDI out: each wants every command, not a batch's sum) or a learning
    session records OSC's targets (it wants each command as an object): the general path gives them that. ``controls_all_voices``: the OSC policy's switch (else only OSC's voices and free ones)."""

    def __init__(self, engine, ready=lambda: True, controls_all_voices: bool = False) -> None:
        from ..render.renderer import Inbox

        self.engine = engine
        self._ready = ready
        self.controls_all_voices = controls_all_voices
        inbox = engine.inbox
        self.usable = isinstance(inbox, Inbox)  # the numba renderers' inbox (the torch one has its own queue)
        n = len(engine.voices)
        self.voice_k = np.zeros(n, np.int64)
        self.voice_ok = np.zeros(n, np.uint8)
        self.touched = np.zeros(n, np.int64)
        width = 1024  # MAX_VALUES: the widest message the decoder accepts
        self.bits = np.zeros(width, np.uint32)
        self.vec = self.bits.view(np.float32)
        self.result = np.zeros(len(RESULT_FIELDS), np.int64)
        self.acc = np.zeros((n, width), np.float32)  # per voice: the batch's summed control vector
        self.pending = np.zeros(n, np.uint8)
        self.generation = 0
        self.t_play = 0
        self._timed = False
        self._ingest = ingest
        if self.usable:  # compile (or load from numba's cache) now, not on the first datagram
            inbox = engine.inbox
            empty = np.zeros((1, 8), np.uint8)
            self._ingest = bound(ingest, (empty, np.zeros(1, np.int64), np.zeros(1, np.uint8), 0, 0, self.voice_k,
                                          self.voice_ok, 0, 0, inbox._state, inbox._slots, inbox._pool, self.bits,
                                          self.vec, self.acc, self.pending, self.touched, self.result))

    def prepare(self, arrival_ns: int) -> bool:
        """Fill the per-batch arrays; False when the lane may not run now."""
        if not self.usable or not self._ready() or self.engine.events.listening:
            return False
        engine = self.engine
        inbox = engine.inbox
        bank = engine.renderer._posted
        entries = bank.entries
        for v, state in enumerate(engine.voices):
            self.voice_k[v] = entries[inbox._voice_instrument[v]].k
            owner = state.owner
            self.voice_ok[v] = 1 if (self.controls_all_voices or owner is None or owner.startswith("osc")) else 0
        self.generation = bank.generation
        self.t_play, self._timed = engine._time_for(None, arrival_ns)
        return True

    def run(self, batch: DatagramBatch, allowed: np.ndarray, start: int, n: int) -> int:
        """Ingest datagrams [start, n) of ``batch``; returns the index it stopped at."""
        inbox = self.engine.inbox
        self._ingest(batch.data, batch.lens, allowed, start, n, self.voice_k, self.voice_ok, self.generation,
               self.t_play, inbox._state, inbox._slots, inbox._pool, self.bits, self.vec, self.acc, self.pending,
               self.touched, self.result)
        return int(self.result[R_STOP])

    def finish(self, arrival_ns: int) -> tuple[int, int, int]:
        """After a batch: mark the voices used, give the latency meter one sample of the batch; returns
        (datagrams taken, commands, inbox-full refusals) and clears the counts."""
        engine = self.engine
        r = self.result
        taken, commands, pushed, full = int(r[R_TAKEN]), int(r[R_COMMANDS]), int(r[R_PUSHED]), int(r[R_FULL])
        if taken:
            for v in np.flatnonzero(self.touched):
                engine.voices.touch(int(v))
            self.touched[:] = 0
            if pushed and self._timed:
                engine.latency.expect(self.t_play, arrival_ns, engine._inbox_posted())
        r[:] = 0
        return taken, commands, full
