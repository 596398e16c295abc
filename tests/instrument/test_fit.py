"""Short real fits on a real clip."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sensorsynth.instrument.fit import FitSettings, _schedule_position, fit
from sensorsynth.instrument.init import analyse
from sensorsynth.instrument.spec import ModelSpec

pytestmark = pytest.mark.slow  # real fits


AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
SPEC = ModelSpec(n_samples=2**15, n_oscillators=32)


def clip(name: str, n: int) -> np.ndarray:
    x, rate = sf.read(AUDIO / f"{name}.wav", dtype="float32")
    assert rate == 22050
    x = x[:n]
    return x / np.abs(x).max()


@pytest.mark.parametrize(
    "init, parameterization, loss",
    [("analysis", "physical", "seed"), ("analysis", "physical", "multires"), ("analysis", "physical", "mrstft"),
     ("random", "seed", "seed")],
)
def test_short_fit_lowers_the_loss(init, parameterization, loss):
    audio = clip("guitar", SPEC.n_samples)
    seen = []
    settings = FitSettings(steps=30, frozen_steps=10, init=init, parameterization=parameterization, loss=loss, seed=1)
    result = fit(audio, SPEC, settings, seen.append)
    losses = [loss for _, loss, _ in result.history]
    steps = [p for p in seen if p.stage != "analysis"]
    assert len(steps) == 30 and steps[-1].step == 30
    assert [p.stage for p in seen].count("analysis") == (1 if init == "analysis" else 0)
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5])
    assert torch.isfinite(result.model(noise=torch.zeros(16, SPEC.attack_size))).all()


@pytest.mark.parametrize("noise", ["instrument", "fresh"])
def test_the_fit_returns_the_parameters_of_its_lowest_loss(noise):
    """With the instrument's own noise the loss depends on the parameters alone: the model returned is the one
    that scored the lowest loss seen (recomputed here from the returned model), not the last step's. With
    fresh noise each loss is one draw's: the last parameters are returned."""
    from sensorsynth.instrument.loss import sparsity, spectral_loss
    from sensorsynth.instrument.noise import attack_noise

    audio = clip("piano", SPEC.n_samples)
    # a learning rate far too high for this clip: the loss ends above its best
    settings = FitSettings(steps=40, frozen_steps=10, lr=0.5, schedule="constant", seed=3, noise=noise)
    result = fit(audio, SPEC, settings)
    losses = [loss for _, loss, _ in result.history]
    assert losses[-1] > min(losses)
    if noise == "fresh":
        assert result.final_loss == losses[-1]
        return
    assert result.final_loss == min(losses)
    model = result.model
    noise_t = torch.from_numpy(attack_noise(settings.seed, SPEC.control_plane_dim, SPEC.attack_size))
    with torch.no_grad():
        cs = model.control_signal
        again = spectral_loss(settings.loss, torch.from_numpy(audio), model(control_signal=cs, noise=noise_t))
        again = float(again + settings.sparsity * sparsity(cs))
    assert again == pytest.approx(min(losses), rel=1e-4)


def test_analysis_finds_the_clips_partials():
    audio = clip("marimba", SPEC.n_samples)
    a = analyse(audio, SPEC)
    freqs = a.omega * SPEC.sample_rate / (2 * np.pi)
    assert a.control.shape == (SPEC.control_plane_dim, SPEC.n_frames) and (a.control >= 0).all()
    assert a.control.any()
    # the strongest oscillator of the busiest resonance sits on a strong peak of the clip's spectrum
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    bins = np.fft.rfftfreq(audio.size, 1 / SPEC.sample_rate)
    r = int(np.argmax(a.control.sum(axis=1)))
    f0 = freqs[r, 0, int(np.argmax(np.abs(a.amplitude[r, 0])))]
    near = np.abs(bins - f0) < 10
    assert spectrum[near].max() > 0.1 * spectrum.max()


def test_fit_refuses_wrong_length_and_silence():
    with pytest.raises(ValueError, match="shape"):
        fit(np.zeros(10, np.float32), SPEC)
    with pytest.raises(ValueError, match="silent"):
        fit(np.zeros(SPEC.n_samples, np.float32), SPEC)


def test_settings_refuse_analysis_with_the_seed_parameterization():
    with pytest.raises(ValueError, match="physical"):
        FitSettings(init="analysis", parameterization="seed")


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(n_samples=2048, attack_size=512),  # fewer long-window frames than resonances
        ModelSpec(n_samples=2**15, n_resonances=64),
        ModelSpec(n_samples=2**15, control_hop=8192, deformation_frame=8192),  # control frames longer than the window
    ],
    ids=["tiny-clip", "many-resonances", "long-hop"],
)
def test_analysis_copes_with_small_or_unusual_specs(spec):
    a = analyse(clip("guitar", spec.n_samples), spec)
    assert a.omega.shape == (spec.n_resonances, spec.expressivity, spec.n_oscillators)
    assert np.all(np.isfinite(a.omega)) and np.all(a.alpha > 0)
    assert a.control.shape == (spec.control_plane_dim, spec.n_frames) and a.control.any()


def test_analysis_nmf_in_chunks_equals_one_scikit_learn_call():
    """The analysis runs scikit-learn's NMF ten iterations at a time (so a fit can be cancelled inside it);
    the chunks must give exactly what one call gives, whichever init it picks."""
    import warnings

    from sklearn.decomposition import NMF

    from sensorsynth.instrument.init import _spectrogram, _templates

    audio = clip("marimba", 2**14)
    for n_fft, hop, k in [(1024, 256, 16), (256, 128, 64), (2048, 1024, 20)]:
        magnitude = _spectrogram(audio, n_fft, hop)
        chunked = _templates(magnitude, k, seed=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            init = "nndsvda" if k <= min(magnitude.shape) else "random"
            whole = NMF(n_components=k, init=init, beta_loss="kullback-leibler", solver="mu", max_iter=150,
                        random_state=3).fit_transform(magnitude + 1e-9)
        np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-15)


