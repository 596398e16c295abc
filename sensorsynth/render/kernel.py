"""The compiled per-sample recursion of the resonance model, for every voice of a renderer at once.

One call of :func:`render_block` renders one block. In order: it drains the inbox (events and messages
another thread posted), applies the voice messages (gain, instrument, reset) and queues the events; then it
applies the events that fall inside the block, and, per voice slot, gathers excitation, routes it to
resonances (dry), runs every oscillator's recursion (the model's one-pole complex ``s[n] = p·s[n-1] +
c·dry[n]``, heard as Re(s), run as the equivalent real second-order filter: :func:`oscillator_coefficients`;
wet = their sum), cross-fades variants with the deformation weights, blends dry and wet, saturates with
tanh and sums into every output channel with a per-voice gain ramp and a per-voice, per-channel placement
gain (one render per voice, one multiply-add per channel and sample); then each channel's master gain, and
finally the safety stage scrubs, limits to the level cap and clips the mix. Nothing here
allocates, reads a clock, logs or takes a lock, and :func:`render_block` runs without the GIL
(``nogil=True``), so a host's other Python threads keep running while a block renders.

Arrays. Every array is a view into one of five buffers, described by one table, :data:`FIELDS` (name, group,
dtype, ndim). :mod:`sensorsynth.render.layout` packs the buffers from the table; the kernel entries rebuild
the views with :func:`unpack`, an njit function generated from the same table, into an :data:`Arrays`
namedtuple, so the code reads ``a.qtime[q]`` and no argument list is written out by hand. The table lives
here, not in layout.py, because numba's on-disk cache is keyed on this file alone: a table elsewhere could
change under a cached kernel.

Threads. One producer thread writes the inbox (:func:`inbox_push`); the audio thread reads it at the start of
:func:`render_block`. The inbox is a single-producer/single-consumer ring: the producer writes a slot and
its payload, then publishes the write index (one int64 store, after a release fence); the consumer reads up
to that index (after an acquire fence), then publishes its read index the same way. No locks, no waiting:
a full inbox refuses the message and counts it. Everything else here belongs to the audio thread.

Loop order for SIMD: for each group of M oscillators, for each four samples of the block, an inner loop over
the M contiguous oscillators (coefficient and state arrays) that advances each oscillator four samples
with its state and parameters held in registers: LLVM vectorises it (AVX-512/AVX2) with reassociated
horizontal sums for the wet outputs. One sample per pass was bound by loads/stores (2.5x slower).
``error_model="numpy"`` everywhere: Python's ZeroDivisionError check on float division blocks vectorisation.
``fastmath`` is limited to reassociation/contraction/nsz/arcp: no ``nnan``/``ninf`` (the safety checks must
see NaN and inf) and no approximate functions. The tanh is our own branch-free, vectorisable form (libm's
tanhf is a scalar call, ~30 ns here, more than all oscillators). The orchestration helpers below are inlined
into the entries (``inline="always"``): they take the whole :data:`Arrays` and would otherwise pass hundreds
of scalars per call; its arrays are non-owning views (see :func:`_view1`), or every inlined call would pay
an atomic reference-count update per array.

(Past 500 lines on purpose: the field table, the per-sample recursion and the inbox drain are one compiled
unit; numba inlines them into ``render_block``, and its on-disk cache is per file, so splitting the file would
let a cached caller keep a stale copy of a changed helper.)
"""

from __future__ import annotations

from collections import namedtuple
from typing import NamedTuple

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

FAST = {"nsz", "arcp", "contract", "reassoc"}
EXACT = {"contract"}

# imeta columns: sizes of an instrument row, then offsets of its slices of the flat bank arrays, then whether
# its attacks already carry the instrument's own noise (1) or take fresh or fixed noise at each burst (0),
# then the offset of its G + 1 entries of osc_tail
I_K, I_R, I_E, I_M, I_A, I_F, I_MODE, I_ROUTER, I_ATT, I_RES, I_OWNED, I_TAIL = range(12)
N_IMETA = 12
# vmeta columns: instrument row, sample where the deformation ramp started, resonate() status of the last
# block (SILENT or RINGING), sample until which the excitation ring may hold bursts
V_INST, V_RAMP_START, V_LIVE, V_EXC_UNTIL = range(4)
N_VMETA = 4
# params: first tail slot (slots ≥ it are cross-fade tails), cross-fade and gain-ramp lengths in samples,
# whether render_block drains the inbox (warm-up runs without)
P_N_MAIN, P_CROSSFADE, P_GAIN_RAMP, P_DRAIN = range(4)
N_PARAMS = 4
# bank_info: generation (a message validated against a newer bank waits for it), public instruments
# (rows ≥ it are old versions kept for the tails still ringing), rows
B_GENERATION, B_PUBLIC, B_ROWS = range(3)
N_BANK_INFO = 3
# qstate: top of the free-slot stack, next arrival number, earliest queued time, slot high-water mark
Q_FREE_TOP, Q_NEXT_SEQ, Q_EARLIEST, Q_HIGH = range(4)
N_QSTATE = 4
# rng (uint64 bits in int64): seed, events drawn so far
R_SEED, R_COUNT = range(2)
# inbox_state: write index (producer), read index (consumer), refused messages (producer), payload write
# position (producer); indices count up forever, slot = index % N
IB_WRITE, IB_READ, IB_FULL, IB_POOL_WRITE = range(4)
N_INBOX_STATE = 4
# inbox slot columns
M_KIND, M_VOICE, M_ARG, M_LEN, M_OFF, M_GEN = range(6)
N_SLOT = 6
# kinds. Events are queued and applied at their sample (M_ARG = time); messages apply at the block start.
EV_CONTROL, EV_DEFORM, EV_DEFORM_NOW = 0, 1, 2
MSG_GAIN = 3  # M_ARG = ramp samples, payload [gain]
MSG_INSTRUMENT = 4  # M_ARG = public instrument index: cross-fade the voice to it
MSG_RESET = 5  # silence the voice
MSG_ASSIGN = 6  # M_ARG = instrument row, payload [gain]: put the voice on it at once (construction)
MSG_NOP = 7  # nothing (warm-up compiles the message path with it)
MSG_PAN = 8  # M_ARG = ramp samples, payload: the voice's gain per output channel (missing channels: 0)
MSG_MASTER = 9  # M_VOICE = output channel, M_ARG = ramp samples, payload [gain]: that channel's master gain
# counters
C_RESETS, C_DROPPED, C_LATE, C_SCRUBBED, C_MISMATCH, C_EVENTS, C_LIMITED = range(7)
N_COUNTERS = 7
# limiter columns: the cap (linear; ≤ 0: no limiter), the gain now, the release coefficient per sample, the
# smallest gain since the host last read it (the host resets it to 1)
L_CAP, L_GAIN, L_RELEASE, L_MIN = range(4)
N_LIMITER = 4
LIMITER_SNAP = 1e-4  # a release this close to unity gain (-0.0009 dB) is unity: no multiply per sample for ever after

# what resonate() found: every state flushed to 0, some state left, some state not finite or huge
SILENT, RINGING, BLOWN_UP = 0, 1, 2

# sentinels
NO_INSTRUMENT = -1  # vmeta[s, V_INST] of a free slot
RAMP_NEVER = -(1 << 40)  # ramp start of a voice at rest: long ago, so its weights sit at their target
NEVER = 1 << 62  # qstate[Q_EARLIEST] of an empty queue: later than any block

SCAN_EVERY = 4  # resonate() looks at every oscillator state (flush, silence, blow-up) one block in this many
FLUSH = 1e-18  # oscillator state below this (|re|+|im|) is set to 0: no denormals, idle voices cost nothing
STATE_LIMIT = 1e8  # a voice whose oscillator state exceeds this (or is not finite) is reset
MIN_STEP = 1e-12  # smallest gain step per sample: a ramp to the value it already has still ends

# tanh: odd Taylor series below 0.55, exp-based above: exp(z) = poly(f)·2^k, 2^k built from the bits of -k
_T1, _T3, _T5, _T7 = 1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0
_T9, _T11, _T13, _T15 = 62.0 / 2835.0, -1382.0 / 155925.0, 21844.0 / 6081075.0, -929569.0 / 638512875.0
LOG2E = 1.4426950408889634
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4


