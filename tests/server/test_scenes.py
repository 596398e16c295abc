"""Scenes through a real server process: real UDP (python-osc), real HTTP (/health), a real WebSocket, the
recording of what played. A scheduled scene at start, a switch by OSC and by the page's message (admin token),
a schedule that switches by itself a few seconds later, and a file the server refuses at start."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient
from websockets.sync.client import connect

from sensorsynth.server.health import Health
from sensorsynth.server.osc import OscServer
from sensorsynth.server.rejections import Rejections

from .conftest import BUNDLED, REPO
from .helpers import K, http_json, osc_status, recorded, recorded_seconds, rms, wait_for

ADMIN = "scene-admin-token-0123456789"


def two_instruments(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    shutil.copy(BUNDLED, models / "guitar.instrument")
    shutil.copy(BUNDLED, models / "bell.instrument")  # the same model under another name: a second instrument
    return models


SCENES = """
crossfade_s = 0.4
[scenes.open]
instrument = "guitar"
gain = 1.0
[scenes.closed]
instrument = "bell"
gain = 0.0
[scenes.closed.voices]
2 = { gain = 0.5 }
[scenes.show]
instrument = "bell"
gain = 0.7
"""


def scene(server) -> dict:
    return http_json(server, "/health")["scene"]


def settled(server, name: str) -> dict:
    """/health once scene ``name`` plays and its cross-fade is over."""
    return wait_for(lambda: (lambda h: h if h["scene"]["name"] == name and not h["scene"]["switching"] else None)(
        http_json(server, "/health")), timeout=10, what=f"scene {name}")


def play(server, times: int = 6) -> None:
    osc = SimpleUDPClient("127.0.0.1", server.osc_port)
    for _ in range(times):
        osc.send_message("/sensorsynth/control", [1.0] * K)
        time.sleep(0.08)


def level_after(server, since: float) -> float:
    wait_for(lambda: recorded_seconds(server) > since + 0.9, timeout=10, what="the recording to grow")
    audio, _ = recorded(server, since)
    return rms(audio)


@pytest.mark.slow
def test_scheduled_scene_then_switches_by_osc_and_by_the_page(tmp_path, start_server):
    if datetime.now(timezone.utc).time() > datetime.strptime("23:58:30", "%H:%M:%S").time():
        time.sleep(95)  # the scheduled change of this test comes at 23:59:59: start after it
    path = tmp_path / "scenes.toml"
    hours = ", ".join(f'{d} = ["00:00-23:59:59"]' for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    path.write_text(SCENES + f'[schedule]\ntimezone = "UTC"\nopen = "open"\nclosed = "closed"\nhours = {{ {hours} }}\n')
    server = start_server("--scenes", str(path), "--admin-token", ADMIN, models=two_instruments(tmp_path))
    health = settled(server, "open")
    s = health["scene"]
    assert s["source"] == "start" and s["scenes"] == ["open", "closed", "show"] and s["timezone"] == "UTC"
    assert s["next"] == "closed" and s["next_at"].endswith("T23:59:59Z"), s
    assert health["health"]["state"] == "ok" and health["running"] is True
    assert {v["instrument"] for v in health["voices"]} == {"guitar"} and s["gains"] == [1.0] * 8
    assert "scenes: open, closed, show" in server.output()

    # OSC from this machine switches; the voices change instrument and gain; the switch holds until 23:59:59
    SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/scene", "show")
    health = settled(server, "show")
    assert health["scene"]["source"] == "osc" and health["scene"]["held"] is True
    assert {v["instrument"] for v in health["voices"]} == {"bell"} and health["scene"]["gains"] == [0.7] * 8
    assert osc_status(server.osc_port)["scene.name"] == "show", "the OSC status reply says it too"
    t0 = recorded_seconds(server)
    play(server)
    assert level_after(server, t0) > 1e-3, "the show scene sounds"

    SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/scene", "nowhere")
    wait_for(lambda: http_json(server, "/health")["rejected"].get("osc:unknown_scene"), what="the refusal")

    # the page's message: refused without the admin token, switches with it, and every client hears of it
    with connect(f"{server.ws_url}?token={server.token}", open_timeout=10) as ws, \
            connect(f"{server.ws_url}?token={server.token}", open_timeout=10) as other:
        other.send(json.dumps({"type": "hello", "client": "bystander"}))
        assert json.loads(other.recv(timeout=10))["type"] == "welcome"
        ws.send(json.dumps({"type": "scene", "name": "closed"}))
        err = json.loads(ws.recv(timeout=10))
        assert (err["type"], err["code"], err["ref"]) == ("error", "forbidden", "scene")
        ws.send(json.dumps({"type": "scene", "name": "closed", "admin": "wrong-" + ADMIN}))
        assert json.loads(ws.recv(timeout=10))["code"] == "forbidden"
        ws.send(json.dumps({"type": "scene", "name": "closed", "admin": ADMIN}))
        pushed = json.loads(ws.recv(timeout=10))
        assert (pushed["type"], pushed["name"], pushed["source"]) == ("scene", "closed", "ws")
        seen = json.loads(other.recv(timeout=10))
        assert (seen["type"], seen["name"]) == ("scene", "closed"), "the other client hears of it"
        ws.send(json.dumps({"type": "scene"}))
        assert json.loads(ws.recv(timeout=10))["name"] == "closed"
        ws.send(json.dumps({"type": "scene", "name": "nowhere", "admin": ADMIN}))
        err = json.loads(ws.recv(timeout=10))
        assert (err["code"], err["ref"]) == ("unknown_scene", "scene") and "there: open, closed, show" in err["message"]
    with urllib.request.urlopen(server.url + "/health", timeout=5) as r:  # no token needed, none given away
        raw = r.read().decode()
    assert ADMIN not in raw and server.token not in raw
    health = settled(server, "closed")
    assert health["scene"]["gains"] == [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    time.sleep(0.3)  # the last ramp (to 0 over half the cross-fade) is over
    t1 = recorded_seconds(server)
    play(server)
    assert level_after(server, t1) < 1e-4, "voice 0 plays at gain 0 in the closed scene: silence"

    # a page whose voice a scene moves to another instrument hears of it, as after its own change
    with connect(f"{server.ws_url}?token={server.token}", open_timeout=10) as page:
        page.send(json.dumps({"type": "hello", "client": "page"}))
        welcome = json.loads(page.recv(timeout=10))
        assert welcome["instrument"] == "bell"
        SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/scene", "open")
        got = [json.loads(page.recv(timeout=10)) for _ in range(2)]
        assert [m["type"] for m in got] == ["scene", "instrument_changed"], got
        assert got[1] == {"type": "instrument_changed", "voice": welcome["voice"], "instrument": "guitar"}


@pytest.mark.slow
def test_a_schedule_switches_by_itself_a_few_seconds_later(tmp_path, start_server):
    start = datetime.now(timezone.utc) + timedelta(seconds=6)
    end = start + timedelta(hours=1)
    period = f"{start:%H:%M:%S}-{end:%H:%M:%S}"  # past midnight too, if the test runs then
    hours = ", ".join(f'{d} = ["{period}"]' for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    path = tmp_path / "scenes.toml"
    path.write_text(SCENES + f'[schedule]\ntimezone = "UTC"\nopen = "show"\nclosed = "open"\nhours = {{ {hours} }}\n')
    server = start_server("--scenes", str(path), models=two_instruments(tmp_path))
    s = scene(server)
    assert (s["name"], s["next"], s["next_at"]) == ("open", "show", f"{start:%Y-%m-%dT%H:%M:%S}Z"), s
    health = wait_for(lambda: (lambda h: h if h["scene"]["name"] == "show" else None)(http_json(server, "/health")),
                      timeout=20, what="the scheduled switch")
    switched = datetime.now(timezone.utc)
    assert health["scene"]["source"] == "schedule" and health["scene"]["held"] is False
    assert abs((switched - start).total_seconds()) < 2.0, "on time"
    assert health["scene"]["next"] == "open" and health["scene"]["next_at"] == f"{end:%Y-%m-%dT%H:%M:%S}Z"
    health = settled(server, "show")
    assert {v["instrument"] for v in health["voices"]} == {"bell"} and health["scene"]["gains"] == [0.7] * 8


def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensorsynth", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_a_scenes_file_naming_an_unknown_instrument_stops_the_server_at_start(tmp_path):
    path = tmp_path / "scenes.toml"
    path.write_text('[scenes.day]\ninstrument = "cello"\n')
    r = _serve("serve", str(two_instruments(tmp_path)), "--output", "null", "--osc-port", "0", "--ws-port", "0",
               "--scenes", str(path))
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line == f"error: scenes: {path}: scene 'day': no instrument 'cello' in the models folder (there: bell, guitar)"


@pytest.mark.slow
def test_scenes_check_validates_offline_and_shows_the_coming_changes(tmp_path):
    r = _serve("scenes", "check", str(REPO / "deploy" / "scenes.toml"), "--models", str(REPO / "models"))
    assert r.returncode == 0, r.stderr
    assert "3 scenes (day, sunday, quiet)" in r.stdout
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("  ") and ln.rstrip().endswith(
        ("day", "sunday", "quiet"))]) == 7, r.stdout  # now, and six changes
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenes.day]\ngain = -1\n')
    r = _serve("scenes", "check", str(bad))
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: {bad}: field 'scenes.day.gain': Input should be greater than or equal to 0"), r.stderr
    other = tmp_path / "models"
    other.mkdir()
    r = _serve("scenes", "check", str(REPO / "deploy" / "scenes.toml"), "--models", str(other))
    assert r.returncode == 2 and "no instrument 'guitar' in the models folder (there: none)" in r.stderr


def test_who_may_switch_scenes_over_osc():
    anyone = OscServer(lambda item, t: None, dict, Rejections())
    assert anyone._may_switch_scenes("127.0.0.1") and anyone._may_switch_scenes("::1")
    assert not anyone._may_switch_scenes("192.168.1.20"), "without osc_allowed_senders: this machine only"
    listed = OscServer(lambda item, t: None, dict, Rejections(), allowed_senders={"192.168.1.20"})
    assert listed._may_switch_scenes("192.168.1.20"), "the named senders (the only ones that get this far)"


def test_health_turns_degraded_on_a_stream_of_underruns_and_says_why():
    now = [0.0]
    h = Health(clock=lambda: now[0])
    base = {"running": True, "fallback": None, "recording": None}
    assert h.check({**base, "underruns": 3}) == {"state": "ok", "reasons": [], "underruns_last_minute": 0}
    now[0] = 10.0
    assert h.check({**base, "underruns": 6})["state"] == "ok", "a few in a minute is a busy machine"
    now[0] = 20.0
    verdict = h.check({**base, "underruns": 20})
    assert verdict["state"] == "degraded" and verdict["reasons"] == ["17 under-runs in the last minute"]
    now[0] = 100.0
    h.check({**base, "underruns": 20})
    now[0] = 170.0
    assert h.check({**base, "underruns": 20})["state"] == "ok", "a quiet minute later it is ok again"
    down = h.check({**base, "underruns": 20, "running": False, "error": "stalled", "fallback": "card unplugged",
                    "recording": {"failed": "disk full"}})
    assert down["reasons"] == ["audio stopped: stalled", "sound card given up: card unplugged", "the recording failed"]


@pytest.mark.slow
def test_a_scene_says_which_presets_and_learned_mappings_play(tmp_path, start_server):
    path = tmp_path / "scenes.toml"
    path.write_text('start = "still"\n[scenes.still]\npresets = []\nlearned = false\n'
                    '[scenes.live]\npresets = ["touchdesigner"]\nlearned = true\n')
    server = start_server("--scenes", str(path), "--preset", "touchdesigner", models=two_instruments(tmp_path))
    osc = SimpleUDPClient("127.0.0.1", server.osc_port)
    for i in range(5):
        osc.send_message("/td", [0.1 * i] * K)
        time.sleep(0.02)
    health = wait_for(lambda: (lambda h: h if h["scene"]["muted"] >= 5 else None)(http_json(server, "/health")),
                      what="the preset's values dropped")
    assert health["mapping"]["frames"] == 0 and health["mapping"]["running"] == []
    osc.send_message("/sensorsynth/scene", "live")
    settled(server, "live")
    for i in range(5):
        osc.send_message("/td", [0.1 * i] * K)
        time.sleep(0.02)
    health = wait_for(lambda: (lambda h: h if h["mapping"]["frames"] >= 1 else None)(http_json(server, "/health")),
                      what="the preset's frames mapped")
    assert health["scene"]["muted"] == 5
    assert health["mapping"]["running"] == sorted(["osc"] + [f"osc{v}" for v in range(1, 8)]), \
        "OSC's voices play through their learned mappings"


@pytest.mark.slow
def test_a_scene_chooses_the_speakers_and_lowers_the_cap(tmp_path, start_server):
    """Two output channels: scene ``left`` plays on channel 0 only, ``right`` on channel 1 only and under a cap
    12 dB lower; the recording is checked channel by channel after an OSC switch (the output gains and the
    level cap land in the compiled path)."""
    path = tmp_path / "scenes.toml"
    path.write_text('crossfade_s = 0.05\n[scenes.left]\noutput_gains = [1.0, 0.0]\n'
                    '[scenes.right]\noutput_gains = [0.0, 1.0]\nlevel_cap_dbfs = -13.0\n')
    server = start_server("--scenes", str(path), "--output-channels", "2")
    settled(server, "left")
    osc = SimpleUDPClient("127.0.0.1", server.osc_port)
    osc.send_message("/sensorsynth/pan", 0.5)  # voice 0 between the two speakers: both would sound
    time.sleep(0.2)
    t_left = recorded_seconds(server)
    play(server)
    wait_for(lambda: recorded_seconds(server) > t_left + 0.9, timeout=10, what="the left scene's sound")
    osc.send_message("/sensorsynth/scene", "right")
    health = settled(server, "right")
    assert health["limiter"]["cap_dbfs"] == -13.0 and health["scene"]["level_cap_dbfs"] == -13.0
    time.sleep(0.2)
    t_right = recorded_seconds(server)
    play(server)
    wait_for(lambda: recorded_seconds(server) > t_right + 0.9, timeout=10, what="the right scene's sound")
    assert server.stop() == 0
    data, rate = recorded(server)
    assert data.ndim == 2 and data.shape[1] == 2
    left = data[int(t_left * rate): int((t_left + 0.8) * rate)]
    right = data[int(t_right * rate): int((t_right + 0.8) * rate)]
    assert np.abs(left[:, 0]).max() > 0.05 and not np.any(left[:, 1]), "left: channel 0 only"
    assert np.abs(right[:, 1]).max() > 0.05 and not np.any(right[:, 0]), "right: channel 1 only"
    assert np.abs(right).max() <= 10 ** (-13 / 20) + 1 / 32768, "nothing above the scene's cap"
