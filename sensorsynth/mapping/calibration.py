"""Per-axis calibration: a sensor's own range → 0..1.

Two modes, per source:

- **set**: ``lo`` and ``hi`` per axis are given (a preset's documented units, a ``calibrate`` message).
- **auto**: the range is learned over the first ``learn_s`` seconds after the first frame (or after a
  ``calibrate`` message restarts it): the lowest and highest value seen, never narrower than the prior range
  (``lo``/``hi``, e.g. [0, 1] for senders that already normalise, like TouchDesigner sliders or TouchOSC
  faders) and never narrower than ``min_span``. After that the range stays; values beyond it clip to 0..1.

Why a prior and a floor: a sensor lying still during the learning seconds would otherwise learn a range of
its own noise, and the first real movement would read as enormous.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


class Calibration:
    def __init__(self, width: int, mode: Literal["auto", "set"] = "auto", lo=0.0, hi=1.0, learn_s: float = 3.0,
                 min_span: float = 1e-6) -> None:
        if width < 1:
            raise ValueError("calibration needs at least one axis")
        self.width = int(width)
        self.mode = mode
        self.prior_lo = np.broadcast_to(np.asarray(lo, np.float64), (width,)).copy()
        self.prior_hi = np.broadcast_to(np.asarray(hi, np.float64), (width,)).copy()
        if np.any(self.prior_hi < self.prior_lo):
            raise ValueError("calibration needs hi ≥ lo on every axis")
        self.learn_s = float(learn_s)
        self.min_span = float(min_span)
        self.lo = self.prior_lo.copy()
        self.hi = self.prior_hi.copy()
        self.started: float | None = None
        self.last_t = 0.0

    @property
    def learning(self) -> bool:
        """Still learning the range (auto mode, within ``learn_s`` of the first frame)."""
        return self.mode == "auto" and (self.started is None or self.last_t - self.started <= self.learn_s)

    def set(self, lo, hi) -> None:
        """Fix the range (mode ``set``)."""
        lo = np.broadcast_to(np.asarray(lo, np.float64), (self.width,)).copy()
        hi = np.broadcast_to(np.asarray(hi, np.float64), (self.width,)).copy()
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi >= lo)):
            raise ValueError("calibration ranges must be finite with hi ≥ lo")
        self.mode = "set"
        self.lo, self.hi = lo, hi

    def relearn(self) -> None:
        """Learn the range again from the next frame (mode ``auto``)."""
        self.mode = "auto"
        self.lo, self.hi = self.prior_lo.copy(), self.prior_hi.copy()
        self.started = None

    def step(self, x: np.ndarray, t: float) -> np.ndarray:
        """x (width,) in the sensor's units → 0..1 per axis."""
        x = np.asarray(x, np.float64)
        self.last_t = t
        if self.mode == "auto":
            if self.started is None:
                self.started = t
            if t - self.started <= self.learn_s:
                np.minimum(self.lo, x, out=self.lo)
                np.maximum(self.hi, x, out=self.hi)
        span = np.maximum(self.hi - self.lo, self.min_span)
        centre = (self.hi + self.lo) / 2
        lo = np.minimum(self.lo, centre - span / 2)
        return np.clip((x - lo) / span, 0.0, 1.0)

    def state(self) -> dict:
        return {"mode": self.mode, "learning": self.learning, "lo": [round(float(v), 4) for v in self.lo],
                "hi": [round(float(v), 4) for v in self.hi]}
