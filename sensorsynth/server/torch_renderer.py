"""The engine's renderer interface over the batched torch renderer (:mod:`sensorsynth.render.batched`).
``serve --device cuda`` no longer uses it: it plays through the numba-cuda renderer
(:mod:`sensorsynth.render.cuda`), which renders the complete voice per sample on the GPU instead of this
launch-bound path (about 87 busy voices on an H200; its own figures: docs/gpu.md). Imported only when a torch device is asked for, so the
default (numba, CPU) server never imports torch.

Differences from the numba renderer, said plainly: events cross threads through a ``SimpleQueue`` (torch
calls take the GIL anyway), instrument swaps and hot reload are not supported on this path (the engine refuses
them with a clear message), and fresh attack noise comes from torch's generator.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence

import numpy as np

from ..instrument_file import Instrument


class TorchInbox:
    """Producer side: validated later, on the render thread, by the batched renderer's own checks."""

    def __init__(self, q: queue.SimpleQueue, limit: int) -> None:
        self._q = q
        self._limit = limit
        self.full = 0

    def _put(self, item) -> bool:
        if self._q.qsize() >= self._limit:
            self.full += 1
            return False
        self._q.put(item)
        return True

    def control(self, time: int, voice: int, vector) -> bool:
        return self._put(("control", time, voice, np.asarray(vector, np.float32)))

    def deform(self, time: int, voice: int, logits, immediate: bool = False) -> bool:
        return self._put(("deform", time, voice, np.asarray(logits, np.float32), immediate))

    def gain(self, voice: int, gain: float, ramp_ms: float | None = None) -> bool:
        return self._put(("gain", voice, float(gain)))

    def instrument(self, voice: int, index: int) -> bool:
        return False  # not on this path (see the module docstring)


class TorchRenderer:
    supports_instrument_changes = False

    def __init__(self, instruments: Sequence[Instrument], sample_rate: int, block_size: int, max_voices: int,
                 seed: int | None, voice_instruments: Sequence[int], device: str, inbox_size: int = 4096,
                 noise_mode: str = "instrument") -> None:
        import torch  # noqa: F401 - only here

        from ..render.batched import BatchedRenderer

        self._r = BatchedRenderer(list(instruments), max_voices, sample_rate=sample_rate, block_size=block_size,
                                  device=device, seed=seed, voice_instruments=list(voice_instruments),
                                  noise_mode=noise_mode)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.inbox = TorchInbox(self._q, inbox_size)
        self._out = np.zeros(block_size, np.float32)
        self._counters = {"events": 0, "dropped": 0, "late": 0, "mismatched": 0, "resets": 0, "scrubbed": 0}

    @property
    def time(self) -> int:
        return self._r.time

    @property
    def counters(self) -> dict[str, int]:
        return {**self._counters, "inbox_full": self.inbox.full, "resets": self._r.resets}

    def warmup(self) -> None:
        """One block on a throw-away copy would double GPU memory; run the real one at time 0 instead: it is
        silent (no events yet) and only moves the clock by one block."""
        self.process()

    def add_instrument(self, instrument: Instrument) -> int:
        raise RuntimeError("the torch renderer cannot add instruments while playing; restart the server")

    def replace_instrument(self, index: int, instrument: Instrument) -> None:
        raise RuntimeError("the torch renderer cannot reload instruments while playing; restart the server")

    def process(self) -> np.ndarray:
        r = self._r
        t0 = r.time
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            try:
                if item[0] == "control":
                    r.control(max(item[1], t0), item[2], item[3])
                    self._counters["events"] += 1
                    if item[1] < t0:
                        self._counters["late"] += 1
                elif item[0] == "deform":
                    r.deform(max(item[1], t0), item[2], item[3], item[4])
                    self._counters["events"] += 1
                else:
                    r.set_gain(item[1], item[2])
            except ValueError:
                self._counters["mismatched"] += 1
        self._out[:] = r.process().detach().to("cpu").numpy()
        return self._out
