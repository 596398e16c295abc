"""Scenes as data: the TOML file that says what an installation plays (``scenes = "scenes.toml"`` in the serve
config, ``--scenes``), validated with pydantic before anything plays.

A scene names, for every voice or one by one, the instrument and the gain; which OSC presets and learned mappings
are active; the output channels' gains; an optional lower level cap; and how long the cross-fade into it takes.
The optional ``[schedule]`` (:mod:`.schedule`) says which scene plays when. ``docs/scenes.md`` has a full
example.

Hostile files are normal input: the file is read up to :data:`MAX_FILE_BYTES` (more is refused before parsing),
nesting deeper than :data:`MAX_DEPTH` is refused before pydantic sees it, every table refuses unknown keys, and
every error is one line naming the field (``scenes.toml: field 'scenes.day.gain': ...``). What depends on the
server (the instruments in its models folder, its presets, voices and output channels) is checked by
:func:`check_against`, at start: an unknown instrument is an error when the service starts, not at 3 a.m.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .schedule import SCENE_NAME, Schedule
from .validation import first_error

__all__ = ["MAX_FILE_BYTES", "Scene", "ScenesError", "ScenesFile", "VoiceScene", "check_against", "load_scenes",
           "parse_scenes"]

MAX_FILE_BYTES = 64 * 1024
MAX_DEPTH = 6  # scenes.NAME.voices.N.field is 5 deep; deeper is not a scenes file
MAX_SCENES = 64
MAX_VOICES = 256  # ServeConfig.max_voices' bound
MAX_CHANNELS = 64  # ServeConfig.output_channels' bound
INSTRUMENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ScenesError(ValueError):
    """A scenes file that cannot be used; one line naming the file and the field."""


class VoiceScene(BaseModel):
    """One voice's part in a scene: its instrument and gain (each None: the scene's for every voice)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    instrument: str | None = Field(None, pattern=INSTRUMENT_NAME)
    gain: float | None = Field(None, ge=0, le=16, allow_inf_nan=False)


class Scene(BaseModel):
    """What an installation plays in one scene."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    about: str = Field("", max_length=500)
    instrument: str | None = Field(None, pattern=INSTRUMENT_NAME)  # every voice; None: each keeps its own
    gain: float = Field(1.0, ge=0, le=16, allow_inf_nan=False)  # every voice
    voices: dict[int, VoiceScene] = Field(default_factory=dict, max_length=MAX_VOICES)
    presets: list[str] | None = Field(None, max_length=32)  # active OSC presets; None: all the server loaded
    learned: bool | None = None  # OSC's voices play through their learned mappings; None: as they are
    output_gains: list[float] | None = Field(None, min_length=1, max_length=MAX_CHANNELS)
    level_cap_dbfs: float | None = Field(None, ge=-60, le=0, allow_inf_nan=False)
    crossfade_s: float | None = Field(None, ge=0, le=600, allow_inf_nan=False)

    @field_validator("voices")
    @classmethod
    def _voices(cls, value: dict[int, VoiceScene]) -> dict[int, VoiceScene]:
        for v in value:
            if not 0 <= v < MAX_VOICES:
                raise ValueError(f"voice {v}: voices are 0..{MAX_VOICES - 1}")
        return value

    @field_validator("output_gains")
    @classmethod
    def _gains(cls, value: list[float] | None) -> list[float] | None:
        for i, g in enumerate(value or []):
            if not 0.0 <= g <= 1.0:
                raise ValueError(f"output_gains[{i}] = {g}: channel gains are 0..1")
        return value

    @field_validator("presets")
    @classmethod
    def _preset_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not isinstance(name, str) or not 1 <= len(name) <= 128:
                raise ValueError("preset names are 1..128 characters")
        return value

    def voice(self, v: int) -> tuple[str | None, float]:
        """(instrument or None to keep it, gain) of voice ``v`` in this scene."""
        own = self.voices.get(v)
        inst = own.instrument if own is not None and own.instrument else self.instrument
        gain = own.gain if own is not None and own.gain is not None else self.gain
        return inst, gain

    def instruments(self) -> set[str]:
        return {n for n in (self.instrument, *(v.instrument for v in self.voices.values())) if n}


class ScenesFile(BaseModel):
    """The whole file: the scenes, the default cross-fade, the scene to start on without a schedule, the
    schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    crossfade_s: float = Field(2.0, ge=0, le=600, allow_inf_nan=False)
    start: str | None = Field(None, pattern=SCENE_NAME)
    scenes: dict[str, Scene] = Field(min_length=1, max_length=MAX_SCENES)
    schedule: Schedule | None = None

    @field_validator("scenes")
    @classmethod
    def _names(cls, value: dict[str, Scene]) -> dict[str, Scene]:
        for name in value:
            if not re.match(SCENE_NAME, name):
                raise ValueError(f"scene name {name[:64]!r}: 1-64 of letters, digits, '.', '_', '-'")
        return value

    @model_validator(mode="after")
    def _known(self) -> "ScenesFile":
        wanted = {self.start} if self.start else set()
        if self.schedule is not None:
            wanted |= self.schedule.scene_names()
        missing = sorted(wanted - set(self.scenes))
        if missing:
            raise ValueError(f"no scene {missing[0]!r} in [scenes] (there: {', '.join(self.scenes)})")
        return self

    @property
    def first(self) -> str:
        """The scene to start on when no schedule says otherwise."""
        return self.start or next(iter(self.scenes))

    def crossfade(self, name: str) -> float:
        own = self.scenes[name].crossfade_s
        return self.crossfade_s if own is None else own


