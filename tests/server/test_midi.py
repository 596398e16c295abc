"""MIDI in and out through a real ``sensorsynth serve`` on JACK MIDI: a private JACK server (the dummy driver,
no card), a real client port that plays notes, a control change and program changes into the server's MIDI
input, and a real client port that receives the notes the server's MIDI output plays.

This machine and CI have no ALSA sequencer (no /dev/snd), so JACK MIDI is the real MIDI system here
(python-rtmidi's wheels carry its JACK API). The tests skip, saying why, where jackd or rtmidi's JACK API is
missing, and fail instead where CI requires JACK (SENSORSYNTH_REQUIRE_JACK)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from pythonosc.udp_client import SimpleUDPClient
from websockets.sync.client import connect

from .conftest import BUNDLED
from .helpers import http_json, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.jack]

# a fixed name: a JACK server that was killed leaves its name behind, which the next one of that name reuses
JACK_NAME = "sensorsynth-test-midi"


def midi_missing() -> str | None:
    if not shutil.which("jackd"):
        return "JACK is not installed (apt-get install jackd2)"
    try:
        import rtmidi
    except ImportError as exc:
        return f"python-rtmidi is not installed ({exc})"
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        return "this python-rtmidi was built without JACK"
    return None


@pytest.fixture
def jack_midi(monkeypatch):
    """A private JACK server (dummy driver) for this test's MIDI ports; its name in JACK_DEFAULT_SERVER."""
    why = midi_missing()
    if why is not None:
        if os.environ.get("SENSORSYNTH_REQUIRE_JACK"):
            pytest.fail(f"SENSORSYNTH_REQUIRE_JACK is set but {why}")
        pytest.skip(why)
    jackd = subprocess.Popen(["jackd", "-n", JACK_NAME, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["jack_wait", "-w", "-t", "10", "-s", JACK_NAME], check=True, capture_output=True, timeout=20)
        monkeypatch.setenv("JACK_DEFAULT_SERVER", JACK_NAME)
        monkeypatch.setenv("JACK_NO_START_SERVER", "1")
        yield {"JACK_DEFAULT_SERVER": JACK_NAME, "JACK_NO_START_SERVER": "1"}
    finally:
        jackd.kill()
        jackd.wait()


class Notes:
    """A real MIDI input port (python-rtmidi on JACK) connected to the server's MIDI output. It is polled, not
    called back: no Python runs on JACK's thread in the test process, so closing it races nothing."""

    def __init__(self, name: str) -> None:
        import mido
        import rtmidi

        self._mido = mido
        self.port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="sstest-notes")
        self.port.open_port(self.port.get_ports().index(name))
        self.got: list = []

    def poll(self) -> None:
        while (item := self.port.get_message()) is not None:
            self.got.append(self._mido.Message.from_bytes(item[0]))

    def note_ons(self) -> list:
        self.poll()
        return [m for m in self.got if m.type == "note_on"]

    def close(self) -> None:
        self.port.close_port()
        self.port.delete()