# ------------------------------------------------------------------------------------- the field table
F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)


class Field(NamedTuple):
    name: str
    group: str  # "bank" | "fixed" | "sized" (see sensorsynth.render.layout)
    dtype: np.dtype
    ndim: int
    doc: str


# S = voice slots (2·voices: each voice and its cross-fade tail), V = voices, Q = queue slots, B = block,
# I = instrument rows of the bank, N = inbox slots, K/R/E/G/GM/A/P = the largest control, resonance,
# variant, group, oscillator, attack and event-payload sizes the arrays were sized for, L = excitation ring.
FIELDS: tuple[Field, ...] = (
    # bank: instruments, read-only for the kernel ("layout" must stay the first int64 bank field)
    Field("layout", "bank", I64, 2, "(n_fields, 4): offset and up to 3 dims of every field"),
    Field("bank_info", "bank", I64, 1, "[generation, public instruments, rows]"),
    Field("imeta", "bank", I64, 2, "(I, N_IMETA) sizes and offsets of each instrument row"),
    Field("osc_tail", "bank", I64, 1, "every row's G + 1 tail offsets into tail_*, absolute (see oscillator_bank)"),
    Field("osc_ku", "bank", F32, 1, "every row's G·M oscillators, flat: ku (see oscillator_bank)"),
    Field("osc_kd", "bank", F32, 1, "kd"),
    Field("osc_cu", "bank", F32, 1, "cu"),
    Field("osc_cd", "bank", F32, 1, "cd"),
    Field("tail_pr", "bank", F32, 1, "every row's tail oscillators: poles, real parts"),
    Field("tail_pi", "bank", F32, 1, "imaginary parts"),
    Field("tail_cr", "bank", F32, 1, "input coefficients, real parts"),
    Field("tail_ci", "bank", F32, 1, "imaginary parts"),
    Field("router", "bank", F32, 1, "(K, R) routers, flat"),
    Field("attacks", "bank", F32, 1, "(K, A) attack envelopes, flat"),
    Field("mixd", "bank", F32, 1, "dry weight per resonance"),
    Field("mixw", "bank", F32, 1, "wet weight per resonance"),
    Field("gains", "bank", F32, 1, "gain before tanh per resonance"),
    Field("irest", "bank", F32, 2, "(I, E) resting deformation weights of each row"),
    Field("noise", "bank", F32, 2, "(K, A) fixed noise, or (0, 0) for fresh noise"),
    Field("table", "bank", F32, 1, "fresh-noise table (NOISE_TABLE + A,), or empty"),
    # fixed: shapes never change
    Field("params", "fixed", I64, 1, "[tail slots start, cross-fade samples, gain-ramp samples, drain inbox]"),
    Field("vmeta", "fixed", I64, 2, "(S, N_VMETA) instrument row, ramp start, live, excitation until"),
    Field("qtime", "fixed", I64, 1, "(Q,) event sample time"),
    Field("qvoice", "fixed", I64, 1, "(Q,) event voice"),
    Field("qkind", "fixed", I64, 1, "(Q,) event kind"),
    Field("qlen", "fixed", I64, 1, "(Q,) payload length"),
    Field("qseq", "fixed", I64, 1, "(Q,) arrival number (ties in time keep arrival order)"),
    Field("qused", "fixed", I64, 1, "(Q,) 1 where the slot holds an event"),
    Field("qfree", "fixed", I64, 1, "(Q,) free-slot stack"),
    Field("qstate", "fixed", I64, 1, "[free-stack top, next sequence, earliest time, high-water mark]"),
    Field("due", "fixed", I64, 1, "(Q,) scratch: events of this block in order"),
    Field("rng", "fixed", I64, 1, "[seed, event counter], uint64 bits"),
    Field("counters", "fixed", I64, 1, "(N_COUNTERS,)"),
    Field("inbox_state", "fixed", I64, 1, "[write, read, full count, payload write]"),
    Field("inbox_slots", "fixed", I64, 2, "(N, N_SLOT) kind, voice, time/arg, length, payload offset, generation"),
    Field("vgain", "fixed", F32, 2, "(S, 3) voice gain: current, target, step per sample"),
    Field("user_gain", "fixed", F32, 1, "(V,) gain last asked for each voice"),
    Field("vpan", "fixed", F32, 3, "(S, C, 3) voice gain per output channel (placement): current, target, step"),
    Field("master", "fixed", F32, 2, "(C, 3) master gain per output channel: current, target, step"),
    Field("limiter", "fixed", F32, 1, "(N_LIMITER,) [cap, gain, release per sample, least gain since read]"),
    Field("out", "fixed", F32, 2, "(C, B) the block process() returns, one row per output channel"),
    Field("y", "fixed", F32, 1, "(B,) scratch: one resonance"),
    Field("vout", "fixed", F32, 1, "(B,) scratch: one voice"),
    Field("inbox_pool", "fixed", F32, 1, "payload ring of the inbox"),
    # sized: by the largest instrument
    Field("state_u", "sized", F32, 2, "(S, GM) oscillator state: u[n-1]"),
    Field("state_d", "sized", F32, 2, "(S, GM) oscillator state: d[n-1] = u[n-1] - u[n-2]"),
    Field("tail_re", "sized", F32, 2, "(S, T) tail oscillator state, real"),
    Field("tail_im", "sized", F32, 2, "(S, T) imaginary"),
    Field("exc", "sized", F32, 3, "(S, K, L) excitation ring per slot and control dimension"),
    Field("ramp_prev", "sized", F32, 2, "(S, E) deformation weights at the ramp start"),
    Field("ramp_target", "sized", F32, 2, "(S, E) deformation weights the ramp heads to"),
    Field("qdata", "sized", F32, 2, "(Q, P) event payloads"),
    Field("nbuf", "sized", F32, 1, "(A,) scratch: one burst"),
    Field("excb", "sized", F32, 2, "(K, B) scratch: this block's excitation"),
    Field("dry", "sized", F32, 2, "(R, B) scratch: excitation routed to resonances"),
    Field("dry_active", "sized", F32, 1, "(R + K,) scratch: 1 where a dry row (then an excb row) is non-zero"),
    Field("wet", "sized", F32, 2, "(G, B) scratch: oscillator group outputs"),
    Field("w", "sized", F32, 2, "(E, B) scratch: deformation weights"),
)  # fmt: skip

N_FIELDS = len(FIELDS)
SLOT = {f.name: i for i, f in enumerate(FIELDS)}
GROUPS = ("bank", "fixed", "sized")
# the kernel's buffer arguments, in order: one per (group, dtype) that the table uses
BUFFERS: tuple[tuple[str, np.dtype], ...] = tuple(
    (g, dt) for g in GROUPS for dt in (F32, I64) if any(f.group == g and f.dtype == dt for f in FIELDS)
)
BUFFER_NAMES = tuple(f"{g}_{'f' if dt == F32 else 'q'}" for g, dt in BUFFERS)

Arrays = namedtuple("Arrays", [f.name for f in FIELDS])  # type: ignore[misc]  # numba types it field by field

if FIELDS[0].name != "layout" or ("bank", I64) not in BUFFERS:
    raise AssertionError("the layout must be the first field of the int64 bank buffer")
if len(set(SLOT)) != N_FIELDS:
    raise AssertionError("field names must be unique")


