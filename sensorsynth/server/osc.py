"""OSC input of the live server: a pure decoder (bytes in, commands out) under a thin asyncio UDP front-end.

Address space (UDP, OSC 1.0; default port 9000):

| address | arguments | becomes |
| --- | --- | --- |
| `/sensorsynth/control` | K numbers (`f`, `i`, `d` or `h`), K = the instrument's control_plane_dim, each ≥ 0 | `Control` |
| `/sensorsynth/control/<i>` | 1 number ≥ 0: strength of control dimension `i` (TouchDesigner's OSC Out CHOP, one channel per address) | `ControlChannel` |
| `/sensorsynth/deform` | E numbers: deformation logits, one per expressivity variant | `Deform` |
| `/sensorsynth/gain` | 1 number in [0, 16]: linear voice gain | `Gain` |
| `/sensorsynth/instrument` | 1 string (`s` or `S`): instrument name (models folder, without `.instrument`) | `SelectInstrument` |
| `/sensorsynth/status` | none (any are ignored) | reply to the sender: one `/sensorsynth/status` message of key (`s`), value (`i`, `f`, `h` or `s`) pairs |
| `/sensorsynth/pan` | 1 number in [0, 1]: where the voice sounds, along the line or round the ring of speakers (docs/speakers.md) | `Pan` |
| `/sensorsynth/scene` | 1 string: a scene of the scenes file | `SceneRequest`: switch scenes (from this machine, or senders in `allowed_senders` when that is set; others: `forbidden_sender`) |
| `/sensorsynth/voice/<n>/control`, `.../control/<i>`, `.../deform`, `.../gain`, `.../instrument`, `.../pan` | as above | the same, for voice `n` (without `/voice/<n>`: the OSC voice, 0) |
| `/sensorsynth/input/<source>` | N numbers: one raw sensor frame (any N; `<source>`: 1-64 of `A-Z a-z 0-9 _ . : -`) | `SensorInput` (kind `raw`): the mappings play it through the instrument's basis |
| `/sensorsynth/input/<source>/motion`, `.../hand` | 9 or 84 numbers, as the WebSocket `sensor` kinds | `SensorInput` of that kind |
| `/sensorsynth/learn/record` | optional number (1 on, 0 off; default 1), optional string: the one source to record | `LearnRequest` |
| `/sensorsynth/learn/replay` | optional string: the source | `LearnRequest`: record while the voice replays the instrument's performance |
| `/sensorsynth/learn/train` | optional string: `ridge` (default) or `mlp` | `LearnRequest` |
| `/sensorsynth/learn/run` | optional number (1 on, 0 off; default 1) | `LearnRequest` |
| `/sensorsynth/learn/clear` | none | `LearnRequest`: forget the recorded pairs |
| `/sensorsynth/calibrate/<source>` | none: learn the range again; or 2·N numbers: lo₁..lo_N, hi₁..hi_N | `CalibrateRequest` |
| `/sensorsynth/voice/<n>/input/...`, `.../learn/...`, `.../calibrate/...` | as above | the same, for voice `n` |
| any address of a loaded preset (`--preset NAME`, see `sensorsynth/mapping/presets/`) | as the preset says | `PresetValues`: axes of a preset source |

Bundles (`#bundle`) are accepted, nested up to `MAX_BUNDLE_DEPTH` (4) levels. A message inside a bundle whose
time tag lies within ±`timetag_window_s` (default 1 s) of the server's clock is played at that time
(`at` = the tag in Unix seconds); a tag outside the window or "immediately" (1) plays it on arrival
(`at=None`). The server never waits for a sender's clock: senders such as TouchDesigner stamp past or
relative times. Plain messages (not in a bundle) play on arrival. Address patterns (`*`, `?`, `[..]`, `{..}`)
are not expanded: addresses are matched literally. A message holds at most `MAX_VALUES` (1024) arguments.

Refused input is counted by kind (`Rejections.count("osc", kind, message)`, visible in the status reply) and
never stops the server; one bad datagram never affects the next. Kinds: `malformed` (truncated, sizes that
overrun the packet, non-zero padding, missing type tags, unknown type tags, trailing bytes; the whole datagram
is dropped), `unknown_address`, `wrong_type` (a string or blob where numbers are expected, ...),
`wrong_count` (an empty control, two gains, ...), `nonfinite` (NaN or inf), `negative` (a control < 0),
`out_of_range` (gain), `bad_index`/`bad_voice`/`bad_name`, `too_deep` (a bundle nested too deeply: that bundle
is dropped, its siblings are kept), `forbidden_sender` (a sender not in `allowed_senders`), `rate_limited`
(status requests beyond `STATUS_REPLIES_PER_S`, 20/s), `sender_rate` (datagrams beyond one sender's
`OscPolicy.messages_per_s`), `voice_taken` (a `/voice/<n>/...` message for a voice a WebSocket client holds,
unless `OscPolicy.controls_all_voices`), `status_error` (the status provider raised),
`sink_error` (the sink raised something other than `Rejected`; the first is logged with its traceback), and whatever the
audio engine refuses when the command reaches it: the sink raises `Rejected(kind, message)` (`wrong_count` for
3 values on a K=16 instrument, `unknown_instrument`, ...).

Layout, in the style of python-osc (whose server path is not used: its dispatcher may sleep until a future time
tag) and of websockets (a protocol core without I/O):

- `OscDecoder.decode(data, now) -> list[Command | StatusRequest | Rejection]`: pure, no I/O, no clock (the
  current Unix time is passed in). Plain float messages take a fast path (one struct unpack); everything else
  goes through a small complete OSC 1.0 parser written here.
- `encode_status(mapping) -> bytes`: the status reply, pure.
- `OscServer`: the UDP front-end on the event loop. When the socket is readable it takes batches of up to 64
  datagrams per system call (`osc_batch.DatagramBatch`, `recvmmsg`), stamps each batch's arrival
  (`time.monotonic_ns()`), applies the sender policy once per sender and batch, lets the compiled control lane
  (`osc_batch.ControlLane`, when the service gives one) take the plain `/control` messages straight into the
  engine's inbox, and hands every other datagram, in order, to the decoder and then each command to
  `sink(command, arrival_ns)`, answering status requests. With the lane a core ingests several hundred thousand
  control messages a second (`tests/benchmarks/bench_serve.py --phases saturate`); without it, about 25,000.

Who may do what (`OscPolicy`, `docs/server-security.md`): OSC carries no authentication (UDP senders can be
forged), so it is bounded instead. Each sender address but this machine's loopback has a token bucket
(`messages_per_s` datagrams per second, bursts of twice that); `/voice/<n>/...` reaches voice 0 (OSC's own) and voices nobody holds, never a
voice a browser or the hands adapter holds, unless `controls_all_voices`; and the status reply to a sender
that is neither this machine nor one of `status_peers` is at most `STATUS_REPLY_RATIO` (4) times the size of
the request datagram (pad the request with a blob to see more), one reply per datagram: a forged request
cannot make this server an amplifier.

(Past 500 lines on purpose: the address table above, the pure decoder it documents and the thin UDP front-end
are one contract, kept side by side so that an address, its argument rules and its refusal kind cannot drift
apart; the decoder's framing checks are most of the length.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from sensorsynth.protocol.commands import (
    Command,
    Control,
    ControlChannel,
    Deform,
    Gain,
    Pan,
    Rejected,
    SelectInstrument,
)
from sensorsynth.protocol.requests import (
    LEARN_ACTIONS,
    CalibrateRequest,
    LearnRequest,
    SceneRequest,
    SensorInput,
)
from sensorsynth.server.osc_batch import BATCH, DatagramBatch, bound, sender_keys
from sensorsynth.server.rejections import Rejections

if TYPE_CHECKING:  # the decoder only calls its match(); the mapping package is imported by its owner
    from sensorsynth.mapping.presets import PresetTable, PresetValues
    from sensorsynth.server.osc_batch import ControlLane

__all__ = [
    "MAX_BUNDLE_DEPTH",
    "MAX_PACKET",
    "MAX_VALUES",
    "STATUS",
    "STATUS_REPLIES_PER_S",
    "CalibrateRequest",
    "LearnRequest",
    "OscDecoder",
    "OscServer",
    "Rejection",
    "SceneRequest",
    "SensorInput",
    "StatusRequest",
    "encode_status",
    "ntp_to_unix",
    "parse_address",
    "unix_to_ntp",
]

log = logging.getLogger(__name__)

SOURCE = "osc"
PREFIX = "/sensorsynth"
MAX_BUNDLE_DEPTH = 4
MAX_VALUES = 1024
MAX_PACKET = 65536
MAX_NUMBER_DIGITS = 6  # voice and control indices: /voice/999999 at most (the engine checks the real bounds)
STATUS_REPLIES_PER_S = 20.0  # token bucket (burst of as many): a status reply must not be a flood amplifier
MAX_STATUS_BYTES = 8192
STATUS_REPLY_RATIO = 4  # a reply to a sender not trusted for status is at most this × its request datagram
_LOOPBACK_SENDERS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
MAX_BATCHES_PER_WAKE = 32  # batches of BATCH datagrams taken before the loop runs its other work
_BIG_ENDIAN = sys.byteorder == "big"
_AF_INET, _AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
MAX_SENDERS = 4096  # per-sender buckets kept; beyond, the table starts again (a spoofed-address flood)

NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
_NTP_ERA = 1 << 32
IMMEDIATELY = 1


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """A `/sensorsynth/status` request: the front-end answers the sender."""


STATUS = StatusRequest()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused message (or a whole datagram, for ``malformed``): ``kind`` is the counter's name."""

    kind: str
    message: str


