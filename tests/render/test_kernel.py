"""The compiled pieces against plain numpy: tanh, the oscillator recursion, bursts, the event queue scan."""

from __future__ import annotations

import numpy as np
import pytest

from sensorsynth.render import kernel as K


def test_tanh_is_accurate_everywhere_and_passes_nan():
    x = np.concatenate([np.linspace(-30, 30, 100001), [0.0, 1e-30, -1e-30, 0.5499, 0.5501]]).astype(np.float32)
    y = x.copy()
    K.tanh_inplace(y, y.size)
    assert np.abs(y - np.tanh(x.astype(np.float64))).max() < 2e-7
    z = np.array([np.nan, np.inf, -np.inf], np.float32)
    K.tanh_inplace(z, 3)
    assert np.isnan(z[0]) and z[1] == 1.0 and z[2] == -1.0


def reference_recursion(poles, coef, dry):
    """The model's oscillators in float64 from silence: s[n] = p s[n-1] + c d[n]; wet = Σ_m Re(s)."""
    s = np.zeros(poles.shape, np.complex128)
    wet = np.zeros((poles.shape[0], dry.shape[1]))
    for j in range(dry.shape[1]):
        s = poles * s + coef * dry[:, j : j + 1]
        wet[:, j] = s.real.sum(axis=1)
    return wet


def run_resonate(poles, coef, dry, e, block):
    """K.resonate over dry (R, n) in blocks of ``block`` samples from silence: (wet (G, n), statuses)."""
    g, m = poles.shape
    bank = K.oscillator_bank(poles, coef)
    su, sd = np.zeros(g * m, np.float32), np.zeros(g * m, np.float32)
    tr, ti = np.zeros(bank.tail[-1], np.float32), np.zeros(bank.tail[-1], np.float32)
    wet = np.zeros((g, dry.shape[1]), np.float32)
    buf = np.zeros((g, block), np.float32)
    statuses = []
    for j in range(0, dry.shape[1], block):
        n = min(block, dry.shape[1] - j)
        part = np.ascontiguousarray(dry[:, j : j + n])
        active = (np.abs(part).max(axis=1) > 0).astype(np.float32)
        statuses.append(K.resonate(*bank, su, sd, tr, ti, part, buf, active, g, e, m, n, True))
        wet[:, j : j + n] = buf[:, :n]
    return wet, statuses


