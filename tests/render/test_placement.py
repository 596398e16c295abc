"""The placement rules (render/placement.py) against their definitions: equal power, neighbours only, the
ends of the line, the wrap of the ring, fixed channels, the fold-down for the browser."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensorsynth.render import placement as P


@pytest.mark.parametrize("n", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("layout", ["line", "ring"])
def test_equal_power_everywhere(n, layout):
    for pos in np.linspace(0, 1, 257):
        g = P.pan_gains(float(pos), n, layout)
        assert g.shape == (n,) and g.dtype == np.float32
        assert np.all(g >= 0)
        assert abs(float(np.sum(g.astype(np.float64) ** 2)) - 1.0) < 1e-6, (pos, g)
        assert np.count_nonzero(g > 1e-7) <= 2, "at most two speakers sound"


@pytest.mark.parametrize("n", [2, 5, 8])
def test_line_definition(n):
    # on a speaker: that speaker alone; between speaker i and i+1 at fraction f: cos, sin of f·π/2
    for i in range(n):
        g = P.line_gains(i / (n - 1), n)
        assert g[i] == pytest.approx(1.0, abs=1e-6) and np.sum(g) == pytest.approx(1.0, abs=1e-6)
    for i in range(n - 1):
        for f in (0.1, 0.5, 0.9):
            g = P.line_gains((i + f) / (n - 1), n)
            assert g[i] == pytest.approx(math.cos(f * math.pi / 2), abs=1e-5)
            assert g[i + 1] == pytest.approx(math.sin(f * math.pi / 2), abs=1e-5)
    assert np.array_equal(P.line_gains(-3.0, n), P.line_gains(0.0, n)), "clamped at the ends"
    assert np.array_equal(P.line_gains(7.0, n), P.line_gains(1.0, n))


def test_ring_definition_and_wrap():
    n = 8
    for i in range(n):
        g = P.ring_gains(i / n, n)
        assert g[i] == pytest.approx(1.0, abs=1e-6)
    g = P.ring_gains(7.5 / 8, n)  # half-way from the last speaker back to the first
    assert g[7] == pytest.approx(math.sqrt(0.5), abs=1e-6) and g[0] == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert np.allclose(P.ring_gains(1.0, n), P.ring_gains(0.0, n))
    assert np.allclose(P.ring_gains(1.25, n), P.ring_gains(0.25, n))


def test_fixed_and_voice_rules():
    assert P.fixed_gains(3, 8).tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        P.fixed_gains(8, 8)
    assert P.voice_gains(9, 16, 8, "fixed").tolist() == P.fixed_gains(1, 8).tolist()  # voice mod channels
    assert P.voice_gains(0, 2, 4, "fixed", channel_of=[2, 3]).tolist() == [0, 0, 1, 0]
    assert np.allclose(P.voice_gains(2, 8, 8, "ring"), P.fixed_gains(2, 8), atol=1e-6)  # spread round the ring
    assert np.allclose(P.voice_gains(1, 2, 4, "line", position_of=[0.0, 1.0]), P.fixed_gains(3, 4), atol=1e-6)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            P.line_gains(bad, 4)
    with pytest.raises(ValueError):
        P.pan_gains(0.5, 0, "line")
    with pytest.raises(ValueError):
        P.pan_gains(0.5, 4, "square")


@pytest.mark.parametrize("layout", ["line", "ring"])
def test_fold_down_keeps_power_per_speaker(layout):
    for n in (2, 8):
        f = P.fold_down(n, layout)
        assert f.shape == (n, 2)
        assert np.allclose(np.sum(f.astype(np.float64) ** 2, axis=1), 1.0, atol=1e-6)
        mono = P.fold_down(n, layout, outputs=1)
        assert mono.shape == (n, 1) and np.allclose(np.sum(mono**2), 1.0, atol=1e-6)
    line = P.fold_down(8, "line")
    assert line[0, 0] == pytest.approx(1.0) and line[7, 1] == pytest.approx(1.0), "the ends go hard left, right"
    assert P.fold_down(1, layout).tolist() == [[1.0, 1.0]]
