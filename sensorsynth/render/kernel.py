"""The compiled per-sample recursion of the resonance model, for every voice of a renderer at once.

One call of :func:`process_block` renders one block: it applies the events that fall inside it, then, per
voice, gathers excitation, routes it to resonances (dry), runs every oscillator's one-pole complex recursion
``s[n] = p·s[n-1] + c·dry[n]`` (wet = sum of real parts), cross-fades variants with the deformation weights,
blends dry and wet, saturates with tanh and sums. Nothing here allocates, reads a clock or logs.

Layout (all float32 unless said otherwise; S voice slots, G = R·E groups of M oscillators):

    instruments  imeta (I, N_IMETA) int64; pole/coef re/im flat over every instrument's G·M oscillators;
                 router, attacks, mix and gains flat with offsets in imeta
    voice slots  vmeta (S, N_VMETA) int64; state_re/state_im (S, max G·M); excitation ring (S, max K, L) with
                 L a power of two ≥ attack + block; ramp_prev/ramp_target (S, max E); vgain (S, 3)
    queue        qtime int64, qvoice/qkind/qlen int32, qseq int64, qdata (Q, P), qused bool, qfree int64
                 stack with its top in qstate[0]

Loop order for SIMD: for each group of M oscillators, for each four samples of the block, an inner loop over
the M contiguous oscillators (pole, coefficient and state arrays) that advances each oscillator four samples
with its state and parameters held in registers: LLVM vectorises it (AVX-512/AVX2) with reassociated
horizontal sums for the wet outputs. One sample per pass was bound by loads/stores (2.5x slower).
``error_model="numpy"`` everywhere: Python's ZeroDivisionError check on float division blocks vectorisation. ``fastmath`` is limited to reassociation/contraction/nsz/arcp:
no ``nnan``/``ninf`` (the safety checks must see NaN and inf) and no approximate functions. The tanh is our
own branch-free, vectorisable form (libm's tanhf is a scalar call, ~30 ns here, more than all oscillators).
"""

from __future__ import annotations

import numpy as np
from numba import njit

FAST = {"nsz", "arcp", "contract", "reassoc"}
EXACT = {"contract"}

# imeta columns
I_K, I_R, I_E, I_M, I_A, I_F, I_MODE, I_ROUTER, I_ATT, I_RES = range(10)
N_IMETA = 10
# vmeta columns
V_INST, V_RAMP_START, V_LIVE, V_EXC_UNTIL = range(4)
N_VMETA = 4
# event kinds
EV_CONTROL, EV_DEFORM, EV_DEFORM_NOW = 0, 1, 2
# counters
C_RESETS, C_DROPPED, C_LATE, C_SCRUBBED, C_MISMATCH, C_EVENTS = range(6)
N_COUNTERS = 6

FLUSH = 1e-18  # oscillator state below this (|re|+|im|) is set to 0: no denormals, idle voices cost nothing
STATE_LIMIT = 1e8  # a voice whose oscillator state exceeds this (or is not finite) is reset

# tanh: odd Taylor series below 0.55, exp-based above (exp(z) = poly(f)·2^k, 2^k from a table)
_T1, _T3, _T5, _T7 = 1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0
_T9, _T11, _T13, _T15 = 62.0 / 2835.0, -1382.0 / 155925.0, 21844.0 / 6081075.0, -929569.0 / 638512875.0
LOG2E = 1.4426950408889634
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4
POW2_NEG = np.array([2.0**-i for i in range(32)], dtype=np.float32)


