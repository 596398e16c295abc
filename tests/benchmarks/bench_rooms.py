"""What several speakers and the level cap cost in the audio path (a script, not collected by pytest):

    python tests/benchmarks/bench_rooms.py                 # 20 s of audio per configuration
    python tests/benchmarks/bench_rooms.py --seconds 2     # a smoke run

8 busy voices of the bundled guitar at its own rate, block 64, the numba CPU renderer (single-threaded): the
block time of ``Renderer.process`` (p50, p99, µs) for today's mono output beside 8 output channels (voices
spread round a ring: each sounds on two speakers), each with and without the level cap's limiter (-1 dBFS,
and a gain of 4 on every voice so that it works). The configurations are timed block by block in turn
(round-robin), so a machine that slows down mid-run slows all of them alike. Events are scheduled outside the
timed region. Quote the figures with this command line and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from sensorsynth.instrument_file import load
from sensorsynth.render import placement
from sensorsynth.render.renderer import Renderer

MODELS = Path(__file__).resolve().parents[2] / "models"
CAP = 10 ** (-1 / 20)


def make(inst, voices: int, channels: int, limiter: bool, block: int) -> Renderer:
    pans = np.stack([placement.voice_gains(v, voices, channels, "ring") for v in range(voices)])
    r = Renderer(inst, inst.spec.sample_rate, block_size=block, max_voices=voices, seed=0, channels=channels,
                 voice_pans=pans)  # fmt: skip
    if limiter:
        r.set_level_cap(CAP)
        for v in range(voices):
            r.set_gain(v, 4.0)
    r.warmup()
    return r


def busy(r: Renderer, voices: int, k: int, hop: int, rng) -> None:
    """A control event on every voice at every control hop inside the next block (every voice sounds)."""
    t0, t1 = r.time, r.time + r.block_size
    for t in range((t0 // hop + (t0 % hop > 0)) * hop, t1, hop):
        for v in range(voices):
            r.control(t, v, rng.uniform(0, 0.5, k) * (rng.uniform(size=k) < 0.3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="audio rendered per configuration")
    ap.add_argument("--voices", type=int, default=8)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--instrument", default=str(MODELS / "guitar.instrument"))
    args = ap.parse_args()
    inst = load(args.instrument)
    spec = inst.spec
    configs = {
        "1 channel": (1, False),
        "1 channel + limiter": (1, True),
        f"{args.channels} channels": (args.channels, False),
        f"{args.channels} channels + limiter": (args.channels, True),
    }
    renderers = {name: make(inst, args.voices, ch, lim, args.block) for name, (ch, lim) in configs.items()}
    n_blocks = int(args.seconds * spec.sample_rate / args.block)
    times = {name: np.empty(n_blocks) for name in configs}
    rngs = {name: np.random.default_rng(1) for name in configs}  # the same events for every configuration
    hop = max(1, spec.sample_rate // 50)
    for i in range(n_blocks):
        for name, r in renderers.items():
            busy(r, args.voices, spec.control_plane_dim, hop, rngs[name])
            t = time.perf_counter()
            r.process()
            times[name][i] = time.perf_counter() - t
    budget = args.block / spec.sample_rate * 1e6
    base = None
    print(f"{args.voices} busy voices of {Path(args.instrument).stem} at {spec.sample_rate} Hz, block {args.block} "
          f"({budget:.0f} µs of audio), {n_blocks} blocks each, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"{'configuration':<28}{'p50 µs':>10}{'p99 µs':>10}{'p99 / mono':>12}{'limited':>10}")
    for name, r in renderers.items():
        p50, p99 = np.percentile(times[name][n_blocks // 10 :], [50, 99]) * 1e6  # the first tenth warms caches
        base = base or p99
        print(f"{name:<28}{p50:>10.1f}{p99:>10.1f}{p99 / base:>12.2f}{r.counters['limited']:>10}")


if __name__ == "__main__":
    main()
