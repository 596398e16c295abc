"""Streaming render: pure numpy + numba, no sockets, no files, no clocks.

``Renderer`` plays instruments block by block from sample-accurate events; ``render_reconstruction`` and
``render_random`` are whole performances through it. The torch path for many voices on CUDA lives in
``sensorsynth.render.batched`` (imported explicitly: players need no torch).
"""

from .performance import render_random, render_reconstruction
from .renderer import Renderer

__all__ = ["Renderer", "render_reconstruction", "render_random"]