def test_analysis_honours_its_check():
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        analyse(clip("guitar", SPEC.n_samples), SPEC, check=check)


# ------------------------------------------------------------------ time budget, quality, the instrument's noise


def _simulated(step_s: float):
    """A clock that only moves when a training step reports: each step costs ``step_s`` simulated seconds."""
    now = [0.0]

    def on_progress(p) -> None:
        if p.stage in ("frozen", "full"):
            now[0] += step_s

    return (lambda: now[0]), on_progress


def test_a_time_budget_cuts_the_schedule_and_keeps_a_quarter_at_most_frozen():
    """900 steps asked, 10 s of budget at 0.5 s a step (the default, budget_schedule="cut"): 20 steps, frozen
    until a quarter of the budget has passed (150 frozen steps would not fit), none past the budget, and the
    learning rate where the step schedule has it (a cut fit is far from converged: annealing it early loses)."""
    audio = clip("guitar", SPEC.n_samples)
    clock, on_progress = _simulated(0.5)
    seen = []
    settings = FitSettings(steps=900, frozen_steps=150, time_budget_s=10.0, seed=2)
    assert settings.budget_schedule == "cut"
    result = fit(audio, SPEC, settings, lambda p: (seen.append(p), on_progress(p)), clock=clock)
    steps = [p for p in seen if p.stage in ("frozen", "full")]
    assert len(result.history) == len(steps) == 20
    assert result.history[-1][2] <= 10.0
    assert [p.stage for p in steps] == ["frozen"] * 5 + ["full"] * 15  # frozen while under 2.5 s
    for step, elapsed in ((0, 0.0), (19, 9.5), (450, 9.9)):
        assert _schedule_position(settings, step, 150, elapsed)[0] == step / 900  # by steps, not by time
    assert _schedule_position(settings, 10, 150, 1.0) == (10 / 900, True)
    assert _schedule_position(settings.model_copy(update={"time_budget_s": None}), 160, 150, 99.0)[1] is False


def test_a_compressed_budget_runs_the_whole_schedule_in_it():
    """budget_schedule="compress": 900 steps asked, 10 s of budget at 0.5 s a step: about 20 steps, the first
    sixth of the time frozen (as 150 of 900 steps are), and none that would end past the budget."""
    audio = clip("guitar", SPEC.n_samples)
    clock, on_progress = _simulated(0.5)
    seen = []
    settings = FitSettings(steps=900, frozen_steps=150, time_budget_s=10.0, seed=2, budget_schedule="compress")
    assert _schedule_position(settings, 10, 150, 5.0)[0] == 0.5  # by time: half the budget, half the schedule
    result = fit(audio, SPEC, settings, lambda p: (seen.append(p), on_progress(p)), clock=clock)
    steps = [p for p in seen if p.stage in ("frozen", "full")]
    assert len(result.history) == len(steps) == 20
    assert result.history[-1][2] <= 10.0
    assert [p.stage for p in steps] == ["frozen"] * 4 + ["full"] * 16  # frozen until 10 s / 6 had passed
    assert steps[-1].eta_s is not None and steps[-1].eta_s <= 0.5  # no more than the budget left


def test_without_a_budget_the_schedule_counts_steps():
    audio = clip("guitar", SPEC.n_samples)
    clock, on_progress = _simulated(100.0)  # slow steps change nothing without a budget
    seen = []
    fit(audio, SPEC, FitSettings(steps=12, frozen_steps=5, seed=2), lambda p: (seen.append(p), on_progress(p)),
        clock=clock)
    assert [p.stage for p in seen if p.stage != "analysis"] == ["frozen"] * 5 + ["full"] * 7


def test_quality_presets_fill_only_what_is_not_given():
    fast = FitSettings(quality="fast")
    assert fast.time_budget_s == 52.0 and fast.steps == 900
    assert FitSettings(quality="fast", time_budget_s=20).time_budget_s == 20
    assert FitSettings(quality="best").steps == 3 * FitSettings().steps
    assert FitSettings().quality == "default" and FitSettings().time_budget_s is None
    with pytest.raises(ValueError):
        FitSettings(quality="perfect")


@pytest.mark.parametrize("noise", ["instrument", "fresh"])
def test_the_fit_trains_on_the_noise_it_will_be_played_with(noise):
    """With the instrument's own noise, every step sees the same draw, and the model fitted with it is what
    the instrument plays back; fresh noise (the seed's way) names no seed."""
    from sensorsynth.instrument.export import to_instrument
    from sensorsynth.instrument.noise import attack_noise
    from sensorsynth.render.performance import render_reconstruction

    audio = clip("guitar", SPEC.n_samples)
    result = fit(audio, SPEC, FitSettings(steps=6, frozen_steps=3, seed=9, noise=noise))
    if noise == "fresh":
        assert result.noise_seed is None
        return
    assert result.noise_seed == 9
    inst = to_instrument(result.model, "t", noise_seed=result.noise_seed)
    assert inst.manifest.attack_noise.seed == 9
    with torch.no_grad():
        ref = result.model(noise=torch.from_numpy(attack_noise(9, SPEC.control_plane_dim, SPEC.attack_size)))
    out = render_reconstruction(inst, limit=None)
    ref = ref.numpy()
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-3