@intrinsic
def _data_at(typingctx, buf, offset):
    """Pointer to buf[offset] (a 1-d contiguous buffer)."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.gep(ary.data, [args[1]])

    return types.CPointer(buf.dtype)(buf, offset), codegen


# The views are non-owning arrays (carray over the buffer's memory, no reference count). Ordinary views
# share their buffer's reference count, and numba increments and decrements it, atomically, for every
# array of the Arrays tuple each time an inlined helper binds it: ~2000 atomic operations per voice and
# block, a third of a 64-sample block. The buffers are the entry's arguments, so they outlive every view.
@njit(cache=True, inline="always")
def _view1(buf, lay, i):
    return carray(_data_at(buf, lay[i, 0]), (lay[i, 1],))


@njit(cache=True, inline="always")
def _view2(buf, lay, i):
    return carray(_data_at(buf, lay[i, 0]), (lay[i, 1], lay[i, 2]))


@njit(cache=True, inline="always")
def _view3(buf, lay, i):
    return carray(_data_at(buf, lay[i, 0]), (lay[i, 1], lay[i, 2], lay[i, 3]))


def _unpack_source() -> str:
    """Python source of ``unpack(<buffers>) -> Arrays``: one view per row of the table."""
    buf_of = dict(zip(BUFFERS, BUFFER_NAMES))
    lines = [f"def unpack({', '.join(BUFFER_NAMES)}):"]
    lines.append(f"    lay = carray(_data_at({buf_of['bank', I64]}, 0), ({N_FIELDS}, 4))")
    lines.append("    return Arrays(")
    for i, f in enumerate(FIELDS):
        lines.append(f"        _view{f.ndim}({buf_of[f.group, f.dtype]}, lay, {i}),  # {f.name}")
    lines.append("    )")
    return "\n".join(lines) + "\n"


def _make_unpack():
    namespace = {"Arrays": Arrays, "carray": carray, "_data_at": _data_at, "_view1": _view1, "_view2": _view2,
                 "_view3": _view3}
    exec(compile(_unpack_source(), "<sensorsynth.render.kernel.unpack>", "exec"), namespace)  # noqa: S102
    # generated code has no file to cache against; it is inlined into the (cached) entries below
    return njit(inline="always")(namespace["unpack"])


unpack = _make_unpack()


# ---------------------------------------------------------------------------------- memory ordering
@intrinsic
def _fence_acquire(typingctx):
    """Loads after this fence see at least what was published before the index loaded before it."""

    def codegen(context, builder, signature, args):
        builder.fence("acquire")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _fence_release(typingctx):
    """Loads and stores before this fence are done before any store after it is seen by another thread.
    (Both fences cost nothing on x86, where they only stop the compiler from reordering; on ARM they are
    the barriers that make the ring correct.)"""

    def codegen(context, builder, signature, args):
        builder.fence("release")
        return context.get_dummy_value()

    return types.void(), codegen


# -------------------------------------------------------------------------------------------- math
@njit(cache=True, fastmath=EXACT, error_model="numpy", inline="always")
def tanh1(v: np.float32) -> np.float32:
    """tanh(v) in float32, absolute error ~1e-7, branch-free (no calls, no table: a gather would stop the
    vectoriser), so that a loop calling it vectorises. NaN passes through, ±inf gives ±1."""
    a = min(abs(v), np.float32(9.0))
    a2 = a * a
    small = a * (
        np.float32(_T1)
        + a2
        * (
            np.float32(_T3)
            + a2
            * (
                np.float32(_T5)
                + a2
                * (
                    np.float32(_T7)
                    + a2
                    * (
                        np.float32(_T9)
                        + a2 * (np.float32(_T11) + a2 * (np.float32(_T13) + a2 * np.float32(_T15)))
                    )
                )
            )
        )
    )
    z = np.float32(-2.0) * a
    kf = np.floor(z * np.float32(LOG2E) + np.float32(0.5))
    f = (z - kf * np.float32(LN2_HI)) - kf * np.float32(LN2_LO)
    p = np.float32(1.0) + f * (
        np.float32(1.0)
        + f
        * (
            np.float32(0.5)
            + f
            * (
                np.float32(1.0 / 6.0)
                + f
                * (
                    np.float32(1.0 / 24.0)
                    + f * (np.float32(1.0 / 120.0) + f * (np.float32(1.0 / 720.0) + f * np.float32(1.0 / 5040.0)))
                )
            )
        )
    )
    # 2^kf for kf in [-26, 0] from the bits of -kf: exact, branch-free, no table gather
    b = np.int32(-kf)
    s2 = np.float32(1.0)
    s2 = s2 * (np.float32(0.5) if (b & 1) else np.float32(1.0))
    s2 = s2 * (np.float32(0.25) if (b & 2) else np.float32(1.0))
    s2 = s2 * (np.float32(2.0**-4) if (b & 4) else np.float32(1.0))
    s2 = s2 * (np.float32(2.0**-8) if (b & 8) else np.float32(1.0))
    s2 = s2 * (np.float32(2.0**-16) if (b & 16) else np.float32(1.0))
    e = p * s2
    big = (np.float32(1.0) - e) / (np.float32(1.0) + e)
    t = small if a < np.float32(0.55) else big
    t = t if v >= 0 else -t
    return t if v == v else v


@njit(cache=True, fastmath=EXACT, error_model="numpy")
def tanh_inplace(x: np.ndarray, n: int) -> None:
    """x[:n] = tanh1(x[:n])."""
    for i in range(n):
        x[i] = tanh1(x[i])


@njit(cache=True, fastmath=FAST, error_model="numpy")
def block_peak(x: np.ndarray, n: int) -> float:
    """max |x[:n]|, or inf when some sample is not finite: one vectorised pass (the safety stage's and the
    voice check's per-sample branches cost more than a tenth of a block's work outside the oscillators)."""
    peak = np.float32(0.0)
    bad = 0
    for j in range(n):
        v = x[j]
        m = abs(v)
        peak = m if m > peak else peak
        bad += 0 if v - v == np.float32(0.0) else 1  # NaN and ±inf (no nnan/ninf flags: not folded)
    return np.inf if bad else np.float64(peak)


@njit(cache=True, inline="always")
def _hash32(x: np.uint64) -> np.uint64:
    """A 32-bit integer mixer (xor-shift-multiply), kept in uint64 arithmetic masked to 32 bits."""
    m = np.uint64(0xFFFFFFFF)
    x = x & m
    x = ((x ^ (x >> np.uint64(16))) * np.uint64(0x7FEB352D)) & m
    x = ((x ^ (x >> np.uint64(15))) * np.uint64(0x846CA68B)) & m
    return x ^ (x >> np.uint64(16))


NOISE_TABLE = 1 << 16  # fresh noise: a burst reads a random window of a table this long (plus one attack)


@njit(cache=True, fastmath=FAST, error_model="numpy")
def add_burst(
    exc: np.ndarray,  # (Kmax, L) ring of one voice
    mask: int,
    t: int,
    vec: np.ndarray,  # (K,)
    attacks: np.ndarray,  # flat (K·A,)
    k_dims: int,
    a_len: int,
    noise: np.ndarray,  # (K, ≥A) fixed noise, used when table is empty
    table: np.ndarray,  # (NOISE_TABLE + ≥A,) uniform noise for fresh bursts, or size 0
    key: np.uint64,
    scratch: np.ndarray,  # (≥ A,) float32
    owned: bool,  # the attacks already hold the instrument's own noise
) -> None:
    """exc_k[t + i] += v_k · attack_k[i] · noise_k[i] (noise_k = 1 when the attacks own their noise).

    Fresh noise is the table window at an offset hashed from (key, k): one hash per burst and dimension
    instead of one per sample, so a burst costs one fused multiply-add pass.
    """
    fresh = table.size > 0
    start = t & mask
    first = min(a_len, mask + 1 - start)
    for k in range(k_dims):
        v = vec[k]
        if v == 0.0:
            continue
        row = exc[k]
        att = attacks[k * a_len : (k + 1) * a_len]
        if owned:
            for i in range(a_len):
                scratch[i] = v * att[i]
        else:
            if fresh:
                off = np.int64(_hash32(key + np.uint64(k) * np.uint64(0x9E3779B9)) & np.uint64(NOISE_TABLE - 1))
                nz = table[off : off + a_len]
            else:
                nz = noise[k]
            for i in range(a_len):
                scratch[i] = v * att[i] * nz[i]
        # the ring's two contiguous segments
        seg = row[start : start + first]
        for i in range(first):
            seg[i] += scratch[i]
        seg = row[: a_len - first]
        for i in range(a_len - first):
            seg[i] += scratch[first + i]


TAIL_ANGLE = 5.0 * np.pi / 6.0  # oscillators above this angular frequency (rad/sample) run in the complex form


class OscillatorBank(NamedTuple):
    """One instrument's oscillators as :func:`resonate` runs them (see :func:`oscillator_bank`)."""

    ku: np.ndarray  # (G·M,) float32: the difference form's coefficients
    kd: np.ndarray
    cu: np.ndarray
    cd: np.ndarray
    tail: np.ndarray  # (G + 1,) int64: group g's tail oscillators are [tail[g], tail[g + 1]) of the arrays below
    tail_pr: np.ndarray  # (T,) float32: their poles and input coefficients, complex form
    tail_pi: np.ndarray
    tail_cr: np.ndarray
    tail_ci: np.ndarray


