"""Mapping figures: each adapter's added latency from sensor frame to control event, and the frame rate the
server sustains with 8 sources at once.

    python tests/benchmarks/bench_mapping.py [--seconds 2] [--no-server]

1. **Compute per frame** (in process, the hub alone): µs per frame, median and p99, for each kind of
   source (phone motion, hand landmarks, raw OSC of 16 values, a TouchDesigner preset assembled from 16
   per-channel messages), over real or generated streams.
2. **Gate delay** (in process): frames and milliseconds from the start of a gesture to its event (a phone
   jolt, a finger snap, a raw step), at the adapters' usual rates: the decision itself adds no look-ahead;
   what is left is smoothing.
3. **Through the server** (a real ``sensorsynth serve``, null output): the engine's arrival → rendered block
   latency of mapping-made events (``latency_ms`` in the status: the stamp is taken before the mapping
   runs, so it includes it), and the mapping's own compute (``mapping.compute_us``) inside the server.
4. **8 sources at once**: 2 phones and 2 hands over the WebSocket, 2 raw OSC and 2 TouchDesigner-style OSC
   senders, each at 60, 120, 240 Hz: frames sent vs frames the server mapped per second, and under-runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pythonosc.osc_bundle_builder import OscBundleBuilder  # noqa: E402
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from sensorsynth.instrument_file import load  # noqa: E402
from sensorsynth.mapping.hub import MappingHub  # noqa: E402
from sensorsynth.mapping.presets import PresetTable, load_preset  # noqa: E402
from tests.mapping.streams import REPO, basicmotions, hand_stream  # noqa: E402


def pct(xs) -> str:
    xs = np.asarray(xs)
    return f"{np.median(xs):7.1f} {np.percentile(xs, 99):7.1f}"


def compute_per_frame() -> None:
    inst = load(REPO / "models" / "guitar.instrument")
    print("1. compute per frame (in process, µs: median p99)")
    hub = MappingHub(lambda n: inst, PresetTable([load_preset("touchdesigner")]))
    _, t, phone = basicmotions("running", rate_hz=60.0)[0]
    th, hand = hand_stream("wave", 10.0, 30.0)
    rng = np.random.default_rng(0)
    raw_t = np.arange(0, 10, 1 / 60)
    raw = 0.5 + 0.4 * np.sin(np.cumsum(rng.normal(0, 0.1, (raw_t.size, 16)), axis=0))
    rows = {}
    for name, kind, tt, frames in (("phone motion (9)", "motion", t, phone), ("hand landmarks (84)", "hand", th, hand),
                                   ("raw OSC (16)", "raw", raw_t, raw)):
        us = []
        for ti, f in zip(tt, frames):
            t0 = time.perf_counter_ns()
            hub.sensor("bench", name.split()[0], kind, f, ti, ti, "guitar")
            us.append((time.perf_counter_ns() - t0) / 1000)
        rows[name] = us[10:]
    us = []
    for ti, f in zip(raw_t, raw):  # a TouchDesigner frame: 16 per-channel updates, then the bundle ends
        t0 = time.perf_counter_ns()
        for c in range(16):
            hub.preset(hub.table.match(f"/chan{c + 1}", (float(f[c]),)), ti)
        for source, kind, values, spec in hub.end_bundle():
            hub.sensor("bench", source, kind, values, ti, ti, "guitar", spec=spec)
        us.append((time.perf_counter_ns() - t0) / 1000)
    rows["TouchDesigner preset (16 messages)"] = us[10:]
    for name, us in rows.items():
        print(f"   {name:36s} {pct(us)}   ({1e6 / np.median(us):8.0f} frames/s on one core)")


def gate_delay() -> None:
    print("2. gate delay: gesture start → event (frames, ms)")
    inst = load(REPO / "models" / "guitar.instrument")

    def first_event(kind, t, frames, start):
        hub = MappingHub(lambda n: inst)
        for ti, f in zip(t, frames):
            cmds = hub.sensor("g", "s", kind, f, ti, ti, "guitar")
            if ti >= start and any(type(c).__name__ == "Control" for c in cmds):
                return ti - start
        return None

    for rate in (60.0, 100.0):
        t = np.arange(0, 2, 1 / rate)
        frames = np.zeros((t.size, 9))
        frames[t >= 1.0, 0] = 8.0  # a jolt: 8 m/s² from one frame to the next
        d = first_event("motion", t, frames, 1.0)
        print(f"   phone jolt at {rate:.0f} Hz: {d * rate:.0f} frames, {1000 * d:.1f} ms")
    for rate in (30.0, 60.0):
        t, frames = hand_stream("snap", 1.0, rate, seed=1)
        d = first_event("hand", t, frames, 0.25)  # the first flick starts at 0.25 s
        print(f"   finger snap at {rate:.0f} Hz: {d * rate:.1f} frames, {1000 * d:.1f} ms")
    for rate in (60.0,):
        t = np.arange(0, 2, 1 / rate)
        frames = np.where(t[:, None] >= 1.0, 0.9, 0.1) * np.ones((1, 4))
        d = first_event("raw", t, frames, 1.0)
        print(f"   raw step 0.1 → 0.9 at {rate:.0f} Hz: {d * rate:.0f} frames, {1000 * d:.1f} ms")


# ------------------------------------------------------------------------------------------ the server


def start_server(folder: Path, *args: str):
    import shutil
    import subprocess

    (folder / "models").mkdir()
    shutil.copy(REPO / "models" / "guitar.instrument", folder / "models")
    ready = folder / "ready.json"
    config = folder / "serve.toml"
    config.write_text("ws_messages_per_s = 2000\n")  # 240 Hz sources exceed a browser's default allowance
    proc = subprocess.Popen([sys.executable, "-m", "sensorsynth", "serve", str(folder / "models"), "--output", "null",
                             "--host", "127.0.0.1", "--osc-port", "0", "--ws-port", "0", "--ready-file", str(ready),
                             "--max-voices", "16", "--config", str(config), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def health(info) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{info['ws_port']}/health", timeout=5) as r:
        return json.loads(r.read())


async def eight_sources(info, rate: float, seconds: float) -> int:
    from websockets.asyncio.client import connect

    _, _, phone = basicmotions("running", rate_hz=rate)[1]
    _, hand = hand_stream("wave", seconds + 1, rate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", info["osc_port"])
    wss = []
    for i in range(4):
        ws = await connect(f"ws://127.0.0.1:{info['ws_port']}/ws", max_queue=None).__aenter__()
        await ws.send(json.dumps({"type": "hello", "client": f"bench{i}"}))
        await ws.recv()
        wss.append(ws)
    n = int(rate * seconds)
    sent = 0
    start = time.monotonic()
    for i in range(n):
        t = i / rate
        v = 0.5 + 0.4 * np.sin(2 * np.pi * 2 * t + np.arange(4))
        for j in range(2):
            await wss[j].send(json.dumps({"type": "sensor", "source": "phone", "kind": "motion",
                                          "values": phone[i % len(phone)].tolist(), "t": t}))
            await wss[2 + j].send(json.dumps({"type": "sensor", "source": "hands/right", "kind": "hand",
                                              "hand": "Right", "values": hand[i % len(hand)].tolist(), "t": t}))
            m = OscMessageBuilder(f"/sensorsynth/input/raw{j}")
            for x in v:
                m.add_arg(float(x), "f")
            sock.sendto(m.build().dgram, addr)
            b = OscBundleBuilder(1)
            for c in range(4):
                cm = OscMessageBuilder(f"/td/chan{c + 1}" if j else f"/chan{c + 1}")
                cm.add_arg(float(v[c]), "f")
                b.add_content(cm.build())
            sock.sendto(b.build().dgram, addr)  # both TD senders feed preset sources (td, via two naming schemes)
        sent += 8
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    for ws in wss:
        await ws.close()
    sock.close()
    return sent


def through_server(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, info = start_server(Path(tmp), "--preset", "touchdesigner")
        try:
            time.sleep(1.0)
            print("3./4. through the server, 8 sources at once (2 phones, 2 hands over WebSocket; 2 raw, 2 TD OSC)")
            print("   rate/source  sent/s  mapped/s  events  arrival→block ms p50/p99  mapping µs p50/p99  under-runs")
            for rate in (60.0, 120.0, 240.0):
                before = health(info)
                t0 = time.monotonic()
                sent = asyncio.run(eight_sources(info, rate, seconds))
                time.sleep(0.3)
                after = health(info)
                dt = time.monotonic() - t0 - 0.3
                frames = after["mapping"]["frames"] - before["mapping"]["frames"]
                events = after["mapping"]["events"] - before["mapping"]["events"]
                lat, mus = after["latency_ms"], after["mapping"]["compute_us"]
                print(f"   {rate:6.0f} Hz  {sent / dt:8.0f} {frames / dt:9.0f} {events:7d}   "
                      f"{lat['p50']:>8} / {lat['p99']:<8}   {mus['p50']:>7} / {mus['p99']:<7}   "
                      f"{after['underruns'] - before['underruns']}")
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="per rate, for the 8-source run")
    ap.add_argument("--no-server", action="store_true", help="in-process figures only")
    args = ap.parse_args()
    compute_per_frame()
    gate_delay()
    if not args.no_server:
        through_server(args.seconds)


if __name__ == "__main__":
    main()