Item = Union[Command, StatusRequest, Rejection, SensorInput, LearnRequest, CalibrateRequest, SceneRequest,
             "PresetValues"]


class _Malformed(Exception):
    """Raised inside the parser: the datagram's framing cannot be trusted, so all of it is dropped."""


def ntp_to_unix(tag: int, now: float) -> float:
    """An OSC/NTP 64-bit time tag as Unix seconds, in the NTP era nearest to ``now`` (so 2036 wraps work)."""
    t = ((tag >> 32) - NTP_UNIX_OFFSET) + (tag & 0xFFFFFFFF) / 4294967296.0  # sub-µs exact, unlike tag / 2**32
    if t < now - _NTP_ERA / 2:
        t += _NTP_ERA
    return t


def unix_to_ntp(t: float) -> int:
    """Unix seconds as a 64-bit OSC time tag (era 0 up to 2036, then wrapping)."""
    return int(round((t + NTP_UNIX_OFFSET) * 4294967296.0)) & 0xFFFFFFFFFFFFFFFF


# ----------------------------------------------------------------------------------------------- routes

# (verb, voice, index); verbs: control, channel, deform, gain, instrument, status; and with a name in place of
# the index: input (the source; verb "input.<kind>" for motion/hand), learn.<action>, calibrate (the source)
_Route = tuple[str, int | None, int | str | None]
_VERBS_NO_INDEX = ("control", "deform", "gain", "instrument", "pan")
_SOURCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


def _source_name(s: str) -> bool:
    return 1 <= len(s) <= 64 and set(s) <= _SOURCE_CHARS


def _number(s: str) -> int | None:
    if not s or not s.isascii() or not s.isdigit():
        return None
    return int(s)


