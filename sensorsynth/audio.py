"""Audio in and out: turn any clip soundfile can read into exactly what ``fit`` needs, and write WAVs.

A fit needs float32 mono at the spec's rate, exactly ``n_samples`` long and peak-normalised (the seed's
``max_norm``). Users bring whatever their recorder made, so every conversion is done here and reported in
plain words (``Clip.messages``), and every unusable input fails with one ``AudioInputError`` naming the file
instead of a NaN loss twenty minutes later.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

from .atomic import atomic_write
from .instrument_file import SourceInfo, sha256_of

# A peak below this is silence for fitting purposes: -100 dBFS, under the noise floor of 16-bit audio.
SILENCE_PEAK = 1e-5


class AudioInputError(ValueError):
    """A clip that cannot be used; the message names the file and what is wrong with it."""


class AudioOutputError(OSError):
    """A WAV that cannot be written; the message names the file."""


class AudioLimits(BaseModel):
    """What an audio file may declare in its header, checked before a sample is decoded.

    Why: a header is a few bytes and can declare anything. A 5.5 kB FLAC at 655 kHz × 8 channels decodes to
    40 MiB, and to about 1.2 GiB at 30 s; decoding happens before any duration or content check can run.
    The fit resamples every clip to its instrument's rate, so nothing above 96 kHz or beyond stereo carries
    anything a fit uses. ``max_samples`` bounds frames × channels as the header declares them (None: no bound,
    for a local file that :func:`read_clip` only reads the start of); ``max_decoded_samples`` bounds what
    :func:`read_clip` decodes (frames it needs × channels)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_rate: int = Field(96000, ge=8000, le=384000, description="highest sample rate, Hz")
    max_channels: int = Field(2, ge=1, le=1024)
    max_samples: int | None = Field(2**23, ge=1, description="frames × channels the header may declare")
    max_decoded_samples: int = Field(2**24, ge=1, description="frames × channels read_clip may decode")


# Audio from outside (an upload from a page, a clip sent to the trainer): at most 96 kHz, stereo, and
# 2^23 samples (43 s of 96 kHz stereo, 190 s of 22.05 kHz mono): 64 MiB decoded as float64 at most.
UPLOAD_LIMITS = AudioLimits()
# A clip sent to the trainer (``sensorsynth submit``, the pages' Record flow): the bytes are already in memory,
# bounded by the wire, so its declared length is not bounded; what is decoded is (128 MiB as float64).
WIRE_LIMITS = AudioLimits(max_rate=192000, max_channels=8, max_samples=None, max_decoded_samples=2**24)
# A local file the user names on the command line: any rate ModelSpec knows, a multichannel recorder's
# file, any length (read_clip reads only the start a fit uses), and at most 512 MiB decoded.
LOCAL_LIMITS = AudioLimits(max_rate=384000, max_channels=64, max_samples=None, max_decoded_samples=2**26)


def check_info(rate: int, channels: int, frames: int, limits: AudioLimits, name: str = "the clip") -> None:
    """AudioInputError naming ``name`` when a header's rate, channels or size are outside ``limits``."""
    if rate <= 0:
        raise AudioInputError(f"{name}: declares a sample rate of {rate} Hz; not a usable audio file")
    if rate > limits.max_rate:
        raise AudioInputError(f"{name}: {rate} Hz is above the {limits.max_rate} Hz accepted (the fit resamples to "
                              "the instrument's rate; record at 48 kHz)")  # fmt: skip
    if not 1 <= channels <= limits.max_channels:
        raise AudioInputError(f"{name}: {channels} channels; at most {limits.max_channels} are accepted (the fit "
                              "mixes them to mono)")  # fmt: skip
    if limits.max_samples is not None and frames * channels > limits.max_samples:
        raise AudioInputError(f"{name}: {frames} frames × {channels} channels ({frames / rate:.1f} s at {rate} Hz) "
                              f"is more than the {limits.max_samples} samples accepted")  # fmt: skip


def check_header(source: str | os.PathLike[str] | Any, limits: AudioLimits = UPLOAD_LIMITS,
                 name: str | None = None) -> Any:
    """soundfile's header info of ``source`` (a path, or a seekable binary file such as ``io.BytesIO``), once
    its rate, channels and frames × channels are within ``limits``; nothing is decoded. AudioInputError
    naming ``name`` (default: the path, or "the clip") otherwise, or when it is not a readable audio file.
    A file object is read from its start and left at the position it had."""
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "the clip")
    position = source.tell() if hasattr(source, "tell") else None
    try:
        if position is not None:
            source.seek(0)  # the header is at the start, wherever the caller's position was
        info = sf.info(source if not isinstance(source, os.PathLike) else os.fspath(source))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
        raise AudioInputError(f"{label}: not a readable audio file ({detail})") from None
    finally:
        if position is not None:
            source.seek(position)
    check_info(int(info.samplerate), int(info.channels), int(info.frames), limits, label)
    return info


@dataclass
class Clip:
    """A clip ready to fit: ``samples`` float32 (n_samples,), peak 1, at the requested rate."""

    samples: np.ndarray
    sample_rate: int
    source: SourceInfo
    messages: list[str] = field(default_factory=list)


