"""``--record FILE``: a WAV written as the server plays, off the audio path.

The render thread only appends a copy of each block to a deque (no lock, no I/O); a writer thread drains it,
writes, and flushes the header every half second so the file is readable while it grows. A write error (a full
disk, a vanished folder) stops the recording with one log line; the sound goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger("sensorsynth.recorder")


class RecorderError(OSError):
    pass


class Recorder:
    """A WAV of every output channel as it played (``channels`` interleaved, as the card got them)."""

    def __init__(self, path: str | Path, sample_rate: int, flush_s: float = 0.5, subtype: str = "PCM_16",
                 channels: int = 1) -> None:  # fmt: skip
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.flush_s = float(flush_s)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = sf.SoundFile(str(self.path), "w", samplerate=self.sample_rate, channels=self.channels,
                                     subtype=subtype, format="WAV")
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            raise RecorderError(f"cannot record to {self.path}: {exc}") from None
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._stop = threading.Event()
        self.frames = 0
        self.failed: str | None = None
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def push(self, block: np.ndarray) -> None:
        """From the render thread: hand over a copy of a block, (frames,) or (frames, channels) (never
        blocks)."""
        if self.failed is None:
            self._queue.append(block.copy())

    def _drain(self) -> None:
        while self._queue:
            block = self._queue.popleft()
            self._file.write(block)
            self.frames += block.shape[0]

    def _run(self) -> None:
        last_flush = time.monotonic()
        try:
            while not self._stop.is_set():
                self._stop.wait(0.05)
                self._drain()
                if time.monotonic() - last_flush >= self.flush_s:
                    self._file.flush()
                    last_flush = time.monotonic()
            self._drain()
        except Exception as exc:  # noqa: BLE001 - a disk problem must not reach the audio
            self.failed = str(exc)
            self._queue.clear()
            log.error("recording to %s stopped: %s (the sound goes on)", self.path, exc)
        finally:
            try:
                self._file.close()
            except Exception as exc:  # noqa: BLE001
                if self.failed is None:
                    self.failed = str(exc)
                log.error("closing %s: %s", self.path, exc)

    def close(self) -> None:
        """Write what is left and close the file (idempotent)."""
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate
