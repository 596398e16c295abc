"""Garbage never stops the sound: property tests of the pure decoders (hypothesis), then a short flood of
mutated OSC packets and broken WebSocket traffic at a real server, which must keep playing, count what it
refused by kind, and answer status. The long versions are in tests/benchmarks/soak.py."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sensorsynth.protocol import ws as wire
from sensorsynth.server.osc import OscDecoder

from .fuzzing import osc_packets, ws_messages
from .helpers import K, http_json, osc_status, recorded, recorded_seconds, rms, wait_for

pytestmark = pytest.mark.slow  # hypothesis against a real server


DECODER = OscDecoder()


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=2048))
def test_the_osc_decoder_never_raises(data):
    out = DECODER.decode(data, time.time())
    assert isinstance(out, list)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=40))
def test_any_float_vector_is_either_a_command_or_a_counted_rejection(values):
    from pythonosc.osc_message_builder import OscMessageBuilder

    m = OscMessageBuilder("/sensorsynth/control")
    for v in values:
        m.add_arg(v, "f")
    out = DECODER.decode(m.build().dgram, time.time())
    assert len(out) == 1
    finite = all(v == v and abs(v) != float("inf") for v in values)
    ok = finite and values and all(v >= 0 for v in values)
    assert (type(out[0]).__name__ == "Control") == bool(ok), (values, out)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.floats(), st.text(max_size=5),
                                                                  st.lists(st.floats(), max_size=20)), max_size=6)
                 .map(json.dumps)))
def test_the_websocket_parser_raises_only_wire_errors(text):
    try:
        wire.parse_client(text)
    except wire.WireError as exc:
        assert exc.code in ("bad_json", "bad_schema", "binary_not_accepted")


async def _ws_abuse(url: str, n: int) -> dict:
    counts = {"errors": 0, "closed": 0}

    async def one(seed: int) -> None:
        try:
            async with connect(url, max_size=None) as ws:
                await ws.send(json.dumps({"type": "hello"}))
                await ws.recv()
                for msg in ws_messages(seed, n):
                    try:
                        await ws.send(msg)
                    except ConnectionClosed:
                        counts["closed"] += 1
                        return
                # drain the answers
                try:
                    while True:
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                        counts["errors"] += reply.get("type") == "error"
                except (asyncio.TimeoutError, ConnectionClosed):
                    pass
        except ConnectionClosed:
            counts["closed"] += 1

    await asyncio.gather(*(one(s) for s in range(3)))
    return counts


def _slow_sender(port: int) -> socket.socket:
    """A client that completes the handshake, starts a frame and never finishes it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    s.recv(4096)
    s.sendall(b"\x81\xfe\x10\x00\x00\x00\x00\x00" + b"{" * 100)  # a 4096-byte masked text frame, 100 bytes sent
    return s


def test_a_flood_of_garbage_leaves_the_server_playing(start_server):
    server = start_server()
    wait_for(lambda: recorded_seconds(server) > 0.5, what="recording")
    slow = [_slow_sender(server.ws_port) for _ in range(3)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = 0
    for i, p in enumerate(osc_packets(seed=1, n=20000)):
        sock.sendto(p, ("127.0.0.1", server.osc_port))
        n += 1
        if i % 500 == 499:
            time.sleep(0.02)  # bounded rate: the test measures robustness, not the socket buffer
    counts = asyncio.run(_ws_abuse(server.ws_url, 400))
    assert counts["errors"] > 100, counts
    status = osc_status(server.osc_port)
    assert status["running"] in (1, True)
    health = http_json(server, "/health")
    kinds = {k for k in health["rejected"] if health["rejected"][k]}
    for expected in ("osc:malformed", "osc:nonfinite", "osc:unknown_address", "osc:wrong_type",
                     "ws:bad_json", "ws:bad_schema", "ws:binary_not_accepted", "ws:too_large"):
        assert expected in kinds, (expected, sorted(kinds))
    # it still plays
    mark = recorded_seconds(server)
    from pythonosc.udp_client import SimpleUDPClient

    SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/control", [1.0] * K)
    time.sleep(1.0)
    for s in slow:
        s.close()
    sock.close()
    assert server.stop() == 0
    data, rate = recorded(server)
    assert rms(data[int((mark - 0.1) * rate) :]) > 0.01
