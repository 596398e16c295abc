"""MIDI as commands, and commands as MIDI: a pure core (bytes in, commands out; values in, notes out).

A MIDI preset is a small TOML file (``midi_presets/keys25.toml`` is a commented one):

    name = "keys25"
    about = "..."
    [notes]            # which key fires which control dimension
    first = 48         # the lowest key (C3) is dimension 0, the next dimension 1, ...
    count = 25         # keys first .. first + count - 1; others are ignored
    list = []          # or the keys in dimension order (pads laid out in rows), which then wins
    [velocity]         # how hard → how strong: value = scale · (velocity / 127) ^ curve
    curve = 1.0
    scale = 1.0
    [cc]               # control change number → "gain" (0..gain_max), "deform" (one knob sweeps every
    1 = "deform"       # variant), "deform:<i>" (variant i's logit, 0..deform_range)
    7 = "gain"

Notes: a note-on fires the key's dimension modulo the instrument's K (so a 25-key controller plays any
instrument; with K below the key count the keys repeat), its value from the velocity; a note-off (or a
note-on of velocity 0) does nothing: attacks ring out on their own. Program change *p* plays the *p*-th
instrument of the library (in its sorted order). With ``channel_voices = true`` MIDI channel *n* (0-based)
plays voice *n*, otherwise every channel plays voice 0 (OSC's voice). Anything else (pitch bend, aftertouch,
clock, SysEx) is ignored.

MIDI out plays the same map backwards: dimension *d* is the key that fires it, the value the velocity.
Nothing here opens a port: :mod:`sensorsynth.server.midi` is the edge.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..protocol.commands import Command, ControlChannel, Deform, Gain, Rejected, SelectInstrument
from .preset_files import bundled, load_preset_file

MIDI_PRESETS_DIR = Path(__file__).parent / "midi_presets"
_TARGET = re.compile(r"^(gain|deform|deform:(\d{1,3}))$")


class MidiPresetError(ValueError):
    """A MIDI preset that cannot be used; the message names the file and the field."""


class NoteMap(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    first: int = Field(48, ge=0, le=127)
    count: int = Field(25, ge=1, le=128)
    keys: list[int] = Field(default_factory=list, alias="list", max_length=128)

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[int]) -> list[int]:
        if any(not 0 <= n <= 127 for n in v) or len(set(v)) != len(v):
            raise ValueError("list holds distinct note numbers 0..127")
        return v


class VelocityMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    curve: float = Field(1.0, ge=0.1, le=10.0)
    scale: float = Field(1.0, gt=0.0, le=16.0)


class MidiPreset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    about: str = ""
    notes: NoteMap = Field(default_factory=NoteMap)
    velocity: VelocityMap = Field(default_factory=VelocityMap)
    cc: dict[int, str] = Field(default_factory=dict)
    gain_max: float = Field(1.0, ge=0.0, le=16.0)  # cc "gain" at 127
    deform_range: float = Field(6.0, gt=0.0, le=100.0)  # cc "deform:<i>" at 127: logit i; "deform": sharpness
    program_changes: bool = True  # program change → instrument
    channel_voices: bool = False  # MIDI channel n plays voice n (else every channel plays voice 0)
    out_channel: int = Field(0, ge=0, le=15)  # the channel MIDI out sends its notes on

    @field_validator("cc")
    @classmethod
    def _cc(cls, v: dict[int, str]) -> dict[int, str]:
        for number, target in v.items():
            if not 0 <= number <= 127:
                raise ValueError(f"control change numbers are 0..127, got {number}")
            if not _TARGET.match(target):
                raise ValueError(f"cc {number}: target {target!r} is not gain, deform or deform:<i>")
        return v

    @model_validator(mode="after")
    def _span(self) -> "MidiPreset":
        if not self.notes.keys and self.notes.first + self.notes.count > 128:
            raise ValueError(f"notes first {self.notes.first} + count {self.notes.count} go beyond note 127")
        return self


def available() -> list[str]:
    return bundled(MIDI_PRESETS_DIR)


def load_midi_preset(name_or_path: str | Path) -> MidiPreset:
    """A bundled MIDI preset by name (``keys25``, ``grid``) or a TOML file by path."""
    return load_preset_file(name_or_path, MIDI_PRESETS_DIR, MidiPreset, MidiPresetError, "MIDI preset")


class MidiMapper:
    """MIDI messages → commands for one preset. It keeps one piece of state: each voice's deformation logits,
    so that several knobs (``deform:0``, ``deform:1``) move one deformation together."""

    def __init__(self, preset: MidiPreset) -> None:
        self.preset = preset
        notes = preset.notes
        self._dim = ({n: d for d, n in enumerate(notes.keys)} if notes.keys
                     else {notes.first + d: d for d in range(notes.count)})  # fmt: skip
        self._logits: dict[int, np.ndarray] = {}

    def dimension(self, note: int) -> int | None:
        """The control dimension a key fires (before the instrument's modulo), None for keys outside the map."""
        return self._dim.get(note)

    def value(self, velocity: int) -> float:
        v = self.preset.velocity
        return v.scale * (velocity / 127.0) ** v.curve

    def message(self, data: Sequence[int], k: int, e: int, instruments: Sequence[str]) -> list[Command]:
        """The commands of one MIDI message (its bytes) for a voice whose instrument has ``k`` control dimensions
        and ``e`` deformation variants; ``instruments``: the library's names, in order. [] for what the preset
        ignores; Rejected for malformed bytes or a program beyond the library."""
        if data and 0xF0 <= data[0] <= 0xFF:
            return []  # system messages: clock, SysEx, ...
        if not 1 <= len(data) <= 3 or not 0x80 <= data[0] <= 0xFF or any(not 0 <= b <= 0x7F for b in data[1:]):
            raise Rejected("malformed", "not a MIDI channel message")
        status, kind, channel = data[0], data[0] & 0xF0, data[0] & 0x0F
        need = 2 if kind in (0xC0, 0xD0) else 3
        if len(data) != need:
            raise Rejected("malformed", f"MIDI message 0x{status:02x} has {need} bytes, got {len(data)}")
        p = self.preset
        voice = channel if p.channel_voices else None
        if kind == 0x90 and data[2] > 0:
            d = self._dim.get(data[1])
            if d is None or k < 1:
                return []
            return [ControlChannel.of(d % k, self.value(data[2]), voice)]
        if kind == 0xB0:
            target = p.cc.get(data[1])
            if target is None:
                return []
            x = data[2] / 127.0
            if target == "gain":
                return [Gain.of(x * p.gain_max, voice)]
            if e < 2:
                return []  # one variant: nothing to deform
            logits = self._logits.get(channel if p.channel_voices else -1)
            if logits is None or logits.size != e:
                logits = np.zeros(e)
            if target == "deform":  # one knob: a bump of logits centred on the variant at the knob's position
                pos = x * (e - 1)
                logits = -p.deform_range * (np.arange(e) - pos) ** 2
            else:
                i = int(target.partition(":")[2])
                if i >= e:
                    return []
                logits = logits.copy()
                logits[i] = x * p.deform_range
            self._logits[channel if p.channel_voices else -1] = logits
            return [Deform.of(logits.tolist(), voice)]
        if kind == 0xC0 and p.program_changes:
            if data[1] >= len(instruments):
                raise Rejected("unknown_instrument", f"program {data[1]}: the library has {len(instruments)} "
                               f"instruments (programs 0..{len(instruments) - 1})")
            return [SelectInstrument.of(instruments[data[1]], voice)]
        return []  # note-off, aftertouch, pitch bend, program changes when off


# ------------------------------------------------------------------------------------------- MIDI out
def note_of(preset: MidiPreset, dim: int) -> int | None:
    """The key that fires dimension ``dim`` under ``preset`` (None when no key does)."""
    keys = preset.notes.keys
    if keys:
        return keys[dim] if dim < len(keys) else None
    note = preset.notes.first + dim
    return note if note <= 127 else None


def velocity_of(preset: MidiPreset, value: float) -> int:
    """The velocity that plays ``value`` (the inverse of the preset's velocity map), 1..127."""
    v = preset.velocity
    x = max(0.0, float(value)) / v.scale
    return int(min(127, max(1, round(127.0 * x ** (1.0 / v.curve)))))


def control_notes(preset: MidiPreset, values: Sequence[float]) -> list[tuple[int, int, int]]:
    """MIDI out of one applied control event: (note-on status byte, note, velocity) for every dimension that
    fired (value > 0) and has a key."""
    status = 0x90 | preset.out_channel
    out = []
    for d in np.flatnonzero(np.asarray(values, np.float64) > 0):
        note = note_of(preset, int(d))
        if note is not None:
            out.append((status, note, velocity_of(preset, values[int(d)])))
    return out
