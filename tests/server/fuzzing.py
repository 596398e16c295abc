"""Bad input, generated: mutated OSC packets and broken WebSocket messages, shared by the short fuzz tests and
the long soak benchmark. Seeded, bounded, aimed at 127.0.0.1 only."""

from __future__ import annotations

import json
import random
import struct

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

K = 16


def _msg(address: str, *args) -> bytes:
    m = OscMessageBuilder(address)
    for a in args:
        m.add_arg(a)
    return m.build().dgram


def corpus() -> list[bytes]:
    """Valid packets of every shape the server reads."""
    out = [
        _msg("/sensorsynth/control", *([0.1] * K)),
        _msg("/sensorsynth/control/3", 0.5),
        _msg("/sensorsynth/voice/2/control", *([0.2] * K)),
        _msg("/sensorsynth/deform", 0.1, -0.3),
        _msg("/sensorsynth/gain", 0.8),
        _msg("/sensorsynth/instrument", "guitar"),
        _msg("/sensorsynth/status"),
    ]
    b = OscBundleBuilder(IMMEDIATELY)
    for i in range(4):
        b.add_content(_built(i))
    out.append(b.build().dgram)
    return out


def _built(i: int):
    m = OscMessageBuilder(f"/sensorsynth/control/{i}")
    m.add_arg(0.3)
    return m.build()


def _nested(depth: int) -> bytes:
    inner = _msg("/sensorsynth/control/1", 0.2)
    for _ in range(depth):
        inner = b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", len(inner)) + inner
    return inner


def mutate(rng: random.Random, packet: bytes) -> bytes:
    """One mutation of a packet: truncation, bit flips, wrong or missing type tags, huge sizes, NaN/inf,
    deep nesting, unknown addresses, blobs, random bytes."""
    kind = rng.randrange(12)
    data = bytearray(packet)
    if kind == 0 and data:
        return bytes(data[: rng.randrange(len(data))])
    if kind == 1 and data:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 2:
        i = data.find(b",")
        if i >= 0:
            data[i + 1 : i + 2] = bytes([rng.choice(b"fisbhdtTFNIcrm?Z\x00\xff")])
        return bytes(data)
    if kind == 3:
        i = data.find(b",")
        return bytes(data[:i]) if i > 0 else bytes(data)
    if kind == 4:
        return b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", rng.choice([2**31 - 1, -1, 10**6])) + packet
    if kind == 5:
        return _msg("/sensorsynth/control", *[rng.choice([float("nan"), float("inf"), -float("inf"), 1.0]) for _ in range(K)])
    if kind == 6:
        return _nested(rng.randint(5, 40))
    if kind == 7:
        return _msg("/" + "/".join(rng.choice(["a", "sensorsynth", "voice", "9", "control", "zz"]) for _ in range(rng.randint(1, 6))), 1.0)
    if kind == 8:
        return _msg("/sensorsynth/control", bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))))
    if kind == 9:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 1500)))
    if kind == 10:
        m = OscMessageBuilder("/sensorsynth/control")  # overflows float32: sent as doubles
        for _ in range(K):
            m.add_arg(1e39, "d")
        return m.build().dgram
    return _msg("/sensorsynth/voice/99999/control", *([0.1] * K))


def osc_packets(seed: int, n: int):
    rng = random.Random(seed)
    base = corpus()
    for _ in range(n):
        yield mutate(rng, rng.choice(base))


def ws_messages(seed: int, n: int):
    """Text and binary frames a broken or hostile client sends."""
    rng = random.Random(seed)
    for _ in range(n):
        k = rng.randrange(9)
        if k == 0:
            yield "{not json"
        elif k == 1:
            yield json.dumps({"type": rng.choice(["control", "deform", "gain", "warp", None, 3])})
        elif k == 2:
            yield json.dumps({"type": "control", "values": [rng.choice([-1, 1e308, "x", None]) for _ in range(K)]})
        elif k == 3:
            yield json.dumps({"type": "control", "values": [0.1] * rng.randint(0, 40)})
        elif k == 4:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(1, 256)))
        elif k == 5:
            yield json.dumps({"type": "sensor", "source": "x" * rng.randint(0, 100), "values": [1.0] * rng.randint(0, 5000)})
        elif k == 6:
            yield "[" * rng.randint(1, 100000)  # deep nesting
        elif k == 7:
            yield json.dumps({"type": "instrument", "name": rng.choice(["../../etc/passwd", "/abs", "nope", "a" * 300])})
        else:
            yield json.dumps({"type": "hello", "extra": 1}) if rng.random() < 0.5 else "x" * rng.randint(70000, 200000)
