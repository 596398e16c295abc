"""OSC input: the pure decoder (every address, voices, bundles and time tags, every rejection, a fuzz loop) and
the UDP front-end on 127.0.0.1 (python-osc's client, liblo's oscsend, a TouchDesigner-style sender, status
replies, garbage followed by good messages, sender filtering)."""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import socket
import struct
import time

import pytest
import pytest_asyncio
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from sensorsynth.protocol.commands import Control, ControlChannel, Deform, Gain, Pan, Rejected, SelectInstrument
from sensorsynth.server.osc import (
    _canonical_ip,
    MAX_BUNDLE_DEPTH,
    MAX_PACKET,
    MAX_VALUES,
    STATUS,
    STATUS_REPLIES_PER_S,
    OscDecoder,
    OscServer,
    Rejection,
    StatusRequest,
    encode_status,
    ntp_to_unix,
    parse_address,
    unix_to_ntp,
)
from sensorsynth.server.rejections import Rejections

NOW = 1_750_000_000.25  # a fixed "current time" for the pure decoder

# ------------------------------------------------------------------------------------------------- builders


def ostr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return b + b"\0" * (4 - len(b) % 4)


def raw(address: str | bytes, tags: str | bytes | None = None, *args: bytes) -> bytes:
    """A message from parts: address, type tags (without the comma; None = no type tag string), encoded args."""
    out = ostr(address)
    if tags is not None:
        out += ostr(b"," + (tags.encode() if isinstance(tags, str) else tags))
    return out + b"".join(args)


def f32(*vs: float) -> bytes:
    return struct.pack(f">{len(vs)}f", *vs)


def msg(address: str, *args, types: str | None = None) -> bytes:
    b = OscMessageBuilder(address)
    for i, a in enumerate(args):
        b.add_arg(a, types[i] if types else None)
    return b.build().dgram


def bundle(tag: int, *elements: bytes) -> bytes:
    """A bundle with a raw 64-bit time tag (1 = immediately)."""
    return b"#bundle\0" + struct.pack(">Q", tag) + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def at_time(t: float) -> int:
    return unix_to_ntp(t)


def decode(data: bytes, now: float = NOW, **kw) -> list:
    return OscDecoder(**kw).decode(data, now)


def kinds(items) -> list[str]:
    return [i.kind if isinstance(i, Rejection) else type(i).__name__ for i in items]


# ------------------------------------------------------------------------------------------------- addresses

F16 = tuple(0.25 * (i % 5) for i in range(16))  # exact in float32


@pytest.mark.parametrize(
    "packet, expected",
    [
        (msg("/sensorsynth/control", *F16, types="f" * 16), Control(F16)),
        (msg("/sensorsynth/control", 1, 0.5, 2, types="ifi"), Control((1.0, 0.5, 2.0))),
        (msg("/sensorsynth/control", 0.5, 3, 0.25, types="dhf"), Control((0.5, 3.0, 0.25))),
        (msg("/sensorsynth/control", -0.0, types="f"), Control((0.0,))),
        (msg("/sensorsynth/control/7", 0.75, types="f"), ControlChannel(7, 0.75)),
        (msg("/sensorsynth/control/0", 2, types="i"), ControlChannel(0, 2.0)),
        (msg("/sensorsynth/deform", -1.5, 2.0, types="ff"), Deform((-1.5, 2.0))),
        (msg("/sensorsynth/deform", -3, types="i"), Deform((-3.0,))),
        (msg("/sensorsynth/gain", 0.5, types="f"), Gain(0.5)),
        (msg("/sensorsynth/gain", 2, types="i"), Gain(2.0)),
        (msg("/sensorsynth/instrument", "guitar"), SelectInstrument("guitar")),
        (raw("/sensorsynth/instrument", "S", ostr("bells")), SelectInstrument("bells")),
        (msg("/sensorsynth/instrument", "élan"), SelectInstrument("élan")),
        (msg("/sensorsynth/status"), STATUS),
        (raw("/sensorsynth/status"), STATUS),  # no type tag string at all (old senders)
        (msg("/sensorsynth/status", 1, types="i"), STATUS),  # a TouchDesigner pulse: the argument is ignored
        (msg("/sensorsynth/voice/2/control", 0.5, 0.0, types="ff"), Control((0.5, 0.0), voice=2)),
        (msg("/sensorsynth/voice/2/control/5", 1.0, types="f"), ControlChannel(5, 1.0, voice=2)),
        (msg("/sensorsynth/voice/0/deform", 1.0, types="f"), Deform((1.0,), voice=0)),
        (msg("/sensorsynth/voice/3/gain", 1.0, types="f"), Gain(1.0, voice=3)),
        (msg("/sensorsynth/voice/11/instrument", "guitar"), SelectInstrument("guitar", voice=11)),
        (msg("/sensorsynth/pan", 0.25, types="f"), Pan(0.25)),
        (msg("/sensorsynth/voice/5/pan", 1, types="i"), Pan(1.0, voice=5)),
    ],
)
def test_every_address(packet, expected):
    assert decode(packet) == [expected]


