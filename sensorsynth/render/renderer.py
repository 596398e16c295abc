"""The streaming renderer: a pure core with no I/O, no clock, no logging.

(One module past 500 lines on purpose: :class:`Renderer` and its :class:`Inbox` share the renderer's arrays and
banks, which stay private to this file; what other modules need is the small public interface below.)

    r = Renderer(instrument, sample_rate=44100, block_size=256, max_voices=8, seed=0)
    r.warmup()                                     # compile or load the kernel now, not in the first block
    r.control(time=1000, voice=0, vector=v)        # sample-accurate, absolute sample index since start
    r.deform(time=1000, voice=0, logits=l)
    block = r.process()                            # the next block_size float32 mono samples
    r = Renderer(instrument, channels=8, voice_pans=gains)   # several output channels: process() is (8, B)
    r.set_pan(voice=0, gains=placement.ring_gains(0.25, 8))  # where a voice sounds (ramped)
    r.set_output_gain(channel=3, gain=0.5); r.set_level_cap(0.89)   # master gains, the limiter

Every array lives in preallocated buffers; :meth:`Renderer.process` makes one call into the compiled
kernel (:mod:`sensorsynth.render.kernel`), which releases the GIL, and allocates nothing. The block it
returns is the renderer's own buffer, overwritten by the next call: copy it if you keep it.

Threads. A live host runs :meth:`Renderer.process` on an audio thread and receives events elsewhere (an
asyncio loop, a network thread). Two kinds of callers:

- The audio thread: :meth:`~Renderer.process`, :meth:`~Renderer.warmup`, :meth:`~Renderer.control`,
  :meth:`~Renderer.deform`, :meth:`~Renderer.set_gain`, :meth:`~Renderer.set_instrument`,
  :meth:`~Renderer.reset`, :meth:`~Renderer.render`. (Before the audio thread starts, or in a program with
  one thread, that is simply the thread that owns the renderer.)
- One producer thread: :attr:`Renderer.inbox` (``control``, ``deform``, ``gain``, ``instrument``), and
  :meth:`~Renderer.add_instrument` / :meth:`~Renderer.replace_instrument` (these two are also safe from
  several threads: a lock that the audio thread never takes serialises them).

The inbox is a lock-free single-producer/single-consumer ring that the kernel drains at the start of every
block, in posting order; a full inbox refuses a message (``False``, counted as ``inbox_full``) instead of
waiting. A hot reload builds the new instrument arrays on the producer thread and posts them; the audio
thread swaps references at the next block boundary and cross-fades the voices that played the replaced
instrument, exactly as :meth:`Renderer.set_instrument` does.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from ..instrument.playback import Playback, attacks_to_play, check_noise_mode, deformation_targets, playback
from ..instrument_file import Instrument
from . import kernel as K
from .checks import check_control, check_gain, check_instrument, check_time, check_vector, check_voice
from .layout import Allocation, allocate, buffer_args, layout_array
from .placement import MAX_CHANNELS

MAX_PAN_GAIN = 16.0  # a placement gain above this is a mistake, not a speaker


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class _Entry:
    """One instrument (one version of it) realised at the renderer's rate. Banks list entries as rows; the
    same entry object stays the same row's identity across reloads."""

    __slots__ = ("instrument", "playback", "oscillators", "k", "r", "e", "m", "t", "attack", "frame", "rest")

    def __init__(self, instrument: Instrument, rate: int) -> None:
        if not isinstance(instrument, Instrument):
            raise ValueError(f"expected an Instrument, got {type(instrument).__name__}")
        p = playback(instrument, rate)  # ValueError when its frames do not fit this rate
        s = p.spec
        self.instrument = instrument
        self.playback = p
        self.k, self.r, self.e, self.m = s.control_plane_dim, s.n_resonances, s.expressivity, s.n_oscillators
        self.oscillators = K.oscillator_bank(p.poles.reshape(-1, self.m), p.coef.reshape(-1, self.m))
        self.t = int(self.oscillators.tail[-1])  # tail oscillators (see kernel.oscillator_bank)
        self.attack, self.frame = s.attack_size, s.deformation_frame
        self.rest = deformation_targets(np.zeros(self.e, np.float32))


class _Capacity(NamedTuple):
    """The largest sizes the capacity-sized arrays hold (see kernel.FIELDS, group "sized")."""

    k: int
    r: int
    e: int
    g: int
    gm: int
    t: int
    a: int
    p: int

    @staticmethod
    def of(entries: Sequence[_Entry]) -> _Capacity:
        k = max(x.k for x in entries)
        e = max(x.e for x in entries)
        return _Capacity(
            k=k,
            r=max(x.r for x in entries),
            e=e,
            g=max(x.r * x.e for x in entries),
            gm=max(x.r * x.e * x.m for x in entries),
            t=max(x.t for x in entries),
            a=max(x.attack for x in entries),
            p=max(k, e),
        )

    def covers(self, other: _Capacity) -> bool:
        return all(a >= b for a, b in zip(self, other))

    def union(self, other: _Capacity) -> _Capacity:
        return _Capacity(*(max(a, b) for a, b in zip(self, other)))


