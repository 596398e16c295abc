"""The trainer's wire: JSON frames with a version, files as raw frames, every refusal a named error."""

from __future__ import annotations

import json
import re
import sys

import pytest

from sensorsynth.instrument.pipeline import Progress
from sensorsynth.protocol import trainer as wire

JOB = "0123456789abcdef0123456789abcdef"


def test_round_trips_with_files() -> None:
    submit = wire.Submit(job_id=JOB, name="cello", clip_name="take.wav", settings={"steps": 5}, spec={}, req="r1")
    frames = wire.encode(submit, b"RIFF....")
    message, files = wire.decode(frames, wire.TO_QUEUE)
    assert message == submit and files == [b"RIFF...."]
    assert json.loads(frames[0])["v"] == wire.VERSION
    progress = wire.ProgressMsg(job_id=JOB, attempt=2, progress=Progress(stage="full", step=3, steps=9, loss=1.5))
    assert wire.decode(wire.encode(progress), wire.TO_QUEUE)[0] == progress
    assign = wire.Assign(job_id=JOB, attempt=1, name="c", clip_name="t.wav", settings={}, spec={})
    assert wire.decode(wire.encode(assign, b"x"), wire.TO_WORKER)[0] == assign


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], "frames"),
        ([b"\xff\xfe"], "bad_json"),
        ([b"[1, 2]"], "bad_json"),
        ([b'{"type": "hello"}'], "version"),
        ([b'{"v": 2, "type": "hello"}'], "version"),
        ([b'{"v": 1, "type": "pickle"}'], "unknown_type"),
        ([b'{"v": 1, "type": "watch", "job_id": "../etc"}'], "bad_schema"),
        ([b'{"v": 1, "type": "hello", "extra": 1}'], "bad_schema"),
        ([b'{"v": 1, "type": "submit", "job_id": "' + JOB.encode() + b'", "name": "x"}'], "frames"),
        ([b'{"v": 1, "type": "hello"}', b"unexpected"], "frames"),
        ([b" " * (wire.MAX_HEADER_BYTES + 1)], "too_large"),
    ],
)
def test_refusals_are_named(frames: list[bytes], code: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode(frames, wire.TO_QUEUE)
    assert caught.value.code == code
    reply = json.loads(caught.value.reply()[0])
    assert reply["type"] == "error" and reply["code"] == code and reply["v"] == wire.VERSION


def test_an_error_echoes_the_request() -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.decode([b'{"v": 1, "type": "cancel", "req": "abc", "job_id": "XYZ"}'], wire.TO_QUEUE)
    reply = json.loads(caught.value.reply()[0])
    assert reply["req"] == "abc" and reply["ref"] == "cancel"


def test_names_match_what_the_player_loads() -> None:
    from sensorsynth.server.library import NAME_RE

    assert wire.NAME_PATTERN == NAME_RE.pattern
    for name in ["cello", "Take-2.v1", "a", "_x", "../x", "a..b", "x/y", "", "é"]:
        assert wire.valid_name(name) == (bool(NAME_RE.match(name)) and ".." not in name), name


def test_the_wire_needs_no_torch_or_numpy() -> None:
    import subprocess

    code = ("import sys; import sensorsynth.protocol.trainer, sensorsynth.trainer.jobs, sensorsynth.trainer.schedule;"
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert re.match(wire.NAME_PATTERN, "x")