def test_values_are_float32_as_sent_and_fast_path_equals_general_parser_and_commands_of():
    rng = random.Random(5)
    dec = OscDecoder()
    for n in (1, 2, 3, 16, 64, MAX_VALUES):
        values = [rng.choice([0.0, rng.uniform(0, 10), rng.uniform(0, 1e30)]) for _ in range(n)]
        fast = dec.decode(msg("/sensorsynth/control", *values, types="f" * n), NOW)
        want = Control.of(struct.unpack(f">{n}f", struct.pack(f">{n}f", *values)))
        assert fast == [want]
        general = dec.decode(msg("/sensorsynth/control", *want.values, types="d" * n), NOW)
        assert general == [want]
        assert all(type(v) is float for v in general[0].values)
    too_many = MAX_VALUES + 1
    assert kinds(dec.decode(msg("/sensorsynth/control", *[0.0] * too_many, types="f" * too_many), NOW)) == ["wrong_count"]


def test_doubles_beyond_float32_are_kept_and_huge_sums_do_not_fool_the_fast_check():
    # each finite, but their sum overflows to inf: the inlined check must fall back to Control.of, which accepts
    big = (1.5e308, 1.5e308)
    assert decode(msg("/sensorsynth/control", *big, types="dd")) == [Control(big)]
    assert decode(msg("/sensorsynth/deform", 1.5e308, 1.5e308, types="dd")) == [Deform(big)]


@pytest.mark.parametrize(
    "address, expected",
    [
        (b"/sensorsynth/control", ("control", None, None)),
        (b"/sensorsynth/control/12", ("channel", None, 12)),
        (b"/sensorsynth/voice/4/control/3", ("channel", 4, 3)),
        (b"/sensorsynth/voice/4/gain", ("gain", 4, None)),
        (b"/sensorsynth/status", ("status", None, None)),
        (b"/sensorsynth/voice/1/status", "unknown_address"),
        (b"/sensorsynth/control/x", "unknown_address"),
        (b"/sensorsynth/control/-1", "unknown_address"),
        (b"/sensorsynth/control/\xd9\xa3", "unknown_address"),  # Arabic-Indic digit: not ASCII
        (b"/sensorsynth/control/", "unknown_address"),
        (b"/sensorsynth/control/1/2", "unknown_address"),
        (b"/sensorsynth/voice/x/control", "unknown_address"),
        (b"/sensorsynth/voice/2", "unknown_address"),
        (b"/sensorsynth/*", "unknown_address"),
        (b"/sensorsynth", "unknown_address"),
        (b"/other/control", "unknown_address"),
        (b"/sensorsynth/control/1234567", "bad_index"),
        (b"/sensorsynth/voice/1234567/control", "bad_voice"),
    ],
)
def test_parse_address(address, expected):
    got = parse_address(address)
    assert (got.kind if isinstance(got, Rejection) else got) == expected


# ------------------------------------------------------------------------------------------------- bundles


def test_bundle_time_tags_within_window_are_kept_outside_or_immediate_mean_now():
    m = msg("/sensorsynth/control", 1.0, types="f")
    for offset in (-0.5, 0.0, 0.999, -0.999):
        (c,) = decode(bundle(at_time(NOW + offset), m))
        assert c.at == pytest.approx(NOW + offset, abs=1e-6)
        assert c.values == (1.0,)
    for offset in (-1.01, 1.01, -3600.0, 86400.0):
        (c,) = decode(bundle(at_time(NOW + offset), m))
        assert c.at is None
    assert decode(bundle(1, m))[0].at is None
    assert decode(bundle(0, m))[0].at is None  # the NTP epoch, far outside the window
    # a narrower window
    assert decode(bundle(at_time(NOW - 0.5), m), timetag_window_s=0.1)[0].at is None
    assert decode(bundle(at_time(NOW - 0.05), m), timetag_window_s=0.1)[0].at == pytest.approx(NOW - 0.05, abs=1e-6)
    with pytest.raises(ValueError):
        OscDecoder(timetag_window_s=float("nan"))


def test_bundle_carries_at_to_control_channel_and_deform_not_to_gain_or_instrument():
    t = NOW - 0.2
    items = decode(
        bundle(
            at_time(t),
            msg("/sensorsynth/control/3", 0.5, types="f"),
            msg("/sensorsynth/deform", 0.5, types="f"),
            msg("/sensorsynth/gain", 0.5, types="f"),
            msg("/sensorsynth/instrument", "guitar"),
            msg("/sensorsynth/status"),
        )
    )
    assert [type(i) for i in items] == [ControlChannel, Deform, Gain, SelectInstrument, StatusRequest]
    assert items[0].at == pytest.approx(t, abs=1e-6) and items[1].at == pytest.approx(t, abs=1e-6)


def test_touchdesigner_style_bundle_one_channel_per_message():
    t = NOW - 0.05
    b = OscBundleBuilder(t)
    for i, v in enumerate(F16):
        m = OscMessageBuilder(f"/sensorsynth/control/{i}")
        m.add_arg(v, "f")
        b.add_content(m.build())
    items = decode(b.build().dgram)
    assert items == [ControlChannel(i, v, at=items[0].at) for i, v in enumerate(F16)]
    assert items[0].at == pytest.approx(t, abs=1e-6)


