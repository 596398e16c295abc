"""Generate the reference tables of the docs from the code, so that they cannot drift from it.

    python docs/gen_reference.py            # rewrite every generated block in docs/*.md
    python docs/gen_reference.py --check    # exit 1, naming each block that differs (tests/test_docs.py runs it)

A generated block sits in a page between ``<!-- gen:NAME -->`` and ``<!-- /gen:NAME -->``; everything outside
the markers is written by hand. The sources:

- ``serve-options`` (serving.md): the fields of ``ServeConfig`` (``sensorsynth/server/config.py``): key,
  default and bounds from the model, the command-line flag from ``sensorsynth serve --help``, the meaning from
  ``SERVE_MEANING`` below (a field without a meaning, or a meaning without a field, is an error);
- ``ws-client`` (protocol.md): every member of ``protocol.ws.ClientMessage`` with its fields; the answer
  from ``WS_ANSWER`` below (same rule);
- ``trainer-*`` (protocol.md): the unions of ``protocol.trainer`` (to the queue, to a worker, to a client,
  announcements) and the records they carry (JobInfo, WorkerStatus, WorkerInfo, Limits, Progress);
- ``fit-settings``, ``model-spec`` (fitting.md): the fields of ``FitSettings`` and ``ModelSpec``, what
  ``fit --set`` and ``--spec`` (and ``submit``, ``record_fit``) accept;
- ``commands`` (commands.md): the ``--help`` of each of the ``sensorsynth`` subcommands, as printed.

Why a script and not a mkdocs plugin: the pages stay plain Markdown that reads the same on GitHub, the
build needs nothing but mkdocs-material, and a reviewer sees the generated text in the diff.
"""

from __future__ import annotations

import argparse
import enum
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this tree's sensorsynth
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

# ------------------------------------------------------------------------------------- hand-written meanings

