"""Whole performances through the streaming Renderer: the fitted one and the seed's random one.

Both feed events to the renderer just in time, block by block, as a live player would; they back the CLI's
``sensorsynth render --reconstruct`` and ``--random``.
"""

from __future__ import annotations

import numpy as np

from ..instrument.playback import spec_at_rate
from ..instrument_file import Instrument
from .renderer import Renderer

RANDOM_EVENTS = 16  # the seed keeps 16 active elements in its random control plane


def _play(
    renderer: Renderer,
    n_samples: int,
    controls: list[tuple[int, np.ndarray]],
    deforms: list[tuple[int, np.ndarray, bool]],
) -> np.ndarray:
    b = renderer.block_size
    out = np.empty(-(-n_samples // b) * b, np.float32)
    ci = di = 0
    for start in range(0, out.size, b):
        end = start + b
        while ci < len(controls) and controls[ci][0] < end:
            renderer.control(controls[ci][0], 0, controls[ci][1])
            ci += 1
        while di < len(deforms) and deforms[di][0] < end:
            t, logits, now = deforms[di]
            renderer.deform(t, 0, logits, immediate=now)
            di += 1
        out[start:end] = renderer.process()
    return out[:n_samples]


def render_reconstruction(
    instrument: Instrument,
    sample_rate: int | None = None,
    block_size: int = 512,
    seed: int | None = None,
    noise: np.ndarray | None = None,
    limit: float | None = 1.0,
    fresh_noise: bool = False,
) -> np.ndarray:
    """The fitted performance (control signal + deformations) at any rate: (n_samples at that rate,) float32.

    Control frame f fires at sample f·hop of the output rate; deformation frame j ramps from sample j·F
    (frame 0 is set at once, as the offline model does). By default every event of a control dimension
    shares one noise burst, as in the fit: the instrument's own noise when it owns one (the fit used it for
    every pass, so this replays the clip), else one array drawn from ``seed`` (the seed draws one (K, attack)
    noise array per forward pass), so consecutive events add as they did in training. ``noise`` fixes that
    array; ``fresh_noise=True`` draws noise per event instead, as live play with fresh noise does.
    """
    rate = int(sample_rate or instrument.spec.sample_rate)
    spec = spec_at_rate(instrument.spec, rate)
    owns = instrument.manifest.attack_noise is not None
    if noise is None and not fresh_noise and not owns:
        noise = np.random.default_rng(seed).uniform(-1.0, 1.0, (spec.control_plane_dim, spec.attack_size))
        noise = noise.astype(np.float32)
    renderer = Renderer(instrument, rate, block_size=block_size, max_voices=1, seed=seed, noise=noise, limit=limit,
                        noise_mode="fresh" if fresh_noise else "instrument")
    cs = instrument.control_signal()
    controls = [(f * spec.control_hop, cs[:, f]) for f in np.flatnonzero(cs.any(axis=0))]
    logits = instrument.deformations
    deforms = [(j * spec.deformation_frame, logits[:, j], j == 0) for j in range(logits.shape[1])]
    return _play(renderer, spec.n_samples, controls, deforms)


def random_events(
    instrument: Instrument, seconds: float, sample_rate: int | None = None, seed: int | None = None
) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """(n_samples, [(time, vector)]) of the seed's random performance: 16 random (frame, dim) cells, magnitude
    uniform in [0.9, 1] × the fitted control signal's maximum (1 when it is empty)."""
    rate = int(sample_rate or instrument.spec.sample_rate)
    spec = spec_at_rate(instrument.spec, rate)
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    n_samples = int(round(seconds * rate))
    hop = spec.control_hop
    n_frames = max(1, -(-n_samples // hop))
    k = spec.control_plane_dim
    peak = float(instrument.control_value.max()) if instrument.control_value.size else 0.0
    peak = peak if peak > 0 else 1.0
    rng = np.random.default_rng(seed)
    cells = rng.choice(n_frames * k, size=min(RANDOM_EVENTS, n_frames * k), replace=False)
    dense = np.zeros((n_frames, k), np.float32)
    dense[cells // k, cells % k] = rng.uniform(0.9, 1.0, size=cells.size) * peak
    events = [(int(f) * hop, dense[f]) for f in np.flatnonzero(dense.any(axis=1))]
    return n_samples, events


def render_random(
    instrument: Instrument,
    seconds: float,
    sample_rate: int | None = None,
    block_size: int = 512,
    seed: int | None = None,
    limit: float | None = 1.0,
) -> np.ndarray:
    """The seed's "random performance" (deformations at rest), ``seconds`` long, float32."""
    rate = int(sample_rate or instrument.spec.sample_rate)
    n_samples, events = random_events(instrument, seconds, rate, seed)
    renderer = Renderer(instrument, rate, block_size=block_size, max_voices=1, seed=seed, limit=limit)
    return _play(renderer, n_samples, events, [])
