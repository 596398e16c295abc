"""The first ``sensorsynth serve`` on a machine compiles the audio kernel (numba, 30-80 s) and caches it; until
then nothing would be printed. This says so, once, when the cache is cold, and how long the start took.

A command-line concern only: the renderer compiles as it always did, this just looks at numba's cache folders.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


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


def first_start_say() -> Any:
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
