"""Whole performances through the Renderer: the fitted reconstruction and the seed's random performance."""

from __future__ import annotations

import numpy as np
import pytest

from sensorsynth.instrument.playback import spec_at_rate
from sensorsynth.render.performance import RANDOM_EVENTS, random_events, render_random, render_reconstruction

from .instruments import make_instrument, reference, rel_error

TOLERANCE = 1e-4


@pytest.mark.parametrize("rate", [22050, 44100])
def test_reconstruction_with_fixed_noise_is_the_offline_forward_pass(rate):
    inst, noise, ref = reference(0, rate)
    out = render_reconstruction(inst, rate, noise=noise, limit=None)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert rel_error(out, ref) <= TOLERANCE


@pytest.mark.parametrize("fresh_noise", [False, True])
def test_reconstruction_noise_is_seeded_and_clipped(fresh_noise):
    inst, _, ref = reference(0, 22050)
    a = render_reconstruction(inst, seed=3, fresh_noise=fresh_noise)
    b = render_reconstruction(inst, seed=3, fresh_noise=fresh_noise)
    c = render_reconstruction(inst, seed=4, fresh_noise=fresh_noise)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0 and np.all(np.isfinite(a))
    # another noise draw: same loudness as the offline render, not the same samples
    assert 0.5 < np.std(a) / np.std(ref) < 2.0


def test_default_reconstruction_shares_one_burst_per_dimension_like_the_fit():
    inst, _, _ = reference(0, 22050)
    spec = inst.spec
    noise = np.random.default_rng(5).uniform(-1.0, 1.0, (spec.control_plane_dim, spec.attack_size))
    shared = render_reconstruction(inst, seed=5, limit=None)
    assert np.array_equal(shared, render_reconstruction(inst, noise=noise.astype(np.float32), limit=None))


def test_random_performance_events_follow_the_seed():
    inst = make_instrument(0, n_samples=2**14)
    n, events = random_events(inst, 2.0, seed=0)
    assert n == 44100
    vectors = np.array([v for _, v in events])
    assert np.count_nonzero(vectors) == RANDOM_EVENTS
    peak = inst.control_value.max()
    active = vectors[vectors > 0]
    assert np.all(active >= 0.9 * peak - 1e-6) and np.all(active <= peak + 1e-6)
    hop = spec_at_rate(inst.spec, 22050).control_hop
    assert all(t % hop == 0 and 0 <= t < n for t, _ in events)


def test_random_performance_renders():
    inst = make_instrument(0, n_samples=2**14)
    a = render_random(inst, 1.5, seed=1)
    b = render_random(inst, 1.5, seed=1)
    assert a.shape == (33075,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(a)) and np.abs(a).max() <= 1.0 and np.abs(a).max() > 0
    assert render_random(inst, 1.0, sample_rate=44100, seed=1).shape == (44100,)


def test_random_performance_of_an_empty_control_signal_uses_unit_magnitude():
    import dataclasses

    inst = make_instrument(0, n_samples=2**14)
    empty = dataclasses.replace(inst, control_index=np.zeros(0, np.int32), control_value=np.zeros(0, np.float32))
    _, events = random_events(empty, 1.0, seed=0)
    active = np.concatenate([v[v > 0] for _, v in events])
    assert active.size == RANDOM_EVENTS and np.all((active >= 0.9) & (active <= 1.0))
    with pytest.raises(ValueError):
        random_events(inst, 0.0)
