"""Smoothing for sensor frames: the One-Euro filter and a one-pole high-pass, per axis, driven by frame times.

Why One-Euro (Casiez, Roussel and Vogel, CHI 2012): a sensor held still jitters, and a sensor moved fast must
not lag. The filter is a low-pass whose cutoff rises with the (smoothed) speed of the signal: at rest it
smooths hard (``min_cutoff`` Hz), in a fast gesture it barely delays (``beta`` raises the cutoff by that
many Hz per unit/s of speed). Time comes in with the frames, so it works at 10 Hz (a watch) and at 120 Hz
(a phone) alike, and with irregular frame times.

The high-pass removes what does not change (gravity in an accelerometer that includes it, a sensor's
offset) with a first-order filter at ``cutoff`` Hz.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: float, dt: float) -> float:
    """Smoothing factor of a one-pole low-pass with this cutoff (Hz) over a step of ``dt`` seconds:
    1 / (1 + tau/dt) with tau = 1/(2π·cutoff), written as a/(a+1), a = 2π·cutoff·dt."""
    a = 2.0 * math.pi * max(cutoff, 1e-6) * dt
    return a / (a + 1.0)


class OneEuro:
    """One-Euro filter over a vector of axes. ``step(x, dt)`` returns the filtered vector (a new array)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0) -> None:
        if not (min_cutoff > 0 and beta >= 0 and d_cutoff > 0):
            raise ValueError("One-Euro needs min_cutoff > 0, beta ≥ 0, d_cutoff > 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def reset(self) -> None:
        self.x = self.dx = None

    def step(self, x: np.ndarray, dt: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or self.x.shape != x.shape or not dt > 0:
            self.x = x.copy()
            self.dx = np.zeros_like(x)
            return self.x.copy()
        step = x - self.x
        self.dx += _alpha(self.d_cutoff, dt) * (step / dt - self.dx)
        a = np.abs(self.dx)  # per-axis cutoff = min_cutoff + beta·|dx|, alpha = a/(a+1), a = 2π·cutoff·dt
        a *= self.beta * 2.0 * math.pi * dt
        a += self.min_cutoff * 2.0 * math.pi * dt
        self.x += a / (a + 1.0) * step
        return self.x.copy()


class HighPass:
    """First-order high-pass per axis; starts at the first frame (which reads as zero, not as a jump)."""

    def __init__(self, cutoff: float = 0.3) -> None:
        if not cutoff > 0:
            raise ValueError("high-pass cutoff must be > 0 Hz")
        self.cutoff = float(cutoff)
        self.mean: np.ndarray | None = None

    def reset(self) -> None:
        self.mean = None

    def step(self, x: np.ndarray, dt: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.mean is None or self.mean.shape != x.shape or not dt > 0:
            self.mean = x.copy()
            return np.zeros_like(x)
        self.mean += _alpha(self.cutoff, dt) * (x - self.mean)
        return x - self.mean
