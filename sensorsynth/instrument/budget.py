"""What playing an instrument file will cost, computed from its manifest before any array is read.

Why: an instrument file is small, but what *playing* it allocates is set by sizes in its manifest. A 3 kB
file with K = 16 and attack_size = 2^18 asks the renderer for a 2^20-sample excitation ring per voice slot
and control dimension (2 GiB at 48 kHz, warm-up copy included); a file at a 1 kHz file rate stretches every
attack 48-fold when played at 48 kHz. A server loads every file in its folder at start under
``Restart=always``, so one such file would crash-loop an installation. :func:`check_playable` refuses it
first, with one line naming the figure, and every reader of instrument files (the server's library, the CLI,
the trainer's broker and client, the server's fit edge) calls it through ``instrument_file.load``/``loads``;
``settings.check_spec`` calls it too, so a fit that nobody could play is refused before it runs. The fit
limits live here, at the bottom, so that the settings (above) and the file format both use them.

Pure: a :class:`~sensorsynth.instrument.spec.ModelSpec` and a :class:`LoadBudget` in, a :class:`PlayingCost`
out (or :class:`BudgetError`). numpy-free and torch-free. The figures follow the renderer's own allocation
(``render/renderer.py`` ``_build_bank`` and ``_allocate_sized``, ``instrument/playback.py`` ``playback``): if
the renderer starts allocating something new that grows with a file's sizes, add its term here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from .spec import ModelSpec

MiB = 1 << 20
REFERENCE_RATE = 48000  # the rate a budget assumes when it names none (the usual sound-card rate)
NOISE_TABLE = 1 << 16  # render.kernel.NOISE_TABLE (not imported: that module compiles numba code)
WARMUP_COPY = "warm-up copy of the voice state"
ENV_BUDGET_MIB = "SENSORSYNTH_INSTRUMENT_BUDGET_MIB"  # a deployment's own per-instrument budget, in MiB


class FitLimits(BaseModel):
    """What a fit may ask for, beyond ModelSpec's own sanity bounds (which let a *file* describe large
    models). These keep one fit within a few GB of memory: the seed's size uses an eighth of each budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_n_samples: int = 2**20  # 47 s at 22050 Hz
    max_modes: int = 2**15  # oscillators in all: R·E·M (the seed has 2048)
    max_resonance_samples: int = 2**25  # R·E·n_samples: every resonance's impulse response (the seed: 2**22)
    max_control_elements: int = 2**21  # K·frames of the control plane (the seed: 2**14)
    max_attack_samples: int = 2**21  # K·attack_size (the seed: 2**15)


FIT_LIMITS = FitLimits()


def check_sizes(spec: ModelSpec, limits: FitLimits = FIT_LIMITS) -> ModelSpec:
    """``spec`` if a fit of that size fits the limits; else ValueError naming the size and the limit."""
    sizes = {
        "n_samples": (spec.n_samples, limits.max_n_samples),
        "n_resonances·expressivity·n_oscillators": (spec.n_modes, limits.max_modes),
        "n_resonances·expressivity·n_samples": (
            spec.n_resonances * spec.expressivity * spec.n_samples,
            limits.max_resonance_samples,
        ),
        "control_plane_dim·frames": (spec.control_plane_dim * spec.n_frames, limits.max_control_elements),
        "control_plane_dim·attack_size": (spec.control_plane_dim * spec.attack_size, limits.max_attack_samples),
    }
    for what, (value, limit) in sizes.items():
        if value > limit:
            raise ValueError(f"the model is too large to fit: {what} is {value}, at most {limit}")
    return spec


class BudgetError(ValueError):
    """A file (or a spec) whose playing would cost more than the budget allows; the message names the figure."""