def parse_address(address: bytes) -> _Route | Rejection:
    """Route an address (bytes, without its terminating null): ``(verb, voice, index)`` or a rejection."""
    try:
        text = address.decode("ascii")
    except UnicodeDecodeError:
        return Rejection("unknown_address", f"address is not ASCII: {address[:64]!r}")
    parts = text.split("/")
    if len(parts) < 3 or parts[0] or parts[1] != "sensorsynth":
        return Rejection("unknown_address", f"unknown address {text[:80]!r}")
    rest = parts[2:]
    voice = None
    if rest[0] == "voice" and len(rest) >= 3:
        voice = _number(rest[1])
        if voice is None:
            return Rejection("unknown_address", f"unknown address {text[:80]!r} (voice must be a number)")
        if len(rest[1]) > MAX_NUMBER_DIGITS:
            return Rejection("bad_voice", f"voice {rest[1][:16]} is too large in {text[:80]!r}")
        rest = rest[2:]
    verb = rest[0]
    if len(rest) == 1:
        if verb in _VERBS_NO_INDEX:
            return (verb, voice, None)
        if verb == "status" and voice is None:
            return ("status", None, None)
        if verb == "scene" and voice is None:
            return ("scene", None, None)
    elif len(rest) == 2 and verb == "control":
        index = _number(rest[1])
        if index is not None:
            if len(rest[1]) > MAX_NUMBER_DIGITS:
                return Rejection("bad_index", f"control index {rest[1][:16]} is too large in {text[:80]!r}")
            return ("channel", voice, index)
    elif verb == "input" and len(rest) in (2, 3) and _source_name(rest[1]):
        if len(rest) == 2:
            return ("input", voice, rest[1])
        if rest[2] in ("motion", "hand", "raw"):
            return ("input." + rest[2], voice, rest[1])
    elif verb == "learn" and len(rest) == 2 and rest[1] in LEARN_ACTIONS:
        return ("learn." + rest[1], voice, None)
    elif verb == "calibrate" and len(rest) == 2 and _source_name(rest[1]):
        return ("calibrate", voice, rest[1])
    return Rejection("unknown_address", f"unknown address {text[:80]!r}")


# ----------------------------------------------------------------------------------------------- parsing

_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_I64 = struct.Struct(">q")
_ZEROS = (b"", b"\0", b"\0\0", b"\0\0\0", b"\0\0\0\0")
_BUNDLE = b"#bundle\0"
_NUMERIC = frozenset("ifdh")  # accepted as numbers (T/F/N/I, c, r, m, t, blobs and strings are not)
# The fast path: a type tag string of n 'f' (n = 1..MAX_VALUES) → one precompiled struct for its n floats
# (the common sizes now, the others when first seen: at most MAX_VALUES entries).
_FLOAT_TAGS = {b"f" * n: struct.Struct(f">{n}f") for n in range(1, 65)}


def _float_struct(tags: bytes) -> struct.Struct | None:
    if 0 < len(tags) <= MAX_VALUES and not tags.strip(b"f"):
        st = _FLOAT_TAGS[tags] = struct.Struct(f">{len(tags)}f")
        return st
    return None  # not only floats: the general parser


# Argument sizes of the fixed-size types; s/S/b are variable; T F N I [ ] carry no data.
_FIXED = {"i": 4, "f": 4, "c": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8}
_NO_DATA = frozenset("TFNI[]")
_NO_DATA_VALUES = {"T": True, "F": False, "N": None, "I": math.inf}


def _string_end(data: bytes, start: int, end: int) -> tuple[int, int]:
    """(null position, next aligned position) of the OSC string at ``start``; checks its padding."""
    z = data.find(0, start, end)
    if z < 0:
        raise _Malformed("unterminated string")
    nxt = (z + 4) & ~3
    if nxt > end:
        raise _Malformed("string padding runs past the end")
    if data[z:nxt] != _ZEROS[nxt - z]:
        raise _Malformed("non-zero string padding")
    return z, nxt


def _parse_args(data: bytes, tags: str, p: int, end: int) -> list:
    """The arguments of a message as Python values (arrays flattened; the tags say what each one was)."""
    values: list = []
    depth = 0
    for t in tags:
        size = _FIXED.get(t)
        if size is not None:
            if p + size > end:
                raise _Malformed("arguments run past the end")
            if t == "f":
                values.append(_F32.unpack_from(data, p)[0])
            elif t == "i":
                values.append(_I32.unpack_from(data, p)[0])
            elif t == "d":
                values.append(_F64.unpack_from(data, p)[0])
            elif t == "h":
                values.append(_I64.unpack_from(data, p)[0])
            else:  # c r m t: parsed for framing, never accepted as a value
                values.append(data[p : p + size])
            p += size
        elif t == "s" or t == "S":
            z, nxt = _string_end(data, p, end)
            try:
                values.append(data[p:z].decode("utf-8"))
            except UnicodeDecodeError:
                raise _Malformed("string is not UTF-8") from None
            p = nxt
        elif t == "b":
            if p + 4 > end:
                raise _Malformed("blob size runs past the end")
            n = _I32.unpack_from(data, p)[0]
            nxt = p + 4 + ((n + 3) & ~3)
            if n < 0 or nxt > end:
                raise _Malformed(f"blob size {n} overruns the packet")
            if data[p + 4 + n : nxt] != _ZEROS[nxt - p - 4 - n]:
                raise _Malformed("non-zero blob padding")
            values.append(data[p + 4 : p + 4 + n])
            p = nxt
        elif t in _NO_DATA:
            if t == "[":
                depth += 1
            elif t == "]":
                depth -= 1
                if depth < 0:
                    raise _Malformed("unbalanced ']' in type tags")
            # T and F are booleans (never the strings "T"/"F", which would read as true); N is nil, I infinity
            values.append(_NO_DATA_VALUES.get(t, t))
        else:
            raise _Malformed(f"unknown type tag {t!r}")
    if depth:
        raise _Malformed("unbalanced '[' in type tags")
    if p != end:
        raise _Malformed(f"{end - p} bytes after the arguments")
    return values


