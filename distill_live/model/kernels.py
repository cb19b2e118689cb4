"""Which kernels the model runs on while it plays.

At batch 1 a frame is a few hundred small operations, and their fixed costs add up. oneDNN, which
torch's CPU build calls for some of them, costs about 5 us a call whatever the size (GELU on a few
hundred values: 5.7 us through oneDNN, 1.1 us through torch's own kernel, on this project's machine),
more than the arithmetic; a default-preset frame calls GELU 14 times. So frames are made with oneDNN
switched off. The two kernels agree to within a float's rounding (about 1e-6), and everything that
plays frames (render, takes, serve, bench) goes through `playing`, so they all give the same samples.

A product at batch 1 reads its whole matrix for one row of output, so it goes as fast as the kernel
reads memory. The prior's largest product (every level's first head layer) goes one row at a time
through numpy's BLAS (`MatVec`): on this project's machine (AMD EPYC with AVX-512, torch 2.13 with
MKL) torch's kernel reads about 40 GB/s and numpy's OpenBLAS about 75 (a [1, 384] x [384, 2048]
product: 72 us against 42, one thread). The rest of a frame's products run inside the compiled loops
of model/compiled.py.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

_blas_held = False


@contextmanager
def playing():
    """Inference mode, with torch's own CPU kernels instead of oneDNN's (restored after)."""
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.backends.mkldnn.enabled = was


class MatVec:
    """`F.linear(x, weight, bias)` for a frame's one or two rows, through numpy's BLAS.

    It reads the layer's own weights (numpy views of them, not copies). Rows go one at a time: for
    two rows at once, OpenBLAS picks kernels that are as fast as one row for some shapes and four to
    eight times slower for others ([2, 384] x [384, 2048]: 348 us against 2 x 41).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        hold_blas_to_one_thread()
        self.weight = weight.detach().numpy()  # [out, in]
        self.bias = None if bias is None else bias.detach().numpy()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """rows [R, in] -> [R, out]."""
        out = np.empty((rows.shape[0], self.weight.shape[0]), dtype=self.weight.dtype)
        for row, result in zip(rows, out):
            np.matmul(self.weight, row, out=result)
        if self.bias is not None:
            out += self.bias
        return out


def hold_blas_to_one_thread() -> None:
    """Once per process: numpy's BLAS on one thread. Left alone, OpenBLAS splits a product this size
    over every core and keeps its threads spinning between frames, beside the audio thread; at batch 1
    one thread is the fastest anyway, as it is for torch (serve's `--threads 1`)."""
    global _blas_held
    if not _blas_held:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _blas_held = True
