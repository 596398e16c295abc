"""The live server's figures: added latency, the same to the sound card, behaviour under an OSC flood, CPU.

    python tests/benchmarks/bench_serve.py                    # null output (clock-paced), all phases
    python tests/benchmarks/bench_serve.py --output sound     # through a sound card (e.g. JACK's dummy driver)
    python tests/benchmarks/bench_serve.py --load-seconds 10  # a shorter flood

Each phase starts a fresh ``sensorsynth serve`` process (block 64, 22050 Hz) and reads its /health:
latency is measured inside the server from the datagram's arrival (monotonic ns when the event loop reads it)
to the moment the block holding the event's first sample leaves the renderer; "to card" adds the play-out
ring ahead of that block. Senders are separate processes on 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pythonosc.osc_bundle_builder import OscBundleBuilder  # noqa: E402
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from tests.server.conftest import launch  # noqa: E402

K = 16


def health(server) -> dict:
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        return json.loads(r.read())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def datagrams(voices: int) -> list[bytes]:
    """A mix of what real senders send: full vectors, one float per channel (TouchDesigner), bundles of
    channels with a past time tag (TouchDesigner's relative stamps)."""
    out = []
    for v in range(voices):
        m = OscMessageBuilder(f"/sensorsynth/voice/{v}/control")
        for k in range(K):
            m.add_arg(0.05 if k % 4 == v % 4 else 0.0, "f")
        out.append(m.build().dgram)
        for k in range(0, K, 4):
            c = OscMessageBuilder(f"/sensorsynth/voice/{v}/control/{k}")
            c.add_arg(0.05, "f")
            out.append(c.build().dgram)
        b = OscBundleBuilder(time.time() - 5.0)
        for k in range(3):
            c = OscMessageBuilder(f"/sensorsynth/voice/{v}/control/{k + 1}")
            c.add_arg(0.03, "f")
            b.add_content(c.build())
        out.append(b.build().dgram)
    return out


def sender(port: int, n_sockets: int, rate: float, seconds: float, voices: int, sent) -> None:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n_sockets)]
    grams = datagrams(voices)
    tick = 0.005
    per_tick = rate * tick
    t0 = time.perf_counter()
    n = 0
    owed = 0.0
    i = 0
    while True:
        now = time.perf_counter()
        if now - t0 >= seconds:
            break
        owed += per_tick
        while owed >= 1.0:
            socks[i % n_sockets].sendto(grams[i % len(grams)], ("127.0.0.1", port))
            i += 1
            n += 1
            owed -= 1.0
        nxt = t0 + (n / rate)
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    sent.value = n
    for s in socks:
        s.close()


