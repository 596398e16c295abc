"""Several output channels in the compiled kernel: the multichannel mix against a plain numpy reference, the
placement ramps, the per-channel master gains, and the level cap's limiter on hostile input.

Tolerances: the mix is compared with float64 sums of the same float32 voices, ≤ 1e-5 absolute on signals of
order 1 (the kernel sums voices in float32, in slot order); a ramp is compared with its exact straight line,
≤ 1e-4 relative (the kernel accumulates its float32 step); the limiter's cap is exact (no sample above it)."""

from __future__ import annotations

import numpy as np
import pytest

from sensorsynth.instrument_file import load
from sensorsynth.render import kernel as K
from sensorsynth.render import placement
from sensorsynth.render.renderer import Renderer

from .instruments import MODELS

RATE = 22050
BLOCK = 64


@pytest.fixture(scope="module")
def guitar():
    return load(MODELS / "guitar.instrument")


def events(k: int, voices: int, seed: int = 5) -> list[tuple[int, int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(1000 + 700 * i, i % voices, rng.uniform(0.0, 2.0, k).astype(np.float32)) for i in range(12)]


def play(r: Renderer, evs, n: int) -> np.ndarray:
    for t, v, vec in evs:
        r.control(t, v, vec)
    return r.render(n)


def test_mono_is_the_default_and_keeps_its_shape(guitar):
    r = Renderer(guitar, RATE, block_size=BLOCK, max_voices=2)
    assert r.channels == 1 and r.process().shape == (BLOCK,)
    r3 = Renderer(guitar, RATE, block_size=BLOCK, max_voices=2, channels=3)
    assert r3.process().shape == (3, BLOCK)
    assert r3.render(100).shape == (3, 100)
    with pytest.raises(ValueError, match="shape"):
        Renderer(guitar, RATE, max_voices=2, channels=3, voice_pans=np.ones((2, 2)))
    with pytest.raises(ValueError):
        Renderer(guitar, RATE, max_voices=2, channels=65)


def test_multichannel_mix_equals_the_numpy_reference(guitar):
    voices, channels, n = 4, 5, RATE
    pans = np.stack([placement.ring_gains(0.13 + 0.21 * v, channels) for v in range(voices)])
    pans[3] = placement.fixed_gains(4, channels)
    k = guitar.spec.control_plane_dim
    evs = events(k, voices)
    multi = play(Renderer(guitar, RATE, block_size=BLOCK, max_voices=voices, seed=3, channels=channels,
                          voice_pans=pans, limit=None), evs, n)  # fmt: skip
    ref = np.zeros((channels, n), np.float64)
    for v in range(voices):  # each voice alone, mono, with the very same events (so the same noise draws)
        solo = Renderer(guitar, RATE, block_size=BLOCK, max_voices=voices, seed=3, limit=None)
        for u in range(voices):
            if u != v:
                solo.set_gain(u, 0.0)
        mono = play(solo, evs, n).astype(np.float64)
        assert np.abs(mono).max() > 0.01, "every voice plays"
        ref += pans[v][:, None] * mono[None, :]
    err = np.abs(multi - ref).max()
    assert err <= 1e-5, err
    assert np.abs(multi[4]).max() > 0.01
    # a channel no voice reaches stays exactly silent
    quiet = Renderer(guitar, RATE, block_size=BLOCK, max_voices=2, seed=3, channels=3,
                     voice_pans=[[1, 0, 0], [0, 1, 0]], limit=None)  # fmt: skip
    out = play(quiet, events(k, 2), n // 2)
    assert not np.any(out[2]) and np.abs(out[:2]).max() > 0.01


def test_a_pan_ramps_in_a_straight_line(guitar):
    ramp_ms = 20.0
    k = guitar.spec.control_plane_dim
    r = Renderer(guitar, RATE, block_size=BLOCK, max_voices=1, seed=1, channels=2, voice_pans=[[1, 0]],
                 limit=None)  # fmt: skip
    mono = Renderer(guitar, RATE, block_size=BLOCK, max_voices=1, seed=1, limit=None)
    vec = np.full(k, 1.0, np.float32)
    for x in (r, mono):
        x.control(0, 0, vec)
    t0 = 10 * BLOCK
    a = r.render(t0)
    b = mono.render(t0)
    assert np.array_equal(a[0], b) and not np.any(a[1])
    assert r.inbox.pan(0, [0.0, 1.0], ramp_ms)  # applied at the next block start
    a = r.render(RATE // 4)
    b = mono.render(RATE // 4).astype(np.float64)
    ramp = round(ramp_ms * 1e-3 * RATE)
    up = np.minimum(1.0, np.arange(1, b.size + 1) / ramp)
    assert np.allclose(a[1], b * up, atol=1e-4 * np.abs(b).max())
    assert np.allclose(a[0], b * (1.0 - up), atol=1e-4 * np.abs(b).max())
    assert not np.any(a[0, ramp + 1 :]), "the old channel ends at exactly 0"
    with pytest.raises(ValueError):
        r.inbox.pan(0, [0.5], ramp_ms)  # one gain per channel
    with pytest.raises(ValueError):
        r.set_pan(0, [float("nan"), 1.0])


def test_master_gains_scale_each_channel(guitar):
    k = guitar.spec.control_plane_dim
    pans = [[1.0, 1.0, 1.0]]
    plain = Renderer(guitar, RATE, block_size=BLOCK, max_voices=1, seed=2, channels=3, voice_pans=pans, limit=None)
    mastered = Renderer(guitar, RATE, block_size=BLOCK, max_voices=1, seed=2, channels=3, voice_pans=pans,
                        limit=None)  # fmt: skip
    assert mastered.inbox.output_gain(1, 0.5, 0.0) and mastered.inbox.output_gain(2, 0.0, 0.0)
    a = play(plain, [(0, 0, np.ones(k, np.float32))], RATE // 4)
    b = play(mastered, [(0, 0, np.ones(k, np.float32))], RATE // 4)
    assert np.array_equal(a[0], b[0])
    assert np.allclose(b[1][1:], 0.5 * a[1][1:], atol=1e-7)  # a ramp of one sample
    assert not np.any(b[2][1:])
    with pytest.raises(ValueError):
        mastered.inbox.output_gain(3, 1.0)


@pytest.mark.parametrize("cap", [0.5, 10 ** (-1 / 20), 1e-3])
def test_the_limiter_never_exceeds_the_cap_on_hostile_input(guitar, cap):
    voices, channels = 8, 8
    k = guitar.spec.control_plane_dim
    r = Renderer(guitar, RATE, block_size=BLOCK, max_voices=voices, seed=4, channels=channels,
                 voice_pans=np.full((voices, channels), 16.0), limit=None)  # every voice at gain 16 on every channel
    r.set_level_cap(cap)
    for v in range(voices):
        r.set_gain(v, 16.0)
    for i in range(64):
        r.control(BLOCK * i, i % voices, np.full(k, 1e4, np.float32))
    worst = 0.0
    for _ in range(RATE // BLOCK):
        block = r.process()
        assert np.all(np.isfinite(block))
        worst = max(worst, float(np.abs(block).max()))
    cap32 = float(np.float32(cap))  # the cap as the kernel holds it (float32)
    assert worst <= cap32, (worst, cap32)
    assert worst > 0.99 * cap32, "the limiter turns down to the cap, not to silence"
    assert r.counters["limited"] > 0
    g = r.take_gain_reduction()
    assert g < 1e-3, g  # the signal was hundreds of times above the cap
    assert r.take_gain_reduction() >= g, "a read starts a new count"


def test_the_limiter_is_transparent_below_the_cap_and_recovers(guitar):
    k = guitar.spec.control_plane_dim
    quiet = np.full(k, 0.05, np.float32)
    a = Renderer(guitar, RATE, block_size=BLOCK, max_voices=1, seed=6)
    b = Renderer(guitar, RATE, block_size=BLOCK, max_voices=1, seed=6)
    b.set_level_cap(0.99)
    x, y = play(a, [(0, 0, quiet)], RATE // 2), play(b, [(0, 0, quiet)], RATE // 2)
    assert np.abs(x).max() < 0.99 and np.array_equal(x, y), "below the cap: bit for bit the same"
    assert b.counters["limited"] == 0 and b.take_gain_reduction() == 1.0
    # a loud burst, then the gain comes back to exactly 1 (release 250 ms)
    b.set_level_cap(0.1)
    b.control(b.time, 0, np.full(k, 50.0, np.float32))
    loud = b.render(RATE // 4)
    assert np.abs(loud).max() <= 0.1 and b.counters["limited"] > 0
    b.reset()  # silence: nothing holds the gain down any more
    b.render(RATE * 3)  # 12 time constants of the 250 ms release: within 1e-4 of 1, where it snaps to 1
    assert b.fixed_view("limiter")[K.L_GAIN] == 1.0
    b.set_level_cap(None)
    assert b.level_cap is None
    with pytest.raises(ValueError):
        b.set_level_cap(float("nan"))
