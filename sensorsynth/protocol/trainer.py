"""The trainer's ZeroMQ wire, version ``v = 1``: pydantic messages as JSON frames, files as binary frames.

A ZeroMQ message is a list of frames. The first frame is always one JSON object with ``v`` (the protocol
version) and ``type``; a message that carries a file (the audio of a job, an instrument) has it as the
second frame, raw bytes, never encoded and never unpickled: audio is read by soundfile, instruments by
``instrument_file.loads`` (safetensors plus a validated manifest). Anything that does not parse, has the
wrong version, an unknown type, a bad field or the wrong number of frames is refused with an ``error``
message; the connection stays up.

Clients (``submit``, ``jobs``, ``cancel``) and workers talk to the same ROUTER socket of the queue (one
port). Client → queue (each may carry ``req``, echoed in the answer, so a retried request is matched):

    hello     {}                                                      → welcome {version, limits}
    submit    {job_id, name, clip_name, settings, spec, replace} + audio frame
              → job (state queued; or failed at once: wrong settings, too large, name taken)
    watch     {job_id}  (the full id) → job now, then job pushes on every change (progress included) for
              watch_s seconds;
              a client that keeps watching sends watch again (it doubles as its heartbeat)
    list      {limit, states}                                         → jobs {jobs, workers}
    cancel    {job_id}  (the full id)                                 → job (state cancelled) or error
    fetch     {job_id}  (the full id)                                 → result + instrument frame, or error

Who may do what (see docs/trainer-security.md): with CURVE keys, only worker keys speak the worker messages,
and clients see, watch, cancel and fetch only the jobs they submitted (an admin key: every job). Without
keys (loopback only) a client is named by the routing id it connects with (``u<uid>.<random>``).

Worker ↔ queue (the ZeroMQ Guide's Paranoid Pirate: a DEALER per worker, heartbeats both ways):

    worker → queue: ready {worker, job}, heartbeat {job}, progress {job_id, attempt, progress},
                    done {job_id, attempt, final_loss, wall_s} + instrument frame,
                    failed {job_id, attempt, kind, reason}, bye {job}
    queue → worker: heartbeat {}, assign {job_id, attempt, name, clip_name, settings, spec} + audio frame,
                    cancel_job {job_id, attempt}, ack {job_id, attempt}, reconnect {reason}

A job's (job_id, attempt) names one run of it: a result is accepted once, from the attempt the queue is
waiting for, and acknowledged every time it is sent (so a worker can resend until it hears ``ack``).

Announcements (the queue's PUB socket): two frames, a topic and a JSON object:
``job`` + ``{"type": "job", "job": JobInfo}`` on every change, ``instrument`` + ``{"type": "instrument",
"name", "path", "job_id"}`` when an instrument lands in the models folder.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..instrument.settings import Progress

VERSION = 1
MAX_HEADER_BYTES = 64 * 1024  # the JSON frame; files travel in their own frames

# the names the live service accepts (sensorsynth/server/library.py): the file is models/NAME.instrument
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
# why a job failed: the submitter's input, the fit itself, or its workers kept dying
FailureKind = Literal["bad_input", "internal", "lost"]

JobId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
WorkerId = Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]{1,64}$")]
Req = Annotated[str, Field(max_length=64)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Text = Annotated[str, Field(max_length=4096)]


def valid_name(name: str) -> bool:
    return bool(re.match(NAME_PATTERN, name)) and ".." not in name


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: int = VERSION


class JobKey(BaseModel):
    """One run of one job."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    job_id: JobId
    attempt: int = Field(ge=1)


# ------------------------------------------------------------------------------------- client → queue


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    req: Req | None = None


class Submit(_Msg):
    type: Literal["submit"] = "submit"
    req: Req | None = None
    job_id: JobId = Field(description="chosen by the client, so a resent submit cannot make a second job")
    name: str = Field(max_length=128, description="the instrument's name: models/NAME.instrument")
    clip_name: str = Field("clip", max_length=255, description="the audio file's name, for messages and provenance")
    settings: dict[str, Any] = Field(default_factory=dict, description="FitSettings fields")
    spec: dict[str, Any] = Field(default_factory=dict, description="ModelSpec fields over the default")
    replace: bool = Field(False, description="overwrite models/NAME.instrument if it exists")


class Watch(_Msg):
    type: Literal["watch"] = "watch"
    req: Req | None = None
    job_id: JobId = Field(description="the full id: a prefix would let a peer guess its way to other jobs")


