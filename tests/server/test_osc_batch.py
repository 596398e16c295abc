"""The batched OSC ingest (server/osc_batch.py) against the general path it shortcuts.

Two real engines (the bundled instrument, not started: the tests render their blocks offline) each behind an
``OscServer``, one with the compiled control lane and one without. The same datagrams reach both (real UDP on
127.0.0.1, or straight into the batch buffers for the fuzzed ones); the same commands, refusals and sound must
come out. The lane sums the events of a voice in one batch (they play at one sample and a burst is linear in its
vector), so the sound is compared within a float32 rounding tolerance, not bit for bit.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time

import numpy as np
import pytest

from sensorsynth.server.engine import Engine, EngineSettings
from sensorsynth.server.library import Library
from sensorsynth.server.osc import OscPolicy, OscServer
from sensorsynth.server.osc_batch import (
    BATCH,
    LOOPBACK_V4,
    ControlLane,
    DatagramBatch,
    sender_keys,
)
from sensorsynth.server.playout import NullOutput
from sensorsynth.server.rejections import Rejections

RATE, BLOCK, VOICES = 22050, 64, 3
TOLERANCE = 1e-4  # of the louder render's peak: float32 sums in another order


def engine(library: Library) -> Engine:
    return Engine(library, EngineSettings(sample_rate=RATE, block_size=BLOCK, max_voices=VOICES, seed=1,
                                          realtime_priority=0), NullOutput(RATE, BLOCK))  # fmt: skip


def osc(address: str, tags: str, *args) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (4 - len(b) % 4)

    body = b"".join(struct.pack(">f", a) if t == "f" else struct.pack(">i", a) if t == "i" else pad(a.encode())
                    for t, a in zip(tags, args))
    return pad(address.encode()) + pad(("," + tags).encode()) + body


def pair(library, **kwargs) -> tuple[tuple[Engine, OscServer, Rejections], tuple[Engine, OscServer, Rejections]]:
    """(with the lane, without it): each an engine, its OSC server and its refusal counts."""
    out = []
    for lane in (True, False):
        e, rej = engine(library), Rejections()
        server = OscServer(lambda item, arrival, e=e: e.submit(item, arrival), dict, rej,
                           voice_owner=lambda v, e=e: e.voices[v].owner, **kwargs)
        if lane:
            server._lane = ControlLane(e, controls_all_voices=False)
        out.append((e, server, rej))
    return out[0], out[1]


def render(e: Engine, blocks: int = 40) -> np.ndarray:
    return np.concatenate([e.renderer.process().copy() for _ in range(blocks)])


def same_sound(a: np.ndarray, b: np.ndarray) -> None:
    peak = max(np.abs(a).max(), np.abs(b).max())
    assert peak > 0, "nothing sounded"
    assert np.abs(a - b).max() <= TOLERANCE * peak


def k_of(library) -> int:
    return library.entries["guitar"].instrument.spec.control_plane_dim


def mixed(k: int) -> list[bytes]:
    """What real senders send, good and bad, in one stream."""
    good = [0.1 * ((i * 7) % 5) for i in range(k)]
    return [
        osc("/sensorsynth/control", "f" * k, *good),
        osc("/sensorsynth/control/3", "f", 0.4),
        osc("/sensorsynth/voice/1/control", "f" * k, *[0.2] * k),
        osc("/sensorsynth/voice/2/control/0", "f", 0.0),  # a channel at 0: a command, no sound
        osc("/sensorsynth/control", "f" * (k - 1), *good[:-1]),  # wrong_count
        osc("/sensorsynth/control", "f" * k, *([float("nan")] + good[1:])),  # nonfinite
        osc("/sensorsynth/control", "f" * k, *([-1.0] + good[1:])),  # negative
        osc("/sensorsynth/voice/9/control", "f" * k, *good),  # bad_voice
        osc("/sensorsynth/control/99", "f", 0.5),  # bad_index
        osc("/sensorsynth/gain", "f", 0.5),  # the general path, in order
        osc("/sensorsynth/control", "f" * k, *good),
        osc("/sensorsynth/status", ""),
        osc("/sensorsynth/voice/0000001/control", "f" * k, *good),  # too many digits
        osc("/sensorsynth/voice/01/control/2", "f", 0.3),  # leading zero: voice 1
        osc("/sensorsynth/control", "i" * k, *[1] * k),  # integers: the general path
        osc("/sensorsynth/controls", "f" * k, *good),  # unknown_address
    ]


async def _send_all(servers, grams: list[bytes]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _, server, _ in servers:
        for g in grams:
            sock.sendto(g, server.address)
    sock.close()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if all(s.stats["packets"] >= len(grams) for _, s, _ in servers):
            return
    raise AssertionError("datagrams did not arrive")


@pytest.mark.asyncio
async def test_the_lane_plays_what_the_general_path_plays(library):
    fast, slow = pair(library)
    for _, server, _ in (fast, slow):
        await server.start("127.0.0.1", 0)
    try:
        grams = mixed(k_of(library)) * 3
        await _send_all((fast, slow), grams)
    finally:
        for _, server, _ in (fast, slow):
            await server.stop()
    assert fast[1].stats["fast"] > 0 and slow[1].stats["fast"] == 0
    for key in ("packets", "messages", "commands", "rejected"):
        assert fast[1].stats[key] == slow[1].stats[key], key
    assert fast[2].as_dict() == slow[2].as_dict()
    assert {"osc:wrong_count", "osc:nonfinite", "osc:negative", "osc:bad_voice", "osc:bad_index"} <= set(fast[2].counts)
    same_sound(render(fast[0]), render(slow[0]))
    assert fast[0].voices[1].last_used > 0


def test_fuzzed_datagrams_are_refused_alike(library):
    """Mutated control messages (bytes flipped, cut, grown) straight into the batch buffers: every datagram gets
    the same verdict on both paths."""
    k = k_of(library)
    rng = random.Random(7)
    seeds = mixed(k)
    fast, slow = pair(library)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        batches = [DatagramBatch(sock, use_recvmmsg=False) for _ in range(2)]
        for _round in range(40):
            grams = []
            for _ in range(BATCH):
                g = bytearray(rng.choice(seeds))
                for _ in range(rng.randint(0, 3)):
                    what = rng.random()
                    if what < 0.6 and g:
                        g[rng.randrange(len(g))] = rng.choice((0, 0x2F, 0x66, 0x30, 0x39, 0x7F, 0xFF, rng.randrange(256)))
                    elif what < 0.8:
                        del g[rng.randrange(len(g) + 1):]
                    else:
                        g += bytes(4)
                grams.append(bytes(g))
            arrival = time.monotonic_ns()  # one arrival for both: status replies are rate-limited by it
            for (e, server, _), batch in zip((fast, slow), batches):
                for i, g in enumerate(grams):
                    batch.data[i, : len(g)] = np.frombuffer(g, np.uint8)
                    batch.lens[i] = len(g)
                    batch._store_name(i, ("127.0.0.1", 9))
                server._take(batch, len(grams), arrival)
                e.renderer.process()  # the audio side takes the inbox's messages
    finally:
        sock.close()
    assert fast[1].stats["fast"] > 0
    for key in ("packets", "messages", "commands", "rejected"):
        assert fast[1].stats[key] == slow[1].stats[key], key
    assert fast[2].as_dict() == slow[2].as_dict()
    assert fast[2].counts["osc:rate_limited"] > 0  # the status replies' limit was reached, alike on both


@pytest.mark.asyncio
async def test_the_sender_policy_holds_per_batch(library):
    """A sender beyond its rate gets its bucket's worth and the rest is counted; a sender outside
    allowed_senders gets nothing. The compiled lane never sees refused datagrams."""
    k = k_of(library)
    gram = osc("/sensorsynth/control", "f" * k, *[0.1] * k)
    e = engine(library)
    rej = Rejections()
    policy = OscPolicy(messages_per_s=10.0, burst=20.0, local_uncapped=False)
    server = OscServer(lambda item, arrival: e.submit(item, arrival), dict, rej, policy=policy)
    server._lane = ControlLane(e)
    await server.start("127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(200):
            sock.sendto(gram, server.address)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if server.stats["packets"] >= 200:
                break
        assert server.stats["packets"] == 200
        assert 20 <= server.stats["commands"] <= 24  # the burst, and what refilled meanwhile
        assert rej.counts["osc:sender_rate"] == 200 - server.stats["commands"]
        assert server.stats["fast"] == server.stats["commands"]
    finally:
        sock.close()
        await server.stop()

    rej2 = Rejections()
    guarded = OscServer(lambda item, arrival: e.submit(item, arrival), dict, rej2, allowed_senders={"127.0.0.2"})
    guarded._lane = ControlLane(e)
    await guarded.start("127.0.0.1", 0)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(30):
            stranger.sendto(gram, guarded.address)
            other.sendto(gram, guarded.address)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if guarded.stats["packets"] >= 60:
                break
        assert rej2.counts["osc:forbidden_sender"] == 30
        assert guarded.stats["commands"] == 30
    finally:
        other.close()
        stranger.close()
        await guarded.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("use_recvmmsg", [True, False])
async def test_both_receivers_take_bursts_whole(library, use_recvmmsg):
    """recvmmsg batches and the recvfrom fallback: 1,000 datagrams sent at once all arrive and are all taken by
    the lane, with their sender's address."""
    k = k_of(library)
    e = engine(library)
    rej = Rejections()
    server = OscServer(lambda item, arrival: e.submit(item, arrival), dict, rej, use_recvmmsg=use_recvmmsg)
    server._lane = ControlLane(e)
    await server.start("127.0.0.1", 0)
    assert server._batch.batched == use_recvmmsg
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(1000):
            sock.sendto(osc("/sensorsynth/control", "f" * k, *[0.001 * (i % 7)] * k), server.address)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if server.stats["packets"] >= 1000:
                break
        assert server.stats["packets"] == 1000 and server.stats["commands"] == 1000 and not rej.counts
        assert server.stats["fast"] == 1000
        assert server._batch.sender(0) == ("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()
        await server.stop()


def test_sender_keys_name_each_address_once():
    names = np.zeros((4, 32), np.uint8)
    batch = DatagramBatch.__new__(DatagramBatch)
    batch.names = names
    for i, addr in enumerate([("127.0.0.1", 1), ("10.0.0.7", 2), ("::1", 3, 0, 0), ("2001:db8::1", 4, 0, 0)]):
        DatagramBatch._store_name(batch, i, addr)
    keys = np.zeros(4, np.int64)
    others = sender_keys(names, 4, keys, int(socket.AF_INET), int(socket.AF_INET6), False)
    assert others == 2  # 10.0.0.7 and 2001:db8::1
    assert keys[0] == LOOPBACK_V4 and keys[1] == (1 << 32) | 0x0A000007
    assert len(set(keys.tolist())) == 4
    assert DatagramBatch.sender(batch, 3) == ("2001:db8::1", 4)
