"""Presets: what existing OSC senders send, as data (``presets/*.toml``), turned into sensor frames.

A preset is a small TOML file (see ``presets/touchdesigner.toml`` for a commented one):

    name = "zigsim"
    about = "..."                  # what sends this, and where its address scheme is documented
    ports = []                     # extra UDP ports the server also listens on (Wekinator: 6448)

    [[sources]]                    # a sensor stream: one mapping state, like a WebSocket ``sensor`` source
    name = "zigsim:{1}"            # {1}, {2}: what the address's first, second ``*`` matched (one per device)
    kind = "motion"                # motion (9 values as the phone page), hand (84) or raw (N)
    width = 9                      # raw: N (0 = the length of the first vector message)
    calibration = "set"            # raw: "auto" (learn the range over learn_s) or "set" (lo..hi)
    lo = 0.0                       # raw: one number for every axis, or one per axis
    hi = 1.0
    learn_s = 3.0
    deform_axis = -1               # raw: the axis (0-based) whose value deforms the instrument; -1: none
    pan_axis = -1                  # raw: the axis whose calibrated 0..1 value places the voice among the
                                   # speakers (a `pan` position, docs/speakers.md); -1: none
    threshold = 1.0                # optional gate overrides (see gate.py): threshold, full, refractory_s

    [[addresses]]
    address = "/ZIGSIM/*/gyro"     # exact OSC address; ``*`` matches one whole segment
    source = "zigsim:{1}"
    axes = [4, 5, 3]               # the message's values go to these axes, in order ([] = all, from 0)
    scale = 57.29578               # value · scale + offset (one number, or one per value): normalise units
    offset = 0.0
    transform = ""                 # "" or "quaternion": 4 values x, y, z, w → orientation α, β, γ (deg)

Frames are assembled from address updates (an OSC sender often sends one address per axis): a source's
pending frame is emitted when every address of the source has sent since the last frame, when an address
repeats before that (the sender's next frame began), at the end of a bundle, or by the hub's tick once it
is ``STALE_S`` old (senders that only send what changed). Pure: no I/O but :func:`load_preset`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .preset_files import bundled, load_preset_file

PRESETS_DIR = Path(__file__).parent / "presets"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:{}-]{0,63}$")
STALE_S = 0.02


class PresetError(ValueError):
    """A preset that cannot be used; the message names the file and the field."""


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["motion", "hand", "raw"] = "raw"
    width: int = Field(0, ge=0, le=4096)
    calibration: Literal["auto", "set"] = "auto"
    lo: float | list[float] = 0.0
    hi: float | list[float] = 1.0
    learn_s: float = Field(3.0, ge=0, le=3600)
    deform_axis: int = Field(-1, ge=-1)
    pan_axis: int = Field(-1, ge=-1)
    threshold: float | None = Field(None, gt=0)
    full: float | None = Field(None, gt=0)
    refractory_s: float | None = Field(None, ge=0, le=10)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"source name {v!r}: letters, digits, '_', '.', ':', '-' and {{n}} placeholders")
        return v

    @model_validator(mode="after")
    def _widths(self) -> "SourceSpec":
        fixed = {"motion": 9, "hand": 84}.get(self.kind)
        if fixed is not None:
            if self.width not in (0, fixed):
                raise ValueError(f"a {self.kind} source has {fixed} values, not {self.width}")
            self.width = fixed
        if self.deform_axis >= 0 and self.width and self.deform_axis >= self.width:
            raise ValueError(f"deform_axis {self.deform_axis} is beyond the {self.width} axes")
        if self.pan_axis >= 0 and self.width and self.pan_axis >= self.width:
            raise ValueError(f"pan_axis {self.pan_axis} is beyond the {self.width} axes")
        return self


class AddressSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str
    source: str
    axes: list[int] = Field(default_factory=list)
    scale: float | list[float] = 1.0
    offset: float | list[float] = 0.0
    transform: Literal["", "quaternion"] = ""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not v.startswith("/") or "//" in v or any(c in v for c in " #,?[]{}") or not v.isascii():
            raise ValueError(f"address {v!r} must be an OSC address ('*' matches one segment)")
        return v

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: list[int]) -> list[int]:
        if any(a < 0 for a in v) or len(set(v)) != len(v):
            raise ValueError("axes must be distinct indices ≥ 0")
        return v


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    about: str = ""
    ports: list[int] = Field(default_factory=list)
    sources: list[SourceSpec] = Field(default_factory=list)
    addresses: list[AddressSpec] = Field(default_factory=list)

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        if any(not 0 <= p <= 65535 for p in v):
            raise ValueError("ports are 0..65535")
        return v

    @model_validator(mode="after")
    def _links(self) -> "Preset":
        names = {s.name: s for s in self.sources}
        for a in self.addresses:
            spec = names.get(a.source)
            if spec is None:
                raise ValueError(f"address {a.address} names source {a.source!r}, which the preset does not define")
            stars = a.address.count("*")
            for ref in re.findall(r"\{(\d+)\}", a.source):
                if not 1 <= int(ref) <= stars:
                    raise ValueError(f"source {a.source!r} uses {{{ref}}} but {a.address} has {stars} '*'")
            if spec.width and a.axes and max(a.axes) >= spec.width:
                raise ValueError(f"address {a.address}: axis {max(a.axes)} is beyond the {spec.width} axes")
            if a.transform == "quaternion" and len(a.axes) != 3:
                raise ValueError(f"address {a.address}: a quaternion fills 3 orientation axes")
        return self


def available() -> list[str]:
    return bundled(PRESETS_DIR)


def load_preset(name_or_path: str | Path) -> Preset:
    """A bundled preset by name (``touchdesigner``) or a TOML file by path."""
    return load_preset_file(name_or_path, PRESETS_DIR, Preset, PresetError, "preset")


# ------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Route:
    """One preset address: where its values go."""

    preset: str
    source: str  # with {n} placeholders
    spec: SourceSpec
    axes: tuple[int, ...]
    scale: np.ndarray | float
    offset: np.ndarray | float
    transform: str


@dataclass(frozen=True)
class PresetValues:
    """What the OSC decoder yields for a preset address: normalised values for some axes of a source."""

    source: str
    kind: str
    width: int
    axes: tuple[int, ...]  # () = all, from 0
    values: tuple[float, ...]
    address: str
    spec: SourceSpec | None = None
    voice: int | None = None
    at: float | None = None


def quaternion_to_orientation(x: float, y: float, z: float, w: float) -> tuple[float, float, float]:
    """A device attitude quaternion → (alpha, beta, gamma) in degrees, the W3C DeviceOrientation angles
    (intrinsic Z-X'-Y'': alpha about z 0..360, beta about x −180..180, gamma about y −90..90)."""
    n = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / n, y / n, z / n, w / n
    # rotation matrix entries needed for Z-X-Y Tait-Bryan angles
    r21 = 2 * (y * z + w * x)
    r20 = 2 * (x * z - w * y)
    r22 = 1 - 2 * (x * x + y * y)
    r01 = 2 * (x * y - w * z)
    r11 = 1 - 2 * (x * x + z * z)
    beta = math.degrees(math.asin(max(-1.0, min(1.0, r21))))
    gamma = math.degrees(math.atan2(-r20, r22))
    alpha = math.degrees(math.atan2(-r01, r11)) % 360.0
    return alpha, beta, gamma


class PresetTable:
    """Address → Route for the loaded presets; ``match(address, values)`` → PresetValues or None."""

    def __init__(self, presets: list[Preset]) -> None:
        self.presets = list(presets)
        self._exact: dict[str, Route] = {}
        self._patterns: list[tuple[list[str], Route]] = []
        for p in self.presets:
            sources = {s.name: s for s in p.sources}
            for a in p.addresses:
                route = Route(p.name, a.source, sources[a.source], tuple(a.axes),
                              np.asarray(a.scale, np.float64) if isinstance(a.scale, list) else float(a.scale),
                              np.asarray(a.offset, np.float64) if isinstance(a.offset, list) else float(a.offset),
                              a.transform)
                if "*" in a.address:
                    self._patterns.append((a.address.split("/"), route))
                elif a.address not in self._exact:
                    self._exact[a.address] = route
        self.ports = sorted({port for p in self.presets for port in p.ports})

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)

    def _route(self, address: str) -> tuple[Route, list[str]] | None:
        route = self._exact.get(address)
        if route is not None:
            return route, []
        parts = address.split("/")
        for pattern, route in self._patterns:
            if len(pattern) == len(parts):
                caught = []
                for want, got in zip(pattern, parts):
                    if want == "*":
                        if not got:
                            break
                        caught.append(got)
                    elif want != got:
                        break
                else:
                    return route, caught
        return None

    def match(self, address: str, values: tuple[float, ...], voice: int | None = None,
              at: float | None = None) -> PresetValues | str | None:
        """PresetValues, a refusal message (str), or None when no preset knows the address."""
        found = self._route(address)
        if found is None:
            return None
        route, caught = found
        source = route.source
        for i, part in enumerate(caught, 1):
            source = source.replace(f"{{{i}}}", re.sub(r"[^A-Za-z0-9_.:-]", "_", part)[:32])
        vals = np.asarray(values, np.float64)
        if route.transform == "quaternion":
            if vals.size != 4:
                return f"{address}: a quaternion is 4 values, got {vals.size}"
            vals = np.asarray(quaternion_to_orientation(*vals), np.float64)
        if route.axes and vals.size != len(route.axes):
            return f"{address}: {len(route.axes)} values expected, got {vals.size}"
        if not route.axes and route.spec.width and (vals.size > route.spec.width or
                                                    (route.spec.kind != "raw" and vals.size != route.spec.width)):
            return f"{address}: {route.spec.width} values expected, got {vals.size}"
        if vals.size == 0:
            return f"{address}: no values"
        if route.transform != "quaternion":
            try:
                vals = vals * route.scale + route.offset
            except ValueError:
                return f"{address}: the preset's scale/offset do not fit {vals.size} values"
        width = route.spec.width or (vals.size if not route.axes else max(route.axes) + 1)
        return PresetValues(source, route.spec.kind, width, route.axes, tuple(float(v) for v in vals), address,
                            route.spec, voice, at)


