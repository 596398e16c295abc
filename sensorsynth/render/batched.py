"""The torch path for many voices at once (CUDA or CPU): the same model as the numba renderer, block-wise.

Instead of a per-sample recursion, every chunk of C ≤ 256 samples is one closed-form update per group of M
oscillators (voices as the GEMM rows):

    wet[j]   = Σ_m Re(p_m^(j+1) s_m)  +  Σ_{i≤j} h[j-i] · dry[i]        h[k] = Σ_m Re(c_m p_m^k)
    s_m'     = p_m^C s_m  +  Σ_i c_m p_m^(C-1-i) dry[i]

i.e. three batched matrix products per chunk with matrices precomputed in float64 (pole powers, the
groups' impulse responses as Toeplitz blocks), cast to float32. Instruments of different sizes are padded
(silent oscillators, zero routes), so any mix of instruments and voices runs as a few bmm calls.

Events: ``control(time, voice, vector)`` and ``deform(time, voice, logits, immediate)`` as in
:class:`~sensorsynth.render.renderer.Renderer`; bursts are added into a per-voice excitation ring at their
exact sample, deformation ramps restart at their exact sample. Fresh noise comes from a torch generator
(not the numba renderer's noise), a fixed (K, A) ``noise`` reproduces the offline model and the renderer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..instrument.playback import attacks_to_play, deformation_targets, playback
from .checks import check_control, check_gain, check_time, check_vector, check_voice
from ..instrument_file import Instrument

MAX_CHUNK = 256


def _pad(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, a.dtype)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


class _Bank:
    """Chunk matrices of one instrument (padded to the renderer's G, M)."""

    def __init__(self, poles: np.ndarray, coef: np.ndarray, chunk: int, device, dtype=torch.float32) -> None:
        g, m = poles.shape
        p = poles.astype(np.complex128)
        c = coef.astype(np.complex128)
        k = np.arange(chunk + 1)
        logp = np.log(np.where(p == 0, 1e-300, p))
        powers = np.exp(logp[..., None] * k)  # (G, M, C+1): p^0 .. p^C
        powers = np.where((p == 0)[..., None], (k == 0).astype(np.float64), powers)
        state_to_out = np.concatenate([powers[..., 1:].real, -powers[..., 1:].imag], axis=1)  # (G, 2M, C)
        h = np.einsum("gm,gmk->gk", c, powers[..., :chunk]).real  # (G, C)
        i = np.arange(chunk)
        lag = i[None, :] - i[:, None]  # [i, j] = j - i
        toeplitz = np.where(lag >= 0, h[:, np.clip(lag, 0, None)], 0.0)  # (G, C_in, C_out)
        q = c[..., None] * powers[..., :chunk][..., ::-1]  # (G, M, C): c p^(C-1-i)
        input_to_state = np.concatenate([q.real, q.imag], axis=1).transpose(0, 2, 1)  # (G, C, 2M)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)  # noqa: E731
        self.state_to_out = t(state_to_out)
        self.toeplitz = t(toeplitz)
        self.input_to_state = t(input_to_state)
        self.pow_re = t(powers.real)  # (G, M, C+1)
        self.pow_im = t(powers.imag)
        self.chunk = chunk


class BatchedRenderer:
    """Many voices of one or more instruments on one device; ``process()`` returns the mixed block (B,).

    ``voices_out`` holds the last block per voice (V, B) after the voice gains. Output is on ``device``.
    """

    def __init__(
        self,
        instruments: Instrument | Sequence[Instrument],
        n_voices: int,
        sample_rate: int | None = None,
        block_size: int = 256,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        noise: np.ndarray | None = None,
        noise_mode: str = "instrument",
        voice_instruments: Sequence[int] | None = None,
        gain_ramp_ms: float = 5.0,
        limit: float | None = 1.0,
    ) -> None:
        if isinstance(instruments, Instrument):
            instruments = [instruments]
        instruments = list(instruments)
        if not instruments or n_voices < 1 or block_size < 1:
            raise ValueError("BatchedRenderer needs ≥ 1 instrument, ≥ 1 voice and block_size ≥ 1")
        self.device = torch.device(device)
        rate = int(sample_rate or instruments[0].spec.sample_rate)
        self.sample_rate = rate
        self.block_size = int(block_size)
        self.n_voices = int(n_voices)
        self.limit = limit
        pbs = [playback(inst, rate) for inst in instruments]
        self.playbacks = pbs
        dims = [(p.spec.control_plane_dim, p.spec.n_resonances, p.spec.expressivity, p.spec.n_oscillators) for p in pbs]
        self._dims = dims
        k, r, e, m = (max(d[i] for d in dims) for i in range(4))
        a = max(p.spec.attack_size for p in pbs)
        self.k, self.r, self.e, self.m, self.a = k, r, e, m, a
        g = r * e
        chunk = min(self.block_size, MAX_CHUNK)
        dev = self.device
        f32 = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=dev)  # noqa: E731

        self._banks = []
        for p, (_, ri, _, _) in zip(pbs, dims):
            # pad variants then resonances: group index stays r·E + e
            poles = _pad(_pad(p.poles, (ri, e, m)), (r, e, m)).reshape(g, m)
            coef = _pad(_pad(p.coef, (ri, e, m)), (r, e, m)).reshape(g, m)
            self._banks.append(_Bank(poles, coef, chunk, dev))
        self._router = f32(np.stack([_pad(p.router, (k, r)) for p in pbs]))  # (I, K, R)
        played = [attacks_to_play(p, noise_mode, noise is not None) for p in pbs]  # as Renderer
        self._owned = torch.tensor([owned for _, owned in played], device=dev)
        self._attacks = f32(np.stack([_pad(attacks, (k, a)) for attacks, _ in played]))  # (I, K, A)
        self._mixd = f32(np.stack([_pad(p.mix[:, 0], (r,)) for p in pbs]))
        self._mixw = f32(np.stack([_pad(p.mix[:, 1], (r,)) for p in pbs]))
        self._gains = f32(np.stack([_pad(p.gains, (r,)) for p in pbs]))
        self._frames = torch.tensor([p.spec.deformation_frame for p in pbs], device=dev)
        self._rests = f32(np.stack([_pad(deformation_targets(np.zeros(d[2], np.float32)), (e,)) for d in dims]))

        assign = list(voice_instruments) if voice_instruments is not None else [0] * self.n_voices
        if len(assign) != self.n_voices or any(not 0 <= int(i) < len(pbs) for i in assign):
            raise ValueError(f"voice_instruments must give one index in [0, {len(pbs)}) per voice")
        self._assign = torch.tensor(assign, device=dev, dtype=torch.long)
        self._groups = [torch.nonzero(self._assign == i).flatten() for i in range(len(pbs))]
        self._groups = [(i, idx) for i, idx in enumerate(self._groups) if idx.numel()]

        v = self.n_voices
        self._ring = 1 << int(a + self.block_size - 1).bit_length()
        self._exc = torch.zeros(v, k, self._ring, device=dev)
        self._s_re = torch.zeros(v, g, m, device=dev)
        self._s_im = torch.zeros(v, g, m, device=dev)
        self._prev = self._rests[self._assign].clone()
        self._target = self._prev.clone()
        self._ramp_start = torch.full((v,), -(1 << 40), device=dev, dtype=torch.long)
        self._vframe = self._frames[self._assign]
        self._gain = torch.ones(v, device=dev)
        self._gain_target = torch.ones(v, device=dev)
        self._gain_step = torch.full((v,), 1.0 / max(1, round(gain_ramp_ms * 1e-3 * rate)), device=dev)
        self._gain_ramp = max(1, round(gain_ramp_ms * 1e-3 * rate))
        self._noise = None if noise is None else f32(_pad(np.asarray(noise, np.float32)[:k, :a], (k, a)))
        self._gen = torch.Generator(device=dev)
        self._gen.manual_seed(int(seed) if seed is not None else int(torch.seed()))
        self._events: list[tuple[int, int, int, int, np.ndarray]] = []
        self._seq = 0
        self._time = 0
        self.resets = 0
        self.voices_out = torch.zeros(v, self.block_size, device=dev)

    @property
    def time(self) -> int:
        return self._time

    def _size(self, voice: int, which: int) -> int:
        return self._dims[int(self._assign[voice])][which]

    def control(self, time: int, voice: int, vector) -> None:
        time, voice = check_time(time), check_voice(voice, self.n_voices)
        arr = check_control(vector, self._size(voice, 0))
        self._events.append((time, self._seq, voice, 0, _pad(arr, (self.k,))))
        self._seq += 1

    def deform(self, time: int, voice: int, logits, immediate: bool = False) -> None:
        time, voice = check_time(time), check_voice(voice, self.n_voices)
        arr = check_vector(logits, self._size(voice, 2), "deformation logits")
        target = _pad(deformation_targets(arr), (self.e,))
        self._events.append((time, self._seq, voice, 2 if immediate else 1, target))
        self._seq += 1

    def set_gain(self, voice: int, gain: float) -> None:
        voice, gain = check_voice(voice, self.n_voices), check_gain(gain)
        self._gain_target[voice] = float(gain)
        self._gain_step[voice] = max(abs(float(gain) - float(self._gain[voice])), 1e-12) / self._gain_ramp

    # ------------------------------------------------------------------ rendering
    def _weights(self, t0: int, offsets: torch.Tensor, voices: torch.Tensor | None = None) -> torch.Tensor:
        """(V, E, len(offsets)) deformation weights from the current ramps."""
        sel = slice(None) if voices is None else voices
        i = (t0 + offsets)[None, :] - self._ramp_start[sel][:, None]  # (V, n)
        frame = self._vframe[sel][:, None]
        frac = i.to(torch.float32) / frame.to(torch.float32)
        prev, target = self._prev[sel][:, :, None], self._target[sel][:, :, None]
        ramp = prev + frac[:, None, :] * (target - prev)
        return torch.where((i < frame)[:, None, :], ramp, target)

    def _apply_events(self, t0: int, b: int) -> torch.Tensor:
        dev = self.device
        t_end = t0 + b
        due = sorted(ev for ev in self._events if ev[0] < t_end)
        if due:
            self._events = [ev for ev in self._events if ev[0] >= t_end]
        controls = [ev for ev in due if ev[3] == 0]
        if controls:
            times = torch.tensor([max(ev[0], t0) for ev in controls], device=dev)
            voices = torch.tensor([ev[2] for ev in controls], device=dev)
            vecs = torch.as_tensor(np.stack([ev[4] for ev in controls]), device=dev)
            att = self._attacks[self._assign[voices]]  # (n, K, A)
            if self._noise is not None:
                noise = self._noise[None]
            else:
                noise = torch.rand(len(controls), self.k, self.a, generator=self._gen, device=dev) * 2 - 1
                noise.masked_fill_(self._owned[self._assign[voices]][:, None, None], 1.0)  # attacks own theirs
            burst = vecs[:, :, None] * (att * noise)
            pos = (times[:, None] + torch.arange(self.a, device=dev)) & (self._ring - 1)  # (n, A)
            kk = torch.arange(self.k, device=dev)
            self._exc.index_put_(
                (voices[:, None, None], kk[None, :, None], pos[:, None, :]), burst, accumulate=True
            )
        offsets = torch.arange(b, device=dev)
        w = self._weights(t0, offsets)
        for t, _, v, kind, target in (ev for ev in due if ev[3] != 0):
            t = max(t, t0)
            cur = self._weights(t, torch.zeros(1, device=dev, dtype=torch.long), torch.tensor([v], device=dev))
            tgt = torch.as_tensor(target, device=dev)
            self._prev[v] = tgt if kind == 2 else cur[0, :, 0]
            self._target[v] = tgt
            self._ramp_start[v] = t
            o = t - t0
            w[v, :, o:] = self._weights(t0, offsets[o:], torch.tensor([v], device=dev))[0]
        return w

    @torch.no_grad()
    def process(self) -> torch.Tensor:
        """The next block_size samples (B,) on the device (a fresh tensor)."""
        t0, b = self._time, self.block_size
        dev = self.device
        w = self._apply_events(t0, b)  # (V, E, B)
        pos = (t0 + torch.arange(b, device=dev)) & (self._ring - 1)
        excb = self._exc[:, :, pos]  # (V, K, B)
        self._exc[:, :, pos] = 0.0
        dry = torch.bmm(self._router[self._assign].transpose(1, 2), excb)  # (V, R, B)
        wet = torch.empty(self.n_voices, self.r * self.e, b, device=dev)
        for inst, idx in self._groups:
            wet[idx] = self._resonate(self._banks[inst], idx, dry[idx])
        wet = wet.view(self.n_voices, self.r, self.e, b)
        x = (w[:, None, :, :] * wet).sum(dim=2)  # (V, R, B)
        a = self._assign
        y = self._mixd[a][:, :, None] * dry + self._mixw[a][:, :, None] * x
        voice = torch.tanh(self._gains[a][:, :, None] * y).sum(dim=1)  # (V, B)
        # safety: non-finite output or huge state resets the voice
        mag = (self._s_re.abs() + self._s_im.abs()).amax(dim=(1, 2))
        bad = ~torch.isfinite(voice).all(dim=1) | ~(mag < 1e8)
        if bool(bad.any()):
            self.resets += int(bad.sum())
            for t in (self._s_re, self._s_im, self._exc):
                t[bad] = 0.0
            voice[bad] = 0.0
        # click-free gains
        steps = torch.arange(1, b + 1, device=dev, dtype=torch.float32)
        up = torch.minimum(self._gain[:, None] + self._gain_step[:, None] * steps, self._gain_target[:, None])
        down = torch.maximum(self._gain[:, None] - self._gain_step[:, None] * steps, self._gain_target[:, None])
        g = torch.where((self._gain < self._gain_target)[:, None], up, down)
        self._gain = g[:, -1].clone()
        self.voices_out = voice * g
        out = torch.nan_to_num(self.voices_out.sum(dim=0), nan=0.0, posinf=0.0, neginf=0.0)
        if self.limit is not None:
            out = out.clamp(-self.limit, self.limit)
        self._time += b
        return out

    def _resonate(self, bank: _Bank, idx: torch.Tensor, dry: torch.Tensor) -> torch.Tensor:
        """Closed-form chunks for the voices ``idx`` of one instrument: wet (n, G, B)."""
        n, b = idx.numel(), dry.shape[-1]
        g, m = self.r * self.e, self.m
        s_re = self._s_re[idx].transpose(0, 1)  # (G, n, M)
        s_im = self._s_im[idx].transpose(0, 1)
        d_all = dry.repeat_interleave(self.e, dim=1).transpose(0, 1)  # (G, n, B)
        out = torch.empty(g, n, b, device=dry.device)
        c = bank.chunk
        for start in range(0, b, c):
            cl = min(c, b - start)
            d = d_all[:, :, start : start + cl]
            state = torch.cat([s_re, s_im], dim=2)  # (G, n, 2M)
            out[:, :, start : start + cl] = torch.bmm(state, bank.state_to_out[:, :, :cl]) + torch.bmm(
                d, bank.toeplitz[:, :cl, :cl]
            )
            upd = torch.bmm(d, bank.input_to_state[:, c - cl :, :])  # (G, n, 2M)
            p_re = bank.pow_re[:, None, :, cl]
            p_im = bank.pow_im[:, None, :, cl]
            s_re, s_im = p_re * s_re - p_im * s_im + upd[..., :m], p_re * s_im + p_im * s_re + upd[..., m:]
        self._s_re[idx] = s_re.transpose(0, 1)
        self._s_im[idx] = s_im.transpose(0, 1)
        return out.transpose(0, 1)