@njit(cache=True, fastmath=EXACT, error_model="numpy")
def tanh_inplace(x: np.ndarray, n: int, pow2: np.ndarray) -> None:
    """x[:n] = tanh(x[:n]) in float32, absolute error ~1e-7, vectorisable (no calls, no branches)."""
    for i in range(n):
        v = x[i]
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
        x[i] = t if v == v else v


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
) -> None:
    """exc_k[t + i] += v_k · attack_k[i] · noise_k[i].

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


@njit(cache=True, fastmath=FAST, error_model="numpy")
def resonate(
    pr: np.ndarray,
    pi: np.ndarray,
    cr: np.ndarray,
    ci: np.ndarray,  # flat (G·M,) poles and coefficients of one instrument
    sr: np.ndarray,
    si: np.ndarray,  # flat (≥ G·M,) state of one voice
    dry: np.ndarray,  # (Rmax, B)
    wet: np.ndarray,  # (Gmax, B) out
    dry_active: np.ndarray,  # (Rmax,) bool: dry[r] has a non-zero sample in this block
    n_groups: int,
    expressivity: int,
    n_osc: int,
    n: int,
) -> int:
    """Run every oscillator over n samples. Returns 0 when every state is flushed to 0 (silent), 1 when
    some state is left, 2 when some state is not finite or above STATE_LIMIT (the voice must be reset)."""
    live = False
    bad = False
    for g in range(n_groups):
        r = g // expressivity
        base = g * n_osc
        w = wet[g]
        # a group with no state and no input stays silent
        idle = not dry_active[r]
        if idle:
            for m in range(n_osc):
                if sr[base + m] != 0.0 or si[base + m] != 0.0:
                    idle = False
                    break
        if idle:
            for j in range(n):
                w[j] = 0.0
            continue
        d = dry[r]
        p_r = pr[base : base + n_osc]
        p_i = pi[base : base + n_osc]
        c_r = cr[base : base + n_osc]
        c_i = ci[base : base + n_osc]
        s_r = sr[base : base + n_osc]
        s_i = si[base : base + n_osc]
        # four samples per pass over the oscillators: state and parameters are loaded once per four
        # updates (the loop is bound by loads/stores otherwise); same operations in the same order
        j = 0
        while j + 4 <= n:
            x0 = d[j]
            x1 = d[j + 1]
            x2 = d[j + 2]
            x3 = d[j + 3]
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            for m in range(n_osc):
                qr = p_r[m]
                qi = p_i[m]
                kr = c_r[m]
                ki = c_i[m]
                a = s_r[m]
                b = s_i[m]
                r1 = qr * a - qi * b + kr * x0
                i1 = qr * b + qi * a + ki * x0
                r2 = qr * r1 - qi * i1 + kr * x1
                i2 = qr * i1 + qi * r1 + ki * x1
                r3 = qr * r2 - qi * i2 + kr * x2
                i3 = qr * i2 + qi * r2 + ki * x2
                r4 = qr * r3 - qi * i3 + kr * x3
                i4 = qr * i3 + qi * r3 + ki * x3
                s_r[m] = r4
                s_i[m] = i4
                a0 += r1
                a1 += r2
                a2 += r3
                a3 += r4
            w[j] = a0
            w[j + 1] = a1
            w[j + 2] = a2
            w[j + 3] = a3
            j += 4
        while j < n:
            x = d[j]
            acc = np.float32(0.0)
            for m in range(n_osc):
                a = s_r[m]
                b = s_i[m]
                nr = p_r[m] * a - p_i[m] * b + c_r[m] * x
                s_i[m] = p_r[m] * b + p_i[m] * a + c_i[m] * x
                s_r[m] = nr
                acc += nr
            w[j] = acc
            j += 1
        for m in range(n_osc):
            mag = abs(s_r[m]) + abs(s_i[m])
            if mag < FLUSH:
                s_r[m] = 0.0
                s_i[m] = 0.0
            elif mag < STATE_LIMIT:
                live = True
            else:  # huge, inf or NaN
                bad = True
    if bad:
        return 2
    return 1 if live else 0


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

    qstate[2] is the earliest queued time (a block before it scans nothing), qstate[3] one past the highest
    slot ever used (the free stack hands out low slots first, so the scan stays short)."""
    if qstate[2] >= t_end:
        return 0
    n = 0
    earliest = np.int64(1) << 62
    for q in range(qstate[3]):
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
    qstate[2] = earliest
    return n


@njit(cache=True, fastmath=FAST, error_model="numpy")
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
    pow2: np.ndarray,
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
        for j in range(n):
            y[j] = gr * (md * dr[j] + mw * y[j])
        tanh_inplace(y, n, pow2)
        for j in range(n):
            vout[j] += y[j]


