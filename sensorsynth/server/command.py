"""The ``sensorsynth serve`` subcommand: argparse wiring and the call into :mod:`.app`. Options default to
``None`` so that only what is typed overrides the config file (and the config file overrides the defaults)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .config import ConfigError, ServeConfig, load_config

_HELP = {name: (f.description or "") for name, f in ServeConfig.model_fields.items()}


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
    p.add_argument("--instrument", metavar="NAME", help=_HELP["instrument"])
    p.add_argument("--host", help=_HELP["host"] + " (default 0.0.0.0)")
    p.add_argument("--osc-port", type=int, metavar="PORT", help=_HELP["osc_port"] + " (default 9000)")
    p.add_argument("--ws-port", type=int, metavar="PORT", help=_HELP["ws_port"] + " (default 8765)")
    p.add_argument("--output", choices=["auto", "sound", "null"], help=_HELP["output"] + " (default auto)")
    p.add_argument("--device", help=_HELP["device"] + " (default cpu)")
    p.add_argument("--sound-device", metavar="NAME|INDEX", help=_HELP["sound_device"])
    p.add_argument("--hostapi", help=_HELP["hostapi"])
    p.add_argument("--sample-rate", type=int, metavar="HZ", help=_HELP["sample_rate"])
    p.add_argument("--block-size", type=int, metavar="N", help=_HELP["block_size"] + " (default 64)")
    p.add_argument("--max-voices", type=int, metavar="N", help=_HELP["max_voices"] + " (default 8)")
    p.add_argument("--prefill-blocks", type=int, metavar="N", help=_HELP["prefill_blocks"] + " (default 3)")
    p.add_argument("--audio-path", choices=["compiled", "python"], help=_HELP["audio_path"] + " (default compiled)")
    p.add_argument("--record", metavar="FILE.wav", help=_HELP["record"])
    p.add_argument("--realtime-priority", type=int, metavar="N", help=_HELP["realtime_priority"] + " (default 10)")
    p.add_argument("--latency", choices=["asap", "fixed"], help=_HELP["latency"] + " (default asap)")
    p.add_argument("--fixed-delay-ms", type=float, metavar="MS", help=_HELP["fixed_delay_ms"] + " (default 10)")
    p.add_argument("--timetag-window-s", type=float, metavar="S", help=_HELP["timetag_window_s"] + " (default 1)")
    p.add_argument("--osc-allow", action="append", metavar="IP", dest="osc_allowed_senders",
                   help=_HELP["osc_allowed_senders"] + " (repeatable; default: any)")
    p.add_argument("--ws-token", metavar="TOKEN", help=_HELP["ws_token"])
    p.add_argument("--allow-origin", action="append", metavar="URL", dest="allowed_origins",
                   help=_HELP["allowed_origins"] + " (repeatable)")
    p.add_argument("--stall-exit-s", type=float, metavar="S", help=_HELP["stall_exit_s"] + " (default 5)")
    p.add_argument("--seed", type=int, help=_HELP["seed"])
    p.add_argument("--noise", choices=["instrument", "fresh"], help=_HELP["noise"] + " (default instrument)")
    p.add_argument("--ready-file", metavar="FILE.json", help=_HELP["ready_file"])
    p.add_argument("--preset", action="append", metavar="NAME", dest="presets",
                   help=_HELP["presets"] + " (repeatable)")
    p.add_argument("--tls", choices=["off", "self-signed"], help=_HELP["tls"] + " (default off)")
    p.add_argument("--tls-cert", metavar="FILE.pem", help=_HELP["tls_cert"])
    p.add_argument("--tls-key", metavar="FILE.pem", help=_HELP["tls_key"])
    p.add_argument("--tls-dir", metavar="DIR", help=_HELP["tls_dir"])
    p.add_argument("--trainer", metavar="ENDPOINT", help=_HELP["trainer"])
    p.add_argument("--record-fit", action="append", metavar="KEY=VALUE", type=_assignment,
                   help="a fit setting for recorded clips, e.g. --record-fit steps=300, or a model size, e.g. "
                   "--record-fit spec.n_resonances=8 (repeatable; replaces the config file's record_fit table)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
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
    for opt in ("--host", "--output", "--sound-device", "--hostapi", "--device"):
        d.add_argument(opt)
    d.add_argument("--osc-port", type=int)
    d.add_argument("--ws-port", type=int)
    d.add_argument("--sample-rate", type=int)
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(handler=run_doctor)


OPTION_KEYS = (
    "models", "instrument", "host", "osc_port", "ws_port", "output", "device", "sound_device", "hostapi", "sample_rate",
    "block_size", "max_voices", "prefill_blocks", "audio_path", "realtime_priority", "record", "latency", "fixed_delay_ms", "timetag_window_s",
    "osc_allowed_senders", "ws_token", "allowed_origins", "seed", "noise", "stall_exit_s", "ready_file", "log_level",
    "tls", "tls_cert", "tls_key", "tls_dir", "presets", "trainer",
)


def _assignment(text: str) -> tuple[str, object]:
    from ..cli import _parse_assignment

    return _parse_assignment(text)


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
    from ..cli import CliError

    try:
        config = load_config(args.config, {**{k: getattr(args, k, None) for k in OPTION_KEYS},
                                           "record_fit": _record_fit(getattr(args, "record_fit", None))})
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    logging.basicConfig(
        level=config.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per HTTP request is noise
    from .app import ServeError, run_service

    try:
        ended = asyncio.run(run_service(config, say=lambda text: print(text, flush=True)))
    except ServeError as exc:
        raise CliError(str(exc), exc.code) from None
    if ended.abandoned_device:  # a dead audio host API can hang PortAudio's exit handler: leave now, all is saved
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(ended.code)
    return ended.code


def run_doctor(args: argparse.Namespace) -> int:
    from ..cli import CliError
    from .doctor import FAIL, report, run_checks

    keys = ("models", "host", "output", "sound_device", "hostapi", "device", "osc_port", "ws_port", "sample_rate")
    try:
        config = load_config(args.config, {k: getattr(args, k, None) for k in keys})
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    checks = run_checks(config)
    print(report(checks, args.json))
    return 1 if any(c.status == FAIL for c in checks) else 0
