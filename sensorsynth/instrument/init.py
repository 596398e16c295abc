"""A starting point from an analysis of the clip, so gradient descent never has to find a frequency.

Gradient descent cannot move an oscillator onto a spectral peak that its own peak does not overlap, so the
frequencies come from the clip: a long-window spectrogram is factored by NMF into one spectral template
and one activation per resonance; each template's peaks (with quadratic interpolation) become that
resonance's oscillators, each decay comes from how fast its bin fades, and each activation's rises become
the control signal that fires it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.signal import find_peaks, stft

from .spec import ModelSpec


@dataclass
class Analysis:
    """Initial values, in the model's own units."""

    omega: np.ndarray  # (R, E, M) rad/sample
    alpha: np.ndarray  # (R, E, M) nepers/sample
    amplitude: np.ndarray  # (R, E, M) signed
    control: np.ndarray  # (K, frames) non-negative
    router: np.ndarray  # (K, R)


def _spectrogram(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    _, _, z = stft(x, nperseg=n_fft, noverlap=n_fft - hop, window="hann", boundary=None, padded=True)
    return np.abs(z).astype(np.float64)


def _no_check() -> None:
    pass


NMF_ITERATIONS = 150
NMF_TOLERANCE = 1e-4
NMF_CHUNK = 10  # iterations between two cancellation checks (and scikit-learn's own convergence checks)


def _templates(spec: np.ndarray, k: int, seed: int, check: Callable[[], None] = _no_check) -> np.ndarray:
    """k spectral templates (F, k) of a magnitude spectrogram by KL-NMF.

    This is scikit-learn's ``NMF(init=..., beta_loss="kullback-leibler", solver="mu", max_iter=150)``
    run ten iterations at a time, with its own convergence test between chunks, so a fit can be cancelled
    in the middle of it (the whole NMF takes seconds on a busy machine). The chunks give the same result as
    one call (tests/instrument/test_fit.py checks); scikit-learn's private helpers are used for that, with
    the one-call path as a fallback should they move.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # nndsvda needs at least k frames and bins; short clips or small specs fall back to random
        init = "nndsvda" if k <= min(spec.shape) else "random"
        x = spec + 1e-9
        try:
            from sklearn.decomposition._nmf import _beta_divergence, _fit_multiplicative_update, _initialize_nmf
        except ImportError:  # pragma: no cover - a scikit-learn that reorganised its internals
            from sklearn.decomposition import NMF

            check()
            nmf = NMF(n_components=k, init=init, beta_loss="kullback-leibler", solver="mu",
                      max_iter=NMF_ITERATIONS, random_state=seed)
            return nmf.fit_transform(x)
        w, h = _initialize_nmf(x, k, init=init, random_state=seed)
        error_at_init = previous = _beta_divergence(x, w, h, 1, square_root=True)
        for _ in range(NMF_ITERATIONS // NMF_CHUNK):
            check()
            w, h = _fit_multiplicative_update(x, w, h, "kullback-leibler", NMF_CHUNK, 0.0)[:2]
            error = _beta_divergence(x, w, h, 1, square_root=True)
            if (previous - error) / error_at_init < NMF_TOLERANCE:
                break
            previous = error
        return w


def _peaks(template: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` peak positions (fractional bins, parabolic on dB) and heights."""
    db = 20 * np.log10(template + 1e-12)
    idx, _ = find_peaks(db, prominence=3.0)
    idx = idx[(idx > 1) & (idx < len(template) - 2)]
    if idx.size == 0:
        return np.zeros(0), np.zeros(0)
    idx = idx[np.argsort(template[idx])[::-1][:count]]
    a, b, c = db[idx - 1], db[idx], db[idx + 1]
    denom = a - 2 * b + c
    offset = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    offset = np.clip(offset, -0.5, 0.5)
    height = 10 ** ((b - 0.25 * (a - c) * offset) / 20)
    return idx + offset, height


def _decay_rates(spec: np.ndarray, bins: np.ndarray, hop_s: float) -> np.ndarray:
    """Per-bin decay (1/s): median fall rate of the bin's log magnitude where it is falling and audible."""
    rates = np.empty(len(bins))
    for i, b in enumerate(np.round(bins).astype(int)):
        row = np.log(spec[b] + 1e-9)
        audible = row > row.max() - math.log(1e3)
        slope = np.diff(row)
        falling = (slope < 0) & audible[1:] & audible[:-1]
        rates[i] = -np.median(slope[falling]) / hop_s if falling.sum() >= 3 else 5.0
    return np.clip(rates, 0.3, 300.0)


def _control_from_templates(
    audio: np.ndarray, w: np.ndarray, n_fft: int, spec: ModelSpec, check: Callable[[], None] = _no_check
) -> np.ndarray:
    """Each template's activation at control-frame resolution (templates held fixed, KL updates), then
    its rises: a control event wherever a resonance gains energy."""
    hop = spec.control_hop
    fine_fft = max(4 * hop, 256)
    pad = fine_fft // 2  # centre frame f on sample f·hop
    padded = np.pad(audio, (pad, pad))
    v = _spectrogram(padded, fine_fft, hop)[:, : spec.n_frames] + 1e-9  # (F', frames)
    # each fine bin takes the long-window bins around the same frequency (at least one)
    scale = n_fft / fine_fft
    half = max(1, round(scale)) // 2
    centres = np.minimum(np.round(np.arange(v.shape[0]) * scale).astype(int), w.shape[0] - 1)
    wf = np.stack([w[max(0, c - half): c + half + 1].sum(axis=0) for c in centres])
    wf = wf / (wf.sum(axis=0, keepdims=True) + 1e-12) + 1e-12  # (F', R)
    h = np.full((w.shape[1], v.shape[1]), v.mean())
    col = wf.sum(axis=0)[:, None]
    for i in range(40):
        if i % 10 == 0:
            check()
        h *= (wf.T @ (v / (wf @ h))) / col
    k_count = spec.control_plane_dim
    control = np.zeros((k_count, spec.n_frames))
    peak = h.max() + 1e-12
    for r in range(min(w.shape[1], k_count)):
        act = h[r] / peak
        rise = np.maximum(np.diff(act, prepend=0.0), 0.0)
        rise[rise < 0.05 * rise.max()] = 0.0
        control[r] = rise
    return control


def analyse(audio: np.ndarray, spec: ModelSpec, seed: int = 0, check: Callable[[], None] = _no_check) -> Analysis:
    """Modes, control signal and router estimated from ``audio`` (n_samples,).

    ``check`` is called between units of work of well under a second (it raises to stop the analysis:
    a fit's cancel token passes its ``check``)."""
    rng = np.random.default_rng(seed)
    r_count, e_count, m_count = spec.n_resonances, spec.expressivity, spec.n_oscillators
    k_count = spec.control_plane_dim
    rate = spec.sample_rate
    n_fft = 4096 if spec.n_samples >= 4 * 4096 else max(64, 1 << int(math.log2(spec.n_samples // 4)))
    hop = spec.control_hop * max(1, n_fft // (8 * spec.control_hop))
    check()
    magnitude = _spectrogram(audio, n_fft, hop)
    w = _templates(magnitude, r_count, seed, check)

    omega = np.empty((r_count, e_count, m_count))
    alpha = np.empty_like(omega)
    amp = np.empty_like(omega)
    global_template = magnitude.mean(axis=1)
    all_bins, _ = _peaks(global_template, 4 * m_count)
    hop_s = hop / rate
    for r in range(r_count):
        check()
        bins, heights = _peaks(w[:, r], m_count)
        if bins.size < m_count:  # fill free slots with weak copies of the clip's other peaks
            extra = m_count - bins.size
            if all_bins.size:
                pick = rng.choice(all_bins.size, size=extra, replace=all_bins.size < extra)
                fill_bins = all_bins[pick] + rng.uniform(-0.3, 0.3, extra)
            else:
                fill_bins = rng.uniform(2, n_fft // 2 - 2, extra)
            floor = heights.min() * 0.05 if heights.size else 1e-3
            bins = np.concatenate([bins, fill_bins])
            heights = np.concatenate([heights, np.full(extra, floor)])
        rates = _decay_rates(magnitude, bins, hop_s)
        om = 2 * np.pi * bins / n_fft
        al = rates / rate
        # a noise-driven mode's spectral peak grows like |c| / sqrt(alpha): invert that
        a = heights * np.sqrt(al)
        a = a / (np.abs(a).max() + 1e-12)
        for e in range(e_count):
            omega[r, e] = om
            alpha[r, e] = al
            amp[r, e] = a

    control = _control_from_templates(audio, w, n_fft, spec, check)
    router = np.zeros((k_count, r_count))
    for k in range(k_count):
        router[k, k % r_count] = 1.0
    return Analysis(omega=omega, alpha=alpha, amplitude=amp, control=control, router=router)
