"""The load budget: a small instrument file that would cost gigabytes to play is refused from its header,
in every reader (file, bytes, library, CLI, a running server, the fit's spec check), with one line naming
the figure; the bundled guitar and ordinary instruments load as before."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sensorsynth.instrument.budget import (
    BudgetError,
    LoadBudget,
    MiB,
    check_playable,
    default_budget,
    playing_cost,
    set_default_budget,
)
from sensorsynth.instrument.pipeline import make_spec
from sensorsynth.instrument.spec import ModelSpec
from sensorsynth.instrument_file import (
    Instrument,
    InstrumentFileError,
    Manifest,
    expected_shapes,
    load,
    loads,
    save,
)

REPO = Path(__file__).resolve().parents[1]
GUITAR = REPO / "models" / "guitar.instrument"

# Three files of a few kB each, valid in every other respect, that today's reader accepts and whose playing
# would allocate hundreds of MiB to GiB (the cases): a long attack, a 1 kHz file rate, K = 1024.
TINY = dict(n_resonances=1, expressivity=1, n_oscillators=1, attack_frames=2)
BOMBS = {
    "long-attack": ModelSpec(control_plane_dim=16, attack_size=2**18, n_samples=2**18, control_hop=2**16,
                             deformation_frame=2**16, **TINY),
    "1khz-rate": ModelSpec(sample_rate=1000, control_plane_dim=16, n_samples=2**17, control_hop=2**16,
                           deformation_frame=2**16, **TINY),
    "k1024": ModelSpec(control_plane_dim=1024, n_samples=2**17, control_hop=2**16, deformation_frame=2**16,
                       **TINY),
}


def _instrument(spec: ModelSpec, name: str = "bomb") -> Instrument:
    """A consistent instrument of ``spec`` with small arrays and two active control frames."""
    arrays = {n: np.full(s, 0.1, np.float32) for n, s in expected_shapes(spec).items()}
    k = spec.control_plane_dim
    index = np.array([0, k + 1], np.int32)  # frame 0 dim 0, frame 1 dim 1
    return Instrument(manifest=Manifest(name=name, spec=spec), control_index=index,
                      control_value=np.array([1.0, 0.5], np.float32), **arrays)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {name: save(_instrument(spec, name), folder / f"{name}.instrument") for name, spec in BOMBS.items()}


def test_the_bombs_are_small_files_that_would_cost_hundreds_of_mib_to_play(bombs: dict[str, Path]) -> None:
    for name, path in bombs.items():
        assert path.stat().st_size < 32 * 1024, (name, path.stat().st_size)  # K = 1024: 22 kB, the others 2-3 kB
        cost = playing_cost(BOMBS[name], LoadBudget(rate=48000))
        assert cost.bytes > 256 * MiB, (name, cost.bytes)


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_file_over_the_budget_is_refused_with_one_line_naming_the_figure(bombs: dict[str, Path], name: str) -> None:
    path = bombs[name]
    with pytest.raises(InstrumentFileError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: playing it at 48000 Hz needs "), message
    assert "over the 64 MiB budget (excitation ring: 16 voice slots × K" in message and "\n" not in message
    with pytest.raises(InstrumentFileError, match=f"^job 1234: playing it at 48000 Hz needs"):
        loads(path.read_bytes(), "job 1234")  # the broker's and the fit edge's reader: the same check


def test_the_figures_name_what_grows(bombs: dict[str, Path]) -> None:
    with pytest.raises(InstrumentFileError) as info:
        load(bombs["long-attack"])
    assert "needs 2.1 GiB" in str(info.value) and "1048576 samples" in str(info.value)
    assert "attack_size 262144 at 22050 Hz is 570654 samples at 48000 Hz" in str(info.value)
    with pytest.raises(InstrumentFileError, match=r"attack_size 2048 at 1000 Hz is 98304 samples at 48000 Hz"):
        load(bombs["1khz-rate"])
    with pytest.raises(InstrumentFileError, match=r"× K 1024 ×"):
        load(bombs["k1024"])


def test_refused_in_milliseconds_and_without_allocating(bombs: dict[str, Path], tmp_path: Path) -> None:
    """In a fresh process: peak RSS grows by less than 16 MiB while the three bombs are refused (each would
    allocate ≥ 283 MiB), and the refusals take well under a second."""
    code = (
        "import resource, sys, time\n"
        "from sensorsynth.instrument_file import load, InstrumentFileError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        load(p)\n"
        "    except InstrumentFileError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(f'{p} loaded')\n"
        "dt = time.perf_counter() - t\n"
        "grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(grew, dt)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *map(str, bombs.values())], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    grew_kib, seconds = r.stdout.split()
    assert int(grew_kib) < 16 * 1024, f"peak RSS grew by {grew_kib} kiB"
    assert float(seconds) < 0.5, seconds


def test_the_bundled_guitar_and_ordinary_sizes_are_within_the_default_budget() -> None:
    inst = load(GUITAR)
    cost = check_playable(inst.spec)
    assert cost.bytes < 32 * MiB, cost  # 19 MiB at 48 kHz with 8 voices, warm-up copy included
    # the largest spec the render tests use, and the seed's size at 96 kHz
    check_playable(ModelSpec(n_samples=2**14, control_plane_dim=24, n_resonances=20, expressivity=3,
                             n_oscillators=40, attack_size=4096))
    check_playable(ModelSpec(), LoadBudget(rate=96000))


def test_the_model_follows_what_the_renderer_allocates() -> None:
    """The figure, less the warm-up copy, is within 15 % of what a Renderer holds after construction (numpy
    allocations traced)."""
    import tracemalloc

    from sensorsynth.instrument.budget import WARMUP_COPY
    from sensorsynth.render.renderer import Renderer

    spec = ModelSpec(control_plane_dim=32, attack_size=4096, n_resonances=4, n_oscillators=16)
    inst = _instrument(spec)
    Renderer(_instrument(ModelSpec(**TINY)), sample_rate=48000)  # first use: imports and compiled helpers
    tracemalloc.start()
    try:
        renderer = Renderer(inst, sample_rate=48000, block_size=64, max_voices=8)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cost = playing_cost(spec, LoadBudget(rate=48000))
    model = cost.bytes - cost.parts[WARMUP_COPY]
    assert abs(held - model) < 0.15 * model, (held, model)
    del renderer


def test_the_budget_is_configurable(bombs: dict[str, Path], tmp_path: Path) -> None:
    big = LoadBudget(max_bytes=4096 * MiB)
    assert load(bombs["k1024"], big).spec.control_plane_dim == 1024
    with pytest.raises(InstrumentFileError, match="over the 8 MiB budget"):
        load(GUITAR, LoadBudget(max_bytes=8 * MiB))
    with pytest.raises(InstrumentFileError, match="needs 2 MiB, over the 1 MiB budget"):
        load(GUITAR, LoadBudget(max_bytes=1 * MiB, voices=1, rate=8000))
    # process-wide, and from the environment (a deployment's knob)
    lenient = LoadBudget(max_bytes=4096 * MiB, min_file_rate=1000)
    set_default_budget(lenient)
    try:
        assert default_budget() is lenient and load(bombs["1khz-rate"]).spec.sample_rate == 1000
    finally:
        set_default_budget(None)
    code = "import sys\nfrom sensorsynth.instrument_file import load\nprint(load(sys.argv[1]).spec.control_plane_dim)"
    env = {**os.environ, "SENSORSYNTH_INSTRUMENT_BUDGET_MIB": "4096"}
    r = subprocess.run([sys.executable, "-c", code, str(bombs["k1024"])], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "1024", r.stderr


def test_fit_limits_and_file_rate_are_part_of_the_budget(tmp_path: Path) -> None:
    # within the bytes but over FitLimits (n_samples): a file the trainer would never have accepted
    over_limits = ModelSpec(control_plane_dim=64, n_samples=2**22, control_hop=64, deformation_frame=2**16, **TINY)
    with pytest.raises(BudgetError, match=r"over the fit limits: n_samples is 4194304, at most 1048576"):
        check_playable(over_limits, LoadBudget(max_bytes=4096 * MiB))
    with pytest.raises(BudgetError, match=r"file rate 1000 Hz is outside 8000..192000 Hz"):
        check_playable(BOMBS["1khz-rate"], LoadBudget(max_bytes=4096 * MiB))
    with pytest.raises(ValueError, match=r"file rate 4000 Hz is outside 8000..192000 Hz"):
        make_spec({"sample_rate": 4000, "control_plane_dim": 2, "attack_size": 256})  # small, but no fit writes it


def test_a_fit_that_nobody_could_play_is_refused_before_it_runs() -> None:
    with pytest.raises(ValueError, match=r"playing it at 48000 Hz needs .* over the 64 MiB budget"):
        make_spec({"attack_size": 2**15})
    assert make_spec({"attack_size": 4096}).attack_size == 4096


def test_size_and_header_bounds_come_before_reading(tmp_path: Path) -> None:
    with pytest.raises(InstrumentFileError, match=r"bytes is larger than the 1024 bytes an instrument file may have"):
        load(GUITAR, LoadBudget(max_file_bytes=1024))
    huge = tmp_path / "huge-header.instrument"
    huge.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(InstrumentFileError, match=r"header of 1099511627776 bytes does not fit in 10 bytes"):
        load(huge)
    header = json.dumps({"__metadata__": {"pad": "x" * 2 * MiB}}).encode()
    fat = tmp_path / "fat-header.instrument"
    fat.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(InstrumentFileError, match=r"larger than the 1048576 bytes a manifest may have"):
        load(fat)


def test_a_version1_bomb_is_refused_before_its_upgrade(bombs: dict[str, Path], tmp_path: Path) -> None:
    """A version-1 file's upgrade fits a basis on its control signal: the budget comes first."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(bombs["k1024"]), framework="numpy") as handle:
        manifest = json.loads(handle.metadata()["sensorsynth"])
        arrays = {name: handle.get_tensor(name) for name in handle.keys() if name != "mapping_atoms"}
    for key in ("mapping", "attack_noise", "arrays_sha256"):
        manifest.pop(key, None)
    manifest["format_version"] = 1
    path = tmp_path / "v1.instrument"
    save_file(arrays, str(path), metadata={"sensorsynth": json.dumps(manifest)})
    with pytest.raises(InstrumentFileError, match="playing it at 48000 Hz needs 1.1 GiB"):
        load(path)