# The meaning of every `sensorsynth serve` option (ServeConfig field). A default shown in words (e.g. "the
# instrument's") is given as (default_words, meaning) and is only allowed where the model's default is None.
SERVE_MEANING: dict[str, str | tuple[str, str]] = {
    "models": "folder of `.instrument` files (or one file); positional on the command line",
    "instrument": ("the first", "instrument every voice starts on"),
    "host": "address the OSC and web ports listen on",
    "osc_port": "UDP port for OSC (0 = any free port)",
    "ws_port": "TCP port of the pages, the JSON API and the WebSocket (0 = any free port)",
    "output": "`auto`: the sound card if one opens, else the null output; `sound`: a card or fail; "
              "`null`: no card, paced by the clock",
    "sound_device": ("the default card", "sound card: index or part of its name (`python -m sounddevice` lists "
                     "them)"),
    "device": "renderer: `cpu` (numba), `cuda[:N]` (the numba-cuda renderer on a GPU; the `cuda` extra), "
              "`torch:cpu` (the batched torch renderer on the CPU, a plain reference; the `fit` extra)",
    "hostapi": ("any (JACK first)", "PortAudio host API to use, e.g. `JACK` or `ALSA`"),
    "sample_rate": ("the instrument's", "output rate; instruments are recomputed for any rate (a card that "
                    "cannot play the instrument's rate is used at its own)"),
    "block_size": "samples per rendered block (and per sound-card callback)",
    "max_voices": "voices: OSC plays voice 0 (or `/sensorsynth/voice/<n>/...`), each browser gets its own",
    "realtime_priority": "SCHED_FIFO priority the audio thread asks for (needs root, CAP_SYS_NICE or "
                         "`LimitRTPRIO`; 0 = normal)",
    "prefill_blocks": "null output: how late (in blocks) a block may be before it counts as an under-run; "
                      "`python` audio path: blocks rendered ahead",
    "audio_path": "`compiled`: the card's callback (or the null output's compiled clock loop) renders each "
                  "block itself, never waiting on Python; `python`: a Python render thread fills a ring (for "
                  "comparison; `cuda` and `torch:cpu` always use it)",
    "output_channels": "output channels (speakers) the card opens, 1..64; more than 1 needs the compiled audio "
                       "path on `--device cpu` ([Speakers](speakers.md))",
    "placement": "where each voice sounds: `fixed` (one channel per voice), `line` or `ring` (equal-power pan "
                 "between neighbouring speakers); clients move their voice with `pan` ([Speakers](speakers.md))",
    "voice_channels": ("voice mod channels", "`fixed`: each voice's channel, in voice order (repeatable)"),
    "voice_positions": ("spread evenly", "`line`/`ring`: each voice's position 0..1, in voice order (repeatable)"),
    "level_cap_dbfs": "the level no input, instrument or scene can exceed: a peak limiter after the mix and the "
                      "master gains, −60..0 dBFS (its gain reduction is in the status's `limiter`)",
    "record": ("none", "write what plays to this WAV (16-bit, every output channel), flushed every 0.5 s"),
    "latency": "`asap`: an event plays at the next block; `fixed`: a constant `fixed_delay_ms` after it "
               "arrived",
    "fixed_delay_ms": "the delay of `fixed` latency, and of OSC time-tagged events",
    "timetag_window_s": "OSC time tags further than this from the server's clock play \"now\"",
    "osc_allowed_senders": ("any", "IP addresses OSC is accepted from (everything else is counted as "
                            "`osc:forbidden_sender`)"),
    "ws_token": ("generated beyond localhost", "token the WebSocket requires (`?token=` or `Authorization: "
                 "Bearer`); a generated one is printed inside the page address at start"),
    "allowed_origins": ("none", "other web origins allowed to open the WebSocket; pages served by this "
                        "server always are"),
    "allowed_hosts": ("none", "other names this server is reached by (its hostname, TLS names, `localhost` and "
                      "any IP address always work); a `Host` outside them is refused before the upgrade (DNS "
                      "rebinding); `*` turns the check off (see [Server security](server-security.md))"),
    "admin_token": ("none", "token that may replace an existing instrument (`upload` with `replace: true`); "
                    "without one nobody may replace over the WebSocket"),
    "max_clients_per_ip": "WebSocket connections at once from one address (loopback is exempt)",
    "max_voices_per_ip": "voices held at once by one address's clients (loopback is exempt)",
    "hello_timeout_s": "a connection that neither says `hello` nor plays within this is closed (counted)",
    "osc_controls_all_voices": "let OSC play voices a WebSocket client holds (default: only OSC's voice 0 and "
                               "free ones)",
    "osc_messages_per_s": "OSC datagrams per second from one sender (bursts of twice that); beyond, they are "
                          "dropped and counted (loopback is exempt)",
    "learned_dir": ("the models folder", "folder the mappings taught on the pages (`<instrument>.learned.json`) are "
                    "saved in; read first at start, then the models folder (the systemd unit uses its own state "
                    "folder: its models folder is read-only)"),
    "local_uncapped": "this machine's own clients and OSC senders (loopback) skip the per-address caps, the "
                      "OSC sender rate and the status-reply bound; `false` holds them to these like any address "
                      "(behind a reverse proxy on this box)",
    "osc_status_peers": ("this machine", "IP addresses that get the full `/sensorsynth/status` reply; others get "
                         "at most 4 times the size of their request"),
    "reload_interval_s": "how often the models folder is checked for new or changed files",
    "ws_max_message_bytes": "larger text frames get an `error` `too_large` (frames over 1 MiB close the "
                            "connection)",
    "ws_messages_per_s": "per-client message rate (bursts of twice that); beyond it messages are refused "
                         "(`rate_limited`) and counted",
    "max_clients": "WebSocket connections at once",
    "idle_release_s": "a browser silent this long gives its voice back",
    "stall_exit_s": "exit with code 3 when no block was rendered for this long (so a supervisor restarts it)",
    "seed": ("random", "seed of the attack noise (reproducible renders)"),
    "noise": "`instrument`: every attack replays the noise its instrument was fitted with (instruments from "
             "before format 3 draw fresh noise); `fresh`: a new draw per event, for variety",
    "ready_file": ("none", "once listening, write `{\"osc_port\", \"ws_port\", \"pid\", \"sample_rate\", "
                   "\"preset_ports\", \"token\"}` here as JSON, readable by this user only (written to a "
                   "temporary name, then renamed)"),
    "presets": "OSC apps understood as they send: `touchdesigner`, `wekinator`, `zigsim`, `sensors2osc`, "
               "`gyrosc`, `touchosc`, or a `.toml` file (see [Mappings and presets](mappings.md#osc-input-and-presets))",
    "tls": "`self-signed`: serve https/wss with a certificate made once for this machine's LAN addresses and "
           "hostname (phones give motion sensors to https pages only; see [Phones](sensors.md#https-and-the-certificate))",
    "tls_cert": ("none", "serve https/wss with this PEM certificate (chain) instead"),
    "tls_key": ("inside `tls_cert`", "its PEM private key"),
    "tls_dir": ("`~/.local/share/sensorsynth/tls`", "where `self-signed` keeps its files (`$XDG_DATA_HOME` is "
                "honoured)"),
    "trainer_keys": ("none", "CURVE keys for a trainer that has keys: a client bundle from `sensorsynth trainer keys "
                     "add-client NAME` (default: `$SENSORSYNTH_TRAINER_KEYS`; see [Trainer security](trainer-security.md))"),
    "trainer": ("none", "the trainer's endpoint, e.g. `tcp://127.0.0.1:5555`: the pages' Record buttons send "
                "clips there as fitting jobs; none: recording is off and the pages say how to turn it on"),
    "record_fit": "fit settings for recorded clips (any `FitSettings` field, as `fit --set`) and a `spec` "
                  "table (`ModelSpec` fields, as `--spec`); checked at start. Command line: "
                  "`--record-fit steps=300 --record-fit spec.n_resonances=8` (repeatable; replaces the file's "
                  "table)",
    "osc_feedback": ("none", "`host:port` targets (repeatable; at most 16) that get every applied event as OSC, "
                     "time-tagged with when it sounds, the output level and instrument changes (see "
                     "[Events out](events.md)); only these addresses are ever sent to"),
    "osc_feedback_level_hz": "how often `/sensorsynth/level` goes to the `osc_feedback` targets (0 = never)",
    "osc_feedback_allow_broadcast": "let `osc_feedback` name broadcast and multicast addresses (refused "
                                    "otherwise: every machine of the network hears them)",
    "midi_in": ("none", "play from MIDI: the MIDI port whose name contains this, or else a new virtual input "
                "of this name to connect a controller to (see [MIDI](midi.md))"),
    "midi_out": ("none", "a virtual MIDI output of this name playing every applied control event as a note, "
                 "for a DAW to record"),
    "midi_preset": "how MIDI maps to commands: `keys25` (a 25-key controller), `grid` (pads), or a `.toml` file",
    "midi_api": "`auto`: ALSA's sequencer where `/dev/snd/seq` exists, else JACK MIDI; `jack`, `alsa`: only that",
    "midi_note_ms": "how long MIDI out's notes last (note-on, then note-off this much later)",
    "scenes": ("none", "a scenes file (TOML): named scenes (instruments and gains per voice, active presets and "
               "learned mappings, output gains, a lower level cap) and a schedule (opening hours, a quiet period, "
               "a scene per day) that switches them; checked against the models folder at start (see "
               "[Scenes](scenes.md))"),
    "log_level": "`debug`, `info`, `warning`, `error` (logs go to stderr)",
}

