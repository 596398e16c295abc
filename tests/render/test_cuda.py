"""The CUDA renderer against the numba CPU renderer: on a GPU where there is one, else under numba's CUDA
simulator (the same kernels, run on the CPU in Python: slow, so the instruments are tiny and the renders
short).

``NUMBA_ENABLE_CUDASIM`` must be in numba's configuration when ``numba.cuda`` is first imported (numba reads
its environment once, when numba itself is imported, so it is read again here), and only then: the variable
is removed again at once, so the other tests' subprocesses (``serve --device cuda`` on a machine without a
GPU must fail) never inherit it. A machine with the CUDA driver library runs the real thing.
"""

from __future__ import annotations

import copy
import ctypes.util
import os
import sys

import numpy as np
import pytest

SIMULATE = "NUMBA_ENABLE_CUDASIM" not in os.environ and not ctypes.util.find_library("cuda")
if SIMULATE and "numba.cuda" not in sys.modules:
    from numba.core import config as numba_config

    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    try:
        numba_config.reload_config()
        from numba import cuda
    finally:
        del os.environ["NUMBA_ENABLE_CUDASIM"]
else:
    from numba import cuda

from sensorsynth.instrument_file import AttackNoise  # noqa: E402
from sensorsynth.render import kernel as K  # noqa: E402
from sensorsynth.render.renderer import Renderer  # noqa: E402

from .instruments import fixed_noise, make_instrument, rel_error  # noqa: E402

pytestmark = [  # under the simulator each case takes seconds: the full suite runs them, the fast lane does not
    pytest.mark.slow,
    pytest.mark.skipif(not cuda.is_available(), reason="numba.cuda has no device and is not simulated"),
]
SIMULATED = "simulator" in cuda.stream.__module__
TOLERANCE = 1e-4
# tiny instruments: the simulator runs every GPU thread as a Python thread
TINY = dict(n_samples=2**12, control_plane_dim=3, n_resonances=2, expressivity=2, n_oscillators=3, attack_size=64,
            attack_frames=16, control_hop=64, deformation_frame=64)
OTHER = dict(TINY, control_plane_dim=4, n_resonances=3, expressivity=3, n_oscillators=2, attack_size=96)
BIGGER = dict(TINY, control_plane_dim=5, n_resonances=3, expressivity=2, n_oscillators=4, attack_size=160)


def tiny(seed: int, **kw):
    return make_instrument(seed, active=10, **(kw or TINY))


def pair(instruments, shared_floats=6144, threads=None, **kw):
    from sensorsynth.render.cuda.renderer import CudaRenderer

    kw = dict(dict(block_size=48, max_voices=2, seed=3, limit=None), **kw)
    return Renderer(instruments, **kw), CudaRenderer(instruments, shared_floats=shared_floats, threads=threads, **kw)


def events(rng, r, voice_k, voice_e, t0, block):
    """A few control events mid-block and a moving deformation, as (method, args) calls."""
    calls = []
    for v, k in enumerate(voice_k):
        vector = rng.uniform(0, 1, k) * (rng.uniform(size=k) < 0.7)
        calls.append(("control", (t0 + int(rng.integers(0, block)), v, vector)))
        calls.append(("deform", (t0 + int(rng.integers(0, block)), v, rng.normal(size=voice_e[v]) * 2)))
    return calls


def play_both(cpu, gpu, blocks, schedule):
    """Render ``blocks`` blocks on both; ``schedule(i, renderer)`` is called on each before its block i."""
    outs = ([], [])
    for i in range(blocks):
        for r, o in zip((cpu, gpu), outs):
            schedule(i, r)
            o.append(r.process().copy())
    return np.concatenate(outs[0]), np.concatenate(outs[1])


def sizes(r, v):
    spec = r.instruments[r.voice_instrument(v)].spec
    return spec.control_plane_dim, spec.expressivity


