"""``sensorsynth doctor``: check what an installation needs, and say in plain words what is wrong and how to
mend it. Each check is a small function returning :class:`Check` records, so the report is the same on a
terminal, in ``--json`` and in tests."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from .config import ServeConfig

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    area: str
    status: str
    message: str
    fix: str = ""


def check_config(config: ServeConfig) -> Iterable[Check]:
    yield Check("config", OK, f"valid: models {config.models}, OSC {config.host}:{config.osc_port}, web "
                              f"{config.host}:{config.ws_port}, output {config.output}, block {config.block_size}")
    if config.record is not None:
        folder = Path(config.record).resolve().parent
        if not folder.is_dir():
            yield Check("config", FAIL, f"the recording folder {folder} does not exist", f"mkdir -p {folder}")
        elif not os.access(folder, os.W_OK):
            yield Check("config", FAIL, f"cannot write recordings into {folder}",
                        "give the service user write access, or record elsewhere")
    for key in ("tls_cert", "tls_key"):
        path = getattr(config, key, None)
        if path is not None and not Path(path).is_file():
            yield Check("config", FAIL, f"{key} {path} is not a readable file", "point it at your PEM file")


def check_models(config: ServeConfig) -> Iterable[Check]:
    from .library import Library, LibraryError

    try:
        library = Library(config.models)
    except LibraryError as exc:
        yield Check("models", FAIL, str(exc), "create the folder and put .instrument files in it "
                                              "(`sensorsynth fit CLIP -o FOLDER/NAME.instrument`)")
        return
    change = library.scan(settle=False)
    for path, why in change.refused:
        yield Check("models", FAIL, f"refused {why}" if path in why else f"refused {path}: {why}",
                    "refit or replace that file; the server skips it and keeps the others")
    if not library.entries:
        yield Check("models", FAIL, f"no usable instruments in {library.folder}",
                    "fit one: sensorsynth fit CLIP.wav -o MODELS/NAME.instrument")
        return
    yield Check("models", OK, f"{len(library.entries)} instrument(s): {', '.join(library.names)}")
    if config.instrument and config.instrument not in library.entries:
        yield Check("models", FAIL, f"the configured instrument {config.instrument!r} is not in {library.folder}",
                    f"use one of {', '.join(library.names)}")
    if not os.access(library.folder, os.W_OK):
        yield Check("models", WARN, f"{library.folder} is read-only for this user",
                    "the trainer cannot deliver new instruments here; give it write access if it should")


def check_sound(config: ServeConfig) -> Iterable[Check]:
    if config.output == "null":
        yield Check("sound", OK, "output null: no sound card needed")
        return
    try:
        import sounddevice as sd
    except (OSError, ImportError) as exc:
        status = FAIL if config.output == "sound" else WARN
        yield Check("sound", status, f"PortAudio is not available ({exc}); the server would play to the null output",
                    "apt-get install libportaudio2")
        return
    from .playout import SoundDeviceError, find_device

    try:
        idx, info = find_device(config.sound_device, config.hostapi)
    except SoundDeviceError as exc:
        status = FAIL if config.output == "sound" else WARN
        yield Check("sound", status, f"{exc}; the server would play to the null output",
                    "plug in a sound card, start JACK (jackd -d alsa ... or -d dummy), or set output = \"null\"")
        return
    api = sd.query_hostapis(info["hostapi"])["name"]
    yield Check("sound", OK, f"output device {idx}: {info['name']} ({api}), default rate {info['default_samplerate']:.0f} Hz")
    channels = config.output_channels
    if channels > int(info["max_output_channels"]):
        status = FAIL if config.output == "sound" else WARN
        yield Check("sound", status, f"{info['name']} offers {info['max_output_channels']} output channel(s), "
                    f"output_channels asks for {channels}; the server would play to the null output",
                    "lower output_channels, or give the card more (jackd -d dummy -P N, a multichannel interface)")
        return
    rate = config.sample_rate or 22050
    try:
        sd.check_output_settings(device=idx, channels=channels, dtype="float32", samplerate=rate)
    except Exception as exc:  # noqa: BLE001 - PortAudio's errors vary
        yield Check("sound", WARN, f"it cannot play {rate} Hz ({exc}); the server will use {info['default_samplerate']:.0f} Hz",
                    "set sample_rate to a rate the card supports")


def _port_free(host: str, port: int, kind: int) -> str | None:
    if port == 0:
        return None
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        s.bind((host, port))
        return None
    except OSError as exc:
        return "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    finally:
        s.close()


def check_ports(config: ServeConfig) -> Iterable[Check]:
    udp = _port_free(config.host, config.osc_port, socket.SOCK_DGRAM)
    tcp = _port_free(config.host, config.ws_port, socket.SOCK_STREAM)
    if tcp == "in use":
        try:
            probe = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
            with urllib.request.urlopen(f"http://{probe}:{config.ws_port}/health", timeout=2) as r:
                health = json.loads(r.read())
            yield Check("ports", OK, f"a sensorsynth server already runs on {config.ws_port}: up "
                                     f"{health.get('uptime_s')} s, under-runs {health.get('underruns')}")
            return
        except Exception:  # noqa: BLE001 - whatever holds the port is not a healthy sensorsynth
            pass
    for name, port, why in (("OSC (UDP)", config.osc_port, udp), ("web (TCP)", config.ws_port, tcp)):
        if why is None:
            yield Check("ports", OK, f"{name} port {port} on {config.host} is free")
        else:
            yield Check("ports", FAIL, f"{name} port {port} on {config.host}: {why}",
                        f"stop what uses it (ss -lunpt | grep {port}) or choose another port")


def check_realtime() -> Iterable[Check]:
    result: list[str] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            result.append("")
        except (OSError, AttributeError) as exc:
            result.append(getattr(exc, "strerror", None) or str(exc))

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    if result and result[0] == "":
        yield Check("realtime", OK, "the render thread may use SCHED_FIFO priority")
    else:
        yield Check("realtime", WARN, f"no realtime priority for the render thread ({result[0] if result else '?'})",
                    "systemd: LimitRTPRIO=20 (deploy/systemd/sensorsynth.service does this); "
                    "otherwise @audio - rtprio 20 in /etc/security/limits.d/")


def preemption_model(debugfs: str | None, cmdline: str, kernel_config: str | None) -> str | None:
    """The kernel's preemption model (none, voluntary, full, lazy, rt) from what the machine shows, best
    source first: the active one in debugfs (``none voluntary (full)``), a ``preempt=`` boot parameter, the
    build's default in its config. None when none of them says."""
    if debugfs:
        for word in debugfs.split():
            if word.startswith("(") and word.endswith(")"):
                return word.strip("()")
    for arg in cmdline.split():
        if arg.startswith("preempt="):
            return arg.split("=", 1)[1]
    if kernel_config:
        options = {line.split("=", 1)[0] for line in kernel_config.splitlines() if line.endswith("=y")}
        for option, model in (("CONFIG_PREEMPT_RT", "rt"), ("CONFIG_PREEMPT", "full"),
                              ("CONFIG_PREEMPT_LAZY", "lazy"), ("CONFIG_PREEMPT_VOLUNTARY", "voluntary"),
                              ("CONFIG_PREEMPT_NONE", "none")):  # fmt: skip
            if option in options:
                return model
    return None