# Command-line flags whose name is not the field's name with dashes.
SERVE_FLAG_ALIASES = {
    "osc_allowed_senders": ["--osc-allow"],
    "allowed_origins": ["--allow-origin"],
    "presets": ["--preset"],
    "osc_controls_all_voices": ["--osc-controls-all-voices", "--no-osc-controls-all-voices"],
    "local_uncapped": ["--local-uncapped", "--no-local-uncapped"],
    "osc_feedback_allow_broadcast": ["--no-osc-feedback-allow-broadcast"],
}
# Flags of `serve --help` that are not config fields.
SERVE_FLAGS_NOT_FIELDS = {"--help", "--config"}

# What the server answers to each WebSocket client message (type → answer).
WS_ANSWER: dict[str, str] = {
    "hello": "`welcome` (see below); takes a voice for this client",
    "control": "nothing (an `error` when refused, e.g. `wrong_count`, `bad_index`, `no_voice`)",
    "deform": "nothing (an `error` when refused)",
    "gain": "nothing (an `error` when refused)",
    "pan": "nothing: the client's voice moves there among the speakers ([Speakers](speakers.md)); an `error` "
           "when refused",
    "instrument": "`instrument_changed` (`voice`, `instrument`), or `error` `unknown_instrument`",
    "status": "`status`: the [status](#status-fields)",
    "audio": "starts or stops binary [audio frames](#binary-audio-frames) to this client",
    "monitor": "starts or stops `meter` and `events` pushes",
    "sensor": "nothing: the frame goes through the client's [mapping](mappings.md) on its voice (an `error` "
              "for `wrong_count`, `bad_source`, `too_many_sources`)",
    "learn": "`learn`: the session's state (and `trained`, `errors` after `train`)",
    "calibrate": "`calibration`: `source`, `calibration` (`mode`, `learning`, `lo`, `hi`)",
    "upload": "then ONE binary frame, the clip; answered by [`fit`](#recording-a-clip-upload-and-fit) messages",
    "cancel": "`fit` (state `cancelled`), or `error` `unknown_job` / `finished`",
    "watch": "the fit's `fit` messages again; when it lands, this client's voice switches to it",
    "scene": "with `name` and the admin token in `admin`: the installation switches to that scene, and every "
             "client gets `scene`; without `name`: `scene` (which plays, the next change); `error` `forbidden`, "
             "`unknown_scene` or `unsupported` (no `--scenes`) ([Scenes](scenes.md#switching-by-hand))",
}

