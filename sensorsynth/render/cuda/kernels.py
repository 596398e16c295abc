"""The CUDA kernels of one block, on one stream: [ops →] the block kernel (one launch renders everything).

Imported only by :mod:`.renderer` (it imports ``numba.cuda``, which must see ``NUMBA_ENABLE_CUDASIM`` before
its first import). Every kernel is plain numba.cuda with nothing the simulator lacks (no warp shuffles), so
the code CI runs under the simulator is the code a GPU runs; :mod:`.ptx` compiles it for a real GPU.

- :func:`ops_kernel` (one CUDA block, launched only when the block has some): replays the block's GPU state
  operations in order (clear a slot; move a voice to its cross-fade tail and clear it).
- :func:`block_kernel` (one CUDA block per voice slot: every instrument and voice in one launch). A slot that
  plays this block first adds its bursts into its excitation ring, one burst after the other in the CPU
  kernel's order (``exc[k, t + i] += v_k · attack_k[i] · noise_k[i]``, the noise being the instrument's own —
  folded into its attacks —, a window of the fresh-noise table, or the fixed noise: the CPU renderer's rule
  and offsets). Then, in chunks of the block held in shared memory: routes the excitation to resonances (dry);
  runs the oscillator bank — ``lanes`` threads per oscillator group (as many as the CUDA block has threads
  for), each taking every lanes-th oscillator two at a time for instruction-level parallelism, each
  oscillator's state in registers across the chunk, its partial wet sums in its own row of shared memory,
  summed across the lanes afterwards (no atomics, no warp shuffles) —; builds the deformation weights (ramps
  restarting at each change's sample); cross-fades the variants, blends dry and wet, applies gain before tanh,
  sums the resonances and ramps the voice gain. A slot whose state blew up (not finite, or above STATE_LIMIT)
  or whose output is not finite is cleared and counted and contributes nothing, as on the CPU; otherwise its
  block is added into ``out``. The last CUDA block to finish (a ticket counter, after a memory fence) runs the
  safety stage — a non-finite sample becomes 0 (counted), then the clip — into ``result``, and leaves ``out``
  and the counter at zero for the next block: no second launch.

Shared memory per CUDA block: (R + E + max(G, threads)) · chunk floats (dynamic; G · lanes ≤ max(G, threads)),
the chunk chosen by the renderer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from .. import kernel as K
from .plan import (
    BI_NOISE,
    BI_ROW,
    BI_TIME,
    CI_OFFSET,
    CI_RAMP_START,
    OP_SWAP,
    SF_GAIN,
    SF_RAMP,
    SF_STEP,
    SF_TARGET,
    SI_BURST_COUNT,
    SI_BURST_FIRST,
    SI_CHG_COUNT,
    SI_CHG_FIRST,
    SI_EXC_UNTIL,
    SI_RAMP_START,
    SI_ROW,
)

# device counters
D_RESETS, D_SCRUBBED = 0, 1
N_DCOUNTERS = 2
SILENT, RINGING = K.SILENT, K.RINGING
FLUSH = np.float32(K.FLUSH)
STATE_LIMIT = np.float32(K.STATE_LIMIT)


@cuda.jit
def ops_kernel(ops, n_ops, tail0, state_re, state_im, exc, live):
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    gm = state_re.shape[1]
    kk = exc.shape[1]
    ll = exc.shape[2]
    for o in range(n_ops):
        s = ops[o, 1]
        if ops[o, 0] == OP_SWAP:
            tail = tail0 + s
            for i in range(tid, gm, nt):
                state_re[tail, i] = state_re[s, i]
                state_im[tail, i] = state_im[s, i]
            for i in range(tid, kk * ll, nt):
                exc[tail, i // ll, i % ll] = exc[s, i // ll, i % ll]
            if tid == 0:
                live[tail] = live[s]
            cuda.syncthreads()
        for i in range(tid, gm, nt):
            state_re[s, i] = 0.0
            state_im[s, i] = 0.0
        for i in range(tid, kk * ll, nt):
            exc[s, i // ll, i % ll] = 0.0
        if tid == 0:
            live[s] = SILENT
        cuda.syncthreads()


@cuda.jit(device=True)
def _settle(a, b):
    """An oscillator's state at the block end: (re, im, 0 flushed to silence | 1 ringing | 2 blown up)."""
    mag = abs(a) + abs(b)
    if mag < FLUSH:
        return np.float32(0.0), np.float32(0.0), 0
    if mag < STATE_LIMIT:
        return a, b, 1
    return a, b, 2  # huge, inf or NaN


