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
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..atomic import atomic_write
from ..mapping.presets import PresetError, PresetTable, load_preset
from ..protocol.commands import Control, ControlChannel, Deform, Gain, Pan, Rejected, SelectInstrument
from ..protocol.requests import SceneRequest
from ..protocol.scenes import ScenesError, ScenesFile
from .config import ServeConfig
from .engine import Engine, EngineSettings
from .faults import Faults
from .feedback import Feedback, TargetError
from .fits import FitEdge
from .library import Library, LibraryError
from .mapping_edge import MappingEdge
from .midi import MidiEdge, MidiError
from .osc import OscPolicy, OscServer
from .osc_batch import ControlLane
from .playout import NullOutput, Output, SoundDeviceError, SoundDeviceOutput
from .recorder import Recorder, RecorderError
from .access import AccessPolicy
from .rejections import Rejections
from .scenes import SceneEdge, load_for_server
from .sdnotify import Notifier
from .tls import TlsError
from .tls import setup as tls_setup
from .web import WebLimits, WebServer

log = logging.getLogger("sensorsynth.serve")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_STALLED = 0, 1, 2, 3


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
    ch = config.output_channels
    if config.output == "null":
        return NullOutput(rate, config.block_size, channels=ch), None
    try:
        try:
            return SoundDeviceOutput(rate, config.block_size, config.sound_device, config.hostapi, channels=ch), None
        except SoundDeviceError as first:
            if config.sample_rate is not None or "cannot play" not in str(first):
                raise
            import sounddevice as sd  # the card runs at another rate: play the instrument at that one

            from .playout import find_device

            idx, info = find_device(config.sound_device, config.hostapi)
            card_rate = int(info["default_samplerate"])
            out = SoundDeviceOutput(card_rate, config.block_size, idx, config.hostapi, channels=ch)
            del sd
            return out, f"the card runs at {card_rate} Hz; instruments are played at that rate"
    except SoundDeviceError as exc:
        if config.output == "sound":
            raise ServeError(f"no usable sound card: {exc}") from None
        return NullOutput(rate, config.block_size, channels=ch), f"no sound card ({exc})"


@dataclass(frozen=True)
class ServiceExit:
    """How a run ended, for the command and for tests (replaces a module global another module read)."""

    reason: str  # "SIGINT", "SIGTERM", "watchdog" (the audio stalled) or "stopped" (Service.stop())
    code: int  # the process exit code: EXIT_OK, or EXIT_STALLED for the watchdog
    underruns: int
    recorded_s: float | None = None  # seconds in the --record file, None without one
    #: a vanished sound card was abandoned while serving: PortAudio's exit handler can wait forever on a dead
    #: host API (a killed JACK server), so the command leaves without interpreter exit handlers (all is written)
    abandoned_device: bool = False


def check_device(config: ServeConfig) -> None:
    """Refuse a render device this machine does not have, before anything starts (see Engine's make_renderer:
    the one place that picks the renderer for a device)."""
    if config.device.startswith("cuda"):
        from ..render.cuda import cuda_problem  # the CUDA path is the numba-cuda renderer

        if problem := cuda_problem():
            raise ServeError(f"--device {config.device}: {problem}; use --device cpu")


def renderer_name(device: str) -> str:
    """What renders, in words, for the start-up banner."""
    if device == "cpu":
        return "cpu (numba)"
    return device + (" (numba-cuda)" if device.startswith("cuda") else " (torch, batched)")


