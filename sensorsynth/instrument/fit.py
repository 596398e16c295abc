"""Fit a resonance model to one clip: analysed start, then a short staged Adam run.

Stage A trains everything but the oscillators, with their impulse responses and spectra computed once;
stage B unfreezes the oscillators with small per-group learning rates (a frequency moves a fraction of a
cent per step). ``init="random"`` with the seed's learning rate and no freeze is the seed's own recipe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .init import Analysis, analyse
from .loss import LossName, sparsity, spectral_loss, stft_magnitude
from .model import ResonanceModel, draw_noise, fft_size
from .spec import ModelSpec


class FitSettings(BaseModel):
    """How to fit. Defaults are the fast recipe with the seed's loss. The seed's own recipe is
    ``init="random", parameterization="seed", frozen_steps=0, mode_every=1, lr=1e-3, schedule="constant",
    steps=10000``."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(900, ge=1, description="total optimiser steps, frozen stage included")
    frozen_steps: int = Field(150, ge=0, description="first steps with the oscillators frozen")
    loss: LossName = "seed"
    sparsity: float = Field(0.5, ge=0)
    lr: float = Field(1e-2, gt=0, description="control plane, attacks, router, mix, gains, deformations")
    lr_frequency: float = Field(1e-4, ge=0, description="log-frequency (1e-4 is 0.17 cent)")
    lr_decay: float = Field(1e-2, ge=0, description="log-decay")
    lr_amplitude: float = Field(5e-3, ge=0)
    mode_every: int = Field(2, ge=1, description="after the frozen stage, update the oscillators every Nth step")
    schedule: Literal["cosine", "constant"] = "cosine"
    init: Literal["analysis", "random"] = "analysis"
    parameterization: Literal["physical", "seed"] = "physical"
    time_budget_s: float | None = Field(None, gt=0, description="stop early when this much time has passed")
    seed: int = 0
    device: str = "cpu"
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "FitSettings":
        if self.init == "analysis" and self.parameterization == "seed":
            raise ValueError("init='analysis' needs parameterization='physical' (the seed's has no frequency)")
        return self


@dataclass
class Progress:
    step: int
    total: int
    loss: float
    elapsed_s: float
    stage: str = "fit"
    model: ResonanceModel | None = field(default=None, repr=False)  # live model: for checkpoints, evaluation


@dataclass
class FitResult:
    model: ResonanceModel
    final_loss: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, elapsed_s)
    analysis_s: float = 0.0


def _set(param: torch.Tensor, value: np.ndarray | torch.Tensor) -> None:
    param.copy_(torch.as_tensor(np.asarray(value), dtype=param.dtype))


@torch.no_grad()
def initialise(model: ResonanceModel, analysis: Analysis, target: torch.Tensor, generator: torch.Generator) -> None:
    """Load the analysis into the model and scale the control signal so the first render is as loud."""
    spec = model.spec
    bank = model.bank
    if bank.parameterization != "physical":
        raise ValueError("analysis initialisation needs the physical parameterization")
    _set(bank.log_omega, np.log(np.clip(analysis.omega, 1e-6, math.pi)))
    _set(bank.log_alpha, np.log(analysis.alpha))
    _set(bank.amplitude, analysis.amplitude)
    _set(model.router, analysis.router + 0.01 * np.random.default_rng(0).standard_normal(analysis.router.shape))
    frames = torch.arange(spec.attack_frames, dtype=torch.float32)
    tau = spec.attack_frames * 0.1  # ~10 ms at the seed's sizes
    model.attack_envelopes.copy_(torch.exp(-frames / tau).expand_as(model.attack_envelopes))
    model.mix.copy_(torch.tensor([-1.0, 1.0]).expand_as(model.mix))
    model.gains.fill_(1.0)
    model.deformations.zero_()
    noise = draw_noise((spec.control_plane_dim, spec.attack_size), generator=generator).to(target.device)
    control = torch.as_tensor(analysis.control, dtype=torch.float32, device=target.device)
    probe = model(control_signal=control * 1e-3, noise=noise)  # small: tanh stays linear
    scale = stft_magnitude(target, 2048, 256).sum() / (stft_magnitude(probe, 2048, 256).sum() + 1e-12) * 1e-3
    wanted = control * scale
    # relu(cp + mean(cp)) == wanted where wanted > 0; the rest sits just below zero
    floor = -0.01 * float(wanted.max())
    wanted = torch.where(wanted > 0, wanted, torch.full_like(wanted, floor))
    model.control_plane.copy_(wanted - wanted.mean() / 2)