# What each trainer message means (type → meaning), per direction.
TRAINER_MEANING: dict[str, dict[str, str]] = {
    "to-queue": {
        "hello": "→ `welcome`",
        "submit": "+ audio frame → `job` (state `queued`, or `failed` with the reason); a resent `submit` "
                  "with the same `job_id` returns the same job",
        "watch": "→ `job` now, then a `job` push on every change (progress included) for 10 s; resend to keep "
                 "watching",
        "list": "→ `jobs`: `jobs` (oldest first) and the connected `workers`",
        "cancel": "→ `job` (state `cancelled`), or `error` `finished`",
        "fetch": "→ `result` + the instrument's bytes, or `error` `not_done`",
        "ready": "(worker) on connecting and reconnecting",
        "heartbeat": "(worker) every `heartbeat_s`",
        "progress": "(worker) at most 4 a second",
        "done": "(worker) + instrument frame; resent until acknowledged",
        "failed": "(worker) resent until acknowledged",
        "bye": "(worker) leaving: that run goes back to the queue at once, not counted as a loss",
    },
    "to-worker": {
        "heartbeat": "every `heartbeat_s`",
        "assign": "+ audio frame: fit this",
        "cancel_job": "stop that run (cancelled, or no longer expected)",
        "ack": "its `done` / `failed` is stored",
        "reconnect": "the queue does not know this worker (it restarted): send `ready`",
        "error": "a message it sent was refused",
    },
    "to-client": {
        "welcome": "answers `hello`",
        "job": "answers `submit`, `watch`, `cancel`; pushed while watching",
        "jobs": "answers `list`",
        "result": "+ the instrument file's bytes; answers `fetch`",
        "error": "a refusal: `code`, `message`, `ref` (the type answered), `req`",
    },
    "event": {
        "job": "topic `job`: on every change and progress report",
        "instrument": "topic `instrument`: an instrument was written to the models folder",
    },
}

SUBCOMMANDS = ["fit", "render", "info", "serve", "doctor", "scenes", "trainer", "worker", "submit", "jobs", "cancel",
               "fetch"]

# --------------------------------------------------------------------------------------------- rendering


def _type_name(ann: Any) -> str:
    """A reader's name for a type annotation: number, integer, string, list of ..., "a" | "b", Model."""
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict or ann is dict:
        return "object"
    if isinstance(ann, type):
        if issubclass(ann, BaseModel):
            return ann.__name__
        if issubclass(ann, enum.Enum):
            return " \\| ".join(f"`{m.value}`" for m in ann)
        if issubclass(ann, Path):
            return "path"
        return {bool: "bool", int: "integer", float: "number", str: "string"}.get(ann, ann.__name__)
    return str(ann).replace("typing.", "")


def _bounds(field: Any) -> str:
    """The field's constraints as words: ≥ 0, ≤ 65535, at most 64 characters, pattern ..."""
    out: list[str] = []
    metas = list(field.metadata)
    ann = field.annotation
    for arg in typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,):
        if typing.get_origin(arg) is typing.Annotated:
            metas.extend(m for a in typing.get_args(arg)[1:] for m in getattr(a, "metadata", [a]))
    for m in metas:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                out.append(f"{sym} {getattr(m, attr)}")
        if getattr(m, "min_length", None) is not None:
            out.append(f"length ≥ {m.min_length}")
        if getattr(m, "max_length", None) is not None:
            out.append(f"length ≤ {m.max_length}")
        if getattr(m, "pattern", None):
            out.append(f"`{m.pattern}`")
        if getattr(m, "allow_inf_nan", None) is False:
            out.append("finite")
    seen: list[str] = []
    for item in out:
        if item not in seen:
            seen.append(item)
    return ", ".join(seen)


def _default(field: Any) -> tuple[bool, Any]:
    """(required, default value)."""
    if field.default is not PydanticUndefined:
        return False, field.default
    if field.default_factory is not None:
        return False, field.default_factory()
    return True, None


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, (list, dict)) and not value:
        return "none" if isinstance(value, list) else "`{}`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in value.items()) + "}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|") if "\\|" not in text else text.replace("\n", " ")


