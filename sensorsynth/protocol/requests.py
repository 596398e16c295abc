"""Requests for the mapping layer: a sensor frame to play, a learn-session action, a calibration.

The OSC decoder makes them from ``/sensorsynth/input``, ``/learn`` and ``/calibrate`` messages and the
server's mapping edge acts on them; they live here, with the commands, so that neither has to import the
other's module (the mapping edge used to import them from the OSC server). Plain frozen values, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEARN_ACTIONS", "CalibrateRequest", "LearnRequest", "SceneRequest", "SensorInput"]


@dataclass(frozen=True, slots=True)
class SensorInput:
    """A sensor frame: ``/sensorsynth/input/<source>[/<kind>]`` with N numbers."""

    source: str
    kind: str
    values: tuple[float, ...]
    voice: int | None = None
    at: float | None = None


LEARN_ACTIONS = ("record", "replay", "train", "run", "clear")


@dataclass(frozen=True, slots=True)
class LearnRequest:
    """``/sensorsynth/learn/<action>``: ``on`` (record, run), ``source`` (record, replay), ``model`` (train)."""

    action: str
    on: bool = True
    source: str | None = None
    model: str = "ridge"
    voice: int | None = None


@dataclass(frozen=True, slots=True)
class CalibrateRequest:
    """``/sensorsynth/calibrate/<source>``: relearn (no values) or set lo (first half) and hi (second half)."""

    source: str
    values: tuple[float, ...] = ()
    voice: int | None = None


@dataclass(frozen=True, slots=True)
class SceneRequest:
    """``/sensorsynth/scene`` with one string: switch the installation to that scene (see server/scenes.py).
    Only this machine, or the senders named in ``osc_allowed_senders``, may ask (the OSC server checks)."""

    name: str
