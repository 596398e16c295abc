"""Mappings end to end through a real ``sensorsynth serve``: every sensor path must sound when moved and stay
silent when still, heard in the server's recording.

One server process (the bundled guitar, ``--preset touchdesigner --preset zigsim``, and ``wekinator`` when
UDP 6448 is free) plays every source in turn; a monitoring WebSocket client attributes each control event to
its source and gives the engine's clock, which is also the recording's (both start at the first block).
Sources: a TouchDesigner-style OSC sender (one channel per address, bundles stamped with a far-off clock),
ZIG SIM-style phone OSC, raw ``/sensorsynth/input/x``, Wekinator ``/wek/inputs`` on 6448, generated hand
landmark frames and phone motion frames from the real BasicMotions watch recordings over the WebSocket, and
the learned mappings (record → train → run) over OSC and over the WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from websockets.asyncio.client import connect

from tests.mapping.streams import basicmotions, hand_stream

from .conftest import REPO, launch

pytestmark = pytest.mark.slow  # real servers and recordings played through them


K = 16
SILENT_PEAK = 1e-4  # the recording's peak while everything is still
SOUND_RMS = 3e-3  # ... and its RMS while a source moves


def _port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


WEKINATOR = _port_free(6448)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    args = ["--preset", "touchdesigner", "--preset", "zigsim", "--max-voices", "8"]
    if WEKINATOR:
        args += ["--preset", "wekinator"]
    handle = launch(tmp_path_factory.mktemp("mappings"), *args)
    yield handle
    if handle.proc.poll() is None:
        handle.proc.kill()
        handle.proc.wait()


class Monitor:
    """A monitoring WebSocket client: the engine's clock (meter pushes) and every event by source."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.time = 0.0
        self.rms = 1.0
        self.events: list[dict] = []

    async def __aenter__(self) -> "Monitor":
        self.ws = await connect(self.url).__aenter__()
        await self.ws.send(json.dumps({"type": "hello", "client": "monitor", "monitor": True}))
        self.task = asyncio.create_task(self._read())
        while self.time == 0.0:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await self.ws.close()

    async def _read(self) -> None:
        async for text in self.ws:
            msg = json.loads(text)
            if msg["type"] == "meter":
                self.time, self.rms = msg["time"], msg["rms"]
            elif msg["type"] == "events":
                self.events += [dict(e, at=self.time) for e in msg["events"]]

    async def quiet(self, timeout: float = 15.0) -> None:
        """Wait until earlier notes have rung down to a tenth of what a moving source must reach, so the
        sound measured next is this source's."""
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 3:
            assert time.monotonic() < deadline, f"never went quiet (rms {self.rms})"
            await asyncio.sleep(0.05)
            calm = calm + 1 if self.rms < SOUND_RMS / 10 else 0

    def controls(self, prefix: str, since: float) -> list[dict]:
        return [e for e in self.events if e["kind"] == "control" and e["at"] >= since and e["source"].startswith(prefix)]


def segment(server, start: float, end: float) -> np.ndarray:
    """The recording between two engine times (waits for the recorder to have written it)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            info = sf.info(str(server.record_path))
            if info.duration >= end + 0.05:
                break
        except RuntimeError:
            pass
        assert time.monotonic() < deadline, "the recording did not grow"
        time.sleep(0.1)
    data, rate = sf.read(str(server.record_path), dtype="float32")
    return data[int(start * rate): int(end * rate)]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


async def paced(frames, rate_hz: float, send) -> None:
    """Call ``send(i, frame)`` for each frame at ``rate_hz`` (sleeping to the schedule, not per frame)."""
    start = time.monotonic()
    for i, frame in enumerate(frames):
        await send(i, frame)
        delay = start + (i + 1) / rate_hz - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def osc_socket(server):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return sock, ("127.0.0.1", server.osc_port)


def message(address: str, *values: float) -> OscMessageBuilder:
    m = OscMessageBuilder(address)
    for v in values:
        m.add_arg(float(v), "f")
    return m


def td_bundle(channels: dict[str, float]) -> bytes:
    """TouchDesigner's OSC Out CHOP: one message per channel, named after it, stamped with its own clock."""
    b = OscBundleBuilder(time.time() - 1234.5)
    for name, value in channels.items():
        b.add_content(message(f"/{name}", value).build())
    return b.build().dgram