def _seconds(value: float) -> str:
    """Durations for humans: 2.1 s, 0.35 s, 12 ms."""
    if value >= 0.1:
        return f"{value:.2f}".rstrip("0").rstrip(".") + " s"
    return f"{value * 1000:.3g} ms"


def _resample_margin(up: int, down: int) -> int:
    """Extra input frames resample_poly's filter (half length 10·max(up, down) at the upsampled rate) needs."""
    return math.ceil(10 * max(up, down) / up) + 16


def _open(path: Path) -> sf.SoundFile:
    if not path.exists():
        raise AudioInputError(f"{path}: no such file")
    if path.is_dir():
        raise AudioInputError(f"{path}: is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioInputError(f"{path}: is empty (0 bytes), not an audio file")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)
        raise AudioInputError(f"{path}: not a readable audio file ({detail})") from None


def read_clip(path: str | os.PathLike[str], sample_rate: int = 22050, n_samples: int = 2**17,
              limits: AudioLimits = LOCAL_LIMITS) -> Clip:
    """Read, mix down, resample, pad or cut and peak-normalise one clip; explain every change made. The
    header is checked against ``limits`` (:data:`LOCAL_LIMITS` for a user's own file, :data:`UPLOAD_LIMITS`
    for one from outside) before anything is decoded."""
    path = Path(path)
    messages: list[str] = []
    with _open(path) as handle:
        rate, channels, frames = int(handle.samplerate), int(handle.channels), int(handle.frames)
        check_info(rate, channels, frames, limits, str(path))
        ratio = Fraction(sample_rate, rate)
        up, down = ratio.numerator, ratio.denominator
        # Only read what the fit can use (plus the resampler's filter reach): a one-hour file stays cheap.
        wanted = math.ceil(n_samples * down / up) + (_resample_margin(up, down) if ratio != 1 else 0)
        decoded = (min(frames, wanted) if frames > 0 else wanted) * channels
        if decoded > limits.max_decoded_samples:
            raise AudioInputError(f"{path}: reading it for this fit would decode {decoded} samples ({channels} "
                                  f"channels at {rate} Hz); at most {limits.max_decoded_samples} are accepted")
        try:
            data = handle.read(frames=min(frames, wanted) if frames > 0 else wanted, dtype="float64", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioInputError(f"{path}: audio data is unreadable ({exc})") from None
    if data.shape[0] == 0:
        raise AudioInputError(f"{path}: holds no audio (0 frames)")
    if not np.all(np.isfinite(data)):
        raise AudioInputError(f"{path}: holds NaN or infinite samples")
    source = SourceInfo(
        name=path.name,
        sha256=sha256_of(path),
        duration_s=round(max(frames, data.shape[0]) / rate, 6),
        sample_rate=rate,
        channels=channels,
    )
    if channels > 1:
        messages.append(f"mixed {channels} channels down to mono")
    mono = data.mean(axis=1)
    if ratio != 1:
        from scipy.signal import resample_poly  # imported here: scipy.signal costs a second at startup

        mono = resample_poly(mono, up, down)
        messages.append(f"resampled {rate} → {sample_rate} Hz")
    natural = math.ceil(max(frames, data.shape[0]) * up / down)  # length of the whole file at the new rate
    tolerance = sample_rate // 1000  # under 1 ms off is resampler rounding, not worth a message
    if natural > n_samples + tolerance:
        messages.append(f"cut to the first {_seconds(n_samples / sample_rate)} (the clip is {_seconds(frames / rate)})")
    elif mono.shape[0] < n_samples - tolerance:
        messages.append(f"padded {_seconds((n_samples - mono.shape[0]) / sample_rate)} of silence at the end")
    mono = np.pad(mono[:n_samples], (0, max(0, n_samples - mono.shape[0])))
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        where = "" if natural <= n_samples else f" in its first {_seconds(n_samples / sample_rate)}"
        level = "all zeros" if peak == 0 else f"peak {20 * math.log10(peak):.0f} dBFS"
        raise AudioInputError(f"{path}: is silent{where} ({level}); nothing to fit")
    samples = (mono / peak).astype(np.float32)
    return Clip(samples=samples, sample_rate=sample_rate, source=source, messages=messages)


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM WAV (plays everywhere, half the size of float), clipped to [-1, 1].

    ``samples`` is (frames,) or (frames, channels). Parent directories are created; the file appears
    atomically (temp file + rename), so an interrupted render never leaves a truncated WAV.
    """
    path = Path(path)
    data = np.asarray(samples)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise ValueError(f"samples must be (frames,) or (frames, channels) and non-empty, got {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("samples hold NaN or inf")
    data = np.clip(data.astype(np.float32, copy=False), -1.0, 1.0)
    if path.is_dir():
        raise AudioOutputError(f"{path}: is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: sf.write(str(tmp), data, int(sample_rate), subtype="PCM_16", format="WAV"))
    except (OSError, sf.LibsndfileError, RuntimeError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise AudioOutputError(f"{path}: cannot write ({detail})") from None
    return path
