"""Renderer figures (a script, not collected by pytest): python tests/benchmarks/bench_render.py [--device cuda]

numba runs single-threaded. A seed-size instrument (default ModelSpec: 16 resonances × 2 × 64 = 2048
oscillators) at 22050 Hz, every voice kept busy (a control event on every control hop, deformations moving),
so no voice is skipped as silent. Each measurement runs a few seconds at most.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import torch

from sensorsynth.instrument.export import to_instrument
from sensorsynth.instrument.model import ResonanceModel
from sensorsynth.instrument.spec import ModelSpec
from sensorsynth.render.batched import BatchedRenderer
from sensorsynth.render.renderer import Renderer


def seed_instrument(seed: int = 0):
    spec = ModelSpec()
    model = ResonanceModel(spec, parameterization="seed", generator=torch.Generator().manual_seed(seed))
    return to_instrument(model, "bench")


def busy_events(renderer, t0: int, t1: int, voices: int, k: int, e: int, hop: int, rng) -> None:
    for t in range((t0 // hop + (t0 % hop > 0)) * hop, t1, hop):
        for v in range(voices):
            renderer.control(t, v, rng.uniform(0, 0.3, k) * (rng.uniform(size=k) < 0.25))
            if (t // hop) % 8 == 0:
                renderer.deform(t, v, rng.normal(size=e))


def numba_voices(inst, voices: int, block: int, seconds: float, rng) -> np.ndarray:
    """Per-block wall times (s) of process() (events scheduled outside the timed region)."""
    spec = inst.spec
    r = Renderer(inst, spec.sample_rate, block_size=block, max_voices=voices, seed=0)
    n_blocks = int(seconds * spec.sample_rate / block)
    times = np.empty(n_blocks)
    for i in range(n_blocks):
        busy_events(r, r.time, r.time + block, voices, spec.control_plane_dim, spec.expressivity, spec.control_hop, rng)
        t = time.perf_counter()
        r.process()
        times[i] = time.perf_counter() - t
    return times


def torch_voices(inst, voices: int, block: int, blocks: int, device: str, rng) -> float:
    spec = inst.spec
    r = BatchedRenderer(inst, voices, spec.sample_rate, block_size=block, device=device, seed=0)
    total = 0.0
    for i in range(blocks + 2):
        busy_events(r, r.time, r.time + block, voices, spec.control_plane_dim, spec.expressivity, spec.control_hop, rng)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        r.process()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # warm-up
            total += time.perf_counter() - t
    return total / blocks


def fitted_performance(block: int, rate: int) -> None:
    """The bundled instrument replaying its fitted performance, one voice; events are scheduled outside
    the timed region, as in the busy-voice figures."""
    from pathlib import Path

    from sensorsynth.instrument_file import load

    path = Path(__file__).resolve().parents[2] / "models" / "guitar.instrument"
    if not path.exists():
        print(f"(no {path.name}: fitted-performance figure skipped)")
        return
    inst = load(path)
    spec = inst.spec
    cs = inst.control_signal()
    frames = {int(f): cs[:, f] for f in np.flatnonzero(cs.any(axis=0))}
    times = []
    for _ in range(3):
        r = Renderer(inst, rate, block_size=block, max_voices=1, seed=0)
        for start in range(0, spec.n_samples, block):
            for t in range(start, start + block):
                if t % spec.control_hop == 0:
                    f = t // spec.control_hop
                    if f in frames:
                        r.control(t, 0, frames[f])
                    if t % spec.deformation_frame == 0:
                        r.deform(t, 0, inst.deformations[:, t // spec.deformation_frame])
            t0 = time.perf_counter()
            r.process()
            times.append(time.perf_counter() - t0)
    per = float(np.median(times))
    print(f"numba 1 thread, {path.name} replaying its fitted performance at block {block}: median "
          f"{per * 1e6:.1f} µs/block, p99 {np.percentile(times, 99) * 1e6:.1f} µs, realtime factor "
          f"{block / rate / per:.0f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", action="append", help="torch device(s) for the batched path (default: cpu)")
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.0, help="audio seconds per numba measurement")
    args = parser.parse_args()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    inst = seed_instrument()
    spec = inst.spec
    rate, block = spec.sample_rate, args.block
    budget = block / rate
    print(f"instrument: {spec.n_modes} oscillators, {rate} Hz, block {block} (budget {budget * 1e6:.0f} µs)")
    numba_voices(inst, 1, block, 0.1, rng)  # compile / load cache

    times = numba_voices(inst, 1, block, args.seconds, rng)
    per_block = float(np.median(times))
    p99 = float(np.percentile(times, 99))
    print(f"numba 1 thread, 1 voice: median {per_block * 1e6:.1f} µs/block, p99 {p99 * 1e6:.1f} µs "
          f"({p99 / budget * 100:.1f} % of budget), realtime factor {budget / per_block:.0f}×")

    # voices one core renders in realtime: all voices busy, median block time within the budget
    voices = max(1, int(budget / per_block))
    for _ in range(3):
        t = numba_voices(inst, voices, block, min(args.seconds, 0.5), rng)
        med = float(np.median(t))
        fit = max(1, int(voices * budget / med))
        if fit >= voices:
            break
        voices = fit
    t = numba_voices(inst, fit, block, min(args.seconds, 0.5), rng)
    print(f"numba 1 thread: {fit} busy voices in realtime: median {np.median(t) * 1e6:.0f} µs, "
          f"p99 {np.percentile(t, 99) * 1e6:.0f} µs per block of {budget * 1e6:.0f} µs "
          f"({np.median(t) / fit * 1e6:.1f} µs per voice-block)")

    fitted_performance(block, rate)

    for device in args.device or ["cpu"]:
        tblock = 256
        tb = tblock / rate
        for voices in (1, 16, 64, 256, 1024):
            if device == "cpu" and voices > 64:
                break
            per = torch_voices(inst, voices, tblock, 3 if device == "cpu" else 20, device, rng)
            print(f"torch {device} block {tblock}: {voices} voices {per * 1e3:.2f} ms/block "
                  f"→ {voices * tb / per:.1f} voices in realtime")


if __name__ == "__main__":
    main()
