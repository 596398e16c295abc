"""The mappings' edge: sensor frames from OSC and the WebSocket → the hub → the engine, on the sender's voice.

The hub (:mod:`sensorsynth.mapping.hub`) is pure; this module does what it may not: read the clock, time
the mapping's compute, submit commands, run the replay/stale-frame tick, train learned models off the event
loop and keep them as ``<instrument>.learned.json`` in ``learned_dir`` (default: the models folder; a server
that may only read its models folder, as under the systemd units, saves them in its own state folder),
written atomically, read at start (from ``learned_dir`` first, else from the models folder).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ..atomic import atomic_write
from ..mapping.hub import MappingHub
from ..mapping.learned import LearnedFile, LearnedModel, train
from ..mapping.presets import PresetTable, PresetValues
from ..protocol.commands import Command, Control, ControlChannel, Rejected
from .engine import OSC_VOICE, Engine, Stats
from ..protocol.requests import CalibrateRequest, LearnRequest, SensorInput
from .rejections import Rejections

log = logging.getLogger("sensorsynth.mapping")
TICK_S = 0.005


def learned_path(folder: Path, instrument: str) -> Path:
    return folder / f"{instrument}.learned.json"


class MappingEdge:
    def __init__(self, engine: Engine, rejections: Rejections, presets: PresetTable | None = None,
                 learned_dir: Path | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.library = engine.library
        self.learned_dir = Path(learned_dir) if learned_dir is not None else None
        self.rejections = rejections
        self.hub = MappingHub(self._instrument, presets)
        self.compute_us = Stats(1.0)  # the hub's time per frame, µs
        self.frames = 0
        self._task: asyncio.Task | None = None
        self._training: set[asyncio.Task] = set()
        #: the presets a scene lets play (names; None: every loaded one); what others send is dropped, counted
        self.active_presets: frozenset[str] | None = None
        self.muted = 0
        self._preset_of = {id(spec): p.name for p in (presets.presets if presets else []) for spec in p.sources}

    def _instrument(self, name: str):
        entry = self.library.entries.get(name)
        return entry.instrument if entry is not None else None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.load_learned()
        self._task = asyncio.create_task(self._tick_loop(), name="mapping-tick")

    async def stop(self) -> None:
        for task in [self._task, *self._training]:
            if task is not None:
                task.cancel()
        for task in [self._task, *self._training]:
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                    pass

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a mapping problem must not stop the ticks
                log.exception("mapping tick")

    def tick(self) -> None:
        now_ns = time.monotonic_ns()
        replay, stale = self.hub.tick(now_ns / 1e9)
        for voice, owner, cmd in replay:
            self._submit(cmd, now_ns, voice, f"replay:{owner}")
        for source, kind, values, spec in stale:
            self.play("osc", OSC_VOICE, source, kind, values, None, now_ns, spec=spec)

    # ------------------------------------------------------------------ frames
    def play(self, owner: str, voice: int, source: str, kind: str, values, t: float | None, arrival_ns: int,
             hand: str | None = None, spec=None) -> int:
        """One frame through the hub onto ``voice``; returns the commands submitted. Rejected for a frame
        that cannot be used."""
        instrument = self.engine.voices[voice].instrument
        t0 = time.perf_counter_ns()
        commands = self.hub.sensor(owner, source, kind, values, t, arrival_ns / 1e9, instrument, hand=hand, spec=spec)
        self.compute_us.add((time.perf_counter_ns() - t0) / 1000.0)
        self.frames += 1
        for cmd in commands:
            self._submit(cmd, arrival_ns, voice, f"{kind}:{source}")
        return len(commands)

    def _submit(self, cmd: Command, arrival_ns: int, voice: int, source: str) -> None:
        try:
            self.engine.submit(cmd, arrival_ns, voice=voice, source=source)
        except Rejected as exc:
            self.rejections.count("mapping", exc.kind, str(exc))

    def target(self, owner: str, voice: int, cmd: Command, now: float | None = None) -> None:
        """A control the owner played: a learning target while its session records."""
        s = self.hub.sessions.get(owner)
        if s is None or not s.recording or not isinstance(cmd, (Control, ControlChannel)):
            return
        instrument = self.engine.voices[voice].instrument
        k = self.library.entries[instrument].instrument.spec.control_plane_dim
        if isinstance(cmd, Control):
            vec = np.asarray(cmd.values, np.float64)
        else:
            if cmd.index >= k:
                return
            vec = np.zeros(k)
            vec[cmd.index] = cmd.value
        self.hub.target(owner, vec, time.monotonic() if now is None else now, instrument)

    # ------------------------------------------------------------------ OSC items
    @staticmethod
    def osc_owner(voice: int | None) -> tuple[str, int]:
        v = OSC_VOICE if voice is None else voice
        return ("osc" if v == OSC_VOICE else f"osc{v}"), v

    def osc_item(self, item: Any, arrival_ns: int) -> None:
        """A mapping item decoded from OSC (sensor input, preset values, learn, calibrate)."""
        if isinstance(item, PresetValues):
            if self.active_presets is not None and self._preset_of.get(id(item.spec)) not in self.active_presets:
                self.muted += 1  # the scene playing does not use this preset
                return
            for source, kind, values, spec in self.hub.preset(item, arrival_ns / 1e9):
                self.play("osc", OSC_VOICE, source, kind, values, None, arrival_ns, spec=spec)
            return
        owner, voice = self.osc_owner(getattr(item, "voice", None))
        if not 0 <= voice < len(self.engine.voices):
            raise Rejected("bad_voice", f"voice {voice} does not exist")
        if isinstance(item, SensorInput):
            self.play(owner, voice, item.source, item.kind, item.values, item.at, arrival_ns)
        elif isinstance(item, CalibrateRequest):
            n = len(item.values) // 2
            lo, hi = (item.values[:n], item.values[n:]) if n else (None, None)
            self.hub.calibrate(owner, item.source, lo, hi)
        elif isinstance(item, LearnRequest):
            self.learn(owner, voice, item.action, item.on, item.source, item.model)
        else:  # pragma: no cover - the decoder yields nothing else for this edge
            raise Rejected("unknown_command", f"unknown item {type(item).__name__}")

    def bundle_end(self, arrival_ns: int) -> None:
        for source, kind, values, spec in self.hub.end_bundle():
            self.play("osc", OSC_VOICE, source, kind, values, None, arrival_ns, spec=spec)

    # ------------------------------------------------------------------ learning
    def learn(self, owner: str, voice: int, action: str, on: bool = True, source: str | None = None,
              model: str = "ridge") -> dict:
        """Apply a learn action; ``train`` starts in the background (see :meth:`train`) and the state says
        ``training``."""
        now = time.monotonic()
        instrument = self.engine.voices[voice].instrument
        if action == "record":
            state = self.hub.record(owner, on, now, source, voice, instrument)
        elif action == "replay":
            state = self.hub.record(owner, True, now, source, voice, instrument, replay=True)
        elif action == "run":
            state = self.hub.run(owner, on)
        elif action == "clear":
            state = self.hub.clear(owner)
        elif action == "train":
            task = asyncio.get_running_loop().create_task(self.train(owner, voice, model))
            self._training.add(task)
            task.add_done_callback(self._training.discard)
            state = self.hub.learn_state(owner)
            state["training"] = True
        else:
            state = self.hub.learn_state(owner)
        return {**state, "instrument": instrument,
                "models": self.models_of(instrument)}

    def models_of(self, instrument: str) -> dict:
        return {name: {"model": m.model, "pairs": m.pairs, "events": m.events, "score": m.score}
                for name, m in self.hub.learned.get(instrument, {}).items()}

    async def train(self, owner: str, voice: int, model: str = "ridge") -> dict:
        """Fit every recorded source of the owner (in a worker thread), keep and save the models."""
        instrument = self.engine.voices[voice].instrument
        k = self.library.entries[instrument].instrument.spec.control_plane_dim
        data = self.hub.training_data(owner, k)
        if not data:
            return {"trained": {}, "errors": {"*": "nothing recorded: record (or replay) while moving first"}}

        def fit_all() -> tuple[dict[str, LearnedModel], dict[str, str]]:
            models, errors = {}, {}
            for source, kind, width, x, y, peaks in data:
                try:
                    models[source] = train(x, y, kind, width, model, events=len(peaks),  # type: ignore[arg-type]
                                           event_peaks=peaks)
                except ValueError as exc:
                    errors[source] = str(exc)
            return models, errors

        models, errors = await asyncio.get_running_loop().run_in_executor(None, fit_all)
        if models:
            self.hub.install(instrument, models)
            try:
                self.save_learned(instrument)
            except OSError as exc:
                errors["*"] = f"trained, but cannot save {learned_path(self._learned_folder, instrument)}: {exc}"
        log.info("learned mappings for %s: %s%s", instrument, ", ".join(models) or "none",
                 f" (not: {errors})" if errors else "")
        return {"trained": {s: {"pairs": m.pairs, "events": m.events, "score": m.score} for s, m in models.items()},
                "errors": errors, "instrument": instrument}

    def save_learned(self, instrument: str) -> Path:
        k = self.library.entries[instrument].instrument.spec.control_plane_dim
        doc = LearnedFile(instrument=instrument, control_dims=k, sources=self.hub.learned.get(instrument, {}))
        path = learned_path(self._learned_folder, instrument)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, doc.model_dump_json(indent=1))

    @property
    def _learned_folder(self) -> Path:
        return self.learned_dir if self.learned_dir is not None else self.library.folder

    def load_learned(self) -> None:
        for name, entry in self.library.entries.items():
            # this server's own saves first, then what came with the models folder
            found = [p for p in (learned_path(self._learned_folder, name), learned_path(self.library.folder, name))
                     if p.is_file()]
            if not found:
                continue
            path = found[0]
            try:
                doc = LearnedFile.model_validate_json(path.read_text())
            except (OSError, ValueError, ValidationError) as exc:
                log.warning("ignoring %s: %s", path, str(exc).splitlines()[0][:200])
                continue
            if doc.control_dims != entry.instrument.spec.control_plane_dim:
                log.warning("ignoring %s: made for %d control dimensions, %s has %d", path, doc.control_dims,
                            name, entry.instrument.spec.control_plane_dim)
                continue
            self.hub.install(name, dict(doc.sources))
            log.info("learned mappings for %s: %s", name, ", ".join(doc.sources) or "none")

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        p50, p99 = self.compute_us.percentiles(50, 99)
        return {**self.hub.status(), "compute_us": {"p50": p50, "p99": p99, "max": round(self.compute_us.max, 1),
                                                      "count": self.compute_us.count}}
