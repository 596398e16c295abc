"""Fitting benchmark: the distance curve (distance against wall time) of each clip, and the end point.

    python tests/benchmarks/bench_fit.py                         # default quality, every clip in ../shared/audio
    python tests/benchmarks/bench_fit.py --quality fast          # the one-minute fit
    python tests/benchmarks/bench_fit.py --clip guitar.wav --set noise=fresh   # the seed's fresh noise per step
    python tests/benchmarks/bench_fit.py --step-time             # one seed-size step: fast bank vs the seed's formula
    python tests/benchmarks/bench_fit.py --recipe seed --steps 300   # the seed's own recipe, for comparison

A point on the curve is what a user gets at that moment: the live model exported to an instrument and
replayed by ``render_reconstruction`` (the numba renderer, as ``sensorsynth render --reconstruct``), scored
by ../shared/tools/spectral_distance.py against the clip (mrsc, mrlsd: lower is better). An instrument that
owns its attack noise replays the same audio every time, so one reconstruction is its median; an instrument
fitted on fresh noise is scored as the median of ``--evals`` reconstructions, each with another draw. The
end point also reports the median over ``--final-evals`` reconstructions with fresh noise per event (live
play's variety). Time spent evaluating is left out of the fit's clock, its budget included.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def load_distance():
    path = SHARED / "tools" / "spectral_distance.py"
    if not path.exists():
        sys.exit(f"error: {path} not found: the benchmark needs ../shared beside the repository")
    spec = importlib.util.spec_from_file_location("spectral_distance", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.distance


def step_time(threads: int, device: str, reference: bool) -> None:
    from sensorsynth.instrument.loss import seed_loss, sparsity
    from sensorsynth.instrument.model import ResonanceModel
    from sensorsynth.instrument.spec import ModelSpec

    spec = ModelSpec()
    target = torch.randn(spec.n_samples, device=device) * 0.1
    for parameterization in ("seed", "physical"):
        model = ResonanceModel(spec, parameterization=parameterization).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        times = []
        for i in range(8):
            t0 = time.perf_counter()
            opt.zero_grad()
            cs = model.control_signal
            loss = seed_loss(target, model(control_signal=cs)) + 0.5 * sparsity(cs)
            loss.backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        print(f"full training step, seed size, {parameterization} parameters, {device}, {threads} threads: "
              f"median {statistics.median(times[2:]):.3f} s (target <= 0.5 s on 2 CPU cores)")
    if reference:
        sys.path.insert(0, str(REPO))
        from tests.instrument.reference import seed_resonances

        bank = ResonanceModel(spec, parameterization="seed").bank
        t0 = time.perf_counter()
        params = [bank.mass, bank.damping, bank.tension, bank.displacement, bank.amplitude]
        seed_resonances(*params, spec.n_samples).sum().backward()
        naive = time.perf_counter() - t0
        t0 = time.perf_counter()
        bank().sum().backward()
        fast = time.perf_counter() - t0
        print(f"oscillator bank forward+backward: seed formula {naive:.2f} s, fast {fast:.3f} s, "
              f"ratio {naive / fast:.0f}x")


SEED_10K = {"guitar.wav": (0.493, 0.197)}  # ../shared/ANCHORS.md: the seed recipe after 10,000 steps (67 min)


def reconstruct(model, settings, seed: int | None, fresh: bool = False) -> np.ndarray:
    from sensorsynth.instrument.export import to_instrument
    from sensorsynth.render.performance import render_reconstruction

    noise_seed = settings.seed if settings.noise == "instrument" else None
    inst = to_instrument(model, "bench", noise_seed=noise_seed)
    return render_reconstruction(inst, seed=seed, limit=None, fresh_noise=fresh).astype(np.float64)


def score(distance, target, model, settings, draws: int, fresh: bool = False) -> tuple[float, float]:
    deterministic = settings.noise == "instrument" and not fresh
    ds = [distance(target, reconstruct(model, settings, seed, fresh)) for seed in range(1 if deterministic else draws)]
    return statistics.median(d["mrsc"] for d in ds), statistics.median(d["mrlsd"] for d in ds)


def bench_clip(path: Path, args, options: dict, distance) -> dict:
    from sensorsynth.audio import read_clip
    from sensorsynth.instrument.fit import FitSettings, fit
    from sensorsynth.instrument.spec import ModelSpec

    spec = ModelSpec()
    clip = read_clip(path, spec.sample_rate, spec.n_samples)
    target = clip.samples.astype(np.float64)
    settings = FitSettings(**options)
    print(f"clip {path.name}; settings {settings.model_dump_json()}", flush=True)
    curve: list[dict] = []
    paused = [0.0]  # evaluation time, left out of the fit's clock
    clock = lambda: time.perf_counter() - paused[0]  # noqa: E731
    next_point = [args.every_s]

    def evaluate(model, step: int, fit_s: float, draws: int) -> None:
        t0 = time.perf_counter()
        mrsc, mrlsd = score(distance, target, model, settings, draws)
        curve.append({"step": step, "fit_s": round(fit_s, 1), "mrsc": round(mrsc, 3), "mrlsd": round(mrlsd, 3)})
        print(f"  step {step:6d}  fit time {fit_s:7.1f} s  mrsc {mrsc:.3f}  mrlsd {mrlsd:.3f}", flush=True)
        paused[0] += time.perf_counter() - t0

    def on_checkpoint(step: int, elapsed: float, model) -> None:
        if elapsed >= next_point[0]:
            next_point[0] += args.every_s
            evaluate(model, step, elapsed, args.evals)

    t0 = clock()
    result = fit(clip.samples, spec, settings, on_checkpoint=on_checkpoint, clock=clock)
    total = clock() - t0
    steps = result.history[-1][0] if result.history else 0
    evaluate(result.model, steps, total, args.final_evals)
    t1 = time.perf_counter()
    fresh = score(distance, target, result.model, settings, args.final_evals, fresh=True)
    paused[0] += time.perf_counter() - t1
    summary = {"clip": path.name, "quality": settings.quality, "noise": settings.noise,
               "analysis_s": round(result.analysis_s, 2), "steps": steps, "total_fit_s": round(total, 1),
               "final": curve[-1], "fresh_per_event": {"mrsc": round(fresh[0], 3), "mrlsd": round(fresh[1], 3)},
               "curve": curve}  # fmt: skip
    bar = SEED_10K.get(path.name)
    if bar:
        reached = next((p for p in curve if p["mrsc"] <= bar[0] and p["mrlsd"] <= bar[1]), None)
        summary["seed_10k"] = {"mrsc": bar[0], "mrlsd": bar[1], "reached_at_s": reached and reached["fit_s"]}
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}), flush=True)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", action="append", help="a clip (repeatable; default: every .wav in ../shared/audio)")
    ap.add_argument("--quality", choices=["fast", "default", "best"], default="default")
    ap.add_argument("--recipe", choices=["analysed", "seed"], default="analysed")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--loss", choices=["seed", "multires", "mrstft"], default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other FitSettings field")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--evals", type=int, default=5, help="reconstructions per curve point (fresh-noise fits)")
    ap.add_argument("--final-evals", type=int, default=9, help="reconstructions for the end point")
    ap.add_argument("--every-s", type=float, default=None, help="fit seconds between curve points")
    ap.add_argument("--step-time", action="store_true", help="only time single training steps")
    ap.add_argument("--reference", action="store_true", help="with --step-time: also time the seed's formula")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.step_time:
        step_time(args.threads, args.device, args.reference)
        return
    if args.every_s is None:
        args.every_s = {"fast": 5.0, "default": 20.0, "best": 60.0}[args.quality]

    from sensorsynth.cli.common import parse_assignment as _parse_assignment

    distance = load_distance()
    options: dict = {"device": args.device, "quality": args.quality, "threads": args.threads}
    if args.recipe == "seed":
        options.update(init="random", parameterization="seed", frozen_steps=0, mode_every=1, lr=1e-3,
                       schedule="constant", steps=10000, noise="fresh")
    options.update(_parse_assignment(item) for item in args.set)  # as `sensorsynth fit --set`
    if args.steps is not None:
        options["steps"] = args.steps
    if args.loss is not None:
        options["loss"] = args.loss
    clips = [Path(c) if Path(c).exists() else SHARED / "audio" / c for c in args.clip] if args.clip else \
        sorted((SHARED / "audio").glob("*.wav"))
    results = [bench_clip(path, args, options, distance) for path in clips]
    print("\nclip            fit s   mrsc   mrlsd   (fresh noise per event: mrsc, mrlsd)")
    for r in results:
        f, e = r["final"], r["fresh_per_event"]
        print(f"{r['clip']:<14} {r['total_fit_s']:6.1f}  {f['mrsc']:.3f}  {f['mrlsd']:.3f}   ({e['mrsc']:.3f}, {e['mrlsd']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
