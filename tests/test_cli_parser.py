"""The ``sensorsynth`` parser in-process (fast lane): every command is listed, ``serve``'s options follow the
config model, and the first-start note follows numba's kernel cache. The commands themselves run as real
processes in test_cli.py, tests/server and tests/trainer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sensorsynth.cli import main


def test_no_command_names_all_ten_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    for command in ("fit", "render", "info", "serve", "doctor", "scenes", "trainer", "worker", "submit", "jobs", "cancel"):
        assert f"\n  {command} " in err, err
    assert "error: no command given" in err


def test_serve_options_come_from_the_config_model(capsys: pytest.CaptureFixture[str]) -> None:
    """Every ServeConfig field is an option of serve (under its long-standing name), with its description."""
    from sensorsynth.server.config import ServeConfig

    assert main(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    renamed = {"osc_allowed_senders": "--osc-allow", "allowed_origins": "--allow-origin", "presets": "--preset"}
    for name, field in ServeConfig.model_fields.items():
        if name == "models":
            continue
        assert renamed.get(name, "--" + name.replace("_", "-")) in out, name
        if field.description and name != "record_fit":  # KEY=VALUE pairs, with help of their own
            assert " ".join(field.description.split())[:40] in out, name


def test_the_first_start_note_follows_the_kernel_cache(tmp_path: Path) -> None:
    """Cold: no index file for a compiled module, or one older than its source. Warm: both, newer."""
    from sensorsynth.cli.kernel_cache import kernel_cache_is_warm

    render = tmp_path / "render"
    (render / "__pycache__").mkdir(parents=True)
    for module in ("kernel", "callback"):
        (render / f"{module}.py").write_text("# source\n")
    assert not kernel_cache_is_warm(render, [])
    (render / "__pycache__" / "kernel.render_block-10.py311.nbi").write_bytes(b"")
    assert not kernel_cache_is_warm(render, [])  # callback not compiled yet
    elsewhere = tmp_path / "numba-cache" / "some_hash"
    elsewhere.mkdir(parents=True)
    (elsewhere / "callback._loop-470.py311.nbi").write_bytes(b"")
    assert kernel_cache_is_warm(render, [tmp_path / "numba-cache"])  # NUMBA_CACHE_DIR's layout
    os.utime(render / "callback.py", (time.time() + 60, time.time() + 60))  # the source changed since
    assert not kernel_cache_is_warm(render, [tmp_path / "numba-cache"])
