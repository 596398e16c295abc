"""One port for the browser: the WebSocket at ``/ws`` and the HTTP pages and JSON API beside it.

The wire format lives in :mod:`sensorsynth.protocol.ws` (pure); this module is the thin asyncio edge over the
``websockets`` library. Each connected client plays its own voice (allocated on ``hello`` or on its first
playing message, released when it leaves or stays idle). A client's bad message gets an ``error`` message and
is counted; the connection stays up. Size and rate limits are per client.

HTTP routes: ``/`` the live page, ``/static/<file>`` its assets, ``/api/instruments``,
``/api/instruments/<name>``, ``/health`` (the status as JSON).

Who may come in (``docs/server-security.md``): every request must name this server in ``Host`` (no DNS
rebinding) and carry one ``Host`` and at most one ``Origin`` (duplicates get a 400, not a traceback); the
upgrade to ``/ws`` then follows :class:`~sensorsynth.server.access.AccessPolicy` (token, Origin), at most
``max_clients`` connections in all and ``max_clients_per_ip`` from one address, and a connection must say
hello (or play) within ``hello_timeout_s``. One address's clients hold at most ``max_voices_per_ip`` voices.
This machine (loopback) is exempt from the per-address caps: its clients are the operator's own programs (a
kiosk page, the hands adapter, load tests), and the global caps still hold.
Every response carries a Content-Security-Policy (no framing, scripts only from this server), no referrer
and ``nosniff``; a 500 says "internal error" and nothing of the exception (that goes to the log, once).

(Past 500 lines on purpose: the gate (Host, token, Origin, caps), the HTTP routes and the WebSocket client loop
share one connection table and one set of limits; split, each part would reach into the others' state.)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import mimetypes
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..protocol import ws as wire
from ..protocol.commands import Command, Control, ControlChannel, Deform, Gain, Pan, Rejected, SelectInstrument
from .access import AccessPolicy, canonical_host, is_loopback
from .engine import Engine
from .events import Applied, Subscription
from .library import LibraryError, check_name, details, summary
from .health import Health
from .rejections import Rejections

if TYPE_CHECKING:
    from .fits import FitEdge
    from .mapping_edge import MappingEdge
    from .scenes import SceneEdge

log = logging.getLogger("sensorsynth.web")
WEB_DIR = Path(__file__).parent / "web"


@dataclass
class WebLimits:
    max_message_bytes: int = 64 * 1024  # larger text frames get an error; frames over 1 MiB close the link
    messages_per_s: float = 240.0  # sustained, per client
    burst: float = 480.0
    max_clients: int = 64
    idle_release_s: float = 60.0  # a client silent this long gives its voice back
    max_clients_per_ip: int = 8
    max_voices_per_ip: int = 2
    hello_timeout_s: float = 10.0  # a connection that neither says hello nor plays by then is closed
    local_uncapped: bool = True  # this machine's clients (loopback) are exempt from the per-address caps

    @classmethod
    def from_config(cls, config: Any) -> "WebLimits":
        """The limits from ``ServeConfig`` (one place, so a new option is not forgotten by the caller)."""
        return cls(max_message_bytes=config.ws_max_message_bytes, messages_per_s=config.ws_messages_per_s,
                   burst=2 * config.ws_messages_per_s, max_clients=config.max_clients,
                   idle_release_s=config.idle_release_s, max_clients_per_ip=config.max_clients_per_ip,
                   max_voices_per_ip=config.max_voices_per_ip, hello_timeout_s=config.hello_timeout_s,
                   local_uncapped=config.local_uncapped)


@dataclass
class Client:
    id: str
    ws: ServerConnection
    voice: int | None = None
    monitor: bool = False
    audio: bool = False
    tokens: float = 0.0
    refill_t: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    sensor_frames: int = 0
    dropped_audio: int = 0
    ip: str = ""  # the peer's address (canonical): per-address caps
    introduced: bool = False  # said hello, or played: not a slot held by a silent connection
    hello_timer: asyncio.TimerHandle | None = None


# The pages load their scripts, worklets and styles from /static only and talk to this server only; inline
# style attributes are used by the pages' markup (colour swatches), inline scripts never.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "Referrer-Policy": "no-referrer",  # the page address holds the token: never send it on
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    for key, value in SECURITY_HEADERS.items():
        headers[key] = value
    return Response(status.value, status.phrase, headers, body)


def _json(obj: Any, status: HTTPStatus = HTTPStatus.OK) -> Response:
    return _response(status, json.dumps(wire._clean(obj)).encode(), "application/json")


def _error(status: HTTPStatus, message: str) -> Response:
    return _json({"error": message}, status)


class WebServer:
    def __init__(self, engine: Engine, rejections: Rejections, limits: WebLimits | None = None,
                 access: AccessPolicy | None = None, mappings: "MappingEdge | None" = None) -> None:
        self.access = access or AccessPolicy()
        self.engine = engine
        self.mappings = mappings  # sensor frames → the mappings → this client's voice
        self._fits: "FitEdge | None" = None  # uploads → trainer jobs → this client's voice (set by the app)
        self.scenes: "SceneEdge | None" = None  # the installation's scenes (set by the app with --scenes)
        self.health = Health()  # /health's ok/degraded
        self.library = engine.library
        self.rejections = rejections
        self.limits = limits or WebLimits()
        self.clients: dict[str, Client] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._pusher: asyncio.Task | None = None
        self.extra_status: dict[str, Any] = {}
        self.stats = {"connections": 0, "messages": 0, "audio_frames_dropped": 0, "sensor_frames": 0,
                      "events_dropped": 0}  # fmt: skip
        # applied events for the `events` push: recorded only while a monitoring client is connected
        self.monitors = 0
        self._events: "Subscription | None" = None  # subscribed on the first monitor

    @property
    def fits(self) -> "FitEdge | None":
        return self._fits

    @fits.setter
    def fits(self, edge: "FitEdge | None") -> None:
        self._fits = edge
        if edge is not None:  # a fit that lands takes its client's voice within the same per-address caps
            edge.allocate = self._ensure_voice
            edge.access = self.access

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "0.0.0.0", port: int = 8765, ssl: Any = None) -> tuple[str, int]:
        self._server = await serve(
            self._handle, host, port, process_request=self._http, ssl=ssl,
            max_size=1 << 20, max_queue=32, compression=None, ping_interval=10, ping_timeout=20,
        )
        self._pusher = asyncio.create_task(self._push_loop(), name="web-push")
        sock = next(iter(self._server.sockets))
        addr = sock.getsockname()
        return addr[0], addr[1]

    async def stop(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            try:
                await self._pusher
            except asyncio.CancelledError:
                pass
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ HTTP
    @staticmethod
    def _peer(connection: ServerConnection) -> str:
        addr = connection.remote_address
        return canonical_host(str(addr[0])) if addr else ""

    def _per_ip(self, ip: str) -> int:
        return sum(1 for c in self.clients.values() if c.ip == ip)

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            return self._gate(connection, request)
        except Exception:  # noqa: BLE001 - a request must never hurt the service, nor show its insides
            if not self.rejections.counts["http:internal"]:
                log.exception("HTTP %s", request.path[:200])  # once: a repeated fault is counted, not logged
            self.rejections.count("http", "internal", "a request failed inside the server (see the log)")
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = request.headers
        for name in ("Host", "Origin", "Authorization"):
            if len(headers.get_all(name)) > 1:
                self.rejections.count("http", "duplicate_header", f"more than one {name} header")
                return _error(HTTPStatus.BAD_REQUEST, f"more than one {name} header")
        refused = self.access.refuse_host(headers)
        if refused is not None:
            self.rejections.count("http", "bad_host", refused)
            return _error(HTTPStatus.BAD_REQUEST if "required" in refused else HTTPStatus.FORBIDDEN, refused)
        path = request.path.split("?", 1)[0]
        if path != "/ws":
            return self._route(path)
        peer = self._peer(connection)
        refused = self.access.refuse_ws(request.path, headers, peer)
        if refused is not None:
            self.rejections.count("ws", "forbidden", refused)
            return _error(HTTPStatus.FORBIDDEN, refused)
        full = self._full(peer)
        if full is not None:
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, full)
        return None  # the WebSocket handshake goes on

    def _uncapped(self, ip: str) -> bool:
        """This machine's own clients (loopback) skip the per-address caps, unless ``local_uncapped`` is off."""
        return self.limits.local_uncapped and is_loopback(ip)

    def _full(self, ip: str) -> str | None:
        """Why one more connection from ``ip`` is refused (all slots, or this address's share), or None."""
        if len(self.clients) >= self.limits.max_clients:
            self.rejections.count("ws", "too_many_clients", f"all {self.limits.max_clients} client slots are taken")
            return "too many clients"
        if not self._uncapped(ip) and self._per_ip(ip) >= self.limits.max_clients_per_ip:
            self.rejections.count("ws", "too_many_from_address",
                                  f"more than {self.limits.max_clients_per_ip} connections from one address")
            return f"too many connections from your address (at most {self.limits.max_clients_per_ip})"
        return None

    def _route(self, path: str) -> Response:
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path in ("/phone", "/phone/"):  # the phone page: streams its motion sensors (see phone.js)
            return self._static("phone.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :])
        if path == "/health":
            return _json(self.status())
        if path == "/api/instruments":
            return _json({"instruments": [summary(e) for e in self.library.entries.values()]})
        if path.startswith("/api/instruments/"):
            name = path[len("/api/instruments/") :]
            try:
                check_name(name)
            except LibraryError as exc:
                return _error(HTTPStatus.BAD_REQUEST, str(exc))
            entry = self.library.entries.get(name)
            if entry is None:
                return _error(HTTPStatus.NOT_FOUND, f"no instrument {name!r}")
            return _json(details(entry))
        return _error(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _static(self, name: str) -> Response:
        if "/" in name or "\\" in name or name.startswith(".") or not name:
            return _error(HTTPStatus.NOT_FOUND, "no such file")
        path = WEB_DIR / name
        if not path.is_file():
            return _error(HTTPStatus.NOT_FOUND, f"no such file {name}")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            ctype = "text/javascript"
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        return _response(HTTPStatus.OK, path.read_bytes(), ctype)

    # ------------------------------------------------------------------ WebSocket
    async def _handle(self, ws: ServerConnection) -> None:
        ip = self._peer(ws)
        full = self._full(ip)  # again: upgrades that raced past the HTTP check
        if full is not None:
            await ws.close(1013, full[:120])
            return
        client = Client(f"ws{next(self._ids)}", ws, tokens=self.limits.burst, ip=ip)
        self.clients[client.id] = client
        self.stats["connections"] += 1
        client.hello_timer = asyncio.get_running_loop().call_later(self.limits.hello_timeout_s, self._no_hello, client)
        try:
            async for message in ws:
                await self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self._leave(client)

    def _no_hello(self, client: Client) -> None:
        """The hello deadline passed: a connection that never introduced itself gives its slot back."""
        client.hello_timer = None
        if client.introduced or client.id not in self.clients:
            return
        self.rejections.count("ws", "no_hello", f"no hello within {self.limits.hello_timeout_s:g} s: closed")
        task = asyncio.ensure_future(client.ws.close(1008, "say hello first"))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _leave(self, client: Client) -> None:
        if client.hello_timer is not None:
            client.hello_timer.cancel()
            client.hello_timer = None
        self.clients.pop(client.id, None)
        if client.audio:
            self.engine.listeners -= 1
        if client.monitor:
            self._monitoring(-1)
        client.audio = client.monitor = False
        if self.mappings is not None:
            self.mappings.hub.forget(client.id)
        if self.fits is not None:
            self.fits.forget(client)
        if client.voice is not None:
            self.engine.release_voice(client.voice)
            client.voice = None

    def _allowed(self, client: Client, now: float) -> bool:
        lim = self.limits
        client.tokens = min(lim.burst, client.tokens + (now - client.refill_t) * lim.messages_per_s)
        client.refill_t = now
        if client.tokens < 1.0:
            return False
        client.tokens -= 1.0
        return True

    async def _send_error(self, client: Client, code: str, message: str, ref: str | None = None) -> None:
        self.rejections.count("ws", code, message)
        await client.ws.send(wire.error(code, message, ref))

    def _ensure_voice(self, client: Client) -> int | None:
        """The client's voice, allocating one if it has none: None when all are taken or when its address
        already holds ``max_voices_per_ip`` (``_no_voice`` says which)."""
        if client.voice is None:
            held = sum(1 for c in self.clients.values() if c.ip == client.ip and c.voice is not None)
            if held >= self.limits.max_voices_per_ip and not self._uncapped(client.ip):
                self.rejections.count("ws", "voices_per_address",
                                      f"more than {self.limits.max_voices_per_ip} voices for one address")
                return None
            client.voice = self.engine.allocate_voice(client.id)
        return client.voice

    def _no_voice(self, client: Client) -> str:
        held = sum(1 for c in self.clients.values() if c.ip == client.ip and c.voice is not None)
        if held >= self.limits.max_voices_per_ip and not self._uncapped(client.ip):
            return (f"your address already plays {held} voices (at most {self.limits.max_voices_per_ip}); close "
                    "another page first")
        return f"all {len(self.engine.voices)} voices are taken; try later"

    def _welcome(self, client: Client) -> str:
        e = self.engine
        inst = e.voices[client.voice].instrument if client.voice is not None else e.default_instrument
        return wire.encode(
            "welcome", v=wire.VERSION, voice=client.voice, sample_rate=e.rate, block_size=e.block, instrument=inst,
            instruments=[summary(x) for x in self.library.entries.values()],
            limits={"max_message_bytes": self.limits.max_message_bytes, "messages_per_s": self.limits.messages_per_s},
            record=self.fits.info() if self.fits is not None else None,  # whether a Record button can work here
        )

    async def _on_message(self, client: Client, message: str | bytes) -> None:
        arrival = time.monotonic_ns()
        now = time.monotonic()
        self.stats["messages"] += 1
        if self.fits is not None and await self.fits.intercept(client, message):
            client.last_active = now
            return  # the clip that follows an upload
        if len(message) > self.limits.max_message_bytes:
            await self._send_error(client, "too_large", f"messages are limited to {self.limits.max_message_bytes} bytes")
            return
        if not self._allowed(client, now):
            self.rejections.count("ws", "rate_limited", f"more than {self.limits.messages_per_s:g} messages/s")
            if client.tokens > -1:  # tell once per burst, not per message
                client.tokens -= 1
                await client.ws.send(wire.error("rate_limited", f"slow down: {self.limits.messages_per_s:g} messages/s"))
            return
        try:
            msg = wire.parse_client(message)
        except wire.WireError as exc:
            await self._send_error(client, exc.code, str(exc), exc.ref)
            return
        client.last_active = now
        kind = msg.type
        if kind not in ("status", "audio", "monitor", "upload", "cancel", "watch", "scene"):
            client.introduced = True  # hello, or a message that plays (and so says hello implicitly)
        if kind == "hello":
            self._ensure_voice(client)
            self._set_monitor(client, msg.monitor)
            self._set_audio(client, msg.audio)
            await client.ws.send(self._welcome(client))
        elif kind == "status":
            await client.ws.send(wire.encode("status", **self.status()))
        elif kind == "audio":
            self._set_audio(client, msg.enabled)
        elif kind == "monitor":
            self._set_monitor(client, msg.enabled)
        elif kind == "sensor":
            client.sensor_frames += 1
            self.stats["sensor_frames"] += 1
            await self._sensor(client, msg, arrival)
        elif kind in ("learn", "calibrate"):
            await self._mapping_request(client, msg)
        elif kind == "scene":
            await self._scene(client, msg)
        elif kind in ("upload", "cancel", "watch"):
            if self.fits is None:
                await self._send_error(client, "unsupported", "this server does not take recordings", kind)
            else:
                await self.fits.request(client, msg)
        else:
            await self._play(client, msg, arrival)

    async def _play(self, client: Client, msg: Any, arrival: int) -> None:
        voice = self._ensure_voice(client)
        if voice is None:
            await self._send_error(client, "no_voice", self._no_voice(client), msg.type)
            return
        try:
            cmd: Command
            if msg.type == "control":
                cmd = Control.of(msg.values) if msg.values is not None else ControlChannel.of(msg.index, msg.value)
            elif msg.type == "deform":
                cmd = Deform.of(msg.logits)
            elif msg.type == "gain":
                cmd = Gain.of(msg.gain)
            elif msg.type == "pan":
                cmd = Pan.of(msg.position)
            else:
                cmd = SelectInstrument.of(msg.name)
            self.engine.submit(cmd, arrival, voice=voice, source="ws")
        except Rejected as exc:
            await self._send_error(client, exc.kind, str(exc), msg.type)
            return
        if self.mappings is not None and msg.type == "control":
            self.mappings.target(client.id, voice, cmd)
        if msg.type == "instrument":
            await client.ws.send(wire.encode("instrument_changed", voice=voice, instrument=msg.name))

    async def _scene(self, client: Client, msg: Any) -> None:
        """``scene``: which scene plays; with ``name`` and the admin token, switch (server/scenes.py)."""
        if self.scenes is None:
            await self._send_error(client, "unsupported", "this server plays no scenes (start it with --scenes)",
                                   "scene")
            return
        if msg.name is not None:
            if not self.access.is_admin(msg.admin):
                await self._send_error(client, "forbidden", "switching scenes needs the admin token", "scene")
                return
            try:
                self.scenes.switch(msg.name, "ws")  # its on_change pushes the new scene to every client
            except Rejected as exc:
                await self._send_error(client, exc.kind, str(exc), "scene")
            return
        await client.ws.send(wire.encode("scene", **self.scenes.status()))

    def scene_changed(self, state: dict) -> None:
        """The scene changed (schedule or a switch by hand): every client hears of it."""
        text = wire.encode("scene", **state)
        for client in list(self.clients.values()):
            task = asyncio.ensure_future(client.ws.send(text))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def voice_instrument(self, voice: int, name: str) -> None:
        """A scene changed ``voice``'s instrument: the client playing it hears of it, as after its own change."""
        text = wire.encode("instrument_changed", voice=voice, instrument=name)
        for client in list(self.clients.values()):
            if client.voice == voice:
                task = asyncio.ensure_future(client.ws.send(text))
                task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _sensor(self, client: Client, msg: Any, arrival: int) -> None:
        """A sensor frame: through the client's mapping of that source onto the client's voice."""
        if self.mappings is None:
            return
        voice = self._ensure_voice(client)
        if voice is None:
            await self._send_error(client, "no_voice", self._no_voice(client))
            return
        try:
            self.mappings.play(client.id, voice, msg.source, msg.kind, msg.values, msg.t, arrival, hand=msg.hand)
        except Rejected as exc:
            await self._send_error(client, exc.kind, str(exc), "sensor")

    async def _mapping_request(self, client: Client, msg: Any) -> None:
        """``learn`` and ``calibrate``: answered with ``learn`` / ``calibration``."""
        if self.mappings is None:
            await self._send_error(client, "unsupported", "this server has no mappings", msg.type)
            return
        voice = self._ensure_voice(client)
        if voice is None:
            await self._send_error(client, "no_voice", self._no_voice(client))
            return
        try:
            if msg.type == "calibrate":
                state = self.mappings.hub.calibrate(client.id, f"{msg.source}:{msg.hand}" if msg.hand else msg.source,
                                                    msg.lo, msg.hi)
                await client.ws.send(wire.encode("calibration", source=msg.source, calibration=state))
                return
            if msg.action == "train":
                result = await self.mappings.train(client.id, voice, msg.model)
                state = {**self.mappings.learn(client.id, voice, "status"), **result}
            else:
                state = self.mappings.learn(client.id, voice, msg.action, msg.enabled, msg.source, msg.model)
        except Rejected as exc:
            await self._send_error(client, exc.kind, str(exc), msg.type)
            return
        await client.ws.send(wire.encode("learn", **state))

    def _set_audio(self, client: Client, on: bool) -> None:
        if on != client.audio:
            client.audio = on
            self.engine.listeners += 1 if on else -1

    def _set_monitor(self, client: Client, on: bool) -> None:
        if on != client.monitor:
            client.monitor = on
            self._monitoring(1 if on else -1)

    def _monitoring(self, change: int) -> None:
        self.monitors += change
        if self._events is None:
            self._events = self.engine.events.subscribe(maxlen=512, active=False)
        self._events.active = self.monitors > 0

    # ------------------------------------------------------------------ pushes
    async def broadcast(self, text: str) -> None:
        for client in list(self.clients.values()):
            try:
                await client.ws.send(text)
            except ConnectionClosed:
                pass

    async def _push_loop(self, period: float = 0.05) -> None:
        e = self.engine
        while True:
            await asyncio.sleep(period)
            try:
                await self._push_once(e)
            except Exception:  # noqa: BLE001 - a push problem must not end the pushes
                log.exception("push loop")

    async def _push_once(self, e: Engine) -> None:
        rms, peak = e.take_level()
        events = []
        if self._events is not None:
            events = [self._event(e, ev) for ev in self._events.take()]
            self.stats["events_dropped"] = self._events.dropped  # over 512 between two pushes
        blocks = []
        while e.stream:
            blocks.append(e.stream.popleft())
        frame = None
        if blocks:
            samples = np.concatenate([b for _, b in blocks]).astype("<f4", copy=False)  # (n,) or (n, 2) frames
            frame = wire.audio_frame(e.rate, blocks[0][0], samples.tobytes(),
                                     channels=1 if samples.ndim == 1 else samples.shape[1])
        meter = wire.encode("meter", rms=round(rms, 5), peak=round(peak, 5), time=round(time.monotonic() - e.started, 3))
        ev = wire.encode("events", events=events) if events else None
        now = time.monotonic()
        for client in list(self.clients.values()):
            try:
                if client.monitor:
                    await client.ws.send(meter)
                    if ev is not None:
                        await client.ws.send(ev)
                if client.audio and frame is not None:
                    transport = client.ws.transport
                    if transport is not None and transport.get_write_buffer_size() > 256 * 1024:
                        client.dropped_audio += 1  # a slow listener skips audio, never backs up the server
                        self.stats["audio_frames_dropped"] += 1
                    else:
                        await client.ws.send(frame)
                if client.voice is not None and now - client.last_active > self.limits.idle_release_s:
                    self.engine.release_voice(client.voice)
                    client.voice = None
            except ConnectionClosed:
                pass

    @staticmethod
    def _event(e: Engine, ev: Applied) -> dict[str, Any]:
        """One applied event as the `events` push carries it: what, where, and when it sounds: ``sample`` (the
        renderer's sample index) and ``t`` (when the block holding it leaves the renderer, in seconds on the
        clock of the `meter` push's ``time``; None before the first block left)."""
        at = e.sounding_ns(ev.sample)
        values = np.round(np.asarray(ev.values, np.float64), 3).tolist()
        out: dict[str, Any] = {"voice": ev.voice, "kind": ev.kind, "values": values, "source": ev.source,
                               "sample": ev.sample, "t": None if at is None else round(at / 1e9 - e.started, 4)}
        if ev.name is not None:
            out["instrument"] = ev.name
        return out

    def status(self) -> dict[str, Any]:
        s = self.engine.status()
        s["clients"] = len(self.clients)
        s["rejected"] = self.rejections.as_dict()
        if self.mappings is not None:
            s["mapping"] = self.mappings.status()
        s.update(self.extra_status)
        s["scene"] = self.scenes.status() if self.scenes is not None else None
        s["health"] = self.health.check(s)
        return s
