"""The streaming renderer: a pure core with no I/O, no clock, no logging.

    r = Renderer(instrument, sample_rate=44100, block_size=256, max_voices=8, seed=0)
    r.control(time=1000, voice=0, vector=v)       # sample-accurate, absolute sample index since start
    r.deform(time=1000, voice=0, logits=l)
    block = r.process()                            # the next block_size float32 mono samples

Every array lives in preallocated buffers; :meth:`Renderer.process` makes one call into the compiled
kernel (:mod:`sensorsynth.render.kernel`) and allocates nothing. The block it returns is the renderer's own
buffer, overwritten by the next call: copy it if you keep it.

Threading: the core is single-threaded by design. A server that schedules from one thread and processes
in another must hand events over itself (e.g. a lock-free ring) and call the scheduling methods from the
audio thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..instrument.playback import Playback, deformation_targets, playback
from ..instrument_file import Instrument
from . import kernel as K
from .checks import check_control, check_gain, check_time, check_vector, check_voice


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class Renderer:
    """Polyphonic, sample-accurate player of one or more instruments at one sample rate.

    Parameters
    ----------
    instruments: one :class:`Instrument` or a sequence of them (all played at ``sample_rate``).
    sample_rate: output rate; ``None`` uses the first instrument's native rate.
    block_size: samples returned by each :meth:`process` call.
    max_voices: number of voices; each has its own state. Voice ``i`` starts on instrument
        ``voice_instruments[i]`` (default: all on instrument 0).
    seed: seeds the fresh attack noise drawn for every control event (reproducible renders).
    noise: optional fixed (K, attack_size) noise used for every event instead (what the offline model does).
    queue_size: capacity of the event queue; when full, new events are dropped and counted.
    gain_ramp_ms: time a voice gain change takes (linear ramp, click-free).
    crossfade_ms: time an instrument swap on a voice takes (old tail fades out, new voice fades in).
    limit: the output is clipped to [-limit, limit]; ``None`` disables the clip only (offline analysis).
        NaN/inf never leave either way.
    """

    def __init__(
        self,
        instruments: Instrument | Sequence[Instrument],
        sample_rate: int | None = None,
        block_size: int = 256,
        max_voices: int = 8,
        seed: int | None = None,
        noise: np.ndarray | None = None,
        queue_size: int = 4096,
        gain_ramp_ms: float = 5.0,
        crossfade_ms: float = 20.0,
        limit: float | None = 1.0,
        voice_instruments: Sequence[int] | None = None,
    ) -> None:
        if isinstance(instruments, Instrument):
            instruments = [instruments]
        instruments = list(instruments)
        if not instruments:
            raise ValueError("Renderer needs at least one instrument")
        if int(block_size) < 1:
            raise ValueError(f"block_size must be ≥ 1, got {block_size}")
        if int(max_voices) < 1:
            raise ValueError(f"max_voices must be ≥ 1, got {max_voices}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be ≥ 1, got {queue_size}")
        if limit is not None and not (math.isfinite(float(limit)) and float(limit) > 0):
            raise ValueError(f"limit must be a positive number or None, got {limit}")
        rate = int(sample_rate or instruments[0].spec.sample_rate)
        self.sample_rate = rate
        self.block_size = int(block_size)
        self.max_voices = int(max_voices)
        self.instruments = instruments
        self.playbacks: list[Playback] = [playback(inst, rate) for inst in instruments]
        self._limit = float(limit) if limit is not None else 0.0
        self._gain_ramp = max(1, round(gain_ramp_ms * 1e-3 * rate))
        self._crossfade = max(1, round(crossfade_ms * 1e-3 * rate))

        pbs = self.playbacks
        dims = [
            (p.spec.control_plane_dim, p.spec.n_resonances, p.spec.expressivity, p.spec.n_oscillators)
            for p in pbs
        ]
        self._dims = dims
        k_max = max(d[0] for d in dims)
        r_max = max(d[1] for d in dims)
        e_max = max(d[2] for d in dims)
        g_max = max(d[1] * d[2] for d in dims)
        gm_max = max(d[1] * d[2] * d[3] for d in dims)
        a_max = max(p.spec.attack_size for p in pbs)
        b = self.block_size

        # instrument table
        imeta = np.zeros((len(pbs), K.N_IMETA), np.int64)
        poles, coefs, routers, attacks, mixd, mixw, gains, rests = [], [], [], [], [], [], [], []
        mode_off = router_off = att_off = res_off = 0
        for i, (p, (k, r, e, m)) in enumerate(zip(pbs, dims)):
            imeta[i] = (k, r, e, m, p.spec.attack_size, p.spec.deformation_frame, mode_off, router_off, att_off, res_off)
            poles.append(p.poles.reshape(-1))
            coefs.append(p.coef.reshape(-1))
            routers.append(p.router.reshape(-1))
            attacks.append(p.attacks.reshape(-1))
            mixd.append(p.mix[:, 0])
            mixw.append(p.mix[:, 1])
            gains.append(p.gains)
            rests.append(deformation_targets(np.zeros(e, np.float32)))
            mode_off += r * e * m
            router_off += k * r
            att_off += k * p.spec.attack_size
            res_off += r
        pole = np.concatenate(poles)
        coef = np.concatenate(coefs)
        self._rests = rests
        f32 = lambda parts: np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)  # noqa: E731
        self._imeta = imeta
        inst_arrays = (
            imeta,
            np.ascontiguousarray(pole.real, np.float32),
            np.ascontiguousarray(pole.imag, np.float32),
            np.ascontiguousarray(coef.real, np.float32),
            np.ascontiguousarray(coef.imag, np.float32),
            f32(routers),
            f32(attacks),
            f32(mixd),
            f32(mixw),
            f32(gains),
        )

        # voice slots: [0, max_voices) are the voices, [max_voices, 2·max_voices) their cross-fade tails
        n_slots = 2 * self.max_voices
        ring = _next_pow2(a_max + b)
        self._vmeta = np.zeros((n_slots, K.N_VMETA), np.int64)
        self._state_re = np.zeros((n_slots, gm_max), np.float32)
        self._state_im = np.zeros((n_slots, gm_max), np.float32)
        self._exc = np.zeros((n_slots, k_max, ring), np.float32)
        self._ramp_prev = np.zeros((n_slots, e_max), np.float32)
        self._ramp_target = np.zeros((n_slots, e_max), np.float32)
        self._rest = np.zeros((n_slots, e_max), np.float32)
        self._vgain = np.zeros((n_slots, 3), np.float32)
        self._user_gain = np.ones(self.max_voices, np.float64)
        self._vmeta[:, K.V_INST] = -1
        assign = list(voice_instruments) if voice_instruments is not None else [0] * self.max_voices
        if len(assign) != self.max_voices or any(not 0 <= int(i) < len(pbs) for i in assign):
            raise ValueError(f"voice_instruments must give one instrument index in [0, {len(pbs)}) per voice")
        for v, i in enumerate(assign):
            self._init_slot(v, int(i), gain=1.0)

        # queue
        q = int(queue_size)
        p_max = max(k_max, e_max)
        self._qtime = np.zeros(q, np.int64)
        self._qvoice = np.zeros(q, np.int32)
        self._qkind = np.zeros(q, np.int32)
        self._qlen = np.zeros(q, np.int32)
        self._qseq = np.zeros(q, np.int64)
        self._qdata = np.zeros((q, p_max), np.float32)
        self._qused = np.zeros(q, np.bool_)
        self._qfree = np.arange(q, dtype=np.int64)[::-1].copy()
        self._qstate = np.array([q, 0, 1 << 62, 0], np.int64)

        # noise
        if noise is not None:
            noise = np.ascontiguousarray(noise, dtype=np.float32)
            if noise.ndim != 2 or noise.shape[0] < k_max or noise.shape[1] < a_max:
                raise ValueError(
                    f"fixed noise must be (K, attack_size) = ({k_max}, {a_max}) at {rate} Hz, got {noise.shape}"
                )
            if not np.all(np.isfinite(noise)):
                raise ValueError("fixed noise holds NaN or inf")
        else:
            noise = np.zeros((0, 0), np.float32)
        self._noise = noise
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        self._rng = np.array([int(seed) & 0xFFFFFFFFFFFFFFFF, 0], np.uint64)
        # fresh noise: every burst reads a randomly placed window of this table
        self._table = (
            np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
            .uniform(-1.0, 1.0, K.NOISE_TABLE + a_max)
            .astype(np.float32)
            if noise.size == 0
            else np.zeros(0, np.float32)
        )

        # scratch and output
        self._out = np.zeros(b, np.float32)
        self._counters = np.zeros(K.N_COUNTERS, np.int64)
        scratch = (
            np.zeros(q, np.int64),  # due
            np.zeros(a_max, np.float32),  # noise scratch
            np.zeros((k_max, b), np.float32),  # excb
            np.zeros((r_max, b), np.float32),  # dry
            np.zeros(r_max + k_max, np.bool_),  # dry_active (+ excitation row flags)
            np.zeros((g_max, b), np.float32),  # wet
            np.zeros((e_max, b), np.float32),  # weights
            np.zeros(b, np.float32),  # y
            np.zeros(b, np.float32),  # voice out
            K.POW2_NEG,
            self._counters,
        )
        self._args = (
            self._out,
            self._limit,
            *inst_arrays,
            self._vmeta,
            self._state_re,
            self._state_im,
            self._exc,
            self._ramp_prev,
            self._ramp_target,
            self._rest,
            self._vgain,
            self._qtime,
            self._qvoice,
            self._qkind,
            self._qlen,
            self._qseq,
            self._qdata,
            self._qused,
            self._qfree,
            self._qstate,
            self._noise,
            self._table,
            self._rng,
            self.max_voices,
            *scratch,
        )
        self._pack()
        self._time = 0

    _DTYPES = {"f": np.float32, "q": np.int64, "h": np.int32, "u": np.uint64, "b": np.bool_}

    def _pack(self) -> None:
        """Move every kernel array into one buffer per dtype (see kernel.PACKED_KINDS) and rebind the
        renderer's attributes to the views, so one kernel call unboxes 5 arrays instead of 40."""
        args = self._args
        if len(args) != len(K.PACKED_KINDS):
            raise AssertionError("renderer arguments and kernel.PACKED_KINDS disagree")
        sizes = dict.fromkeys(self._DTYPES, 0)
        for a, (kind, ndim) in zip(args, K.PACKED_KINDS):
            if kind:
                if a.dtype != self._DTYPES[kind] or a.ndim != ndim:
                    raise AssertionError(f"kernel argument {a.dtype}/{a.ndim}d does not match {kind}/{ndim}d")
                sizes[kind] += a.size
        buffers = {k: np.zeros(max(1, n), dt) for (k, dt), n in zip(self._DTYPES.items(), sizes.values())}
        layout = np.zeros((len(args), 4), np.int64)
        offsets = dict.fromkeys(self._DTYPES, 0)
        views: dict[int, np.ndarray] = {}
        for i, (a, (kind, ndim)) in enumerate(zip(args, K.PACKED_KINDS)):
            if not kind:
                continue
            o = offsets[kind]
            view = buffers[kind][o : o + a.size].reshape(a.shape)
            view[...] = a
            layout[i, 0] = o
            layout[i, 1 : 1 + ndim] = a.shape
            offsets[kind] += a.size
            views[id(a)] = view
        for name, value in list(vars(self).items()):
            if isinstance(value, np.ndarray) and id(value) in views:
                setattr(self, name, views[id(value)])
        self._args = tuple(views.get(id(a), a) for a in args)
        self._packed = (self._limit, self.max_voices, *buffers.values(), layout)

    # ------------------------------------------------------------------ state
    def _init_slot(self, s: int, inst: int, gain: float) -> None:
        e = self._dims[inst][2]
        self._state_re[s] = 0.0
        self._state_im[s] = 0.0
        self._exc[s] = 0.0
        self._rest[s] = 0.0
        self._rest[s, :e] = self._rests[inst]
        self._ramp_prev[s] = self._rest[s]
        self._ramp_target[s] = self._rest[s]
        self._vmeta[s] = (inst, -(1 << 40), 0, 0)
        self._vgain[s] = (gain, gain, 1.0 / self._gain_ramp)

    @property
    def time(self) -> int:
        """Absolute sample index of the first sample of the next block."""
        return self._time

    @property
    def counters(self) -> dict[str, int]:
        """Events applied, dropped (queue full), late (applied at the next block start), mismatched (the
        voice changed instrument after scheduling), voice resets (non-finite or huge state) and output
        samples scrubbed (non-finite). A caller logs these; the renderer never does."""
        c = self._counters
        return {
            "events": int(c[K.C_EVENTS]),
            "dropped": int(c[K.C_DROPPED]),
            "late": int(c[K.C_LATE]),
            "mismatched": int(c[K.C_MISMATCH]),
            "resets": int(c[K.C_RESETS]),
            "scrubbed": int(c[K.C_SCRUBBED]),
        }

    @property
    def pending(self) -> int:
        """Events waiting in the queue."""
        return int(self._qused.size - self._qstate[0])

    def voice_instrument(self, voice: int) -> int:
        return int(self._vmeta[check_voice(voice, self.max_voices), K.V_INST])

    def _push(self, time: int, voice: int, kind: int, data: np.ndarray) -> bool:
        top = int(self._qstate[0])
        if top == 0:
            self._counters[K.C_DROPPED] += 1
            return False
        top -= 1
        q = int(self._qfree[top])
        self._qstate[0] = top
        self._qtime[q] = time
        self._qvoice[q] = voice
        self._qkind[q] = kind
        self._qlen[q] = data.shape[0]
        self._qdata[q, : data.shape[0]] = data
        self._qseq[q] = self._qstate[1]
        self._qstate[1] += 1
        self._qused[q] = True
        if time < self._qstate[2]:
            self._qstate[2] = time
        if q >= self._qstate[3]:
            self._qstate[3] = q + 1
        return True

    # ------------------------------------------------------------------ scheduling
    def control(self, time: int, voice: int, vector) -> bool:
        """Fire an attack on every control dimension at absolute sample ``time``: burst_k = v_k·attack_k·noise.

        ``vector`` has the voice's control_plane_dim non-negative finite values. Returns False when the
        queue was full and the event was dropped (counted). A time already rendered plays at the next block
        start (counted as late)."""
        time = check_time(time)
        voice = check_voice(voice, self.max_voices)
        arr = check_control(vector, self._dims[self._vmeta[voice, K.V_INST]][0])
        return self._push(time, voice, K.EV_CONTROL, arr)

    def deform(self, time: int, voice: int, logits, immediate: bool = False) -> bool:
        """New deformation logits (E,) at ``time``: the variant weights ramp linearly from their current value
        to ``deformation_targets(logits)`` over one deformation frame (or jump there when ``immediate``)."""
        time = check_time(time)
        voice = check_voice(voice, self.max_voices)
        arr = check_vector(logits, self._dims[self._vmeta[voice, K.V_INST]][2], "deformation logits")
        return self._push(time, voice, K.EV_DEFORM_NOW if immediate else K.EV_DEFORM, deformation_targets(arr))

    def set_gain(self, voice: int, gain: float, ramp_ms: float | None = None) -> None:
        """Voice gain (linear), reached by a linear ramp of ``ramp_ms`` (default gain_ramp_ms) from the next block."""
        voice = check_voice(voice, self.max_voices)
        gain = check_gain(gain)
        ramp = self._gain_ramp if ramp_ms is None else max(1, round(float(ramp_ms) * 1e-3 * self.sample_rate))
        self._user_gain[voice] = gain
        cur = float(self._vgain[voice, 0])
        self._vgain[voice, 1] = gain
        self._vgain[voice, 2] = max(abs(gain - cur), 1e-12) / ramp

    def set_instrument(self, voice: int, instrument: int) -> None:
        """Swap a voice's instrument from the next block: the old sound fades out over crossfade_ms while the
        new voice (fresh state, resting deformation) fades in. Events already queued for the voice with the
        old instrument's sizes are skipped (counted as mismatched)."""
        voice = check_voice(voice, self.max_voices)
        if isinstance(instrument, bool) or not isinstance(instrument, (int, np.integer)):
            raise ValueError(f"instrument must be an index, got {instrument!r}")
        if not 0 <= int(instrument) < len(self.playbacks):
            raise ValueError(f"unknown instrument {instrument}: this renderer holds 0..{len(self.playbacks) - 1}")
        tail = self.max_voices + voice
        for dst, src in (
            (self._vmeta, voice),
            (self._state_re, voice),
            (self._state_im, voice),
            (self._exc, voice),
            (self._ramp_prev, voice),
            (self._ramp_target, voice),
            (self._rest, voice),
            (self._vgain, voice),
        ):
            dst[tail] = dst[src]
        cur = float(self._vgain[tail, 0])
        self._vgain[tail, 1] = 0.0
        self._vgain[tail, 2] = max(cur, 1e-12) / self._crossfade
        gain = float(self._user_gain[voice])
        self._init_slot(voice, int(instrument), gain=0.0)
        self._vgain[voice, 1] = gain
        self._vgain[voice, 2] = max(gain, 1e-12) / self._crossfade

    def reset(self, voice: int | None = None) -> None:
        """Silence a voice (or all): state, pending excitation and deformation back to rest."""
        voices = range(self.max_voices) if voice is None else [check_voice(voice, self.max_voices)]
        for v in voices:
            gain = float(self._user_gain[v])
            self._init_slot(v, int(self._vmeta[v, K.V_INST]), gain=gain)
            tail = self.max_voices + v
            self._vmeta[tail, K.V_INST] = -1

    # ------------------------------------------------------------------ rendering
    def process(self) -> np.ndarray:
        """Render the next block_size samples (float32, mono) into the renderer's own buffer and return it.

        The returned array is overwritten by the next call."""
        self._kernel(self._time, self.block_size, *self._packed)
        self._time += self.block_size
        return self._out

    def _kernel(self, *args) -> None:
        """First call: compile or load the kernel, then bind its compiled entry point for these argument
        types, which skips numba's per-call type dispatch (about a microsecond, 3 % of a 64-sample block)."""
        K.process_packed(*args)
        try:
            sig = tuple(K.process_packed.typeof_pyval(a) for a in args)
            self._kernel = K.process_packed.overloads[sig].entry_point  # type: ignore[method-assign]
        except (KeyError, AttributeError):  # another numba: keep the dispatcher
            self._kernel = K.process_packed  # type: ignore[method-assign]

    def render(self, n_samples: int) -> np.ndarray:
        """Convenience: a fresh array of the next n_samples (whole blocks, cut to length)."""
        out = np.empty(-(-n_samples // self.block_size) * self.block_size, np.float32)
        for i in range(0, out.size, self.block_size):
            out[i : i + self.block_size] = self.process()
        return out[:n_samples]
