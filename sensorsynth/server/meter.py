"""What the engine measures about the sound that played: histograms (:class:`Stats`), the output level
(:class:`Meter`), event latency and the sample clock (:class:`Latency`), and the process's CPU load
(:class:`CpuLoad`).

One module for the measurements so that both audio drivers (compiled and thread, :mod:`.driver`) feed the same
bookkeeping instead of each keeping its own copy. Each object is written by one thread (the driver's: the
render thread or the tap reader) and read by another (the event loop, for the status); the figures are
plain numbers and numpy counts, so a read sees a value at most one block old and never blocks the writer.
"""

from __future__ import annotations

import collections
import time

import numpy as np


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


def _dbfs(v: float) -> float | None:
    return round(20 * float(np.log10(v)), 1) if v > 1e-9 else None


class Meter:
    """The output level: peak and mean square of what played since the last :meth:`take_level` (the page's
    meter, every 50 ms), and the last second of those readings for the status."""

    def __init__(self, history: int = 64, channels: int = 1) -> None:
        self.peak = 0.0
        self._sumsq = 0.0
        self._n = 0
        self._levels: collections.deque[tuple[float, int, float, float]] = collections.deque(maxlen=history)
        # per output channel and per reader (each reader of channel_levels() has its own "since my last call"):
        # sum of squares and frames
        self.channels = int(channels)
        self._readers: dict[str, tuple[np.ndarray, list[int]]] = {}

    def measure(self, block: np.ndarray) -> None:
        """Add frames that played, (frames,) or (frames, channels) (the driver's thread). The overall level
        counts every sample of every channel; each channel also has its own (:meth:`channel_levels`)."""
        if block.size == 0:
            return
        frames = block.reshape(block.shape[0], -1)
        flat = frames.reshape(-1)
        peak = float(np.max(np.abs(flat)))
        if peak > self.peak:
            self.peak = peak
        self._sumsq += float(np.dot(flat, flat))
        self._n += flat.shape[0]
        if frames.shape[1] == self.channels and self._readers:
            f64 = frames.astype(np.float64)
            sq = np.einsum("ij,ij->j", f64, f64)
            for sums, count in list(self._readers.values()):
                sums += sq
                count[0] += frames.shape[0]

    def channel_levels(self, reader: str = "default") -> list[float | None]:
        """rms dBFS of each output channel over the frames since ``reader``'s previous call (None: silence, or
        its first call), and start its new count. Each reader (the status, a feedback sender, ...) has its own
        count, so they do not take each other's frames."""
        entry = self._readers.get(reader)
        self._readers[reader] = (np.zeros(self.channels, np.float64), [0])
        if entry is None or entry[1][0] == 0:
            return [None] * self.channels
        sums, count = entry
        return [_dbfs(float(np.sqrt(s / count[0]))) for s in sums]

    def take_level(self, now: float | None = None) -> tuple[float, float]:
        """(rms, peak) since the previous call; also kept for :meth:`level`."""
        n, s, p = self._n, self._sumsq, self.peak
        self._n, self._sumsq, self.peak = 0, 0.0, 0.0
        self._levels.append((time.monotonic() if now is None else now, n, s, p))
        return (float(np.sqrt(s / n)) if n else 0.0, p)

    def level(self, seconds: float = 1.0, now: float | None = None) -> dict[str, float | None]:
        """The output level over the last ``seconds`` of readings, in dBFS (None = digital silence)."""
        since = (time.monotonic() if now is None else now) - seconds
        recent = [x for x in list(self._levels) if x[0] >= since]
        n = sum(x[1] for x in recent)
        s = sum(x[2] for x in recent)
        p = max((x[3] for x in recent), default=0.0)
        return {"rms_dbfs": _dbfs(float(np.sqrt(s / n))) if n else None, "peak_dbfs": _dbfs(p)}


class Latency:
    """Event latency and the sample clock.

    Every timed event is :meth:`expect`-ed when posted (its sample, its arrival, the inbox messages posted up
    to it). Each block that left the renderer is reported to :meth:`block_left`; the events whose sample it
    holds get their latency (arrival → the block left the renderer) and their time to the card (that plus the
    audio queued ahead of the block). The same reports give the sample clock: the monotonic time of sample 0,
    estimated as the least-delayed block over about a second, so ``fixed`` latency and time tags do not jitter
    with render scheduling (:meth:`sample_at`)."""

    def __init__(self, sample_rate: int, block_size: int) -> None:
        self.rate = int(sample_rate)
        self.block = int(block_size)
        self.latency_ms = Stats(0.01)  # arrival → the block holding the event's first sample leaves the renderer
        self.to_card_ms = Stats(0.01)  # the same plus the audio queued ahead of it: arrival → the card
        # (sample, arrival ns, inbox messages posted up to and including it)
        self._pending: collections.deque[tuple[int, int, int]] = collections.deque()
        self.offset_ns: int | None = None  # monotonic ns of sample 0, best estimate
        self._window = float("inf")
        self._blocks = 0

    def expect(self, sample: int, arrival_ns: int, posted: int = 0) -> None:
        """An event for ``sample`` arrived at ``arrival_ns``; it was inbox message number ``posted``
        (the event loop's thread)."""
        self._pending.append((sample, arrival_ns, posted))

    def block_left(self, start: int, n: int, t_ns: int, ahead_ms: float, taken: int | None = None) -> None:
        """Samples [start, start + n) left the renderer at ``t_ns`` with ``ahead_ms`` of audio queued before
        them; ``taken``: inbox messages the renderer had taken by then (None: every posted one). An event counts
        in the first block that had taken it from the inbox and reached its sample."""
        self._track_clock(start, t_ns)
        end = start + n
        pending = self._pending
        while pending and pending[0][0] < end and (taken is None or pending[0][2] <= taken):
            lat = (t_ns - pending.popleft()[1]) / 1e6
            self.latency_ms.add(lat)
            self.to_card_ms.add(lat + ahead_ms)

    def _track_clock(self, start: int, now_ns: int) -> None:
        offset = now_ns - start * 1_000_000_000 // self.rate
        if offset < self._window:
            self._window = offset
        self._blocks += 1
        if self.offset_ns is None or self._blocks * self.block >= self.rate:
            self.offset_ns = int(self._window)
            self._window = float("inf")
            self._blocks = 0

    def sample_at(self, mono_ns: int, default: int) -> int:
        """The sample playing (in render time) at a monotonic time; ``default`` before any block left."""
        offset = self.offset_ns
        if offset is None:
            return default
        return max(0, int((mono_ns - offset) * self.rate // 1_000_000_000))


class CpuLoad:
    """Share of one core this process used between two readings at least a second apart."""

    def __init__(self) -> None:
        self._last = (time.process_time(), time.monotonic(), 0.0)

    def read(self) -> float:
        cpu0, wall0, last = self._last
        cpu1, wall1 = time.process_time(), time.monotonic()
        if wall1 - wall0 < 1.0:
            return last
        load = (cpu1 - cpu0) / (wall1 - wall0)
        self._last = (cpu1, wall1, load)
        return load
