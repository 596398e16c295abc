"""The voice table on its own: who holds which voice, and what a command may address."""

from __future__ import annotations

import pytest

from sensorsynth.protocol.commands import Rejected
from sensorsynth.server.voices import OSC_VOICE, VoiceTable


def test_osc_holds_voice_zero_and_clients_get_the_lowest_free_voice():
    table = VoiceTable(3, "guitar")
    assert len(table) == 3 and [s.instrument for s in table] == ["guitar"] * 3
    assert table[OSC_VOICE].owner == "osc"
    assert table.allocate("a") == 1 and table.allocate("b") == 2
    assert table.allocate("c") is None  # all taken
    table.free(1)
    assert table[1].owner is None and table.allocate("c") == 1
    table.free(OSC_VOICE)  # OSC's voice is never given away
    assert table[OSC_VOICE].owner == "osc"
    assert table.summary() == [{"voice": 0, "instrument": "guitar", "owner": "osc"},
                               {"voice": 1, "instrument": "guitar", "owner": "c"},
                               {"voice": 2, "instrument": "guitar", "owner": "b"}]  # fmt: skip


def test_check_names_the_voices_there_are():
    table = VoiceTable(2, "guitar")
    assert table.check(None) == OSC_VOICE and table.check(None, default=1) == 1 and table.check(1) == 1
    for bad in (2, -1):
        with pytest.raises(Rejected) as err:
            table.check(bad)
        assert err.value.kind == "bad_voice" and "0..1" in str(err.value)


def test_touch_marks_use_and_an_empty_table_is_refused():
    table = VoiceTable(2, "guitar")
    assert table.touch(1, now=123.0) is table[1] and table[1].last_used == 123.0
    with pytest.raises(ValueError):
        VoiceTable(0, "guitar")
