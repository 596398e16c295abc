"""Banks of damped harmonic oscillators.

The seed evaluates ``a·exp(-x t)·cos(ω t - φ)`` at every sample of every oscillator. With zero initial
velocity that is exactly ``Re(c · p**n)`` for one complex pole ``p = exp(-α + iω)`` per oscillator and a
complex amplitude ``c = a·(1 - i·α/ω)``. Writing ``n = j·C + i`` gives ``p**n = (p**C)**j · p**i``, so a whole
bank of M oscillators over N samples is one real (J × 2M) @ (2M × C) matrix product with J·C ≥ N: a few
thousand exp/cos instead of M·N of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SEED_TIME_SPAN = 10.0
"""The seed evaluates its oscillators on ``linspace(0, 10, n_samples)``: ten time units per clip."""


@dataclass
class ModeTensors:
    """Per-sample pole and complex amplitude of every oscillator; shapes (..., n_oscillators)."""

    alpha: torch.Tensor  # decay per sample (nepers)
    omega: torch.Tensor  # angular frequency per sample (radians)
    c_re: torch.Tensor
    c_im: torch.Tensor


def seed_modes(
    mass: torch.Tensor,
    damping: torch.Tensor,
    tension: torch.Tensor,
    displacement: torch.Tensor,
    amplitude: torch.Tensor,
    n_samples: int,
) -> ModeTensors:
    """The seed's raw (mass, damping, tension, displacement, amplitude) as poles and amplitudes."""
    dt = SEED_TIME_SPAN / (n_samples - 1)
    m = torch.sigmoid(mass)
    d = torch.sigmoid(damping) * 30.0
    x = d / (2.0 * m)
    omega = torch.sqrt(torch.clamp(10.0**tension - x**2, min=1e-12))
    a = displacement * amplitude**2
    return ModeTensors(alpha=x * dt, omega=omega * dt, c_re=a, c_im=-a * x / omega)


def _split(n_samples: int) -> tuple[int, int]:
    """Chunk length C and chunk count J with J·C ≥ n_samples and C ≈ 2·sqrt(N)."""
    c = 1 << max(1, math.ceil(math.log2(math.sqrt(2 * n_samples))))
    return c, -(-n_samples // c)


def materialize(modes: ModeTensors, n_samples: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sum of every bank's oscillators, shape (..., n_samples).

    The pole powers are built in float64 (angles reach ~1e5 rad) and the product runs in ``dtype``.
    """
    batch_shape = modes.alpha.shape[:-1]
    n_osc = modes.alpha.shape[-1]
    alpha = modes.alpha.to(torch.float64).reshape(-1, n_osc, 1)
    omega = modes.omega.to(torch.float64).reshape(-1, n_osc, 1)
    c_re = modes.c_re.to(torch.float64).reshape(-1, n_osc, 1)
    c_im = modes.c_im.to(torch.float64).reshape(-1, n_osc, 1)
    chunk, n_chunks = _split(n_samples)
    device = alpha.device
    i = torch.arange(chunk, device=device, dtype=torch.float64)
    j = torch.arange(n_chunks, device=device, dtype=torch.float64) * chunk
    mag_i = torch.exp(-alpha * i)
    a_re, a_im = mag_i * torch.cos(omega * i), mag_i * torch.sin(omega * i)
    mag_j = torch.exp(-alpha * j)
    b_re, b_im = mag_j * torch.cos(omega * j), mag_j * torch.sin(omega * j)
    cb_re = c_re * b_re - c_im * b_im
    cb_im = c_re * b_im + c_im * b_re
    left = torch.cat([cb_re, -cb_im], dim=1).transpose(1, 2).to(dtype)  # (G, J, 2M)
    right = torch.cat([a_re, a_im], dim=1).to(dtype)  # (G, 2M, C)
    out = torch.bmm(left, right).reshape(-1, n_chunks * chunk)[:, :n_samples]
    return out.reshape(*batch_shape, n_samples)


def unit_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each impulse response scaled to unit L2 norm, so the control plane alone sets loudness."""
    return x / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + eps)


class OscillatorBank(nn.Module):
    """n_resonances × expressivity banks of damped oscillators, learnable.

    ``parameterization="seed"`` holds the seed's own parameters (mass, damping, tension, initial
    displacement, amplitude) with its random ranges. ``"physical"`` holds log decay, log frequency and a
    signed amplitude per oscillator: the same family of signals, but a gradient step moves a frequency by a
    fixed number of cents, which is what fitting from an analysed starting point needs.
    """

    def __init__(
        self,
        n_resonances: int,
        expressivity: int,
        n_oscillators: int,
        n_samples: int,
        parameterization: str = "physical",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if parameterization not in ("seed", "physical"):
            raise ValueError(f"unknown parameterization {parameterization!r}: use 'seed' or 'physical'")
        self.parameterization = parameterization
        self.n_samples = n_samples
        shape = (n_resonances, expressivity, n_oscillators)

        def uniform(low: float, high: float) -> nn.Parameter:
            return nn.Parameter(torch.empty(shape).uniform_(low, high, generator=generator))

        if parameterization == "seed":
            self.mass = uniform(-2, 2)
            self.damping = uniform(0.5, 1.5)
            self.tension = uniform(4, 9)
            self.displacement = uniform(-1, 2)
            self.amplitude = uniform(-1, 1)
        else:
            dt = SEED_TIME_SPAN / (n_samples - 1)
            # the seed's random ranges, mapped: tension 1e4..1e9 -> omega 1e2..3e4 per time unit
            self.log_omega = nn.Parameter(
                torch.log(10 ** (torch.empty(shape).uniform_(4, 9, generator=generator) / 2) * dt)
            )
            self.log_alpha = nn.Parameter(torch.log(torch.empty(shape).uniform_(1.0, 20.0, generator=generator) * dt))
            self.amplitude = uniform(-1, 1)

    def modes(self) -> ModeTensors:
        if self.parameterization == "seed":
            return seed_modes(
                self.mass, self.damping, self.tension, self.displacement, self.amplitude, self.n_samples
            )
        alpha = torch.exp(self.log_alpha)
        omega = torch.exp(self.log_omega)
        return ModeTensors(alpha=alpha, omega=omega, c_re=self.amplitude, c_im=-self.amplitude * alpha / omega)

    def forward(self) -> torch.Tensor:
        """Unit-normed impulse responses, (n_resonances, expressivity, n_samples)."""
        return unit_norm(materialize(self.modes(), self.n_samples))


class FixedBank(nn.Module):
    """A bank from stored physical modes at any sample rate; amplitudes are already normed."""

    def __init__(self, modes: ModeTensors, n_samples: int) -> None:
        super().__init__()
        self.n_samples = n_samples
        for name in ("alpha", "omega", "c_re", "c_im"):
            self.register_buffer(name, getattr(modes, name).to(torch.float64))

    def modes(self) -> ModeTensors:
        return ModeTensors(self.alpha, self.omega, self.c_re, self.c_im)

    def forward(self) -> torch.Tensor:
        return materialize(self.modes(), self.n_samples)


def pole_mode_tensors(poles: np.ndarray, coef: np.ndarray) -> ModeTensors:
    """ModeTensors whose materialised powers are exactly those of the rounded float32 poles."""
    p = poles.astype(np.complex128)
    c = coef.astype(np.complex128)
    return ModeTensors(
        alpha=torch.from_numpy(-np.log(np.abs(p))),
        omega=torch.from_numpy(np.angle(p)),
        c_re=torch.from_numpy(np.ascontiguousarray(c.real)),
        c_im=torch.from_numpy(np.ascontiguousarray(c.imag)),
    )
