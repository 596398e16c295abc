"""Plain, slow transcriptions of the seed's math, kept only to check the fast paths against."""

from __future__ import annotations

import numpy as np
import torch


def seed_damped_oscillator(
    time: torch.Tensor,
    mass: torch.Tensor,
    damping: torch.Tensor,
    tension: torch.Tensor,
    initial_displacement: torch.Tensor,
    initial_velocity: float = 0.0,
) -> torch.Tensor:
    """The article's formula, evaluated at every sample: a·exp(-x t)·cos(ω t - φ)."""
    x = damping / (2 * mass)
    omega = torch.sqrt(torch.clamp(tension - x**2, 1e-12, np.inf))
    phi = torch.atan2(initial_velocity + x * initial_displacement, initial_displacement * omega)
    a = initial_displacement / torch.cos(phi)
    return a * torch.exp(-x * time) * torch.cos(omega * time - phi)


def seed_resonances(
    mass: torch.Tensor,
    damping: torch.Tensor,
    tension: torch.Tensor,
    displacement: torch.Tensor,
    amplitude: torch.Tensor,
    n_samples: int,
) -> torch.Tensor:
    """The seed's bank (its parameter squashing, sum over oscillators), before unit norm.

    Parameters are (..., n_oscillators); returns (..., n_samples).
    """
    time = torch.linspace(0, 10, n_samples, dtype=mass.dtype)
    z = seed_damped_oscillator(
        time,
        torch.sigmoid(mass)[..., None],
        torch.sigmoid(damping)[..., None] * 30,
        10 ** tension[..., None],
        displacement[..., None],
    )
    return (z * amplitude[..., None] ** 2).sum(dim=-2)
