"""The seed's resonance model as a torch module: control plane in, audio out, no I/O.

Data path (K = control_plane_dim, R = n_resonances, E = expressivity, N = n_samples):

    control plane (K, frames) --relu--> control signal
      each frame fires K noise bursts: attack envelope (K, attack_frames) interpolated to attack_size × noise
      --> excitation (K, N) --router (K, R)--> dry (R, N)
      dry ⊛ resonances (R, E, N) --> wet (R, E, N) --deformation cross-fade over E--> (R, N)
      softmax(mix) blends dry and wet --> tanh(|gain| · ·) --> sum over R --> audio (N,)

The seed routes the control plane to resonances first and applies the attacks per resonance, which only
works when K == R (its "KLUDGE"). Here the attacks belong to control dimensions, as the article describes
("convolved with attack envelopes ... then routed to resonances"), so K and R are free.

Deformations are linearly interpolated between frames causally: a new deformation frame ramps from the
previous frame's weights to its own over one deformation frame. That is the seed's linear interpolation
delayed by one frame, and it is what a live player can do without looking ahead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modes import OscillatorBank
from .spec import ModelSpec


def process_control_plane(raw: torch.Tensor) -> torch.Tensor:
    """The seed's ``relu(cp + mean(cp))``: the mean shift lets gradients reach every element."""
    return torch.relu(raw + raw.mean())


