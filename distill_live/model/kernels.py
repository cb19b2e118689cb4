"""Which of torch's kernels the model runs on while it plays.

At batch 1 a frame is a few hundred small operations, and their fixed costs add up. oneDNN, which
torch's CPU build calls for some of them, costs about 5 us a call whatever the size (GELU on a few
hundred values: 5.7 us through oneDNN, 1.1 us through torch's own kernel, on this project's machine),
more than the arithmetic; a default-preset frame calls GELU 14 times. So frames are made with oneDNN
switched off. The two kernels agree to within a float's rounding (about 1e-6), and everything that
plays frames (render, takes, serve, bench) goes through `playing`, so they all give the same samples.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


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
