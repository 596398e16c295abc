"""``sensorsynth fit``, ``render`` and ``info``: an instrument from a clip, a WAV from an instrument, and what a
file holds. torch and the fitter are imported only inside ``fit``, which first checks that the fitting extra
is installed (``render`` and ``info`` work on a player installed without it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .common import (
    EXIT_FAILURE,
    CliError,
    check_device,
    parse_assignment,
    positive_float,
    positive_int,
    prepare_output_dir,
    progress_callback,
    refuse_output,
    require_fit,
    sample_rate,
)


# ---------------------------------------------------------------------------------------------- fit


def _fit_settings(args: argparse.Namespace) -> Any:
    """Only the options the user gave are passed; FitSettings' own defaults rule the rest."""
    from ..instrument.settings import make_settings

    given: dict[str, Any] = dict(args.set or [])
    given.update(
        (key, getattr(args, key))
        for key in ("quality", "time_budget_s", "steps", "loss", "seed", "device", "threads")
        if getattr(args, key, None) is not None
    )
    try:
        settings = make_settings(given)
    except ValueError as exc:
        raise CliError(f"bad fit settings: {str(exc).removeprefix('bad settings: ')}") from None
    check_device(settings.device)
    return settings


def _model_spec(args: argparse.Namespace) -> Any:
    """ModelSpec from ``--spec KEY=VALUE`` over the default, within the fit's size limits."""
    from ..instrument.settings import make_spec

    try:
        return make_spec(dict(getattr(args, "spec", None) or []))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _save_atomically(instrument: Any, out: Path, force: bool) -> None:
    """Save beside ``out`` under a temporary name, then rename: Ctrl-C or a crash leaves nothing behind."""
    from ..atomic import atomic_write
    from ..instrument_file import save

    try:  # the default mode: safetensors writes 0600; an instrument is meant to be shared
        atomic_write(out, lambda tmp: save(instrument, tmp), clobber=force)
    except FileExistsError:
        raise CliError(f"{out}: appeared while fitting; use --force to overwrite it") from None


class _DeferredInterrupt:
    """Ctrl-C during a fit cancels it through its token: the fit stops within a second at a safe point
    (between two steps, or between two chunks of the analysis) rather than inside torch's autograd engine
    (an interrupt raised inside a backward pass can leave the process hanging). A second Ctrl-C stops at once."""

    def __init__(self, token: Any) -> None:
        self.token = token
        self._installed = False
        self._previous: Any = None

    @property
    def pending(self) -> bool:
        return bool(self.token.cancelled)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.token.cancel("interrupted")

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            # a handler installed outside Python reads back as None: fall back to the default one
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
        if self.pending:
            raise KeyboardInterrupt