def test_nested_bundles_use_their_own_tags_and_depth_is_bounded():
    m = msg("/sensorsynth/control", 1.0, types="f")
    inner = bundle(at_time(NOW - 0.3), m)
    items = decode(bundle(1, m, inner, m))
    assert [i.at for i in items] == [None, pytest.approx(NOW - 0.3, abs=1e-6), None]

    def nest(depth: int, innermost: bytes | None = None) -> bytes:
        b = innermost or bundle(1, m)
        for _ in range(depth - 1):
            b = bundle(1, b)
        return b

    assert kinds(decode(nest(MAX_BUNDLE_DEPTH))) == ["Control"]
    assert kinds(decode(nest(MAX_BUNDLE_DEPTH + 1))) == ["too_deep"]
    # a too-deep branch is dropped, its siblings are kept
    assert kinds(decode(bundle(1, m, nest(MAX_BUNDLE_DEPTH), m))) == ["Control", "too_deep", "Control"]
    # a too-deep branch that is also broken makes the datagram malformed
    broken = nest(MAX_BUNDLE_DEPTH + 1, b"#bundle\0" + struct.pack(">Qi", 1, 1 << 20) + m)
    assert kinds(decode(broken)) == ["malformed"]
    assert decode(bundle(1)) == []  # an empty bundle is legal and yields nothing


def test_ntp_conversion():
    for t in (0.0, NOW, 2085978495.5, 2085978496.5):  # 2085978496 = NTP era 1 (2036-02-07)
        assert ntp_to_unix(unix_to_ntp(t), now=t) == pytest.approx(t, abs=1e-6)
    assert ntp_to_unix(1 << 32, now=NOW) == 1 - 2208988800 + (1 << 32)  # era 1 near now, not 1900


# ------------------------------------------------------------------------------------------------- rejections

GOOD = msg("/sensorsynth/control", 0.5, 0.25, types="ff")

