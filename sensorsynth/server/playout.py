"""The outputs (a sound card through PortAudio, or the clock-paced null output), fed one of two ways.

**The compiled audio path** (the default, :meth:`Output.start_render`): the card's PortAudio callback is the
renderer's own compiled block function (:mod:`sensorsynth.render.callback`): it renders each block in the
callback, without the GIL; the null output is a compiled loop paced by the clock. Nothing Python sits between
the renderer and the card.

**The play-out ring** (``--audio-path python``, and the torch renderers: :meth:`Output.start`), described below.

Why a ring and a compiled callback: a Python audio callback waits for the GIL (5 ms switch interval, unbounded
while C code holds it), longer than a 64-sample block. So the sound card's PortAudio callback is a numba
``@cfunc`` that only copies samples out of this ring: it never takes the GIL, and it keeps playing while the
event loop parses a flood of OSC or the garbage collector runs. The render thread keeps the ring filled a few
blocks ahead (``prefill``); only a render-thread stall longer than that can under-run the card, and each one is
counted.

Layout of the shared buffer (one float32 array, so the callback needs one pointer): 16 float32 of header
viewed as 8 int64 — size, read, write, underruns (ring dry), callbacks, status flags seen, frames requested,
output-underflow flags seen — then
``size`` float32 samples. The writer publishes ``write`` after the samples; the reader publishes ``read``
after copying (x86 and ARM64 keep these aligned 64-bit stores atomic; one writer, one reader).
"""

from __future__ import annotations

import logging
import time
import threading
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numba import carray, cfunc, types

if TYPE_CHECKING:
    from ..render.callback import AudioPath

log = logging.getLogger("sensorsynth.output")

H_SIZE, H_READ, H_WRITE, H_UNDERRUNS, H_CALLBACKS, H_FLAGS, H_FRAMES, H_UNDERFLOW = range(8)
PA_OUTPUT_UNDERFLOW = 0x4
HEADER_I64 = 8
HEADER_F32 = 2 * HEADER_I64

_CALLBACK_SIG = types.intc(types.voidptr, types.voidptr, types.uint64, types.voidptr, types.uint64, types.voidptr)


@cfunc(_CALLBACK_SIG, nopython=True, error_model="numpy")
def _portaudio_callback(inp, outp, frames, time_info, status_flags, user):  # pragma: no cover - runs in C
    """PortAudio stream callback: copy ``frames`` samples from the ring, zeros (and a counted under-run) when it
    runs dry. No GIL, no allocation, no exception path."""
    hdr = carray(user, (HEADER_I64,), np.int64)
    size = hdr[H_SIZE]
    buf = carray(user, (HEADER_F32 + size,), np.float32)
    out = carray(outp, (frames,), np.float32)
    r = hdr[H_READ]
    avail = hdr[H_WRITE] - r
    n = frames if avail >= frames else max(avail, 0)
    pos = r % size
    for i in range(n):
        out[i] = buf[HEADER_F32 + pos]
        pos += 1
        if pos == size:
            pos = 0
    for i in range(n, frames):
        out[i] = 0.0
    hdr[H_READ] = r + n
    if n < frames:
        hdr[H_UNDERRUNS] += 1
    if status_flags != 0:
        hdr[H_FLAGS] += 1
    if status_flags & PA_OUTPUT_UNDERFLOW:
        hdr[H_UNDERFLOW] += 1
    hdr[H_CALLBACKS] += 1
    hdr[H_FRAMES] += frames
    return 0


class Ring:
    """Single-writer (render thread), single-reader (callback or clock) ring of float32 samples."""

    def __init__(self, size: int) -> None:
        self.buffer = np.zeros(HEADER_F32 + size, np.float32)
        self.header = self.buffer[:HEADER_F32].view(np.int64)
        self.samples = self.buffer[HEADER_F32:]
        self.header[H_SIZE] = size
        self.size = size

    @property
    def fill(self) -> int:
        return int(self.header[H_WRITE] - self.header[H_READ])

    def write(self, block: np.ndarray) -> None:
        w = int(self.header[H_WRITE])
        pos = w % self.size
        n = block.shape[0]
        first = min(n, self.size - pos)
        self.samples[pos : pos + first] = block[:first]
        if first < n:
            self.samples[: n - first] = block[first:]
        self.header[H_WRITE] = w + n

    @property
    def underruns(self) -> int:
        return int(self.header[H_UNDERRUNS])


