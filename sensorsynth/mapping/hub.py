"""The hub: every source of every owner (a WebSocket client, OSC), their learn sessions and learned models.

Pure like the rest of :mod:`sensorsynth.mapping`: frames, targets and requests come in with their times
(``t`` the sender's clock for smoothing and rates, ``now`` the server's clock for pairing and replays);
commands come out. The edges (``server/web.py``, ``server/osc.py`` through ``server/app.py``) hand the commands
to the engine on the owner's voice, write learned models to disk and read the clock.

Learn sessions (one per owner):
- ``record`` on: every sensor frame of the owner (of one source, or all) is kept with its input vector;
  every control the owner plays meanwhile (page cells, ``control`` messages, the replay) is a target;
- ``replay``: record while the voice replays the instrument's own fitted performance (:meth:`tick` hands
  out its events as their time comes; the recording stops by itself at the end);
- ``train``: :meth:`training_data` snapshots the pairs (event loop), :func:`learned.train` fits (any thread),
  :meth:`install` keeps the models per instrument and source;
- ``run`` on: sources with a model for the voice's instrument play through it instead of the basis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..instrument_file import Instrument
from ..protocol.commands import Control, Rejected
from ..instrument.basis import Basis
from .calibration import Calibration
from .learned import MAX_PAIRS, LearnedModel, Predictor, targets_at
from .presets import FrameAssembler, PresetTable, PresetValues, SourceSpec
from .source import SourceMapping, SourceOptions, Target

MAX_SOURCES_PER_OWNER = 32
MAX_SOURCES = 1024
MAX_TARGETS = 20000
SOURCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:/-")


def basis_of(instrument: Instrument) -> Basis:
    """The Basis an instrument file carries (computed first if it has none)."""
    instrument.ensure_mapping()
    info = instrument.manifest.mapping
    return Basis(instrument.mapping_atoms, signed=info.signed, level=info.level, cap=info.cap, method=info.method)


@dataclass
class Replay:
    voice: int
    start: float
    times: np.ndarray  # seconds from start
    values: np.ndarray  # (events, K)
    next: int = 0


@dataclass
class Session:
    recording: bool = False
    source: str | None = None  # record only this source (None: all of the owner's)
    running: bool = False
    frames: dict[str, list] = field(default_factory=dict)  # source → [(now, input vector)]
    kinds: dict[str, tuple[str, int]] = field(default_factory=dict)  # source → (kind, width)
    targets: list = field(default_factory=list)  # [(now, control vector)]
    replay: Replay | None = None
    instrument: str | None = None  # the instrument the targets were played on

    def pairs(self) -> int:
        return sum(len(v) for v in self.frames.values())


def check_source(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not set(name) <= SOURCE_CHARS:
        raise Rejected("bad_source", f"source names are 1-64 of letters, digits, '_', '.', ':', '/', '-': got {name!r:.80}")
    return name


class MappingHub:
    def __init__(self, instrument_of: Callable[[str], Instrument | None], presets: PresetTable | None = None) -> None:
        self.instrument_of = instrument_of
        self.table = presets or PresetTable([])
        self.assembler = FrameAssembler(self.table)
        self.sources: dict[tuple[str, str], SourceMapping] = {}
        self.sessions: dict[str, Session] = {}
        self.learned: dict[str, dict[str, LearnedModel]] = {}  # instrument → source → model
        self._predictors: dict[tuple[str, str], Predictor] = {}
        self._bases: dict[int, tuple[Instrument, Basis]] = {}
        self._specs: dict[str, SourceSpec] = {}  # preset source name (resolved) → its spec
        self._bundle: set[str] = set()
        self.frames = 0
        self.events = 0

    # ------------------------------------------------------------------ plumbing
    def basis(self, instrument: Instrument) -> Basis:
        hit = self._bases.get(id(instrument))
        if hit is None or hit[0] is not instrument:  # a reloaded instrument is a new object
            if len(self._bases) > 64:
                self._bases.clear()
            hit = self._bases[id(instrument)] = (instrument, basis_of(instrument))
        return hit[1]

    def session(self, owner: str) -> Session:
        s = self.sessions.get(owner)
        if s is None:
            s = self.sessions[owner] = Session()
        return s

    def forget(self, owner: str) -> None:
        """An owner left: drop its sources and session."""
        for key in [k for k in self.sources if k[0] == owner]:
            del self.sources[key]
        self.sessions.pop(owner, None)

    def _mapping(self, owner: str, source: str, kind: str, width: int, spec: SourceSpec | None) -> SourceMapping:
        key = (owner, source)
        m = self.sources.get(key)
        if m is not None and m.kind == kind and m.width == width:
            return m
        if m is None:
            if len(self.sources) >= MAX_SOURCES:
                raise Rejected("too_many_sources", f"the server maps at most {MAX_SOURCES} sources at once")
            if sum(1 for k in self.sources if k[0] == owner) >= MAX_SOURCES_PER_OWNER:
                raise Rejected("too_many_sources", f"at most {MAX_SOURCES_PER_OWNER} sources per client")
        try:
            m = SourceMapping(kind, width, self._options(kind, width, spec))
        except ValueError as exc:
            raise Rejected("wrong_count", f"source {source!r}: {exc}") from None
        self.sources[key] = m
        return m

    @staticmethod
    def _options(kind: str, width: int, spec: SourceSpec | None) -> SourceOptions:
        if spec is None:
            return SourceOptions.for_kind(kind)
        extra: dict = {"threshold": spec.threshold, "full": spec.full, "refractory_s": spec.refractory_s}
        if kind == "raw":
            lo = spec.lo if isinstance(spec.lo, float) or len(spec.lo) == width else spec.lo[0]
            hi = spec.hi if isinstance(spec.hi, float) or len(spec.hi) == width else spec.hi[0]
            extra["calibration"] = Calibration(width, spec.calibration, lo, hi, learn_s=spec.learn_s)
            extra["deform_axis"] = spec.deform_axis if 0 <= spec.deform_axis < width else None
            extra["pan_axis"] = spec.pan_axis if 0 <= spec.pan_axis < width else None
        return SourceOptions.for_kind(kind, **extra)

    def _target(self, owner: str, source: str, instrument_name: str) -> Target:
        inst = self.instrument_of(instrument_name)
        if inst is None:
            raise Rejected("unknown_instrument", f"no instrument {instrument_name!r}")
        learned = None
        s = self.sessions.get(owner)
        if s is not None and s.running:
            learned = self._predictor(instrument_name, source, inst.spec.control_plane_dim)
        return Target(instrument_name, self.basis(inst), inst.spec.expressivity, learned)

    def _predictor(self, instrument: str, source: str, k: int) -> Predictor | None:
        model = self.learned.get(instrument, {}).get(source)
        if model is None or model.outputs != k:
            return None
        key = (instrument, source)
        p = self._predictors.get(key)
        if p is None or p.model is not model:
            p = self._predictors[key] = model.compiled()
        return p

    # ------------------------------------------------------------------ frames
    def sensor(self, owner: str, source: str, kind: str, values, t: float | None, now: float, instrument: str,
               hand: str | None = None, spec: SourceSpec | None = None) -> list:
        """One frame of one source → commands for the owner's voice (Control, Deform). Rejected for what
        cannot be used (wrong width, too many sources, unknown instrument)."""
        check_source(source)
        if hand:
            source = f"{source}:{hand}"
        vals = np.asarray(values, np.float64).reshape(-1)
        if vals.size == 0 or not np.all(np.isfinite(vals)):
            raise Rejected("nonfinite" if vals.size else "wrong_count", f"source {source!r}: values must be finite numbers")
        mapping = self._mapping(owner, source, kind, vals.size, spec)
        target = self._target(owner, source, instrument)
        step = mapping.step(vals, now if t is None else float(t), target)
        self.frames += 1
        if step.fired:
            self.events += 1
        s = self.sessions.get(owner)
        if s is not None and s.recording and (s.source is None or s.source == source):
            frames = s.frames.setdefault(source, [])
            if len(frames) < MAX_PAIRS:
                frames.append((now, mapping.input_vector(step.features)))
                s.kinds[source] = (kind, vals.size)
        return step.commands

    def preset(self, item: PresetValues, now: float) -> list[tuple[str, str, np.ndarray, SourceSpec]]:
        """A preset address update → the frames it completes: [(source, kind, values, spec)]."""
        spec = self._spec_for(item)
        self._bundle.add(item.source)
        return [(name, item.kind, vals, spec) for name, vals in self.assembler.update(item, now)]

    def end_bundle(self) -> list[tuple[str, str, np.ndarray, SourceSpec]]:
        """An OSC bundle ended: its sources' pending frames are complete."""
        done = self.assembler.flush(sources=self._bundle)
        self._bundle = set()
        return [(name, self._specs[name].kind, vals, self._specs[name]) for name, vals in done]

    def _spec_for(self, item: PresetValues) -> SourceSpec:
        spec = item.spec or SourceSpec(name="preset", kind=item.kind)
        if item.source not in self._specs and len(self._specs) < 4096:
            self._specs[item.source] = spec
        return spec

    # ------------------------------------------------------------------ targets, replays, learning
    def target(self, owner: str, values, now: float, instrument: str | None = None) -> None:
        """A control the owner played (page cell, control message): a learning target while recording."""
        s = self.sessions.get(owner)
        if s is not None and s.recording and len(s.targets) < MAX_TARGETS:
            s.targets.append((now, np.asarray(values, np.float64).reshape(-1)))
            if instrument is not None:
                s.instrument = instrument

    def record(self, owner: str, on: bool, now: float, source: str | None = None, voice: int | None = None,
               instrument: str | None = None, replay: bool = False) -> dict:
        s = self.session(owner)
        if source is not None:
            check_source(source)
        if on and not s.recording:
            s.frames, s.kinds, s.targets = {}, {}, []
        s.recording = on
        s.source = source
        s.instrument = instrument or s.instrument
        s.replay = None
        if on and replay:
            inst = self.instrument_of(instrument) if instrument else None
            if inst is None or voice is None:
                raise Rejected("unknown_instrument", "a replay needs the voice's instrument")
            spec = inst.spec
            idx = inst.control_index.astype(np.int64)
            frames = np.unique(idx // spec.control_plane_dim)
            dense = np.zeros((frames.size, spec.control_plane_dim))
            row = np.searchsorted(frames, idx // spec.control_plane_dim)
            np.add.at(dense, (row, idx % spec.control_plane_dim), inst.control_value)
            s.replay = Replay(voice, now + 0.25, frames * spec.control_hop / spec.sample_rate, dense)
        return self.learn_state(owner)

    def tick(self, now: float) -> tuple[list[tuple[int, str, Control]], list[tuple[str, str, np.ndarray, SourceSpec]]]:
        """Due replay events ([(voice, owner, Control)]) and preset frames gone stale ([(source, kind,
        values, spec)]); the edge calls it every few milliseconds."""
        out = []
        for owner, s in self.sessions.items():
            r = s.replay
            if r is None:
                continue
            while r.next < r.times.size and now >= r.start + r.times[r.next]:
                vec = r.values[r.next]
                out.append((r.voice, owner, Control(tuple(float(v) for v in vec))))
                if s.recording and len(s.targets) < MAX_TARGETS:
                    s.targets.append((now, vec.copy()))
                r.next += 1
            if r.next >= r.times.size and now >= r.start + (r.times[-1] if r.times.size else 0.0) + 0.5:
                s.replay = None
                s.recording = False  # a replay records one pass
        stale = [(name, self._specs[name].kind, vals, self._specs[name])
                 for name, vals in self.assembler.flush(now=now) if name in self._specs]
        return out, stale

    def training_data(self, owner: str, k: int) -> list[tuple[str, str, int, np.ndarray, np.ndarray, np.ndarray]]:
        """[(source, kind, width, inputs (n, F), targets (n, K), event peaks)] of the owner's recording, for K
        control dimensions (targets of another size, from another instrument, are left out)."""
        s = self.sessions.get(owner)
        if s is None:
            return []
        targets = [(t, v) for t, v in s.targets if v.size == k]
        times = np.array([t for t, _ in targets])
        values = np.array([v for _, v in targets]).reshape(len(targets), k)
        out = []
        for source, frames in s.frames.items():
            if not frames:
                continue
            kind, width = s.kinds[source]
            ft = np.array([t for t, _ in frames])
            x = np.array([v for _, v in frames])
            peaks = values.max(axis=1, initial=0.0)
            shapes = values / np.maximum(peaks, 1e-12)[:, None]  # each note at unit peak: which, not how loud
            out.append((source, kind, width, x, targets_at(ft, times, shapes, k), peaks))
        return out

    def install(self, instrument: str, models: dict[str, LearnedModel]) -> None:
        self.learned.setdefault(instrument, {}).update(models)

    def run(self, owner: str, on: bool) -> dict:
        self.session(owner).running = on
        return self.learn_state(owner)

    def clear(self, owner: str) -> dict:
        s = self.session(owner)
        s.frames, s.kinds, s.targets, s.recording, s.replay = {}, {}, [], False, None
        return self.learn_state(owner)

    def learn_state(self, owner: str, instrument: str | None = None) -> dict:
        s = self.session(owner)
        out = {
            "recording": s.recording, "source": s.source, "running": s.running, "replaying": s.replay is not None,
            "frames": {k: len(v) for k, v in s.frames.items()}, "targets": len(s.targets),
        }
        if instrument is not None:
            out["models"] = {name: {"model": m.model, "pairs": m.pairs, "score": m.score}
                             for name, m in self.learned.get(instrument, {}).items()}
        return out

    def calibrate(self, owner: str, source: str, lo=None, hi=None) -> dict:
        """Relearn a source's calibration (no range), or set it."""
        m = self.sources.get((owner, check_source(source)))
        if m is None:
            raise Rejected("unknown_source", f"no source {source!r} has sent frames yet")
        ex = m.extractor
        cal = getattr(ex, "calibration", None) or getattr(ex, "shape_cal", None) or getattr(ex, "tilt_cal", None)
        try:
            if lo is None:
                cal.relearn()
            else:
                cal.set(lo, hi)
        except ValueError as exc:
            raise Rejected("wrong_count", f"calibration of {source!r}: {exc}") from None
        return cal.state()

    def status(self) -> dict:
        return {
            "sources": len(self.sources), "frames": self.frames, "events": self.events,
            "presets": [p.name for p in self.table.presets],
            "learned": {inst: sorted(models) for inst, models in self.learned.items()},
            "recording": sorted(o for o, s in self.sessions.items() if s.recording),
            "running": sorted(o for o, s in self.sessions.items() if s.running),
        }

