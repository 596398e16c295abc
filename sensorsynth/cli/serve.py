"""``sensorsynth serve`` and ``sensorsynth doctor``: argparse wiring and the call into :mod:`sensorsynth.server.app`.

The options are generated from :class:`~sensorsynth.server.config.ServeConfig`'s fields (name, type, choices,
help from ``Field(description=...)``, the default), so a new config field is a new option with no second list
to keep in step. They default to ``None`` so that only what is typed overrides the config file (and the config
file overrides the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Literal

from ..server.config import ConfigError, ServeConfig, load_config
from .common import FIT_EXTRA_HINT, CliError, fitting_installed, parse_assignment

# Where an option's name or metavar is not the field's own: the long names users already type.
_OPTION_NAMES = {"osc_allowed_senders": "--osc-allow", "allowed_origins": "--allow-origin", "presets": "--preset"}
_METAVARS = {
    "instrument": "NAME", "osc_port": "PORT", "ws_port": "PORT", "sound_device": "NAME|INDEX", "sample_rate": "HZ",
    "record": "FILE.wav", "ready_file": "FILE.json", "tls_cert": "FILE.pem", "tls_key": "FILE.pem", "tls_dir": "DIR",
    "trainer": "ENDPOINT", "ws_token": "TOKEN", "osc_allowed_senders": "IP", "allowed_origins": "URL", "presets": "NAME",
}
_POSITIONAL = "models"  # `serve MODELS`
_CUSTOM = {"record_fit"}  # KEY=VALUE pairs, added by hand below
DOCTOR_KEYS = ("host", "output", "sound_device", "hostapi", "device", "osc_port", "ws_port", "sample_rate")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether it is a list)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is list:
        return (typing.get_args(annotation) or (str,))[0], True
    return annotation, False


def _add_config_option(p: argparse.ArgumentParser, name: str, with_help: bool = True) -> None:
    """One ``--option`` for the config field ``name``: type, choices and help from the model."""
    field = ServeConfig.model_fields[name]
    kind, many = _unwrap(field.annotation)
    options: dict[str, Any] = {"dest": name, "default": None}
    if typing.get_origin(kind) is Literal:
        options["choices"] = list(typing.get_args(kind))
    elif kind in (int, float):
        options["type"] = kind
    if name in _METAVARS:
        options["metavar"] = _METAVARS[name]
    elif "choices" not in options and kind in (int, float):
        options["metavar"] = "N" if kind is int else "X"
    if many:
        options["action"] = "append"
    if with_help:
        text = field.description or name.replace("_", " ")
        default = field.get_default(call_default_factory=True)
        if many:
            text += " (repeatable)"
        elif default is not None and "default" not in text:
            text += f" (default {default})"
        options["help"] = text
    p.add_argument(_OPTION_NAMES.get(name, "--" + name.replace("_", "-")), **options)


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "serve",
        help="play instruments live from OSC, WebSockets and the browser",
        description="Load every .instrument in MODELS and play them live: OSC on UDP, a WebSocket and the live "
        "page on one TCP port, sound to the sound card (or a clock-paced null output when there is none), "
        "optionally recorded to a WAV. Instruments added or changed in MODELS are picked up while playing. "
        "Every option can also be set in a TOML file (--config). SIGINT/SIGTERM stop cleanly.",
    )
    p.add_argument("models", nargs="?", metavar="MODELS", help="models folder or .instrument file (default: models)")
    p.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (command line wins)")
    for name in ServeConfig.model_fields:
        if name != _POSITIONAL and name not in _CUSTOM:
            _add_config_option(p, name)
    p.add_argument("--record-fit", action="append", metavar="KEY=VALUE", type=parse_assignment,
                   help="a fit setting for recorded clips, e.g. --record-fit steps=300, or a model size, e.g. "
                   "--record-fit spec.n_resonances=8 (repeatable; replaces the config file's record_fit table)")
    p.set_defaults(handler=run)

    d = commands.add_parser(
        "doctor",
        help="check sound devices, ports, models, GPU and config, and say how to mend what is wrong",
        description="Check what `sensorsynth serve` needs with the same options (a config file and/or the "
        "command line): the config, the models folder (every file loaded and validated), the sound card, "
        "the ports, the GPU when a CUDA device is configured, realtime priority and the kernel cache. "
        "Exit code 0 when nothing failed, 1 otherwise.",
    )
    d.add_argument("models", nargs="?", metavar="MODELS", help="models folder (default: models)")
    d.add_argument("--config", metavar="FILE.toml", help="the server's TOML config")
    for name in DOCTOR_KEYS:
        _add_config_option(d, name)
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(handler=run_doctor)


def _record_fit(pairs: list[tuple[str, object]] | None) -> dict[str, object] | None:
    """``--record-fit`` pairs as the config's table: ``spec.KEY`` entries go into its ``spec`` table."""
    if not pairs:
        return None
    table: dict[str, object] = {}
    spec: dict[str, object] = {}
    for key, value in pairs:
        if key.startswith("spec."):
            spec[key[len("spec."):]] = value
        else:
            table[key] = value
    return {**table, "spec": spec} if spec else table