# ------------------------------------------------------------------------------------------- assembling


@dataclass
class _Pending:
    values: np.ndarray
    seen: set = field(default_factory=set)  # addresses that sent since the last frame
    started: float | None = None  # when the first update of the pending frame arrived
    dirty: bool = False


class FrameAssembler:
    """Collects per-address updates of preset sources into whole frames (see the module docstring)."""

    def __init__(self, table: PresetTable) -> None:
        self.table = table
        self.pending: dict[str, _Pending] = {}
        self._addresses: dict[str, set[str]] = {}  # source → addresses seen feeding it (for completeness)

    def update(self, item: PresetValues, now: float) -> list[tuple[str, np.ndarray]]:
        """Apply one address update; returns the frames completed by it: [(source, values)]."""
        out: list[tuple[str, np.ndarray]] = []
        p = self.pending.get(item.source)
        if p is None or p.values.size != item.width:
            if len(self.pending) >= 256:
                return out
            p = self.pending[item.source] = _Pending(np.zeros(item.width))
        feeds = self._addresses.setdefault(item.source, set())
        feeds.add(item.address)
        if item.address in p.seen and p.dirty:  # the sender's next frame began
            out.append((item.source, p.values.copy()))
            p.seen.clear()
            p.dirty = False
        if item.axes:
            p.values[list(item.axes)] = item.values
        else:
            p.values[: len(item.values)] = item.values
        p.seen.add(item.address)
        if not p.dirty:
            p.started = now
        p.dirty = True
        if (p.seen >= feeds and len(feeds) > 1) or not item.axes:
            out.append((item.source, p.values.copy()))  # complete (or a whole-vector address)
            p.seen.clear()
            p.dirty = False
        return out

    def flush(self, now: float | None = None, sources: set[str] | None = None) -> list[tuple[str, np.ndarray]]:
        """Emit pending frames: all (end of a bundle: ``sources``), or those older than STALE_S (``now``)."""
        out = []
        for name, p in self.pending.items():
            if not p.dirty:
                continue
            if sources is not None and name not in sources:
                continue
            if now is not None and sources is None and (p.started is None or now - p.started < STALE_S):
                continue
            out.append((name, p.values.copy()))
            p.seen.clear()
            p.dirty = False
        return out
