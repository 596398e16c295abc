"""The instrument's own basis: fitting (every method), the column layout for any width, the seed's formula,
never-silent patterns, loudness figures, the per-process cache."""

from __future__ import annotations

import numpy as np
import pytest

from sensorsynth.instrument_file import load
from sensorsynth.instrument import basis as basis_mod
from sensorsynth.instrument.basis import (
    DEFAULT_METHOD,
    METHODS,
    Basis,
    active_frames,
    cached_fit,
    dictionary_learning,
    fit_basis,
    sparse_codes,
)
from tests.mapping.streams import REPO


@pytest.fixture(scope="module")
def guitar_frames() -> np.ndarray:
    inst = load(REPO / "models" / "guitar.instrument")
    return active_frames(inst.control_index, inst.control_value, inst.spec.control_plane_dim)


def test_active_frames_from_the_sparse_signal_without_a_dense_array():
    k = 4
    index = np.array([0 * k + 1, 5 * k + 0, 5 * k + 3, 2**30 * k + 2], np.int64)  # a frame far away: no big buffer
    value = np.array([0.5, 1.0, 2.0, 0.25], np.float32)
    frames = active_frames(index, value, k)
    np.testing.assert_array_equal(frames, [[0, 0.5, 0, 0], [1.0, 0, 0, 2.0], [0, 0, 0.25, 0]])
    assert active_frames(np.array([3]), np.array([np.nan]), k).shape == (0, k)


@pytest.mark.parametrize("method", [m for m in METHODS if m in ("dictionary", "pca")])
def test_numpy_methods_fit_unit_atoms_ordered_by_use(guitar_frames, method):
    b, err = fit_basis(guitar_frames, method)
    assert b.atoms.dtype == np.float32 and b.atoms.shape[1] == 16
    np.testing.assert_allclose(np.linalg.norm(b.atoms, axis=1), 1.0, rtol=1e-5)
    assert 0.0 <= err < 0.2
    assert b.cap >= b.level > 0
    # the strongest entry of every signed atom is positive, as the instrument's own frames are
    assert np.all(b.atoms[np.arange(len(b.atoms)), np.abs(b.atoms).argmax(axis=1)] > 0)


def test_dictionary_learning_reconstructs_and_is_deterministic(guitar_frames):
    x = guitar_frames / np.linalg.norm(guitar_frames, axis=1, keepdims=True)
    atoms, codes = dictionary_learning(x, 16)
    again, _ = dictionary_learning(x, 16)
    np.testing.assert_array_equal(atoms, again)
    err = np.linalg.norm(x - codes @ atoms) / np.linalg.norm(x)
    assert err < 0.35, err  # 16 atoms for 55 frames: a real compression, still close
    assert (np.abs(codes) > 1e-9).sum(axis=1).mean() < 4  # sparse codes: a few atoms per frame


def test_sparse_codes_solve_the_lasso():
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(6, 5))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    x = rng.normal(size=(3, 5))
    w = sparse_codes(x, atoms, 0.1, iters=3000)
    grad = (w @ atoms - x) @ atoms.T  # KKT: |grad| ≤ alpha, = alpha with the opposite sign where w ≠ 0
    assert np.all(np.abs(grad) <= 0.1 + 1e-6)
    nz = np.abs(w) > 1e-8
    np.testing.assert_allclose(grad[nz], -0.1 * np.sign(w[nz]), atol=1e-5)


def test_signed_columns_are_the_seeds_relu_of_basis_times_change():
    rng = np.random.default_rng(1)
    atoms = rng.normal(size=(5, 7)).astype(np.float32)
    b = Basis(atoms, signed=True)
    d = rng.normal(size=9).astype(np.float32)
    u = np.empty(18, np.float32)
    u[0::2], u[1::2] = np.maximum(d, 0), np.maximum(-d, 0)
    seed = np.maximum(atoms[np.arange(9) % 5].T @ d, 0)  # relu(basis · Δx), axis i → atom i mod C
    np.testing.assert_allclose(np.maximum(b.columns(9) @ u, 0), seed, rtol=1e-5, atol=1e-6)