def kernel_cache_is_warm(render: Path | None = None, cache_dirs: list[Path] | None = None) -> bool:
    """Whether numba has cached the audio kernel for the current sources, judged cheaply: an index file
    (``.nbi``) for both of the render package's compiled modules, no older than its source. numba writes them
    beside the sources (``render/__pycache__``) or, when that is read-only, under ``NUMBA_CACHE_DIR`` or the
    user's cache folder. A wrong guess only costs one line of output."""
    render = render or Path(__file__).resolve().parents[1] / "render"
    if cache_dirs is None:
        cache_dirs = [Path(d) for d in (os.environ.get("NUMBA_CACHE_DIR"), Path.home() / ".cache" / "numba") if d]
    folders = [render / "__pycache__"]
    for base in cache_dirs:
        if base.is_dir():
            folders += sorted({p.parent for p in base.rglob("callback.*.nbi")})
    for module in ("kernel", "callback"):
        try:
            source = (render / f"{module}.py").stat().st_mtime
        except OSError:
            return True  # no source to compile (an unusual install): nothing to announce
        if not any(f.stat().st_mtime >= source for folder in folders if folder.is_dir()
                   for f in folder.glob(f"{module}.*.nbi")):
            return False
    return True


def _first_start_say() -> Any:
    """``say`` for :func:`serve`, which on a cold kernel cache first says why nothing happens for a minute
    (numba compiles the audio kernel once and caches it), and when playing, how long the start took."""
    def say(text: str) -> None:
        print(text, flush=True)

    if kernel_cache_is_warm():
        return say
    say("sensorsynth serve: compiling the audio kernel once (about a minute); later starts are instant")
    started = time.monotonic()

    def say_once_done(text: str) -> None:
        nonlocal started
        if started is not None and text.startswith("sensorsynth serve: playing"):
            say(f"sensorsynth serve: audio kernel compiled and cached, started in {time.monotonic() - started:.0f} s")
            started = None
        say(text)

    return say_once_done


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, {**{k: getattr(args, k, None) for k in ServeConfig.model_fields},
                                           "record_fit": _record_fit(getattr(args, "record_fit", None))})
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per HTTP request is noise
    if config.device != "cpu" and not fitting_installed():
        raise CliError(f"--device {config.device} plays on the batched torch renderer, which needs torch: "
                       f"{FIT_EXTRA_HINT} (or play on --device cpu)")
    from ..server import app
    from ..server.app import ServeError, serve

    say = _first_start_say() if config.device == "cpu" else (lambda text: print(text, flush=True))
    try:
        code = asyncio.run(serve(config, say=say))
    except ServeError as exc:
        raise CliError(str(exc), exc.code) from None
    if app.ABANDONED_DEVICE:  # a dead audio host API can hang PortAudio's exit handler: leave now, all is saved
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run_doctor(args: argparse.Namespace) -> int:
    from ..server.doctor import FAIL, report, run_checks

    try:
        config = load_config(args.config, {k: getattr(args, k, None) for k in ("models", *DOCTOR_KEYS)})
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    checks = run_checks(config)
    print(report(checks, args.json))
    return 1 if any(c.status == FAIL for c in checks) else 0
