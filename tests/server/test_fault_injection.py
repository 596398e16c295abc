"""Fault injection as a value (server/faults.py): parsed once at the edge, refused clearly when malformed."""

from __future__ import annotations

import pytest

from sensorsynth.server.faults import Faults


def test_faults_parse_the_one_form_and_refuse_others():
    assert Faults.parse("") == Faults() and Faults().stall_audio_after_s is None
    assert Faults.parse(" stall-audio-after:1.5 ").stall_audio_after_s == 1.5
    assert Faults.from_env({"SENSORSYNTH_FAULT": "stall-audio-after:0"}).stall_audio_after_s == 0.0
    assert Faults.from_env({}) == Faults()
    for bad in ("stall-audio-after:", "stall-audio-after:-1", "stall-audio-after:soon", "crash"):
        with pytest.raises(ValueError, match="SENSORSYNTH_FAULT"):
            Faults.parse(bad)