def test_the_library_skips_a_bomb_and_keeps_the_rest(bombs: dict[str, Path], tmp_path: Path) -> None:
    from sensorsynth.server.library import Library

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(bombs["long-attack"], folder / "aaa-bomb.instrument")
    shutil.copy(GUITAR, folder / "guitar.instrument")
    change = Library(folder).scan(settle=False)
    assert [e.name for e in change.added] == ["guitar"]
    assert len(change.refused) == 1 and "aaa-bomb.instrument: playing it at 48000 Hz needs" in change.refused[0][1]


def test_the_cli_refuses_a_bomb_in_one_line(bombs: dict[str, Path], tmp_path: Path) -> None:
    render = ["render", str(bombs["long-attack"]), "--reconstruct", "-o", str(tmp_path / "x.wav")]
    for args, rate in ((["info", str(bombs["k1024"])], 48000), (render, 22050)):  # render: at the file's rate
        r = subprocess.run([sys.executable, "-m", "sensorsynth", *args], capture_output=True, text=True, cwd=REPO,
                           timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"playing it at {rate} Hz needs" in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.wav").exists()
    r = subprocess.run([sys.executable, "-m", "sensorsynth", "info", str(GUITAR)], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_a_server_with_a_bomb_in_its_folder_starts_logs_it_and_plays_the_rest(bombs: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    """A real ``sensorsynth serve`` process: the bomb sorts first (it would be the default instrument); the
    server refuses it in its log, starts, and plays the guitar."""
    from tests.server.conftest import launch

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(bombs["long-attack"], folder / "aaa-bomb.instrument")
    shutil.copy(GUITAR, folder / "guitar.instrument")
    server = launch(tmp_path, record=True, models=folder)
    try:
        log = server.log_path.read_text()
        assert "aaa-bomb.instrument: playing it at 48000 Hz needs 2.1 GiB" in log, log
        from pythonosc.udp_client import SimpleUDPClient

        osc = SimpleUDPClient("127.0.0.1", server.osc_port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            osc.send_message("/sensorsynth/control", [1.0] + [0.0] * 15)
            time.sleep(0.2)
        assert server.proc.poll() is None, log
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert server.proc.returncode == 0, server.log_path.read_text()
    import soundfile

    audio, _ = soundfile.read(str(server.record_path), dtype="float32")
    assert np.abs(audio).max() > 1e-3, "the guitar played nothing"
