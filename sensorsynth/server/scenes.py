"""The scenes' edge: applies a scene to the engine (voices, gains, mappings, output gains, level cap), follows
the schedule, and takes switches by hand (OSC ``/sensorsynth/scene``, the WebSocket ``scene`` message).

The pure parts are below: the file (:mod:`sensorsynth.protocol.scenes`) and "which scene at this moment"
(:mod:`sensorsynth.protocol.schedule`). Here is what they may not do: read the clock, sleep, and touch the
engine.

- **The schedule's task** asks the pure core for the scene now and the next change, switches when they differ
  from what plays, then sleeps until the next change but never longer than :data:`RECHECK_S` (60 s): a clock
  that jumps (NTP, a suspended machine, a manual change of the time) is noticed within a minute.
- **A switch by hand** holds until the schedule's next change; from then the schedule leads again. Without a
  schedule it holds until the next switch by hand.
- **The cross-fade** (``crossfade_s`` of the scene, else of the file): voice gains ramp in the renderer's own
  gain ramps (one message per voice, no stepping from Python); a voice whose instrument changes ramps down over
  the first half, changes instrument (the renderer's own cross-fade between instruments) and ramps up to its new
  gain over the second half. A switch during a cross-fade starts from wherever the ramps are.
- Output gains and the level cap use ``Engine.set_output_gains`` and ``Engine.set_level_cap`` when the engine
  has them (until the multichannel engine is merged they are skipped, and the status says so).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..protocol.commands import Rejected
from ..protocol.scenes import Scene, ScenesError, ScenesFile, Server, check_against, load_scenes
from ..protocol.schedule import Moment, scene_at
from .engine import Engine

if TYPE_CHECKING:
    from .mapping_edge import MappingEdge

__all__ = ["RECHECK_S", "SceneEdge", "ScenesError", "load_for_server"]

log = logging.getLogger("sensorsynth.scenes")
RECHECK_S = 60.0  # the schedule is asked again at least this often, whatever the clock did


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def load_for_server(path: Path, instruments: list[str], presets: list[str], max_voices: int,
                    output_channels: int | None) -> ScenesFile:  # fmt: skip
    """Read a scenes file and check it against this server (ScenesError: one line naming the field)."""
    scenes = load_scenes(path)
    check_against(scenes, Server(instruments, presets, max_voices, output_channels), f"{path}: ")
    return scenes


class SceneEdge:
    """One installation's scenes on one engine. ``clock`` gives the time as an aware datetime (tests pass
    their own); everything else reads the engine."""

    def __init__(self, engine: Engine, scenes: ScenesFile, mappings: "MappingEdge | None" = None, *,
                 level_cap_dbfs: float | None = None, output_channels: int = 1,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:  # fmt: skip
        self.engine = engine
        self.file = scenes
        self.mappings = mappings
        self.clock = clock
        self.config_cap = level_cap_dbfs  # the configured cap: a scene may go lower, never higher
        self.channels = output_channels
        self.current: str | None = None
        self.moment: Moment | None = None
        self.held_until: datetime | None = None  # a switch by hand holds until then (None + held: until the next)
        self.held = False
        self.gains = [1.0] * len(engine.voices)  # per voice: what the scene playing asks for
        self.targets = [v.instrument for v in engine.voices]  # the same for instruments (a scene's None: keep)
        self.on_change: Callable[[dict], Any] | None = None  # the web edge pushes the new state to the pages
        self.on_instrument: Callable[[int, str], Any] | None = None  # ... and tells a page its voice's new one
        self._apply_task: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self.state: dict[str, Any] = {  # the status' `scene` (updated in place: a reference stays current)
            "name": None, "source": None, "since": None, "next": None, "next_at": None, "held": False,
            "switching": False, "crossfade_s": None, "level_cap_dbfs": None, "gains": self.gains,
            "scenes": list(scenes.scenes), "timezone": scenes.schedule.timezone if scenes.schedule else None,
            "switches": 0, "muted": 0,
        }
        engine.voice_defaults = self._voice_default  # a voice a page gives back returns to the scene's

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Play the scene the schedule says (or the file's first), at once, then follow the schedule."""
        now = self.clock()
        if self.file.schedule is not None:
            self.moment = scene_at(self.file.schedule, now)
            first = self.moment.scene
        else:
            first = self.file.first
        self._switch(first, "start", fade_s=0.0)
        self._task = asyncio.create_task(self._follow(), name="scenes")

    async def stop(self) -> None:
        for task in (self._task, self._apply_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                    pass

    # ------------------------------------------------------------------ the schedule
    async def _follow(self) -> None:
        while True:
            delay = RECHECK_S
            try:
                delay = self.check()
            except Exception:  # noqa: BLE001 - a schedule problem must not stop the sound
                log.exception("scene schedule")
            await asyncio.sleep(max(0.02, delay))  # a switch by hand holds until the change this waits for

    def check(self) -> float:
        """Switch if the schedule says so now; the seconds until it should be asked again."""
        schedule = self.file.schedule
        if schedule is None:
            return RECHECK_S
        now = self.clock()
        m = self.moment = scene_at(schedule, now)
        if self.held and self.held_until is not None and now >= self.held_until:
            self.held, self.held_until = False, None  # the schedule's next change ends a switch by hand
        if not self.held and m.scene != self.current:
            self._switch(m.scene, "schedule")
        self._show_next()
        if m.next_at is None:
            return RECHECK_S
        return min(RECHECK_S, max(0.0, (m.next_at - now).total_seconds()))

    def _show_next(self) -> None:
        m = self.moment
        st = self.state
        st["next"], st["next_at"] = (m.next_scene, _iso(m.next_at)) if m is not None else (None, None)
        st["held"] = self.held

    # ------------------------------------------------------------------ switching
    def switch(self, name: str, source: str) -> dict:
        """A switch by hand (``source``: ``osc`` or ``ws``): Rejected ``unknown_scene`` for a name not in the
        file. Holds until the schedule's next change."""
        if not isinstance(name, str) or name not in self.file.scenes:
            raise Rejected("unknown_scene", f"no scene {str(name)[:64]!r} (there: {', '.join(self.file.scenes)})")
        if self.file.schedule is not None:
            self.moment = scene_at(self.file.schedule, self.clock())
        self.held = True
        self.held_until = self.moment.next_at if self.moment is not None else None
        self._switch(name, source)
        self._show_next()
        return self.state

    def _switch(self, name: str, source: str, fade_s: float | None = None) -> None:
        scene = self.file.scenes[name]
        fade = self.file.crossfade(name) if fade_s is None else fade_s
        if self._apply_task is not None and not self._apply_task.done():
            self._apply_task.cancel()  # the new scene's ramps start from wherever these are
        self.current = name
        st = self.state
        st.update(name=name, source=source, since=_iso(self.clock()), crossfade_s=fade, switching=fade > 0)
        st["switches"] += 1
        log.info("scene %s (%s, cross-fade %.1f s)", name, source, fade)
        for v in range(len(self.targets)):  # decided now, so a switch that comes before the ramps end builds on it
            inst, gain = scene.voice(v)
            self.targets[v] = inst or self.targets[v]
            self.gains[v] = gain
        self._apply_now(scene, fade)
        if fade > 0:
            self._apply_task = asyncio.get_running_loop().create_task(self._fade_voices(fade))
        else:
            for v, inst in enumerate(self.targets):
                if inst != self.engine.voices[v].instrument:
                    self._select(v, inst)
                self._gain(v, self.gains[v], 0.0)
        self._show_next()
        if self.on_change is not None:
            try:
                self.on_change(st)
            except Exception:  # noqa: BLE001 - telling the pages must not stop the switch
                log.exception("scene push")

    def _apply_now(self, scene: Scene, fade: float) -> None:
        """What changes at once: the level cap, the output gains (ramped over the cross-fade), the presets and
        learned mappings."""
        engine = self.engine
        cap = scene.level_cap_dbfs if scene.level_cap_dbfs is not None else self.config_cap
        if cap is not None and self.config_cap is not None:
            cap = min(cap, self.config_cap)
        if cap is not None:
            engine.set_level_cap(cap)
        self.state["level_cap_dbfs"] = cap
        gains = scene.output_gains if scene.output_gains is not None else [1.0] * self.channels
        engine.set_output_gains(list(gains), ramp_ms=max(1.0, fade * 1000.0))
        if self.mappings is not None:
            self.mappings.active_presets = None if scene.presets is None else frozenset(scene.presets)
            if scene.learned is not None:
                for v in range(len(engine.voices)):
                    owner, _ = self.mappings.osc_owner(v)
                    self.mappings.hub.run(owner, scene.learned)

    async def _fade_voices(self, fade: float) -> None:
        """Voice gains and instruments, cross-faded over ``fade`` seconds: see the module's docstring."""
        engine = self.engine
        st = self.state
        st["switching"] = True
        changing = [v for v, inst in enumerate(self.targets) if inst != engine.voices[v].instrument]
        try:
            for v in range(len(self.targets)):
                if v in changing:
                    self._gain(v, 0.0, fade / 2)
                else:
                    self._gain(v, self.gains[v], fade)
            if changing:
                await asyncio.sleep(fade / 2)
                for v in changing:
                    self._select(v, self.targets[v])
                    self._gain(v, self.gains[v], fade / 2)
                await asyncio.sleep(fade / 2)
            else:
                await asyncio.sleep(fade)
        finally:
            st["switching"] = False

    def _gain(self, voice: int, gain: float, seconds: float) -> None:
        ramp_ms = seconds * 1000.0 if seconds > 0 else None
        if not self.engine.inbox.gain(voice, gain, ramp_ms):
            log.warning("scene: the engine's inbox is full; the gain of voice %d was not set", voice)

    def _select(self, voice: int, name: str) -> None:
        try:
            self.engine.select(voice, name)
        except Rejected as exc:  # an instrument the renderer cannot change to (cuda), a full inbox
            log.warning("scene: voice %d stays on %s: %s", voice, self.engine.voices[voice].instrument, exc)
            return
        if self.on_instrument is not None:
            try:
                self.on_instrument(voice, name)
            except Exception:  # noqa: BLE001 - telling a page must not stop the switch
                log.exception("scene: instrument push")

    def _voice_default(self, voice: int) -> tuple[str | None, float]:
        """What a voice a client gives back returns to: the scene's instrument and gain for it."""
        return self.targets[voice], self.gains[voice]

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        self._show_next()
        if self.mappings is not None:
            self.state["muted"] = self.mappings.muted  # preset values dropped: their preset is not in the scene
        return self.state
