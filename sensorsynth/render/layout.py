"""Packing of the kernel's arrays into buffers, from the field table in :mod:`sensorsynth.render.kernel`.

numpy only. :func:`allocate` packs one group of fields (bank, fixed or sized, see :data:`kernel.FIELDS`) into
one buffer per dtype at the shapes a renderer needs, :func:`layout_array` writes the table of offsets and
shapes the kernel unpacks with, :func:`buffer_args` orders the buffers as the kernel's arguments. The table
itself lives in kernel.py so that numba's on-disk cache (keyed on kernel.py alone) can never pair a compiled
kernel with a different table.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernel import BUFFERS, FIELDS, N_FIELDS, SLOT


ALIGN = 64  # bytes: every field starts on a cache line (a vector load across two costs ~10 % of the oscillator loop)


def aligned_zeros(n: int, dtype: np.dtype) -> np.ndarray:
    """np.zeros(n, dtype) whose data starts on an ALIGN-byte boundary (numpy promises only 16)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(n + ALIGN // itemsize, dtype)
    start = (-raw.ctypes.data % ALIGN) // itemsize
    return raw[start : start + n]


class Allocation(NamedTuple):
    """One group packed: its buffers (by dtype), a view per field, and each field's layout row."""

    group: str
    buffers: dict[np.dtype, np.ndarray]
    views: dict[str, np.ndarray]
    rows: dict[str, tuple[int, tuple[int, ...]]]


def allocate(group: str, shapes: dict[str, tuple[int, ...]]) -> Allocation:
    """Zeroed buffers holding every field of ``group`` at the given shapes (each field its own view)."""
    fields = [f for f in FIELDS if f.group == group]
    missing = {f.name for f in fields} ^ set(shapes)
    if missing:
        raise AssertionError(f"shapes for group {group!r} do not match the table: {sorted(missing)}")
    sizes = {dt: 0 for g, dt in BUFFERS if g == group}
    rows: dict[str, tuple[int, tuple[int, ...]]] = {}
    for f in fields:
        shape = tuple(int(s) for s in shapes[f.name])
        if len(shape) != f.ndim:
            raise AssertionError(f"field {f.name!r} is {f.ndim}-d, got shape {shape}")
        rows[f.name] = (sizes[f.dtype], shape)
        size = int(np.prod(shape, dtype=np.int64))
        sizes[f.dtype] += size + (-size) % (ALIGN // f.dtype.itemsize)  # the next field starts aligned
    buffers = {dt: aligned_zeros(max(1, n), dt) for dt, n in sizes.items()}
    views = {}
    for f in fields:
        off, shape = rows[f.name]
        views[f.name] = buffers[f.dtype][off : off + int(np.prod(shape, dtype=np.int64))].reshape(shape)
    return Allocation(group, buffers, views, rows)


def layout_array(*allocations: Allocation) -> np.ndarray:
    """The (n_fields, 4) table [offset, dim0, dim1, dim2] of the given allocations (one per group)."""
    lay = np.zeros((N_FIELDS, 4), np.int64)
    for alloc in allocations:
        for name, (off, shape) in alloc.rows.items():
            lay[SLOT[name], 0] = off
            lay[SLOT[name], 1 : 1 + len(shape)] = shape
    if lay[SLOT["layout"], 0] != 0:
        raise AssertionError("the layout must sit at offset 0 of the int64 bank buffer")
    return lay


def buffer_args(*allocations: Allocation) -> tuple[np.ndarray, ...]:
    """The kernel's buffer arguments, in :data:`BUFFERS` order, out of one allocation per group."""
    by_group = {a.group: a for a in allocations}
    return tuple(by_group[g].buffers[dt] for g, dt in BUFFERS)
