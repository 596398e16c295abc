"""The spectral losses against plain expectations and against the distance fits are judged by."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sensorsynth.instrument.loss import mrstft_loss, seed_loss, spectral_loss, stft_magnitude

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def guitar(n: int = 2**15) -> torch.Tensor:
    x, _ = sf.read(SHARED / "audio" / "guitar.wav", dtype="float32")
    x = x[:n]
    return torch.from_numpy(x / np.abs(x).max())


def distance_tool():
    spec = importlib.util.spec_from_file_location("spectral_distance", SHARED / "tools" / "spectral_distance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.distance


def unit(t: torch.Tensor) -> float:
    """mrstft's unit: the target's magnitudes summed on its 2048/512 grid (half the seed loss of silence)."""
    return float(stft_magnitude(t, 2048, 512).sum())


def test_mrstft_is_zero_on_the_target_and_in_units_of_the_targets_magnitudes():
    t = guitar()
    assert float(mrstft_loss(t, t)) == 0.0
    silent = torch.zeros_like(t)
    # a silent reconstruction: convergence 1 at every resolution, plus its log distance
    ratio = float(mrstft_loss(t, silent)) / unit(t)
    assert 1.0 < ratio < 1.0 + np.log(1e3) + 0.1
    assert unit(t) == pytest.approx(float(seed_loss(t, silent)) / 2, rel=0.02)
    # both terms are relative: scaling target and reconstruction scales the loss as it scales the seed loss
    r = t.roll(300) * 0.7
    assert float(mrstft_loss(4 * t, 4 * r)) == pytest.approx(4 * float(mrstft_loss(t, r)), rel=1e-4)


def test_mrstft_measures_what_the_judging_distance_measures():
    """mrstft / unit ≈ mrsc + mrlsd of ../shared/tools/spectral_distance.py for peak-matched signals (the tool
    frames and pads a little differently, hence the tolerance); so does its ranking of two reconstructions."""
    t = guitar()
    tone = torch.sin(torch.arange(t.numel()) * 0.05) * torch.exp(-torch.arange(t.numel()) / 8000.0)
    near, far = t + 0.05 * tone, 0.5 * t.roll(2000) + 0.5 * tone
    distance = distance_tool()
    ours, judged = [], []
    for other in (near, far):
        other = other / other.abs().max()
        d = distance(t.double().numpy(), other.double().numpy())
        ours.append(float(mrstft_loss(t, other)) / unit(t))
        judged.append(d["mrsc"] + d["mrlsd"])
    assert ours[0] < ours[1] and judged[0] < judged[1]
    np.testing.assert_allclose(ours, judged, rtol=0.15)


def test_every_loss_has_a_finite_gradient_near_silence_and_refuses_unknown_names():
    t = guitar(2**13)
    for name in ("seed", "multires", "mrstft"):
        r = (1e-6 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
        spectral_loss(name, t, r).backward()
        assert torch.isfinite(r.grad).all() and r.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="'seed', 'multires' or 'mrstft'"):
        spectral_loss("bogus", t, t)  # type: ignore[arg-type]


def test_stft_magnitude_counts_every_sample():
    x = torch.zeros(4096)
    x[-1] = 1.0  # the last sample still lands in a frame
    assert float(stft_magnitude(x, 256, 64).sum()) > 0
