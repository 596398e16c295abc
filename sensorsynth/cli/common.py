"""What every command shares: the error type and exit codes, argparse value types, the fit-extra check,
the device check, output-path checks and the progress bar.

Each command group (:mod:`.fit`, :mod:`.serve`, :mod:`.trainer`) imports from here and from nowhere else in
the ``cli`` package, so the commands never reach into each other's private helpers and import no cycle.

Exit codes: 0 success; 2 bad input (unreadable clip or instrument, bad arguments, output that cannot be
written or would be overwritten); 1 a failure that is not the user's input (e.g. the fit produced an
invalid model, or the renderer is missing); 130 interrupted with Ctrl-C. User errors print one
``error: <message>`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# What a player installs without (`pip install sensorsynth`): torch and the fitter. The commands that fit say so.
FIT_EXTRA_HINT = "pip install 'sensorsynth[fit]'"


class CliError(Exception):
    """An error to report as ``error: <message>`` with an exit code (2 = bad input)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def error(message: str) -> None:
    """The one-line form every user error takes on stderr."""
    print(f"error: {message}", file=sys.stderr)


def version() -> str:
    try:
        from importlib.metadata import version as installed

        return installed("sensorsynth")
    except Exception:  # not installed (running from a source tree)
        return "unknown"


class Parser(argparse.ArgumentParser):
    """argparse that reports as ``error: ...`` (plus a usage hint) instead of ``prog: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


# --------------------------------------------------------------------------------------- value types


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def sample_rate(text: str) -> int:
    """The range ModelSpec accepts; a typo like 44 instead of 44100 should fail, not render 44 Hz audio."""
    value = positive_int(text)
    if not 1000 <= value <= 384000:
        raise argparse.ArgumentTypeError(f"must be between 1000 and 384000 Hz, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for --set; VALUE is read as JSON when it parses (numbers, true, null), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


# ------------------------------------------------------------------------------------------- fitting


def fitting_installed() -> bool:
    """Whether torch can be imported, asked without importing it (a player's ``--help`` stays fast)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked torch counts as absent
        return False


def require_fit(command: str) -> None:
    """One line naming what to install, instead of a traceback from ``import torch``."""
    if not fitting_installed():
        raise CliError(f"`sensorsynth {command}` fits instruments, which needs torch: {FIT_EXTRA_HINT}")


def check_device(device: str) -> None:
    """A device torch does not know, or CUDA on a machine without it, fails before any work is done."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise CliError(f"--device {device}: not a torch device (try cpu or cuda)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {device}: CUDA is not available on this machine")


# ------------------------------------------------------------------------------------------- outputs


def refuse_output(path: Path, force: bool) -> None:
    """Cheap checks first, with no side effects: a wrong -o fails in a blink, before torch is imported."""
    if path.is_dir():
        raise CliError(f"{path}: is a directory; give a file name such as {path / 'name.instrument'}")
    if path.exists() and not force:
        raise CliError(f"{path}: already exists; use --force to overwrite it")


def prepare_output_dir(path: Path) -> None:
    """Create and probe the output directory before a long fit, not after it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{path.parent}: cannot create the output directory ({exc.strerror or exc})") from None
    if not os.access(path.parent, os.W_OK):
        raise CliError(f"{path.parent}: output directory is not writable")


def progress_callback(quiet: bool) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A tqdm bar on stderr fed by plain Progress records: step/steps, the fit's own ETA (it knows a step
    that trains the oscillators costs more than a frozen one), the current loss, and the stage as label.

    A new bar starts only if the number of steps changes. ``sensorsynth submit --wait`` shows the same bar.
    """
    from tqdm import tqdm

    state: dict[str, Any] = {"bar": None}
    layout = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def on_progress(progress: Any) -> None:
        if quiet:
            return
        bar = state["bar"]
        if bar is None or bar.total != progress.steps:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(
                total=progress.steps, unit="step", file=sys.stderr, dynamic_ncols=True, bar_format=layout
            )
        bar.set_description(str(progress.stage), refresh=False)
        postfix: dict[str, str] = {}
        if progress.eta_s is not None:
            postfix["eta"] = f"{progress.eta_s:.0f}s"
        if progress.loss is not None:
            postfix["loss"] = f"{progress.loss:.5g}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(progress.step - bar.n)

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    return on_progress, close