class Service:
    """``sensorsynth serve`` as an object: :meth:`start` assembles and binds everything (raising
    :class:`ServeError` for what a user can mend), :meth:`run` plays until a signal, the watchdog or
    :meth:`stop`, then closes everything in order and returns a :class:`ServiceExit`.

    Why a class: the parts (engine, edges, tasks) are fields a test or a supervisor can reach, the shutdown order
    is written once, and how the run ended is a value returned, not a global set."""

    def __init__(self, config: ServeConfig, say: Callable[[str], None] = print,
                 faults: Faults | None = None) -> None:  # fmt: skip
        self.config = config
        self.say = say
        try:
            self.faults = Faults.from_env() if faults is None else faults  # parsed once, here at the edge
        except ValueError as exc:
            raise ServeError(str(exc)) from None
        self.engine: Engine | None = None
        self.output: Output | None = None
        self.recorder: Recorder | None = None
        self.osc: OscServer | None = None
        self.extra: dict[int, OscServer] = {}  # OSC ports presets ask for
        self.extra_bound: dict[int, int] = {}
        self.osc_port = self.ws_port = 0
        self.scenes: SceneEdge | None = None
        self.scenes_file: ScenesFile | None = None
        self._stop = asyncio.Event()
        self._reason: str | None = None
        self._code = EXIT_OK
        self._notifier = Notifier()
        self.feedback: Feedback | None = None  # osc_feedback: applied events, levels, announcements
        self.midi: MidiEdge | None = None  # midi_in / midi_out

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        """Load, open the output, start the engine, bind the ports, say how to play; ServeError on a problem."""
        config, say = self.config, self.say
        library, presets, default = self._load()
        check_device(config)
        try:  # before anything starts: a bad certificate is a start-up error naming the file
            tls = tls_setup(config.tls, config.tls_cert, config.tls_key, config.tls_dir)
        except TlsError as exc:
            raise ServeError(str(exc)) from None
        native = library.entries[default].instrument.spec.sample_rate
        output, note = open_output(config, native)
        rate = output.sample_rate
        if config.record is not None:
            try:
                self.recorder = Recorder(config.record, rate, channels=config.output_channels)
            except RecorderError as exc:
                raise ServeError(str(exc)) from None
        engine = self.engine = Engine(library, engine_settings(config, rate, default), output, self.recorder,
                                      faults=self.faults)  # fmt: skip
        try:
            engine.start()
        except SoundDeviceError as exc:
            if config.output == "sound":
                engine.stop()
                raise ServeError(f"no usable sound card: {exc}") from None
            note = f"the sound card failed to start ({exc})"
            engine.output = output = NullOutput(rate, config.block_size, channels=config.output_channels)
            engine.start()
        self.output = output
        rejections = Rejections()
        access = AccessPolicy.from_config(config)  # Host, token, Origin, admin (docs/server-security.md)
        self.mappings = mappings = MappingEdge(engine, rejections, presets, config.learned_dir)
        self.web = web = WebServer(engine, rejections, WebLimits.from_config(config), access, mappings=mappings)
        self.fits = fits = FitEdge(engine, config.trainer, config.record_fit, rejections, config.reload_interval_s)
        web.fits = fits  # Record buttons: uploaded clips → trainer jobs → the uploader's voice
        fits.trainer_keys = config.trainer_keys or fits.trainer_keys  # CURVE keys when the trainer has them
        self.osc = self._osc_server(rejections, presets, lane=True)
        self.extra = {port: self._osc_server(rejections, presets) for port in presets.ports}
        try:
            await self._listen(presets, tls)
        except ServeError:
            await self._stop_osc()
            engine.stop()
            raise
        await mappings.start()
        try:
            await self._start_events_out(rejections)
        except ServeError:
            if self.feedback is not None:
                await self.feedback.stop()
            await self._stop_osc()
            await mappings.stop()
            await self.web.stop()
            engine.stop()
            raise
        if self.scenes_file is not None:  # after the engine and the mappings: the first scene plays at once
            self.scenes = SceneEdge(engine, self.scenes_file, mappings,
                                    level_cap_dbfs=config.level_cap_dbfs,
                                    output_channels=config.output_channels)
            web.scenes = self.scenes
            self.scenes.on_change = web.scene_changed
            self.scenes.on_instrument = web.voice_instrument
            await self.scenes.start()
        web.extra_status["osc"] = self.osc.stats
        web.extra_status["ws"] = web.stats  # connections, messages, sensor_frames, audio_frames_dropped
        web.extra_status["record"] = fits.stats
        say(self._banner(library, presets, default, output, note, access, tls))
        if config.ready_file is not None:
            atomic_write(config.ready_file, json.dumps({
                "osc_port": self.osc_port, "ws_port": self.ws_port, "pid": os.getpid(), "sample_rate": rate,
                "preset_ports": {str(k): v for k, v in self.extra_bound.items()},
                "token": access.token}), mode=0o600)  # it holds the token: readable by this user only  # fmt: skip
        if self._notifier.enabled:
            self._notifier.ready(f"playing {default}; OSC {self.osc_port}, web {self.ws_port}")

    def _load(self) -> tuple[Library, PresetTable, str]:
        config = self.config
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
            self.say(f"  refused {path}: {why}")
        if not library.entries:
            raise ServeError(f"no usable instruments in {config.models}: fit one with `sensorsynth fit CLIP`")
        default = config.instrument or library.names[0]
        if default not in library.entries:
            raise ServeError(f"instrument {default!r} is not in {config.models} (there: {', '.join(library.names)})")
        if config.scenes is not None:  # checked against this server now, not at the first scheduled change
            try:
                self.scenes_file = load_for_server(config.scenes, library.names, [p.name for p in presets.presets],
                                                   config.max_voices, config.output_channels)
            except ScenesError as exc:
                raise ServeError(f"scenes: {exc}") from None
        return library, presets, default

    async def _start_events_out(self, rejections: Rejections) -> None:
        """OSC feedback and MIDI, when configured (docs/events.md, docs/midi.md)."""
        config, engine = self.config, self.engine
        if config.osc_feedback:
            try:
                self.feedback = Feedback(engine, config.osc_feedback, config.osc_feedback_level_hz,
                                         config.osc_feedback_allow_broadcast)  # fmt: skip
                await self.feedback.start()
            except TargetError as exc:
                raise ServeError(f"osc_feedback: {exc}") from None
            self.web.extra_status["feedback"] = self.feedback.stats
        if config.midi_in or config.midi_out:
            from ..mapping.midi import MidiPresetError, load_midi_preset

            try:
                preset = load_midi_preset(config.midi_preset)
            except MidiPresetError as exc:
                raise ServeError(f"midi_preset: {exc}") from None
            self.midi = MidiEdge(engine, rejections, preset, config.midi_in, config.midi_out, config.midi_api,
                                 config.midi_note_ms)  # fmt: skip
            try:
                await self.midi.start()
            except MidiError as exc:
                self.midi = None
                raise ServeError(str(exc)) from None
            self.web.extra_status["midi"] = self.midi.stats

    def announce(self, address: str, *args) -> None:
        """Tell the OSC feedback targets something (e.g. a scene change); nothing without ``osc_feedback``."""
        if self.feedback is not None:
            self.feedback.announce(address, *args)

    def _voice_owner(self, voice: int) -> str | None:
        """Who holds ``voice`` (OSC's guard: OSC reaches only OSC-owned voices unless configured)."""
        assert self.engine is not None
        return self.engine.voices[voice].owner

    def _osc_sink(self, item, arrival: int) -> None:
        """Commands to the engine (and the mappings' targets); sensor input, presets, learn, calibrate to the
        mappings."""
        if type(item) is SceneRequest:  # the OSC server let only this machine or allowed senders this far
            if self.scenes is None:
                raise Rejected("unsupported", "this server plays no scenes (start it with --scenes)")
            self.scenes.switch(item.name, "osc")
            return
        if isinstance(item, (Control, ControlChannel, Deform, Gain, SelectInstrument, Pan)):
            self.engine.submit(item, arrival)  # type: ignore[union-attr]
            if isinstance(item, (Control, ControlChannel)):
                owner, voice = self.mappings.osc_owner(item.voice)
                self.mappings.target(owner, voice, item)
        else:
            self.mappings.osc_item(item, arrival)

    def _lane_ready(self) -> bool:
        """The compiled control lane may run: no learning session records OSC's controls as targets (it needs
        each as a command)."""
        return not any(s.recording for owner, s in self.mappings.hub.sessions.items() if owner.startswith("osc"))

    def _osc_server(self, rejections: Rejections, presets: PresetTable, lane: bool = False) -> OscServer:
        config = self.config
        fast = ControlLane(self.engine, self._lane_ready, config.osc_controls_all_voices) if lane else None
        return OscServer(
            self._osc_sink, self.web.status, rejections, timetag_window_s=config.timetag_window_s,
            allowed_senders=set(config.osc_allowed_senders) if config.osc_allowed_senders else None,
            presets=presets, on_bundle_end=self.mappings.bundle_end,
            policy=OscPolicy.from_config(config), voice_owner=self._voice_owner, lane=fast,
        )

    async def _listen(self, presets: PresetTable, tls) -> None:
        config = self.config
        assert self.osc is not None
        try:
            self.osc_host, self.osc_port = await self.osc.start(config.host, config.osc_port)
        except OSError as exc:
            raise ServeError(f"cannot listen for OSC on {config.host}:{config.osc_port}: {exc.strerror or exc}") from None
        for port, server in self.extra.items():
            owners = ", ".join(p.name for p in presets.presets if port in p.ports)
            try:
                self.extra_bound[port] = (await server.start(config.host, port))[1]
            except OSError as exc:
                raise ServeError(f"cannot listen for OSC on {config.host}:{port} (preset {owners}): "
                                 f"{exc.strerror or exc}") from None
        try:
            _, self.ws_port = await self.web.start(config.host, config.ws_port, ssl=tls.context if tls else None)
        except OSError as exc:
            raise ServeError(f"cannot listen on {config.host}:{config.ws_port}: {exc.strerror or exc}") from None

    async def _stop_osc(self) -> None:
        if self.osc is not None:
            await self.osc.stop()
        for server in self.extra.values():
            await server.stop()

    def _banner(self, library: Library, presets: PresetTable, default: str, output: Output, note: str | None,
                access: AccessPolicy, tls) -> str:  # fmt: skip
        config, recorder, extra_bound = self.config, self.recorder, self.extra_bound
        rate, ws_port = output.sample_rate, self.ws_port
        shown = _lan_address() if config.host in ("0.0.0.0", "::", "") else config.host
        q = access.page_query(show=sys.stdout.isatty())  # the whole token on a terminal only, never in the journal
        web_scheme, ws_scheme = ("https", "wss") if tls else ("http", "ws")
        first = library.entries[default].instrument.spec
        lines = [
            "sensorsynth serve: playing",
            f"  instruments: {', '.join(library.names)} (from {library.folder}); voices start on {default} "
            f"({first.control_plane_dim} control dimensions, {first.expressivity} deformation variants)",
            f"  sound: {output.description}, block {config.block_size} ({1000 * config.block_size / rate:.1f} ms), "
            f"rendered on {renderer_name(config.device)}" + (f"; {note}" if note else ""),
        ]
        cap = self.engine.level_cap_dbfs if self.engine is not None else None
        lines.append(f"  speakers: {config.output_channels} channel(s), placement {config.placement}; level cap "
                     + (f"{cap:g} dBFS" if cap is not None else "none (this renderer clips at full scale)"))
        if recorder is not None:
            lines.append(f"  recording: {recorder.path}")
        elif isinstance(output, NullOutput):
            lines.append("  recording: none (add --record FILE.wav to keep what plays)")
        lines += [
            f"  OSC: udp {self.osc_host}:{self.osc_port}, e.g. /sensorsynth/control with {first.control_plane_dim} floats",
            "  sensors: OSC /sensorsynth/input/<source> with N floats, WebSocket 'sensor' frames (phone, hands)"
            + (f"; presets: {', '.join(p.name + (' (also udp ' + ', '.join(str(extra_bound[q]) for q in p.ports) + ')' if p.ports else '') for p in presets.presets)}"
               if presets.presets else ""),
            f"  page: {web_scheme}://{shown}:{ws_port}/{q}  (WebSocket {ws_scheme}://{shown}:{ws_port}/ws{q})",
            f"  phone: {web_scheme}://{shown}:{ws_port}/phone{q}  (type this on the phone"
            + ("" if tls else "; its motion sensors need https: add --tls self-signed") + ")",
            *([] if sys.stdout.isatty() else ["  (the token is masked in logs: run in a terminal to see it, set ws_token "
                                              "in the config, or read it from --ready-file)"]),
            *(tls.lines if tls else []),
            f"  record: the pages' Record buttons fit on the trainer at {config.trainer}" if config.trainer else
            "  record: off (start `sensorsynth trainer` and add --trainer tcp://127.0.0.1:5555 to record on the pages)",
            *([f"  OSC feedback: events and levels to {', '.join(config.osc_feedback)}"] if config.osc_feedback else []),
            *([f"  MIDI ({self.midi.stats['api']}, preset {self.midi.preset.name}): "
               + ", ".join(x for x in (f"in {self.midi.stats['in_port']}" if self.midi.stats["in_port"] else "",
                                       f"out {self.midi.stats['out_port']}" if self.midi.stats["out_port"] else "") if x)]
              if self.midi is not None else []),
            *([f"  scenes: {', '.join(self.scenes_file.scenes)} from {config.scenes}"
               + (f"; schedule in {self.scenes_file.schedule.timezone}" if self.scenes_file.schedule else
                  "; no schedule (switch with OSC /sensorsynth/scene or the page)")] if self.scenes_file else []),
            "  Ctrl-C stops.",
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------------ run, stop
    def stop(self, reason: str = "stopped") -> None:
        """Ask :meth:`run` to finish (from the event loop's thread: a signal handler, a test)."""
        if self._reason is None:
            self._reason = reason
        self._stop.set()

    async def run(self) -> ServiceExit:
        """Play until :meth:`stop`, SIGINT/SIGTERM or a stalled audio path; then close everything in order (the
        recording last, so it holds everything that played) and say how it ended."""
        assert self.engine is not None, "start() first"
        # Everything loaded so far lives for the whole run: move it out of the collector's sight, so a full
        # collection under an OSC flood walks only what arrived since (shorter GIL holds for the render thread).
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop, sig.name)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        tasks = [asyncio.create_task(self._reload_loop(), name="reload"),
                 asyncio.create_task(self._watchdog(), name="watchdog")]  # fmt: skip
        try:
            await self._stop.wait()
        finally:
            self._notifier.stopping()
            for t in tasks:
                t.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass
            ended = await self._shutdown()
            gc.unfreeze()  # back to normal for a caller that lives on (a test, an embedding program)
            self._notifier.close()
        return ended

    async def _shutdown(self) -> ServiceExit:
        engine, recorder = self.engine, self.recorder
        assert engine is not None and self.output is not None
        await self._stop_osc()
        if self.scenes is not None:
            await self.scenes.stop()
        if self.midi is not None:
            self.midi.close()
        if self.feedback is not None:
            await self.feedback.stop()
        await self.mappings.stop()
        await self.fits.stop()
        await self.web.stop()
        engine.stop()
        counters = self.output.counters()  # the output the run started with (a card, even if abandoned)
        reason = self._reason or "watchdog"
        rec = f"; recorded {recorder.seconds:.1f} s to {recorder.path}" if recorder is not None else ""
        self.say(f"sensorsynth serve: stopped ({reason}); under-runs {counters['underruns']}{rec}")
        return ServiceExit(reason=reason, code=self._code, underruns=int(counters["underruns"]),
                           recorded_s=recorder.seconds if recorder is not None else None,
                           abandoned_device=engine.fallback is not None)  # fmt: skip

    async def _reload_loop(self) -> None:
        engine, web = self.engine, self.web
        assert engine is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            try:
                found = await loop.run_in_executor(None, engine.library.scan)
                if found.added or found.replaced:
                    engine.apply(found)
                    self.fits.library_changed()  # a fit waiting for its instrument looks now
                    await web.broadcast(web_instruments(web))
            except Exception:  # noqa: BLE001 - a reload problem must not stop the sound
                log.exception("reload")

    async def _watchdog(self) -> None:
        """Exit (code 3) when the audio stops advancing, and ping systemd's watchdog only while it does."""
        engine, notifier = self.engine, self._notifier
        assert engine is not None
        last_ping = last_status = 0.0
        while True:
            await asyncio.sleep(0.25)
            stalled = (time.monotonic_ns() - engine.last_block_ns) / 1e9
            now = time.monotonic()
            if notifier.watchdog_interval and stalled < 1.0 and now - last_ping >= notifier.watchdog_interval:
                notifier.watchdog()
                last_ping = now
            if notifier.enabled and now - last_status >= 10.0:
                st = self.web.status()
                notifier.status(f"playing {st['instrument']}; {st['clients']} clients; under-runs {st['underruns']}; "
                                f"rejected {sum(st['rejected'].values())}")
                last_status = now
            if not engine.running or stalled > self.config.stall_exit_s:
                log.error("audio stalled for %.1f s (%s): exiting so the supervisor restarts the service",
                          stalled, engine.error or "render thread not advancing")
                self._code = EXIT_STALLED
                self.stop("watchdog")
                return