def _elements(data: bytes, start: int, end: int):
    """The elements of the bundle at data[start:end] (header and time tag already checked): (offset, size,
    is_bundle) each, with the framing checked; anything malformed raises _Malformed."""
    i = start + 16
    while i < end:
        if i + 4 > end:
            raise _Malformed("bundle element size runs past the end")
        size = _I32.unpack_from(data, i)[0]
        i += 4
        if size <= 0 or size & 3 or i + size > end:
            raise _Malformed(f"bundle element size {size} is invalid or overruns the packet")
        if data.startswith(_BUNDLE, i):
            yield i, size, True
        elif data[i] == 0x2F:
            yield i, size, False
        else:
            raise _Malformed("bundle element is neither a message nor a bundle")
        i += size


class OscDecoder:
    """Pure OSC decoder: ``decode(datagram, now) -> [Command | StatusRequest | Rejection, ...]``.

    ``now`` is the current Unix time in seconds, used only to judge bundle time tags against
    ``timetag_window_s``. A datagram whose framing is broken yields one ``Rejection("malformed", ...)`` and
    nothing else; otherwise each message yields one item. ``messages`` counts the messages seen.
    """

    def __init__(self, *, timetag_window_s: float = 1.0, max_bundle_depth: int = MAX_BUNDLE_DEPTH,
                 presets: PresetTable | None = None) -> None:
        if not (timetag_window_s >= 0 and math.isfinite(timetag_window_s)):
            raise ValueError(f"timetag_window_s must be a finite number ≥ 0, got {timetag_window_s!r}")
        if max_bundle_depth < 1:
            raise ValueError("max_bundle_depth must be ≥ 1")
        self.timetag_window_s = float(timetag_window_s)
        self.max_bundle_depth = int(max_bundle_depth)
        self.messages = 0
        self._routes: dict[bytes, _Route] = {}
        self.presets = presets if presets else None  # address tables of loaded presets (sensorsynth.mapping)

    # The whole datagram -------------------------------------------------------------------------------------

    def decode(self, data: bytes, now: float) -> list[Item]:
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        if n == 0 or n & 3 or n > MAX_PACKET:
            what = "empty" if n == 0 else "too large" if n > MAX_PACKET else "not a multiple of 4 bytes"
            return [Rejection("malformed", f"datagram of {n} bytes: {what}")]
        try:
            if data[0] == 0x2F:  # '/': a message
                self.messages += 1
                return [self._message(data, 0, n, None)]
            if data.startswith(_BUNDLE):
                out: list[Item] = []
                self._bundle(data, 0, n, 1, now, out)
                return out
            raise _Malformed("neither a message ('/...') nor a bundle ('#bundle')")
        except _Malformed as e:
            return [Rejection("malformed", str(e))]

    def _bundle(self, data: bytes, start: int, end: int, depth: int, now: float, out: list) -> None:
        if end - start < 16:
            raise _Malformed("bundle shorter than its header and time tag")
        tag = _U64.unpack_from(data, start + 8)[0]
        if tag == IMMEDIATELY:
            at = None
        else:
            at = ntp_to_unix(tag, now)
            if not abs(at - now) <= self.timetag_window_s:
                at = None
        for i, size, is_bundle in _elements(data, start, end):
            if not is_bundle:
                self.messages += 1
                out.append(self._message(data, i, i + size, at))
            elif depth >= self.max_bundle_depth:
                self._check_nested(data, i, i + size)
                out.append(Rejection("too_deep", f"bundle nested deeper than {self.max_bundle_depth} levels"))
            else:
                self._bundle(data, i, i + size, depth + 1, now, out)

    def _check_nested(self, data: bytes, start: int, end: int, guard: int = 64) -> None:
        """Framing check of a bundle too deep to decode (so 'too_deep' never hides a broken datagram)."""
        if guard == 0:
            return
        if end - start < 16:
            raise _Malformed("bundle shorter than its header and time tag")
        for i, size, is_bundle in _elements(data, start, end):
            if is_bundle:
                self._check_nested(data, i, i + size, guard - 1)

    # One message --------------------------------------------------------------------------------------------

    def _message(self, data: bytes, start: int, end: int, at: float | None) -> Item:
        z, p = _string_end(data, start, end)
        address = data[start:z]
        route = self._routes.get(address)
        if route is None:
            route = parse_address(address)
            if type(route) is Rejection and self.presets is not None and route.kind == "unknown_address":
                text = address.decode("ascii", "replace")
                if self.presets._route(text) is not None:
                    route = ("preset", None, text)
            if type(route) is Rejection:
                self._check_framing(data, p, end)
                return route
            if len(self._routes) < 4096:
                self._routes[address] = route
        if p == end:  # no type tag string: no arguments (OSC 1.0 allows it for old senders)
            return self._command(route, (), "", at)
        if data[p] != 0x2C:  # ','
            raise _Malformed("missing type tag string")
        tz, q = _string_end(data, p, end)
        tags = data[p + 1 : tz]
        st = _FLOAT_TAGS.get(tags) or _float_struct(tags)
        if st is not None:  # fast path: only floats
            if q + st.size != end:
                raise _Malformed("float arguments do not fill the message exactly")
            return self._command(route, st.unpack_from(data, q), "f", at)
        if len(tags) > MAX_VALUES:
            return Rejection("wrong_count", f"{len(tags)} arguments (at most {MAX_VALUES})")
        try:
            text = tags.decode("ascii")
        except UnicodeDecodeError:
            raise _Malformed("type tags are not ASCII") from None
        values = _parse_args(data, text, q, end)
        if not text:
            return self._command(route, (), "", at)
        if all(t in _NUMERIC for t in text):
            return self._command(route, tuple(float(v) for v in values), "f", at)
        if all(t == "s" or t == "S" for t in text):
            return self._command(route, tuple(values), "s", at)
        return self._command(route, tuple(values), text, at)

    @staticmethod
    def _check_framing(data: bytes, p: int, end: int) -> None:
        """Even a message we will refuse must be well formed, or the whole datagram is ``malformed``."""
        if p == end:
            return
        if data[p] != 0x2C:
            raise _Malformed("missing type tag string")
        tz, q = _string_end(data, p, end)
        try:
            text = data[p + 1 : tz].decode("ascii")
        except UnicodeDecodeError:
            raise _Malformed("type tags are not ASCII") from None
        _parse_args(data, text, q, end)

    def _command(self, route: _Route, values: tuple, kind: str, at: float | None) -> Item:
        """``kind``: "f" all numbers (as floats), "s" one string, "" none, else the raw type tags."""
        verb = route[0]
        if verb in ("control", "channel", "deform", "gain", "instrument", "pan", "status"):
            return self._play(route, values, kind, at)
        if verb == "scene":
            if kind != "s" or len(values) != 1:
                return _bad_args("/scene", kind, "one string", len(values))
            if not 1 <= len(values[0]) <= 64:
                return Rejection("bad_name", "/scene: a scene name is 1-64 characters")
            return SceneRequest(values[0])
        return self._sensing(route, values, kind, at)

    def _sensing(self, route: _Route, values: tuple, kind: str, at: float | None) -> Item:
        """The mapping addresses: sensor input, learning, calibration, preset addresses."""
        verb, voice, name = route
        n = len(values)
        if verb == "preset":
            if kind != "f" or n == 0:
                return _bad_args(str(name), kind, "numbers", n)
            if not all(math.isfinite(v) for v in values):
                return Rejection("nonfinite", f"{name}: values hold NaN or inf")
            got = self.presets.match(str(name), values, voice, at) if self.presets is not None else None
            if got is None:
                return Rejection("unknown_address", f"unknown address {str(name)[:80]!r}")
            if isinstance(got, str):
                return Rejection("wrong_count", got)
            return got
        if verb.startswith("input"):
            where = f"/input/{name}"
            if kind != "f" or n == 0:
                return _bad_args(where, kind, "numbers", n)
            if not all(math.isfinite(v) for v in values):
                return Rejection("nonfinite", f"{where}: values hold NaN or inf")
            return SensorInput(str(name), verb.partition(".")[2] or "raw", values, voice, at)
        if verb == "calibrate":
            if n and (kind != "f" or n % 2 or not all(math.isfinite(v) for v in values)):
                return Rejection("wrong_count", f"/calibrate/{name} takes nothing, or 2·N finite numbers (lo…, hi…)")
            return CalibrateRequest(str(name), values if n else (), voice)
        action = verb.partition(".")[2]
        tags = kind if kind not in ("f", "s") else kind * n
        numbers = [v for v, t in zip(values, tags) if t in "ifdhTF"]  # a number (0 = off) or a boolean T/F
        strings = [v for v, t in zip(values, tags) if t in "sS"]
        if len(numbers) > 1 or len(strings) > 1 or len(numbers) + len(strings) != n:
            return Rejection("wrong_type", f"/learn/{action} takes at most one number (or T/F) and one string")
        if numbers and not (isinstance(numbers[0], bool) or math.isfinite(numbers[0])):
            return Rejection("nonfinite", f"/learn/{action}: the on/off value is NaN or inf")
        on = bool(numbers[0]) if numbers else True
        text = strings[0] if strings else None
        if action == "train":
            model = text or "ridge"
            if model not in ("ridge", "mlp"):
                return Rejection("bad_name", f"/learn/train: model {model!r} is not ridge or mlp")
            return LearnRequest("train", True, None, model, voice)
        if text is not None and not _source_name(text):
            return Rejection("bad_name", f"/learn/{action}: {text[:64]!r} is not a source name")
        return LearnRequest(action, on, text, "ridge", voice)

    def _play(self, route: _Route, values: tuple, kind: str, at: float | None) -> Item:
        verb, voice, index = route
        n = len(values)
        try:
            # The hot verbs build the command directly when the values are plainly fine: a tuple of floats
            # whose sum is finite (so every one is) and whose minimum is ≥ 0 is exactly what `.of` accepts, and
            # route() already checked voice and index. Anything else goes through `.of`, which says why not.
            if verb == "control":
                if kind != "f":
                    return _bad_args("/control", kind, "numbers", n)
                total = sum(values)  # n ≥ 1 here: "" is not "f"
                if total - total == 0.0 and min(values) >= 0.0:
                    return Control(values, voice, at)
                return Control.of(values, voice, at)
            if verb == "channel":
                if kind != "f" or n != 1:
                    return _bad_args(f"/control/{index}", kind, "one number", n)
                v = values[0]
                if v - v == 0.0 and v >= 0.0:
                    return ControlChannel(index, v, voice, at)
                return ControlChannel.of(index, v, voice, at)
            if verb == "deform":
                if kind != "f":
                    return _bad_args("/deform", kind, "numbers", n)
                total = sum(values)
                if total - total == 0.0:
                    return Deform(values, voice, at)
                return Deform.of(values, voice, at)
            if verb == "gain":
                if kind != "f" or n != 1:
                    return _bad_args("/gain", kind, "one number", n)
                return Gain.of(values[0], voice)
            if verb == "instrument":
                if kind != "s" or n != 1:
                    return _bad_args("/instrument", kind, "one string", n)
                return SelectInstrument.of(values[0], voice)
            if verb == "pan":
                if kind != "f" or n != 1:
                    return _bad_args("/pan", kind, "one number", n)
                return Pan.of(values[0], voice)
            return STATUS
        except Rejected as r:
            return Rejection(r.kind, str(r))