def oscillator_bank(poles: np.ndarray, coef: np.ndarray) -> OscillatorBank:
    """The coefficients :func:`resonate` runs for oscillator groups of poles p and input coefficients c, both
    (G, M), computed in float64 from the float32 poles the offline model uses.

    The model's oscillator is ``s[n] = p·s[n-1] + c·x[n]``, heard as Re(s). That real part is the
    second-order filter ``(b0 + b1·z⁻¹) / (1 - a1·z⁻¹ - a2·z⁻²)`` with a1 = 2·Re p, a2 = -|p|², b0 = Re c,
    b1 = -Re(c·p̄). Run as a direct form (u[n] = a1·u[n-1] + a2·u[n-2] + x[n], out = b0·u[n] + b1·u[n-1])
    it costs 4 multiply-adds an oscillator-sample instead of the complex form's 6 (and an add), but float32
    cannot hold a1 ≈ 2 precisely enough for a low mode that rings for seconds (1e-4 of error on the bundled
    guitar). So the kernel runs it on u and its difference d[n] = u[n] - u[n-1] (the Agarwal–Burrus form):

        d[n] = ku·u[n-1] + kd·d[n-1] + x[n],   u[n] = u[n-1] + d[n],   out = cu·u[n] + cd·d[n]

    with ku = a1 + a2 - 1 = -(1-r)² - 4r·sin²(ω/2) (small near 0 Hz, and held to float32's relative
    precision), kd = r², cu = b0 + b1, cd = -b1: four multiply-adds and an add.

    Near Nyquist the difference form loses that precision instead (a1 ≈ -2: a 10.5–11 kHz mode at 22.05 kHz
    drifts by 4 % over a clip). Oscillators above TAIL_ANGLE (9.2 kHz at 22.05 kHz: rare and quiet in
    fitted instruments, 0–5 in a group of 64, 3e-4 of the amplitude) leave the group's lanes (a lane left
    keeps ku = -1, kd = cu = cd = 0: it plays nothing and holds at most the block's input) and run in the
    complex form as the group's short tail, so that the vectorised loop always covers whole groups (a
    scalar remainder of up to 15 oscillators cost as much as the whole loop)."""
    p = np.asarray(poles, np.complex128)
    c = np.asarray(coef, np.complex128)
    if p.ndim != 2 or p.shape != c.shape:
        raise ValueError(f"poles and coefficients must be (groups, oscillators) alike, got {p.shape}, {c.shape}")
    r = np.abs(p)
    b1 = -(c * np.conj(p)).real
    high = np.abs(np.angle(p)) > TAIL_ANGLE
    ku = np.where(high, -1.0, -((1.0 - r) ** 2) - 4.0 * r * np.sin(np.angle(p) / 2.0) ** 2)
    kd = np.where(high, 0.0, r**2)
    cu = np.where(high, 0.0, c.real + b1)
    cd = np.where(high, 0.0, -b1)
    tail = np.concatenate([[0], np.cumsum(high.sum(axis=1))]).astype(np.int64)
    f32 = lambda a: np.ascontiguousarray(np.reshape(a, -1), np.float32)  # noqa: E731
    tp, tc = p[high], c[high]  # row-major: group by group
    return OscillatorBank(f32(ku), f32(kd), f32(cu), f32(cd), tail, f32(tp.real), f32(tp.imag), f32(tc.real),
                          f32(tc.imag))  # fmt: skip


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always")
def _difference_pass(k_u, k_d, c_u, c_d, s_u, s_d, n_osc, x_in, j):
    """Samples j..j+3 of n_osc oscillators in the difference form: their four output sums."""
    x0 = x_in[j]
    x1 = x_in[j + 1]
    x2 = x_in[j + 2]
    x3 = x_in[j + 3]
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    for m in range(n_osc):
        qu = k_u[m]
        qd = k_d[m]
        eu = c_u[m]
        ed = c_d[m]
        u = s_u[m]
        d = s_d[m]
        d = qu * u + qd * d + x0
        u = u + d
        a0 += eu * u + ed * d
        d = qu * u + qd * d + x1
        u = u + d
        a1 += eu * u + ed * d
        d = qu * u + qd * d + x2
        u = u + d
        a2 += eu * u + ed * d
        d = qu * u + qd * d + x3
        u = u + d
        a3 += eu * u + ed * d
        s_u[m] = u
        s_d[m] = d
    return a0, a1, a2, a3


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always")
def _complex_pass(q_r, q_i, k_r, k_i, t_r, t_i, n_tail, x_in, j):
    """Samples j..j+3 of n_tail oscillators in the complex form: their four output sums (Re)."""
    x0 = x_in[j]
    x1 = x_in[j + 1]
    x2 = x_in[j + 2]
    x3 = x_in[j + 3]
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    for m in range(n_tail):
        qr = q_r[m]
        qi = q_i[m]
        kr = k_r[m]
        ki = k_i[m]
        a = t_r[m]
        b = t_i[m]
        r1 = qr * a - qi * b + kr * x0
        i1 = qr * b + qi * a + ki * x0
        r2 = qr * r1 - qi * i1 + kr * x1
        i2 = qr * i1 + qi * r1 + ki * x1
        r3 = qr * r2 - qi * i2 + kr * x2
        i3 = qr * i2 + qi * r2 + ki * x2
        r4 = qr * r3 - qi * i3 + kr * x3
        i4 = qr * i3 + qi * r3 + ki * x3
        t_r[m] = r4
        t_i[m] = i4
        a0 += r1
        a1 += r2
        a2 += r3
        a3 += r4
    return a0, a1, a2, a3