def engine_settings(config: ServeConfig, rate: int, default: str) -> EngineSettings:
    """The engine's settings out of the service's configuration."""
    return EngineSettings(
        sample_rate=rate, block_size=config.block_size, max_voices=config.max_voices,
        prefill_blocks=config.prefill_blocks, latency=config.latency, fixed_delay_ms=config.fixed_delay_ms,
        seed=config.seed, noise=config.noise, instrument=default, realtime_priority=config.realtime_priority,
        audio_path=config.audio_path, channels=config.output_channels, placement=config.placement,
        voice_channels=config.voice_channels, voice_positions=config.voice_positions,
        level_cap_dbfs=config.level_cap_dbfs,
        device="cpu" if config.device == "cpu" else config.device.removeprefix("torch:"),
    )


async def run_service(config: ServeConfig, say: Callable[[str], None] = print) -> ServiceExit:
    """Start a :class:`Service`, run it to its end and return how it ended (the ``serve`` command's body)."""
    service = Service(config, say)
    await service.start()
    return await service.run()


async def serve(config: ServeConfig, say: Callable[[str], None] = print) -> int:
    """:func:`run_service`, returning only the exit code."""
    return (await run_service(config, say)).code


def web_instruments(web: WebServer) -> str:
    from ..protocol import ws as wire
    from .library import summary

    return wire.encode("instruments", instruments=[summary(e) for e in web.library.entries.values()])
