"""The CUDA renderer (numba-cuda): the CPU renderer's API and inbox, the voices rendered on a GPU.

Nothing here imports ``numba.cuda`` until a renderer is made (or :func:`cuda_problem` asks), so the player
never needs numba-cuda unless ``--device cuda`` is asked for, and a test can set ``NUMBA_ENABLE_CUDASIM=1``
first. Modules: :mod:`.plan` (the host's control plane, CPU numba), :mod:`.kernels` (the CUDA kernels),
:mod:`.renderer` (:class:`CudaRenderer`, the block API).
"""

from __future__ import annotations


def cuda_problem() -> str | None:
    """None when a CudaRenderer can run here (a CUDA GPU, or numba's simulator); else one line saying why."""
    try:
        from numba import cuda
    except ImportError as exc:
        return f"numba-cuda is not installed ({exc}): pip install -c constraints.txt -e '.[cuda]'"
    try:
        if cuda.is_available():
            return None
    except Exception as exc:  # noqa: BLE001 - a broken driver is a reason like any other
        return f"no CUDA GPU here: numba.cuda failed ({exc})"
    return "no CUDA GPU here: numba.cuda finds no usable device (NUMBA_ENABLE_CUDASIM=1 simulates one, slowly)"


def device_name() -> str:
    """The GPU numba.cuda renders on, in words ("the CUDA simulator" under NUMBA_ENABLE_CUDASIM=1)."""
    from numba import cuda

    if "simulator" in cuda.stream.__module__:
        return "the CUDA simulator (NUMBA_ENABLE_CUDASIM=1: correct, far slower than realtime)"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def __getattr__(name: str):
    if name == "CudaRenderer":
        from .renderer import CudaRenderer

        return CudaRenderer
    raise AttributeError(name)