@pytest.mark.parametrize("noise", ["fresh", "fixed", "owned", "fresh-chunked", "fresh-lanes"])
def test_matches_the_cpu_renderer_with_events_mid_block_and_moving_deformations(noise):
    """Three voices on two instruments of different sizes. "chunked": little shared memory, so each voice
    block works through the block in three chunks (state carried across them in global memory). "lanes": 8
    threads per voice block, so the 4 groups of the smaller instrument get 2 lanes each (partial sums, one
    oscillator pair and one single per group) and the 9 groups of the larger one take turns on 8 threads."""
    a, b = tiny(0), tiny(1, **OTHER)
    kw = {"chunked": {"shared_floats": 16 * (3 + 9 + 3)}, "lanes": {"threads": 8}}.get(noise.partition("-")[2], {})
    if noise == "fixed":
        kw["noise"] = fixed_noise(b, b.spec.sample_rate)  # (K, A) of the larger instrument: enough for both
    if noise == "owned":
        a = copy.copy(a)
        a.manifest = a.manifest.model_copy(update={"attack_noise": AttackNoise(seed=11)})
    cpu, gpu = pair([a, b], max_voices=3, voice_instruments=[0, 1, 0], **kw)
    rng = np.random.default_rng(1)

    def schedule(i, r):
        if i % 3 == 0:
            state = rng.bit_generator.state
            for name, args in events(rng, r, [sizes(r, v)[0] for v in range(3)], [sizes(r, v)[1] for v in range(3)],
                                     r.time, r.block_size):
                assert getattr(r, name)(*args)
            if r is cpu:
                rng.bit_generator.state = state  # the same events for both

    want, got = play_both(cpu, gpu, 10, schedule)
    assert np.abs(want).max() > 0.05
    assert rel_error(got, want) <= TOLERANCE
    assert gpu.counters == cpu.counters


def test_inbox_messages_gain_and_instrument_swaps_match():
    """Events, gains and instrument changes through the inbox (drained at block starts, in posting order),
    and direct calls on the audio thread, produce the CPU renderer's block and counters."""
    a, b = tiny(0), tiny(1, **OTHER)
    cpu, gpu = pair([a, b], max_voices=2, queue_size=64)
    rng = np.random.default_rng(2)

    def schedule(i, r):
        state = rng.bit_generator.state
        t = r.time
        if i == 0:
            assert r.inbox.control(t + 5, 0, [0.9, 0.2, 0.5]) and r.inbox.control(t + 30, 1, [0.3, 0.0, 0.8])
        if i == 2:
            assert r.inbox.gain(0, 0.5, ramp_ms=1.0) and r.inbox.deform(t + 7, 1, [1.0, -1.0])
        if i == 3:
            assert r.control(t + 60, 1, [0.3, 0.3, 0.3])  # due after the swap below: the wrong size, counted
            assert r.inbox.instrument(1, 1)  # voice 1 cross-fades to instrument 1 (its tail rings out)
            assert r.inbox.control(t + 20, 1, rng.uniform(0, 1, 4))
            assert r.inbox.deform(t + 21, 1, rng.normal(size=3), immediate=True)
        if i == 5:
            r.set_instrument(0, 1)
            r.control(t + 3, 0, rng.uniform(0, 1, 4))
        if i == 7:
            r.reset(1)
            r.control(t - 10, 1, rng.uniform(0, 1, 4))  # late: plays at the block start, counted
        if r is cpu:
            rng.bit_generator.state = state

    with pytest.raises(ValueError):
        gpu.control(gpu.time, 1, [1.0, 1.0, 1.0, 1.0])
    want, got = play_both(cpu, gpu, 12, schedule)
    assert np.abs(want).max() > 0.05
    assert rel_error(got, want) <= TOLERANCE
    assert gpu.counters == cpu.counters and gpu.counters["late"] == 1 and gpu.counters["mismatched"] == 1
    assert [gpu.voice_instrument(v) for v in range(2)] == [1, 1]


def test_hot_reload_to_larger_sizes_and_add_instrument_match():
    """replace_instrument with larger sizes (the GPU state grows and is migrated, the voices cross-fade) and
    add_instrument + select, from the producer side, as on the CPU."""
    a, b, big = tiny(0), tiny(1, **OTHER), tiny(3, **BIGGER)
    cpu, gpu = pair([a, b], max_voices=2, voice_instruments=[0, 1])

    def schedule(i, r):
        t = r.time
        if i == 0:
            r.control(t + 9, 0, [0.8, 0.4, 0.6])
            r.control(t + 13, 1, [0.5, 0.5, 0.5, 0.5])
        if i == 3:
            r.replace_instrument(1, big)
        if i == 4:
            r.inbox.control(t + 2, 1, np.linspace(0.2, 0.9, 5))
            index = r.add_instrument(tiny(4, **OTHER))
            assert index == 2 and r.inbox.instrument(0, index)
            assert r.inbox.control(t + 40, 0, [0.7, 0.1, 0.0, 0.3])

    want, got = play_both(cpu, gpu, 12, schedule)
    assert np.abs(want).max() > 0.05
    assert rel_error(got, want) <= TOLERANCE
    assert gpu.counters == cpu.counters
    assert [gpu.voice_instrument(v) for v in range(2)] == [2, 1]


