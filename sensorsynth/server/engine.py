"""The audio engine: owns the Renderer and the audio path, turns commands into sample-timed events.

Threads, and why:
- the **event loop thread** (asyncio: OSC, WebSocket, reloads) calls :meth:`Engine.submit`, which validates a
  command against the voice's instrument and hands it to the renderer's inbox (a lock-free ring with one
  producer). It never waits on the audio.
- **the compiled audio path** (``audio_path="compiled"``, the default on the CPU renderer): the sound card's
  PortAudio callback renders every block itself, without the GIL (:mod:`sensorsynth.render.callback`); without
  a card, a compiled loop paced by the clock does the same on its own thread. The engine's Python thread is
  the **tap reader**: every few milliseconds it takes the blocks that played from the path's tap ring (samples,
  first sample index, the monotonic time each block left the renderer) and hands them to the recorder, the
  browser stream, the meter and the latency figures; it also installs posted hot reloads (the path's
  supervisor). It is never between the renderer and the card: a stalled interpreter delays the recording, not
  the sound.
- **the Python path** (``audio_path="python"``, and the torch renderers): the **render thread** renders a block
  whenever the play-out ring holds less than ``prefill`` blocks and hands copies on; the card reads the ring
  from a compiled callback (:mod:`.playout`), the null output consumes it by the clock. The render thread has
  to win the GIL for every block.

Timing: every command carries its arrival time (monotonic ns). In ``asap`` mode an event plays at the next
block the renderer starts (lowest latency: at most one block plus scheduling). In ``fixed`` mode it plays a
constant delay after its arrival (no jitter, for senders whose timing matters). OSC time tags inside the
accepted window are honoured the same way as ``fixed``: their sample is their time plus the delay.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..protocol.commands import Command, Control, ControlChannel, Deform, Gain, Rejected, SelectInstrument
from ..render import kernel as K
from ..render.callback import TAP_RENDERED, TM_AHEAD, TM_FIRST, TM_INBOX, TM_KIND, TM_LEN, TM_NS, AudioPath
from ..render.renderer import Renderer
from .library import Change, Library
from .playout import NullOutput, Output, SoundDeviceOutput
from .recorder import Recorder

log = logging.getLogger("sensorsynth.engine")
FLOAT32_MAX = float(np.finfo(np.float32).max)

OSC_VOICE = 0  # OSC without /voice/<n> plays voice 0; WebSocket clients get voices from 1 up


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


class Stats:
    """A histogram of every measurement since start (written by one thread, read by another): percentiles over
    the whole run, not a recent window, at a fixed resolution, in constant memory."""

    def __init__(self, bin_width: float, n_bins: int = 20000) -> None:
        self.bin_width = float(bin_width)
        self.counts = np.zeros(n_bins, np.int64)
        self.count = 0
        self.max = 0.0

    def add(self, v: float) -> None:
        i = int(v / self.bin_width)
        self.counts[i if 0 <= i < self.counts.size else (self.counts.size - 1 if i > 0 else 0)] += 1
        self.count += 1
        if v > self.max:
            self.max = v

    def percentiles(self, *qs: float) -> list[float | None]:
        if self.count == 0:
            return [None for _ in qs]
        cum = np.cumsum(self.counts)
        out = []
        for q in qs:
            i = int(np.searchsorted(cum, cum[-1] * q / 100.0))
            out.append(round((i + 1) * self.bin_width, 4))  # upper edge of the bin: never flatters
        return out


class CallbackStats(Stats):
    """The compiled callback's own histogram of its durations (1 µs bins, written by the audio side), read as
    a :class:`Stats`."""

    def __init__(self, path: AudioPath) -> None:  # noqa: D107 - no Stats.__init__: the counts are the path's
        self.bin_width = 1.0
        self.counts = path.hist
        self._path = path

    @property
    def count(self) -> int:  # type: ignore[override]
        return int(self.counts.sum())

    @property
    def max(self) -> float:  # type: ignore[override]
        return self._path.counters()["callback_max_us"]


@dataclass
class VoiceState:
    instrument: str
    owner: str | None = None  # client id holding it (None = free; OSC_VOICE belongs to OSC)
    last_used: float = field(default_factory=time.monotonic)


class Engine:
    def __init__(self, library: Library, settings: EngineSettings, output: Output, recorder: Recorder | None = None) -> None:
        if not library.entries:
            raise ValueError(f"no instruments in {library.folder}: fit one with `sensorsynth fit CLIP`")
        self.library = library
        self.settings = settings
        self.output = output
        self.recorder = recorder
        names = library.names
        default = settings.instrument or names[0]
        if default not in library.entries:
            raise ValueError(f"instrument {default!r} is not in {library.folder} (there: {', '.join(names)})")
        self.default_instrument = default
        self.index_of = {name: i for i, name in enumerate(names)}
        instruments = [library.entries[n].instrument for n in names]
        assign = [self.index_of[default]] * settings.max_voices
        if settings.device == "cpu":
            self.renderer = Renderer(
                instruments, sample_rate=settings.sample_rate, block_size=settings.block_size,
                max_voices=settings.max_voices, seed=settings.seed, voice_instruments=assign,
                noise_mode=settings.noise,
            )
        elif settings.device.startswith("cuda"):
            from ..render.cuda.renderer import CudaRenderer  # imports numba.cuda: only for this path

            self.renderer = CudaRenderer(
                instruments, sample_rate=settings.sample_rate, block_size=settings.block_size,
                max_voices=settings.max_voices, seed=settings.seed, voice_instruments=assign,
                noise_mode=settings.noise, device=int(settings.device.partition(":")[2] or 0),
            )
        else:
            from .torch_renderer import TorchRenderer  # imports torch: only for this path

            self.renderer = TorchRenderer(instruments, settings.sample_rate, settings.block_size, settings.max_voices,
                                          settings.seed, assign, settings.device, noise_mode=settings.noise)
        self.renderer.warmup()
        self.inbox = self.renderer.inbox
        self.voices = [VoiceState(default) for _ in range(settings.max_voices)]
        self.voices[OSC_VOICE].owner = "osc"
        self.rate = int(settings.sample_rate)
        self.block = int(settings.block_size)
        self._delay = int(round(settings.fixed_delay_ms * 1e-3 * self.rate))
        # measurements: render thread writes, loop thread reads
        self.block_us = Stats(1.0)  # µs, 1 µs bins up to 20 ms
        self.latency_ms = Stats(0.01)  # arrival → the block holding the event's first sample leaves the renderer
        self.e2e_ms = Stats(0.01)  # the same plus the play-out ring ahead of it: arrival → the card's callback
        # (sample, arrival ns, inbox messages posted up to and including it)
        self._pending: collections.deque[tuple[int, int, int]] = collections.deque()
        self._offset_ns = None  # monotonic ns of sample 0, best estimate (see _track_clock)
        self._offset_window = float("inf")
        self._offset_blocks = 0
        self.peak = 0.0
        self._sumsq = 0.0
        self._nsq = 0
        self._levels: collections.deque[tuple[float, int, float, float]] = collections.deque(maxlen=64)
        self.listeners = 0  # browser audio streams; the render thread copies blocks only when > 0
        self.stream: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=256)
        self.monitoring = 0
        self.recent: collections.deque[dict] = collections.deque(maxlen=512)
        self.started = time.monotonic()
        self._cpu = (time.process_time(), time.monotonic(), 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.fallback: str | None = None
        self._stalled = False
        self._started_ns = time.monotonic_ns()
        self.priority = "normal"
        self._last_block_ns = time.monotonic_ns()
        self.audio_path = "compiled" if settings.audio_path == "compiled" and settings.device == "cpu" else "python"
        self.path: AudioPath | None = None
        if self.audio_path == "compiled":
            self.path = AudioPath(self.renderer, prefill_blocks=settings.prefill_blocks,
                                  realtime_priority=settings.realtime_priority)  # fmt: skip
            self.block_us = CallbackStats(self.path)

    @property
    def last_block_ns(self) -> int:
        """Monotonic ns when the last block left the renderer (the watchdog's heartbeat)."""
        if self.path is not None and self.path.last_block_ns:
            return self.path.last_block_ns
        return self._last_block_ns

    @last_block_ns.setter
    def last_block_ns(self, value: int) -> None:
        self._last_block_ns = value

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.settings.switch_interval_s:
            # the render thread's few microseconds of Python get the GIL within this, not 5 ms
            sys.setswitchinterval(self.settings.switch_interval_s)
        self._started_ns = time.monotonic_ns()
        if self.path is not None:
            self.output.start_render(self.path)
            self._thread = threading.Thread(target=self._read_taps, name="audio-tap", daemon=True)
        else:
            self.output.start()
            self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()
        fault = os.environ.get("SENSORSYNTH_FAULT", "")
        if fault.startswith("stall-audio-after:"):
            timer = threading.Timer(float(fault.split(":", 1)[1]), self._inject_stall)
            timer.daemon = True
            timer.start()

    def _inject_stall(self) -> None:
        """Fault injection for the watchdog's tests and the soak (SENSORSYNTH_FAULT=stall-audio-after:SECONDS):
        take the renderer away from the audio side for good, as a hung kernel would."""
        log.warning("SENSORSYNTH_FAULT: stalling the audio path now")
        if self.path is not None:
            from ..render.callback import take_renderer

            take_renderer(self.path.ctl, 10**10)
        else:
            self._stalled = True

    def stop(self) -> None:
        if self.path is not None:
            self.output.stop()  # the sound stops first; the tap reader then takes the last blocks that played
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self.output.stop()
        if self.recorder is not None:
            self.recorder.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ render thread
    def _raise_priority(self) -> None:
        """Ask the kernel to run this thread before ordinary work (SCHED_FIFO), as audio threads do: when the
        two cores are busy with OSC parsing and browsers, the render thread still wakes on time. Needs root
        or CAP_SYS_NICE (systemd's AmbientCapabilities, or rtprio in limits.conf); without it the thread keeps
        normal priority and the play-out prefill has to absorb scheduling delays."""
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.settings.realtime_priority))
            self.priority = f"SCHED_FIFO {self.settings.realtime_priority}"
        except (OSError, AttributeError, ValueError) as exc:
            self.priority = f"normal ({getattr(exc, 'strerror', None) or exc})"

    def _run(self) -> None:
        if self.settings.realtime_priority:
            self._raise_priority()
        r, out, ring = self.renderer, self.output, self.output.ring
        b = self.block
        target = max(1, self.settings.prefill_blocks) * b
        nap = b / self.rate / 4
        try:
            while not self._stop.is_set():
                if self._stalled:
                    time.sleep(0.05)
                    continue
                out.advance()
                if ring.fill >= target:
                    time.sleep(nap)
                    continue
                start = r.time
                t0 = time.perf_counter_ns()
                block = r.process()
                t1 = time.perf_counter_ns()
                ahead_ms = ring.fill * 1000.0 / self.rate
                ring.write(block)
                now = time.monotonic_ns()
                self.last_block_ns = now
                self.block_us.add((t1 - t0) / 1000.0)
                self._track_clock(start, now)
                self._measure(block)
                end = start + b
                pending = self._pending
                while pending and pending[0][0] < end:
                    lat = (now - pending.popleft()[1]) / 1e6
                    self.latency_ms.add(lat)
                    self.e2e_ms.add(lat + ahead_ms)
                if self.recorder is not None:
                    self.recorder.push(block)
                if self.listeners:
                    self.stream.append((start, block.copy()))
        except Exception as exc:  # noqa: BLE001 - reported by health; the watchdog restarts the process
            self.error = f"render thread stopped: {exc!r}"
            log.exception("render thread stopped")

    # ------------------------------------------------------------------ tap reader (compiled audio path)
    def _read_taps(self) -> None:
        """Every few ms: install a posted reload (the audio path's supervisor), then hand the blocks that played
        to the recorder, the browser stream, the meter and the latency figures. Nothing here can hold up the
        sound: the tap ring holds seconds, and a full one only drops taps (counted)."""
        path = self.path
        assert path is not None
        rows = path.tap_samples.shape[0]
        sync_failed = False
        try:
            while True:
                stopping = self._stop.is_set()
                try:
                    path.sync()
                    sync_failed = False
                except RuntimeError as exc:  # the audio side kept the renderer: try again next time
                    if not sync_failed:
                        log.error("hot reload not installed yet: %s", exc)
                    sync_failed = True
                while True:
                    n = path.read()
                    if n:
                        self._take_blocks(path.tap_samples[:n], path.tap_meta[:n])
                    if n < rows:
                        break
                if stopping:
                    break
                self._check_card()
                self._stop.wait(0.004)
        except Exception as exc:  # noqa: BLE001 - reported by health; the watchdog restarts the process
            self.error = f"tap reader stopped: {exc!r}"
            log.exception("tap reader stopped")

    CARD_TIMEOUT_NS = 500_000_000  # a card that asks for nothing this long has gone (JACK xruns last ~0.1 s)

    def _check_card(self) -> None:
        """The sound card vanished (unplugged, its JACK server killed): its callback stops coming. Fall back to
        the null output on the same audio path, so the sound goes on (recording, browsers, meters) and the
        service stays up; say so once. The dead stream is closed on a side thread: closing can block."""
        out, path = self.output, self.path
        if not isinstance(out, SoundDeviceOutput) or path is None or self._stop.is_set():
            return
        last = path.last_block_ns or self._started_ns
        if time.monotonic_ns() - last < self.CARD_TIMEOUT_NS:
            return
        silent_s = (time.monotonic_ns() - last) / 1e9
        null = NullOutput(self.rate, self.block)
        null.start_render(path)
        self.output = null
        self.fallback = f"{out.description} stopped at {time.strftime('%H:%M:%S')} (no callback for {silent_s:.1f} s)"
        null.description += f"; fell back after {self.fallback}"
        threading.Thread(target=out.abandon, name="close-dead-card", daemon=True).start()
        log.error("the sound card stopped: %s; playing to the null output now (restart the service to use a "
                  "card again)", self.fallback)

    def _take_blocks(self, samples: np.ndarray, meta: np.ndarray) -> None:
        lengths = meta[:, TM_LEN]
        played = samples.reshape(-1) if np.all(lengths == self.block) else np.concatenate(
            [samples[i, : lengths[i]] for i in range(samples.shape[0])])  # fmt: skip
        if self.recorder is not None:
            self.recorder.push(played)
        self._measure(played)
        pending = self._pending
        ms_per_sample = 1000.0 / self.rate
        for i in range(samples.shape[0]):
            if meta[i, TM_KIND] != TAP_RENDERED:
                continue
            start, n, t_ns = int(meta[i, TM_FIRST]), int(lengths[i]), int(meta[i, TM_NS])
            self._track_clock(start, t_ns)
            end, taken = start + n, int(meta[i, TM_INBOX])
            # an event left the renderer in the first block that had taken it from the inbox and reached its sample
            while pending and pending[0][0] < end and pending[0][2] <= taken:
                lat = (t_ns - pending.popleft()[1]) / 1e6
                self.latency_ms.add(lat)
                self.e2e_ms.add(lat + int(meta[i, TM_AHEAD]) * ms_per_sample)
            if self.listeners:
                self.stream.append((start, samples[i, :n].copy()))

    def _track_clock(self, start: int, now_ns: int) -> None:
        """Estimate the monotonic time of sample 0 as the least-delayed block over about a second, so the
        sample clock used for ``fixed`` latency and time tags does not jitter with render scheduling."""
        offset = now_ns - start * 1_000_000_000 // self.rate
        if offset < self._offset_window:
            self._offset_window = offset
        self._offset_blocks += 1
        if self._offset_ns is None or self._offset_blocks * self.block >= self.rate:
            self._offset_ns = self._offset_window
            self._offset_window = float("inf")
            self._offset_blocks = 0

    def _measure(self, block: np.ndarray) -> None:
        peak = float(np.max(np.abs(block)))
        if peak > self.peak:
            self.peak = peak
        self._sumsq += float(np.dot(block, block))
        self._nsq += block.shape[0]

    def take_level(self) -> tuple[float, float]:
        """(rms, peak) since the previous call (the loop's meter, every 50 ms); also kept for the status."""
        n, s, p = self._nsq, self._sumsq, self.peak
        self._nsq, self._sumsq, self.peak = 0, 0.0, 0.0
        self._levels.append((time.monotonic(), n, s, p))
        return (float(np.sqrt(s / n)) if n else 0.0, p)

    def level(self, seconds: float = 1.0) -> dict[str, float | None]:
        """The output level over the last second, in dBFS (None = digital silence)."""
        since = time.monotonic() - seconds
        recent = [x for x in list(self._levels) if x[0] >= since]
        n = sum(x[1] for x in recent)
        s = sum(x[2] for x in recent)
        p = max((x[3] for x in recent), default=0.0)
        db = lambda v: round(20 * float(np.log10(v)), 1) if v > 1e-9 else None  # noqa: E731
        return {"rms_dbfs": db(float(np.sqrt(s / n))) if n else None, "peak_dbfs": db(p)}

    # ------------------------------------------------------------------ commands (event loop thread)
    def sample_at(self, mono_ns: int) -> int:
        """The sample playing-in-render-time at a monotonic time (see _track_clock)."""
        offset = self._offset_ns
        if offset is None:
            return self.renderer.time
        return max(0, int((mono_ns - offset) * self.rate // 1_000_000_000))

    def _time_for(self, at: float | None, arrival_ns: int) -> tuple[int, bool]:
        """(sample time, counts for latency)."""
        if at is not None:
            mono = arrival_ns + int((at - time.time()) * 1e9)
            return self.sample_at(mono) + self._delay, False
        if self.settings.latency == "fixed":
            return self.sample_at(arrival_ns) + self._delay, True
        return self.renderer.time, True

    def _inbox_posted(self) -> int:
        """Messages posted to the renderer's inbox so far (its write index; 0 for the torch renderer)."""
        state = getattr(self.inbox, "_state", None)
        return int(state[K.IB_WRITE]) if state is not None else 0

    def _voice(self, voice: int | None, default: int) -> int:
        v = default if voice is None else voice
        if not 0 <= v < len(self.voices):
            raise Rejected("bad_voice", f"voice {v} does not exist: this server has voices 0..{len(self.voices) - 1}")
        return v

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
        v = self._voice(getattr(cmd, "voice", None), voice)
        state = self.voices[v]
        state.last_used = time.monotonic()
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
                self._pending.append((t, arrival_ns, int(self._inbox_posted())))
            if self.monitoring:
                self.recent.append({"voice": v, "kind": "control", "values": np.round(values, 3).tolist(), "source": source})
        elif isinstance(cmd, Deform):
            e = spec.expressivity
            if len(cmd.logits) != e:
                raise Rejected("wrong_count", f"{state.instrument} needs {e} deformation logits, got {len(cmd.logits)}")
            t, _ = self._time_for(cmd.at, arrival_ns)
            if not self.inbox.deform(t, v, np.asarray(cmd.logits, np.float32)):
                raise Rejected("overload", "the audio engine's inbox is full; event dropped")
            if self.monitoring:
                self.recent.append({"voice": v, "kind": "deform", "values": [round(x, 3) for x in cmd.logits], "source": source})
        elif isinstance(cmd, Gain):
            if not self.inbox.gain(v, cmd.gain):
                raise Rejected("overload", "the audio engine's inbox is full; gain dropped")
        elif isinstance(cmd, SelectInstrument):
            self.select(v, cmd.name)
        else:  # pragma: no cover - the edges only build the commands above
            raise Rejected("unknown_command", f"unknown command {type(cmd).__name__}")

    def select(self, voice: int, name: str) -> None:
        if name not in self.library.entries:
            raise Rejected("unknown_instrument", f"no instrument {name!r} (there: {', '.join(self.library.names)})")
        if name == self.voices[voice].instrument:
            return
        if not getattr(self.renderer, "supports_instrument_changes", True):
            raise Rejected("unsupported", f"the {self.settings.device} renderer plays the instrument it started with")
        if not self.inbox.instrument(voice, self.index_of[name]):
            raise Rejected("overload", "the audio engine's inbox is full; instrument change dropped")
        self.voices[voice].instrument = name

    # ------------------------------------------------------------------ voices for clients
    def allocate_voice(self, owner: str) -> int | None:
        """A free voice for a client (WebSocket), or None when all are taken."""
        for v, state in enumerate(self.voices):
            if state.owner is None:
                state.owner = owner
                state.last_used = time.monotonic()
                return v
        return None

    def release_voice(self, voice: int) -> None:
        state = self.voices[voice]
        if voice != OSC_VOICE:
            state.owner = None
        if state.instrument != self.default_instrument and self.default_instrument in self.library.entries:
            self.select(voice, self.default_instrument)
        self.inbox.gain(voice, 1.0)

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
        """Share of one core this process used since the previous call (at most every second)."""
        cpu0, wall0, last = self._cpu
        cpu1, wall1 = time.process_time(), time.monotonic()
        if wall1 - wall0 < 1.0:
            return last
        load = (cpu1 - cpu0) / (wall1 - wall0)
        self._cpu = (cpu1, wall1, load)
        return load

    def status(self) -> dict[str, Any]:
        lat50, lat99 = self.latency_ms.percentiles(50, 99)
        e2e50, e2e99 = self.e2e_ms.percentiles(50, 99)
        blk50, blk99 = self.block_us.percentiles(50, 99)
        out = self.path.counters() if self.path is not None else self.output.counters()
        return {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "level": self.level(),
            "running": self.running,
            "error": self.error,
            "sample_rate": self.rate,
            "block_size": self.block,
            "output": self.output.description,
            "fallback": self.fallback,
            "underruns": out["underruns"],
            "callbacks": out["callbacks"],
            "instrument": self.default_instrument,
            "instruments": self.library.names,
            "voices": [{"voice": i, "instrument": s.instrument, "owner": s.owner} for i, s in enumerate(self.voices)],
            "events": self.renderer.counters,
            "latency_ms": {"p50": lat50, "p99": lat99, "max": round(self.latency_ms.max, 3),
                           "mode": self.settings.latency, "count": self.latency_ms.count},
            "to_card_ms": {"p50": e2e50, "p99": e2e99, "device_ms": round(1000 * getattr(self.output, "latency_s", 0.0), 2)},
            "render_priority": self.path.priority if self.path is not None else self.priority,
            "audio_path": {"kind": self.audio_path, **{k: v for k, v in out.items() if k not in ("underruns", "callbacks")}},
            "block_us": {"p50": blk50, "p99": blk99, "max": round(self.block_us.max, 1)},
            "gpu_block_us": getattr(self.renderer, "gpu_status", lambda: None)(),  # None: not on a GPU
            "cpu_load": round(self.cpu_load(), 3),
            "recording": None if self.recorder is None else {
                "path": str(self.recorder.path), "seconds": round(self.recorder.seconds, 2), "failed": self.recorder.failed
            },
        }