class ListJobs(_Msg):
    type: Literal["list"] = "list"
    req: Req | None = None
    limit: int = Field(50, ge=1, le=10000)
    states: list[JobState] | None = None


class CancelRequest(_Msg):
    type: Literal["cancel"] = "cancel"
    req: Req | None = None
    job_id: JobId


class Fetch(_Msg):
    type: Literal["fetch"] = "fetch"
    req: Req | None = None
    job_id: JobId


# ------------------------------------------------------------------------------------- queue → client


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_audio_bytes: int
    max_message_bytes: int = Field(description="larger frames close the connection without an answer")
    max_result_bytes: int
    max_steps: int | None = Field(None, description="the most optimiser steps a job may ask for")
    max_active_jobs: int | None = Field(None, description="queued and running jobs one client may have at once")


class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    req: Req | None = None
    version: str
    limits: Limits


class JobInfo(BaseModel):
    """What anyone may know about a job."""

    model_config = ConfigDict(extra="forbid")
    id: JobId
    name: str
    clip_name: str
    state: JobState
    attempt: int = Field(0, description="how many times it was given to a worker")
    losses: int = Field(0, description="how many of those workers died or vanished with it")
    created: float = Field(description="seconds since the epoch")
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    progress: Progress | None = None
    reason: str | None = Field(None, description="why it failed or was cancelled")
    failure: FailureKind | None = None
    final_loss: float | None = None
    result_path: str | None = Field(None, description="where the instrument was written")
    audio_bytes: int = 0
    settings: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)


class WorkerStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    host: str
    machine: str
    pid: int | None = None
    device: str
    threads: int
    cores: int
    job: JobKey | None = None
    last_seen_s: float = Field(description="seconds since its last message")


class JobMsg(_Msg):
    type: Literal["job"] = "job"
    req: Req | None = None
    job: JobInfo


class JobsMsg(_Msg):
    type: Literal["jobs"] = "jobs"
    req: Req | None = None
    jobs: list[JobInfo]
    workers: list[WorkerStatus]


class ResultMsg(_Msg):
    """Followed by one frame: the bytes of the .instrument file."""

    type: Literal["result"] = "result"
    req: Req | None = None
    job_id: JobId
    name: str


ErrorCode = Literal[
    "bad_json", "bad_schema", "version", "unknown_type", "frames", "too_large", "unknown_job", "ambiguous_job",
    "not_done", "finished", "internal", "forbidden", "limit",
]


class ErrorMsg(_Msg):
    type: Literal["error"] = "error"
    req: Req | None = None
    code: ErrorCode
    message: Text
    ref: str | None = Field(None, description="the type of the message this answers")


class InstrumentEvent(_Msg):
    type: Literal["instrument"] = "instrument"
    name: str
    path: str
    job_id: JobId


# ------------------------------------------------------------------------------------- worker ↔ queue


class WorkerInfo(BaseModel):
    """Who a worker is; ``machine`` groups workers that share cores (hostname by default)."""

    model_config = ConfigDict(extra="forbid")
    id: WorkerId
    host: str = Field(max_length=255)
    machine: str = Field(max_length=255)
    pid: int | None = None
    device: str = Field("cpu", max_length=32)
    threads: int = Field(ge=1, le=1024)
    cores: int = Field(ge=1, le=65536)
    version: str = Field("", max_length=64)


class Ready(_Msg):
    type: Literal["ready"] = "ready"
    worker: WorkerInfo
    job: JobKey | None = Field(None, description="the run this worker holds (fitting, or a result not yet acked)")


class Heartbeat(_Msg):
    type: Literal["heartbeat"] = "heartbeat"
    job: JobKey | None = None


class ProgressMsg(_Msg):
    type: Literal["progress"] = "progress"
    job_id: JobId
    attempt: int = Field(ge=1)
    progress: Progress


class Done(_Msg):
    """Followed by one frame: the bytes of the .instrument file."""

    type: Literal["done"] = "done"
    job_id: JobId
    attempt: int = Field(ge=1)
    final_loss: float | None = None
    wall_s: float = Field(0.0, ge=0)


class Failed(_Msg):
    type: Literal["failed"] = "failed"
    job_id: JobId
    attempt: int = Field(ge=1)
    kind: Literal["bad_input", "internal", "cancelled"]
    reason: Text


class Bye(_Msg):
    """A worker leaving cleanly: the run it holds goes back to the queue at once, not counted as lost."""

    type: Literal["bye"] = "bye"
    job: JobKey | None = None


