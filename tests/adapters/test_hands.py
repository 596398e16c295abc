"""The webcam hands adapter (adapters/hands/sensorsynth_hands.py): a standalone program, loaded here from its
file. The real MediaPipe model runs on frames (an empty one, and a drawn hand it detects: see
synthetic_hand.py); its messages go to a real ``sensorsynth serve`` and are counted there; the sender
reconnects after the server restarts; recorded landmark streams replay; a missing model is one clear error.

The model tests need ``mediapipe`` (``pip install 'sensorsynth[hands]'``) and the model file at
``../shared/models/hand_landmarker.task``; they skip, saying which, without them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from sensorsynth.protocol import ws as wire

from .synthetic_hand import blank_image, hand_image, write_video

pytestmark = pytest.mark.slow  # MediaPipe's model on video, into a real server


REPO = Path(__file__).resolve().parents[2]
ADAPTER = REPO / "adapters" / "hands" / "sensorsynth_hands.py"
MODEL = REPO.parent / "shared" / "models" / "hand_landmarker.task"


def load_adapter():
    spec = importlib.util.spec_from_file_location("sensorsynth_hands", ADAPTER)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sensorsynth_hands"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


hands = load_adapter()


def needs_model():
    pytest.importorskip("mediapipe", reason="mediapipe is not installed: pip install 'sensorsynth[hands]'")
    pytest.importorskip("cv2", reason="OpenCV is not installed (mediapipe brings it)")
    if not MODEL.is_file():
        pytest.skip(f"no hand model at {MODEL} (see ../shared/models/SOURCES.md)")


def health(server) -> dict:
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as res:
        return json.loads(res.read())


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


# ---------------------------------------------------------------------------------------------- conversion


def fake_result(*hands_: tuple[str, float], nan: bool = False):
    """A HandLandmarkerResult look-alike: per hand (label, score), landmarks on a line."""
    lm = lambda x, y, z: SimpleNamespace(x=x, y=y, z=z)  # noqa: E731
    world, image, handedness = [], [], []
    for h, (label, score) in enumerate(hands_):
        world.append([lm(0.01 * i + h, -0.005 * i, 0.002 * i) for i in range(21)])
        image.append([lm(0.5, 0.5, (math.nan if nan and i == 3 else -0.01 * i)) for i in range(21)])
        handedness.append([SimpleNamespace(category_name=label, score=score)])
    return SimpleNamespace(hand_world_landmarks=world, hand_landmarks=image, handedness=handedness)


def test_a_result_becomes_valid_hand_frames():
    frames = hands.hand_frames(fake_result(("Left", 0.9), ("Right", 0.8)), t=1.23456)
    assert [f["source"] for f in frames] == ["hands/left", "hands/right"]
    for f in frames:
        msg = wire.parse_client(json.dumps(f))  # exactly what the server accepts
        assert msg.kind == "hand" and msg.hand in ("Left", "Right") and len(msg.values) == 84
        assert msg.t == pytest.approx(1.2346)
    left = frames[0]["values"]
    assert left[:6] == pytest.approx([0, 0, 0, 0.01, -0.005, 0.002])  # world x, y, z per landmark
    assert left[63:66] == pytest.approx([0, -0.01, -0.02])  # then the image z of each landmark

    # Two hands called the same side keep apart: the less sure one takes the other side.
    same = hands.hand_frames(fake_result(("Right", 0.6), ("Right", 0.95)), t=0)
    assert [f["hand"] for f in same] == ["Left", "Right"]
    assert [f["hand"] for f in hands.hand_frames(fake_result(("Left", 0.9)), 0, swap=True)] == ["Right"]
    assert hands.hand_frames(fake_result(("Left", 0.9), nan=True), 0) == [], "non-finite landmarks are left out"
    assert hands.hand_frames(fake_result(), 0) == []
    assert hands.hand_frames(fake_result(("Left", 0.9)), 0, source="cam2")[0]["source"] == "cam2/left"


def test_the_token_goes_into_the_address():
    assert hands.with_token("ws://h:8765/ws", None) == "ws://h:8765/ws"
    assert hands.with_token("ws://h:8765/ws", "abc") == "ws://h:8765/ws?token=abc"
    assert hands.with_token("ws://h:8765/ws?token=old&x=1", "new") == "ws://h:8765/ws?x=1&token=new"


# ---------------------------------------------------------------------------------------------- the model


def test_the_model_loads_runs_and_finds_a_hand():
    needs_model()
    import cv2

    with hands.Landmarker(MODEL, num_hands=2) as lm:
        empty = lm.detect(cv2.cvtColor(blank_image(), cv2.COLOR_BGR2RGB), 0)
        assert empty.hand_landmarks == [] and empty.hand_world_landmarks == [] and empty.handedness == []
        assert hands.hand_frames(empty, 0.0) == []

        found = []
        for i, cx in enumerate(range(280, 360, 8)):
            result = lm.detect(cv2.cvtColor(hand_image(cx=cx), cv2.COLOR_BGR2RGB), 33 * (i + 1))
            found.append(hands.hand_frames(result, i / 30))
        infer = list(lm.infer_ms)
    hit = [f for f in found if f]
    assert len(hit) >= 8, f"the drawn hand was found in {len(hit)} of {len(found)} frames"
    for frames in hit:
        assert len(frames) == 1, "one hand drawn, one hand found"
        values = frames[0]["values"]
        assert len(values) == 84 and all(math.isfinite(v) for v in values)
        world = [values[i : i + 3] for i in range(0, 63, 3)]
        assert max(abs(c) for p in world for c in p) < 0.3, "world landmarks are metres around the hand's centre"
        wire.parse_client(json.dumps(frames[0]))
    p50, p99 = hands.percentiles(infer[1:], 0.5, 0.99)
    print(f"\nHandLandmarker on this CPU (640×480, video mode): p50 {p50:.1f} ms, p99 {p99:.1f} ms per frame")


def test_a_missing_model_is_one_clear_error(tmp_path):
    res = subprocess.run([sys.executable, str(ADAPTER), "--model", str(tmp_path / "nope.task"), "--video", "x.mp4"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: hand model not found: {tmp_path / 'nope.task'}\n"), res.stderr
    assert "--model FILE" in res.stderr and "Traceback" not in res.stderr
    assert str(hands.DEFAULT_MODEL) == str(MODEL)


# ---------------------------------------------------------------------------------------------- to the server


def test_a_video_through_the_adapter_reaches_the_server(start_server, tmp_path):
    needs_model()
    video = write_video(tmp_path / "hand.avi", seconds=2.0, fps=30)
    server = start_server(record=False)
    take = tmp_path / "take.jsonl"
    res = subprocess.run(
        [sys.executable, str(ADAPTER), "--model", str(MODEL), "--video", str(video), "--fast",
         "--server", server.ws_url, "--wait", "20", "--record-landmarks", str(take)],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr == "", "MediaPipe's native log lines must not reach the terminal"
    summary = res.stdout.strip().splitlines()[-1]
    print("\n" + summary)
    assert summary.startswith("hands: 60 frames")
    recorded = [json.loads(line) for line in take.read_text().splitlines()]
    assert len(recorded) >= 50, summary  # the drawn hand, nearly every frame
    assert f"{len(recorded)} messages sent, 0 dropped" in summary
    assert all(m["kind"] == "hand" and len(m["values"]) == 84 for m in recorded)
    wait_until(lambda: health(server)["ws"]["sensor_frames"] == len(recorded), 10, "the frames at the server")
    assert not any(k.startswith("ws:") for k in health(server)["rejected"])

    # The recording replays (no camera, no model) with its timing, and arrives the same.
    res = subprocess.run([sys.executable, str(ADAPTER), "--replay", str(take), "--speed", "4",
                          "--server", server.ws_url, "--wait", "20"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: health(server)["ws"]["sensor_frames"] == 2 * len(recorded), 10, "the replayed frames")
    assert server.stop() == 0


def test_a_still_hand_on_camera_is_silent_and_a_moving_one_plays(start_server, tmp_path):
    """The whole chain: video frames → the real model → the adapter → the server's mappings → events."""
    needs_model()
    server = start_server(record=False)
    if "mapping" not in health(server):
        pytest.skip("the server has no mappings (sensorsynth/mapping): landmarks reach it but cannot play")

    def events_after(motion: str) -> int:
        video = write_video(tmp_path / f"{motion}.avi", seconds=2.0, motion=motion)
        before = health(server)["mapping"]["events"]
        res = subprocess.run([sys.executable, str(ADAPTER), "--model", str(MODEL), "--video", str(video),
                              "--server", server.ws_url, "--wait", "20"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert ", 60 with hands;" in res.stdout, res.stdout
        time.sleep(0.3)
        return health(server)["mapping"]["events"] - before

    assert events_after("still") == 0, "a hand held still (with the tracker's own jitter) must not play"
    assert events_after("flex") >= 3, "a hand turning and closing must play"
    assert server.stop() == 0


def synthetic_landmarks(n: int, rate: float = 30.0) -> list[dict]:
    """A waving hand as the adapter sends it: 21 world landmarks on a fan, moving, and their image z."""
    out = []
    for k in range(n):
        t = k / rate
        sway = 0.03 * math.sin(2 * math.pi * 1.5 * t)
        world = []
        for i in range(21):
            finger, joint = divmod(i - 1, 4) if i else (0, -1)
            a = math.radians(-40 + 20 * finger)
            r = 0.0 if i == 0 else 0.03 + 0.02 * (joint + 1)
            world += [r * math.sin(a) + sway, -r * math.cos(a), 0.005 * joint]
        out.append({"type": "sensor", "source": "hands/right", "kind": "hand", "hand": "Right",
                    "values": world + [-0.01 * i for i in range(21)], "t": round(t, 4)})
    return out


def test_the_sender_drops_while_down_and_reconnects_to_a_restarted_server(start_server, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = start_server("--ws-port", str(port), record=False)
    logs: list[str] = []
    sender = hands.Sender(first.ws_url, log=logs.append).start()
    try:
        assert sender.wait_connected(20), logs
        frames = synthetic_landmarks(60)
        for msg in frames[:30]:
            assert sender.send(msg)
            time.sleep(0.005)
        sender.flush()
        wait_until(lambda: health(first)["ws"]["sensor_frames"] == 30, 10, "30 frames at the first server")
        lat = list(sender.stats.latency_ms)

        assert first.stop() == 0
        wait_until(lambda: not sender.connected.is_set(), 10, "the sender to notice")
        for msg in frames[30:40]:
            assert not sender.send(msg), "a frame made while the server is away is dropped, not queued"
        assert sender.stats.dropped_offline >= 10

        second = start_server("--ws-port", str(port), record=False)
        assert sender.wait_connected(30), logs
        for msg in frames[40:]:
            assert sender.send(msg)
            time.sleep(0.005)  # a camera's pace; a burst beyond the small queue drops the oldest (below)
        sender.flush()
        wait_until(lambda: health(second)["ws"]["sensor_frames"] == 20, 10, "20 frames at the second server")
        assert sender.stats.connects == 2 and sender.stats.sent == 50 and sender.stats.dropped_full == 0

        # A burst the link cannot take at once keeps the newest frames: never more than the queue waits.
        before = sender.stats.sent
        for msg in frames * 2:
            sender.send(msg)
        sender.flush()
        assert sender.stats.sent - before + sender.stats.dropped_full == 120
        assert sender.stats.sent - before >= sender.max_queue
        assert any("not reachable" in line for line in logs), logs
        assert not any("token" in line for line in logs)
    finally:
        sender.stop()
    p50, p99 = hands.percentiles(lat, 0.5, 0.99)
    print(f"\nsender: send() → ws.send done p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert second.stop() == 0


def test_a_server_that_wants_a_token_says_so(start_server):
    server = start_server("--ws-token", "secret-token-0001", record=False)
    logs: list[str] = []
    sender = hands.Sender(server.ws_url, log=logs.append).start()
    try:
        wait_until(lambda: any("403" in line for line in logs), 10, "the refusal")
        assert any("--token" in line for line in logs), logs
        assert not sender.connected.is_set()
    finally:
        sender.stop()
    good = hands.Sender(hands.with_token(server.ws_url, "secret-token-0001"), log=logs.append).start()
    try:
        assert good.wait_connected(10), logs
        assert not any("secret-token-0001" in line for line in logs), "the token is never printed"
    finally:
        good.stop()
    assert server.stop() == 0