def _read(path: str, opener=open) -> str | None:
    try:
        with opener(path, "rt") as handle:
            return handle.read()
    except (OSError, EOFError, UnicodeDecodeError):
        return None


def check_kernel() -> Iterable[Check]:
    import gzip

    config = _read("/proc/config.gz", gzip.open) or _read(f"/boot/config-{os.uname().release}")
    model = preemption_model(_read("/sys/kernel/debug/sched/preempt"), _read("/proc/cmdline") or "", config)
    if model is None:
        yield Check("kernel", OK, "preemption model unknown (no /proc/config.gz, /boot/config or preempt=)")
    elif model == "none":
        yield Check("kernel", WARN, "kernel preemption 'none': a realtime audio thread can wake several ms late "
                                    "under load, so short card periods miss cycles (JACK xruns)",
                    "boot with preempt=full (GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot) or a "
                    "realtime kernel; or keep the card's period above what `cyclictest -m -p 80 -D 60` measures")
    else:
        yield Check("kernel", OK, f"kernel preemption '{model}'")


def check_gpu(config: ServeConfig) -> Iterable[Check]:
    if not config.device.startswith("cuda"):
        yield Check("gpu", OK, "renderer on the CPU (numba): no GPU needed")
        return
    from ..render.cuda import cuda_problem, device_name  # the numba-cuda renderer

    if problem := cuda_problem():
        yield Check("gpu", FAIL, f"device {config.device} asked for: {problem}",
                    "install the NVIDIA driver and numba-cuda (pip install -c constraints.txt -e '.[cuda]'), "
                    "or set device = \"cpu\"")
    else:
        yield Check("gpu", OK, f"CUDA (numba-cuda): {device_name()}")