MALFORMED = {
    "empty": b"",
    "not a multiple of 4": GOOD + b"\0",
    "too large": b"/" + b"\0" * (65536 + 3),
    "neither message nor bundle": b"abcd" + GOOD[4:],
    "truncated args": GOOD[:-4],
    "truncated address": b"/sensorsynth",
    "address not terminated": b"/sen",
    "bad address padding": raw("/sensorsynth/gain", "f", f32(1.0)).replace(b"gain\0\0\0", b"gain\0\x01\0"),
    "bad type tag padding": raw("/sensorsynth/control") + b",f\0\x01" + f32(1.0),
    "missing type tags": raw("/sensorsynth/control") + f32(1.0),
    "missing type tags, unknown address": raw("/nope") + f32(1.0),
    "unknown type tag": raw("/sensorsynth/control", "x", f32(1.0)),
    "unknown type tag, unknown address": raw("/nope", "x", f32(1.0)),
    "non-ASCII type tag": raw("/sensorsynth/control", b"\xe9", f32(1.0)),
    "trailing bytes": GOOD + b"\0\0\0\0",
    "huge blob size": raw("/sensorsynth/gain", "b", struct.pack(">i", 1 << 30), b"abcd"),
    "negative blob size": raw("/sensorsynth/gain", "b", struct.pack(">i", -4), b"abcd"),
    "bad blob padding": raw("/sensorsynth/gain", "b", struct.pack(">i", 1), b"a\0\0\x01"),
    "string runs past the end": raw("/sensorsynth/instrument", "s", b"abcd"),
    "string not UTF-8": raw("/sensorsynth/instrument", "s", ostr(b"\xff\xfe")),
    "unbalanced ]": raw("/sensorsynth/control", "]"),
    "unbalanced [": raw("/sensorsynth/control", "[f", f32(1.0)),
    "bundle header only": b"#bundle\0",
    "bundle element size huge": b"#bundle\0" + struct.pack(">Qi", 1, 1 << 30) + GOOD,
    "bundle element size negative": b"#bundle\0" + struct.pack(">Qi", 1, -8) + GOOD,
    "bundle element size zero": b"#bundle\0" + struct.pack(">Qi", 1, 0) + GOOD,
    "bundle element size not a multiple of 4": b"#bundle\0" + struct.pack(">Qi", 1, len(GOOD) - 2) + GOOD,
    "bundle element neither": bundle(1, b"abcd"),
    "bundle truncated element": bundle(1, GOOD)[:-4],
    "bundle trailing zero word": bundle(1, GOOD) + b"\0\0\0\0",
    "good then broken in one bundle": bundle(1, GOOD, GOOD[:-4]),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_datagrams_are_one_rejection(name):
    assert kinds(decode(MALFORMED[name])) == ["malformed"]


@pytest.mark.parametrize(
    "packet, kind",
    [
        (msg("/sensorsynth/control", "0.5"), "wrong_type"),
        (msg("/sensorsynth/control", 0.5, "x", types="fs"), "wrong_type"),
        (msg("/sensorsynth/control", b"\x01\x02"), "wrong_type"),
        (msg("/sensorsynth/control", True), "wrong_type"),
        (msg("/sensorsynth/control", [0.5, 0.5]), "wrong_type"),
        (msg("/sensorsynth/control/2", "1"), "wrong_type"),
        (msg("/sensorsynth/gain", b"xx"), "wrong_type"),
        (msg("/sensorsynth/deform", None), "wrong_type"),
        (msg("/sensorsynth/instrument", 1.0, types="f"), "wrong_type"),
        (raw("/sensorsynth/gain", "m", b"\0\x90\x40\x7f"), "wrong_type"),
        (msg("/sensorsynth/control"), "wrong_count"),
        (raw("/sensorsynth/control"), "wrong_count"),
        (msg("/sensorsynth/control/2", 0.5, 0.5, types="ff"), "wrong_count"),
        (msg("/sensorsynth/control/2"), "wrong_count"),
        (msg("/sensorsynth/deform"), "wrong_count"),
        (msg("/sensorsynth/gain", 1.0, 2.0, types="ff"), "wrong_count"),
        (msg("/sensorsynth/gain"), "wrong_count"),
        (msg("/sensorsynth/instrument"), "wrong_count"),
        (msg("/sensorsynth/instrument", "a", "b"), "wrong_count"),
        (msg("/sensorsynth/control", 0.5, math.nan, types="ff"), "nonfinite"),
        (msg("/sensorsynth/control", math.inf, types="f"), "nonfinite"),
        (msg("/sensorsynth/control", -math.inf, types="d"), "nonfinite"),
        (msg("/sensorsynth/control", math.inf, -math.inf, types="ff"), "nonfinite"),
        (msg("/sensorsynth/control/1", math.nan, types="f"), "nonfinite"),
        (msg("/sensorsynth/deform", math.nan, types="f"), "nonfinite"),
        (msg("/sensorsynth/gain", math.inf, types="f"), "nonfinite"),
        (msg("/sensorsynth/control", 0.5, -0.25, types="ff"), "negative"),
        (msg("/sensorsynth/control", -1, types="i"), "negative"),
        (msg("/sensorsynth/control/1", -1.0, types="f"), "negative"),
        (msg("/sensorsynth/gain", 17.0, types="f"), "out_of_range"),
        (msg("/sensorsynth/gain", -1.0, types="f"), "out_of_range"),
        (msg("/sensorsynth/pan", 1.5, types="f"), "out_of_range"),
        (msg("/sensorsynth/voice/2/pan", -0.1, types="f"), "out_of_range"),
        (msg("/sensorsynth/pan", math.nan, types="f"), "nonfinite"),
        (msg("/sensorsynth/pan", "left"), "wrong_type"),
        (msg("/sensorsynth/pan", 0.1, 0.2, types="ff"), "wrong_count"),
        (msg("/sensorsynth/pan"), "wrong_count"),
        (msg("/sensorsynth/instrument", ""), "bad_name"),
        (msg("/sensorsynth/instrument", "x" * 200), "bad_name"),
        (msg("/sensorsynth/control/1234567", 1.0, types="f"), "bad_index"),
        (msg("/sensorsynth/voice/1234567/control", 1.0, types="f"), "bad_voice"),
        (msg("/sensorsynth/nope", 1.0, types="f"), "unknown_address"),
        (msg("/foo"), "unknown_address"),
        (msg("/sensorsynth/*", 1.0, types="f"), "unknown_address"),
        (raw(b"/sensorsynth/\xff\xfe", "f", f32(1.0)), "unknown_address"),
    ],
)
def test_refused_messages(packet, kind):
    items = decode(packet)
    assert kinds(items) == [kind]
    assert items[0].message  # says what was wrong


def test_a_refused_message_in_a_bundle_keeps_its_siblings():
    items = decode(bundle(1, GOOD, msg("/sensorsynth/control", math.nan, types="f"), msg("/x"), GOOD))
    assert kinds(items) == ["Control", "nonfinite", "unknown_address", "Control"]


def test_decoder_counts_messages_and_caches_only_valid_routes():
    dec = OscDecoder()
    dec.decode(bundle(1, GOOD, GOOD, msg("/x")), NOW)
    dec.decode(GOOD, NOW)
    dec.decode(b"junk", NOW)
    assert dec.messages == 4
    for i in range(5000):
        dec.decode(msg(f"/nope/{i}"), NOW)
        dec.decode(msg(f"/sensorsynth/voice/{i}/gain", 1.0, types="f"), NOW)
    assert len(dec._routes) <= 4096
    assert dec.decode(msg("/sensorsynth/voice/4999/gain", 1.0, types="f"), NOW) == [Gain(1.0, voice=4999)]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(7)
    if op == 0 and b:  # flip bits
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncate (often to a multiple of 4, past the cheap length check)
        n = rng.randrange(len(b) + 1)
        b = b[: n - n % 4 if rng.random() < 0.7 else n]
    elif op == 2:  # insert 4 random bytes
        i = rng.randrange(len(b) + 1) & ~3
        b[i:i] = bytes(rng.randrange(256) for _ in range(4))
    elif op == 3 and len(b) >= 4:  # overwrite an aligned word with an extreme int
        i = rng.randrange(len(b) // 4) * 4
        b[i : i + 4] = struct.pack(">i", rng.choice([0, 1, -1, 3, 1 << 30, -(1 << 31), (1 << 31) - 1, len(b)]))
    elif op == 4:  # random type tag bytes
        i = data.find(b",")
        if i >= 0:
            for j in range(i + 1, min(len(b), i + 1 + rng.randint(1, 6))):
                b[j] = rng.choice(b"ifdhsSbtcrmTFNI[]xz\0\xff")
    elif op == 5:  # all random
        b = bytearray(rng.randbytes(rng.randrange(0, 80) & ~3))
    else:  # repeat a chunk
        i, j = sorted(rng.randrange(len(b) + 1) for _ in range(2))
        b[j:j] = b[i:j]
    return bytes(b)


def test_fuzz_no_exception_and_every_packet_yields_commands_or_counted_rejections():
    rng = random.Random(20240601)
    seeds = [
        GOOD,
        msg("/sensorsynth/control", *F16, types="f" * 16),
        msg("/sensorsynth/control/3", 0.5, types="f"),
        msg("/sensorsynth/voice/1/deform", -1.0, 2.0, 3, types="fdi"),
        msg("/sensorsynth/instrument", "guitar"),
        msg("/sensorsynth/gain", b"blob!"),
        msg("/sensorsynth/status"),
        bundle(at_time(NOW - 0.1), GOOD, msg("/sensorsynth/control/1", 1.0, types="f")),
        bundle(1, bundle(at_time(NOW + 0.5), GOOD, bundle(1, GOOD)), msg("/sensorsynth/gain", 1.0, types="f")),
    ]
    allowed = (Control, ControlChannel, Deform, Gain, SelectInstrument, StatusRequest, Rejection)
    dec = OscDecoder()
    outcomes = {"commands": 0, "rejected": 0, "empty": 0}
    for i in range(4000):
        packet = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            packet = _mutate(rng, packet)
        if i % 10 == 0:  # mutated packets wrapped into a bundle, so bundle framing sees garbage elements
            tag = rng.choice([1, at_time(NOW), rng.getrandbits(64)])
            packet = bundle(tag, packet if len(packet) % 4 == 0 else GOOD)
        before = dec.messages
        items = dec.decode(packet, NOW)
        assert isinstance(items, list)
        assert all(isinstance(it, allowed) for it in items), items
        for it in items:
            if isinstance(it, Rejection):
                assert isinstance(it.kind, str) and it.kind and isinstance(it.message, str)
            elif hasattr(it, "at") and it.at is not None:
                assert abs(it.at - NOW) <= 1.0
        if not items:  # only a well-framed bundle without messages yields nothing
            assert packet.startswith(b"#bundle\0") and dec.messages == before
            outcomes["empty"] += 1
        elif any(isinstance(it, Rejection) for it in items):
            outcomes["rejected"] += 1
        else:
            outcomes["commands"] += 1
    assert outcomes["commands"] > 100 and outcomes["rejected"] > 1000, outcomes


# ------------------------------------------------------------------------------------------------- status reply


def test_encode_status_flattens_and_python_osc_parses_it():
    reply = encode_status(
        {
            "version": "0.1.0",
            "voices": 8,
            "running": True,
            "muted": False,
            "load": 0.25,
            "frames": 1 << 40,
            "engine": {"sample_rate": 22050, "late": {"events": 3}},
            "rejections": {"osc:nonfinite": 2},
            "nothing": None,
        }
    )
    m = OscMessage(reply)
    assert m.address == "/sensorsynth/status"
    p = m.params
    assert dict(zip(p[::2], p[1::2])) == {
        "version": "0.1.0",
        "voices": 8,
        "running": 1,
        "muted": 0,
        "load": 0.25,
        "frames": 1 << 40,
        "engine.sample_rate": 22050,
        "engine.late.events": 3,
        "rejections.osc:nonfinite": 2,
        "nothing": "None",
    }
    assert p[::2] == [
        "version", "voices", "running", "muted", "load", "frames", "engine.sample_rate", "engine.late.events",
        "rejections.osc:nonfinite", "nothing",
    ]  # fmt: skip
    assert reply[reply.index(b",") :].startswith(b",sssisisisfsh")


def test_encode_status_truncates_to_max_bytes():
    reply = encode_status({f"key{i:04d}": i for i in range(1000)}, max_bytes=1024)
    assert len(reply) <= 1024
    p = OscMessage(reply).params
    pairs = dict(zip(p[::2], p[1::2]))
    assert pairs["truncated"] == 1000 - (len(pairs) - 1)
    assert pairs["key0000"] == 0 and pairs["truncated"] > 900


def test_status_reply_decodes_as_a_status_request_for_the_decoder():
    # our own reply, looped back, is just a status request (its arguments are ignored)
    assert decode(encode_status({"a": 1})) == [STATUS]


# ------------------------------------------------------------------------------------------------- the UDP server


class Recorder:
    def __init__(self, reject_when=None) -> None:
        self.commands: list = []
        self.arrivals: list[int] = []
        self.reject_when = reject_when

    def __call__(self, command, arrival_ns: int) -> None:
        if self.reject_when is not None:
            self.reject_when(command)
        self.commands.append(command)
        self.arrivals.append(arrival_ns)


async def until(pred, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.005)


STATUS_DICT = {"version": "0.1.0", "voices": 8, "engine": {"running": True, "load": 0.5}}


@pytest_asyncio.fixture
async def served():
    rec, rej = Recorder(), Rejections()
    server = OscServer(rec, lambda: STATUS_DICT, rej)
    host, port = await server.start("127.0.0.1", 0)
    assert host == "127.0.0.1" and port > 0
    yield server, rec, rej, port
    await server.stop()


def send(port: int, *packets: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in packets:
            s.sendto(p, ("127.0.0.1", port))


@pytest.mark.asyncio
async def test_python_osc_client_controls_reach_the_sink(served):
    server, rec, rej, port = served
    stats = server.stats  # a reference taken before: it stays current (the status page holds one)
    client = SimpleUDPClient("127.0.0.1", port)
    t0 = time.monotonic_ns()
    client.send_message("/sensorsynth/control", [0.5, 0.0, 0.25, 1.0])
    client.send_message("/sensorsynth/voice/1/control/3", 0.75)
    client.send_message("/sensorsynth/gain", 0.5)
    client.send_message("/sensorsynth/instrument", "guitar")
    await until(lambda: len(rec.commands) == 4)
    assert rec.commands == [
        Control((0.5, 0.0, 0.25, 1.0)),
        ControlChannel(3, 0.75, voice=1),
        Gain(0.5),
        SelectInstrument("guitar"),
    ]
    assert all(t0 <= a <= time.monotonic_ns() for a in rec.arrivals)
    assert rec.arrivals == sorted(rec.arrivals)
    assert stats is server.stats
    assert stats == {"packets": 4, "messages": 4, "commands": 4, "bytes": stats["bytes"], "status_replies": 0, "status_bytes": 0, "rejected": 0, "fast": 0}
    assert stats["bytes"] > 4 * 20
    assert rej.total() == 0


@pytest.mark.asyncio
async def test_touchdesigner_style_sender_bundle_with_past_time_tag(served):
    server, rec, rej, port = served
    values = [0.0, 0.5, 1.0, 0.25] * 4
    for stamp in (time.time() - 0.3, time.time() - 30.0):  # slightly behind: kept; far behind: now
        b = OscBundleBuilder(stamp)
        for i, v in enumerate(values):
            m = OscMessageBuilder(f"/sensorsynth/control/{i}")
            m.add_arg(v, "f")
            b.add_content(m.build())
        send(port, b.build().dgram)
    await until(lambda: len(rec.commands) == 32)
    first, second = rec.commands[:16], rec.commands[16:]
    assert [(c.index, c.value) for c in first] == list(enumerate(values))
    assert [(c.index, c.value) for c in second] == list(enumerate(values))
    assert all(c.at == pytest.approx(first[0].at) for c in first)
    assert time.time() - 0.5 < first[0].at < time.time() - 0.2
    assert all(c.at is None for c in second)
    assert server.stats["packets"] == 2 and server.stats["messages"] == 32


@pytest.mark.asyncio
@pytest.mark.skipif(shutil.which("oscsend") is None, reason="liblo-tools (oscsend) is not installed")
async def test_liblo_oscsend_as_an_independent_client(served):
    server, rec, rej, port = served
    for args in (["/sensorsynth/control", "fff", "0.1", "0.2", "0.3"], ["/sensorsynth/voice/2/control/4", "i", "3"]):
        proc = await asyncio.create_subprocess_exec("oscsend", "127.0.0.1", str(port), *args)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
        await until(lambda: len(rec.commands) >= 1 + (args[1] == "i"))
    c, ch = rec.commands
    assert c == Control(tuple(struct.unpack(">3f", struct.pack(">3f", 0.1, 0.2, 0.3))))
    assert ch == ControlChannel(4, 3.0, voice=2)


@pytest.mark.asyncio
async def test_status_request_is_answered_to_the_sender(served):
    server, rec, rej, port = served
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3.0)
        s.sendto(msg("/sensorsynth/status"), ("127.0.0.1", port))
        data, addr = await asyncio.to_thread(s.recvfrom, 65536)
    assert addr == ("127.0.0.1", port)
    m = OscMessage(data)
    assert m.address == "/sensorsynth/status"
    p = m.params
    assert dict(zip(p[::2], p[1::2])) == {"version": "0.1.0", "voices": 8, "engine.running": 1, "engine.load": 0.5}
    assert rec.commands == [] and server.stats["status_replies"] == 1


@pytest.mark.asyncio
async def test_status_requests_are_rate_limited_and_provider_failures_counted():
    rej = Rejections()
    calls = []

    def provider():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("engine gone")
        return {"ok": True}

    server = OscServer(Recorder(), provider, rej)
    _, port = await server.start("127.0.0.1", 0)
    try:
        n = int(STATUS_REPLIES_PER_S) + 15
        send(port, *[msg("/sensorsynth/status")] * n)
        await until(lambda: server.stats["messages"] == n)
        limited = rej.counts["osc:rate_limited"]
        assert 1 <= limited <= 15
        assert len(calls) == n - limited
        assert rej.counts["osc:status_error"] == 1
        assert server.stats["status_replies"] == n - limited - 1
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_garbage_datagrams_do_not_affect_the_next_good_one(served):
    server, rec, rej, port = served
    garbage = [MALFORMED[k] for k in MALFORMED if 0 < len(MALFORMED[k]) < 60000]
    garbage += [msg("/sensorsynth/control", math.nan, types="f"), msg("/nope"), msg("/sensorsynth/control", "x")]
    rng = random.Random(3)
    garbage += [rng.randbytes(rng.randrange(1, 200)) for _ in range(50)]
    send(port, *garbage, GOOD)
    await until(lambda: len(rec.commands) == 1)
    assert rec.commands == [Control((0.5, 0.25))]
    assert server.stats["packets"] == len(garbage) + 1
    assert rej.counts["osc:malformed"] >= len(MALFORMED) - 2  # the two oversize/empty ones are not sent
    assert rej.counts["osc:nonfinite"] == 1 and rej.counts["osc:unknown_address"] == 1
    assert rej.counts["osc:wrong_type"] == 1
    assert rej.total() == server.stats["rejected"] == len(garbage)


@pytest.mark.asyncio
async def test_sink_rejections_are_counted_and_sink_errors_do_not_stop_the_server():
    def judge(command):
        if isinstance(command, Control) and len(command.values) != 4:
            raise Rejected("wrong_count", f"this instrument has 4 control dimensions, got {len(command.values)}")
        if isinstance(command, Gain):
            raise RuntimeError("bug in the sink")

    rec, rej = Recorder(reject_when=judge), Rejections()
    server = OscServer(rec, dict, rej)
    _, port = await server.start("127.0.0.1", 0)
    try:
        send(
            port,
            msg("/sensorsynth/control", 0.5, 0.5, 0.5, types="fff"),
            msg("/sensorsynth/gain", 1.0, types="f"),
            msg("/sensorsynth/control", 0.5, 0.5, 0.5, 0.5, types="ffff"),
        )
        await until(lambda: len(rec.commands) == 1)
        assert rec.commands == [Control((0.5,) * 4)]
        assert rej.as_dict() == {"osc:sink_error": 1, "osc:wrong_count": 1}
        assert server.stats["commands"] == 1
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_allowed_senders():
    rec, rej = Recorder(), Rejections()
    closed = OscServer(rec, dict, rej, allowed_senders={"10.1.2.3"})
    open_ = OscServer(rec, dict, rej, allowed_senders={"127.0.0.1", "::1"})
    _, p1 = await closed.start("127.0.0.1", 0)
    _, p2 = await open_.start("127.0.0.1", 0)
    try:
        send(p1, GOOD, msg("/sensorsynth/status"))
        send(p2, GOOD)
        await until(lambda: len(rec.commands) == 1 and rej.total() == 2)
        assert rej.as_dict() == {"osc:forbidden_sender": 2}
        assert closed.stats["packets"] == 2 and closed.stats["messages"] == 0 and closed.stats["rejected"] == 2
        assert open_.stats["commands"] == 1 and open_.stats["rejected"] == 0
    finally:
        await closed.stop()
        await open_.stop()
    with pytest.raises(ValueError, match="IP addresses"):
        OscServer(rec, dict, rej, allowed_senders={"localhost"})


@pytest.mark.parametrize(
    "host, canonical",
    [("127.0.0.1", "127.0.0.1"), ("::ffff:127.0.0.1", "127.0.0.1"), ("fe80::1%eth0", "fe80::1"),
     ("0:0::1", "::1"), ("example.org", None)],
)  # fmt: skip
def test_sender_addresses_are_compared_canonically(host, canonical):
    assert _canonical_ip(host) == canonical


@pytest.mark.asyncio
async def test_start_stop_and_restart():
    rec, rej = Recorder(), Rejections()
    server = OscServer(rec, dict, rej, clock=lambda: NOW)
    _, port = await server.start("127.0.0.1", 0)
    with pytest.raises(RuntimeError):
        await server.start("127.0.0.1", 0)
    # datagrams up to the largest UDP payload arrive whole into the preallocated batch buffers
    assert server._batch.data.shape[1] >= MAX_PACKET
    # the injected clock judges time tags
    send(port, bundle(at_time(NOW - 0.5), GOOD))
    await until(lambda: len(rec.commands) == 1)
    assert rec.commands[0].at == pytest.approx(NOW - 0.5, abs=1e-6)
    await server.stop()
    await server.stop()  # idempotent
    assert server.address is None
    _, port2 = await server.start("127.0.0.1", port)  # the port is free again
    assert port2 == port
    send(port, GOOD)
    await until(lambda: len(rec.commands) == 2)
    await server.stop()


# ----------------------------------------------------------------------------------------------- issue #19/#20


def test_true_and_false_arguments_are_booleans():
    """OSC T/F carry no data: they are booleans, so ``/learn/record ,F`` stops recording (it used to start it:
    the string "F" is true)."""
    from sensorsynth.server.osc import LearnRequest

    dec = OscDecoder()
    assert dec.decode(raw("/sensorsynth/learn/record", "F"), NOW) == [LearnRequest("record", False)]
    assert dec.decode(raw("/sensorsynth/learn/record", "T"), NOW) == [LearnRequest("record", True)]
    assert dec.decode(raw("/sensorsynth/learn/run", "F"), NOW) == [LearnRequest("run", False)]
    assert dec.decode(raw("/sensorsynth/learn/record", "Fs", ostr("td")), NOW) == [LearnRequest("record", False, "td")]
    assert dec.decode(raw("/sensorsynth/learn/record", "TF"), NOW)[0].kind == "wrong_type"
    assert dec.decode(raw("/sensorsynth/gain", "T"), NOW)[0].kind == "wrong_type"


@pytest.mark.asyncio
async def test_osc_never_reaches_a_voice_a_websocket_client_holds():
    owners = {0: "osc", 1: "ws7", 2: None, 3: "osc3"}
    rec, rej = Recorder(), Rejections()
    server = OscServer(rec, lambda: {}, rej, voice_owner=owners.__getitem__)
    _, port = await server.start("127.0.0.1", 0)
    try:
        send(port, msg("/sensorsynth/voice/1/gain", 0.0, types="f"), msg("/sensorsynth/voice/2/gain", 1.0, types="f"),
             msg("/sensorsynth/voice/3/gain", 1.0, types="f"), msg("/sensorsynth/gain", 1.0, types="f"),
             msg("/sensorsynth/voice/1/input/td", 0.5, types="f"))
        await until(lambda: server.stats["packets"] == 5)
        assert rec.commands == [Gain(1.0, voice=2), Gain(1.0, voice=3), Gain(1.0)]
        assert rej.counts["osc:voice_taken"] == 2
    finally:
        await server.stop()
    from sensorsynth.server.osc import OscPolicy

    rec2 = Recorder()
    server = OscServer(rec2, lambda: {}, Rejections(), voice_owner=owners.__getitem__,
                       policy=OscPolicy(controls_all_voices=True))
    _, port = await server.start("127.0.0.1", 0)
    try:
        send(port, msg("/sensorsynth/voice/1/gain", 0.0, types="f"))
        await until(lambda: len(rec2.commands) == 1)
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_each_sender_has_its_own_token_bucket():
    """A sender beyond its rate is dropped and counted; another port on its address shares its bucket; another
    address has its own. With ``local_uncapped`` (the default) this machine's loopback senders are not limited.
    Every sender is on the loopback range (127.0.0.x): no traffic leaves this machine."""
    from sensorsynth.server.osc import OscPolicy

    def send_from(source: str, port: int, *packets: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            for p in packets:
                s.sendto(p, ("127.0.0.1", port))

    rec, rej = Recorder(), Rejections()
    server = OscServer(rec, lambda: {}, rej, policy=OscPolicy(messages_per_s=10.0, burst=20.0, local_uncapped=False))
    _, port = await server.start("127.0.0.1", 0)
    try:
        send_from("127.0.0.2", port, *[GOOD] * 60)
        await until(lambda: server.stats["packets"] == 60)
        assert 20 <= len(rec.commands) <= 22 and rej.counts["osc:sender_rate"] == 60 - len(rec.commands)
        send_from("127.0.0.2", port, GOOD)  # another socket (port) on the same address: the same bucket
        await until(lambda: server.stats["packets"] == 61)
        assert rej.counts["osc:sender_rate"] >= 39
        before = len(rec.commands)
        send_from("127.0.0.3", port, *[GOOD] * 5)  # another address: its own, full bucket
        await until(lambda: server.stats["packets"] == 66)
        assert len(rec.commands) == before + 5
    finally:
        await server.stop()

    rec, rej = Recorder(), Rejections()
    server = OscServer(rec, lambda: {}, rej, policy=OscPolicy(messages_per_s=10.0, burst=20.0))
    _, port = await server.start("127.0.0.1", 0)
    try:
        send_from("127.0.0.1", port, *[GOOD] * 60)  # this machine, local_uncapped: not limited
        await until(lambda: server.stats["packets"] == 60)
        assert len(rec.commands) == 60 and "osc:sender_rate" not in rej.counts
    finally:
        await server.stop()


BIG_STATUS = {f"voice{i}": {"instrument": "guitar", "owner": f"ws{i}", "level": 0.25, "events": i * 1000}
              for i in range(40)}


@pytest.mark.asyncio
async def test_the_status_reply_to_a_stranger_is_at_most_four_times_its_request():
    """A 24-byte request used to bring back 2.6 kB (an amplifier for a forged sender). From an address other than
    this machine's loopback, the reply is now at most 4 × the request; a configured peer gets all of it."""
    from sensorsynth.server.osc import OscPolicy

    stranger = "127.0.0.2"  # held to the bound as any address would be (local_uncapped off); no traffic leaves
    full = len(encode_status(BIG_STATUS))
    assert full > 2000
    for policy, want_full in ((OscPolicy(local_uncapped=False), False),
                              (OscPolicy(status_peers=frozenset({stranger}), local_uncapped=False), True)):
        server = OscServer(Recorder(), lambda: BIG_STATUS, Rejections(), policy=policy)
        _, port = await server.start("127.0.0.1", 0)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((stranger, 0))
                s.settimeout(3)
                request = msg("/sensorsynth/status")
                assert len(request) == 24
                s.sendto(request, ("127.0.0.1", port))
                await until(lambda: server.stats["status_replies"] == 1)  # (recv below must not block the loop)
                reply = s.recv(65536)
                if want_full:
                    assert len(reply) == full
                else:
                    assert len(reply) <= 4 * len(request)
                    assert OscMessage(reply).params[-2] == "truncated"
                    # a bundle of 10 requests gets one reply, bounded by the bundle's size
                    b = OscBundleBuilder(1)
                    for _ in range(10):
                        b.add_content(OscMessageBuilder("/sensorsynth/status").build())
                    gram = b.build().dgram
                    s.sendto(gram, ("127.0.0.1", port))
                    await until(lambda: server.stats["messages"] == 11)
                    await asyncio.sleep(0.05)
                    assert server.stats["status_replies"] == 2
                    assert len(s.recv(65536)) <= 4 * len(gram)
                    s.settimeout(0.05)
                    with pytest.raises(socket.timeout):
                        s.recv(65536)
        finally:
            await server.stop()