@njit(cache=True, error_model="numpy")
def _reset_slot(s, state_re, state_im, exc, vmeta, ramp_prev, ramp_target, rest):
    state_re[s, :] = 0.0
    state_im[s, :] = 0.0
    exc[s, :, :] = 0.0
    vmeta[s, V_LIVE] = 0
    vmeta[s, V_EXC_UNTIL] = 0
    vmeta[s, V_RAMP_START] = -(1 << 40)
    e = ramp_prev.shape[1]
    for i in range(e):
        ramp_prev[s, i] = rest[s, i]
        ramp_target[s, i] = rest[s, i]


@njit(cache=True, error_model="numpy")
def process_block(
    t0: int,
    n: int,
    out: np.ndarray,  # (B,) float32, written
    limit: float,  # output clip; <= 0 disables clipping (NaN/inf are scrubbed regardless)
    # instruments
    imeta: np.ndarray,
    pole_re: np.ndarray,
    pole_im: np.ndarray,
    coef_re: np.ndarray,
    coef_im: np.ndarray,
    router: np.ndarray,
    attacks: np.ndarray,
    mixd: np.ndarray,
    mixw: np.ndarray,
    gains: np.ndarray,
    # voices
    vmeta: np.ndarray,
    state_re: np.ndarray,
    state_im: np.ndarray,
    exc: np.ndarray,
    ramp_prev: np.ndarray,
    ramp_target: np.ndarray,
    rest: np.ndarray,  # (S, Emax) resting weights of each slot's instrument
    vgain: np.ndarray,  # (S, 3): current, target, step per sample
    # queue
    qtime: np.ndarray,
    qvoice: np.ndarray,
    qkind: np.ndarray,
    qlen: np.ndarray,
    qseq: np.ndarray,
    qdata: np.ndarray,
    qused: np.ndarray,
    qfree: np.ndarray,
    qstate: np.ndarray,  # [free-stack top, next sequence number, earliest time, slot high-water mark]
    # noise
    noise: np.ndarray,  # (K, A) fixed noise, used when table is empty
    table: np.ndarray,  # fresh-noise table (NOISE_TABLE + A,) or size 0
    rng: np.ndarray,  # uint64 [seed, event counter]
    n_main: int,  # slots >= n_main are cross-fade tails: released once faded out
    # scratch
    due: np.ndarray,
    nbuf: np.ndarray,
    excb: np.ndarray,
    dry: np.ndarray,
    dry_active: np.ndarray,
    wet: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    vout: np.ndarray,
    pow2: np.ndarray,
    counters: np.ndarray,
) -> None:
    mask = exc.shape[2] - 1
    n_slots = vmeta.shape[0]
    t_end = t0 + n
    for j in range(n):
        out[j] = 0.0

    # 1. events due in this block: bursts go into the voices' excitation rings at their exact sample
    n_due = collect_due(qtime, qseq, qused, t_end, due, qstate)
    for d in range(n_due):
        q = due[d]
        if qtime[q] < t0:
            counters[C_LATE] += 1
            qtime[q] = t0
        if qkind[q] != EV_CONTROL:
            continue
        s = qvoice[q]
        inst = vmeta[s, V_INST]
        if inst < 0 or qlen[q] != imeta[inst, I_K]:
            counters[C_MISMATCH] += 1
            continue
        a_len = imeta[inst, I_A]
        k_dims = imeta[inst, I_K]
        t = qtime[q]
        att = attacks[imeta[inst, I_ATT] : imeta[inst, I_ATT] + k_dims * a_len]
        key = _hash32(rng[0] ^ _hash32(rng[1]))
        rng[1] += np.uint64(1)
        add_burst(exc[s], mask, t, qdata[q], att, k_dims, a_len, noise, table, key, nbuf)
        if t + a_len > vmeta[s, V_EXC_UNTIL]:
            vmeta[s, V_EXC_UNTIL] = t + a_len
        counters[C_EVENTS] += 1

    # 2. every voice slot
    for s in range(n_slots):
        inst = vmeta[s, V_INST]
        if inst < 0:
            continue
        k_dims = imeta[inst, I_K]
        n_res = imeta[inst, I_R]
        e_dims = imeta[inst, I_E]
        n_osc = imeta[inst, I_M]
        frame = imeta[inst, I_F]
        gm = n_res * e_dims * n_osc
        # deformation weights, with ramps restarted at the exact sample of each deformation event
        start = 0
        for d in range(n_due):
            q = due[d]
            if qvoice[q] != s or qkind[q] == EV_CONTROL:
                continue
            if qlen[q] != e_dims:
                counters[C_MISMATCH] += 1
                continue
            o = qtime[q] - t0
            fill_weights(w, start, o, t0, ramp_prev[s], ramp_target[s], vmeta[s, V_RAMP_START], frame, e_dims)
            i_now = qtime[q] - vmeta[s, V_RAMP_START]
            for e in range(e_dims):
                cur = _weight_at(ramp_prev[s], ramp_target[s], e, i_now, frame)
                ramp_target[s, e] = qdata[q, e]
                ramp_prev[s, e] = qdata[q, e] if qkind[q] == EV_DEFORM_NOW else cur
            vmeta[s, V_RAMP_START] = qtime[q]
            counters[C_EVENTS] += 1
            start = o
        fill_weights(w, start, n, t0, ramp_prev[s], ramp_target[s], vmeta[s, V_RAMP_START], frame, e_dims)

        g_cur = vgain[s, 0]
        g_target = vgain[s, 1]
        if vmeta[s, V_LIVE] == 0 and t0 >= vmeta[s, V_EXC_UNTIL]:
            # silent voice: nothing to compute, the gain still moves
            if g_cur < g_target:
                vgain[s, 0] = min(g_target, g_cur + vgain[s, 2] * n)
            else:
                vgain[s, 0] = max(g_target, g_cur - vgain[s, 2] * n)
            continue

        # excitation of this block out of the ring (zeroed behind us), routed to resonances
        ring = exc[s]
        pos = t0 & mask
        first = min(n, mask + 1 - pos)
        any_exc = False
        for k in range(k_dims):
            src = ring[k]
            dst = excb[k]
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
            dry_active[k + n_res] = nz  # scratch: row k of excb active (stored after the R flags)
            any_exc = any_exc or nz
        ro = imeta[inst, I_ROUTER]
        for r in range(n_res):
            row = dry[r]
            for j in range(n):
                row[j] = 0.0
            dry_active[r] = False
        if any_exc:
            for k in range(k_dims):
                if not dry_active[k + n_res]:
                    continue
                src = excb[k]
                for r in range(n_res):
                    c = router[ro + k * n_res + r]
                    if c == 0.0:
                        continue
                    row = dry[r]
                    for j in range(n):
                        row[j] += c * src[j]
                    dry_active[r] = True

        mo = imeta[inst, I_MODE]
        status = resonate(
            pole_re[mo : mo + gm],
            pole_im[mo : mo + gm],
            coef_re[mo : mo + gm],
            coef_im[mo : mo + gm],
            state_re[s],
            state_im[s],
            dry,
            wet,
            dry_active,
            n_res * e_dims,
            e_dims,
            n_osc,
            n,
        )
        _combine(dry, wet, w, mixd, mixw, gains, imeta[inst, I_RES], n_res, e_dims, n, y, vout, pow2)

        # safety: a voice whose state or output is not finite, or whose state is huge, is reset
        bad = status == 2
        for j in range(n):
            if not np.isfinite(vout[j]):
                bad = True
        if bad:
            _reset_slot(s, state_re, state_im, exc, vmeta, ramp_prev, ramp_target, rest)
            counters[C_RESETS] += 1
            continue
        vmeta[s, V_LIVE] = status

        # click-free voice gain: a linear ramp toward the target
        step = vgain[s, 2]
        g = g_cur
        for j in range(n):
            if g < g_target:
                g = min(g_target, g + step)
            elif g > g_target:
                g = max(g_target, g - step)
            out[j] += g * vout[j]
        vgain[s, 0] = g

    for s in range(n_main, n_slots):
        if vmeta[s, V_INST] >= 0 and vgain[s, 0] == 0.0 and vgain[s, 1] == 0.0:
            _reset_slot(s, state_re, state_im, exc, vmeta, ramp_prev, ramp_target, rest)
            vmeta[s, V_INST] = -1

    # 3. free the queue slots of the applied events
    for d in range(n_due):
        q = due[d]
        qused[q] = False
        qfree[qstate[0]] = q
        qstate[0] += 1

    # 4. hard safety stage on the mix
    for j in range(n):
        v = out[j]
        if not np.isfinite(v):
            counters[C_SCRUBBED] += 1
            v = np.float32(0.0)
        if limit > 0.0:
            if v > limit:
                v = np.float32(limit)
            elif v < -limit:
                v = np.float32(-limit)
        out[j] = v


