"""What an instrument becomes at a given output sample rate: poles, amplitudes, attacks, frame lengths.

numpy only, so players never import torch. The offline model built from an instrument and the streaming
renderer both start from here, which is what keeps them the same function of the same parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..instrument_file import Instrument
from .noise import attack_noise
from .spec import ModelSpec


def interpolate_linear(x: np.ndarray, size: int) -> np.ndarray:
    """Linear interpolation along the last axis with half-sample centres (torch's align_corners=False)."""
    n = x.shape[-1]
    pos = (np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5
    pos = np.clip(pos, 0.0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(np.float32)
    return (x[..., lo] * (1 - frac) + x[..., hi] * frac).astype(np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def deformation_targets(logits: np.ndarray) -> np.ndarray:
    """Cross-fade weights (E, ...) from deformation logits; variant 0 is the resting shape (bias 1)."""
    biased = np.array(logits, dtype=np.float64, copy=True)
    biased[0] += 1.0
    return softmax(biased, axis=0).astype(np.float32)


def spec_at_rate(spec: ModelSpec, sample_rate: int) -> ModelSpec:
    """The same model measured in samples of another rate (frames keep their duration)."""
    if sample_rate == spec.sample_rate:
        return spec
    ratio = sample_rate / spec.sample_rate
    hop = max(1, round(spec.control_hop * ratio))
    frame = max(1, round(spec.deformation_frame * ratio))
    n_samples = spec.n_frames * hop
    if n_samples % frame:
        raise ValueError(f"at {sample_rate} Hz the deformation frame {frame} does not divide the clip")
    return spec.model_copy(
        update=dict(
            sample_rate=sample_rate,
            n_samples=n_samples,
            control_hop=hop,
            deformation_frame=frame,
            attack_size=max(1, round(spec.attack_size * ratio)),
        )
    )


@dataclass
class Playback:
    """An instrument realised at one sample rate; every array is ready for a per-sample recursion."""

    sample_rate: int
    spec: ModelSpec  # sizes in samples of this rate
    poles: np.ndarray  # (R, E, M) complex64
    coef: np.ndarray  # (R, E, M) complex64
    attacks: np.ndarray  # (K, attack_size) float32 envelopes, before noise
    router: np.ndarray  # (K, R) float32
    mix: np.ndarray  # (R, 2) float32 weights (dry, wet), softmaxed
    gains: np.ndarray  # (R,) float32, |gain|
    noise: np.ndarray | None = None  # (K, attack_size) float32: the instrument's own attack noise, if it has one


def modes_at_rate(instrument: Instrument, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 poles, complex64 amplitudes) of every oscillator at ``sample_rate``.

    Amplitudes are normed at the native rate; a noise-driven resonance keeps its loudness at another rate
    when scaled by sqrt(native / rate). Oscillators at or above the new Nyquist frequency are silenced.
    """
    freq = instrument.freq_hz.astype(np.float64)
    decay = instrument.decay_per_s.astype(np.float64)
    poles = np.exp((-decay + 2j * np.pi * freq) / float(sample_rate)).astype(np.complex64)
    coef = instrument.amplitude.astype(np.float64) * np.exp(1j * instrument.phase.astype(np.float64))
    coef *= math.sqrt(instrument.spec.sample_rate / sample_rate)
    coef = np.where(freq < sample_rate / 2, coef, 0.0)
    return poles, coef.astype(np.complex64)


def playback(instrument: Instrument, sample_rate: int | None = None) -> Playback:
    rate = int(sample_rate or instrument.spec.sample_rate)
    spec = spec_at_rate(instrument.spec, rate)
    poles, coef = modes_at_rate(instrument, rate)
    return Playback(
        sample_rate=rate,
        spec=spec,
        poles=poles,
        coef=coef,
        attacks=interpolate_linear(instrument.attack_envelopes, spec.attack_size),
        router=instrument.router.astype(np.float32),
        mix=softmax(instrument.mix.astype(np.float64), axis=-1).astype(np.float32),
        gains=np.abs(instrument.gains).astype(np.float32),
        noise=owned_noise(instrument, spec.attack_size),
    )


NOISE_MODES = ("instrument", "fresh")  # replay the noise an instrument owns, or draw afresh for every event


def check_noise_mode(noise_mode: str) -> str:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    return noise_mode


def attacks_to_play(p: Playback, noise_mode: str, fixed_noise: bool) -> tuple[np.ndarray, bool]:
    """(the attacks a renderer keeps for ``p``, whether they already carry the instrument's own noise).

    An instrument that owns its noise plays it, folded into its attacks once here, unless fresh noise is
    asked for (``noise_mode="fresh"``) or one fixed noise array is given for every instrument."""
    owned = check_noise_mode(noise_mode) == "instrument" and not fixed_noise and p.noise is not None
    return (p.attacks * p.noise if owned else p.attacks), owned


def owned_noise(instrument: Instrument, attack_size: int | None = None) -> np.ndarray | None:
    """The (K, attack_size) noise the instrument was fitted with, or None when it plays fresh noise."""
    owned = instrument.manifest.attack_noise
    if owned is None:
        return None
    size = instrument.spec.attack_size if attack_size is None else int(attack_size)
    return attack_noise(owned.seed, instrument.spec.control_plane_dim, size)
