"""Reliability, measured: load, bad input and faults against real processes on 127.0.0.1; one table.

    python tests/benchmarks/soak.py                      # the full runs (about 25 minutes)
    python tests/benchmarks/soak.py --quick              # every phase, shortened (about 2 minutes)
    python tests/benchmarks/soak.py --phases load,faults --minutes 3

Phases:
- load: OSC at 10,000 messages/s from 50 UDP senders (full vectors, one float per channel, bundles with
  TouchDesigner-style past time tags) for --minutes, 8 voices sounding, block 64, on the JACK dummy card when
  a JACK server runs (else the clock-paced null output); then the same plus 20 WebSocket clients at 60 frames/s
  and 5 browser listeners. Reports under-runs, block time, latency, RSS growth after the first minute.
- bad: --osc-packets mutated OSC packets and --ws-messages broken WebSocket messages (and slow senders that
  never finish a frame); reports crashes, under-runs, every rejected kind and whether status still answers.
- faults: SIGKILL the server and restart it as a supervisor would (time to playing again), a full disk while
  recording (a file-size limit), the sound card vanishing (a private JACK server killed), SIGKILL of a trainer
  worker mid-job and of the queue (jobs lost or completed twice).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

import bench_serve as bs  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from tests.server.conftest import jack_server_running, launch  # noqa: E402
from tests.server.fuzzing import osc_packets, ws_messages  # noqa: E402

ROWS: list[tuple[str, str, str, str]] = []  # phase, measure, value, target


def row(phase: str, measure: str, value, target: str = "") -> None:
    ROWS.append((phase, measure, str(value), target))
    print(f"  {phase:6} {measure:48} {value!s:>18}  {target}", flush=True)


def server_args(args) -> list[str]:
    out = ["--block-size", "64", "--max-voices", "32"]
    if args.output == "sound" or (args.output == "auto" and jack_server_running()):
        out += ["--output", "sound", "--hostapi", "JACK"]
    return out


# ---------------------------------------------------------------------------------------------- load
async def ws_clients(url: str, n: int, fps: float, listeners: int, seconds: float) -> dict:
    stats = {"sent": 0, "audio_bytes": 0, "errors": 0}

    async def player(i: int) -> None:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "hello", "client": f"soak{i}"}))
            await ws.recv()
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < seconds:
                await ws.send(json.dumps({"type": "sensor", "source": "soak", "kind": "raw", "values": [k % 7, 0.5, 0.1]}))
                if k % 15 == 0:
                    await ws.send(json.dumps({"type": "control", "index": k % 16, "value": 0.05}))
                stats["sent"] += 1
                k += 1
                await asyncio.sleep(1 / fps)

    async def listener(i: int) -> None:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "hello", "client": f"ear{i}", "audio": True, "monitor": True}))
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                try:
                    m = await asyncio.wait_for(ws.recv(), 1.0)
                except asyncio.TimeoutError:
                    continue
                if isinstance(m, bytes):
                    stats["audio_bytes"] += len(m)
                elif json.loads(m).get("type") == "error":
                    stats["errors"] += 1

    await asyncio.gather(*(player(i) for i in range(n)), *(listener(i) for i in range(listeners)))
    return stats


def phase_load(tmp: Path, args, with_ws: bool) -> None:
    name = "load+ws" if with_ws else "load"
    server = launch(tmp, *server_args(args), record=False)
    seconds = args.minutes * 60
    try:
        time.sleep(2)
        pid = server.proc.pid
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for g in bs.datagrams(8)[::6]:
            sock.sendto(g, ("127.0.0.1", server.osc_port))
        before = bs.health(server)
        rss: list[tuple[float, float]] = []
        result: dict = {}
        t0 = time.monotonic()

        def run_flood() -> None:
            result["sent"] = bs.flood(server.osc_port, 50, 10000.0, seconds, 8)

        th = threading.Thread(target=run_flood)
        th.start()
        if with_ws:
            ws_thread = threading.Thread(target=lambda: result.update(
                ws=asyncio.run(ws_clients(server.ws_url, 20, 60.0, 5, seconds))))
            ws_thread.start()
        while th.is_alive():
            time.sleep(1.0)
            rss.append((time.monotonic() - t0, bs.rss_mb(pid)))
        if with_ws:
            ws_thread.join()
        time.sleep(0.5)
        after = bs.health(server)
        row(name, "output", after["output"]["description"][:40])
        row(name, "OSC messages sent / s", f"{result['sent'] / seconds:.0f}", "10000")
        row(name, "under-runs", after["underruns"] - before["underruns"], "0")
        a, b = after.get("audio_path", {}), before.get("audio_path", {})
        parts = [f"{k.replace('_', ' ')} {a[k] - b.get(k, 0)}" for k in ("not_rendered", "device_underflow", "late")
                 if k in a]
        if parts:
            row(name, "  of which", ", ".join(parts))
        row(name, "audio block time p99 (µs)", after["block_us"]["p99"], "< 2902")
        row(name, "latency p50 / p99 (ms)", f"{after['latency_ms']['p50']} / {after['latency_ms']['p99']}", "p99 <= 4.9")
        row(name, "to the card p99 (ms)", after["to_card_ms"]["p99"])
        base = next((m for t, m in rss if t >= min(60.0, seconds / 4)), rss[0][1])
        row(name, "RSS after the first minute -> end (MB)", f"{base:.0f} -> {rss[-1][1]:.0f}",
            f"growth {100 * (rss[-1][1] - base) / base:+.1f} % (<= 5 %)")
        if with_ws:
            ws = result.get("ws", {})
            row(name, "WS frames sent / audio MB received", f"{ws.get('sent')} / {ws.get('audio_bytes', 0) / 1e6:.1f}")
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- bad input
def phase_bad(tmp: Path, args) -> None:
    server = launch(tmp, *server_args(args), record=False)
    try:
        time.sleep(2)
        before = bs.health(server)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0 = time.monotonic()
        for i, p in enumerate(osc_packets(seed=7, n=args.osc_packets)):
            sock.sendto(p, ("127.0.0.1", server.osc_port))
            if i % 200 == 199:
                time.sleep(0.01)
        osc_s = time.monotonic() - t0

        async def ws_abuse() -> int:
            sent = 0
            per = args.ws_messages // 10
            async def one(seed: int) -> None:
                nonlocal sent
                while True:
                    try:
                        async with connect(server.ws_url, max_size=None) as ws:
                            for m in ws_messages(seed, per):
                                await ws.send(m)
                                sent += 1
                                if sent % 50 == 0:
                                    await asyncio.sleep(0)
                            return
                    except Exception:  # noqa: BLE001 - a frame over 1 MiB closes the link: reconnect, go on
                        seed += 1000
                        if sent >= args.ws_messages:
                            return
            await asyncio.gather(*(one(s) for s in range(10)))
            return sent

        slow = []
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", server.ws_port), timeout=5)
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            s.recv(4096)
            s.sendall(b"\x81\xfe\x10\x00\x00\x00\x00\x00{")
            slow.append(s)
        ws_sent = asyncio.run(ws_abuse())
        time.sleep(1.0)
        alive = server.proc.poll() is None
        status = bs.health(server) if alive else {}
        reply = False
        try:
            from tests.server.helpers import osc_status

            reply = "underruns" in osc_status(server.osc_port)
        except Exception:  # noqa: BLE001
            pass
        for s in slow:
            s.close()
        row("bad", "OSC packets sent (mutated)", f"{args.osc_packets} in {osc_s:.0f} s")
        row("bad", "WebSocket messages sent (broken)", ws_sent)
        row("bad", "server crashes", 0 if alive else 1, "0")
        row("bad", "under-runs during", status.get("underruns", -1) - before["underruns"], "0")
        kinds = {k: v for k, v in status.get("rejected", {}).items() if v}
        row("bad", "rejected kinds counted", len(kinds))
        for k, v in sorted(kinds.items()):
            row("bad", f"  {k}", v)
        row("bad", "OSC status answers afterwards", "yes" if reply else "NO", "yes")
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- faults
def first_sound_after(server, t_start: float, timeout: float = 10.0) -> float | None:
    """Seconds from t_start until the recording holds sound (controls are sent meanwhile)."""
    from pythonosc.udp_client import SimpleUDPClient

    import numpy as np
    import soundfile as sf

    client = SimpleUDPClient("127.0.0.1", server.osc_port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.send_message("/sensorsynth/control", [1.0] * 16)
        time.sleep(0.05)
        try:
            data, _ = sf.read(str(server.record_path), dtype="float32")
        except RuntimeError:
            continue
        if data.size and float(np.abs(data).max()) > 0.01:
            return time.monotonic() - t_start
    return None


def phase_faults(tmp: Path, args) -> None:
    # 1. kill -9 the server, restart it the way systemd would, time until it plays again
    models = tmp / "models"
    models.mkdir(exist_ok=True)
    shutil.copy(REPO / "models" / "guitar.instrument", models)
    first = launch(tmp, "--instrument", "guitar", models=models)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    t0 = time.monotonic()
    again = launch(tmp, "--instrument", "guitar", models=models)
    ready = time.monotonic() - t0
    sound = first_sound_after(again, t0)
    same = bs.health(again)["instrument"]
    again.stop()
    row("faults", "server SIGKILLed: restart to ready (s)", f"{ready:.2f}")
    row("faults", "server SIGKILLed: restart to first sound (s)", f"{sound:.2f}" if sound else "never",
        f"plays {same} again")

    # 2. a full disk while recording: a file-size limit makes the WAV's writes fail (EFBIG), as ENOSPC would
    limit = 200_000
    server = launch(tmp, models=models, env={"SENSORSYNTH_SOAK": "1"},
                    preexec=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    time.sleep(max(3.0, limit / 44100 + 2))
    h = bs.health(server)
    out = server.output()
    server.stop()
    row("faults", "full disk while recording: recording stopped", "yes" if h["recording"]["failed"] else "NO", "yes")
    row("faults", "full disk: log line / sound goes on", f"{'recording' in out and 'stopped' in out} / {h['running']}",
        "True / True")

    # 3. the sound card vanishing: a private JACK server, killed while playing
    if shutil.which("jackd"):
        name = "sensorsynth-soak-vanish"  # fixed: a killed server's registry slot is reused, not leaked
        jack = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "22050", "-p", "64"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not jack_server_running(name):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the private JACK server {name} did not start")
            time.sleep(0.2)
        time.sleep(0.5)
        server = launch(tmp, "--output", "sound", "--hostapi", "JACK", models=models,
                        env={"JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"})
        time.sleep(1.5)
        jack.kill()
        jack.wait()
        t0 = time.monotonic()
        fell_back = None
        while time.monotonic() - t0 < 10:
            h = bs.health(server)
            if "null" in h["output"]["description"]:
                fell_back = time.monotonic() - t0
                break
            time.sleep(0.1)
        alive = server.proc.poll() is None
        server.stop()
        row("faults", "sound card vanished: falls back to null (s)", f"{fell_back:.2f}" if fell_back else "NO",
            f"alive {alive}")

    # 4. trainer: SIGKILL a worker mid-job, SIGKILL the queue
    try:
        from tests.trainer import helpers as th  # the trainer's own test helpers
    except ImportError:
        th = None
    if th is not None and hasattr(th, "soak_faults"):
        for measure, value, target in th.soak_faults(tmp):
            row("faults", measure, value, target)
    else:
        row("faults", "trainer faults", "see tests/trainer (SIGKILL worker and queue)")


def jack_period() -> int | None:
    """The running JACK server's period in frames (``jack_bufsize`` prints it), or None."""
    if not (shutil.which("jack_bufsize") and jack_server_running()):
        return None
    out = subprocess.run(["jack_bufsize"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"(\d+)", out)
    return int(match.group(1)) if match else None


def phase_platform(seconds: float, period_us: float) -> None:
    """How late this machine wakes a realtime thread before any load (``cyclictest``, from rt-tests,
    when installed): a JACK period shorter than these wake-ups misses cycles whatever the program does."""
    if not shutil.which("cyclictest"):
        row("platform", "realtime wake-up latency", "cyclictest not installed (apt-get install rt-tests)")
        return
    out = subprocess.run(["cyclictest", "-m", "-p", "80", "-t", "2", "-a", "-i", "1000", "-D", str(int(seconds)),
                          "-q", "-h", "20000"], capture_output=True, text=True, timeout=seconds + 60).stdout
    late = 0
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit() and int(parts[0]) > period_us:
            late += sum(int(x) for x in parts[1:])
    worst = re.search(r"# Max Latencies:\s+(.*)", out)
    row("platform", f"realtime wake-up latency before the load, {seconds:.0f} s: max per core (µs)",
        worst.group(1).strip() if worst else "?")
    row("platform", f"wake-ups later than one {period_us / 1000:.1f} ms period", late, "0 for xrun-free audio")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default="load,bad,faults")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--osc-packets", type=int, default=1_000_000)
    ap.add_argument("--ws-messages", type=int, default=100_000)
    ap.add_argument("--output", choices=["auto", "null", "sound"], default="auto")
    ap.add_argument("--quick", action="store_true", help="every phase, shortened (what the tests run)")
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.osc_packets, args.ws_messages = 0.25, 20_000, 2_000
    phases = args.phases.split(",")
    period = jack_period()
    print(f"soak: {', '.join(phases)}; {os.cpu_count()} cores; JACK "
          f"{f'running, period {period} frames' if period else 'absent'}")
    if "load" in phases:
        row("platform", "JACK period (frames)", period if period else "no JACK")
        phase_platform(30 if not args.quick else 2, 1e6 * (period or 64) / 22050)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "load" in phases:
            phase_load(tmp, args, with_ws=False)
            phase_load(tmp, args, with_ws=True)
        if "bad" in phases:
            phase_bad(tmp, args)
        if "faults" in phases:
            phase_faults(tmp, args)
    print("\n| phase | measure | value | target |\n| --- | --- | ---: | --- |")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
