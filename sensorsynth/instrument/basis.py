"""The instrument's own basis: any sensor's change → control vectors this instrument actually plays.

Why: a fitted control signal is the instrument's vocabulary, which control dimensions fire together and
how strongly. The seed fits scikit-learn's ``DictionaryLearning`` (21 × 3 atoms) on it and plays
``relu(basis · Δlandmarks)``, so a hand's movement plays the chords the instrument was heard playing. This
module does the same for a source of any width N:

- ``fit_basis(frames)`` fits C atoms (rows of K control values, unit L2 norm, ordered by how much the
  instrument uses them) on the **active** frames of the control signal. A fitted signal is mostly silence
  (the bundled guitar: 55 of 1024 frames hold an event); the silent frames carry no pattern and would pull
  PCA's mean and the dictionary's codes to zero, so they are left out. Each frame is scaled to unit norm:
  the atoms describe *which* dimensions play together; how loud is the gate's business (``level``,
  ``cap``).
- ``Basis.columns(N)`` is the (K, 2N) matrix that plays a change of width N. The change Δx is split into
  its positive and negative parts ``u = [relu(Δx), relu(-Δx)]`` (interleaved per axis), so moving an axis
  one way and the other way play different atoms. For signed atoms (PCA, SparsePCA, the seed's signed
  dictionary) the two columns of axis i are ``+a_i`` and ``-a_i``, which makes ``relu(columns · u)``
  exactly the seed's ``relu(basis · Δx)``; non-negative atoms give each direction its own atom. Axis i uses
  atom ``i mod C`` (signed) or atoms ``2i, 2i+1 mod C`` (non-negative): the most used atoms go to the first
  axes, and any width works.
- ``Basis.pattern(Δx)`` is the resulting control pattern scaled to peak 1, keeping only the entries within
  ``keep`` of the peak (the fitted signal plays one to three dimensions per frame; a sum of many atoms
  would play a cluster of everything). A signed change that excites no atom positively plays its mirror
  image ``relu(−columns · u)``: a gesture never falls silent because of an atom's sign.

Which method: ``tests/benchmarks/eval_basis.py`` measures every method on fitted and analysed control
signals (reconstruction of the signal, sparsity of what sensors play, and a listening-free proxy: how close
each played vector is to something the instrument itself played, and how many different notes a stream
reaches). ``DEFAULT_METHOD`` is the winner; the README's "Mappings" section gives the figures.

Pure: arrays in, arrays out. scikit-learn is imported only inside :func:`fit_basis`.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

METHODS = ("dictionary", "pca", "sparse_pca", "dictionary_sklearn", "dictionary_positive")
DEFAULT_METHOD = "dictionary"
DEFAULT_ATOMS = 64  # as the seed's 63 for 16 dimensions: about four atoms per control dimension
DEFAULT_KEEP = 0.5  # pattern entries below this share of the peak are dropped
MAX_FIT_FRAMES = 512  # the fit sees at most this many active frames (evenly spaced): bounded time


@dataclass(frozen=True, eq=False)
class Basis:
    """Atoms (C, K) float32 with unit-norm rows, most used first; ``signed`` atoms play ±; ``level`` is the
    instrument's typical event peak and ``cap`` its loud event peak (the loudness cap)."""

    atoms: np.ndarray
    signed: bool
    level: float = 1.0
    cap: float = 1.0
    method: str = DEFAULT_METHOD
    _columns: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def control_dims(self) -> int:
        return int(self.atoms.shape[1])

    def columns(self, width: int) -> np.ndarray:
        """The (K, 2·width) matrix applied to ``split(Δx)``; cached per width."""
        cols = self._columns.get(width)
        if cols is None:
            if width < 1:
                raise ValueError(f"a source needs at least one axis, got {width}")
            c = self.atoms.shape[0]
            if self.signed:
                idx = np.arange(width) % c
                pos, neg = self.atoms[idx], -self.atoms[idx]
            else:
                pos = self.atoms[(2 * np.arange(width)) % c]
                neg = self.atoms[(2 * np.arange(width) + 1) % c]
            cols = np.empty((self.atoms.shape[1], 2 * width), np.float32)
            cols[:, 0::2] = pos.T
            cols[:, 1::2] = neg.T
            cols.setflags(write=False)
            self._columns[width] = cols
        return cols

    def pattern(self, change: np.ndarray, keep: float = DEFAULT_KEEP) -> np.ndarray:
        """relu(columns · split(Δx)) scaled to peak 1, entries below ``keep`` × peak dropped; all zeros when
        the change excites nothing."""
        d = np.asarray(change, np.float32).reshape(-1)
        u = np.empty(2 * d.size, np.float32)
        np.maximum(d, 0.0, out=u[0::2])
        np.maximum(-d, 0.0, out=u[1::2])
        raw = self.columns(d.size) @ u
        out = np.maximum(raw, 0.0)
        peak = float(out.max(initial=0.0))
        if not peak > 1e-12 and self.signed:  # excites no atom positively: play its mirror, never silence
            out = np.maximum(-raw, 0.0)
            peak = float(out.max(initial=0.0))
        if not peak > 1e-12:
            return np.zeros_like(out)
        out /= peak
        out[out < keep] = 0.0
        return out


