"""Where a voice sounds among several speakers: a position (or a fixed channel) → one gain per output channel.

Pure numpy, no state. The renderer applies the vector in its compiled mix (one multiply-add per channel and
sample, channels at gain 0 skipped), ramped click-free like the voice gain; this module only says what the
vector is, so the rule can be tested against its definition.

Rules:

- ``fixed``: the voice sounds on one channel at gain 1 (a speaker per voice, or several voices on one).
- ``line``: speakers 0..N-1 evenly along a line; position 0 is speaker 0, 1 is speaker N-1. Between two
  neighbours the **equal-power** law: at fraction f of the way from speaker i to i+1 the gains are
  cos(f·π/2) and sin(f·π/2), so Σ g² = 1 everywhere and a voice moving along the line keeps its loudness.
- ``ring``: speakers 0..N-1 evenly round a circle; position p in [0, 1) turns once round it (p·N speakers
  from speaker 0; 1 is 0 again), the same law between speaker i and (i+1) mod N.

And for the browser's monitor: :func:`fold_down` makes a stereo (or mono) mix of N channels, each speaker
panned to the left/right by where it stands (equal power again).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Layout = Literal["line", "ring"]
Rule = Literal["fixed", "line", "ring"]
RULES: tuple[str, ...] = ("fixed", "line", "ring")
MAX_CHANNELS = 64


def _check_channels(channels: int) -> int:
    if isinstance(channels, bool) or int(channels) != channels or not 1 <= int(channels) <= MAX_CHANNELS:
        raise ValueError(f"channels must be an integer in [1, {MAX_CHANNELS}], got {channels!r}")
    return int(channels)


def _check_position(position: float) -> float:
    p = float(position)
    if not math.isfinite(p):
        raise ValueError(f"position must be a finite number, got {position!r}")
    return p


def fixed_gains(channel: int, channels: int) -> np.ndarray:
    """Gain 1 on ``channel``, 0 elsewhere."""
    n = _check_channels(channels)
    if isinstance(channel, bool) or int(channel) != channel or not 0 <= int(channel) < n:
        raise ValueError(f"channel must be in [0, {n}), got {channel!r}")
    g = np.zeros(n, np.float32)
    g[int(channel)] = 1.0
    return g


def _pair(n: int, i: int, j: int, f: float) -> np.ndarray:
    g = np.zeros(n, np.float64)
    g[i] += math.cos(f * math.pi / 2)
    g[j] += math.sin(f * math.pi / 2)
    g[g < 1e-9] = 0.0  # cos(π/2) is 6e-17 in floating point: a speaker that is off is exactly off
    return g.astype(np.float32)


def line_gains(position: float, channels: int) -> np.ndarray:
    """Equal-power pan along a line of ``channels`` speakers; ``position`` is clamped to [0, 1]."""
    n = _check_channels(channels)
    p = min(1.0, max(0.0, _check_position(position)))
    if n == 1:
        return np.ones(1, np.float32)
    x = p * (n - 1)
    i = min(int(math.floor(x)), n - 2)
    return _pair(n, i, i + 1, x - i)


def ring_gains(position: float, channels: int) -> np.ndarray:
    """Equal-power pan round a ring of ``channels`` speakers; ``position`` wraps (1.25 is 0.25)."""
    n = _check_channels(channels)
    p = _check_position(position) % 1.0
    if n == 1:
        return np.ones(1, np.float32)
    x = p * n
    i = min(int(math.floor(x)), n - 1)
    return _pair(n, i, (i + 1) % n, x - i)


def pan_gains(position: float, channels: int, layout: Layout) -> np.ndarray:
    """The gain vector of ``position`` on a ``line`` or a ``ring``."""
    if layout == "line":
        return line_gains(position, channels)
    if layout == "ring":
        return ring_gains(position, channels)
    raise ValueError(f"layout must be 'line' or 'ring', got {layout!r}")


def pan_layout(rule: Rule) -> Layout:
    """How a client's ``pan`` position is read under a rule: round the ring for ``ring``, along the line
    otherwise (a fixed-channel installation's speakers are taken as a row)."""
    return "ring" if rule == "ring" else "line"


def default_position(voice: int, voices: int, rule: Rule) -> float:
    """Voices spread evenly: along the whole line, or round the ring at equal angles."""
    if rule == "ring":
        return voice / max(1, voices)
    return voice / (voices - 1) if voices > 1 else 0.5


def voice_gains(voice: int, voices: int, channels: int, rule: Rule, channel_of: list[int] | None = None,
                position_of: list[float] | None = None) -> np.ndarray:  # fmt: skip
    """The starting gain vector of ``voice`` under a rule: its configured channel (default voice mod N) for
    ``fixed``, its configured position (default :func:`default_position`) for ``line`` and ``ring``."""
    n = _check_channels(channels)
    if rule == "fixed":
        ch = channel_of[voice] if channel_of is not None and voice < len(channel_of) else voice % n
        return fixed_gains(ch, n)
    if rule not in ("line", "ring"):
        raise ValueError(f"placement must be one of {RULES}, got {rule!r}")
    pos = position_of[voice] if position_of is not None and voice < len(position_of) else default_position(
        voice, voices, rule)  # fmt: skip
    return pan_gains(pos, n, rule)


def fold_down(channels: int, layout: Layout, outputs: int = 2) -> np.ndarray:
    """(channels, outputs) matrix mixing N speakers into stereo (outputs=2) or mono (1) for a monitor.

    Stereo: speaker c stands at a left-right place x_c in [0, 1] (along the line: c/(N-1); on the ring, speaker
    0 in front and the ring turning clockwise: (1 + sin θ_c)/2), and goes to the left and right with gains
    cos(x·π/2), sin(x·π/2). Mono: every speaker at 1/√N (uncorrelated speakers keep their summed power).
    One channel is passed through unchanged."""
    n = _check_channels(channels)
    if outputs not in (1, 2):
        raise ValueError(f"outputs must be 1 or 2, got {outputs!r}")
    if n == 1:
        return np.ones((1, outputs), np.float32)
    if outputs == 1:
        return np.full((n, 1), 1.0 / math.sqrt(n), np.float32)
    if layout == "ring":
        x = (1.0 + np.sin(2 * np.pi * np.arange(n) / n)) / 2
    else:
        x = np.arange(n) / (n - 1)
    return np.stack([np.cos(x * np.pi / 2), np.sin(x * np.pi / 2)], axis=1).astype(np.float32)
