"""``sensorsynth serve`` options: one pydantic model, filled from a TOML file and then from the command line.

Every option can live in the file (same names as the long options, with ``_`` for ``-``; see
``deploy/`` for a commented example). A bad value is reported as one line naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..protocol.validation import first_error, read_toml


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field."""


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: Path = Field(Path("models"), description="folder of .instrument files (or one file)")
    instrument: str | None = Field(None, description="instrument every voice starts on (default: the first)")
    learned_dir: Path | None = Field(None, description="folder the mappings taught on the pages are saved in "
                                     "(default: the models folder); for a models folder this server only reads")
    host: str = Field("0.0.0.0", description="address the OSC and web ports listen on")
    osc_port: int = Field(9000, ge=0, le=65535, description="UDP port for OSC (0 = any free port)")
    ws_port: int = Field(8765, ge=0, le=65535, description="TCP port of the page and the WebSocket (0 = any)")
    output: Literal["auto", "sound", "null"] = Field("auto", description="auto: the sound card if there is one")
    sound_device: str | None = Field(None, description="sound card: index or part of its name")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|torch:cpu)$",
                        description="renderer: cpu (numba), cuda[:N] (numba-cuda on a GPU), torch:cpu (tests)")
    hostapi: str | None = Field(None, description="PortAudio host API to prefer, e.g. JACK or ALSA")
    sample_rate: int | None = Field(None, ge=8000, le=192000, description="default: the instrument's own rate")
    block_size: int = Field(64, ge=16, le=4096, description="samples per rendered block")
    max_voices: int = Field(8, ge=1, le=256, description="voices (OSC plays voice 0, each browser its own)")
    realtime_priority: int = Field(10, ge=0, le=99, description="SCHED_FIFO priority of the render thread (0 = normal)")
    prefill_blocks: int = Field(3, ge=1, le=64, description="blocks rendered ahead of the sound card")
    audio_path: Literal["compiled", "python"] = Field(
        "compiled", description="compiled: the card's callback renders each block itself, never waiting on the "
        "GIL; python: a Python render thread fills a ring the callback copies from (cuda/torch:cpu always use it)")
    output_channels: int = Field(1, ge=1, le=64, description="output channels (speakers) the card opens; voices "
                                 "are placed among them by `placement` (more than 1 needs the compiled audio path "
                                 "on the cpu renderer)")
    placement: Literal["fixed", "line", "ring"] = Field(
        "fixed", description="where each voice sounds: fixed: one channel per voice (voice_channels); line, ring: "
        "an equal-power pan between neighbouring speakers of a line or a ring (voice_positions); clients move "
        "their voice with a pan message either way")
    voice_channels: list[int] | None = Field(None, max_length=256, description="placement fixed: the channel of "
                                             "each voice, in voice order (default: voice number mod channels)")
    voice_positions: list[float] | None = Field(None, max_length=256,
                                                description="placement line/ring: each voice's position, 0..1 along "
                                                "the line or round the ring (default: spread evenly)")
    level_cap_dbfs: float = Field(-1.0, ge=-60.0, le=0.0, description="the level no input, instrument or scene can "
                                  "exceed: a limiter after the mix and master gains (dBFS)")
    record: Path | None = Field(None, description="write what plays to this WAV file (every output channel)")
    latency: Literal["asap", "fixed"] = Field("asap", description="asap: next block; fixed: a constant delay")
    fixed_delay_ms: float = Field(10.0, ge=0, le=1000, description="the delay of fixed latency and time tags")
    timetag_window_s: float = Field(1.0, ge=0, le=3600, description="OSC time tags further than this are 'now'")
    osc_allowed_senders: list[str] | None = Field(None, description="IP addresses OSC is accepted from")
    ws_token: str | None = Field(None, max_length=256,
                                 description="token the WebSocket requires (default: one generated at each start); "
                                 "at least 16 characters, never the example's placeholder")
    allowed_origins: list[str] | None = Field(None, description="other web origins allowed to open the WebSocket")
    allowed_hosts: list[str] | None = Field(
        None, description="other names this server is reached by, beyond its own hostname and TLS names (any IP "
        "address always works): e.g. a DNS name; '*' turns the Host check off (not recommended: it is what stops "
        "DNS rebinding)")
    admin_token: str | None = Field(None, max_length=256,
                                    description="token that may replace an existing instrument (upload with "
                                    "replace: true); default none: nobody may replace over the WebSocket")
    max_clients_per_ip: int = Field(8, ge=1, le=10000, description="WebSocket connections at once from one address")
    max_voices_per_ip: int = Field(2, ge=1, le=256, description="voices held at once by one address's clients")
    hello_timeout_s: float = Field(10.0, gt=0, le=3600,
                                   description="a connection that neither says hello nor plays within this is closed")
    osc_controls_all_voices: bool = Field(
        False, description="let OSC play voices a WebSocket client holds (default: only OSC's voice 0 and free ones)")
    osc_messages_per_s: float = Field(5000.0, gt=0, le=1e6,
                                      description="OSC datagrams per second from one sender (bursts of twice that); "
                                      "beyond, they are dropped and counted")
    local_uncapped: bool = Field(
        True, description="this machine's own clients and OSC senders (loopback) are exempt from the per-address "
        "caps, the OSC sender rate and the status-reply bound; off: they are held to them like any address "
        "(behind a reverse proxy on this box, where every client looks local)")
    osc_status_peers: list[str] | None = Field(
        None, description="IP addresses that get the full /sensorsynth/status reply (this machine always does); "
        "others get at most 4 times the size of their request")
    reload_interval_s: float = Field(0.5, gt=0, le=60, description="how often the models folder is checked")
    ws_max_message_bytes: int = Field(64 * 1024, ge=256, le=1 << 20)
    ws_messages_per_s: float = Field(240.0, gt=0, le=100000)
    max_clients: int = Field(64, ge=1, le=10000)
    idle_release_s: float = Field(60.0, gt=0, le=86400, description="an idle browser gives its voice back")
    stall_exit_s: float = Field(5.0, gt=0, le=3600, description="exit (for a restart) when audio stalls this long")
    seed: int | None = Field(None, description="seed of the attack noise (reproducible renders)")
    noise: Literal["instrument", "fresh"] = Field(
        "instrument", description="instrument: every attack replays the noise its instrument was fitted with "
        "(the clip's own attacks; instruments from before format 3 draw fresh noise); fresh: a new draw per "
        "event, for variety")
    ready_file: Path | None = Field(None, description="write the bound ports here as JSON once listening")
    presets: list[str] = Field(default_factory=list,
                               description="OSC presets to accept: bundled names (touchdesigner, wekinator, zigsim, "
                                           "sensors2osc, gyrosc, touchosc) or .toml files")
    tls: Literal["off", "self-signed"] = Field(
        "off", description="self-signed: serve https/wss with a certificate made (once) for this machine's "
        "LAN addresses and hostname (phones give motion sensors to https pages only)")
    tls_cert: Path | None = Field(None, description="serve https/wss with this PEM certificate (chain)")
    tls_key: Path | None = Field(None, description="its PEM private key (default: inside the certificate file)")
    tls_dir: Path | None = Field(None, description="where --tls self-signed keeps its certificate "
                                 "(default ~/.local/share/sensorsynth/tls)")
    trainer: str | None = Field(None, pattern=r"^(tcp|ipc|inproc)://\S+$",
                                description="the trainer's endpoint (e.g. tcp://127.0.0.1:5555): the pages' Record "
                                "buttons send clips there as fitting jobs (default: none, recording off)")
    trainer_keys: Path | None = Field(None, description="CURVE keys for a trainer that has keys: a bundle from "
                                      "`sensorsynth trainer keys add-client NAME` (default: $SENSORSYNTH_TRAINER_KEYS)")
    record_fit: dict[str, Any] = Field(default_factory=lambda: {"quality": "fast"},
                                       description="fit settings for recorded clips (FitSettings fields, and a "
                                       "'spec' table of ModelSpec fields); default: quality fast, so a clip "
                                       "recorded on a phone plays about a minute later")
    osc_feedback: list[str] | None = Field(
        None, description="host:port to send applied events, the output level and instrument changes to as OSC "
        "(TouchDesigner's OSC In; see docs/events.md); only these addresses are ever sent to")
    osc_feedback_level_hz: float = Field(30.0, ge=0, le=1000,
                                         description="how often the output level goes to osc_feedback (0 = never)")
    osc_feedback_allow_broadcast: bool = Field(
        False, description="let osc_feedback send to broadcast and multicast addresses (every machine of the "
        "network hears them)")
    midi_in: str | None = Field(None, description="play from MIDI: the port of that name (part of it), or a new "
                                "virtual input of that name to connect a controller to (docs/midi.md)")
    midi_out: str | None = Field(None, description="send every applied control event as a note on a virtual MIDI "
                                 "output of this name (e.g. sensorsynth), for a DAW to record")
    midi_preset: str = Field("keys25", description="how MIDI maps to commands: a bundled name (keys25, grid) "
                             "or a .toml file")
    midi_api: Literal["auto", "jack", "alsa"] = Field(
        "auto", description="MIDI system: auto takes ALSA's sequencer where there is one, else JACK")
    midi_note_ms: float = Field(100.0, gt=0, le=10000, description="length of the notes MIDI out sends")
    scenes: Path | None = Field(None, description="a scenes file (TOML): named scenes (instruments, gains, "
                                "mappings, output gains, level cap) and a schedule that switches them")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("osc_feedback")
    @classmethod
    def _feedback_targets(cls, value: list[str] | None) -> list[str] | None:
        from .feedback import MAX_TARGETS, parse_target

        if value is not None and len(value) > MAX_TARGETS:
            raise ValueError(f"at most {MAX_TARGETS} targets")
        for v in value or []:
            parse_target(v)  # a TargetError (a ValueError) names the bad entry
        return value

    @model_validator(mode="after")
    def _feedback_addresses(self) -> "ServeConfig":
        import ipaddress

        from .feedback import check_address, parse_target

        for v in self.osc_feedback or []:
            host = parse_target(v).host
            try:
                ipaddress.ip_address(host)
            except ValueError:
                continue  # a name: checked once resolved, at start
            check_address(host, self.osc_feedback_allow_broadcast)
        return self

    @field_validator("voice_channels")
    @classmethod
    def _channels(cls, value: list[int] | None, info) -> list[int] | None:
        n = info.data.get("output_channels", 1)
        for v in value or []:
            if not 0 <= v < n:
                raise ValueError(f"channel {v} is not one of the {n} output channels (0..{n - 1})")
        return value

    @field_validator("voice_positions")
    @classmethod
    def _positions(cls, value: list[float] | None) -> list[float] | None:
        import math

        for v in value or []:
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"positions must be in [0, 1], got {v}")
        return value

    @model_validator(mode="after")
    def _channels_need_the_compiled_path(self) -> "ServeConfig":
        if self.output_channels > 1 and (self.audio_path != "compiled" or self.device != "cpu"):
            raise ValueError("output_channels > 1 needs audio_path compiled on device cpu (the python audio path "
                             "and the cuda/torch renderers play one channel)")
        return self

    @field_validator("ws_token", "admin_token")
    @classmethod
    def _secret(cls, value: str | None, info) -> str | None:
        from .access import check_token

        return None if value is None else check_token(value, info.field_name)

    @field_validator("osc_status_peers")
    @classmethod
    def _addresses(cls, value: list[str] | None) -> list[str] | None:
        import ipaddress

        for v in value or []:
            ipaddress.ip_address(v)  # a ValueError names the bad entry
        return value

    @field_validator("record_fit")
    @classmethod
    def _fit_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        from ..instrument.settings import make_settings, make_spec  # no torch: validation only

        settings = {k: v for k, v in value.items() if k != "spec"}
        spec = value.get("spec") or {}
        if not isinstance(spec, dict):
            raise ValueError("'spec' must be a table of model sizes, e.g. spec = {n_resonances = 8}")
        make_settings(settings)
        make_spec(spec)
        return value


def _first_error(exc: ValidationError, where: str) -> ConfigError:
    return ConfigError(where + first_error(exc))


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ServeConfig:
    """The file's values, then the non-None overrides (the command line) on top."""
    data: dict[str, Any] = {}
    where = ""
    if path is not None:
        path = Path(path)
        where = f"{path}: "
        data = read_toml(path, "config", ConfigError)
        if "serve" in data and isinstance(data["serve"], dict):
            data = {**{k: v for k, v in data.items() if k != "serve"}, **data["serve"]}
        if path.parent != Path("."):
            for key in ("models", "record", "ready_file", "tls_cert", "tls_key", "tls_dir",
                        "trainer_keys", "learned_dir", "scenes"):  # relative to the file
                if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                    data[key] = str(path.parent / data[key])
            if isinstance(data.get("presets"), list):  # preset files too (bundled names stay names)
                data["presets"] = [str(path.parent / v) if isinstance(v, str) and v.endswith(".toml")
                                   and not Path(v).is_absolute() else v for v in data["presets"]]
            mp = data.get("midi_preset")
            if isinstance(mp, str) and mp.endswith(".toml") and not Path(mp).is_absolute():
                data["midi_preset"] = str(path.parent / mp)
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, where) from None