def _fields(model: type[BaseModel], skip: tuple[str, ...] = ("type", "v")) -> str:
    """One cell: every field as `name` type (default …, bounds): description."""
    parts = []
    for name, f in model.model_fields.items():
        if name in skip:
            continue
        required, default = _default(f)
        extra = [] if required else [f"default {_show(default)}"]
        if b := _bounds(f):
            extra.append(b)
        text = f"`{name}` {_type_name(f.annotation)}"
        if extra:
            text += f" ({'; '.join(extra)})"
        if f.description:
            text += f": {f.description}"
        parts.append(text)
    return "<br>".join(parts) if parts else "—"


def _union_members(union: Any) -> list[type[BaseModel]]:
    ann = union
    if typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return [m for m in typing.get_args(ann) if isinstance(m, type) and issubclass(m, BaseModel)]


def _type_of(model: type[BaseModel]) -> str:
    return typing.get_args(model.model_fields["type"].annotation)[0]


def _check_keys(what: str, documented: dict[str, Any], actual: list[str]) -> None:
    missing = [k for k in actual if k not in documented]
    extra = [k for k in documented if k not in actual]
    if missing or extra:
        raise SystemExit(f"docs/gen_reference.py: {what}: no meaning written for {missing}; meanings for "
                         f"what is not there: {extra}. Edit the table in docs/gen_reference.py.")


def _help(args: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "110", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "sensorsynth", *args], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"sensorsynth {' '.join(args)} failed: {out.stderr.strip()[-500:]}")
    return out.stdout


# ------------------------------------------------------------------------------------------------ blocks