def cmd_fit(args: argparse.Namespace) -> int:
    require_fit("fit")
    out = Path(args.output) if args.output else Path("models") / f"{Path(args.clip).stem}.instrument"
    refuse_output(out, args.force)
    from ..audio import read_clip

    spec = _model_spec(args)
    settings = _fit_settings(args)
    clip = read_clip(args.clip, sample_rate=spec.sample_rate, n_samples=spec.n_samples)
    prepare_output_dir(out)
    if not args.quiet:
        for message in clip.messages:
            print(f"note: {args.clip}: {message}", file=sys.stderr)

    from ..instrument.pipeline import CancelToken, Cancelled, InvalidResult, fit_clip

    if not args.quiet:
        budget = f" within {settings.time_budget_s:g} s" if settings.time_budget_s else ""
        print(f"fitting {args.clip} ({settings.quality} quality): up to {settings.steps} steps{budget} on "
              f"{settings.device}", file=sys.stderr)
    show_progress, close_bar = progress_callback(args.quiet)
    token = CancelToken()
    name = args.name or out.stem
    try:
        with _DeferredInterrupt(token):
            instrument = fit_clip(clip, settings, spec, name=name, cancel=token, on_progress=show_progress)
    except Cancelled:
        raise KeyboardInterrupt from None
    except InvalidResult as exc:  # the fit diverged (NaN) or produced impossible values
        raise CliError(f"{exc}; nothing was written", EXIT_FAILURE) from None
    except ValueError as exc:  # the fitter rejecting a combination of settings or the audio
        raise CliError(f"cannot fit {args.clip}: {exc}") from None
    finally:
        close_bar()
    try:
        _save_atomically(instrument, out, args.force)
    except ValueError as exc:  # Instrument.validate, should the fit have produced impossible values
        raise CliError(f"the fit produced an invalid instrument ({exc}); nothing was written", EXIT_FAILURE) from None
    except OSError as exc:
        raise CliError(f"{out}: cannot write ({exc.strerror or exc})") from None
    size_kb = out.stat().st_size / 1000
    wall = float(instrument.manifest.training.get("wall_time_s", 0.0))
    loss = instrument.manifest.final_loss
    print(f"saved {out} ({size_kb:.1f} kB), final loss {loss if loss is None else f'{loss:.6g}'}, {wall:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------- render


def cmd_render(args: argparse.Namespace) -> int:
    import numpy as np

    from ..audio import AudioOutputError, write_wav
    from ..instrument.budget import LoadBudget
    from ..instrument_file import load

    out = Path(args.output)
    if out.suffix.lower() != ".wav":
        raise CliError(f"{out}: the output is written as WAV; give it a .wav name")
    if args.seconds is not None and not args.random:
        raise CliError("--seconds only applies to --random")
    if out.is_dir():
        raise CliError(f"{out}: is a directory")
    instrument = load(args.instrument, LoadBudget(rate=args.sample_rate, at_file_rate=True, voices=1,
                                                  block_size=args.block_size))
    prepare_output_dir(out)
    try:
        from ..render.performance import render_random, render_reconstruction
    except ImportError as exc:
        raise CliError(f"the renderer is not available in this build ({exc})", EXIT_FAILURE) from None
    rate = int(args.sample_rate or instrument.spec.sample_rate)
    # offline, a file can be normalised afterwards instead of clipped: render without the live limiter
    # (NaN/inf are still removed) and scale down only if the peak exceeds full scale, like the seed's max_norm
    options = dict(sample_rate=args.sample_rate, block_size=args.block_size, seed=args.seed, limit=None)
    try:
        if args.random:
            seconds = args.seconds if args.seconds is not None else instrument.spec.duration
            audio = render_random(instrument, seconds, **options)
        else:
            audio = render_reconstruction(instrument, **options)
    except ValueError as exc:  # the renderer's own argument checks (rate, block size)
        raise CliError(f"cannot render: {exc}") from None
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or not np.all(np.isfinite(audio)):
        raise CliError(f"the renderer returned unusable audio (shape {audio.shape})", EXIT_FAILURE)
    over = float(np.max(np.abs(audio))) if audio.size else 0.0
    if over > 1.0:
        audio /= over
        print(f"note: peak was {20 * math.log10(over):+.1f} dBFS; scaled to 0 dBFS instead of clipping", file=sys.stderr)
    try:
        write_wav(out, audio, rate)
    except AudioOutputError as exc:
        raise CliError(str(exc)) from None
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    level = f"peak {20 * math.log10(peak):.1f} dBFS" if peak > 0 else "silent"
    print(f"wrote {out} ({audio.size / rate:.2f} s at {rate} Hz, {level})")
    return 0


# --------------------------------------------------------------------------------------------- info


def _human_info(summary: dict[str, Any], path: str) -> str:
    spec = summary["spec"]
    lines = [
        f"{path}",
        f"  name          {summary['name']}",
        f"  format        {summary['format']}, created {summary['created']}",
        f"  size on disk  {summary.get('file_bytes', 0) / 1000:.1f} kB "
        f"({summary['array_bytes'] / 1000:.1f} kB of arrays)",
        f"  rate          {spec['sample_rate']} Hz, {spec['n_samples']} samples ({summary['duration_s']} s)",
        f"  model         {spec['control_plane_dim']} controls -> {spec['n_resonances']} resonances "
        f"x {spec['expressivity']} shapes x {spec['n_oscillators']} oscillators ({summary['oscillators']} in all)",
        f"  frequencies   {summary['frequency_range_hz'][0]} - {summary['frequency_range_hz'][1]} Hz",
        f"  control       {summary['active_control_elements']} active elements",
        f"  final loss    {summary['final_loss'] if summary['final_loss'] is not None else 'unknown'}",
        "  attack noise  " + (f"its own ({noise['generator']}, seed {noise['seed']})"
                              if isinstance(noise := summary.get("attack_noise"), dict) else "fresh per event"),
    ]
    source = summary.get("source")
    if source:
        lines += [
            f"  source        {source['name']} ({source['duration_s']:.2f} s, {source['sample_rate']} Hz, "
            f"{source['channels']} ch)",
            f"  source sha256 {source['sha256']}",
        ]
    else:
        lines.append("  source        unknown")
    lines.append("  arrays")
    lines += [f"    {name:<17} {list(shape)}" for name, shape in summary["arrays"].items()]
    training = summary.get("training") or {}
    lines.append("  training" + ("" if training else "      unknown"))
    lines += [f"    {key:<17} {value}" for key, value in training.items()]
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from ..instrument_file import describe, load

    instrument = load(args.instrument)
    summary = describe(instrument, args.instrument)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_human_info(summary, args.instrument))
    return 0