def _bad_args(what: str, kind: str, wanted: str, n: int = 0) -> Rejection:
    """Refuse a message's arguments: ``wrong_count`` when there are none or their types fit but not their
    number, else ``wrong_type``."""
    types_fit = (kind == "f" and "number" in wanted) or (kind == "s" and "string" in wanted)
    if kind == "" or types_fit:
        return Rejection("wrong_count", f"{what} takes {wanted}, got {n} arguments")
    shown = "f" * n if kind == "f" else "s" * n if kind == "s" else kind
    return Rejection("wrong_type", f"{what} takes {wanted}, got type tags ',{shown[:32]}'")


# ----------------------------------------------------------------------------------------------- status reply


def _osc_string(s: str) -> bytes:
    b = s.replace("\0", "").encode("utf-8")
    return b + _ZEROS[4 - len(b) % 4]


def _flatten(mapping: dict, prefix: str, out: list) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, name + ".", out)
        else:
            out.append((name, value))


def _encode_value(value) -> tuple[str, bytes]:
    if isinstance(value, bool):
        return "i", _I32.pack(int(value))
    if isinstance(value, int):
        if -(1 << 31) <= value < (1 << 31):
            return "i", _I32.pack(value)
        if -(1 << 63) <= value < (1 << 63):
            return "h", _I64.pack(value)
        return "s", _osc_string(str(value))
    if isinstance(value, float):
        try:
            return "f", _F32.pack(value)
        except OverflowError:
            return "f", _F32.pack(math.copysign(math.inf, value))
    if isinstance(value, str):
        return "s", _osc_string(value)
    try:  # numpy scalars and the like
        if hasattr(value, "item"):
            return _encode_value(value.item())
    except Exception:
        pass
    return "s", _osc_string(str(value))