def block_serve_options() -> str:
    from sensorsynth.server.config import ServeConfig

    fields = ServeConfig.model_fields
    _check_keys("serve options (ServeConfig)", SERVE_MEANING, list(fields))
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", _help(["serve", "--help"])))
    used: set[str] = set()
    rows = ["| option (TOML key) | command line | default | accepts | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, f in fields.items():
        meaning = SERVE_MEANING[name]
        required, default = _default(f)
        if isinstance(meaning, tuple):
            if default is not None and default != []:
                raise SystemExit(f"docs/gen_reference.py: {name}: default in words, but the model's is {default!r}")
            shown, meaning = meaning
        else:
            shown = _show(default)
        candidates = [f"--{name.replace('_', '-')}", *SERVE_FLAG_ALIASES.get(name, [])]
        present = [c for c in candidates if c in flags]  # a yes/no option has both --x and --no-x
        if name == "models":
            cli = "`MODELS` (positional)"
        elif present:
            used.update(present)
            repeat = " (repeatable)" if typing.get_origin(f.annotation) in (list,) or "list" in _type_name(f.annotation) else ""
            cli = " / ".join(f"`{c}`" for c in present) + repeat
        else:
            cli = "TOML only"
        accepts = _type_name(f.annotation)
        if b := _bounds(f):
            accepts += f", {b}"
        rows.append(f"| `{name}` | {cli} | {shown} | {_cell(accepts)} | {_cell(meaning)} |")
    unknown = sorted(flags - used - SERVE_FLAGS_NOT_FIELDS - {"--record-fit"})
    if unknown:
        raise SystemExit(f"docs/gen_reference.py: `serve` has flags that map to no config field: {unknown}; add "
                         "them to SERVE_FLAG_ALIASES or SERVE_FLAGS_NOT_FIELDS")
    return "\n".join(rows)


def block_ws_client() -> str:
    from sensorsynth.protocol import ws

    members = _union_members(ws.ClientMessage)
    _check_keys("WebSocket client messages (ClientMessage)", WS_ANSWER, [_type_of(m) for m in members])
    rows = ["| `type` | model | fields | answer |", "| --- | --- | --- | --- |"]
    for m in members:
        t = _type_of(m)
        rows.append(f"| `{t}` | `{m.__name__}` | {_cell(_fields(m))} | {_cell(WS_ANSWER[t])} |")
    return "\n".join(rows)


def _trainer_table(direction: str, union_name: str) -> str:
    from sensorsynth.protocol import trainer

    members = _union_members(getattr(trainer, union_name))
    meanings = TRAINER_MEANING[direction]
    _check_keys(f"trainer messages ({union_name})", meanings, [_type_of(m) for m in members])
    frames = getattr(trainer, "FILE_FRAMES", {})
    rows = ["| `type` | model | fields | file frames | meaning |", "| --- | --- | --- | ---: | --- |"]
    for m in members:
        t = _type_of(m)
        rows.append(f"| `{t}` | `{m.__name__}` | {_cell(_fields(m))} | {frames.get(t, 0)} | {_cell(meanings[t])} |")
    return "\n".join(rows)


def block_trainer_records() -> str:
    from sensorsynth.protocol import trainer

    progress = next(a for a in typing.get_args(trainer.JobInfo.model_fields["progress"].annotation)
                    if isinstance(a, type) and issubclass(a, BaseModel))
    out = []
    for model in (trainer.JobInfo, trainer.WorkerStatus, trainer.WorkerInfo, trainer.JobKey, trainer.Limits, progress):
        out.append(f"**{model.__name__}**" + (f": {model.__doc__.strip().splitlines()[0]}" if model.__doc__ else ""))
        out.append("")
        out.append("| field | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        for name, f in model.model_fields.items():
            required, default = _default(f)
            accepts = _type_name(f.annotation) + (f", {b}" if (b := _bounds(f)) else "")
            out.append(f"| `{name}` | {_cell(accepts)} | {'required' if required else _show(default)} | "
                       f"{_cell(f.description or '')} |")
        out.append("")
    return "\n".join(out).rstrip()


def _model_table(model: type[BaseModel]) -> str:
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, f in model.model_fields.items():
        required, default = _default(f)
        accepts = _type_name(f.annotation) + (f", {b}" if (b := _bounds(f)) else "")
        rows.append(f"| `{name}` | {_cell(accepts)} | {'required' if required else _show(default)} | "
                    f"{_cell(f.description or '')} |")
    return "\n".join(rows)


def block_fit_settings() -> str:
    from sensorsynth.instrument.pipeline import FitSettings  # re-exported there wherever it is defined

    return _model_table(FitSettings)


def block_model_spec() -> str:
    from sensorsynth.instrument.spec import ModelSpec

    return _model_table(ModelSpec)


def block_commands() -> str:
    top = _help(["--help"])
    braces = re.search(r"\{([a-z,]+)\}", top)
    names = braces.group(1).split(",") if braces else re.findall(r"(?m)^ {2,}([a-z]+) {2,}\S", top)
    if sorted(names) != sorted(SUBCOMMANDS):
        raise SystemExit(f"docs/gen_reference.py: `sensorsynth --help` lists {names}, the docs know {SUBCOMMANDS}")
    out = []
    for name in SUBCOMMANDS:
        text = _help([name, "--help"]).rstrip()
        out += [f"### `sensorsynth {name}`", "", "```text", text, "```", ""]
    return "\n".join(out).rstrip()


BLOCKS = {
    ("serving.md", "serve-options"): block_serve_options,
    ("protocol.md", "ws-client"): block_ws_client,
    ("protocol.md", "trainer-to-queue"): lambda: _trainer_table("to-queue", "ToQueue"),
    ("protocol.md", "trainer-to-client"): lambda: _trainer_table("to-client", "ToClient"),
    ("protocol.md", "trainer-to-worker"): lambda: _trainer_table("to-worker", "ToWorker"),
    ("protocol.md", "trainer-events"): lambda: _trainer_table("event", "Event"),
    ("protocol.md", "trainer-records"): block_trainer_records,
    ("fitting.md", "fit-settings"): block_fit_settings,
    ("fitting.md", "model-spec"): block_model_spec,
    ("commands.md", "commands"): block_commands,
}


def render(page_text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- gen:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /gen:{re.escape(name)} -->)", re.S)
    if not pattern.search(page_text):
        raise SystemExit(f"docs/gen_reference.py: no block <!-- gen:{name} --> ... <!-- /gen:{name} -->")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), page_text, count=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a page differs")
    args = ap.parse_args(argv)
    pages: dict[str, str] = {}
    for (page, name), make in BLOCKS.items():
        text = pages.get(page) or (DOCS / page).read_text(encoding="utf-8")
        pages[page] = render(text, name, make())
    stale = [p for p, text in pages.items() if (DOCS / p).read_text(encoding="utf-8") != text]
    if args.check:
        for p in stale:
            print(f"docs/{p}: its generated tables differ from the code; run `python docs/gen_reference.py`")
        return 1 if stale else 0
    for p in stale:
        (DOCS / p).write_text(pages[p], encoding="utf-8")
        print(f"docs/{p}: updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
