"""Which kernels the model runs on while it plays.

Most of a frame runs inside the loops model/compiled.py compiles (the decoder, the GRU prior's cell
and heads). What still runs through torch (the transformer prior's layers, the encoder of an audio
input, corpus playback, the prior's layer norm) is a few dozen small operations at batch 1, whose
fixed costs add up. oneDNN, which torch's CPU build calls for some of them, costs about 5 us a call
whatever the size (GELU on a few hundred values: 5.7 us through oneDNN, 1.1 us through torch's own
kernel, on this project's machine), more than the arithmetic. So frames are made with oneDNN switched
off. The two kernels agree to within a float's rounding (about 1e-6), and everything that plays
frames (render, takes, serve, bench) goes through `playing`, so they all give the same samples.

numpy's BLAS is called by the stream resampler (live/resample.py), on one thread
(`hold_blas_to_one_thread`).
"""
from __future__ import annotations

from contextlib import contextmanager

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


def hold_blas_to_one_thread() -> None:
    """Once per process: numpy's BLAS on one thread. Left alone, OpenBLAS splits a product of a few
    thousand values over every core and keeps its threads spinning between calls, beside the audio
    thread; at this size one thread is the fastest anyway, as it is for torch (serve's `--threads 1`)."""
    global _blas_held
    if not _blas_held:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _blas_held = True