def test_unsigned_columns_give_each_direction_its_own_atom():
    atoms = np.eye(4, dtype=np.float32)
    b = Basis(atoms, signed=False)
    cols = b.columns(3)
    assert cols.shape == (4, 6)
    np.testing.assert_array_equal(cols.argmax(axis=0), [0, 1, 2, 3, 0, 1])  # atoms 2i, 2i+1 mod C
    np.testing.assert_array_equal(b.pattern(np.array([0.0, -1.0, 0.0])), [0, 0, 0, 1])


@pytest.mark.parametrize("width", [1, 2, 9, 63, 84, 300])
def test_any_width_plays_and_a_change_never_falls_silent(guitar_frames, width):
    b, _ = fit_basis(guitar_frames)
    rng = np.random.default_rng(width)
    for _ in range(50):
        p = b.pattern(rng.normal(size=width))
        assert p.max() == pytest.approx(1.0) and p.min() >= 0
    for sign in (1.0, -1.0):  # both directions of every single axis play something
        for axis in range(min(width, 16)):
            d = np.zeros(width)
            d[axis] = sign
            assert b.pattern(d).any(), (width, axis, sign)
    assert not b.pattern(np.zeros(width)).any()


def test_keep_drops_quiet_entries(guitar_frames):
    b, _ = fit_basis(guitar_frames)
    rng = np.random.default_rng(3)
    dense = np.mean([(b.pattern(rng.normal(size=63), keep=0.0) > 0).sum() for _ in range(100)])
    sparse = np.mean([(b.pattern(rng.normal(size=63), keep=0.5) > 0).sum() for _ in range(100)])
    assert sparse < dense and sparse <= 3.0, (sparse, dense)


def test_tiny_signals_fall_back_to_one_atom_per_dimension():
    b, err = fit_basis(np.array([[0.0, 2.0, 0.0]]))
    assert err == 0.0 and not b.signed
    np.testing.assert_array_equal(b.atoms[0], [0, 1, 0])  # the used dimension first
    b, _ = fit_basis(np.zeros((0, 3)))
    assert b.atoms.shape == (3, 3) and b.level == b.cap == 1.0


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown basis method"):
        fit_basis(np.ones((3, 3)), "magic")


def test_cached_fit_fits_once_per_signal(monkeypatch, guitar_frames):
    calls = []
    real = basis_mod.fit_basis
    monkeypatch.setattr(basis_mod, "fit_basis", lambda *a, **k: calls.append(1) or real(*a, **k))
    index = np.array([3, 17, 40], np.int32)
    value = np.array([0.5, 0.25, 1.0], np.float32)
    first = cached_fit(index, value, 16, n_atoms=7)
    second = cached_fit(index, value, 16, n_atoms=7)
    assert len(calls) == 1 and first[0] is second[0] and first[2] == 3
    cached_fit(index, value * 2, 16, n_atoms=7)
    assert len(calls) == 2


def test_the_default_method_is_the_measured_winner():
    assert DEFAULT_METHOD == "dictionary"  # see tests/benchmarks/eval_basis.py and the README's figures


def test_dictionary_learning_survives_codes_too_large_for_its_ridge():
    """The unit frames of a tiny 300-step fit (4 control dims, 62 frames, 64 atoms asked): the lasso codes of
    the repeated atoms grow to ~1e4, their Gram matrix to ~1e8, where the 1e-8 ridge is below float64's
    resolution and np.linalg.solve finds it singular. The atoms then come from least squares: finite, unit."""
    from pathlib import Path

    x = np.load(Path(__file__).parent / "data" / "degenerate_frames.npy")
    assert x.shape == (62, 4)
    atoms, codes = dictionary_learning(x, 64)
    assert np.isfinite(atoms).all() and np.isfinite(codes).all()
    np.testing.assert_allclose(np.linalg.norm(atoms, axis=1), 1.0, rtol=1e-9)
    basis, error = fit_basis(x, "dictionary")
    assert np.isfinite(error) and 0 <= error < 1
