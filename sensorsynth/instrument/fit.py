"""Fit a resonance model to one clip: analysed start, then a short staged Adam run.

Stage A trains everything but the oscillators, with their impulse responses and spectra computed once;
stage B unfreezes the oscillators with small per-group learning rates (a frequency moves a fraction of a
cent per step). ``init="random"`` with the seed's learning rate and no freeze is the seed's own recipe.

A fit is a pure function of (audio, spec, settings): every random draw (initial values, the router's
jitter, each step's attack noise) comes from one ``torch.Generator`` seeded with ``settings.seed``, and the
thread counts it sets for torch and for BLAS are put back when it returns. It never touches torch's global
RNG, so two fits in one process (or a fit next to a renderer) do not disturb each other.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .init import Analysis, analyse
from .loss import sparsity, spectral_loss, stft_magnitude
from .model import ResonanceModel, draw_noise, fft_size
from .noise import attack_noise
from .settings import CancelToken, FitSettings, Progress
from .spec import ModelSpec

__all__ = ["FitSettings", "Progress", "FitResult", "fit", "initialise"]


@dataclass
class FitResult:
    model: ResonanceModel
    final_loss: float
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, elapsed_s)
    analysis_s: float = 0.0
    noise_seed: int | None = None  # the seed of the attack noise every step used; None: fresh every step


def _set(param: torch.Tensor, value: np.ndarray | torch.Tensor) -> None:
    param.copy_(torch.as_tensor(np.asarray(value), dtype=param.dtype))


@torch.no_grad()
def initialise(model: ResonanceModel, analysis: Analysis, target: torch.Tensor, generator: torch.Generator) -> None:
    """Load the analysis into the model and scale the control signal so the first render is as loud.

    ``generator`` (seeded from the fit's seed) draws the router's jitter and the probe's noise."""
    spec = model.spec
    bank = model.bank
    if bank.parameterization != "physical":
        raise ValueError("analysis initialisation needs the physical parameterization")
    _set(bank.log_omega, np.log(np.clip(analysis.omega, 1e-6, math.pi)))
    _set(bank.log_alpha, np.log(analysis.alpha))
    _set(bank.amplitude, analysis.amplitude)
    jitter = torch.randn(analysis.router.shape, generator=generator, dtype=torch.float64).numpy()
    _set(model.router, analysis.router + 0.01 * jitter)
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


class _Eta:
    """Time left, from the measured cost of each kind of step (frozen modes, modes training).

    A step that trains the oscillators costs about 2.4 times a frozen one (README: 0.35 s against 0.15 s);
    that ratio stands in for a kind not measured yet, so the estimate is sensible from the second step on.
    """

    RATIO = 2.4

    def __init__(self, settings: FitSettings) -> None:
        self.s = settings
        self.frozen = min(settings.frozen_steps, settings.steps)
        self.cost = {False: [0.0, 0], True: [0.0, 0]}  # modes_train -> [seconds, count]

    def add(self, modes_train: bool, seconds: float) -> None:
        entry = self.cost[modes_train]
        entry[0] += seconds
        entry[1] += 1

    def mean(self, modes_train: bool) -> float | None:
        total, count = self.cost[modes_train]
        if count:
            return total / count
        other_total, other_count = self.cost[not modes_train]
        if not other_count:
            return None
        other = other_total / other_count
        return other * self.RATIO if modes_train else other / self.RATIO

    def left(self, done: int, elapsed: float) -> float | None:
        s = self.s
        train = _count_modes_train(done, s.steps, self.frozen, s.mode_every)
        rest = s.steps - done - train
        costs = [self.mean(True) if train else 0.0, self.mean(False) if rest else 0.0]
        if any(c is None for c in costs):
            return None
        eta = train * costs[0] + rest * costs[1]
        if s.time_budget_s:
            eta = min(eta, max(0.0, s.time_budget_s - elapsed))
        return round(eta, 2)


def _count_modes_train(start: int, stop: int, frozen: int, every: int) -> int:
    """How many steps in [start, stop) train the oscillators: those from ``frozen`` on, every ``every``th."""
    low = max(start, frozen)
    if low >= stop:
        return 0
    first = frozen + -(-(low - frozen) // every) * every
    return 0 if first >= stop else (stop - 1 - first) // every + 1


FROZEN_SHARE = 0.25  # with a time budget cut short, the frozen stage takes at most this share of the budget


def _schedule_position(s: FitSettings, step: int, frozen: int, elapsed: float) -> tuple[float, bool]:
    """How far along the learning-rate schedule the fit is (0..1) and whether the oscillators are still frozen.

    Without a time budget, by steps. With one, ``budget_schedule="cut"`` keeps the step schedule and lets the
    budget stop it (a one-minute fit is far from converged: it gains more from a learning rate still high than
    from annealing it), with the frozen stage ending by ``FROZEN_SHARE`` of the budget at the latest;
    ``"compress"`` runs the whole recipe (frozen stage, cosine decay) in the time given."""
    by_steps = step / s.steps
    budget = s.time_budget_s
    if not budget:
        return by_steps, step < frozen
    if s.budget_schedule == "compress":
        done = max(by_steps, elapsed / budget)
        return done, done < frozen / s.steps
    return by_steps, step < frozen and elapsed < FROZEN_SHARE * budget


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch and BLAS (numpy, scipy, scikit-learn) use ``count`` threads inside, and what they had after."""
    if not count:
        yield
        return
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(previous)


def fit(
    audio: np.ndarray,
    spec: ModelSpec,
    settings: FitSettings | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    *,
    cancel: CancelToken | None = None,
    on_checkpoint: Callable[[int, float, ResonanceModel], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> FitResult:
    """Fit ``audio`` (n_samples,) float32, peak-normalised, at ``spec.sample_rate``.

    ``on_progress`` gets a plain :class:`Progress` at the analysis and after every step; ``on_checkpoint``
    (for in-process tools such as the benchmark) gets ``(step, elapsed_s, live model)`` after every step.
    ``cancel`` is checked between steps and inside the analysis: :class:`~.settings.Cancelled` is raised
    within a second of it being cancelled. ``clock`` measures the fit's time (elapsed, ETA, the time budget):
    a benchmark that evaluates at checkpoints passes one that leaves its own time out.
    """
    s = settings or FitSettings()
    audio = np.asarray(audio, np.float32)
    if audio.shape != (spec.n_samples,):
        raise ValueError(f"audio has shape {audio.shape}, the spec needs ({spec.n_samples},)")
    if not np.all(np.isfinite(audio)) or not np.any(audio):
        raise ValueError("audio is silent or holds NaN/inf")
    token = cancel or CancelToken()
    token.check()
    with _threads(s.threads):
        return _fit(audio, spec, s, on_progress, token, on_checkpoint, clock)


def _fit(
    audio: np.ndarray,
    spec: ModelSpec,
    s: FitSettings,
    on_progress: Callable[[Progress], None] | None,
    token: CancelToken,
    on_checkpoint: Callable[[int, float, ResonanceModel], None] | None,
    clock: Callable[[], float],
) -> FitResult:
    device = torch.device(s.device)
    generator = torch.Generator().manual_seed(s.seed)
    model = ResonanceModel(spec, parameterization=s.parameterization, generator=generator).to(device)
    target = torch.from_numpy(audio).to(device)
    start = clock()
    if s.init == "analysis":
        if on_progress:
            on_progress(Progress(stage="analysis", steps=s.steps))
        initialise(model, analyse(audio, spec, seed=s.seed, check=token.check), target, generator)
    analysis_s = clock() - start

    groups = _groups(model, s)
    optimizer = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in groups]
    frozen = min(s.frozen_steps, s.steps)
    bank_params = list(model.bank.parameters())
    history: list[tuple[int, float, float]] = []
    loss_value = float("nan")
    resonance_fft = None
    eta = _Eta(s)
    noise_shape = (spec.control_plane_dim, spec.attack_size)
    fixed_noise = None
    if s.noise == "instrument":
        fixed_noise = torch.from_numpy(attack_noise(s.seed, *noise_shape)).to(device)
    last = clock()
    budget = s.time_budget_s
    first_full: int | None = None  # the first step with the oscillators unfrozen
    # with the instrument's own noise the loss is a function of the parameters alone, so the fit returns the
    # parameters of the lowest loss it saw (a budget may stop it while the learning rate is still high and the
    # loss still jumps); with fresh noise each loss is one draw's, and the last parameters are returned
    params = list(model.parameters())
    keep_best = fixed_noise is not None
    best: list[torch.Tensor] | None = None
    best_loss = math.inf
    for step in range(s.steps):
        token.check()
        elapsed = clock() - start
        done, in_frozen = _schedule_position(s, step, frozen, elapsed)
        if not in_frozen and first_full is None:
            first_full = step
        # oscillators train only after the frozen stage, and then every `mode_every` steps; in between,
        # their impulse responses' spectrum is computed once and reused
        modes_train = not in_frozen and (step - first_full) % s.mode_every == 0
        if budget and step > 0 and elapsed + (eta.mean(modes_train) or 0.0) > budget:
            break  # the next step would end past the budget
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
            factor = warm * 0.5 * (1 + math.cos(math.pi * done))
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * factor
        optimizer.zero_grad(set_to_none=True)
        cs = model.control_signal
        # the instrument's own noise, or fresh noise every step as in the seed (from the fit's own generator)
        noise = fixed_noise if fixed_noise is not None else draw_noise(noise_shape, generator=generator).to(device)
        recon = model(control_signal=cs, noise=noise, resonance_fft=resonance_fft)
        loss = spectral_loss(s.loss, target, recon) + s.sparsity * sparsity(cs)
        loss_value = float(loss.detach())
        if keep_best and loss_value < best_loss:  # the parameters that gave it, before this step moves them
            best_loss = loss_value
            best = [p.detach().clone() for p in params]
        loss.backward()
        optimizer.step()
        now = clock()
        elapsed = now - start
        eta.add(modes_train, now - last)
        last = now
        history.append((step + 1, loss_value, elapsed))
        if on_progress:
            on_progress(Progress(
                stage="frozen" if in_frozen else "full",
                step=step + 1,
                steps=s.steps,
                loss=loss_value if math.isfinite(loss_value) else None,
                elapsed_s=round(elapsed, 3),
                eta_s=eta.left(step + 1, elapsed),
            ))
        if on_checkpoint:
            on_checkpoint(step + 1, elapsed, model)
    for p in bank_params:
        p.requires_grad_(True)
    if best is not None:
        with torch.no_grad():
            for p, b in zip(params, best):
                p.copy_(b)
        loss_value = best_loss
    model.eval()
    return FitResult(model=model.cpu(), final_loss=loss_value, history=history, analysis_s=analysis_s,
                     noise_seed=s.seed if fixed_noise is not None else None)