def _depth(obj: Any, limit: int, level: int = 0) -> bool:
    if level > limit:
        return False
    if isinstance(obj, dict):
        return all(_depth(v, limit, level + 1) for v in obj.values())
    if isinstance(obj, list):
        return all(_depth(v, limit, level + 1) for v in obj)
    return True


def _first_error(exc: ValidationError, where: str) -> ScenesError:
    return ScenesError((where + first_error(exc))[:400])


def parse_scenes(text: str, where: str = "") -> ScenesFile:
    """A scenes file's text → :class:`ScenesFile`, or :class:`ScenesError` (one line)."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise ScenesError(f"{where}larger than {MAX_FILE_BYTES // 1024} KiB: not a scenes file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenesError(f"{where}not valid TOML: {exc}"[:400]) from None
    except RecursionError:
        raise ScenesError(f"{where}nested too deeply: not a scenes file") from None
    if not _depth(data, MAX_DEPTH):
        raise ScenesError(f"{where}nested deeper than {MAX_DEPTH} levels: not a scenes file")
    try:
        return ScenesFile.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, where) from None


def load_scenes(path: str | Path) -> ScenesFile:
    """Read and validate a scenes file (at most :data:`MAX_FILE_BYTES`; read no further than that)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenesError(f"cannot read scenes file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenesError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB: not a scenes file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenesError(f"{path}: not UTF-8 text") from None
    return parse_scenes(text, f"{path}: ")


@dataclass(frozen=True)
class Server:
    """What a scenes file is checked against: the server it will run in."""

    instruments: Iterable[str]
    presets: Iterable[str] | None = None  # None: not known (an offline check without a config)
    max_voices: int = 8
    output_channels: int | None = None  # None: this build has no output channels to check against


def check_against(scenes: ScenesFile, server: Server, where: str = "") -> None:
    """Refuse (one :class:`ScenesError` line) what this server cannot play: an instrument not in its models
    folder, a preset it did not load, a voice it does not have, output gains for another channel count."""
    instruments = set(server.instruments)
    presets = set(server.presets) if server.presets is not None else None
    for name, scene in scenes.scenes.items():
        for inst in sorted(scene.instruments()):
            if inst not in instruments:
                raise ScenesError(f"{where}scene '{name}': no instrument {inst!r} in the models folder "
                                  f"(there: {', '.join(sorted(instruments)) or 'none'})")
        for v in scene.voices:
            if v >= server.max_voices:
                raise ScenesError(f"{where}scene '{name}': voice {v}, but the server has voices 0..{server.max_voices - 1} "
                                  "(max_voices)")
        if presets is not None:
            for p in scene.presets or []:
                if p not in presets:
                    raise ScenesError(f"{where}scene '{name}': preset {p!r} is not loaded (presets: "
                                      f"{', '.join(sorted(presets)) or 'none'})")
        if scene.output_gains is not None and server.output_channels is not None \
                and len(scene.output_gains) != server.output_channels:
            raise ScenesError(f"{where}scene '{name}': {len(scene.output_gains)} output_gains for "
                              f"{server.output_channels} output channels (output_channels)")
