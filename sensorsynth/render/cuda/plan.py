"""The CUDA renderer's control plane: what the host decides for each block, on the CPU, before the GPU plays it.

The CUDA renderer keeps the CPU :class:`~sensorsynth.render.renderer.Renderer`'s own buffers for everything
that is small and sequential (the inbox, the event queue, voice messages, gains, deformation ramps, the
noise counter) and runs, on the host, the *same* compiled helpers the CPU kernel inlines
(:mod:`sensorsynth.render.kernel`): inbox and queue semantics are the CPU renderer's by construction, not a
copy of them. What is large and parallel — oscillator state, excitation rings, the per-sample recursion —
lives on the GPU (:mod:`.kernels`). :func:`plan_block` turns one block of control decisions into a few
compact tables the GPU reads (the *plan*, :data:`PLAN`), in the CPU kernel's order:

1. drain the inbox (messages, events into the queue), logging each message that changes GPU state
   (:data:`OP_CLEAR`, :data:`OP_SWAP`) so the GPU replays it in order;
2. collect this block's due events (sorted by time, then arrival: a stable sort, not the CPU kernel's
   insertion sort, so ten thousand busy voices stay cheap);
3. control events become *bursts* (slot, sample, row, vector, fresh-noise offsets), grouped by slot: the late
   fix, the size check, the noise key and the counters are the CPU kernel's, in its order;
4. every slot's row and ramp at the block start, and its deformation changes inside the block;
5. gains advance by the block, faded tails are freed, the due slots go back to the free stack.

The plan tables are pinned host arrays the renderer copies to the GPU asynchronously.

Caching. These functions inline kernel.py's helpers and its field table, and take a minute and more to
compile, so they use numba's on-disk cache; but that cache is keyed on this file alone, and a cached plan
compiled against an older kernel.py would misread the buffers. So each entry takes :data:`KERNEL_STAMP` (a
hash of kernel.py's source, computed at import) and compares it with the value frozen into it when it was
compiled: a stale entry touches nothing and returns False, and :func:`call` recompiles it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from numba import njit

from .. import kernel as K

KERNEL_STAMP = int.from_bytes(hashlib.sha256(Path(K.__file__).read_bytes()).digest()[:7], "little")

# GPU state operations, replayed in order at the block start (ops table columns: kind, slot)
OP_CLEAR, OP_SWAP = 0, 1
N_OP = 2
# slot table, int64 columns: instrument row (-1: not played), excitation-until sample, ramp start at the
# block start, the slot's deformation changes (first row in the change table, count), its bursts (first row
# in the burst table, count); each slot's rows are contiguous and in the CPU kernel's order
SI_ROW, SI_EXC_UNTIL, SI_RAMP_START, SI_CHG_FIRST, SI_CHG_COUNT, SI_BURST_FIRST, SI_BURST_COUNT = range(7)
N_SI = 7
# slot table, float32 columns: gain now, gain target, gain step per sample, then prev[E], target[E]
SF_GAIN, SF_TARGET, SF_STEP, SF_RAMP = range(4)
# burst table, int64 columns: slot, sample, row, then one fresh-noise table offset per control dimension
# (-1: the fixed noise array)
BI_SLOT, BI_TIME, BI_ROW, BI_NOISE = range(4)
# change table, int64 columns: sample offset in the block, ramp start (the event's sample)
CI_OFFSET, CI_RAMP_START = range(2)
N_CI = 2
# plan counts (returned by plan_block)
N_OPS, N_BURSTS, N_CHANGES = range(3)

# The plan: name, dtype, shape (in terms of S slots, Q queue, K/E capacities, O op capacity), meaning.
PLAN: tuple[tuple[str, type, str, str], ...] = (
    ("ops", np.int64, "(O, N_OP)", "GPU state operations of this block, in order"),
    ("slot_i", np.int64, "(S, N_SI)", "row, excitation until, ramp start, change range"),
    ("slot_f", np.float32, "(S, SF_RAMP + 2E)", "gain, gain target, gain step, ramp prev[E], target[E]"),
    ("burst_i", np.int64, "(Q, BI_NOISE + K)", "slot, sample, row, fresh-noise offsets[K]"),
    ("burst_f", np.float32, "(Q, K)", "control vector of each burst"),
    ("chg_i", np.int64, "(Q, N_CI)", "offset in the block, ramp start"),
    ("chg_f", np.float32, "(Q, 2E)", "ramp prev[E], target[E] from that offset on"),
)


@njit(cache=True, inline="always")
def _log_op(ops, n_ops, kind, slot) -> int:
    ops[n_ops, 0] = kind
    ops[n_ops, 1] = slot
    return n_ops + 1


@njit(cache=True, inline="always")
def _apply_logged(a, ops, n_ops, kind, voice, arg, value) -> int:
    """K._apply_message, plus the GPU state operation it implies (returns the new op count)."""
    if kind == K.MSG_INSTRUMENT:
        if 0 <= arg < a.bank_info[K.B_PUBLIC]:
            n_ops = _log_op(ops, n_ops, OP_SWAP, voice)
    elif kind == K.MSG_RESET or kind == K.MSG_ASSIGN:
        n_ops = _log_op(ops, n_ops, OP_CLEAR, voice)
    K._apply_message(a, kind, voice, arg, value)
    return n_ops


@njit(cache=True, error_model="numpy")
def apply_logged(stamp, kind, voice, arg, value, ops, n_ops, bank_f, bank_q, fixed_f, fixed_q, sized_f) -> int:
    """A voice message from the audio thread (set_instrument, reset, a reload's swaps), logged. Returns the
    new op count, or -1 (touching nothing) when compiled against another kernel.py."""
    if stamp != KERNEL_STAMP:
        return -1
    a = K.unpack(bank_f, bank_q, fixed_f, fixed_q, sized_f)
    return _apply_logged(a, ops, n_ops, kind, voice, arg, np.float32(value))


@njit(cache=True, inline="always")
def _drain_logged(a, ops, n_ops) -> int:
    """K._drain_inbox with every message logged (same fences, same generation rule)."""
    state = a.inbox_state
    write = state[K.IB_WRITE]
    K._fence_acquire()
    read = state[K.IB_READ]
    if read == write:
        return n_ops
    slots = a.inbox_slots
    n_slots = slots.shape[0]
    pool = a.inbox_pool
    generation = a.bank_info[K.B_GENERATION]
    while read < write:
        m = slots[read % n_slots]
        if m[K.M_GEN] > generation:
            break
        kind = m[K.M_KIND]
        if kind == K.EV_CONTROL or kind == K.EV_DEFORM or kind == K.EV_DEFORM_NOW:
            K._queue_push(a, m[K.M_ARG], m[K.M_VOICE], kind, pool, m[K.M_OFF], m[K.M_LEN])
        else:
            n_ops = _apply_logged(a, ops, n_ops, kind, m[K.M_VOICE], m[K.M_ARG], pool[m[K.M_OFF] % pool.size])
        read += 1
    K._fence_release()
    state[K.IB_READ] = read
    return n_ops


@njit(cache=True, inline="always")
def _collect_due(a, t_end) -> int:
    """Queued events before t_end into a.due[:n], by (time, arrival): K.collect_due's result, with a stable
    sort instead of its insertion sort (which is quadratic in the events of one block)."""
    qstate = a.qstate
    if qstate[K.Q_EARLIEST] >= t_end:
        return 0
    n = 0
    earliest = np.int64(K.NEVER)
    for q in range(qstate[K.Q_HIGH]):
        if a.qused[q]:
            if a.qtime[q] < t_end:
                a.due[n] = q
                n += 1
            elif a.qtime[q] < earliest:
                earliest = a.qtime[q]
    qstate[K.Q_EARLIEST] = earliest
    if n > 1:
        idx = a.due[:n].copy()
        idx = idx[np.argsort(a.qseq[idx], kind="mergesort")]
        idx = idx[np.argsort(a.qtime[idx], kind="mergesort")]
        a.due[:n] = idx
    return n


@njit(cache=True, error_model="numpy")
def plan_block(stamp, t0, n, n_ops, bank_f, bank_q, fixed_f, fixed_q, sized_f, ops, slot_i, slot_f, burst_i, burst_f,
               chg_i, chg_f, counts) -> None:
    """Decide block [t0, t0 + n): fill the plan tables and counts[N_OPS, N_BURSTS, N_CHANGES].

    ``n_ops`` ops are already logged (audio-thread calls since the last block). Returns False (touching
    nothing) when compiled against another kernel.py."""
    if stamp != KERNEL_STAMP:
        return False
    a = K.unpack(bank_f, bank_q, fixed_f, fixed_q, sized_f)
    if a.params[K.P_DRAIN]:
        n_ops = _drain_logged(a, ops, n_ops)
    n_due = _collect_due(a, t0 + n)
    imeta = a.imeta
    n_slots = a.vmeta.shape[0]

    # rows per slot in the burst and change tables (late events first play at the block start, counted)
    for s in range(n_slots):
        slot_i[s, SI_BURST_COUNT] = 0
        slot_i[s, SI_CHG_COUNT] = 0
    for d in range(n_due):
        q = a.due[d]
        if a.qtime[q] < t0:
            a.counters[K.C_LATE] += 1
            a.qtime[q] = t0
        s = a.qvoice[q]
        inst = a.vmeta[s, K.V_INST]
        if inst == K.NO_INSTRUMENT:
            continue
        if a.qkind[q] != K.EV_CONTROL:
            slot_i[s, SI_CHG_COUNT] += 1
        elif a.qlen[q] == imeta[inst, K.I_K]:
            slot_i[s, SI_BURST_COUNT] += 1
    first_b = 0
    first_c = 0
    for s in range(n_slots):
        slot_i[s, SI_BURST_FIRST] = first_b
        first_b += slot_i[s, SI_BURST_COUNT]
        slot_i[s, SI_BURST_COUNT] = 0
        slot_i[s, SI_CHG_FIRST] = first_c
        first_c += slot_i[s, SI_CHG_COUNT]
        slot_i[s, SI_CHG_COUNT] = 0

    # bursts (K._apply_bursts, minus the burst itself, which the GPU adds)
    n_bursts = 0
    for d in range(n_due):
        q = a.due[d]
        if a.qkind[q] != K.EV_CONTROL:
            continue
        s = a.qvoice[q]
        inst = a.vmeta[s, K.V_INST]
        if inst == K.NO_INSTRUMENT or a.qlen[q] != imeta[inst, K.I_K]:
            a.counters[K.C_MISMATCH] += 1
            continue
        k_dims = imeta[inst, K.I_K]
        t = a.qtime[q]
        key = K._hash32(np.uint64(a.rng[K.R_SEED]) ^ K._hash32(np.uint64(a.rng[K.R_COUNT])))
        a.rng[K.R_COUNT] += 1
        fresh = a.table.size > 0 and imeta[inst, K.I_OWNED] == 0
        b = slot_i[s, SI_BURST_FIRST] + slot_i[s, SI_BURST_COUNT]
        slot_i[s, SI_BURST_COUNT] += 1
        burst_i[b, BI_SLOT] = s
        burst_i[b, BI_TIME] = t
        burst_i[b, BI_ROW] = inst
        for k in range(burst_f.shape[1]):
            burst_f[b, k] = a.qdata[q, k] if k < k_dims else np.float32(0.0)
            off = np.int64(-1)
            if fresh and k < k_dims:
                off = np.int64(K._hash32(key + np.uint64(k) * np.uint64(0x9E3779B9)) & np.uint64(K.NOISE_TABLE - 1))
            burst_i[b, BI_NOISE + k] = off
        n_bursts += 1
        a_len = imeta[inst, K.I_A]
        if t + a_len > a.vmeta[s, K.V_EXC_UNTIL]:
            a.vmeta[s, K.V_EXC_UNTIL] = t + a_len
        a.counters[K.C_EVENTS] += 1

    # every slot at the block start
    e_cap = (slot_f.shape[1] - SF_RAMP) // 2
    for s in range(n_slots):
        inst = a.vmeta[s, K.V_INST]
        slot_i[s, SI_ROW] = inst
        slot_i[s, SI_EXC_UNTIL] = a.vmeta[s, K.V_EXC_UNTIL]
        slot_i[s, SI_RAMP_START] = a.vmeta[s, K.V_RAMP_START]
        slot_f[s, SF_GAIN] = a.vgain[s, 0]
        slot_f[s, SF_TARGET] = a.vgain[s, 1]
        slot_f[s, SF_STEP] = a.vgain[s, 2]
        for e in range(e_cap):
            slot_f[s, SF_RAMP + e] = a.ramp_prev[s, e] if e < a.ramp_prev.shape[1] else np.float32(0.0)
            slot_f[s, SF_RAMP + e_cap + e] = a.ramp_target[s, e] if e < a.ramp_target.shape[1] else np.float32(0.0)

    # deformation changes (K._deformation_weights' bookkeeping), grouped by slot in due order
    n_changes = 0
    for d in range(n_due):
        q = a.due[d]
        if a.qkind[q] == K.EV_CONTROL:
            continue
        s = a.qvoice[q]
        inst = a.vmeta[s, K.V_INST]
        if inst == K.NO_INSTRUMENT:
            continue
        e_dims = imeta[inst, K.I_E]
        c = slot_i[s, SI_CHG_FIRST] + slot_i[s, SI_CHG_COUNT]
        if a.qlen[q] != e_dims:
            a.counters[K.C_MISMATCH] += 1
            chg_i[c, CI_OFFSET] = -1  # a hole: the GPU skips it
            slot_i[s, SI_CHG_COUNT] += 1
            n_changes += 1
            continue
        frame = imeta[inst, K.I_F]
        prev = a.ramp_prev[s]
        target = a.ramp_target[s]
        i_now = a.qtime[q] - a.vmeta[s, K.V_RAMP_START]
        for e in range(e_dims):
            cur = K._weight_at(prev, target, e, i_now, frame)
            target[e] = a.qdata[q, e]
            prev[e] = a.qdata[q, e] if a.qkind[q] == K.EV_DEFORM_NOW else cur
        a.vmeta[s, K.V_RAMP_START] = a.qtime[q]
        a.counters[K.C_EVENTS] += 1
        chg_i[c, CI_OFFSET] = a.qtime[q] - t0
        chg_i[c, CI_RAMP_START] = a.qtime[q]
        for e in range(e_cap):
            chg_f[c, e] = prev[e] if e < e_dims else np.float32(0.0)
            chg_f[c, e_cap + e] = target[e] if e < e_dims else np.float32(0.0)
        slot_i[s, SI_CHG_COUNT] += 1
        n_changes += 1

    # gains move by the block (the GPU ramps the same closed form sample by sample)
    for s in range(n_slots):
        if a.vmeta[s, K.V_INST] == K.NO_INSTRUMENT:
            continue
        a.vgain[s, 0] = gain_after(a.vgain[s, 0], a.vgain[s, 1], a.vgain[s, 2], n)
    K._release_faded_tails(a)
    K._free_due(a, n_due)
    counts[N_OPS] = n_ops
    counts[N_BURSTS] = n_bursts
    counts[N_CHANGES] = n_changes
    return True


@njit(cache=True, inline="always")
def gain_after(g, target, step, i):
    """The voice gain ``i`` samples on: a linear ramp from ``g`` toward ``target``, stopping there."""
    if g < target:
        return min(target, np.float32(g + step * np.float32(i)))
    if g > target:
        return max(target, np.float32(g - step * np.float32(i)))
    return g


def call(entry, *args):
    """``entry(KERNEL_STAMP, *args)``, recompiled first when its cached code predates kernel.py."""
    result = entry(KERNEL_STAMP, *args)
    if result is False or (not isinstance(result, bool) and result == -1):
        entry.recompile()
        result = entry(KERNEL_STAMP, *args)
    return result
