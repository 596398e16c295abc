"""The service in-process (server/app.py's Service): start binds and says where, stop() ends the run with an
exit record, and a stalled audio path ends it with the watchdog's code. Real ports on 127.0.0.1, null output."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket

import pytest
import soundfile as sf

from sensorsynth.server.app import EXIT_OK, EXIT_STALLED, ServeError, Service, ServiceExit
from sensorsynth.server.config import ServeConfig
from sensorsynth.server.faults import Faults

from .conftest import BUNDLED


def config(tmp_path, **extra) -> ServeConfig:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    shutil.copy(BUNDLED, models / BUNDLED.name)
    return ServeConfig(**{"models": models, "host": "127.0.0.1", "osc_port": 0, "ws_port": 0, "output": "null",
                          "realtime_priority": 0, "record": tmp_path / "rec.wav", "ready_file": tmp_path / "ready.json",
                          **extra})  # fmt: skip


def test_start_then_stop_returns_an_exit_record(tmp_path):
    said: list[str] = []

    async def main() -> tuple[ServiceExit, dict]:
        service = Service(config(tmp_path), say=said.append, faults=Faults())
        await service.start()
        ready = json.loads((tmp_path / "ready.json").read_text())
        with socket.create_connection(("127.0.0.1", ready["ws_port"]), timeout=5):
            pass  # the web port listens
        asyncio.get_running_loop().call_later(0.5, service.stop)
        return await service.run(), ready

    ended, ready = asyncio.run(main())
    assert ended == ServiceExit(reason="stopped", code=EXIT_OK, underruns=ended.underruns,
                                recorded_s=ended.recorded_s, abandoned_device=False)  # fmt: skip
    assert ended.recorded_s is not None and ended.recorded_s > 0.3
    assert ready["osc_port"] > 0 and ready["sample_rate"] == sf.info(str(tmp_path / "rec.wav")).samplerate
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the ready file left no temp file
    assert said[0].startswith("sensorsynth serve: playing") and said[-1].startswith("sensorsynth serve: stopped (stopped)")


def test_a_stalled_audio_path_ends_the_run_with_the_watchdogs_code(tmp_path):
    said: list[str] = []

    async def main() -> ServiceExit:
        service = Service(config(tmp_path, stall_exit_s=0.5), say=said.append,
                          faults=Faults(stall_audio_after_s=0.3))  # fmt: skip
        await service.start()
        return await asyncio.wait_for(service.run(), 20)

    ended = asyncio.run(main())
    assert ended.code == EXIT_STALLED and ended.reason == "watchdog"
    assert "stopped (watchdog)" in said[-1]


def test_start_up_problems_are_serve_errors_and_leave_nothing_bound(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ServeError, match="no usable instruments"):
        asyncio.run(Service(ServeConfig(models=empty, output="null")).start())
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    service = Service(config(tmp_path, ws_port=taken.getsockname()[1]), say=lambda _: None)
    try:
        with pytest.raises(ServeError, match="cannot listen"):
            asyncio.run(service.start())
    finally:
        taken.close()
    assert service.engine is not None and not service.engine.running  # the audio stopped again
    assert not (tmp_path / "ready.json").exists()
