"""Validation of what callers schedule, shared by both renderers: bad input raises ValueError before it
can touch any voice's state."""

from __future__ import annotations

import math

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_time(time) -> int:
    if isinstance(time, bool) or not isinstance(time, (int, np.integer)):
        raise ValueError(f"time must be an integer sample index, got {time!r}")
    if time < 0:
        raise ValueError(f"time must be ≥ 0 (samples since start), got {time}")
    return int(time)


def check_voice(voice, n_voices: int) -> int:
    if isinstance(voice, bool) or not isinstance(voice, (int, np.integer)):
        raise ValueError(f"voice must be an integer, got {voice!r}")
    if not 0 <= int(voice) < n_voices:
        raise ValueError(f"unknown voice {voice}: this renderer has voices 0..{n_voices - 1}")
    return int(voice)


def check_vector(values, size: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an array of numbers, got {type(values).__name__}") from None
    if arr.ndim != 1 or arr.shape[0] != size:
        raise ValueError(f"{what} must have shape ({size},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds NaN or inf")
    return arr


def check_control(values, size: int) -> np.ndarray:
    """A control-plane vector: ``size`` finite values ≥ 0 that fit in float32."""
    arr = check_vector(values, size, "control vector")
    if np.any(arr < 0):
        raise ValueError("control vector values must be ≥ 0")
    if np.any(arr > FLOAT32_MAX):
        raise ValueError("control vector values overflow float32")
    return arr.astype(np.float32)


def check_gain(gain) -> float:
    gain = float(gain)
    if not math.isfinite(gain) or gain < 0:
        raise ValueError(f"gain must be finite and ≥ 0, got {gain}")
    return gain


def check_instrument(index, n_instruments: int) -> int:
    """An instrument index of a renderer holding ``n_instruments``."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"instrument must be an index, got {index!r}")
    if not 0 <= int(index) < n_instruments:
        raise ValueError(f"unknown instrument {index}: this renderer holds 0..{n_instruments - 1}")
    return int(index)
