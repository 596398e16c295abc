"""The phone page (/phone) in headless Chromium against a real ``sensorsynth serve`` process.

Motion is injected the way a phone's browser makes it: Chromium's DevTools sensor overrides
(``Emulation.setSensorOverrideReadings`` for the accelerometer, linear acceleration and gyroscope, and
``DeviceOrientation.setDeviceOrientationOverride``) drive the browser's own ``devicemotion`` and
``deviceorientation`` events at the device rate (60 Hz); the page cannot tell them from a phone's. One test
dispatches synthetic events instead, for what the overrides cannot do (a device without gravity-free
acceleration, the iOS permission prompt).

Checked: frames reach the server (its ``ws.sensor_frames`` counter equals what the page sent) with the
injected values; the page shows them and the server's pushes; a Wi-Fi drop (a proxy that goes silent, then
comes back) is survived by reconnecting; https from the LAN address is a secure context; and, once the
mappings are wired into the server, shaking plays into the recording while lying still stays silent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO
from .pages import CHROMIUM, Motion, health, open_phone, recording_and_still, sensor_frames, state, wait_until  # noqa: F401
from .browser_wait import wait_js

SCREENSHOT = Path("/tmp/phone-page.png")

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no system Chromium at {CHROMIUM}")


def mapping_wired() -> bool:
    """Whether the server turns sensor frames into sound yet (sensorsynth/mapping, used by the server)."""
    if importlib.util.find_spec("sensorsynth.mapping") is None:
        return False
    uses = re.compile(r"from \.\.mapping|from sensorsynth\.mapping|import sensorsynth\.mapping")
    return any(uses.search(p.read_text()) for p in (REPO / "sensorsynth" / "server").glob("*.py"))


def test_phone_streams_its_motion_to_the_server(start_server, browser):
    server = start_server(record=False)
    problems: list[str] = []
    page, motion = open_phone(browser, server.page("/phone"), problems)
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    welcome = page.evaluate("window.sensorsynthPhone.welcome")
    assert welcome["type"] == "welcome" and isinstance(welcome["voice"], int)
    assert page.evaluate("window.isSecureContext")  # localhost is a secure context
    assert page.locator("#secure-warning").is_hidden()
    assert page.locator("#instrument option").all_inner_texts() == ["guitar (K 16)"]
    wait_js(page, "window.sensorsynthPhone.counts.meter > 3", timeout=10_000)
    assert sensor_frames(server.url) == 0, "nothing may stream before Start"

    # Playing on the phone: the server's PCM stream reaches the AudioWorklet; Mute ends it.
    page.click("#listen")
    wait_js(page, "window.sensorsynthPhone.listen && window.sensorsynthPhone.listen.received > 0",
                           timeout=10_000)
    page.click("#stop")
    page.wait_for_timeout(300)
    frames = page.evaluate("window.sensorsynthPhone.counts.audioFrames")
    page.wait_for_timeout(400)
    assert page.evaluate("window.sensorsynthPhone.counts.audioFrames") == frames, "audio still streams after Mute"

    # A constant reading: the frames carry exactly it (gyroscope rad/s → deg/s; orientation in degrees).
    motion.set((3.0, -2.0, 1.0), (0.5, 0.25, 0.1))
    motion.orient(10, 20, 30)
    page.click("#start")
    page.wait_for_selector("html[data-motion='running']", timeout=10_000)
    assert page.inner_text("#start") == "Stop"
    wait_js(page, "window.sensorsynthPhone.sent > 60", timeout=10_000)
    st = state(page)
    want = [3.0, -2.0, 1.0, *(math.degrees(x) for x in (0.5, 0.25, 0.1)), 10, 20, 30]
    assert st["last"]["values"] == pytest.approx(want, abs=0.06)
    assert st["accelSource"] == "device"
    assert 40 <= st["rateHz"] <= 120, st["rateHz"]  # the device rate: Chromium's sensors run at 60 Hz
    assert page.inner_text("#v0") == "3.00" and page.inner_text("#v8") == "30"

    motion.shake(1.0)
    motion.still(0.3)
    page.click("#start")  # Stop
    page.wait_for_selector("html[data-motion='stopped']")
    sent = state(page)["sent"]
    # Every frame the page handed to the socket arrived, and none was refused.
    wait_until(lambda: sensor_frames(server.url) == sent, 10, f"{sent} frames at the server")
    h = health(server.url)
    assert not any(k.startswith("ws:") for k in h["rejected"]), h["rejected"]
    page.wait_for_timeout(300)
    assert state(page)["sent"] == sent, "frames after Stop"

    st = state(page)
    print(f"\nphone page: {sent} frames at {st['rateHz']:.0f} Hz; devicemotion event → socket send: "
          f"p50 {st['latency']['p50']:.2f} ms, p99 {st['latency']['p99']:.2f} ms, max {st['latency']['max']:.2f} ms")
    assert st["latency"]["p50"] < 5
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.context.close()
    assert problems == []
    assert server.stop() == 0


def test_phone_shaken_plays_and_lying_still_is_silent(start_server, browser):
    server = start_server()
    problems: list[str] = []
    page, motion = open_phone(browser, server.page("/phone"), problems)
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    page.click("#start")
    page.wait_for_selector("html[data-motion='running']", timeout=10_000)
    wait_until(lambda: health(server.url)["recording"]["seconds"] > 0.5, 20, "the recording")

    rec = lambda: float(health(server.url)["recording"]["seconds"])  # noqa: E731
    still_from = rec()
    motion.still(2.0)
    still_to = rec()
    frames_still = sensor_frames(server.url)
    assert frames_still > 60, "a still phone streams too (its frames say it is still)"
    shake_from = rec()
    motion.shake(2.0)
    shake_to = rec()
    motion.still(0.5)
    assert sensor_frames(server.url) > frames_still + 60
    st = state(page)
    h = health(server.url)
    if "mapping" in h:  # the server's share of frame → control event, beside the page's own (test above)
        c, lat = h["mapping"]["compute_us"], h["latency_ms"]
        print(f"\nphone → sound: mapping per frame p50 {c['p50']} µs, p99 {c['p99']} µs; control event → "
              f"rendered block p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms; page events {st['counts']['ownEvents']}")
    page.context.close()
    assert problems == []
    assert server.stop() == 0

    audio, rate, still = recording_and_still(server, still_from, still_to)
    assert np.abs(still).max() < 1e-4, "sound while the phone lay still"
    if not mapping_wired():
        pytest.skip("the frames reach the server and stillness is silent, but no sound can follow a shake yet: "
                    "the mappings (sensorsynth/mapping) are not wired into the server's sensor branch "
                    "(sensorsynth/server/web.py)")
    shaken = audio[int(shake_from * rate) : int(shake_to * rate) + rate // 2]
    rms = float(np.sqrt(np.mean(shaken.astype(np.float64) ** 2)))
    assert rms > 5e-3, f"shaking made no sound (rms {rms:.2g})"
    assert st["counts"]["ownEvents"] > 0, "the page did not show the events its shaking played"
    assert st["peak"] > 1e-3


class DroppingProxy:
    """A TCP relay between the browser and the server that can lose the network the way Wi-Fi does: while
    down, established connections go silent (nothing passes, nothing closes: a half-open socket) and new
    ones are cut at once; when up, new connections pass again."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.generation = 0  # connections from an earlier generation stay dead after a drop
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            gen = self.generation
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, gen), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, gen: int) -> None:
        try:
            while data := src.recv(65536):
                if self.up and gen == self.generation:
                    dst.sendall(data)
        except OSError:
            pass
        if gen == self.generation:  # an end passes on (the server closes after each HTTP answer) ...
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        # ... but not from a dropped connection: nothing passes there, not even its end

    def drop(self) -> None:
        self.up = False
        self.generation += 1

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