class Assign(_Msg):
    """Followed by one frame: the audio file."""

    type: Literal["assign"] = "assign"
    job_id: JobId
    attempt: int = Field(ge=1)
    name: str
    clip_name: str
    settings: dict[str, Any]
    spec: dict[str, Any]


class CancelJob(_Msg):
    type: Literal["cancel_job"] = "cancel_job"
    job_id: JobId
    attempt: int = Field(ge=1)


class Ack(_Msg):
    type: Literal["ack"] = "ack"
    job_id: JobId
    attempt: int = Field(ge=1)


class Reconnect(_Msg):
    type: Literal["reconnect"] = "reconnect"
    reason: Text = ""


# ------------------------------------------------------------------------------------------- coding

ToQueue = Annotated[
    Union[Hello, Submit, Watch, ListJobs, CancelRequest, Fetch, Ready, Heartbeat, ProgressMsg, Done, Failed, Bye],
    Field(discriminator="type"),
]
ToWorker = Annotated[Union[Heartbeat, Assign, CancelJob, Ack, Reconnect, ErrorMsg], Field(discriminator="type")]
ToClient = Annotated[Union[Welcome, JobMsg, JobsMsg, ResultMsg, ErrorMsg], Field(discriminator="type")]
Event = Annotated[Union[JobMsg, InstrumentEvent], Field(discriminator="type")]

TO_QUEUE: TypeAdapter[Any] = TypeAdapter(ToQueue)
TO_WORKER: TypeAdapter[Any] = TypeAdapter(ToWorker)
TO_CLIENT: TypeAdapter[Any] = TypeAdapter(ToClient)
EVENT: TypeAdapter[Any] = TypeAdapter(Event)

# how many binary frames follow the JSON frame of each type
FILE_FRAMES = {"submit": 1, "done": 1, "assign": 1, "result": 1}
MAX_FRAMES = 1 + max(FILE_FRAMES.values())  # a message with more frames is refused before its JSON is read


class WireError(ValueError):
    """A message that cannot be accepted; ``code`` is the ``error`` message's code."""

    def __init__(self, code: str, message: str, ref: str | None = None, req: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.ref, self.req = code, message, ref, req

    def reply(self) -> list[bytes]:
        return encode(ErrorMsg(code=self.code, message=self.message[:4096], ref=self.ref, req=self.req))  # type: ignore[arg-type]


def encode(message: BaseModel, *files: bytes) -> list[bytes]:
    """The frames of ``message``: its JSON, then each file as raw bytes."""
    return [message.model_dump_json(exclude_none=False).encode(), *files]


def decode(frames: list[bytes], adapter: TypeAdapter[Any]) -> tuple[Any, list[bytes]]:
    """(message, files) from the frames of one ZeroMQ message; WireError says what is wrong with it."""
    if not frames:
        raise WireError("frames", "empty message")
    if len(frames) > MAX_FRAMES:
        raise WireError("frames", f"{len(frames)} frames; no message has more than {MAX_FRAMES}")
    header = frames[0]
    if len(header) > MAX_HEADER_BYTES:
        raise WireError("too_large", f"the JSON frame is {len(header)} bytes, at most {MAX_HEADER_BYTES}")
    try:
        raw = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError("bad_json", f"the first frame is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise WireError("bad_json", "the first frame must be a JSON object")
    kind = raw.get("type")
    req = raw.get("req") if isinstance(raw.get("req"), str) and len(raw["req"]) <= 64 else None
    ref = kind if isinstance(kind, str) and len(kind) <= 32 else None
    version = raw.get("v")
    if version != VERSION:
        raise WireError("version", f"protocol version {version!r}, this sensorsynth speaks {VERSION}", ref, req)
    try:
        message = adapter.validate_python(raw)
    except ValidationError as exc:
        if any(e["type"] in ("union_tag_invalid", "union_tag_not_found") for e in exc.errors()):
            raise WireError("unknown_type", f"unknown message type {kind!r}", ref, req) from None
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'message'}: {e['msg']}" for e in exc.errors())
        raise WireError("bad_schema", f"{kind}: {problems}", ref, req) from None
    files = frames[1:]
    wanted = FILE_FRAMES.get(message.type, 0)
    if len(files) != wanted:
        raise WireError("frames", f"{kind} takes {wanted} file frame(s), got {len(files)}", ref, req)
    return message, files
