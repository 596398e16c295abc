"""OSC feedback and the WebSocket events push through a real ``sensorsynth serve``: a real UDP receiver on
127.0.0.1 reads what the server sends back (with python-osc, independent of sensorsynth's encoder), and a
monitoring WebSocket client reads the same events with their sounding time."""

from __future__ import annotations

import json
import shutil
import socket
import time

import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient
from websockets.sync.client import connect

from sensorsynth.server.feedback import SILENCE_DBFS

from .conftest import BUNDLED
from .helpers import K, http_json, wait_for

pytestmark = pytest.mark.slow  # real server processes

DELAY_S = 0.25  # fixed latency: the event sounds this long after it arrives


class Receiver:
    """A real UDP socket that collects what the feedback sends: (arrival Unix time, message, bundle time tag)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[float, OscMessage, float | None]] = []

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            now = time.time()
            if data.startswith(b"#bundle"):
                b = OscBundle(data)
                self.got += [(now, m, b.timestamp) for m in b]
            else:
                self.got.append((now, OscMessage(data), None))

    def where(self, address: str) -> list[tuple[float, OscMessage, float | None]]:
        return [g for g in self.got if g[1].address == address]

    def wait(self, address: str, pred=lambda m: True, timeout: float = 5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hits = [g for g in self.where(address) if pred(g[1])]
            if hits:
                return hits
            self.pump(0.1)
        raise AssertionError(f"no {address} within {timeout} s; got {[g[1].address for g in self.got][-20:]}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_applied_events_come_back_stamped_with_when_they_sound(start_server, receiver, tmp_path):
    models = tmp_path / "two"
    models.mkdir()
    for name in ("guitar", "other"):  # a second instrument to change to
        shutil.copy(BUNDLED, models / f"{name}.instrument")
    server = start_server("--osc-feedback", f"127.0.0.1:{receiver.port}", "--latency", "fixed", "--fixed-delay-ms",
                          str(DELAY_S * 1000), "--osc-feedback-level-hz", "20", record=False, models=models)
    osc = SimpleUDPClient("127.0.0.1", server.osc_port)
    receiver.pump(0.3)
    sent = time.time()
    osc.send_message("/sensorsynth/control/3", [0.75])
    ((arrived, msg, tag),) = receiver.wait("/sensorsynth/event/control")
    assert msg.params == [0, 3, 0.75, "osc"]
    # the time tag is when the event's block leaves the renderer: the fixed delay after it arrived, give or take
    # a block and the clock model's estimate; it arrives before it sounds (TouchDesigner can schedule it)
    # (never earlier than a block before; later by the datagram's way to the server, tens of ms under load)
    assert DELAY_S - 0.01 <= tag - sent <= DELAY_S + 0.06, tag - sent
    assert arrived < tag

    values = [0.0] * K
    values[0], values[5] = 1.0, 0.5
    osc.send_message("/sensorsynth/control", values)
    osc.send_message("/sensorsynth/gain", [0.5])
    osc.send_message("/sensorsynth/instrument", ["guitar"])  # what it plays already: no change, nothing sent
    osc.send_message("/sensorsynth/instrument", ["other"])
    hits = receiver.wait("/sensorsynth/event/control", lambda m: m.params[1] in (0, 5))
    assert sorted(m.params[1:3] for _, m, _ in hits) == [[0, 1.0], [5, 0.5]]
    assert hits[0][2] == hits[1][2]  # one sample, one bundle time tag
    (_, gain, _), = receiver.wait("/sensorsynth/event/gain")
    assert gain.params == [0, 0.5, "osc"]
    (_, inst, _), = receiver.wait("/sensorsynth/event/instrument")
    assert inst.params == [0, "other", "osc"]

    # the output level, 20 a second, one channel per output channel, loud after the attacks
    receiver.pump(0.5)
    levels = receiver.where("/sensorsynth/level")
    assert len(levels) >= 5
    assert all(len(m.params) >= 1 for _, m, _ in levels)
    assert max(m.params[0] for _, m, _ in levels) > -60.0
    assert min(m.params[0] for _, m, _ in levels) >= SILENCE_DBFS

    fb = http_json(server, "/health")["feedback"]
    assert fb["targets"] == [f"127.0.0.1:{receiver.port}"]
    assert fb["events"] == 4 and fb["datagrams"] >= 8 and fb["dropped_events"] == 0
    assert server.stop() == 0


def test_the_events_push_carries_the_sounding_time(start_server):
    server = start_server("--latency", "fixed", "--fixed-delay-ms", str(DELAY_S * 1000), record=False)
    with connect(server.ws_url) as ws:
        ws.send(json.dumps({"type": "hello", "client": "monitor", "monitor": True}))
        meter_time = None
        event = None
        deadline = time.monotonic() + 10
        sent_at = None
        while event is None and time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=5))
            if msg["type"] == "meter":
                meter_time = msg["time"]
                if sent_at is None:
                    sent_at = meter_time
                    ws.send(json.dumps({"type": "control", "index": 2, "value": 0.5}))
            elif msg["type"] == "events":
                event = msg["events"][0]
        assert event is not None, "no events push"
    assert event["kind"] == "control" and event["source"] == "ws" and event["values"][2] == 0.5
    assert isinstance(event["sample"], int) and event["sample"] > 0
    # on the meter's clock: it sounds the fixed delay after it was sent (the meter time is at most one push
    # period, 50 ms, old when the control went out)
    assert event["t"] - sent_at == pytest.approx(DELAY_S, abs=0.08)
    rate = server.sample_rate
    assert event["sample"] / rate == pytest.approx(event["t"], abs=0.5)  # samples count from the start too
    assert server.stop() == 0


def test_a_receiver_that_is_down_costs_nothing(start_server, receiver):
    port = receiver.port
    receiver.close()  # nobody listens there any more
    server = start_server("--osc-feedback", f"127.0.0.1:{port}", "--osc-feedback-level-hz", "50", record=False)
    osc = SimpleUDPClient("127.0.0.1", server.osc_port)
    for _ in range(20):
        osc.send_message("/sensorsynth/control/1", [1.0])
    h = wait_for(lambda: (lambda h: h if h["feedback"]["events"] == 20 else None)(http_json(server, "/health")),
                 what="20 events sent")
    first = h["feedback"]["datagrams"]
    time.sleep(0.3)
    h = http_json(server, "/health")
    assert h["running"] and h["feedback"]["datagrams"] > first  # the levels keep going out
    assert h["feedback"]["dropped_events"] == 0 and h["feedback"]["dropped_datagrams"] == 0
    assert server.stop() == 0


def test_a_broadcast_target_is_refused_at_start(start_server):
    with pytest.raises(AssertionError, match="broadcast"):
        start_server("--osc-feedback", "255.255.255.255:9000", record=False)
