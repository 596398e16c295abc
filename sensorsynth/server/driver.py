"""Audio drivers: what makes the renderer's blocks reach the output, in two implementations.

- :class:`CompiledDriver` (``audio_path="compiled"``, the default on the CPU renderer): the sound card's
  PortAudio callback renders every block itself, without the GIL (:mod:`sensorsynth.render.callback`); without
  a card, a compiled loop paced by the clock does the same on its own thread. The driver's Python thread is the
  **tap reader**: every few milliseconds it takes the blocks that played from the path's tap ring and hands them
  to the :class:`Sink`; it also installs posted hot reloads (the path's supervisor) and falls back to the null
  output when the card vanishes. It is never between the renderer and the card: a stalled interpreter delays
  the recording, not the sound.
- :class:`ThreadDriver` (``audio_path="python"``, and the torch renderers): a **render thread** renders a block
  whenever the play-out ring holds less than ``prefill`` blocks; the card reads the ring from a compiled
  callback (:mod:`.playout`), the null output consumes it by the clock. It has to win the GIL for every block.

Both report to the same :class:`Sink` (the engine): ``played`` for every stretch of samples that played (the
recorder, the meter), ``rendered`` for every block that left the renderer (latency, the sample clock, the
browser stream). So the bookkeeping exists once, whichever driver runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Protocol

import numpy as np

from ..render.callback import TAP_RENDERED, TM_AHEAD, TM_FIRST, TM_INBOX, TM_KIND, TM_LEN, TM_NS, AudioPath, take_renderer
from .meter import Stats
from .playout import NullOutput, Output, SoundDeviceOutput

log = logging.getLogger("sensorsynth.engine")


class Sink(Protocol):
    """Where a driver hands what played (called from the driver's own thread)."""

    def played(self, samples: np.ndarray) -> None:
        """Frames that played, in order: (frames, channels) (a view: copy to keep)."""

    def rendered(self, start: int, samples: np.ndarray, t_ns: int, ahead_ms: float, taken: int | None) -> None:
        """One block left the renderer: its first sample index, its frames ((n, channels), a view), the monotonic ns it left,
        the audio queued ahead of it (ms), and the inbox messages taken by then (None: all posted)."""


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


class AudioDriver:
    """What both drivers share: the output, the thread, the error a dead thread leaves, the heartbeat."""

    kind = ""
    path: AudioPath | None = None

    def __init__(self, renderer, output: Output, sink: Sink, prefill_blocks: int, realtime_priority: int) -> None:
        self.renderer = renderer
        self.output = output
        self.sink = sink
        self.prefill_blocks = int(prefill_blocks)
        self.realtime_priority = int(realtime_priority)
        self.rate = int(renderer.sample_rate)
        self.block = int(renderer.block_size)
        self.error: str | None = None  # why the driver's thread stopped (the health report; the watchdog exits)
        self.fallback: str | None = None  # when the card vanished and the null output took over
        self.block_us: Stats = Stats(1.0)  # µs per block, 1 µs bins up to 20 ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_ns = time.monotonic_ns()
        self._last_block_ns = time.monotonic_ns()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def last_block_ns(self) -> int:
        """Monotonic ns when the last block left the renderer (the watchdog's heartbeat)."""
        return self._last_block_ns

    @property
    def priority(self) -> str:
        return "normal"

    def counters(self) -> dict[str, int]:
        return self.output.counters()

    def _spawn(self, target, name: str) -> None:
        self._started_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def _join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def inject_stall(self) -> None:
        """Take the renderer away from the audio side for good, as a hung kernel would (fault injection)."""
        raise NotImplementedError


class ThreadDriver(AudioDriver):
    """The Python render thread over a play-out ring (see the module doc)."""

    kind = "python"

    def __init__(self, renderer, output: Output, sink: Sink, prefill_blocks: int = 3,
                 realtime_priority: int = 0) -> None:  # fmt: skip
        super().__init__(renderer, output, sink, prefill_blocks, realtime_priority)
        self._priority = "normal"
        self._stalled = False

    @property
    def priority(self) -> str:
        return self._priority

    def start(self) -> None:
        self.output.start()
        self._spawn(self._run, "render")

    def stop(self) -> None:
        self._join()
        self.output.stop()

    def inject_stall(self) -> None:
        self._stalled = True

    def _raise_priority(self) -> None:
        """Ask the kernel to run this thread before ordinary work (SCHED_FIFO), as audio threads do: when the
        two cores are busy with OSC parsing and browsers, the render thread still wakes on time. Needs root
        or CAP_SYS_NICE (systemd's AmbientCapabilities, or rtprio in limits.conf); without it the thread keeps
        normal priority and the play-out prefill has to absorb scheduling delays."""
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))
            self._priority = f"SCHED_FIFO {self.realtime_priority}"
        except (OSError, AttributeError, ValueError) as exc:
            self._priority = f"normal ({getattr(exc, 'strerror', None) or exc})"

    def _run(self) -> None:
        if self.realtime_priority:
            self._raise_priority()
        r, out, ring, sink = self.renderer, self.output, self.output.ring, self.sink
        b = self.block
        target = max(1, self.prefill_blocks) * b
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
                self._last_block_ns = now
                self.block_us.add((t1 - t0) / 1000.0)
                frames = block.reshape(-1, 1)  # this path is mono (the ring and its callback are)
                sink.played(frames)
                sink.rendered(start, frames, now, ahead_ms, None)
        except Exception as exc:  # noqa: BLE001 - reported by health; the watchdog restarts the process
            self.error = f"render thread stopped: {exc!r}"
            log.exception("render thread stopped")