def _groups(model: ResonanceModel, s: FitSettings) -> list[dict]:
    bank = model.bank
    rest = [p for n, p in model.named_parameters() if not n.startswith("bank.")]
    if bank.parameterization == "physical":
        modes = [
            {"params": [bank.log_omega], "lr": s.lr_frequency, "name": "frequency"},
            {"params": [bank.log_alpha], "lr": s.lr_decay, "name": "decay"},
            {"params": [bank.amplitude], "lr": s.lr_amplitude, "name": "amplitude"},
        ]
    else:
        modes = [{"params": list(bank.parameters()), "lr": s.lr, "name": "oscillators"}]
    return [{"params": rest, "lr": s.lr, "name": "performance"}] + modes


def fit(
    audio: np.ndarray,
    spec: ModelSpec,
    settings: FitSettings | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> FitResult:
    """Fit ``audio`` (n_samples,) float32, peak-normalised, at ``spec.sample_rate``."""
    s = settings or FitSettings()
    audio = np.asarray(audio, np.float32)
    if audio.shape != (spec.n_samples,):
        raise ValueError(f"audio has shape {audio.shape}, the spec needs ({spec.n_samples},)")
    if not np.all(np.isfinite(audio)) or not np.any(audio):
        raise ValueError("audio is silent or holds NaN/inf")
    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    torch.manual_seed(s.seed)
    generator = torch.Generator().manual_seed(s.seed)
    model = ResonanceModel(spec, parameterization=s.parameterization, generator=generator).to(device)
    target = torch.from_numpy(audio).to(device)
    start = time.perf_counter()
    if s.init == "analysis":
        if on_progress:
            on_progress(Progress(0, s.steps, float("nan"), 0.0, "analysis"))
        initialise(model, analyse(audio, spec, seed=s.seed), target, generator)
    analysis_s = time.perf_counter() - start

    groups = _groups(model, s)
    optimizer = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in groups]
    frozen = min(s.frozen_steps, s.steps)
    bank_params = list(model.bank.parameters())
    history: list[tuple[int, float, float]] = []
    loss_value = float("nan")
    resonance_fft = None
    for step in range(s.steps):
        # oscillators train only after the frozen stage, and then every `mode_every` steps; in between,
        # their impulse responses' spectrum is computed once and reused
        modes_train = step >= frozen and (step - frozen) % s.mode_every == 0
        if not modes_train and resonance_fft is None:
            with torch.no_grad():
                resonance_fft = torch.fft.rfft(model.bank(), n=fft_size(spec.n_samples))
            for p in bank_params:
                p.requires_grad_(False)
        if modes_train:
            resonance_fft = None
            for p in bank_params:
                p.requires_grad_(True)
        if s.schedule == "cosine":
            warm = min(1.0, (step + 1) / 20)
            factor = warm * 0.5 * (1 + math.cos(math.pi * step / s.steps))
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * factor
        optimizer.zero_grad(set_to_none=True)
        cs = model.control_signal
        recon = model(control_signal=cs, resonance_fft=resonance_fft)
        loss = spectral_loss(s.loss, target, recon) + s.sparsity * sparsity(cs)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        elapsed = time.perf_counter() - start
        history.append((step + 1, loss_value, elapsed))
        if on_progress:
            on_progress(Progress(step + 1, s.steps, loss_value, elapsed, "frozen" if step < frozen else "full", model))
        if s.time_budget_s and elapsed > s.time_budget_s:
            break
    for p in bank_params:
        p.requires_grad_(True)
    model.eval()
    return FitResult(model=model.cpu(), final_loss=loss_value, history=history, analysis_s=analysis_s)
