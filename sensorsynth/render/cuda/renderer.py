"""CudaRenderer: the CPU :class:`~sensorsynth.render.renderer.Renderer`'s API and inbox, rendered on a GPU.

A subclass of the CPU renderer, so every method, the :class:`~sensorsynth.render.renderer.Inbox`, hot reload
(:meth:`add_instrument`, :meth:`replace_instrument`), validation and counters are the CPU renderer's own.
What changes is where the heavy state lives and who renders the block:

- the host keeps the CPU renderer's buffers, with the oscillator state and excitation rings sized to zero
  (they live on the GPU: for ten thousand seed-size voices they are gigabytes); every block the compiled
  control plane (:func:`.plan.plan_block`) drains the inbox, schedules events and writes the block's
  *plan* into pinned host arrays;
- the plan goes to the GPU with asynchronous copies on the renderer's stream, then :mod:`.kernels` run on
  the same stream (one launch renders the block; a second one first when the block replays voice
  messages), then the output block comes back into a pinned array with an asynchronous copy. The host
  waits once per block (the stream's completion), never on a synchronous copy.
  Two plan buffer sets alternate, so with ``latency_blocks=1`` the host plans block n+1 while the GPU
  renders block n (``process()`` then returns the previous block: one block of extra latency for overlap).

Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run on the CPU, in Python, slowly:
the streams and pinned arrays degrade to plain synchronous numpy arrays, and GPU time reads as unknown.

Known difference from the CPU renderer: a voice whose state blows up is cleared and counted on the GPU, but
its deformation ramp is left as it was (the CPU also puts it back at rest); the GPU tells the host a block
later at best, and the host never waits for it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence

import numpy as np

from .. import kernel as K
from ..layout import Allocation, allocate
from ..renderer import Renderer, _Bank, _Capacity, _next_pow2
from . import plan as P

#: Device arrays, by group: "bank" (uploaded at every install of an instrument bank), "state" (each slot's
#: state, sized by the capacity), "plan" (copied from pinned host arrays every block), "io" (output, counters).
DEVICE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("imeta", "bank", "(I, N_IMETA) sizes and offsets of each instrument row (as kernel.FIELDS)"),
    ("pole_re", "bank", "poles, real parts, flat"),
    ("pole_im", "bank", "poles, imaginary parts"),
    ("coef_re", "bank", "oscillator input coefficients, real"),
    ("coef_im", "bank", "imaginary"),
    ("router", "bank", "(K, R) routers, flat"),
    ("attacks", "bank", "(K, A) attack envelopes, flat (the instrument's own noise folded in when it plays it)"),
    ("mixd", "bank", "dry weight per resonance"),
    ("mixw", "bank", "wet weight per resonance"),
    ("gains", "bank", "gain before tanh per resonance"),
    ("noise", "bank", "(K, A) fixed noise, or a (1, 1) placeholder"),
    ("table", "bank", "fresh-noise table, or a 1-sample placeholder"),
    ("state_re", "state", "(S, GM) oscillator state, real"),
    ("state_im", "state", "(S, GM) imaginary"),
    ("exc", "state", "(S, K, L) excitation ring per slot"),
    ("live", "state", "(S,) SILENT or RINGING after the last block (silent slots are skipped)"),
    ("vout", "state", "(S, B) scratch: each slot's block, gain applied, before the sum"),
    ("out", "io", "(B,) the voices' sum (left at zero for the next block by the block's last CUDA block)"),
    ("result", "io", "(B,) the block after the safety stage: what comes back to the host"),
    ("done", "io", "[CUDA blocks finished]: the last one runs the safety stage"),
    ("dcounters", "io", "[voice resets, scrubbed samples]"),
)
P_NDC = 2  # device counters (kernels.N_DCOUNTERS)
BANK_ARRAYS = tuple(name for name, group, _ in DEVICE_FIELDS if group == "bank")


def _cuda():
    from numba import cuda  # noqa: PLC0415 - only here: it must see NUMBA_ENABLE_CUDASIM first

    return cuda


def _sim_flag() -> bool:
    """True when numba.cuda is the CPU simulator."""
    return "simulator" in _cuda().stream.__module__


class CudaRenderer(Renderer):
    """The :class:`Renderer`, rendered by numba.cuda kernels: same constructor, same block API, same inbox.

    Extra parameters: ``device`` (the CUDA device index), ``latency_blocks`` (0: :meth:`process` returns the
    block it rendered; 1: it returns the previous one and lets the GPU render while the host plans the
    next), ``threads`` (threads per voice block; default: 256, or the largest instrument's oscillator groups
    in whole warps when more, at most 1024; each group gets threads // groups lanes), ``shared_floats``
    (shared memory per voice block, in floats: it sets the chunk of samples a voice block works on, at
    R + E + max(R·E, threads) floats a sample; less memory lets more voice blocks share a multiprocessor).
    :attr:`gpu_us` is the GPU time of the last block in µs (None when unknown, as under the simulator).
    """

    supports_instrument_changes = True

    def __init__(self, instruments, sample_rate=None, block_size=256, max_voices=8, seed=None, noise=None,
                 noise_mode="instrument", queue_size=4096, gain_ramp_ms=5.0, crossfade_ms=20.0, limit=1.0,
                 voice_instruments: Sequence[int] | None = None, inbox_size=4096, latency_blocks: int = 0,
                 threads: int | None = None, device: int = 0, shared_floats: int = 6144) -> None:
        cuda = _cuda()
        if not cuda.is_available():
            raise RuntimeError("no CUDA GPU: numba.cuda finds no usable device (set NUMBA_ENABLE_CUDASIM=1 to "
                               "simulate one on the CPU, slowly)")
        if device:
            cuda.select_device(int(device))
        if latency_blocks not in (0, 1):
            raise ValueError(f"latency_blocks must be 0 or 1, got {latency_blocks}")
        if not 1 <= int(shared_floats) <= 12288:  # 48 KiB: more needs an opt-in per kernel
            raise ValueError(f"shared_floats must be in [1, 12288], got {shared_floats}")
        self._latency_blocks = int(latency_blocks)
        self._threads_asked = threads
        self._shared_floats = int(shared_floats)
        self._ops_cap = int(inbox_size) + 2 * int(max_voices) + 64
        self._cuda = cuda
        self._sim = _sim_flag()
        self._stream = cuda.stream()
        self._dev = None  # device arrays, set by _device_setup
        self._n_ops = 0
        self.gpu_us: float | None = None
        self.gpu_us_max = 0.0
        self._gpu_recent: collections.deque[float] = collections.deque(maxlen=1024)
        super().__init__(instruments, sample_rate, block_size, max_voices, seed, noise, noise_mode, queue_size,
                         gain_ramp_ms, crossfade_ms, limit, voice_instruments, inbox_size)
        self._device_setup(self._bank.capacity)
        self._upload_bank(self._bank)

    # ------------------------------------------------------------------ host-side sizes
    def _allocate_sized(self, c: _Capacity) -> Allocation:
        """The CPU renderer's sized arrays, with the oscillator state and the excitation rings zero-wide: they
        live on the GPU. The host keeps ramps, payloads and the (small) scratch its helpers touch."""
        s, q = 2 * self.max_voices, self._fixed.views["qtime"].shape[0]
        return allocate("sized", {
            "state_u": (s, 0), "state_d": (s, 0), "tail_re": (s, 0), "tail_im": (s, 0), "exc": (s, c.k, 0), "ramp_prev": (s, c.e),
            "ramp_target": (s, c.e), "qdata": (q, c.p), "nbuf": (1,), "excb": (1, 1), "dry": (1, 1),
            "dry_active": (1,), "wet": (1, 1), "w": (1, 1),
        })  # fmt: skip

    def _threads(self, c: _Capacity) -> int:
        if self._threads_asked:
            return int(self._threads_asked)
        if self._sim:  # the simulator runs every thread as a Python thread: as few as do the work
            return max(1, min(c.g, 4))
        return min(1024, max(256, -(-c.g // 32) * 32))  # several lanes per oscillator group (8 at seed size)

    def _rows(self, c: _Capacity) -> int:
        """Shared floats per sample of a chunk: dry (R), weights (E), partial wet sums (G · lanes rows)."""
        return c.r + c.e + max(c.g, self._nthreads)

    def _chunk(self, c: _Capacity) -> int:
        per = self._rows(c)
        if per > self._shared_floats:
            raise ValueError(f"an instrument of {c.r} resonances × {c.e} variants at {self._nthreads} threads needs "
                             f"more shared memory than shared_floats={self._shared_floats} (R + E + max(R·E, "
                             "threads) floats per sample)")
        return max(1, min(self.block_size, self._shared_floats // per))

    # ------------------------------------------------------------------ device arrays
    def _device_setup(self, c: _Capacity, old: dict | None = None) -> None:
        """Allocate state and plan arrays for capacity ``c`` (migrating ``old`` state into them)."""
        cuda = self._cuda
        s, q, b = 2 * self.max_voices, self._fixed.views["qtime"].shape[0], self.block_size
        ring = _next_pow2(c.a + b)
        state = {
            "state_re": np.zeros((s, c.gm), np.float32), "state_im": np.zeros((s, c.gm), np.float32),
            "exc": np.zeros((s, c.k, ring), np.float32), "live": np.zeros(s, np.int64),
        }  # fmt: skip
        if old is not None:  # a reload needed larger arrays: copy every slot's state (rare: via the host)
            self._stream.synchronize()
            for name in ("state_re", "state_im", "live"):
                src = old[name].copy_to_host()
                state[name][tuple(slice(0, n) for n in src.shape)] = src
            src = old["exc"].copy_to_host()
            t = self._time + np.arange(src.shape[2])
            state["exc"][:, : src.shape[1], t & (ring - 1)] = src[:, :, t & (src.shape[2] - 1)]
        dev = {name: cuda.to_device(a) for name, a in state.items()}
        dev["vout"] = cuda.device_array((s, b), np.float32)
        for name, init in (("out", np.zeros(b, np.float32)), ("result", np.zeros(b, np.float32)),
                           ("done", np.zeros(1, np.int64)), ("dcounters", np.zeros(P_NDC, np.int64))):
            dev[name] = cuda.to_device(init) if old is None else old[name]
        # The plan tables, packed into one buffer per dtype, the bursts last: one copy per dtype and block
        # (the prefix up to the last burst used; the unused room of the small tables before it costs less
        # than another copy call).
        packing = {
            np.int64: (("slot_i", (s, P.N_SI)), ("ops", (self._ops_cap, P.N_OP)), ("chg_i", (q, P.N_CI)),
                       ("burst_i", (q, P.BI_NOISE + c.k))),
            np.float32: (("slot_f", (s, P.SF_RAMP + 2 * c.e)), ("chg_f", (q, 2 * c.e)), ("burst_f", (q, c.k))),
        }  # fmt: skip
        offsets: dict[str, int] = {}
        flat_size = {}
        for dt, sections in packing.items():
            o = 0
            for name, shape in sections:
                offsets[name] = o
                o += int(np.prod(shape))
            flat_size[dt] = o
        shapes = {name: shape for sections in packing.values() for name, shape in sections}

        def views(flat: dict) -> dict:
            return {name: flat[dt][offsets[name] : offsets[name] + int(np.prod(shape))].reshape(shape)
                    for dt, sections in packing.items() for name, shape in sections}

        # two pinned sets: the host writes one while the other's copies may still be in flight
        flats = [{dt: cuda.pinned_array(n, dt) for dt, n in flat_size.items()} for _ in range(2)]
        pinned = [{**views(f), "flat_i": f[np.int64], "flat_f": f[np.float32]} for f in flats]
        self._set = getattr(self, "_set", 0)
        if old is not None and self._n_ops:  # ops logged against the old arrays stay pending
            pinned[self._set]["ops"][: self._n_ops] = self._host_plan["ops"][: self._n_ops]
        for d in pinned:
            d["counts"] = np.zeros(3, np.int64)
        self._pinned = pinned
        self._host_plan = pinned[self._set]
        dflat = {dt: cuda.device_array(n, dt) for dt, n in flat_size.items()}
        dev.update(views(dflat))
        dev["flat_i"], dev["flat_f"] = dflat[np.int64], dflat[np.float32]
        self._plan_offsets = offsets
        self._plan_widths = {name: shape[1] for name, shape in shapes.items()}
        self._out_host = [cuda.pinned_array(b, np.float32) for _ in range(2)]
        self._dc_host = cuda.pinned_array(P_NDC, np.int64)
        self._dc_host[:] = 0
        self._capacity = c
        self._nthreads = self._threads(c)
        self._chunk_n = self._chunk(c)
        self._inflight: list[int] = []  # plan sets whose block has been launched and not yet collected
        self._events = [(cuda.event(), cuda.event()) for _ in range(2)]
        self._dev = dev
        for name in BANK_ARRAYS:  # a re-setup keeps the uploaded bank
            if old is not None and name in old:
                dev[name] = old[name]

    def _upload_bank(self, bank: _Bank) -> None:
        """The bank's read-only arrays to the GPU, on the stream (ordered before the next block's kernels)."""
        cuda, st, v = self._cuda, self._stream, bank.alloc.views
        # the GPU runs the model's complex one-pole form (it has arithmetic to spare; the CPU bank holds the
        # real second-order form of kernel.oscillator_bank instead)
        poles = np.concatenate([x.playback.poles.reshape(-1) for x in bank.entries])
        coefs = np.concatenate([x.playback.coef.reshape(-1) for x in bank.entries])
        complex_form = {"pole_re": poles.real, "pole_im": poles.imag, "coef_re": coefs.real, "coef_im": coefs.imag}
        arrays = {name: complex_form[name] if name in complex_form else v[name] for name in BANK_ARRAYS}
        if arrays["noise"].size == 0:
            arrays["noise"] = np.zeros((1, 1), np.float32)
        if arrays["table"].size == 0:
            arrays["table"] = np.zeros(1, np.float32)
        for name, a in arrays.items():
            self._dev[name] = cuda.to_device(np.ascontiguousarray(a), stream=st)

    # ------------------------------------------------------------------ the CPU renderer's hooks
    def _install(self) -> None:
        """The CPU renderer's install (renumbered rows, cross-fades of replaced instruments), logged, plus the
        new bank on the GPU and, when it needed larger arrays, the GPU state migrated into them."""
        new, old = self._posted, self._bank
        if new.sized is not old.sized:
            self._migrate(old.sized, new.sized)  # the host's part: ramps and payloads
        if not self._capacity.covers(new.capacity):
            self._flush_inflight()
            self._device_setup(new.capacity.union(self._capacity), old=self._dev)
        for voice, row in self._renumber(new, old):
            self._apply(K.MSG_INSTRUMENT, voice, row, 0.0)
        self._bank = new
        self._upload_bank(new)

    def _apply(self, kind: int, voice: int, arg: int, value: float) -> None:
        if self._n_ops >= self._ops_cap - 1:  # many direct calls between two blocks: replay them now
            self._flush_ops()
        self._n_ops = int(P.call(P.apply_logged, kind, voice, arg, value, self._host_plan["ops"], self._n_ops,
                                 *self._args))

    def set_instrument(self, voice: int, instrument: int) -> None:
        from ..checks import check_instrument, check_voice

        self._sync()
        voice = check_voice(voice, self.max_voices)
        instrument = check_instrument(instrument, self._bank.n_public)
        self._apply(K.MSG_INSTRUMENT, voice, instrument, 0.0)
        self.inbox._voice_instrument[voice] = instrument

    def reset(self, voice: int | None = None) -> None:
        from ..checks import check_voice

        self._sync()
        voices = range(self.max_voices) if voice is None else [check_voice(voice, self.max_voices)]
        for v in voices:
            self._apply(K.MSG_RESET, v, 0, 0.0)

    def _flush_ops(self) -> None:
        """Run the logged state operations now (they never wait for a block beyond the ops capacity)."""
        from .kernels import ops_kernel

        self._flush_inflight()
        d, h = self._dev, self._host_plan
        n = self._n_ops
        end = self._plan_offsets["ops"] + n * P.N_OP
        d["flat_i"][:end].copy_to_device(h["flat_i"][:end], stream=self._stream)
        ops_kernel[1, self._nthreads, self._stream](d["ops"], n, self.max_voices, d["state_re"], d["state_im"],
                                                    d["exc"], d["live"])
        self._stream.synchronize()
        self._n_ops = 0

    # ------------------------------------------------------------------ rendering
    def _kernel(self, t0, n, limit, *args) -> None:
        """One block: plan on the host, then copies and kernels on the stream; the output lands in the CPU
        renderer's ``out`` buffer (this block's, or the previous one's with latency_blocks=1)."""
        from .kernels import block_kernel, ops_kernel

        st, d = self._stream, self._dev
        h = self._host_plan
        counts = h["counts"]
        if self._n_ops > self._ops_cap - self.inbox.size - 1:
            self._flush_ops()
        P.call(P.plan_block, t0, n, self._n_ops, *args, h["ops"], h["slot_i"], h["slot_f"], h["burst_i"],
               h["burst_f"], h["chg_i"], h["chg_f"], counts)
        self._n_ops = 0
        n_ops, n_bursts, n_chg = int(counts[P.N_OPS]), int(counts[P.N_BURSTS]), int(counts[P.N_CHANGES])
        start, stop = self._events[self._set]
        start.record(st)
        off, width = self._plan_offsets, self._plan_widths
        end_i = off["burst_i"] + n_bursts * width["burst_i"] if n_bursts else off["chg_i"] + n_chg * width["chg_i"]
        end_f = off["burst_f"] + n_bursts * width["burst_f"] if n_bursts else off["chg_f"] + n_chg * width["chg_f"]
        d["flat_i"][:end_i].copy_to_device(h["flat_i"][:end_i], stream=st)
        d["flat_f"][:end_f].copy_to_device(h["flat_f"][:end_f], stream=st)
        nt = self._nthreads
        if n_ops:
            ops_kernel[1, nt, st](d["ops"], n_ops, self.max_voices, d["state_re"], d["state_im"], d["exc"],
                                  d["live"])
        chunk = self._chunk_n
        shared = self._rows(self._capacity) * chunk * 4
        block_kernel[2 * self.max_voices, nt, st, shared](
            t0, n, chunk, np.float32(limit), d["slot_i"], d["slot_f"], d["burst_i"], d["burst_f"], d["chg_i"],
            d["chg_f"], d["imeta"], d["pole_re"], d["pole_im"], d["coef_re"], d["coef_im"], d["router"],
            d["attacks"], d["noise"], d["table"], d["mixd"], d["mixw"], d["gains"], d["state_re"], d["state_im"],
            d["exc"], d["live"], d["vout"], d["out"], d["result"], d["done"], d["dcounters"])
        d["result"].copy_to_host(self._out_host[self._set], stream=st)
        d["dcounters"].copy_to_host(self._dc_host, stream=st)
        stop.record(st)
        self._inflight.append(self._set)
        self._set ^= 1
        self._host_plan = self._pinned[self._set]
        if len(self._inflight) > self._latency_blocks:
            self._collect(n)
        else:
            self._out[:] = 0.0  # the first block with latency_blocks=1: nothing rendered yet

    def _collect(self, n: int) -> None:
        """Wait for the oldest launched block and put its output in the CPU renderer's ``out`` buffer."""
        which = self._inflight.pop(0)
        start, stop = self._events[which]
        stop.synchronize()
        self._out[:n] = self._out_host[which][:n]
        if not self._sim:
            us = 1000.0 * start.elapsed_time(stop)
            self.gpu_us = us
            self.gpu_us_max = max(self.gpu_us_max, us)
            self._gpu_recent.append(us)

    def gpu_status(self) -> dict:
        """GPU time per block (µs, from CUDA events around the block's copies and kernels): the last block,
        median and p99 of the last 1024, the maximum; None for each under the simulator (no timing there)."""
        recent = list(self._gpu_recent)  # one C-level copy: the render thread may append meanwhile
        recent = np.array(recent) if recent else None
        rnd = lambda x: None if x is None else round(float(x), 1)  # noqa: E731
        return {
            "last": rnd(self.gpu_us), "p50": rnd(None if recent is None else np.percentile(recent, 50)),
            "p99": rnd(None if recent is None else np.percentile(recent, 99)),
            "max": rnd(self.gpu_us_max if recent is not None else None), "simulated": self._sim,
        }

    def _flush_inflight(self) -> None:
        while self._inflight:
            self._collect(self.block_size)

    @property
    def counters(self) -> dict[str, int]:
        c = super().counters
        c["resets"] += int(self._dc_host[0])
        c["scrubbed"] += int(self._dc_host[1])
        return c

    def warmup(self) -> None:
        """The CPU renderer's warm-up (one silent block on the real buffers, everything restored), which here
        also compiles the GPU kernels (JIT on first launch) and the host plan. Call it before playing: the
        host's state is restored afterwards, the GPU's is not (a silent renderer's block changes nothing)."""
        from .kernels import ops_kernel

        t = time.perf_counter()
        super().warmup()
        self._flush_inflight()
        # what a later instrument change or reset runs, compiled now rather than on the audio thread then
        n = int(P.call(P.apply_logged, K.MSG_NOP, 0, 0, 0.0, self._host_plan["ops"], self._n_ops, *self._args))
        assert n == self._n_ops  # a no-op logs nothing
        d = self._dev
        ops_kernel[1, self._nthreads, self._stream](d["ops"], 0, self.max_voices, d["state_re"], d["state_im"],
                                                    d["exc"], d["live"])
        self._stream.synchronize()
        self.gpu_us, self.gpu_us_max = None, 0.0  # the warm-up block's GPU time holds the compilation's wait
        self._gpu_recent.clear()
        self.warmup_s = time.perf_counter() - t

