"""The compiled audio path: the renderer's block, rendered inside the sound card's callback, never waiting on the GIL.

    path = AudioPath(renderer, prefill_blocks=3)     # takes over the renderer (its Python process() is not used)
    # a sound card: PortAudio calls path.callback_address with userdata = path.userdata
    # no card: a thread runs path.run_null() (a compiled loop paced by the monotonic clock) until path.stop_null()
    path.sync()            # supervisor, from any one Python thread: installs a posted hot reload
    n = path.read()        # the blocks played since the last read: path.tap_samples[:n], path.tap_meta[:n]
    path.counters()        # callbacks, under-runs by kind, render times
    path.detach()          # afterwards: the renderer is a plain offline renderer again, at the path's time

Why. A Python render thread has to win the GIL for every block; a C extension holding it for 200 ms (or an OSC
flood keeping the loop thread busy) starves it, and the card under-runs. Here the audio side is compiled code
only: the PortAudio callback is a numba ``@cfunc`` that drains the inbox, renders, writes the device buffer and
appends the block to a tap ring, all without the GIL; without a card, one ``@njit(nogil=True)`` loop does the
same, paced by ``clock_nanosleep``. Python reads the tap ring (recording, browser stream, meter, latency) and
never sits between the renderer and the card.

Control block. One int64 array, ``ctl``, whose address is the callback's ``userdata``: every pointer the audio
side uses is a word in it (``C_*``, offsets generated from the :data:`CONTROL` table; pointers are plain integers, turned back into typed pointers by a
tiny ``inttoptr`` intrinsic so that ``numba.carray`` can view them), with the parameters, the counters and the
ownership word. Nothing in the compiled functions is a global array (numba would freeze a copy of it), nothing
allocates, nothing raises (``error_model="numpy"``, no asserts), and the clock is libc's ``clock_gettime``
called through its address.

The renderer's kernel is called through the address of its compiled code (``render_block``'s native entry,
taken from its numba overload at run time, called with numba's own calling convention), not linked into this
module's functions. So the audio path runs the very machine code ``Renderer.process`` runs (bit-identical
output), numba's on-disk cache of this file can never hold a stale copy of kernel.py (numba does not notice
changes in other files), and no kernel constant is compiled in here: what the install needs from kernel.py
(columns, sentinels, message kinds) is passed as arguments.

Ownership. ``ctl[C_OWNER]`` says who may touch the renderer's state: 0 nobody, 1 the audio side, 2 the
supervisor. The audio side takes it with a compare-and-swap 0→1 at the start of each callback and stores 0
(release) at its end. A hot reload (``Renderer.add_instrument`` / ``replace_instrument``, posted by a producer
thread) is planned in Python without ownership (row renumbering, which voices cross-fade, whether the state moves
into larger arrays), then installed by a compiled ``nogil`` function that spins on CAS 0→2, renumbers the
voices, migrates the state, cross-fades the replaced voices (the kernel's own ``apply_message``), publishes the
new bank's pointers and stores 0: a few microseconds during which no Python runs, so no GIL holder can stretch
them. A callback that finds the word taken spins for up to ``spin_us``, then gives up: it plays the previous
output's last sample faded to zero (then silence) and counts the callback as not rendered; the next rendered
block fades in. The tap ring gets what was played either way.

Under-runs, counted by the audio side: callbacks that could not render (``not_rendered``), PortAudio's
output-underflow flag (``device_underflow``; on JACK it is set for any xrun of the JACK graph, including the
dummy driver's own timer lateness on a loaded machine), and on the null output blocks rendered later than their
due time plus the prefill slack (``late``).

Why one module of about 900 lines: numba's on-disk cache is keyed on the file that defines a compiled function,
and the audio side's functions share the control block's constants (compiled in as globals) and its intrinsics;
split across files, a change to one could leave another's cached machine code with stale offsets.

(Past 500 lines on purpose: the control-block table, the compiled callback, the null-output loop and the
Python side that owns them share one memory layout; numba's cache is per file, so they stay together.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.core.callconv import excinfo_t
from numba.extending import intrinsic

from . import kernel as K

# ------------------------------------------------------------------------------------- control block
class Slot(NamedTuple):
    """One word (or ``width`` words) of the control block: a ``C_<NAME>`` constant is its offset."""

    name: str
    doc: str
    width: int = 1


N_BUF = len(K.BUFFERS)

# The control block's layout, in order: offsets are generated from this table (as kernel.FIELDS generates the
# kernel's), never numbered by hand. Every slot here is read by someone (the audio side, the supervisor, or
# AudioPath's counters); a slot nothing reads does not belong here.
CONTROL: tuple[Slot, ...] = (
    Slot("OWNER", "0 free, OWNER_AUDIO (callback or null loop renders), OWNER_SUPERVISOR (installs a reload)"),
    Slot("STOP", "the null loop stops when this is non-zero"),
    Slot("TIME", "renderer time: absolute index of the first sample of the next block (the producer reads it)"),
    Slot("BLOCK", "samples per rendered block"),
    Slot("CHANNELS", "output channels: the device buffer, the hold and the tap ring are interleaved frames"),
    Slot("RATE", "sample rate"),
    Slot("CLOCK_GETTIME", "address of libc clock_gettime"),
    Slot("CLOCK_NANOSLEEP", "address of libc clock_nanosleep"),
    Slot("SCHED_FN", "address of libc sched_setscheduler"),
    Slot("GETSCHED_FN", "address of libc sched_getscheduler"),
    Slot("RENDER_FN", "address of the kernel's compiled render_block (numba calling convention)"),
    Slot("LIMIT", "address of a float64: the renderer's clip limit"),
    Slot("AUX", "address of float32 [hold (B frames × CHANNELS, interleaved) | last frame played (CHANNELS) | spare]"),
    Slot("HOLD_POS", "next frame of the hold (a rendered block partly played) to play"),
    Slot("HOLD_LEN", "frames in the hold"),
    Slot("OUT", "address of the renderer's `out` field, (CHANNELS, B) (the kernel renders there)"),
    Slot("INBOX_READ", "address of the inbox's read index (the kernel's inbox_state[IB_READ])"),
    Slot("TAP_SAMPLES", "address of the tap ring's float32 (slots, B × CHANNELS), interleaved frames"),
    Slot("TAP_META", "address of the tap ring's int64 (slots, N_TAP_META)"),
    Slot("TAP_SLOTS", "blocks the tap ring holds"),
    Slot("TAP_WRITE", "blocks written (the audio side publishes it after the slot)"),
    Slot("TAP_READ", "blocks read (Python publishes it after copying)"),
    Slot("TAP_DROPPED", "blocks not tapped because Python had not read the ring (audio unaffected)"),
    Slot("HIST", "address of int64 (HIST_BINS,): callback durations, 1 µs bins, the last one open-ended"),
    Slot("HIST_BINS", "bins of that histogram"),
    Slot("CALLBACKS", "callbacks (null output: blocks it consumed)"),
    Slot("FRAMES", "frames delivered"),
    Slot("BLOCKS", "blocks rendered"),
    Slot("NOT_RENDERED", "callbacks that could not render (renderer owned by the supervisor past spin_us)"),
    Slot("UNDERFLOW", "callbacks with PortAudio's output-underflow flag"),
    Slot("FLAGS", "callbacks with any status flag"),
    Slot("LATE", "null output: blocks rendered later than due + slack"),
    Slot("MAX_NS", "longest callback, ns"),
    Slot("LAST_NS", "monotonic ns when the last block left the renderer"),
    Slot("CONTENDED", "callbacks that found the renderer owned and had to wait"),
    Slot("WAIT_MAX_NS", "longest such wait"),
    Slot("SPIN_NS", "how long a callback waits for the renderer before giving up"),
    Slot("SLACK_NS", "null output: lateness tolerated (the prefill)"),
    Slot("RELOADS", "reloads installed"),
    Slot("INSTALL_MAX_NS", "longest time the supervisor held the renderer for an install"),
    Slot("FADE_IN", "1: the next rendered block fades in (after a callback that could not render)"),
    Slot("NULL_START", "monotonic ns at which the null output's sample 0 was due"),
    Slot("RT_PRIORITY", "SCHED_FIFO priority the rendering thread asks for at its first block (0: leave it)"),
    Slot("RT_STATE", "0 not asked yet, 1 granted, 2 refused (kept its policy), 3 already realtime (left alone)"),
    Slot("BUF", "the renderer's kernel buffers: (address, size) × N_BUF, in kernel.BUFFERS order", 2 * N_BUF),
)  # fmt: skip

# Tap ring meta columns, in order (TM_<NAME> is the column).
TAP_META: tuple[Slot, ...] = (
    Slot("FIRST", "renderer sample index of the block's first sample (a not-rendered chunk: the renderer's time)"),
    Slot("NS", "monotonic ns when the block left the renderer (not rendered: when it was played)"),
    Slot("LEN", "frames in the slot"),
    Slot("KIND", "TAP_RENDERED or TAP_NOT_RENDERED"),
    Slot("AHEAD", "frames of the device buffer before the block's first frame (played from the hold)"),
    Slot("INBOX", "inbox messages taken by the end of the block (every message below it had been applied or queued)"),
)  # fmt: skip

# What install_exclusive needs from kernel.py, passed at run time as an int64 array (nothing of kernel.py is
# compiled in here); K_<NAME> is the index, AudioPath fills the values.
INSTALL_CONSTS = ("V_INST", "NO_INSTRUMENT", "MSG_INSTRUMENT", "N_MAIN", "V_LIVE", "SILENT", "V_EXC_UNTIL", "EXC_SLOT")


def _offsets(table: tuple[Slot, ...], prefix: str) -> tuple[dict[str, int], int]:
    offsets, at = {}, 0
    for slot in table:
        offsets[prefix + slot.name] = at
        at += slot.width
    if len(offsets) != len(table):
        raise ImportError(f"render/callback.py: duplicate names in the {prefix}* table")
    return offsets, at


# the C_*, TM_* and K_* constants as module globals: numba compiles them in as constants
_CTL_OFFSETS, N_CTL = _offsets(CONTROL, "C_")
_TM_OFFSETS, N_TAP_META = _offsets(TAP_META, "TM_")
_K_OFFSETS, N_CONSTS = _offsets(tuple(Slot(n, "") for n in INSTALL_CONSTS), "K_")
globals().update(_CTL_OFFSETS, **_TM_OFFSETS, **_K_OFFSETS)

OWNER_FREE, OWNER_AUDIO, OWNER_SUPERVISOR = 0, 1, 2
TAP_RENDERED, TAP_NOT_RENDERED = 1, 2

HIST_BINS = 20000  # 1 µs bins up to 20 ms
PA_OUTPUT_UNDERFLOW = 0x4  # paOutputUnderflow
CLOCK_MONOTONIC = 1  # Linux
TIMER_ABSTIME = 1
SCHED_OTHER, SCHED_FIFO = 0, 1

F32, I64 = np.dtype(np.float32), np.dtype(np.int64)
if tuple(dt for _, dt in K.BUFFERS) != (F32, I64, F32, I64, F32):
    raise ImportError("render/callback.py calls render_block with 5 buffers (f32, i64, f32, i64, f32): update it "
                      "for kernel.BUFFERS")  # fmt: skip
_ARR_F = types.Array(types.float32, 1, "C")
_ARR_Q = types.Array(types.int64, 1, "C")
_BUFFER_TYPES = (_ARR_F, _ARR_Q, _ARR_F, _ARR_Q, _ARR_F)
RENDER_SIG = (types.int64, types.int64, types.float64, *_BUFFER_TYPES)
MESSAGE_SIG = (types.int64, types.int64, types.int64, types.float64, *_BUFFER_TYPES)


# ---------------------------------------------------------------------------------------- intrinsics
def _pointer_from_int(dtype):
    @intrinsic
    def to_pointer(typingctx, addr):
        """An integer address as a typed pointer (``inttoptr``), for ``numba.carray``."""
        if not isinstance(addr, types.Integer):
            return None
        ptr_type = types.CPointer(dtype)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(ptr_type))

        return ptr_type(types.int64), codegen

    return to_pointer


_f32p = _pointer_from_int(types.float32)
_i64p = _pointer_from_int(types.int64)
_f64p = _pointer_from_int(types.float64)


def _slot_pointer(context, builder, arrtype, arr, index):
    ary = context.make_array(arrtype)(context, builder, arr)
    return builder.gep(ary.data, [index])


@intrinsic
def _cas(typingctx, arr, index, expected, new):
    """Atomic compare-and-swap of arr[index] (int64, sequentially consistent); returns the old value."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        pair = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return types.int64(arr, types.int64, types.int64, types.int64), codegen


