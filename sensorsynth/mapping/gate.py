"""The velocity gate: when a continuous sensor fires an impulse, and how loud.

Sensors are continuous; the control plane is impulses. The gate watches one number per frame, the
source's **drive** (how fast it moves: m/s of hand landmarks, m/s² of a phone's acceleration, calibrated
units/s of an OSC source; see :mod:`.features`) and fires an event when:

1. the drive is at or above ``threshold``,
2. it is rising (above the previous frame's drive): an event lands on the way up, at the first frame of a
   gesture, not at its end (no look-ahead, so no added latency),
3. the gate is **armed**: since the previous event the drive has fallen below ``release`` × the peak it
   reached after that event, or the movement has turned by more than ``turn_deg`` from its direction at
   that event (every stride of a run, every back-and-forth of a shake re-arms it; a long steady movement
   in one direction plays once). A turn is a new stroke, so it may fire without waiting for a rise; and
4. at least ``refractory_s`` seconds have passed since the previous event (at most 1/refractory events
   per second however jittery the sensor).

Loudness comes from the drive at the moment it fires, on a log scale between the threshold and ``full``:
``loudness = floor + (1 − floor) · clip(log(drive/threshold) / log(full/threshold), 0, 1)``; the
mapping multiplies it with the instrument's loud-event level, which is the loudness cap (a harder gesture
never plays louder than the instrument's own loud notes).

Holding still never fires: its drive (sensor noise, after smoothing) stays below the threshold. The
defaults per source kind live in :mod:`.features` and are tuned on real watch recordings and synthetic hand
streams (see the README's "Mappings" section for the figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GateSettings:
    threshold: float  # drive at which an event fires
    full: float  # drive that plays at full loudness
    release: float = 0.5  # re-arm when the drive falls below this share of the peak since the last event
    refractory_s: float = 0.12  # minimum time between two events
    floor: float = 0.3  # loudness of an event right at the threshold (0..1)
    turn_deg: float = 90.0  # re-arm when the direction turned by more than this since the last event

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and self.full > self.threshold):
            raise ValueError("the gate needs 0 < threshold < full")
        if not (0 < self.release < 1 and self.refractory_s >= 0 and 0 <= self.floor <= 1):
            raise ValueError("the gate needs 0 < release < 1, refractory_s ≥ 0 and 0 ≤ floor ≤ 1")
        if not 0 < self.turn_deg <= 180:
            raise ValueError("the gate needs 0 < turn_deg ≤ 180")


class VelocityGate:
    """``step(drive, t)`` → the loudness (0..1] of an event to fire now, or None."""

    def __init__(self, settings: GateSettings, start_rising: bool = False) -> None:
        """``start_rising``: the first frame counts as a rise from zero (a learned pose held from the start
        plays; a velocity starts at rest anyway)."""
        self.settings = settings
        self.start_rising = start_rising
        self._log_span = math.log(settings.full / settings.threshold)
        self._turn_cos = math.cos(math.radians(settings.turn_deg))
        self.reset()

    def reset(self) -> None:
        self.armed = True
        self.stroke = False
        self.peak = 0.0
        self.previous = 0.0 if self.start_rising else math.inf  # else a stream that starts moving waits a frame
        self.last_event = -math.inf
        self.direction: np.ndarray | None = None
        self.events = 0

    def loudness(self, drive: float) -> float:
        s = self.settings
        x = math.log(max(drive, s.threshold) / s.threshold) / self._log_span
        return s.floor + (1.0 - s.floor) * min(1.0, x)

    def step(self, drive: float, t: float, direction: np.ndarray | None = None) -> float | None:
        """``direction``: the movement's vector this frame (any length), for re-arming on a turn."""
        s = self.settings
        rising = drive > self.previous
        self.previous = drive
        turned = False
        if direction is not None and self.direction is not None and drive >= s.threshold:
            norm = math.sqrt(float(np.dot(direction, direction)))
            if norm > 0 and float(np.dot(direction, self.direction)) < self._turn_cos * norm:
                turned = True
        if not self.armed:
            self.peak = max(self.peak, drive)
            if drive < s.release * self.peak or turned:
                self.armed = True
                self.stroke = turned  # a new stroke: it plays as soon as the refractory time allows
        if self.armed and (rising or turned or self.stroke) and drive >= s.threshold \
                and t - self.last_event >= s.refractory_s - 1e-9:
            self.armed = False
            self.stroke = False
            self.peak = drive
            self.last_event = t
            self.events += 1
            if direction is not None:
                norm = math.sqrt(float(np.dot(direction, direction)))
                self.direction = np.asarray(direction, np.float64) / norm if norm > 0 else None
            return self.loudness(drive)
        return None
