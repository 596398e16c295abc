"""From a raw sensor frame to what the mapping needs: a drive, a change, a pose and a continuous quantity.

One extractor per source kind (the ``kind`` of a WebSocket ``sensor`` message, or of a preset's source),
each a small state machine over frames with their time ``t`` (seconds, the sender's clock or the arrival):

| kind | values | drive (the gate's input) | change (played through the basis) | continuous (deformation) |
| --- | --- | --- | --- | --- |
| ``motion`` | 9: acceleration x, y, z (m/s²), rotation rate α, β, γ (deg/s), orientation α, β, γ (deg) | ‖a‖ + 0.5·‖ω‖ (m/s², ω in rad/s), after a 0.3 Hz high-pass on a (gravity and offsets out, so a sender that includes gravity works too) | [a, 2·ω] (6 axes) | tilt: orientation γ, −60°..60° → 0..1 |
| ``hand`` | 84: 21 world landmarks x, y, z (m, wrist-centred), then 21 image z | ‖v‖ of the 63 One-Euro-smoothed world coordinates (m/s) | v (63 axes, as the seed's 21 × 3) | openness: mean fingertip-to-wrist distance / palm length, learned range (prior 1.0..1.9) |
| ``raw`` | N values (an OSC app, a custom sensor) | ‖v‖ of the calibrated (0..1), smoothed values (units/s) | v (N axes) | one axis named by the preset (``deform_axis``), else none |

``pose`` (the position-like state: smoothed landmarks, orientation as sin/cos, calibrated raw values) is
what learned mappings read together with the change.

Frame timing: the velocity uses ``dt = max(t − t_prev, dt_avg / 2)`` with ``dt_avg`` a running mean of the
frame interval, so two frames bunched together by the network do not read as a sudden jump. A gap longer
than ``GAP_S`` (the hand left the camera, the phone paused) restarts the filters: the first frame after it
is a new start, never a jump from the old position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .calibration import Calibration
from .filters import HighPass, OneEuro
from .gate import GateSettings

GAP_S = 0.5
MOTION_WIDTH = 9
HAND_WIDTH = 84
HAND_LANDMARKS = 21
TIPS = (4, 8, 12, 16, 20)
_TIPS = np.array(TIPS)
MIDDLE_MCP = 9

# Gate defaults per kind, tuned in tests/mapping (README "Mappings": events per second per activity).
GATES = {
    "motion": GateSettings(threshold=4.0, full=30.0, release=0.5, refractory_s=0.15, floor=0.3),
    "hand": GateSettings(threshold=0.8, full=5.0, release=0.5, refractory_s=0.12, floor=0.3, turn_deg=120.0),
    "raw": GateSettings(threshold=1.0, full=8.0, release=0.5, refractory_s=0.12, floor=0.3),
}


@dataclass
class Features:
    drive: float
    change: np.ndarray  # rate-like vector played through the basis
    pose: np.ndarray  # position-like vector (learned mappings)
    continuous: float | None  # 0..1, or None when the source has none (yet)
    dt: float  # seconds since the previous frame (0 on a (re)start)


class _Clock:
    """dt between frames, robust to bunching; reports restarts after gaps or time going backwards."""

    def __init__(self) -> None:
        self.t: float | None = None
        self.avg: float | None = None

    def step(self, t: float) -> float | None:
        """The effective dt, or None when this frame starts a new run."""
        prev, self.t = self.t, t
        if prev is None:
            return None
        dt = t - prev
        if not (0 <= dt <= GAP_S):
            self.avg = None
            return None
        self.avg = dt if self.avg is None else self.avg + 0.1 * (dt - self.avg)
        return max(dt, 0.5 * self.avg, 1e-4)


class Extractor:
    kind = "raw"
    change_width = 0
    pose_width = 0

    def __init__(self, width: int) -> None:
        self.width = width

    def step(self, values: np.ndarray, t: float) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def calibration_state(self) -> dict | None:
        return None


class MotionExtractor(Extractor):
    """A phone or a watch: acceleration, rotation rate, orientation."""

    kind = "motion"
    change_width = 6
    pose_width = 6
    GYRO_WEIGHT = 0.5  # m/s² of drive per rad/s of rotation
    TILT_RANGE = (-60.0, 60.0)

    def __init__(self, width: int = MOTION_WIDTH) -> None:
        if width != MOTION_WIDTH:
            raise ValueError(f"motion frames hold {MOTION_WIDTH} values, got {width}")
        super().__init__(width)
        self.clock = _Clock()
        self.gravity = HighPass(0.3)
        self.smooth = OneEuro(min_cutoff=8.0, beta=0.1)
        self.tilt = OneEuro(min_cutoff=1.0, beta=0.05)
        self.tilt_cal = Calibration(1, "set", *self.TILT_RANGE)

    def step(self, values: np.ndarray, t: float) -> Features:
        v = np.asarray(values, np.float64)
        dt = self.clock.step(t)
        if dt is None:
            self.gravity.reset()
            self.smooth.reset()
            self.tilt.reset()
        step = dt or 0.0
        accel = self.gravity.step(v[0:3], step)
        omega = np.radians(v[3:6])
        smooth = self.smooth.step(np.concatenate([accel, omega]), step)
        a, w = smooth[:3], smooth[3:]
        drive = math.sqrt(a @ a) + self.GYRO_WEIGHT * math.sqrt(w @ w) if dt is not None else 0.0
        orient = np.radians(v[6:9])
        pose = np.concatenate([np.sin(orient[1:3]), np.cos(orient[1:3]), [np.sin(orient[0]), np.cos(orient[0])]])
        gamma = self.tilt.step(v[8:9], step)
        q = float(self.tilt_cal.step(gamma, t)[0])
        return Features(drive, np.concatenate([a, 2.0 * w]), pose, q, step)

    def calibration_state(self) -> dict:
        return {"tilt": self.tilt_cal.state()}


class HandExtractor(Extractor):
    """MediaPipe HandLandmarker world landmarks (+ image z)."""

    kind = "hand"
    change_width = 3 * HAND_LANDMARKS
    pose_width = 3 * HAND_LANDMARKS

    def __init__(self, width: int = HAND_WIDTH, deform_from: str = "openness") -> None:
        if width not in (HAND_WIDTH, 3 * HAND_LANDMARKS):
            raise ValueError(f"hand frames hold {HAND_WIDTH} values (or {3 * HAND_LANDMARKS}), got {width}")
        if deform_from not in ("openness", "depth"):
            raise ValueError("a hand deforms from 'openness' or 'depth'")
        super().__init__(width)
        self.deform_from = deform_from
        self.clock = _Clock()
        self.smooth = OneEuro(min_cutoff=2.0, beta=10.0, d_cutoff=5.0)
        self.prev: np.ndarray | None = None
        self.shape = OneEuro(min_cutoff=1.0, beta=0.5)
        prior = (1.0, 1.9) if deform_from == "openness" else (-0.08, 0.0)
        self.shape_cal = Calibration(1, "auto", *prior, learn_s=3.0)

    def step(self, values: np.ndarray, t: float) -> Features:
        v = np.asarray(values, np.float64)
        world = v[: 3 * HAND_LANDMARKS]
        dt = self.clock.step(t)
        if dt is None:
            self.smooth.reset()
            self.shape.reset()
            self.prev = None
        x = self.smooth.step(world, dt or 0.0)
        if self.prev is None or dt is None:
            vel = np.zeros_like(x)
        else:
            vel = (x - self.prev) / dt
        self.prev = x
        pts = world.reshape(HAND_LANDMARKS, 3)
        if self.deform_from == "openness":
            mcp = pts[MIDDLE_MCP] - pts[0]
            palm = math.sqrt(mcp @ mcp)
            tips = pts[_TIPS] - pts[0]
            raw = float(np.sqrt((tips * tips).sum(axis=1)).sum() / (len(TIPS) * palm)) if palm > 1e-6 else 1.0
        else:
            raw = float(v[3 * HAND_LANDMARKS + _TIPS].sum() / len(TIPS)) if v.size >= HAND_WIDTH else 0.0
        shape = self.shape.step(np.array([raw]), dt or 0.0)
        q = float(self.shape_cal.step(shape, t)[0])
        return Features(math.sqrt(vel @ vel), vel, x, q, dt or 0.0)

    def calibration_state(self) -> dict:
        return {self.deform_from: self.shape_cal.state()}


class RawExtractor(Extractor):
    """N values in any units: calibrated to 0..1 per axis, smoothed, differentiated."""

    kind = "raw"

    def __init__(self, width: int, calibration: Calibration | None = None, deform_axis: int | None = None,
                 min_cutoff: float = 1.5, beta: float = 1.0) -> None:
        if width < 1:
            raise ValueError("a raw source needs at least one value")
        if deform_axis is not None and not 0 <= deform_axis < width:
            raise ValueError(f"deform_axis {deform_axis} is not one of the {width} axes")
        super().__init__(width)
        self.change_width = self.pose_width = width
        self.calibration = calibration or Calibration(width, "auto", 0.0, 1.0, learn_s=3.0)
        if self.calibration.width != width:
            raise ValueError(f"calibration for {self.calibration.width} axes, source has {width}")
        self.deform_axis = deform_axis
        self.clock = _Clock()
        self.smooth = OneEuro(min_cutoff=min_cutoff, beta=beta)
        self.prev: np.ndarray | None = None

    def step(self, values: np.ndarray, t: float) -> Features:
        dt = self.clock.step(t)
        if dt is None:
            self.smooth.reset()
            self.prev = None
        cal = self.calibration.step(values, t)
        x = self.smooth.step(cal, dt or 0.0)
        vel = np.zeros_like(x) if self.prev is None or dt is None else (x - self.prev) / dt
        self.prev = x
        q = float(x[self.deform_axis]) if self.deform_axis is not None else None
        return Features(math.sqrt(vel @ vel), vel, x, q, dt or 0.0)

    def calibration_state(self) -> dict:
        return {"axes": self.calibration.state()}


def make_extractor(kind: str, width: int, **options) -> Extractor:
    if kind == "motion":
        return MotionExtractor(width)
    if kind == "hand":
        return HandExtractor(width, **{k: v for k, v in options.items() if k == "deform_from"})
    if kind == "raw":
        return RawExtractor(width, **{k: v for k, v in options.items() if k in ("calibration", "deform_axis")})
    raise ValueError(f"unknown sensor kind {kind!r} (motion, hand or raw)")


def deform_logits(q: float, expressivity: int, sharpness: float = 4.0) -> np.ndarray:
    """Deformation logits that put the variant cross-fade at position ``q`` (0..1) along the variants:
    weights ∝ exp(−sharpness·(j − q·(E−1))²). The renderer adds 1 to variant 0's logit (the resting shape's
    bias); it is taken off here so q = 0 means variant 0 and q = 1 the last one."""
    e = int(expressivity)
    pos = min(max(q, 0.0), 1.0) * (e - 1)
    logits = -sharpness * (np.arange(e) - pos) ** 2
    logits[0] -= 1.0
    return logits - logits.max()