def test_phone_reconnects_by_itself_after_a_wifi_drop(start_server, browser):
    server = start_server(record=False)
    proxy = DroppingProxy(server.ws_port)
    problems: list[str] = []
    try:
        page, motion = open_phone(browser, f"http://127.0.0.1:{proxy.port}/phone?token={server.token}", problems)
        page.wait_for_selector("html[data-state='connected']", timeout=20_000)
        page.click("#start")
        wait_js(page, "window.sensorsynthPhone.sent > 30", timeout=10_000)
        assert health(server.url)["ws"]["connections"] == 1

        proxy.drop()
        t_drop = time.monotonic()
        motion.still(0.3)
        # Nothing closes the socket: the page notices the silence of the server's pushes and gives up on it.
        page.wait_for_selector("html[data-state='reconnecting']", timeout=10_000)
        noticed = time.monotonic() - t_drop
        wait_js(page, "window.sensorsynthPhone.dropped > 20", timeout=10_000)  # frames are not queued
        assert "reconnecting" in page.inner_text("#conn-text")

        proxy.restore()
        t_up = time.monotonic()
        page.wait_for_selector("html[data-state='connected']", timeout=30_000)
        back = time.monotonic() - t_up
        before = sensor_frames(server.url)
        wait_js(page, "window.sensorsynthPhone.counts.meter > 0")
        wait_until(lambda: sensor_frames(server.url) > before + 30, 10, "frames after the reconnect")
        assert health(server.url)["ws"]["connections"] == 2
        print(f"\nWi-Fi drop: noticed after {noticed:.1f} s, back {back:.1f} s after the network returned")
        page.context.close()
    finally:
        proxy.close()
    # The failed attempts while the network was down log connection errors; nothing else may appear.
    assert all("WebSocket connection" in p for p in problems), problems
    assert server.stop() == 0


