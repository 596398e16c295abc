"""The sound-card path for real: PortAudio's JACK host API on JACK's dummy driver (a paced card with no
hardware). CI starts ``jackd -d dummy -r 22050 -p 64`` and sets SENSORSYNTH_REQUIRE_JACK=1, so there these
tests run or fail; elsewhere they skip with the reason."""

from __future__ import annotations

import time

from pythonosc.udp_client import SimpleUDPClient

from .helpers import K, http_json, recorded, recorded_seconds, rms, wait_for


def test_plays_through_the_jack_dummy_card(jack, start_server):
    server = start_server("--output", "sound", "--hostapi", "JACK")
    assert "sound card" in server.output() and "JACK" in server.output(), server.output()
    wait_for(lambda: recorded_seconds(server) > 1.0, what="a second of recording")
    health = http_json(server, "/health")
    assert health["callbacks"] > 100, "the card's callback pulls blocks"
    mark = recorded_seconds(server)
    SimpleUDPClient("127.0.0.1", server.osc_port).send_message("/sensorsynth/control", [1.0] * K)
    time.sleep(1.0)
    health = http_json(server, "/health")
    assert server.stop() == 0
    data, rate = recorded(server)
    assert rms(data[: int((mark - 0.3) * rate)]) < 1e-4
    assert rms(data[int((mark - 0.2) * rate) :]) > 0.01
    # pacing: the card consumed about what the wall clock says (within scheduling slack)
    assert health["callbacks"] * health["block_size"] / health["sample_rate"] > health["uptime_s"] * 0.5
