"""Reading a preset file: a bundled name or a path, TOML, validated by a pydantic model, every failure one line.

The OSC presets (:mod:`.presets`) and the MIDI presets (:mod:`.midi`) are the same kind of file with different
fields: one reader, so that a name, a missing file, bad TOML and a bad field are reported the same way by both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ..protocol.validation import first_error, read_toml

M = TypeVar("M", bound=BaseModel)


def bundled(folder: Path) -> list[str]:
    """The names of the presets bundled in ``folder``."""
    return sorted(p.stem for p in folder.glob("*.toml"))


def load_preset_file(name_or_path: str | Path, folder: Path, model: type[M], error: type[ValueError],
                     what: str = "preset") -> M:  # fmt: skip
    """``model`` from a bundled preset of ``folder`` by name, or from a ``.toml`` path; ``error`` (one line,
    naming the file and the field) when it cannot be had."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or "/" in text):
        path = folder / f"{text}.toml"
        if not path.is_file():
            raise error(f"no {what} {text!r} (bundled: {', '.join(bundled(folder))}; or give a .toml path)")
    data = read_toml(path, what, error)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{path}: {first_error(exc)}") from None