@intrinsic
def _load_acquire(typingctx, arr, index):
    """arr[index] (int64) as an atomic load with acquire ordering."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, types.int64), codegen


@intrinsic
def _store_release(typingctx, arr, index, value):
    """arr[index] = value (int64) as an atomic store with release ordering."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(arr, types.int64, types.int64), codegen


_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_TIMESPEC = ir.LiteralStructType([_I64, _I64])  # struct timespec on 64-bit Linux


@intrinsic
def _mono_ns(typingctx, fn):
    """CLOCK_MONOTONIC in ns, through libc's clock_gettime at address ``fn`` (the same clock as Python's
    time.monotonic_ns)."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_I32, [_I32, _TIMESPEC.as_pointer()])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        builder.call(f, [ir.Constant(_I32, CLOCK_MONOTONIC), ts])
        sec = builder.load(builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 0)]))
        nsec = builder.load(builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(_I64, 1_000_000_000)), nsec)

    return types.int64(types.int64), codegen


@intrinsic
def _sleep_until(typingctx, fn, deadline_ns):
    """clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, deadline) through libc's address ``fn``; returns its
    result (0, or EINTR when a signal woke the thread early)."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_I32, [_I32, _I32, _TIMESPEC.as_pointer(), _TIMESPEC.as_pointer()])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        billion = ir.Constant(_I64, 1_000_000_000)
        builder.store(builder.sdiv(args[1], billion), builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 0)]))
        builder.store(builder.srem(args[1], billion), builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 1)]))
        null = ir.Constant(_TIMESPEC.as_pointer(), None)
        rc = builder.call(f, [ir.Constant(_I32, CLOCK_MONOTONIC), ir.Constant(_I32, TIMER_ABSTIME), ts, null])
        return builder.sext(rc, _I64)

    return types.int64(types.int64, types.int64), codegen


