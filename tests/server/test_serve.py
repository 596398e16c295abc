"""``sensorsynth serve`` as a real process: OSC (python-osc and liblo's oscsend), WebSocket, HTTP, hot reload,
garbage, SIGTERM. Several checks share one server process, since each start loads the compiled kernel."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient
from websockets.asyncio.client import connect

from .conftest import REPO
from .helpers import K, http_json, osc_status, recorded, recorded_seconds, rms, wait_for  # noqa: F401

pytestmark = pytest.mark.slow  # every test starts a server or a fresh interpreter


def test_osc_plays_silence_before_sound_after_and_sigterm_leaves_a_valid_wav(start_server):
    server = start_server()
    out = server.output()
    assert "guitar" in out and "null output" in out and "rec.wav" in out and f":{server.osc_port}" in out
    assert f"http://" in out and f":{server.ws_port}/" in out
    wait_for(lambda: recorded_seconds(server) > 1.0, what="a second of recording")
    client = SimpleUDPClient("127.0.0.1", server.osc_port)
    t_send = recorded_seconds(server)
    assert http_json(server, "/health")["level"]["peak_dbfs"] is None, "silence reads as no level"
    client.send_message("/sensorsynth/control", [0.0] * 3 + [1.0] * (K - 3))
    time.sleep(0.4)
    level = http_json(server, "/health")["level"]
    assert level["peak_dbfs"] is not None and -40 < level["peak_dbfs"] <= 0.1, level
    time.sleep(1.1)
    assert server.stop() == 0
    data, rate = recorded(server)
    assert data.size > rate  # the file is complete and readable after SIGTERM
    before = data[: int(max(0.0, t_send - 0.7) * rate)]
    after = data[int((t_send - 0.5) * rate) :]
    assert rms(before) < 1e-4, "silence before the first control"
    assert rms(after) > 0.01, "sound after the control"
    assert "stopped (SIGTERM)" in server.output()


def test_touchdesigner_bundles_oscsend_garbage_and_status(start_server):
    server = start_server()
    wait_for(lambda: recorded_seconds(server) > 0.5, what="recording")
    addr = ("127.0.0.1", server.osc_port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # garbage first: it must be counted and leave the server playing
    garbage = [b"", b"\x00", b"#bundle\x00", b"/sensorsynth/control\x00\x00\x00\x00,ff\x00\x00\x00\x00",
               b"not osc at all", bytes(range(256)) * 4, b"/sensorsynth/control\x00\x00\x00\x00,s\x00\x00abc\x00"]
    nan = OscMessageBuilder("/sensorsynth/control")
    for _ in range(K):
        nan.add_arg(float("nan"), "f")
    garbage.append(nan.build().dgram)
    garbage.append(OscMessageBuilder("/nope/nothing").build().dgram)
    for g in garbage * 20:
        sock.sendto(g, addr)
    status = osc_status(server.osc_port)
    assert status.get("running") in (1, True)
    rejected = {k: v for k, v in status.items() if str(k).startswith("rejected.")}
    assert sum(rejected.values()) >= len(garbage) * 20 - 40, rejected
    assert http_json(server, "/health")["rejected"], "health reports rejections by kind"
    silent_until = recorded_seconds(server)
    # a TouchDesigner-style frame: one address per channel, in a bundle stamped in the past
    bundle = OscBundleBuilder(time.time() - 30.0)  # a sender clock far off: treated as "now"
    for i in range(K):
        m = OscMessageBuilder(f"/sensorsynth/control/{i}")
        m.add_arg(0.8, "f")
        bundle.add_content(m.build())
    sock.sendto(bundle.build().dgram, addr)
    time.sleep(1.0)
    data, rate = recorded(server)
    assert rms(data[: int((silent_until - 0.3) * rate)]) < 1e-4, "garbage made no sound"
    assert rms(data[int((silent_until - 0.2) * rate) :]) > 0.01, "the TouchDesigner-style bundle played"
    # liblo's oscsend, an independent implementation, plays too
    tail = recorded_seconds(server) + 2.0
    wait_for(lambda: recorded_seconds(server) > tail, timeout=10, what="the tail to decay")
    mark = recorded_seconds(server)
    if shutil.which("oscsend"):
        subprocess.run(["oscsend", "127.0.0.1", str(server.osc_port), "/sensorsynth/voice/3/control", "f" * K,
                        *(["1.0"] * K)], check=True, timeout=10)
        time.sleep(1.0)
        data, rate = recorded(server)
        assert rms(data[int((mark - 0.1) * rate) :]) > 0.01, "oscsend played voice 3"
    sock.close()
    assert osc_status(server.osc_port)["events.events"] >= 2
    assert server.stop() == 0


async def _ws_session(server) -> dict:
    out: dict = {}
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "hello", "client": "test", "monitor": False}))
        welcome = json.loads(await ws.recv())
        out["welcome"] = welcome
        for bad in ["{not json", json.dumps({"type": "control", "values": [1.0, 2.0]}),
                    json.dumps({"type": "control", "values": [-1.0] * K}), json.dumps({"type": "warp"}),
                    json.dumps({"type": "instrument", "name": "../../etc/passwd"})]:
            await ws.send(bad)
            out.setdefault("errors", []).append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"type": "status"}))
        out["status"] = json.loads(await ws.recv())
        out["t_control"] = recorded_seconds(server)
        await ws.send(json.dumps({"type": "control", "values": [0.9] * K}))
        await ws.send(json.dumps({"type": "status"}))
        out["status2"] = json.loads(await ws.recv())
    return out


def test_websocket_hello_errors_status_and_play(start_server):
    server = start_server()
    wait_for(lambda: recorded_seconds(server) > 0.5, what="recording")
    res = asyncio.run(_ws_session(server))
    w = res["welcome"]
    assert w["type"] == "welcome" and w["v"] == 1 and w["voice"] >= 1
    assert w["instrument"] == "guitar" and w["instruments"][0]["control_plane_dim"] == K
    assert w["sample_rate"] == server.sample_rate
    codes = [e["code"] for e in res["errors"]]
    assert codes == ["bad_json", "wrong_count", "bad_schema", "bad_schema", "unknown_instrument"], res["errors"]
    assert res["status"]["type"] == "status" and res["status"]["running"] is True
    assert res["status2"]["clients"] == 1
    time.sleep(1.0)
    data, rate = recorded(server)
    assert rms(data[: int((res["t_control"] - 0.3) * rate)]) < 1e-4
    assert rms(data[int((res["t_control"] - 0.2) * rate) :]) > 0.01
    health = http_json(server, "/health")
    assert health["rejected"].get("ws:bad_json") == 1
    assert server.stop() == 0


def test_hot_reload_good_then_corrupt(start_server, tmp_path):
    server = start_server()
    names = lambda: [i["name"] for i in http_json(server, "/api/instruments")["instruments"]]  # noqa: E731
    assert names() == ["guitar"]
    shutil.copy(server.models / "guitar.instrument", server.models / "guitar2.instrument")
    wait_for(lambda: "guitar2" in names(), what="guitar2 to be loaded")
    details = http_json(server, "/api/instruments/guitar2")
    assert len(details["modes"]["freq_hz"]) == 16 * 2 * 64 and details["control"]["events"]
    # a corrupt version of a playing instrument is refused; the last good one keeps playing
    good = (server.models / "guitar.instrument").read_bytes()
    (server.models / "guitar.instrument").write_bytes(good[: len(good) // 2])
    wait_for(lambda: "refused" in server.output(), what="the refusal log line")
    SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/control", [1.0] * K)
    mark = recorded_seconds(server)
    time.sleep(1.0)
    data, rate = recorded(server)
    assert rms(data[int((mark - 0.2) * rate) :]) > 0.01, "the last good guitar still plays"
    assert names() == ["guitar", "guitar2"]
    # a good file again is picked up as a new version
    (server.models / "guitar.instrument").write_bytes(good)
    wait_for(lambda: any(i["name"] == "guitar" and i["version"] == 2
                         for i in http_json(server, "/api/instruments")["instruments"]), what="guitar v2")
    assert server.stop() == 0


def test_bad_config_value_names_the_field(tmp_path):
    cfg = tmp_path / "serve.toml"
    cfg.write_text('block_size = 3\nosc_port = 9000\n')
    r = subprocess.run([sys.executable, "-m", "sensorsynth", "serve", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "block_size" in lines[0] and lines[0].startswith("error:"), r.stderr
    cfg.write_text('colour = "blue"\n')
    r = subprocess.run([sys.executable, "-m", "sensorsynth", "serve", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "colour" in r.stderr


def test_the_playing_side_never_imports_torch():
    code = (
        "import sys\n"
        "import sensorsynth.server.app, sensorsynth.cli.serve, sensorsynth.render.renderer\n"
        "import sensorsynth.protocol.ws, sensorsynth.instrument_file, sensorsynth.cli\n"
        "sensorsynth.cli.build_parser()\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_torch_batched_path_plays(start_server):
    """The path ``--device cuda`` takes (the batched torch renderer behind the same engine), run on torch's
    CPU device so it is tested on machines without a GPU too."""
    server = start_server("--device", "torch:cpu", "--max-voices", "2", "--block-size", "256")
    assert "torch, batched" in server.output()
    wait_for(lambda: recorded_seconds(server) > 1.0, what="recording")
    mark = recorded_seconds(server)
    SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/control", [1.0] * K)
    time.sleep(1.0)
    assert server.stop() == 0
    data, rate = recorded(server)
    assert rms(data[: int((mark - 0.4) * rate)]) < 1e-4
    assert rms(data[int((mark - 0.3) * rate) :]) > 0.01


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA path is exercised by the GPU tests")
    r = subprocess.run([sys.executable, "-m", "sensorsynth", "serve", "--device", "cuda", "--output", "null",
                        "--osc-port", "0", "--ws-port", "0"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr, r.stderr