@cuda.jit(device=True)
def _add_bursts(s, tid, nt, slot_i, burst_i, burst_f, imeta, attacks, noise, table, exc):
    """The slot's bursts into its ring, one after the other (within one, every (k, i) is its own cell)."""
    mask = exc.shape[2] - 1
    b0 = slot_i[s, SI_BURST_FIRST]
    for b in range(b0, b0 + slot_i[s, SI_BURST_COUNT]):
        t = burst_i[b, BI_TIME]
        row = burst_i[b, BI_ROW]
        k_dims = imeta[row, K.I_K]
        a_len = imeta[row, K.I_A]
        att0 = imeta[row, K.I_ATT]
        owned = imeta[row, K.I_OWNED] != 0
        for idx in range(tid, k_dims * a_len, nt):
            k = idx // a_len
            i = idx - k * a_len
            v = burst_f[b, k]
            if v == 0.0:
                continue
            att = attacks[att0 + k * a_len + i]
            if owned:
                val = v * att
            else:
                off = burst_i[b, BI_NOISE + k]
                nz = table[off + i] if off >= 0 else noise[k, i]
                val = v * att * nz
            exc[s, k, (t + i) & mask] += val
        cuda.syncthreads()


@cuda.jit(device=True)
def _render_slot(s, t0, n, chunk, slot_i, slot_f, chg_i, chg_f, imeta, pole_re, pole_im, coef_re, coef_im,
                 router, mixd, mixw, gains, state_re, state_im, exc, live, vout, out, dcounters):
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    row = slot_i[s, SI_ROW]
    k_dims = imeta[row, K.I_K]
    n_res = imeta[row, K.I_R]
    e_dims = imeta[row, K.I_E]
    n_osc = imeta[row, K.I_M]
    frame = imeta[row, K.I_F]
    mo = imeta[row, K.I_MODE]
    ro = imeta[row, K.I_ROUTER]
    rs = imeta[row, K.I_RES]
    n_groups = n_res * e_dims
    lanes = max(1, nt // n_groups)  # threads per oscillator group, each summing its own share of oscillators
    e_cap = (slot_f.shape[1] - SF_RAMP) // 2
    mask = exc.shape[2] - 1
    sh = cuda.shared.array(0, float32)
    dry_o = 0
    w_o = n_res * chunk
    wet_o = w_o + e_dims * chunk  # (G · lanes) rows of partial sums; a group's sum lands in its first row
    ff = np.float32(frame)
    g0 = slot_f[s, SF_GAIN]
    g_target = slot_f[s, SF_TARGET]
    g_step = slot_f[s, SF_STEP]
    status = 0  # the worst of this thread's oscillators: 0 silent, 1 ringing, 2 blown up
    for c0 in range(0, n, chunk):
        cn = min(chunk, n - c0)
        last = c0 + cn >= n
        # dry: this chunk's excitation routed to resonances, Σ_k router[k, r]·exc_k (k in order, as on CPU)
        for idx in range(tid, n_res * cn, nt):
            r = idx // cn
            j = idx - r * cn
            p = (t0 + c0 + j) & mask
            acc = np.float32(0.0)
            for k in range(k_dims):
                acc += router[ro + k * n_res + r] * exc[s, k, p]
            sh[dry_o + r * chunk + j] = acc
        # deformation weights: the ramp in force at each sample (the block-start one, then each change's)
        for idx in range(tid, e_dims * cn, nt):
            e = idx // cn
            j = idx - e * cn
            prev = slot_f[s, SF_RAMP + e]
            tgt = slot_f[s, SF_RAMP + e_cap + e]
            start = slot_i[s, SI_RAMP_START]
            c_first = slot_i[s, SI_CHG_FIRST]
            for c in range(c_first, c_first + slot_i[s, SI_CHG_COUNT]):
                o = chg_i[c, CI_OFFSET]
                if o >= 0 and o <= c0 + j:
                    prev = chg_f[c, e]
                    tgt = chg_f[c, e_cap + e]
                    start = chg_i[c, CI_RAMP_START]
            i = t0 + c0 + j - start
            if i < frame:
                wv = prev + (np.float32(i) / ff) * (tgt - prev)
            else:
                wv = tgt
            sh[w_o + e * chunk + j] = wv
        cuda.syncthreads()
        for idx in range(tid, k_dims * cn, nt):  # the ring is zeroed behind the read
            k = idx // cn
            j = idx - k * cn
            exc[s, k, (t0 + c0 + j) & mask] = 0.0
        # the oscillator bank: `lanes` threads per group, lane p taking oscillators p, p + lanes, ..., two
        # at a time (two independent recursions in flight), each summed into the lane's row in order
        for gl in range(tid, n_groups * lanes, nt):
            g = gl // lanes
            p = gl - g * lanes
            r = g // e_dims
            wrow = wet_o + gl * chunk
            drow = dry_o + r * chunk
            for j in range(cn):
                sh[wrow + j] = 0.0
            base = mo + g * n_osc
            sb = g * n_osc
            m = p
            while m + lanes < n_osc:
                m1 = m + lanes
                qr0 = pole_re[base + m]
                qi0 = pole_im[base + m]
                kr0 = coef_re[base + m]
                ki0 = coef_im[base + m]
                qr1 = pole_re[base + m1]
                qi1 = pole_im[base + m1]
                kr1 = coef_re[base + m1]
                ki1 = coef_im[base + m1]
                a0 = state_re[s, sb + m]
                b0 = state_im[s, sb + m]
                a1 = state_re[s, sb + m1]
                b1 = state_im[s, sb + m1]
                for j in range(cn):
                    x = sh[drow + j]
                    nr0 = qr0 * a0 - qi0 * b0 + kr0 * x
                    b0 = qr0 * b0 + qi0 * a0 + ki0 * x
                    a0 = nr0
                    nr1 = qr1 * a1 - qi1 * b1 + kr1 * x
                    b1 = qr1 * b1 + qi1 * a1 + ki1 * x
                    a1 = nr1
                    acc = sh[wrow + j] + nr0
                    sh[wrow + j] = acc + nr1
                if last:
                    a0, b0, st0 = _settle(a0, b0)
                    a1, b1, st1 = _settle(a1, b1)
                    status = max(status, max(st0, st1))
                state_re[s, sb + m] = a0
                state_im[s, sb + m] = b0
                state_re[s, sb + m1] = a1
                state_im[s, sb + m1] = b1
                m += 2 * lanes
            if m < n_osc:
                qr0 = pole_re[base + m]
                qi0 = pole_im[base + m]
                kr0 = coef_re[base + m]
                ki0 = coef_im[base + m]
                a0 = state_re[s, sb + m]
                b0 = state_im[s, sb + m]
                for j in range(cn):
                    x = sh[drow + j]
                    nr0 = qr0 * a0 - qi0 * b0 + kr0 * x
                    b0 = qr0 * b0 + qi0 * a0 + ki0 * x
                    a0 = nr0
                    sh[wrow + j] += nr0
                if last:
                    a0, b0, st0 = _settle(a0, b0)
                    status = max(status, st0)
                state_re[s, sb + m] = a0
                state_im[s, sb + m] = b0
        cuda.syncthreads()
        if lanes > 1:  # each group's lanes summed into its first row
            for idx in range(tid, n_groups * cn, nt):
                g = idx // cn
                j = idx - g * cn
                row = wet_o + g * lanes * chunk + j
                acc = sh[row]
                for p in range(1, lanes):
                    acc += sh[row + p * chunk]
                sh[row] = acc
            cuda.syncthreads()
        # variants cross-faded, dry/wet, gain, tanh, summed over resonances; the voice gain ramp
        for j in range(tid, cn, nt):
            v = np.float32(0.0)
            for r in range(n_res):
                g0r = r * e_dims
                y = sh[w_o + j] * sh[wet_o + g0r * lanes * chunk + j]
                for e in range(1, e_dims):
                    y += sh[w_o + e * chunk + j] * sh[wet_o + (g0r + e) * lanes * chunk + j]
                y = gains[rs + r] * (mixd[rs + r] * sh[dry_o + r * chunk + j] + mixw[rs + r] * y)
                v += math.tanh(y)
            if not (v == v and abs(v) < np.float32(np.inf)):
                status = 2
            i = np.float32(c0 + j + 1)
            if g0 < g_target:
                gj = min(g_target, g0 + g_step * i)
            elif g0 > g_target:
                gj = max(g_target, g0 - g_step * i)
            else:
                gj = g0
            vout[s, c0 + j] = gj * v
        cuda.syncthreads()
    bad = cuda.syncthreads_or(np.int32(status == 2))
    ringing = cuda.syncthreads_or(np.int32(status == 1))
    if bad:  # this voice starts over; the others never hear it
        for i in range(tid, state_re.shape[1], nt):
            state_re[s, i] = 0.0
            state_im[s, i] = 0.0
        for i in range(tid, exc.shape[1] * exc.shape[2], nt):
            exc[s, i // exc.shape[2], i % exc.shape[2]] = 0.0
        if tid == 0:
            live[s] = SILENT
            cuda.atomic.add(dcounters, D_RESETS, 1)
        return
    if tid == 0:
        live[s] = RINGING if ringing else SILENT
    for j in range(tid, n, nt):
        cuda.atomic.add(out, j, vout[s, j])


@cuda.jit
def block_kernel(t0, n, chunk, limit, slot_i, slot_f, burst_i, burst_f, chg_i, chg_f, imeta, pole_re, pole_im,
                 coef_re, coef_im, router, attacks, noise, table, mixd, mixw, gains, state_re, state_im, exc, live,
                 vout, out, result, done, dcounters):
    s = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    row = slot_i[s, SI_ROW]
    if row >= 0 and (live[s] != SILENT or t0 < slot_i[s, SI_EXC_UNTIL]):  # a silent slot costs nothing
        _add_bursts(s, tid, nt, slot_i, burst_i, burst_f, imeta, attacks, noise, table, exc)
        _render_slot(s, t0, n, chunk, slot_i, slot_f, chg_i, chg_f, imeta, pole_re, pole_im, coef_re, coef_im,
                     router, mixd, mixw, gains, state_re, state_im, exc, live, vout, out, dcounters)
    # the last block to finish sums up: every block's adds are fenced before it takes its ticket
    cuda.threadfence()
    cuda.syncthreads()
    ticket = 0
    if tid == 0:
        ticket = cuda.atomic.add(done, 0, 1) + 1
    last = cuda.syncthreads_or(np.int32(ticket == cuda.gridDim.x))
    if last:
        for j in range(tid, n, nt):
            v = cuda.atomic.add(out, j, np.float32(0.0))  # an atomic read: from L2, where the adds landed
            out[j] = 0.0  # for the next block (float atomics have no exchange in numba)
            if not (v == v and abs(v) < np.float32(np.inf)):
                cuda.atomic.add(dcounters, D_SCRUBBED, 1)
                v = np.float32(0.0)
            if limit > 0.0:
                if v > limit:
                    v = np.float32(limit)
                elif v < -limit:
                    v = np.float32(-limit)
            result[j] = v
        if tid == 0:
            done[0] = 0
