"""Between the torch model and the instrument file: export a fitted model, rebuild one for playback."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..instrument_file import AttackNoise, Instrument, Manifest, SourceInfo, sparse_control
from .model import ResonanceModel
from .modes import FixedBank, materialize, pole_mode_tensors
from .playback import modes_at_rate, spec_at_rate


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


@torch.no_grad()
def to_instrument(
    model: ResonanceModel,
    name: str,
    training: dict[str, Any] | None = None,
    final_loss: float | None = None,
    source: SourceInfo | None = None,
    noise_seed: int | None = None,
) -> Instrument:
    """Store oscillators as physical quantities (Hz, 1/s, amplitude, phase) with the unit norm folded in.
    ``noise_seed``: the seed of the attack noise the model was fitted with (None: fitted on fresh noise)."""
    spec = model.spec
    modes = model.bank.modes()
    ir = materialize(modes, spec.n_samples)
    norm = torch.linalg.vector_norm(ir, dim=-1, keepdim=True).to(torch.float64) + 1e-8
    coef = torch.complex(modes.c_re.double(), modes.c_im.double()) / norm
    alpha = modes.alpha.double()
    # fold every frequency into [0, pi]: Re(c p^n) == Re(conj(c) conj(p)^n)
    omega = torch.angle(torch.polar(torch.ones_like(alpha), modes.omega.double()))
    coef = torch.where(omega < 0, coef.conj(), coef)
    omega = omega.abs()
    rate = spec.sample_rate
    index, value = sparse_control(_f32(model.control_signal))
    return Instrument(
        manifest=Manifest(name=name, spec=spec, training=training or {}, final_loss=final_loss, source=source,
                          attack_noise=None if noise_seed is None else AttackNoise(seed=noise_seed)),
        freq_hz=_f32(omega * rate / (2 * math.pi)),
        decay_per_s=_f32(alpha * rate),
        amplitude=_f32(coef.abs()),
        phase=_f32(coef.angle()),
        attack_envelopes=_f32(model.attack_envelopes),
        router=_f32(model.router),
        mix=_f32(model.mix),
        gains=_f32(model.gains),
        deformations=_f32(model.deformations),
        control_index=index,
        control_value=value,
    )


def model_from_instrument(instrument: Instrument, sample_rate: int | None = None) -> ResonanceModel:
    """The offline forward pass of a stored instrument at any rate, using the renderer's exact poles."""
    rate = int(sample_rate or instrument.spec.sample_rate)
    spec = spec_at_rate(instrument.spec, rate)
    poles, coef = modes_at_rate(instrument, rate)
    model = ResonanceModel(spec, bank=FixedBank(pole_mode_tensors(poles, coef), spec.n_samples))
    with torch.no_grad():
        model.attack_envelopes.copy_(torch.from_numpy(instrument.attack_envelopes))
        model.router.copy_(torch.from_numpy(instrument.router))
        model.mix.copy_(torch.from_numpy(instrument.mix))
        model.gains.copy_(torch.from_numpy(instrument.gains))
        model.deformations.copy_(torch.from_numpy(instrument.deformations))
    model.requires_grad_(False)
    return model


def control_signal_tensor(instrument: Instrument) -> torch.Tensor:
    return torch.from_numpy(instrument.control_signal())