def check_cache() -> Iterable[Check]:
    folder = os.environ.get("NUMBA_CACHE_DIR")
    target = Path(folder) if folder else Path(__file__).resolve().parents[1] / "render" / "__pycache__"
    probe = target if target.exists() else target.parent
    if os.access(probe, os.W_OK):
        yield Check("cache", OK, f"compiled kernels are cached in {target}")
    else:
        yield Check("cache", WARN, f"{target} is not writable: the kernel is compiled at every start (~30 s)",
                    "set NUMBA_CACHE_DIR to a writable folder (the systemd unit does)")


def check_scenes(config: ServeConfig) -> Iterable[Check]:
    """The scenes file, as ``serve`` checks it at start (against the instruments' names in the models folder)."""
    if config.scenes is None:
        return
    from ..mapping.presets import PresetError, load_preset
    from ..protocol.schedule import scene_at
    from ..protocol.scenes import ScenesError, Server, check_against, load_scenes

    folder = Path(config.models)
    names = [folder.stem] if folder.is_file() else sorted(p.stem for p in folder.glob("*.instrument"))
    try:
        presets = [load_preset(name).name for name in config.presets]
    except PresetError:
        presets = None  # the config check names that problem
    try:
        scenes = load_scenes(config.scenes)
        check_against(scenes, Server(names, presets, config.max_voices, config.output_channels),
                      f"{config.scenes}: ")
    except ScenesError as exc:
        yield Check("scenes", FAIL, str(exc), f"mend the file; `sensorsynth scenes check {config.scenes}` shows "
                                              "what the schedule will do")
        return
    if scenes.schedule is None:
        yield Check("scenes", OK, f"{len(scenes.scenes)} scenes, no schedule: starts on {scenes.first}")
        return
    from datetime import datetime, timezone

    m = scene_at(scenes.schedule, datetime.now(timezone.utc))
    when = m.next_at.astimezone(scenes.schedule.zone).strftime("%a %Y-%m-%d %H:%M %Z") if m.next_at else "never"
    yield Check("scenes", OK, f"{len(scenes.scenes)} scenes; now {m.scene}, next {m.next_scene or '-'} at {when}")


def run_checks(config: ServeConfig) -> list[Check]:
    out: list[Check] = []
    for fn in (check_config, check_models, check_scenes, check_sound, check_ports, check_gpu):
        out.extend(fn(config))
    out.extend(check_realtime())
    out.extend(check_kernel())
    out.extend(check_cache())
    return out


def report(checks: list[Check], as_json: bool = False) -> str:
    if as_json:
        return json.dumps([asdict(c) for c in checks], indent=2)
    lines = []
    for c in checks:
        lines.append(f"{c.status:4}  {c.area:8}  {c.message}")
        if c.fix and c.status != OK:
            lines.append(f"{'':14}-> {c.fix}")
    bad = sum(c.status == FAIL for c in checks)
    warn = sum(c.status == WARN for c in checks)
    lines.append(f"{bad} problem(s), {warn} warning(s)" if bad or warn else "all good")
    return "\n".join(lines)