# ---------------------------------------------------------------------------------------------------
# One-argument-per-dtype entry point. numba unboxes every array argument on every call (~70 ns each);
# with 40-odd arrays that was 3 µs of a 64-sample block. The renderer keeps all its arrays as views into
# five buffers (one per dtype) and passes those plus a layout table; the views are rebuilt here for free.

PACKED_KINDS = (  # per process_block argument after (t0, n): (buffer, ndim); buffer "" = a scalar
    ("f", 1), ("", 0), ("q", 2), ("f", 1), ("f", 1), ("f", 1), ("f", 1), ("f", 1), ("f", 1), ("f", 1),
    ("f", 1), ("f", 1), ("q", 2), ("f", 2), ("f", 2), ("f", 3), ("f", 2), ("f", 2), ("f", 2), ("f", 2),
    ("q", 1), ("h", 1), ("h", 1), ("h", 1), ("q", 1), ("f", 2), ("b", 1), ("q", 1), ("q", 1), ("f", 2),
    ("f", 1), ("u", 1), ("", 0), ("q", 1), ("f", 1), ("f", 2), ("f", 2), ("b", 1), ("f", 2), ("f", 2),
    ("f", 1), ("f", 1), ("f", 1), ("q", 1),
)  # fmt: skip


@njit(cache=True, inline="always")
def _v1(buf, lay, i):
    o = lay[i, 0]
    return buf[o : o + lay[i, 1]]


