"""What a fit is asked to do and how it reports, without torch: :class:`FitSettings`, the size limits
(:func:`make_spec`, :func:`make_settings`), :class:`Progress` records and the :class:`CancelToken`.

These are the fit's vocabulary, shared by everything that talks *about* a fit without running one: the
server validating the ``record_fit`` table of its config, the trainer's queue and wire protocol, the commands
that check a typo before sending a job. They live apart from :mod:`.pipeline` (which runs the fitter) so that
the arrows run one way: :mod:`.fit` and :mod:`.pipeline` import this module, never the other way round, and
the playing side can import it on a machine without torch (``pip install sensorsynth`` with no extras).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .budget import FIT_LIMITS, FitLimits, LoadBudget, check_bytes, check_sizes
from .spec import ModelSpec

LossName = Literal["seed", "multires", "mrstft"]  # the names loss.py accepts (kept here so this module needs no torch)
Stage = Literal["reading", "analysis", "frozen", "full", "export"]


Quality = Literal["fast", "default", "best"]

# What each quality sets, unless the settings name the field themselves (README "Fitting" has the curves
# these were chosen from). fast: the whole recipe compressed into under a minute of wall time, analysis
# included, with room left for reading the clip and writing the file.
QUALITY_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"steps": 900, "time_budget_s": 52.0},
    "default": {},
    "best": {"steps": 2700},
}


class FitSettings(BaseModel):
    """How to fit. Defaults are the analysed recipe with the seed's loss and the instrument's own attack
    noise. ``quality`` picks a preset (:data:`QUALITY_PRESETS`) for the fields not given explicitly. The
    seed's own recipe is ``init="random", parameterization="seed", frozen_steps=0, mode_every=1, lr=1e-3,
    schedule="constant", steps=10000, noise="fresh"``."""

    model_config = ConfigDict(extra="forbid")
    quality: Quality = Field("default", description="fast (under a minute), default (a few minutes) or best")
    steps: int = Field(900, ge=1, le=1_000_000, description="total optimiser steps, frozen stage included")
    frozen_steps: int = Field(150, ge=0, description="first steps with the oscillators frozen")
    loss: LossName = Field("mrstft", description="mrstft: spectral convergence + log magnitudes at four "
                           "resolutions; seed: the seed's STFT L1 (2048/256); multires: that L1 at four resolutions")
    sparsity: float = Field(0.5, ge=0, allow_inf_nan=False)
    lr: float = Field(1e-2, gt=0, allow_inf_nan=False, description="control plane, attacks, router, mix, gains, deformations")
    lr_frequency: float = Field(1e-4, ge=0, allow_inf_nan=False, description="log-frequency (1e-4 is 0.17 cent)")
    lr_decay: float = Field(1e-2, ge=0, allow_inf_nan=False, description="log-decay")
    lr_amplitude: float = Field(5e-3, ge=0, allow_inf_nan=False)
    mode_every: int = Field(2, ge=1, description="after the frozen stage, update the oscillators every Nth step")
    schedule: Literal["cosine", "constant"] = "cosine"
    init: Literal["analysis", "random"] = "analysis"
    parameterization: Literal["physical", "seed"] = "physical"
    noise: Literal["instrument", "fresh"] = Field(
        "instrument", description="instrument: one attack-noise draw (from seed) for the whole fit, stored with "
        "the instrument and replayed; fresh: a new draw every step, as the seed does")
    time_budget_s: float | None = Field(None, gt=0, allow_inf_nan=False, description="stop early when this much time has passed")
    budget_schedule: Literal["cut", "compress"] = Field(
        "cut", description="with a time budget: cut: the step schedule, stopped by the budget (the frozen stage "
        "ends by a quarter of it); compress: the whole schedule squeezed into the budget")
    seed: int = Field(0, ge=0, lt=2**63)
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, le=1024)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("quality") in QUALITY_PRESETS:
            data = {**QUALITY_PRESETS[data["quality"]], **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "FitSettings":
        if self.init == "analysis" and self.parameterization == "seed":
            raise ValueError("init='analysis' needs parameterization='physical' (the seed's has no frequency)")
        return self


class Progress(BaseModel):
    """Where a fit is: plain numbers only, so it can be printed, logged or sent as JSON.

    ``step`` counts optimiser steps done out of ``steps``; the stages before the first step report step 0.
    ``loss`` is ``None`` until a step has run (or when the loss is not finite). ``eta_s`` is the estimated
    time left, ``None`` until it can be estimated.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    stage: Stage
    step: int = Field(0, ge=0)
    steps: int = Field(..., ge=1)
    loss: float | None = None
    elapsed_s: float = Field(0.0, ge=0)
    eta_s: float | None = Field(None, ge=0)


class Cancelled(Exception):
    """Raised inside a fit whose :class:`CancelToken` was cancelled."""


class InvalidResult(RuntimeError):
    """The fit ran but produced an instrument that does not validate (it diverged): not the user's input."""


class CancelToken:
    """Asks a running fit to stop. Thread-safe; every stage checks it at least once a second.

    ``poll`` (optional) is asked, at most every ``poll_interval_s``, whether the fit should stop: a way to
    cancel from another process (a Ray task asks its coordinator) without a thread to watch for it.
    """

    def __init__(self, poll: Callable[[], bool] | None = None, poll_interval_s: float = 0.25) -> None:
        self._event = threading.Event()
        self._poll = poll
        self._interval = poll_interval_s
        self._next_poll = 0.0
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if self._event.is_set():
            return True
        if self._poll is not None and time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self._interval
            if self._poll():
                self.cancel()
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the fit should stop; stages call this between units of work."""
        if self.cancelled:
            raise Cancelled(self.reason)


# ------------------------------------------------------------------------------------------ bounds


def check_spec(spec: ModelSpec, limits: FitLimits = FIT_LIMITS, budget: LoadBudget | None = None) -> ModelSpec:
    """``spec`` if a fit of that size fits the limits and its instrument could be played within the load
    budget (``budget.py``, default: the process's); else ValueError naming the size and the limit. A fit is so
    refused before it runs exactly when its file would be refused at load."""
    check_sizes(spec, limits)
    check_bytes(spec, budget)
    return spec


def make_spec(overrides: dict[str, Any] | None = None, limits: FitLimits = FIT_LIMITS) -> ModelSpec:
    """A ModelSpec from the default with ``overrides`` applied, checked against ModelSpec and the fit limits.

    Raises ValueError with one line per problem, each naming the field (``spec.n_resonances: ...``)."""
    try:
        spec = ModelSpec(**(overrides or {}))
    except ValidationError as exc:
        raise ValueError(describe_validation(exc, "spec", ModelSpec.model_fields)) from None
    return check_spec(spec, limits)


def make_settings(values: dict[str, Any] | None = None) -> FitSettings:
    """FitSettings from plain values; ValueError naming each wrong field and listing the known ones."""
    try:
        return FitSettings(**(values or {}))
    except ValidationError as exc:
        raise ValueError(describe_validation(exc, "settings", FitSettings.model_fields)) from None


def describe_validation(exc: ValidationError, what: str, fields: dict[str, Any]) -> str:
    """One line for a pydantic error: ``bad spec: n_resonances: Input should be ... (spec fields: ...)``."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or what}: {e['msg']}" for e in exc.errors())
    return f"bad {what}: {problems} ({what} fields: {', '.join(fields)})"
