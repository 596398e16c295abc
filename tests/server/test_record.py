"""Record on a phone, play it a minute later: the pages' Record button → upload over the WebSocket → a job on a
real trainer → the instrument in the server's models folder → the page's voice plays it.

Real processes throughout: ``sensorsynth trainer`` with its own worker (tiny fits: 30 steps of a tiny model, as
in tests/trainer) and ``sensorsynth serve --trainer``; the pages run in headless Chromium with a fake
microphone that plays a 3 s cut of marimba.wav (``--use-fake-device-for-media-stream
--use-file-for-fake-audio-capture``). Checked: progress messages arrive, the instrument is listed, the page's
voice switched to it, a click on the play surface (live page) or shaking (phone page) then sounds in the
server's recording; the two ways the result reaches the server (fetched from a trainer with its own folder,
or written by a trainer sharing the folder); cancel; and every refusal of an upload (too large, not audio,
wrong order of frames, ...), with the connection staying up. ``-s`` prints the time from the end of the
recording to the first note of the new instrument, and an estimate for the default fit.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sensorsynth.server.fits import (UPLOAD_MAX_BYTES, UploadError, check_clip, clean_name, free_name,
                                     write_instrument)

from ..trainer.helpers import TINY_SPEC
from ..trainer.procs import Cluster
from .conftest import BUNDLED, REPO
from .browser_wait import wait_js
from .pages import wait_until  # noqa: F401 - test_server_security imports it from here too

pytestmark = [pytest.mark.slow, pytest.mark.trainer]  # a real trainer and server


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
MARIMBA = REPO.parent / "shared" / "audio" / "marimba.wav"
SCREENSHOT = Path("/tmp/record-page.png")
G = 9.80665
# what a recorded clip is fitted with here: 30 steps of a tiny model (a default fit takes minutes)
TINY_FIT = ["--record-fit", "steps=30", *[a for k, v in TINY_SPEC.items() for a in ("--record-fit", f"spec.{k}={v}")]]


def wav_bytes(samples: np.ndarray, rate: int = 22050, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def marimba(seconds: float = 3.0) -> tuple[np.ndarray, int]:
    data, rate = sf.read(MARIMBA, dtype="float32")
    return data[: int(seconds * rate)], rate


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as res:
        return json.loads(res.read())


def instruments(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/api/instruments", timeout=5) as res:
        return [i["name"] for i in json.loads(res.read())["instruments"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ the checks, alone


def test_clip_checks_refuse_what_cannot_be_fitted(tmp_path):
    clip, rate = marimba(1.0)
    info = check_clip(wav_bytes(clip, rate))
    assert (info.sample_rate, info.channels, info.frames) == (rate, 1, clip.size)

    with pytest.raises(UploadError) as e:
        check_clip(b"\0" * (UPLOAD_MAX_BYTES + 1))
    assert e.value.code == "too_large"
    for data, why in [
        (b"", "empty"),
        (b"this is not audio at all" * 100, "not a readable audio file"),
        (wav_bytes(np.zeros(22050, np.float32)), "silent"),
        (wav_bytes(clip[:500], rate), "at least"),
        (wav_bytes(np.tile(clip, 40), rate), "at most 30 s"),
        (wav_bytes(np.where(np.arange(clip.size) == 9, np.nan, clip).astype(np.float32), rate, "FLOAT"), "NaN"),
        (wav_bytes(clip, rate)[:60], ""),  # a WAV header and hardly any audio: unreadable, or too short
    ]:
        with pytest.raises(UploadError) as e:
            check_clip(data, max_bytes=10**8)
        assert e.value.code == "bad_upload" and why in str(e.value), (why, str(e.value))

    assert clean_name("My take #1!") == "My-take-1"
    assert clean_name("") == "take" and clean_name("../../etc/passwd") == "etc-passwd"
    assert clean_name("-x") == "x" and clean_name("ü") == "take" and len(clean_name("a" * 200)) == 64
    taken = {"take", "take-2"}
    assert free_name("take", taken.__contains__) == "take-3" and free_name("new", taken.__contains__) == "new"

    # Written atomically, never over an existing instrument unless asked.
    (tmp_path / "take.instrument").write_bytes(b"old")
    assert write_instrument(tmp_path, "take", b"new", "abcdef12", replace=False).name == "take-2.instrument"
    assert (tmp_path / "take.instrument").read_bytes() == b"old"
    assert write_instrument(tmp_path, "take", b"newer", "abcdef12", replace=True).name == "take.instrument"
    assert (tmp_path / "take.instrument").read_bytes() == b"newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take-2.instrument", "take.instrument"]  # no leftovers


# ------------------------------------------------------------------------------------ over the WebSocket


class Socket:
    """A blocking WebSocket client that keeps what it is sent, to wait for one kind of message."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._opened = connect(url, max_size=None, open_timeout=10)
        self.ws = self._opened.__enter__()
        self.seen: list[dict] = []

    def send(self, obj: dict | bytes) -> None:
        self.ws.send(obj if isinstance(obj, bytes) else json.dumps(obj))

    def expect(self, predicate, timeout: float = 10.0, what: str = "a message") -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {what} within {timeout} s; got {[m.get('type') for m in self.seen[-20:]]}"
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            self.seen.append(msg)
            if predicate(msg):
                return msg

    def error(self, ref: str | None = None, timeout: float = 10.0) -> dict:
        return self.expect(lambda m: m["type"] == "error" and (ref is None or m.get("ref") == ref), timeout,
                           f"error (ref {ref})")

    def fit_end(self, timeout: float = 60.0) -> dict:
        return self.expect(lambda m: m["type"] == "fit" and m["state"] in ("done", "failed", "cancelled"), timeout,
                           "the end of the fit")

    def close(self) -> None:
        self._opened.__exit__(None, None, None)