def flood(port: int, senders: int, total_rate: float, seconds: float, voices: int, procs: int = 2) -> int:
    ctx = mp.get_context("spawn")
    counters = [ctx.Value("q", 0) for _ in range(procs)]
    ps = [ctx.Process(target=sender, args=(port, senders // procs, total_rate / procs, seconds, voices, c))
          for c in counters]
    for p in ps:
        p.start()
    for p in ps:
        p.join(seconds + 30)
    return sum(c.value for c in counters)


def phase_cpu(tmp: Path, args, playing: bool) -> float:
    server = launch(tmp, *args.server_args, record=False)
    try:
        time.sleep(3)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gram = datagrams(1)[0]
        c0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
        while time.monotonic() - t0 < args.cpu_seconds:
            if playing:
                sock.sendto(gram, ("127.0.0.1", server.osc_port))
            time.sleep(0.1)
        load = (cpu_seconds(server.proc.pid) - c0) / (time.monotonic() - t0)
        sock.close()
        return load
    finally:
        server.stop()


def phase_latency(tmp: Path, args, extra: list[str]) -> dict:
    server = launch(tmp, *args.server_args, *extra, record=False)
    try:
        time.sleep(2)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gram = datagrams(1)[0]
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.latency_seconds:
            sock.sendto(gram, ("127.0.0.1", server.osc_port))
            time.sleep(0.0037)  # ~270/s, off the block grid so arrivals fall everywhere in a block
        time.sleep(0.5)
        sock.close()
        return health(server)
    finally:
        server.stop()


def phase_load(tmp: Path, args) -> dict:
    server = launch(tmp, *args.server_args, record=False)
    try:
        time.sleep(2)
        pid = server.proc.pid
        # 8 voices sounding before the flood starts
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for g in datagrams(args.voices)[:: 6]:
            sock.sendto(g, ("127.0.0.1", server.osc_port))
        before = health(server)
        rss = []
        t0 = time.monotonic()
        ctx = mp.get_context("spawn")
        result = ctx.Queue()

        def run():
            result.put(flood(server.osc_port, args.senders, args.rate, args.load_seconds, args.voices))

        import threading

        th = threading.Thread(target=run)
        th.start()
        while th.is_alive():
            time.sleep(1.0)
            rss.append((time.monotonic() - t0, rss_mb(pid)))
        sent = result.get()
        time.sleep(0.5)
        after = health(server)
        return {"before": before, "after": after, "sent": sent, "rss": rss, "seconds": time.monotonic() - t0}
    finally:
        server.stop()


def blaster(port: int, seconds: float, sent) -> None:
    """One sender, as fast as it can: one 16-float control message for voice 0 per datagram."""
    m = OscMessageBuilder("/sensorsynth/control")
    for k in range(K):
        m.add_arg(0.02 if k % 5 == 0 else 0.0, "f")
    gram = m.build().dgram
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    addr = ("127.0.0.1", port)
    n = 0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        for _ in range(100):
            try:
                sock.sendto(gram, addr)
                n += 1
            except OSError:
                pass
    sent.value = n
    sock.close()


def phase_saturate(tmp: Path, args) -> dict:
    """One sender blasting 16-float control messages at its full speed for --saturate-seconds: what the server
    reads per second, its CPU per 10,000 messages, and whether the audio kept its deadlines."""
    server = launch(tmp, *args.server_args, record=False)
    try:
        time.sleep(2)
        pid = server.proc.pid
        before = health(server)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        ctx = mp.get_context("spawn")
        sent = ctx.Value("q", 0)
        p = ctx.Process(target=blaster, args=(server.osc_port, args.saturate_seconds, sent))
        p.start()
        p.join(args.saturate_seconds + 30)
        cpu, wall = cpu_seconds(pid) - c0, time.monotonic() - t0
        time.sleep(0.3)
        after = health(server)
        return {"before": before, "after": after, "sent": sent.value, "cpu": cpu, "wall": wall}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", choices=["null", "sound"], default="null")
    ap.add_argument("--hostapi", default="JACK")
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--cpu-seconds", type=float, default=10.0)
    ap.add_argument("--senders", type=int, default=50)
    ap.add_argument("--rate", type=float, default=10000.0)
    ap.add_argument("--voices", type=int, default=8)
    ap.add_argument("--saturate-seconds", type=float, default=5.0)
    ap.add_argument("--phases", default="cpu,latency,load,saturate")
    ap.add_argument("--server-args", default="", help="more options for the server, e.g. '--prefill-blocks 2'")
    args = ap.parse_args()
    args.server_args = ["--block-size", str(args.block_size), "--output", args.output, *args.server_args.split()]
    if args.output == "sound":
        args.server_args += ["--hostapi", args.hostapi]
    phases = args.phases.split(",")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"sensorsynth serve, block {args.block_size} at 22050 Hz ({1000 * args.block_size / 22050:.2f} ms), "
              f"output {args.output}, {os.cpu_count()} cores {' '.join(args.server_args)}")
        if "cpu" in phases:
            idle = phase_cpu(tmp, args, playing=False)
            one = phase_cpu(tmp, args, playing=True)
            print(f"CPU, share of one core: idle {idle:.3f}, one voice playing (10 events/s) {one:.3f}")
        if "latency" in phases:
            for mode in (["--latency", "asap"], ["--latency", "fixed", "--fixed-delay-ms", "10"]):
                h = phase_latency(tmp, args, mode)
                lat, card = h["latency_ms"], h["to_card_ms"]
                print(f"latency {mode[1]:5}: arrival -> leaves renderer p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
                      f"max {lat['max']:.2f} ms ({lat['count']} events); to card p50 {card['p50']:.2f} / p99 "
                      f"{card['p99']:.2f} ms (+ device {card['device_ms']} ms); block p99 {h['block_us']['p99']:.0f} µs; "
                      f"under-runs {h['underruns']}")
        if "load" in phases:
            r = phase_load(tmp, args)
            a, b = r["after"], r["before"]
            got = a["osc"]["messages"] if "osc" in a and "messages" in a["osc"] else None
            rss = r["rss"]
            base = next((m for t, m in rss if t >= 60.0), rss[len(rss) // 4][1] if rss else float("nan"))
            growth = (rss[-1][1] - base) / base * 100 if rss else float("nan")
            print(f"flood: {args.senders} UDP senders, {r['sent']} messages in {args.load_seconds:.0f} s "
                  f"({r['sent'] / args.load_seconds:.0f}/s), server read {got}; {args.voices} voices")
            print(f"  under-runs {a['underruns'] - b['underruns']} (target 0); latency p50 {a['latency_ms']['p50']:.2f} ms, "
                  f"p99 {a['latency_ms']['p99']:.2f} ms (target <= {1000 * args.block_size / 22050 + 2:.1f}); "
                  f"to card p99 {a['to_card_ms']['p99']:.2f} ms; audio thread block p50 {a['block_us']['p50']:.0f} µs, "
                  f"p99 {a['block_us']['p99']:.0f} µs, max {a['block_us']['max']:.0f} µs")
            ap_a, ap_b = a.get("audio_path") or {}, b.get("audio_path") or {}
            parts = {k: ap_a.get(k, 0) - ap_b.get(k, 0) for k in ("not_rendered", "device_underflow", "late")}
            print(f"  under-runs by cause: {parts} (device_underflow: PortAudio's flag, i.e. the card's own xruns)")
            print(f"  events applied {a['events']['events']}, dropped {a['events'].get('dropped')}, "
                  f"rejected {sum(a['rejected'].values())}; server CPU {a['cpu_load']:.2f} cores; "
                  f"RSS {rss[0][1] if rss else 0:.0f} -> {rss[-1][1] if rss else 0:.0f} MB "
                  f"(growth after the first part {growth:+.1f} %)")
        if "saturate" in phases:
            r = phase_saturate(tmp, args)
            a, b = r["after"], r["before"]
            read = a["osc"]["messages"] - b["osc"]["messages"]
            secs = args.saturate_seconds
            per_s = read / secs
            ap_a, ap_b = a.get("audio_path") or {}, b.get("audio_path") or {}
            under = a["underruns"] - b["underruns"]
            print(f"OSC saturation: one sender blasting 16-float controls for {secs:.0f} s: sent {r['sent'] / secs:,.0f}/s, "
                  f"server read {per_s:,.0f}/s (target >= 100,000/s; compiled lane {(a['osc'].get('fast', 0) - b['osc'].get('fast', 0)) / secs:,.0f}/s), commands "
                  f"{(a['osc']['commands'] - b['osc']['commands']) / secs:,.0f}/s; server CPU {r['cpu'] / r['wall']:.2f} "
                  f"cores, {1e4 * r['cpu'] / max(read, 1) * 1000:.1f} ms of CPU per 10,000 messages")
            print(f"  under-runs {under} (target 0; by cause "
                  f"{ {k: ap_a.get(k, 0) - ap_b.get(k, 0) for k in ('not_rendered', 'device_underflow', 'late')} }); "
                  f"latency p99 {a['latency_ms']['p99']:.2f} ms (target <= {1000 * args.block_size / 22050 + 2:.1f}); "
                  f"audio block p99 {a['block_us']['p99']:.0f} µs; events dropped {a['events'].get('dropped')}, "
                  f"inbox full {a['events'].get('inbox_full')}, rejected {sum(a['rejected'].values()) - sum(b['rejected'].values())}")


if __name__ == "__main__":
    main()
