"""What the server tests share: small readers of what a running ``sensorsynth serve`` plays and says (its
recording, its HTTP status, its OSC status reply). The server itself comes from ``conftest.py``'s
``start_server`` fixture; test modules import helpers from here, never from each other.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import numpy as np
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

K = 16  # the bundled guitar's control dimensions


def http_json(server, path: str) -> dict:
    with urllib.request.urlopen(server.url + path, timeout=5) as r:
        return json.loads(r.read())


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def recorded(server, seconds_from: float = 0.0) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(server.record_path), dtype="float32")
    return data[int(seconds_from * rate) :], rate


def recorded_seconds(server) -> float:
    try:
        return sf.info(str(server.record_path)).duration
    except RuntimeError:
        return 0.0


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def osc_status(port: int) -> dict:
    """Ask /sensorsynth/status from our own socket and parse the key/value reply."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        sock.sendto(OscMessageBuilder("/sensorsynth/status").build().dgram, ("127.0.0.1", port))
        data, _ = sock.recvfrom(65536)
    finally:
        sock.close()
    msg = OscMessage(data)
    assert msg.address == "/sensorsynth/status"
    args = msg.params
    return dict(zip(args[0::2], args[1::2]))