def test_uploads_are_checked_and_refusals_keep_the_connection(start_server):
    dead = f"tcp://127.0.0.1:{free_port()}"  # a trainer that is not there: the clip is refused before it matters
    server = start_server("--trainer", dead, record=False)
    ws = Socket(server.ws_url)
    ws.send({"type": "hello", "client": "test"})
    info = ws.expect(lambda m: m["type"] == "welcome")["record"]
    assert info["available"] and info["max_bytes"] == UPLOAD_MAX_BYTES and info["sample_rate"] == 22050

    clip, rate = marimba(1.0)
    good = wav_bytes(clip, rate)
    # A binary frame with no upload before it: refused, as before.
    ws.send(good)
    assert ws.error()["code"] == "binary_not_accepted"
    # Announced too large: refused at once.
    ws.send({"type": "upload", "name": "x", "size": UPLOAD_MAX_BYTES + 1})
    assert ws.error("upload")["code"] == "too_large"
    # Wrong order: a text message where the clip should be abandons the upload; the message itself is served.
    ws.send({"type": "upload", "name": "x", "size": len(good)})
    ws.send({"type": "status"})
    err = ws.error("upload")
    assert err["code"] == "bad_upload" and "binary frame" in err["message"]
    ws.expect(lambda m: m["type"] == "status")
    ws.send(good)  # the clip too late: a plain binary frame again
    assert ws.error()["code"] == "binary_not_accepted"
    # Not what was announced: another size, another checksum.
    ws.send({"type": "upload", "name": "x", "size": len(good) + 1})
    ws.send(good)
    assert "announced" in ws.error("upload")["message"]
    ws.send({"type": "upload", "name": "x", "size": len(good), "sha256": "0" * 64})
    ws.send(good)
    assert "SHA-256" in ws.error("upload")["message"]
    # Not audio, silence.
    junk = bytes(range(256)) * 40
    ws.send({"type": "upload", "name": "x", "size": len(junk)})
    ws.send(junk)
    err = ws.error("upload")
    assert err["code"] == "bad_upload" and "not a readable audio file" in err["message"]
    silent = wav_bytes(np.zeros(22050, np.float32))
    ws.send({"type": "upload", "name": "x", "size": len(silent)})
    ws.send(silent)
    assert "silent" in ws.error("upload")["message"]
    # A bad message is a schema error; nothing to cancel or watch.
    ws.send({"type": "upload", "name": "x", "size": -1})
    assert ws.error("upload")["code"] == "bad_schema"
    ws.send({"type": "cancel"})
    assert ws.error("cancel")["code"] == "unknown_job"
    ws.send({"type": "watch", "job": "abc123" + "0" * 26})
    assert ws.error("watch")["code"] == "unknown_job"
    ws.send({"type": "watch", "job": "abc123"})  # a prefix: never accepted (issue #19)
    assert ws.error("watch")["code"] == "bad_schema"

    # A good clip, but no trainer answers: the fit fails, saying so and how to start one.
    ws.send({"type": "upload", "name": "take one", "size": len(good), "sha256": hashlib.sha256(good).hexdigest()})
    ws.send(good)
    up = ws.expect(lambda m: m["type"] == "fit")
    assert up["state"] == "uploaded" and up["name"] == "take-one" and up["seconds"] == pytest.approx(1.0, abs=0.01)
    end = ws.fit_end(30)
    assert end["state"] == "failed" and end["failure"] == "no_trainer"
    assert dead in end["reason"] and "sensorsynth trainer" in end["reason"]
    ws.send({"type": "status"})  # still connected after all of it
    st = ws.expect(lambda m: m["type"] == "status")
    assert st["record"]["uploads"] == 1 and st["record"]["failed"] == 1 and st["record"]["refused"] >= 6
    ws.close()
    assert instruments(server.url) == ["guitar"]
    assert server.stop() == 0


