"""Fault injection for the watchdog's tests and the soak: a value the service parses once, at its edge.

``SENSORSYNTH_FAULT=stall-audio-after:SECONDS`` takes the renderer away from the audio side for good after
that many seconds, as a hung kernel would: the watchdog must then exit so that a supervisor restarts the
service. The engine gets a :class:`Faults` value, never reads the environment itself, so a test can pass one
in directly and nothing below the edge depends on the process's environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV = "SENSORSYNTH_FAULT"


@dataclass(frozen=True)
class Faults:
    """Faults to inject; the default injects none."""

    stall_audio_after_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> Faults:
        """``""`` (none) or ``stall-audio-after:SECONDS``; anything else is a ValueError naming the forms."""
        text = text.strip()
        if not text:
            return cls()
        kind, _, arg = text.partition(":")
        if kind == "stall-audio-after":
            try:
                seconds = float(arg)
            except ValueError:
                seconds = -1.0
            if seconds >= 0:
                return cls(stall_audio_after_s=seconds)
        raise ValueError(f"{ENV}={text!r}: expected stall-audio-after:SECONDS")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Faults:
        return cls.parse((os.environ if env is None else env).get(ENV, ""))
