"""The audio engine: the coordinator between the edges and the sound.

It owns a renderer (chosen by device in :func:`make_renderer`), an audio driver that gets the renderer's blocks
to the output (:mod:`.driver`: compiled or a Python thread), the voice table (:mod:`.voices`) and the
measurements (:mod:`.meter`). Its own job is small: turn commands into sample-timed inbox messages (control,
deformation, gain, instrument, pan; the room's output gains and level cap), keep the voice table and the renderer
in step, install hot reloads, record what it applied for those who listen (:attr:`Engine.events`, read by the
pages, the OSC feedback and MIDI out), and say how it is going (:meth:`Engine.status`).

Threads, and why:
- the **event loop thread** (asyncio: OSC, WebSocket, reloads) calls :meth:`Engine.submit`, which validates a
  command against the voice's instrument and hands it to the renderer's inbox (a lock-free ring with one
  producer). It never waits on the audio.
- the driver's thread (the compiled path's tap reader, or the Python render thread) hands what played to the
  engine (:meth:`Engine.played`, :meth:`Engine.rendered`): the recorder, the meter, the latency figures, the
  browser stream.

Timing: every command carries its arrival time (monotonic ns). In ``asap`` mode an event plays at the next
block the renderer starts (lowest latency: at most one block plus scheduling). In ``fixed`` mode it plays a
constant delay after its arrival (no jitter, for senders whose timing matters). OSC time tags inside the
accepted window are honoured the same way as ``fixed``: their sample is their time plus the delay.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from ..protocol.commands import Command, Control, ControlChannel, Deform, Gain, Pan, Rejected, SelectInstrument
from ..render import placement
from ..render.callback import AudioPath
from ..render.renderer import Renderer
from .driver import DRIVERS, AudioDriver
from .events import EventLog, block_leaves_ns
from .faults import Faults
from .library import Change, Library
from .meter import CpuLoad, Latency, Meter, Stats
from .playout import Output
from .recorder import Recorder
from .voices import OSC_VOICE, VoiceState, VoiceTable

__all__ = ["Engine", "EngineSettings", "OSC_VOICE", "Stats", "VoiceState", "make_renderer"]

log = logging.getLogger("sensorsynth.engine")
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class EngineSettings:
    sample_rate: int
    block_size: int = 64
    max_voices: int = 8
    prefill_blocks: int = 3
    latency: Literal["asap", "fixed"] = "asap"
    fixed_delay_ms: float = 10.0
    seed: int | None = None
    noise: Literal["instrument", "fresh"] = "instrument"  # see Renderer's noise_mode
    instrument: str | None = None  # the default instrument; None = the first in the library
    switch_interval_s: float | None = 0.0005
    realtime_priority: int = 10  # SCHED_FIFO priority of the render thread when allowed; 0 = leave it normal
    device: str = "cpu"  # "cpu": the numba renderer; "cuda", "cuda:1": the numba-cuda one; else torch (batched)
    audio_path: Literal["compiled", "python"] = "compiled"  # compiled: rendered in the card's callback (cpu only)
    channels: int = 1  # output channels (speakers); more than one needs the cpu renderer on the compiled path
    placement: Literal["fixed", "line", "ring"] = "fixed"  # the voice → position rule (render/placement.py)
    voice_channels: list[int] | None = None  # placement fixed: each voice's channel (default voice mod channels)
    voice_positions: list[float] | None = None  # placement line/ring: each voice's position (default: spread)
    level_cap_dbfs: float | None = -1.0  # the limiter's cap; None: no limiter (only the clip at full scale)

    def voice_pans(self) -> np.ndarray:
        """(max_voices, channels): where each voice sounds when nobody has moved it."""
        return np.stack([placement.voice_gains(v, self.max_voices, self.channels, self.placement,
                                               self.voice_channels, self.voice_positions)
                         for v in range(self.max_voices)])  # fmt: skip


PAN_RAMP_MS = 20.0  # a pan message moves its voice over this (click-free, yet a gesture stays a gesture)


# ---------------------------------------------------------------------------- renderer and driver, by device
def make_renderer(instruments: list, settings: EngineSettings, assign: list[int]):
    """The renderer for ``settings.device``: the numba renderer on the CPU, the numba-cuda one on a CUDA GPU, the
    batched torch one otherwise (the one place that chooses)."""
    if settings.device == "cpu":
        return Renderer(
            instruments, sample_rate=settings.sample_rate, block_size=settings.block_size,
            max_voices=settings.max_voices, seed=settings.seed, voice_instruments=assign, noise_mode=settings.noise,
            channels=settings.channels, voice_pans=settings.voice_pans(),
        )
    if settings.channels != 1:
        raise ValueError(f"the {settings.device} renderer plays one channel; output_channels > 1 needs --device cpu")
    if settings.device.startswith("cuda"):
        from ..render.cuda.renderer import CudaRenderer  # imports numba.cuda: only for this path

        return CudaRenderer(
            instruments, sample_rate=settings.sample_rate, block_size=settings.block_size,
            max_voices=settings.max_voices, seed=settings.seed, voice_instruments=assign,
            noise_mode=settings.noise, device=int(settings.device.partition(":")[2] or 0),
        )
    from .torch_renderer import TorchRenderer  # imports torch: only for this path

    return TorchRenderer(instruments, settings.sample_rate, settings.block_size, settings.max_voices,
                         settings.seed, assign, settings.device, noise_mode=settings.noise)


def driver_kind(settings: EngineSettings) -> str:
    """The compiled audio path plays the CPU renderer only; everything else runs on the Python thread."""
    return "compiled" if settings.audio_path == "compiled" and settings.device == "cpu" else "python"


class Engine:
    def __init__(self, library: Library, settings: EngineSettings, output: Output, recorder: Recorder | None = None,
                 faults: Faults = Faults()) -> None:  # fmt: skip
        if not library.entries:
            raise ValueError(f"no instruments in {library.folder}: fit one with `sensorsynth fit CLIP`")
        self.library = library
        self.settings = settings
        self.recorder = recorder
        self.faults = faults
        names = library.names
        default = settings.instrument or names[0]
        if default not in library.entries:
            raise ValueError(f"instrument {default!r} is not in {library.folder} (there: {', '.join(names)})")
        self.default_instrument = default
        self.index_of = {name: i for i, name in enumerate(names)}
        instruments = [library.entries[n].instrument for n in names]
        self.renderer = make_renderer(instruments, settings, [self.index_of[default]] * settings.max_voices)
        self.renderer.warmup()
        self.inbox = self.renderer.inbox
        self.channels = int(settings.channels)
        self._home_pans = settings.voice_pans()  # where each voice goes back to when its client leaves
        self.output_gains = [1.0] * self.channels
        self._cap_configured = settings.level_cap_dbfs
        self._cap_dbfs: float | None = None
        if settings.level_cap_dbfs is not None:
            self.set_level_cap(settings.level_cap_dbfs)
        self.voices = VoiceTable(settings.max_voices, default)
        self.rate = int(settings.sample_rate)
        self.block = int(settings.block_size)
        self._delay = int(round(settings.fixed_delay_ms * 1e-3 * self.rate))
        # measurements: the driver's thread writes, the loop thread reads
        self.meter = Meter(channels=self.channels)
        self.meter.channel_levels()  # the counts start now (the default reader, and the status's own)
        self.meter.channel_levels("status")
        self._fold = placement.fold_down(self.channels, placement.pan_layout(settings.placement))  # the browser's
        self.latency = Latency(self.rate, self.block)
        self.cpu = CpuLoad()
        self.listeners = 0  # browser audio streams; blocks are copied for them only when > 0
        self.stream: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=256)
        # every applied command, for whoever listens (the pages' events push, OSC feedback, MIDI out)
        self.events = EventLog()
        self.started = time.monotonic()
        #: what a voice a client gives back returns to: (instrument or None for the default, gain); the scenes
        #: edge sets it to the playing scene's
        self.voice_defaults: Callable[[int], tuple[str | None, float]] | None = None
        self.audio_path = driver_kind(settings)
        self.driver: AudioDriver = DRIVERS[self.audio_path](self.renderer, output, self, settings.prefill_blocks,
                                                            settings.realtime_priority)  # fmt: skip

    # ------------------------------------------------------------------ what the driver owns, read here
    @property
    def output(self) -> Output:
        """The output playing now (the null output after a vanished card)."""
        return self.driver.output

    @output.setter
    def output(self, value: Output) -> None:  # before start(): the service swaps a card that failed to start
        self.driver.output = value

    @property
    def path(self) -> AudioPath | None:
        """The compiled audio path, when that driver plays."""
        return self.driver.path

    @property
    def error(self) -> str | None:
        return self.driver.error

    @property
    def fallback(self) -> str | None:
        return self.driver.fallback

    @property
    def block_us(self) -> Stats:
        return self.driver.block_us

    @property
    def last_block_ns(self) -> int:
        """Monotonic ns when the last block left the renderer (the watchdog's heartbeat)."""
        return self.driver.last_block_ns

    @property
    def running(self) -> bool:
        return self.driver.running

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.settings.switch_interval_s:
            # the render thread's few microseconds of Python get the GIL within this, not 5 ms
            sys.setswitchinterval(self.settings.switch_interval_s)
        self.driver.start()
        if self.faults.stall_audio_after_s is not None:
            timer = threading.Timer(self.faults.stall_audio_after_s, self._inject_stall)
            timer.daemon = True
            timer.start()

    def _inject_stall(self) -> None:
        log.warning("SENSORSYNTH_FAULT: stalling the audio path now")
        self.driver.inject_stall()

    def stop(self) -> None:
        self.driver.stop()
        if self.recorder is not None:
            self.recorder.close()

    # ------------------------------------------------------------------ the driver's sink (its own thread)
    def played(self, samples: np.ndarray) -> None:
        """Samples that played: the recording and the meter."""
        if self.recorder is not None:
            self.recorder.push(samples)
        self.meter.measure(samples)

    def rendered(self, start: int, samples: np.ndarray, t_ns: int, ahead_ms: float, taken: int | None) -> None:
        """A block left the renderer ((frames, channels)): latency, the sample clock, the browser stream (one
        channel as it is; several folded down to stereo, see placement.fold_down)."""
        self.latency.block_left(start, samples.shape[0], t_ns, ahead_ms, taken)
        if self.listeners:
            if samples.ndim == 1 or samples.shape[1] == 1:
                mono = samples.reshape(-1).copy()
            else:
                mono = np.clip(samples @ self._fold, -1.0, 1.0).astype(np.float32)  # (frames, 2): stereo
            self.stream.append((start, mono))

    # ------------------------------------------------------------------ meter (event loop thread)
    def take_level(self) -> tuple[float, float]:
        """(rms, peak) since the previous call (the loop's meter, every 50 ms); also kept for the status."""
        return self.meter.take_level()

    def level(self, seconds: float = 1.0) -> dict[str, float | None]:
        """The output level over the last second, in dBFS (None = digital silence)."""
        return self.meter.level(seconds)

    def channel_levels(self, reader: str = "default") -> list[float | None]:
        """rms dBFS per output channel of the audio since this reader's previous call (None = silence); each
        reader (the pages' meter, the OSC feedback, ...) names itself, so that none takes another's readings."""
        return self.meter.channel_levels(reader)

    # ------------------------------------------------------------------ speakers and the level cap (loop thread)
    def set_output_gains(self, gains: Sequence[float], ramp_ms: float = 50.0) -> None:
        """Per-channel master gains (0..1, one per output channel), ramped click-free in the compiled path.
        ValueError for a wrong count or value; Rejected("overload") when the inbox is full."""
        vals = [float(g) for g in gains]
        if len(vals) != self.channels:
            raise ValueError(f"output gains: one per output channel ({self.channels}), got {len(vals)}")
        if not all(math.isfinite(g) and 0.0 <= g <= 1.0 for g in vals):
            raise ValueError("output gains must be in [0, 1]")
        ramp = float(ramp_ms)
        if not (math.isfinite(ramp) and 0.0 <= ramp <= 60_000.0):
            raise ValueError(f"ramp_ms must be in [0, 60000], got {ramp_ms}")
        if self.settings.device != "cpu":  # the cuda/torch renderers: one channel, no master gain stage
            raise ValueError(f"the {self.settings.device} renderer has no output gains")
        for c, g in enumerate(vals):
            if not self.inbox.output_gain(c, g, ramp):
                raise Rejected("overload", "the audio engine's inbox is full; output gains dropped")
            self.output_gains[c] = g

    def set_level_cap(self, dbfs: float) -> None:
        """The limiter's cap at run time, in dBFS: never above the configured ``level_cap_dbfs`` (a higher value
        is held at it). Takes effect at the next block."""
        value = float(dbfs)
        if not math.isfinite(value):
            raise ValueError(f"the level cap must be a finite number of dBFS, got {dbfs}")
        if self._cap_configured is not None:
            value = min(value, float(self._cap_configured))
        value = min(value, 0.0)
        if self.settings.device != "cpu":  # the GPU and torch renderers have no limiter (their clip stays)
            return
        self.renderer.set_level_cap(10.0 ** (value / 20.0))
        self._cap_dbfs = value

    @property
    def level_cap_dbfs(self) -> float | None:
        """The cap in force (dBFS), None where the renderer has no limiter."""
        return self._cap_dbfs

    def limiter_status(self) -> dict[str, float | None]:
        """The cap (dBFS; None: no limiter, as on the GPU and torch renderers) and the largest gain reduction
        (dB, ≥ 0) since the previous read."""
        g = self.renderer.take_gain_reduction() if self._cap_dbfs is not None else 1.0
        reduction = round(-20.0 * math.log10(max(g, 1e-12)), 2) if g < 1.0 else 0.0
        return {"cap_dbfs": self._cap_dbfs, "gain_reduction_db": reduction}

    def pan(self, voice: int, position: float) -> None:
        """Move a voice to ``position`` (0..1 along the line, or round the ring; see placement.pan_layout)."""
        if self.channels == 1:  # one speaker: every position is that speaker (the cuda/torch renderers too)
            return
        gains = placement.pan_gains(position, self.channels, placement.pan_layout(self.settings.placement))
        if not self.inbox.pan(voice, gains, PAN_RAMP_MS):
            raise Rejected("overload", "the audio engine's inbox is full; pan dropped")

    # ------------------------------------------------------------------ commands (event loop thread)
    def sample_at(self, mono_ns: int) -> int:
        """The sample playing-in-render-time at a monotonic time (see meter.Latency)."""
        return self.latency.sample_at(mono_ns, self.renderer.time)

    def sounding_ns(self, sample: int) -> int | None:
        """Monotonic ns when the block holding ``sample`` leaves the renderer (None before any block left)."""
        offset = self.latency.offset_ns
        return None if offset is None else block_leaves_ns(sample, offset, self.rate, self.block)

    def _time_for(self, at: float | None, arrival_ns: int) -> tuple[int, bool]:
        """(sample time, counts for latency)."""
        if at is not None:
            mono = arrival_ns + int((at - time.time()) * 1e9)
            return self.sample_at(mono) + self._delay, False
        if self.settings.latency == "fixed":
            return self.sample_at(arrival_ns) + self._delay, True
        return self.renderer.time, True

    def _inbox_posted(self) -> int:
        """Messages posted to the renderer's inbox so far (0 for an inbox that does not count them)."""
        return int(getattr(self.inbox, "posted", 0))

    def submit(self, cmd: Command, arrival_ns: int | None = None, *, voice: int = OSC_VOICE, source: str = "osc") -> None:
        """Apply one command (from the event loop thread). Raises Rejected for what it refuses, and nothing else:
        what the renderer's own checks refuse (values beyond float32, ...) is a Rejected too."""
        values = getattr(cmd, "values", None) or getattr(cmd, "logits", None)
        if values and max(abs(x) for x in values) > FLOAT32_MAX:
            raise Rejected("out_of_range", "values beyond the float32 range")
        try:
            self._submit(cmd, arrival_ns, voice, source)
        except Rejected:
            raise
        except ValueError as exc:
            raise Rejected("out_of_range", str(exc)) from None

    def _submit(self, cmd: Command, arrival_ns: int | None, voice: int, source: str) -> None:
        if arrival_ns is None:
            arrival_ns = time.monotonic_ns()
        v = self.voices.check(getattr(cmd, "voice", None), voice)
        state = self.voices.touch(v)
        spec = self.library.entries[state.instrument].instrument.spec
        if isinstance(cmd, (Control, ControlChannel)):
            k = spec.control_plane_dim
            if isinstance(cmd, Control):
                if len(cmd.values) != k:
                    raise Rejected("wrong_count", f"{state.instrument} needs {k} control values, got {len(cmd.values)}")
                values = np.asarray(cmd.values, np.float32)
            else:
                if cmd.index >= k:
                    raise Rejected("bad_index", f"{state.instrument} has control dimensions 0..{k - 1}, got {cmd.index}")
                if cmd.value == 0.0:
                    return
                values = np.zeros(k, np.float32)
                values[cmd.index] = cmd.value
            t, timed = self._time_for(cmd.at, arrival_ns)
            if not self.inbox.control(t, v, values):
                raise Rejected("overload", "the audio engine's inbox is full; event dropped")
            if timed:
                self.latency.expect(t, arrival_ns, self._inbox_posted())
            self.events.record(t, v, "control", values, source)
        elif isinstance(cmd, Deform):
            e = spec.expressivity
            if len(cmd.logits) != e:
                raise Rejected("wrong_count", f"{state.instrument} needs {e} deformation logits, got {len(cmd.logits)}")
            t, _ = self._time_for(cmd.at, arrival_ns)
            if not self.inbox.deform(t, v, np.asarray(cmd.logits, np.float32)):
                raise Rejected("overload", "the audio engine's inbox is full; event dropped")
            self.events.record(t, v, "deform", cmd.logits, source)
        elif isinstance(cmd, Gain):
            if not self.inbox.gain(v, cmd.gain):
                raise Rejected("overload", "the audio engine's inbox is full; gain dropped")
            self.events.record(self.renderer.time, v, "gain", (cmd.gain,), source)
        elif isinstance(cmd, SelectInstrument):
            self.select(v, cmd.name, source)
        elif isinstance(cmd, Pan):
            self.pan(v, cmd.position)
        else:  # pragma: no cover - the edges only build the commands above
            raise Rejected("unknown_command", f"unknown command {type(cmd).__name__}")

    def select(self, voice: int, name: str, source: str = "server") -> None:
        """Play ``name`` on ``voice`` (``source``: who asked; "server" for the server's own changes: a recorded
        clip's instrument landing, a voice going back to the default)."""
        if name not in self.library.entries:
            raise Rejected("unknown_instrument", f"no instrument {name!r} (there: {', '.join(self.library.names)})")
        if name == self.voices[voice].instrument:
            return
        if not getattr(self.renderer, "supports_instrument_changes", True):
            raise Rejected("unsupported", f"the {self.settings.device} renderer plays the instrument it started with")
        if not self.inbox.instrument(voice, self.index_of[name]):
            raise Rejected("overload", "the audio engine's inbox is full; instrument change dropped")
        self.voices[voice].instrument = name
        self.events.record(self.renderer.time, voice, "instrument", (), source, name)

    # ------------------------------------------------------------------ voices for clients
    def allocate_voice(self, owner: str) -> int | None:
        """A free voice for a client (WebSocket), or None when all are taken."""
        return self.voices.allocate(owner)

    def release_voice(self, voice: int) -> None:
        self.voices.free(voice)
        state = self.voices[voice]
        instrument, gain = self.voice_defaults(voice) if self.voice_defaults is not None else (None, 1.0)
        instrument = instrument or self.default_instrument  # a scene (server/scenes.py) may say otherwise
        if state.instrument != instrument and instrument in self.library.entries:
            self.select(voice, instrument)
        self.inbox.gain(voice, gain)
        if self.channels > 1:  # back to where the voice stands when nobody moves it
            self.inbox.pan(voice, self._home_pans[voice], PAN_RAMP_MS)

    # ------------------------------------------------------------------ hot reload (event loop thread)
    def apply(self, change: Change) -> None:
        if not getattr(self.renderer, "supports_instrument_changes", True):
            if change.added or change.replaced:
                log.warning("the %s renderer cannot reload instruments while playing; restart to pick up %s",
                            self.settings.device, ", ".join(e.name for e in change.added + change.replaced))
            return
        for entry in change.added:
            self.index_of[entry.name] = self.renderer.add_instrument(entry.instrument)
            log.info("instrument %s added (%s)", entry.name, entry.path)
        for entry in change.replaced:
            self.renderer.replace_instrument(self.index_of[entry.name], entry.instrument)
            log.info("instrument %s reloaded (version %d): its voices cross-fade to it", entry.name, entry.version)

    # ------------------------------------------------------------------ status
    def cpu_load(self) -> float:
        """Share of one core this process used since the previous reading (at most every second)."""
        return self.cpu.read()

    def status(self) -> dict[str, Any]:
        lat, e2e, blk = self.latency.latency_ms, self.latency.to_card_ms, self.block_us
        lat50, lat99 = lat.percentiles(50, 99)
        e2e50, e2e99 = e2e.percentiles(50, 99)
        blk50, blk99 = blk.percentiles(50, 99)
        out = self.driver.counters()
        return {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "level": self.level(),
            "running": self.running,
            "error": self.error,
            "sample_rate": self.rate,
            "block_size": self.block,
            "output": {"description": self.output.description, "channels": self.channels,
                       "placement": self.settings.placement, "gains": [round(g, 4) for g in self.output_gains],
                       "levels_dbfs": self.meter.channel_levels("status")},
            "limiter": self.limiter_status(),
            "fallback": self.fallback,
            "underruns": out["underruns"],
            "callbacks": out["callbacks"],
            "instrument": self.default_instrument,
            "instruments": self.library.names,
            "voices": self.voices.summary(),
            "events": self.renderer.counters,
            "latency_ms": {"p50": lat50, "p99": lat99, "max": round(lat.max, 3),
                           "mode": self.settings.latency, "count": lat.count},
            "to_card_ms": {"p50": e2e50, "p99": e2e99, "device_ms": round(1000 * getattr(self.output, "latency_s", 0.0), 2)},
            "render_priority": self.driver.priority,
            "audio_path": {"kind": self.audio_path, **{k: v for k, v in out.items() if k not in ("underruns", "callbacks")}},
            "block_us": {"p50": blk50, "p99": blk99, "max": round(blk.max, 1)},
            "gpu_block_us": getattr(self.renderer, "gpu_status", lambda: None)(),  # None: not on a GPU
            "cpu_load": round(self.cpu_load(), 3),
            "recording": None if self.recorder is None else {
                "path": str(self.recorder.path), "seconds": round(self.recorder.seconds, 2), "failed": self.recorder.failed
            },
        }