def test_without_a_trainer_uploads_say_how_to_start_one(start_server):
    server = start_server(record=False)
    assert "record: off" in server.output()
    ws = Socket(server.ws_url)
    ws.send({"type": "hello"})
    info = ws.expect(lambda m: m["type"] == "welcome")["record"]
    assert not info["available"] and "sensorsynth trainer" in info["reason"] and "--trainer" in info["reason"]
    ws.send({"type": "upload", "name": "x", "size": 10})
    err = ws.error("upload")
    assert err["code"] == "no_trainer" and "--trainer" in err["message"]
    ws.send(b"0123456789")  # nothing pending: a binary frame is refused as always
    assert ws.error()["code"] == "binary_not_accepted"
    ws.close()
    assert server.stop() == 0


def test_cancel_stops_the_fit_on_the_trainer(start_server, tmp_path):
    cluster = Cluster(tmp_path / "trainer")
    cluster.root.mkdir()
    try:
        cluster.start_trainer(workers=1)
        long_fit = ["--record-fit", "steps=200000", *TINY_FIT[2:]]  # a tiny model, but steps without end
        server = start_server("--trainer", cluster.endpoint, *long_fit, record=False)
        ws = Socket(server.ws_url)
        ws.send({"type": "hello"})
        assert ws.expect(lambda m: m["type"] == "welcome")["record"]["available"]
        clip, rate = marimba(1.0)
        data = wav_bytes(clip, rate)
        ws.send({"type": "upload", "name": "long", "size": len(data)})
        ws.send(data)
        running = ws.expect(lambda m: m["type"] == "fit" and m["state"] == "running" and (m["step"] or 0) > 0, 60,
                            "a running fit")
        assert running["steps"] == 200000 and running["eta_s"] is not None
        # A second upload while this one runs: refused, this page has one fit at a time.
        ws.send({"type": "upload", "name": "another", "size": len(data)})
        assert ws.error("upload")["code"] == "busy"
        t0 = time.monotonic()
        ws.send({"type": "cancel"})
        end = ws.fit_end(20)
        took = time.monotonic() - t0
        assert end["state"] == "cancelled", end
        with cluster.client() as client:
            job = client.job(running["job"])
        assert job.state == "cancelled"
        print(f"\ncancel from the page → fit cancelled: {took:.2f} s")
        assert instruments(server.url) == ["guitar"] and not (server.models / "long.instrument").exists()
        ws.close()
        assert server.stop() == 0
    finally:
        cluster.close()