def encode_status(mapping: dict, address: str = PREFIX + "/status", max_bytes: int = MAX_STATUS_BYTES) -> bytes:
    """The status reply: one message of alternating key (``s``) and value pairs. Nested dicts become ``a.b``
    keys, bools 0/1 (``i``), ints ``i`` (``h`` beyond 32 bits), floats ``f``, anything else its ``str``. If the
    reply would exceed ``max_bytes``, trailing pairs are dropped and a final ``truncated`` pair counts them."""
    pairs: list = []
    _flatten(mapping, "", pairs)
    tags = [","]
    args: list[bytes] = []
    size = len(_osc_string(address)) + 16 + len(_osc_string("truncated")) + 4  # room for the truncated pair
    dropped = 0
    for key, value in pairs:
        if dropped:
            dropped += 1
            continue
        k = _osc_string(str(key))
        t, v = _encode_value(value)
        if size + len(k) + len(v) + 2 > max_bytes:
            dropped = 1
            continue
        size += len(k) + len(v) + 2
        tags.append("s" + t)
        args.append(k)
        args.append(v)
    if dropped:
        tags.append("si")
        args.append(_osc_string("truncated"))
        args.append(_I32.pack(dropped))
    return _osc_string(address) + _osc_string("".join(tags)) + b"".join(args)


# ----------------------------------------------------------------------------------------------- front-end


@dataclass(frozen=True)
class OscPolicy:
    """What OSC senders may do (from ``ServeConfig``: ``osc_controls_all_voices``, ``osc_messages_per_s``,
    ``osc_status_peers``)."""

    controls_all_voices: bool = False
    messages_per_s: float = 5000.0  # datagrams per second from one sender address
    burst: float = 10000.0
    status_peers: frozenset[str] = frozenset()  # canonical IPs that get the whole status reply
    local_uncapped: bool = True  # this machine's senders (loopback) skip the bucket and get the whole status

    @classmethod
    def from_config(cls, config) -> OscPolicy:
        peers = frozenset(c for c in (_canonical_ip(str(p)) for p in (config.osc_status_peers or [])) if c)
        return cls(config.osc_controls_all_voices, config.osc_messages_per_s, 2 * config.osc_messages_per_s, peers,
                   config.local_uncapped)



def _canonical_ip(host: str) -> str | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.compressed


