"""``sensorsynth serve`` and ``sensorsynth doctor``: argparse wiring and the call into :mod:`sensorsynth.server.app`.

The options are generated from :class:`~sensorsynth.server.config.ServeConfig`'s fields (:mod:`.serve_options`).
They default to ``None`` so that only what is typed overrides the config file (and the config file overrides the
defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from ..server.config import ConfigError, ServeConfig, load_config
from .common import FIT_EXTRA_HINT, CliError, fitting_installed, parse_assignment
from .kernel_cache import first_start_say
from .serve_options import DOCTOR_KEYS, add_config_option, serve_option_names


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
    for name in serve_option_names():
        add_config_option(p, name)
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
        add_config_option(d, name)
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
    if config.device.startswith("torch:") and not fitting_installed():
        raise CliError(f"--device {config.device} plays on the batched torch renderer, which needs torch: "
                       f"{FIT_EXTRA_HINT} (or play on --device cpu)")
    from ..server.app import ServeError, run_service

    say = first_start_say() if config.device == "cpu" else (lambda text: print(text, flush=True))
    try:
        ended = asyncio.run(run_service(config, say=say))
    except ServeError as exc:
        raise CliError(str(exc), exc.code) from None
    if ended.abandoned_device:  # a dead audio host API can hang PortAudio's exit handler: leave now, all is saved
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(ended.code)
    return ended.code


def run_doctor(args: argparse.Namespace) -> int:
    from ..server.doctor import FAIL, report, run_checks

    try:
        config = load_config(args.config, {k: getattr(args, k, None) for k in ("models", *DOCTOR_KEYS)})
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    checks = run_checks(config)
    print(report(checks, args.json))
    return 1 if any(c.status == FAIL for c in checks) else 0