@pytest.mark.parametrize("block", [1, 3, 4, 37, 64])
def test_resonate_matches_the_complex_recursion(block):
    """The kernel's forms (oscillator_bank: the real difference form, and the complex tail above TAIL_ANGLE)
    are the model's complex one-pole recursion: within 1e-5 of the float64 reference over 2,000 samples of
    random poles (0 to Nyquist) and coefficients, whatever the block (the 4-sample passes and the 1-sample
    remainder), ringing on after its input stops."""
    rng = np.random.default_rng(0)
    g, m, e = 6, 24, 2
    mag = rng.uniform(0.95, 0.9999, (g, m))
    poles = (mag * np.exp(1j * rng.uniform(0, np.pi, (g, m)))).astype(np.complex64)
    assert 0 < K.oscillator_bank(poles, poles).tail[-1] < g * m  # both forms run
    coef = (rng.normal(size=(g, m)) + 1j * rng.normal(size=(g, m))).astype(np.complex64)
    dry = rng.normal(size=(g // e, 2000)).astype(np.float32)
    dry[:, 1200:] = 0.0
    want = reference_recursion(poles.astype(np.complex128), coef, np.repeat(dry, e, axis=0))
    wet, statuses = run_resonate(poles, coef, dry, e, block)
    assert set(statuses) == {1}
    assert np.linalg.norm(wet - want) / np.linalg.norm(want) < 1e-5
    np.testing.assert_allclose(wet, want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("band", [(5.0, 500.0), (10525.0, 11020.0)], ids=["near 0 Hz", "near Nyquist"])
def test_resonate_holds_long_modes_at_the_band_edges_over_a_whole_clip(band):
    """The cases the two forms exist for: modes within 500 Hz of 0 Hz (the difference form) or of Nyquist
    (the complex tail) at 22050 Hz, ringing for seconds (|p| up to 0.99995), 2**17 samples: within the
    renderer's 1e-4 of the float64 recursion (3e-5 and 2e-6 measured; float32 complex arithmetic: 2e-6; the
    plain direct form is off by 1e-4 on the whole bundled guitar already, the difference form by 4e-2 near
    Nyquist)."""
    rng = np.random.default_rng(1)
    g, m = 2, 16
    freq = np.geomspace(*band, g * m).reshape(g, m)
    decay = rng.uniform(1.0, 20.0, (g, m))  # 1/s
    poles = np.exp((-decay + 2j * np.pi * freq) / 22050.0).astype(np.complex64)
    coef = (rng.normal(size=(g, m)) + 1j * rng.normal(size=(g, m))).astype(np.complex64) * 0.01
    n = 2**17
    dry = np.zeros((g, n), np.float32)
    for t in range(0, n // 2, 9000):
        dry[:, t : t + 300] = rng.uniform(-1, 1, (g, 300))
    want = reference_recursion(poles.astype(np.complex128), coef, dry)
    wet, _ = run_resonate(poles, coef, dry, 1, 64)
    assert np.linalg.norm(wet - want) / np.linalg.norm(want) < 1e-4


def test_oscillator_bank_is_the_complex_filter():
    """ku, kd, cu, cd of a low oscillator give its impulse response Re(c·p^n), in float64; one above
    TAIL_ANGLE goes to the tail with its own pole and coefficient, and its lane plays nothing."""
    poles = np.array([[0.999 * np.exp(0.3j), 0.999 * np.exp(2.8j)]])
    coefs = np.array([[0.7 - 0.2j, 0.3 + 0.5j]])
    bank = K.oscillator_bank(poles, coefs)
    assert bank.tail.tolist() == [0, 1]
    assert np.allclose(bank.tail_pr + 1j * bank.tail_pi, poles[0, 1]) and np.allclose(bank.tail_cr + 1j * bank.tail_ci, coefs[0, 1])
    assert bank.cu[1] == 0 and bank.cd[1] == 0
    ku, kd, cu, cd = (float(a[0]) for a in bank[:4])
    u = d = 0.0
    out = []
    for x in [1.0] + [0.0] * 49:
        d = ku * u + kd * d + x
        u = u + d
        out.append(cu * u + cd * d)
    np.testing.assert_allclose(out, (coefs[0, 0] * poles[0, 0] ** np.arange(50)).real, atol=1e-5)


def test_resonate_flushes_tiny_state_and_flags_huge_state():
    g, m = 2, 8
    ones = np.ones(g * m, np.float32)
    zeros = np.zeros(g * m, np.float32)
    dry = np.zeros((g, 4), np.float32)
    wet = np.zeros((g, 4), np.float32)
    active = np.zeros(g, np.float32)
    # one tail oscillator in group 1 (pole 0.5), none in group 0
    tail, one, none = np.array([0, 0, 1]), np.array([0.5], np.float32), np.zeros(1, np.float32)
    tails = (tail, one, none, none, none)

    def run(ku, kd, su, tr, scan=True):
        return K.resonate(ku, kd, zeros, zeros, *tails, su, zeros.copy(), tr, none.copy(), dry, wet, active, g, 1, m, 4,
                          scan)

    su, tr = np.full(g * m, 1e-20, np.float32), np.full(1, 1e-20, np.float32)
    assert run(zeros, ones * 0.25, su, tr, scan=False) == K.RINGING  # a block without the scan flushes nothing
    assert np.all(su != 0) and np.all(tr != 0)
    assert run(zeros, ones * 0.25, su, tr) == K.SILENT
    assert np.all(su == 0) and np.all(tr == 0)
    assert run(zeros, zeros, np.full(g * m, 1e9, np.float32), none.copy()) == K.BLOWN_UP
    assert run(zeros, zeros, zeros.copy(), np.full(1, 1e10, np.float32)) == K.BLOWN_UP  # the tail is checked too
    su = np.full(g * m, 1.0, np.float32)
    su[3] = np.nan
    assert run(zeros, ones * 0.5, su, none.copy()) == K.BLOWN_UP
    assert run(zeros, ones * 0.5, np.full(g * m, 1.0, np.float32), none.copy()) == K.RINGING
    assert run(zeros, zeros, zeros.copy(), np.ones(1, np.float32)) == K.RINGING  # only the tail rings


@pytest.mark.parametrize("owned", [False, True])
@pytest.mark.parametrize("t", [0, 100, 4000, 4095])
def test_burst_wraps_around_the_ring(t, owned):
    """With fixed noise the burst is v·attack·noise; an instrument that owns its noise has it in its attacks
    already (owned=True), and the burst is v·attack."""
    rng = np.random.default_rng(1)
    k, a, ring = 3, 300, 4096
    exc = np.zeros((k, ring), np.float32)
    vec = np.array([0.5, 0.0, 2.0], np.float32)
    att = rng.normal(size=(k, a)).astype(np.float32)
    noise = rng.uniform(-1, 1, (k, a)).astype(np.float32)
    K.add_burst(exc, ring - 1, t, vec, att.reshape(-1), k, a, noise, np.zeros(0, np.float32), np.uint64(0),
                np.zeros(a, np.float32), owned)
    want = np.zeros((k, ring), np.float32)
    idx = (t + np.arange(a)) % ring
    want[:, idx] = vec[:, None] * (att if owned else att * noise)
    np.testing.assert_allclose(exc, want, atol=1e-6)


def test_fresh_noise_is_uniform_and_differs_per_key():
    a = 20000
    table = np.random.default_rng(0).uniform(-1, 1, K.NOISE_TABLE + a).astype(np.float32)
    bursts = []
    for key in (1, 2):
        exc = np.zeros((1, 32768), np.float32)
        K.add_burst(exc, 32767, 0, np.ones(1, np.float32), np.ones(a, np.float32), 1, a,
                    np.zeros((0, 0), np.float32), table, np.uint64(key), np.zeros(a, np.float32), False)  # fmt: skip
        bursts.append(exc[0, :a])
    x = bursts[0]
    assert -1 <= x.min() < -0.99 and 0.99 < x.max() < 1
    assert abs(x.mean()) < 0.02 and abs(x.var() - 1 / 3) < 0.01
    assert abs(np.corrcoef(bursts[0], bursts[1])[0, 1]) < 0.05


def test_collect_due_sorts_by_time_then_arrival():
    qtime = np.array([50, 10, 10, 70, 5, 0], np.int64)
    qseq = np.array([0, 2, 1, 3, 4, 5], np.int64)
    qused = np.array([True, True, True, True, True, False])
    due = np.zeros(6, np.int64)
    qstate = np.array([0, 6, 0, 6], np.int64)
    n = K.collect_due(qtime, qseq, qused, 60, due, qstate)
    assert list(due[:n]) == [4, 2, 1, 0]
    assert qstate[2] == 70  # earliest event left
    assert K.collect_due(qtime, qseq, qused, 60, due, qstate) == 0  # nothing before 70: no scan


def test_the_field_table_drives_packing_and_unpacking():
    """Every field of kernel.FIELDS is unpacked by the generated code, packed by the renderer at the offset
    and shape the layout table says, and appears exactly once."""
    from sensorsynth.render.layout import allocate
    from sensorsynth.render.renderer import Renderer

    from .instruments import make_instrument

    source = K._unpack_source()
    for i, f in enumerate(K.FIELDS):
        assert f"lay, {i}),  # {f.name}\n" in source
    r = Renderer(make_instrument(0, n_samples=2**14), block_size=32, max_voices=3, seed=0)
    bank = r._bank
    lay = bank.views.layout
    buffers = dict(zip(K.BUFFERS, bank.args))
    for i, f in enumerate(K.FIELDS):
        view = getattr(bank.views, f.name)
        assert view.dtype == f.dtype and view.ndim == f.ndim, f.name
        assert tuple(lay[i, 1 : 1 + f.ndim]) == view.shape, f.name
        buf = buffers[f.group, f.dtype]
        if view.size:
            assert view.__array_interface__["data"][0] == buf.ctypes.data + lay[i, 0] * buf.itemsize, f.name
    assert bank.views.vmeta.shape == (6, K.N_VMETA) and bank.views.out.shape == (1, 32)
    with pytest.raises(AssertionError, match="do not match the table"):
        allocate("fixed", {"params": (4,)})


def test_inbox_ring_wraps_its_payloads_and_refuses_when_full():
    n_slots, pool_size = 4, 10
    state = np.zeros(K.N_INBOX_STATE, np.int64)
    slots = np.zeros((n_slots, K.N_SLOT), np.int64)
    pool = np.zeros(pool_size, np.float32)

    def push(length, value):
        return K.inbox_push(state, slots, pool, K.EV_CONTROL, 0, 0, 0, np.full(length, value, np.float32))

    def consume(count):  # what the kernel's drain does with the indices
        state[K.IB_READ] += count

    assert push(4, 1.0) and push(4, 2.0)
    assert not push(4, 3.0)  # 12 payload values > 10: refused although slots are free
    assert push(2, 3.0) and push(0, 0.0)
    assert not push(0, 0.0)  # all four slots taken
    assert state[K.IB_FULL] == 2
    consume(1)  # the first message's payload is free again
    assert push(4, 5.0)  # wraps around the payload ring
    m = slots[4 % n_slots]
    assert m[K.M_OFF] == 10 and m[K.M_LEN] == 4
    np.testing.assert_array_equal(pool[[0, 1, 2, 3]], [5.0, 5.0, 5.0, 5.0])
    np.testing.assert_array_equal(pool[[4, 5, 6, 7, 8, 9]], [2.0, 2.0, 2.0, 2.0, 3.0, 3.0])
    assert state[K.IB_WRITE] == 5 and state[K.IB_READ] == 1
