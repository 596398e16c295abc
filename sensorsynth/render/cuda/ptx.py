"""Compile the CUDA kernels to PTX without a GPU: ``python -m sensorsynth.render.cuda.ptx [cc]``.

numba's CUDA simulator runs the kernels' Python, so it cannot catch what only the real compiler sees (a
type numba cannot infer on the CUDA target, an accidental float64, a call with no CUDA lowering). This
types, lowers and compiles every kernel for a compute capability (default 9.0, Hopper: H100/H200) with the
NVVM of the CUDA toolkit wheels (``numba-cuda[cu12]``), no GPU and no driver needed, and prints one line per
kernel: its PTX size and its float64 instructions (there should be none: the voice is float32 throughout).
"""

from __future__ import annotations

import sys


def signatures() -> dict:
    """Each kernel's argument types, as the renderer launches them (C-contiguous arrays, int64 scalars)."""
    from numba import types as T

    i64, f32 = T.int64, T.float32
    f1, f2, f3, q1, q2 = f32[::1], f32[:, ::1], f32[:, :, ::1], i64[::1], i64[:, ::1]
    return {
        "ops_kernel": (q2, i64, i64, f2, f2, f3, q1),
        "block_kernel": (i64, i64, i64, f32, q2, f2, q2, f2, q2, f2, q2, f1, f1, f1, f1, f1, f1, f2, f1, f1, f1, f1,
                         f2, f2, f3, q1, f2, f1, f1, q1, q1),
    }


def compile_all(cc: tuple[int, int] = (9, 0)) -> dict[str, str]:
    """PTX of every kernel (raises what the compiler raises)."""
    from numba import cuda

    from . import kernels

    if not cuda.is_available():
        # numba-cuda types a device function called from a kernel for the current device's compute
        # capability, which needs a driver: with none, the one asked for stands in (this tool only)
        import numba.cuda.dispatcher as dispatcher

        class _Device:
            compute_capability = cc

        dispatcher.get_current_device = lambda: _Device  # type: ignore[attr-defined]

    return {name: cuda.compile_ptx(getattr(kernels, name).py_func, sig, cc=cc)[0] for name, sig in signatures().items()}


def main(argv: list[str]) -> int:
    cc = tuple(int(x) for x in argv[0].split(".")) if argv else (9, 0)
    for name, ptx in compile_all(cc).items():  # type: ignore[arg-type]
        print(f"{name}: {len(ptx)} bytes of PTX for sm_{cc[0]}{cc[1]}, {ptx.count('.f64')} float64 instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
