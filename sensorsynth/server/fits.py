"""Record on a phone, play it a minute later: clips uploaded over the WebSocket become fitting jobs on the
trainer (``sensorsynth trainer``), and the instrument that comes back plays on the uploader's voice.

The flow for one client, all on the event loop except the talking to the trainer:

    welcome {..., record: {available, reason, max_bytes, ...}}         what the page's Record button shows
    upload {name, size, sha256?}  then one binary frame (the clip)   checked here: size, checksum, readable
        → fit {state: uploaded}                                        audio, length, not silent
    a worker thread: TrainerClient.submit, then watch                  (never on the event loop)
        → fit {state: queued | running, stage, step, steps, eta_s, loss, ...}   as the trainer reports
    the job is done: the instrument must be in THIS server's models folder. If the trainer wrote it there
    (a shared folder) nothing is copied; otherwise the result's bytes are fetched and written atomically,
    never over an existing instrument unless the upload asked to replace it
        → fit {state: installing}
    the library's hot reload loads it (polled, as any new file); the client's voice switches to it
        → instrument_changed {voice, instrument}, then fit {state: done, instrument, timings}
    or at any point → fit {state: failed | cancelled, reason, failure}

``cancel`` stops the client's fit (the trainer cancels a queued job at once, a running one within a
second); ``watch`` re-attaches a fit to a client that reconnected (a phone whose Wi-Fi dropped). A client
that leaves does not stop its fit: the instrument still lands in the models folder for everyone.

Ownership (``docs/server-security.md``): a fit belongs to the connection that uploaded it. ``cancel`` and
``watch`` name a fit by its full 32-digit id (never a prefix), which only its uploader was told; while the
uploader is connected no other connection may cancel or watch it; once it left, whoever holds the full id
(the same page, reconnected) may take it over. ``upload`` with ``replace: true`` over an instrument that
exists needs the server's ``admin_token`` (the message's ``admin`` field): a player may add instruments,
never overwrite everyone's.

Uploads are judged from their header before anything is decoded (rate ≤ ``UPLOAD_MAX_RATE``, channels ≤
``UPLOAD_MAX_CHANNELS``, frames × channels ≤ ``UPLOAD_MAX_SAMPLES``), decoding reads at most that many frames
whatever the header says, and at most ``MAX_DECODES`` clips are decoded at once.

Without ``--trainer`` the edge answers every upload with ``no_trainer`` and says how to start one.

(Past 500 lines on purpose: one flow, upload → checks → trainer job → install → the uploader's voice, with
its ownership rules and its worker-thread hand-offs, reads best in one place; its message shapes live in
``protocol/ws.py``.)
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from websockets.exceptions import ConnectionClosed

from ..protocol import ws as wire
from ..protocol.commands import Rejected
from ..instrument_file import free_name, write_instrument  # noqa: F401 - re-exported for the tests
from .library import SUFFIX, LibraryError, check_name

if TYPE_CHECKING:
    from .access import AccessPolicy
    from .engine import Engine
    from .rejections import Rejections
    from .web import Client

log = logging.getLogger("sensorsynth.fits")

UPLOAD_MAX_BYTES = 1_000_000  # under the WebSocket's 1 MiB frame limit: 22 s of 16-bit mono at 22050 Hz
UPLOAD_MAX_SECONDS = 30.0
UPLOAD_MIN_SECONDS = 0.1
PAGE_SAMPLE_RATE = 22050  # what the pages record at (the instruments' own rate)
UPLOAD_MAX_RATE = 96_000  # Hz: a header claiming more is refused before decoding
UPLOAD_MAX_CHANNELS = 2
UPLOAD_MAX_SAMPLES = 48_000 * 2 * int(UPLOAD_MAX_SECONDS)  # frames × channels: 30 s of 48 kHz stereo, 11 MiB decoded
MAX_DECODES = 2  # clips decoded at once (the rest wait their turn on the event loop)
MAX_FITS = 8  # fits this server follows at once (the trainer queues them; this bounds the threads)
KEEP_FINISHED = 64  # finished fits remembered for `watch` after a reconnect
SUBMIT_TIMEOUT_S = 3.0  # per try (Lazy Pirate: 2 tries) before "no trainer answered"
WATCH_WINDOW_S = 0.5  # the follow thread looks at cancel and stop requests this often
SILENT_NOTE_S = 5.0  # tell the page when the trainer has been silent this long
ACTIVE = ("uploaded", "queued", "running", "installing")


class UploadError(ValueError):
    """An upload that cannot become a job; ``code`` is the ``error`` message's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ClipInfo:
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def check_clip(data: bytes, max_bytes: int = UPLOAD_MAX_BYTES, max_seconds: float = UPLOAD_MAX_SECONDS) -> ClipInfo:
    """What the uploaded bytes are, or UploadError: too large, not a readable audio file, too short or too
    long, not finite, silent. The trainer checks again; this answers the page at once."""
    import soundfile as sf

    if len(data) > max_bytes:
        raise UploadError("too_large", f"the clip is {len(data)} bytes; at most {max_bytes} are accepted")
    if not data:
        raise UploadError("bad_upload", "the clip is empty (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:  # opening reads the header only: nothing is decoded yet
            rate, channels, fmt = int(f.samplerate), int(f.channels), str(f.format)
            limit = check_header(rate, channels, int(f.frames), max_seconds)
            # read at most what the header may claim: a header that lies about its length costs no more
            audio = f.read(frames=limit + 1, dtype="float32", always_2d=True)
            if audio.shape[0] > limit:
                raise UploadError("too_large", f"the clip holds more than {limit} frames "
                                  f"({max_seconds:g} s at {rate} Hz); record fewer seconds")
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile's errors vary by version; all mean "not audio"
        raise UploadError("bad_upload", f"not a readable audio file ({str(exc).strip() or type(exc).__name__})") from None
    frames = int(audio.shape[0])
    if frames < UPLOAD_MIN_SECONDS * rate:
        raise UploadError("bad_upload", f"the clip is {frames / rate:.2f} s long; at least {UPLOAD_MIN_SECONDS:g} s "
                          "are needed")
    if not np.isfinite(audio).all():
        raise UploadError("bad_upload", "the clip holds NaN or infinite samples")
    if float(np.abs(audio).max()) < 1e-5:
        raise UploadError("bad_upload", "the clip is silent: check the microphone (is it muted, or another app's?)")
    return ClipInfo(rate, channels, frames, fmt)


def check_header(rate: int, channels: int, frames: int, max_seconds: float = UPLOAD_MAX_SECONDS) -> int:
    """The most frames a clip with this header may decode to, or UploadError naming the figure that is too
    large: the sample rate, the channels, the length, or frames × channels (what decoding would allocate)."""
    if rate <= 0 or rate > UPLOAD_MAX_RATE:
        raise UploadError("too_large", f"the clip's sample rate is {rate} Hz; at most {UPLOAD_MAX_RATE} Hz is "
                          "accepted")
    if channels <= 0 or channels > UPLOAD_MAX_CHANNELS:
        raise UploadError("too_large", f"the clip has {channels} channels; at most {UPLOAD_MAX_CHANNELS} are accepted")
    if frames / rate > max_seconds:
        raise UploadError("bad_upload", f"the clip is {frames / rate:.1f} s long; at most {max_seconds:g} s are "
                          "accepted")
    limit = min(int(max_seconds * rate), UPLOAD_MAX_SAMPLES // channels)
    if frames > limit:
        raise UploadError("too_large", f"the clip is {frames} frames × {channels} channels; at most "
                          f"{UPLOAD_MAX_SAMPLES} samples are accepted")
    return limit


def clean_name(text: str, default: str = "take") -> str:
    """An instrument name from what a user typed: runs of other characters become '-', at most 64 long."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text or "").strip(".-_")
    name = re.sub(r"\.{2,}", ".", name)[:64].rstrip(".-_")
    if not name or not name[0].isalnum():
        name = f"{default}-{name}".rstrip("-") if name else default
    return check_name(name)


@dataclass
class Pending:
    """An ``upload`` waiting for its binary frame."""

    msg: Any
    at: float = field(default_factory=time.monotonic)


@dataclass
class Fit:
    key: str  # this server's id of the fit: the first job id it used
    name: str
    client: "Client | None"
    replace: bool
    clip: ClipInfo
    size: int
    job_id: str = ""  # the trainer's job (a new one if the first name was taken in the trainer's folder)
    state: str = "uploaded"
    instrument: str | None = None
    before_version: int | None = None  # the version of NAME loaded before (replace): wait for a newer one
    cancel_requested: bool = False
    cancel_sent: bool = False
    times: dict[str, float] = field(default_factory=dict)  # monotonic seconds of each milestone
    last: dict[str, Any] = field(default_factory=dict)  # the last fit message sent
    last_key: tuple = ()

    def __post_init__(self) -> None:
        self.job_id = self.job_id or self.key
        self.times.setdefault("uploaded", time.monotonic())


class FitEdge:
    """Uploads → trainer jobs → instruments on the uploader's voice. Owned by the event loop; each fit talks
    to the trainer from its own thread (a TrainerClient per fit: ZeroMQ sockets are not shared)."""

    def __init__(self, engine: "Engine", trainer: str | None, record_fit: dict[str, Any] | None = None,
                 rejections: "Rejections | None" = None, reload_interval_s: float = 0.5,
                 access: "AccessPolicy | None" = None) -> None:
        self.engine = engine
        self.access = access  # the admin token (the web server sets it when given this edge)
        # a client's voice for a fit that lands: the web server's allocator (per-address caps) replaces this
        self.allocate: Callable[["Client"], int | None] = lambda c: self.engine.allocate_voice(c.id)
        self.reload_interval_s = reload_interval_s
        self.library = engine.library
        self.endpoint = trainer
        # a trainer with CURVE keys: this server is one of its clients (the app sets config.trainer_keys here)
        self.trainer_keys: str | os.PathLike[str] | None = os.environ.get("SENSORSYNTH_TRAINER_KEYS") or None
        fit = dict(record_fit or {})
        self.spec: dict[str, Any] = dict(fit.pop("spec", None) or {})
        self.settings: dict[str, Any] = fit
        self.rejections = rejections
        self.pending: dict[str, Pending] = {}  # client id → its upload, waiting for the clip's frame
        self.fits: dict[str, Fit] = {}  # key → fit (active ones, and the last finished ones)
        self.stats = {"uploads": 0, "refused": 0, "submitted": 0, "done": 0, "failed": 0, "cancelled": 0}
        self._pool = ThreadPoolExecutor(max_workers=MAX_FITS + 2, thread_name_prefix="fit")
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._decodes: asyncio.Semaphore | None = None  # made on the loop, at the first upload
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reloaded: asyncio.Event | None = None  # set by library_changed(): an install stops waiting

    def library_changed(self) -> None:
        """The models folder was scanned and something loaded (the app's reload loop calls this, on the loop):
        installs waiting for their file look again now instead of polling."""
        if self._reloaded is not None:
            self._reloaded.set()

    # ------------------------------------------------------------------ what the pages are told
    def unavailable(self) -> tuple[str, str] | None:
        """(code, why) when recording cannot work on this server, else None."""
        if self.endpoint is None:
            return ("no_trainer", "recording needs a trainer, and this server has none: start one with "
                    f"`sensorsynth trainer --models {self.library.folder}` and start this server with "
                    "--trainer tcp://127.0.0.1:5555 (or `trainer = ...` in its config)")
        if self.library.only is not None:
            return ("unsupported", f"this server plays one file ({self.library.only}), so it cannot load new "
                    "instruments: start it on a models folder")
        if not getattr(self.engine.renderer, "supports_instrument_changes", True):
            return ("unsupported", f"the {self.engine.settings.device} renderer plays the instruments it started "
                    "with; recording needs the cpu renderer")
        return None

    def info(self) -> dict[str, Any]:
        """The ``record`` field of ``welcome``: whether a page's Record button can work here, and if not why."""
        why = self.unavailable()
        return {"available": why is None, "reason": why[1] if why else None, "max_bytes": UPLOAD_MAX_BYTES,
                "max_seconds": UPLOAD_MAX_SECONDS, "sample_rate": PAGE_SAMPLE_RATE, "trainer": self.endpoint is not None}

    def status(self) -> dict[str, Any]:
        active = [f for f in self.fits.values() if f.state in ACTIVE]
        return {"trainer": self.endpoint, "active": len(active), **self.stats}

    # ------------------------------------------------------------------ lifecycle
    async def stop(self) -> None:
        """Stop following fits (their jobs go on in the trainer; a shared folder still gets them)."""
        self._stopping = True
        self.pending.clear()
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=2.0)
            for task in late:
                task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def forget(self, client: "Client") -> None:
        """A client left: drop its half-done upload; its fits go on, detached."""
        self.pending.pop(client.id, None)
        for fit in self.fits.values():
            if fit.client is client:
                fit.client = None

    # ------------------------------------------------------------------ messages
    async def _send(self, client: "Client | None", text: str) -> None:
        if client is None:
            return
        try:
            await client.ws.send(text)
        except ConnectionClosed:
            pass

    async def _error(self, client: "Client", code: str, message: str, ref: str | None) -> None:
        self.stats["refused"] += ref == "upload"
        if self.rejections is not None:
            self.rejections.count("ws", code, message)
        await self._send(client, wire.error(code, message, ref))

    async def intercept(self, client: "Client", message: str | bytes) -> bool:
        """Called for every message before anything else: True when it was the clip of this client's pending
        upload (consumed here). A text message instead of the clip abandons the upload (an error says so)
        and then goes its usual way."""
        pending = self.pending.pop(client.id, None)
        if pending is None:
            return False
        if not isinstance(message, bytes):
            await self._error(client, "bad_upload", "expected the clip as one binary frame right after 'upload', "
                              "got a text message: upload abandoned", "upload")
            return False
        await self._accept(client, pending, message)
        return True

    async def request(self, client: "Client", msg: Any) -> None:
        if msg.type == "upload":
            await self._upload(client, msg)
        elif msg.type == "cancel":
            await self._cancel(client, msg)
        elif msg.type == "watch":
            await self._watch_again(client, msg)

    def _active_of(self, client: "Client") -> Fit | None:
        return next((f for f in self.fits.values() if f.client is client and f.state in ACTIVE), None)

    def _find(self, ref: str) -> Fit | None:
        """The fit with this full id (its key or its trainer job id): never a prefix, which another client
        could guess in a few tries."""
        return next((f for f in self.fits.values() if ref in (f.key, f.job_id)), None)

    @staticmethod
    def _held_by_other(fit: Fit, client: "Client") -> bool:
        """Whether ``fit`` belongs to another connection that is still here (then it is not ``client``'s)."""
        return fit.client is not None and fit.client is not client

    def _may_replace(self, msg: Any) -> bool:
        return self.access is not None and self.access.is_admin(getattr(msg, "admin", None))

    async def _upload(self, client: "Client", msg: Any) -> None:
        refusal = self.unavailable()
        if refusal is not None:
            await self._error(client, refusal[0], refusal[1], "upload")
            return
        if msg.size > UPLOAD_MAX_BYTES:
            await self._error(client, "too_large", f"the clip would be {msg.size} bytes; at most {UPLOAD_MAX_BYTES} "
                              "are accepted (record fewer seconds)", "upload")
            return
        busy = self._active_of(client)
        if busy is not None:
            await self._error(client, "busy", f"this page's fit of {busy.name!r} is still {busy.state}: wait for it "
                              "or cancel it", "upload")
            return
        if sum(f.state in ACTIVE for f in self.fits.values()) >= MAX_FITS:
            await self._error(client, "busy", f"this server is already following {MAX_FITS} fits; try again soon",
                              "upload")
            return
        if msg.replace and not self._may_replace(msg):
            try:
                target = clean_name(msg.name)
            except LibraryError as exc:
                await self._error(client, "bad_upload", str(exc), "upload")
                return
            if self._taken(target):
                await self._error(client, "forbidden", f"replacing the instrument {target!r} needs the admin token "
                                  "(upload it under a new name instead)", "upload")
                return
        self.pending[client.id] = Pending(msg)

    def _taken(self, name: str) -> bool:
        return (name in self.library.entries or self.library.path_of(name).exists()
                or any(f.name == name and f.state in ACTIVE for f in self.fits.values()))

    async def _accept(self, client: "Client", pending: Pending, data: bytes) -> None:
        msg = pending.msg
        try:
            if len(data) > UPLOAD_MAX_BYTES:
                raise UploadError("too_large", f"the clip is {len(data)} bytes; at most {UPLOAD_MAX_BYTES} are accepted")
            if len(data) != msg.size:
                raise UploadError("bad_upload", f"the clip is {len(data)} bytes, but 'upload' announced {msg.size}")
            if msg.sha256 is not None and hashlib.sha256(data).hexdigest() != msg.sha256.lower():
                raise UploadError("bad_upload", "the clip's SHA-256 does not match 'upload': it was damaged on the way")
            if self._decodes is None:
                self._decodes = asyncio.Semaphore(MAX_DECODES)
            async with self._decodes:  # at most MAX_DECODES clips decoded at once; the others wait here
                clip = await asyncio.get_running_loop().run_in_executor(self._pool, check_clip, data)
            base = clean_name(msg.name)
        except (UploadError, LibraryError) as exc:
            await self._error(client, getattr(exc, "code", "bad_upload"), str(exc), "upload")
            return
        if self._stopping:
            return
        replace = bool(msg.replace) and self._may_replace(msg)  # (without admin: a new name, never over one)
        if msg.replace and not replace and self._taken(base):  # taken while the clip was on its way
            await self._error(client, "forbidden", f"replacing the instrument {base!r} needs the admin token", "upload")
            return
        name = base if replace else free_name(base, self._taken)
        key = uuid.uuid4().hex
        entry = self.library.entries.get(name)
        fit = Fit(key, name, client, replace, clip, len(data),
                  before_version=entry.version if entry is not None else None)
        self.fits[key] = fit
        self.stats["uploads"] += 1
        self._prune()
        log.info("fit %s: %s uploaded by %s (%d bytes, %.1f s at %d Hz)", key[:8], name, client.id, len(data),
                 clip.seconds, clip.sample_rate)
        await self._emit(fit, state="uploaded", seconds=round(clip.seconds, 3), bytes=len(data))
        task = asyncio.create_task(self._run(fit, data), name=f"fit-{key[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _prune(self) -> None:
        finished = [k for k, f in self.fits.items() if f.state not in ACTIVE]
        for k in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.fits[k]

    async def _cancel(self, client: "Client", msg: Any) -> None:
        fit = self._find(msg.job) if msg.job else self._active_of(client)
        if fit is None:
            await self._error(client, "unknown_job", f"no fit {msg.job} on this server" if msg.job
                              else "this page has no fit to cancel", "cancel")
            return
        if self._held_by_other(fit, client):
            await self._error(client, "forbidden", "that fit belongs to another connection", "cancel")
            return
        if fit.state == "installing":
            await self._error(client, "finished", f"the fit of {fit.name!r} is done; its instrument is being loaded",
                              "cancel")
            return
        if fit.state not in ACTIVE:
            await self._error(client, "finished", f"the fit of {fit.name!r} already ended ({fit.state})", "cancel")
            return
        fit.cancel_requested = True  # its follow thread tells the trainer within WATCH_WINDOW_S
        log.info("fit %s: cancel asked by %s", fit.key[:8], client.id)

    async def _watch_again(self, client: "Client", msg: Any) -> None:
        fit = self._find(msg.job)
        if fit is None:
            await self._error(client, "unknown_job", f"no fit {msg.job} on this server (it may have restarted)", "watch")
            return
        if self._held_by_other(fit, client):
            await self._error(client, "forbidden", "that fit belongs to another connection", "watch")
            return
        fit.client = client
        if fit.state == "done" and fit.instrument:  # it landed while the page was away: play it now
            voice = await self._switch(fit)
            await self._emit(fit, **{**fit.last, "voice": voice})
        elif fit.last:
            await self._send(client, wire.encode("fit", **fit.last))

    # ------------------------------------------------------------------ one fit
    async def _emit(self, fit: Fit, **fields: Any) -> None:
        if "state" in fields:
            fit.state = fields["state"]
        message = {"job": fit.job_id, "name": fit.name, "state": fit.state, "stage": None, "step": 0, "steps": None,
                   "eta_s": None, "loss": None, "elapsed_s": None, "reason": None, "failure": None,
                   "instrument": fit.instrument, **fields}
        fit.last = message
        await self._send(fit.client, wire.encode("fit", **message))

    async def _run(self, fit: Fit, data: bytes) -> None:
        loop = self._loop = asyncio.get_running_loop()
        updates: asyncio.Queue = asyncio.Queue()

        def post(item: Any) -> None:  # from the follow thread
            loop.call_soon_threadsafe(updates.put_nowait, item)

        async def pump() -> None:
            while (item := await updates.get()) is not None:
                try:
                    await self._on_update(fit, item)
                except Exception:  # noqa: BLE001 - a page's problem must not end the fit
                    log.exception("fit %s: update", fit.key[:8])

        pumping = asyncio.create_task(pump())
        outcome: tuple[str, str | None, str | None] | None = None
        try:
            outcome = await loop.run_in_executor(self._pool, self._follow, fit, data, post)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the page hears it
            log.exception("fit %s", fit.key[:8])
            outcome = ("failed", f"internal error: {exc}", "internal")
        finally:
            updates.put_nowait(None)
            await pumping
        if outcome is None:  # the server is stopping
            return
        state, text, failure = outcome
        if state == "installed":
            await self._install(fit, text or fit.name)
        else:
            self.stats[state] += 1
            log.info("fit %s: %s%s", fit.key[:8], state, f": {text}" if text else "")
            await self._emit(fit, state=state, reason=text, failure=failure, timings=self._timings(fit))

    async def _on_update(self, fit: Fit, item: Any) -> None:
        if isinstance(item, str):  # a note from the follow thread
            await self._emit(fit, **{**fit.last, "note": item})
            return
        info = item
        fit.job_id = info.id
        p = info.progress
        state = "installing" if info.state == "done" else info.state
        if state in ("failed", "cancelled", "installing"):
            if state == "installing" and fit.state != "installing":  # (the thread posts the done job twice)
                fit.times.setdefault("fit_done", time.monotonic())
                await self._emit(fit, state=state, final_loss=info.final_loss, worker=info.worker)
            return  # the final message comes from _run
        if state == "queued":
            fit.times.setdefault("queued", time.monotonic())
        if state == "running":
            fit.times.setdefault("running", time.monotonic())
        key = (state, info.worker, info.attempt, p.stage if p else None, p.step if p else None)
        if key == fit.last_key:
            return  # the same again (each watch window starts with the job as it is)
        fit.last_key = key
        await self._emit(fit, state=state, stage=p.stage if p else None, step=p.step if p else 0,
                         steps=p.steps if p else self.settings.get("steps"), eta_s=p.eta_s if p else None,
                         loss=p.loss if p else None, elapsed_s=p.elapsed_s if p else None, worker=info.worker,
                         attempt=info.attempt)

    def _timings(self, fit: Fit) -> dict[str, float]:
        t0 = fit.times["uploaded"]
        return {f"{k}_s": round(v - t0, 3) for k, v in fit.times.items() if k != "uploaded"}

    def _follow(self, fit: Fit, data: bytes, post: Callable[[Any], None]) -> tuple[str, str | None, str | None] | None:
        """In a worker thread: submit, follow, and bring the result into the models folder. Returns
        (state, text, failure): ("installed", name, None), ("failed", reason, kind), ("cancelled", reason,
        None); None when the server stops."""
        from ..instrument_file import InstrumentFileError, loads
        from ..trainer.client import RequestRefused, TrainerClient, TrainerUnavailable

        assert self.endpoint is not None
        try:
            client = TrainerClient(self.endpoint, timeout_s=SUBMIT_TIMEOUT_S, retries=2, keys=self.trainer_keys)
        except ValueError as exc:  # KeysError: the keys folder cannot be used
            return "failed", f"the trainer keys cannot be used: {exc}", "no_trainer"
        try:
            info = None
            for _ in range(20):  # a name taken in the trainer's own folder: the next suffix
                info = client.submit(data, fit.name, clip_name=f"{fit.name}.wav", settings=self.settings,
                                     spec=self.spec, replace=fit.replace, job_id=fit.job_id)
                taken = info.state == "failed" and "--replace" in (info.reason or "")
                if not taken or fit.replace:
                    break
                used = fit.name
                fit.name = free_name(fit.name, lambda n: n == used or self._taken_elsewhere(n, fit))
                fit.job_id = uuid.uuid4().hex
            assert info is not None
            self.stats["submitted"] += 1
            post(info)
            if info.state == "failed":
                return "failed", info.reason, info.failure
            final = self._watch(client, fit, post)
            if final is None:
                return None
            if final.state == "cancelled":
                return "cancelled", final.reason or "cancelled", None
            if final.state == "failed":
                return "failed", final.reason, final.failure
            post(final)  # done: installing
            blob = None
            try:
                _, blob = client.fetch(final.id)
                loads(blob, f"the result of job {final.id[:8]}")
            except (TrainerUnavailable, RequestRefused) as exc:
                log.warning("fit %s: cannot fetch the result (%s)", fit.key[:8], exc)
                blob = None
            except InstrumentFileError as exc:
                return "failed", f"the trainer's result is not a usable instrument: {exc}", "internal"
            shared = self._shared_result(final.result_path, blob)
            if shared is not None:
                return "installed", shared, None
            if blob is None:
                return "failed", (f"the instrument was made but could not be fetched from the trainer at "
                                  f"{self.endpoint}, and its folder is not this server's"), "install"
            target = write_instrument(self.library.folder, fit.name, blob, final.id, replace=fit.replace,
                                      taken=lambda n: self._taken_elsewhere(n, fit))
            log.info("fit %s: fetched %d bytes into %s", fit.key[:8], len(blob), target)
            return "installed", target.stem, None
        except TrainerUnavailable:
            return "failed", (f"no trainer answered at {self.endpoint}: is `sensorsynth trainer` running there? "
                              f"(start one with `sensorsynth trainer --models {self.library.folder}`)"), "no_trainer"
        except RequestRefused as exc:
            return "failed", f"the trainer refused: {exc}", "internal"
        except OSError as exc:
            return "failed", f"cannot write the instrument into {self.library.folder}: {exc.strerror or exc}", "install"
        finally:
            client.close()

    def _taken_by_other(self, name: str, fit: Fit) -> bool:
        """Taken by anything but ``fit`` itself (on the event loop, which owns the table and the library)."""
        if name in self.library.entries or self.library.path_of(name).exists():
            return True
        return any(f is not fit and f.name == name and f.state in ACTIVE for f in self.fits.values())

    def _taken_elsewhere(self, name: str, fit: Fit) -> bool:
        """``_taken_by_other`` asked from the follow thread: the question is handed to the event loop (the
        table is never read across threads); a loop that does not answer (stopping) counts as taken."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return True

        async def ask() -> bool:
            return self._taken_by_other(name, fit)

        try:
            return asyncio.run_coroutine_threadsafe(ask(), loop).result(timeout=5.0)
        except Exception:  # noqa: BLE001 - a stopped loop or a timeout: never write over something
            return True

    def _shared_result(self, result_path: str | None, blob: bytes | None) -> str | None:
        """The name of the result when the trainer wrote it into this server's folder (the same bytes as
        fetched, or, when fetching failed, any file at that path), else None."""
        if not result_path:
            return None
        path = Path(result_path)
        try:
            if path.suffix != SUFFIX or path.resolve().parent != self.library.folder or not path.is_file():
                return None
            if blob is not None and path.read_bytes() != blob:
                return None
            return check_name(path.stem)
        except (OSError, LibraryError):
            return None

    def _watch(self, client: Any, fit: Fit, post: Callable[[Any], None]) -> Any:
        """Follow the job until it ends (its last JobInfo), sending cancel when asked; None when stopping."""
        from ..trainer.client import TrainerUnavailable

        heard = time.monotonic()
        noted = False

        def on_update(info: Any) -> None:
            nonlocal heard, noted
            heard = time.monotonic()
            noted = False
            post(info)

        while not self._stopping:
            if fit.cancel_requested and not fit.cancel_sent:
                try:
                    client.cancel(fit.job_id)
                    fit.cancel_sent = True
                except TrainerUnavailable:
                    pass  # tried again next window
                except Exception as exc:  # noqa: BLE001 - "finished": it ended meanwhile; the watch says how
                    fit.cancel_sent = True
                    log.info("fit %s: cancel: %s", fit.key[:8], exc)
            try:
                return client.watch(fit.job_id, on_update, timeout_s=WATCH_WINDOW_S, every_s=WATCH_WINDOW_S)
            except TimeoutError:
                silent = time.monotonic() - heard
                if silent > SILENT_NOTE_S and not noted:
                    noted = True
                    post(f"the trainer has not answered for {silent:.0f} s; still waiting")
        return None

    async def _install(self, fit: Fit, name: str) -> None:
        """The file is in the folder: wait for the library to load it, then play it on the client's voice."""
        fit.instrument = name
        deadline = time.monotonic() + max(15.0, 20 * self.reload_interval_s)
        if self._reloaded is None:
            self._reloaded = asyncio.Event()
        while True:
            self._reloaded.clear()  # before looking: a load that lands after this look wakes the wait below
            entry = self.library.entries.get(name)
            fresh = entry is not None and (not fit.replace or fit.before_version is None
                                           or entry.version > fit.before_version)
            if fresh and name in self.engine.index_of:
                break
            if time.monotonic() > deadline or self._stopping:
                self.stats["failed"] += 1
                await self._emit(fit, state="failed", failure="install", timings=self._timings(fit),
                                 reason=f"{self.library.path_of(name)} was written but this server did not load it "
                                 "(see its log)")
                return
            # woken by library_changed() when the reload loop loaded something; the timeout is a fallback
            try:
                await asyncio.wait_for(self._reloaded.wait(), timeout=max(0.05, 2 * self.reload_interval_s))
            except asyncio.TimeoutError:
                pass
        fit.times["loaded"] = time.monotonic()
        self.stats["done"] += 1
        switched = await self._switch(fit)
        log.info("fit %s: %s is playing%s", fit.key[:8], name, f" on voice {switched}" if switched is not None else "")
        await self._emit(fit, state="done", instrument=name, voice=switched, timings=self._timings(fit))

    async def _switch(self, fit: Fit) -> int | None:
        """Play the fit's instrument on its client's voice; the voice, or None (no client, no voice)."""
        client = fit.client
        if client is None or fit.instrument is None:
            return None
        if client.voice is None:
            client.voice = self.allocate(client)
            if client.voice is None:
                await self._error(client, "no_voice", f"{fit.instrument} is ready, but all voices are taken", "upload")
                return None
        try:
            self.engine.select(client.voice, fit.instrument)
        except Rejected as exc:
            await self._error(client, exc.kind, str(exc), "upload")
            return None
        fit.times.setdefault("switched", time.monotonic())
        await self._send(client, wire.encode("instrument_changed", voice=client.voice, instrument=fit.instrument))
        return client.voice
