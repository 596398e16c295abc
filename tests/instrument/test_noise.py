"""The attack noise an instrument owns: a pure, pinned function of (seed, dimension, sample)."""

from __future__ import annotations

import numpy as np
import pytest

from sensorsynth.instrument.noise import attack_noise


def test_the_draw_is_pinned() -> None:
    """These samples are in files: a change to the generator must be a new generator name, never an edit."""
    got = attack_noise(0, 2, 3)
    assert got.dtype == np.float32 and got.shape == (2, 3)
    expected = np.array(PINNED, np.float32)
    np.testing.assert_array_equal(got, expected)


def test_it_is_uniform_on_minus_one_to_one() -> None:
    x = attack_noise(7, 16, 4096).astype(np.float64)
    assert x.min() >= -1.0 and x.max() < 1.0
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1 / np.sqrt(3)) < 0.01
    # rows and neighbouring samples are uncorrelated
    c = np.corrcoef(x)
    assert np.max(np.abs(c - np.eye(16))) < 0.06
    assert abs(np.corrcoef(x[:, 1:].ravel(), x[:, :-1].ravel())[0, 1]) < 0.02
    # a spectrum without a tilt: the top and bottom halves of the band carry the same power
    p = np.abs(np.fft.rfft(x, axis=1)) ** 2
    half = p.shape[1] // 2
    assert 0.9 < p[:, 1:half].mean() / p[:, half:].mean() < 1.1


def test_a_row_does_not_depend_on_its_length_or_the_row_count() -> None:
    """The noise at another sample rate (another attack length) starts with the same samples."""
    long = attack_noise(3, 8, 3000)
    np.testing.assert_array_equal(attack_noise(3, 4, 1000), long[:4, :1000])


def test_seeds_give_different_draws() -> None:
    a, b = attack_noise(1, 4, 512), attack_noise(2, 4, 512)
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.05
    np.testing.assert_array_equal(attack_noise(2**64 - 1, 1, 4), attack_noise(2**64 - 1, 1, 4))


@pytest.mark.parametrize("args", [(-1, 2, 2), (2**64, 2, 2), (0, -1, 2), (0, 2, -1)])
def test_bad_arguments_are_refused(args) -> None:
    with pytest.raises(ValueError):
        attack_noise(*args)


PINNED = [[-0.4364774227142334, 0.3048969507217407, 0.4024242162704468],
          [0.8919796943664551, -0.7545802593231201, 0.48474812507629395]]
