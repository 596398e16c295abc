"""The fitting pipeline a service drives: clip (path or bytes) -> Instrument, plain progress, a cancel token
every stage honours within a second, purity (no global RNG, threads put back), spec bounds."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sensorsynth.audio import AudioInputError
from sensorsynth.cli import main
from sensorsynth.instrument.pipeline import (
    CancelToken,
    Cancelled,
    FitSettings,
    Progress,
    fit_clip,
    make_settings,
    make_spec,
)
from sensorsynth.instrument.spec import ModelSpec
from sensorsynth.instrument_file import load

pytestmark = pytest.mark.slow  # real fits, cancelled and finished


GUITAR = Path(__file__).resolve().parents[2].parent / "shared" / "audio" / "guitar.wav"
TINY = make_spec(dict(n_samples=2**13, control_plane_dim=4, n_resonances=4, n_oscillators=8, attack_size=512,
                      attack_frames=32))
QUICK = FitSettings(steps=12, frozen_steps=4, threads=1, seed=3)


def wav_bytes(seconds: float = 0.5, rate: int = 22050, silent: bool = False) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = np.zeros_like(t) if silent else 0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t)
    buffer = io.BytesIO()
    sf.write(buffer, x.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_bytes_in_instrument_out_with_plain_progress_records() -> None:
    seen: list[Progress] = []
    notes: list[str] = []
    instrument = fit_clip(wav_bytes(), QUICK, TINY, name="tone", clip_name="take.wav", on_progress=seen.append,
                          on_note=notes.append)
    assert instrument.name == "tone" and instrument.spec == TINY
    assert instrument.manifest.source.name == "take.wav"
    assert instrument.manifest.training["steps"] == 12 and instrument.manifest.training["wall_time_s"] > 0
    assert any("cut to the first" in n for n in notes)
    stages = [p.stage for p in seen]
    assert stages[:2] == ["reading", "analysis"] and stages[-1] == "export"
    assert stages.count("frozen") == 4 and stages.count("full") == 8
    steps = [p for p in seen if p.stage in ("frozen", "full")]
    assert [p.step for p in steps] == list(range(1, 13))
    assert all(p.steps == 12 and p.loss is not None and p.eta_s is not None for p in steps[1:])
    assert steps[-1].eta_s == 0
    for p in seen:  # plain JSON both ways: what goes onto the trainer's wire
        assert Progress.model_validate_json(p.model_dump_json()) == p
        assert set(json.loads(p.model_dump_json())) == {"stage", "step", "steps", "loss", "elapsed_s", "eta_s"}


def test_a_fit_is_a_pure_function_of_its_inputs(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes())
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    numpy_before = np.random.get_state()[1].copy()
    a = fit_clip(path, QUICK, TINY)
    torch.manual_seed(1234)  # whatever the global RNG holds does not matter
    b = fit_clip(path.read_bytes(), QUICK, TINY, clip_name="tone.wav")
    c = fit_clip(path, QUICK.model_copy(update={"seed": 4}), TINY)
    for name, array in a.arrays().items():
        assert np.array_equal(array, b.arrays()[name]), name
    assert a.manifest.final_loss == b.manifest.final_loss
    assert not np.array_equal(a.router, c.router)
    assert torch.get_num_threads() == threads_before
    torch.manual_seed(1234)
    torch.set_rng_state(rng_before)
    fit_clip(path, QUICK, TINY)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the fit drew nothing from the global RNG
    assert np.array_equal(np.random.get_state()[1], numpy_before)


def _cancel_when(stage: str, spec: ModelSpec, settings: FitSettings) -> tuple[float, list[Progress]]:
    """Cancel as soon as ``stage`` is reported; seconds from cancel() to Cancelled reaching the caller."""
    token = CancelToken()
    seen: list[Progress] = []
    cancelled_at: list[float] = []

    def on_progress(p: Progress) -> None:
        seen.append(p)
        if p.stage == stage and not cancelled_at:
            # from another thread, as a worker's network loop does
            threading.Timer(0.3, lambda: (cancelled_at.append(time.perf_counter()), token.cancel())).start()

    with pytest.raises(Cancelled):
        fit_clip(GUITAR, settings, spec, cancel=token, on_progress=on_progress)
    return time.perf_counter() - cancelled_at[0], seen


def test_cancel_stops_the_analysis_within_a_second() -> None:
    # the seed's size: the analysis (NMF of a 6 s clip) alone takes seconds
    latency, seen = _cancel_when("analysis", ModelSpec(), FitSettings(steps=5, threads=1))
    assert seen[-1].stage == "analysis"
    assert latency < 1.0, latency


def test_cancel_stops_the_steps_within_a_second() -> None:
    latency, seen = _cancel_when("full", make_spec({"n_samples": 2**15}), FitSettings(steps=500, frozen_steps=2,
                                                                                        init="random", threads=1))
    assert seen[-1].stage == "full" and seen[-1].step < 500
    assert latency < 1.0, latency


def test_a_token_can_poll_another_process() -> None:
    asked: list[int] = []
    token = CancelToken(poll=lambda: asked.append(1) or len(asked) >= 2, poll_interval_s=0.0)
    assert not token.cancelled
    with pytest.raises(Cancelled):
        token.check()


def test_bad_audio_names_the_clip_not_a_temp_file() -> None:
    with pytest.raises(AudioInputError, match=r"^take\.wav: is silent"):
        fit_clip(wav_bytes(silent=True), QUICK, TINY, clip_name="take.wav")
    with pytest.raises(AudioInputError, match=r"^junk\.wav: not a readable audio file"):
        fit_clip(b"RIFF nonsense" * 10, QUICK, TINY, clip_name="junk.wav")


def test_specs_and_settings_are_bounded_and_named() -> None:
    assert make_spec({"n_resonances": 8, "n_oscillators": 32}).n_modes == 8 * 2 * 32
    with pytest.raises(ValueError, match="too large to fit: n_resonances·expressivity·n_oscillators"):
        make_spec({"n_resonances": 512, "n_oscillators": 1024})
    with pytest.raises(ValueError, match="too large to fit: n_samples"):
        make_spec({"n_samples": 2**22})
    with pytest.raises(ValueError, match=r"bad spec: n_resonances: .*spec fields: sample_rate"):
        make_spec({"n_resonances": 0})
    with pytest.raises(ValueError, match=r"bad spec: bogus: Extra inputs"):
        make_spec({"bogus": 1})
    with pytest.raises(ValueError, match=r"bad settings: steps: .*settings fields: quality, steps"):
        make_settings({"steps": -1})
    with pytest.raises(ValueError, match="lr"):
        make_settings({"lr": float("nan")})


def test_cli_fit_takes_a_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small.instrument"
    args = ["fit", str(GUITAR), "-o", str(out), "--steps", "2", "--threads", "1", "--set", "init=random", "-q",
            "--spec", "n_resonances=3", "--spec", "n_oscillators=5", "--spec", "n_samples=8192"]
    assert main(args) == 0, capsys.readouterr().err
    spec = load(out).spec
    assert (spec.n_resonances, spec.n_oscillators, spec.n_samples) == (3, 5, 8192)
    assert main(["fit", str(GUITAR), "-o", str(tmp_path / "x.instrument"), "--spec", "n_oscillators=99999"]) == 2
    assert "error: bad spec: n_oscillators" in capsys.readouterr().err
    assert main(["fit", str(GUITAR), "-o", str(tmp_path / "x.instrument"), "--spec", "n_resonances=1000",
                 "--spec", "n_oscillators=1000"]) == 2
    assert "too large to fit" in capsys.readouterr().err