class OscServer:
    """The OSC UDP endpoint: decodes datagrams and hands each command to ``sink(command, arrival_ns)``, where
    ``arrival_ns`` is ``time.monotonic_ns()`` when the datagram arrived. The sink runs on the event loop, so it
    must not block; it may raise ``Rejected(kind, message)``, which is counted like any refused input.
    ``/sensorsynth/status`` is answered to the sender with ``encode_status(status_provider())``."""

    def __init__(
        self,
        sink: Callable[[Command, int], None],
        status_provider: Callable[[], dict],
        rejections: Rejections,
        *,
        timetag_window_s: float = 1.0,
        allowed_senders: set[str] | None = None,
        clock: Callable[[], float] = time.time,
        presets: PresetTable | None = None,
        on_bundle_end: Callable[[int], None] | None = None,
        policy: OscPolicy | None = None,
        voice_owner: Callable[[int], str | None] | None = None,
        lane: ControlLane | None = None,
        use_recvmmsg: bool = True,
    ) -> None:
        self._sink = sink
        self.policy = policy or OscPolicy()
        self._voice_owner = voice_owner  # who holds voice n ("osc...", a client id, or None); None: no check
        self._senders: dict[str, list[float]] = {}  # address → [tokens, last monotonic ns]
        self._on_bundle_end = on_bundle_end
        self._status_provider = status_provider
        self._rejections = rejections
        self._clock = clock
        self.decoder = OscDecoder(timetag_window_s=timetag_window_s, presets=presets)
        if allowed_senders is None:
            self._allowed = None
        else:
            allowed = set()
            for host in allowed_senders:
                canon = _canonical_ip(str(host))
                if canon is None:
                    raise ValueError(f"allowed_senders must hold IP addresses, got {host!r}")
                allowed.add(canon)
            self._allowed = frozenset(allowed)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch: DatagramBatch | None = None
        self._use_recvmmsg = use_recvmmsg
        self._lane = lane
        self._keys = np.zeros(BATCH, np.int64)
        self._sender_keys = sender_keys  # bound to its compiled entry point at start()
        self._mask = np.zeros(BATCH, np.uint8)
        self._fast_messages = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("packets", "messages", "commands", "bytes", "status_replies", "status_bytes", "rejected", "fast"), 0
        )
        """Live counters since construction, updated in place (a reference stays current): packets, messages,
        commands (accepted by the sink), bytes, status_replies, rejected (by this server, every kind;
        ``rejections`` holds them by kind), fast (messages the compiled control lane took)."""
        self._tokens = STATUS_REPLIES_PER_S
        self._tokens_at = 0

    def _reject(self, kind: str, message: str) -> None:
        self.stats["rejected"] += 1
        self._rejections.count(SOURCE, kind, message)

    @property
    def address(self) -> tuple[str, int] | None:
        if self._sock is None:
            return None
        return self._sock.getsockname()[:2]

    async def start(self, host: str = "0.0.0.0", port: int = 9000) -> tuple[str, int]:
        """Bind the UDP socket (``port=0``: any free port) and return the bound ``(host, port)``."""
        if self._sock is not None:
            raise RuntimeError("OscServer already started")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            try:  # room for bursts while the loop is busy (the kernel caps it at net.core.rmem_max)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            except OSError:
                pass
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._batch = DatagramBatch(sock, use_recvmmsg=self._use_recvmmsg)
        self._sender_keys = bound(sender_keys, (self._batch.names, 0, self._keys, 0, 0, _BIG_ENDIAN))
        self._loop = loop
        loop.add_reader(sock.fileno(), self._drain)
        return self.address

    async def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()

    # The hot path -------------------------------------------------------------------------------------------

    def _drain(self) -> None:
        """The socket is readable: take batches until it is empty, or ``MAX_BATCHES_PER_WAKE`` batches (then the
        loop runs its other work and calls again)."""
        batch = self._batch
        for _ in range(MAX_BATCHES_PER_WAKE):
            try:
                n = batch.receive()
            except OSError as exc:  # e.g. ICMP port unreachable after a status reply
                log.debug("OSC socket error: %s", exc)
                return
            if n == 0:
                return
            try:
                self._take(batch, n)
            except Exception:
                if not self._rejections.counts[SOURCE + ":internal"]:
                    log.exception("OSC batch failed")
                self._reject("internal", "a batch of datagrams failed")
            if n < batch.size:
                return

    def _take(self, batch: DatagramBatch, n: int, arrival: int | None = None) -> None:
        """One received batch: the sender policy per sender, the compiled lane for plain control messages, the
        general decoder for the rest, in arrival order. ``arrival`` (monotonic ns) is now unless given: the
        rate limits (senders' buckets, status replies) refill by it, so a test that feeds two servers the same
        batches gives both the same arrival and gets the same verdicts."""
        arrival = time.monotonic_ns() if arrival is None else arrival
        stats = self.stats
        stats["packets"] += n
        lens = batch.lens
        stats["bytes"] += sum(int(lens[i]) for i in range(n)) if n < 8 else int(lens[:n].sum())
        allowed = self._allowed_mask(batch, n, arrival)
        lane = self._lane
        ready = lane is not None and lane.prepare(arrival)
        i = 0
        while i < n:
            if ready:
                i = lane.run(batch, allowed, i, n)
                if i >= n:
                    break
            if allowed[i]:
                self._handle(batch.datagram(i), batch.sender(i, int(self._keys[i])), arrival)
                if lane is not None:
                    ready = lane.prepare(arrival)  # the general path may have changed an instrument or an owner
            i += 1
        if lane is not None:
            taken, commands, full = lane.finish(arrival)
            if taken:
                self._fast_messages += taken
                stats["fast"] = self._fast_messages
                stats["commands"] += commands
                for _ in range(full):
                    self._reject("overload", "the audio engine's inbox is full; event dropped")
        stats["messages"] = self.decoder.messages + self._fast_messages

    def _allowed_mask(self, batch: DatagramBatch, n: int, arrival: int) -> np.ndarray:
        """1 for each datagram its sender may send now (allowed senders, token buckets), 0 for the refused,
        which are counted here. One policy decision per sender and batch."""
        mask = self._mask
        keys = self._keys
        others = self._sender_keys(batch.names, n, keys, _AF_INET, _AF_INET6, _BIG_ENDIAN)
        if others == 0 and self._allowed is None and self.policy.local_uncapped:
            mask[:n] = 1  # this machine's own senders only: nothing to check
            return mask
        mask[:n] = 0
        uniq, first, inverse = np.unique(keys[:n], return_index=True, return_inverse=True)
        for u in range(uniq.size):
            host, port = batch.sender(int(first[u]), int(uniq[u]))
            members = np.flatnonzero(inverse == u)
            if self._allowed is not None and host not in self._allowed and _canonical_ip(host) not in self._allowed:
                for _ in range(members.size):
                    self._reject("forbidden_sender", f"datagram from {host}, not in allowed_senders")
                continue
            granted = self._sender_allowed(host, arrival, members.size)
            mask[members[:granted]] = 1
            for _ in range(members.size - granted):
                self._reject("sender_rate", f"datagrams from {host} beyond {self.policy.messages_per_s:g}/s")
        return mask

    def _handle(self, data: bytes, addr, arrival: int) -> None:
        """One datagram the sender policy let through, by the general decoder."""
        stats = self.stats
        try:
            items = self.decoder.decode(data, self._clock())
        except Exception as e:  # a decoder bug must not take the server down
            if not self._rejections.counts[SOURCE + ":internal"]:  # one traceback, not a log storm
                log.exception("OSC decoder failed")
            self._reject("internal", f"decoder failed on a datagram from {addr[0]}: {e!r}")
            return
        sink = self._sink
        guard = None if self.policy.controls_all_voices else self._voice_owner
        replied = False
        for item in items:
            t = type(item)
            if t is Rejection:
                self._reject(item.kind, f"from {addr[0]}:{addr[1]}: {item.message}")
            elif t is StatusRequest:
                if not replied:  # one reply per datagram: a bundle of requests gets no more
                    self._reply_status(addr, arrival, len(data))
                    replied = True
            elif t is SceneRequest and not self._may_switch_scenes(addr[0]):
                self._reject("forbidden_sender", f"scene switch from {addr[0]}: only this machine or "
                             "osc_allowed_senders may switch scenes")
            elif guard is not None and (refused := self._voice_refused(guard, item)) is not None:
                self._reject("voice_taken", f"from {addr[0]}:{addr[1]}: {refused}")
            else:
                try:
                    sink(item, arrival)
                except Rejected as r:
                    self._reject(r.kind, f"from {addr[0]}:{addr[1]}: {r}")
                except Exception as e:
                    if not self._rejections.counts[SOURCE + ":sink_error"]:
                        log.exception("OSC sink failed")
                    self._reject("sink_error", f"{type(item).__name__} from {addr[0]}: {e!r}")
                else:
                    stats["commands"] += 1
        if self._on_bundle_end is not None and data[:1] == b"#":
            try:
                self._on_bundle_end(arrival)
            except Exception:
                log.exception("OSC bundle end")

    def _may_switch_scenes(self, host: str) -> bool:
        """Who may switch scenes: this machine, or, when ``allowed_senders`` is set, those senders (the only
        ones that get this far). Without that list any address can send (and forge) OSC: a scene switch, which
        changes the whole room, is then this machine's alone."""
        if self._allowed is not None:
            return True
        canon = _canonical_ip(host)
        return canon is not None and ipaddress.ip_address(canon).is_loopback

    def _sender_allowed(self, host: str, arrival_ns: int, count: int = 1) -> int:
        """How many of ``count`` datagrams one sender may send now (its token bucket: ``messages_per_s``
        datagrams per second, bursts of ``burst``). This machine's own senders (loopback, which no other machine
        can forge) are the operator's: not limited."""
        bucket = self._senders.get(host)
        pol = self.policy
        if bucket is None and pol.local_uncapped and host in _LOOPBACK_SENDERS:
            return count
        if bucket is None:
            if len(self._senders) >= MAX_SENDERS:
                self._senders.clear()
            bucket = self._senders[host] = [pol.burst, arrival_ns]
        else:
            bucket[0] = min(pol.burst, bucket[0] + (arrival_ns - bucket[1]) * 1e-9 * pol.messages_per_s)
            bucket[1] = arrival_ns
        granted = min(count, int(bucket[0]))
        bucket[0] -= granted
        return granted

    @staticmethod
    def _voice_refused(owner_of: Callable[[int], str | None], item) -> str | None:
        """Why OSC may not touch the voice ``item`` names (a WebSocket client holds it), or None."""
        voice = getattr(item, "voice", None)
        if voice is None:
            return None
        try:
            owner = owner_of(voice)
        except (IndexError, KeyError, TypeError):
            return None  # no such voice: the engine refuses it with bad_voice
        if owner is None or owner.startswith("osc"):
            return None
        return f"voice {voice} is played by a WebSocket client (osc_controls_all_voices is off)"

    def _status_budget(self, host: str, request_bytes: int) -> int:
        """How large the status reply to ``host`` may be: the whole (MAX_STATUS_BYTES) for this machine and
        ``status_peers``, else STATUS_REPLY_RATIO × the request (no amplification for forged senders)."""
        canon = _canonical_ip(host)
        local = self.policy.local_uncapped and canon is not None and ipaddress.ip_address(canon).is_loopback
        if local or canon in self.policy.status_peers:
            return MAX_STATUS_BYTES
        return min(MAX_STATUS_BYTES, STATUS_REPLY_RATIO * request_bytes)

    def _reply_status(self, addr, arrival_ns: int, request_bytes: int = 0) -> None:
        elapsed = (arrival_ns - self._tokens_at) / 1e9
        self._tokens_at = arrival_ns
        self._tokens = min(STATUS_REPLIES_PER_S, self._tokens + elapsed * STATUS_REPLIES_PER_S)
        if self._tokens < 1.0:
            self._reject("rate_limited", f"status request from {addr[0]}: over {STATUS_REPLIES_PER_S:g}/s")
            return
        self._tokens -= 1.0
        try:
            reply = encode_status(self._status_provider(), max_bytes=self._status_budget(addr[0], request_bytes))
        except Exception as e:
            if not self._rejections.counts[SOURCE + ":status_error"]:
                log.exception("OSC status provider failed")
            self._reject("status_error", f"status for {addr[0]}: {e!r}")
            return
        if self._sock is not None:
            try:
                self._sock.sendto(reply, addr)
            except OSError as exc:  # a full send buffer or an unreachable sender: the reply is lost, nothing else
                log.debug("OSC status reply to %s: %s", addr[0], exc)
                return
            self.stats["status_replies"] += 1
            self.stats["status_bytes"] += len(reply)
