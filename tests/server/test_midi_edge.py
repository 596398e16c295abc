"""The MIDI edge in-process, without ports: bytes through the map into a real engine (null output), what it
refuses and counts, and the bound on what rtmidi's thread may queue for the event loop."""

from __future__ import annotations

import asyncio
import threading

import mido
import pytest

from sensorsynth.mapping.midi import MidiPreset, load_midi_preset
from sensorsynth.server.engine import Engine, EngineSettings
from sensorsynth.server.midi import MAX_PENDING, MidiEdge, backends
from sensorsynth.server.playout import NullOutput
from sensorsynth.server.rejections import Rejections


RATE, BLOCK = 22050, 64


@pytest.fixture(scope="module")
def engine(library):
    e = Engine(library, EngineSettings(sample_rate=RATE, block_size=BLOCK, max_voices=3, seed=1, realtime_priority=0),
               NullOutput(RATE, BLOCK))  # fmt: skip
    e.start()
    yield e
    e.stop()


def test_bytes_play_through_the_map_and_refusals_are_counted(engine):
    rejections = Rejections()
    edge = MidiEdge(engine, rejections, MidiPreset.model_validate({"name": "ch", "channel_voices": True}))
    sub = engine.events.subscribe()
    try:
        owner = engine.allocate_voice("ws-1")  # a page takes voice 1: MIDI channel 1 may not play it
        assert owner == 1
        edge.play(bytes([0x90, 50, 127]))  # channel 0: voice 0 (OSC's), dimension 2
        edge.play(bytes([0x91, 48, 64]))  # channel 1: the page's voice, refused
        edge.play(bytes([0x92, 48, 64]))  # channel 2: voice 2 (free)
        edge.play(bytes([0x95, 48, 64]))  # channel 5: no such voice
        edge.play(bytes([0x90, 200, 1]))  # malformed
        edge.play(bytes([0xE0, 0, 64]))  # pitch bend: ignored
        engine.release_voice(owner)
        played = sub.take()
    finally:
        sub.close()
    assert [(e.voice, e.kind, e.source) for e in played] == [(0, "control", "midi"), (2, "control", "midi")]
    assert played[0].values[2] == 1.0
    assert edge.stats["received"] == 6 and edge.stats["commands"] == 2 and edge.stats["ignored"] == 1
    assert edge.stats["rejected"] == 3
    assert rejections.as_dict() == {"midi:voice_taken": 1, "midi:bad_voice": 1, "midi:malformed": 1}


def test_what_rtmidis_thread_queues_is_bounded_and_drained_on_the_loop(engine):
    edge = MidiEdge(engine, Rejections(), load_midi_preset("keys25"))
    sub = engine.events.subscribe(maxlen=4 * MAX_PENDING)

    async def flood() -> None:
        edge._loop = asyncio.get_running_loop()
        msg = mido.Message("note_on", note=48, velocity=100)
        clock = mido.Message("clock")  # 24 a beat from a DAW's transport: dropped on rtmidi's thread
        t = threading.Thread(target=lambda: [edge._on_midi(m) for _ in range(MAX_PENDING + 500) for m in (msg, clock)])
        t.start()
        t.join()  # the loop is blocked meanwhile: everything waits in the bounded queue
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    try:
        asyncio.run(flood())
        played = sub.take()
    finally:
        sub.close()
    assert edge.stats["dropped"] == 500 and edge.stats["received"] == MAX_PENDING
    assert edge.stats["system"] == MAX_PENDING + 500
    assert len(played) == MAX_PENDING and all(e.source == "midi" for e in played)


def test_auto_takes_alsa_only_where_its_sequencer_is():
    import os

    assert backends("jack") == ["UNIX_JACK"] and backends("alsa") == ["LINUX_ALSA"]
    assert backends("auto")[0] == ("LINUX_ALSA" if os.path.exists("/dev/snd/seq") else "UNIX_JACK")
