"""The model's pieces against plain definitions, and its shapes for sizes other than the seed's."""

import numpy as np
import pytest
import torch

from sensorsynth.instrument.model import (
    ResonanceModel,
    deformation_weights,
    excite,
    fft_convolve,
    fft_size,
    interpolate_envelopes,
)
from sensorsynth.instrument.playback import deformation_targets, interpolate_linear
from sensorsynth.instrument.spec import ModelSpec

pytestmark = pytest.mark.slow  # the model's full-size forward and backward passes


SMALL = ModelSpec(n_samples=4096, control_plane_dim=3, n_resonances=5, expressivity=2, n_oscillators=4,
                  attack_size=300, attack_frames=16)


def test_excite_matches_placing_every_attack_by_hand():
    g = torch.Generator().manual_seed(0)
    cs = torch.relu(torch.randn(3, 32, generator=g))
    attacks = torch.randn(3, 300, generator=g)
    hop = 128
    expected = torch.zeros(3, 32 * hop)
    for k in range(3):
        for f in range(32):
            start = f * hop
            stop = min(start + 300, 32 * hop)
            expected[k, start:stop] += cs[k, f] * attacks[k, : stop - start]
    assert torch.allclose(excite(cs, attacks, hop), expected, atol=1e-5)


def test_fft_convolve_is_causal_linear_convolution():
    g = torch.Generator().manual_seed(1)
    x, h = torch.randn(100, generator=g, dtype=torch.float64), torch.randn(100, generator=g, dtype=torch.float64)
    expected = np.convolve(x.numpy(), h.numpy())[:100]
    assert np.allclose(fft_convolve(x, h).numpy(), expected, atol=1e-10)


def test_deformation_weights_ramp_causally_from_previous_frame():
    logits = torch.tensor([[0.0, 3.0, 3.0], [0.0, -3.0, -3.0]])
    w = deformation_weights(logits, 4)
    targets = torch.softmax(logits + torch.tensor([[1.0], [0.0]]), dim=0)
    assert w.shape == (2, 12)
    assert torch.allclose(w[:, 0:4], targets[:, :1].expand(2, 4))  # first frame: at rest, no ramp
    assert torch.allclose(w[:, 4], targets[:, 0])  # a new frame starts from the previous weights
    assert torch.allclose(w[:, 6], (targets[:, 0] + targets[:, 1]) / 2)
    assert torch.allclose(w[:, 8:], targets[:, 2:3].expand(2, 4))
    assert torch.allclose(w.sum(dim=0), torch.ones(12))
    assert np.allclose(deformation_targets(logits.numpy()), targets.numpy(), atol=1e-6)


def test_numpy_and_torch_envelope_interpolation_agree():
    env = torch.randn(4, 256, generator=torch.Generator().manual_seed(2))
    for size in (2048, 4096, 4458, 100):
        assert np.allclose(interpolate_linear(env.numpy(), size), interpolate_envelopes(env, size).numpy(), atol=1e-6)


@pytest.mark.parametrize("parameterization", ["seed", "physical"])
def test_control_plane_dim_may_differ_from_resonance_count(parameterization):
    model = ResonanceModel(SMALL, parameterization=parameterization, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(3, 300) * 2 - 1
    out = model(noise=noise)
    assert out.shape == (4096,)
    assert torch.isfinite(out).all()
    assert torch.equal(out, model(noise=noise))  # given the noise, the forward pass is deterministic
    assert model.router.shape == (3, 5)


def test_silent_control_plane_gives_silence():
    model = ResonanceModel(SMALL)
    out = model(control_signal=torch.zeros(3, SMALL.n_frames))
    assert out.abs().max() == 0


def test_spec_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="multiple of control_hop"):
        ModelSpec(n_samples=1000, control_hop=128)


def test_fft_convolve_gradients_match_autograd_of_plain_convolution():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 1, 64, dtype=torch.float64, generator=g, requires_grad=True)
    h = torch.randn(3, 2, 64, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fft_convolve(a, b), (x, h))
    with torch.no_grad():
        h_fft = torch.fft.rfft(h, n=fft_size(64))
    assert torch.autograd.gradcheck(lambda a: fft_convolve(a, None, h_fft), (x,))