@intrinsic
def _set_scheduler(typingctx, fn, policy, priority):
    """sched_setscheduler(0, policy, {priority}) through libc's address ``fn``: the calling thread only
    (Linux); returns 0 or -1."""

    def codegen(context, builder, signature, args):
        param = ir.LiteralStructType([_I32])
        fnty = ir.FunctionType(_I32, [_I32, _I32, param.as_pointer()])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        p = cgutils.alloca_once(builder, param)
        builder.store(builder.trunc(args[2], _I32), builder.gep(p, [ir.Constant(_I32, 0), ir.Constant(_I32, 0)]))
        rc = builder.call(f, [ir.Constant(_I32, 0), builder.trunc(args[1], _I32), p])
        return builder.sext(rc, _I64)

    return types.int64(types.int64, types.int64, types.int64), codegen


@intrinsic
def _get_scheduler(typingctx, fn):
    """sched_getscheduler(0) through libc's address ``fn``: the calling thread's policy."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_I32, [_I32])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.sext(builder.call(f, [ir.Constant(_I32, 0)]), _I64)

    return types.int64(types.int64), codegen


def _native_call_codegen(sig_args):
    """Code calling a numba-compiled function (returning None) at a run-time address with numba's own calling
    convention; the call's value is the callee's status code (0 = ok)."""

    def codegen(context, builder, signature, llargs):
        argtys = list(sig_args)
        fnty = context.call_conv.get_function_type(types.none, argtys)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        retty = fnty.args[0].pointee
        retval = cgutils.alloca_once(builder, retty)
        builder.store(cgutils.get_null_value(retty), retval)
        excinfo = cgutils.alloca_once(builder, ir.PointerType(excinfo_t))
        packed = list(context.get_arg_packer(argtys).as_arguments(builder, llargs[1:]))
        code = builder.call(fn, [retval, excinfo] + packed)
        return builder.sext(code, _I64)

    return codegen


@intrinsic
def _call_render(typingctx, addr, t0, n, limit, b0, b1, b2, b3, b4):
    """render_block(t0, n, limit, *buffers) through its native address."""
    return types.int64(types.int64, *RENDER_SIG), _native_call_codegen(RENDER_SIG)


@intrinsic
def _call_message(typingctx, addr, kind, voice, arg, value, b0, b1, b2, b3, b4):
    """apply_message(kind, voice, arg, value, *buffers) through its native address."""
    return types.int64(types.int64, *MESSAGE_SIG), _native_call_codegen(MESSAGE_SIG)


# ------------------------------------------------------------------------------------- audio side
@njit(cache=True, error_model="numpy", inline="always")
def _buffer_f(ctl, i):
    return carray(_f32p(ctl[C_BUF + 2 * i]), (ctl[C_BUF + 2 * i + 1],))


@njit(cache=True, error_model="numpy", inline="always")
def _buffer_q(ctl, i):
    return carray(_i64p(ctl[C_BUF + 2 * i]), (ctl[C_BUF + 2 * i + 1],))


@njit(cache=True, error_model="numpy", inline="always")
def _acquire(ctl, t_in) -> bool:
    """CAS 0→1 on the ownership word; while the supervisor holds it, retry for up to ctl[C_SPIN_NS]."""
    if _cas(ctl, C_OWNER, OWNER_FREE, OWNER_AUDIO) == OWNER_FREE:
        return True
    ctl[C_CONTENDED] += 1
    clock = ctl[C_CLOCK_GETTIME]
    while True:
        now = _mono_ns(clock)
        if _cas(ctl, C_OWNER, OWNER_FREE, OWNER_AUDIO) == OWNER_FREE:
            if now - t_in > ctl[C_WAIT_MAX_NS]:
                ctl[C_WAIT_MAX_NS] = now - t_in
            return True
        if now - t_in > ctl[C_SPIN_NS]:
            return False


@njit(cache=True, error_model="numpy", inline="always")
def _tap_push(ctl, src, off, n, first, t_ns, kind, ahead, inbox) -> None:
    """Append frames [off, off + n) of the interleaved src (n ≤ B) and their meta to the tap ring, or count
    them as dropped when Python has not read the ring (the ring never waits)."""
    w = ctl[C_TAP_WRITE]
    r = _load_acquire(ctl, C_TAP_READ)
    slots = ctl[C_TAP_SLOTS]
    if w - r >= slots:
        ctl[C_TAP_DROPPED] += 1
        return
    ch = ctl[C_CHANNELS]
    b = ctl[C_BLOCK] * ch
    slot = w % slots
    dst = carray(_f32p(ctl[C_TAP_SAMPLES] + 4 * slot * b), (b,))
    meta = carray(_i64p(ctl[C_TAP_META] + 8 * slot * N_TAP_META), (N_TAP_META,))
    base = off * ch
    for j in range(n * ch):
        dst[j] = src[base + j]
    meta[TM_FIRST] = first
    meta[TM_NS] = t_ns
    meta[TM_LEN] = n
    meta[TM_KIND] = kind
    meta[TM_AHEAD] = ahead
    meta[TM_INBOX] = inbox
    _store_release(ctl, C_TAP_WRITE, w + 1)


@njit(cache=True, error_model="numpy", inline="always")
def _serve(ctl, out, frames, status) -> None:
    """One device callback: fill ``frames`` interleaved frames of out (frames × CHANNELS samples). Plays what
    is left of the last rendered block, then renders whole blocks (each interleaved into the hold and tapped)
    until ``frames`` are written, keeping the rest of the last one for the next callback; when the renderer
    cannot be owned in time, fades the last frame played to zero instead."""
    clock = ctl[C_CLOCK_GETTIME]
    t_in = _mono_ns(clock)
    if ctl[C_RT_STATE] == 0 and ctl[C_RT_PRIORITY] > 0:  # once: the thread that renders asks to run first,
        if _get_scheduler(ctl[C_GETSCHED_FN]) != SCHED_OTHER:  # unless the host made it realtime already
            ctl[C_RT_STATE] = 3  # (a realtime JACK server's client thread: its priority is the right one)
        else:
            ctl[C_RT_STATE] = 1 if _set_scheduler(ctl[C_SCHED_FN], SCHED_FIFO, ctl[C_RT_PRIORITY]) == 0 else 2
    b = ctl[C_BLOCK]
    ch = ctl[C_CHANNELS]
    bc = b * ch  # the hold's size; the last frame played follows it
    aux = carray(_f32p(ctl[C_AUX]), (bc + ch + 1,))
    hp = ctl[C_HOLD_POS]
    hl = ctl[C_HOLD_LEN]
    i = 0
    while i < frames and hp < hl:
        for c in range(ch):
            out[i * ch + c] = aux[hp * ch + c]
        i += 1
        hp += 1
    if i < frames:
        if _acquire(ctl, t_in):
            rout = carray(_f32p(ctl[C_OUT]), (ch, b))
            limit = carray(_f64p(ctl[C_LIMIT]), (1,))[0]
            fn = ctl[C_RENDER_FN]
            inbox_read = carray(_i64p(ctl[C_INBOX_READ]), (1,))
            while i < frames:
                t0 = ctl[C_TIME]
                _call_render(fn, t0, b, limit, _buffer_f(ctl, 0), _buffer_q(ctl, 1), _buffer_f(ctl, 2),
                             _buffer_q(ctl, 3), _buffer_f(ctl, 4))  # fmt: skip
                r1 = _mono_ns(clock)
                if ctl[C_FADE_IN] != 0:  # the first block after a gap: no click
                    for c in range(ch):
                        for j in range(b):
                            rout[c, j] = rout[c, j] * (np.float32(j + 1) / np.float32(b))
                    ctl[C_FADE_IN] = 0
                ctl[C_TIME] = t0 + b
                ctl[C_BLOCKS] += 1
                ctl[C_LAST_NS] = r1
                for c in range(ch):  # planar (the kernel's rows) → interleaved frames (the card's)
                    for j in range(b):
                        aux[j * ch + c] = rout[c, j]
                _tap_push(ctl, aux, 0, b, t0, r1, TAP_RENDERED, i, inbox_read[0])
                m = min(b, frames - i)
                for j in range(m * ch):
                    out[i * ch + j] = aux[j]
                hp = m
                hl = b
                i += m
            _store_release(ctl, C_OWNER, OWNER_FREE)
        else:
            n = frames - i
            for c in range(ch):
                last = out[(i - 1) * ch + c] if i > 0 else aux[bc + c]
                for j in range(n):
                    out[(i + j) * ch + c] = last * (np.float32(n - 1 - j) / np.float32(n))
            now = _mono_ns(clock)
            j = 0
            while j < n:
                m = min(b, n - j)
                _tap_push(ctl, out, i + j, m, ctl[C_TIME], now, TAP_NOT_RENDERED, i + j, -1)
                j += m
            ctl[C_NOT_RENDERED] += 1
            ctl[C_FADE_IN] = 1
    ctl[C_HOLD_POS] = hp
    ctl[C_HOLD_LEN] = hl
    if frames > 0:
        for c in range(ch):
            aux[bc + c] = out[(frames - 1) * ch + c]
    ctl[C_CALLBACKS] += 1
    ctl[C_FRAMES] += frames
    if status & PA_OUTPUT_UNDERFLOW:
        ctl[C_UNDERFLOW] += 1
    if status != 0:
        ctl[C_FLAGS] += 1
    took = _mono_ns(clock) - t_in
    hist = carray(_i64p(ctl[C_HIST]), (ctl[C_HIST_BINS],))
    hist[min(took // 1000, hist.size - 1)] += 1
    if took > ctl[C_MAX_NS]:
        ctl[C_MAX_NS] = took


_CALLBACK_SIG = types.intc(types.voidptr, types.voidptr, types.uint64, types.voidptr, types.uint64, types.voidptr)


def _portaudio_render_callback(inp, outp, frames, time_info, status_flags, user):  # pragma: no cover - runs in C
    """PortAudio stream callback (float32 output, CHANNELS interleaved; userdata = the control block)."""
    ctl = carray(user, (N_CTL,), np.int64)
    out = carray(outp, (frames * ctl[C_CHANNELS],), np.float32)
    _serve(ctl, out, np.int64(frames), np.int64(status_flags))
    return 0


@functools.cache
def portaudio_callback():
    """The compiled callback (compiled, or loaded from numba's cache, on first use): ``.address`` is the
    ``PaStreamCallback*``, ``.ctypes`` a ctypes function (tests drive it with any frame counts)."""
    return cfunc(_CALLBACK_SIG, nopython=True, error_model="numpy", cache=True)(_portaudio_render_callback)


@njit(cache=True, error_model="numpy")
def _ns_of(samples, rate):
    """Duration of ``samples`` at ``rate`` in ns, without overflow for any run length."""
    return (samples // rate) * 1_000_000_000 + (samples % rate) * 1_000_000_000 // rate


@njit(cache=True, nogil=True, error_model="numpy")
def run_null(ctl, device) -> None:
    """The null output: a card made of the monotonic clock. Block k is due at start + k·B/rate; the loop sleeps
    until then (clock_nanosleep, absolute), renders it through the callback body into ``device`` and counts it
    as late (an under-run) when it left the renderer more than ctl[C_SLACK_NS] after its due time. Behind by more
    than a second (the process was stopped), it skips ahead instead of rendering the backlog. Runs until
    ctl[C_STOP] is set; holds no GIL."""
    clock = ctl[C_CLOCK_GETTIME]
    sleeper = ctl[C_CLOCK_NANOSLEEP]
    b = ctl[C_BLOCK]
    rate = ctl[C_RATE]
    start = _mono_ns(clock)
    ctl[C_NULL_START] = start
    k = 0
    while _load_acquire(ctl, C_STOP) == 0:
        due = start + _ns_of(k, rate)
        now = _mono_ns(clock)
        if now < due:
            _sleep_until(sleeper, due)
            continue
        _serve(ctl, device, b, 0)
        done = _mono_ns(clock)
        if done - due > ctl[C_SLACK_NS]:
            ctl[C_LATE] += 1
        k += b
        if now - due > 1_000_000_000:
            start += now - due
            ctl[C_NULL_START] = start


# --------------------------------------------------------------------------------------- supervisor
# what the install's migration does with each sized field (see AudioPath: derived from kernel.FIELDS)
MIGRATE_SKIP, MIGRATE_ALL, MIGRATE_LIVE_SLOTS, MIGRATE_EXCITED_SLOTS, MIGRATE_QUEUED_ROWS = -1, 0, 1, 2, 3


@njit(cache=True, error_model="numpy")
def _migrate(src, dst, lay_old, lay_new, slots, ndims, rules, vmeta, qused, consts, t) -> None:
    """The sized fields' content into the larger arrays (the layouts give offsets and shapes), row by row, only
    where it can be non-zero or read: oscillator state of slots still sounding (a SILENT slot's state is all
    zeros), excitation rings of slots with bursts still ahead (t < their excitation end: otherwise the ring is
    all zeros), payloads of queued events; scratch fields not at all (every block rewrites them before use).
    The fresh arrays are zeros, so the result equals a full copy. The excitation ring (S, K, L) holds the next
    L samples from ``t`` at position t mod L, and L may have grown: it is copied in runs where neither ring
    wraps."""
    for f in range(slots.size):
        rule = rules[f]
        if rule == MIGRATE_SKIP:
            continue
        i = slots[f]
        so, s0, s1, s2 = lay_old[i, 0], lay_old[i, 1], lay_old[i, 2], lay_old[i, 3]
        do, d1, d2 = lay_new[i, 0], lay_new[i, 2], lay_new[i, 3]
        if ndims[f] < 3:
            s2 = 1
            d2 = 1
        if ndims[f] < 2:
            s1 = 1
            d1 = 1
        for a in range(s0):
            if rule == MIGRATE_LIVE_SLOTS and vmeta[a, consts[K_V_LIVE]] == consts[K_SILENT]:
                continue
            if rule == MIGRATE_EXCITED_SLOTS and t >= vmeta[a, consts[K_V_EXC_UNTIL]]:
                continue
            if rule == MIGRATE_QUEUED_ROWS and qused[a] == 0:
                continue
            for c in range(s1):
                sb = so + (a * s1 + c) * s2
                db = do + (a * d1 + c) * d2
                if i == consts[K_EXC_SLOT]:
                    mo = s2 - 1
                    mn = d2 - 1
                    j = 0
                    while j < s2:
                        ps = (t + j) & mo
                        pd = (t + j) & mn
                        run = min(s2 - j, s2 - ps, d2 - pd)
                        for x in range(run):
                            dst[db + pd + x] = src[sb + ps + x]
                        j += run
                else:
                    for x in range(s2):
                        dst[db + x] = src[sb + x]


@njit(cache=True, nogil=True, error_model="numpy")
def install_exclusive(ctl, addrs, vmeta, qused, remap, swap, swaps, consts, message_fn, migrate, old_sized, new_sized,
                      lay_old, lay_new, slots, ndims, rules, nb0, nb1, nb2, nb3, nb4, timeout_ns) -> np.int64:  # fmt: skip
    """Install a planned reload while the audio side plays: take the renderer (CAS 0→2, spinning while a block
    renders), move the state into larger arrays when the bank has them (:func:`_migrate`), renumber every
    slot's instrument row (``remap``: old row → new row), cross-fade the main voices whose instrument was
    replaced (``swap[row]``) with the kernel's own message, publish the new buffers (``addrs``) and give the
    renderer back. Holds no GIL; when the rendering thread asked for SCHED_FIFO, this thread runs at that
    priority for the install (so the scheduler does not stretch it) and goes back to normal after. Returns ns
    spent waiting for the renderer, or -1 when it could not be taken within ``timeout_ns``."""
    clock = ctl[C_CLOCK_GETTIME]
    boosted = (ctl[C_RT_PRIORITY] > 0 and _get_scheduler(ctl[C_GETSCHED_FN]) == SCHED_OTHER
               and _set_scheduler(ctl[C_SCHED_FN], SCHED_FIFO, ctl[C_RT_PRIORITY]) == 0)
    t_in = _mono_ns(clock)
    while _cas(ctl, C_OWNER, OWNER_FREE, OWNER_SUPERVISOR) != OWNER_FREE:
        if _mono_ns(clock) - t_in > timeout_ns:
            if boosted:
                _set_scheduler(ctl[C_SCHED_FN], SCHED_OTHER, 0)
            return -1
    t_owned = _mono_ns(clock)
    if migrate:
        _migrate(old_sized, new_sized, lay_old, lay_new, slots, ndims, rules, vmeta, qused, consts, ctl[C_TIME])
    col, none, n_main = consts[K_V_INST], consts[K_NO_INSTRUMENT], consts[K_N_MAIN]
    n_swaps = 0
    for s in range(vmeta.shape[0]):
        row = vmeta[s, col]
        if row == none:
            continue
        if s < n_main and swap[row]:
            swaps[2 * n_swaps] = s
            swaps[2 * n_swaps + 1] = row
            n_swaps += 1
        vmeta[s, col] = remap[row]
    for j in range(n_swaps):
        _call_message(message_fn, consts[K_MSG_INSTRUMENT], swaps[2 * j], swaps[2 * j + 1], 0.0, nb0, nb1, nb2, nb3,
                      nb4)  # fmt: skip
    for j in range(addrs.size):
        ctl[C_BUF + j] = addrs[j]
    ctl[C_RELOADS] += 1
    held = _mono_ns(clock) - t_owned
    if held > ctl[C_INSTALL_MAX_NS]:
        ctl[C_INSTALL_MAX_NS] = held
    _store_release(ctl, C_OWNER, OWNER_FREE)
    if boosted:
        _set_scheduler(ctl[C_SCHED_FN], SCHED_OTHER, 0)
    return t_owned - t_in


@njit(cache=True, nogil=True, error_model="numpy")
def tap_read(ctl, samples, meta) -> np.int64:
    """Python's side of the tap ring: copy the blocks written since the last read (up to the arrays' rows) and
    publish the read index. Returns the number of blocks."""
    w = _load_acquire(ctl, C_TAP_WRITE)
    r = ctl[C_TAP_READ]
    n = min(w - r, samples.shape[0])
    slots = ctl[C_TAP_SLOTS]
    b = ctl[C_BLOCK] * ctl[C_CHANNELS]
    src = carray(_f32p(ctl[C_TAP_SAMPLES]), (slots, b))
    src_meta = carray(_i64p(ctl[C_TAP_META]), (slots, N_TAP_META))
    for j in range(n):
        slot = (r + j) % slots
        for c in range(b):
            samples[j, c] = src[slot, c]
        for c in range(N_TAP_META):
            meta[j, c] = src_meta[slot, c]
    _store_release(ctl, C_TAP_READ, r + n)
    return n


@njit(cache=True, nogil=True, error_model="numpy")
def take_renderer(ctl, timeout_ns) -> bool:
    """CAS 0→2 with a timeout (the supervisor's ownership, for work done in Python: see AudioPath.owned)."""
    clock = ctl[C_CLOCK_GETTIME]
    t_in = _mono_ns(clock)
    while _cas(ctl, C_OWNER, OWNER_FREE, OWNER_SUPERVISOR) != OWNER_FREE:
        if _mono_ns(clock) - t_in > timeout_ns:
            return False
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def give_back(ctl) -> None:
    _store_release(ctl, C_OWNER, OWNER_FREE)


# ------------------------------------------------------------------------------------------ Python side
@functools.cache
def _libc_addresses() -> tuple[int, int, int, int]:
    """Addresses of libc's clock_gettime, clock_nanosleep, sched_setscheduler and sched_getscheduler."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    names = ("clock_gettime", "clock_nanosleep", "sched_setscheduler", "sched_getscheduler")
    addrs = tuple(ctypes.cast(getattr(libc, n), ctypes.c_void_p).value for n in names)
    if not all(addrs):
        raise OSError(f"libc lacks one of {names}")
    return addrs  # type: ignore[return-value]


def native_address(dispatcher, sig: tuple) -> int:
    """Address of the machine code of ``dispatcher``'s overload for ``sig`` (compiled or loaded from numba's
    cache when needed): the function Python's calls run, in numba's calling convention."""
    if sig not in dispatcher.overloads:
        dispatcher.compile(sig)
    cres = dispatcher.overloads[sig]
    return int(cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))


# What an install's migration does with each sized field of kernel.FIELDS, declared for every one of them (a
# sized field added to the kernel without a rule here is an import error, not a silent default): oscillator
# state only for slots still sounding, excitation rings only for slots with bursts ahead, payloads only of
# queued events, the ramps whole, and scratch (rewritten by every block before it is read) not at all.
MIGRATION: dict[str, int] = {
    "state_u": MIGRATE_LIVE_SLOTS, "state_d": MIGRATE_LIVE_SLOTS, "tail_re": MIGRATE_LIVE_SLOTS,
    "tail_im": MIGRATE_LIVE_SLOTS, "exc": MIGRATE_EXCITED_SLOTS,
    "ramp_prev": MIGRATE_ALL, "ramp_target": MIGRATE_ALL, "qdata": MIGRATE_QUEUED_ROWS,
    "nbuf": MIGRATE_SKIP, "excb": MIGRATE_SKIP, "dry": MIGRATE_SKIP, "dry_active": MIGRATE_SKIP, "wet": MIGRATE_SKIP,
    "w": MIGRATE_SKIP,
}  # fmt: skip
if set(MIGRATION) != {f.name for f in K.FIELDS if f.group == "sized"}:
    raise ImportError("render/callback.py: MIGRATION must name every sized field of kernel.FIELDS, and only those: "
                      f"{sorted(set(MIGRATION) ^ {f.name for f in K.FIELDS if f.group == 'sized'})}")


class AudioPath:
    """The compiled audio path over one :class:`~sensorsynth.render.renderer.Renderer` (see the module doc).

    ``prefill_blocks``: the null output's lateness tolerance (the slack the Python path's ring gives).
    ``realtime_priority``: SCHED_FIFO priority the rendering thread asks for at its first block (0: none; a thread
    the host already runs realtime, e.g. a realtime JACK server's client thread, is left as it is).
    ``spin_us``: how long a callback waits for a reload's install before it gives up on the block (default half
    a block's duration: the other half is left for rendering). ``tap_seconds``: what the tap ring holds for a stalled Python reader.

    From construction until :meth:`detach`, the audio side owns the renderer's rendering: don't call its
    audio-thread methods (``process``, ``control``, ...); producers use ``renderer.inbox`` and
    ``add_instrument`` / ``replace_instrument`` as always, and one Python thread calls :meth:`sync` now and then
    (the engine's tap reader does, every few ms) to install posted reloads. ``renderer.time`` reads the audio
    side's clock meanwhile.
    """

    def __init__(self, renderer, prefill_blocks: int = 3, realtime_priority: int = 0, tap_seconds: float = 8.0,
                 spin_us: float | None = None, tap_read_blocks: int = 1024) -> None:  # fmt: skip
        renderer.install_posted()  # a reload posted before the start is installed the plain way
        self.renderer = renderer
        b, rate = renderer.block_size, renderer.sample_rate
        ch = int(getattr(renderer, "channels", 1))
        self.block_size, self.sample_rate, self.channels = b, rate, ch
        slots = max(64, int(np.ceil(tap_seconds * rate / b)))
        self.ctl = np.zeros(N_CTL, np.int64)
        self._limit = np.array([renderer.limit], np.float64)
        self._aux = np.zeros(b * ch + ch + 1, np.float32)
        self._device = np.zeros(b * ch, np.float32)
        self._tap_samples = np.zeros((slots, b * ch), np.float32)
        self._tap_meta = np.zeros((slots, N_TAP_META), np.int64)
        self.hist = np.zeros(HIST_BINS, np.int64)
        self.tap_samples = np.zeros((tap_read_blocks, b * ch), np.float32)  # what read() fills: interleaved frames
        self.tap_meta = np.zeros((tap_read_blocks, N_TAP_META), np.int64)
        self._swaps = np.zeros(2 * renderer.max_voices, np.int64)
        c = self.ctl
        c[C_BLOCK], c[C_RATE], c[C_CHANNELS] = b, rate, ch
        c[C_CLOCK_GETTIME], c[C_CLOCK_NANOSLEEP], c[C_SCHED_FN], c[C_GETSCHED_FN] = _libc_addresses()
        c[C_RT_PRIORITY] = max(0, int(realtime_priority))
        c[C_LIMIT] = self._limit.ctypes.data
        c[C_AUX] = self._aux.ctypes.data
        c[C_TAP_SAMPLES], c[C_TAP_META], c[C_TAP_SLOTS] = self._tap_samples.ctypes.data, self._tap_meta.ctypes.data, slots
        c[C_HIST], c[C_HIST_BINS] = self.hist.ctypes.data, HIST_BINS
        period_ns = b * 1_000_000_000 // rate
        c[C_SPIN_NS] = period_ns // 2 if spin_us is None else int(spin_us * 1000)
        c[C_SLACK_NS] = int(max(1, prefill_blocks)) * b * 1_000_000_000 // rate
        c[C_OUT] = renderer.fixed_view("out").ctypes.data
        c[C_INBOX_READ] = renderer.fixed_view("inbox_state")[K.IB_READ:].ctypes.data
        c[C_TIME] = renderer.time
        args = renderer.installed.args
        render_sig = tuple(K.render_block.typeof_pyval(a) for a in (0, b, renderer.limit, *args))
        message_sig = tuple(K.apply_message.typeof_pyval(a) for a in (K.MSG_NOP, 0, 0, 0.0, *args))
        if render_sig != RENDER_SIG or message_sig != MESSAGE_SIG:
            raise TypeError(f"the renderer's kernel arguments {render_sig} are not what the audio path calls")
        c[C_RENDER_FN] = native_address(K.render_block, render_sig)
        self._message_fn = native_address(K.apply_message, message_sig)
        self._addrs = self._addresses(renderer.installed)
        c[C_BUF : C_BUF + 2 * N_BUF] = self._addrs
        sized = [f for f in K.FIELDS if f.group == "sized"]
        self._sized_slots = np.array([K.SLOT[f.name] for f in sized], np.int64)
        self._sized_ndims = np.array([f.ndim for f in sized], np.int64)
        self._sized_rules = np.array([MIGRATION[f.name] for f in sized], np.int64)
        consts = {"V_INST": K.V_INST, "NO_INSTRUMENT": K.NO_INSTRUMENT, "MSG_INSTRUMENT": K.MSG_INSTRUMENT,
                  "N_MAIN": renderer.max_voices, "V_LIVE": K.V_LIVE, "SILENT": K.SILENT, "V_EXC_UNTIL": K.V_EXC_UNTIL,
                  "EXC_SLOT": K.SLOT["exc"]}  # fmt: skip
        self._consts = np.array([consts[name] for name in INSTALL_CONSTS], np.int64)
        self._retired = None
        self.callback_address = int(portaudio_callback().address)
        self._warm()
        renderer.attach_clock(c[C_TIME : C_TIME + 1])  # renderer.time reads the audio side's clock from now on

    def _warm(self) -> None:
        """Compile (or load from numba's cache) every entry point now, not on the audio side's first call: the
        null loop (told to stop before it starts), an install that changes nothing, a read of the empty tap."""
        c = self.ctl
        c[C_STOP] = 1
        run_null(c, self._device)
        c[C_STOP] = 0
        bank = self.renderer.installed
        rows = np.arange(len(bank.entries), dtype=np.int64)
        f = bank.sized.buffers[F32]
        vmeta, qused = self.renderer.fixed_view("vmeta"), self.renderer.fixed_view("qused")
        rt, c[C_RT_PRIORITY] = c[C_RT_PRIORITY], 0  # no priority change for this one
        waited = install_exclusive(c, self._addrs, vmeta, qused, rows, np.zeros_like(rows), self._swaps,
                                   self._consts, self._message_fn, False, f, f, bank.views.layout, bank.views.layout,
                                   self._sized_slots, self._sized_ndims, self._sized_rules, *bank.args, 10**9)  # fmt: skip
        c[C_RT_PRIORITY] = rt
        if waited < 0:
            raise RuntimeError("the audio path's renderer is owned by someone else")
        c[C_RELOADS] = c[C_INSTALL_MAX_NS] = 0
        tap_read(c, self.tap_samples[:0], self.tap_meta[:0])
        if take_renderer(c, 10**9):
            give_back(c)

    @staticmethod
    def _addresses(bank) -> np.ndarray:
        return np.array([x for a in bank.args for x in (a.ctypes.data, a.size)], np.int64)

    @property
    def userdata(self) -> int:
        """The callback's ``userdata``: the control block's address."""
        return int(self.ctl.ctypes.data)

    @property
    def time(self) -> int:
        return int(self.ctl[C_TIME])

    @property
    def last_block_ns(self) -> int:
        return int(self.ctl[C_LAST_NS])

    @property
    def null_start_ns(self) -> int:
        """Monotonic ns at which the null output's sample 0 was due (0 before it started)."""
        return int(self.ctl[C_NULL_START])

    @property
    def priority(self) -> str:
        """The rendering thread's scheduling, as it asked for it at its first block."""
        state, prio = int(self.ctl[C_RT_STATE]), int(self.ctl[C_RT_PRIORITY])
        if prio <= 0:
            return "normal"
        return {0: "not started", 1: f"SCHED_FIFO {prio}", 2: "normal (SCHED_FIFO refused)",
                3: "realtime already (the host's priority, left as is)"}[state]

    # ------------------------------------------------------------------ supervisor (one Python thread)
    def sync(self, timeout_s: float = 2.0) -> bool:
        """Install the renderer's posted reload, if any, while the audio side plays (see the module doc).
        Returns whether one was installed."""
        r = self.renderer
        new, old = r.posted, r.installed
        if new is old:
            self._retired = None
            return False
        row_of = {id(x): i for i, x in enumerate(new.entries)}
        remap = np.array([row_of.get(id(e), K.NO_INSTRUMENT) for e in old.entries], np.int64)
        swap = np.array([int(i < len(new.entries) and new.entries[i] is not e) for i, e in enumerate(old.entries)],
                        np.int64)  # fmt: skip
        migrate = new.sized is not old.sized
        if migrate:  # first touches (page faults) here, not while the audio side waits for the renderer
            new.sized.buffers[F32][::1024] = 0.0
        addrs = self._addresses(new)
        vmeta, qused = r.fixed_view("vmeta"), r.fixed_view("qused")
        waited = install_exclusive(
            self.ctl, addrs, vmeta, qused, remap, swap, self._swaps, self._consts, self._message_fn,
            migrate, old.sized.buffers[F32], new.sized.buffers[F32], old.views.layout, new.views.layout,
            self._sized_slots, self._sized_ndims, self._sized_rules, *new.args, int(timeout_s * 1e9),
        )  # fmt: skip
        if waited < 0:
            raise RuntimeError("the audio side kept the renderer for longer than the install timeout")
        r.adopt(new, self.time)
        self._addrs = addrs
        self._retired = old  # the old arrays stay alive until the next call (nothing points at them any more)
        return True

    # ------------------------------------------------------------------ tap ring (one Python thread)
    def read(self) -> int:
        """Copy the blocks played since the last call into :attr:`tap_samples` / :attr:`tap_meta` (rows
        [0, n)) and return n; call again while it returns a full array."""
        return int(tap_read(self.ctl, self.tap_samples, self.tap_meta))

    # ------------------------------------------------------------------ the null output
    def run_null(self) -> None:
        """The clock-paced null output; blocks (without the GIL) until :meth:`stop_null`."""
        self.ctl[C_STOP] = 0
        run_null(self.ctl, self._device)

    def stop_null(self) -> None:
        self.ctl[C_STOP] = 1

    # ------------------------------------------------------------------ state
    def counters(self) -> dict[str, int]:
        c = self.ctl
        not_rendered, underflow, late = int(c[C_NOT_RENDERED]), int(c[C_UNDERFLOW]), int(c[C_LATE])
        return {
            "underruns": not_rendered + underflow + late,
            "callbacks": int(c[C_CALLBACKS]),
            "status_flags": int(c[C_FLAGS]),
            "not_rendered": not_rendered,
            "device_underflow": underflow,
            "late": late,
            "blocks": int(c[C_BLOCKS]),
            "frames": int(c[C_FRAMES]),
            "contended": int(c[C_CONTENDED]),
            "wait_max_us": round(int(c[C_WAIT_MAX_NS]) / 1000, 1),
            "callback_max_us": round(int(c[C_MAX_NS]) / 1000, 1),
            "tap_dropped": int(c[C_TAP_DROPPED]),
            "reloads": int(c[C_RELOADS]),
            "install_max_us": round(int(c[C_INSTALL_MAX_NS]) / 1000, 1),
            "spin_us": round(int(c[C_SPIN_NS]) / 1000, 1),
        }

    def detach(self) -> None:
        """After the audio side stopped for good: the renderer is a plain renderer again, at the path's time."""
        self.renderer.detach_clock(self.time)
