"""Which basis plays best? Every method of sensorsynth.instrument.basis, measured without listening.

    python tests/benchmarks/eval_basis.py [--quick]

Control signals: the bundled guitar's fitted one, and the analysed control signals (the fit's starting
point, from sensorsynth.instrument.init) of guitar.wav, piano.wav and marimba.wav from ../shared/audio.
Sensor events: the gate's events on the real watch recordings (basicmotions, 6 axes), on synthetic hands
(snaps, opening/closing, waving: 63 axes) and on random raw sources (2, 8 and 24 axes).

For each method and signal it prints:
- recon: relative error of the method reconstructing the signal's active frames (0 = spans all of it);
- dims: control dimensions an event plays (mean), beside the instrument's own frames' (``own``);
- vocab: mean cosine of each played vector to the closest frame the instrument itself played (1 = only
  plays what the instrument plays: the listening-free proxy of "sounds like this instrument");
- notes: how many different loudest dimensions the events reach, of K (variety: a stream is not one note);
- silent: share of events whose change excites nothing (a gesture that plays no sound);
- fit_ms: the fit's time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sensorsynth.instrument_file import load  # noqa: E402
from sensorsynth.instrument.basis import DEFAULT_KEEP, DEFAULT_METHOD, METHODS, active_frames, fit_basis  # noqa: E402
from sensorsynth.mapping.features import GATES, make_extractor  # noqa: E402
from sensorsynth.mapping.gate import VelocityGate  # noqa: E402
from tests.mapping.streams import REPO, basicmotions, hand_stream  # noqa: E402


def signals(quick: bool) -> dict[str, np.ndarray]:
    inst = load(REPO / "models" / "guitar.instrument")
    out = {"guitar (fitted)": active_frames(inst.control_index, inst.control_value, inst.spec.control_plane_dim)}
    if quick:
        return out
    from sensorsynth.audio import read_clip
    from sensorsynth.instrument.init import analyse

    for name in ("guitar", "piano", "marimba"):
        clip = read_clip(REPO.parent / "shared" / "audio" / f"{name}.wav")
        control = analyse(clip.samples, inst.spec).control  # (K, frames)
        frames = control.T[control.sum(axis=0) > 0]
        out[f"{name} (analysed)"] = frames
    return out


def events() -> dict[str, list[np.ndarray]]:
    """Change vectors at the gate's events, per stream family."""
    out: dict[str, list[np.ndarray]] = {"watch": [], "hand": [], "raw": []}

    def run(kind, t, frames, width):
        ex = make_extractor(kind, width)
        gate = VelocityGate(GATES[kind])
        for ti, f in zip(t, frames):
            feat = ex.step(f, ti)
            if gate.step(feat.drive, ti, feat.change) is not None:
                out["watch" if kind == "motion" else kind].append(feat.change.copy())

    for _, t, frames in basicmotions():
        if _ != "standing":
            run("motion", t, frames, 9)
    for kind in ("snap", "open_close", "wave"):
        for seed in range(3):
            t, frames = hand_stream(kind, 4.0, 30.0, seed=seed)
            run("hand", t, frames, 84)
    rng = np.random.default_rng(0)
    for width in (2, 8, 24):
        t = np.arange(0, 20, 1 / 60)
        walk = np.cumsum(rng.normal(0, 0.05, (t.size, width)), axis=0)
        frames = 0.5 + 0.4 * np.sin(np.cumsum(rng.normal(0, 0.2, (t.size, width)), axis=0) + walk)
        run("raw", t, frames, width)
    return out


def measure(frames: np.ndarray, method: str, evs: dict[str, list[np.ndarray]], keep: float) -> dict:
    t0 = time.perf_counter()
    basis, recon = fit_basis(frames, method)
    fit_ms = 1000 * (time.perf_counter() - t0)
    own = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    k = frames.shape[1]
    row = {"recon": recon, "fit_ms": fit_ms, "atoms": basis.atoms.shape[0]}
    dims, vocab, tops, silent, n = [], [], set(), 0, 0
    for family, changes in evs.items():
        for c in changes:
            n += 1
            p = basis.pattern(c, keep=keep)
            if not p.any():
                silent += 1
                continue
            dims.append(int((p > 0).sum()))
            vocab.append(float((own @ (p / np.linalg.norm(p))).max()))
            tops.add(int(np.argmax(p)))
    row.update(dims=float(np.mean(dims)) if dims else 0.0, vocab=float(np.mean(vocab)) if vocab else 0.0,
               notes=len(tops), silent=silent / max(n, 1), own=float(((frames > 0).sum(axis=1)).mean()), k=k)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the fitted guitar only")
    args = ap.parse_args()
    evs = events()
    print("events:", {k: len(v) for k, v in evs.items()})
    for name, frames in signals(args.quick).items():
        print(f"\n{name}: {frames.shape[0]} active frames of K={frames.shape[1]}")
        print(f"{'method':22s} {'keep':>4s} {'atoms':>5s} {'recon':>6s} {'dims':>5s} {'own':>4s} {'vocab':>6s} "
              f"{'notes':>6s} {'silent':>6s} {'fit_ms':>7s}")
        for method in METHODS:
            for keep in ((0.0, DEFAULT_KEEP) if method == DEFAULT_METHOD else (DEFAULT_KEEP,)):
                r = measure(frames, method, evs, keep)
                print(f"{method:22s} {keep:4.1f} {r['atoms']:5d} {r['recon']:6.3f} {r['dims']:5.2f} {r['own']:4.2f} "
                      f"{r['vocab']:6.3f} {r['notes']:3d}/{r['k']:<2d} {r['silent']:6.3f} {r['fit_ms']:7.1f}")


if __name__ == "__main__":
    main()