# ------------------------------------------------------------------------------------------- parser


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """fit, render, info."""
    fit = commands.add_parser(
        "fit",
        help="fit an instrument from an audio clip",
        description="Fit an instrument to CLIP (any format soundfile reads; resampled, mixed to mono, padded "
        "or cut to the model's length, each change reported) and save it as an .instrument file. A progress "
        "bar with step, ETA and loss goes to stderr; Ctrl-C stops without writing anything.",
    )
    fit.add_argument("clip", metavar="CLIP", help="audio file to fit (wav, flac, ogg, ...)")
    fit.add_argument(
        "-o", "--output", metavar="PATH", help="instrument file to write (default: models/<CLIP name>.instrument)"
    )
    fit.add_argument(
        "--quality", choices=["fast", "default", "best"],
        help="fast: under a minute on 2 cores (a 52 s budget); default: a few minutes; best: three times the "
        "default's steps (default: default)",
    )
    fit.add_argument(
        "--time-budget", type=positive_float, metavar="SECONDS", dest="time_budget_s",
        help="finish within this much wall time, analysis included: the whole schedule is compressed into it "
        "(default: none, or the quality's)",
    )
    fit.add_argument("--steps", type=positive_int, help="optimisation steps (default: the quality's)")
    # No argparse choices: reading them from FitSettings would import torch for every command. The fitter's
    # own validation names the allowed values.
    fit.add_argument("--loss", metavar="NAME", help="spectral loss: mrstft, seed or multires (default: the fitter's)")
    fit.add_argument("--seed", type=int, help="random seed (default: the fitter's)")
    fit.add_argument("--device", metavar="DEVICE", help="torch device: cpu, cuda, cuda:1 ... (default: cpu)")
    fit.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: all cores)")
    fit.add_argument(
        "--spec",
        metavar="KEY=VALUE",
        action="append",
        type=parse_assignment,
        help="model size or rate, e.g. --spec n_resonances=8 --spec n_oscillators=32 --spec n_samples=65536 "
        "(repeatable; ModelSpec fields, within the fit's size limits; default: the seed's sizes)",
    )
    fit.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        type=parse_assignment,
        help="any other fit setting, e.g. --set init=random --set lr=0.005 (repeatable; see the error "
        "message of a wrong key for the list)",
    )
    fit.add_argument("--name", help="instrument name stored in the file (default: the output file's stem)")
    fit.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes; only the summary")
    fit.set_defaults(handler=cmd_fit)

    render = commands.add_parser(
        "render",
        help="render an instrument to a WAV file",
        description="Render INSTRUMENT to a 16-bit mono WAV: --reconstruct replays the fitted performance "
        "(the training clip's length), --random plays random controls for --seconds. An existing output WAV "
        "is replaced.",
    )
    render.add_argument("instrument", metavar="INSTRUMENT", help=".instrument file")
    mode = render.add_mutually_exclusive_group(required=True)
    mode.add_argument("--reconstruct", action="store_true", help="replay the performance the fit learned")
    mode.add_argument("--random", action="store_true", help="play random controls")
    render.add_argument("--seconds", type=positive_float, help="length for --random (default: the clip's length)")
    render.add_argument("-o", "--output", metavar="OUT.wav", required=True, help="WAV file to write")
    render.add_argument(
        "--sample-rate", type=sample_rate, metavar="R", help="output rate in Hz (default: the instrument's)"
    )
    render.add_argument(
        "--block-size", type=positive_int, default=512, metavar="B", help="renderer block size (default: 512)"
    )
    render.add_argument("--seed", type=int, help="noise seed, for repeatable output")
    render.set_defaults(handler=cmd_render)

    info = commands.add_parser(
        "info",
        help="describe an instrument file",
        description="Print an instrument's shapes, rates, provenance (source file, sha256, duration), "
        "training settings, final loss and size on disk.",
    )
    info.add_argument("instrument", metavar="INSTRUMENT", help=".instrument file")
    info.add_argument("--json", action="store_true", help="machine-readable JSON instead of text")
    info.set_defaults(handler=cmd_info)
