"""Fitting benchmark: time per training step, total fit time, and the distance curve.

    python tests/benchmarks/bench_fit.py                       # fast recipe on guitar.wav, 2 threads
    python tests/benchmarks/bench_fit.py --loss multires
    python tests/benchmarks/bench_fit.py --step-time           # one seed-size step: fast bank vs the seed's formula
    python tests/benchmarks/bench_fit.py --recipe seed --steps 300   # the seed's own recipe, for comparison

Distances come from ../shared/tools/spectral_distance.py (mrsc, mrlsd: lower is better), as the median over
several reconstructions, each with fresh attack noise. Time spent evaluating is not counted as fit time.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default=str(SHARED / "audio" / "guitar.wav"))
    ap.add_argument("--recipe", choices=["fast", "seed"], default="fast")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--loss", choices=["seed", "multires"], default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other FitSettings field")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--evals", type=int, default=5, help="reconstructions per distance point")
    ap.add_argument("--final-evals", type=int, default=11, help="reconstructions for the final distance")
    ap.add_argument("--every", type=int, default=100, help="steps between distance points")
    ap.add_argument("--step-time", action="store_true", help="only time single training steps")
    ap.add_argument("--reference", action="store_true", help="with --step-time: also time the seed's formula")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.step_time:
        step_time(args.threads, args.device, args.reference)
        return

    from sensorsynth.audio import read_clip
    from sensorsynth.instrument.fit import FitSettings, fit
    from sensorsynth.instrument.spec import ModelSpec

    distance = load_distance()
    spec = ModelSpec()
    clip = read_clip(args.clip, spec.sample_rate, spec.n_samples)
    target = clip.samples.astype(np.float64)
    options: dict = {"device": args.device}
    if args.recipe == "seed":
        options.update(init="random", parameterization="seed", frozen_steps=0, mode_every=1, lr=1e-3,
                       schedule="constant", steps=10000)
    for item in args.set:
        key, _, value = item.partition("=")
        options[key] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    if args.steps is not None:
        options["steps"] = args.steps
    if args.loss is not None:
        options["loss"] = args.loss
    settings = FitSettings(**options)
    print(f"clip {Path(args.clip).name}; settings {settings.model_dump_json()}", flush=True)

    curve = []
    eval_time = 0.0

    def evaluate(model, step: int, elapsed: float, draws: int | None = None) -> None:
        nonlocal eval_time
        t0 = time.perf_counter()
        with torch.no_grad():
            ds = [distance(target, model().cpu().numpy().astype(np.float64)) for _ in range(draws or args.evals)]
        mrsc = statistics.median(d["mrsc"] for d in ds)
        mrlsd = statistics.median(d["mrlsd"] for d in ds)
        curve.append({"step": step, "fit_s": round(elapsed - eval_time, 1), "mrsc": round(mrsc, 3),
                      "mrlsd": round(mrlsd, 3)})
        print(f"step {step:6d}  fit time {elapsed - eval_time:7.1f} s  mrsc {mrsc:.3f}  mrlsd {mrlsd:.3f}", flush=True)
        eval_time += time.perf_counter() - t0

    step_times: dict[str, list[float]] = {"frozen": [], "full": []}
    last = [0.0]

    def on_progress(p) -> None:
        if p.stage in step_times:
            step_times[p.stage].append(p.elapsed_s - last[0])
        last[0] = p.elapsed_s

    def on_checkpoint(step: int, elapsed: float, model) -> None:
        if step % args.every == 0:
            evaluate(model, step, elapsed)

    t0 = time.perf_counter()
    result = fit(clip.samples, spec, settings, on_progress, on_checkpoint=on_checkpoint)
    total = time.perf_counter() - t0 - eval_time
    final_step = result.history[-1][0]
    if curve and curve[-1]["step"] == final_step:
        curve.pop()
    evaluate(result.model, final_step, total + eval_time, draws=args.final_evals)
    summary = {
        "clip": Path(args.clip).name,
        "settings": settings.model_dump(),
        "analysis_s": round(result.analysis_s, 2),
        "step_s_frozen": round(statistics.median(step_times["frozen"]), 3) if step_times["frozen"] else None,
        "step_s_full": round(statistics.median(step_times["full"]), 3) if step_times["full"] else None,
        "total_fit_s": round(total, 1),
        "final": curve[-1],
        "curve": curve,
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("curve", "settings")}))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