# Stand-ins for iOS's permission prompt and a device without gravity-free acceleration.
FAKE_IOS = """
window.__asked = [];
window.__answer = "denied";
for (const E of [window.DeviceMotionEvent, window.DeviceOrientationEvent]) {
  E.requestPermission = () => {
    // iOS refuses the prompt unless it is asked from inside the tap: record that it was.
    window.__asked.push(navigator.userActivation ? navigator.userActivation.isActive : null);
    return Promise.resolve(window.__answer);
  };
}
"""

DISPATCH = """async ({count, gx, jolt}) => {
  for (let i = 0; i < count; i++) {
    const x = i === count - 1 ? gx + jolt : gx;
    window.dispatchEvent(new DeviceMotionEvent("devicemotion", {
      acceleration: null,
      accelerationIncludingGravity: {x, y: 0, z: 9.81},
      rotationRate: {alpha: 0, beta: 0, gamma: 0},
      interval: 16,
    }));
    await new Promise((r) => setTimeout(r, 16));
  }
  return window.sensorsynthPhone.last.values;
}"""


def test_phone_asks_permission_in_the_tap_and_filters_gravity_itself(start_server, browser):
    server = start_server(record=False)
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    context.add_init_script(FAKE_IOS)
    page = context.new_page()
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.goto(server.page("/phone"))
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)

    page.tap("#start")
    page.wait_for_selector("html[data-motion='denied']", timeout=5_000)
    assert page.evaluate("window.__asked") == [True, True], "requestPermission must be called inside the tap"
    assert "refused" in page.inner_text("#start-info")
    assert page.evaluate("window.sensorsynthPhone.sent") == 0

    page.evaluate("window.__answer = 'granted'")
    page.tap("#start")
    wait_js(page, "window.sensorsynthPhone.permission === 'granted'")
    # Gravity (9.81 along z, and a tilt on x) is filtered out: a still phone reads about zero, a jolt shows.
    values = page.evaluate(DISPATCH, {"count": 40, "gx": 2.0, "jolt": 0.0})
    assert page.evaluate("window.sensorsynthPhone.accelSource") == "filtered"
    assert values[:3] == pytest.approx([0, 0, 0], abs=0.05)
    values = page.evaluate(DISPATCH, {"count": 2, "gx": 2.0, "jolt": 6.0})
    assert values[0] == pytest.approx(6.0 * math.exp(-0.016 / 0.25), abs=0.5)
    sent = page.evaluate("window.sensorsynthPhone.sent")
    assert sent >= 40
    wait_until(lambda: sensor_frames(server.url) == sent, 10, "the synthetic frames at the server")
    context.close()
    assert problems == []
    assert server.stop() == 0


def test_phone_page_over_https_as_printed_for_the_lan(start_server, browser, tmp_path):
    """What a phone does: the address printed at start (LAN address, https, token), a secure context, wss."""
    server = start_server("--host", "0.0.0.0", "--tls", "self-signed", "--tls-dir", str(tmp_path / "tls"),
                          record=False)
    found = re.search(r"phone: (https://\S+/phone)\?token=(\S+)", server.output())
    assert found, server.output()
    assert server.token not in server.output(), "the token is masked in the log (the journal)"
    printed = urllib.parse.urlsplit(found.group(1))
    assert printed.hostname not in ("127.0.0.1", "localhost", "0.0.0.0"), "the page address names the LAN"
    # The browser opens the printed page at this machine's loopback address (tests send nothing to any other
    # address); the certificate covers both, as the CA's name constraints do.
    address = f"https://127.0.0.1:{printed.port}{printed.path}?token={server.token}"
    problems: list[str] = []
    page, motion = open_phone(browser, address, problems, ignore_https_errors=True)
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    assert page.evaluate("location.protocol") == "https:"
    assert page.evaluate("window.isSecureContext"), "https must make the page a secure context"
    assert page.locator("#secure-warning").is_hidden()
    page.click("#start")
    wait_js(page, "window.sensorsynthPhone.sent > 30", timeout=10_000)
    local = f"https://127.0.0.1:{server.ws_port}"
    import ssl

    ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
    with urllib.request.urlopen(f"{local}/health", context=ctx, timeout=5) as res:
        assert json.loads(res.read())["ws"]["sensor_frames"] > 0
    page.context.close()
    assert problems == []
    assert server.stop() == 0