@njit(cache=True, fastmath=FAST, error_model="numpy")
def resonate(
    ku: np.ndarray,
    kd: np.ndarray,
    cu: np.ndarray,
    cd: np.ndarray,  # flat (G·M,) coefficients of one instrument (see oscillator_bank)
    tail: np.ndarray,  # (G + 1,) its groups' tail oscillators, as indices into the four arrays below
    tail_pr: np.ndarray,
    tail_pi: np.ndarray,
    tail_cr: np.ndarray,
    tail_ci: np.ndarray,
    su: np.ndarray,
    sd: np.ndarray,  # flat (≥ G·M,) state of one voice: u[n-1] and d[n-1]
    tr: np.ndarray,
    ti: np.ndarray,  # (≥ T,) the voice's tail state, complex: s[n-1]
    dry: np.ndarray,  # (Rmax, B)
    wet: np.ndarray,  # (Gmax, B) out
    dry_active: np.ndarray,  # (Rmax,) non-zero where dry[r] has a non-zero sample in this block
    n_groups: int,
    expressivity: int,
    n_osc: int,
    n: int,
    scan: bool,
) -> int:
    """Run every oscillator over n samples (the recursions of :func:`oscillator_bank`). With ``scan``, then
    look at every state: returns SILENT when every state is flushed to 0, RINGING when some state is left,
    BLOWN_UP when some state is not finite or above STATE_LIMIT (reset the voice). Without, returns RINGING
    (the caller scans one block in four: the scan is a tenth of this function's work, and a non-finite
    state shows in the block's output at once anyway)."""
    live = False
    bad = False
    t_base = tail[0]
    for g in range(n_groups):
        r = g // expressivity
        base = g * n_osc
        w = wet[g]
        t0 = tail[g]  # the group's tail oscillators: t0.. of the tail arrays, t0 - t_base.. of its state
        n_tail = tail[g + 1] - t0
        ts = t0 - t_base
        # a group with no state and no input stays silent
        idle = dry_active[r] == 0
        if idle:
            for m in range(n_osc):
                if su[base + m] != 0.0 or sd[base + m] != 0.0:
                    idle = False
                    break
            for m in range(n_tail):
                if tr[ts + m] != 0.0 or ti[ts + m] != 0.0:
                    idle = False
        if idle:
            for j in range(n):
                w[j] = 0.0
            continue
        x_in = dry[r]
        k_u = ku[base : base + n_osc]
        k_d = kd[base : base + n_osc]
        c_u = cu[base : base + n_osc]
        c_d = cd[base : base + n_osc]
        s_u = su[base : base + n_osc]
        s_d = sd[base : base + n_osc]
        # four samples per pass over the oscillators: state and coefficients are loaded once per four
        # updates (the loop is bound by loads/stores otherwise). A group without a tail runs the difference
        # form alone: an empty tail loop in the pass cost 12 % of the whole loop
        j = 0
        if n_tail == 0:
            while j + 4 <= n:
                a0, a1, a2, a3 = _difference_pass(k_u, k_d, c_u, c_d, s_u, s_d, n_osc, x_in, j)
                w[j] = a0
                w[j + 1] = a1
                w[j + 2] = a2
                w[j + 3] = a3
                j += 4
        else:
            # sliced so that their loops index from 0: a loop from a variable start keeps numba's
            # negative-index check, which stops vectorisation (and each slice of an owned array costs two
            # atomic reference-count updates, so groups without a tail take none)
            q_r = tail_pr[t0 : t0 + n_tail]
            q_i = tail_pi[t0 : t0 + n_tail]
            k_r = tail_cr[t0 : t0 + n_tail]
            k_i = tail_ci[t0 : t0 + n_tail]
            t_r = tr[ts : ts + n_tail]
            t_i = ti[ts : ts + n_tail]
            while j + 4 <= n:
                a0, a1, a2, a3 = _difference_pass(k_u, k_d, c_u, c_d, s_u, s_d, n_osc, x_in, j)
                b0, b1, b2, b3 = _complex_pass(q_r, q_i, k_r, k_i, t_r, t_i, n_tail, x_in, j)
                w[j] = a0 + b0
                w[j + 1] = a1 + b1
                w[j + 2] = a2 + b2
                w[j + 3] = a3 + b3
                j += 4
        while j < n:
            x = x_in[j]
            acc = np.float32(0.0)
            for m in range(n_osc):
                d = k_u[m] * s_u[m] + k_d[m] * s_d[m] + x
                u = s_u[m] + d
                s_u[m] = u
                s_d[m] = d
                acc += c_u[m] * u + c_d[m] * d
            for m in range(n_tail):
                a = tr[ts + m]
                b = ti[ts + m]
                nr = tail_pr[t0 + m] * a - tail_pi[t0 + m] * b + tail_cr[t0 + m] * x
                ti[ts + m] = tail_pr[t0 + m] * b + tail_pi[t0 + m] * a + tail_ci[t0 + m] * x
                tr[ts + m] = nr
                acc += nr
            w[j] = acc
            j += 1
        if not scan:
            live = True
            continue
        # branch-free, so that it vectorises (with branches it cost a tenth of the whole loop): tiny states
        # flushed to 0, the others counted, huge, inf and NaN ones (not < STATE_LIMIT) counted as bad
        n_live = 0
        n_bad = 0
        for m in range(n_osc):
            mag = abs(s_u[m]) + abs(s_d[m])
            small = mag < FLUSH
            s_u[m] = np.float32(0.0) if small else s_u[m]
            s_d[m] = np.float32(0.0) if small else s_d[m]
            n_live += 0 if small else 1
            n_bad += 0 if mag < STATE_LIMIT else 1
        if n_live > 0:
            live = True
        if n_bad > 0:
            bad = True
        for m in range(ts, ts + n_tail):
            mag = abs(tr[m]) + abs(ti[m])
            if mag < FLUSH:
                tr[m] = 0.0
                ti[m] = 0.0
            elif mag < STATE_LIMIT:
                live = True
            else:
                bad = True
    if bad:
        return BLOWN_UP
    return RINGING if live else SILENT


@njit(cache=True, fastmath=EXACT, error_model="numpy")
def fill_weights(
    w: np.ndarray,  # (Emax, B)
    start: int,
    stop: int,
    t0: int,
    prev: np.ndarray,
    target: np.ndarray,
    ramp_start: int,
    frame: int,
    e_dims: int,
) -> None:
    """Deformation weights for block samples [start, stop): prev + (i/F)·(target - prev), then target."""
    ff = np.float32(frame)
    for e in range(e_dims):
        p = prev[e]
        diff = target[e] - p
        tg = target[e]
        row = w[e]
        for j in range(start, stop):
            i = t0 + j - ramp_start
            if i < frame:
                row[j] = p + (np.float32(i) / ff) * diff
            else:
                row[j] = tg


@njit(cache=True, fastmath=EXACT, error_model="numpy")
def _weight_at(prev: np.ndarray, target: np.ndarray, e: int, i: int, frame: int) -> np.float32:
    if i < frame:
        return prev[e] + (np.float32(i) / np.float32(frame)) * (target[e] - prev[e])
    return target[e]


@njit(cache=True, error_model="numpy")
def collect_due(
    qtime: np.ndarray, qseq: np.ndarray, qused: np.ndarray, t_end: int, due: np.ndarray, qstate: np.ndarray
) -> int:
    """Indices of queued events before t_end into due[:n], sorted by (time, arrival); returns n.

    qstate[Q_EARLIEST] is the earliest queued time (a block before it scans nothing), qstate[Q_HIGH] one past
    the highest slot ever used (the free stack hands out low slots first, so the scan stays short)."""
    if qstate[Q_EARLIEST] >= t_end:
        return 0
    n = 0
    earliest = np.int64(NEVER)
    for q in range(qstate[Q_HIGH]):
        if qused[q] and qtime[q] >= t_end and qtime[q] < earliest:
            earliest = qtime[q]
        if qused[q] and qtime[q] < t_end:
            # insertion sort: a block holds few events
            j = n
            while j > 0 and (
                qtime[due[j - 1]] > qtime[q] or (qtime[due[j - 1]] == qtime[q] and qseq[due[j - 1]] > qseq[q])
            ):
                due[j] = due[j - 1]
                j -= 1
            due[j] = q
            n += 1
    qstate[Q_EARLIEST] = earliest
    return n


@njit(cache=True, fastmath=EXACT, error_model="numpy")
def _combine(
    dry: np.ndarray,
    wet: np.ndarray,
    w: np.ndarray,
    mixd: np.ndarray,
    mixw: np.ndarray,
    gains: np.ndarray,
    res_off: int,
    n_res: int,
    e_dims: int,
    n: int,
    y: np.ndarray,
    vout: np.ndarray,
) -> None:
    """vout[:n] = Σ_r tanh(|gain_r| · (mix_dry·dry_r + mix_wet·Σ_e w_e·wet_re))."""
    for j in range(n):
        vout[j] = 0.0
    for r in range(n_res):
        md = mixd[res_off + r]
        mw = mixw[res_off + r]
        gr = gains[res_off + r]
        g0 = r * e_dims
        wr = wet[g0]
        w0 = w[0]
        for j in range(n):
            y[j] = w0[j] * wr[j]
        for e in range(1, e_dims):
            we = w[e]
            wre = wet[g0 + e]
            for j in range(n):
                y[j] += we[j] * wre[j]
        dr = dry[r]
        for j in range(n):  # one pass: mix, gain, tanh, sum (three passes over y cost a third more)
            vout[j] += tanh1(gr * (md * dr[j] + mw * y[j]))




# ------------------------------------------------------------------------------------------- queue
@njit(cache=True, inline="always")
def _queue_push(a, time, voice, kind, src, off, length) -> bool:
    """Queue an event whose payload is src[(off + i) % src.size] for i < length (the inbox payload ring
    wraps). Returns False, counted as dropped, when the queue is full."""
    qstate = a.qstate
    top = qstate[Q_FREE_TOP]
    if top == 0:
        a.counters[C_DROPPED] += 1
        return False
    top -= 1
    q = a.qfree[top]
    qstate[Q_FREE_TOP] = top
    a.qtime[q] = time
    a.qvoice[q] = voice
    a.qkind[q] = kind
    a.qlen[q] = length
    cap = src.size
    row = a.qdata[q]
    for i in range(length):
        row[i] = src[(off + i) % cap]
    a.qseq[q] = qstate[Q_NEXT_SEQ]
    qstate[Q_NEXT_SEQ] += 1
    a.qused[q] = 1
    if time < qstate[Q_EARLIEST]:
        qstate[Q_EARLIEST] = time
    if q >= qstate[Q_HIGH]:
        qstate[Q_HIGH] = q + 1
    return True