def active_frames(index: np.ndarray, value: np.ndarray, control_dims: int) -> np.ndarray:
    """The non-silent frames (n, K) of a sparse control signal (``frame·K + k`` indices), built without the
    dense (frames, K) array, so a huge spec cannot ask for a huge buffer."""
    index = np.asarray(index, np.int64)
    value = np.nan_to_num(np.asarray(value, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    keep = value > 0
    index, value = index[keep], value[keep]
    if index.size == 0:
        return np.zeros((0, control_dims))
    frames, row = np.unique(index // control_dims, return_inverse=True)
    out = np.zeros((frames.size, control_dims))
    np.add.at(out, (row, index % control_dims), value)
    return out


def _loudness(frames: np.ndarray) -> tuple[float, float]:
    peaks = frames.max(axis=1)
    level = float(np.median(peaks))
    cap = float(np.percentile(peaks, 95))
    return max(level, 1e-3), max(cap, level, 1e-3)


def _identity(k: int, frames: np.ndarray, method: str) -> tuple[Basis, float]:
    """With fewer than two active frames there is nothing to learn: one atom per dimension, most used
    first."""
    use = frames.sum(axis=0) if frames.size else np.zeros(k)
    order = np.argsort(-use, kind="stable")
    atoms = np.eye(k, dtype=np.float32)[order]
    level, cap = _loudness(frames) if frames.size else (1.0, 1.0)
    return Basis(atoms, signed=False, level=level, cap=cap, method=method), 0.0


def _soft(x: np.ndarray, t: float) -> np.ndarray:
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def sparse_codes(x: np.ndarray, atoms: np.ndarray, alpha: float, iters: int = 60,
                 start: np.ndarray | None = None) -> np.ndarray:
    """argmin_W ½‖X − W·D‖² + α‖W‖₁ by FISTA (Beck and Teboulle 2009): the lasso codes of every frame."""
    gram = atoms @ atoms.T
    lip = float(np.linalg.eigvalsh(gram)[-1]) + 1e-12
    xd = x @ atoms.T
    w = np.zeros((x.shape[0], atoms.shape[0])) if start is None else start.copy()
    y, tk = w.copy(), 1.0
    for _ in range(iters):
        w_next = _soft(y - (y @ gram - xd) / lip, alpha / lip)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * tk * tk)) / 2.0
        y = w_next + ((tk - 1.0) / t_next) * (w_next - w)
        w, tk = w_next, t_next
    return w


def _farthest_frames(x: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` frames, each the least like those already chosen (cosine), starting from the
    most typical frame: a deterministic, spread-out start for the dictionary."""
    sim = x @ x.T
    chosen = [int(np.argmax(sim.sum(axis=1)))]
    closest = sim[chosen[0]].copy()
    for _ in range(count - 1):
        nxt = int(np.argmin(closest))
        chosen.append(nxt)
        np.maximum(closest, sim[nxt], out=closest)
    return np.array(chosen)


def dictionary_learning(x: np.ndarray, n_atoms: int, alpha: float = 0.05, iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """(atoms (C, K) unit rows, codes (n, C)) minimising ½‖X − W·D‖² + α‖W‖₁: the objective of
    scikit-learn's DictionaryLearning, which the seed uses, solved here in plain numpy so that fitting the
    basis of a version-1 file on load costs milliseconds and no scikit-learn import. Codes by FISTA, atoms
    by the method of optimal directions (least squares, then unit norm); an atom no frame uses is replaced
    by the worst-reconstructed frame. Deterministic (no random start)."""
    n, k = x.shape
    c = max(1, min(n_atoms, n))
    atoms = x[_farthest_frames(x, c)].copy()
    codes = None
    for _ in range(iters):
        codes = sparse_codes(x, atoms, alpha, iters=40, start=codes)
        gram = codes.T @ codes + 1e-8 * np.eye(c)
        try:
            atoms = np.linalg.solve(gram, codes.T @ x)
        except np.linalg.LinAlgError:  # degenerate codes (more atoms than the frames can tell apart)
            atoms = np.linalg.lstsq(codes, x, rcond=None)[0]
        norms = np.linalg.norm(atoms, axis=1)
        unused = (norms < 1e-9) | (np.abs(codes).sum(axis=0) < 1e-9)
        if unused.any():
            residual = np.linalg.norm(x - codes @ atoms, axis=1)
            worst = np.argsort(-residual)[: int(unused.sum())]
            atoms[unused] = x[worst]
            norms = np.linalg.norm(atoms, axis=1)
        scale = np.maximum(norms, 1e-12)
        atoms /= scale[:, None]
        codes *= scale[None, :]
    codes = sparse_codes(x, atoms, alpha, iters=100, start=codes)
    return atoms, codes


def fit_basis(frames: np.ndarray, method: str = DEFAULT_METHOD, n_atoms: int = DEFAULT_ATOMS,
              seed: int = 0) -> tuple[Basis, float]:
    """(Basis, reconstruction error) fitted on the active frames (n, K) of a control signal.

    The error is ``‖X − codes·atoms‖ / ‖X‖`` on the unit-norm frames, with the method's own codes: how
    much of the instrument's vocabulary the atoms span (0 = all of it). ``dictionary`` and ``pca`` are
    numpy; ``sparse_pca``, ``dictionary_sklearn`` and ``dictionary_positive`` use scikit-learn (for the
    comparison in tests/benchmarks/eval_basis.py; they take up to seconds)."""
    if method not in METHODS:
        raise ValueError(f"unknown basis method {method!r} (one of {', '.join(METHODS)})")
    frames = np.asarray(frames, np.float64)
    n, k = frames.shape
    if n < 2:
        return _identity(k, frames, method)
    if n > MAX_FIT_FRAMES:
        frames = frames[np.linspace(0, n - 1, MAX_FIT_FRAMES).astype(int)]
        n = MAX_FIT_FRAMES
    level, cap = _loudness(frames)
    x = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    mean: np.ndarray | float = 0.0
    signed = True
    if method == "dictionary":
        atoms, codes = dictionary_learning(x, n_atoms)
        use = np.abs(codes).sum(axis=0)
    elif method == "pca":
        mean = x.mean(axis=0)
        _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
        atoms = vt[: min(k, n)]
        codes = (x - mean) @ atoms.T
        use = sv[: atoms.shape[0]] ** 2
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on tiny problems
            if method == "sparse_pca":
                from sklearn.decomposition import SparsePCA

                model = SparsePCA(n_components=min(n_atoms, k), alpha=0.05, random_state=seed, max_iter=200).fit(x)
            else:
                from sklearn.decomposition import DictionaryLearning

                positive = method == "dictionary_positive"
                model = DictionaryLearning(
                    n_components=min(n_atoms, max(k, n)), alpha=0.05, max_iter=100, tol=1e-4, random_state=seed,
                    fit_algorithm="cd", transform_algorithm="lasso_cd", transform_alpha=0.05,
                    positive_dict=positive, positive_code=positive,
                ).fit(x)
                signed = not positive
            atoms = model.components_
            codes = model.transform(x)
            mean = getattr(model, "mean_", 0.0)
            use = np.abs(codes).sum(axis=0)
    error = float(np.linalg.norm(x - (codes @ atoms + mean)) / np.linalg.norm(x))
    norms = np.linalg.norm(atoms, axis=1)
    useful = (norms > 1e-9) & (use > 1e-6 * max(float(use.max(initial=0.0)), 1e-12))
    if not useful.any():
        return _identity(k, frames, method)[0], error
    order = np.argsort(-use[useful], kind="stable")
    atoms = (atoms[useful] / norms[useful, None])[order]
    if signed:  # the sign of a signed atom is arbitrary: make its strongest entry positive, as the frames are
        atoms *= np.sign(atoms[np.arange(atoms.shape[0]), np.abs(atoms).argmax(axis=1)])[:, None]
    atoms = np.ascontiguousarray(atoms, np.float32)
    return Basis(atoms, signed=signed, level=level, cap=cap, method=method), error


# ----------------------------------------------------------------------------------- a per-process cache

_cache: dict[str, tuple[Basis, float]] = {}
_cache_lock = threading.Lock()


def cached_fit(index: np.ndarray, value: np.ndarray, control_dims: int, method: str = DEFAULT_METHOD,
               n_atoms: int = DEFAULT_ATOMS) -> tuple[Basis, float, int]:
    """:func:`fit_basis` on a sparse control signal, remembered per process by the signal's content, so a
    version-1 file reloaded (hot reload, every test) fits once. Returns (basis, error, active frames)."""
    digest = hashlib.sha256()
    digest.update(f"{control_dims}:{method}:{n_atoms};".encode())
    digest.update(np.ascontiguousarray(index, np.int64).tobytes())
    digest.update(np.ascontiguousarray(value, np.float32).tobytes())
    key = digest.hexdigest()
    with _cache_lock:
        hit = _cache.get(key)
    frames = active_frames(index, value, control_dims)
    if hit is None:
        hit = fit_basis(frames, method, n_atoms)
        with _cache_lock:
            if len(_cache) > 256:
                _cache.clear()
            _cache[key] = hit
    return hit[0], hit[1], int(frames.shape[0])
