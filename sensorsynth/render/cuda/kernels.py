"""The CUDA kernels of one block, in launch order on one stream: ops → bursts → voices → safety.

Imported only by :mod:`.renderer` (it imports ``numba.cuda``, which must see ``NUMBA_ENABLE_CUDASIM`` before
its first import). Every kernel is plain numba.cuda with nothing the simulator lacks (no warp shuffles), so
the code CI runs under the simulator is the code a GPU runs.

- :func:`ops_kernel` (one CUDA block): zeroes the output, then replays the block's GPU state operations in
  order (clear a slot; move a voice to its cross-fade tail and clear it).
- :func:`bursts_kernel` (one CUDA block per burst): ``exc[s, k, t + i] += v_k · attack_k[i] · noise_k[i]``,
  with the instrument's own noise folded into its attacks, a window of the fresh-noise table, or the fixed
  noise: the CPU renderer's rule (``playback.attacks_to_play``) and its noise offsets. Atomic adds: two
  bursts of one voice may overlap.
- :func:`voices_kernel` (one CUDA block per voice slot, all instruments and voices in one launch): in
  chunks of the block held in shared memory, routes the excitation to resonances (dry), runs the oscillator
  bank — one thread per oscillator group, each oscillator's state in registers across the chunk, the
  group's wet sum accumulated in the CPU kernel's order — builds the deformation weights (ramps restarting
  at each change's sample), cross-fades the variants, blends dry and wet, applies gain before tanh, sums the
  resonances and ramps the voice gain. A slot whose state blew up (not finite, or above STATE_LIMIT) or whose
  output is not finite is cleared and counted and contributes nothing, as on the CPU; otherwise its block is
  added into the output.
- :func:`safety_kernel` (one CUDA block): a non-finite sample becomes 0 (counted), then the clip.

Shared memory per voice block: (R + G + E) · chunk floats (dynamic), the chunk chosen by the renderer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from .. import kernel as K
from .plan import (
    BI_NOISE,
    BI_ROW,
    BI_SLOT,
    BI_TIME,
    CI_OFFSET,
    CI_RAMP_START,
    OP_SWAP,
    SF_GAIN,
    SF_RAMP,
    SF_STEP,
    SF_TARGET,
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
SHARED_FLOATS = 4096  # per voice block: 16 KiB, so several voice blocks share one multiprocessor


@cuda.jit
def ops_kernel(out, ops, n_ops, tail0, state_re, state_im, exc, live):
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for j in range(tid, out.shape[0], nt):
        out[j] = 0.0
    gm = state_re.shape[1]
    kk = exc.shape[1]
    ll = exc.shape[2]
    for o in range(n_ops):
        s = ops[o, 0 + 1]
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


@cuda.jit
def bursts_kernel(burst_i, burst_f, imeta, attacks, noise, table, exc):
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    s = burst_i[b, BI_SLOT]
    t = burst_i[b, BI_TIME]
    row = burst_i[b, BI_ROW]
    k_dims = imeta[row, K.I_K]
    a_len = imeta[row, K.I_A]
    att0 = imeta[row, K.I_ATT]
    owned = imeta[row, K.I_OWNED] != 0
    mask = exc.shape[2] - 1
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
        cuda.atomic.add(exc, (s, k, (t + i) & mask), val)


@cuda.jit
def voices_kernel(t0, n, chunk, slot_i, slot_f, chg_i, chg_f, imeta, pole_re, pole_im, coef_re, coef_im, router,
                  mixd, mixw, gains, state_re, state_im, exc, live, vout, out, dcounters):
    s = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    row = slot_i[s, SI_ROW]
    if row < 0:
        return
    if live[s] == SILENT and t0 >= slot_i[s, SI_EXC_UNTIL]:
        return
    k_dims = imeta[row, K.I_K]
    n_res = imeta[row, K.I_R]
    e_dims = imeta[row, K.I_E]
    n_osc = imeta[row, K.I_M]
    frame = imeta[row, K.I_F]
    mo = imeta[row, K.I_MODE]
    ro = imeta[row, K.I_ROUTER]
    rs = imeta[row, K.I_RES]
    n_groups = n_res * e_dims
    e_cap = (slot_f.shape[1] - SF_RAMP) // 2
    mask = exc.shape[2] - 1
    sh = cuda.shared.array(0, float32)
    dry_o = 0
    wet_o = n_res * chunk
    w_o = wet_o + n_groups * chunk
    ff = np.float32(frame)
    g0 = slot_f[s, SF_GAIN]
    g_target = slot_f[s, SF_TARGET]
    g_step = slot_f[s, SF_STEP]
    bad = 0
    ringing = 0
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
        # the oscillator bank: one thread per group, oscillator by oscillator, sample by sample
        for g in range(tid, n_groups, nt):
            r = g // e_dims
            wrow = wet_o + g * chunk
            drow = dry_o + r * chunk
            for j in range(cn):
                sh[wrow + j] = 0.0
            base = mo + g * n_osc
            for m in range(n_osc):
                qr = pole_re[base + m]
                qi = pole_im[base + m]
                kr = coef_re[base + m]
                ki = coef_im[base + m]
                a = state_re[s, g * n_osc + m]
                b = state_im[s, g * n_osc + m]
                for j in range(cn):
                    x = sh[drow + j]
                    nr = qr * a - qi * b + kr * x
                    b = qr * b + qi * a + ki * x
                    a = nr
                    sh[wrow + j] += nr
                if last:
                    mag = abs(a) + abs(b)
                    if mag < FLUSH:
                        a = np.float32(0.0)
                        b = np.float32(0.0)
                    elif mag < STATE_LIMIT:
                        ringing = 1
                    else:  # huge, inf or NaN
                        bad = 1
                state_re[s, g * n_osc + m] = a
                state_im[s, g * n_osc + m] = b
        cuda.syncthreads()
        # variants cross-faded, dry/wet, gain, tanh, summed over resonances; the voice gain ramp
        for j in range(tid, cn, nt):
            v = np.float32(0.0)
            for r in range(n_res):
                g0r = r * e_dims
                y = sh[w_o + j] * sh[wet_o + g0r * chunk + j]
                for e in range(1, e_dims):
                    y += sh[w_o + e * chunk + j] * sh[wet_o + (g0r + e) * chunk + j]
                y = gains[rs + r] * (mixd[rs + r] * sh[dry_o + r * chunk + j] + mixw[rs + r] * y)
                v += math.tanh(y)
            if not (v == v and abs(v) < np.float32(np.inf)):
                bad = 1
            i = np.float32(c0 + j + 1)
            if g0 < g_target:
                gj = min(g_target, g0 + g_step * i)
            elif g0 > g_target:
                gj = max(g_target, g0 - g_step * i)
            else:
                gj = g0
            vout[s, c0 + j] = gj * v
        cuda.syncthreads()
    bad = cuda.syncthreads_or(np.int32(bad))
    ringing = cuda.syncthreads_or(np.int32(ringing))
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
def safety_kernel(out, n, limit, dcounters):
    tid = cuda.threadIdx.x
    for j in range(tid, n, cuda.blockDim.x):
        v = out[j]
        if not (v == v and abs(v) < np.float32(np.inf)):
            cuda.atomic.add(dcounters, D_SCRUBBED, 1)
            v = np.float32(0.0)
        if limit > 0.0:
            if v > limit:
                v = np.float32(limit)
            elif v < -limit:
                v = np.float32(-limit)
        out[j] = v