# ---------------------------------------------------------------------------------- voice messages
@njit(cache=True, inline="always")
def _rest_weights(a, s, row) -> None:
    """Deformation ramp of slot s at rest: the resting weights of instrument ``row`` (0 past its E)."""
    rest = a.irest[row]
    for e in range(a.ramp_prev.shape[1]):
        v = rest[e] if e < rest.size else np.float32(0.0)
        a.ramp_prev[s, e] = v
        a.ramp_target[s, e] = v


@njit(cache=True, inline="always")
def _clear_slot(a, s) -> None:
    """Silence slot s and put its deformation at rest; it keeps its instrument and gain."""
    a.state_u[s, :] = 0.0
    a.state_d[s, :] = 0.0
    a.tail_re[s, :] = 0.0
    a.tail_im[s, :] = 0.0
    a.exc[s, :, :] = 0.0
    vm = a.vmeta[s]
    vm[V_LIVE] = SILENT
    vm[V_EXC_UNTIL] = 0
    vm[V_RAMP_START] = RAMP_NEVER
    _rest_weights(a, s, vm[V_INST])


@njit(cache=True, inline="always")
def _init_slot(a, s, row, gain) -> None:
    """Slot s plays instrument ``row`` from silence at ``gain`` (reached at once)."""
    a.vmeta[s, V_INST] = row
    _clear_slot(a, s)
    a.vgain[s, 0] = gain
    a.vgain[s, 1] = gain
    a.vgain[s, 2] = 1.0 / a.params[P_GAIN_RAMP]


@njit(cache=True, inline="always")
def _set_gain(a, voice, gain, ramp) -> None:
    """Voice gain heads linearly to ``gain`` (float32) over ``ramp`` samples from the next sample."""
    a.user_gain[voice] = gain
    cur = np.float64(a.vgain[voice, 0])
    a.vgain[voice, 1] = gain
    a.vgain[voice, 2] = max(abs(np.float64(gain) - cur), MIN_STEP) / ramp


@njit(cache=True, inline="always")
def _swap_instrument(a, voice, row) -> None:
    """Cross-fade: the voice's current sound moves to its tail slot and fades out (its tail rings with its
    own instrument row) while the voice restarts on ``row`` and fades in to its gain. A tail still fading
    from an earlier swap is cut (as it always was: one tail per voice)."""
    tail = a.params[P_N_MAIN] + voice
    fade = a.params[P_CROSSFADE]
    a.vmeta[tail, :] = a.vmeta[voice, :]
    a.state_u[tail, :] = a.state_u[voice, :]
    a.state_d[tail, :] = a.state_d[voice, :]
    a.tail_re[tail, :] = a.tail_re[voice, :]
    a.tail_im[tail, :] = a.tail_im[voice, :]
    a.exc[tail, :, :] = a.exc[voice, :, :]
    a.ramp_prev[tail, :] = a.ramp_prev[voice, :]
    a.ramp_target[tail, :] = a.ramp_target[voice, :]
    a.vgain[tail, :] = a.vgain[voice, :]
    a.vpan[tail, :, :] = a.vpan[voice, :, :]  # the tail rings out where the voice was
    cur = np.float64(a.vgain[tail, 0])
    a.vgain[tail, 1] = 0.0
    a.vgain[tail, 2] = max(cur, MIN_STEP) / fade
    gain = np.float64(a.user_gain[voice])
    _init_slot(a, voice, row, 0.0)
    a.vgain[voice, 1] = gain
    a.vgain[voice, 2] = max(gain, MIN_STEP) / fade


@njit(cache=True, inline="always")
def _apply_message(a, kind, voice, arg, value) -> None:
    """A voice message (MSG_*), applied now: from the inbox at a block start, or from the audio thread."""
    if kind == MSG_GAIN:
        _set_gain(a, voice, value, arg)
    elif kind == MSG_INSTRUMENT:
        if 0 <= arg < a.bank_info[B_PUBLIC]:
            _swap_instrument(a, voice, arg)
        else:
            a.counters[C_MISMATCH] += 1
    elif kind == MSG_RESET:
        _init_slot(a, voice, a.vmeta[voice, V_INST], a.user_gain[voice])
        a.vmeta[a.params[P_N_MAIN] + voice, V_INST] = NO_INSTRUMENT
    elif kind == MSG_ASSIGN:
        a.user_gain[voice] = value
        _init_slot(a, voice, arg, value)
    elif kind == MSG_MASTER:
        if 0 <= voice < a.master.shape[0]:
            m = a.master[voice]
            m[1] = value
            m[2] = max(abs(np.float64(value) - np.float64(m[0])), MIN_STEP) / arg


@njit(cache=True, inline="always")
def _set_pan(a, voice, ramp, src, off, length) -> None:
    """Voice ``voice``'s gain per output channel heads to src[(off + c) % src.size] (0 past ``length``) over
    ``ramp`` samples from the next sample, each channel in a straight line."""
    pan = a.vpan[voice]
    cap = src.size
    for c in range(pan.shape[0]):
        target = src[(off + c) % cap] if c < length else np.float32(0.0)
        pan[c, 1] = target
        pan[c, 2] = max(abs(np.float64(target) - np.float64(pan[c, 0])), MIN_STEP) / ramp


# ------------------------------------------------------------------------------------------- inbox
@njit(cache=True, error_model="numpy")
def inbox_push(state, slots, pool, kind, voice, arg, generation, payload) -> bool:
    """Producer side of the inbox: write one message, then publish it. Returns False (counted in
    state[IB_FULL]) when the slots or the payload ring have no room; never waits.

    Runs with the GIL held (no ``nogil``): two Python threads pushing at once are serialised by it, so the
    ring is never corrupted, though one producer thread is the intended use (their order is arbitrary)."""
    write = state[IB_WRITE]
    read = state[IB_READ]
    _fence_acquire()  # the consumer was done with every slot below `read` before it published it
    n_slots = slots.shape[0]
    cap = pool.size
    length = payload.size
    pool_write = state[IB_POOL_WRITE]
    pool_read = slots[read % n_slots, M_OFF] if read < write else pool_write
    if write - read >= n_slots or pool_write + length - pool_read > cap:
        state[IB_FULL] += 1
        return False
    for i in range(length):
        pool[(pool_write + i) % cap] = payload[i]
    m = slots[write % n_slots]
    m[M_KIND] = kind
    m[M_VOICE] = voice
    m[M_ARG] = arg
    m[M_LEN] = length
    m[M_OFF] = pool_write
    m[M_GEN] = generation
    state[IB_POOL_WRITE] = pool_write + length
    _fence_release()  # the slot and its payload are visible before the index that publishes them
    state[IB_WRITE] = write + 1
    return True


@njit(cache=True, inline="always")
def _drain_inbox(a) -> None:
    """Consumer side: apply messages and queue events in posting order. A message validated against a bank
    newer than the installed one stops the drain until the audio thread installs that bank (next block)."""
    state = a.inbox_state
    write = state[IB_WRITE]
    _fence_acquire()  # every slot below `write` is fully written
    read = state[IB_READ]
    if read == write:
        return
    slots = a.inbox_slots
    n_slots = slots.shape[0]
    pool = a.inbox_pool
    generation = a.bank_info[B_GENERATION]
    while read < write:
        m = slots[read % n_slots]
        if m[M_GEN] > generation:
            break
        kind = m[M_KIND]
        if kind == EV_CONTROL or kind == EV_DEFORM or kind == EV_DEFORM_NOW:
            _queue_push(a, m[M_ARG], m[M_VOICE], kind, pool, m[M_OFF], m[M_LEN])
        elif kind == MSG_PAN:
            _set_pan(a, m[M_VOICE], m[M_ARG], pool, m[M_OFF], m[M_LEN])
        else:
            _apply_message(a, kind, m[M_VOICE], m[M_ARG], pool[m[M_OFF] % pool.size])
        read += 1
    _fence_release()  # done reading those slots before the producer may reuse them
    state[IB_READ] = read


