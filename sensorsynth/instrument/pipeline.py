"""Clip in, instrument out: the one fitting pipeline that ``sensorsynth fit`` and the trainer's workers call.

A service needs more from a fit than a script does: it must be able to stop it (a cancel token that every
stage honours within a second, the analysis included), to show it (plain :class:`Progress` records that go
onto a wire as JSON) and to trust it (a fit is a pure function of the clip, the :class:`ModelSpec` and the
:class:`FitSettings`, seed included: it touches no process-wide state that it does not put back).

The settings, progress and cancel types are in :mod:`.settings` (no torch; re-exported here); this module
runs the fitter (:func:`fit_clip` imports :mod:`.fit` and :mod:`.export` when it runs), so the playing side
never imports it.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

# the fit's torch-free vocabulary, re-exported so that code which runs fits imports from one place
from .settings import (  # noqa: F401
    LossName,
    Stage,
    Quality,
    QUALITY_PRESETS,
    FitSettings,
    Progress,
    Cancelled,
    InvalidResult,
    CancelToken,
    FitLimits,
    FIT_LIMITS,
    check_spec,
    make_spec,
    make_settings,
    describe_validation,
)
from .spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..audio import Clip
    from ..instrument_file import Instrument


# --------------------------------------------------------------------------------------- the pipeline

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def read_clip_bytes(data: bytes, clip_name: str, spec: ModelSpec) -> "Clip":
    """:func:`sensorsynth.audio.read_clip` for bytes (from a wire): the same checks and conversions, with
    errors and provenance naming ``clip_name`` rather than a temporary file."""
    from ..audio import WIRE_LIMITS, AudioInputError, read_clip

    base = _SAFE_NAME.sub("_", Path(clip_name or "clip").name).lstrip(".") or "clip"
    with tempfile.TemporaryDirectory(prefix="sensorsynth-clip-") as folder:
        path = Path(folder) / base
        path.write_bytes(data)
        try:
            clip = read_clip(path, sample_rate=spec.sample_rate, n_samples=spec.n_samples, limits=WIRE_LIMITS)
        except AudioInputError as exc:
            raise AudioInputError(str(exc).replace(str(path), clip_name or base)) from None
    clip.source = clip.source.model_copy(update={"name": clip_name or base})
    return clip


def fit_clip(
    clip: "str | os.PathLike[str] | bytes | Clip",
    settings: FitSettings | None = None,
    spec: ModelSpec | None = None,
    *,
    name: str = "instrument",
    clip_name: str | None = None,
    cancel: CancelToken | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> "Instrument":
    """Read ``clip`` (a path, the bytes of an audio file, or a :class:`~sensorsynth.audio.Clip` already
    read), fit it and return the :class:`~sensorsynth.instrument_file.Instrument` named ``name``.

    Raises :class:`~sensorsynth.audio.AudioInputError` for unusable audio, ValueError for settings or a spec
    the fitter refuses, :class:`Cancelled` when ``cancel`` was cancelled and :class:`InvalidResult` when the
    fit diverged. ``on_note`` gets each conversion made to the clip (resampled, mixed down, cut, ...).
    The stages are ``reading``, ``analysis`` (skipped with ``init="random"``), ``frozen``, ``full`` and
    ``export``; ``on_progress`` gets a record at each stage change and after every optimiser step.
    """
    from ..audio import Clip, read_clip

    settings = settings if settings is not None else FitSettings()
    spec = check_spec(spec if spec is not None else ModelSpec())
    token = cancel or CancelToken()
    report = on_progress or (lambda progress: None)
    report(Progress(stage="reading", steps=settings.steps))
    token.check()
    if isinstance(clip, Clip):
        if clip.sample_rate != spec.sample_rate or clip.samples.shape != (spec.n_samples,):
            raise ValueError(
                f"the clip was read at {clip.sample_rate} Hz, {clip.samples.shape[0]} samples; the spec needs "
                f"{spec.sample_rate} Hz, {spec.n_samples} samples"
            )
    elif isinstance(clip, (bytes, bytearray, memoryview)):
        clip = read_clip_bytes(bytes(clip), clip_name or "clip", spec)
    else:
        clip = read_clip(clip, sample_rate=spec.sample_rate, n_samples=spec.n_samples)
    for message in clip.messages:
        if on_note:
            on_note(message)
    token.check()

    # looked up at call time: tests (and tools) may replace the fitter
    from . import fit as fit_module
    from .export import to_instrument

    start = time.perf_counter()
    result = fit_module.fit(clip.samples, spec, settings, report, cancel=token)
    wall = time.perf_counter() - start
    token.check()
    report(Progress(stage="export", step=len(result.history), steps=settings.steps,
                    loss=_finite(result.final_loss), elapsed_s=round(wall, 3), eta_s=0.0))
    training = {**settings.model_dump(mode="json"), "wall_time_s": round(wall, 3)}
    instrument = to_instrument(
        result.model, name, training=training, final_loss=_finite(result.final_loss), source=clip.source,
        noise_seed=result.noise_seed,
    )
    try:
        instrument.validate()
    except ValueError as exc:
        raise InvalidResult(f"the fit produced an invalid instrument ({exc})") from None
    return instrument


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
