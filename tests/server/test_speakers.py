"""Sound placed on many speakers, through a real ``sensorsynth serve`` process: 8 output channels on the null
output and on JACK's dummy card with 8 playback ports, voices fixed to channels and moved by OSC ``pan``
(real UDP), the recording checked channel by channel, and the status's channels and level cap."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pythonosc.udp_client import SimpleUDPClient
from websockets.asyncio.client import connect

from .browser_wait import wait_js
from .helpers import K, http_json, recorded, recorded_seconds, wait_for

pytestmark = pytest.mark.slow  # real server processes

CHANNELS = 8
SOUNDING = {1, 3, 6, 7}  # voices 1, 3, 6 on their own channels; voice 5 panned to the end of the line (7)


def play_and_check(server) -> None:
    """Fire voices fixed to channels 1, 3, 6 and pan voice 5 to position 1 (the last speaker of the line):
    each channel that should sound does, and every other channel of the recording is exactly silent."""
    health = http_json(server, "/health")
    assert health["output"]["channels"] == CHANNELS and len(health["output"]["levels_dbfs"]) == CHANNELS
    assert health["limiter"]["cap_dbfs"] == -1.0
    assert sf.info(str(server.record_path)).channels == CHANNELS
    wait_for(lambda: recorded_seconds(server) > 0.3, what="the recording to start")
    osc = SimpleUDPClient("127.0.0.1", server.osc_port)
    osc.send_message("/sensorsynth/voice/5/pan", 1.0)
    osc.send_message("/sensorsynth/voice/2/pan", 1.5)  # refused: out of range, counted
    time.sleep(0.2)  # the pan lands (20 ms ramp) before voice 5 plays
    for v in (1, 3, 6, 5):
        osc.send_message(f"/sensorsynth/voice/{v}/control", [1.0] * K)
    mark = recorded_seconds(server)
    wait_for(lambda: recorded_seconds(server) > mark + 1.0, what="a second of playing")
    health = http_json(server, "/health")
    assert health["rejected"].get("osc:out_of_range", 0) >= 1
    levels = health["output"]["levels_dbfs"]
    assert all(levels[c] is not None for c in SOUNDING), levels
    assert server.stop() == 0
    data, _ = recorded(server)
    assert data.ndim == 2 and data.shape[1] == CHANNELS
    for c in range(CHANNELS):
        peak = float(np.abs(data[:, c]).max())
        if c in SOUNDING:
            assert peak > 0.05, (c, peak)
        else:
            assert peak == 0.0, f"channel {c} should be silent, peaks at {peak}"
    assert float(np.abs(data).max()) <= 10 ** (-1 / 20) + 1 / 32768, "nothing above the level cap"


def test_eight_channels_on_the_null_output(start_server):
    server = start_server("--output-channels", str(CHANNELS), "--placement", "fixed")
    assert "8 channels" in http_json(server, "/health")["output"]["description"]
    play_and_check(server)


@pytest.fixture
def jack8():
    """A JACK server of our own on the dummy driver with 8 playback ports (skips without jackd; fails when CI
    requires JACK)."""
    why = None
    if not shutil.which("jackd") or not shutil.which("jack_wait"):
        why = "JACK is not installed (apt-get install jackd2)"
    else:
        try:
            import sounddevice  # noqa: F401
        except OSError as exc:
            why = f"PortAudio is missing: {exc}"
    if why is not None:
        if os.environ.get("SENSORSYNTH_REQUIRE_JACK"):
            pytest.fail(f"SENSORSYNTH_REQUIRE_JACK is set but {why}")
        pytest.skip(why)
    name = "sensorsynth-test-rooms"  # fixed: a killed client's slot is taken over by the next run's
    jackd = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "22050", "-p", "64",
                              "-P", str(CHANNELS)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        subprocess.run(["jack_wait", "-w", "-t", "10", "-s", name], check=True, capture_output=True, timeout=20)
        yield name
    finally:
        jackd.kill()
        jackd.wait()


def test_eight_channels_on_the_jack_dummy_card(jack8, start_server):
    env = {"JACK_DEFAULT_SERVER": jack8, "JACK_NO_START_SERVER": "1"}
    server = start_server("--output", "sound", "--hostapi", "JACK", "--output-channels", str(CHANNELS), env=env)
    assert "JACK" in http_json(server, "/health")["output"]["description"]
    ports = subprocess.run(["jack_lsp", "-s", jack8], capture_output=True, text=True, timeout=10,
                           env={**os.environ, **env}).stdout.split()  # fmt: skip
    ours = [p for p in ports if not p.startswith("system:")]
    assert len(ours) >= CHANNELS, ports
    wait_for(lambda: http_json(server, "/health")["callbacks"] > 50, what="the card's callback")
    play_and_check(server)


async def _ws_pan_and_play(server) -> tuple[int, float]:
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "hello", "client": "pan test"}))
        voice = json.loads(await ws.recv())["voice"]
        await ws.send(json.dumps({"type": "pan", "position": 2.0}))  # refused, the connection stays
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "bad_schema", error
        await ws.send(json.dumps({"type": "pan", "position": 0.0}))  # the first speaker of the line
        await asyncio.sleep(0.2)
        await ws.send(json.dumps({"type": "control", "values": [1.0] * K}))
        await asyncio.sleep(1.0)
        played_s = recorded_seconds(server)  # then the client leaves and its voice goes back to its place
    return voice, played_s


def test_a_websocket_client_pans_its_voice(start_server):
    server = start_server("--output-channels", "4")
    wait_for(lambda: recorded_seconds(server) > 0.3, what="the recording to start")
    voice, played_s = asyncio.run(_ws_pan_and_play(server))
    assert voice % 4 != 0, "the client's voice starts on a channel other than 0"
    assert server.stop() == 0
    data, rate = recorded(server)
    peaks = np.abs(data[: int(played_s * rate)]).max(axis=0)
    assert peaks[0] > 0.05 and not np.any(peaks[1:]), peaks


@pytest.mark.browser
def test_the_page_listens_to_a_stereo_fold_down(start_server, browser):
    server = start_server("--output-channels", str(CHANNELS), "--placement", "ring")
    problems: list[str] = []
    page = browser.new_context().new_page()
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.goto(server.page("/"))
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    page.click("#listen")
    SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/control", [1.0] * K)
    wait_js(page, "window.sensorsynthLive.listen && window.sensorsynthLive.listen.received > 4000", timeout=15_000)
    listen = page.evaluate("window.sensorsynthLive.listen")
    assert listen["channels"] == 2 and listen["gaps"] == 0, listen
    page.click("#stop")
    page.context.close()
    assert not problems, problems
    assert server.stop() == 0


def test_doctor_says_when_the_card_has_too_few_channels(jack8, tmp_path):
    env = {**os.environ, "JACK_DEFAULT_SERVER": jack8, "JACK_NO_START_SERVER": "1"}
    models = Path(__file__).resolve().parents[2] / "models"
    lines = {}
    for n in (CHANNELS, CHANNELS + 1):
        cfg = tmp_path / f"c{n}.toml"
        cfg.write_text(f"output_channels = {n}\n")
        r = subprocess.run([sys.executable, "-m", "sensorsynth", "doctor", str(models), "--config", str(cfg),
                            "--output", "sound", "--hostapi", "JACK"], capture_output=True, text=True, timeout=120,
                           env=env)  # fmt: skip
        lines[n] = [line for line in r.stdout.splitlines() if " sound " in f" {line} "]
    assert not any(line.startswith("FAIL") for line in lines[CHANNELS]), lines
    assert any(line.startswith("FAIL") and f"offers {CHANNELS} output channel(s)" in line
               for line in lines[CHANNELS + 1]), lines  # fmt: skip
