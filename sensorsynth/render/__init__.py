"""Streaming render: pure numpy + numba, no sockets, no files, no clocks.

``Renderer`` plays instruments block by block from sample-accurate events; its ``inbox`` (an ``Inbox``)
takes events from another thread without locks, and instruments can be added or replaced while it plays.
``render_reconstruction`` and ``render_random`` are whole performances through it. The torch path for many
voices on CUDA lives in ``sensorsynth.render.batched`` (imported explicitly: players need no torch).
"""

from .performance import render_random, render_reconstruction
from .renderer import Inbox, Renderer

__all__ = ["Inbox", "Renderer", "render_reconstruction", "render_random"]
