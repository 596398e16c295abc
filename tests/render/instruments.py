"""Real test instruments for the renderer tests: seeded seed-parameterised models, exported."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from sensorsynth.instrument.export import control_signal_tensor, model_from_instrument, to_instrument
from sensorsynth.instrument.model import ResonanceModel, draw_noise
from sensorsynth.instrument.playback import spec_at_rate
from sensorsynth.instrument.spec import ModelSpec
from sensorsynth.instrument_file import Instrument

MODELS = Path(__file__).resolve().parents[2] / "models"
SMALL = dict(n_samples=2**14)


@lru_cache(maxsize=None)
def make_instrument(seed: int = 0, active: int = 40, **spec_kwargs) -> Instrument:
    """A seeded model with a sparse non-negative control signal (``active`` cells) and deformation logits ~1."""
    spec = ModelSpec(**spec_kwargs)
    g = torch.Generator().manual_seed(seed)
    model = ResonanceModel(spec, parameterization="seed", generator=g)
    with torch.no_grad():
        desired = torch.full_like(model.control_plane, -0.01)  # inactive cells: relu'd to exactly 0
        cells = torch.randperm(desired.numel(), generator=g)[:active]
        desired.view(-1)[cells] = torch.rand(active, generator=g) * 0.8 + 0.2
        # raw + mean(raw) == desired when raw = desired - mean(desired) / 2
        model.control_plane.copy_(desired - desired.mean() / 2)
        model.deformations.copy_(torch.randn(model.deformations.shape, generator=g))
    inst = to_instrument(model, f"test-{seed}")
    assert inst.control_index.size == active
    return inst


def bundled_instruments() -> list[Path]:
    return sorted(MODELS.glob("*.instrument"))


def fixed_noise(instrument: Instrument, rate: int, seed: int = 1) -> np.ndarray:
    spec = spec_at_rate(instrument.spec, rate)
    return draw_noise((spec.control_plane_dim, spec.attack_size), torch.Generator().manual_seed(seed)).numpy()


def offline(instrument: Instrument, rate: int, noise: np.ndarray) -> np.ndarray:
    """The offline torch forward pass at ``rate``: frames keep their index, the hop is the rate's."""
    model = model_from_instrument(instrument, rate)
    with torch.no_grad():
        out = model(
            control_signal=control_signal_tensor(instrument),
            deformations=torch.from_numpy(instrument.deformations),
            noise=torch.from_numpy(noise),
        )
    return out.numpy()


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def fitted_events(instrument: Instrument, rate: int):
    """(controls [(time, vector)], deforms [(time, logits, immediate)], n_samples) of the fitted performance."""
    spec = spec_at_rate(instrument.spec, rate)
    cs = instrument.control_signal()
    controls = [(int(f) * spec.control_hop, cs[:, f]) for f in np.flatnonzero(cs.any(axis=0))]
    logits = instrument.deformations
    deforms = [(j * spec.deformation_frame, logits[:, j], j == 0) for j in range(logits.shape[1])]
    return controls, deforms, spec.n_samples


def stream(renderer, controls, deforms, n_samples: int, voice: int = 0, to_numpy=np.asarray) -> np.ndarray:
    """Play events through ``renderer`` block by block, scheduling each one just before its block."""
    b = renderer.block_size
    blocks = []
    ci = di = 0
    for start in range(0, n_samples + b - 1, b):
        end = start + b
        while ci < len(controls) and controls[ci][0] < end:
            renderer.control(controls[ci][0], voice, controls[ci][1])
            ci += 1
        while di < len(deforms) and deforms[di][0] < end:
            renderer.deform(deforms[di][0], voice, deforms[di][1], immediate=deforms[di][2])
            di += 1
        blocks.append(np.array(to_numpy(renderer.process()), dtype=np.float32, copy=True))
    return np.concatenate(blocks)[:n_samples]


@lru_cache(maxsize=None)
def reference(seed: int, rate: int, n_samples: int = SMALL["n_samples"]) -> tuple[Instrument, np.ndarray, np.ndarray]:
    """(instrument, fixed noise, offline output) for a test instrument at ``rate``."""
    inst = make_instrument(seed, n_samples=n_samples)
    noise = fixed_noise(inst, rate)
    return inst, noise, offline(inst, rate, noise)
