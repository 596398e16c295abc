"""OSC input figures (a script, not collected by pytest): python tests/benchmarks/bench_osc.py [--seconds S] [--rate R]

1. Parse cost per message, in-process (best of 5 repeats): sensorsynth's decoder (fast path for plain float
   messages, its general parser for the rest) against python-osc's parsing classes (`OscMessage`, and
   `OscPacket`, which its servers use), each followed by the same validation into a `Control`/`ControlChannel`.
2. End to end over 127.0.0.1: a sender process sends 16-float `/sensorsynth/control` datagrams at a fixed rate;
   the figure is the receiving process's CPU time per message (event loop, socket, decode, sink), for
   `OscServer` and for python-osc's `AsyncIOOSCUDPServer` with a dispatcher doing the same validation.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import time
import timeit

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket
from pythonosc.osc_server import AsyncIOOSCUDPServer

from sensorsynth.protocol.commands import Control, ControlChannel
from sensorsynth.server.osc import OscDecoder, OscServer
from sensorsynth.server.rejections import Rejections

K = 16


def message(address: str, *args, types: str | None = None) -> bytes:
    b = OscMessageBuilder(address)
    for i, a in enumerate(args):
        b.add_arg(a, types[i] if types else None)
    return b.build().dgram


def td_bundle(values) -> bytes:
    """TouchDesigner-style: one /control/<i> message per channel in a bundle stamped 50 ms in the past."""
    b = OscBundleBuilder(time.time() - 0.05)
    for i, v in enumerate(values):
        m = OscMessageBuilder(f"/sensorsynth/control/{i}")
        m.add_arg(float(v), "f")
        b.add_content(m.build())
    return b.build().dgram


def per_call_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def parse_figures() -> None:
    values = [0.25 * (i % 4) for i in range(K)]  # exact in float32, so f and d parse equal
    ctl = message("/sensorsynth/control", *values, types="f" * K)
    ctl_d = message("/sensorsynth/control", *values, types="d" * K)
    chan = message("/sensorsynth/control/5", 0.5, types="f")
    bundle = td_bundle(values)
    dec = OscDecoder()
    now = time.time()

    def posc_control(dgram=ctl):
        m = OscMessage(dgram)
        if m.address == "/sensorsynth/control":
            return Control.of(m.params)

    def posc_packet(dgram=ctl):
        for tm in OscPacket(dgram).messages:
            if tm.message.address == "/sensorsynth/control":
                Control.of(tm.message.params)

    def posc_channel(dgram=chan):
        m = OscMessage(dgram)
        a = m.address
        if a.startswith("/sensorsynth/control/"):
            return ControlChannel.of(int(a[21:]), m.params[0])

    def posc_bundle():
        for tm in OscPacket(bundle).messages:
            a = tm.message.address
            ControlChannel.of(int(a[21:]), tm.message.params[0])

    assert dec.decode(ctl, now)[0] == dec.decode(ctl_d, now)[0] == posc_control()
    assert len(dec.decode(bundle, now)) == K and dec.decode(chan, now)[0] == posc_channel()

    n = 20000
    rows = [
        ("/control, 16 f (fast path)", per_call_us(lambda: dec.decode(ctl, now), n), per_call_us(posc_control, n),
         per_call_us(posc_packet, n)),
        ("/control, 16 d (general parser)", per_call_us(lambda: dec.decode(ctl_d, now), n),
         per_call_us(lambda: posc_control(ctl_d), n), per_call_us(lambda: posc_packet(ctl_d), n)),
        ("/control/5, 1 f (fast path)", per_call_us(lambda: dec.decode(chan, now), n), per_call_us(posc_channel, n),
         float("nan")),
        ("bundle of 16 /control/<i>, per message", per_call_us(lambda: dec.decode(bundle, now), n // 16) / K,
         float("nan"), per_call_us(posc_bundle, n // 16) / K),
    ]
    print("parse + validate, µs per message (best of 5)")
    print(f"  {'':42s} {'sensorsynth':>12s} {'OscMessage':>12s} {'OscPacket':>12s}")
    for name, a, b, c in rows:
        print(f"  {name:42s} {a:12.2f} {b:12.2f} {c:12.2f}")
    print(f"  (Control.of alone, 16 floats: {per_call_us(lambda: Control.of(values), n):.2f} µs)")


def lane_figures() -> None:
    """The compiled control lane in-process: 64 datagrams of 16 floats per batch, into a real engine's inbox
    (the bundled instrument, not started: a block is rendered between batches, outside the timing)."""
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from sensorsynth.server.engine import Engine, EngineSettings
    from sensorsynth.server.library import Library
    from sensorsynth.server.osc_batch import BATCH, ControlLane, DatagramBatch
    from sensorsynth.server.playout import NullOutput

    with tempfile.TemporaryDirectory() as d:
        shutil.copy(Path(__file__).resolve().parents[2] / "models" / "guitar.instrument", d)
        lib = Library(Path(d))
        lib.scan(settle=False)
        engine = Engine(lib, EngineSettings(sample_rate=22050, block_size=64, max_voices=8, realtime_priority=0),
                        NullOutput(22050, 64))
        lane = ControlLane(engine)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        batch = DatagramBatch(sock, use_recvmmsg=False)
        gram = message("/sensorsynth/control", *[0.02 * (i % 5 == 0) for i in range(K)], types="f" * K)
        for i in range(BATCH):
            batch.data[i, : len(gram)] = np.frombuffer(gram, np.uint8)
            batch.lens[i] = len(gram)
        allowed = np.ones(BATCH, np.uint8)
        times = []
        for rep in range(3000):
            t0 = time.perf_counter_ns()
            lane.prepare(t0)
            lane.run(batch, allowed, 0, BATCH)
            lane.finish(t0)
            times.append(time.perf_counter_ns() - t0)
            engine.renderer.process()
        sock.close()
    per = float(np.median(times[100:])) / BATCH / 1000
    print(f"\ncompiled control lane (server/osc_batch.py), batches of {BATCH} 16-float /control messages into a real "
          f"engine's inbox: {per:.3f} µs per message (median), i.e. {1e6 / per:,.0f} messages/s of one core "
          f"before the socket (end to end: bench_serve.py --phases saturate)")


# ------------------------------------------------------------------------------------------------- end to end


def sender(port: int, rate: float, seconds: float, go) -> None:
    dgram = message("/sensorsynth/control", *[0.25 * (i % 4) for i in range(K)], types="f" * K)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    go.wait()
    n = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / rate
        while time.perf_counter() < target:
            pass
        s.sendto(dgram, ("127.0.0.1", port))
    s.sendto(b"/stop\0\0\0", ("127.0.0.1", port))


async def measure(start_server, rate: float, seconds: float) -> tuple[int, float, float]:
    """Returns (messages received, CPU µs per message, CPU share of one core) of this process."""
    received = [0]
    done = asyncio.Event()
    port, stop = await start_server(received, done)
    go = mp.Event()
    p = mp.Process(target=sender, args=(port, rate, seconds, go))
    p.start()
    await asyncio.sleep(0.3)
    c0, w0 = time.process_time(), time.perf_counter()
    go.set()
    try:
        await asyncio.wait_for(done.wait(), seconds + 5)
    except asyncio.TimeoutError:
        pass
    c1, w1 = time.process_time(), time.perf_counter()
    p.join()
    await stop()
    n = received[0]
    return n, (c1 - c0) / max(n, 1) * 1e6, (c1 - c0) / (w1 - w0)


async def start_sensorsynth(received, done):
    def sink(cmd, arrival_ns):
        received[0] += 1

    rej = Rejections()
    srv = OscServer(sink, dict, rej)
    orig = srv.decoder.decode

    def decode(data, now):
        if data.startswith(b"/stop"):
            done.set()
            return []
        return orig(data, now)

    srv.decoder.decode = decode
    _, port = await srv.start("127.0.0.1", 0)
    return port, srv.stop


async def start_pythonosc(received, done):
    disp = Dispatcher()

    def handler(address, *args):
        Control.of(args)
        received[0] += 1

    disp.map("/sensorsynth/control", handler)
    disp.map("/stop", lambda *a: done.set())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = AsyncIOOSCUDPServer(("127.0.0.1", port), disp, asyncio.get_running_loop())
    transport, _ = await server.create_serve_endpoint()

    async def stop():
        transport.close()

    return port, stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=10000.0)
    ap.add_argument("--skip-socket", action="store_true")
    args = ap.parse_args()
    parse_figures()
    lane_figures()
    if args.skip_socket:
        return
    print(f"\nend to end over 127.0.0.1, {args.rate:g} msgs/s for {args.seconds:g} s (receiver's CPU per message)")
    servers = [("sensorsynth OscServer", start_sensorsynth), ("python-osc AsyncIOOSCUDPServer", start_pythonosc)]
    for name, start in servers:
        n, us, share = asyncio.run(measure(start, args.rate, args.seconds))
        sent = int(args.rate * args.seconds)
        print(f"  {name:32s} {us:6.1f} µs/message, {share * 100:5.1f} % of a core, received {n}/{sent}")


if __name__ == "__main__":
    main()