# ------------------------------------------------------------------------------------ block stages
@njit(cache=True, inline="always")
def _reset_unsafe_slot(a, s) -> None:
    _clear_slot(a, s)
    a.counters[C_RESETS] += 1


@njit(cache=True, inline="always")
def _apply_bursts(a, t0, n_due) -> None:
    """Due control events add their bursts into the voices' excitation rings at their exact sample; a late
    one (before this block) plays at the block start and is counted."""
    mask = a.exc.shape[2] - 1
    imeta = a.imeta
    for d in range(n_due):
        q = a.due[d]
        if a.qtime[q] < t0:
            a.counters[C_LATE] += 1
            a.qtime[q] = t0
        if a.qkind[q] != EV_CONTROL:
            continue
        s = a.qvoice[q]
        inst = a.vmeta[s, V_INST]
        if inst == NO_INSTRUMENT or a.qlen[q] != imeta[inst, I_K]:
            a.counters[C_MISMATCH] += 1  # the voice changed instrument after the event was scheduled
            continue
        a_len = imeta[inst, I_A]
        k_dims = imeta[inst, I_K]
        t = a.qtime[q]
        att = a.attacks[imeta[inst, I_ATT] : imeta[inst, I_ATT] + k_dims * a_len]
        key = _hash32(np.uint64(a.rng[R_SEED]) ^ _hash32(np.uint64(a.rng[R_COUNT])))
        a.rng[R_COUNT] += 1
        add_burst(a.exc[s], mask, t, a.qdata[q], att, k_dims, a_len, a.noise, a.table, key, a.nbuf,
                  imeta[inst, I_OWNED] != 0)
        if t + a_len > a.vmeta[s, V_EXC_UNTIL]:
            a.vmeta[s, V_EXC_UNTIL] = t + a_len
        a.counters[C_EVENTS] += 1


@njit(cache=True, inline="always")
def _deformation_weights(a, s, inst, t0, n, n_due) -> None:
    """a.w[:E, :n] = this block's variant weights of slot s, restarting the ramp at the exact sample of each
    deformation event of the voice."""
    e_dims = a.imeta[inst, I_E]
    frame = a.imeta[inst, I_F]
    prev = a.ramp_prev[s]
    target = a.ramp_target[s]
    vm = a.vmeta[s]
    start = 0
    for d in range(n_due):
        q = a.due[d]
        if a.qvoice[q] != s or a.qkind[q] == EV_CONTROL:
            continue
        if a.qlen[q] != e_dims:
            a.counters[C_MISMATCH] += 1
            continue
        o = a.qtime[q] - t0
        fill_weights(a.w, start, o, t0, prev, target, vm[V_RAMP_START], frame, e_dims)
        i_now = a.qtime[q] - vm[V_RAMP_START]
        for e in range(e_dims):
            cur = _weight_at(prev, target, e, i_now, frame)
            target[e] = a.qdata[q, e]
            prev[e] = a.qdata[q, e] if a.qkind[q] == EV_DEFORM_NOW else cur
        vm[V_RAMP_START] = a.qtime[q]
        a.counters[C_EVENTS] += 1
        start = o
    fill_weights(a.w, start, n, t0, prev, target, vm[V_RAMP_START], frame, e_dims)


@njit(cache=True, inline="always")
def _glide_gain(a, s, n) -> None:
    """A silent voice computes nothing, but its gain ramp still moves by n steps."""
    g_cur = a.vgain[s, 0]
    g_target = a.vgain[s, 1]
    if g_cur < g_target:
        a.vgain[s, 0] = min(g_target, g_cur + a.vgain[s, 2] * n)
    else:
        a.vgain[s, 0] = max(g_target, g_cur - a.vgain[s, 2] * n)
    pan = a.vpan[s]
    for c in range(pan.shape[0]):
        p_cur = pan[c, 0]
        p_target = pan[c, 1]
        if p_cur < p_target:
            pan[c, 0] = min(p_target, p_cur + pan[c, 2] * n)
        elif p_cur > p_target:
            pan[c, 0] = max(p_target, p_cur - pan[c, 2] * n)


@njit(cache=True, inline="always")
def _excitation_to_dry(a, s, inst, t0, n) -> None:
    """Take this block's excitation out of slot s's ring (zeroing it behind us) into a.excb and route it to
    resonances: a.dry[r] = Σ_k router[k, r]·excb[k]. a.dry_active flags the non-zero rows (R dry flags,
    then K excitation flags), so silent rows cost nothing downstream."""
    k_dims = a.imeta[inst, I_K]
    n_res = a.imeta[inst, I_R]
    ring = a.exc[s]
    mask = ring.shape[1] - 1
    pos = t0 & mask
    first = min(n, mask + 1 - pos)
    flags = a.dry_active
    any_exc = False
    for k in range(k_dims):
        src = ring[k]
        dst = a.excb[k]
        nz = False
        for j in range(first):
            dst[j] = src[pos + j]
            src[pos + j] = 0.0
        for j in range(first, n):
            dst[j] = src[j - first]
            src[j - first] = 0.0
        for j in range(n):
            if dst[j] != 0.0:
                nz = True
                break
        flags[n_res + k] = 1.0 if nz else 0.0
        any_exc = any_exc or nz
    for r in range(n_res):
        row = a.dry[r]
        for j in range(n):
            row[j] = 0.0
        flags[r] = 0.0
    if any_exc:
        ro = a.imeta[inst, I_ROUTER]
        for k in range(k_dims):
            if flags[n_res + k] == 0.0:
                continue
            src = a.excb[k]
            for r in range(n_res):
                c = a.router[ro + k * n_res + r]
                if c == 0.0:
                    continue
                row = a.dry[r]
                for j in range(n):
                    row[j] += c * src[j]
                flags[r] = 1.0


