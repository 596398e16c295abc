"""``sensorsynth serve``: assemble the library, the engine, the outputs and the OSC and web edges, run until
SIGINT/SIGTERM, then close everything in order (the recording last, so it holds everything that played)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable

from ..mapping.presets import PresetError, PresetTable, load_preset
from ..protocol.commands import Control, ControlChannel, Deform, Gain, SelectInstrument
from .config import ServeConfig
from .engine import Engine, EngineSettings
from .fits import FitEdge
from .library import Library, LibraryError
from .mapping_edge import MappingEdge
from .osc import OscServer
from .playout import NullOutput, Output, SoundDeviceError, SoundDeviceOutput
from .recorder import Recorder, RecorderError
from .access import AccessPolicy
from .rejections import Rejections
from .sdnotify import Notifier
from .tls import TlsError
from .tls import setup as tls_setup
from .web import WebLimits, WebServer

log = logging.getLogger("sensorsynth.serve")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_STALLED = 0, 1, 2, 3


ABANDONED_DEVICE = False  # set when a vanished sound card was abandoned while serving


class ServeError(Exception):
    """Start-up problems a user can act on (no instruments, port in use, ...)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _lan_address() -> str:
    """The address other machines on the network would use (no packet is sent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET: connect() on UDP only picks a route
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def open_output(config: ServeConfig, native_rate: int) -> tuple[Output, str | None]:
    """The output to play to, and a note when it is not what was asked for."""
    rate = config.sample_rate or native_rate
    if config.output == "null":
        return NullOutput(rate, config.block_size), None
    try:
        try:
            return SoundDeviceOutput(rate, config.block_size, config.sound_device, config.hostapi), None
        except SoundDeviceError as first:
            if config.sample_rate is not None or "cannot play" not in str(first):
                raise
            import sounddevice as sd  # the card runs at another rate: play the instrument at that one

            from .playout import find_device

            idx, info = find_device(config.sound_device, config.hostapi)
            card_rate = int(info["default_samplerate"])
            out = SoundDeviceOutput(card_rate, config.block_size, idx, config.hostapi)
            del sd
            return out, f"the card runs at {card_rate} Hz; instruments are played at that rate"
    except SoundDeviceError as exc:
        if config.output == "sound":
            raise ServeError(f"no usable sound card: {exc}") from None
        return NullOutput(rate, config.block_size), f"no sound card ({exc})"


async def serve(config: ServeConfig, say: Callable[[str], None] = print) -> int:
    try:
        library = Library(config.models)
    except LibraryError as exc:
        raise ServeError(str(exc)) from None
    try:
        presets = PresetTable([load_preset(name) for name in config.presets])
    except PresetError as exc:
        raise ServeError(f"preset: {exc}") from None
    change = library.scan(settle=False)
    for path, why in change.refused:
        say(f"  refused {path}: {why}")
    if not library.entries:
        raise ServeError(f"no usable instruments in {config.models}: fit one with `sensorsynth fit CLIP`")
    default = config.instrument or library.names[0]
    if default not in library.entries:
        raise ServeError(f"instrument {default!r} is not in {config.models} (there: {', '.join(library.names)})")
    if config.device.startswith("cuda"):
        from ..render.cuda import cuda_problem  # the CUDA path is the numba-cuda renderer

        if problem := cuda_problem():
            raise ServeError(f"--device {config.device}: {problem}; use --device cpu")
    try:  # before anything starts: a bad certificate is a start-up error naming the file
        tls = tls_setup(config.tls, config.tls_cert, config.tls_key, config.tls_dir)
    except TlsError as exc:
        raise ServeError(str(exc)) from None
    native = library.entries[default].instrument.spec.sample_rate
    output, note = open_output(config, native)
    rate = output.sample_rate
    recorder = None
    if config.record is not None:
        try:
            recorder = Recorder(config.record, rate)
        except RecorderError as exc:
            raise ServeError(str(exc)) from None
    engine = Engine(
        library,
        EngineSettings(
            sample_rate=rate, block_size=config.block_size, max_voices=config.max_voices,
            prefill_blocks=config.prefill_blocks, latency=config.latency, fixed_delay_ms=config.fixed_delay_ms,
            seed=config.seed, noise=config.noise, instrument=default, realtime_priority=config.realtime_priority,
            audio_path=config.audio_path,
            device="cpu" if config.device == "cpu" else config.device.removeprefix("torch:"),
        ),
        output,
        recorder,
    )
    try:
        engine.start()
    except SoundDeviceError as exc:
        if config.output == "sound":
            engine.stop()
            raise ServeError(f"no usable sound card: {exc}") from None
        note = f"the sound card failed to start ({exc})"
        engine.output = output = NullOutput(rate, config.block_size)
        engine.start()
    rejections = Rejections()
    access = AccessPolicy.for_host(config.host, config.ws_token, config.allowed_origins)
    mappings = MappingEdge(engine, rejections, presets)
    web = WebServer(engine, rejections, WebLimits(
        max_message_bytes=config.ws_max_message_bytes, messages_per_s=config.ws_messages_per_s,
        burst=2 * config.ws_messages_per_s, max_clients=config.max_clients, idle_release_s=config.idle_release_s,
    ), access, mappings=mappings)
    fits = FitEdge(engine, config.trainer, config.record_fit, rejections, config.reload_interval_s)
    web.fits = fits  # Record buttons: uploaded clips → trainer jobs → the uploader's voice

    def osc_sink(item, arrival: int) -> None:
        if isinstance(item, (Control, ControlChannel, Deform, Gain, SelectInstrument)):
            engine.submit(item, arrival)
            if isinstance(item, (Control, ControlChannel)):
                owner, voice = mappings.osc_owner(item.voice)
                mappings.target(owner, voice, item)
        else:  # sensor input, preset values, learn, calibrate: the mappings
            mappings.osc_item(item, arrival)

    def osc_server() -> OscServer:
        return OscServer(
            osc_sink, web.status, rejections, timetag_window_s=config.timetag_window_s,
            allowed_senders=set(config.osc_allowed_senders) if config.osc_allowed_senders else None,
            presets=presets, on_bundle_end=mappings.bundle_end,
        )

    osc = osc_server()
    extra: dict[int, OscServer] = {port: osc_server() for port in presets.ports}  # ports presets ask for
    extra_bound: dict[int, int] = {}
    try:
        try:
            osc_host, osc_port = await osc.start(config.host, config.osc_port)
        except OSError as exc:
            raise ServeError(f"cannot listen for OSC on {config.host}:{config.osc_port}: {exc.strerror or exc}") from None
        for port, server in extra.items():
            owners = ", ".join(p.name for p in presets.presets if port in p.ports)
            try:
                extra_bound[port] = (await server.start(config.host, port))[1]
            except OSError as exc:
                raise ServeError(f"cannot listen for OSC on {config.host}:{port} (preset {owners}): "
                                 f"{exc.strerror or exc}") from None
        try:
            _, ws_port = await web.start(config.host, config.ws_port, ssl=tls.context if tls else None)
        except OSError as exc:
            raise ServeError(f"cannot listen on {config.host}:{config.ws_port}: {exc.strerror or exc}") from None
    except ServeError:
        await osc.stop()
        for server in extra.values():
            await server.stop()
        engine.stop()
        raise
    await mappings.start()
    web.extra_status["osc"] = osc.stats
    web.extra_status["ws"] = web.stats  # connections, messages, sensor_frames, audio_frames_dropped
    web.extra_status["record"] = fits.stats

    shown = _lan_address() if config.host in ("0.0.0.0", "::", "") else config.host
    q = f"?token={access.token}" if access.token else ""  # the pages pass it on to the WebSocket
    web_scheme, ws_scheme = ("https", "wss") if tls else ("http", "ws")
    first = library.entries[default].instrument.spec
    lines = [
        "sensorsynth serve: playing",
        f"  instruments: {', '.join(library.names)} (from {library.folder}); voices start on {default} "
        f"({first.control_plane_dim} control dimensions, {first.expressivity} deformation variants)",
        f"  sound: {output.description}, block {config.block_size} ({1000 * config.block_size / rate:.1f} ms), "
        f"rendered on {'cpu (numba)' if config.device == 'cpu' else config.device}"
        f"{'' if config.device == 'cpu' else ' (numba-cuda)' if config.device[:4] == 'cuda' else ' (torch, batched)'}"
        + (f"; {note}" if note else ""),
    ]
    if recorder is not None:
        lines.append(f"  recording: {recorder.path}")
    elif isinstance(output, NullOutput):
        lines.append("  recording: none (add --record FILE.wav to keep what plays)")
    lines += [
        f"  OSC: udp {osc_host}:{osc_port}, e.g. /sensorsynth/control with {first.control_plane_dim} floats",
        "  sensors: OSC /sensorsynth/input/<source> with N floats, WebSocket 'sensor' frames (phone, hands)"
        + (f"; presets: {', '.join(p.name + (' (also udp ' + ', '.join(str(extra_bound[q]) for q in p.ports) + ')' if p.ports else '') for p in presets.presets)}"
           if presets.presets else ""),
        f"  page: {web_scheme}://{shown}:{ws_port}/{q}  (WebSocket {ws_scheme}://{shown}:{ws_port}/ws{q})",
        f"  phone: {web_scheme}://{shown}:{ws_port}/phone{q}  (type this on the phone"
        + ("" if tls else "; its motion sensors need https: add --tls self-signed") + ")",
        *(tls.lines if tls else []),
        f"  record: the pages' Record buttons fit on the trainer at {config.trainer}" if config.trainer else
        "  record: off (start `sensorsynth trainer` and add --trainer tcp://127.0.0.1:5555 to record on the pages)",
        "  Ctrl-C stops.",
    ]
    say("\n".join(lines))
    if config.ready_file is not None:
        tmp = Path(str(config.ready_file) + ".tmp")
        tmp.write_text(json.dumps({"osc_port": osc_port, "ws_port": ws_port, "pid": os.getpid(), "sample_rate": rate,
                                   "preset_ports": {str(k): v for k, v in extra_bound.items()}}))
        tmp.replace(config.ready_file)

    # Everything loaded so far lives for the whole run: move it out of the collector's sight, so a full
    # collection under an OSC flood walks only what arrived since (shorter GIL holds for the render thread).
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason: list[str] = []

    def _on_signal(name: str) -> None:
        reason.append(name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, _on_signal, sig.name)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass

    async def reload_loop() -> None:
        while True:
            await asyncio.sleep(config.reload_interval_s)
            try:
                found = await loop.run_in_executor(None, library.scan)
                if found.added or found.replaced:
                    engine.apply(found)
                    await web.broadcast(web_instruments(web))
            except Exception:  # noqa: BLE001 - a reload problem must not stop the sound
                log.exception("reload")

    exit_code = EXIT_OK

    async def watchdog() -> None:
        """Exit (code 3) when the audio stops advancing, and ping systemd's watchdog only while it does."""
        nonlocal exit_code
        last_ping = last_status = 0.0
        while True:
            await asyncio.sleep(0.25)
            stalled = (time.monotonic_ns() - engine.last_block_ns) / 1e9
            now = time.monotonic()
            if notifier.watchdog_interval and stalled < 1.0 and now - last_ping >= notifier.watchdog_interval:
                notifier.watchdog()
                last_ping = now
            if notifier.enabled and now - last_status >= 10.0:
                st = web.status()
                notifier.status(f"playing {st['instrument']}; {st['clients']} clients; under-runs {st['underruns']}; "
                                f"rejected {sum(st['rejected'].values())}")
                last_status = now
            if not engine.running or stalled > config.stall_exit_s:
                log.error("audio stalled for %.1f s (%s): exiting so the supervisor restarts the service",
                          stalled, engine.error or "render thread not advancing")
                exit_code = EXIT_STALLED
                stop.set()
                return

    notifier = Notifier()
    if notifier.enabled:
        notifier.ready(f"playing {default}; OSC {osc_port}, web {ws_port}")
    tasks = [asyncio.create_task(reload_loop(), name="reload"), asyncio.create_task(watchdog(), name="watchdog")]
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        for t in tasks:
            t.cancel()
        await osc.stop()
        for server in extra.values():
            await server.stop()
        await mappings.stop()
        await fits.stop()
        await web.stop()
        engine.stop()
        counters = output.counters()
        rec = f"; recorded {recorder.seconds:.1f} s to {recorder.path}" if recorder is not None else ""
        say(f"sensorsynth serve: stopped ({', '.join(reason) or 'watchdog'}); under-runs {counters['underruns']}{rec}")
        if engine.fallback is not None:
            # PortAudio's exit handler can wait forever on a vanished host API (a killed JACK server): everything
            # is closed and written by now, so the command skips interpreter exit handlers (see command.run)
            global ABANDONED_DEVICE
            ABANDONED_DEVICE = True
    return exit_code


def web_instruments(web: WebServer) -> str:
    from ..protocol import ws as wire
    from .library import summary

    return wire.encode("instruments", instruments=[summary(e) for e in web.library.entries.values()])
