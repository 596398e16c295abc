"""``sensorsynth scenes check FILE``: validate a scenes file offline, before it goes to the installation.

The same checks ``serve --scenes`` makes at start (the file's format, every scene the schedule names, and, with
a models folder, every instrument, preset, voice and output channel count), then what the schedule will do:
the scene now and the next changes, in the schedule's time zone, so a wrong opening hour shows on the desk and
not in the empty museum.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from .common import CliError


def add_parsers(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "scenes",
        help="check a scenes file (the installation's scenes and schedule) offline",
        description="Work with scenes files (see docs/scenes.md).",
    )
    sub = p.add_subparsers(dest="scenes_command", metavar="ACTION")
    c = sub.add_parser(
        "check",
        help="validate a scenes file and show the next scheduled changes",
        description="Validate a scenes file as `serve --scenes` does at start: the format, the scenes the "
        "schedule names, and (with a models folder, from --models or the --config file) the instruments, "
        "presets, voices and output channels. Then print the scene now and the next changes. Exit code 0 "
        "when the file is good, 2 when not (one line naming the field).",
    )
    c.add_argument("file", metavar="FILE", help="the scenes file (TOML)")
    c.add_argument("--config", metavar="FILE.toml", help="the server's config: its models folder, presets, "
                   "max_voices and output_channels are checked against")
    c.add_argument("--models", metavar="MODELS", help="models folder whose instruments the scenes may name "
                   "(default: the config's; without either, instruments are not checked)")
    c.add_argument("--changes", type=int, default=6, metavar="N", help="how many coming changes to show "
                   "(default 6)")
    c.set_defaults(handler=run_check)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def run_check(args: argparse.Namespace) -> int:
    from ..protocol.scenes import ScenesError, Server, check_against, load_scenes
    from ..protocol.schedule import changes, scene_at

    try:
        scenes = load_scenes(args.file)
    except ScenesError as exc:
        raise CliError(str(exc)) from None
    models, presets, voices, channels = _server(args)
    if models is not None:
        names = _instrument_names(models)
        try:
            check_against(scenes, Server(names, presets, voices, channels), f"{args.file}: ")
        except ScenesError as exc:
            raise CliError(str(exc)) from None
    print(f"{args.file}: {len(scenes.scenes)} scenes ({', '.join(scenes.scenes)}); cross-fade "
          f"{scenes.crossfade_s:g} s" + ("" if models is not None else "; instruments not checked (no --models)"))
    schedule = scenes.schedule
    if schedule is None:
        print(f"  no schedule: starts on {scenes.first}, switched by hand")
        return 0
    now = datetime.now(timezone.utc)
    zone = schedule.zone
    m = scene_at(schedule, now)
    print(f"  now ({now.astimezone(zone):%a %Y-%m-%d %H:%M %Z}): {m.scene}")
    for at, name in changes(schedule, now, max(0, min(args.changes, 100))):
        print(f"  {at.astimezone(zone):%a %Y-%m-%d %H:%M %Z}: {name}")
    return 0


def _server(args: argparse.Namespace) -> tuple[Path | None, list[str] | None, int, int | None]:
    """(models folder, preset names, max_voices, output_channels) from --config and --models."""
    models = Path(args.models) if args.models else None
    presets: list[str] | None = None
    voices, channels = 256, None
    if args.config:
        from ..mapping.presets import PresetError, load_preset
        from ..server.config import ConfigError, load_config

        try:
            config = load_config(args.config)
            presets = [load_preset(name).name for name in config.presets]
        except (ConfigError, PresetError) as exc:
            raise CliError(str(exc)) from None
        models = models or config.models
        voices = config.max_voices
        channels = config.output_channels
    return models, presets, voices, channels


def _instrument_names(models: Path) -> list[str]:
    """The instruments a server would list in ``models`` (names only: the files are not loaded)."""
    if models.is_file():
        return [models.stem]
    if not models.is_dir():
        raise CliError(f"models folder {models} does not exist")
    return sorted(p.stem for p in models.glob("*.instrument") if p.is_file())