@njit(cache=True, inline="always")
def _voice_output(a, s, inst, t0, n) -> np.int64:
    """a.vout[:n] = slot s's output before its gain. Returns resonate()'s status, or BLOWN_UP when the output
    itself is not finite: then the slot must be reset."""
    n_res = a.imeta[inst, I_R]
    e_dims = a.imeta[inst, I_E]
    n_osc = a.imeta[inst, I_M]
    gm = n_res * e_dims * n_osc
    mo = a.imeta[inst, I_MODE]
    status = resonate(
        a.osc_ku[mo : mo + gm],
        a.osc_kd[mo : mo + gm],
        a.osc_cu[mo : mo + gm],
        a.osc_cd[mo : mo + gm],
        a.osc_tail[a.imeta[inst, I_TAIL] : a.imeta[inst, I_TAIL] + n_res * e_dims + 1],
        a.tail_pr,
        a.tail_pi,
        a.tail_cr,
        a.tail_ci,
        a.state_u[s],
        a.state_d[s],
        a.tail_re[s],
        a.tail_im[s],
        a.dry,
        a.wet,
        a.dry_active,
        n_res * e_dims,
        e_dims,
        n_osc,
        n,
        (t0 // n) % SCAN_EVERY == 0,
    )
    _combine(a.dry, a.wet, a.w, a.mixd, a.mixw, a.gains, a.imeta[inst, I_RES], n_res, e_dims, n, a.y, a.vout)
    if block_peak(a.vout, n) == np.inf:
        status = BLOWN_UP
    return status


@njit(cache=True, inline="always")
def _mix_voice(a, s, n) -> None:
    """a.out[c] += pan_c·gain·a.vout for every output channel c, with the voice gain and each channel's pan
    gain moving linearly toward their targets (click-free). The voice is rendered once; each channel costs a
    multiply-add per sample, and a channel whose pan gain rests at 0 costs nothing. (One channel at pan 1:
    out += (gain·vout)·1, bit for bit the mono mix.)"""
    step = a.vgain[s, 2]
    g_target = a.vgain[s, 1]
    g = a.vgain[s, 0]
    vout = a.vout
    for j in range(n):
        if g < g_target:
            g = min(g_target, g + step)
        elif g > g_target:
            g = max(g_target, g - step)
        vout[j] = g * vout[j]
    a.vgain[s, 0] = g
    pan = a.vpan[s]
    for c in range(a.out.shape[0]):
        p = pan[c, 0]
        p_target = pan[c, 1]
        row = a.out[c]
        if p == p_target:
            if p == 0.0:
                continue
            for j in range(n):
                row[j] += vout[j] * p
        else:
            p_step = pan[c, 2]
            for j in range(n):
                if p < p_target:
                    p = min(p_target, p + p_step)
                elif p > p_target:
                    p = max(p_target, p - p_step)
                row[j] += vout[j] * p
            pan[c, 0] = p


@njit(cache=True, inline="always")
def _render_slot(a, s, t0, n, n_due) -> None:
    inst = a.vmeta[s, V_INST]
    if inst == NO_INSTRUMENT:
        return
    _deformation_weights(a, s, inst, t0, n, n_due)
    if a.vmeta[s, V_LIVE] == SILENT and t0 >= a.vmeta[s, V_EXC_UNTIL]:
        _glide_gain(a, s, n)
        return
    _excitation_to_dry(a, s, inst, t0, n)
    status = _voice_output(a, s, inst, t0, n)
    if status == BLOWN_UP:  # non-finite or huge: this voice starts over, the others never hear it
        _reset_unsafe_slot(a, s)
        return
    a.vmeta[s, V_LIVE] = status
    _mix_voice(a, s, n)


@njit(cache=True, inline="always")
def _release_faded_tails(a) -> None:
    """A cross-fade tail whose gain reached 0 frees its slot."""
    for s in range(a.params[P_N_MAIN], a.vmeta.shape[0]):
        if a.vmeta[s, V_INST] != NO_INSTRUMENT and a.vgain[s, 0] == 0.0 and a.vgain[s, 1] == 0.0:
            _clear_slot(a, s)
            a.vmeta[s, V_INST] = NO_INSTRUMENT


@njit(cache=True, inline="always")
def _free_due(a, n_due) -> None:
    """Give the queue slots of this block's events back to the free stack."""
    qstate = a.qstate
    for d in range(n_due):
        q = a.due[d]
        a.qused[q] = 0
        a.qfree[qstate[Q_FREE_TOP]] = q
        qstate[Q_FREE_TOP] += 1


@njit(cache=True, inline="always")
def _master_gains(a, n) -> None:
    """Each output channel times its master gain, ramped linearly (click-free); a channel resting at 1 is
    left alone."""
    for c in range(a.out.shape[0]):
        m = a.master[c]
        cur = m[0]
        target = m[1]
        row = a.out[c]
        if cur == target:
            if cur != 1.0:
                for j in range(n):
                    row[j] *= cur
            continue
        step = m[2]
        for j in range(n):
            if cur < target:
                cur = min(target, cur + step)
            elif cur > target:
                cur = max(target, cur - step)
            row[j] *= cur
        m[0] = cur


@njit(cache=True, inline="always")
def _safety(a, n, limit) -> None:
    """The last stage, per sample over every channel: a non-finite sample becomes 0 (counted); then the level
    cap (a limiter, when a.limiter[L_CAP] > 0); then the clip to ±limit (limit ≤ 0: none).

    The limiter is peak-based and linked across channels (one gain for all, so a placed voice does not move):
    the gain falls at once to cap/peak when a sample would exceed the cap (instant attack, no look-ahead), and
    otherwise recovers exponentially toward 1 (a.limiter[L_RELEASE] of the way per sample). The samples are
    then clipped to the cap as well, so float rounding of cap/peak·peak can never leave one above it. Samples
    it reduced are counted (C_LIMITED); the least gain is kept for the host to read (L_MIN)."""
    out = a.out
    lim = a.limiter
    cap = np.float64(lim[L_CAP])
    on = cap > 0.0
    ceiling = np.float64(limit)
    if on and (ceiling <= 0.0 or cap < ceiling):
        ceiling = cap
    g = np.float64(lim[L_GAIN])
    # the common block: every sample finite, none above the ceiling, the limiter at rest: nothing to do
    peak = np.float64(0.0)
    for c in range(out.shape[0]):
        peak = max(peak, block_peak(out[c], n))
    if peak < np.inf and (ceiling <= 0.0 or peak <= ceiling) and (not on or (g == 1.0 and peak <= cap)):
        return
    rel = np.float64(lim[L_RELEASE])
    g_min = np.float64(lim[L_MIN])
    limited = 0
    n_ch = out.shape[0]
    for j in range(n):
        peak = np.float64(0.0)
        for c in range(n_ch):
            v = out[c, j]
            if not np.isfinite(v):
                a.counters[C_SCRUBBED] += 1
                v = np.float32(0.0)
                out[c, j] = v
            av = abs(np.float64(v))
            if av > peak:
                peak = av
        if on:
            if g < 1.0:
                g += (1.0 - g) * rel
                if g > 1.0 - LIMITER_SNAP:
                    g = 1.0
            if peak * g > cap:
                g = cap / peak
            if g < 1.0:
                limited += 1
                if g < g_min:
                    g_min = g
                gf = np.float32(g)
                for c in range(n_ch):
                    out[c, j] = out[c, j] * gf
        if ceiling > 0.0:
            for c in range(n_ch):
                v = out[c, j]
                if v > ceiling:
                    out[c, j] = np.float32(ceiling)
                elif v < -ceiling:
                    out[c, j] = np.float32(-ceiling)
    if on:
        lim[L_GAIN] = np.float32(g)
        lim[L_MIN] = np.float32(g_min)
        a.counters[C_LIMITED] += limited


# ------------------------------------------------------------------------------------------ entries
@njit(cache=True, nogil=True, error_model="numpy")
def render_block(t0, n, limit, bank_f, bank_q, fixed_f, fixed_q, sized_f) -> None:
    """Render samples [t0, t0 + n) into the ``out`` field (n ≤ its size). ``limit`` ≤ 0 disables the clip
    (NaN/inf are scrubbed regardless). Releases the GIL for the whole block."""
    a = unpack(bank_f, bank_q, fixed_f, fixed_q, sized_f)
    for c in range(a.out.shape[0]):
        for j in range(n):
            a.out[c, j] = 0.0
    if a.params[P_DRAIN]:
        _drain_inbox(a)
    n_due = collect_due(a.qtime, a.qseq, a.qused, t0 + n, a.due, a.qstate)
    _apply_bursts(a, t0, n_due)
    for s in range(a.vmeta.shape[0]):
        _render_slot(a, s, t0, n, n_due)
    _release_faded_tails(a)
    _free_due(a, n_due)
    _master_gains(a, n)
    _safety(a, n, limit)


@njit(cache=True, error_model="numpy")
def queue_event(time, voice, kind, payload, bank_f, bank_q, fixed_f, fixed_q, sized_f) -> bool:
    """Queue an event from the audio thread (Renderer.control/deform); False when the queue is full."""
    a = unpack(bank_f, bank_q, fixed_f, fixed_q, sized_f)
    return _queue_push(a, time, voice, kind, payload, 0, payload.size)


@njit(cache=True, error_model="numpy")
def apply_message(kind, voice, arg, value, bank_f, bank_q, fixed_f, fixed_q, sized_f) -> None:
    """Apply a voice message (MSG_*) now, from the audio thread: the same code the inbox drain runs, so a
    gain or instrument change behaves the same whichever way it came."""
    a = unpack(bank_f, bank_q, fixed_f, fixed_q, sized_f)
    _apply_message(a, kind, voice, arg, np.float32(value))


@njit(cache=True, error_model="numpy")
def apply_pan(voice, ramp, gains, bank_f, bank_q, fixed_f, fixed_q, sized_f) -> None:
    """Set a voice's gain per output channel now (ramped over ``ramp`` samples), from the audio thread: the
    code the inbox's MSG_PAN runs."""
    a = unpack(bank_f, bank_q, fixed_f, fixed_q, sized_f)
    _set_pan(a, voice, ramp, gains, 0, gains.size)