def test_the_inbox_from_another_thread_while_the_audio_thread_plays():
    """One producer thread posts events and gains while this thread renders: every event is applied (some
    late, counted), none lost, nothing refused."""
    import threading

    _, gpu = pair(tiny(0), max_voices=2, limit=1.0)
    gpu.warmup()
    posted = threading.Event()

    def producer():
        for i in range(24):
            assert gpu.inbox.control(48 * 2 + 7 * i, i % 2, [0.5, 0.2, 0.1])
            if i % 8 == 0:
                assert gpu.inbox.gain(i % 2, 0.8)
        posted.set()

    thread = threading.Thread(target=producer)
    thread.start()
    out = [gpu.process().copy() for _ in range(3)]
    posted.wait(30)
    thread.join(30)
    out += [gpu.process().copy() for _ in range(3)]
    c = gpu.counters
    assert c["events"] == 24 and c["dropped"] == 0 and c["inbox_full"] == 0 and c["mismatched"] == 0
    assert gpu.inbox.waiting == 0 and np.abs(np.concatenate(out)).max() > 0.01


def test_a_blown_up_voice_is_reset_and_the_output_stays_contained():
    inst = tiny(0)
    _, gpu = pair(inst, max_voices=2, limit=1.0)
    gpu.control(0, 0, np.full(3, 1e30))  # huge: state beyond STATE_LIMIT, never NaN out
    gpu.control(0, 1, np.full(3, 0.5))
    out = gpu.render(48 * 6)
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0
    assert gpu.counters["resets"] >= 1 and gpu.counters["scrubbed"] == 0
    assert np.abs(out).max() > 0.01  # voice 1 still plays


def test_the_kernels_compile_for_a_real_gpu():
    """What the simulator cannot see: every kernel types, lowers and compiles to PTX for Hopper (sm_90) with
    the real compiler, in float32 only. No GPU needed (a fresh process: this one may hold the simulator)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-m", "sensorsynth.render.cuda.ptx", "9.0"], capture_output=True, text=True,
                       timeout=300, env=env)
    if r.returncode and any(s in r.stderr for s in ("nvrtc", "nvvm", "NVVM", "DynamicLibNotFound")):
        pytest.skip(f"no CUDA toolkit (NVVM/NVRTC) to compile with: pip install 'numba-cuda[cu12]' ({r.stderr[-200:]})")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["ops_kernel", "block_kernel"], r.stdout
    assert all("sm_90, 0 float64 instructions" in line for line in lines), r.stdout


def test_warmup_changes_nothing_and_latency_one_returns_the_previous_block():
    inst = tiny(0)
    cpu, gpu = pair(inst, max_voices=1)
    from sensorsynth.render.cuda.renderer import CudaRenderer

    late = CudaRenderer(inst, block_size=48, max_voices=1, seed=3, limit=None, latency_blocks=1)
    for r in (cpu, gpu, late):
        r.warmup()
        r.control(5, 0, [1.0, 0.5, 0.25])
    want = np.concatenate([cpu.process().copy() for _ in range(4)])
    got = np.concatenate([gpu.process().copy() for _ in range(4)])
    lagged = np.concatenate([late.process().copy() for _ in range(5)])
    assert gpu.time == cpu.time == 4 * 48
    assert rel_error(got, want) <= TOLERANCE
    assert np.all(lagged[:48] == 0) and rel_error(lagged[48:], want) <= TOLERANCE
    with pytest.raises(ValueError):
        CudaRenderer(inst, latency_blocks=2)
    assert K.NO_INSTRUMENT == -1  # the GPU slot table marks an unplayed slot with it
