"""The scenes' edge on a real engine (the compiled audio path on the null output, a real recording): the
schedule followed through clock jumps, a switch by hand that holds until the next change, the voices a page gives
back, and a cross-fade that ramps the sound down instead of cutting it."""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import soundfile as sf

from sensorsynth.protocol.commands import Control, Rejected
from sensorsynth.protocol.scenes import parse_scenes
from sensorsynth.server.engine import Engine, EngineSettings
from sensorsynth.server.library import Library
from sensorsynth.server.playout import NullOutput
from sensorsynth.server.recorder import Recorder
from sensorsynth.server.scenes import RECHECK_S, SceneEdge

from .conftest import BUNDLED

RATE, BLOCK, K = 22050, 64, 16
UTC = timezone.utc

FILE = """
crossfade_s = 0
[scenes.day]
instrument = "guitar"
gain = 1.0
[scenes.night]
instrument = "bell"
gain = 0.0
[scenes.talk]
gain = 0.5
[scenes.talk.voices]
1 = { instrument = "bell", gain = 0.25 }
[schedule]
timezone = "UTC"
open = "day"
closed = "night"
hours = { thu = ["10:00-18:00"], fri = ["10:00-18:00"] }
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Library:
    models = tmp_path_factory.mktemp("models")
    shutil.copy(BUNDLED, models / "guitar.instrument")
    shutil.copy(BUNDLED, models / "bell.instrument")
    lib = Library(models)
    lib.scan(settle=False)
    return lib


def engine(library: Library, recorder: Recorder | None = None) -> Engine:
    return Engine(library, EngineSettings(sample_rate=RATE, block_size=BLOCK, max_voices=3, seed=1,
                                          realtime_priority=0, instrument="guitar"),
                  NullOutput(RATE, BLOCK), recorder)  # fmt: skip


def test_the_schedule_through_clock_jumps_and_a_switch_by_hand(library):
    now = [datetime(2026, 12, 3, 9, 0, tzinfo=UTC)]  # a Thursday, before opening

    async def run() -> None:
        e = engine(library)
        edge = SceneEdge(e, parse_scenes(FILE), clock=lambda: now[0])
        await edge.start()
        assert edge.current == "night" and edge.state["source"] == "start"
        assert edge.state["next_at"] == "2026-12-03T10:00:00Z"
        await asyncio.sleep(0)
        assert [v.instrument for v in e.voices] == ["bell"] * 3 and edge.gains == [0.0] * 3
        assert edge.check() == RECHECK_S, "asked again within a minute even when the change is an hour away"

        now[0] = datetime(2026, 12, 3, 9, 59, 30, tzinfo=UTC)
        assert edge.check() == pytest.approx(30.0), "sleeps until the change when it is nearer"
        now[0] = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)  # the clock jumped forward (a suspended machine)
        edge.check()
        assert (edge.current, edge.state["source"]) == ("day", "schedule")
        now[0] = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)  # and back (an NTP correction)
        edge.check()
        assert edge.current == "night"

        now[0] = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
        edge.check()
        edge.switch("talk", "osc")  # by hand: holds until the schedule's next change, 18:00
        await asyncio.sleep(0)
        assert edge.state["held"] is True and edge.held_until == datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
        assert [v.instrument for v in e.voices] == ["guitar", "bell", "guitar"], "voice 1 differs, the rest keep"
        assert edge.gains == [0.5, 0.25, 0.5]
        now[0] += timedelta(hours=2)
        edge.check()
        assert edge.current == "talk", "still held"
        now[0] = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
        edge.check()
        assert (edge.current, edge.state["held"], edge.state["source"]) == ("night", False, "schedule")

        with pytest.raises(Rejected) as info:
            edge.switch("party", "ws")
        assert info.value.kind == "unknown_scene" and "there: day, night, talk" in str(info.value)

        # a voice a page gives back returns to the scene's instrument, not the server's first one
        edge.switch("talk", "ws")
        await asyncio.sleep(0)
        v = e.allocate_voice("ws1")
        e.select(v, "guitar")
        e.release_voice(v)
        assert e.voices[v].instrument == "bell" and v == 1
        await edge.stop()

    asyncio.run(run())


@pytest.mark.slow
def test_a_cross_fade_ramps_the_sound_down(library, tmp_path):
    path = tmp_path / "take.wav"
    scenes = parse_scenes('[scenes.on]\ngain = 1.0\n[scenes.off]\ngain = 0.0\ncrossfade_s = 1.0\n')

    async def run() -> float:
        e = engine(library, Recorder(path, RATE))
        e.start()
        edge = SceneEdge(e, scenes)
        await edge.start()
        switched = 0.0
        for i in range(75):  # 3 s of hits, 25 a second, each on every dimension (the ramp, not the limiter)
            e.submit(Control(tuple([0.05] * K)))  # soft: below the level cap, so the limiter never acts
            if i == 30:
                edge.switch("off", "ws")
                switched = e.recorder.seconds
            await asyncio.sleep(0.04)
        await edge.stop()
        e.stop()
        return switched

    switched = asyncio.run(run())
    audio, rate = sf.read(str(path), dtype="float32")
    win = int(0.2 * rate)

    def level(t: float) -> float:
        seg = audio[int(t * rate): int(t * rate) + win]
        return float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))

    before = level(switched - 0.3)
    assert before > 1e-3, "the hits sound before the switch"
    middle = level(switched + 0.4)  # the gain ramp is about half way down
    after = level(switched + 1.3)  # the ramp is over
    assert 0.15 * before < middle < 0.85 * before, (before, middle, after)
    assert after < 0.02 * before, (before, middle, after)