class _Bank(NamedTuple):
    """Everything one kernel call reads: instrument rows, the sized arrays they fit, the kernel arguments."""

    generation: int
    entries: tuple[_Entry, ...]  # rows: the public instruments first, then old versions tails still play
    n_public: int
    sized: Allocation
    capacity: _Capacity
    alloc: Allocation
    args: tuple[np.ndarray, ...]  # the kernel's buffer arguments (bank, fixed, sized)
    views: SimpleNamespace  # every field by name, for Python-side access


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
    noise: optional fixed (K, attack_size) noise used for every event of every instrument instead.
    noise_mode: ``"instrument"`` (default) replays the attack noise an instrument was fitted with, when it
        owns one (format 3), and fresh noise otherwise; ``"fresh"`` draws fresh noise for every event, for
        live variety.
    queue_size: capacity of the event queue; when full, new events are dropped and counted.
    gain_ramp_ms: time a voice gain change takes (linear ramp, click-free).
    crossfade_ms: time an instrument swap on a voice takes (old tail fades out, new voice fades in).
    limit: the output is clipped to [-limit, limit]; ``None`` disables the clip only (offline analysis).
        NaN/inf never leave either way.
    inbox_size: messages the inbox holds between two blocks (see :class:`Inbox`).
    channels: output channels (speakers). One (the default) is the mono renderer, bit for bit; with more,
        :meth:`process` returns a (channels, block_size) array, each voice rendered once and mixed into every
        channel with its placement gains.
    voice_pans: the starting gain per channel of each voice ((max_voices, channels); see
        :mod:`sensorsynth.render.placement`); default: voice v on channel v mod channels at gain 1.
    limiter_release_ms: how fast the level cap's limiter lets the gain back up (time constant); the cap itself
        is off until :meth:`set_level_cap`.
    """

    def __init__(
        self,
        instruments: Instrument | Sequence[Instrument],
        sample_rate: int | None = None,
        block_size: int = 256,
        max_voices: int = 8,
        seed: int | None = None,
        noise: np.ndarray | None = None,
        noise_mode: str = "instrument",
        queue_size: int = 4096,
        gain_ramp_ms: float = 5.0,
        crossfade_ms: float = 20.0,
        limit: float | None = 1.0,
        voice_instruments: Sequence[int] | None = None,
        inbox_size: int = 4096,
        channels: int = 1,
        voice_pans: Sequence[Sequence[float]] | np.ndarray | None = None,
        limiter_release_ms: float = 250.0,
    ) -> None:
        if isinstance(instruments, Instrument):
            instruments = [instruments]
        instruments = list(instruments)
        if not instruments:
            raise ValueError("Renderer needs at least one instrument")
        for name, value in (("block_size", block_size), ("max_voices", max_voices), ("queue_size", queue_size),
                            ("inbox_size", inbox_size), ("channels", channels)):  # fmt: skip
            if int(value) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {value}")
        if limit is not None and not (math.isfinite(float(limit)) and float(limit) > 0):
            raise ValueError(f"limit must be a positive number or None, got {limit}")
        rate = int(sample_rate or instruments[0].spec.sample_rate)
        self.sample_rate = rate
        self.block_size = int(block_size)
        self.max_voices = int(max_voices)
        self.channels = int(channels)
        if self.channels > MAX_CHANNELS:
            raise ValueError(f"channels must be ≤ {MAX_CHANNELS}, got {channels}")
        pans = self._check_pans(voice_pans)
        if not (math.isfinite(float(limiter_release_ms)) and float(limiter_release_ms) > 0):
            raise ValueError(f"limiter_release_ms must be a positive number, got {limiter_release_ms}")
        self._limit = float(limit) if limit is not None else 0.0
        self._gain_ramp = max(1, round(gain_ramp_ms * 1e-3 * rate))
        crossfade = max(1, round(crossfade_ms * 1e-3 * rate))
        entries = [_Entry(inst, rate) for inst in instruments]
        assign = list(voice_instruments) if voice_instruments is not None else [0] * self.max_voices
        if len(assign) != self.max_voices or any(not 0 <= int(i) < len(entries) for i in assign):
            raise ValueError(f"voice_instruments must give one instrument index in [0, {len(entries)}) per voice")

        # noise: a fixed array for every event, or the seed of fresh noise drawn from a table
        if noise is not None:
            noise = np.ascontiguousarray(noise, dtype=np.float32)
            if noise.ndim != 2:
                raise ValueError(f"fixed noise must be a (K, attack_size) array, got shape {noise.shape}")
            if not np.all(np.isfinite(noise)):
                raise ValueError("fixed noise holds NaN or inf")
        self._noise = noise
        self.noise_mode = check_noise_mode(noise_mode)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        self._seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self._table = np.zeros(0, np.float32)

        # fixed arrays: voices (slots [0, V) and their cross-fade tails [V, 2V)), queue, counters, inbox
        n_slots, q, b = 2 * self.max_voices, int(queue_size), self.block_size
        cap = _Capacity.of(entries)
        self._inbox_pool_size = int(inbox_size) * max(1, cap.p, self.channels)
        c_out = self.channels
        fixed = allocate("fixed", {
            "params": (K.N_PARAMS,), "vmeta": (n_slots, K.N_VMETA), "qtime": (q,), "qvoice": (q,),
            "qkind": (q,), "qlen": (q,), "qseq": (q,), "qused": (q,), "qfree": (q,), "qstate": (K.N_QSTATE,),
            "due": (q,), "rng": (2,), "counters": (K.N_COUNTERS,), "inbox_state": (K.N_INBOX_STATE,),
            "inbox_slots": (int(inbox_size), K.N_SLOT), "vgain": (n_slots, 3), "user_gain": (self.max_voices,),
            "vpan": (n_slots, c_out, 3), "master": (c_out, 3), "limiter": (K.N_LIMITER,),
            "out": (c_out, b), "y": (b,), "vout": (b,), "inbox_pool": (self._inbox_pool_size,),
        })  # fmt: skip
        fv = fixed.views
        fv["params"][:] = (self.max_voices, crossfade, self._gain_ramp, 1)
        fv["vmeta"][:, K.V_INST] = K.NO_INSTRUMENT
        fv["qfree"][:] = np.arange(q)[::-1]
        fv["qstate"][:] = (q, 0, K.NEVER, 0)
        fv["rng"][:] = np.array([self._seed, 0], np.uint64).view(np.int64)
        fv["vpan"][: self.max_voices, :, 0] = pans
        fv["vpan"][: self.max_voices, :, 1] = pans
        fv["vpan"][:, :, 2] = 1.0 / self._gain_ramp
        fv["master"][:] = (1.0, 1.0, 1.0 / self._gain_ramp)
        release = 1.0 - math.exp(-1.0 / (float(limiter_release_ms) * 1e-3 * rate))
        fv["limiter"][:] = (0.0, 1.0, release, 1.0)
        self._fixed = fixed
        self._out = fv["out"][0] if self.channels == 1 else fv["out"]  # mono callers get the (B,) block
        self._reload_lock = threading.Lock()  # producers only: the audio thread never takes it

        bank = self._build_bank(entries, None)
        self._bank = bank  # installed: what the audio thread plays (audio thread writes)
        self._posted = bank  # latest built: what the audio thread installs at the next block (producer writes)
        self._args = bank.args
        self._views = bank.views
        self._time = 0
        self._clock: np.ndarray | None = None  # set by a compiled audio path (render/callback.py) while it plays
        for v, i in enumerate(assign):
            K.apply_message(K.MSG_ASSIGN, v, int(i), 1.0, *self._args)
        self.inbox = Inbox(self, [int(i) for i in assign], int(inbox_size))

    def _check_pans(self, voice_pans) -> np.ndarray:
        """(max_voices, channels) starting placement gains; default voice v → channel v mod channels."""
        if voice_pans is None:
            pans = np.zeros((self.max_voices, self.channels), np.float32)
            pans[np.arange(self.max_voices), np.arange(self.max_voices) % self.channels] = 1.0
            return pans
        try:
            pans = np.asarray(voice_pans, np.float64)
        except (TypeError, ValueError):
            raise ValueError("voice_pans must be an array of numbers") from None
        if pans.shape != (self.max_voices, self.channels):
            raise ValueError(f"voice_pans must have shape ({self.max_voices}, {self.channels}), got {pans.shape}")
        for row in pans:
            self._check_channel_gains(row)
        return pans.astype(np.float32)

    def _check_channel_gains(self, gains) -> np.ndarray:
        try:
            arr = np.asarray(gains, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError("channel gains must be an array of numbers") from None
        if arr.size != self.channels:
            raise ValueError(f"channel gains must have one value per output channel ({self.channels}), got {arr.size}")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > MAX_PAN_GAIN):
            raise ValueError(f"channel gains must be finite and in [0, {MAX_PAN_GAIN}]")
        return arr.astype(np.float32)

    def _check_channel(self, channel) -> int:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise ValueError(f"channel must be an integer, got {channel!r}")
        if not 0 <= int(channel) < self.channels:
            raise ValueError(f"unknown channel {channel}: this renderer has channels 0..{self.channels - 1}")
        return int(channel)

    # ------------------------------------------------------------------ banks
    def _fresh_table(self, attack: int) -> np.ndarray:
        """Uniform noise the fresh bursts read windows of; its length follows the longest attack. The draw is
        a prefix of any longer draw from the same seed, so growing it changes no burst."""
        if self._noise is not None:
            return np.zeros(0, np.float32)
        n = K.NOISE_TABLE + attack
        if self._table.size < n:
            self._table = np.random.default_rng(self._seed).uniform(-1.0, 1.0, n).astype(np.float32)
        return self._table[:n]

    def _build_bank(self, public: list[_Entry], base: _Bank | None) -> _Bank:
        """A bank with ``public`` as instruments 0..n-1, built off the audio thread.

        Its rows also keep every old version a tail may still play: the instruments of ``base`` (the last
        posted bank) that ``public`` replaces (their voices cross-fade at the install), and base's own old
        versions, unless ``base`` is installed and no slot plays them any more (nothing can start playing an
        old version again, so that test cannot go stale). Its sized arrays are base's when they are large
        enough, else new ones the audio thread migrates the state into at the install."""
        rows = list(public)
        if base is not None:
            installed = self._bank is base
            playing = set(self._fixed.views["vmeta"][:, K.V_INST].tolist()) if installed else set()
            for row, entry in enumerate(base.entries):
                if any(entry is x for x in rows):
                    continue
                if installed and row >= base.n_public and row not in playing:
                    continue
                rows.append(entry)
        need = _Capacity.of(rows)
        if self._noise is not None and (self._noise.shape[0] < need.k or self._noise.shape[1] < need.a):
            raise ValueError(f"fixed noise must be (K, attack_size) ≥ ({need.k}, {need.a}) at "
                             f"{self.sample_rate} Hz, got {self._noise.shape}")  # fmt: skip
        if base is not None and base.capacity.covers(need):
            sized, capacity = base.sized, base.capacity
        else:
            capacity = need if base is None else base.capacity.union(need)
            sized = self._allocate_sized(capacity)

        p = [x.playback for x in rows]
        played = [attacks_to_play(x, self.noise_mode, self._noise is not None) for x in p]
        noise = self._noise if self._noise is not None else np.zeros((0, 0), np.float32)
        table = self._fresh_table(need.a)
        flat = lambda parts: np.concatenate([np.asarray(x, np.float32).reshape(-1) for x in parts])  # noqa: E731
        banks = [x.oscillators for x in rows]
        tails, t_off = [], 0
        for b in banks:  # each row's tail offsets, made absolute
            tails.append(b.tail + t_off)
            t_off += int(b.tail[-1])
        cat = lambda name: np.concatenate([getattr(b, name) for b in banks])  # noqa: E731
        arrays = {
            "osc_ku": cat("ku"), "osc_kd": cat("kd"), "osc_cu": cat("cu"), "osc_cd": cat("cd"),
            "osc_tail": np.concatenate(tails), "tail_pr": cat("tail_pr"), "tail_pi": cat("tail_pi"),
            "tail_cr": cat("tail_cr"), "tail_ci": cat("tail_ci"),
            "router": flat(x.router for x in p), "attacks": flat(attacks for attacks, _ in played),
            "mixd": flat(x.mix[:, 0] for x in p), "mixw": flat(x.mix[:, 1] for x in p),
            "gains": flat(x.gains for x in p), "noise": noise, "table": table,
        }  # fmt: skip
        shapes = {name: a.shape for name, a in arrays.items()}
        shapes.update(layout=(K.N_FIELDS, 4), bank_info=(K.N_BANK_INFO,), imeta=(len(rows), K.N_IMETA),
                      irest=(len(rows), need.e))  # fmt: skip
        alloc = allocate("bank", shapes)
        v = alloc.views
        for name, a in arrays.items():
            v[name][...] = a
        offsets = np.zeros(5, np.int64)  # modes, router, attacks, resonances, tail offsets
        for i, x in enumerate(rows):
            v["imeta"][i] = (x.k, x.r, x.e, x.m, x.attack, x.frame, *offsets[:4], played[i][1], offsets[4])
            v["irest"][i, : x.e] = x.rest
            offsets += (x.r * x.e * x.m, x.k * x.r, x.k * x.attack, x.r, x.r * x.e + 1)
        generation = 0 if base is None else base.generation + 1
        v["bank_info"][:] = (generation, len(public), len(rows))
        v["layout"][...] = layout_array(alloc, self._fixed, sized)
        views = SimpleNamespace(**alloc.views, **self._fixed.views, **sized.views)
        return _Bank(generation, tuple(rows), len(public), sized, capacity, alloc,
                     buffer_args(alloc, self._fixed, sized), views)  # fmt: skip

    def _allocate_sized(self, c: _Capacity) -> Allocation:
        s, q, b = 2 * self.max_voices, self._fixed.views["qtime"].shape[0], self.block_size
        ring = _next_pow2(c.a + b)  # a burst may start anywhere in the block and lasts one attack
        return allocate("sized", {
            "state_u": (s, c.gm), "state_d": (s, c.gm), "tail_re": (s, c.t), "tail_im": (s, c.t), "exc": (s, c.k, ring), "ramp_prev": (s, c.e),
            "ramp_target": (s, c.e), "qdata": (q, c.p), "nbuf": (c.a,), "excb": (c.k, b), "dry": (c.r, b),
            "dry_active": (c.r + c.k,), "wet": (c.g, b), "w": (c.e, b),
        })  # fmt: skip

    def _install(self) -> None:
        """Audio thread, at a block boundary: play the latest posted bank. Slots keep their state (moved into
        larger arrays if the bank needed more room) and are renumbered to the new rows; voices whose
        instrument was replaced cross-fade to the new version, their tails ringing out the old one."""
        new, old = self._posted, self._bank
        if new.sized is not old.sized:
            self._migrate(old.sized, new.sized)
        for voice, row in self._renumber(new, old):
            K.apply_message(K.MSG_INSTRUMENT, voice, row, 0.0, *self._args)
        self._bank = new

    def _renumber(self, new, old) -> list[tuple[int, int]]:
        """Point every slot at its instrument's row in ``new`` and take ``new``'s arrays; returns the (voice,
        row) pairs whose instrument was replaced, for the caller to cross-fade (the CUDA renderer logs them)."""
        row_of = {id(x): i for i, x in enumerate(new.entries)}
        vmeta = self._fixed.views["vmeta"]
        swaps = []
        for s in range(vmeta.shape[0]):
            row = int(vmeta[s, K.V_INST])
            if row == K.NO_INSTRUMENT:
                continue
            entry = old.entries[row]
            if s < self.max_voices and new.entries[row] is not entry:
                swaps.append((s, row))
            vmeta[s, K.V_INST] = row_of[id(entry)]  # kept by _build_bank: a KeyError here is a bug
        self._args = new.args
        self._views = new.views
        return swaps

    def _migrate(self, old: Allocation, new: Allocation) -> None:
        """Copy every slot's state into larger sized arrays. The excitation ring is re-indexed: it holds the
        next L samples from the current time at position t mod L, and L may have grown."""
        for name, src in old.views.items():
            dst = new.views[name]
            if name == "exc":
                t = self._time + np.arange(src.shape[2])
                dst[:, : src.shape[1], t & (dst.shape[2] - 1)] = src[:, :, t & (src.shape[2] - 1)]
            else:
                dst[tuple(slice(0, n) for n in src.shape)] = src

    def _sync(self) -> None:
        if self._posted is not self._bank:
            self._install()

    # ------------------------------------------------------------------ hot reload (producer thread)
    def add_instrument(self, instrument: Instrument) -> int:
        """Make ``instrument`` playable and return its index. Callable from the producer thread while the
        audio thread runs: the arrays are built here, the audio thread picks them up at its next block.
        Any sizes (K, R, E, M, attack) work; larger ones than the renderer holds make it allocate larger state
        arrays here, which the audio thread fills once (a copy) at the install. The index is valid at once
        for :attr:`inbox` messages; direct calls on the audio thread see it from their next call."""
        with self._reload_lock:
            entry = _Entry(instrument, self.sample_rate)
            base = self._posted
            public = list(base.entries[: base.n_public]) + [entry]
            self._posted = self._build_bank(public, base)
            return len(public) - 1

    def replace_instrument(self, index: int, instrument: Instrument) -> None:
        """Replace instrument ``index`` by a new version (e.g. a refit). Callable from the producer thread.
        At the audio thread's next block, every voice playing it cross-fades to the new version exactly as
        :meth:`set_instrument` would (old tail rings out over crossfade_ms, no click, no cut); voices on
        other instruments are untouched. Events already queued for those voices with sizes the new version
        does not have are skipped (counted as mismatched)."""
        with self._reload_lock:
            base = self._posted
            index = check_instrument(index, base.n_public)
            entry = _Entry(instrument, self.sample_rate)
            public = list(base.entries[: base.n_public])
            public[index] = entry
            self._posted = self._build_bank(public, base)

    @property
    def instruments(self) -> list[Instrument]:
        """The playable instruments by index, as last added or replaced (the producer's view)."""
        bank = self._posted
        return [x.instrument for x in bank.entries[: bank.n_public]]

    @property
    def playbacks(self) -> list[Playback]:
        bank = self._posted
        return [x.playback for x in bank.entries[: bank.n_public]]

    # ------------------------------------------------------------------ state
    @property
    def time(self) -> int:
        """Absolute sample index of the first sample of the next block (while a compiled audio path plays the
        renderer, its clock: readable from any thread)."""
        clock = self._clock
        return self._time if clock is None else int(clock[0])

    @property
    def counters(self) -> dict[str, int]:
        """Events applied, dropped (queue full), late (applied at the next block start), mismatched (the
        voice changed instrument after scheduling), voice resets (non-finite or huge state), output samples
        scrubbed (non-finite), limited (samples the level cap turned down)
        and inbox_full (inbox messages refused because the inbox was full). A caller
        logs these; the renderer never does."""
        c = self._fixed.views["counters"]
        return {
            "events": int(c[K.C_EVENTS]),
            "dropped": int(c[K.C_DROPPED]),
            "late": int(c[K.C_LATE]),
            "mismatched": int(c[K.C_MISMATCH]),
            "resets": int(c[K.C_RESETS]),
            "scrubbed": int(c[K.C_SCRUBBED]),
            "limited": int(c[K.C_LIMITED]),
            "inbox_full": int(self._fixed.views["inbox_state"][K.IB_FULL]),
        }

    @property
    def pending(self) -> int:
        """Events waiting in the queue (not counting the inbox)."""
        v = self._fixed.views
        return int(v["qtime"].shape[0] - v["qstate"][K.Q_FREE_TOP])

    def voice_instrument(self, voice: int) -> int:
        """The instrument index voice ``voice`` plays now (a snapshot: messages and reloads still waiting
        for the next block are not counted)."""
        return int(self._fixed.views["vmeta"][check_voice(voice, self.max_voices), K.V_INST])

    def _voice_entry(self, voice: int) -> _Entry:
        return self._bank.entries[int(self._fixed.views["vmeta"][voice, K.V_INST])]

    # ------------------------------------------------------------------ for a compiled audio path
    # The interface render/callback.py's AudioPath plays the renderer through (the kernel's arrays in place, the
    # banks, the clock), so that nothing outside this module reaches the renderer's private state.
    @property
    def limit(self) -> float:
        """The clip limit the kernel is called with (0.0: no clip)."""
        return self._limit

    def fixed_view(self, name: str) -> np.ndarray:
        """A field of the fixed group of :data:`kernel.FIELDS` (``out``, ``inbox_state``, ``vmeta``, ...): the
        array itself, which the kernel reads and writes in place (its address never changes)."""
        return self._fixed.views[name]

    @property
    def installed(self) -> _Bank:
        """The bank the audio side plays (its rows, sized arrays and kernel arguments)."""
        return self._bank

    @property
    def posted(self) -> _Bank:
        """The latest bank a reload built; :attr:`installed` until the audio side installs it."""
        return self._posted

    def install_posted(self) -> None:
        """Install a posted reload the plain way, here and now (on the audio thread, or before it starts)."""
        self._sync()

    def attach_clock(self, clock: np.ndarray) -> None:
        """From now on :attr:`time` reads ``clock[0]`` (an audio path's own sample clock, advanced by it)."""
        self._clock = clock

    def adopt(self, bank: _Bank, time: int) -> None:
        """An audio path installed ``bank`` (the posted one) itself, at sample ``time``: take it as installed."""
        self._args, self._views, self._bank = bank.args, bank.views, bank
        self._time = int(time)

    def detach_clock(self, time: int) -> None:
        """The audio path stopped at sample ``time``: a plain renderer again, rendering on from there."""
        self._time = int(time)
        self._clock = None

    # ------------------------------------------------------------------ scheduling (audio thread)
    def control(self, time: int, voice: int, vector) -> bool:
        """Fire an attack on every control dimension at absolute sample ``time``: burst_k = v_k·attack_k·noise.

        ``vector`` has the voice's control_plane_dim non-negative finite values. Returns False when the
        queue was full and the event was dropped (counted). A time already rendered plays at the next block
        start (counted as late). Audio thread only; other threads use :attr:`inbox`."""
        self._sync()
        time = check_time(time)
        voice = check_voice(voice, self.max_voices)
        arr = check_control(vector, self._voice_entry(voice).k)
        return bool(K.queue_event(time, voice, K.EV_CONTROL, arr, *self._args))

    def deform(self, time: int, voice: int, logits, immediate: bool = False) -> bool:
        """New deformation logits (E,) at ``time``: the variant weights ramp linearly from their current value
        to ``deformation_targets(logits)`` over one deformation frame (or jump there when ``immediate``).
        Audio thread only; other threads use :attr:`inbox`."""
        self._sync()
        time = check_time(time)
        voice = check_voice(voice, self.max_voices)
        arr = check_vector(logits, self._voice_entry(voice).e, "deformation logits")
        kind = K.EV_DEFORM_NOW if immediate else K.EV_DEFORM
        return bool(K.queue_event(time, voice, kind, deformation_targets(arr), *self._args))

    def set_gain(self, voice: int, gain: float, ramp_ms: float | None = None) -> None:
        """Voice gain (linear, float32), reached by a linear ramp of ``ramp_ms`` (default gain_ramp_ms) from
        the next block. Audio thread only; other threads use ``inbox.gain``."""
        self._sync()
        voice = check_voice(voice, self.max_voices)
        gain = check_gain(gain)
        K.apply_message(K.MSG_GAIN, voice, self._ramp_samples(ramp_ms), gain, *self._args)

    def _ramp_samples(self, ramp_ms: float | None) -> int:
        if ramp_ms is None:
            return self._gain_ramp
        ramp_ms = float(ramp_ms)
        if not math.isfinite(ramp_ms) or ramp_ms < 0:
            raise ValueError(f"ramp_ms must be finite and ≥ 0, got {ramp_ms}")
        return max(1, round(ramp_ms * 1e-3 * self.sample_rate))

    def set_instrument(self, voice: int, instrument: int) -> None:
        """Swap a voice's instrument from the next block: the old sound fades out over crossfade_ms while the
        new voice (fresh state, resting deformation) fades in. Events already queued for the voice with the
        old instrument's sizes are skipped (counted as mismatched). Audio thread only; other threads use
        ``inbox.instrument``."""
        self._sync()
        voice = check_voice(voice, self.max_voices)
        instrument = check_instrument(instrument, self._bank.n_public)
        K.apply_message(K.MSG_INSTRUMENT, voice, instrument, 0.0, *self._args)
        self.inbox._voice_instrument[voice] = instrument  # what the inbox validates later events against

    def reset(self, voice: int | None = None) -> None:
        """Silence a voice (or all): state, pending excitation and deformation back to rest. Audio thread."""
        self._sync()
        voices = range(self.max_voices) if voice is None else [check_voice(voice, self.max_voices)]
        for v in voices:
            K.apply_message(K.MSG_RESET, v, 0, 0.0, *self._args)

    def set_pan(self, voice: int, gains, ramp_ms: float | None = None) -> None:
        """Where a voice sounds: its gain per output channel (``channels`` values in [0, 16]; see
        :mod:`sensorsynth.render.placement`), each reached by a linear ramp of ``ramp_ms`` (default
        gain_ramp_ms). Audio thread only; other threads use ``inbox.pan``."""
        self._sync()
        voice = check_voice(voice, self.max_voices)
        arr = self._check_channel_gains(gains)
        K.apply_pan(voice, self._ramp_samples(ramp_ms), arr, *self._args)

    def set_output_gain(self, channel: int, gain: float, ramp_ms: float | None = None) -> None:
        """Master gain of one output channel (after the mix, before the level cap), ramped. Audio thread only;
        other threads use ``inbox.output_gain``."""
        self._sync()
        channel = self._check_channel(channel)
        gain = check_gain(gain)
        K.apply_message(K.MSG_MASTER, channel, self._ramp_samples(ramp_ms), gain, *self._args)

    # ------------------------------------------------------------------ the level cap (any thread)
    def set_level_cap(self, cap: float | None) -> None:
        """The limiter's cap, linear (e.g. 10**(-1/20) for -1 dBFS); None or 0 turns the limiter off. Any thread:
        one aligned float32 store, which the audio side reads at its next block."""
        value = 0.0 if cap is None else float(cap)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"the level cap must be a finite number ≥ 0, got {cap}")
        self._fixed.views["limiter"][K.L_CAP] = np.float32(value)

    @property
    def level_cap(self) -> float | None:
        cap = float(self._fixed.views["limiter"][K.L_CAP])
        return cap if cap > 0 else None

    def take_gain_reduction(self) -> float:
        """The least limiter gain (linear, ≤ 1) since the previous call, and start a new count. Any thread (a
        block finishing between the read and the reset can lose its own smaller value: a status figure, not
        an account)."""
        lim = self._fixed.views["limiter"]
        g = float(lim[K.L_MIN])
        lim[K.L_MIN] = np.float32(1.0)
        return g

    # ------------------------------------------------------------------ rendering (audio thread)
    def process(self) -> np.ndarray:
        """Render the next block_size samples (float32; mono: (block_size,), several channels:
        (channels, block_size)) into the renderer's own buffer and return it.

        Drains the inbox first and installs a posted hot reload (a reference swap, plus a one-off state copy
        when a reload needed larger arrays). The compiled block runs without the GIL. The returned array is
        overwritten by the next call."""
        if self._posted is not self._bank:
            self._install()
        self._kernel(self._time, self.block_size, self._limit, *self._args)
        self._time += self.block_size
        return self._out

    def _kernel(self, *args) -> None:
        """First call: compile or load the kernel, then bind its compiled entry point for these argument
        types, which skips numba's per-call type dispatch (about a microsecond, 3 % of a 64-sample block)."""
        K.render_block(*args)
        try:
            sig = tuple(K.render_block.typeof_pyval(a) for a in args)
            self._kernel = K.render_block.overloads[sig].entry_point  # type: ignore[method-assign]
        except (KeyError, AttributeError):  # another numba: keep the dispatcher
            self._kernel = K.render_block  # type: ignore[method-assign]

    def warmup(self) -> None:
        """Compile (or load from numba's cache) every compiled function the audio thread and the inbox use,
        and run one block on the real buffers, so the first real block pays for neither compilation nor
        first touches. Afterwards the renderer is exactly as before: time, voices, queue, counters and the
        noise generator are restored, and the inbox is left alone (its messages wait for the first block).
        Call it on the audio thread, or before that thread starts."""
        self._sync()
        views = {**self._fixed.views, **self._bank.sized.views}
        saved = {name: a.copy() for name, a in views.items() if not name.startswith("inbox_")}
        try:
            views["params"][K.P_DRAIN] = 0
            self._kernel(self._time, self.block_size, self._limit, *self._args)
            K.queue_event(self._time, 0, K.EV_CONTROL, np.zeros(self._voice_entry(0).k, np.float32), *self._args)
            K.apply_message(K.MSG_NOP, 0, 0, 0.0, *self._args)
            K.apply_pan(0, 1, views["vpan"][0, :, 0].copy(), *self._args)
        finally:
            for name, a in saved.items():
                views[name][...] = a
        # the producer's push, on a throwaway ring of the same types
        state = np.zeros(K.N_INBOX_STATE, np.int64)
        K.inbox_push(state, np.zeros((1, K.N_SLOT), np.int64), np.zeros(1, np.float32), 0, 0, 0, 0,
                     np.zeros(1, np.float32))  # fmt: skip

    def render(self, n_samples: int) -> np.ndarray:
        """Convenience: a fresh array of the next n_samples (whole blocks, cut to length); (channels, n) with
        several channels."""
        total = -(-n_samples // self.block_size) * self.block_size
        out = np.empty((self.channels, total), np.float32)
        for i in range(0, total, self.block_size):
            out[:, i : i + self.block_size] = self.process()
        return out[0, :n_samples] if self.channels == 1 else out[:, :n_samples]


class Inbox:
    """Events and voice messages from ONE producer thread to the audio thread, without locks or waiting.

    Every method validates on the calling (producer) thread, raising ValueError for bad input exactly as
    the renderer's own methods do, then writes the message into a preallocated single-producer/single-
    consumer ring and returns True; or returns False, counted as ``inbox_full`` in
    :attr:`Renderer.counters`, when the ring has no room (the audio thread empties it at every block, so a
    full inbox means the producer outruns the audio thread by ``inbox_size`` messages, or the audio thread
    is not running). The audio thread applies the messages at the start of its next block, in posting order:
    events are queued for their sample (late ones play at that block's start, counted as ``late``), gain
    and instrument changes happen at the block start.

    Vectors are validated against the instrument the voice will play when the message is applied, as the
    producer knows it (its own ``instrument`` messages, the last :meth:`Renderer.set_instrument`, and
    instruments added or replaced so far). Payload space is shared: each message takes its vector's length.
    """

    def __init__(self, renderer: Renderer, voice_instruments: list[int], size: int) -> None:
        self._renderer = renderer
        v = renderer._fixed.views
        self._state = v["inbox_state"]
        self._slots = v["inbox_slots"]
        self._pool = v["inbox_pool"]
        self._voices = renderer.max_voices
        self._voice_instrument = voice_instruments
        self.size = size

    def _push(self, kind: int, voice: int, arg: int, generation: int, payload: np.ndarray) -> bool:
        return bool(K.inbox_push(self._state, self._slots, self._pool, kind, voice, arg, generation, payload))

    def _target(self, voice) -> tuple[int, _Bank, _Entry]:
        voice = check_voice(voice, self._voices)
        bank = self._renderer._posted
        return voice, bank, bank.entries[self._voice_instrument[voice]]

    def control(self, time: int, voice: int, vector) -> bool:
        """:meth:`Renderer.control` from the producer thread."""
        time = check_time(time)
        voice, bank, entry = self._target(voice)
        arr = check_control(vector, entry.k)
        return self._push(K.EV_CONTROL, voice, time, bank.generation, arr)

    def deform(self, time: int, voice: int, logits, immediate: bool = False) -> bool:
        """:meth:`Renderer.deform` from the producer thread."""
        time = check_time(time)
        voice, bank, entry = self._target(voice)
        arr = deformation_targets(check_vector(logits, entry.e, "deformation logits"))
        return self._push(K.EV_DEFORM_NOW if immediate else K.EV_DEFORM, voice, time, bank.generation, arr)

    def gain(self, voice: int, gain: float, ramp_ms: float | None = None) -> bool:
        """:meth:`Renderer.set_gain` from the producer thread (applied at the next block start)."""
        voice, bank, _ = self._target(voice)
        payload = np.array([check_gain(gain)], np.float32)
        ramp = self._renderer._ramp_samples(ramp_ms)
        return self._push(K.MSG_GAIN, voice, ramp, bank.generation, payload)

    def instrument(self, voice: int, index: int) -> bool:
        """:meth:`Renderer.set_instrument` from the producer thread; ``index`` may be one
        :meth:`Renderer.add_instrument` has just returned."""
        voice, bank, _ = self._target(voice)
        index = check_instrument(index, bank.n_public)
        ok = self._push(K.MSG_INSTRUMENT, voice, index, bank.generation, np.zeros(0, np.float32))
        if ok:
            self._voice_instrument[voice] = index
        return ok

    def pan(self, voice: int, gains, ramp_ms: float | None = None) -> bool:
        """:meth:`Renderer.set_pan` from the producer thread (applied at the next block start)."""
        voice, bank, _ = self._target(voice)
        arr = self._renderer._check_channel_gains(gains)
        ramp = self._renderer._ramp_samples(ramp_ms)
        return self._push(K.MSG_PAN, voice, ramp, bank.generation, arr)

    def output_gain(self, channel: int, gain: float, ramp_ms: float | None = None) -> bool:
        """:meth:`Renderer.set_output_gain` from the producer thread (applied at the next block start)."""
        r = self._renderer
        channel = r._check_channel(channel)
        payload = np.array([check_gain(gain)], np.float32)
        return self._push(K.MSG_MASTER, channel, r._ramp_samples(ramp_ms), r._posted.generation, payload)

    @property
    def posted(self) -> int:
        """Messages posted so far (the ring's write index): a message numbered below what the audio side has
        taken (the kernel's read index) has been applied or queued."""
        return int(self._state[K.IB_WRITE])

    @property
    def waiting(self) -> int:
        """Messages posted and not yet taken by the audio thread (a snapshot)."""
        return int(self._state[K.IB_WRITE] - self._state[K.IB_READ])