class LoadBudget(BaseModel):
    """How much one instrument may cost to play, and at what rate and polyphony that is measured.

    The figure is per instrument at ``voices`` voices (the server's default); a server configured with more
    voices scales with them (bounded by its unit's ``MemoryMax``), which is a setting of the box, not of a file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_bytes: int = Field(64 * MiB, ge=1 * MiB, description="bytes playing one instrument may allocate")
    rate: int | None = Field(None, ge=1000, le=384000, description="output rate in Hz; None: the higher of "
                             f"{REFERENCE_RATE} and the file's own rate")
    at_file_rate: bool = Field(False, description="with rate None: the file's own rate (an offline render)")
    voices: int = Field(8, ge=1, le=256, description="voices the figure assumes (each has a cross-fade tail)")
    block_size: int = Field(64, ge=1)
    queue_size: int = Field(4096, ge=1)  # Renderer's default event queue
    inbox_size: int = Field(4096, ge=1)  # Renderer's default inbox
    min_file_rate: int = Field(8000, ge=1000, description="lowest file rate: the fit never writes less")
    max_file_rate: int = Field(192000, le=384000)
    max_file_bytes: int = Field(64 * MiB, ge=1024, description="the largest instrument file read at all")
    max_header_bytes: int = Field(1 * MiB, ge=1024, description="safetensors header (the manifest) size")
    limits: FitLimits = FIT_LIMITS

    def rate_for(self, spec: ModelSpec) -> int:
        if self.rate is not None:
            return int(self.rate)
        return spec.sample_rate if self.at_file_rate else max(REFERENCE_RATE, spec.sample_rate)


@dataclass(frozen=True)
class PlayingCost:
    """What the renderer allocates to play one instrument at ``rate``: bytes per part and audio samples."""

    rate: int
    attack_size: int  # samples of one attack at ``rate``
    ring: int  # excitation ring length per slot and dimension (next power of two ≥ attack + block)
    slots: int  # voice slots: each voice and its cross-fade tail
    parts: dict[str, int]  # bytes by part, the largest first
    samples: int  # float32 audio-rate samples (attacks, noise, excitation rings)

    @property
    def bytes(self) -> int:
        return sum(self.parts.values())


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def attack_at_rate(spec: ModelSpec, rate: int) -> int:
    """attack_size measured in samples of ``rate`` (as ``playback.spec_at_rate`` computes it)."""
    return spec.attack_size if rate == spec.sample_rate else max(1, round(spec.attack_size * rate / spec.sample_rate))


def playing_cost(spec: ModelSpec, budget: LoadBudget | None = None) -> PlayingCost:
    """The bytes the renderer allocates to play ``spec`` at the budget's rate and voices. An upper bound
    that counts the warm-up's one copy of the voice state (``Renderer.warmup`` saves and restores it)."""
    b = budget or default_budget()
    rate = b.rate_for(spec)
    k, r, e, m = spec.control_plane_dim, spec.n_resonances, spec.expressivity, spec.n_oscillators
    gm, g = r * e * m, r * e
    a = attack_at_rate(spec, rate)
    ring = _next_pow2(a + b.block_size)
    slots = 2 * b.voices
    p = max(k, e)
    f32 = 4
    voice_state = slots * (2 * gm + k * ring + 2 * e) * f32  # state_re, state_im, exc, ramp_prev/target
    parts = {
        # exc: (slots, K, ring) — the term that grows with attack_size, K and the rate ratio
        f"excitation ring: {slots} voice slots × K {k} × {ring} samples": slots * k * ring * f32,
        WARMUP_COPY: voice_state,
        # playback attacks, the owned noise, their product, the bank's flat copy
        f"attacks: K {k} × {a} samples, 4 copies": 4 * k * a * f32,
        f"oscillator state: {slots} slots × {gm} oscillators (re, im)": slots * 2 * gm * f32,
        # poles and coefficients, complex64, in the playback and in the bank
        f"oscillators: {gm} poles and coefficients, 2 copies": 2 * 2 * gm * 8,
        "noise table": (NOISE_TABLE + a) * (f32 + 8),  # float64 draw, kept as float32
        "event queue and inbox payloads": (b.queue_size + b.inbox_size) * p * f32,
        "scratch": (a + (k + r + g + e) * b.block_size + r + k + 2 * k * r) * f32,
    }
    parts = dict(sorted(parts.items(), key=lambda kv: -kv[1]))
    samples = 4 * k * a + slots * k * ring + NOISE_TABLE + a
    return PlayingCost(rate=rate, attack_size=a, ring=ring, slots=slots, parts=parts, samples=samples)


def human(n: int) -> str:
    """Bytes as ``750 MiB`` / ``2.1 GiB`` / ``12 kiB``."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    if n >= MiB:
        return f"{n / MiB:.0f} MiB"
    return f"{n / 1024:.0f} kiB"


def check_bytes(spec: ModelSpec, budget: LoadBudget | None = None) -> PlayingCost:
    """The cost of playing ``spec``, or BudgetError naming the figure, the budget and the largest part; then
    the file rate (a fit never writes one outside the budget's range). ``settings.check_spec`` calls this, so
    a fit is refused before it runs exactly when its file would be refused at load."""
    b = budget or default_budget()
    cost = playing_cost(spec, b)
    if cost.bytes > b.max_bytes:
        part, size = next((p, n) for p, n in cost.parts.items() if p != WARMUP_COPY)  # the cause, not the copy
        stretch = (f"; attack_size {spec.attack_size} at {spec.sample_rate} Hz is {cost.attack_size} samples at "
                   f"{cost.rate} Hz" if cost.attack_size != spec.attack_size else "")  # fmt: skip
        raise BudgetError(f"playing it at {cost.rate} Hz needs {human(cost.bytes)}, over the {human(b.max_bytes)} "
                          f"budget ({part} = {human(size)}{stretch})")  # fmt: skip
    if not b.min_file_rate <= spec.sample_rate <= b.max_file_rate:
        raise BudgetError(f"file rate {spec.sample_rate} Hz is outside {b.min_file_rate}..{b.max_file_rate} Hz")
    return cost


def check_playable(spec: ModelSpec, budget: LoadBudget | None = None) -> PlayingCost:
    """Every load-time bound of a file's sizes, the one that explains most first: the playing bytes and the
    file rate (:func:`check_bytes`), then the fit limits (``FitLimits``: what the trainer would accept).
    BudgetError naming the first one exceeded."""
    b = budget or default_budget()
    cost = check_bytes(spec, b)
    try:
        check_sizes(spec, b.limits)
    except BudgetError:
        raise
    except ValueError as exc:
        raise BudgetError(str(exc).replace("the model is too large to fit", "over the fit limits")) from None
    return cost


_default: LoadBudget | None = None


def default_budget() -> LoadBudget:
    """The process-wide budget: :func:`set_default_budget`'s, else ``LoadBudget()`` with ``max_bytes`` from
    the environment variable ``SENSORSYNTH_INSTRUMENT_BUDGET_MIB`` when set (a deployment's knob that needs
    no change of config file)."""
    global _default
    if _default is None:
        mib = os.environ.get(ENV_BUDGET_MIB, "").strip()
        try:
            _default = LoadBudget(max_bytes=int(mib) * MiB) if mib else LoadBudget()
        except ValueError as exc:
            raise BudgetError(f"{ENV_BUDGET_MIB}={mib!r} is not a budget in MiB (at least 1): {exc}") from None
    return _default


def set_default_budget(budget: LoadBudget | None) -> None:
    """Replace the process-wide budget (None: back to the default and the environment)."""
    global _default
    _default = budget
