"""One source's mapping: its frames in, control events and deformations out.

    frame ─▶ features (smoothing, calibration, drive, change, pose, continuous)
          ├▶ velocity gate ─▶ loudness ─┬▶ basis pattern(change) × loudness × cap ─▶ Control
          │                             └▶ (learned run) regressor(pose, change), its own gate ─▶ Control
          └▶ continuous quantity ─▶ deformation logits (when it moved) ─▶ Deform

State (filters, calibration, gates) lives here; time comes in with the frames. Nothing here knows voices,
clients or sockets: the hub and the edges do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..protocol.commands import Control, Deform, Pan
from ..instrument.basis import DEFAULT_KEEP, Basis
from .calibration import Calibration
from .features import GATES, Extractor, Features, deform_logits, make_extractor
from .gate import GateSettings, VelocityGate
from .learned import Predictor

DEFORM_MIN_INTERVAL_S = 0.02  # at most 50 deformations a second (the renderer ramps over a frame anyway)
DEFORM_STEP = 0.02  # resend when the continuous quantity moved this much (of 0..1)
DEFORM_START = 0.05  # ...and only once it moved this far from where it started: still sources stay neutral
PAN_STEP = 0.01  # a preset's pan axis: resend the voice's position when it moved this much (of 0..1)...
PAN_MIN_INTERVAL_S = 0.02  # ...at most 50 times a second (the renderer ramps each move over 20 ms)


@dataclass(frozen=True)
class SourceOptions:
    """Per-source settings (defaults per kind; presets override some)."""

    gate: GateSettings
    keep: float = DEFAULT_KEEP
    calibration: Calibration | None = None  # raw sources
    deform_axis: int | None = None  # raw sources
    pan_axis: int | None = None  # raw sources: the axis whose calibrated value is the voice's pan position
    deform_from: str = "openness"  # hand sources
    deform: bool = True

    @classmethod
    def for_kind(cls, kind: str, **overrides) -> "SourceOptions":
        gate = GATES[kind]
        changes = {k: overrides.pop(k) for k in ("threshold", "full", "refractory_s") if overrides.get(k) is not None}
        for k in ("threshold", "full", "refractory_s"):
            overrides.pop(k, None)
        if changes:
            if "threshold" in changes and "full" not in changes and changes["threshold"] >= gate.full:
                changes["full"] = changes["threshold"] * 8
            gate = replace(gate, **changes)
        return cls(gate=gate, **overrides)


@dataclass
class Target:
    """What the source plays now: its voice's instrument, as the mapping needs it."""

    instrument: str
    basis: Basis
    expressivity: int
    learned: Predictor | None = None  # this source's learned model for this instrument, when running


@dataclass
class Step:
    commands: list
    features: Features
    fired: bool


class SourceMapping:
    def __init__(self, kind: str, width: int, options: SourceOptions | None = None) -> None:
        self.kind = kind
        self.width = width
        self.options = options or SourceOptions.for_kind(kind)
        o = self.options
        extra = {"calibration": o.calibration, "deform_axis": o.deform_axis} if kind == "raw" else {}
        if kind == "hand":
            extra = {"deform_from": o.deform_from}
        self.extractor: Extractor = make_extractor(kind, width, **extra)
        self.gate = VelocityGate(o.gate)
        self.learned_gate: VelocityGate | None = None
        self._learned_for: Predictor | None = None
        self.q0: float | None = None
        self.q_sent: float | None = None
        self.t_sent = -1e9
        self.frames = 0
        self.events = 0
        self.deforms = 0
        self.p_sent: float | None = None
        self.t_pan = -1e9

    def input_vector(self, f: Features) -> np.ndarray:
        """What a learned mapping reads: the pose and the change."""
        return np.concatenate([f.pose, f.change])

    def step(self, values: np.ndarray, t: float, target: Target) -> Step:
        f = self.extractor.step(values, t)
        self.frames += 1
        commands: list = []
        fired = False
        if target.learned is not None:
            if self._learned_for is not target.learned:
                m = target.learned.model
                self.learned_gate = VelocityGate(GateSettings(
                    threshold=m.onset, full=max(m.full, m.onset * 1.01), refractory_s=self.options.gate.refractory_s),
                    start_rising=True)
                self._learned_for = target.learned
            y = target.learned(self.input_vector(f))
            peak = float(y.max(initial=0.0))
            loud = self.learned_gate.step(peak, t)
            if loud is not None and peak > 0 and y.size == target.basis.control_dims:
                pattern = y / peak
                pattern[pattern < self.options.keep] = 0.0
                level = min(target.learned.model.level, target.basis.cap * 1.5) * loud
                commands.append(Control(tuple(float(v) for v in pattern * level)))
                fired = True
            self.gate.step(f.drive, t, f.change)  # keep the basis gate's state current
        else:
            loud = self.gate.step(f.drive, t, f.change)
            if loud is not None:
                pattern = target.basis.pattern(f.change, self.options.keep)
                if pattern.any():
                    level = loud * target.basis.cap
                    commands.append(Control(tuple(float(v) for v in pattern * level)))
                    fired = True
        if fired:
            self.events += 1
        if f.continuous is not None and self.options.deform and target.expressivity > 1:
            d = self._deform(f.continuous, t, target.expressivity)
            if d is not None:
                commands.append(d)
        axis = self.options.pan_axis
        if axis is not None and axis < f.pose.size:
            p = self._pan(float(f.pose[axis]), t)
            if p is not None:
                commands.append(p)
        return Step(commands, f, fired)

    def _pan(self, value: float, t: float) -> Pan | None:
        """The voice's position from the pan axis (clamped to 0..1), when it moved and not too often."""
        p = min(1.0, max(0.0, value)) if value == value else 0.0
        if self.p_sent is not None and abs(p - self.p_sent) < PAN_STEP:
            return None
        if t - self.t_pan < PAN_MIN_INTERVAL_S:
            return None
        self.p_sent, self.t_pan = p, t
        return Pan(p)

    def _deform(self, q: float, t: float, expressivity: int) -> Deform | None:
        if self.q0 is None:
            self.q0 = q
        if self.q_sent is None:
            if abs(q - self.q0) < DEFORM_START:
                return None
        elif abs(q - self.q_sent) < DEFORM_STEP:
            return None
        if t - self.t_sent < DEFORM_MIN_INTERVAL_S:
            return None
        self.q_sent, self.t_sent = q, t
        self.deforms += 1
        return Deform(tuple(float(v) for v in deform_logits(q, expressivity)))

    def state(self) -> dict:
        return {"kind": self.kind, "width": self.width, "frames": self.frames, "events": self.events,
                "deforms": self.deforms, "calibration": self.extractor.calibration_state()}