class CompiledDriver(AudioDriver):
    """The compiled audio path and its tap reader (see the module doc)."""

    kind = "compiled"
    CARD_TIMEOUT_NS = 500_000_000  # a card that asks for nothing this long has gone (JACK xruns last ~0.1 s)

    def __init__(self, renderer, output: Output, sink: Sink, prefill_blocks: int = 3,
                 realtime_priority: int = 0) -> None:  # fmt: skip
        super().__init__(renderer, output, sink, prefill_blocks, realtime_priority)
        self.path = AudioPath(renderer, prefill_blocks=prefill_blocks, realtime_priority=realtime_priority)
        self.block_us = CallbackStats(self.path)

    @property
    def last_block_ns(self) -> int:
        assert self.path is not None
        return self.path.last_block_ns or self._last_block_ns

    @property
    def priority(self) -> str:
        assert self.path is not None
        return self.path.priority

    def counters(self) -> dict[str, int]:
        assert self.path is not None
        return self.path.counters()

    def start(self) -> None:
        assert self.path is not None
        self.output.start_render(self.path)
        self._spawn(self._read_taps, "audio-tap")

    def stop(self) -> None:
        self.output.stop()  # the sound stops first; the tap reader then takes the last blocks that played
        self._join()

    def inject_stall(self) -> None:
        assert self.path is not None
        take_renderer(self.path.ctl, 10**10)

    def _read_taps(self) -> None:
        """Every few ms: install a posted reload (the audio path's supervisor), then hand the blocks that played
        to the sink. Nothing here can hold up the sound: the tap ring holds seconds, and a full one only drops
        taps (counted)."""
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

    def _take_blocks(self, samples: np.ndarray, meta: np.ndarray) -> None:
        """Tap rows hold interleaved frames: each becomes (frames, channels)."""
        lengths = meta[:, TM_LEN]
        ch = self.path.channels if self.path is not None else 1
        played = samples.reshape(-1, ch) if np.all(lengths == self.block) else np.concatenate(
            [samples[i, : lengths[i] * ch].reshape(-1, ch) for i in range(samples.shape[0])])  # fmt: skip
        sink = self.sink
        sink.played(played)
        ms_per_sample = 1000.0 / self.rate
        for i in range(samples.shape[0]):
            if meta[i, TM_KIND] != TAP_RENDERED:
                continue
            n = int(lengths[i])
            sink.rendered(int(meta[i, TM_FIRST]), samples[i, : n * ch].reshape(n, ch), int(meta[i, TM_NS]),
                          int(meta[i, TM_AHEAD]) * ms_per_sample, int(meta[i, TM_INBOX]))  # fmt: skip

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
        null = NullOutput(self.rate, self.block, channels=getattr(out, "channels", 1))
        null.start_render(path)
        self.output = null
        self.fallback = f"{out.description} stopped at {time.strftime('%H:%M:%S')} (no callback for {silent_s:.1f} s)"
        null.description += f"; fell back after {self.fallback}"
        threading.Thread(target=out.abandon, name="close-dead-card", daemon=True).start()
        log.error("the sound card stopped: %s; playing to the null output now (restart the service to use a "
                  "card again)", self.fallback)


DRIVERS: dict[str, type[AudioDriver]] = {"compiled": CompiledDriver, "python": ThreadDriver}
