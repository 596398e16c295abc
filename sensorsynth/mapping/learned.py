"""Learned mappings, as Wekinator does: record (sensor frame, target control frame) pairs, fit a regressor,
run it live.

- **Record.** Each sensor frame of a source becomes an input vector ``[pose, change]`` (see
  :mod:`.features`), stamped with the server's clock. Targets are the control events played meanwhile on
  the same voice: the instrument replaying its own fitted performance, cells picked on the page's play
  surface, ``/sensorsynth/control`` messages. A frame's target is the envelope of those events around it,
  ``y(t) = max_e v_e · exp(−|t − t_e| / tau)`` (tau = 0.1 s), each event scaled to peak 1 (the model
  learns *which* note; loudness is the gate's), so a movement made just before or after a note is paired
  with that note, and stillness with silence.
- **Train.** Inputs are standardised (mean and scale stored); then scikit-learn's ``Ridge`` (linear, the
  default: fast, stable with few pairs) or ``MLPRegressor`` (one hidden layer of 32 ReLU units) maps them to
  the K control values. Only the weights are kept.
- **Run.** Each frame's prediction ŷ (clipped at 0) is a candidate event; its strength ``max(ŷ)`` goes
  through a velocity gate whose threshold (``onset``) lies halfway between what the trained model predicts
  on the recorded frames without a note and on those with one (``full``: its 95th percentile there), so the
  learned movement plays the learned note and stillness stays silent. The event plays ŷ's pattern at the
  recorded notes' typical loudness (``level``, the median peak of the target events) times the gate's
  loudness.

Stored as data, never pickled: ``<instrument>.learned.json`` beside the instrument, one entry per source:
``{"format": "sensorsynth-learned", "version": 1, "instrument": NAME, "control_dims": K,
"sources": {SOURCE: {"kind", "width", "model", "inputs", "mean", "scale", "layers": [{"weight", "bias"}],
"onset", "full", "level", "pairs", "events", "score", "trained"}}}``; a layer computes ``x @ weight + bias``, with
ReLU between layers. :func:`LearnedFile.model_validate_json` checks every shape on load.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timezone
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT = "sensorsynth-learned"
VERSION = 1
TAU_S = 0.1
MIN_PAIRS = 20
MAX_PAIRS = 20000
ModelKind = Literal["ridge", "mlp"]


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: list[list[float]]  # (inputs, outputs)
    bias: list[float]


class LearnedModel(BaseModel):
    """One source's regressor for one instrument."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    kind: Literal["motion", "hand", "raw"]
    width: int = Field(ge=1, le=4096)
    model: ModelKind
    inputs: int = Field(ge=1, le=8192)
    mean: list[float]
    scale: list[float]
    layers: list[Layer] = Field(min_length=1, max_length=4)
    onset: float = Field(gt=0)
    full: float = Field(gt=0)
    level: float = Field(gt=0)
    pairs: int = Field(ge=0)
    events: int = Field(ge=0)
    score: float | None = None
    trained: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @model_validator(mode="after")
    def _shapes(self) -> "LearnedModel":
        if len(self.mean) != self.inputs or len(self.scale) != self.inputs:
            raise ValueError("mean and scale need one value per input")
        n = self.inputs
        for i, layer in enumerate(self.layers):
            if len(layer.weight) != n or any(len(row) != len(layer.bias) for row in layer.weight):
                raise ValueError(f"layer {i}: weight must be ({n}, {len(layer.bias)})")
            n = len(layer.bias)
        values = [*self.mean, *self.scale] + [v for layer in self.layers for row in layer.weight for v in row]
        if not all(math.isfinite(v) for v in values) or any(s <= 0 for s in self.scale):
            raise ValueError("weights must be finite and scales positive")
        return self

    @property
    def outputs(self) -> int:
        return len(self.layers[-1].bias)

    def compiled(self) -> "Predictor":
        return Predictor(self)


class Predictor:
    """numpy arrays of a LearnedModel, for the live path (no pydantic per frame)."""

    def __init__(self, m: LearnedModel) -> None:
        self.mean = np.asarray(m.mean, np.float64)
        self.scale = np.asarray(m.scale, np.float64)
        self.layers = [(np.asarray(layer.weight, np.float64), np.asarray(layer.bias, np.float64)) for layer in m.layers]
        self.model = m

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, np.float64) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return np.maximum(h, 0.0)


class LearnedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["sensorsynth-learned"] = FORMAT
    version: Literal[1] = VERSION
    instrument: str
    control_dims: int = Field(ge=1, le=1024)
    sources: dict[str, LearnedModel] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _outputs(self) -> "LearnedFile":
        for name, m in self.sources.items():
            if m.outputs != self.control_dims:
                raise ValueError(f"source {name!r} predicts {m.outputs} values, the instrument has {self.control_dims}")
        return self


def targets_at(times: np.ndarray, event_times: np.ndarray, event_values: np.ndarray, control_dims: int,
               tau: float = TAU_S) -> np.ndarray:
    """(n, K) targets: per frame the envelope max_e v_e·exp(−|t − t_e|/tau) of the events around it."""
    times = np.asarray(times, np.float64)
    out = np.zeros((times.size, control_dims))
    if len(event_times) == 0:
        return out
    ev_t = np.asarray(event_times, np.float64)
    ev_v = np.asarray(event_values, np.float64).reshape(len(ev_t), control_dims)
    for start in range(0, times.size, 2048):  # bounded memory: 2048 frames × events at a time
        tt = times[start : start + 2048]
        weight = np.exp(-np.abs(tt[:, None] - ev_t[None, :]) / tau)  # (frames, events)
        out[start : start + 2048] = (weight[:, :, None] * ev_v[None, :, :]).max(axis=1)
    return out


def train(inputs: np.ndarray, targets: np.ndarray, kind: str, width: int, model: ModelKind = "ridge",
          events: int = 0, seed: int = 0, event_peaks: np.ndarray | None = None) -> LearnedModel:
    """Fit a regressor from input vectors (n, F) to targets (n, K); ValueError when there is too little.
    ``event_peaks``: the loudest value of each recorded target event (sets the onset; without them the
    frames whose target is near its largest values stand in)."""
    x = np.asarray(inputs, np.float64)
    y = np.asarray(targets, np.float64)
    if x.shape[0] < MIN_PAIRS:
        raise ValueError(f"{x.shape[0]} recorded frames; record at least {MIN_PAIRS}")
    peaks = y.max(axis=1)
    if not (peaks > 1e-6).any():
        raise ValueError("no target events were recorded (replay the instrument, or play cells while recording)")
    if x.shape[0] > MAX_PAIRS:
        keep = np.linspace(0, x.shape[0] - 1, MAX_PAIRS).astype(int)
        x, y, peaks = x[keep], y[keep], peaks[keep]
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter
        if model == "ridge":
            from sklearn.linear_model import Ridge

            reg = Ridge(alpha=1.0).fit(z, y)
            layers = [Layer(weight=reg.coef_.T.tolist(), bias=np.broadcast_to(reg.intercept_, (y.shape[1],)).tolist())]
            pred = reg.predict(z)
        elif model == "mlp":
            from sklearn.neural_network import MLPRegressor

            reg = MLPRegressor(hidden_layer_sizes=(32,), activation="relu", max_iter=400, random_state=seed,
                               learning_rate_init=3e-3).fit(z, y)
            layers = [Layer(weight=w.tolist(), bias=b.tolist()) for w, b in zip(reg.coefs_, reg.intercepts_)]
            pred = reg.predict(z).reshape(y.shape)
        else:
            raise ValueError(f"unknown learned model {model!r} (ridge or mlp)")
    resid = float(((y - pred) ** 2).sum())
    total = float(((y - y.mean(axis=0)) ** 2).sum())
    if event_peaks is not None and len(event_peaks) and np.max(event_peaks) > 1e-6:
        level = float(np.median(np.asarray(event_peaks, np.float64)[np.asarray(event_peaks) > 1e-6]))
    else:
        level = float(np.median(peaks[peaks > 0.5 * peaks.max()]))
    strength = np.maximum(pred, 0.0).max(axis=1)
    noted = peaks > 0.5 * peaks.max()
    quiet = peaks < 0.05 * peaks.max()
    on_notes = float(np.median(strength[noted]))
    at_rest = float(np.median(strength[quiet])) if quiet.any() else 0.0
    onset = max(0.5 * (on_notes + at_rest), 1e-3 * level)
    full = max(float(np.percentile(strength[noted], 95)), onset * 1.5)
    return LearnedModel(
        kind=kind, width=width, model=model, inputs=x.shape[1], mean=mean.tolist(), scale=scale.tolist(),
        layers=layers, onset=onset, full=full, level=level, pairs=int(x.shape[0]), events=int(events),
        score=round(1.0 - resid / total, 4) if total > 0 else None,
    )