@njit(cache=True, inline="always")
def _v2(buf, lay, i):
    o = lay[i, 0]
    return buf[o : o + lay[i, 1] * lay[i, 2]].reshape((lay[i, 1], lay[i, 2]))


@njit(cache=True, inline="always")
def _v3(buf, lay, i):
    o = lay[i, 0]
    return buf[o : o + lay[i, 1] * lay[i, 2] * lay[i, 3]].reshape((lay[i, 1], lay[i, 2], lay[i, 3]))


@njit(cache=True, error_model="numpy")
def process_packed(t0, n, limit, n_main, f, q, h, u, b, lay) -> None:
    """process_block with its arrays rebuilt from the five dtype buffers (layout: PACKED_KINDS)."""
    process_block(
        t0, n, _v1(f, lay, 0), limit, _v2(q, lay, 2),
        _v1(f, lay, 3), _v1(f, lay, 4), _v1(f, lay, 5), _v1(f, lay, 6), _v1(f, lay, 7), _v1(f, lay, 8),
        _v1(f, lay, 9), _v1(f, lay, 10), _v1(f, lay, 11),
        _v2(q, lay, 12), _v2(f, lay, 13), _v2(f, lay, 14), _v3(f, lay, 15), _v2(f, lay, 16), _v2(f, lay, 17),
        _v2(f, lay, 18), _v2(f, lay, 19),
        _v1(q, lay, 20), _v1(h, lay, 21), _v1(h, lay, 22), _v1(h, lay, 23), _v1(q, lay, 24), _v2(f, lay, 25),
        _v1(b, lay, 26), _v1(q, lay, 27), _v1(q, lay, 28),
        _v2(f, lay, 29), _v1(f, lay, 30), _v1(u, lay, 31), n_main,
        _v1(q, lay, 33), _v1(f, lay, 34), _v2(f, lay, 35), _v2(f, lay, 36), _v1(b, lay, 37), _v2(f, lay, 38),
        _v2(f, lay, 39), _v1(f, lay, 40), _v1(f, lay, 41), _v1(f, lay, 42), _v1(q, lay, 43),
    )  # fmt: skip