def sine(n: int, rate: float, hz: float = 2.0, phase: float = 0.0) -> np.ndarray:
    return 0.5 + 0.4 * np.sin(2 * np.pi * hz * np.arange(n) / rate + phase)


async def play_phase(server, mon: Monitor, coro, prefix: str, moving: bool) -> tuple[list[dict], np.ndarray]:
    start = mon.time
    await coro
    await asyncio.sleep(0.25)  # the last event's block, and the meter's next push
    end = mon.time
    return mon.controls(prefix, start - 0.05), segment(server, start, end)


async def ws_sender(server, name: str):
    ws = await connect(server.ws_url).__aenter__()
    await ws.send(json.dumps({"type": "hello", "client": name}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome" and welcome["voice"] is not None
    return ws


# ------------------------------------------------------------------------------------------------ tests


def test_every_source_still_is_silent(server):
    """Two seconds of every source held still, all at once: no event, and the recording stays silent."""
    hand_t, hand = hand_stream("still", 2.0, 30.0, seed=5)
    _, phone_t, phone = basicmotions("standing", rate_hz=60.0)[4]

    async def run():
        async with Monitor(server.ws_url) as mon:
            sock, addr = osc_socket(server)
            hands = await ws_sender(server, "hands")
            phone_ws = await ws_sender(server, "phone")

            async def osc(i, _):
                sock.sendto(td_bundle({"chan1": 0.3, "chan2": 0.7}), addr)
                sock.sendto(message("/sensorsynth/input/x", 0.2, 0.5, 0.9).build().dgram, addr)
                sock.sendto(message("/ZIGSIM/dev1/accel", 0.001, 0.0, -0.002).build().dgram, addr)

            async def hand_send(i, frame):
                await hands.send(json.dumps({"type": "sensor", "source": "hands/right", "kind": "hand",
                                             "hand": "Right", "values": frame.tolist(), "t": float(hand_t[i])}))

            async def phone_send(i, frame):
                await phone_ws.send(json.dumps({"type": "sensor", "source": "phone", "kind": "motion",
                                                "values": frame.tolist(), "t": float(phone_t[i])}))

            start = mon.time
            await asyncio.gather(paced(range(120), 60, osc), paced(hand[:60], 30, hand_send),
                                 paced(phone[:120], 60, phone_send))
            await asyncio.sleep(0.3)
            end = mon.time
            for ws in (hands, phone_ws):
                await ws.close()
            sock.close()
            return [e for e in mon.events if e["at"] >= start - 0.05 and e["kind"] == "control"], \
                segment(server, start, end)

    events, audio = asyncio.run(run())
    assert events == [], events
    assert np.abs(audio).max(initial=0.0) < SILENT_PEAK, np.abs(audio).max()
    health = json.loads(_http(server, "/health"))
    assert health["mapping"]["frames"] >= 300 and health["mapping"]["events"] == 0
    assert health["mapping"]["presets"][:2] == ["touchdesigner", "zigsim"]


def _http(server, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(server.url + path, timeout=5) as r:
        return r.read().decode()


def test_touchdesigner_chop_channels_play_when_moved(server):
    lfo = sine(90, 60.0)

    async def run():
        async with Monitor(server.ws_url) as mon:
            await mon.quiet()
            sock, addr = osc_socket(server)

            async def send(i, v):
                sock.sendto(td_bundle({"chan1": v, "chan2": 1.0 - v, "chan16": 0.5}), addr)

            out = await play_phase(server, mon, paced(lfo, 60, send), "raw:td", True)
            sock.close()
            return out

    events, audio = asyncio.run(run())
    assert len(events) >= 3, events  # a 2 Hz LFO for 1.5 s: a note per swing
    assert all(e["voice"] == 0 and len(e["values"]) == K for e in events)
    assert rms(audio) > SOUND_RMS


def test_raw_osc_input_plays_when_moved(server):
    moving = np.stack([sine(90, 60.0), sine(90, 60.0, phase=1.0), np.full(90, 0.5)], axis=1)

    async def run():
        async with Monitor(server.ws_url) as mon:
            await mon.quiet()
            sock, addr = osc_socket(server)

            async def send(i, v):
                sock.sendto(message("/sensorsynth/input/x", *v).build().dgram, addr)

            out = await play_phase(server, mon, paced(moving, 60, send), "raw:x", True)
            sock.close()
            return out

    events, audio = asyncio.run(run())
    assert len(events) >= 3 and rms(audio) > SOUND_RMS


def test_zigsim_phone_shaken_plays(server):
    shake = [(0.0, 1.2 * math.sin(2 * math.pi * 4 * i / 60), 0.3) for i in range(90)]  # 4 Hz, ±1.2 G

    async def run():
        async with Monitor(server.ws_url) as mon:
            await mon.quiet()
            sock, addr = osc_socket(server)

            async def send(i, a):
                b = OscBundleBuilder(1)  # ZIG SIM sends its addresses together
                b.add_content(message("/ZIGSIM/dev1/accel", *a).build())
                b.add_content(message("/ZIGSIM/dev1/gyro", 0.0, 0.0, 0.0).build())
                sock.sendto(b.build().dgram, addr)

            out = await play_phase(server, mon, paced(shake, 60, send), "motion:zigsim:dev1", True)
            sock.close()
            return out

    events, audio = asyncio.run(run())
    assert len(events) >= 4 and rms(audio) > SOUND_RMS


@pytest.mark.skipif(not WEKINATOR, reason="UDP 6448 (Wekinator's port) is taken on this machine")
def test_wekinator_inputs_on_port_6448_play(server):
    assert json.loads(_http(server, "/health"))["mapping"]["presets"][-1] == "wekinator"
    moving = np.stack([sine(90, 60.0), sine(90, 60.0, hz=3.0)], axis=1)

    async def run():
        async with Monitor(server.ws_url) as mon:
            await mon.quiet()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

            async def send(i, v):
                sock.sendto(message("/wek/inputs", *v).build().dgram, ("127.0.0.1", 6448))

            out = await play_phase(server, mon, paced(moving, 60, send), "raw:wek", True)
            sock.close()
            return out

    events, audio = asyncio.run(run())
    assert len(events) >= 3 and rms(audio) > SOUND_RMS


def test_hand_landmark_frames_over_the_websocket_play_snaps(server):
    t, frames = hand_stream("snap", 2.0, 30.0, seed=7)

    async def run():
        async with Monitor(server.ws_url) as mon:
            await mon.quiet()
            ws = await ws_sender(server, "hands")

            async def send(i, frame):
                await ws.send(json.dumps({"type": "sensor", "source": "hands/right", "kind": "hand", "hand": "Right",
                                          "values": frame.tolist(), "t": float(t[i])}))

            out = await play_phase(server, mon, paced(frames, 30, send), "hand:hands/right", True)
            await ws.close()
            return out

    events, audio = asyncio.run(run())
    assert 3 <= len(events) <= 5, events  # a snap every 0.5 s for 2 s: four notes
    assert all(e["voice"] >= 1 for e in events) and rms(audio) > SOUND_RMS


def test_phone_motion_from_a_real_running_recording_plays(server):
    _, t, frames = basicmotions("running", rate_hz=60.0)[2]

    async def run():
        async with Monitor(server.ws_url) as mon:
            await mon.quiet()
            ws = await ws_sender(server, "phone")

            async def send(i, frame):
                await ws.send(json.dumps({"type": "sensor", "source": "phone", "kind": "motion",
                                          "values": frame.tolist(), "t": float(t[i])}))

            out = await play_phase(server, mon, paced(frames[60:180], 60, send), "motion:phone", True)
            await ws.close()
            return out

    events, audio = asyncio.run(run())
    assert len(events) >= 5 and rms(audio) > SOUND_RMS  # running: about 4 notes a second


def _pose_cycle(rate: float = 50.0):
    """A two-axis sensor alternating two poses (0.6 s each) and a rest."""
    for pose, note in (((0.9, 0.1), 2), ((0.5, 0.5), None), ((0.1, 0.9), 9), ((0.5, 0.5), None)):
        for i in range(int(0.6 * rate)):
            yield pose, (note if i == 10 else None)


def test_learned_mapping_over_osc_record_train_run(server):
    """Record (pose, note) pairs over OSC, train, run: each pose plays its note; the rest is silent."""
    learned = server.models / "guitar.learned.json"

    async def run():
        async with Monitor(server.ws_url) as mon:
            await mon.quiet()
            sock, addr = osc_socket(server)
            send = lambda m: sock.sendto(m.build().dgram, addr)  # noqa: E731
            rec = OscMessageBuilder("/sensorsynth/learn/record")
            rec.add_arg(1, "i")
            rec.add_arg("pose", "s")
            send(rec)

            async def frame(i, item):
                (pose, note) = item
                send(message("/sensorsynth/input/pose", *pose))
                if note is not None:
                    send(message(f"/sensorsynth/control/{note}", 0.7))

            await paced(list(_pose_cycle()) * 2, 50, frame)
            stop = OscMessageBuilder("/sensorsynth/learn/record")
            stop.add_arg(0, "i")
            send(stop)
            send(OscMessageBuilder("/sensorsynth/learn/train"))
            deadline = time.monotonic() + 30
            while not learned.exists():
                assert time.monotonic() < deadline, "training did not write the model"
                await asyncio.sleep(0.1)
            run_on = OscMessageBuilder("/sensorsynth/learn/run")
            run_on.add_arg(1, "i")
            send(run_on)
            await asyncio.sleep(0.1)
            await mon.quiet()
            played = {}
            for name, pose in (("a", (0.9, 0.1)), ("rest", (0.5, 0.5)), ("b", (0.1, 0.9)), ("rest2", (0.5, 0.5))):
                start = mon.time

                async def hold(i, p):
                    send(message("/sensorsynth/input/pose", *p))

                await paced([pose] * 25, 50, hold)
                await asyncio.sleep(0.2)
                played[name] = mon.controls("raw:pose", start - 0.05)
            off = OscMessageBuilder("/sensorsynth/learn/run")
            off.add_arg(0, "i")
            send(off)
            sock.close()
            return played

    played = asyncio.run(run())
    assert played["a"] and int(np.argmax(played["a"][0]["values"])) == 2, played["a"]
    assert played["b"] and int(np.argmax(played["b"][0]["values"])) == 9, played["b"]
    assert not played["rest"] and not played["rest2"]
    doc = json.loads(learned.read_text())  # data, not a pickle
    assert doc["format"] == "sensorsynth-learned" and "pose" in doc["sources"]
    assert doc["sources"]["pose"]["model"] == "ridge" and doc["sources"]["pose"]["pairs"] >= 200
    assert doc["sources"]["pose"]["events"] == 4


def test_learned_mapping_over_the_websocket(server):
    """The same loop from a browser-like client: learn messages, control messages as targets, sensor frames."""

    async def run():
        async with Monitor(server.ws_url) as mon:
            await mon.quiet()
            ws = await ws_sender(server, "learner")

            async def ask(msg):
                await ws.send(json.dumps({"type": "learn", **msg}))
                while True:
                    reply = json.loads(await ws.recv())
                    if reply["type"] in ("learn", "error"):
                        return reply

            state = await ask({"action": "record", "enabled": True})
            assert state["recording"] is True and state["instrument"] == "guitar"
            t0 = time.monotonic()

            async def frame(i, item):
                (pose, note) = item
                await ws.send(json.dumps({"type": "sensor", "source": "knobs", "values": list(pose),
                                          "t": time.monotonic() - t0}))
                if note is not None:
                    await ws.send(json.dumps({"type": "control", "index": note, "value": 0.7}))

            await paced(list(_pose_cycle()) * 2, 50, frame)
            state = await ask({"action": "record", "enabled": False})
            assert state["frames"]["knobs"] >= 200 and state["targets"] == 4
            trained = await ask({"action": "train", "model": "mlp"})
            assert "knobs" in trained["trained"] and not trained["errors"], trained
            assert trained["models"]["knobs"]["model"] == "mlp"
            assert (await ask({"action": "run", "enabled": True}))["running"] is True
            await mon.quiet()
            played = {}
            for name, pose in (("a", (0.9, 0.1)), ("rest", (0.5, 0.5)), ("b", (0.1, 0.9))):
                start = mon.time

                async def hold(i, p):
                    await ws.send(json.dumps({"type": "sensor", "source": "knobs", "values": list(p),
                                              "t": time.monotonic() - t0}))

                await paced([pose] * 25, 50, hold)
                await asyncio.sleep(0.2)
                played[name] = mon.controls("raw:knobs", start - 0.05)
            await ws.send(json.dumps({"type": "calibrate", "source": "knobs", "lo": [0, 0], "hi": [1, 1]}))
            calibration = json.loads(await ws.recv())
            await ws.close()
            return played, calibration

    played, calibration = asyncio.run(run())
    assert played["a"] and int(np.argmax(played["a"][0]["values"])) == 2, played
    assert played["b"] and int(np.argmax(played["b"][0]["values"])) == 9, played
    assert not played["rest"]
    assert calibration["type"] == "calibration" and calibration["calibration"]["mode"] == "set"


def test_sensor_errors_come_back_and_the_connection_stays(server):
    async def run():
        ws = await ws_sender(server, "bad")
        out = []
        for msg in ({"type": "sensor", "source": "p", "kind": "motion", "values": [1.0, 2.0]},
                    {"type": "sensor", "source": "bad name", "values": [1.0]},
                    {"type": "calibrate", "source": "never-seen"},
                    {"type": "learn", "action": "train"}):
            await ws.send(json.dumps(msg))
            out.append(json.loads(await ws.recv()))
        await ws.close()
        return out

    replies = asyncio.run(run())
    assert [r.get("code") for r in replies[:3]] == ["wrong_count", "bad_source", "unknown_source"], replies
    assert replies[3]["type"] == "learn" and replies[3]["errors"], replies[3]


def test_an_unknown_preset_is_a_start_up_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sensorsynth", "serve", str(REPO / "models"), "--output", "null",
                        "--preset", "nonesuch"], capture_output=True, text=True, cwd=REPO, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "nonesuch" in lines[0] and "touchdesigner" in lines[0], r.stderr


def test_presets_from_a_config_file_are_relative_to_it(tmp_path):
    from sensorsynth.mapping.presets import PresetError, load_preset
    from sensorsynth.server.config import load_config

    (tmp_path / "mine.toml").write_text('name = "mine"\n[[sources]]\nname = "s"\nkind = "motion"\nwidth = 4\n')
    cfg = tmp_path / "serve.toml"
    cfg.write_text('presets = ["mine.toml", "zigsim"]\n')
    config = load_config(cfg)
    assert config.presets == [str(tmp_path / "mine.toml"), "zigsim"]
    with pytest.raises(PresetError) as info:
        load_preset(config.presets[0])
    assert str(tmp_path / "mine.toml") in str(info.value) and "9 values" in str(info.value)
    assert load_config(None, {"presets": ["touchdesigner"]}).presets == ["touchdesigner"]