def test_midi_in_plays_and_midi_out_records_what_played(jack_midi, start_server, tmp_path):
    import mido

    models = tmp_path / "two"
    models.mkdir()
    for name in ("guitar", "other"):  # programs 0 and 1
        shutil.copy(BUNDLED, models / f"{name}.instrument")

    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    keys = backend.open_output("keys", virtual=True, client_name="sstest")  # the "controller", there first
    try:
        server = start_server("--midi-in", "sstest:keys", "--midi-out", "sensorsynth-out", "--midi-api", "jack",
                              "--midi-preset", "keys25", record=False, env=jack_midi, models=models)
        midi = http_json(server, "/health")["midi"]
        assert midi["api"] == "UNIX_JACK" and "sstest:keys" in midi["in_port"] and "sensorsynth-out" in midi["out_port"]
        assert midi["out_port"] == "sensorsynth-out:sensorsynth-out (virtual)"
        (out_name,) = [n for n in backend.get_input_names() if n == "sensorsynth-out:sensorsynth-out"]
        notes = Notes(out_name)
        with connect(server.ws_url) as ws:
            ws.send(json.dumps({"type": "hello", "client": "monitor", "monitor": True}))
            ws.recv(timeout=5)  # welcome: monitoring from here on

            keys.send(mido.Message("note_on", note=48, velocity=127))  # dimension 0 at full strength
            keys.send(mido.Message("note_on", note=51, velocity=64))  # dimension 3, about half
            keys.send(mido.Message("note_off", note=48))  # nothing: attacks ring out
            keys.send(mido.Message("control_change", control=7, value=127))  # gain 1.0
            keys.send(mido.Message("program_change", program=0))  # the library's first: playing it already
            keys.send(mido.Message("program_change", program=1))  # the second: "other"
            keys.send(mido.Message("program_change", program=9))  # beyond the library: refused, counted
            events = []
            deadline = time.monotonic() + 10
            while len([e for e in events if e["source"] == "midi"]) < 4 and time.monotonic() < deadline:
                msg = json.loads(ws.recv(timeout=5))
                if msg["type"] == "events":
                    events += msg["events"]
        played = [(e["kind"], e["values"]) for e in events if e["source"] == "midi"]
        assert played[0][0] == "control" and played[0][1][0] == 1.0 and sum(played[0][1]) == 1.0
        assert played[1][0] == "control" and played[1][1][3] == pytest.approx(64 / 127, abs=1e-3)
        assert played[2] == ("gain", [1.0])
        assert played[3] == ("instrument", []) and [e.get("instrument") for e in events if e["kind"] == "instrument"] == ["other"]
        h = wait_for(lambda: (lambda h: h if h["midi"]["rejected"] else None)(http_json(server, "/health")),
                     what="the program beyond the library to be refused")
        assert h["rejected"].get("midi:unknown_instrument") == 1
        assert h["midi"]["received"] == 7 and h["midi"]["commands"] == 5 and h["midi"]["dropped"] == 0

        # MIDI out: the two controls played from MIDI come back as notes (dimension → key, value → velocity)...
        wait_for(lambda: len(notes.note_ons()) >= 2, what="MIDI out's notes")
        assert [(m.note, m.velocity) for m in notes.note_ons()[:2]] == [(48, 127), (51, 64)]
        # ... and so does what any other source plays: an OSC control, the sensors' path to a DAW
        SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/control/5", [0.5])
        wait_for(lambda: len(notes.note_ons()) >= 3, what="the OSC control as a note")
        assert (notes.note_ons()[2].note, notes.note_ons()[2].velocity) == (53, 64)
        wait_for(lambda: notes.poll() or sum(1 for m in notes.got if m.type == "note_off") >= 3,
                 what="the notes' note-offs")
        notes.close()
        assert http_json(server, "/health")["midi"]["notes_out"] == 3
        assert server.stop() == 0
    finally:
        keys.close()


def test_a_new_port_name_opens_a_virtual_input_to_connect_to(jack_midi, start_server):
    import mido

    server = start_server("--midi-in", "sensorsynth-in", "--midi-api", "jack", record=False, env=jack_midi)
    assert http_json(server, "/health")["midi"]["in_port"] == "sensorsynth-in:sensorsynth-in (virtual)"
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    (name,) = [n for n in backend.get_output_names() if n == "sensorsynth-in:sensorsynth-in"]
    with backend.open_output(name) as port:  # a client connecting to the server's port
        port.send(mido.Message("note_on", note=60, velocity=100))
        wait_for(lambda: http_json(server, "/health")["midi"]["commands"] == 1, what="the note to play")
    assert server.stop() == 0


def test_without_a_midi_system_serve_says_what_to_do(start_server, monkeypatch):
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(AssertionError, match="no MIDI system answers"):
        start_server("--midi-in", "x", "--midi-api", "jack", record=False,
                     env={"JACK_DEFAULT_SERVER": "sensorsynth-test-nobody", "JACK_NO_START_SERVER": "1"})
