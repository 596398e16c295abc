"""The ``sensorsynth`` command: fit an instrument from a clip, render it, inspect it, serve it live, and run
the fitting queue.

The package is the top edge of the program: it may import every layer, and nothing imports it. One module per
command group (:mod:`.fit`: fit, render, info; :mod:`.serve`: serve, doctor; :mod:`.scenes`: scenes check;
:mod:`.trainer`: trainer, worker, submit, jobs, cancel), sharing :mod:`.common` and never importing each other. Heavy imports (torch,
pyzmq, the renderer) happen inside the commands that need them, so ``--help`` and ``info`` start fast.
Exit codes are in :mod:`.common`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Sequence

from . import fit, scenes, serve, trainer
from .common import EXIT_INTERRUPTED, EXIT_USAGE, CliError, Parser, error, version

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sensorsynth",
        description="Fit a tiny resonance model of an instrument from one clip, render it, inspect it, play it "
        "live from sensors, and run a fitting queue for many clips.",
        epilog="Exit codes: 0 ok, 1 failure, 2 bad input or arguments, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    fit.add_parsers(commands)  # fit, render, info
    serve.add_parser(commands)  # serve, doctor
    scenes.add_parsers(commands)  # scenes check
    trainer.add_parsers(commands)  # trainer, worker, submit, jobs, cancel
    return parser


def command_summary(parser: argparse.ArgumentParser) -> str:
    """Every command with its one-line help, in the order ``--help`` lists them."""
    for action in parser._actions:  # argparse keeps the subcommands' help only on this action
        if isinstance(action, argparse._SubParsersAction):
            rows = [(choice.dest, choice.help or "") for choice in action._choices_actions]
            width = max(len(name) for name, _ in rows)
            return "\n".join(f"  {name:<{width}}  {text}" for name, text in rows)
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code instead of raising SystemExit."""
    from ..audio import AudioInputError
    from ..instrument_file import InstrumentFileError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, argument errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    if getattr(args, "handler", None) is None:
        parser.print_usage(sys.stderr)
        print(f"commands:\n{command_summary(parser)}", file=sys.stderr)
        error("no command given; choose one of the commands above (sensorsynth COMMAND --help says more)")
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        error("interrupted; nothing was written")
        return EXIT_INTERRUPTED
    except CliError as exc:
        error(str(exc))
        return exc.code
    except (AudioInputError, InstrumentFileError) as exc:
        error(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `sensorsynth info x | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 0
