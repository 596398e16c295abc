"""The fast oscillator bank against the seed's formula evaluated sample by sample."""

import pytest
import torch

from sensorsynth.instrument.modes import OscillatorBank, materialize, seed_modes, unit_norm

from .reference import seed_resonances

pytestmark = pytest.mark.slow  # the seed's reference resonances, computed in full


N = 2**17
TOLERANCE = 1e-4  # relative L2 error, in value and in gradient


def seed_parameters(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    ranges = [(-2, 2), (0.5, 1.5), (4, 9), (-1, 2), (-1, 1)]  # the seed's init ranges
    return [torch.empty(shape, dtype=dtype).uniform_(lo, hi, generator=g).requires_grad_() for lo, hi in ranges]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("n_samples", [N, 5000, 777])
def test_fast_bank_matches_seed_formula_in_value_and_gradient(n_samples):
    params = seed_parameters((3, 2, 64), torch.float64)
    reference = unit_norm(seed_resonances(*params, n_samples))
    weights = torch.randn(reference.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (reference * weights).sum().backward()
    ref_grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None

    fast = unit_norm(materialize(seed_modes(*params, n_samples), n_samples, dtype=torch.float64))
    assert rel(fast, reference) < TOLERANCE
    (fast * weights).sum().backward()
    for name, p, g in zip(["mass", "damping", "tension", "displacement", "amplitude"], params, ref_grads):
        assert rel(p.grad, g) < TOLERANCE, name


def test_float32_fast_bank_matches_float64_reference():
    params = seed_parameters((2, 2, 64), torch.float64, seed=3)
    with torch.no_grad():
        reference = unit_norm(seed_resonances(*params, N))
        fast = unit_norm(materialize(seed_modes(*params, N), N, dtype=torch.float32))
    assert fast.dtype == torch.float32
    assert rel(fast.double(), reference) < TOLERANCE


def test_seed_parameterized_bank_is_unit_norm_and_shaped():
    bank = OscillatorBank(4, 2, 8, 4096, parameterization="seed")
    out = bank()
    assert out.shape == (4, 2, 4096)
    assert torch.allclose(out.norm(dim=-1), torch.ones(4, 2), atol=1e-4)


def test_unknown_parameterization_is_refused():
    with pytest.raises(ValueError, match="parameterization"):
        OscillatorBank(1, 1, 1, 16, parameterization="magic")