def test_a_page_that_reconnects_follows_its_fit_again(start_server, tmp_path):
    """A phone whose Wi-Fi dropped mid-fit: the fit goes on; the page, back on a new connection (a new voice),
    says watch and gets the fit's messages again, and its new voice plays the instrument once it lands."""
    cluster = Cluster(tmp_path / "trainer")
    cluster.root.mkdir()
    try:
        cluster.start_trainer(workers=1)
        server = start_server("--trainer", cluster.endpoint, *TINY_FIT, record=False)
        clip, rate = marimba(1.0)
        data = wav_bytes(clip, rate)
        first = Socket(server.ws_url)
        first.send({"type": "hello"})
        first.expect(lambda m: m["type"] == "welcome")
        first.send({"type": "upload", "name": "dropped", "size": len(data)})
        first.send(data)
        job = first.expect(lambda m: m["type"] == "fit")["job"]
        first.close()  # gone before the fit ends

        again = Socket(server.ws_url)
        again.send({"type": "hello"})
        voice = again.expect(lambda m: m["type"] == "welcome")["voice"]
        again.send({"type": "watch", "job": job})
        end = again.fit_end(60)
        assert end["state"] == "done" and end["instrument"] == "dropped" and end["voice"] == voice, end
        changed = [m for m in again.seen if m["type"] == "instrument_changed"]
        assert changed == [{"type": "instrument_changed", "voice": voice, "instrument": "dropped"}]
        assert health(server.url)["voices"][voice]["instrument"] == "dropped"
        again.close()
        # Back after it landed: the page hears it is done, and its voice (a new one again) plays it.
        late = Socket(server.ws_url)
        late.send({"type": "hello"})
        voice = late.expect(lambda m: m["type"] == "welcome")["voice"]
        late.send({"type": "watch", "job": job})
        end = late.fit_end(10)
        assert end["state"] == "done" and end["voice"] == voice
        assert {"type": "instrument_changed", "voice": voice, "instrument": "dropped"} in late.seen
        assert health(server.url)["voices"][voice]["instrument"] == "dropped"
        late.close()
        assert server.stop() == 0
    finally:
        cluster.close()


# ------------------------------------------------------------------------------------ the pages


sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no system Chromium at {CHROMIUM}")


@pytest.fixture
def mic_clip(tmp_path) -> Path:
    """What the fake microphone plays: 3 s of marimba.wav, 16-bit."""
    clip, rate = marimba(3.0)
    path = tmp_path / "mic.wav"
    sf.write(path, clip, rate, subtype="PCM_16")
    return path


@pytest.fixture
def browser(mic_clip):
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic_clip}",
        ])
        try:
            yield b
        finally:
            b.close()


def open_page(browser, url: str, problems: list[str], init_script: str | None = None, **context_args):
    context = browser.new_context(**context_args)
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.goto(url)
    return page


