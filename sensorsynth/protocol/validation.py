"""One line for a refusal: every file and config reader (the serve config, scenes files, presets) names the first
bad field the same way, ``field 'a.b': what is wrong``, without pydantic's "Value error, " prefix, and an
unreadable or malformed TOML file the same way too."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def first_error(exc: ValidationError) -> str:
    """``field '<dotted location>': <message>`` of the first error."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "?"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"field '{field}': {msg}"


def read_toml(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The TOML table of ``path``; ``error`` with one line (``cannot read <what> <path>: ...`` or ``<path>: not
    valid TOML: ...``) when the file cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
