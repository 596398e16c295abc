"""The instrument library: every ``*.instrument`` directly inside the models folder, by name.

Why a poll and not inotify: it is portable (containers, network folders), costs one ``stat`` per file every
half second, and needs no extra dependency. A file is only (re)loaded once it has stopped changing between two
polls, so a copy in progress is never read half-written. A file that fails to load is refused with one log line
and the last good version of that instrument keeps playing.

Names are the file stem; only ``[A-Za-z0-9][A-Za-z0-9._-]*`` names are accepted, and a file whose real path
leaves the models folder (a symlink out of it) is refused, so a name from the network can never reach
another file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..instrument_file import Instrument, InstrumentFileError, load

log = logging.getLogger("sensorsynth.library")

SUFFIX = ".instrument"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class LibraryError(ValueError):
    """A models folder or instrument name that cannot be used."""


def check_name(name: str) -> str:
    """An instrument name as the network may give it: refuse anything that could name another path."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise LibraryError(f"invalid instrument name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


@dataclass
class Entry:
    name: str
    path: Path
    instrument: Instrument
    signature: tuple[int, int]  # (mtime_ns, size) of the version loaded
    version: int = 1  # how many good versions were loaded (1 = the first)


@dataclass
class Change:
    """What a poll found: instruments to add, instruments replaced by a new good version, refusals."""

    added: list[Entry] = field(default_factory=list)
    replaced: list[Entry] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.replaced or self.refused or self.removed)


class Library:
    """Instruments of one folder (or one file). Not thread-safe: the event loop owns it; loading runs in a
    worker thread through :meth:`scan`'s caller."""

    def __init__(self, source: str | Path) -> None:
        source = Path(source)
        if source.is_file():
            self.folder = source.parent.resolve()
            self.only: str | None = source.name
        elif source.is_dir():
            self.folder = source.resolve()
            self.only = None
        else:
            raise LibraryError(f"{source}: no such models folder or instrument file")
        self.entries: dict[str, Entry] = {}
        self._seen: dict[str, tuple[int, int]] = {}  # signature at the previous poll (stability check)
        self._refused: dict[str, tuple[int, int]] = {}  # signature of a refused version (log it once)

    def path_of(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}{SUFFIX}"

    def _candidates(self) -> dict[str, Path]:
        out = {}
        try:
            paths = sorted(self.folder.glob(f"*{SUFFIX}"))
        except OSError as exc:
            log.error("cannot list %s: %s", self.folder, exc)
            return {}
        for p in paths:
            if self.only is not None and p.name != self.only:
                continue
            name = p.name[: -len(SUFFIX)]
            if NAME_RE.match(name) and ".." not in name:
                out[name] = p
        return out

    def _safe(self, path: Path) -> str | None:
        """Why this path may not be read, or None."""
        try:
            real = path.resolve(strict=True)
        except OSError as exc:
            return f"cannot resolve: {exc}"
        if real.parent != self.folder and self.folder not in real.parents:
            return f"is a link to {real}, outside the models folder {self.folder}"
        if not real.is_file():
            return "is not a regular file"
        return None

    def scan(self, *, settle: bool = True) -> Change:
        """Load what is new or changed. With ``settle``, a file is read only when its (mtime, size) was the
        same at the previous scan, so writers have finished; the first scan (startup) reads everything."""
        change = Change()
        found = self._candidates()
        for name, path in found.items():
            try:
                st = path.stat()
            except OSError:
                continue
            sig = (st.st_mtime_ns, st.st_size)
            previous, self._seen[name] = self._seen.get(name), sig
            entry = self.entries.get(name)
            if entry is not None and entry.signature == sig:
                continue
            if self._refused.get(name) == sig:
                continue
            if settle and previous != sig:
                continue  # still changing, or just appeared: read it at the next poll
            why = self._safe(path)
            instrument = None
            if why is None:
                try:
                    instrument = load(path)
                except InstrumentFileError as exc:
                    why = str(exc)
                except Exception as exc:  # noqa: BLE001 - a file must never take the service down
                    why = f"{path}: unexpected error while loading: {exc!r}"
            if instrument is None:
                self._refused[name] = sig
                change.refused.append((str(path), why or "unknown"))
                if entry is not None:
                    log.error("refused %s: %s; the last good version of %r keeps playing", path, why, name)
                else:
                    log.error("refused %s: %s", path, why)
                continue
            self._refused.pop(name, None)
            if entry is None:
                new = Entry(name, path, instrument, sig)
                self.entries[name] = new
                change.added.append(new)
            else:
                entry.instrument, entry.signature, entry.version = instrument, sig, entry.version + 1
                change.replaced.append(entry)
        for name in list(self._seen):
            if name not in found:
                self._seen.pop(name, None)
                if name in self.entries:
                    change.removed.append(name)  # kept loaded: voices may still play it
        return change

    @property
    def names(self) -> list[str]:
        return list(self.entries)


def summary(entry: Entry) -> dict:
    """What a page needs to list an instrument."""
    spec = entry.instrument.spec
    return {
        "name": entry.name,
        "sample_rate": spec.sample_rate,
        "control_plane_dim": spec.control_plane_dim,
        "n_resonances": spec.n_resonances,
        "expressivity": spec.expressivity,
        "n_oscillators": spec.n_oscillators,
        "duration_s": round(spec.duration, 3),
        "size_bytes": entry.instrument.size_bytes(),
        "version": entry.version,
    }


def details(entry: Entry) -> dict:
    """Everything the live page draws: the modes (spectrum) and the learned control signal (piano roll)."""
    inst = entry.instrument
    spec = inst.spec
    k = spec.control_plane_dim
    idx = inst.control_index.astype(np.int64)
    events = np.stack([idx // k, idx % k], axis=1).tolist() if idx.size else []
    values = np.round(inst.control_value.astype(np.float64), 5).tolist()
    r4 = lambda a: [float(f"{x:.4g}") for x in a.astype(np.float64).reshape(-1)]  # noqa: E731 - 4 significant digits: quiet modes stay visible
    return {
        **summary(entry),
        "modes": {"freq_hz": r4(inst.freq_hz), "amplitude": r4(inst.amplitude), "decay_per_s": r4(inst.decay_per_s)},
        "control": {
            "frames": spec.n_frames,
            "frame_rate": spec.sample_rate / spec.control_hop,
            "dims": k,
            "events": [[f, d, v] for (f, d), v in zip(events, values)],
        },
    }
