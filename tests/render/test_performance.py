"""Whole performances through the Renderer: the fitted reconstruction and the seed's random performance."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sensorsynth.instrument.noise import attack_noise
from sensorsynth.instrument.playback import spec_at_rate
from sensorsynth.render import Renderer
from sensorsynth.render.performance import RANDOM_EVENTS, random_events, render_random, render_reconstruction

from .instruments import fitted_events, make_instrument, offline, reference, rel_error, stream

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


# ------------------------------------------------------------------ an instrument that owns its attack noise


def _owning(seed: int = 0, noise_seed: int = 11):
    from sensorsynth.instrument_file import AttackNoise

    inst, _, _ = reference(seed, 22050)
    owned = copy.copy(inst)
    owned.manifest = inst.manifest.model_copy(update={"attack_noise": AttackNoise(seed=noise_seed)})
    return owned


@pytest.mark.parametrize("rate", [22050, 44100])
def test_an_instrument_replays_its_own_noise_whatever_the_seed(rate):
    """The reconstruction of an instrument that owns its noise is the offline forward pass with that noise
    (what the fit trained on), at the native rate and at another one, and no render seed changes it."""
    inst = _owning()
    spec = spec_at_rate(inst.spec, rate)
    ref = offline(inst, rate, attack_noise(11, spec.control_plane_dim, spec.attack_size))
    out = render_reconstruction(inst, rate, seed=1, limit=None)
    assert rel_error(out, ref) <= TOLERANCE
    np.testing.assert_array_equal(out, render_reconstruction(inst, rate, seed=2, limit=None))


def test_fresh_noise_overrides_the_instruments_own():
    inst = _owning()
    own = render_reconstruction(inst, limit=None)
    a = render_reconstruction(inst, seed=3, fresh_noise=True, limit=None)
    assert not np.array_equal(a, own) and 0.5 < np.std(a) / np.std(own) < 2.0
    np.testing.assert_array_equal(a, render_reconstruction(inst, seed=3, fresh_noise=True, limit=None))


def test_a_renderer_mixes_owning_and_fresh_instruments_and_can_be_asked_for_fresh():
    """Voice 0 plays an instrument with its own noise, voice 1 one without; fresh mode changes only voice 0."""
    owner, plain = _owning(0), reference(1, 22050)[0]
    controls, deforms, n = fitted_events(owner, 22050)

    def play(mode, voice, seed):
        r = Renderer([owner, plain], block_size=256, max_voices=2, seed=seed, limit=None, noise_mode=mode,
                     voice_instruments=[0, 1])
        return stream(r, controls, deforms, n, voice=voice)

    spec = owner.spec
    ref = offline(owner, 22050, attack_noise(11, spec.control_plane_dim, spec.attack_size))
    assert rel_error(play("instrument", 0, 1), ref) <= TOLERANCE
    assert rel_error(play("fresh", 0, 1), ref) > 0.1
    # the plain instrument draws fresh noise either way: the same draw for the same seed
    np.testing.assert_array_equal(play("instrument", 1, 5), play("fresh", 1, 5))
    with pytest.raises(ValueError, match="noise_mode"):
        Renderer(owner, noise_mode="loud")
