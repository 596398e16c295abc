"""The short version of the load benchmark (tests/benchmarks/bench_serve.py and soak.py run the long ones):
a few seconds of OSC from many senders and WebSocket clients while 8 voices sound, on the compiled audio
path. The sound must not break, nothing may be dropped, and latency must stay within a block + 2 ms."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from websockets.asyncio.client import connect

from tests.benchmarks.bench_serve import datagrams

from .helpers import http_json, recorded_seconds, wait_for

pytestmark = pytest.mark.slow  # a flood against a real server


async def _browsers(url: str, n: int, seconds: float) -> int:
    sent = 0

    async def one(i: int) -> None:
        nonlocal sent
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "hello", "client": f"load{i}", "audio": i == 0}))
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < seconds:
                await ws.send(json.dumps({"type": "sensor", "source": "load", "kind": "raw", "values": [k % 5, 0.2]}))
                sent += 1
                k += 1
                await asyncio.sleep(1 / 60)

    await asyncio.gather(*(one(i) for i in range(n)))
    return sent


def test_a_short_flood_keeps_the_sound_whole(start_server):
    server = start_server(record=True)
    wait_for(lambda: recorded_seconds(server) > 0.5, what="recording")
    grams = datagrams(8)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(10)]
    before = http_json(server, "/health")
    import threading

    ws_sent: list[int] = []
    th = threading.Thread(target=lambda: ws_sent.append(asyncio.run(_browsers(server.ws_url, 4, 4.0))))
    th.start()
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 4.0:  # about 3,000 OSC messages/s from 10 senders
        for _ in range(30):
            socks[n % 10].sendto(grams[n % len(grams)], ("127.0.0.1", server.osc_port))
            n += 1
        time.sleep(0.01)
    th.join()
    time.sleep(0.5)
    after = http_json(server, "/health")
    for s in socks:
        s.close()
    assert after["running"] and after["osc"]["messages"] >= n
    assert after["events"]["dropped"] == 0 and after["events"].get("inbox_full", 0) == 0
    # No block failed to render. A few may be late when the machine wakes the clock loop late: the reference VM
    # (preempt=none) wakes a realtime thread up to ~8 ms late, about 3 blocks, with nothing running (docs:
    # Benchmarks, reliability), and after a long suite (JACK's dummy driver and earlier servers' exits) that
    # happens once or twice in the window. A render starved by the flood would be late for hundreds of the
    # window's ~1,500 blocks: at most 1 % may be late.
    path = after.get("audio_path", {})
    blocks = path.get("blocks", 0) - before.get("audio_path", {}).get("blocks", 0)
    late = after["underruns"] - before["underruns"]
    assert blocks > 1000, path
    assert path.get("not_rendered", 0) == 0 and late <= max(2, blocks // 100), (late, blocks, path)
    assert after["latency_ms"]["p99"] <= 1000 * 64 / 22050 + 2.0, after["latency_ms"]
    assert after["block_us"]["p99"] < 2902
    assert ws_sent and ws_sent[0] > 4 * 4.0 * 30
    assert after["ws"]["sensor_frames"] >= ws_sent[0] - 10
    assert server.stop() == 0
