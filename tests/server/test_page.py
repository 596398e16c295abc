"""The live page (sensorsynth/server/web) in headless Chromium against a real ``sensorsynth serve`` process.

The page must load with no console errors, get a welcome over the WebSocket, draw the instrument (spectrum and
piano roll not blank), and a click on a play-surface cell must put sound into the server's recording where
there was silence before. Needs the playwright package and a system Chromium at /usr/bin/chromium (never a
downloaded browser); skips without them.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from .browser_wait import wait_js
from .pages import CHROMIUM  # the browser fixture (a fresh profile each launch) is tests/server/conftest.py's

SCREENSHOT = Path("/tmp/live-page.png")

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no system Chromium at {CHROMIUM}")

# Counts the pixels of a canvas that are clearly coloured (stems, events), not background, grid or labels:
# those are all near-grey, so a spread of 60 between the channels marks drawn data.
COLOURED_PIXELS = """(id) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
    if (hi - lo > 60) n++;
  }
  return n;
}"""


def health(server) -> dict:
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as res:
        return json.loads(res.read())


def recorded_seconds(server) -> float:
    return float(health(server)["recording"]["seconds"])


def open_page(browser, url: str, problems: list[str], **context_args):
    page = browser.new_context(**context_args).new_page()
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.goto(url)
    return page


def test_page_draws_the_instrument_and_a_click_plays_into_the_recording(start_server, browser):
    server = start_server()
    problems: list[str] = []
    page = open_page(browser, server.page("/"), problems, viewport={"width": 1280, "height": 900})

    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    welcome = page.evaluate("window.sensorsynthLive.welcome")
    assert welcome["type"] == "welcome" and welcome["sample_rate"] == server.sample_rate
    assert isinstance(welcome["voice"], int)
    assert [i["name"] for i in welcome["instruments"]] == ["guitar"]
    assert page.locator("#instrument-list button[aria-selected='true']").inner_text().startswith("guitar")

    wait_js(page, "window.sensorsynthLive.detail && window.sensorsynthLive.detail.name === 'guitar'")
    assert page.locator("#pad .cell").count() == 16  # the bundled instrument has K = 16
    assert page.evaluate(COLOURED_PIXELS, "spectrum") > 500, "the spectrum canvas is blank"
    assert page.evaluate(COLOURED_PIXELS, "roll") > 100, "the piano roll canvas is blank"
    wait_js(page, "window.sensorsynthLive.counts.meter > 5", timeout=10_000)

    # Let the server record some silence, then mark where the click can land at the earliest: nothing before
    # this many recorded seconds can be caused by it.
    deadline = time.monotonic() + 20
    while recorded_seconds(server) < 1.0:
        assert time.monotonic() < deadline, "the server records nothing"
        time.sleep(0.1)
    before_click = recorded_seconds(server)
    page.click("#pad .cell[data-index='0']")
    hit = page.evaluate("window.sensorsynthLive.lastHit")
    assert hit["sent"] and hit["index"] == 0 and hit["value"] == pytest.approx(0.6)
    # The server reports the control event it applied (monitor push): the page draws it in the lanes.
    wait_js(page, "window.sensorsynthLive.counts.events >= 1", timeout=10_000)
    deadline = time.monotonic() + 20
    while recorded_seconds(server) < before_click + 1.5:
        assert time.monotonic() < deadline, "the recording stopped growing"
        time.sleep(0.1)
    # The meter showed the sound: some push since the click carried a level above silence.
    wait_js(page, "window.sensorsynthLive.peakSinceHit > 1e-3", timeout=10_000)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Listening: the PCM stream reaches the worklet, and Stop ends it.
    page.click("#listen")
    wait_js(page, "window.sensorsynthLive.listen && window.sensorsynthLive.listen.received > 0",
                           timeout=10_000)
    assert page.evaluate("window.sensorsynthLive.listen.gaps") == 0
    page.click("#stop")
    page.wait_for_timeout(300)
    frames = page.evaluate("window.sensorsynthLive.counts.audioFrames")
    page.wait_for_timeout(500)
    assert page.evaluate("window.sensorsynthLive.counts.audioFrames") == frames, "audio still streams after Stop"

    # Close the page before the server goes, or its reconnect attempts would log (expected) errors.
    page.context.close()
    assert problems == []
    assert server.stop() == 0

    audio, rate = sf.read(str(server.record_path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    assert rate == server.sample_rate
    cut = int(before_click * rate)
    assert audio.size >= cut + rate, "the recording ends too early"
    silence = audio[: max(0, cut - rate // 20)]
    assert silence.size > rate // 2
    assert np.abs(silence).max() < 1e-4, "sound before the click"
    after = audio[cut : cut + rate]
    rms = float(np.sqrt(np.mean(after.astype(np.float64) ** 2)))
    assert rms > 5e-3, f"the click made no sound (rms {rms:.2g} in the second after it)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_reconnects_after_the_server_restarts(start_server, browser):
    port = free_port()
    token = "restart-token-0123456789"  # the same on both servers: the page's address keeps working
    first = start_server("--ws-port", str(port), "--ws-token", token, record=False)
    problems: list[str] = []
    page = open_page(browser, first.page("/"), problems, viewport={"width": 390, "height": 844}, has_touch=True)
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    assert problems == []

    assert first.stop() == 0
    page.wait_for_selector("html[data-state='reconnecting']", timeout=10_000)
    assert "reconnecting" in page.inner_text("#conn-text")

    second = start_server("--ws-port", str(port), "--ws-token", token, record=False)
    page.wait_for_selector("html[data-state='connected']", timeout=30_000)
    wait_js(page, "window.sensorsynthLive.counts.meter > 0")
    # Playing works on the new connection: a tap on the phone-sized page reaches the new server.
    box = page.locator("#pad .cell[data-index='5']").bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert page.evaluate("window.sensorsynthLive.lastHit.sent")
    wait_js(page, "window.sensorsynthLive.counts.events >= 1", timeout=10_000)
    page.context.close()
    # While the server was down the browser logs its failed connection attempts; nothing else may appear.
    assert all("WebSocket connection" in p for p in problems), problems
    assert second.stop() == 0


def test_page_lists_a_hot_reloaded_instrument_and_switches_to_it(start_server, browser, tmp_path):
    server = start_server(record=False)
    problems: list[str] = []
    page = open_page(browser, server.page("/"), problems, viewport={"width": 1280, "height": 900})
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    wait_js(page, "window.sensorsynthLive.detail && window.sensorsynthLive.detail.name === 'guitar'")

    # A new file in the models folder: the server loads it and pushes "instruments"; the list grows.
    staged = tmp_path / "staged.instrument"
    staged.write_bytes((server.models / "guitar.instrument").read_bytes())
    staged.rename(server.models / "nylon.instrument")
    page.wait_for_selector("#instrument-list button[data-name='nylon']", timeout=20_000)

    page.click("#instrument-list button[data-name='nylon']")
    wait_js(page, "window.sensorsynthLive.instrument === 'nylon'", timeout=10_000)  # instrument_changed
    wait_js(page, "window.sensorsynthLive.detail.name === 'nylon'")
    assert page.locator("#instrument-list button[aria-selected='true']").get_attribute("data-name") == "nylon"
    assert page.evaluate(COLOURED_PIXELS, "spectrum") > 500
    page.context.close()
    assert problems == []
    assert server.stop() == 0
