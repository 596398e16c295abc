#!/usr/bin/env python3
"""sensorsynth hands: a webcam (or a video file) → MediaPipe Tasks HandLandmarker → sensor frames for a running
``sensorsynth serve``, over its WebSocket.

    python adapters/hands/sensorsynth_hands.py                                # camera 0, the local server
    python adapters/hands/sensorsynth_hands.py --server ws://192.168.1.20:8765/ws?token=... --preview
    python adapters/hands/sensorsynth_hands.py --video hands.mp4 --loop       # a file instead of a camera
    python adapters/hands/sensorsynth_hands.py --video hands.mp4 --record-landmarks take.jsonl
    python adapters/hands/sensorsynth_hands.py --replay take.jsonl            # recorded landmarks, no camera

Each detected hand, each camera frame, becomes one message (sensorsynth/protocol/ws.py, ``SensorMsg``):

    {"type": "sensor", "source": "hands/left", "kind": "hand", "hand": "Left", "t": 12.345,
     "values": [21 world landmarks x, y, z (metres, wrist-centred) ..., then the 21 image-space z]}

Up to two hands, each its own ``source`` ("hands/left", "hands/right"), so the server keeps one mapping
state per hand. Handedness is MediaPipe Tasks' (the subject's own hand on an unmirrored camera image; the
old ``solutions`` API said the opposite); ``--swap-hands`` swaps it. No hand, no message.

The model is a file (nothing is downloaded): ``--model`` (default ``../shared/models/hand_landmarker.task``
beside this repository). Frames are dropped, never queued, while the server is unreachable; the adapter
reconnects by itself (0.5 s doubling to 10 s, jittered). ``--preview`` shows the camera with the landmarks
when there is a display (q or Esc quits). ``--stats`` prints rates and latencies every 5 s; a summary is
printed at the end either way. Exit codes: 0 done (end of file, Ctrl-C, q), 2 a problem to fix (no model,
no camera, no mediapipe, bad arguments), 1 an unexpected failure.

It is a standalone program, not part of the ``sensorsynth`` package: it needs ``websockets`` and ``numpy``,
plus ``mediapipe`` (which brings OpenCV) for the camera: ``pip install 'sensorsynth[hands]'`` or
``pip install mediapipe websockets``.

(Past 500 lines on purpose: a standalone program that must run from a copy of this one file, without the
sensorsynth package: its command line, camera, landmark features, replay and WebSocket client are all here.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE.parents[1].parent / "shared" / "models" / "hand_landmarker.task"
DEFAULT_SERVER = "ws://127.0.0.1:8765/ws"
N_LANDMARKS = 21
HAND_VALUES = 4 * N_LANDMARKS  # 63 world coordinates + 21 image z
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0
# Landmark pairs drawn in the preview (MediaPipe's hand topology: wrist 0, thumb 1-4, fingers 5-20).
CONNECTIONS = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
               (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20)]


class AdapterError(Exception):
    """A problem the user can fix (no model, no camera, no mediapipe); printed as one ``error:`` line."""


def now_s() -> float:
    return time.perf_counter()


def percentiles(values: Iterable[float], *qs: float) -> list[float | None]:
    s = sorted(values)
    if not s:
        return [None for _ in qs]
    return [s[min(len(s) - 1, int(q * len(s)))] for q in qs]


# ---------------------------------------------------------------------------------------- landmarks → frames


def hand_frames(result: Any, t: float, source: str = "hands", swap: bool = False) -> list[dict]:
    """A HandLandmarkerResult (anything with ``handedness``, ``hand_landmarks``, ``hand_world_landmarks``) →
    one ``sensor`` message per hand. Hands with missing or non-finite landmarks are left out. Two hands given
    the same side (it happens when they cross) keep the surer one's label, and the other gets the other side,
    so each keeps its own source."""
    hands = []
    for i, world in enumerate(result.hand_world_landmarks or []):
        image = result.hand_landmarks[i] if i < len(result.hand_landmarks or []) else None
        cats = result.handedness[i] if i < len(result.handedness or []) else []
        if image is None or len(world) != N_LANDMARKS or len(image) != N_LANDMARKS:
            continue
        label = cats[0].category_name if cats else "Right"
        score = float(cats[0].score) if cats and cats[0].score is not None else 0.0
        if label not in ("Left", "Right"):
            continue
        if swap:
            label = "Left" if label == "Right" else "Right"
        values = [c for lm in world for c in (lm.x, lm.y, lm.z)] + [lm.z for lm in image]
        if not all(v is not None and math.isfinite(v) for v in values):
            continue
        hands.append([score, label, values])
    if len(hands) == 2 and hands[0][1] == hands[1][1]:
        weaker = hands[0] if hands[0][0] < hands[1][0] else hands[1]
        weaker[1] = "Left" if weaker[1] == "Right" else "Right"
    return [
        {"type": "sensor", "source": f"{source}/{label.lower()}", "kind": "hand", "hand": label,
         "values": [round(float(v), 5) for v in values], "t": round(t, 4)}
        for _, label, values in hands
    ]


# ---------------------------------------------------------------------------------------- the WebSocket side


def with_token(url: str, token: str | None) -> str:
    """The server URL with ``?token=`` added (a server reachable from the network asks for its token)."""
    if not token:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class SenderStats:
    sent: int = 0
    dropped_offline: int = 0  # made while not connected: dropped, never sent late
    dropped_full: int = 0  # the link could not keep up: the oldest queued frames were dropped
    connects: int = 0
    server_errors: dict[str, int] = field(default_factory=dict)
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=2000))  # frame made → ws.send done


class Sender:
    """Sends messages to the server from any thread, over one WebSocket kept open by its own thread and
    event loop: hello on every (re)connect, reconnects with a capped, jittered backoff, and drops what is
    made while it is down. ``send()`` never blocks the camera loop."""

    def __init__(self, url: str, client: str = "hands adapter", log: Callable[[str], None] = print,
                 max_queue: int = 8) -> None:
        self.url = url
        self.client = client
        self.log = log
        self.max_queue = max_queue
        self.stats = SenderStats()
        self.connected = threading.Event()
        self.welcome: dict | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._ready = threading.Event()
        self._said: set[str] = set()
        self._handed = 0  # messages given to the sender thread ...
        self._settled = 0  # ... and those of them sent or dropped since (flush waits for the two to meet)

    # -- called from the camera thread
    def start(self) -> "Sender":
        self._thread = threading.Thread(target=self._thread_main, name="hands-sender", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        return self

    def send(self, msg: dict, made_at: float | None = None) -> bool:
        """Queue one message; False when it was dropped because the server is not connected."""
        if not self.connected.is_set() or self._loop is None:
            self.stats.dropped_offline += 1
            return False
        text = json.dumps(msg, separators=(",", ":"))
        self._handed += 1
        self._loop.call_soon_threadsafe(self._put, (text, made_at if made_at is not None else now_s()))
        return True

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until what was queued has been handed to the socket."""
        deadline = now_s() + timeout
        while self._settled < self._handed and now_s() < deadline:
            time.sleep(0.005)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._put, None)
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the sender's own thread
    def _put(self, item: tuple[str, float] | None) -> None:
        assert self._queue is not None
        if item is not None and self._queue.qsize() >= self.max_queue:
            self._queue.get_nowait()  # the newest frames matter: a late hand position plays wrong
            self.stats.dropped_full += 1
            self._settled += 1
        self._queue.put_nowait(item)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._queue = asyncio.Queue()
        self._ready.set()
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    def _say_once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.log(text)

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        delay = FIRST_RETRY_S
        while not self._stopping:
            why = ""
            try:
                async with connect(self.url, open_timeout=5, ping_interval=5, ping_timeout=10, max_queue=64,
                                   compression=None, close_timeout=2) as ws:
                    await ws.send(json.dumps({"type": "hello", "client": self.client, "monitor": False,
                                              "audio": False}))
                    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if welcome.get("type") != "welcome":
                        raise ConnectionError(f"the server answered {welcome.get('type')!r}, not welcome")
                    self.welcome = welcome
                    self.stats.connects += 1
                    delay = FIRST_RETRY_S
                    self._said.discard("down")
                    self.log(f"connected to {self._shown_url()} (voice {welcome.get('voice')})")
                    self.connected.set()
                    if await self._pump(ws):
                        return
                    why = "connection lost"
            except InvalidStatus as exc:
                code = exc.response.status_code
                body = exc.response.body.decode(errors="replace")[:200] if exc.response.body else ""
                why = f"refused with HTTP {code}{': ' + body if body else ''}"
                if code == 403:
                    why += " (pass the token printed by `sensorsynth serve`: --token, or ?token= in --server)"
            except (OSError, asyncio.TimeoutError, WebSocketException, ConnectionError, ValueError) as exc:
                why = str(exc) or type(exc).__name__
            finally:
                self.connected.clear()
                self._drain()
            if self._stopping:
                return
            wait = delay * (0.75 + 0.5 * random.random())
            self._say_once("down", f"server {self._shown_url()} not reachable ({why}); retrying every "
                                   f"{FIRST_RETRY_S:g}-{MAX_RETRY_S:g} s, frames are dropped meanwhile")
            delay = min(delay * 2, MAX_RETRY_S)
            await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        assert self._queue is not None
        end = now_s() + seconds
        while not self._stopping and now_s() < end:
            try:  # wake at once for stop(); anything else queued while down is dropped
                item = await asyncio.wait_for(self._queue.get(), max(0.01, end - now_s()))
                if item is None:
                    return
                self.stats.dropped_offline += 1
                self._settled += 1
            except asyncio.TimeoutError:
                pass

    async def _pump(self, ws) -> bool:
        """Send queued messages until the connection ends (False) or stop() is asked (True)."""
        assert self._queue is not None
        reader = asyncio.create_task(self._read(ws))
        try:
            while True:
                getter = asyncio.create_task(self._queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return False
                item = getter.result()
                if item is None:
                    await ws.close()
                    return True
                text, made_at = item
                try:
                    await ws.send(text)
                except BaseException:
                    self.stats.dropped_offline += 1
                    self._settled += 1
                    raise
                self.stats.sent += 1
                self.stats.latency_ms.append((now_s() - made_at) * 1000)
                self._settled += 1
        finally:
            reader.cancel()

    async def _read(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in ws:
                if isinstance(message, bytes):
                    continue
                try:
                    msg = json.loads(message)
                except ValueError:
                    continue
                if msg.get("type") == "error":
                    code = str(msg.get("code"))
                    self.stats.server_errors[code] = self.stats.server_errors.get(code, 0) + 1
                    self._say_once(f"error:{code}", f"server: {msg.get('message', code)} (said once per kind)")
        except ConnectionClosed:
            pass

    def _drain(self) -> None:
        while self._queue is not None and not self._queue.empty():
            if self._queue.get_nowait() is not None:
                self.stats.dropped_offline += 1
                self._settled += 1

    def _shown_url(self) -> str:
        parts = urlsplit(self.url)  # never print the token
        return urlunsplit(parts._replace(query=""))


# ---------------------------------------------------------------------------------------- the model


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[list[str]]:
    """Silence the native INFO chatter TFLite/LiteRT write straight to fd 2 while the model loads; what was
    written is handed back (for an error message)."""
    captured: list[str] = []
    if not enabled:
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode(errors="replace"))


@contextlib.contextmanager
def native_stderr_to_null(enabled: bool = True) -> Iterator[None]:
    """MediaPipe's native code logs warnings straight to fd 2 (alignment, ROI notes) with no switch to turn
    them off: send fd 2 to /dev/null while it runs, and keep Python's own stderr (our errors) on the real
    one."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr.close()
        sys.stderr = python_stderr


def import_mediapipe():
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as exc:
        raise AdapterError(f"mediapipe is not installed ({exc}): pip install 'sensorsynth[hands]' "
                           "(or pip install mediapipe)") from None
    return mp, BaseOptions, vision


class Landmarker:
    """MediaPipe Tasks HandLandmarker in video mode (it tracks between frames: faster than detecting anew)."""

    def __init__(self, model: str | Path, num_hands: int = 2, min_confidence: float = 0.5,
                 verbose: bool = False) -> None:
        model = Path(model)
        if not model.is_file():
            raise AdapterError(
                f"hand model not found: {model}\n"
                "  it is a MediaPipe Tasks bundle (hand_landmarker.task); nothing is downloaded at run time. This "
                "project keeps one at ../shared/models/hand_landmarker.task (see ../shared/models/SOURCES.md); "
                "pass its path with --model FILE")
        self.mp, BaseOptions, vision = import_mediapipe()
        options = vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model)), running_mode=vision.RunningMode.VIDEO,
            num_hands=num_hands, min_hand_detection_confidence=min_confidence,
            min_hand_presence_confidence=min_confidence, min_tracking_confidence=min_confidence,
        )
        self.verbose = verbose
        with quiet_stderr(not verbose) as said:
            try:
                self._task = vision.HandLandmarker.create_from_options(options)
            except Exception as exc:  # noqa: BLE001 - mediapipe raises plain RuntimeError/ValueError
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self._task = None
                error = exc
            else:
                error = None
        if error is not None:
            native = said[0].strip().splitlines()[-1] if said and said[0].strip() else ""
            raise AdapterError(f"cannot load the hand model {model}: {detail}" + (f" ({native})" if native else ""))
        self.last_ms = -1
        self.infer_ms: deque = deque(maxlen=2000)

    def detect(self, rgb, timestamp_ms: int):
        """Landmarks of one RGB frame (H×W×3 uint8). Timestamps must grow; equal ones are nudged."""
        import numpy as np

        ts = max(int(timestamp_ms), self.last_ms + 1)
        self.last_ms = ts
        image = self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        t0 = now_s()
        result = self._task.detect_for_video(image, ts)
        self.infer_ms.append((now_s() - t0) * 1000)
        return result

    def close(self) -> None:
        if self._task is not None:
            with quiet_stderr(not self.verbose):
                self._task.close()
            self._task = None

    def __enter__(self) -> "Landmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- frames in


@dataclass
class Frame:
    bgr: Any  # H×W×3 uint8, OpenCV's channel order
    t: float  # seconds: the capture clock (camera) or the position in the file
    made_at: float  # perf_counter when it was read: latencies start here


def import_cv2():
    try:
        import cv2
    except ImportError as exc:
        raise AdapterError(f"OpenCV is not installed ({exc}): pip install 'sensorsynth[hands]' "
                           "(mediapipe brings it)") from None
    return cv2


def camera_frames(index: int, width: int | None, height: int | None) -> Iterator[Frame]:
    cv2 = import_cv2()
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise AdapterError(f"cannot open camera {index} (is it connected, and free? try --camera 1, or --video FILE)")
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    t0 = now_s()
    failures = 0
    try:
        while True:
            ok, bgr = cap.read()
            made = now_s()
            if not ok:
                failures += 1
                if failures > 30:
                    raise AdapterError(f"camera {index} stopped delivering frames")
                time.sleep(0.01)
                continue
            failures = 0
            yield Frame(bgr, made - t0, made)
    finally:
        cap.release()


def video_frames(path: str | Path, loop: bool = False, realtime: bool = True) -> Iterator[Frame]:
    """A file's frames at its own pace (``realtime``) or as fast as they are processed; ``t`` is the
    position in the file, growing across loops."""
    cv2 = import_cv2()
    if not Path(path).is_file():
        raise AdapterError(f"video file not found: {path}")
    offset = 0.0
    start = now_s()
    while True:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise AdapterError(f"cannot read video {path} (a format OpenCV's FFmpeg cannot open?)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        fps = fps if 1 <= fps <= 1000 else 30.0
        n = 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                t = offset + n / fps
                n += 1
                if realtime:
                    ahead = start + t - now_s()
                    if ahead > 0:
                        time.sleep(ahead)
                yield Frame(bgr, t, now_s())
        finally:
            cap.release()
        if n == 0:
            raise AdapterError(f"no frames in video {path}")
        if not loop:
            return
        offset += n / fps


# ---------------------------------------------------------------------------------------- preview


class Preview:
    """The camera picture with the landmarks, in a window, when there is a display."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.cv2 = import_cv2()
        self.ok = True
        self.title = "sensorsynth hands (q quits)"
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            log("no display (DISPLAY is not set): running without the preview")
            self.ok = False
            return
        try:
            self.cv2.namedWindow(self.title, self.cv2.WINDOW_NORMAL)
        except self.cv2.error as exc:
            log(f"cannot open a preview window ({str(exc).strip().splitlines()[-1]}): running without it")
            self.ok = False

    def show(self, frame: Frame, result: Any, info: str) -> bool:
        """Draw and show; False when the user asked to quit."""
        if not self.ok:
            return True
        cv2 = self.cv2
        img = frame.bgr.copy()
        h, w = img.shape[:2]
        for i, hand in enumerate(result.hand_landmarks or []):
            pts = [(int(lm.x * w), int(lm.y * h)) for lm in hand]
            label = result.handedness[i][0].category_name if i < len(result.handedness) and result.handedness[i] else "?"
            colour = (80, 200, 255) if label == "Left" else (255, 160, 80)
            for a, b in CONNECTIONS:
                cv2.line(img, pts[a], pts[b], colour, 2, cv2.LINE_AA)
            for p in pts:
                cv2.circle(img, p, 3, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.putText(img, label, (pts[0][0] + 6, pts[0][1] + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2)
        cv2.putText(img, info, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (240, 240, 240), 1, cv2.LINE_AA)
        cv2.imshow(self.title, img)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.ok:
            with contextlib.suppress(Exception):
                self.cv2.destroyAllWindows()


# ---------------------------------------------------------------------------------------- recording / replay


def read_recording(path: str | Path) -> list[dict]:
    """A landmark recording: one ``sensor`` message per line (as sent, with ``t``)."""
    out = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise AdapterError(f"cannot read {path}: {exc.strerror or exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            raise AdapterError(f"{path}:{n}: not JSON") from None
        if not isinstance(msg, dict) or msg.get("type") != "sensor" or not isinstance(msg.get("values"), list):
            raise AdapterError(f"{path}:{n}: not a sensor message")
        out.append(msg)
    return out


def replay(messages: list[dict], sender: Sender, speed: float = 1.0, stop: threading.Event | None = None) -> int:
    """Send recorded messages with their recorded timing (``t``), re-stamped on this clock."""
    if not messages:
        return 0
    t_first = float(messages[0].get("t") or 0.0)
    start = now_s()
    n = 0
    for msg in messages:
        if stop is not None and stop.is_set():
            break
        due = start + (float(msg.get("t") or t_first) - t_first) / speed
        ahead = due - now_s()
        if ahead > 0:
            time.sleep(ahead)
        made = now_s()
        sender.send({**msg, "t": round(made - start, 4)}, made)
        n += 1
    return n


# ---------------------------------------------------------------------------------------- the program


@dataclass
class RunStats:
    frames: int = 0
    with_hands: int = 0
    messages: int = 0
    started: float = field(default_factory=now_s)


def summary(stats: RunStats, sender: Sender, landmarker: Landmarker | None) -> str:
    s = sender.stats
    secs = max(1e-9, now_s() - stats.started)
    parts = [f"{stats.frames} frames ({stats.frames / secs:.1f}/s), {stats.with_hands} with hands"] if landmarker else []
    parts.append(f"{s.sent} messages sent, {s.dropped_offline} dropped while offline, "
                 f"{s.dropped_full} dropped (link slow)")
    if landmarker is not None and landmarker.infer_ms:
        p50, p99 = percentiles(landmarker.infer_ms, 0.5, 0.99)
        parts.append(f"inference p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    if s.latency_ms:
        p50, p99 = percentiles(s.latency_ms, 0.5, 0.99)
        parts.append(f"frame → sent p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    if s.server_errors:
        parts.append("server errors " + ", ".join(f"{k} {v}" for k, v in sorted(s.server_errors.items())))
    return "hands: " + "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorsynth_hands.py",
        description="Webcam or video file → MediaPipe Tasks HandLandmarker → sensor frames (kind hand) to a "
        "sensorsynth server over its WebSocket. Up to two hands, world landmarks and image depth, handedness.",
    )
    p.add_argument("--model", default=str(DEFAULT_MODEL), metavar="FILE",
                   help="hand_landmarker.task (default: ../shared/models/hand_landmarker.task beside the repo)")
    p.add_argument("--server", default=DEFAULT_SERVER, metavar="URL",
                   help=f"the server's WebSocket (default {DEFAULT_SERVER}); may carry ?token=")
    p.add_argument("--token", help="the token `sensorsynth serve` printed (needed when it listens beyond localhost)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--camera", type=int, default=0, metavar="N", help="camera index (default 0)")
    src.add_argument("--video", metavar="FILE", help="read this video file instead of a camera")
    src.add_argument("--replay", metavar="FILE.jsonl", help="send a landmark recording (no camera, no model)")
    p.add_argument("--loop", action="store_true", help="--video/--replay: start again at the end")
    p.add_argument("--fast", action="store_true", help="--video: as fast as processed, not at the file's rate")
    p.add_argument("--speed", type=float, default=1.0, help="--replay: playback speed (default 1)")
    p.add_argument("--width", type=int, default=640, help="camera width asked for (default 640)")
    p.add_argument("--height", type=int, default=480, help="camera height asked for (default 480)")
    p.add_argument("--preview", action="store_true", help="show the picture with landmarks (needs a display)")
    p.add_argument("--num-hands", type=int, default=2, choices=[1, 2], help="hands to track (default 2)")
    p.add_argument("--min-confidence", type=float, default=0.5, help="detection/tracking confidence (default 0.5)")
    p.add_argument("--source", default="hands", help="source name prefix: <prefix>/left, <prefix>/right (default hands)")
    p.add_argument("--swap-hands", action="store_true", help="swap Left and Right (a mirrored camera)")
    p.add_argument("--record-landmarks", metavar="FILE.jsonl", help="also write every message sent to this file")
    p.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for the server before starting (default: start at once)")
    p.add_argument("--stats", action="store_true", help="print rates and latencies every 5 s")
    p.add_argument("--verbose", action="store_true", help="keep MediaPipe's own log lines")
    return p


def run(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    if not 0.0 < args.min_confidence <= 1.0:
        raise AdapterError("--min-confidence must be in (0, 1]")
    if args.speed <= 0:
        raise AdapterError("--speed must be > 0")
    url = with_token(args.server, args.token)
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise AdapterError(f"--server {args.server}: use a ws:// or wss:// address, e.g. {DEFAULT_SERVER}")
    stop = threading.Event()
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, lambda *_: stop.set())

    recording = None
    if args.record_landmarks:
        try:
            recording = open(args.record_landmarks, "w", encoding="utf-8")
        except OSError as exc:
            raise AdapterError(f"cannot write {args.record_landmarks}: {exc.strerror or exc}") from None

    if args.replay:
        messages = read_recording(args.replay)
        sender = Sender(url, client="hands replay", log=log).start()
        if args.wait:
            sender.wait_connected(args.wait)
        stats = RunStats()
        try:
            while not stop.is_set():
                stats.messages += replay(messages, sender, args.speed, stop)
                if not args.loop:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            sender.flush()
            sender.stop()
        log(summary(stats, sender, None))
        return 0

    with native_stderr_to_null(not args.verbose):
        return run_camera(args, url, stop, recording, log)


def run_camera(args: argparse.Namespace, url: str, stop: threading.Event, recording, log) -> int:
    landmarker = Landmarker(args.model, args.num_hands, args.min_confidence, args.verbose)
    frames = (video_frames(args.video, args.loop, not args.fast) if args.video
              else camera_frames(args.camera, args.width, args.height))
    sender = Sender(url, log=log).start()
    if args.wait:
        sender.wait_connected(args.wait)
    preview = Preview(log) if args.preview else None
    stats = RunStats()
    cv2 = import_cv2()
    last_report = now_s()
    try:
        for frame in frames:
            if stop.is_set():
                break
            rgb = cv2.cvtColor(frame.bgr, cv2.COLOR_BGR2RGB)
            result = landmarker.detect(rgb, int(frame.t * 1000))
            stats.frames += 1
            msgs = hand_frames(result, frame.t, args.source, args.swap_hands)
            if msgs:
                stats.with_hands += 1
            for msg in msgs:
                sender.send(msg, frame.made_at)
                stats.messages += 1
                if recording is not None:
                    recording.write(json.dumps(msg, separators=(",", ":")) + "\n")
            if preview is not None:
                fps = stats.frames / max(1e-9, now_s() - stats.started)
                state = "connected" if sender.connected.is_set() else "offline"
                if not preview.show(frame, result, f"{fps:.0f} fps, {len(msgs)} hand(s), {state}"):
                    break
            if args.stats and now_s() - last_report >= 5:
                last_report = now_s()
                log(summary(stats, sender, landmarker))
    except KeyboardInterrupt:
        pass
    finally:
        sender.flush()
        sender.stop()
        landmarker.close()
        if preview is not None:
            preview.close()
        if recording is not None:
            recording.close()
    log(summary(stats, sender, landmarker))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda text: print(text, flush=True)  # noqa: E731
    try:
        return run(args, log)
    except AdapterError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
