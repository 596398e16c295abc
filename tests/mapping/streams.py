"""Sensor streams for the mapping tests and figures: the real watch recordings, and synthetic hands.

- :func:`basicmotions` reads ``../shared/sensors/basicmotions.jsonl`` (a smart watch's 3D accelerometer and
  gyroscope at 10 Hz, 10 s per recording; see SOURCES.md) and turns each recording into ``motion`` frames
  (9 values: acceleration m/s², rotation rate deg/s, orientation deg, here zeros: the watch has none),
  at its own rate or resampled (linear) to a phone's rate.
- :func:`hand_stream` draws MediaPipe-like hand frames (21 world landmarks in metres, wrist-centred, then 21
  image z): a still hand with tracker jitter, finger snaps, a hand opening and closing, a waving hand.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BASICMOTIONS = REPO.parent / "shared" / "sensors" / "basicmotions.jsonl"
ACTIVITIES = ("standing", "walking", "running", "badminton")


@lru_cache(maxsize=None)
def _records() -> tuple[dict, ...]:
    return tuple(json.loads(line) for line in BASICMOTIONS.read_text().splitlines() if line.strip())


def basicmotions(activity: str | None = None, rate_hz: float | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(activity, t (n,), frames (n, 9))] per recording; ``rate_hz`` resamples linearly (None: 10 Hz)."""
    out = []
    for rec in _records():
        if activity is not None and rec["activity"] != activity:
            continue
        accel = np.asarray(rec["accel"], np.float64)
        gyro = np.degrees(np.asarray(rec["gyro"], np.float64))  # rad/s → deg/s, as a phone's devicemotion
        t0 = np.arange(accel.shape[0]) / rec["rate_hz"]
        if rate_hz is None:
            t = t0
        else:
            t = np.arange(0.0, t0[-1] + 1e-9, 1.0 / rate_hz)
            accel = np.stack([np.interp(t, t0, accel[:, i]) for i in range(3)], axis=1)
            gyro = np.stack([np.interp(t, t0, gyro[:, i]) for i in range(3)], axis=1)
        frames = np.concatenate([accel, gyro, np.zeros((t.size, 3))], axis=1)
        out.append((rec["activity"], t, frames))
    return out


# --------------------------------------------------------------------------------------- synthetic hands

# Finger bases (MCP) in the palm plane (x right, y up from the wrist, z towards the camera), metres.
_MCP = np.array([[-0.030, 0.025, 0.0], [-0.022, 0.090, 0.0], [0.000, 0.095, 0.0], [0.020, 0.090, 0.0],
                 [0.038, 0.080, 0.0]])
_SEG = np.array([[0.035, 0.032, 0.028], [0.040, 0.025, 0.022], [0.045, 0.028, 0.024],
                 [0.042, 0.026, 0.022], [0.032, 0.020, 0.018]])  # segment lengths per finger
_DIR = np.array([[-0.8, 0.6, 0.0], [-0.15, 1.0, 0.0], [0.0, 1.0, 0.0], [0.12, 1.0, 0.0], [0.3, 1.0, 0.0]])


def hand_pose(curl: np.ndarray | float) -> np.ndarray:
    """(21, 3) landmarks with each finger curled by ``curl`` (0 straight, 1 a fist), wrist at the origin."""
    curl = np.broadcast_to(np.asarray(curl, np.float64), (5,))
    pts = np.zeros((21, 3))
    for f in range(5):
        d = _DIR[f] / np.linalg.norm(_DIR[f])
        base = _MCP[f] if f else _MCP[0] * 0.6
        pts[1 + 4 * f] = base
        pos, ang = base.copy(), 0.0
        for j in range(3):
            ang += curl[f] * (1.3 if f else 0.7)  # each joint bends towards the palm (−z)
            step = _SEG[f, j] * (math.cos(ang) * d + math.sin(ang) * np.array([0.0, 0.0, -1.0]))
            pos = pos + step
            pts[2 + 4 * f + j] = pos
    return pts


def _rotate_z(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _frame(pts: np.ndarray, rng: np.random.Generator, jitter_m: float) -> np.ndarray:
    world = pts + rng.normal(0.0, jitter_m, pts.shape)
    world[0] = 0.0  # world landmarks are wrist-centred
    image_z = world[:, 2] * 1.2 + rng.normal(0.0, jitter_m, 21)
    return np.concatenate([world.reshape(-1), image_z])


def hand_stream(kind: str, seconds: float = 4.0, rate_hz: float = 30.0, seed: int = 0,
                jitter_m: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """(t (n,), frames (n, 84)) of a synthetic hand: ``still`` (relaxed hand, tracker jitter only),
    ``snap`` (a finger snap every 0.5 s: the middle finger flicks from the thumb into the palm in 40 ms),
    ``open_close`` (fist to open hand and back, 1 Hz), ``wave`` (the hand turns ±35° at 1.5 Hz)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, seconds, 1.0 / rate_hz)
    relaxed = np.array([0.2, 0.25, 0.3, 0.3, 0.35])
    frames = []
    for ti in t:
        if kind == "still":
            pts = hand_pose(relaxed)
        elif kind == "snap":
            phase = (ti - 0.25) % 0.5
            curl = np.array([0.5, 0.3, 0.55, 0.8, 0.8])  # middle finger pressed on the thumb
            if phase < 0.04:
                curl[2] = 0.55 + (1.0 - 0.55) * phase / 0.04  # the flick
            elif phase < 0.3:
                curl[2] = 1.0 - 0.45 * (phase - 0.04) / 0.26  # back to the thumb, slowly
            pts = hand_pose(curl)
        elif kind == "open_close":
            pts = hand_pose(0.5 - 0.5 * math.cos(2 * math.pi * ti))
        elif kind == "wave":
            pts = _rotate_z(hand_pose(relaxed * 0.5), math.radians(35) * math.sin(2 * math.pi * 1.5 * ti))
        else:
            raise ValueError(f"unknown hand stream {kind!r}")
        frames.append(_frame(pts, rng, jitter_m))
    return t, np.array(frames)
