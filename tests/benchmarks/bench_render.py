"""Renderer figures (a script, not collected by pytest):

    python tests/benchmarks/bench_render.py                  # the numba CPU renderer
    python tests/benchmarks/bench_render.py --device cuda    # + the numba-cuda renderer, beside its targets
    python tests/benchmarks/bench_render.py --torch cpu      # + the batched torch path

numba runs single-threaded. A seed-size instrument (default ModelSpec: 16 resonances × 2 × 64 = 2048
oscillators) at 22050 Hz, every voice kept busy (a control event on every control hop, deformations moving),
so no voice is skipped as silent. Each measurement runs a few seconds at most.

``--device cuda`` prints, for the CUDA renderer: busy voices in realtime at block 64 and 256 (the largest
count whose median ``process()`` — host plan, copies, kernels, the wait — fits the block's duration), one
voice's time per block (wall and GPU), each beside its target (≥ 5,000 voices at block 64, ≥ 10,000 at 256,
one voice ≤ 50 µs a block), and the CPU renderer's figures at the same block sizes. Under numba's CUDA
simulator (NUMBA_ENABLE_CUDASIM=1, no GPU) it runs a tiny smoke configuration instead and says so: the
simulator proves the kernels, not their speed.
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


TARGETS = {64: 5000, 256: 10000}  # busy seed-size voices in realtime on one H100/H200 (issue 21)
ONE_VOICE_TARGET_US = 50.0


def cuda_times(inst, voices: int, block: int, blocks: int, rng, **kw) -> tuple[np.ndarray, list[float]]:
    """Per-block wall times (s) of CudaRenderer.process() with every voice busy, and the GPU times (µs)."""
    from sensorsynth.render.cuda.renderer import CudaRenderer

    spec = inst.spec
    per_block = -(-block // spec.control_hop) + 1
    r = CudaRenderer(inst, spec.sample_rate, block_size=block, max_voices=voices, seed=0,
                     queue_size=max(4096, 4 * voices * per_block), **kw)
    r.warmup()
    times, gpu = np.empty(blocks), []
    for i in range(blocks + 2):
        busy_events(r, r.time, r.time + block, voices, spec.control_plane_dim, spec.expressivity, spec.control_hop, rng)
        t = time.perf_counter()
        r.process()
        if i >= 2:  # warm-up
            times[i - 2] = time.perf_counter() - t
            if r.gpu_us is not None:
                gpu.append(r.gpu_us)
    return times, gpu


def cuda_figures(blocks_sizes: list[int], rng, **kw) -> None:
    """The CUDA renderer's figures beside the targets, and the CPU renderer's at the same block sizes. Under
    the simulator the same code runs a tiny configuration (a tiny instrument, 2 voices, 3 blocks), labelled."""
    from numba import cuda

    from sensorsynth.render.cuda import device_name

    if not cuda.is_available():
        print("cuda: numba.cuda finds no GPU here (NUMBA_ENABLE_CUDASIM=1 runs a smoke test on the simulator)")
        return
    simulated = "simulator" in cuda.stream.__module__
    targets, one_voice_blocks, many_blocks, cpu_seconds = TARGETS, 50, 10, 0.3
    if simulated:
        from tests.render.test_cuda import TINY

        inst = to_instrument(ResonanceModel(ModelSpec(**TINY), parameterization="seed",
                                            generator=torch.Generator().manual_seed(0)), "tiny")
        targets, one_voice_blocks, many_blocks, cpu_seconds = {b: 2 for b in blocks_sizes}, 3, 3, 0.05
        print("cuda: SIMULATOR SMOKE TEST (NUMBA_ENABLE_CUDASIM=1): a tiny instrument, 2 voices, 3 blocks; every "
              "figure below is the simulator's, not a GPU's, and says nothing about the targets")
    else:
        inst = seed_instrument()
    spec = inst.spec
    rate = spec.sample_rate
    print(f"cuda: {device_name()}; {'a tiny' if simulated else 'seed-size'} instrument ({spec.n_modes} "
          f"oscillators) at {rate} Hz, every voice busy")
    for block in blocks_sizes:
        budget = block / rate
        t, gpu = cuda_times(inst, 1, block, one_voice_blocks, rng, **kw)
        one = float(np.median(t)) * 1e6
        g = f", GPU {np.median(gpu):.1f} µs" if gpu else ""
        one_verdict = "simulator: no verdict" if simulated else \
            f"target ≤ {ONE_VOICE_TARGET_US:.0f} µs: {'met' if one <= ONE_VOICE_TARGET_US else 'NOT met'}"
        print(f"cuda block {block}: 1 voice {one:.1f} µs/block wall{g} ({one_verdict})")
        # the target count first, then the count its timing extrapolates to (at most 3× the target: the
        # excitation rings alone take ~0.5 MB a voice), measured too: both printed, neither hidden
        target = targets.get(block, 1000)
        counts = [target]
        for voices in counts:
            t, gpu = cuda_times(inst, voices, block, many_blocks, rng, **kw)
            med = float(np.median(t))
            g = f", GPU median {np.median(gpu) / 1e3:.2f} ms" if gpu else ""
            realtime = med <= budget
            verdict = f"target ≥ {target}: {'met' if realtime and voices >= target else 'NOT met'}"
            verdict = "simulator: no verdict" if simulated else verdict
            print(f"cuda block {block}: {voices} busy voices: median {med * 1e3:.2f} ms per block of "
                  f"{budget * 1e3:.2f} ms{g} → {'realtime' if realtime else 'NOT realtime'} ({verdict})")
            if len(counts) == 1:
                estimate = max(1, int(voices * budget / med))
                if abs(estimate - voices) > 0.05 * voices:
                    counts.append(min(estimate, 3 * target))
                    print(f"cuda block {block}: the timing above extrapolates to {estimate} voices in realtime"
                          f"{' (measured at 3× the target)' if estimate > 3 * target else ''}; measuring that:")
        cpu = numba_voices(inst, 1, block, cpu_seconds, rng)
        per = float(np.median(cpu))
        print(f"cpu (numba, 1 thread) block {block}: 1 voice {per * 1e6:.1f} µs/block, about "
              f"{max(1, int(budget / per))} busy voices in realtime on one core")


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


# flops per oscillator and sample in the kernel's recursion (kernel.oscillator_bank): the difference update
# (two multiply-adds), the state update (one add), the output (two multiply-adds): 9. The model's complex
# one-pole form, which the kernel ran before, does 11 (Re and Im: a multiply and two multiply-adds each, and
# the output sum): the ceiling of "about 200×" counts those.
FLOPS_PER_OSC_SAMPLE = 9
FLOPS_COMPLEX_FORM = 11
CEILING_GFLOPS = 96.0  # issue 22's figure for one AVX-512 core in fp32; --peak-gflops for another machine's


def oscillator_loop(inst, block: int, peak_gflops: float) -> None:
    """The oscillator loop alone (kernel.resonate, every group driven, state ringing) on the instrument's own
    poles, in a compiled loop: µs per block, GFLOP/s and the fraction of the arithmetic ceiling, and the
    realtime factor the oscillators alone would allow."""
    from numba import njit

    from sensorsynth.instrument.playback import playback
    from sensorsynth.render import kernel as K

    p = playback(inst)
    r, e, m = p.poles.shape
    g = r * e
    bank = K.oscillator_bank(p.poles.reshape(g, m), p.coef.reshape(g, m))
    rng = np.random.default_rng(1)
    dry = rng.normal(size=(64, r, block)).astype(np.float32) * 0.1
    active = np.ones(r, np.float32)

    @njit(cache=False)
    def run(reps, b, su, sd, tr, ti, dry, wet, active):
        for i in range(reps):
            K.resonate(b.ku, b.kd, b.cu, b.cd, b.tail, b.tail_pr, b.tail_pi, b.tail_cr, b.tail_ci, su, sd, tr, ti,
                       dry[i % 64], wet, active, g, e, m, block, i % K.SCAN_EVERY == 0)

    state = [np.zeros(n, np.float32) for n in (g * m, g * m, bank.tail[-1], bank.tail[-1])]
    wet = np.zeros((g, block), np.float32)
    run(10, bank, *state, dry, wet, active)
    times = []
    for _ in range(9):
        t = time.perf_counter()
        run(500, bank, *state, dry, wet, active)
        times.append((time.perf_counter() - t) / 500)
    per = float(np.median(times))
    gflops = FLOPS_PER_OSC_SAMPLE * g * m * block / per / 1e9
    rate = inst.spec.sample_rate
    print(f"oscillator loop alone ({g * m} oscillators, block {block}): median {per * 1e6:.1f} µs/block "
          f"(best {min(times) * 1e6:.1f}), {gflops:.0f} GFLOP/s at {FLOPS_PER_OSC_SAMPLE} flops an oscillator-sample "
          f"= {gflops / peak_gflops * 100:.0f} % of the {peak_gflops:.0f} GFLOP/s ceiling; the oscillators alone "
          f"would play {block / rate / per:.0f}× realtime (ceiling {peak_gflops * 1e9 / (FLOPS_PER_OSC_SAMPLE * g * m * rate):.0f}×; "
          f"the complex form's: {peak_gflops * 1e9 / (FLOPS_COMPLEX_FORM * g * m * rate):.0f}×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: also the numba-cuda renderer's figures beside its targets")
    parser.add_argument("--torch", action="append", help="torch device(s) for the batched path (default: none)")
    parser.add_argument("--threads", type=int, help="cuda: threads per voice block (default: the renderer's)")
    parser.add_argument("--shared-floats", type=int, default=6144, help="cuda: shared memory per voice block (floats)")
    parser.add_argument("--latency-blocks", type=int, default=0, choices=[0, 1],
                        help="cuda: 1 lets the host plan the next block while the GPU renders this one")
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.0, help="audio seconds per numba measurement")
    parser.add_argument("--peak-gflops", type=float, default=CEILING_GFLOPS,
                        help="one core's fp32 peak, for the oscillator loop's fraction of the ceiling")
    args = parser.parse_args()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    inst = seed_instrument()
    spec = inst.spec
    rate, block = spec.sample_rate, args.block
    budget = block / rate
    if args.device == "cuda":
        cuda_figures([64, 256], rng, threads=args.threads, shared_floats=args.shared_floats,
                     latency_blocks=args.latency_blocks)
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
    oscillator_loop(inst, block, args.peak_gflops)

    for device in args.torch or []:
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
