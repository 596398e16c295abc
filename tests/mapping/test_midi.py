"""The MIDI map (pure): the bundled presets, note → control, CC → gain or deformation, program → instrument,
what is ignored or refused, and MIDI out's notes (the same map backwards)."""

from __future__ import annotations

import pytest

from sensorsynth.mapping.midi import (
    MidiMapper, MidiPreset, MidiPresetError, available, control_notes, load_midi_preset, note_of, velocity_of,
)  # fmt: skip
from sensorsynth.protocol.commands import ControlChannel, Deform, Gain, Rejected, SelectInstrument

NAMES = ["bell", "guitar", "marimba"]


def test_the_bundled_presets_load():
    assert {"keys25", "grid"} <= set(available())
    keys = load_midi_preset("keys25")
    assert (keys.notes.first, keys.notes.count) == (48, 25) and keys.cc[1] == "deform" and keys.cc[7] == "gain"
    grid = load_midi_preset("grid")
    assert (grid.notes.first, grid.notes.count) == (36, 64) and grid.velocity.curve == 1.5


def test_bad_presets_name_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[cc]\n1 = "volume"\n')
    with pytest.raises(MidiPresetError, match="cc"):
        load_midi_preset(bad)
    bad.write_text('name = "bad"\n[notes]\nfirst = 120\ncount = 25\n')
    with pytest.raises(MidiPresetError, match="127"):
        load_midi_preset(bad)
    with pytest.raises(MidiPresetError, match="no MIDI preset"):
        load_midi_preset("launchpad-pro-9000")


def test_keys_fire_their_dimension_modulo_k_with_the_velocity_as_value():
    m = MidiMapper(load_midi_preset("keys25"))
    assert m.message([0x90, 48, 127], 8, 2, NAMES) == [ControlChannel(0, 1.0)]
    (cmd,) = m.message([0x90, 51, 64], 8, 2, NAMES)
    assert cmd.index == 3 and cmd.value == pytest.approx(64 / 127) and cmd.voice is None
    assert m.message([0x92, 58, 127], 8, 2, NAMES)[0].index == 10 % 8  # any channel, voice 0
    assert m.message([0x90, 72, 1], 25, 2, NAMES)[0].index == 24
    assert m.message([0x90, 47, 100], 8, 2, NAMES) == []  # below the keys
    assert m.message([0x90, 60, 0], 8, 2, NAMES) == []  # note-on velocity 0 is a note-off
    assert m.message([0x80, 60, 64], 8, 2, NAMES) == []


def test_a_curve_shapes_the_velocity_and_a_key_list_orders_the_pads():
    p = MidiPreset.model_validate({"name": "pads", "notes": {"list": [81, 82, 71, 72]}, "velocity": {"curve": 2.0}})
    m = MidiMapper(p)
    (cmd,) = m.message([0x99, 71, 64], 16, 1, NAMES)
    assert cmd.index == 2 and cmd.value == pytest.approx((64 / 127) ** 2)
    assert m.message([0x99, 73, 64], 16, 1, NAMES) == []


def test_control_changes_set_gain_and_deformation():
    m = MidiMapper(load_midi_preset("keys25"))
    assert m.message([0xB0, 7, 127], 8, 3, NAMES) == [Gain(1.0)]
    assert m.message([0xB0, 7, 0], 8, 3, NAMES) == [Gain(0.0)]
    (sweep,) = m.message([0xB0, 1, 127], 8, 3, NAMES)  # the wheel at the top: the last variant leads
    assert isinstance(sweep, Deform) and max(range(3), key=lambda i: sweep.logits[i]) == 2
    (low,) = m.message([0xB0, 1, 0], 8, 3, NAMES)
    assert max(range(3), key=lambda i: low.logits[i]) == 0
    (one,) = m.message([0xB0, 71, 127], 8, 3, NAMES)  # deform:1 at full, on top of the wheel's logits
    assert one.logits[1] == pytest.approx(6.0) and one.logits[0] == pytest.approx(low.logits[0])
    assert m.message([0xB0, 73, 127], 8, 3, NAMES) == []  # variant 3 of a 3-variant instrument: nothing
    assert m.message([0xB0, 74, 127], 8, 3, NAMES) == []  # an unmapped CC
    assert m.message([0xB0, 1, 64], 8, 1, NAMES) == []  # a single-variant instrument has nothing to deform


def test_program_change_selects_an_instrument_by_index():
    m = MidiMapper(load_midi_preset("keys25"))
    assert m.message([0xC0, 2], 8, 1, NAMES) == [SelectInstrument("marimba")]
    with pytest.raises(Rejected) as err:
        m.message([0xC0, 3], 8, 1, NAMES)
    assert err.value.kind == "unknown_instrument" and "0..2" in str(err.value)
    off = MidiMapper(MidiPreset.model_validate({"name": "x", "program_changes": False}))
    assert off.message([0xC0, 0], 8, 1, NAMES) == []


def test_channels_play_voices_when_asked():
    m = MidiMapper(MidiPreset.model_validate({"name": "x", "channel_voices": True, "cc": {7: "gain"}}))
    assert m.message([0x93, 48, 127], 8, 1, NAMES) == [ControlChannel(0, 1.0, voice=3)]
    assert m.message([0xB5, 7, 127], 8, 1, NAMES) == [Gain(1.0, voice=5)]


@pytest.mark.parametrize("data", [[], [0x40, 1, 2], [0x90, 200, 1], [0x90, 60], [0xC0, 1, 2], [0x90, 1, 2, 3]])
def test_malformed_bytes_are_refused(data):
    with pytest.raises(Rejected) as err:
        MidiMapper(load_midi_preset("keys25")).message(data, 8, 1, NAMES)
    assert err.value.kind == "malformed"


def test_other_messages_are_ignored():
    m = MidiMapper(load_midi_preset("keys25"))
    for data in ([0xE0, 0, 64], [0xD0, 30], [0xA0, 60, 30], [0xF8], [0xFE], [0xF0, 1, 2, 3, 4, 5, 0xF7]):
        assert m.message(data, 8, 1, NAMES) == []


def test_midi_out_plays_the_map_backwards():
    keys = load_midi_preset("keys25")
    assert note_of(keys, 0) == 48 and note_of(keys, 24) == 72 and note_of(keys, 79) == 127 and note_of(keys, 80) is None
    assert velocity_of(keys, 1.0) == 127 and velocity_of(keys, 0.5) == 64 and velocity_of(keys, 1e-6) == 1
    assert velocity_of(keys, 7.0) == 127
    assert control_notes(keys, [0.0, 1.0, 0.0, 0.25]) == [(0x90, 49, 127), (0x90, 51, 32)]
    m = MidiMapper(keys)  # a round trip: the note out, played back in, fires the same dimension and value
    for d, vel in ((1, 127), (3, 32)):
        (cmd,) = m.message([0x90, note_of(keys, d), vel], 8, 1, NAMES)
        assert cmd.index == d and velocity_of(keys, cmd.value) == vel
    grid = load_midi_preset("grid")
    assert velocity_of(grid, (64 / 127) ** 1.5) == 64
    pads = MidiPreset.model_validate({"name": "p", "notes": {"list": [81, 82]}, "out_channel": 9})
    assert control_notes(pads, [1.0, 1.0, 1.0]) == [(0x99, 81, 127), (0x99, 82, 127)]
