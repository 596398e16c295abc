"""The streaming Renderer: exactness against the offline forward pass, polyphony, rates, noise, gain, safety."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sensorsynth.instrument_file import load
from sensorsynth.render import kernel as K
from sensorsynth.render.renderer import Renderer

from .instruments import (
    bundled_instruments,
    fitted_events,
    fixed_noise,
    make_instrument,
    offline,
    reference,
    rel_error,
    stream,
)

TOLERANCE = 1e-4
CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


def streaming_renderer(device, inst, rate, block, noise):
    if device == "cpu":
        return Renderer(inst, rate, block_size=block, max_voices=1, noise=noise, limit=None), np.asarray
    from sensorsynth.render.batched import BatchedRenderer

    return BatchedRenderer(inst, 1, rate, block_size=block, device=device, noise=noise, limit=None), (
        lambda t: t.cpu().numpy()
    )


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("rate", [22050, 44100])
@pytest.mark.parametrize("block", [16, 64, 100, 256, 1000, 4096])
def test_streaming_matches_offline_forward_pass(block, rate, device):
    inst, noise, ref = reference(0, rate)
    controls, deforms, n = fitted_events(inst, rate)
    assert len(controls) > 20 and np.ptp(inst.deformations) > 1.0  # sparse events, moving deformations
    if block in (100, 1000):
        assert any(t % block for t, _ in controls)  # events fall mid-block
    renderer, to_numpy = streaming_renderer(device, inst, rate, block, noise)
    out = stream(renderer, controls, deforms, n, to_numpy=to_numpy)
    assert out.shape == ref.shape
    assert rel_error(out, ref) <= TOLERANCE


def test_streaming_matches_offline_at_the_full_default_spec():
    inst = make_instrument(2)  # ModelSpec() defaults: 2**17 samples, 16 × 2 × 64 oscillators
    assert inst.spec.n_samples == 2**17 and inst.freq_hz.size == 2048
    rate = inst.spec.sample_rate
    noise = fixed_noise(inst, rate)
    ref = offline(inst, rate, noise)
    controls, deforms, n = fitted_events(inst, rate)
    out = stream(Renderer(inst, rate, block_size=256, noise=noise, limit=None), controls, deforms, n)
    assert rel_error(out, ref) <= TOLERANCE


@pytest.mark.parametrize(
    "path",
    bundled_instruments() or [pytest.param(None, marks=pytest.mark.skip(reason="no models/*.instrument yet"))],
    ids=lambda p: getattr(p, "name", "none"),
)
def test_bundled_instruments_match_offline(path):
    inst = load(path)
    rate = inst.spec.sample_rate
    noise = fixed_noise(inst, rate)
    ref = offline(inst, rate, noise)
    controls, deforms, n = fitted_events(inst, rate)
    out = stream(Renderer(inst, rate, block_size=100, noise=noise, limit=None), controls, deforms, n)
    assert rel_error(out, ref) <= TOLERANCE


def test_events_apply_at_their_exact_sample():
    inst, noise, _ = reference(0, 22050)
    outs = []
    for block in (7, 64, 512):
        r = Renderer(inst, block_size=block, noise=noise, limit=None)
        r.control(300, 0, np.eye(16, dtype=np.float32)[3])
        outs.append(r.render(1024))
    assert np.all(outs[0][:300] == 0) and outs[0][300] != 0
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], rtol=0, atol=1e-6)


def test_two_voices_sum_to_two_single_voice_renders():
    inst, noise, _ = reference(0, 22050)
    rng = np.random.default_rng(3)
    events = [(int(rng.integers(0, 6000)), rng.uniform(0, 1, 16) * (rng.uniform(size=16) < 0.3)) for _ in range(12)]
    both = Renderer(inst, block_size=100, max_voices=2, noise=noise, limit=None)
    singles = [Renderer(inst, block_size=100, max_voices=1, noise=noise, limit=None) for _ in range(2)]
    for i, (t, v) in enumerate(events):
        both.control(t, i % 2, v)
        singles[i % 2].control(t, 0, v)
    both.deform(2000, 1, [2.0, -1.0])
    singles[1].deform(2000, 0, [2.0, -1.0])
    mixed = both.render(8000)
    summed = singles[0].render(8000) + singles[1].render(8000)
    assert np.abs(mixed).max() > 0.1
    np.testing.assert_allclose(mixed, summed, rtol=0, atol=1e-5)


def test_two_instruments_play_side_by_side():
    a, b = make_instrument(0, n_samples=2**14), make_instrument(1, n_samples=2**14)
    noise = fixed_noise(a, 22050)
    duo = Renderer([a, b], block_size=64, max_voices=2, noise=noise, limit=None, voice_instruments=[0, 1])
    solo = [Renderer(x, block_size=64, noise=noise, limit=None) for x in (a, b)]
    v = np.linspace(0, 1, 16)
    for voice, r in enumerate(solo):
        duo.control(100, voice, v)
        r.control(100, 0, v)
    np.testing.assert_allclose(duo.render(4000), solo[0].render(4000) + solo[1].render(4000), atol=1e-5)


def spectral_centroid(x: np.ndarray, rate: int, below: float) -> float:
    mag = np.abs(np.fft.rfft(x))
    freq = np.fft.rfftfreq(x.size, 1 / rate)
    keep = freq < below
    return float((freq[keep] * mag[keep]).sum() / mag[keep].sum())


def test_sample_rate_consistency():
    inst = make_instrument(0, n_samples=2**14)
    renders = {}
    for rate in (22050, 44100):
        controls, deforms, n = fitted_events(inst, rate)
        renders[rate] = stream(Renderer(inst, rate, block_size=256, seed=5, limit=None), controls, deforms, n)
    lo, hi = renders[22050], renders[44100]
    assert hi.size == 2 * lo.size
    rms = lambda x: float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))  # noqa: E731
    assert abs(rms(hi) / rms(lo) - 1) < 0.2
    c_lo, c_hi = spectral_centroid(lo, 22050, 11025), spectral_centroid(hi, 44100, 11025)
    assert abs(c_hi / c_lo - 1) < 0.15


def test_fresh_noise_per_event_and_seeded_reproducibility():
    inst, _, _ = reference(0, 22050)
    v = np.eye(16, dtype=np.float32)[0]
    hop = 10000  # far apart: the first burst has died out before the second

    def play(seed):
        r = Renderer(inst, block_size=128, seed=seed, limit=None)
        r.control(0, 0, v)
        r.control(hop, 0, v)
        return r.render(2 * hop)

    a, b, c = play(1), play(1), play(2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    first, second = a[:2048], a[hop : hop + 2048]
    assert np.abs(first).max() > 0 and np.abs(second).max() > 0
    assert not np.allclose(first, second, atol=1e-4)  # each event drew its own noise
    # the fixed-noise option repeats the same burst
    r = Renderer(inst, block_size=128, noise=fixed_noise(inst, 22050), limit=None)
    r.control(0, 0, v)
    r.control(hop, 0, v)
    x = r.render(2 * hop)
    np.testing.assert_allclose(x[:2048], x[hop : hop + 2048], atol=1e-5)


def steady(renderer, blocks, on_block=None):
    out = []
    for i in range(blocks):
        if i % 4 == 0:
            renderer.control(renderer.time + 17, 0, np.full(16, 0.3))
        if on_block:
            on_block(i, renderer)
        out.append(renderer.process().copy())
    return np.concatenate(out)


def test_gain_change_is_click_free():
    inst, _, _ = reference(0, 22050)
    plain = steady(Renderer(inst, block_size=64, seed=0, limit=None), 80)
    changed = steady(Renderer(inst, block_size=64, seed=0, limit=None), 80, lambda i, r: i == 40 and r.set_gain(0, 0.0))
    np.testing.assert_array_equal(changed[: 40 * 64], plain[: 40 * 64])
    ramp = round(0.005 * 22050)
    assert np.all(changed[40 * 64 + ramp + 1 :] == 0)
    # during the ramp the output is the plain signal times a gain moving by ≤ 1/ramp per sample
    jump = np.abs(np.diff(changed)).max()
    assert jump <= np.abs(np.diff(plain)).max() + np.abs(plain).max() / ramp + 1e-6
    seg = slice(40 * 64, 40 * 64 + ramp)
    g = changed[seg] / np.where(plain[seg] == 0, 1, plain[seg])
    np.testing.assert_allclose(g[np.abs(plain[seg]) > 1e-2], (1 - np.arange(1, ramp + 1) / ramp)[np.abs(plain[seg]) > 1e-2], atol=1e-4)


def test_instrument_swap_cross_fades():
    a, b = make_instrument(0, n_samples=2**14), make_instrument(1, n_samples=2**14)
    r = Renderer([a, b], block_size=64, seed=0, crossfade_ms=20)
    out = steady(r, 120, lambda i, rr: i == 60 and rr.set_instrument(0, 1))
    plain = steady(Renderer([a, b], block_size=64, seed=0), 120)
    assert r.voice_instrument(0) == 1
    assert np.abs(np.diff(out)).max() <= 1.5 * np.abs(np.diff(plain)).max()
    assert r._fixed.views["vmeta"][r.max_voices, K.V_INST] == K.NO_INSTRUMENT  # the old tail was released
    assert np.abs(out[-2000:]).max() > 0  # the new instrument plays


def unstable(inst):
    decay = inst.decay_per_s.copy()
    decay[0, 0, 0] = -500.0  # a growing pole
    return dataclasses.replace(inst, decay_per_s=decay)


def test_unstable_instrument_is_reset_and_never_escapes():
    inst, _, _ = reference(0, 22050)
    r = Renderer(unstable(inst), block_size=256, seed=0)
    r.control(0, 0, np.full(16, 1.0))
    out = r.render(22050)
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0
    assert r.counters["resets"] >= 1


def test_nan_parameter_and_huge_control_values_are_contained():
    inst, _, _ = reference(0, 22050)
    gains = inst.gains.copy()
    gains[3] = np.nan
    r = Renderer(dataclasses.replace(inst, gains=gains), block_size=128, max_voices=2, seed=0)
    r.control(0, 0, np.full(16, 1.0))
    out = r.render(4096)
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0 and r.counters["resets"] >= 1

    r = Renderer(inst, block_size=128, max_voices=2, seed=0)
    r.control(0, 0, np.full(16, 1e30))
    r.control(0, 1, np.full(16, 0.5))
    out = r.render(8192)
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0
    assert r.counters["resets"] >= 1
    assert np.abs(out[4096:]).max() > 0  # the healthy voice keeps playing


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.control(0, 0, np.ones(15)),
        lambda r: r.control(0, 0, np.full(16, np.nan)),
        lambda r: r.control(0, 0, np.full(16, np.inf)),
        lambda r: r.control(0, 0, -np.ones(16)),
        lambda r: r.control(-1, 0, np.ones(16)),
        lambda r: r.control(1.5, 0, np.ones(16)),
        lambda r: r.control(0, 2, np.ones(16)),
        lambda r: r.control(0, -1, np.ones(16)),
        lambda r: r.control(0, "0", np.ones(16)),
        lambda r: r.control(0, 0, "loud"),
        lambda r: r.deform(0, 0, [1.0]),
        lambda r: r.deform(0, 0, [np.nan, 0.0]),
        lambda r: r.deform(-5, 0, [0.0, 0.0]),
        lambda r: r.set_gain(0, np.nan),
        lambda r: r.set_gain(0, -1.0),
        lambda r: r.set_gain(5, 1.0),
        lambda r: r.set_instrument(0, 3),
    ],
)
def test_bad_input_raises_and_leaves_state_alone(call):
    inst, noise, _ = reference(0, 22050)
    r = Renderer(inst, block_size=64, max_voices=2, noise=noise)
    clean = Renderer(inst, block_size=64, max_voices=2, noise=noise)
    for x in (r, clean):
        x.control(10, 0, np.full(16, 0.4))
    with pytest.raises(ValueError):
        call(r)
    assert r.pending == clean.pending == 1
    np.testing.assert_array_equal(r.render(2048), clean.render(2048))


def test_queue_overflow_drops_and_counts():
    inst, _, _ = reference(0, 22050)
    r = Renderer(inst, block_size=64, queue_size=4, seed=0)
    accepted = [r.control(t, 0, np.full(16, 0.1)) for t in range(0, 600, 100)]
    assert accepted == [True] * 4 + [False] * 2
    assert r.counters["dropped"] == 2 and r.pending == 4
    out = r.render(640)
    assert np.all(np.isfinite(out)) and r.pending == 0 and r.counters["events"] == 4
    assert r.control(r.time, 0, np.full(16, 0.1))  # room again


def test_late_events_play_at_the_next_block_and_are_counted():
    inst, noise, _ = reference(0, 22050)
    r = Renderer(inst, block_size=64, noise=noise, limit=None)
    r.render(640)
    r.control(10, 0, np.full(16, 0.5))
    assert r.counters["late"] == 0
    block = r.process()
    assert r.counters["late"] == 1 and np.abs(block).max() > 0


def test_process_returns_its_own_buffer():
    inst, _, _ = reference(0, 22050)
    r = Renderer(inst, block_size=32, seed=0)
    a = r.process()
    b = r.process()
    assert a is b and a.dtype == np.float32 and a.shape == (32,)
