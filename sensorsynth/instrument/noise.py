"""The attack noise an instrument owns: one fixed uniform draw per control dimension, named by a seed.

The seed draws fresh noise for every training pass, so a fit can only match each attack's *expected*
spectrum, and a reconstruction is a random relative of the clip (a noise-excited partial has a Rayleigh
amplitude: about ±0.05 of mrsc from draw to draw). With one draw fixed for the whole fit, the model fits the
attacks the clip actually has, and the renderer replays them.

The draw must be the same on every machine, in numpy, torch and the compiled renderer, for as long as the
file exists, so it does not come from a library generator whose stream may change between versions: it is
a counter hash (splitmix64's finaliser) of (seed, dimension, sample), written here. Row k's stream does not
depend on the row length, so the noise at another sample rate (a longer or shorter attack) starts with the
same samples. 8 bytes in the file instead of K·attack_size floats (128 kB at the seed's sizes).
"""

from __future__ import annotations

import numpy as np

GENERATOR = "splitmix64"  # the name stored in the instrument file; a new generator gets a new name

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def attack_noise(seed: int, dims: int, length: int) -> np.ndarray:
    """(dims, length) float32, uniform on [-1, 1) in steps of 2**-23: the noise of an instrument's attacks.

    Sample (k, i) is a pure function of (seed, k, i)."""
    if dims < 0 or length < 0:
        raise ValueError(f"noise shape must be non-negative, got ({dims}, {length})")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"noise seed must be in [0, 2**64), got {seed}")
    with np.errstate(over="ignore"):
        base = _mix(np.array([int(seed)], np.uint64) + _GOLDEN)[0]
        k = np.arange(dims, dtype=np.uint64)[:, None] << np.uint64(32)
        i = np.arange(length, dtype=np.uint64)[None, :]
        z = _mix(base + (k | i) * _GOLDEN)
    top24 = (z >> np.uint64(40)).astype(np.float64)
    return (top24 * 2.0**-23 - 1.0).astype(np.float32)