def interpolate_envelopes(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Linear interpolation along the last axis with half-sample centres (torch's align_corners=False).

    Positions are computed in float64 exactly as ``playback.interpolate_linear`` does, so the renderer's
    attacks match the model's bit for bit at every rate.
    """
    n = low_res.shape[-1]
    pos = (torch.arange(size, dtype=torch.float64) + 0.5) * (n / size) - 0.5
    pos = pos.clamp(0.0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos - lo).to(low_res.dtype).to(low_res.device)
    lo, hi = lo.to(low_res.device), hi.to(low_res.device)
    return low_res[..., lo] * (1 - frac) + low_res[..., hi] * frac


def excite(control_signal: torch.Tensor, attacks: torch.Tensor, hop: int) -> torch.Tensor:
    """Every control frame fires its attack, scaled: (K, frames) × (K, A) -> (K, frames·hop).

    With the attack cut into hop-long pieces, output block f is sum_q cs[f - q] · piece[q]: a small
    batched matmul, exact, instead of an FFT convolution of two clip-long signals.
    """
    k, frames = control_signal.shape
    pieces = -(-attacks.shape[-1] // hop)
    att = F.pad(attacks, (0, pieces * hop - attacks.shape[-1])).reshape(k, pieces, hop)
    windows = F.pad(control_signal, (pieces - 1, 0)).unfold(1, pieces, 1).flip(-1)  # (K, frames, Q)
    return torch.bmm(windows, att).reshape(k, frames * hop)


class _FFTConvolve(torch.autograd.Function):
    """Causal convolution cut to n samples, with a backward pass made of real FFTs.

    torch differentiates a zero-padded rfft through a full complex FFT; the adjoint of a causal
    convolution is a correlation, which real FFTs of the same size give directly (and about 5x cheaper).
    """

    @staticmethod
    def forward(ctx, signal, impulse, impulse_fft):  # type: ignore[override]
        n = signal.shape[-1]
        n_fft = fft_size(n)
        x_fft = torch.fft.rfft(signal, n=n_fft)
        h_fft = torch.fft.rfft(impulse, n=n_fft) if impulse_fft is None else impulse_fft
        ctx.save_for_backward(x_fft, h_fft)
        ctx.n, ctx.n_fft = n, n_fft
        ctx.shapes = (signal.shape, None if impulse is None else impulse.shape)
        return torch.fft.irfft(x_fft * h_fft, n=n_fft)[..., :n]

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x_fft, h_fft = ctx.saved_tensors
        n, n_fft = ctx.n, ctx.n_fft
        signal_shape, impulse_shape = ctx.shapes
        g_fft = torch.fft.rfft(grad, n=n_fft)
        grad_signal = grad_impulse = None
        if ctx.needs_input_grad[0]:
            prod = (g_fft * h_fft.conj()).sum_to_size(*signal_shape[:-1], g_fft.shape[-1])
            grad_signal = torch.fft.irfft(prod, n=n_fft)[..., :n]
        if impulse_shape is not None and ctx.needs_input_grad[1]:
            prod = (g_fft * x_fft.conj()).sum_to_size(*impulse_shape[:-1], g_fft.shape[-1])
            grad_impulse = torch.fft.irfft(prod, n=n_fft)[..., :n]
        return grad_signal, grad_impulse, None


def fft_size(n: int) -> int:
    """FFT length for a linear convolution of two n-long signals."""
    return 1 << (2 * n - 1).bit_length()


def fft_convolve(
    signal: torch.Tensor, impulse: torch.Tensor | None, impulse_fft: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal linear convolution cut to the signal's length; broadcasts leading axes.

    ``impulse_fft`` (the impulse's rfft at ``fft_size(n)``) replaces ``impulse`` when it is already known.
    """
    if impulse_fft is not None and impulse_fft.requires_grad:
        raise ValueError("a precomputed impulse spectrum is treated as a constant")
    return _FFTConvolve.apply(signal, impulse, impulse_fft)


def deformation_weights(logits: torch.Tensor, frame: int) -> torch.Tensor:
    """Per-sample cross-fade weights (E, frames·frame) from per-frame logits (E, frames).

    Variant 0 is the resting shape (bias 1 before the softmax, as in the seed).
    """
    base = torch.zeros_like(logits)
    base[0] = 1.0
    weights = torch.softmax(base + logits, dim=0)
    previous = torch.cat([weights[:, :1], weights[:, :-1]], dim=1)
    ramp = torch.arange(frame, dtype=weights.dtype, device=weights.device) / frame
    step = (weights - previous)[..., None] * ramp
    return (previous[..., None] + step).reshape(weights.shape[0], -1)


def draw_noise(shape: tuple[int, ...], generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Uniform noise in [-1, 1): the carrier of every attack."""
    return torch.rand(shape, generator=generator, device=device) * 2.0 - 1.0


class ResonanceModel(nn.Module):
    """One instrument: learnable control plane and deformations plus the instrument itself."""

    def __init__(
        self,
        spec: ModelSpec,
        parameterization: str = "physical",
        generator: torch.Generator | None = None,
        bank: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        k, r, e = spec.control_plane_dim, spec.n_resonances, spec.expressivity

        def uniform(shape: tuple[int, ...], low: float, high: float) -> nn.Parameter:
            return nn.Parameter(torch.empty(shape).uniform_(low, high, generator=generator))

        self.control_plane = uniform((k, spec.n_frames), -0.01, 0.01)
        self.deformations = uniform((e, spec.deformation_frames), -0.01, 0.01)
        self.attack_envelopes = uniform((k, spec.attack_frames), -1.0, 1.0)
        self.router = uniform((k, r), -1.0, 1.0)
        self.mix = uniform((r, 2), -1.0, 1.0)
        self.gains = uniform((r,), 0.01, 1.1)
        self.bank = bank or OscillatorBank(
            r, e, spec.n_oscillators, spec.n_samples, parameterization=parameterization, generator=generator
        )

    @property
    def control_signal(self) -> torch.Tensor:
        return process_control_plane(self.control_plane)

    def attacks(self, noise: torch.Tensor) -> torch.Tensor:
        return interpolate_envelopes(self.attack_envelopes, self.spec.attack_size) * noise

    def forward(
        self,
        control_signal: torch.Tensor | None = None,
        deformations: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        resonances: torch.Tensor | None = None,
        resonance_fft: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Audio (n_samples,). ``noise`` (K, attack_size) is drawn fresh when not given, as in training.

        ``resonances`` / ``resonance_fft`` (their rfft at ``fft_size(n_samples)``) let a caller reuse impulse
        responses it already has, as fitting does while the modes are frozen.
        """
        spec = self.spec
        cs = self.control_signal if control_signal is None else control_signal
        logits = self.deformations if deformations is None else deformations
        if noise is None:
            noise = draw_noise((spec.control_plane_dim, spec.attack_size), device=cs.device)
        res = self.bank() if resonances is None and resonance_fft is None else resonances
        excitation = excite(cs, self.attacks(noise), spec.control_hop)
        dry = self.router.t() @ excitation
        wet = fft_convolve(dry[:, None, :], res, resonance_fft)
        wet = (wet * deformation_weights(logits, spec.deformation_frame)[None]).sum(dim=1)
        mix = torch.softmax(self.mix, dim=-1)
        blended = mix[:, :1] * dry + mix[:, 1:] * wet
        return torch.tanh(blended * self.gains.abs()[:, None]).sum(dim=0)
