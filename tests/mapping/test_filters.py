"""One-Euro and high-pass filters, calibration, deformation logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensorsynth.instrument.playback import deformation_targets
from sensorsynth.mapping.calibration import Calibration
from sensorsynth.mapping.features import deform_logits
from sensorsynth.mapping.filters import HighPass, OneEuro


def _run(filt, xs, dt):
    return np.array([filt.step(np.array([x]), dt)[0] for x in xs])


def test_one_euro_smooths_jitter_at_rest():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.0, 600)
    out = _run(OneEuro(min_cutoff=1.0, beta=0.0), noise, 1 / 60)
    assert out[100:].std() < 0.3 * noise.std()


def test_one_euro_follows_fast_moves_with_little_lag_when_beta_is_high():
    t = np.arange(0, 1, 1 / 60)
    ramp = np.where(t > 0.5, (t - 0.5) * 20.0, 0.0)  # 20 units/s
    slow = _run(OneEuro(min_cutoff=1.0, beta=0.0), ramp, 1 / 60)
    fast = _run(OneEuro(min_cutoff=1.0, beta=1.0), ramp, 1 / 60)
    lag_slow, lag_fast = (ramp - slow)[-1], (ramp - fast)[-1]
    assert lag_fast < 0.2 * lag_slow and lag_fast < 1.0


def test_one_euro_is_rate_independent():
    """The same signal at 10 Hz and at 100 Hz ends at nearly the same smoothed value."""
    def at(rate):
        t = np.linspace(0.0, 2.0, 2 * rate + 1)  # both end at t = 2 s
        return _run(OneEuro(min_cutoff=2.0, beta=0.5), np.sin(2 * np.pi * 0.5 * t), 1 / rate)[-1]
    assert at(10) == pytest.approx(at(100), abs=0.08)


def test_one_euro_restarts_on_a_new_shape_or_no_dt():
    f = OneEuro()
    f.step(np.array([1.0, 2.0]), 0.1)
    np.testing.assert_array_equal(f.step(np.array([5.0]), 0.1), [5.0])
    np.testing.assert_array_equal(f.step(np.array([9.0]), 0.0), [9.0])
    with pytest.raises(ValueError):
        OneEuro(min_cutoff=0)


def test_high_pass_removes_gravity_and_keeps_shakes():
    hp = HighPass(0.3)
    t = np.arange(0, 10, 1 / 60)
    g = np.full_like(t, 9.81)
    shake = 5 * np.sin(2 * np.pi * 4 * t)
    out = _run(hp, g + shake, 1 / 60)
    assert abs(out[0]) == 0.0  # the first frame reads as zero, not as a 9.81 jump
    assert abs(out[-120:].mean()) < 0.1 and out[-120:].std() == pytest.approx(shake.std(), rel=0.1)


def test_calibration_auto_learns_then_holds_with_prior_and_floor():
    cal = Calibration(2, "auto", 0.0, 1.0, learn_s=1.0)
    assert cal.step(np.array([0.5, 10.0]), 0.0).tolist() == [0.5, 1.0]
    cal.step(np.array([0.5, -10.0]), 0.5)
    assert cal.learning
    np.testing.assert_allclose(cal.step(np.array([0.25, 0.0]), 0.9), [0.25, 0.5])
    out = cal.step(np.array([3.0, 40.0]), 2.0)  # after learning: the range holds, values clip
    assert not cal.learning and out.tolist() == [1.0, 1.0]
    np.testing.assert_allclose(cal.hi, [1.0, 10.0])
    still = Calibration(1, "auto", 0.0, 0.0, learn_s=1.0, min_span=0.5)  # no prior span: the floor holds
    for i in range(10):
        still.step(np.array([0.1 + 1e-4 * i]), i * 0.1)
    assert still.step(np.array([0.35]), 1.5)[0] == pytest.approx(0.5 + (0.35 - 0.10045) / 0.5, abs=0.02)


def test_calibration_set_and_relearn():
    cal = Calibration(3, "auto", 0.0, 1.0)
    cal.set([0, 0, -90], [10, 1, 90])
    np.testing.assert_allclose(cal.step(np.array([5, 2, 0]), 0.0), [0.5, 1.0, 0.5])
    with pytest.raises(ValueError):
        cal.set([1], [0])
    cal.relearn()
    assert cal.mode == "auto" and cal.learning and cal.state()["lo"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("e", [2, 3, 5])
def test_deform_logits_put_the_crossfade_where_asked(e):
    for q, want in ((0.0, 0), (1.0, e - 1)):
        weights = deformation_targets(deform_logits(q, e))  # what the renderer makes of them
        assert int(np.argmax(weights)) == want and weights.max() > 0.9
    mid = deformation_targets(deform_logits(0.5, 2))
    np.testing.assert_allclose(mid, [0.5, 0.5], atol=1e-6)
    assert all(math.isfinite(v) for v in deform_logits(7.0, e))