class Output(Protocol):
    """Where the sound goes. Either ``start_render(path)``: the output renders through a compiled
    :class:`~sensorsynth.render.callback.AudioPath`; or ``start()``: it plays the ring's samples, and
    ``advance()`` is called by the render thread before each block (the null output consumes by the clock
    there). ``description`` is one line for the start-up message; ``counters()`` are the under-run counts of
    whichever way it was started."""

    ring: Ring
    sample_rate: int
    description: str

    def start(self) -> None: ...
    def start_render(self, path: AudioPath) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...
    def counters(self) -> dict[str, int]: ...


class NullOutput:
    """A paced output with no device: the clock consumes ``sample_rate`` samples per second from the ring, so the
    server behaves exactly as with a sound card (same pacing, same latency, same under-run accounting)."""

    def __init__(self, sample_rate: int, block_size: int, ring_blocks: int = 64, channels: int = 1) -> None:
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self.channels = int(channels)
        self.ring = Ring(ring_blocks * self.block_size)
        self.description = f"null output (no sound card), paced by the clock at {self.sample_rate} Hz"
        if self.channels > 1:
            self.description += f", {self.channels} channels"
        self._t0 = 0
        self._path: AudioPath | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.channels != 1:
            raise ValueError("the Python audio path plays one channel; several need the compiled path")
        self._t0 = time.monotonic_ns()

    def start_render(self, path: AudioPath) -> None:
        """The compiled null output: one thread runs the path's clock-paced loop, which holds no GIL."""
        self._path = path
        self._thread = threading.Thread(target=path.run_null, name="null-output", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def advance(self) -> None:
        h = self.ring.header
        due = (time.monotonic_ns() - self._t0) * self.sample_rate // 1_000_000_000
        # the clock pulls whole blocks, as a card's callback would
        due = due - due % self.block_size
        while h[H_READ] + self.block_size <= due:
            if h[H_WRITE] - h[H_READ] < self.block_size:
                h[H_UNDERRUNS] += 1
                h[H_WRITE] = h[H_READ] + self.block_size  # the card would have played zeros
            h[H_READ] += self.block_size
            h[H_CALLBACKS] += 1
            h[H_FRAMES] += self.block_size

    def stop(self) -> None:
        if self._path is not None and self._thread is not None:
            self._path.stop_null()
            self._thread.join(timeout=5)
            self._thread = None

    def counters(self) -> dict[str, int]:
        if self._path is not None:
            return self._path.counters()
        h = self.ring.header
        return {"underruns": int(h[H_UNDERRUNS]), "callbacks": int(h[H_CALLBACKS]), "status_flags": 0,
                "not_rendered": int(h[H_UNDERRUNS]), "device_underflow": 0}  # fmt: skip


class SoundDeviceError(RuntimeError):
    """No usable sound card (or sounddevice/PortAudio missing): the server falls back to the null output."""


def _sounddevice():
    try:
        import sounddevice as sd  # imports PortAudio; fails without libportaudio2
    except (OSError, ImportError) as exc:
        raise SoundDeviceError(f"sounddevice unavailable: {exc}") from None
    return sd


def find_device(device: str | int | None, hostapi: str | None = None) -> tuple[int, dict]:
    """The output device to open: an index, a name substring, or the default (JACK first when its server runs,
    since that is what a headless box with a dummy or real JACK has)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
    except Exception as exc:  # noqa: BLE001 - PortAudio errors vary by platform
        raise SoundDeviceError(f"cannot list sound devices: {exc}") from None
    outs = [i for i, d in enumerate(devices) if d["max_output_channels"] > 0]
    if hostapi:
        outs = [i for i in outs if hostapi.lower() in apis[devices[i]["hostapi"]]["name"].lower()]
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        idx = int(device)
        if idx not in outs:
            raise SoundDeviceError(f"no output device with index {idx}")
        return idx, devices[idx]
    if isinstance(device, str) and device:
        for i in outs:
            if device.lower() in devices[i]["name"].lower():
                return i, devices[i]
        raise SoundDeviceError(f"no output device named like {device!r}")
    if not outs:
        raise SoundDeviceError("no sound card found")
    jack = [i for i in outs if "jack" in apis[devices[i]["hostapi"]]["name"].lower()]
    idx = jack[0] if jack else (sd.default.device[1] if sd.default.device[1] in outs else outs[0])
    return idx, devices[idx]


class SoundDeviceOutput:
    """A sound card through sounddevice/PortAudio, fed by the compiled callback above."""

    def __init__(
        self, sample_rate: int, block_size: int, device: str | int | None = None, hostapi: str | None = None,
        ring_blocks: int = 64, channels: int = 1,
    ) -> None:
        self._sd = _sounddevice()
        self.index, info = find_device(device, hostapi)
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self.channels = int(channels)
        self.ring = Ring(ring_blocks * self.block_size)
        api = self._sd.query_hostapis(info["hostapi"])["name"]
        self.description = f"sound card '{info['name']}' ({api}) at {self.sample_rate} Hz"
        if self.channels > 1:
            self.description += f", {self.channels} channels"
        if self.channels > int(info["max_output_channels"]):
            raise SoundDeviceError(f"{info['name']} offers {info['max_output_channels']} output channels, "
                                   f"{self.channels} were asked for")
        self._stream = None
        self._path: AudioPath | None = None
        self.latency_s = 0.0
        try:
            self._sd.check_output_settings(device=self.index, channels=self.channels, dtype="float32",
                                           samplerate=self.sample_rate)
        except Exception as exc:  # noqa: BLE001
            raise SoundDeviceError(f"{info['name']} cannot play {self.sample_rate} Hz float32 on {self.channels} "
                                   f"channel(s): {exc}") from None

    def start(self) -> None:
        """Play the ring: the callback only copies from it (one channel)."""
        if self.channels != 1:
            raise SoundDeviceError("the Python audio path plays one channel; several need the compiled path")
        self._open(_portaudio_callback.address, self.ring.buffer.ctypes.data)

    def start_render(self, path: AudioPath) -> None:
        """The compiled audio path: the callback renders every block itself (PortAudio calls it with
        ``blocksize`` frames; any other count works too)."""
        self._open(path.callback_address, path.userdata)
        self._path = path

    def _open(self, callback: int, userdata: int) -> None:
        sd = self._sd
        try:
            self._stream = sd._StreamBase(  # the documented extension point for C callbacks
                kind="output", wrap_callback=None, device=self.index, samplerate=self.sample_rate,
                blocksize=self.block_size, channels=self.channels, dtype="float32", latency="low",
                callback=sd._ffi.cast("PaStreamCallback*", callback),
                userdata=sd._ffi.cast("void*", userdata),
            )
            self._stream.start()
        except Exception as exc:  # noqa: BLE001
            if self._stream is not None:
                try:
                    self._stream.close()
                except Exception:  # noqa: BLE001
                    pass
                self._stream = None
            raise SoundDeviceError(f"cannot start the sound card stream: {exc}") from None
        self.latency_s = float(self._stream.latency)

    @property
    def active(self) -> bool:
        return bool(self._stream is not None and self._stream.active)

    def advance(self) -> None:
        pass

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the sound card stream: %s", exc)
            self._stream = None

    def abandon(self) -> None:
        """Give up a stream whose device has gone: ask PortAudio to abort and close it (this may block for as
        long as the host API waits for a dead server, so callers run it on a side thread)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as exc:  # noqa: BLE001 - the device is gone; nothing more to do
                log.info("closing the vanished sound card: %s", exc)

    def counters(self) -> dict[str, int]:
        if self._path is not None:
            return self._path.counters()
        h = self.ring.header
        dry, underflow = int(h[H_UNDERRUNS]), int(h[H_UNDERFLOW])
        return {"underruns": dry + underflow, "callbacks": int(h[H_CALLBACKS]), "status_flags": int(h[H_FLAGS]),
                "not_rendered": dry, "device_underflow": underflow}  # fmt: skip
