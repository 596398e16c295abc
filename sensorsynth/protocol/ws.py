"""The WebSocket wire (``/ws``): JSON text messages, validated with pydantic, version ``v = 1``.

Every message is one JSON object with a ``type``. A client that sends something wrong gets an ``error``
message back and the connection stays up. Binary frames from the server carry audio (see ``AudioHeader``);
binary frames from a client are refused (``error`` ``binary_not_accepted``), except the one that follows an
``upload`` message.

Client → server:

    hello       {"type": "hello", "client": "my page", "monitor": false, "audio": false}
                → welcome. ``monitor`` asks for meter/event pushes, ``audio`` for the PCM stream.
    control     {"type": "control", "values": [K floats ≥ 0]}         fire attacks on the client's voice
    control     {"type": "control", "index": i, "value": v}            fire one dimension
    deform      {"type": "deform", "logits": [E floats]}
    gain        {"type": "gain", "gain": 0.8}
    pan         {"type": "pan", "position": 0.25}                      where the client's voice sounds (0..1)
    instrument  {"type": "instrument", "name": "guitar"}               → instrument_changed
    status      {"type": "status"}                                     → status
    audio       {"type": "audio", "enabled": true}                     start/stop the PCM stream to this client
    monitor     {"type": "monitor", "enabled": true}                   start/stop meter and event pushes
    sensor      {"type": "sensor", "source": "phone", "kind": "motion", "values": [9 floats], "t": 12.5}
                raw sensor frames (kinds motion, hand, raw: see SensorMsg); the mappings turn them into events
    learn       {"type": "learn", "action": "record", "enabled": true, "source": "phone"}
                learned mappings: record | replay | train | run | clear | status (see LearnMsg) → learn
    calibrate   {"type": "calibrate", "source": "phone"}                 learn a source's range again
                {"type": "calibrate", "source": "td", "lo": [N], "hi": [N]}  or set it → calibration
    upload      {"type": "upload", "name": "take", "size": 176444, "sha256": "...", "replace": false,
                 "admin": "..."}   (admin: the admin token, needed only to replace an existing instrument)
                then ONE binary frame: the clip (a WAV; pages send 16-bit mono 22050 Hz) → fit messages
                (the server submits it to its trainer, follows the fit, and switches this client's voice
                to the new instrument when it lands)
    cancel      {"type": "cancel", "job": "<32 hex>"}                cancel this client's fit (job optional)
    watch       {"type": "watch", "job": "<32 hex>"}                 follow a fit again after a reconnect
                (the full id from its ``fit`` messages; a fit another connection holds is refused)
    scene       {"type": "scene", "name": "night", "admin": "..."}   switch the installation's scene (admin
                token needed); without name: which scene plays → scene

Server → client:

    welcome     {"type": "welcome", "v": 1, "voice": 3, "sample_rate": 22050, "block_size": 64,
                 "instrument": "guitar", "instruments": [InstrumentSummary...], "limits": {...},
                 "record": {"available": true, "reason": null, "max_bytes": 1000000, "max_seconds": 30,
                            "sample_rate": 22050, "trainer": true}}
                 (record: whether this server turns uploads into instruments; if not, why and how to make it)
    status      {"type": "status", ...the server's status dict}
    instrument_changed {"type": "instrument_changed", "voice": 3, "instrument": "guitar"}
    instruments {"type": "instruments", "instruments": [InstrumentSummary...]}  (pushed after a reload)
    meter       {"type": "meter", "rms": 0.1, "peak": 0.5, "time": 12.3}       (monitors, ~20/s)
    events      {"type": "events", "events": [{"voice": 0, "kind": "control", "values": [...], "source": "osc"}]}
    error       {"type": "error", "code": "bad_schema", "message": "...", "ref": "control"}
    scene       {"type": "scene", "name": "day", "next": "night", "next_at": "2026-12-03T17:00:00Z", ...}
                answers scene; pushed to every client when the scene changes (see server/scenes.py)
    learn       {"type": "learn", "recording": false, "running": true, "replaying": false, "training": false,
                 "frames": {"phone": 312}, "targets": 41, "instrument": "guitar",
                 "models": {"phone": {"model": "ridge", "pairs": 312, "events": 41, "score": 0.62}},
                 "trained": {...}, "errors": {...}}   (after train: what was fitted, and what was not and why)
    calibration {"type": "calibration", "source": "td", "calibration": {"mode": "set", "lo": [...], "hi": [...]}}
    fit         {"type": "fit", "job": "9f…", "name": "take", "state": "running", "stage": "full", "step": 120,
                 "steps": 900, "eta_s": 41.5, "loss": 0.31, "elapsed_s": 12.0, "reason": null,
                 "instrument": null}   states: uploaded, queued, running, installing, then one of done
                 (with "instrument": the name now playing on this client's voice), failed or cancelled
                 (with "reason")

Binary audio frames (server → client after ``audio`` enabled): a 16-byte header
``<u4 magic "SSA1", u4 sample_rate, u8 first_sample>`` then float32 little-endian mono samples; magic "SSA2":
interleaved stereo frames (left, right) instead, the fold-down of a server with several output channels.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

VERSION = 1
AUDIO_MAGIC = b"SSA1"
AUDIO_MAGIC_STEREO = b"SSA2"
AUDIO_HEADER = struct.Struct("<4sIQ")

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hello(_Msg):
    type: Literal["hello"]
    v: int = VERSION
    client: str = Field("", max_length=100)
    monitor: bool = False
    audio: bool = False


class ControlMsg(_Msg):
    type: Literal["control"]
    values: list[FiniteFloat] | None = Field(None, max_length=1024)
    index: int | None = Field(None, ge=0, le=1023)
    value: FiniteFloat | None = None

    @field_validator("values")
    @classmethod
    def _non_negative(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(x < 0 for x in v):
            raise ValueError("control values must be ≥ 0")
        return v

    def model_post_init(self, __context: Any) -> None:
        if (self.values is None) == (self.index is None):
            raise ValueError("control needs either values, or index and value")
        if self.index is not None and (self.value is None or self.value < 0):
            raise ValueError("control with an index needs a value ≥ 0")


class DeformMsg(_Msg):
    type: Literal["deform"]
    logits: list[FiniteFloat] = Field(max_length=1024)


class GainMsg(_Msg):
    type: Literal["gain"]
    gain: FiniteFloat = Field(ge=0, le=16)


class PanMsg(_Msg):
    type: Literal["pan"]
    position: FiniteFloat = Field(ge=0, le=1)


class InstrumentMsg(_Msg):
    type: Literal["instrument"]
    name: str = Field(min_length=1, max_length=128)


class StatusMsg(_Msg):
    type: Literal["status"]


class AudioMsg(_Msg):
    type: Literal["audio"]
    enabled: bool = True


class MonitorMsg(_Msg):
    type: Literal["monitor"]
    enabled: bool = True


class SensorMsg(_Msg):
    """A raw sensor frame. ``kind`` says how to read ``values``:

    - ``motion`` (a phone): 9 values, acceleration x, y, z (m/s², without gravity when the device gives it),
      rotation rate alpha, beta, gamma (deg/s), orientation alpha, beta, gamma (deg);
    - ``hand`` (MediaPipe HandLandmarker): 84 values, the 21 world landmarks x, y, z (metres, wrist-centred)
      then the 21 image-space z values (relative depth); ``hand`` is "Left" or "Right";
    - ``raw``: any N values (an OSC app, a custom sensor).

    ``source`` names the stream (one mapping state per client and source); ``t`` is the sender's clock in
    seconds (used for rates and smoothing, never for scheduling)."""

    type: Literal["sensor"]
    source: str = Field(min_length=1, max_length=64)
    kind: Literal["motion", "hand", "raw"] = "raw"
    values: list[FiniteFloat] = Field(max_length=4096)
    hand: Literal["Left", "Right"] | None = None
    t: FiniteFloat | None = None


class LearnMsg(_Msg):
    """Learned mappings (Wekinator-style) of this client's sources, on its voice's instrument:

    - ``record`` (``enabled`` true/false): keep every sensor frame (of ``source``, or all) with the controls
      this client plays meanwhile (``control`` messages, page cells) as targets;
    - ``replay``: record while the voice replays the instrument's own performance (one pass, then stops);
    - ``train`` (``model`` ridge or mlp): fit and save ``<instrument>.learned.json``; the answer comes when
      training ends, with ``trained`` and ``errors``;
    - ``run`` (``enabled``): play sources with a model through it instead of the instrument's basis;
    - ``clear``: forget the recorded pairs; ``status``: just answer.

    Every action answers with a ``learn`` message (the session's state)."""

    type: Literal["learn"]
    action: Literal["record", "replay", "train", "run", "clear", "status"]
    enabled: bool = True
    source: str | None = Field(None, min_length=1, max_length=64)
    model: Literal["ridge", "mlp"] = "ridge"


class CalibrateMsg(_Msg):
    """Calibrate one of this client's sources: without ``lo``/``hi`` learn its range again over the next
    seconds; with them (one number per axis, or one for all) fix it. Answered by ``calibration``."""

    type: Literal["calibrate"]
    source: str = Field(min_length=1, max_length=64)
    hand: Literal["Left", "Right"] | None = None
    lo: list[FiniteFloat] | None = Field(None, max_length=4096)
    hi: list[FiniteFloat] | None = Field(None, max_length=4096)

    def model_post_init(self, __context: Any) -> None:
        if (self.lo is None) != (self.hi is None) or (self.lo is not None and len(self.lo) != len(self.hi)):
            raise ValueError("calibrate needs both lo and hi, of the same length, or neither")


# A fit's full id (32 hex digits): only its uploader was told it, so it is what proves the fit is yours after a
# reconnect. Prefixes are not accepted (a 1-2 digit prefix is a guess away).
JobRef = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class UploadMsg(_Msg):
    """A recorded clip to turn into an instrument. The clip itself follows as the very next frame, a binary
    one, of exactly ``size`` bytes (and the SHA-256 ``sha256``, when given). ``name`` is what the user typed:
    the server makes a valid, unused instrument name of it (``take``, ``take-2``, ...) unless ``replace``.
    Replacing an instrument that exists needs the server's admin token in ``admin``."""

    type: Literal["upload"]
    name: str = Field("take", max_length=100)
    size: int = Field(ge=1, le=1 << 20)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    replace: bool = False
    admin: str | None = Field(None, max_length=256)


class CancelMsg(_Msg):
    """Cancel this client's fit (``job``: its full id; default the client's running fit)."""

    type: Literal["cancel"]
    job: JobRef | None = None


class WatchMsg(_Msg):
    """Follow a fit this server started (after a reconnect): its ``fit`` messages come to this client, and
    when it lands this client's voice switches to it."""

    type: Literal["watch"]
    job: JobRef


class SceneMsg(_Msg):
    """Switch the installation to the scene ``name`` (needs the server's admin token in ``admin``: a scene
    changes the whole room, not the client's own voice); without ``name``, only ask which scene plays."""

    type: Literal["scene"]
    name: str | None = Field(None, min_length=1, max_length=64)
    admin: str | None = Field(None, max_length=256)


ClientMessage = Annotated[
    Union[Hello, ControlMsg, DeformMsg, GainMsg, PanMsg, InstrumentMsg, StatusMsg, AudioMsg, MonitorMsg, SensorMsg,
          LearnMsg, CalibrateMsg, UploadMsg, CancelMsg, WatchMsg, SceneMsg],
    Field(discriminator="type"),
]
_client = TypeAdapter(ClientMessage)


class WireError(ValueError):
    """A client message that cannot be used: ``code`` names the kind (``bad_json``, ``bad_schema``, ...)."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ref = ref


def parse_client(text: str | bytes) -> Any:
    """One client text frame → a validated message object, or WireError."""
    if isinstance(text, bytes):
        raise WireError("binary_not_accepted", "this server accepts JSON text frames only")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise WireError("bad_json", "not valid JSON") from None
    if not isinstance(obj, dict):
        raise WireError("bad_schema", "a message must be a JSON object with a 'type'")
    kind = obj.get("type")
    ref = kind if isinstance(kind, str) and len(kind) <= 32 else None
    try:
        return _client.validate_python(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise WireError("bad_schema", f"{where}: {first.get('msg', 'invalid')}"[:300], ref) from None


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null (a browser's JSON.parse refuses them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def encode(kind: str, **fields: Any) -> str:
    """A server message as JSON text."""
    return json.dumps(_clean({"type": kind, **fields}), separators=(",", ":"))


def error(code: str, message: str, ref: str | None = None) -> str:
    return encode("error", code=code, message=message, ref=ref)


def audio_frame(sample_rate: int, first_sample: int, samples_f32_bytes: bytes, channels: int = 1) -> bytes:
    """One binary audio frame: mono samples, or (``channels=2``) interleaved stereo frames."""
    magic = AUDIO_MAGIC_STEREO if channels == 2 else AUDIO_MAGIC
    return AUDIO_HEADER.pack(magic, sample_rate, first_sample) + samples_f32_bytes
