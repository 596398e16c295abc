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

import numpy as np
import soundfile as sf

from .atomic import atomic_write
from .instrument_file import SourceInfo, sha256_of

# A peak below this is silence for fitting purposes: -100 dBFS, under the noise floor of 16-bit audio.
SILENCE_PEAK = 1e-5


class AudioInputError(ValueError):
    """A clip that cannot be used; the message names the file and what is wrong with it."""


class AudioOutputError(OSError):
    """A WAV that cannot be written; the message names the file."""


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


def read_clip(path: str | os.PathLike[str], sample_rate: int = 22050, n_samples: int = 2**17) -> Clip:
    """Read, mix down, resample, pad or cut and peak-normalise one clip; explain every change made."""
    path = Path(path)
    messages: list[str] = []
    with _open(path) as handle:
        rate, channels, frames = int(handle.samplerate), int(handle.channels), int(handle.frames)
        ratio = Fraction(sample_rate, rate)
        up, down = ratio.numerator, ratio.denominator
        # Only read what the fit can use (plus the resampler's filter reach): a one-hour file stays cheap.
        wanted = math.ceil(n_samples * down / up) + (_resample_margin(up, down) if ratio != 1 else 0)
        try:
            data = handle.read(frames=min(frames, wanted) if frames > 0 else -1, dtype="float64", always_2d=True)
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
