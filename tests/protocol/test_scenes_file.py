"""The scenes file: a good one reads as written; hostile ones (huge, deep, unknown fields, wrong types, scenes
that do not exist, what the server cannot play) are refused with one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensorsynth.protocol.scenes import MAX_FILE_BYTES, ScenesError, Server, check_against, load_scenes, parse_scenes

REPO = Path(__file__).resolve().parents[2]

GOOD = """
crossfade_s = 3
start = "day"

[scenes.day]
instrument = "guitar"
gain = 0.8
presets = ["touchdesigner"]
learned = true
output_gains = [1, 1, 0.5, 0.5]
[scenes.day.voices]
0 = { instrument = "bell" }
3 = { gain = 0.2 }

[scenes.quiet]
gain = 0
level_cap_dbfs = -40
crossfade_s = 10

[schedule]
timezone = "Europe/Paris"
open = "day"
closed = "quiet"
hours = { tue = ["10:00-18:00"], sat = [{ start = "10:00", end = "20:00" }] }
"""


def test_a_good_file_reads_as_written():
    s = parse_scenes(GOOD)
    day = s.scenes["day"]
    assert s.first == "day" and s.crossfade("day") == 3 and s.crossfade("quiet") == 10
    assert day.voice(0) == ("bell", 0.8) and day.voice(3) == ("guitar", 0.2) and day.voice(5) == ("guitar", 0.8)
    assert s.scenes["quiet"].voice(2) == (None, 0.0), "no instrument: each voice keeps its own"
    assert s.schedule is not None and s.schedule.hours["sat"][0].seconds == (36000, 72000)
    check_against(s, Server(["guitar", "bell"], ["touchdesigner"], max_voices=8, output_channels=4))


def test_the_example_in_deploy_is_valid_and_plays_the_bundled_instrument():
    s = load_scenes(REPO / "deploy" / "scenes.toml")
    check_against(s, Server(["guitar"], None, max_voices=8, output_channels=8))
    assert s.schedule is not None and "mon" not in s.schedule.hours, "the museum is closed on Mondays"


@pytest.mark.parametrize("text, words", [
    ('[scenes.day]\ngian = 1\n', "field 'scenes.day.gian': Extra inputs are not permitted"),
    ('colour = "red"\n[scenes.day]\n', "field 'colour'"),
    ('[scenes.day]\ngain = 17\n', "field 'scenes.day.gain'"),
    ('[scenes.day]\ngain = nan\n', "field 'scenes.day.gain'"),
    ('[scenes.day]\ngain = "loud"\n', "field 'scenes.day.gain'"),
    ('[scenes.day]\noutput_gains = [1, 2]\n', "channel gains are 0..1"),
    ('[scenes.day]\nlevel_cap_dbfs = 3\n', "field 'scenes.day.level_cap_dbfs'"),
    ('[scenes.day]\ninstrument = "../etc/passwd"\n', "field 'scenes.day.instrument'"),
    ('[scenes.day.voices]\n999 = { gain = 1 }\n', "voice 999"),
    ('[scenes.day.voices]\nfirst = { gain = 1 }\n', "field 'scenes.day.voices.first"),
    ('[scenes."bad name!"]\n', "scene name"),
    ('scenes = {}\n', "field 'scenes'"),
    ('start = "night"\n[scenes.day]\n', "no scene 'night'"),
    ('[scenes.day]\n[schedule]\nopen = "day"\nclosed = "night"\n', "no scene 'night'"),
    ('[scenes.day]\n[schedule]\nopen = "day"\nclosed = "day"\nhours = { mon = [{ start = "1:00", end = "2:00", '
     'scene = "x" }] }\n', "no scene 'x'"),
    ('[scenes.day]\n[schedule]\nopen = "day"\nclosed = "day"\ntimezone = "Nowhere/Land"\n', "unknown time zone"),
    ("[scenes.day\n", "not valid TOML"),
    ("", "field 'scenes'"),
])
def test_bad_files_are_one_line_naming_the_field(text, words):
    with pytest.raises(ScenesError) as info:
        parse_scenes(text, "scenes.toml: ")
    message = str(info.value)
    assert words in message, message
    assert "\n" not in message and message.startswith("scenes.toml: ") and len(message) <= 400


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.toml"
    with path.open("w") as f:
        f.write("[scenes.day]\n")
        f.write("# padding\n" * (MAX_FILE_BYTES // 10 + 10))
    with pytest.raises(ScenesError, match="larger than 64 KiB"):
        load_scenes(path)
    with pytest.raises(ScenesError, match="larger than 64 KiB"):
        parse_scenes("x" * (MAX_FILE_BYTES + 1))


def test_deep_nesting_is_refused():
    deep = "a = " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(ScenesError, match="nested"):
        parse_scenes(deep)
    deeper = "[scenes.day]\nabout = 'x'\n[x.a.b.c.d.e.f.g]\ny = 1\n"
    with pytest.raises(ScenesError, match="nested deeper"):
        parse_scenes(deeper)


def test_many_scenes_and_many_date_rules_are_bounded():
    many = "".join(f"[scenes.s{i}]\n" for i in range(65))
    with pytest.raises(ScenesError, match="field 'scenes'"):
        parse_scenes(many)
    rules = "".join('[[schedule.dates]]\nfrom = 2026-01-01\n' for _ in range(513))
    with pytest.raises(ScenesError, match="field 'schedule.dates'"):
        parse_scenes('[scenes.day]\n[schedule]\nopen = "day"\nclosed = "day"\n' + rules)


def test_unreadable_and_binary_files(tmp_path):
    with pytest.raises(ScenesError, match="cannot read scenes file"):
        load_scenes(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScenesError, match="not UTF-8"):
        load_scenes(tmp_path / "bin.toml")


@pytest.mark.parametrize("server, words", [
    (Server(["guitar"], ["touchdesigner"], 8, 4), "no instrument 'bell' in the models folder (there: guitar)"),
    (Server(["guitar", "bell"], ["wekinator"], 8, 4), "preset 'touchdesigner' is not loaded"),
    (Server(["guitar", "bell"], ["touchdesigner"], 2, 4), "voice 3, but the server has voices 0..1"),
    (Server(["guitar", "bell"], ["touchdesigner"], 8, 8), "4 output_gains for 8 output channels"),
])
def test_what_the_server_cannot_play_is_refused_at_start(server, words):
    with pytest.raises(ScenesError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_against(parse_scenes(GOOD), server, "scenes.toml: ")


def test_unknown_presets_and_channels_are_not_checked_when_unknown():
    check_against(parse_scenes(GOOD), Server(["guitar", "bell"], None, 8, None))


def test_the_museum_example_in_the_docs_is_the_one_in_deploy():
    text = (REPO / "docs" / "scenes.md").read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    assert block == (REPO / "deploy" / "scenes.toml").read_text(encoding="utf-8")
    assert parse_scenes(block).schedule is not None
