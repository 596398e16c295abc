"""The torch batched path against the numba renderer and the offline forward pass, on CPU and CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sensorsynth.render.batched import BatchedRenderer
from sensorsynth.render.renderer import Renderer

from .instruments import fixed_noise, make_instrument, rel_error

pytestmark = pytest.mark.slow  # torch's batched renderer against the numba one: seconds per case on a CPU

TOLERANCE = 1e-4
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def random_performance(n_voices, n_samples, seed=0):
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(8 * n_voices):
        v = rng.uniform(0, 1, 16) * (rng.uniform(size=16) < 0.3)
        events.append((int(rng.integers(0, n_samples - 2000)), int(rng.integers(0, n_voices)), "control", v))
    for _ in range(4 * n_voices):
        logits = rng.normal(size=2) * 2
        events.append((int(rng.integers(0, n_samples - 2000)), int(rng.integers(0, n_voices)), "deform", logits))
    return sorted(events, key=lambda e: e[0])


def play(renderer, events, n_samples, to_numpy):
    for t, voice, kind, x in events:
        getattr(renderer, kind)(t, voice, x)
    b = renderer.block_size
    return np.concatenate([to_numpy(renderer.process()).copy() for _ in range(-(-n_samples // b))])[:n_samples]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block", [100, 256, 300])
def test_batched_matches_numba_renderer(block, device):
    insts = [make_instrument(0, n_samples=2**14), make_instrument(1, n_samples=2**14)]
    noise = fixed_noise(insts[0], 22050)
    assign = [0, 1, 0, 1]
    n = 12000
    events = random_performance(len(assign), n)
    kw = dict(block_size=block, noise=noise, limit=None, voice_instruments=assign)
    want = play(Renderer(insts, 22050, max_voices=len(assign), **kw), events, n, np.asarray)
    got = play(BatchedRenderer(insts, len(assign), 22050, device=device, **kw), events, n, lambda t: t.cpu().numpy())
    assert np.abs(want).max() > 0.5
    assert rel_error(got, want) <= TOLERANCE


@pytest.mark.parametrize("device", DEVICES)
def test_batched_voices_sum_and_are_contained(device):
    inst = make_instrument(0, n_samples=2**14)
    r = BatchedRenderer(inst, 3, block_size=128, device=device, seed=0)
    r.control(0, 0, np.full(16, 1e30))  # huge: reset, never NaN
    r.control(0, 1, np.full(16, 0.5))
    outs = [r.process() for _ in range(40)]
    out = torch.cat(outs).cpu().numpy()
    assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0 and r.resets >= 1
    assert r.voices_out.shape == (3, 128)
    with pytest.raises(ValueError):
        r.control(0, 3, np.ones(16))
    with pytest.raises(ValueError):
        r.control(-1, 0, np.ones(16))
    with pytest.raises(ValueError):
        r.deform(0, 0, [np.nan, 1.0])
