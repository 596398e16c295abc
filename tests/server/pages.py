"""Helpers of the browser tests (test_phone, test_teach): the phone page opened in headless Chromium with its
motion sensors emulated through the DevTools protocol, and readers of what the server heard and played. The
``browser`` fixture is in ``conftest.py``."""

from __future__ import annotations

import json
import math
import time
import urllib.request

import numpy as np
import soundfile as sf

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
G = 9.80665


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as res:
        return json.loads(res.read())


def sensor_frames(url: str) -> int:
    return int(health(url)["ws"]["sensor_frames"])


def wait_until(check, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(step)


class Motion:
    """The emulated phone's sensors, through the DevTools protocol. Readings must exist before the page
    starts listening (Chromium starts its sensors then), so a still reading is set at once."""

    def __init__(self, context, page):
        self.cdp = context.new_cdp_session(page)
        for kind in ("accelerometer", "linear-acceleration", "gyroscope"):
            self.cdp.send("Emulation.setSensorOverrideEnabled", {"enabled": True, "type": kind})
        self.set((0, 0, 0), (0, 0, 0))
        self.orient(0, 0, 0)

    def set(self, acc, rot_rad_s) -> None:
        xyz = lambda v: {"xyz": {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}}  # noqa: E731
        send = self.cdp.send
        send("Emulation.setSensorOverrideReadings", {"type": "linear-acceleration", "reading": xyz(acc)})
        send("Emulation.setSensorOverrideReadings", {"type": "accelerometer",
                                                     "reading": xyz((acc[0], acc[1], acc[2] + G))})
        send("Emulation.setSensorOverrideReadings", {"type": "gyroscope", "reading": xyz(rot_rad_s)})

    def orient(self, alpha, beta, gamma) -> None:
        self.cdp.send("DeviceOrientation.setDeviceOrientationOverride", {"alpha": alpha, "beta": beta, "gamma": gamma})

    def still(self, seconds: float) -> None:
        """Lying on a table: the readings a still phone gives (tiny sensor noise)."""
        rng = np.random.default_rng(1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.set(rng.normal(0, 0.02, 3), rng.normal(0, 0.002, 3))
            time.sleep(0.02)

    def shake(self, seconds: float, hz: float = 5.0, amp: float = 18.0) -> None:
        """A hand shaking the phone: a few strokes a second, ±amp m/s², turning as it goes."""
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < seconds:
            s = math.sin(2 * math.pi * hz * t)
            c = math.cos(2 * math.pi * hz * t)
            self.set((amp * s, 0.4 * amp * c, 0.2 * amp * s), (3.0 * c, 1.5 * s, 0.8 * c))
            self.orient(20 * s % 360, 10 * c, 15 * s)
            time.sleep(0.02)


def open_phone(browser, url: str, problems: list[str], motion: bool = True, **context_args):
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                                  **context_args)
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    sensors = Motion(context, page) if motion else None
    page.goto(url)
    return page, sensors


def state(page) -> dict:
    return page.evaluate("""() => { const p = window.sensorsynthPhone;
        return {sent: p.sent, dropped: p.dropped, congested: p.congested, rateHz: p.rateHz, last: p.last,
                counts: p.counts, motion: p.motion, state: p.state, accelSource: p.accelSource,
                latency: p.sendLatency(), voice: p.voice, peak: p.peak}; }""")


def recording_and_still(server, still_from: float, still_to: float) -> tuple[np.ndarray, int, np.ndarray]:
    """(the server's recording as mono, its rate, the part of it while the phone was held still)."""
    audio, rate = sf.read(str(server.record_path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    still = audio[int(still_from * rate) : int(still_to * rate)]
    assert still.size > rate, "the still part is missing from the recording"
    return audio, rate, still
