"""MIDI in and out: the thin edge around :mod:`sensorsynth.mapping.midi` (the pure map).

- **In** (``midi_in``): the port of that name (any port whose name contains it), or, when none exists, a new
  virtual input of that name for a controller or a DAW to connect to. rtmidi calls back on its own thread;
  the callback only stamps the arrival time and appends the bytes to a bounded queue (a full queue drops and
  counts), then wakes the event loop once per burst (``call_soon_threadsafe``), where the map turns the bytes
  into commands and the engine applies them, as it does OSC's.
- **Out** (``midi_out``): a virtual output of that name. Every applied control event (from any source: OSC,
  the pages, mappings, MIDI itself) becomes a note-on per dimension that fired, at the moment the event's
  block leaves the renderer, and its note-off ``midi_note_ms`` later, so a DAW records what the sensors
  played.

The MIDI system: python-rtmidi's ALSA sequencer where ``/dev/snd/seq`` exists, else JACK MIDI (``midi_api``
chooses). JACK is asked never to start a server of its own. Why mido over raw rtmidi: its port listing and
names are the same on every backend; the bytes still go to the pure map unparsed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import Any

import mido

from ..mapping.midi import MidiMapper, MidiPreset, control_notes
from ..protocol.commands import Rejected
from .rejections import Rejections

log = logging.getLogger("sensorsynth.midi")

MAX_PENDING = 1024  # MIDI messages waiting for the event loop; beyond, dropped and counted
MAX_NOTES_PENDING = 4096  # note-offs scheduled by MIDI out
APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK"}
# the MIDI clients' names: one each, so that the ports' full names are what the status says (two clients of
# one name would be renamed by JACK: sensorsynth-01)
IN_CLIENT, OUT_CLIENT = "sensorsynth-in", "sensorsynth-out"


class MidiError(Exception):
    """MIDI cannot start (no MIDI system, a port that cannot be opened); the message says what to do."""


def backends(api: str) -> list[str]:
    """The rtmidi APIs to try, in order, for ``midi_api``."""
    if api != "auto":
        return [APIS[api]]
    return ["LINUX_ALSA", "UNIX_JACK"] if os.path.exists("/dev/snd/seq") else ["UNIX_JACK", "LINUX_ALSA"]


def open_backend(api: str):
    """A mido backend on the first MIDI system that answers (a probe port is opened and closed)."""
    problems = []
    for name in backends(api):
        try:
            backend = mido.Backend(f"mido.backends.rtmidi/{name}", load=True)  # imports rtmidi (needs libasound)
            backend.get_output_names()
        except Exception as exc:  # noqa: BLE001 - rtmidi's own SystemError; ValueError, ImportError when missing
            problems.append(f"{name}: {exc}")
            continue
        return backend, name
    raise MidiError("no MIDI system answers (" + "; ".join(problems) + "): start JACK "
                    "(jackd -d dummy works without a card) or load ALSA's sequencer (modprobe snd-seq)")


class MidiEdge:
    """MIDI in and/or out for a running engine (see the module's doc)."""

    def __init__(self, engine, rejections: Rejections, preset: MidiPreset, midi_in: str | None = None,
                 midi_out: str | None = None, api: str = "auto", note_ms: float = 100.0) -> None:  # fmt: skip
        self.engine = engine
        self.rejections = rejections
        self.preset = preset
        self.mapper = MidiMapper(preset)
        self.in_name, self.out_name, self.api, self.note_s = midi_in, midi_out, api, note_ms / 1000.0
        self._in = self._out = None
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sub = None
        self._notes_pending = 0
        self._due: dict[int | None, list[tuple[int, int, int]]] = {}  # MIDI out: notes by the time they sound
        self.stats: dict[str, Any] = {"api": None, "in_port": None, "out_port": None, "received": 0, "commands": 0,
                                      "ignored": 0, "system": 0, "dropped": 0, "rejected": 0, "notes_out": 0, "out_dropped": 0}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        backend, api = open_backend(self.api)
        self.stats["api"] = api
        if self.in_name:
            existing = [n for n in backend.get_input_names() if self.in_name in n]
            try:
                if existing:
                    self._in = backend.open_input(existing[0], callback=self._on_midi)
                else:
                    self._in = backend.open_input(self.in_name, virtual=True, client_name=IN_CLIENT,
                                                  callback=self._on_midi)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - rtmidi's errors
                raise MidiError(f"cannot open MIDI input {self.in_name!r} on {api}: {exc}") from None
            self.stats["in_port"] = self._in.name if existing else f"{IN_CLIENT}:{self.in_name} (virtual)"
        if self.out_name:
            try:
                self._out = backend.open_output(self.out_name, virtual=True, client_name=OUT_CLIENT)
            except Exception as exc:  # noqa: BLE001
                self.close()
                raise MidiError(f"cannot open MIDI output {self.out_name!r} on {api}: {exc}") from None
            self.stats["out_port"] = f"{OUT_CLIENT}:{self.out_name} (virtual)"
            self._sub = self.engine.events.subscribe(maxlen=1024, wake=self._wake_out)

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        for port in (self._in, self._out):
            if port is not None:
                try:
                    port.close()
                except Exception:  # noqa: BLE001 - closing must not stop the shutdown
                    log.exception("closing a MIDI port")
        self._in = self._out = None

    # ------------------------------------------------------------------ in: rtmidi's thread → the loop
    def _on_midi(self, msg) -> None:
        """rtmidi's callback thread: stamp, queue (bounded), wake the loop once per burst. Nothing else."""
        arrival = time.monotonic_ns()
        data = msg.bytes()
        if not data or data[0] >= 0xF0:  # clock, SysEx, active sensing: nothing plays them; the loop never sees them
            self.stats["system"] += 1
            return
        if len(self._pending) >= MAX_PENDING:
            self.stats["dropped"] += 1
            return
        self._pending.append((arrival, bytes(data)))
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._scheduled = False  # first: a message appended from now on schedules another drain
        pending = self._pending
        while pending:
            arrival, data = pending.popleft()
            self.play(data, arrival)

    def play(self, data: bytes, arrival_ns: int | None = None) -> None:
        """One MIDI message (its bytes) through the map into the engine (the event loop's thread)."""
        engine = self.engine
        self.stats["received"] += 1
        try:
            voice = data[0] & 0x0F if self.preset.channel_voices and data else 0
            if voice >= engine.settings.max_voices:
                raise Rejected("bad_voice", f"MIDI channel {voice}: this server has {engine.settings.max_voices} voices")
            owner = engine.voices[voice].owner
            if owner not in (None, "osc"):  # as OSC: never a voice a phone or a page holds
                raise Rejected("voice_taken", f"MIDI channel {voice}: voice {voice} is held by a WebSocket client")
            spec = engine.library.entries[engine.voices[voice].instrument].instrument.spec
            commands = self.mapper.message(data, spec.control_plane_dim, spec.expressivity, engine.library.names)
            if not commands:
                self.stats["ignored"] += 1
            for cmd in commands:
                engine.submit(cmd, arrival_ns, voice=voice, source="midi")
                self.stats["commands"] += 1
        except Rejected as exc:
            self.stats["rejected"] += 1
            self.rejections.count("midi", exc.kind, str(exc))

    # ------------------------------------------------------------------ out: applied controls → notes
    def _wake_out(self) -> None:
        if self._loop is not None:
            self._loop.call_soon(self._send_notes)

    def _send_notes(self) -> None:
        sub, loop = self._sub, self._loop
        if sub is None or loop is None:
            return
        self.stats["out_dropped"] = sub.dropped
        now = time.monotonic_ns()
        for ev in sub.take():
            if ev.kind != "control":
                continue
            notes = control_notes(self.preset, ev.values)
            if not notes:
                continue
            at = self.engine.sounding_ns(ev.sample)
            delay = 0.0 if at is None else max(0.0, (at - now) / 1e9)
            due = self._due.get(at)
            if due is not None:  # events sounding together go out together, in the order they were applied
                due.extend(notes)  # (asyncio does not order timers of one deadline)
            elif delay > 0.001:
                self._due[at] = list(notes)
                loop.call_later(delay, self._due_on, at)
            else:
                self._notes_on(notes)

    def _due_on(self, at: int | None) -> None:
        self._notes_on(self._due.pop(at, []))

    def _notes_on(self, notes: list[tuple[int, int, int]]) -> None:
        out = self._out
        if out is None:
            return
        if self._notes_pending + len(notes) > MAX_NOTES_PENDING:
            self.stats["out_dropped"] += len(notes)
            return
        for status, note, velocity in notes:
            out.send(mido.Message.from_bytes([status, note, velocity]))
            self.stats["notes_out"] += 1
        self._notes_pending += len(notes)
        assert self._loop is not None
        self._loop.call_later(self.note_s, self._notes_off, notes)

    def _notes_off(self, notes: list[tuple[int, int, int]]) -> None:
        self._notes_pending -= len(notes)
        out = self._out
        if out is None:
            return
        for status, note, _ in notes:
            out.send(mido.Message.from_bytes([0x80 | (status & 0x0F), note, 0]))

    def status(self) -> dict[str, Any]:
        return self.stats
