"""``serve`` and ``doctor`` options generated from :class:`~sensorsynth.server.config.ServeConfig`: each field
is an ``--option`` with the field's type (a ``Literal`` gives the choices, a list makes it repeatable), its
``Field(description=...)`` as help, and its default said after it. A new config field is a new option, and
the config file and the command line cannot disagree about names.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from ..server.config import ServeConfig

# Where an option's name or metavar is not the field's own: the long names users already type.
_OPTION_NAMES = {"osc_allowed_senders": "--osc-allow", "allowed_origins": "--allow-origin", "presets": "--preset"}
_METAVARS = {
    "instrument": "NAME", "osc_port": "PORT", "ws_port": "PORT", "sound_device": "NAME|INDEX", "sample_rate": "HZ",
    "record": "FILE.wav", "ready_file": "FILE.json", "tls_cert": "FILE.pem", "tls_key": "FILE.pem", "tls_dir": "DIR",
    "trainer": "ENDPOINT", "ws_token": "TOKEN", "osc_allowed_senders": "IP", "allowed_origins": "URL", "presets": "NAME",
}
_POSITIONAL = "models"  # `serve MODELS`
_CUSTOM = {"record_fit"}  # KEY=VALUE pairs: serve adds --record-fit itself
DOCTOR_KEYS = ("host", "output", "sound_device", "hostapi", "device", "osc_port", "ws_port", "sample_rate", "scenes")


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether it is a list)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is list:
        return (typing.get_args(annotation) or (str,))[0], True
    return annotation, False


def add_config_option(p: argparse.ArgumentParser, name: str) -> None:
    """One ``--option`` for the config field ``name``: type, choices and help from the model. It defaults to
    ``None`` so that only what is typed overrides the config file; a flag (a ``bool`` field) also has its
    ``--no-`` form, which can turn off what the file turned on."""
    field = ServeConfig.model_fields[name]
    kind, many = _unwrap(field.annotation)
    options: dict[str, Any] = {"dest": name, "default": None}
    if typing.get_origin(kind) is Literal:
        options["choices"] = list(typing.get_args(kind))
    elif kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif kind in (int, float):
        options["type"] = kind
    if name in _METAVARS:
        options["metavar"] = _METAVARS[name]
    elif "choices" not in options and kind in (int, float):
        options["metavar"] = "N" if kind is int else "X"
    if many:
        options["action"] = "append"
    text = field.description or name.replace("_", " ")
    default = field.get_default(call_default_factory=True)
    if many:
        text += " (repeatable)"
    elif default is not None and "default" not in text:
        text += f" (default {default})"
    options["help"] = text
    p.add_argument(_OPTION_NAMES.get(name, "--" + name.replace("_", "-")), **options)


def serve_option_names() -> list[str]:
    """The fields that are ``serve --options``: all but MODELS (positional) and ``record_fit`` (KEY=VALUE pairs)."""
    return [name for name in ServeConfig.model_fields if name != _POSITIONAL and name not in _CUSTOM]
