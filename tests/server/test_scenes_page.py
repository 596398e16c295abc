"""The live page's Scene panel in headless Chromium against a real ``sensorsynth serve --scenes``: it shows the
scene, the next change and the cap, refuses a switch without the admin token (the server's error shows), and
switches with it (the server's /health follows, and the panel shows the pushed scene)."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from .browser_wait import wait_js
from .conftest import BUNDLED

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ADMIN = "scene-admin-token-0123456789"


def health(server) -> dict:
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as res:
        return json.loads(res.read())


def test_the_scene_panel_shows_the_scene_and_switches_with_the_admin_token(tmp_path, start_server, browser):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(BUNDLED, models / "guitar.instrument")
    shutil.copy(BUNDLED, models / "bell.instrument")
    path = tmp_path / "scenes.toml"
    path.write_text('crossfade_s = 0.2\n[scenes.day]\ninstrument = "guitar"\n'
                    '[scenes.night]\ninstrument = "bell"\ngain = 0.3\nlevel_cap_dbfs = -20\n'
                    '[schedule]\nopen = "day"\nclosed = "night"\nhours = { mon = ["00:00-24:00"], tue = ["00:00-24:00"], '
                    'wed = ["00:00-24:00"], thu = ["00:00-24:00"], fri = ["00:00-24:00"], sat = ["00:00-24:00"] }\n')
    server = start_server("--scenes", str(path), "--admin-token", ADMIN, models=models)
    scheduled = health(server)["scene"]["name"]  # day, or night on a Sunday (UTC)
    other = "night" if scheduled == "day" else "day"
    problems: list[str] = []
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.goto(server.page("/"))
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    wait_js(page, f"document.getElementById('scene-name').textContent === '{scheduled}'", timeout=10_000)
    assert page.locator("#scene-panel").is_visible()
    assert "next: " in page.locator("#scene-next").inner_text()
    assert page.locator("#scene-choice option").all_inner_texts() == ["day", "night"]

    page.select_option("#scene-choice", other)
    page.click("#scene-switch")  # no token typed: refused
    wait_js(page, "window.sensorsynthLive.errors.some((e) => e.code === 'forbidden' && e.ref === 'scene')",
            timeout=10_000)
    assert health(server)["scene"]["name"] == scheduled

    page.fill("#scene-admin", ADMIN)
    page.click("#scene-switch")
    wait_js(page, f"document.getElementById('scene-name').textContent === '{other}'", timeout=10_000)
    h = health(server)["scene"]
    assert (h["name"], h["source"], h["held"]) == (other, "ws", True)
    assert "held until the next change" in page.locator("#scene-source").inner_text()
    if other == "night":
        assert "-20.0 dBFS" in page.locator("#scene-cap").inner_text()
    assert not problems, problems
