"""One line for a pydantic refusal: every file and config reader (the serve config, scenes files, presets) names
the first bad field the same way, ``field 'a.b': what is wrong``, without pydantic's "Value error, " prefix."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(exc: ValidationError) -> str:
    """``field '<dotted location>': <message>`` of the first error."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "?"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"field '{field}': {msg}"
