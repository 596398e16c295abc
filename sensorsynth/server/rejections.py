"""Counting what the service refuses: by kind, with one log line per kind (not per packet), so a flood of
garbage costs a counter increment, never a log storm, and health/status can report exactly what was refused."""

from __future__ import annotations

import logging
from collections import Counter


class Rejections:
    """Counts refused inputs by ``source:kind`` (e.g. ``osc:nonfinite``, ``ws:bad_json``) and logs the first of
    each kind with its message. Single-threaded: used from the event loop only."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self._log = logger or logging.getLogger("sensorsynth.rejections")

    def count(self, source: str, kind: str, message: str = "") -> None:
        key = f"{source}:{kind}"
        self.counts[key] += 1
        if self.counts[key] == 1:
            self._log.warning("rejected %s input (%s): %s; further ones are only counted", source, kind, message)

    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
