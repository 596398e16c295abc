"""The phone page's Teach panel (teach.js) in headless Chromium against a real ``sensorsynth serve`` process:
record → train → run a learned mapping from the page, as a person holding a phone would.

The phone's sensors come from Chromium's DevTools overrides (see test_phone.py): lying flat is the rest pose,
tilted left (orientation γ −40°) the pose that should play cell 0, tilted right (γ +40°) the one for cell 5.
While Record is on the test holds each pose and taps its cell on the panel's play surface (real touch taps:
the page sends ``control`` messages, which the server pairs with the phone's frames as targets), rests
without tapping, stops, trains (ridge), and runs. Then, in the server's recording: holding still at rest is
silent, and tilting into a learned pose plays, the pose's own cell (the events the page is pushed). Replay
and Clear work from the panel too. The panel shows what the server answered: pairs, targets, the model's
score, the reason a train did nothing, and, after a reload (a new connection, a new session), the saved model
with Record and Run off.
"""

from __future__ import annotations

import time

import numpy as np

from .pages import health, open_phone, recording_and_still, wait_until
from .browser_wait import wait_js

LEFT, REST, RIGHT = -40.0, 0.0, 40.0
CELL_LEFT, CELL_RIGHT = 0, 5


# Every change of the Teach panel's phase, with its state line and whether Train was disabled.
PHASES = """() => {
  window.__phases = [];
  const panel = document.getElementById("teach");
  new MutationObserver(() => window.__phases.push([panel.dataset.teach,
      document.getElementById("teach-state").textContent, document.getElementById("teach-train").disabled]))
    .observe(panel, {attributes: true, attributeFilter: ["data-teach"]});
}"""


def teach(page) -> dict:
    return page.evaluate("JSON.parse(JSON.stringify(window.sensorsynthPhone.teach))")


def answers(page) -> int:
    return int(page.evaluate("window.sensorsynthPhone.teach.answers"))


def press(page, selector: str, until: str, timeout: float = 10_000) -> dict:
    """Click a Teach button and wait for the server's learn answer that satisfies ``until`` (JS, on ``s``)."""
    before = answers(page)
    page.click(selector)
    wait_js(page, f"""() => {{ const t = window.sensorsynthPhone.teach, s = t.state;
        return t.answers > {before} && s && ({until}); }}""", timeout=timeout)
    return teach(page)


def hold(page, motion, gamma: float, seconds: float, cell: int | None = None, taps=(), seed: int = 0) -> None:
    """Hold the phone in a pose (orientation γ) in a hand: a hand's tremor, ~0.15 m/s² and ~2 °/s (not a
    phone lying on a table: Chromium rounds readings to 0.1 m/s² and 0.1 °/s, so a table's noise reads as
    zeros and rare single steps); tap ``cell`` at the given times (seconds into the hold)."""
    rng = np.random.default_rng(seed)
    motion.orient(0, 0, gamma)
    pending = list(taps)
    t0 = time.monotonic()
    while (t := time.monotonic() - t0) < seconds:
        if pending and t >= pending[0]:
            pending.pop(0)
            page.tap(f"#teach-pad .cell[data-index='{cell}']")
        motion.set(rng.normal(0, 0.15, 3), rng.normal(0, 0.03, 3))
        time.sleep(0.02)


