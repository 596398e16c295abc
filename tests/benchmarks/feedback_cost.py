"""What OSC feedback costs on the event path (a script, not collected by pytest):

    python tests/benchmarks/feedback_cost.py [--events N] [--burst B]

An engine plays the bundled instrument to the null output (the compiled audio path, as `serve` runs it).
On an asyncio loop, bursts of B one-dimension control events (`ControlChannel`, what TouchDesigner's OSC
Out CHOP sends) are submitted, then the loop runs once (where the feedback sends the burst), for N events in
all. The figure is the wall time per applied event (best of 5), in four settings:

1. nobody listens: the engine's hook is one attribute test;
2. a monitoring page's subscription (the events are recorded, nobody reads them within the run);
3. OSC feedback to a UDP receiver on 127.0.0.1 (record, encode a bundle per sample, sendto);
4. OSC feedback to four receivers.

The receiver is a plain socket that is never read: the kernel drops what overflows its buffer, which costs
the sender nothing extra.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from sensorsynth.protocol.commands import ControlChannel
from sensorsynth.server.engine import Engine, EngineSettings
from sensorsynth.server.feedback import Feedback
from sensorsynth.server.library import Library
from sensorsynth.server.playout import NullOutput

REPO = Path(__file__).resolve().parents[2]
RATE, BLOCK = 44100, 64


def make_engine(folder: Path) -> Engine:
    shutil.copy(REPO / "models" / "guitar.instrument", folder / "guitar.instrument")
    library = Library(folder)
    library.scan(settle=False)
    engine = Engine(library, EngineSettings(sample_rate=RATE, block_size=BLOCK, max_voices=4, seed=1,
                                            realtime_priority=0), NullOutput(RATE, BLOCK))  # fmt: skip
    engine.start()
    return engine


async def run(engine: Engine, events: int, burst: int) -> float:
    """Seconds per applied event, best of 5 (the loop runs once after each burst)."""
    k = engine.library.entries["guitar"].instrument.spec.control_plane_dim
    commands = [ControlChannel(i % k, 0.5) for i in range(burst)]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(events // burst):
            for cmd in commands:
                engine.submit(cmd)
            await asyncio.sleep(0)  # the feedback's flush runs here
        best = min(best, (time.perf_counter() - t0) / (events // burst * burst))
        await asyncio.sleep(0.05)  # the renderer drains its inbox between repeats
    return best


async def main_async(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(Path(tmp))
        sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        for s in sinks:
            s.bind(("127.0.0.1", 0))
        targets = [f"127.0.0.1:{s.getsockname()[1]}" for s in sinks]
        try:
            rows = []
            rows.append(("nobody listens", await run(engine, args.events, args.burst)))
            sub = engine.events.subscribe(maxlen=args.events)
            rows.append(("a monitor's subscription", await run(engine, args.events, args.burst)))
            sub.close()
            for n in (1, 4):
                fb = Feedback(engine, targets[:n], level_hz=0)
                await fb.start()
                rows.append((f"OSC feedback, {n} target{'s' if n > 1 else ''}", await run(engine, args.events, args.burst)))
                await fb.stop()
            base = rows[0][1]
            print(f"feedback cost per applied event ({args.events} ControlChannel events in bursts of {args.burst}, "
                  f"best of 5; python {sys.version.split()[0]}):")
            for name, s in rows:
                print(f"  {name:<28} {s * 1e6:7.2f} µs/event   (+{(s - base) * 1e6:5.2f} µs)")
        finally:
            engine.stop()
            for s in sinks:
                s.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--burst", type=int, default=16, help="events submitted between two loop iterations")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
