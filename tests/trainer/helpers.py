"""Shared by the trainer tests: tiny clips, tiny specs, a tiny instrument."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import soundfile as sf

GUITAR = Path(__file__).resolve().parents[2].parent / "shared" / "audio" / "guitar.wav"
# a model small enough that a step takes milliseconds: the tests are about the trainer, not the fit
TINY_SPEC = {"n_samples": 8192, "control_plane_dim": 4, "n_resonances": 4, "n_oscillators": 8, "attack_size": 512,
             "attack_frames": 32}


def clip_bytes(seconds: float = 0.4, rate: int = 22050) -> bytes:
    """A short cut of guitar.wav as WAV bytes."""
    data, source_rate = sf.read(GUITAR, dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, data[int(0.2 * source_rate): int((0.2 + seconds) * source_rate)], source_rate, format="WAV")
    return buffer.getvalue()


def silent_bytes(seconds: float = 0.3, rate: int = 22050) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@functools.lru_cache(maxsize=None)
def tiny_instrument_bytes(name: str) -> bytes:
    """The bytes of a real .instrument file (one step of a tiny random-start fit)."""
    from sensorsynth.instrument.pipeline import FitSettings, fit_clip, make_spec
    from sensorsynth.instrument_file import dumps

    settings = FitSettings(steps=1, init="random", threads=1)
    return dumps(fit_clip(clip_bytes(), settings, make_spec(TINY_SPEC), name=name, clip_name="t.wav"))
