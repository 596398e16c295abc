"""The sensorsynth command, mostly as a real process: exit codes, stderr, files on disk.

Fits use ``--set init=random`` and 1-3 steps: the analysis initialisation alone takes ~13 s on a shared CPU,
and these tests are about the command, not the fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sensorsynth.cli import main
from sensorsynth.instrument_file import load

pytestmark = pytest.mark.slow  # real fits and real processes


GUITAR = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "guitar.wav"
FAST = ["--set", "init=random", "--threads", "1"]


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m sensorsynth ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "sensorsynth", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "error: " in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One real 3-step fit of guitar.wav, shared by the tests that need an instrument."""
    out = tmp_path_factory.mktemp("fit") / "models" / "guitar.instrument"
    result = run("fit", GUITAR, "-o", out, "--steps", "3", *FAST, timeout=120)
    return out, result


# ---------------------------------------------------------------------------------------------- fit


def test_fit_writes_a_loadable_instrument(fitted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, result = fitted
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "3/3" in result.stderr  # the progress bar: step/total
    assert "loss=" in result.stderr
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith(f"saved {out} (") and "kB" in summary[0]
    assert "final loss" in summary[0]
    instrument = load(out)
    manifest = instrument.manifest
    assert manifest.name == "guitar"
    assert manifest.source is not None
    assert manifest.source.sha256 == hashlib.sha256(GUITAR.read_bytes()).hexdigest()
    assert manifest.source.name == "guitar.wav" and manifest.source.sample_rate == 22050
    assert manifest.training["steps"] == 3 and manifest.training["init"] == "random"
    assert manifest.training["threads"] == 1 and manifest.training["wall_time_s"] > 0
    assert manifest.final_loss is not None and np.isfinite(manifest.final_loss)
    assert [p.name for p in out.parent.iterdir()] == ["guitar.instrument"]  # no staging left
    assert out.stat().st_mode & 0o044  # readable by others, not safetensors' 0600
    # the attack noise the fit trained on travels with the instrument
    assert manifest.attack_noise is not None and manifest.attack_noise.seed == manifest.training["seed"]


def test_fit_quality_and_time_budget(tmp_path: Path) -> None:
    """``--quality fast`` with a shorter ``--time-budget``: the budget wins, the fit stops within it (plus one
    step), and the file records both; a bad quality is refused by argparse with the choices."""
    out = tmp_path / "quick.instrument"
    result = run("fit", GUITAR, "-o", out, "--quality", "fast", "--time-budget", "3", *FAST, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(fast quality): up to 900 steps within 3 s" in result.stderr
    training = load(out).manifest.training
    assert training["quality"] == "fast" and training["time_budget_s"] == 3.0 and training["steps"] == 900
    assert training["wall_time_s"] < 3.0 + 2.0  # the budget, and reading/exporting around it
    assert_user_error(run("fit", GUITAR, "-o", tmp_path / "x.instrument", "--quality", "perfect"), "fast", "best")
    assert_user_error(run("fit", GUITAR, "-o", tmp_path / "x.instrument", "--time-budget", "0"), "time-budget")


def test_fit_refuses_to_overwrite(fitted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = fitted
    before = out.read_bytes()
    result = run("fit", GUITAR, "-o", out, "--steps", "1", *FAST)
    assert_user_error(result, str(out), "already exists", "--force")
    assert out.read_bytes() == before


def test_fit_force_overwrites_and_quiet_prints_only_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.instrument"
    out.write_bytes(b"old")
    code = main(["fit", str(GUITAR), "-o", str(out), "--steps", "1", "--force", "--quiet", "--name", "axe", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert captured.out.startswith(f"saved {out}")
    assert load(out).name == "axe"


def test_fit_reports_clip_conversions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, rate = sf.read(GUITAR, dtype="float32")
    clip = tmp_path / "stereo.wav"
    sf.write(clip, np.stack([data[: rate * 2]] * 2, axis=1), rate, subtype="FLOAT")
    code = main(["fit", str(clip), "-o", str(tmp_path / "s.instrument"), "--steps", "1", *FAST])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "mixed 2 channels down to mono" in err and "padded" in err
    assert load(tmp_path / "s.instrument").manifest.source.channels == 2


def test_fit_interrupt_in_process_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sensorsynth.instrument.fit as fit_module

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "fit", interrupted)
    out = tmp_path / "models" / "i.instrument"
    assert main(["fit", str(GUITAR), "-o", str(out), "--steps", "5", *FAST]) == 130
    assert "error: interrupted" in capsys.readouterr().err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_fit_ctrl_c_in_a_real_process(tmp_path: Path) -> None:
    out = tmp_path / "c.instrument"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensorsynth", "fit", str(GUITAR), "-o", str(out), "--steps", "500", *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while "loss=" not in "".join(err) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "".join(err)
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    reader.join(5)
    stderr = "".join(err)
    assert code == 130, stderr
    assert "error: interrupted" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- info


def test_info_prints_shapes_and_provenance(fitted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = fitted
    result = run("info", out)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "freq_hz" in text and "[16, 2, 64]" in text and "[16, 256]" in text
    assert "22050 Hz" in text and "guitar.wav" in text
    assert hashlib.sha256(GUITAR.read_bytes()).hexdigest() in text
    assert "kB" in text and "final loss" in text and "steps" in text
    assert "attack noise  its own (splitmix64, seed 0)" in text


def test_info_json(fitted: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = fitted
    result = run("info", out, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["arrays"]["freq_hz"] == [16, 2, 64]
    assert info["source"]["sha256"] == hashlib.sha256(GUITAR.read_bytes()).hexdigest()
    assert info["training"]["steps"] == 3
    assert info["file_bytes"] == out.stat().st_size
    assert info["spec"]["sample_rate"] == 22050


# -------------------------------------------------------------------------------------------- render


def test_render_reconstruct_and_random(
    fitted: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    pytest.importorskip("sensorsynth.render.performance")
    out, _ = fitted
    recon = tmp_path / "wav" / "recon.wav"
    result = run("render", out, "--reconstruct", "-o", recon, "--seed", "1")
    assert result.returncode == 0, result.stderr
    info = sf.info(recon)
    assert (info.samplerate, info.channels, info.frames) == (22050, 1, 2**17)
    assert result.stdout.startswith(f"wrote {recon}")

    rand = tmp_path / "random.wav"
    result = run("render", out, "--random", "--seconds", "1.5", "-o", rand, "--seed", "2", "--block-size", "256")
    assert result.returncode == 0, result.stderr
    info = sf.info(rand)
    assert info.samplerate == 22050 and abs(info.frames - 1.5 * 22050) <= 1
    audio, _ = sf.read(rand)
    assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) <= 1.0


def test_render_at_another_rate(fitted: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    pytest.importorskip("sensorsynth.render.performance")
    out, _ = fitted
    wav = tmp_path / "r.wav"
    assert main(["render", str(out), "--random", "--seconds", "1", "--sample-rate", "16000", "-o", str(wav)]) == 0
    info = sf.info(wav)
    assert info.samplerate == 16000 and abs(info.frames - 16000) <= 1


def test_render_without_the_renderer(
    fitted: tuple[Path, subprocess.CompletedProcess[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = fitted
    monkeypatch.setitem(sys.modules, "sensorsynth.render.performance", None)  # makes the import fail
    assert main(["render", str(out), "--reconstruct", "-o", str(tmp_path / "x.wav")]) == 1
    assert "error: the renderer is not available" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


# ------------------------------------------------------------------------------------------ bad input


def _bad_input_cases(tmp_path: Path, instrument: Path) -> dict[str, tuple[list[str | Path], list[str]]]:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"\x00\x01garbage" * 100)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(22050, np.float32), 22050)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    out = tmp_path / "o.instrument"
    wav = tmp_path / "a.wav"
    return {
        "missing clip": (["fit", tmp_path / "missing.wav", "-o", out], ["missing.wav", "no such file"]),
        "garbage clip": (["fit", garbage, "-o", out], ["garbage.wav", "not a readable audio file"]),
        "silent clip": (["fit", silent, "-o", out], ["silent.wav", "silent"]),
        "clip is a directory": (["fit", tmp_path, "-o", out], ["is a directory"]),
        "zero steps": (["fit", GUITAR, "-o", out, "--steps", "0"], ["--steps", "at least 1"]),
        "unknown loss": (["fit", GUITAR, "-o", out, "--loss", "bogus"], ["loss", "'seed', 'multires' or 'mrstft'"]),
        "unknown setting": (["fit", GUITAR, "-o", out, "--set", "nonsense=1"], ["nonsense"]),
        "setting without value": (["fit", GUITAR, "-o", out, "--set", "novalue"], ["KEY=VALUE"]),
        "bad device": (["fit", GUITAR, "-o", out, "--device", "gpu"], ["--device gpu", "not a torch device"]),
        "output is a directory": (["fit", GUITAR, "-o", tmp_path], ["is a directory"]),
        "output under a file": (["fit", GUITAR, "-o", blocker / "x.instrument"], ["blocker"]),
        "info on garbage": (["info", garbage], ["garbage.wav", "not a readable instrument file"]),
        "info on missing": (["info", tmp_path / "nope.instrument"], ["no such file"]),
        "render garbage": (["render", garbage, "--reconstruct", "-o", wav], ["garbage.wav"]),
        "render without mode": (["render", instrument, "-o", wav], ["--reconstruct", "--random"]),
        "seconds with reconstruct": (
            ["render", instrument, "--reconstruct", "--seconds", "2", "-o", wav],
            ["--seconds"],
        ),
        "render to mp3": (["render", instrument, "--random", "-o", tmp_path / "a.mp3"], [".wav"]),
        "negative seconds": (["render", instrument, "--random", "--seconds", "-1", "-o", wav], ["--seconds"]),
        "silly sample rate": (["render", instrument, "--random", "--sample-rate", "5", "-o", wav], ["1000"]),
        "render under a file": (["render", instrument, "--random", "-o", blocker / "a.wav"], ["blocker", "cannot"]),
        "unknown command": (["bogus-command"], ["invalid choice"]),
        "no command": ([], ["no command"]),
    }


def test_bad_inputs_give_exit_2(
    tmp_path: Path, fitted: tuple[Path, subprocess.CompletedProcess[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every kind of mistake, in-process (fast): exit 2 and one ``error:`` line naming the problem."""
    for args, fragments in _bad_input_cases(tmp_path, fitted[0]).values():
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert_user_error(subprocess.CompletedProcess(args, code, "", err), *fragments)
    assert not (tmp_path / "o.instrument").exists() and not (tmp_path / "a.wav").exists()


@pytest.mark.parametrize(
    "case", ["missing clip", "garbage clip", "zero steps", "info on garbage", "render without mode", "no command"]
)
def test_bad_inputs_in_a_real_process_show_no_traceback(
    tmp_path: Path, fitted: tuple[Path, subprocess.CompletedProcess[str]], case: str
) -> None:
    args, fragments = _bad_input_cases(tmp_path, fitted[0])[case]
    assert_user_error(run(*args), *fragments)


def test_cuda_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["fit", str(GUITAR), "-o", str(tmp_path / "c.instrument"), "--device", "cuda"]) == 2
    assert "error: --device cuda: CUDA is not available" in capsys.readouterr().err


def test_unknown_option_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "x.instrument", "--nope"]) == 2
    err = capsys.readouterr().err
    assert "error: unrecognized arguments: --nope" in err


# ------------------------------------------------------------------------------------ help, version


@pytest.mark.parametrize(
    "command, words",
    [
        ([], ["fit", "render", "info", "Exit codes"]),
        (["fit"], ["CLIP", "--steps", "--loss", "--seed", "--device", "--threads", "--force", "--quiet", "--set"]),
        (["render"], ["--reconstruct", "--random", "--seconds", "--sample-rate", "--block-size", "--seed"]),
        (["info"], ["INSTRUMENT", "--json"]),
    ],
)
def test_help(command: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("sensorsynth ")


def test_render_scales_a_loud_performance_instead_of_clipping(tmp_path: Path) -> None:
    bundled = Path(__file__).resolve().parents[1] / "models" / "guitar.instrument"
    out = tmp_path / "loud.wav"
    proc = run("render", bundled, "--random", "--seconds", "10", "--seed", "0", "-o", out)
    assert proc.returncode == 0, proc.stderr
    audio, _ = sf.read(out)
    assert np.abs(audio).max() > 0.9
    assert (np.abs(audio) >= 0.999).sum() <= 2  # one peak at full scale, no run of clipped samples
