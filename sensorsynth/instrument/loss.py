"""Spectral losses: the seed's single-resolution STFT L1, its multi-resolution variant, and the multi-resolution
STFT loss (spectral convergence plus log magnitudes) that fitting uses by default."""

from __future__ import annotations

from typing import Literal

import torch

LossName = Literal["seed", "multires", "mrstft"]

_windows: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def _window(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (size, str(device), dtype)
    if key not in _windows:
        _windows[key] = torch.hann_window(size, periodic=True, device=device, dtype=dtype)
    return _windows[key]


def stft_magnitude(x: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """|STFT| with a Hann window and an orthonormal rfft; the tail is zero-padded so every sample counts."""
    padded = torch.nn.functional.pad(x, (0, window))
    frames = padded.unfold(-1, window, hop) * _window(window, x.device, x.dtype)
    return torch.fft.rfft(frames, norm="ortho").abs()


def seed_loss(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Sum of |STFT(target) - STFT(recon)|, window 2048, hop 256 (the seed's loss without sparsity)."""
    return (stft_magnitude(target, 2048, 256) - stft_magnitude(recon, 2048, 256)).abs().sum()


MULTIRES_WINDOWS = (256, 512, 1024, 2048)


def multires_loss(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """L1 of STFT magnitudes at four resolutions (hop = window / 4), each scaled to the seed loss's size.

    Each resolution is normalised by its own number of frames relative to the seed's 2048/256 grid, so the
    sparsity weight means the same thing under either loss.
    """
    total = target.new_zeros(())
    n_seed_frames = target.shape[-1] // 256 + 1
    for window in MULTIRES_WINDOWS:
        diff = (stft_magnitude(target, window, window // 4) - stft_magnitude(recon, window, window // 4)).abs()
        scale = n_seed_frames / diff.shape[-2] * (1025 / diff.shape[-1]) ** 0.5
        total = total + diff.sum() * scale / len(MULTIRES_WINDOWS)
    return total


LSD_FLOOR = 1e-3  # the log term's floor, relative to the target's loudest bin (-60 dB, as the distance uses)


def mrstft_loss(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Spectral convergence plus log-magnitude L1 at four resolutions (hop = window / 4), in seed-loss units.

    The usual multi-resolution STFT loss: ``||T - R||_F / ||T||_F`` weighs what is loud, ``mean |log(T + f) -
    log(R + f)|`` (``f`` = -60 dB of the target's loudest bin) what is quiet, and the short windows see the
    attacks that a 2048-sample window smears. Both terms are relative errors; their mean over the resolutions
    is scaled by the target's magnitudes summed on this loss's 2048/512 grid, half the seed loss of a silent
    reconstruction (2048/256): ``sparsity`` weighs the control plane twice as hard against it as against the
    seed's loss (the setting the one-minute figures in docs/benchmarks.md were measured with).
    """
    total = target.new_zeros(())
    scale = target.new_ones(())
    for window in MULTIRES_WINDOWS:
        t = stft_magnitude(target, window, window // 4).detach()
        r = stft_magnitude(recon, window, window // 4)
        if window == 2048:
            scale = t.sum()
        floor = LSD_FLOOR * t.max()
        convergence = torch.linalg.vector_norm(t - r) / (torch.linalg.vector_norm(t) + 1e-12)
        log_distance = ((t + floor).log() - (r + floor).log()).abs().mean()
        total = total + (convergence + log_distance) / len(MULTIRES_WINDOWS)
    return total * scale


def spectral_loss(name: LossName, target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    if name == "mrstft":
        return mrstft_loss(target, recon)
    if name == "seed":
        return seed_loss(target, recon)
    if name == "multires":
        return multires_loss(target, recon)
    raise ValueError(f"unknown loss {name!r}: use 'seed', 'multires' or 'mrstft'")


def sparsity(control_signal: torch.Tensor) -> torch.Tensor:
    """L1 of the control signal: pushes the performer's actions to a few strong events."""
    return control_signal.abs().sum()
