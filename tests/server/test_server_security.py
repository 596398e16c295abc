"""Issue #19, the server's edges: each finding of the review as a test against a real ``sensorsynth serve``
process on 127.0.0.1 (real sockets, raw HTTP where a browser would not send what an attacker does). Each of
these failed on the code before the fix; the threat model is docs/server-security.md."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import BUNDLED, REPO
from .test_record import Socket, free_port, health, marimba, wait_until, wav_bytes

ADMIN = "admin-9Qx2vLk7TzP4wRm1"


def token_of(tmp_path: Path) -> str:
    """The generated token, from the newest ready file (mode 0600) the conftest's launch asked for."""
    ready = max(tmp_path.glob("ready-*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(ready.read_text())["token"]


def config_file(tmp_path: Path, **options) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    path = tmp_path / f"security-{time.monotonic_ns()}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def raw_http(port: int, request_lines: list[str], timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request as written (duplicate or forged headers included): status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("\r\n".join(request_lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if b"\r\n\r\n" in data and b"content-length" in head.lower():
                length = int([h for h in head.decode().split("\r\n") if h.lower().startswith("content-length")][0]
                             .split(":")[1])
                if len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def upgrade(port: int, host: str, origin: str | None = None, path: str = "/ws") -> list[str]:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return lines


def try_ws(url: str, origin: str | None = None, source: str | None = None) -> str:
    """Open the WebSocket (from ``source``, an address of the loopback range, when given) and say hello."""
    extra = {"source_address": (source, 0)} if source else {}
    try:
        with connect(url, origin=origin, open_timeout=10, **extra) as ws:
            ws.send(json.dumps({"type": "hello"}))
            return json.loads(ws.recv(timeout=10))["type"]
    except InvalidStatus as exc:
        return f"refused {exc.response.status_code}"


def osc(address: str, *floats: float) -> bytes:
    from pythonosc.osc_message_builder import OscMessageBuilder

    m = OscMessageBuilder(address)
    for f in floats:
        m.add_arg(float(f), "f")
    return m.build().dgram


# ------------------------------------------------------------------------------------ start-up


@pytest.mark.parametrize("token, why", [
    ("change-me-to-a-long-random-string", "placeholder"),
    ("short-token", "at least 16"),
])
def test_placeholder_and_short_tokens_stop_the_server_at_start(tmp_path, token, why):
    models = tmp_path / "models"
    models.mkdir()
    (models / BUNDLED.name).write_bytes(BUNDLED.read_bytes())
    r = subprocess.run([sys.executable, "-m", "sensorsynth", "serve", str(models), "--output", "null", "--host",
                        "127.0.0.1", "--osc-port", "0", "--ws-port", "0", "--ws-token", token],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ws_token" in lines[0] and why in lines[0], r.stderr
    assert "secrets.token_urlsafe" in lines[0], "the line says how to make a good one"


def test_the_shipped_config_holds_no_usable_token():
    from sensorsynth.server.config import load_config

    assert load_config(REPO / "deploy" / "sensorsynth.toml").ws_token is None


# ------------------------------------------------------------------------------------ HTTP and the upgrade


@pytest.fixture
def server(start_server, tmp_path):
    """A server with a generated token, small per-address caps, a short hello deadline and an admin token;
    its trainer endpoint answers nothing (fits stay 'uploaded' for seconds, long enough to be fought over)."""
    cfg = config_file(tmp_path, admin_token=ADMIN, max_voices_per_ip=2, max_clients_per_ip=4, hello_timeout_s=1.5,
                      osc_messages_per_s=40.0, trainer=f"tcp://127.0.0.1:{free_port()}")
    handle = start_server("--config", cfg, record=False)
    handle.token = token_of(tmp_path)
    return handle


def test_dns_rebinding_host_is_refused_before_the_upgrade(server):
    port = server.ws_port
    status, _, body = raw_http(port, upgrade(port, f"rebind.example:{port}", f"http://rebind.example:{port}"))
    assert status == 403 and b"rebind" in body and b"allowed_hosts" in body
    status, _, _ = raw_http(port, ["GET /health HTTP/1.1", f"Host: rebind.example:{port}", "Connection: close"])
    assert status == 403, "a rebound page cannot read the status either"
    status, _, _ = raw_http(port, upgrade(port, f"127.0.0.1:{port}"))
    assert status == 101, "this machine's own address is fine (a script without Origin, no token)"
    status, _, _ = raw_http(port, upgrade(port, f"localhost:{port}"))
    assert status == 101
    assert health(server.url)["rejected"]["http:bad_host"] == 2


def test_a_browser_origin_needs_the_token_even_from_this_machine(server):
    assert try_ws(server.ws_url, origin=server.url) == "refused 403"
    assert try_ws(server.ws_url + "?token=" + server.token, origin=server.url) == "welcome"
    assert try_ws(server.ws_url) == "welcome", "a loopback script without Origin needs no generated token"


def test_duplicate_headers_get_400_and_no_traceback(server):
    port = server.ws_port
    for lines in (["GET /health HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Host: 127.0.0.1:{port}", "Connection: close"],
                  upgrade(port, f"127.0.0.1:{port}", server.url) + [f"Origin: {server.url}"],
                  ["GET / HTTP/1.1", f"Host: 127.0.0.1:{port}", "Origin: a", "Origin: b", "Connection: close"]):
        status, _, body = raw_http(port, lines)
        assert status == 400 and b"more than one" in body, (status, body)
    time.sleep(0.3)
    assert "Traceback" not in server.output() and "internal error" not in server.output()


def test_pages_carry_the_security_headers(server):
    for path in ("/", "/phone", "/static/live.js", "/health", "/nothing-here"):
        status, headers, _ = raw_http(server.ws_port, [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{server.ws_port}",
                                                       "Connection: close"])
        assert status in (200, 404)
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert headers["referrer-policy"] == "no-referrer" and headers["x-content-type-options"] == "nosniff"


@pytest.fixture
def lan_server(start_server, tmp_path):
    """A server that holds this machine's own clients to the per-address caps and the OSC sender rate
    (``local_uncapped = false``), as it holds every LAN address: so the caps are tested on loopback only
    (127.0.0.x), with no traffic to any other address."""
    cfg = config_file(tmp_path, max_voices_per_ip=2, max_clients_per_ip=4, osc_messages_per_s=40.0,
                      local_uncapped=False)
    handle = start_server("--config", cfg, record=False)
    handle.token = token_of(tmp_path)
    handle.lan_ws = f"ws://127.0.0.1:{handle.ws_port}/ws?token={handle.token}"
    return handle


def test_one_address_gets_a_share_of_voices_and_client_slots(lan_server):
    server = lan_server
    url = server.lan_ws
    socks = [Socket(url) for _ in range(3)]
    try:
        voices = []
        for s in socks:
            s.send({"type": "hello"})
            voices.append(s.expect(lambda m: m["type"] == "welcome")["voice"])
        assert voices[0] is not None and voices[1] is not None and voices[2] is None, voices
        socks[2].send({"type": "gain", "gain": 0.5})
        err = socks[2].error("gain")
        assert err["code"] == "no_voice" and "your address" in err["message"]
        fourth = Socket(url)
        fourth.send({"type": "hello"})
        fourth.expect(lambda m: m["type"] == "welcome")
        assert try_ws(url) == "refused 503", "the fifth connection from one address"
        owners = [v["owner"] for v in health(server.url)["voices"]]
        assert sum(o is not None and o.startswith("ws") for o in owners) == 2, owners
        assert try_ws(url, source="127.0.0.2") == "welcome", "another address has its own share"
        fourth.close()
        assert health(server.url)["rejected"]["ws:too_many_from_address"] >= 1
    finally:
        for s in socks:
            s.close()


def test_a_connection_that_never_says_hello_is_closed(server):
    with connect(server.ws_url, open_timeout=10) as silent, connect(server.ws_url, open_timeout=10) as polite:
        polite.send(json.dumps({"type": "hello"}))
        assert json.loads(polite.recv(timeout=5))["type"] == "welcome"
        t0 = time.monotonic()
        with pytest.raises(Exception) as closed:
            silent.recv(timeout=6)
        assert 1.0 < time.monotonic() - t0 < 5.0
        assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1008
        polite.send(json.dumps({"type": "status"}))
        assert json.loads(polite.recv(timeout=5))["type"] == "status", "who said hello stays"
    assert health(server.url)["rejected"]["ws:no_hello"] == 1


# ------------------------------------------------------------------------------------ uploads and fits


def flac_bomb() -> bytes:
    """The review's clip: a few kB of FLAC whose header says 655,350 Hz × 8 channels (40 MiB decoded)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((655_350, 8), np.float32), 655_350, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def test_the_flac_bomb_is_refused_from_its_header(server):
    data = flac_bomb()
    assert len(data) < 20_000
    s = Socket(server.ws_url)
    try:
        s.send({"type": "hello"})
        s.expect(lambda m: m["type"] == "welcome")
        s.send({"type": "upload", "name": "bomb", "size": len(data)})
        s.send(data)
        err = s.error("upload")
        assert err["code"] == "too_large" and "655350 Hz" in err["message"] and "96000" in err["message"]
    finally:
        s.close()


def test_replacing_an_instrument_needs_the_admin_token(server):
    clip, rate = marimba(0.5)
    data = wav_bytes(clip, rate)
    s = Socket(server.ws_url)
    try:
        s.send({"type": "hello"})
        s.expect(lambda m: m["type"] == "welcome")
        s.send({"type": "upload", "name": "guitar", "size": len(data), "replace": True})
        err = s.error("upload")
        assert err["code"] == "forbidden" and "admin" in err["message"]
        s.send({"type": "upload", "name": "guitar", "size": len(data), "replace": True, "admin": "wrong-admin-token-00"})
        assert s.error("upload")["code"] == "forbidden"
        s.send({"type": "upload", "name": "guitar", "size": len(data), "replace": True, "admin": ADMIN})
        s.send(data)
        fit = s.expect(lambda m: m["type"] == "fit")
        assert fit["state"] == "uploaded" and fit["name"] == "guitar", fit
    finally:
        s.close()


def test_a_fit_belongs_to_the_connection_that_started_it(server):
    clip, rate = marimba(0.5)
    data = wav_bytes(clip, rate)
    owner, other = Socket(server.ws_url), Socket(server.ws_url)
    try:
        for s in (owner, other):
            s.send({"type": "hello"})
            s.expect(lambda m: m["type"] == "welcome")
        owner.send({"type": "upload", "name": "mine", "size": len(data)})
        owner.send(data)
        job = owner.expect(lambda m: m["type"] == "fit")["job"]
        assert len(job) == 32
        for kind in ("cancel", "watch"):
            other.send({"type": kind, "job": job})
            err = other.error(kind)
            assert err["code"] == "forbidden", err
            other.send({"type": kind, "job": job[:2]})
            assert other.error(kind)["code"] == "bad_schema", "no prefixes"
        owner.send({"type": "cancel", "job": job})
        end = owner.fit_end(30)
        assert end["state"] in ("cancelled", "failed"), end  # (the silent trainer may fail it first)
    finally:
        owner.close()
        other.close()


# ------------------------------------------------------------------------------------ OSC


def test_osc_cannot_play_a_websocket_clients_voice(server):
    s = Socket(server.ws_url)
    try:
        s.send({"type": "hello"})
        voice = s.expect(lambda m: m["type"] == "welcome")["voice"]
        free = next(v["voice"] for v in health(server.url)["voices"] if v["owner"] is None)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(osc(f"/sensorsynth/voice/{voice}/gain", 0.0), ("127.0.0.1", server.osc_port))
            u.sendto(osc(f"/sensorsynth/voice/{free}/gain", 0.5), ("127.0.0.1", server.osc_port))
            u.sendto(osc("/sensorsynth/gain", 0.9), ("127.0.0.1", server.osc_port))
        wait_until(lambda: health(server.url)["osc"]["packets"] >= 3, 5, "the datagrams")
        h = health(server.url)
        assert h["rejected"].get("osc:voice_taken") == 1 and h["osc"]["commands"] == 2
    finally:
        s.close()


def test_one_osc_sender_is_rate_limited_and_another_is_not(lan_server):
    server = lan_server
    port = server.osc_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood, socket.socket(socket.AF_INET,
                                                                                   socket.SOCK_DGRAM) as calm:
        flood.bind(("127.0.0.2", 0))  # one address of the loopback range floods; another stays calm
        calm.bind(("127.0.0.3", 0))
        for i in range(400):
            flood.sendto(osc("/sensorsynth/gain", 0.8), ("127.0.0.1", port))
            if i % 50 == 49:
                time.sleep(0.01)  # (a kernel receive buffer capped by rmem_max would drop a tight burst)
        time.sleep(0.3)
        before = health(server.url)["osc"]["commands"]
        for _ in range(5):  # another sender address is not held back by the flood
            calm.sendto(osc("/sensorsynth/gain", 0.8), ("127.0.0.1", port))
        wait_until(lambda: health(server.url)["osc"]["commands"] >= before + 5, 5, "the calm sender's gains")
    h = health(server.url)
    flooded = h["osc"]["packets"] - 5
    assert flooded > 300, h["osc"]
    limited = h["rejected"]["osc:sender_rate"]
    assert flooded - 80 - 40 <= limited < flooded, limited  # a burst of 80 (2 × 40/s) and the refill meanwhile