def test_teach_records_trains_and_runs_a_learned_mapping_from_the_page(start_server, browser):  # noqa: F811
    t_start = time.monotonic()
    server = start_server()
    problems: list[str] = []
    page, motion = open_phone(browser, server.page("/phone"), problems)
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    # On connect the panel asks for the status: a fresh session, no model yet, one cell per control dimension.
    wait_js(page, "window.sensorsynthPhone.teach.answers >= 1", timeout=10_000)
    st = teach(page)["state"]
    assert st["recording"] is False and st["running"] is False and st["models"] == {}, st
    assert page.locator("#teach-pad .cell").count() == 16  # the guitar: K = 16
    assert "No model yet for guitar" in page.inner_text("#teach-info")
    assert page.locator("#teach").get_attribute("data-teach") == "idle"

    page.click("#start")
    page.wait_for_selector("html[data-motion='running']", timeout=10_000)
    wait_until(lambda: health(server.url)["recording"]["seconds"] > 0.5, 20, "the recording")

    # --- record: each pose with its cell, rests without a tap -------------------------------------------------
    st = press(page, "#teach-record", "s.recording === true")
    assert st["state"]["source"] == "phone" and st["state"]["instrument"] == "guitar"
    assert page.get_attribute("#teach-record", "aria-pressed") == "true"
    assert page.inner_text("#teach-record") == "Stop recording"
    assert page.locator("#teach").get_attribute("data-teach") == "recording"
    taps = (0.15, 0.4)
    for rep in range(3):
        hold(page, motion, LEFT, 0.6, CELL_LEFT, taps, seed=4 * rep)
        hold(page, motion, REST, 0.5, seed=4 * rep + 1)
        hold(page, motion, RIGHT, 0.6, CELL_RIGHT, taps, seed=4 * rep + 2)
        hold(page, motion, REST, 0.5, seed=4 * rep + 3)
    # The panel polls while recording: the pairs count grows on screen before Stop.
    assert int(page.inner_text("#teach-pairs")) > 100
    st = press(page, "#teach-record", "s.recording === false")
    pairs, targets = st["state"]["frames"]["phone"], st["state"]["targets"]
    assert st["taps"] == 12 and targets == 12, st  # every tap reached the server as a target
    assert 200 <= pairs <= 600, pairs  # 6.6 s at the device's 60 Hz
    assert page.inner_text("#teach-pairs") == str(pairs) and page.inner_text("#teach-targets") == "12"
    assert page.get_attribute("#teach-record", "aria-pressed") == "false"

    # --- train (ridge): the panel says it trains, then shows the model and its score --------------------------
    page.evaluate(PHASES)
    before = answers(page)
    t_train = time.monotonic()
    page.click("#teach-train")
    wait_js(page, f"window.sensorsynthPhone.teach.answers > {before}", timeout=30_000)
    trained_s = time.monotonic() - t_train
    # While it trained, the panel said so and Train was off.
    assert ["training", "Training (ridge)…", True] in page.evaluate("window.__phases"), page.evaluate("window.__phases")
    st = teach(page)
    assert st["errors"] == {} and "phone" in st["trained"], st
    model = st["state"]["models"]["phone"]
    assert model["model"] == "ridge" and model["pairs"] == pairs and model["events"] == 12, model
    assert model["score"] > 0.2, model  # the pose explains much of which cell sounds
    assert page.inner_text("#teach-score") == f"{model['score']:.2f}"
    assert f"ridge, {pairs} pairs, 12 notes, score R² {model['score']:.2f}" in page.inner_text("#teach-info")
    assert page.is_hidden("#teach-error") and not page.is_disabled("#teach-train")
    assert (server.models / "guitar.learned.json").exists()

    # --- run: still is silent, each learned pose plays its own cell ------------------------------------------
    st = press(page, "#teach-run", "s.running === true")
    assert page.get_attribute("#teach-run", "aria-pressed") == "true"
    assert page.inner_text("#teach-state").startswith("Running: this phone plays through its model")
    rec = lambda: float(health(server.url)["recording"]["seconds"])  # noqa: E731
    n0 = len(teach(page)["played"])
    hold(page, motion, REST, 1.0, seed=20)  # the taps' sound dies away
    still_from = rec()
    hold(page, motion, REST, 1.5, seed=21)
    still_to = rec()
    n1 = len(teach(page)["played"])
    hold(page, motion, LEFT, 0.8, seed=22)
    left_to = rec()
    n2 = len(teach(page)["played"])
    hold(page, motion, REST, 0.6, seed=23)
    n3 = len(teach(page)["played"])
    hold(page, motion, RIGHT, 0.8, seed=24)
    hold(page, motion, REST, 0.3, seed=25)
    played = teach(page)["played"]
    assert n1 == n0, f"the model played while the phone was held still: {played[n0:n1]}"
    left = [p["index"] for p in played[n1:n2]]
    right = [p["index"] for p in played[n3:]]
    assert left and left[0] == CELL_LEFT, (left, right)
    assert right and right[0] == CELL_RIGHT, (left, right)
    st = press(page, "#teach-run", "s.running === false")
    assert page.get_attribute("#teach-run", "aria-pressed") == "false"

    # --- replay: the instrument plays its own performance as the targets; the poll shows them come in ------
    press(page, "#teach-replay", "s.replaying === true && s.recording === true")
    assert page.locator("#teach").get_attribute("data-teach") == "replaying" and page.is_disabled("#teach-train")
    wait_js(page, "window.sensorsynthPhone.teach.state.targets > 3", timeout=10_000)
    st = press(page, "#teach-record", "s.recording === false && s.replaying === false")  # stops the replay
    assert st["state"]["frames"]["phone"] > 0
    st = press(page, "#teach-clear", "Object.keys(s.frames).length === 0 && s.targets === 0")
    assert page.inner_text("#teach-pairs") == "0" and page.inner_text("#teach-targets") == "0"
    assert st["state"]["models"]["phone"]["pairs"] == pairs  # Clear forgets the pairs, not the model

    # --- a new connection: a new session, the saved model is still there --------------------------------------
    page.reload()
    page.wait_for_selector("html[data-state='connected']", timeout=20_000)
    wait_js(page, "window.sensorsynthPhone.teach.answers >= 1", timeout=10_000)
    st = teach(page)["state"]
    assert st["recording"] is False and st["running"] is False and st["frames"] == {}
    assert st["models"]["phone"]["pairs"] == pairs
    assert page.inner_text("#teach-score") == f"{model['score']:.2f}" and page.inner_text("#teach-pairs") == "0"
    # Train with nothing recorded: the reason, in words, in the panel.
    press(page, "#teach-train", "true")
    assert "Not trained: nothing recorded" in page.inner_text("#teach-error")
    page.context.close()
    assert problems == []
    assert server.stop() == 0

    audio, rate, still = recording_and_still(server, still_from, still_to)
    # -60 dBFS: the tails of the notes played before may still ring faintly; a note played now is ~0.1-0.5
    assert np.abs(still).max() < 1e-3, f"sound while the phone was held still (peak {np.abs(still).max():.2g})"
    moved = audio[int(still_to * rate) : int(left_to * rate) + rate // 2]
    rms = float(np.sqrt(np.mean(moved.astype(np.float64) ** 2)))
    assert rms > 5e-3, f"tilting into the learned pose made no sound (rms {rms:.2g})"
    print(f"\nteach: {pairs} pairs, 12 targets, ridge score {model['score']:.2f}, trained in {trained_s:.1f} s; "
          f"played {left} then {right}; still peak {np.abs(still).max():.1e}, learned pose rms {rms:.3f}; "
          f"{time.monotonic() - t_start:.1f} s in all")