def follow_record(page, timeout: float = 90.0) -> list[tuple[float, str, str]]:
    """Wait for data-record to reach a final state (returned as seen: [(t, state, text)])."""
    seen: list[tuple[float, str, str]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        now = page.evaluate("[document.documentElement.dataset.record, "
                            "document.getElementById('record-info').textContent]")
        if not seen or seen[-1][1:] != tuple(now[:2]):
            seen.append((round(time.monotonic() - t0, 2), now[0], now[1]))
        if now[0] in ("done", "failed", "cancelled", "denied"):
            return seen
        time.sleep(0.03)
    raise AssertionError(f"the recording did not end within {timeout} s: {seen[-5:]}")


def recorded(server) -> float:
    return float(health(server.url)["recording"]["seconds"])


def mode_steps(steps: int, frozen: int = 150, every: int = 2) -> int:
    """How many of a fit's steps train the oscillators (FitSettings' defaults: frozen 150, every 2nd)."""
    return max(0, -(-(steps - frozen) // every))


def default_fit_estimate(cluster: Cluster, clip: bytes) -> dict[str, float]:
    """Start a fit with the fitter's defaults (seed-size model, 900 steps) on the same trainer, read what its
    progress predicts once a few steps ran (elapsed + ETA), and cancel it. Also the cost of one frozen step
    (the ETA's own model: a step that trains the oscillators costs 2.4 of them), the time before the first
    step (reading, analysis), and from those a 300-step fit's time."""
    with cluster.client() as client:
        job = client.submit(clip, "default-estimate", clip_name="mic.wav")

        def probe():
            p = client.job(job.id).progress
            return p if p is not None and p.step >= 4 and p.eta_s is not None else None

        p = wait_until(probe, 120, "a default fit's first steps", step=0.2)
        client.cancel(job.id)
        workers = client.list().workers
    train = mode_steps(900)
    frozen_step = p.eta_s / (900 - p.step - train + 2.4 * train)
    before = max(0.0, p.elapsed_s - p.step * frozen_step)
    cost = lambda steps: before + frozen_step * (steps - mode_steps(steps) + 2.4 * mode_steps(steps))  # noqa: E731
    return {"default_s": p.elapsed_s + p.eta_s, "before_steps_s": before, "frozen_step_s": frozen_step,
            "steps300_s": cost(300), "threads": workers[0].threads if workers else 0}


@needs_chromium
def test_record_on_the_live_page_and_play_it(start_server, browser, tmp_path, mic_clip):
    """The trainer writes into its own folder: the server fetches the result into its own."""
    cluster = Cluster(tmp_path / "trainer")
    cluster.root.mkdir()
    problems: list[str] = []
    try:
        cluster.start_trainer("--threads", "2", workers=1)  # what `sensorsynth trainer` runs on 2 cores
        server = start_server("--trainer", cluster.endpoint, *TINY_FIT)
        assert server.models != cluster.models
        page = open_page(browser, server.page("/"), problems, viewport={"width": 1280, "height": 1000})
        page.wait_for_selector("html[data-record='idle']", timeout=20_000)
        assert page.is_enabled("#record")
        voice = page.evaluate("window.sensorsynthLive.voice")
        page.fill("#record-name", "marimba take")
        page.click("#record")
        page.wait_for_selector("html[data-record='recording']", timeout=10_000)
        assert "Recording" in page.inner_text("#record-info")  # the countdown
        wait_js(page, "window.sensorsynthLive.record.peak > 0.05", timeout=10_000)  # the level
        seen = follow_record(page)
        rec = page.evaluate("window.sensorsynthLive.record")
        assert rec["state"] == "done", (seen, rec["error"], server.output()[-2000:])
        name = rec["instrument"]
        assert name == "marimba-take"
        # The progress went through the trainer's stages, step by step, with ETAs.
        states = [p["state"] for p in rec["progress"]]
        assert states[0] == "uploaded" and {"queued", "running", "installing", "done"} <= set(states), states
        running = [p for p in rec["progress"] if p["state"] == "running"]
        assert {"analysis", "frozen"} & {p["stage"] for p in running}
        assert any(p["step"] > 0 and p["steps"] == 30 and p["eta_s"] is not None for p in running)
        assert any("Fitting" in text and "/30" in text for _, _, text in seen), seen
        # Listed, and this page's voice plays it (the server switched it; the page followed).
        assert name in instruments(server.url)
        assert (server.models / f"{name}.instrument").is_file() and (cluster.models / f"{name}.instrument").is_file()
        wait_js(page, f"window.sensorsynthLive.instrument === '{name}'", timeout=5_000)
        assert health(server.url)["voices"][voice]["instrument"] == name
        wait_js(page, f"window.sensorsynthLive.detail && window.sensorsynthLive.detail.name === '{name}'")
        k = TINY_SPEC["control_plane_dim"]
        wait_js(page, f"document.querySelectorAll('#pad .cell').length === {k}")

        # The first note: a click on the play surface, into the recording where there was silence.
        before = recorded(server)
        page.click("#pad .cell[data-index='0']")
        hit = page.evaluate("window.sensorsynthLive.lastHit")
        assert hit["sent"]
        wait_js(page, "window.sensorsynthLive.counts.events >= 1", timeout=10_000)
        wait_until(lambda: recorded(server) > before + 1.5, 20, "the recording to grow")
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        times, last = rec["times"], rec["last"]
        first_note_s = (hit["at"] - times["recordEnd"]) / 1000

        # The same clip with the fitter's defaults, to estimate a real fit (cancelled after a few steps).
        sent = wav_bytes(*marimba(3.0))
        est = default_fit_estimate(cluster, sent)
        page.context.close()
        assert problems == []
        assert server.stop() == 0
    finally:
        cluster.close()

    audio, rate = sf.read(str(server.record_path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    cut = int(before * rate)
    silence = audio[max(0, cut - rate): max(0, cut - rate // 20)]
    assert silence.size > rate // 2 and np.abs(silence).max() < 1e-4, "sound before the click"
    after = audio[cut: cut + rate]
    rms = float(np.sqrt(np.mean(after.astype(np.float64) ** 2)))
    assert rms > 1e-3, f"the new instrument made no sound (rms {rms:.2g} in the second after the click)"

    t = last["timings"]
    fit_s = t["fit_done_s"] - t["running_s"]
    rest = first_note_s - fit_s
    print(f"\nrecord → play (tiny fit: 30 steps of a {TINY_SPEC['n_resonances']}-resonance model, the trainer's "
          f"worker on {est['threads']} threads): end of the recording → first note {first_note_s:.2f} s"
          f"\n  page: resample + encode + hash {(times['encoded'] - times['recordEnd']) / 1000:.2f} s; "
          f"sent → uploaded {(times['uploaded'] - times['sent']) / 1000:.2f} s"
          f"\n  server: uploaded → queued {t['queued_s']:.2f} s → running {t['running_s']:.2f} s → fitted "
          f"{t['fit_done_s']:.2f} s → loaded {t['loaded_s']:.2f} s → voice switched {t['switched_s']:.2f} s"
          f"\n  page: 'done' → click {(hit['at'] - times['done']) / 1000:.2f} s; rms after the click {rms:.3f}"
          f"\n  estimated from a default fit's progress on this trainer (cancelled after a few steps; before the "
          f"steps {est['before_steps_s']:.1f} s, a frozen step {est['frozen_step_s']:.3f} s):"
          f"\n    default fit (seed-size model, 900 steps) {est['default_s']:.0f} s → end of recording → first note "
          f"≈ {rest + est['default_s']:.0f} s"
          f"\n    record_fit steps=300 {est['steps300_s']:.0f} s → ≈ {rest + est['steps300_s']:.0f} s")


class Motion:
    """The emulated phone's motion sensors (DevTools overrides), as tests/server/test_phone.py drives them."""

    def __init__(self, context, page):
        self.cdp = context.new_cdp_session(page)
        for kind in ("accelerometer", "linear-acceleration", "gyroscope"):
            self.cdp.send("Emulation.setSensorOverrideEnabled", {"enabled": True, "type": kind})
        self.set((0, 0, 0), (0, 0, 0))

    def set(self, acc, rot) -> None:
        xyz = lambda v: {"xyz": {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}}  # noqa: E731
        self.cdp.send("Emulation.setSensorOverrideReadings", {"type": "linear-acceleration", "reading": xyz(acc)})
        self.cdp.send("Emulation.setSensorOverrideReadings", {"type": "accelerometer",
                                                              "reading": xyz((acc[0], acc[1], acc[2] + G))})
        self.cdp.send("Emulation.setSensorOverrideReadings", {"type": "gyroscope", "reading": xyz(rot)})

    def shake(self, seconds: float, hz: float = 5.0, amp: float = 18.0) -> None:
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < seconds:
            s, c = math.sin(2 * math.pi * hz * t), math.cos(2 * math.pi * hz * t)
            self.set((amp * s, 0.4 * amp * c, 0.2 * amp * s), (3.0 * c, 1.5 * s, 0.8 * c))
            time.sleep(0.02)


@needs_chromium
def test_record_on_the_phone_and_shake_it(start_server, browser, tmp_path):
    """The trainer shares the server's models folder: nothing is copied, the server waits for the file."""
    cluster = Cluster(tmp_path)
    problems: list[str] = []
    try:
        cluster.models.mkdir()
        (cluster.models / BUNDLED.name).write_bytes(BUNDLED.read_bytes())
        cluster.start_trainer(workers=1)
        server = start_server("--trainer", cluster.endpoint, *TINY_FIT, models=cluster.models)
        (cluster.models / "take.instrument").write_bytes(BUNDLED.read_bytes())  # the name is taken: take-2
        wait_until(lambda: "take" in instruments(server.url), 10, "the library to list take")
        context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        motion = Motion(context, page)
        page.goto(server.page("/phone"))
        page.wait_for_selector("html[data-record='idle']", timeout=20_000)
        voice = page.evaluate("window.sensorsynthPhone.voice")
        page.tap("#record")
        seen = follow_record(page)
        rec = page.evaluate("window.sensorsynthPhone.record")
        assert rec["state"] == "done", (seen, rec["error"], server.output()[-2000:])
        assert rec["instrument"] == "take-2"  # never over an existing instrument
        assert (cluster.models / "take.instrument").read_bytes() == BUNDLED.read_bytes()
        assert "Fetched" not in server.output() and "fetched" not in server.output()  # shared: nothing copied
        wait_js(page, "window.sensorsynthPhone.instrument === 'take-2'", timeout=5_000)
        assert page.eval_on_selector("#instrument", "s => s.value") == "take-2"
        assert health(server.url)["voices"][voice]["instrument"] == "take-2"

        # The same phone plays it: shaking it fires the new instrument's control dimensions on its voice.
        page.tap("#start")
        page.wait_for_selector("html[data-motion='running']", timeout=10_000)
        before = recorded(server)
        motion.shake(2.0)
        wait_js(page, "window.sensorsynthPhone.counts.ownEvents > 0", timeout=10_000)
        wait_until(lambda: recorded(server) > before + 2.5, 20, "the recording to grow")
        assert page.evaluate("window.sensorsynthPhone.errors") == []
        page.context.close()
        assert problems == []
        assert server.stop() == 0
    finally:
        cluster.close()
    audio, rate = sf.read(str(server.record_path), dtype="float32", always_2d=True)
    shaken = audio.mean(axis=1)[int(before * rate): int((before + 2.5) * rate)]
    rms = float(np.sqrt(np.mean(shaken.astype(np.float64) ** 2)))
    assert rms > 1e-3, f"shaking the phone made no sound with the new instrument (rms {rms:.2g})"


DENY_MIC = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


@needs_chromium
def test_record_errors_on_the_page_are_plain(start_server, browser):
    # No trainer: the button is off and says how to start one.
    server = start_server(record=False)
    problems: list[str] = []
    page = open_page(browser, server.page("/"), problems)
    page.wait_for_selector("html[data-record='unavailable']", timeout=20_000)
    wait_js(page, "document.getElementById('record-info').textContent.includes('sensorsynth trainer')")
    assert page.is_disabled("#record") and "--trainer" in page.inner_text("#record-info")

    # The page's own signal path (record.js): resampling 48 kHz → 22050 Hz keeps what fits and does not fold
    # back what does not; the WAV it writes is one soundfile reads back exactly.
    got = page.evaluate("""async () => {
      const m = await import("/static/record.js");
      const sine = (hz, n, rate) => Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(2 * Math.PI * hz * i / rate));
      const rms = (x) => Math.sqrt(x.slice(2000, -2000).reduce((a, v) => a + v * v, 0) / (x.length - 4000));
      const low = m.resample(sine(1000, 48000, 48000), 48000, 22050);
      const high = m.resample(sine(15000, 48000, 48000), 48000, 22050);  // above the new Nyquist (11025 Hz)
      const up = m.resample(sine(1000, 16000, 16000), 16000, 22050);
      const wav = new Uint8Array(m.encodeWav(Float32Array.from([0, 0.5, -0.5, 1, -1, 2]), 22050));
      return { low: [low.length, rms(low)], high: rms(high), up: [up.length, rms(up)], wav: Array.from(wav),
               sha: await m.sha256Hex(wav.buffer) };
    }""")
    assert got["low"][0] == 22050 and got["low"][1] == pytest.approx(0.5 / math.sqrt(2), rel=0.01)
    assert got["up"][0] == 22050 and got["up"][1] == pytest.approx(0.5 / math.sqrt(2), rel=0.01)
    assert got["high"] < 0.005, f"15 kHz folded back into the 22050 Hz clip (rms {got['high']:.3g})"
    wav = bytes(got["wav"])
    data, rate = sf.read(io.BytesIO(wav), dtype="int16")
    assert rate == 22050 and data.tolist() == [0, 16384, -16383, 32767, -32767, 32767]
    assert got["sha"] == hashlib.sha256(wav).hexdigest()
    page.context.close()
    assert server.stop() == 0

    # A trainer that does not answer; a microphone that is refused.
    dead = f"tcp://127.0.0.1:{free_port()}"
    server = start_server("--trainer", dead, record=False)
    page = open_page(browser, server.page("/phone"), problems, init_script=DENY_MIC)
    page.wait_for_selector("html[data-record='idle']", timeout=20_000)
    page.click("#record")
    page.wait_for_selector("html[data-record='denied']", timeout=10_000)
    assert "refused" in page.inner_text("#record-info") and page.is_enabled("#record")
    page.context.close()

    page = open_page(browser, server.page("/"), problems)
    page.wait_for_selector("html[data-record='idle']", timeout=20_000)
    page.click("#record")
    follow_record(page, timeout=60)
    text = page.inner_text("#record-info")
    assert page.evaluate("document.documentElement.dataset.record") == "failed"
    assert "no trainer answered" in text and dead in text, text
    assert page.is_enabled("#record")  # it can be tried again
    page.context.close()
    assert problems == []
    assert server.stop() == 0
