"""Commands: what every input (OSC, WebSocket, a mapping) becomes before it reaches the audio engine.

They are plain frozen values, so the OSC and WebSocket edges, the mappings and the tests all speak the same
language, and the engine is the single place that turns them into renderer events. ``voice=None`` means the
source's own voice (voice 0 for OSC without ``/voice/<n>``, the client's voice on a WebSocket). ``at`` is a
sender's time in Unix seconds (an OSC time tag) or ``None`` for "as soon as it arrives"; the edge that read it
has already checked it against the allowed window, so the engine only converts it to a sample time.

Values are checked here for what needs no instrument (finite numbers, non-negative controls); what depends
on the instrument (the number of values) is checked by the engine, which knows the voice's instrument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union


class Rejected(ValueError):
    """An input that was refused. ``kind`` is a short stable word used to count rejections (``nonfinite``,
    ``wrong_count``, ``negative``, ``unknown_instrument``, ...); the message says what was wrong."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _floats(values, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise Rejected("wrong_type", f"{what} must be numbers") from None
    if not all(math.isfinite(v) for v in out):
        raise Rejected("nonfinite", f"{what} holds NaN or inf")
    return out


def _voice(voice) -> int | None:
    if voice is None:
        return None
    if isinstance(voice, bool) or not isinstance(voice, int) or voice < 0:
        raise Rejected("bad_voice", f"voice must be an integer ≥ 0, got {voice!r}")
    return voice


@dataclass(frozen=True, slots=True)
class Control:
    """Fire attacks: one non-negative strength per control dimension of the voice's instrument."""

    values: tuple[float, ...]
    voice: int | None = None
    at: float | None = None

    @classmethod
    def of(cls, values, voice: int | None = None, at: float | None = None) -> "Control":
        vals = _floats(values, "control values")
        if any(v < 0 for v in vals):
            raise Rejected("negative", "control values must be ≥ 0")
        return cls(vals, _voice(voice), at)


@dataclass(frozen=True, slots=True)
class ControlChannel:
    """Fire one control dimension (``index``) with strength ``value`` (the OSC ``/control/<i>`` form, one value
    per address, as TouchDesigner's OSC Out CHOP sends a channel). A value of 0 fires nothing."""

    index: int
    value: float
    voice: int | None = None
    at: float | None = None

    @classmethod
    def of(cls, index: int, value, voice: int | None = None, at: float | None = None) -> "ControlChannel":
        (v,) = _floats([value], "control value")
        if v < 0:
            raise Rejected("negative", "control values must be ≥ 0")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise Rejected("bad_index", f"control index must be an integer ≥ 0, got {index!r}")
        return cls(index, v, _voice(voice), at)


@dataclass(frozen=True, slots=True)
class Deform:
    """New deformation logits (one per expressivity variant): the variant cross-fade ramps to softmax(logits)."""

    logits: tuple[float, ...]
    voice: int | None = None
    at: float | None = None

    @classmethod
    def of(cls, logits, voice: int | None = None, at: float | None = None) -> "Deform":
        return cls(_floats(logits, "deformation logits"), _voice(voice), at)


@dataclass(frozen=True, slots=True)
class Gain:
    """Voice gain, linear, ≥ 0 (ramped click-free)."""

    gain: float
    voice: int | None = None

    @classmethod
    def of(cls, gain, voice: int | None = None) -> "Gain":
        (g,) = _floats([gain], "gain")
        if g < 0 or g > 16:
            raise Rejected("out_of_range", f"gain must be in [0, 16], got {g}")
        return cls(g, _voice(voice))


@dataclass(frozen=True, slots=True)
class SelectInstrument:
    """Play the instrument of this name (a file name in the models folder, without ``.instrument``) on a voice."""

    name: str
    voice: int | None = None

    @classmethod
    def of(cls, name, voice: int | None = None) -> "SelectInstrument":
        if not isinstance(name, str) or not name or len(name) > 128:
            raise Rejected("bad_name", "instrument name must be a non-empty string of at most 128 characters")
        return cls(name, _voice(voice))


@dataclass(frozen=True, slots=True)
class Pan:
    """Where a voice sounds among the speakers: ``position`` 0..1 along the line (0 the first speaker, 1 the
    last) or round the ring (0 and 1 the first speaker), equal-power between the two nearest speakers; the
    server's ``placement`` says which (see docs/speakers.md). Moved click-free."""

    position: float
    voice: int | None = None

    @classmethod
    def of(cls, position, voice: int | None = None) -> "Pan":
        (p,) = _floats([position], "pan position")
        if p < 0 or p > 1:
            raise Rejected("out_of_range", f"pan position must be in [0, 1], got {p}")
        return cls(p, _voice(voice))


Command = Union[Control, ControlChannel, Deform, Gain, SelectInstrument, Pan]
